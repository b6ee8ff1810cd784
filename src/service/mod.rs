//! The rules of Roster, and the only holder of the store. Handlers parse a request, call
//! one method here and shape its answer; every business rule (who may do what, what a
//! valid change is, when sessions end, what a write invalidates) is decided in this layer.
//! Errors are `ServiceError`, which knows nothing of HTTP.

mod account;
pub mod audit;
mod auth;
mod cursor;
mod directory;
mod error;
mod input;
pub mod keys;
mod operations;
mod outbox;
mod security;
mod users;

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Which emailed link a page completes.
pub use crate::store::TokenKind as LinkKind;
/// What the API shapes into responses, named here so it need not reach below the services.
pub use crate::{
    cache::{CacheStats, Lookup},
    store::UserChunks,
};
pub use account::{AccountService, InviteDraft};
pub use auth::{
    AuthService, ClientInfo, ConsoleSignIn, Issued, PRUNE_BATCH, SessionView, TokenPair,
};
pub use directory::Fresh;
pub use error::{LAST_SUPERUSER, ServiceError, ServiceResult, USER_NOT_FOUND};
pub use input::{ChangeRequest, UserDraft};
pub use operations::{CacheFigures, Operations};
pub use outbox::{MAX_ATTEMPTS, Outbox, OutboxFigures};
pub use users::{BootstrapAdmin, ListPage, SIGNUP_DAYS, SignupSeries, UserService};

use crate::{
    cache::Caches,
    config::Settings,
    domain::{User, UserId, now_micros},
    store::UserStore,
};

/// Where the service reads the time; tests fix it.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Self(Arc::new(now_micros))
    }

    pub fn fixed(at: DateTime<Utc>) -> Self {
        Self(Arc::new(move || at))
    }

    /// The system time plus `offset_secs`, which the holder may move forward (tests of
    /// lifetimes, without waiting for them).
    pub fn shifted(offset_secs: Arc<std::sync::atomic::AtomicI64>) -> Self {
        Self(Arc::new(move || {
            let offset = offset_secs.load(std::sync::atomic::Ordering::SeqCst);
            now_micros() + chrono::Duration::seconds(offset)
        }))
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

/// The authenticated user a request acts for, through which live session, and whether
/// this instance's caches may answer for the request (decided once, at authentication).
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: Arc<User>,
    pub session_id: String,
    pub fresh: Fresh,
}

impl Caller {
    pub fn id(&self) -> UserId {
        self.user.id
    }

    /// The one superuser guard.
    pub fn require_superuser(&self) -> ServiceResult<()> {
        if self.user.is_superuser {
            Ok(())
        } else {
            Err(ServiceError::Forbidden("This action needs a superuser."))
        }
    }
}

/// Everything the API calls.
pub struct Services {
    pub users: UserService,
    pub auth: Arc<AuthService>,
    pub account: Arc<AccountService>,
    pub operations: Operations,
    pub audit: Arc<audit::Auditor>,
    outbox: Arc<Outbox>,
    mail: Arc<dyn outbox::Deliverer>,
    webhooks: Option<Arc<dyn outbox::Deliverer>>,
}

impl Services {
    /// Applies migrations, loads the signing key and connects the cache invalidation
    /// listener.
    pub async fn start(
        settings: &Settings,
        store: Arc<dyn UserStore>,
        clock: Clock,
    ) -> Result<Self, String> {
        store
            .migrate()
            .await
            .map_err(|e| format!("migration failed: {e}"))?;
        let directory = Arc::new(directory::Directory::new(
            store.clone(),
            Caches::new(&settings.cache),
            clock.clone(),
        ));
        if !directory.wait_for_listener(LISTENER_START_WAIT).await {
            tracing::warn!(
                "cache invalidation listener not connected yet; serving, it keeps retrying"
            );
        }
        let keys = keys::load(settings, &store, clock.now()).await?;
        let cursors = Arc::new(cursor::Cursors::new(keys.current.as_bytes()));
        let auditor = Arc::new(audit::Auditor::new(
            store.clone(),
            clock.clone(),
            &settings.audit,
            cursors.clone(),
        ));
        let auth = Arc::new(
            AuthService::new(
                settings,
                store.clone(),
                directory.clone(),
                clock.clone(),
                keys,
                cursors,
                auditor.clone(),
            )
            .await?,
        );
        let mailer = crate::mail::Mailer::from_settings(&settings.mail)?;
        let outbox = Arc::new(Outbox::new(store.clone(), clock.clone(), &settings.mail));
        let account = Arc::new(AccountService::new(
            store.clone(),
            directory.clone(),
            auth.clone(),
            outbox.clone(),
            clock.clone(),
            settings.mail.clone(),
        ));
        let users = UserService::new(
            settings,
            store.clone(),
            directory.clone(),
            auth.clone(),
            account.clone(),
            clock,
        );
        let operations = Operations::new(store, directory, auth.clone(), outbox.clone());
        Ok(Self {
            users,
            auth,
            account,
            operations,
            audit: auditor,
            outbox,
            mail: Arc::new(outbox::MailDeliverer(mailer)),
            webhooks: match &settings.audit.webhook {
                Some(target) => Some(Arc::new(outbox::WebhookDeliverer(
                    crate::webhook::WebhookSender::new(target)?,
                ))),
                None => None,
            },
        })
    }

    /// Starts the background work of a serving instance: pruning, and the outbox sender.
    /// (One-shot commands such as `create-superuser` do not deliver mail.)
    pub fn start_background(&self) {
        self.auth.spawn_pruner();
        self.audit.spawn_pruner();
        let jobs: Arc<dyn outbox::Deliverer> = self.account.clone();
        self.outbox.spawn(outbox::Deliverers {
            mail: self.mail.clone(),
            jobs: Arc::downgrade(&jobs),
            webhooks: self.webhooks.clone(),
        });
    }
}

const LISTENER_START_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
