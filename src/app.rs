//! Building the service: state, routes, middleware, and the server loop. The CLI and the
//! tests start Roster through the same `launch`.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use poem::{
    Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Route, Server,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
};

pub use crate::service::BootstrapAdmin;
use crate::{
    admin,
    api::{self, EncodedUsers},
    config::Settings,
    connection::ConnectionDeadlines,
    metrics::AppMetrics,
    middleware::{Edge, RateLimits},
    routes::RouteTable,
    service::{Clock, Services},
    state::AppState,
    store::{self, UserStore},
};

/// A store wrapper (tests observe or break the store this way).
pub type StoreWrapper = Box<dyn FnOnce(Arc<dyn UserStore>) -> Arc<dyn UserStore> + Send>;

/// What may vary between a production start and a test's.
pub struct LaunchOptions {
    pub clock: Clock,
    pub wrap_store: Option<StoreWrapper>,
    /// Routes mounted inside every layer (tests add slow or panicking routes), never
    /// under `/api/` or `/health`: those paths go to the API alone (`ApiFirst`).
    pub extra_routes: Route,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        Self {
            clock: Clock::system(),
            wrap_store: None,
            extra_routes: Route::new(),
        }
    }
}

/// A running server.
pub struct Launched {
    pub state: Arc<AppState>,
    pub bootstrap: Option<BootstrapAdmin>,
    pub addr: SocketAddr,
    /// Ends once `shutdown` resolved and in-flight requests finished.
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Connects the store, starts the services (migrations, signing key, listener), makes
/// sure a superuser exists, and serves on `acceptor` until `shutdown` resolves.
pub async fn launch(
    settings: Settings,
    acceptor: TcpAcceptor,
    options: LaunchOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Launched, String> {
    let addr = local_addr(&acceptor).unwrap_or(settings.bind_addr);
    let mut settings = settings;
    settings
        .mail
        .public_url
        .get_or_insert_with(|| format!("http://{addr}"));
    let (state, bootstrap) = build_state(settings, options.clock, options.wrap_store).await?;
    let grace = state.settings.request_timeout + Duration::from_secs(1);
    let acceptor = ConnectionDeadlines {
        inner: acceptor,
        header_timeout: state.settings.header_read_timeout,
        idle_timeout: state.settings.idle_timeout,
    };
    let endpoint = build_endpoint(state.clone(), options.extra_routes);
    let server = tokio::spawn(async move {
        Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(endpoint, shutdown, Some(grace))
            .await
    });
    Ok(Launched {
        state,
        bootstrap,
        addr,
        server,
    })
}

async fn build_state(
    settings: Settings,
    clock: Clock,
    wrap_store: Option<StoreWrapper>,
) -> Result<(Arc<AppState>, Option<BootstrapAdmin>), String> {
    let store = store::connect(&settings.database_url, settings.db_pool_size)
        .await
        .map_err(|e| e.to_string())?;
    let store = match wrap_store {
        Some(wrap) => wrap(store),
        None => store,
    };
    let services = Services::start(&settings, store, clock).await?;
    services.start_background();
    let bootstrap = services.users.ensure_superuser(&settings).await?;
    let routes = Arc::new(RouteTable::from_spec(&api::spec_json()));
    let rate_limits = Arc::new(RateLimits::new(
        &settings.rate_limit,
        api::LOGIN_BUCKET_PATHS,
    ));
    RateLimits::spawn_janitor(&rate_limits);
    let state = Arc::new(AppState {
        settings,
        services,
        metrics: Arc::new(AppMetrics::new(routes.clone())),
        routes,
        rate_limits,
        started_at: Instant::now(),
        encoded_users: EncodedUsers::new(),
    });
    Ok((state, bootstrap))
}

/// The whole HTTP application for `state`, with `extra` routes inside every layer.
fn build_endpoint(state: Arc<AppState>, extra: Route) -> impl Endpoint + 'static {
    let spec_text = api::spec_json();
    let spec = poem::endpoint::make_sync(move |_| {
        poem::Response::builder()
            .content_type("application/json")
            .body(spec_text.clone())
    });
    let docs_html = Arc::new(api::swagger_ui_html());
    let docs = move || {
        let html = docs_html.clone();
        poem::endpoint::make_sync(move |_| poem::web::Html(html.as_str().to_string()))
    };
    let settings = &state.settings;
    let edge = Edge {
        trust_proxy_headers: settings.trust_proxy_headers,
        slow_request: settings.slow_request,
        request_timeout: settings.request_timeout,
        max_body_bytes: settings.max_body_bytes,
        rate_limits: state.rate_limits.clone(),
        metrics: state.metrics.clone(),
        routes: state.routes.clone(),
    };
    let api = Arc::new(api::service().into_endpoint());
    let all = extra
        .at("/docs", docs())
        .at("/docs/", docs())
        .at("/openapi.json", spec)
        .nest("/admin", admin::routes())
        .nest("/", api.clone());
    ApiFirst { api, all }.data(state).with(edge)
}

/// API paths (`/api/…`, `/health…`) go straight to the API; any other through the whole
/// router, which nests the same API under `/` and has nothing else under those prefixes,
/// so both ways answer alike. The short way skips a route lookup, a rebuilt URI and a
/// boxed future on every API request.
struct ApiFirst<A> {
    api: Arc<A>,
    all: Route,
}

fn is_api_path(path: &str) -> bool {
    path.starts_with("/api/") || path.starts_with("/health")
}

impl<A: Endpoint> Endpoint for ApiFirst<A> {
    type Output = poem::Response;

    async fn call(&self, req: poem::Request) -> poem::Result<poem::Response> {
        if is_api_path(req.uri().path()) {
            self.api.call(req).await.map(IntoResponse::into_response)
        } else {
            self.all.call(req).await
        }
    }
}

/// Binds `addr` (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpAcceptor> {
    TcpListener::bind(addr).into_acceptor().await
}

pub fn local_addr(acceptor: &TcpAcceptor) -> Option<SocketAddr> {
    acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
}
