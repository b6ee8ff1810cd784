use roster::domain::Email;
use serde_json::json;

use crate::helpers::{ADMIN_EMAIL, TestApp, backend_tests};

const USER_KEYS: [&str; 8] = [
    "created_at",
    "email",
    "email_verified",
    "full_name",
    "id",
    "is_active",
    "is_superuser",
    "updated_at",
];

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

backend_tests! {
    async fn create_returns_201_the_user_and_its_location(backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.post("/api/v1/users", Some(app.admin()), json!({
            "email": "  Ann@Example.com ", "password": "password-123", "full_name": "Ann Lee"
        })).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(keys(&r.body), USER_KEYS);
        assert_eq!(r.body["email"], "Ann@Example.com");
        assert_eq!(r.body["full_name"], "Ann Lee");
        assert_eq!(r.body["is_active"], true);
        assert_eq!(r.body["is_superuser"], false);
        assert!(!r.text.contains("argon2"), "the hash must never leave the server");
        let location = r.header("location").unwrap().to_string();
        assert_eq!(location, format!("/api/v1/users/{}", r.body["id"]));
        let fetched = app.get(&location, Some(app.admin())).await;
        assert_eq!(fetched.body, r.body);
        assert!(!app.token_for("ann@example.com", "password-123").await.is_empty());
    }

    async fn create_with_a_taken_email_in_any_case_is_409_and_writes_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        app.create_user("dup@example.com", "password-123", false).await;
        let before = app.store.count_users().await.unwrap();
        let r = app.post("/api/v1/users", Some(app.admin()), json!({"email": "DUP@example.COM", "password": "password-123"})).await;
        r.assert_error(409, "email_taken");
        assert_eq!(app.store.count_users().await.unwrap(), before);
    }

    async fn create_reports_every_invalid_field_and_writes_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        let before = app.store.count_users().await.unwrap();
        let r = app.post("/api/v1/users", Some(app.admin()), json!({
            "email": "no-at-sign", "password": "short", "full_name": "x".repeat(256)
        })).await;
        r.assert_error(422, "validation_error");
        assert_eq!(r.error_fields(), ["email", "password", "full_name"]);
        for detail in r.body["details"].as_array().unwrap() {
            assert!(detail["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        let long_email = format!("{}@example.com", "a".repeat(250));
        let r = app.post("/api/v1/users", Some(app.admin()), json!({"email": long_email, "password": "x".repeat(129)})).await;
        assert_eq!(r.error_fields(), ["email", "password"]);
        assert_eq!(app.store.count_users().await.unwrap(), before);
    }

    async fn passwords_of_8_and_128_characters_are_accepted(backend) {
        let app = TestApp::spawn(backend).await;
        app.create_user("eight@example.com", "k7#Qm2!x", false).await;
        app.create_user("long@example.com", &"p".repeat(128), false).await;
        app.token_for("long@example.com", &"p".repeat(128)).await;
    }

    async fn common_passwords_and_the_email_itself_are_refused_everywhere(backend) {
        let app = TestApp::spawn_with(backend, &[("ALLOW_REGISTRATION", "true")]).await;
        let (_, token) = app.regular_user("weak@example.com").await;
        for (password, email) in [("12345678", "a@example.com"), ("PassWord", "b@example.com"), ("qwerty123", "c@example.com"),
                                  ("d.person@example.com", "d.person@example.com"), ("D.Person", "d.person@example.com")] {
            let body = json!({"email": email, "password": password});
            for r in [
                app.post("/api/v1/users", Some(app.admin()), body.clone()).await,
                app.post("/api/v1/auth/register", None, body.clone()).await,
                app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": [body.clone()]})).await,
            ] {
                r.assert_error(422, "validation_error");
                assert_eq!(r.error_fields(), ["password"], "{password}: {}", r.text);
            }
        }
        let r = app.patch("/api/v1/users/me", Some(&token), json!({"password": "password1", "current_password": "user-password-1"})).await;
        r.assert_error(422, "validation_error");
        let r = app.patch("/api/v1/users/me", Some(&token), json!({"password": "weak@example.com", "current_password": "user-password-1"})).await;
        r.assert_error(422, "validation_error");
        assert_eq!(app.store.count_users().await.unwrap(), 2, "nothing was created");
    }

    async fn a_superuser_can_create_superusers_and_inactive_users(backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.post("/api/v1/users", Some(app.admin()), json!({
            "email": "boss@example.com", "password": "password-123", "is_superuser": true, "is_active": false
        })).await;
        assert_eq!(r.status, 201);
        assert_eq!(r.body["is_superuser"], true);
        assert_eq!(r.body["is_active"], false);
    }

    async fn regular_users_cannot_manage_others(backend) {
        let app = TestApp::spawn(backend).await;
        let (me, token) = app.regular_user("pleb@example.com").await;
        let other = app.create_user("other@example.com", "password-123", false).await["id"].as_i64().unwrap();
        app.get("/api/v1/users", Some(&token)).await.assert_error(403, "forbidden");
        app.post("/api/v1/users", Some(&token), json!({"email": "x@example.com", "password": "password-123"})).await.assert_error(403, "forbidden");
        app.get(&format!("/api/v1/users/{other}"), Some(&token)).await.assert_error(403, "forbidden");
        app.get("/api/v1/users/999999", Some(&token)).await.assert_error(403, "forbidden");
        app.patch(&format!("/api/v1/users/{other}"), Some(&token), json!({"full_name": "hacked"})).await.assert_error(403, "forbidden");
        app.patch(&format!("/api/v1/users/{me}"), Some(&token), json!({"is_superuser": true})).await.assert_error(403, "forbidden");
        app.delete(&format!("/api/v1/users/{other}"), Some(&token)).await.assert_error(403, "forbidden");
        app.get("/api/v1/dashboard/stats", Some(&token)).await.assert_error(403, "forbidden");
        let still = app.store.get_user(other).await.unwrap().unwrap();
        assert_eq!(still.full_name, None);
        assert!(!app.store.get_user(me).await.unwrap().unwrap().is_superuser);
        let own = app.get(&format!("/api/v1/users/{me}"), Some(&token)).await;
        assert_eq!(own.status, 200);
        assert_eq!(own.body["email"], "pleb@example.com");
    }

    async fn get_of_a_missing_user_is_404(backend) {
        let app = TestApp::spawn(backend).await;
        app.get("/api/v1/users/424242", Some(app.admin())).await.assert_error(404, "not_found");
    }

    async fn me_patch_changes_name_and_email_but_never_privileges(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app.regular_user("me@example.com").await;
        let r = app.patch("/api/v1/users/me", Some(&token), json!({
            "full_name": "Me Myself", "email": "me2@example.com", "current_password": "user-password-1",
            "is_superuser": true, "is_active": false
        })).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["full_name"], "Me Myself");
        assert_eq!(r.body["email"], "me2@example.com");
        assert_eq!(r.body["is_superuser"], false);
        assert_eq!(r.body["is_active"], true);
        let stored = app.store.get_user(id).await.unwrap().unwrap();
        assert!(!stored.is_superuser && stored.is_active);
        assert!(stored.updated_at > stored.created_at);
        let cleared = app.patch("/api/v1/users/me", Some(&token), json!({"full_name": null})).await;
        assert_eq!(cleared.body["full_name"], serde_json::Value::Null);
    }

    async fn me_password_change_needs_the_right_current_password(backend) {
        let app = TestApp::spawn(backend).await;
        let (_, token) = app.regular_user("pw@example.com").await;
        let session = app.login("pw@example.com", "user-password-1").await;
        let r = app.patch("/api/v1/users/me", Some(&token), json!({"password": "new-password-1"})).await;
        r.assert_error(422, "validation_error");
        assert_eq!(r.error_fields(), ["current_password"]);
        app.patch("/api/v1/users/me", Some(&token), json!({"password": "new-password-1", "current_password": "wrong-one-1"})).await
            .assert_error(403, "forbidden");
        let ok = app.patch("/api/v1/users/me", Some(&token), json!({"password": "new-password-1", "current_password": "user-password-1"})).await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        app.post("/api/v1/auth/login", None, json!({"email": "pw@example.com", "password": "user-password-1"})).await
            .assert_error(401, "invalid_credentials");
        app.token_for("pw@example.com", "new-password-1").await;
        // The password change ended older sessions.
        app.post("/api/v1/auth/refresh", None, json!({"refresh_token": session["refresh_token"]})).await.assert_error(401, "unauthorized");
    }

    async fn me_patch_to_a_taken_email_is_409(backend) {
        let app = TestApp::spawn(backend).await;
        let (_, token) = app.regular_user("mine@example.com").await;
        app.patch("/api/v1/users/me", Some(&token), json!({"email": ADMIN_EMAIL.to_uppercase(), "current_password": "user-password-1"})).await.assert_error(409, "email_taken");
    }

    async fn me_email_change_needs_the_right_current_password(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app.regular_user("mail@example.com").await;
        let r = app.patch("/api/v1/users/me", Some(&token), json!({"email": "moved@example.com"})).await;
        r.assert_error(422, "validation_error");
        assert_eq!(r.error_fields(), ["current_password"]);
        app.patch("/api/v1/users/me", Some(&token), json!({"email": "moved@example.com", "current_password": "wrong-one-1"})).await
            .assert_error(403, "forbidden");
        assert_eq!(app.store.get_user(id).await.unwrap().unwrap().email, "mail@example.com");
        // The same address in another case is no change of address.
        let same = app.patch("/api/v1/users/me", Some(&token), json!({"email": "MAIL@example.com"})).await;
        assert_eq!(same.status, 200, "{}", same.text);
        let ok = app.patch("/api/v1/users/me", Some(&token), json!({"email": "moved@example.com", "current_password": "user-password-1"})).await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        assert_eq!(app.store.get_user(id).await.unwrap().unwrap().email, "moved@example.com");
    }

    async fn superuser_patch_updates_fields_and_clears_the_name(backend) {
        let app = TestApp::spawn(backend).await;
        let id = app.create_user("edit@example.com", "password-123", false).await["id"].as_i64().unwrap();
        let path = format!("/api/v1/users/{id}");
        let r = app.patch(&path, Some(app.admin()), json!({"full_name": "Edited", "is_superuser": true, "password": "changed-pass-1"})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["full_name"], "Edited");
        assert_eq!(r.body["is_superuser"], true);
        app.token_for("edit@example.com", "changed-pass-1").await;
        let r = app.patch(&path, Some(app.admin()), json!({"full_name": null})).await;
        assert_eq!(r.body["full_name"], serde_json::Value::Null);
        let unchanged = app.patch(&path, Some(app.admin()), json!({})).await;
        assert_eq!(unchanged.status, 200);
        assert_eq!(unchanged.body, r.body);
        app.patch("/api/v1/users/987654", Some(app.admin()), json!({"full_name": "x"})).await.assert_error(404, "not_found");
        app.patch(&path, Some(app.admin()), json!({"email": ADMIN_EMAIL})).await.assert_error(409, "email_taken");
        app.patch(&path, Some(app.admin()), json!({"email": "bad"})).await.assert_error(422, "validation_error");
    }

    async fn delete_removes_the_user_and_then_404s(backend) {
        let app = TestApp::spawn(backend).await;
        let id = app.create_user("bye@example.com", "password-123", false).await["id"].as_i64().unwrap();
        let r = app.delete(&format!("/api/v1/users/{id}"), Some(app.admin())).await;
        assert_eq!(r.status, 204);
        assert!(r.text.is_empty());
        assert!(app.store.get_user(id).await.unwrap().is_none());
        app.delete(&format!("/api/v1/users/{id}"), Some(app.admin())).await.assert_error(404, "not_found");
        let email = Email::parse("bye@example.com").unwrap();
        assert!(app.store.find_credentials_by_email(&email).await.unwrap().is_none());
    }

    async fn a_superuser_cannot_delete_themself(backend) {
        let app = TestApp::spawn(backend).await;
        let me = app.get("/api/v1/users/me", Some(app.admin())).await.body["id"].as_i64().unwrap();
        app.delete(&format!("/api/v1/users/{me}"), Some(app.admin())).await.assert_error(409, "conflict");
        assert!(app.store.get_user(me).await.unwrap().is_some());
    }

    async fn no_change_may_leave_the_system_without_an_active_superuser(backend) {
        let app = TestApp::spawn(backend).await;
        let me = app.get("/api/v1/users/me", Some(app.admin())).await.body["id"].as_i64().unwrap();
        let path = format!("/api/v1/users/{me}");
        app.patch(&path, Some(app.admin()), json!({"is_superuser": false})).await.assert_error(409, "conflict");
        app.patch(&path, Some(app.admin()), json!({"is_active": false})).await.assert_error(409, "conflict");
        let still = app.store.get_user(me).await.unwrap().unwrap();
        assert!(still.is_active && still.is_superuser);
        // With a second active superuser the first may step down, and then the second may not.
        let second = app.create_user("second@example.com", "password-123", true).await["id"].as_i64().unwrap();
        let second_token = app.token_for("second@example.com", "password-123").await;
        assert_eq!(app.patch(&path, Some(app.admin()), json!({"is_superuser": false})).await.status, 200);
        app.patch(&format!("/api/v1/users/{second}"), Some(&second_token), json!({"is_active": false})).await.assert_error(409, "conflict");
        assert!(app.store.get_user(second).await.unwrap().unwrap().is_active);
    }

    async fn the_store_refuses_to_delete_the_last_active_superuser(backend) {
        // Through the API the last active superuser could only delete themself, which the
        // self-delete rule stops first; the store's own guard is checked here directly.
        let app = TestApp::spawn(backend).await;
        let me = app.get("/api/v1/users/me", Some(app.admin())).await.body["id"].as_i64().unwrap();
        let err = app.store.delete_user(me, Vec::new()).await.expect_err("the last active superuser stays");
        assert!(matches!(err, roster::store::StoreError::LastActiveSuperuser), "{err:?}");
        assert!(app.store.get_user(me).await.unwrap().is_some());
        // An inactive superuser does not count; an active one does.
        app.create_user("idle-admin@example.com", "password-123", true).await;
        let idle = app.store.find_credentials_by_email(&Email::parse("idle-admin@example.com").unwrap()).await.unwrap().unwrap().user.id;
        app.patch(&format!("/api/v1/users/{idle}"), Some(app.admin()), json!({"is_active": false})).await;
        assert!(matches!(app.store.delete_user(me, Vec::new()).await, Err(roster::store::StoreError::LastActiveSuperuser)));
        app.create_user("other-admin@example.com", "password-123", true).await;
        app.store.delete_user(me, Vec::new()).await.expect("another active superuser remains");
        assert!(app.store.get_user(me).await.unwrap().is_none());
    }

    async fn emails_are_one_address_in_any_letter_case_beyond_ascii(backend) {
        let app = TestApp::spawn(backend).await;
        app.create_user("Äbc@example.com", "password-123", false).await;
        app.post("/api/v1/users", Some(app.admin()), json!({"email": "äBC@EXAMPLE.com", "password": "password-123"})).await
            .assert_error(409, "email_taken");
        let bulk = app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": [
            {"email": "ÖL@example.com", "password": "password-123"},
            {"email": "öl@example.com", "password": "password-123"},
            {"email": "äbc@example.com", "password": "password-123"},
        ]})).await;
        bulk.assert_error(409, "email_taken");
        assert_eq!(bulk.body["details"]["emails"], json!(["öl@example.com", "äbc@example.com"]));
        // Either spelling logs in; the address keeps the case it was given.
        let token = app.token_for("äbc@example.com", "password-123").await;
        assert_eq!(app.get("/api/v1/users/me", Some(&token)).await.body["email"], "Äbc@example.com");
        let found = app.store.find_credentials_by_email(&Email::parse("ÄBC@example.com").unwrap()).await.unwrap();
        assert_eq!(found.map(|c| c.user.email), Some("Äbc@example.com".to_string()));
    }
}

mod email_verification {
    use serde_json::json;

    use crate::helpers::{TestApp, backend_tests};

    backend_tests! {
        async fn email_verified_is_set_by_superusers_and_cleared_by_a_new_address(backend) {
            let app = TestApp::spawn_with(backend, &[("ALLOW_REGISTRATION", "true")]).await;
            let me = app.get("/api/v1/users/me", Some(app.admin())).await.body;
            assert_eq!(me["email_verified"], true, "the first superuser is verified");
            let plain = app.create_user("plain@example.com", "k7#Qm2!xz", false).await;
            assert_eq!(plain["email_verified"], false, "default false");
            let vouched = app.post("/api/v1/users", Some(app.admin()), json!({"email": "vouched@example.com", "password": "k7#Qm2!xz", "email_verified": true})).await;
            assert_eq!(vouched.body["email_verified"], true);
            let bulk = app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": [
                {"email": "b1@example.com", "password": "k7#Qm2!xz", "email_verified": true},
                {"email": "b2@example.com", "password": "k7#Qm2!xz"},
            ]})).await;
            assert_eq!(bulk.body["items"][0]["email_verified"], true);
            assert_eq!(bulk.body["items"][1]["email_verified"], false);
            let registered = app.post("/api/v1/auth/register", None, json!({"email": "self@example.com", "password": "k7#Qm2!xz", "email_verified": true})).await;
            assert_eq!(registered.status, 201, "{}", registered.text);
            assert_eq!(registered.body["email_verified"], false, "registering cannot vouch for itself");
            let id = vouched.body["id"].as_i64().unwrap();
            let path = format!("/api/v1/users/{id}");
            // A superuser's patch: a new address is unverified unless the patch says so.
            assert_eq!(app.patch(&path, Some(app.admin()), json!({"full_name": "V"})).await.body["email_verified"], true);
            assert_eq!(app.patch(&path, Some(app.admin()), json!({"email": "moved@example.com"})).await.body["email_verified"], false);
            assert_eq!(app.patch(&path, Some(app.admin()), json!({"email_verified": true})).await.body["email_verified"], true);
            assert_eq!(app.patch(&path, Some(app.admin()), json!({"email": "MOVED@example.com"})).await.body["email_verified"], true, "same address");
            // Your own new address is unverified.
            let token = app.token_for("moved@example.com", "k7#Qm2!xz").await;
            let r = app.patch("/api/v1/users/me", Some(&token), json!({"email": "again@example.com", "current_password": "k7#Qm2!xz"})).await;
            assert_eq!(r.body["email_verified"], false, "{}", r.text);
            assert!(!app.store.get_user(id).await.unwrap().unwrap().email_verified);
        }

        async fn with_verification_required_unverified_logins_are_403(backend) {
            let app = TestApp::spawn_with(backend, &[("REQUIRE_EMAIL_VERIFICATION", "true")]).await;
            let user = app.create_user("unverified@example.com", "k7#Qm2!xz", false).await;
            let r = app.post("/api/v1/auth/login", None, json!({"email": "unverified@example.com", "password": "k7#Qm2!xz"})).await;
            r.assert_error(403, "email_not_verified");
            // A wrong password still answers as a wrong password.
            app.post("/api/v1/auth/login", None, json!({"email": "unverified@example.com", "password": "wrong-password-1"})).await
                .assert_error(401, "invalid_credentials");
            app.patch(&format!("/api/v1/users/{}", user["id"]), Some(app.admin()), json!({"email_verified": true})).await;
            app.token_for("unverified@example.com", "k7#Qm2!xz").await;
        }
    }
}
