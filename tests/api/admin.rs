//! The admin console at `/admin`, driven as a browser would (forms, a cookie, redirects):
//! who gets in, what each page shows, that every action does what it says (checked through
//! the API and the store), and that a forged request changes nothing.

use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Resp, TestApp, backend_tests};

const PASSWORD: &str = "user-password-1";

/// A browser signed in to the console: its cookie, and the forms' anti-forgery token.
struct Browser<'a> {
    app: &'a TestApp,
    cookie: String,
    csrf: String,
}

fn set_cookie(r: &Resp) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("roster_console="))
        .map(str::to_string)
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("page has a csrf field")
        + 19;
    html[at..].split('"').next().unwrap().to_string()
}

async fn sign_in_form(app: &TestApp, email: &str, password: &str) -> Resp {
    app.send_raw(
        app.client
            .post(app.url("/admin/login"))
            .header("user-agent", "ConsoleTest/1.0")
            .form(&[("email", email), ("password", password)]),
    )
    .await
}

impl<'a> Browser<'a> {
    async fn sign_in(app: &'a TestApp) -> Browser<'a> {
        Self::sign_in_as(app, ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    async fn sign_in_as(app: &'a TestApp, email: &str, password: &str) -> Browser<'a> {
        let r = sign_in_form(app, email, password).await;
        assert_eq!(r.status, 303, "{}", r.text);
        assert_eq!(r.header("location"), Some("/admin"));
        let cookie = set_cookie(&r).expect("a session cookie");
        let cookie = cookie.split(';').next().unwrap().to_string();
        let mut browser = Browser {
            app,
            cookie,
            csrf: String::new(),
        };
        let home = browser.get("/admin").await;
        assert_eq!(home.status, 200, "{}", home.text);
        browser.csrf = csrf_of(&home.text);
        browser
    }

    async fn get(&self, path: &str) -> Resp {
        self.app
            .send_raw(
                self.app
                    .client
                    .get(self.app.url(path))
                    .header("cookie", &self.cookie),
            )
            .await
    }

    /// A form post carrying the page's anti-forgery token.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    /// A form post exactly as given (a forgery leaves out or fakes the token).
    async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        self.app
            .send_raw(
                self.app
                    .client
                    .post(self.app.url(path))
                    .header("cookie", &self.cookie)
                    .form(fields),
            )
            .await
    }

    async fn import(&self, csv: &str, csrf: Option<&str>) -> Resp {
        let mut form = reqwest::multipart::Form::new();
        if let Some(csrf) = csrf {
            form = form.text("csrf", csrf.to_string());
        }
        let file = reqwest::multipart::Part::text(csv.to_string())
            .file_name("users.csv")
            .mime_str("text/csv")
            .unwrap();
        form = form.part("file", file);
        self.app
            .send_raw(
                self.app
                    .client
                    .post(self.app.url("/admin/import"))
                    .header("cookie", &self.cookie)
                    .multipart(form),
            )
            .await
    }
}

async fn user(app: &TestApp, id: i64) -> Resp {
    app.get(&format!("/api/v1/users/{id}"), Some(app.admin()))
        .await
}

async fn sessions_of(app: &TestApp, id: i64) -> Vec<Value> {
    let r = app
        .get(&format!("/api/v1/users/{id}/sessions"), Some(app.admin()))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["items"].as_array().unwrap().clone()
}

async fn admin_id(app: &TestApp) -> i64 {
    app.get("/api/v1/users/me", Some(app.admin())).await.body["id"]
        .as_i64()
        .unwrap()
}

fn assert_page(r: &Resp, status: u16, contains: &[&str]) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        r.headers
    );
    for text in contains {
        assert!(r.text.contains(text), "missing {text:?} in {}", r.text);
    }
}

backend_tests! {
    async fn sign_in_opens_a_normal_session_held_in_a_strict_http_only_cookie(backend) {
        let app = TestApp::spawn(backend).await;
        let r = sign_in_form(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(r.status, 303, "{}", r.text);
        let cookie = set_cookie(&r).unwrap();
        for part in ["Path=/admin", "HttpOnly", "SameSite=Strict", "Max-Age=43200"] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(!cookie.contains("Secure"), "plain http: {cookie}");
        // The console's session is listed like any other (the API login is the other).
        let sessions = sessions_of(&app, admin_id(&app).await).await;
        assert_eq!(sessions.len(), 2, "{sessions:?}");
        assert!(sessions.iter().any(|s| s["user_agent"] == "ConsoleTest/1.0"), "{sessions:?}");
        let browser = Browser::sign_in(&app).await;
        let home = browser.get("/admin").await;
        assert_page(&home, 200, &["Dashboard", ADMIN_EMAIL, "Sign out"]);
        assert!(home.header("content-security-policy").unwrap().contains("script-src 'self'"));
        assert_eq!(home.header("x-frame-options"), Some("DENY"));
        assert_eq!(home.header("cache-control"), Some("no-store"));
    }

    async fn the_cookie_is_secure_when_the_public_url_is_https(backend) {
        let app = TestApp::spawn_with(backend, &[("PUBLIC_URL", "https://roster.example.com")]).await;
        let r = sign_in_form(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(r.status, 303, "{}", r.text);
        assert!(set_cookie(&r).unwrap().contains("; Secure"));
    }

    async fn wrong_passwords_and_non_superusers_are_refused_without_a_session(backend) {
        let app = TestApp::spawn(backend).await;
        let r = sign_in_form(&app, ADMIN_EMAIL, "not-the-password").await;
        assert_page(&r, 401, &["Incorrect email or password.", ADMIN_EMAIL]);
        assert!(set_cookie(&r).is_none());
        let (id, _) = app.regular_user("plain@example.com").await;
        let before = sessions_of(&app, id).await.len();
        let r = sign_in_form(&app, "plain@example.com", PASSWORD).await;
        assert_page(&r, 403, &["superusers only"]);
        assert!(set_cookie(&r).is_none());
        assert_eq!(sessions_of(&app, id).await.len(), before, "no session opened");
        // A made-up cookie gets the sign-in page, not a page of the console.
        let r = app
            .send_raw(app.client.get(app.url("/admin/users")).header("cookie", "roster_console=forged"))
            .await;
        assert_eq!(r.status, 303);
        assert_eq!(r.header("location"), Some("/admin/login"));
    }

    async fn the_sign_in_shares_the_login_rate_limit_and_the_failed_password_limit(backend) {
        let app = TestApp::spawn_with(backend, &[
            ("RATE_LIMIT_ENABLED", "true"), ("LOGIN_RATE_LIMIT_PER_MINUTE", "3"),
        ]).await;
        // The test's own API login took the first of the three.
        for _ in 0..2 {
            assert_eq!(sign_in_form(&app, ADMIN_EMAIL, "wrong-password").await.status, 401);
        }
        let r = sign_in_form(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(r.status, 429, "{}", r.text);
        assert!(set_cookie(&r).is_none());

        let app = TestApp::spawn_with(backend, &[("LOGIN_MAX_FAILURES", "2")]).await;
        for _ in 0..2 {
            assert_eq!(sign_in_form(&app, ADMIN_EMAIL, "wrong-password").await.status, 401);
        }
        let r = sign_in_form(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_page(&r, 429, &["Too many failed password checks"]);
        assert!(set_cookie(&r).is_none());
    }

    async fn every_page_sends_a_stranger_to_the_sign_in_page(backend) {
        let app = TestApp::spawn(backend).await;
        for path in ["/admin", "/admin/users", "/admin/users/1", "/admin/audit", "/admin/invite",
                     "/admin/import", "/admin/users/export?format=csv"] {
            let r = app.get(path, None).await;
            assert_eq!(r.status, 303, "{path}: {}", r.text);
            assert_eq!(r.header("location"), Some("/admin/login"), "{path}");
        }
        // htmx is told where to go instead of swapping a login form into the table.
        let r = app
            .send_raw(app.client.get(app.url("/admin/users")).header("hx-request", "true"))
            .await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("hx-redirect"), Some("/admin/login"));
        assert_page(&app.get("/admin/login", None).await, 200, &["Sign in", "name=\"password\""]);
        let css = app.get("/admin/assets/admin.css", None).await;
        assert_eq!(css.status, 200);
        assert!(css.header("content-type").unwrap().starts_with("text/css"));
        let htmx = app.get("/admin/assets/htmx-2.0.11.min.js", None).await;
        assert_eq!(htmx.status, 200);
        assert!(htmx.text.contains("htmx"));
    }

    async fn forged_posts_are_refused_with_403_and_change_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, _) = app.regular_user("target@example.com").await;
        let browser = Browser::sign_in(&app).await;
        let other = Browser::sign_in(&app).await;
        assert_ne!(browser.csrf, other.csrf, "one token per session");
        for csrf in [None, Some("forged"), Some(other.csrf.as_str())] {
            let mut fields = vec![("email", "hijacked@example.com"), ("full_name", "Hijacked")];
            if let Some(csrf) = csrf {
                fields.push(("csrf", csrf));
            }
            let r = browser.post_raw(&format!("/admin/users/{id}"), &fields).await;
            assert_page(&r, 403, &["did not come from this console"]);
            let r = browser
                .post_raw("/admin/users/bulk", &[("action", "delete"), ("confirm", "yes"), ("ids", &id.to_string())])
                .await;
            assert_eq!(r.status, 403);
        }
        let r = browser.post_raw(&format!("/admin/users/{id}/password"), &[("password", "new-password-123")]).await;
        assert_eq!(r.status, 403);
        let r = browser.post_raw("/admin/invite", &[("email", "forged@example.com")]).await;
        assert_eq!(r.status, 403);
        let r = browser.import("email,password\nforged-import@example.com,password-12345\n", None).await;
        assert_eq!(r.status, 403);
        let r = browser.post_raw("/admin/logout", &[]).await;
        assert_eq!(r.status, 403);
        // Nothing happened: the user is as created, nobody was invited or imported, and
        // the console is still signed in.
        let u = user(&app, id).await;
        assert_eq!(u.body["email"], "target@example.com");
        assert_eq!(u.body["full_name"], Value::Null);
        app.token_for("target@example.com", PASSWORD).await;
        let list = app.get("/api/v1/users?search=forged", Some(app.admin())).await;
        assert_eq!(list.body["total"], 0, "{}", list.text);
        assert_eq!(browser.get("/admin").await.status, 200);
    }

    async fn the_dashboard_shows_figures_chart_split_health_and_cache(backend) {
        let app = TestApp::spawn(backend).await;
        for i in 0..3 {
            app.create_user(&format!("d{i}@example.com"), PASSWORD, false).await;
        }
        app.patch("/api/v1/users/2", Some(app.admin()), json!({"is_active": false})).await;
        let browser = Browser::sign_in(&app).await;
        let r = browser.get("/admin").await;
        assert_page(&r, 200, &[
            "<span class=\"figure\">4</span><span class=\"label\">users in all</span>",
            "<span class=\"figure\">3</span><span class=\"label\">active</span>",
            "<span class=\"figure\">1</span><span class=\"label\">inactive</span>",
            "<span class=\"figure\">4</span><span class=\"label\">new today (UTC)</span>",
            "Sign-ups per day over the last 30 days: 4 in all",
            "3 active and 1 inactive users",
            "reachable",
            "User cache hit rate",
        ]);
        assert_eq!(r.text.matches("<rect class=\"bar\"").count(), 30, "one bar per day");
    }

    async fn the_users_table_searches_filters_sorts_and_pages_by_cursor(backend) {
        let app = TestApp::spawn(backend).await;
        let users: Vec<Value> = (0..30)
            .map(|i| json!({"email": format!("member{i:02}@example.com"), "password": PASSWORD,
                            "full_name": if i == 7 { "Ada Findme" } else { "Someone" },
                            "is_active": i % 3 != 0}))
            .collect();
        let r = app.post("/api/v1/users/bulk", Some(app.admin()), json!({"users": users})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let browser = Browser::sign_in(&app).await;

        let r = browser.get("/admin/users?search=findme").await;
        assert_page(&r, 200, &["1 user matches.", "member07@example.com", "Ada Findme"]);
        assert!(!r.text.contains("member08@example.com"));
        // htmx asks for the results only.
        let r = app
            .send_raw(app.client.get(app.url("/admin/users?search=member1"))
                .header("cookie", &browser.cookie)
                .header("hx-request", "true")
                .header("hx-target", "results"))
            .await;
        assert_page(&r, 200, &["10 users match.", "member19@example.com"]);
        assert!(r.text.starts_with("<div id=\"results\">"), "{}", r.text);
        assert!(!r.text.contains("<html"));

        let r = browser.get("/admin/users?active=false").await;
        assert_page(&r, 200, &["10 users match."]);
        let r = browser.get("/admin/users?role=superuser").await;
        assert_page(&r, 200, &["1 user matches.", ADMIN_EMAIL]);

        // Sorted by email, 25 a page, then the next page by its cursor: every user once.
        let r = browser.get("/admin/users?sort=email&size=25").await;
        assert_page(&r, 200, &["31 users match.", "aria-sort=\"ascending\""]);
        let first = emails_in(&r.text);
        assert_eq!(first.len(), 25);
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(first, sorted);
        let next = r.text.split("href=\"/admin/users?").find(|s| s.contains("Next page")).unwrap();
        let next = next.split('"').next().unwrap().replace("&amp;", "&");
        assert!(next.contains("cursor="), "{next}");
        let r = browser.get(&format!("/admin/users?{next}")).await;
        let second = emails_in(&r.text);
        assert_eq!(second.len(), 6, "{}", r.text);
        assert!(!r.text.contains("Next page »"));
        let mut all: Vec<String> = first.into_iter().chain(second).collect();
        all.dedup();
        assert_eq!(all.len(), 31);
        // A tampered cursor is refused, as by the API.
        let r = browser.get("/admin/users?sort=email&cursor=bogus").await;
        assert_page(&r, 422, &["cursor"]);

        let r = browser.get("/admin/users/export?format=csv&active=false").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.header("content-type").unwrap().starts_with("text/csv"));
        assert_eq!(r.text.lines().count(), 11, "header and 10 inactive users: {}", r.text);
        let r = browser.get("/admin/users/export?format=ndjson&search=findme").await;
        assert_eq!(r.text.lines().count(), 1);
        assert!(r.text.contains("member07@example.com"));
    }

    async fn bulk_actions_confirm_first_then_act_on_every_selected_user(backend) {
        let app = TestApp::spawn(backend).await;
        let a = app.create_user("bulk-a@example.com", PASSWORD, false).await["id"].as_i64().unwrap();
        let b = app.create_user("bulk-b@example.com", PASSWORD, false).await["id"].as_i64().unwrap();
        let token = app.token_for("bulk-a@example.com", PASSWORD).await;
        let browser = Browser::sign_in(&app).await;
        let (a_id, b_id) = (a.to_string(), b.to_string());
        let r = browser.post("/admin/users/bulk", &[("action", "deactivate"), ("ids", &a_id), ("ids", &b_id)]).await;
        assert_page(&r, 200, &["Please confirm", "bulk-a@example.com", "bulk-b@example.com", "Yes, deactivate"]);
        assert_eq!(user(&app, a).await.body["is_active"], true, "nothing done before confirming");
        let r = browser
            .post("/admin/users/bulk", &[("action", "deactivate"), ("confirm", "yes"), ("ids", &a_id), ("ids", &b_id)])
            .await;
        assert_eq!(r.status, 303, "{}", r.text);
        assert_eq!(r.header("location"), Some("/admin/users?done=deactivated&n=2"));
        assert_page(&browser.get("/admin/users?done=deactivated&n=2").await, 200, &["Deactivated 2 users"]);
        assert_eq!(user(&app, a).await.body["is_active"], false);
        assert_eq!(user(&app, b).await.body["is_active"], false);
        assert_eq!(app.get("/api/v1/users/me", Some(&token)).await.status, 403, "sessions ended");
        let r = browser
            .post("/admin/users/bulk", &[("action", "activate"), ("confirm", "yes"), ("ids", &a_id)])
            .await;
        assert_eq!(r.status, 303);
        assert_eq!(user(&app, a).await.body["is_active"], true);
        let r = browser.post("/admin/users/bulk", &[("action", "delete"), ("ids", &b_id)]).await;
        assert_page(&r, 200, &["Deleting cannot be undone", "Yes, delete"]);
        let r = browser.post("/admin/users/bulk", &[("action", "delete"), ("confirm", "yes"), ("ids", &b_id)]).await;
        assert_eq!(r.status, 303);
        assert_eq!(user(&app, b).await.status, 404);
        // The last active superuser cannot be deactivated: reported, not done.
        let me = admin_id(&app).await.to_string();
        let r = browser
            .post("/admin/users/bulk", &[("action", "deactivate"), ("confirm", "yes"), ("ids", &me)])
            .await;
        assert_page(&r, 409, &["Not done for these users", "without an active superuser"]);
        assert_eq!(browser.get("/admin").await.status, 200);
        let r = browser.post("/admin/users/bulk", &[("action", "explode"), ("ids", &a_id)]).await;
        assert_page(&r, 422, &["action"]);
    }

    async fn the_user_page_edits_sets_a_password_and_marks_the_address_verified(backend) {
        let app = TestApp::spawn(backend).await;
        let id = app.create_user("edit-me@example.com", PASSWORD, false).await["id"].as_i64().unwrap();
        let browser = Browser::sign_in(&app).await;
        let page = format!("/admin/users/{id}");
        assert_page(&browser.get(&page).await, 200, &["edit-me@example.com", "Set a password",
            "Mark email as verified", "No live session.", "user.created"]);

        let r = browser
            .post(&page, &[("email", "edited@example.com"), ("full_name", "Edited Name"), ("is_active", "on")])
            .await;
        assert_eq!(r.status, 303, "{}", r.text);
        assert_eq!(r.header("location"), Some(format!("{page}?done=saved").as_str()));
        let u = user(&app, id).await.body;
        assert_eq!((u["email"].as_str(), u["full_name"].as_str()), (Some("edited@example.com"), Some("Edited Name")));
        assert_eq!((u["is_active"].as_bool(), u["is_superuser"].as_bool()), (Some(true), Some(false)));

        // A bad address: the page again with the reason, and nothing changed.
        let r = browser.post(&page, &[("email", "not-an-address"), ("is_active", "on")]).await;
        assert_page(&r, 422, &["Some fields need attention", "email"]);
        assert_eq!(user(&app, id).await.body["email"], "edited@example.com");

        let r = browser.post(&format!("{page}/password"), &[("password", "short")]).await;
        assert_page(&r, 422, &["password"]);
        let r = browser.post(&format!("{page}/password"), &[("password", "brand-new-password-9")]).await;
        assert_eq!(r.status, 303, "{}", r.text);
        app.token_for("edited@example.com", "brand-new-password-9").await;

        let r = browser.post(&format!("{page}/verify"), &[]).await;
        assert_eq!(r.status, 303);
        assert_eq!(user(&app, id).await.body["email_verified"], true);
        let r = browser.get(&format!("{page}?done=verified")).await;
        assert_page(&r, 200, &["Email address marked as verified.", "user.updated"]);
        assert!(!r.text.contains("Mark email as verified"));

        assert_page(&browser.get("/admin/users/999999").await, 404, &["User not found."]);
    }

    async fn sessions_are_revoked_from_the_user_page_and_end_at_once(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app.regular_user("sessions@example.com").await;
        let second = app.token_for("sessions@example.com", PASSWORD).await;
        let browser = Browser::sign_in(&app).await;
        let page = format!("/admin/users/{id}");
        let sessions = sessions_of(&app, id).await;
        assert_eq!(sessions.len(), 2);
        let r = browser.get(&page).await;
        assert_eq!(r.text.matches(">Revoke</button>").count(), 2, "{}", r.text);
        let ended = sessions[0]["id"].as_str().unwrap();
        let r = browser.post(&format!("{page}/sessions/{ended}/revoke"), &[]).await;
        assert_eq!(r.status, 303, "{}", r.text);
        assert_eq!(sessions_of(&app, id).await.len(), 1);
        let statuses = [
            app.get("/api/v1/users/me", Some(&token)).await.status,
            app.get("/api/v1/users/me", Some(&second)).await.status,
        ];
        assert!(statuses.contains(&401) && statuses.contains(&200), "{statuses:?}");
        let r = browser.post(&format!("{page}/sessions/{ended}/revoke"), &[]).await;
        assert_page(&r, 404, &["No such live session"]);
        let r = browser.post(&format!("{page}/sessions/revoke-all"), &[]).await;
        assert_eq!(r.status, 303);
        assert!(sessions_of(&app, id).await.is_empty());
    }

    async fn revoking_the_console_session_or_signing_out_ends_it_at_once(backend) {
        let app = TestApp::spawn(backend).await;
        let browser = Browser::sign_in(&app).await;
        let mine = app.get("/api/v1/users/me/sessions", Some(app.admin())).await;
        let console = mine.body["items"].as_array().unwrap().iter()
            .find(|s| s["user_agent"] == "ConsoleTest/1.0").unwrap()["id"].as_str().unwrap().to_string();
        let r = app.delete(&format!("/api/v1/users/me/sessions/{console}"), Some(app.admin())).await;
        assert_eq!(r.status, 204, "{}", r.text);
        let r = browser.get("/admin").await;
        assert_eq!(r.status, 303);
        assert_eq!(r.header("location"), Some("/admin/login"));
        assert!(set_cookie(&r).unwrap().contains("Max-Age=0"), "the dead cookie is dropped");

        let browser = Browser::sign_in(&app).await;
        let before = sessions_of(&app, admin_id(&app).await).await.len();
        let r = browser.post("/admin/logout", &[]).await;
        assert_eq!(r.status, 303, "{}", r.text);
        assert_eq!(r.header("location"), Some("/admin/login"));
        assert!(set_cookie(&r).unwrap().contains("Max-Age=0"));
        assert_eq!(sessions_of(&app, admin_id(&app).await).await.len(), before - 1);
        assert_eq!(browser.get("/admin").await.status, 303, "the old cookie is dead");
    }

    async fn a_superuser_demoted_elsewhere_is_signed_out_of_the_console(backend) {
        let app = TestApp::spawn(backend).await;
        let id = app.create_user("second-admin@example.com", PASSWORD, true).await["id"].as_i64().unwrap();
        let browser = Browser::sign_in_as(&app, "second-admin@example.com", PASSWORD).await;
        let r = app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"is_superuser": false})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = browser.get("/admin/users").await;
        assert_eq!(r.status, 303);
        assert_eq!(r.header("location"), Some("/admin/login"));
    }

    async fn invite_creates_an_invited_user_and_reports_a_taken_address(backend) {
        let app = TestApp::spawn(backend).await;
        let browser = Browser::sign_in(&app).await;
        assert_page(&browser.get("/admin/invite").await, 200, &["Invite a user", "Send invitation"]);
        let r = browser.post("/admin/invite", &[("email", "newbie@example.com"), ("full_name", "New Bie")]).await;
        assert_eq!(r.status, 303, "{}", r.text);
        let location = r.header("location").unwrap().to_string();
        assert!(location.ends_with("?done=invited"), "{location}");
        let r = browser.get(&location).await;
        assert_page(&r, 200, &["Invitation sent", "newbie@example.com", "user.invited"]);
        let list = app.get("/api/v1/users?search=newbie", Some(app.admin())).await;
        assert_eq!(list.body["items"][0]["full_name"], "New Bie");
        let r = browser.post("/admin/invite", &[("email", "newbie@example.com")]).await;
        assert_page(&r, 409, &["already exists", "newbie@example.com"]);
    }

    async fn import_reports_every_bad_row_by_line_and_creates_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        app.create_user("taken@example.com", PASSWORD, false).await;
        let browser = Browser::sign_in(&app).await;
        assert_page(&browser.get("/admin/import").await, 200, &["Import users", "type=\"file\""]);
        let bad = "email,password,full_name,is_active\n\
                   good@example.com,password-12345,Good,true\n\
                   not-an-address,password-12345,Bad,true\n\
                   flag@example.com,password-12345,Flag,maybe\n";
        let r = browser.import(bad, Some(&browser.csrf)).await;
        assert_page(&r, 422, &["Nothing was imported.", "<td>3</td><td><code>email</code></td>",
            "<td>4</td><td><code>is_active</code></td>", "must be true or false"]);
        let taken = "email,password\nfresh@example.com,password-12345\ntaken@example.com,password-12345\n";
        let r = browser.import(taken, Some(&browser.csrf)).await;
        assert_page(&r, 422, &["<td>3</td><td><code>email</code></td>", "already taken"]);
        let r = browser.import("name\nx\n", Some(&browser.csrf)).await;
        assert_page(&r, 422, &["column is missing"]);
        let list = app.get("/api/v1/users", Some(app.admin())).await;
        assert_eq!(list.body["total"], 2, "nothing imported: {}", list.text);

        let good = "email,password,full_name,is_superuser\n\
                    one@example.com,password-12345,One,false\n\
                    \"two@example.com\",password-12345,\"Two, Jr.\",\n";
        let r = browser.import(good, Some(&browser.csrf)).await;
        assert_eq!(r.status, 303, "{}", r.text);
        assert_eq!(r.header("location"), Some("/admin/users?done=imported&n=2"));
        let list = app.get("/api/v1/users?search=two", Some(app.admin())).await;
        assert_eq!(list.body["items"][0]["full_name"], "Two, Jr.");
        app.token_for("one@example.com", "password-12345").await;
    }

    async fn the_audit_page_lists_and_filters_events(backend) {
        let app = TestApp::spawn(backend).await;
        let id = app.create_user("audited@example.com", PASSWORD, false).await["id"].as_i64().unwrap();
        app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), json!({"full_name": "Audited"})).await;
        let browser = Browser::sign_in(&app).await;
        let r = browser.get("/admin/audit").await;
        assert_page(&r, 200, &["Audit log", "user.created", "user.updated", "login.succeeded"]);
        let r = browser.get(&format!("/admin/audit?action=user.*&target_id={id}")).await;
        assert_page(&r, 200, &["user.updated", "user.created"]);
        assert!(!r.text.contains("login.succeeded"));
        let r = browser.get("/admin/audit?action=user.updated").await;
        assert!(!r.text.contains("<code>user.created</code>"));
        let r = browser.get("/admin/audit?actor_id=abc").await;
        assert_page(&r, 422, &["actor_id", "must be a user id"]);
    }
}

/// The user emails of a users table, in order.
fn emails_in(html: &str) -> Vec<String> {
    html.split("<td><a href=\"/admin/users/")
        .skip(1)
        .filter_map(|s| s.split('>').nth(1))
        .filter_map(|s| s.split('<').next())
        .map(str::to_string)
        .collect()
}
