//! The rules of accounts: who may create, read, change and delete whom, what a valid
//! change is, uniqueness of emails, the last active superuser, and which writes end
//! sessions.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{Days, NaiveDate, NaiveTime};
use serde_json::{Value, json};

use super::{
    AccountService, AuthService, Caller, ChangeRequest, Clock, ServiceError, ServiceResult,
    UserDraft,
    audit::{action, change_details},
    directory::Directory,
    input::ValidChanges,
    security::SecurityEvent,
};
use crate::{
    auth::random_token,
    cache::Lookup,
    config::Settings,
    domain::{
        DashboardStats, Email, EndSessions, FieldError, Keyset, NewUser, User, UserChanges, UserId,
        UserQuery, fold_email,
    },
    store::{AuditRecord, AuditTarget, SideEffects, StoreError, UserChunks, UserStore},
};

/// A page of a list, by offset (`page`, `pages` and `total` set) or by cursor.
pub struct ListPage {
    pub items: Vec<User>,
    pub total: Option<u64>,
    pub page: Option<u64>,
    pub pages: Option<u64>,
    pub size: u64,
    pub next_cursor: Option<String>,
}

/// The account created on an empty database when no FIRST_SUPERUSER_* is configured.
pub struct BootstrapAdmin {
    pub email: String,
    pub password: String,
}

pub const BOOTSTRAP_ADMIN_EMAIL: &str = "admin@example.com";

/// Sign-ups per day, oldest first, today (UTC) last.
pub type SignupSeries = Arc<Vec<(NaiveDate, u64)>>;

/// How many days the sign-up series covers.
pub const SIGNUP_DAYS: u64 = 30;
/// The series is a chart, not a figure anyone acts on: a minute old is fresh enough, and it
/// keeps 30 index ranges (tens of thousands of rows at a million users) off every view.
const SIGNUP_SERIES_TTL: Duration = Duration::from_secs(60);

pub struct UserService {
    store: Arc<dyn UserStore>,
    directory: Arc<Directory>,
    auth: Arc<AuthService>,
    account: Arc<AccountService>,
    clock: Clock,
    allow_registration: bool,
    bulk_max_users: usize,
    signups: moka::future::Cache<NaiveDate, SignupSeries>,
}

impl UserService {
    pub(super) fn new(
        settings: &Settings,
        store: Arc<dyn UserStore>,
        directory: Arc<Directory>,
        auth: Arc<AuthService>,
        account: Arc<AccountService>,
        clock: Clock,
    ) -> Self {
        Self {
            store,
            directory,
            auth,
            account,
            clock,
            allow_registration: settings.allow_registration,
            bulk_max_users: settings.bulk_max_users,
            signups: moka::future::Cache::builder()
                .max_capacity(2)
                .time_to_live(SIGNUP_SERIES_TTL)
                .build(),
        }
    }

    /// Users created on each of the last SIGNUP_DAYS days (UTC), at most a minute old.
    pub async fn signups_per_day(&self, caller: &Caller) -> ServiceResult<SignupSeries> {
        caller.require_superuser()?;
        let today = self.clock.now().date_naive();
        if let Some(series) = self.signups.get(&today).await {
            return Ok(series);
        }
        let days: Vec<NaiveDate> = (0..SIGNUP_DAYS)
            .rev()
            .filter_map(|back| today.checked_sub_days(Days::new(back)))
            .collect();
        let bounds = days
            .iter()
            .copied()
            .chain(today.checked_add_days(Days::new(1)))
            .map(|day| day.and_time(NaiveTime::MIN).and_utc())
            .collect();
        let counts = self.store.count_created_between(bounds).await?;
        let series: SignupSeries = Arc::new(days.into_iter().zip(counts).collect());
        self.signups.insert(today, series.clone()).await;
        Ok(series)
    }

    /// Open self-registration: an active, non-superuser account.
    pub async fn register(&self, draft: UserDraft) -> ServiceResult<User> {
        if !self.allow_registration {
            return Err(ServiceError::Forbidden(
                "Self-registration is disabled on this server.",
            ));
        }
        let draft = UserDraft {
            is_active: Some(true),
            is_superuser: Some(false),
            email_verified: Some(false),
            ..draft
        };
        self.create_one(draft, true, None, "register").await
    }

    pub async fn create(&self, caller: &Caller, draft: UserDraft) -> ServiceResult<User> {
        caller.require_superuser()?;
        self.create_one(draft, false, Some(caller.id()), "admin")
            .await
    }

    /// Creates one user; `verify` mails a verification link to an unverified address in
    /// the same transaction (registration).
    async fn create_one(
        &self,
        draft: UserDraft,
        verify: bool,
        actor: Option<UserId>,
        via: &str,
    ) -> ServiceResult<User> {
        let valid = draft.validate().map_err(ServiceError::Invalid)?;
        let effects = match verify && !valid.email_verified {
            true => self.account.verification(&valid.email, None)?,
            false => SideEffects::default(),
        };
        let created = self.auth.audit.record(
            action::USER_CREATED,
            actor,
            AuditTarget::Changed,
            json!({
                "via": via,
                "email": valid.email.as_str(),
                "is_active": valid.is_active,
                "is_superuser": valid.is_superuser,
            }),
        );
        let effects = SideEffects {
            audit: vec![created],
            ..effects
        };
        let sends = !effects.outbox.is_empty();
        let hashed_password = self.auth.hash(valid.password.expose()).await?;
        let user = self
            .directory
            .create(
                NewUser {
                    email: valid.email,
                    full_name: valid.full_name,
                    hashed_password,
                    is_active: valid.is_active,
                    is_superuser: valid.is_superuser,
                    email_verified: valid.email_verified,
                    created_at: Some(self.clock.now()),
                },
                effects,
            )
            .await?;
        if sends {
            self.account.sent();
        }
        Ok(user)
    }

    /// All or nothing: every invalid item is reported (with its index) before any
    /// uniqueness check; then every email taken or repeated in the batch.
    pub async fn create_many(
        &self,
        caller: &Caller,
        drafts: Vec<UserDraft>,
    ) -> ServiceResult<Vec<User>> {
        caller.require_superuser()?;
        let max = self.bulk_max_users;
        if drafts.is_empty() || drafts.len() > max {
            return Err(ServiceError::invalid(
                "users",
                format!("must hold 1 to {max} users (got {})", drafts.len()),
            ));
        }
        let mut violations = Vec::new();
        let mut valid = Vec::with_capacity(drafts.len());
        for (index, draft) in drafts.iter().enumerate() {
            match draft.validate() {
                Ok(v) => valid.push(v),
                Err(errors) => {
                    violations.extend(errors.into_iter().map(|e: FieldError| e.at(index)))
                }
            }
        }
        if !violations.is_empty() {
            return Err(ServiceError::Invalid(violations));
        }
        let emails: Vec<String> = valid.iter().map(|v| v.email.as_str().to_string()).collect();
        let taken = self.taken_emails(&emails).await?;
        if !taken.is_empty() {
            return Err(ServiceError::EmailsTaken(taken));
        }
        let passwords = valid
            .iter()
            .map(|v| v.password.expose().to_string())
            .collect();
        let hashes = self.auth.hasher().hash_many(passwords).await?;
        let now = self.clock.now();
        let new_users = valid
            .into_iter()
            .zip(hashes)
            .map(|(v, hashed_password)| NewUser {
                email: v.email,
                full_name: v.full_name,
                hashed_password,
                is_active: v.is_active,
                is_superuser: v.is_superuser,
                email_verified: v.email_verified,
                created_at: Some(now),
            })
            .collect();
        let event = self.auth.audit.record(
            action::USER_CREATED,
            Some(caller.id()),
            AuditTarget::Changed,
            json!({"via": "bulk"}),
        );
        match self.directory.create_many(new_users, vec![event]).await {
            Ok(users) => Ok(users),
            // Someone took an email between the check and the insert.
            Err(StoreError::EmailTaken) => {
                Err(ServiceError::EmailsTaken(self.taken_emails(&emails).await?))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Emails of a batch that are taken: by an existing user, or by an earlier item.
    async fn taken_emails(&self, emails: &[String]) -> ServiceResult<Vec<String>> {
        let keys: Vec<String> = emails.iter().map(|e| fold_email(e)).collect();
        let existing: HashSet<String> = self
            .directory
            .existing_email_keys(&keys)
            .await?
            .into_iter()
            .collect();
        let mut seen = HashSet::new();
        let mut reported = HashSet::new();
        let mut taken = Vec::new();
        for (email, folded) in emails.iter().zip(keys) {
            let repeated = !seen.insert(folded.clone());
            if (repeated || existing.contains(&folded)) && reported.insert(folded) {
                taken.push(email.clone());
            }
        }
        Ok(taken)
    }

    /// An offset page (with its total) or, given a cursor, the page after it (a total only
    /// when asked). Both carry the cursor of the next page, `None` on the last.
    pub async fn list(
        &self,
        caller: &Caller,
        query: &UserQuery,
        cursor: Option<&str>,
        include_total: bool,
    ) -> ServiceResult<ListPage> {
        caller.require_superuser()?;
        let cursors = &self.auth.cursors;
        let size = query.page.size;
        let fresh = Some(caller.fresh);
        let Some(cursor) = cursor else {
            let page = self.directory.list(query, fresh).await?;
            let more = page.page.saturating_mul(page.size) < page.total;
            let next_cursor = match (more, page.items.last()) {
                (true, Some(last)) => Some(cursors.after(query, last)?),
                _ => None,
            };
            return Ok(ListPage {
                total: Some(page.total),
                page: Some(page.page),
                pages: Some(page.pages),
                size,
                next_cursor,
                items: page.items,
            });
        };
        let after = cursors.read(query, cursor)?;
        let (items, next_cursor) = self.keyset_page(query, Some(&after)).await?;
        let total = match include_total {
            true => Some(self.directory.count(query, fresh).await?),
            false => None,
        };
        Ok(ListPage {
            items,
            total,
            page: None,
            pages: None,
            size,
            next_cursor,
        })
    }

    /// A page for browsing (the admin console): from the start or after `cursor`, with the
    /// total only when the cached figures know it (no filter, or only one flag); a search
    /// is never counted, so typing costs one page read however many users match.
    pub async fn browse(
        &self,
        caller: &Caller,
        query: &UserQuery,
        cursor: Option<&str>,
    ) -> ServiceResult<ListPage> {
        caller.require_superuser()?;
        let after = cursor
            .map(|c| self.auth.cursors.read(query, c))
            .transpose()?;
        let (items, next_cursor) = self.keyset_page(query, after.as_ref()).await?;
        let total = self
            .directory
            .cached_count(query, Some(caller.fresh))
            .await?;
        Ok(ListPage {
            items,
            total,
            page: None,
            pages: None,
            size: query.page.size,
            next_cursor,
        })
    }

    /// One page after `after` (from the start without it), and the cursor of the next page
    /// (`None` on the last).
    async fn keyset_page(
        &self,
        query: &UserQuery,
        after: Option<&Keyset>,
    ) -> ServiceResult<(Vec<User>, Option<String>)> {
        let size = query.page.size;
        let mut items = self.directory.list_after(query, after, size + 1).await?;
        let more = items.len() as u64 > size;
        items.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let next_cursor = match (more, items.last()) {
            (true, Some(last)) => Some(self.auth.cursors.after(query, last)?),
            _ => None,
        };
        Ok((items, next_cursor))
    }

    /// Every matching user in the query's order, from the start or after `cursor` (a
    /// list page's `next_cursor` for the same filters and sort).
    pub fn export(
        &self,
        caller: &Caller,
        query: &UserQuery,
        cursor: Option<&str>,
    ) -> ServiceResult<UserChunks> {
        caller.require_superuser()?;
        let after = cursor
            .map(|c| self.auth.cursors.read(query, c))
            .transpose()?;
        Ok(self.directory.export(query, after.as_ref()))
    }

    /// Superusers may read anyone; other users only themselves.
    pub async fn get(&self, caller: &Caller, id: UserId) -> ServiceResult<Arc<User>> {
        if !caller.user.is_superuser && caller.id() != id {
            return Err(ServiceError::Forbidden(
                "You may only read your own account.",
            ));
        }
        match self.directory.user_as_of(id, Some(caller.fresh)).await?.0 {
            Some(user) => Ok(user),
            None => Err(ServiceError::NotFound(super::error::USER_NOT_FOUND)),
        }
    }

    pub async fn dashboard(&self, caller: &Caller) -> ServiceResult<(Arc<DashboardStats>, Lookup)> {
        caller.require_superuser()?;
        Ok(self.directory.dashboard_as_of(Some(caller.fresh)).await?)
    }

    /// A superuser's change to any account.
    pub async fn update(
        &self,
        caller: &Caller,
        id: UserId,
        request: ChangeRequest,
    ) -> ServiceResult<User> {
        caller.require_superuser()?;
        let current = self.directory.user_as_of(id, Some(caller.fresh)).await?.0;
        let valid = request
            .validate(current.as_deref().map(|u| u.email.as_str()))
            .map_err(ServiceError::Invalid)?;
        // A password set by someone else, or a deactivation, ends every session.
        let ends = valid.password.is_some() || valid.is_active == Some(false);
        let privileges = (valid.is_active, valid.is_superuser);
        let current_email = current.as_deref().map(|u| u.email.clone());
        let user = self
            .apply(
                caller,
                id,
                valid,
                ends.then_some(EndSessions::All),
                current_email.as_deref(),
            )
            .await?;
        let security = &self.auth.security;
        if privileges != (None, None) {
            security.record(
                SecurityEvent::PrivilegeChanged,
                Some(id),
                &format!(
                    "by superuser {}: is_active={:?} is_superuser={:?}",
                    caller.id(),
                    privileges.0,
                    privileges.1
                ),
            );
        }
        if ends {
            security.record(
                SecurityEvent::SessionsRevoked,
                Some(id),
                &format!("every session ended by superuser {}", caller.id()),
            );
        }
        Ok(user)
    }

    /// A user's change to their own account: never its flags; a new password or email
    /// needs the current password.
    pub async fn update_me(&self, caller: &Caller, request: ChangeRequest) -> ServiceResult<User> {
        let request = ChangeRequest {
            is_active: None,
            is_superuser: None,
            email_verified: None,
            ..request
        };
        let validated = request.validate(Some(&caller.user.email));
        let changes_email = request
            .email
            .as_deref()
            .is_some_and(|e| fold_email(e.trim()) != fold_email(&caller.user.email));
        let missing_current =
            (request.password.is_some() || changes_email) && request.current_password.is_none();
        let valid = match validated {
            Ok(valid) if !missing_current => valid,
            result => {
                let mut violations = result.err().unwrap_or_default();
                if missing_current {
                    violations.push(FieldError::new(
                        "current_password",
                        "is required to change the password or the email",
                    ));
                }
                return Err(ServiceError::Invalid(violations));
            }
        };
        if let Some(current) = &request.current_password
            && !self
                .auth
                .check_password(caller.id(), &caller.user.email, current)
                .await?
        {
            return Err(ServiceError::Forbidden("The current password is wrong."));
        }
        // An own password change ends the other sessions; this one goes on.
        let ends = valid
            .password
            .is_some()
            .then(|| EndSessions::AllExcept(caller.session_id.clone()));
        self.apply(caller, caller.id(), valid, ends, Some(&caller.user.email))
            .await
    }

    async fn apply(
        &self,
        caller: &Caller,
        id: UserId,
        valid: ValidChanges,
        end_sessions: Option<EndSessions>,
        current_email: Option<&str>,
    ) -> ServiceResult<User> {
        let new_address = valid
            .email
            .as_ref()
            .filter(|e| current_email.is_none_or(|c| fold_email(c) != e.key()));
        // A new address is unverified until proven (unless a superuser says otherwise): it
        // gets a link, and the old one is told, in the same transaction as the change.
        let email_verified = valid
            .email_verified
            .or(new_address.is_some().then_some(false));
        let effects = match (new_address, email_verified) {
            (Some(address), Some(false)) => self.account.verification(address, current_email)?,
            _ => SideEffects::default(),
        };
        let sends = !effects.outbox.is_empty();
        let effects = SideEffects {
            audit: self.change_events(caller, id, &valid, email_verified, end_sessions.is_some()),
            ..effects
        };
        let hashed_password = match &valid.password {
            Some(p) => Some(self.auth.hash(p.expose()).await?),
            None => None,
        };
        let changes = UserChanges {
            email: valid.email,
            full_name: valid.full_name,
            hashed_password,
            is_active: valid.is_active,
            is_superuser: valid.is_superuser,
            email_verified,
            end_sessions,
        };
        // One transaction: the change, the end of the sessions it ends, and its mails.
        let user = self.directory.update(id, changes, effects).await?;
        if sends {
            self.account.sent();
        }
        Ok(user)
    }

    /// The events of a change to user `id`: `user.updated` naming every changed field
    /// (values but the password's), `password.changed`, `session.revoked`.
    fn change_events(
        &self,
        caller: &Caller,
        id: UserId,
        valid: &ValidChanges,
        email_verified: Option<bool>,
        ends_sessions: bool,
    ) -> Vec<AuditRecord> {
        let audit = &self.auth.audit;
        let mut fields: Vec<(&str, Option<Value>)> = Vec::new();
        if let Some(email) = &valid.email {
            fields.push(("email", Some(json!(email.as_str()))));
        }
        if let Some(name) = &valid.full_name {
            let name = name.as_ref().map(|n| n.clone().into_inner());
            fields.push(("full_name", Some(json!(name))));
        }
        if valid.password.is_some() {
            fields.push(("password", None));
        }
        if let Some(active) = valid.is_active {
            fields.push(("is_active", Some(json!(active))));
        }
        if let Some(superuser) = valid.is_superuser {
            fields.push(("is_superuser", Some(json!(superuser))));
        }
        if let Some(verified) = email_verified {
            fields.push(("email_verified", Some(json!(verified))));
        }
        let actor = Some(caller.id());
        let mut events = Vec::new();
        if !fields.is_empty() {
            events.push(audit.record(
                action::USER_UPDATED,
                actor,
                AuditTarget::Changed,
                change_details(&fields),
            ));
        }
        if valid.password.is_some() {
            let by = if caller.id() == id {
                "self"
            } else {
                "superuser"
            };
            events.push(audit.record(
                action::PASSWORD_CHANGED,
                actor,
                AuditTarget::Changed,
                json!({ "by": by }),
            ));
        }
        if ends_sessions {
            let reason = match (valid.password.is_some(), caller.id() == id) {
                (true, true) => "own password changed: every other session ended",
                (true, false) => "password set by a superuser: every session ended",
                _ => "account deactivated: every session ended",
            };
            events.push(self.auth.revoked(actor, reason));
        }
        events
    }

    /// A superuser deletes another account (never their own, never the last active
    /// superuser).
    pub async fn delete(&self, caller: &Caller, id: UserId) -> ServiceResult<()> {
        caller.require_superuser()?;
        if caller.id() == id {
            return Err(ServiceError::Conflict(
                "You cannot delete your own account.",
            ));
        }
        let event = self.auth.audit.record(
            action::USER_DELETED,
            Some(caller.id()),
            AuditTarget::Changed,
            json!({}),
        );
        self.directory.delete(id, vec![event]).await?;
        Ok(())
    }

    /// Creates an active superuser; `false` when the email is taken.
    pub async fn create_superuser(&self, email: &str, password: &str) -> ServiceResult<bool> {
        let draft = UserDraft {
            email: email.to_string(),
            password: password.to_string(),
            full_name: None,
            is_active: Some(true),
            is_superuser: Some(true),
            // The first superuser (and any made from the command line) is verified.
            email_verified: Some(true),
        };
        match self.create_one(draft, false, None, "first superuser").await {
            Ok(_) => Ok(true),
            Err(ServiceError::EmailTaken) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// FIRST_SUPERUSER_* when configured and missing; on an empty database without them,
    /// `admin@example.com` with a random password, returned to be shown once.
    pub async fn ensure_superuser(
        &self,
        settings: &Settings,
    ) -> Result<Option<BootstrapAdmin>, String> {
        let describe = |e: ServiceError| match e {
            ServiceError::Invalid(errors) => errors
                .iter()
                .map(|e| format!("FIRST_SUPERUSER_{}: {}", e.field.to_uppercase(), e.message))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        if let (Some(email), Some(password)) = (
            &settings.first_superuser_email,
            &settings.first_superuser_password,
        ) {
            let parsed = Email::parse(email).map_err(|e| format!("FIRST_SUPERUSER_EMAIL: {e}"))?;
            let exists = self
                .store
                .find_credentials_by_email(&parsed)
                .await
                .map_err(|e| e.to_string())?
                .is_some();
            if !exists {
                self.create_superuser(email, password.expose())
                    .await
                    .map_err(describe)?;
            }
            return Ok(None);
        }
        if self.store.has_users().await.map_err(|e| e.to_string())? {
            return Ok(None);
        }
        let password: String = random_token()?.chars().take(20).collect();
        let created = self
            .create_superuser(BOOTSTRAP_ADMIN_EMAIL, &password)
            .await
            .map_err(describe)?;
        Ok(created.then(|| BootstrapAdmin {
            email: BOOTSTRAP_ADMIN_EMAIL.into(),
            password,
        }))
    }
}
