//! The machine's limit for a Rust HTTP service: a bare poem server answering a small JSON
//! body, with no middleware, no logging, no database. The load script runs it beside
//! Roster so every figure is also a share of what this machine can do at all.
//!   cargo run --release --example bare_baseline -- 127.0.0.1:PORT [poem|openapi|hyper]
//! `openapi` answers the same body through poem-openapi nested in a poem `Route`, the way
//! Roster mounts its API: the floor of the framework Roster is built on. `hyper` serves the
//! poem route from a plain hyper HTTP/1 connection loop, without poem's `Server`.

use poem::{
    Endpoint, Route, Server, get, handler,
    listener::{Acceptor, Listener, TcpListener},
    web::Json,
};
use poem_openapi::{Object, OpenApi, OpenApiService, payload};

#[handler]
fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "alive"}))
}

#[derive(Object)]
struct Probe {
    status: String,
}

struct Health;

#[OpenApi]
impl Health {
    #[oai(path = "/health/live", method = "get")]
    async fn live(&self) -> payload::Json<Probe> {
        payload::Json(Probe {
            status: "alive".to_string(),
        })
    }
}

async fn serve_hyper(addr: String) -> std::io::Result<()> {
    let mut acceptor = TcpListener::bind(addr).into_acceptor().await?;
    let ep = std::sync::Arc::new(Route::new().at("/health/live", get(live)));
    loop {
        let (io, local, remote, scheme) = acceptor.accept().await?;
        let ep = ep.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let ep = ep.clone();
                let (local, remote, scheme) = (local.clone(), remote.clone(), scheme.clone());
                async move {
                    let resp = ep.get_response((req, local, remote, scheme).into()).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::from(resp))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .await;
        });
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8001".to_string());
    let mode = args.next().unwrap_or_else(|| "poem".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match mode.as_str() {
            "openapi" => {
                let api = OpenApiService::new(Health, "bare", "1");
                Server::new(TcpListener::bind(addr))
                    .run(Route::new().nest("/", api))
                    .await
            }
            "hyper" => serve_hyper(addr).await,
            _ => {
                Server::new(TcpListener::bind(addr))
                    .run(Route::new().at("/health/live", get(live)))
                    .await
            }
        }
    })
}
