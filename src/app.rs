//! Building the service: state, routes, middleware, and the server loop.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use poem::{
    Endpoint, EndpointExt, IntoResponse, Route, Server,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    middleware::CatchPanic,
};

use crate::{
    api,
    auth::{AuthService, random_token},
    cache::Caches,
    config::Settings,
    directory::Directory,
    domain::{Email, NewUser, Password},
    error::ApiError,
    metrics::AppMetrics,
    middleware::{BodyLimit, Observe, RateLimit, RateLimits, Timeout},
    routes::RouteTable,
    state::AppState,
    store::{self, StoreError, UserStore},
};

/// The account created on an empty database when no FIRST_SUPERUSER_* is configured.
pub struct BootstrapAdmin {
    pub email: String,
    pub password: String,
}

pub const BOOTSTRAP_ADMIN_EMAIL: &str = "admin@example.com";
const LISTENER_START_WAIT: Duration = Duration::from_secs(5);

/// Connects the store, applies migrations, loads the signing key and makes sure a
/// superuser exists.
pub async fn build_state(
    settings: Settings,
) -> Result<(Arc<AppState>, Option<BootstrapAdmin>), String> {
    let store = store::connect(&settings).await.map_err(|e| e.to_string())?;
    build_state_with_store(settings, store).await
}

/// As `build_state`, over a store the caller opened (tests wrap it to observe or break it).
pub async fn build_state_with_store(
    settings: Settings,
    store: Arc<dyn UserStore>,
) -> Result<(Arc<AppState>, Option<BootstrapAdmin>), String> {
    store
        .migrate()
        .await
        .map_err(|e| format!("migration failed: {e}"))?;
    let directory = Arc::new(Directory::new(store.clone(), Caches::new(&settings)));
    if !directory.wait_for_listener(LISTENER_START_WAIT).await {
        tracing::warn!("cache invalidation listener not connected yet; serving, it keeps retrying");
    }
    let auth = AuthService::new(&settings, store.clone(), directory.clone()).await?;
    let routes = Arc::new(RouteTable::from_spec(&api::spec_json()));
    let rate_limits = Arc::new(RateLimits::new(&settings));
    RateLimits::spawn_janitor(&rate_limits);
    let state = Arc::new(AppState {
        settings,
        store,
        directory,
        auth,
        metrics: Arc::new(AppMetrics::new(routes.clone())),
        routes,
        rate_limits,
        started_at: Instant::now(),
    });
    let bootstrap = ensure_superuser(&state).await?;
    Ok((state, bootstrap))
}

async fn ensure_superuser(state: &AppState) -> Result<Option<BootstrapAdmin>, String> {
    let settings = &state.settings;
    if let (Some(email), Some(password)) = (
        &settings.first_superuser_email,
        &settings.first_superuser_password,
    ) {
        let email = Email::parse(email).map_err(|e| format!("FIRST_SUPERUSER_EMAIL: {e}"))?;
        let password = Password::parse(password.expose())
            .map_err(|e| format!("FIRST_SUPERUSER_PASSWORD: {e}"))?;
        if state
            .store
            .find_credentials_by_email(&email)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            create_superuser(&state.directory, &state.auth, email, &password).await?;
        }
        return Ok(None);
    }
    if state.store.count_users().await.map_err(|e| e.to_string())? > 0 {
        return Ok(None);
    }
    let password_text: String = random_token()?.chars().take(20).collect();
    let email = Email::parse(BOOTSTRAP_ADMIN_EMAIL)?;
    let password = Password::parse(&password_text)?;
    let created = create_superuser(&state.directory, &state.auth, email, &password).await?;
    Ok(created.then(|| BootstrapAdmin {
        email: BOOTSTRAP_ADMIN_EMAIL.into(),
        password: password_text,
    }))
}

/// Creates an active superuser; `false` when another instance created the email first.
pub async fn create_superuser(
    directory: &Directory,
    auth: &AuthService,
    email: Email,
    password: &Password,
) -> Result<bool, String> {
    let hashed_password = auth.hasher().hash(password.expose()).await?;
    let new_user = NewUser {
        email,
        full_name: None,
        hashed_password,
        is_active: true,
        is_superuser: true,
        created_at: None,
    };
    match directory.create(new_user).await {
        Ok(_) => Ok(true),
        Err(StoreError::EmailTaken) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// The whole HTTP application for `state`.
pub fn build_endpoint(state: Arc<AppState>) -> impl Endpoint + 'static {
    build_endpoint_with(state, Route::new())
}

/// The app with extra routes mounted inside every layer (tests add deliberately slow or
/// panicking routes this way).
pub fn build_endpoint_with(state: Arc<AppState>, extra: Route) -> impl Endpoint + 'static {
    let api = api::service();
    let docs = api.swagger_ui();
    let spec = api.spec_endpoint();
    let settings = &state.settings;
    let observe = Observe {
        trust_proxy_headers: settings.trust_proxy_headers,
        slow_request: settings.slow_request,
        metrics: state.metrics.clone(),
        routes: state.routes.clone(),
    };
    let rate_limit = RateLimit {
        limits: state.rate_limits.clone(),
        metrics: state.metrics.clone(),
    };
    let timeout = Timeout {
        limit: settings.request_timeout,
    };
    let body_limit = BodyLimit {
        max_bytes: settings.max_body_bytes,
    };
    extra
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .nest("/", api)
        .data(state)
        .with(body_limit)
        .with(timeout)
        .with(rate_limit)
        .with(
            CatchPanic::new()
                .with_handler(|_| ApiError::internal("handler panicked").into_response()),
        )
        .with(observe)
}

/// Binds `addr` (port 0 picks a free one).
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpAcceptor> {
    TcpListener::bind(addr).into_acceptor().await
}

pub fn local_addr(acceptor: &TcpAcceptor) -> Option<std::net::SocketAddr> {
    acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    acceptor: TcpAcceptor,
    endpoint: impl Endpoint + 'static,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> std::io::Result<()> {
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(endpoint, shutdown, Some(grace))
        .await
}
