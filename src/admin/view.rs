//! The console's page frame and the pieces every page uses: navigation, messages, field
//! errors, the anti-forgery field, and turning a refusal into a page.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use poem::{
    IntoResponse, Response,
    http::{StatusCode, header},
};

use super::{assets, console::Console};
use crate::{error::ApiError, service::ServiceError};

/// Scripts and styles only from the binary itself; no inline code at all.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Dashboard,
    Users,
    Invite,
    Import,
    Audit,
    None,
}

const NAV: [(Nav, &str, &str); 5] = [
    (Nav::Dashboard, "/admin", "Dashboard"),
    (Nav::Users, "/admin/users", "Users"),
    (Nav::Invite, "/admin/invite", "Invite"),
    (Nav::Import, "/admin/import", "Import"),
    (Nav::Audit, "/admin/audit", "Audit log"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx's own indicator styles would be an inline style, which the CSP refuses.
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false}"#;
            title { (title) " · Roster admin" }
            link rel="stylesheet" href=(assets::CSS_PATH);
            link rel="icon" href="data:,";
            script src=(assets::HTMX_PATH) defer {}
        }
    }
}

/// A whole page of the signed-in console.
pub fn page(console: &Console, title: &str, current: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/admin" { "Roster" }
                    nav aria-label="Console" {
                        ul {
                            @for (item, href, label) in NAV {
                                li {
                                    @if item == current {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form.signout method="post" action="/admin/logout" {
                        (csrf_field(console))
                        span.who { (console.email()) }
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page outside the signed-in frame (sign-in, errors before authentication).
pub fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

pub fn csrf_field(console: &Console) -> Markup {
    html! { input type="hidden" name=(super::console::CSRF_FIELD) value=(console.csrf); }
}

/// A status message for the user, announced by screen readers.
pub fn notice(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

/// Field problems, each as "field: message", announced when shown.
pub fn problems(summary: &str, errors: &[(String, String)]) -> Markup {
    html! {
        div.problems role="alert" {
            p { strong { (summary) } }
            @if !errors.is_empty() {
                ul {
                    @for (field, message) in errors {
                        li { @if !field.is_empty() { code { (field) } " " } (message) }
                    }
                }
            }
        }
    }
}

/// What a refusal says, as the API would say it, with its status.
pub fn explain(err: ServiceError) -> (StatusCode, String, Vec<(String, String)>) {
    let fields = match &err {
        ServiceError::Invalid(errors) => errors
            .iter()
            .map(|e| (e.field.clone(), e.message.clone()))
            .collect(),
        _ => Vec::new(),
    };
    let api = ApiError::from(err);
    let message = match fields.is_empty() {
        true => api.body().message.clone(),
        false => "Some fields need attention:".to_string(),
    };
    (api.into_response().status(), message, fields)
}

pub fn when(at: &DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M UTC")) } }
}

/// An HTML response with the console's headers.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::CACHE_CONTROL, "no-store")
        .body(markup.into_string())
}

pub fn ok(markup: Markup) -> Response {
    respond(StatusCode::OK, markup)
}

/// 303 See Other: after a successful POST, the browser GETs the result.
pub fn redirect(to: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .finish()
}

/// A page saying why something was refused (a refusal before the console's frame could be
/// drawn: no session, or a forged form).
pub fn failure(err: ServiceError) -> Response {
    let (status, message, fields) = explain(err);
    respond(
        status,
        bare_page(
            "Not done",
            html! {
                (problems(&message, &fields))
                p { a href="/admin" { "Back to the console" } }
            },
        ),
    )
}

/// A refusal drawn inside the console's frame.
pub fn failure_in(console: &Console, err: ServiceError) -> Response {
    let (status, message, fields) = explain(err);
    respond(
        status,
        page(
            console,
            "Not done",
            Nav::None,
            html! {
                (problems(&message, &fields))
                p { a href="/admin/users" { "Back to the users" } }
            },
        ),
    )
}
