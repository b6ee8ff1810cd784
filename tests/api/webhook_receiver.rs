//! A webhook receiver for tests: a real HTTP server on a random port that keeps every
//! delivery (headers and body) and can answer 500 to the first attempts of each delivery.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use poem::{
    EndpointExt, Request, Response, Route, Server, handler,
    http::StatusCode,
    listener::{Acceptor, Listener, TcpListener},
    post,
    web::Data,
};
use serde_json::Value;
use tokio::sync::Notify;

/// One POST as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub signature: String,
    pub event: String,
    pub delivery: String,
    pub content_type: String,
    pub body: String,
    /// Whether it was answered 2xx.
    pub accepted: bool,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON event")
    }
}

#[derive(Default)]
struct Shared {
    deliveries: Mutex<Vec<Delivery>>,
    /// Attempts per delivery id so far.
    attempts: Mutex<HashMap<String, u32>>,
    /// Attempts of each delivery answered 500 before one is accepted.
    fail_first: AtomicU32,
    arrived: Notify,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

#[handler]
async fn receive(req: &Request, body: String, shared: Data<&Arc<Shared>>) -> Response {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let delivery = header("x-roster-delivery");
    let attempt = {
        let mut attempts = shared.attempts.lock().unwrap();
        let n = attempts.entry(delivery.clone()).or_default();
        *n += 1;
        *n
    };
    let accepted = attempt > shared.fail_first.load(Ordering::SeqCst);
    shared.deliveries.lock().unwrap().push(Delivery {
        signature: header("x-roster-signature"),
        event: header("x-roster-event"),
        delivery,
        content_type: header("content-type"),
        body,
        accepted,
    });
    shared.arrived.notify_waiters();
    let status = if accepted {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    Response::builder().status(status).finish()
}

impl Receiver {
    pub async fn start() -> Self {
        let shared: Arc<Shared> = Arc::default();
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind the receiver");
        let addr = *acceptor.local_addr()[0]
            .as_socket_addr()
            .expect("a socket address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Route::new().at("/hook", post(receive)).data(shared.clone());
        tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    app,
                    async move {
                        let _ = stopped.await;
                    },
                    None,
                )
                .await;
        });
        Self {
            addr,
            shared,
            _stop: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answer 500 to the first `n` attempts of every delivery.
    pub fn fail_first(&self, n: u32) {
        self.shared.fail_first.store(n, Ordering::SeqCst);
    }

    pub fn all(&self) -> Vec<Delivery> {
        self.shared.deliveries.lock().unwrap().clone()
    }

    /// Accepted deliveries, each delivery id once, in arrival order.
    pub fn accepted(&self) -> Vec<Delivery> {
        let mut seen = std::collections::HashSet::new();
        self.all()
            .into_iter()
            .filter(|d| d.accepted && seen.insert(d.delivery.clone()))
            .collect()
    }

    /// Waits (at most 30 s) until `pred` holds of the accepted deliveries.
    pub async fn wait_until(&self, pred: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let arrived = self.shared.arrived.notified();
            let accepted = self.accepted();
            if pred(&accepted) {
                return accepted;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "receiver condition not met; {} accepted: {:?}",
                    accepted.len(),
                    accepted.iter().map(|d| &d.event).collect::<Vec<_>>()
                );
            }
        }
    }
}
