use std::time::{Duration, Instant};

use chrono::Utc;
use roster::auth::AccessTokens;
use serde_json::json;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET, TestApp, backend_tests};

backend_tests! {
    async fn login_returns_a_bearer_pair_with_the_access_lifetime(backend) {
        let app = TestApp::spawn_with(backend, &[("ACCESS_TOKEN_TTL_SECS", "900")]).await;
        let r = app.post("/api/v1/auth/login", None, json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["token_type"], "bearer");
        assert_eq!(r.body["expires_in"], 900);
        assert!(r.body["access_token"].as_str().unwrap().split('.').count() == 3);
        assert!(r.body["refresh_token"].as_str().unwrap().len() >= 32);
        let me = app.get("/api/v1/users/me", r.body["access_token"].as_str()).await;
        assert_eq!(me.status, 200);
        assert_eq!(me.body["email"], ADMIN_EMAIL);
    }

    async fn login_email_is_case_insensitive_and_trimmed(backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.post("/api/v1/auth/login", None, json!({"email": "  ROOT@Example.COM ", "password": ADMIN_PASSWORD})).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    async fn unknown_email_and_wrong_password_give_the_same_401(backend) {
        let app = TestApp::spawn(backend).await;
        let wrong = app.post("/api/v1/auth/login", None, json!({"email": ADMIN_EMAIL, "password": "not-the-password"})).await;
        let unknown = app.post("/api/v1/auth/login", None, json!({"email": "nobody@example.com", "password": "not-the-password"})).await;
        wrong.assert_error(401, "invalid_credentials");
        unknown.assert_error(401, "invalid_credentials");
        assert_eq!(wrong.body["message"], unknown.body["message"]);
    }

    async fn login_of_an_inactive_user_is_403_inactive_user(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, _) = app.regular_user("sleepy@example.com").await;
        app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"is_active": false})).await;
        let r = app.post("/api/v1/auth/login", None, json!({"email": "sleepy@example.com", "password": "user-password-1"})).await;
        r.assert_error(403, "inactive_user");
    }

    async fn login_with_a_malformed_email_is_422(backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.post("/api/v1/auth/login", None, json!({"email": "not-an-email", "password": "whatever1"})).await;
        r.assert_error(422, "validation_error");
        assert_eq!(r.error_fields(), ["email"]);
    }

    async fn refresh_rotates_the_pair_and_spends_the_old_token(backend) {
        let app = TestApp::spawn(backend).await;
        let first = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let r = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": first["refresh_token"]})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_ne!(r.body["refresh_token"], first["refresh_token"]);
        assert_eq!(r.body["token_type"], "bearer");
        assert_eq!(app.get("/api/v1/users/me", r.body["access_token"].as_str()).await.status, 200);
        let again = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": first["refresh_token"]})).await;
        again.assert_error(401, "unauthorized");
    }

    async fn reusing_a_spent_refresh_token_revokes_its_family_only(backend) {
        let app = TestApp::spawn(backend).await;
        let stolen = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let other_session = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let rotated = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": stolen["refresh_token"]})).await;
        assert_eq!(rotated.status, 200);
        // The thief replays the spent token: the whole family dies, including the rotated one.
        app.post("/api/v1/auth/refresh", None, json!({"refresh_token": stolen["refresh_token"]})).await.assert_error(401, "unauthorized");
        app.post("/api/v1/auth/refresh", None, json!({"refresh_token": rotated.body["refresh_token"]})).await.assert_error(401, "unauthorized");
        let other = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": other_session["refresh_token"]})).await;
        assert_eq!(other.status, 200, "another session must survive: {}", other.text);
    }

    async fn logout_ends_the_session_and_unknown_tokens_still_get_204(backend) {
        let app = TestApp::spawn(backend).await;
        let session = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let r = app.post("/api/v1/auth/logout", None, json!({"refresh_token": session["refresh_token"]})).await;
        assert_eq!(r.status, 204);
        assert!(r.text.is_empty());
        app.post("/api/v1/auth/refresh", None, json!({"refresh_token": session["refresh_token"]})).await.assert_error(401, "unauthorized");
        assert_eq!(app.post("/api/v1/auth/logout", None, json!({"refresh_token": session["refresh_token"]})).await.status, 204);
        assert_eq!(app.post("/api/v1/auth/logout", None, json!({"refresh_token": "never-issued"})).await.status, 204);
    }

    async fn refresh_with_an_unknown_token_is_401(backend) {
        let app = TestApp::spawn(backend).await;
        app.post("/api/v1/auth/refresh", None, json!({"refresh_token": "bogus"})).await.assert_error(401, "unauthorized");
    }

    async fn a_deactivated_users_tokens_are_refused(backend) {
        let app = TestApp::spawn(backend).await;
        let id = app.create_user("gone@example.com", "user-password-1", false).await["id"].as_i64().unwrap();
        let session = app.login("gone@example.com", "user-password-1").await;
        let access = session["access_token"].as_str().unwrap();
        assert_eq!(app.get("/api/v1/users/me", Some(access)).await.status, 200);
        app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"is_active": false})).await;
        app.get("/api/v1/users/me", Some(access)).await.assert_error(403, "inactive_user");
        // Deactivation revoked the refresh token too; reactivation does not bring it back.
        app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"is_active": true})).await;
        app.post("/api/v1/auth/refresh", None, json!({"refresh_token": session["refresh_token"]})).await.assert_error(401, "unauthorized");
        // Nor the access token: its session ended with the deactivation.
        app.get("/api/v1/users/me", Some(access)).await.assert_error(401, "unauthorized");
    }

    async fn a_deleted_users_access_token_is_401(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app.regular_user("ghost@example.com").await;
        assert_eq!(app.delete(&format!("/api/v1/users/{id}"), Some(app.admin())).await.status, 204);
        app.get("/api/v1/users/me", Some(&token)).await.assert_error(401, "unauthorized");
    }

    async fn expired_forged_and_garbage_access_tokens_are_401(backend) {
        let app = TestApp::spawn(backend).await;
        let keys = AccessTokens::new(JWT_SECRET.as_bytes(), Duration::from_secs(60));
        let sid = session_of(app.admin());
        let expired = keys.issue(1, &sid, Utc::now() - chrono::Duration::seconds(120)).unwrap();
        let forged = AccessTokens::new(b"someone-elses-secret-someone-else", Duration::from_secs(60)).issue(1, &sid, Utc::now()).unwrap();
        let no_such_session = keys.issue(1, "made-up-session", Utc::now()).unwrap();
        app.get("/api/v1/users/me", Some(&no_such_session)).await.assert_error(401, "unauthorized");
        let valid = keys.issue(1, &sid, Utc::now()).unwrap();
        let mut parts: Vec<String> = valid.split('.').map(str::to_string).collect();
        parts[0] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0".into(); // {"alg":"none","typ":"JWT"}
        let alg_none = format!("{}.{}.", parts[0], parts[1]);
        for token in [expired.as_str(), forged.as_str(), alg_none.as_str(), "garbage"] {
            app.get("/api/v1/users/me", Some(token)).await.assert_error(401, "unauthorized");
        }
        assert_eq!(app.get("/api/v1/users/me", Some(&valid)).await.status, 200);
    }

    async fn tokens_not_yet_valid_or_for_another_user_or_without_claims_are_401(backend) {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let app = TestApp::spawn(backend).await;
        let (other, _) = app.regular_user("other@example.com").await;
        let key = EncodingKey::from_secret(JWT_SECRET.as_bytes());
        let now = Utc::now().timestamp();
        let sign = |claims: serde_json::Value| encode(&Header::default(), &claims, &key).unwrap();
        let sid = session_of(app.admin());
        let future = sign(json!({"sub": "1", "sid": sid, "iat": now, "nbf": now + 120, "exp": now + 600}));
        let no_exp = sign(json!({"sub": "1", "sid": sid, "iat": now, "nbf": now}));
        let bad_sub = sign(json!({"sub": "root", "sid": sid, "iat": now, "nbf": now, "exp": now + 600}));
        let no_sid = sign(json!({"sub": "1", "iat": now, "nbf": now, "exp": now + 600}));
        for token in [&future, &no_exp, &bad_sub, &no_sid] {
            app.get("/api/v1/users/me", Some(token)).await.assert_error(401, "unauthorized");
        }
        // A valid token names exactly one user; changing the name breaks the signature.
        let valid = sign(json!({"sub": "1", "sid": sid, "iat": now, "nbf": now, "exp": now + 600}));
        let mut parts: Vec<String> = valid.split('.').map(str::to_string).collect();
        use base64::Engine;
        let payload = json!({"sub": other.to_string(), "sid": sid, "iat": now, "nbf": now, "exp": now + 600});
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
        app.get("/api/v1/users/me", Some(&parts.join("."))).await.assert_error(401, "unauthorized");
        assert_eq!(app.get("/api/v1/users/me", Some(&valid)).await.body["id"], 1);
    }

    async fn missing_or_non_bearer_authorization_is_401(backend) {
        let app = TestApp::spawn(backend).await;
        app.get("/api/v1/users/me", None).await.assert_error(401, "unauthorized");
        let basic = app.client.get(app.url("/api/v1/users/me")).header("authorization", "Basic YTpi");
        app.send_raw(basic).await.assert_error(401, "unauthorized");
    }

    async fn registration_is_403_when_disabled(backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.post("/api/v1/auth/register", None, json!({"email": "new@example.com", "password": "password-123"})).await;
        r.assert_error(403, "forbidden");
        assert!(app.store.find_credentials_by_email(&roster::domain::Email::parse("new@example.com").unwrap()).await.unwrap().is_none());
    }

    async fn registration_creates_an_active_non_superuser_when_allowed(backend) {
        let app = TestApp::spawn_with(backend, &[("ALLOW_REGISTRATION", "true")]).await;
        let r = app.post("/api/v1/auth/register", None, json!({"email": "new@example.com", "password": "password-123", "full_name": "New", "is_superuser": true})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["is_superuser"], false);
        assert_eq!(r.body["is_active"], true);
        assert_eq!(r.header("location"), Some(format!("/api/v1/users/{}", r.body["id"]).as_str()));
        assert_eq!(app.login("new@example.com", "password-123").await["token_type"], "bearer");
        app.post("/api/v1/auth/register", None, json!({"email": "NEW@example.com", "password": "password-123"})).await.assert_error(409, "email_taken");
        let bad = app.post("/api/v1/auth/register", None, json!({"email": "x", "password": "short"})).await;
        bad.assert_error(422, "validation_error");
        assert_eq!(bad.error_fields(), ["email", "password"]);
    }

    async fn a_generated_jwt_secret_survives_a_restart(backend) {
        let app = TestApp::spawn_with(backend, &[("JWT_SECRET", "")]).await;
        let token = app.admin().to_string();
        let again = app.restart().await;
        assert_eq!(again.get("/api/v1/users/me", Some(&token)).await.status, 200);
    }

    async fn wrong_password_and_unknown_email_take_about_the_same_time(backend) {
        let app = TestApp::spawn_with(backend, &[("ARGON2_MEMORY_KIB", "4096"), ("ARGON2_ITERATIONS", "2")]).await;
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for _ in 0..5 {
            for (email, samples) in [(ADMIN_EMAIL, &mut known), ("nobody@example.com", &mut unknown)] {
                let started = Instant::now();
                let r = app.post("/api/v1/auth/login", None, json!({"email": email, "password": "wrong-password"})).await;
                assert_eq!(r.status, 401);
                samples.push(started.elapsed());
            }
        }
        known.sort();
        unknown.sort();
        let (k, u) = (known[2].as_secs_f64(), unknown[2].as_secs_f64());
        // Both verify an argon2 hash; a skipped verification would be ~100× faster.
        assert!(u > k / 5.0 && k > u / 5.0, "known {k:.4}s vs unknown {u:.4}s");
    }
}

/// The session id an access token names (its `sid` claim).
pub fn session_of(access_token: &str) -> String {
    use base64::Engine;
    let payload = access_token.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64"),
    )
    .expect("JSON claims");
    claims["sid"].as_str().expect("a sid claim").to_string()
}

mod key_rotation {
    use crate::helpers::{TestApp, backend_tests};

    const OTHER_KEY: &str = "a-completely-different-key-of-32-bytes!!";

    backend_tests! {
        async fn previous_secrets_keep_verifying_tokens_they_signed(backend) {
            let app = TestApp::spawn(backend).await;
            let old = app.admin().to_string();
            let kid = jsonwebtoken::decode_header(&old).unwrap().kid.expect("tokens carry a kid");
            assert_eq!(kid, roster::auth::key_id(crate::helpers::JWT_SECRET.as_bytes()));
            let rotated = app.restart_with(&[("JWT_SECRET", OTHER_KEY), ("JWT_PREVIOUS_SECRETS", crate::helpers::JWT_SECRET)]).await;
            assert_eq!(rotated.get("/api/v1/users/me", Some(&old)).await.status, 200, "the old key still verifies");
            let new_kid = jsonwebtoken::decode_header(rotated.admin()).unwrap().kid.unwrap();
            assert_ne!(new_kid, kid, "new tokens are signed with the new key");
            let retired = app.restart_with(&[("JWT_SECRET", OTHER_KEY)]).await;
            retired.get("/api/v1/users/me", Some(&old)).await.assert_error(401, "unauthorized");
        }

        async fn rotating_the_stored_key_keeps_old_tokens_working_until_they_expire(backend) {
            let app = TestApp::spawn_with(backend, &[("JWT_SECRET", "")]).await;
            let old = app.admin().to_string();
            let rotated = roster::service::keys::rotate(&app.state.settings, &app.store, chrono::Utc::now()).await.unwrap();
            assert_eq!(rotated.old_kid.as_deref(), jsonwebtoken::decode_header(&old).unwrap().kid.as_deref());
            let after = app.restart().await;
            assert_eq!(after.get("/api/v1/users/me", Some(&old)).await.status, 200);
            let fresh = after.admin().to_string();
            assert_eq!(jsonwebtoken::decode_header(&fresh).unwrap().kid.as_deref(), Some(rotated.new_kid.as_str()));
            // A retired key verifies until its tokens cannot be unexpired: a rotation run an
            // access-token lifetime ago leaves nothing retired to verify with.
            let settings = &app.state.settings;
            let ttl = chrono::Duration::from_std(settings.access_token_ttl).unwrap();
            let previous = roster::service::keys::rotate(settings, &app.store, chrono::Utc::now() - ttl * 2).await.unwrap();
            let again = app.restart().await;
            again.get("/api/v1/users/me", Some(&fresh)).await.assert_error(401, "unauthorized");
            assert_eq!(previous.old_kid.as_deref(), Some(rotated.new_kid.as_str()));
            // The CLI refuses to rotate a key that configuration provides.
            let configured = TestApp::spawn(backend).await;
            assert!(roster::service::keys::rotate(&configured.state.settings, &configured.store, chrono::Utc::now()).await.is_err());
        }
    }
}
