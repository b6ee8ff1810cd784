//! The account lifecycle over a real SMTP exchange: reset, verification, resend,
//! invitations, the HTML pages, and mail that outlives a mail server's outage or a restart.

use std::{
    sync::{Arc, atomic::AtomicI64},
    time::Duration,
};

use roster::{
    app::LaunchOptions,
    service::{Clock, LinkKind},
    store::{OutboxMessage, Topic},
};
use serde_json::json;

use crate::{
    helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, backend_tests},
    smtp_sink::SmtpSink,
};

const PUBLIC_URL: &str = "https://roster.example.org";

/// An app mailing through `sink`, retrying fast.
async fn mailing_app(backend: Backend, sink: &SmtpSink, extra: &[(&str, &str)]) -> TestApp {
    let url = sink.url();
    let mut vars = vec![
        ("MAIL_TRANSPORT", "smtp"),
        ("SMTP_URL", url.as_str()),
        ("PUBLIC_URL", PUBLIC_URL),
        ("MAIL_FROM", "Roster Test <roster@example.org>"),
        ("OUTBOX_RETRY_BASE_MS", "50"),
        ("OUTBOX_RETRY_MAX_SECS", "1"),
    ];
    vars.extend_from_slice(extra);
    TestApp::spawn_with(backend, &vars).await
}

async fn request_reset(app: &TestApp, email: &str) -> crate::helpers::Resp {
    app.post("/api/v1/auth/password-reset", None, json!({"email": email}))
        .await
}

/// Waits until every message of the outbox was delivered (or given up).
async fn outbox_drained(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let counts = app.store.outbox_counts().await.unwrap();
        if counts.pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox not drained: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

backend_tests! {
    async fn a_reset_link_mailed_over_smtp_sets_a_new_password_and_ends_every_session(backend) {
        let sink = SmtpSink::start().await;
        let app = mailing_app(backend, &sink, &[]).await;
        let (_, token) = app.regular_user("forgetful@example.com").await;

        let r = request_reset(&app, "Forgetful@Example.com").await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert!(r.body["message"].is_string());
        assert_eq!(r.header("cache-control"), Some("no-store"));

        let mail = sink.wait_for(1).await.remove(0);
        assert_eq!(mail.to, ["forgetful@example.com"]);
        assert!(mail.header("Subject").unwrap().contains("Reset your Roster password"));
        assert!(mail.header("From").unwrap().contains("roster@example.org"));
        let link = mail.link();
        assert!(link.starts_with(&format!("{PUBLIC_URL}/account/reset-password?token=")), "{link}");
        assert!(mail.part("text/plain").contains("15 minutes"));
        assert!(mail.part("text/html").contains(&mail.token()));
        // 256 random bits, URL-safe base64: 43 characters.
        assert!(mail.token().len() >= 43);

        let confirm = json!({"token": mail.token(), "new_password": "a-brand-new-secret"});
        let r = app.post("/api/v1/auth/password-reset/confirm", None, confirm.clone()).await;
        assert_eq!(r.status, 204, "{}", r.text);
        // Every session ended; the old password is gone, the new one works.
        app.get("/api/v1/users/me", Some(&token)).await.assert_error(401, "unauthorized");
        let old = app.post("/api/v1/auth/login", None,
            json!({"email": "forgetful@example.com", "password": "user-password-1"})).await;
        old.assert_error(401, "invalid_credentials");
        app.login("forgetful@example.com", "a-brand-new-secret").await;
        // Single use.
        let again = app.post("/api/v1/auth/password-reset/confirm", None, confirm).await;
        again.assert_error(400, "invalid_token");
        let hash = roster::auth::one_time_token_hash(&mail.token());
        let left = app.store.token_owner(LinkKind::PasswordReset, &hash, chrono::Utc::now()).await.unwrap();
        assert_eq!(left, None);
    }

    async fn reset_requests_answer_alike_for_unknown_addresses_and_mail_only_real_accounts(backend) {
        let sink = SmtpSink::start().await;
        let app = mailing_app(backend, &sink, &[]).await;
        app.create_user("known@example.com", "user-password-1", false).await;
        let unknown = request_reset(&app, "nobody@example.com").await;
        let known = request_reset(&app, "known@example.com").await;
        assert_eq!(unknown.status, 202);
        assert_eq!(unknown.body, known.body);
        sink.wait_for(1).await;
        outbox_drained(&app).await;
        let mails = sink.received();
        assert_eq!(mails.len(), 1, "{mails:?}");
        assert_eq!(mails[0].to, ["known@example.com"]);
        // Malformed input is still a validation error, never a 202.
        request_reset(&app, "not-an-email").await.assert_error(422, "validation_error");
        let typed = app.post("/api/v1/auth/password-reset", None, json!({"email": 42})).await;
        typed.assert_error(422, "validation_error");
    }

    async fn a_newer_reset_link_replaces_the_older_one(backend) {
        let sink = SmtpSink::start().await;
        let app = mailing_app(backend, &sink, &[]).await;
        app.create_user("twice@example.com", "user-password-1", false).await;
        request_reset(&app, "twice@example.com").await;
        let first = sink.wait_for(1).await.remove(0).token();
        request_reset(&app, "twice@example.com").await;
        let second = sink.wait_for(2).await.remove(1).token();
        assert_ne!(first, second);
        let r = app.post("/api/v1/auth/password-reset/confirm", None,
            json!({"token": first, "new_password": "a-brand-new-secret"})).await;
        r.assert_error(400, "invalid_token");
        let r = app.post("/api/v1/auth/password-reset/confirm", None,
            json!({"token": second, "new_password": "a-brand-new-secret"})).await;
        assert_eq!(r.status, 204);
    }

    async fn a_reset_checks_the_password_rules_and_clears_the_failure_count(backend) {
        let sink = SmtpSink::start().await;
        let app = mailing_app(backend, &sink, &[("LOGIN_MAX_FAILURES", "2")]).await;
        app.create_user("locked@example.com", "user-password-1", false).await;
        for _ in 0..2 {
            app.post("/api/v1/auth/login", None,
                json!({"email": "locked@example.com", "password": "wrong-password"})).await;
        }
        let r = app.post("/api/v1/auth/login", None,
            json!({"email": "locked@example.com", "password": "user-password-1"})).await;
        r.assert_error(429, "rate_limited");

        request_reset(&app, "locked@example.com").await;
        let token = sink.wait_for(1).await.remove(0).token();
        let weak = app.post("/api/v1/auth/password-reset/confirm", None,
            json!({"token": token, "new_password": "password"})).await;
        weak.assert_error(422, "validation_error");
        assert_eq!(weak.error_fields(), ["new_password"]);
        let r = app.post("/api/v1/auth/password-reset/confirm", None,
            json!({"token": token, "new_password": "a-brand-new-secret"})).await;
        assert_eq!(r.status, 204, "the rule check must not spend the token: {}", r.text);
        app.login("locked@example.com", "a-brand-new-secret").await;
        let bad = app.post("/api/v1/auth/password-reset/confirm", None,
            json!({"token": "made-up", "new_password": "a-brand-new-secret"})).await;
        bad.assert_error(400, "invalid_token");
    }

    async fn an_expired_reset_link_is_refused(backend) {
        let sink = SmtpSink::start().await;
        let offset = Arc::new(AtomicI64::new(0));
        let url = sink.url();
        let vars = TestApp::vars(&[
            ("MAIL_TRANSPORT", "smtp"), ("SMTP_URL", url.as_str()), ("PASSWORD_RESET_TTL_SECS", "60"),
        ]);
        let options = LaunchOptions { clock: Clock::shifted(offset.clone()), ..LaunchOptions::default() };
        let app = TestApp::start(backend, crate::helpers::TestDatabase::fresh(backend).await, vars, options).await;
        request_reset(&app, ADMIN_EMAIL).await;
        let token = sink.wait_for(1).await.remove(0).token();
        offset.store(61, std::sync::atomic::Ordering::SeqCst);
        let r = app.post("/api/v1/auth/password-reset/confirm", None,
            json!({"token": token, "new_password": "a-brand-new-secret"})).await;
        r.assert_error(400, "invalid_token");
        app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    }

    async fn the_reset_page_completes_the_flow_in_a_browser_without_javascript(backend) {
        let sink = SmtpSink::start().await;
        let app = mailing_app(backend, &sink, &[]).await;
        app.create_user("browser@example.com", "user-password-1", false).await;
        request_reset(&app, "browser@example.com").await;
        let mail = sink.wait_for(1).await.remove(0);
        let path = mail.link().replace(PUBLIC_URL, "");

        let page = app.get(&path, None).await;
        assert_eq!(page.status, 200);
        assert!(page.header("content-type").unwrap().starts_with("text/html"));
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        assert!(page.header("content-security-policy").unwrap().contains("frame-ancestors 'none'"));
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        assert!(page.text.contains("<form method=\"post\""));
        assert!(page.text.contains(&format!("value=\"{}\"", mail.token())));
        assert!(!page.text.contains("<script"));

        let form = |password: &str, confirm: &str| {
            app.client.post(app.url("/account/reset-password")).form(&[
                ("token", mail.token()), ("password", password.to_string()),
                ("confirm_password", confirm.to_string()),
            ])
        };
        let differ = app.send_raw(form("a-brand-new-secret", "another-secret")).await;
        assert_eq!(differ.status, 422);
        assert!(differ.text.contains("differ"));
        let weak = app.send_raw(form("password", "password")).await;
        assert_eq!(weak.status, 422);
        assert!(weak.text.contains("common"));
        let done = app.send_raw(form("a-brand-new-secret", "a-brand-new-secret")).await;
        assert_eq!(done.status, 200, "{}", done.text);
        assert!(done.text.contains("password was changed"));
        app.login("browser@example.com", "a-brand-new-secret").await;

        let used = app.get(&path, None).await;
        assert_eq!(used.status, 400);
        assert!(used.text.contains("expired or was already used"));
        let bare = app.get("/account/reset-password", None).await;
        assert_eq!(bare.status, 400);
        assert!(bare.text.contains("incomplete"));
    }

    async fn registration_mails_a_verification_link_that_verifies_the_address(backend) {
        let sink = SmtpSink::start().await;
        let app = mailing_app(backend, &sink, &[("ALLOW_REGISTRATION", "true")]).await;
        let r = app.post("/api/v1/auth/register", None,
            json!({"email": "new@example.com", "password": "user-password-1"})).await;
        assert_eq!(r.status, 201);
        assert_eq!(r.body["email_verified"], false);
        let mail = sink.wait_for(1).await.remove(0);
        assert_eq!(mail.to, ["new@example.com"]);
        assert!(mail.link().starts_with(&format!("{PUBLIC_URL}/account/verify-email?token=")));
        assert!(mail.part("text/plain").contains("24 hours"));

        let r = app.post("/api/v1/auth/verify-email", None, json!({"token": mail.token()})).await;
        assert_eq!(r.status, 204, "{}", r.text);
        let token = app.token_for("new@example.com", "user-password-1").await;
        assert_eq!(app.get("/api/v1/users/me", Some(&token)).await.body["email_verified"], true);
        let again = app.post("/api/v1/auth/verify-email", None, json!({"token": mail.token()})).await;
        again.assert_error(400, "invalid_token");
    }

    async fn the_verification_page_confirms_the_address_when_opened(backend) {
        let sink = SmtpSink::start().await;
        let app = mailing_app(backend, &sink, &[("ALLOW_REGISTRATION", "true")]).await;
        app.post("/api/v1/auth/register", None,
            json!({"email": "click@example.com", "password": "user-password-1"})).await;
        let path = sink.wait_for(1).await.remove(0).link().replace(PUBLIC_URL, "");
        let page = app.get(&path, None).await;
        assert_eq!(page.status, 200);
        assert!(page.text.contains("confirmed"));
        let token = app.token_for("click@example.com", "user-password-1").await;
        assert_eq!(app.get("/api/v1/users/me", Some(&token)).await.body["email_verified"], true);
        assert_eq!(app.get(&path, None).await.status, 400);
    }

    async fn an_email_change_is_verified_at_the_new_address_and_told_to_the_old(backend) {
        let sink = SmtpSink::start().await;
        let app = mailing_app(backend, &sink, &[]).await;
        let (_, token) = app.regular_user("old@example.com").await;
        let r = app.patch("/api/v1/users/me", Some(&token),
            json!({"email": "new@example.com", "current_password": "user-password-1"})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["email_verified"], false);
        sink.wait_for(2).await;
        let to_new = sink.to("new@example.com").remove(0);
        let to_old = sink.to("old@example.com").remove(0);
        assert!(to_old.header("Subject").unwrap().contains("was changed"));
        assert!(!to_old.part("text/plain").contains("token="), "the old address gets no link");
        let r = app.post("/api/v1/auth/verify-email", None, json!({"token": to_new.token()})).await;
        assert_eq!(r.status, 204);
        assert_eq!(app.get("/api/v1/users/me", Some(&token)).await.body["email_verified"], true);
    }

    async fn a_verification_link_is_void_once_the_address_changed_again(backend) {
        let sink = SmtpSink::start().await;
        let app = mailing_app(backend, &sink, &[]).await;
        let id = app.create_user("first@example.com", "user-password-1", false).await["id"].as_i64().unwrap();
        let path = format!("/api/v1/users/{id}");
        app.patch(&path, Some(app.admin()), json!({"email": "second@example.com"})).await;
        let link = sink.wait_for(2).await;
        let token = sink.to("second@example.com").remove(0).token();
        // Changed again before it was verified: the earlier link is void.
        let r = app.patch(&path, Some(app.admin()), json!({"email": "third@example.com", "email_verified": false})).await;
        assert_eq!(r.status, 200);
        sink.wait_for(link.len() + 2).await;
        let r = app.post("/api/v1/auth/verify-email", None, json!({"token": token})).await;
        r.assert_error(400, "invalid_token");
        let quiet = app.patch(&path, Some(app.admin()), json!({"email": "fourth@example.com", "email_verified": true})).await;
        assert_eq!(quiet.body["email_verified"], true);
        outbox_drained(&app).await;
        assert!(sink.to("fourth@example.com").is_empty());
    }

    async fn resend_mails_a_fresh_link_only_to_unverified_accounts(backend) {
        let sink = SmtpSink::start().await;
        let app = mailing_app(backend, &sink, &[
            ("ALLOW_REGISTRATION", "true"), ("REQUIRE_EMAIL_VERIFICATION", "true"),
        ]).await;
        app.post("/api/v1/auth/register", None,
            json!({"email": "late@example.com", "password": "user-password-1"})).await;
        let first = sink.wait_for(1).await.remove(0).token();
        let login = app.post("/api/v1/auth/login", None,
            json!({"email": "late@example.com", "password": "user-password-1"})).await;
        login.assert_error(403, "email_not_verified");

        let resend = |email: &'static str| app.post("/api/v1/auth/verify-email/resend", None, json!({"email": email}));
        let known = resend("late@example.com").await;
        let unknown = resend("ghost@example.com").await;
        let verified = resend(ADMIN_EMAIL).await;
        assert_eq!((known.status, unknown.status, verified.status), (202, 202, 202));
        assert_eq!(known.body, unknown.body);
        let second = sink.wait_for(2).await.remove(1).token();
        app.post("/api/v1/auth/verify-email", None, json!({"token": first})).await
            .assert_error(400, "invalid_token");
        assert_eq!(app.post("/api/v1/auth/verify-email", None, json!({"token": second})).await.status, 204);
        app.login("late@example.com", "user-password-1").await;
        outbox_drained(&app).await;
        assert_eq!(sink.received().len(), 2, "no mail for unknown or verified addresses");
    }

    async fn an_invitee_sets_a_password_from_the_link_and_is_verified(backend) {
        let sink = SmtpSink::start().await;
        let app = mailing_app(backend, &sink, &[]).await;
        let r = app.post("/api/v1/users/invite", Some(app.admin()),
            json!({"email": "guest@example.com", "full_name": "Guest", "is_superuser": false})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.header("location"), Some(format!("/api/v1/users/{}", r.body["id"]).as_str()));
        assert_eq!(r.body["email_verified"], false);
        assert_eq!(r.body["is_active"], true);
        // No password works before the invitation is accepted.
        app.post("/api/v1/auth/login", None, json!({"email": "guest@example.com", "password": "!no-password"}))
            .await.assert_error(401, "invalid_credentials");
        let mail = sink.wait_for(1).await.remove(0);
        assert!(mail.header("Subject").unwrap().contains("invited"));
        assert!(mail.link().starts_with(&format!("{PUBLIC_URL}/account/accept-invite?token=")));
        assert!(mail.part("text/plain").contains("7 days"));

        let page = app.get(&mail.link().replace(PUBLIC_URL, ""), None).await;
        assert_eq!(page.status, 200);
        assert!(page.text.contains("Accept your invitation"));
        let r = app.post("/api/v1/auth/accept-invite", None,
            json!({"token": mail.token(), "password": "guest-password-1"})).await;
        assert_eq!(r.status, 204, "{}", r.text);
        let token = app.token_for("guest@example.com", "guest-password-1").await;
        let me = app.get("/api/v1/users/me", Some(&token)).await;
        assert_eq!(me.body["email_verified"], true);
        assert_eq!(me.body["full_name"], "Guest");
        app.post("/api/v1/auth/accept-invite", None,
            json!({"token": mail.token(), "password": "guest-password-2"})).await
            .assert_error(400, "invalid_token");

        let taken = app.post("/api/v1/users/invite", Some(app.admin()), json!({"email": "GUEST@example.com"})).await;
        taken.assert_error(409, "email_taken");
        let denied = app.post("/api/v1/users/invite", Some(&token), json!({"email": "x@example.com"})).await;
        denied.assert_error(403, "forbidden");
        let bad = app.post("/api/v1/users/invite", Some(app.admin()), json!({"email": "nope"})).await;
        bad.assert_error(422, "validation_error");
    }

    async fn a_refusing_or_absent_mail_server_gets_the_mail_once_it_is_back(backend) {
        let sink = SmtpSink::start().await;
        sink.refuse(true);
        let app = mailing_app(backend, &sink, &[]).await;
        assert_eq!(request_reset(&app, ADMIN_EMAIL).await.status, 202);
        // Refused twice (451), still pending.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sink.attempts() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no retry");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(sink.received().is_empty());
        assert_eq!(app.store.outbox_counts().await.unwrap().pending, 1);
        // Now down altogether.
        let (addr, memory) = sink.stop();
        let failed_before = failed_attempts(&app);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while failed_attempts(&app) < failed_before + 2 {
            assert!(tokio::time::Instant::now() < deadline, "no retry while down");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(app.store.outbox_counts().await.unwrap().pending, 1);
        let sink = SmtpSink::resume(addr, memory).await;
        sink.refuse(false);
        let mail = sink.wait_for(1).await.remove(0);
        assert_eq!(mail.to, [ADMIN_EMAIL]);
        outbox_drained(&app).await;
        let metrics = app.get("/metrics", None).await.text;
        assert!(metrics.contains("outbox_delivered_total{topic=\"mail\"} 1"), "{metrics}");
        assert!(metrics.contains("outbox_failed_attempts_total{topic=\"mail\"}"));
        assert!(metrics.contains("outbox_pending_messages 0"));
    }

    async fn pending_mail_is_sent_after_a_restart_and_never_again_once_recorded(backend) {
        let sink = SmtpSink::start().await;
        sink.refuse(true);
        let url = sink.url();
        let vars = [("MAIL_TRANSPORT", "smtp"), ("SMTP_URL", url.as_str()),
            ("OUTBOX_RETRY_BASE_MS", "60000")];
        let mut first = TestApp::spawn_with(backend, &vars).await;
        request_reset(&first, ADMIN_EMAIL).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sink.attempts() < 1 {
            assert!(tokio::time::Instant::now() < deadline, "no attempt");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = first.shutdown().await;
        sink.refuse(false);
        // The next process starts later than the retry (and than any lease still held).
        let later = Clock::shifted(Arc::new(AtomicI64::new(600)));
        let second = TestApp::start(backend, first.database.clone(), TestApp::vars(&vars),
            LaunchOptions { clock: later, ..LaunchOptions::default() }).await;
        drop(first);
        let mail = sink.wait_for(1).await.remove(0);
        assert_eq!(mail.to, [ADMIN_EMAIL]);
        outbox_drained(&second).await;
        // Recorded as sent: nothing is left to lease, however late it is.
        let far = chrono::Utc::now() + chrono::Duration::days(1);
        let left = second.store.claim_outbox(far, far + chrono::Duration::minutes(2), 100).await.unwrap();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(sink.received().len(), 1);
    }

    async fn concurrent_senders_lease_each_message_once_and_keep_order_per_key(backend) {
        let app = TestApp::spawn(backend).await;
        let store = app.store.clone();
        // Far-future messages the app's own sender will not take.
        let later = chrono::Utc::now() + chrono::Duration::days(30);
        let messages = (0..60).map(|i| OutboxMessage {
            topic: Topic::Webhook,
            ordering_key: (i % 3 == 0).then(|| format!("user-{}", i % 2)),
            payload: format!("{{\"n\":{i}}}"),
        }).collect();
        store.enqueue(messages, later).await.unwrap();
        let now = later + chrono::Duration::seconds(1);
        let lease = now + chrono::Duration::minutes(2);
        let claims = futures_util::future::join_all((0..4).map(|_| store.claim_outbox(now, lease, 16))).await;
        let mut ids: Vec<i64> = claims.into_iter().flat_map(|c| c.unwrap()).map(|i| i.id).collect();
        let claimed = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), claimed, "a message was leased twice");
        // Of each ordering key only the oldest pending message is out at a time.
        let again = store.claim_outbox(now, lease, 100).await.unwrap();
        let keyed: Vec<_> = again.iter().filter(|i| {
            let n: i64 = serde_json::from_str::<serde_json::Value>(&i.payload).unwrap()["n"].as_i64().unwrap();
            n % 3 == 0
        }).collect();
        assert!(keyed.is_empty(), "a later message of a key was leased before the first finished: {keyed:?}");
    }
}

fn failed_attempts(app: &TestApp) -> u64 {
    app.state
        .services
        .operations
        .outbox_figures()
        .iter()
        .find(|f| f.topic == "mail")
        .map_or(0, |f| f.failed_attempts)
}

/// With several instances on PostgreSQL, each message is delivered once.
#[cfg(feature = "postgres")]
#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "set TEST_POSTGRES_URL to run the PostgreSQL tests"
)]
async fn two_instances_on_postgres_send_each_mail_once() {
    let sink = SmtpSink::start().await;
    let first = mailing_app(Backend::Postgres, &sink, &[]).await;
    let second = first.restart().await;
    let mut emails = Vec::new();
    for i in 0..12 {
        let email = format!("many{i}@example.com");
        first.create_user(&email, "user-password-1", false).await;
        emails.push(email);
    }
    for (i, email) in emails.iter().enumerate() {
        let app = if i % 2 == 0 { &first } else { &second };
        assert_eq!(request_reset(app, email).await.status, 202);
    }
    sink.wait_for(emails.len()).await;
    outbox_drained(&first).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mails = sink.received();
    assert_eq!(mails.len(), emails.len(), "a mail went out twice");
    for email in &emails {
        assert_eq!(sink.to(email).len(), 1, "{email}");
    }
}
