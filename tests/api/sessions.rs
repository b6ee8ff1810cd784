//! Sessions: one per login, checked on every request, ended at once by every kind of
//! revocation; refresh rotation that cannot be raced.

use std::sync::{Arc, atomic::AtomicI64};

use roster::service::Clock;
use serde_json::{Value, json};

use crate::{
    auth::session_of,
    helpers::{TestApp, backend_tests},
};

const PASSWORD: &str = "user-password-1";

async fn login_as(app: &TestApp, email: &str, agent: &str) -> Value {
    let r = app
        .send_raw(
            app.client
                .post(app.url("/api/v1/auth/login"))
                .header("user-agent", agent)
                .json(&json!({"email": email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

fn access(pair: &Value) -> &str {
    pair["access_token"].as_str().unwrap()
}

async fn refresh(app: &TestApp, pair: &Value) -> crate::helpers::Resp {
    app.post(
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": pair["refresh_token"]}),
    )
    .await
}

/// Every token of `pair` is refused: the access token, and its refresh token.
async fn assert_dead(app: &TestApp, pair: &Value) {
    app.get("/api/v1/users/me", Some(access(pair)))
        .await
        .assert_error(401, "unauthorized");
    refresh(app, pair).await.assert_error(401, "unauthorized");
}

async fn assert_alive(app: &TestApp, pair: &Value) {
    let r = app.get("/api/v1/users/me", Some(access(pair))).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

backend_tests! {
    async fn every_login_opens_a_session_listed_newest_first(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, _) = app.regular_user("multi@example.com").await;
        let laptop = login_as(&app, "multi@example.com", "Laptop/1.0").await;
        let phone = login_as(&app, "multi@example.com", "Phone/2.0").await;
        let r = app.get("/api/v1/users/me/sessions", Some(access(&phone))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let items = r.body["items"].as_array().unwrap();
        // The helper's own login, the laptop, the phone: newest first.
        assert_eq!(items.len(), 3, "{}", r.text);
        assert_eq!(items[0]["user_agent"], "Phone/2.0");
        assert_eq!(items[0]["current"], true);
        assert_eq!(items[0]["id"], session_of(access(&phone)));
        assert_eq!(items[1]["user_agent"], "Laptop/1.0");
        assert_eq!(items[1]["current"], false);
        assert_eq!(items[0]["ip"], "127.0.0.1");
        let created = chrono::DateTime::parse_from_rfc3339(items[0]["created_at"].as_str().unwrap()).unwrap();
        let expires = chrono::DateTime::parse_from_rfc3339(items[0]["expires_at"].as_str().unwrap()).unwrap();
        assert_eq!((expires - created).num_seconds(), 2_592_000, "SESSION_MAX_LIFETIME_SECS default");
        assert!(items[0]["last_used_at"].is_string());
        // What the database holds agrees.
        let stored = app.store.list_sessions(id, chrono::Utc::now()).await.unwrap();
        assert_eq!(stored.len(), 3);
        assert_eq!(stored[1].id, session_of(access(&laptop)));
        app.get("/api/v1/users/me/sessions", None).await.assert_error(401, "unauthorized");
    }

    async fn logout_ends_the_session_and_its_access_token_at_once(backend) {
        let app = TestApp::spawn(backend).await;
        app.regular_user("out@example.com").await;
        let pair = login_as(&app, "out@example.com", "t").await;
        let other = login_as(&app, "out@example.com", "t").await;
        assert_alive(&app, &pair).await;
        let r = app.post("/api/v1/auth/logout", None, json!({"refresh_token": pair["refresh_token"]})).await;
        assert_eq!(r.status, 204, "{}", r.text);
        assert_dead(&app, &pair).await;
        assert_alive(&app, &other).await;
        let stored = app.store.get_session(&session_of(access(&pair))).await.unwrap().unwrap();
        assert!(stored.revoked_at.is_some());
        // Logging out again, or with a token never issued, is still fine.
        assert_eq!(app.post("/api/v1/auth/logout", None, json!({"refresh_token": pair["refresh_token"]})).await.status, 204);
        assert_eq!(app.post("/api/v1/auth/logout", None, json!({"refresh_token": "never-issued"})).await.status, 204);
    }

    async fn refresh_rotates_within_the_session_and_reuse_ends_all_of_it(backend) {
        let app = TestApp::spawn(backend).await;
        app.regular_user("rot@example.com").await;
        let first = login_as(&app, "rot@example.com", "t").await;
        let bystander = login_as(&app, "rot@example.com", "t").await;
        let second = refresh(&app, &first).await;
        assert_eq!(second.status, 200, "{}", second.text);
        let second = second.body;
        assert_eq!(session_of(access(&second)), session_of(access(&first)), "refresh keeps the session");
        assert_ne!(second["refresh_token"], first["refresh_token"]);
        let third = refresh(&app, &second).await.body;
        assert_alive(&app, &third).await;
        // Replaying the first (spent) token ends the session: every token of it, including
        // the ones minted after the spent one.
        refresh(&app, &first).await.assert_error(401, "unauthorized");
        assert_dead(&app, &third).await;
        app.get("/api/v1/users/me", Some(access(&first))).await.assert_error(401, "unauthorized");
        assert_alive(&app, &bystander).await;
    }

    async fn you_can_end_one_session_or_all_but_the_current(backend) {
        let app = TestApp::spawn(backend).await;
        app.regular_user("mine@example.com").await;
        app.regular_user("theirs@example.com").await;
        let a = login_as(&app, "mine@example.com", "a").await;
        let b = login_as(&app, "mine@example.com", "b").await;
        let c = login_as(&app, "mine@example.com", "c").await;
        let theirs = login_as(&app, "theirs@example.com", "x").await;
        let path = |pair: &Value| format!("/api/v1/users/me/sessions/{}", session_of(access(pair)));
        // Someone else's session, or one that does not exist, is not yours to end.
        app.delete(&path(&theirs), Some(access(&a))).await.assert_error(404, "not_found");
        app.delete("/api/v1/users/me/sessions/no-such-session", Some(access(&a))).await.assert_error(404, "not_found");
        assert_alive(&app, &theirs).await;
        assert_eq!(app.delete(&path(&b), Some(access(&a))).await.status, 204);
        assert_dead(&app, &b).await;
        app.delete(&path(&b), Some(access(&a))).await.assert_error(404, "not_found");
        assert_eq!(app.delete("/api/v1/users/me/sessions", Some(access(&a))).await.status, 204);
        assert_dead(&app, &c).await;
        assert_alive(&app, &a).await;
        let left = app.get("/api/v1/users/me/sessions", Some(access(&a))).await.body;
        assert_eq!(left["items"].as_array().unwrap().len(), 1);
        assert_eq!(left["items"][0]["current"], true);
    }

    async fn password_changes_end_sessions_as_the_spec_says(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, _) = app.regular_user("pw@example.com").await;
        let mine = login_as(&app, "pw@example.com", "me").await;
        let other = login_as(&app, "pw@example.com", "other").await;
        let r = app.patch("/api/v1/users/me", Some(access(&mine)), json!({"password": "new-password-2", "current_password": PASSWORD})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        // Your own change keeps the session you made it from, and ends the others.
        assert_alive(&app, &mine).await;
        assert_dead(&app, &other).await;
        // A password set by a superuser ends every session.
        let r = app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"password": "set-by-admin-3"})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_dead(&app, &mine).await;
    }

    async fn deactivation_and_deletion_end_every_session(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, _) = app.regular_user("bye@example.com").await;
        let pair = login_as(&app, "bye@example.com", "t").await;
        app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"is_active": false})).await;
        app.get("/api/v1/users/me", Some(access(&pair))).await.assert_error(403, "inactive_user");
        app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"is_active": true})).await;
        // Reactivation revives none of them.
        assert_dead(&app, &pair).await;
        let again = login_as(&app, "bye@example.com", "t").await;
        assert_eq!(app.delete(&format!("/api/v1/users/{id}"), Some(app.admin())).await.status, 204);
        assert_dead(&app, &again).await;
        assert!(app.store.get_session(&session_of(access(&again))).await.unwrap().is_none());
    }

    async fn a_superuser_sees_and_ends_anyones_sessions(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app.regular_user("watched@example.com").await;
        let pair = login_as(&app, "watched@example.com", "Agent/9").await;
        let path = format!("/api/v1/users/{id}/sessions");
        let r = app.get(&path, Some(app.admin())).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let items = r.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["user_agent"], "Agent/9");
        assert!(items.iter().all(|s| s["current"] == false), "none is the admin's");
        app.get(&path, Some(&token)).await.assert_error(403, "forbidden");
        app.delete(&path, Some(&token)).await.assert_error(403, "forbidden");
        app.get("/api/v1/users/424242/sessions", Some(app.admin())).await.assert_error(404, "not_found");
        app.get("/api/v1/users/abc/sessions", Some(app.admin())).await.assert_error(422, "validation_error");
        assert_eq!(app.delete(&path, Some(app.admin())).await.status, 204);
        assert_dead(&app, &pair).await;
        app.get("/api/v1/users/me", Some(&token)).await.assert_error(401, "unauthorized");
        assert!(app.get(&path, Some(app.admin())).await.body["items"].as_array().unwrap().is_empty());
    }

    async fn two_concurrent_refreshes_leave_no_token_of_the_session_working(backend) {
        let app = TestApp::spawn(backend).await;
        app.regular_user("race@example.com").await;
        for round in 0..50 {
            let pair = login_as(&app, "race@example.com", "race").await;
            let (a, b) = tokio::join!(refresh(&app, &pair), refresh(&app, &pair));
            let wins: Vec<&crate::helpers::Resp> = [&a, &b].into_iter().filter(|r| r.status == 200).collect();
            assert_eq!(wins.len(), 1, "round {round}: exactly one refresh succeeds ({} / {})", a.status, b.status);
            let loser = if a.status == 200 { &b } else { &a };
            loser.assert_error(401, "unauthorized");
            // The loser was a reuse: the session is over, the winner's tokens included.
            assert_dead(&app, &wins[0].body).await;
            assert_dead(&app, &pair).await;
        }
    }

    async fn a_refresh_racing_a_logout_never_outlives_it(backend) {
        let app = TestApp::spawn(backend).await;
        app.regular_user("racer@example.com").await;
        for round in 0..50 {
            let pair = login_as(&app, "racer@example.com", "race").await;
            let logout = app.post("/api/v1/auth/logout", None, json!({"refresh_token": pair["refresh_token"]}));
            let (refreshed, out) = tokio::join!(refresh(&app, &pair), logout);
            assert_eq!(out.status, 204, "round {round}");
            assert!(matches!(refreshed.status, 200 | 401), "round {round}: {}", refreshed.text);
            if refreshed.status == 200 {
                assert_dead(&app, &refreshed.body).await;
            }
            assert_dead(&app, &pair).await;
        }
    }

    async fn a_session_past_its_lifetime_cannot_be_refreshed(backend) {
        let offset = Arc::new(AtomicI64::new(0));
        let app = TestApp::spawn_with_clock(backend, &[("SESSION_MAX_LIFETIME_SECS", "3600")], Clock::shifted(offset.clone())).await;
        app.regular_user("old@example.com").await;
        let pair = login_as(&app, "old@example.com", "t").await;
        offset.store(1800, std::sync::atomic::Ordering::SeqCst);
        let fresh = refresh(&app, &pair).await;
        assert_eq!(fresh.status, 200, "{}", fresh.text);
        // The refreshed token expires with its session, not REFRESH_TOKEN_TTL_SECS later.
        offset.store(3601, std::sync::atomic::Ordering::SeqCst);
        refresh(&app, &fresh.body).await.assert_error(401, "unauthorized");
        app.get("/api/v1/users/me", Some(access(&fresh.body))).await.assert_error(401, "unauthorized");
    }

    async fn ended_sessions_and_spent_tokens_are_pruned(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, _) = app.regular_user("prune@example.com").await;
        let mut ended = Vec::new();
        for _ in 0..5 {
            let pair = login_as(&app, "prune@example.com", "t").await;
            let next = refresh(&app, &pair).await.body; // leaves a spent token behind
            app.post("/api/v1/auth/logout", None, json!({"refresh_token": next["refresh_token"]})).await;
            ended.push(session_of(access(&pair)));
        }
        let live = login_as(&app, "prune@example.com", "t").await;
        let live_next = refresh(&app, &live).await.body;
        let pruned = app.state.services.auth.prune().await.unwrap();
        // 5 ended sessions with 2 tokens each; the live session keeps its spent token
        // (needed to detect its reuse) and its current one.
        assert_eq!(pruned, 15);
        for id in &ended {
            assert!(app.store.get_session(id).await.unwrap().is_none());
        }
        assert_eq!(app.store.list_sessions(id, chrono::Utc::now()).await.unwrap().len(), 2);
        assert_eq!(app.state.services.auth.prune().await.unwrap(), 0);
        // Reuse detection still works for the live session.
        refresh(&app, &live).await.assert_error(401, "unauthorized");
        assert_dead(&app, &live_next).await;
        let metrics = app.get("/metrics", None).await.text;
        assert!(metrics.lines().any(|l| l == "sessions_pruned_rows_total 15"), "{metrics}");
    }

    async fn a_login_after_a_cost_change_rehashes_the_password(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, _) = app.regular_user("cost@example.com").await;
        let before = app.store.get_password_hash(id).await.unwrap().unwrap();
        assert!(before.contains("m=8,"), "{before}");
        let dearer = app.restart_with(&[("ARGON2_MEMORY_KIB", "16")]).await;
        dearer.token_for("cost@example.com", PASSWORD).await;
        let after = dearer.store.get_password_hash(id).await.unwrap().unwrap();
        assert!(after.contains("m=16,"), "{after}");
        dearer.token_for("cost@example.com", PASSWORD).await;
        assert_eq!(dearer.store.get_password_hash(id).await.unwrap().unwrap(), after, "rehashed once");
        // Starting the second server logged the admin in: rehashed too.
        let admin = dearer.store.find_credentials_by_email(&roster::domain::Email::parse(crate::helpers::ADMIN_EMAIL).unwrap()).await.unwrap().unwrap();
        assert!(admin.hashed_password.contains("m=16,"), "{}", admin.hashed_password);
    }
}
