//! The machine's limit for a Rust HTTP service: a bare poem server answering a small JSON
//! body, with no middleware, no logging, no database. The load script runs it beside
//! Roster so every figure is also a share of what this machine can do at all.
//!   cargo run --release --example bare_baseline -- 127.0.0.1:PORT

use poem::{Route, Server, get, handler, listener::TcpListener, web::Json};

#[handler]
fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "alive"}))
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8001".to_string());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(
            Server::new(TcpListener::bind(addr)).run(Route::new().at("/health/live", get(live))),
        )
}
