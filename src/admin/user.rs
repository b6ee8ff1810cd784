//! One user: edit name, email and flags; set a password; mark the address verified; see
//! and end their sessions; their audit trail.

use maud::{Markup, html};
use poem::{
    Response, handler,
    http::StatusCode,
    web::{Path, Query},
};
use serde::Deserialize;

use super::{
    audit::event_rows,
    console::{Console, Posted},
    users::status_badges,
    view::{self, Nav},
};
use crate::{
    domain::User,
    service::{ChangeRequest, ServiceError, audit::AuditFilter},
};

const EVENTS_SHOWN: u32 = 20;

#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
}

fn notice_text(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "saved" => "Saved.",
        "password" => "Password set; every session of this user ended.",
        "verified" => "Email address marked as verified.",
        "revoked" => "Session ended.",
        "revoked-all" => "Every session of this user ended.",
        "invited" => "Invitation sent: the user sets a password from the emailed link.",
        _ => return None,
    })
}

async fn render(
    console: &Console,
    id: i64,
    status: StatusCode,
    message: Option<Markup>,
) -> Response {
    let services = &console.state.services;
    let user = match services.users.get(&console.caller, id).await {
        Ok(user) => user,
        Err(err) => return view::failure_in(console, err),
    };
    let filter = AuditFilter {
        target_id: Some(id),
        ..AuditFilter::default()
    };
    let (sessions, events) = match tokio::try_join!(
        services.auth.sessions_for(&console.caller, id),
        services
            .audit
            .list(&console.caller, filter, EVENTS_SHOWN, None)
    ) {
        Ok(found) => found,
        Err(err) => return view::failure_in(console, err),
    };
    let base = format!("/admin/users/{id}");
    let body = html! {
        @if let Some(message) = message { (message) }
        p { (status_badges(&user)) }
        dl.facts {
            dt { "Id" } dd { (user.id) }
            dt { "Created" } dd { (view::when(&user.created_at)) }
            dt { "Updated" } dd { (view::when(&user.updated_at)) }
        }
        (details_form(console, &user, &base))
        fieldset {
            legend { "Set a password" }
            form method="post" action={ (base) "/password" } {
                (view::csrf_field(console))
                label for="password" { "New password" }
                input id="password" name="password" type="password" autocomplete="new-password" required;
                p.muted { "Every session of this user ends; tell them the new password." }
                div.actions { button type="submit" { "Set password" } }
            }
        }
        @if !user.email_verified {
            form method="post" action={ (base) "/verify" } {
                (view::csrf_field(console))
                div.actions { button.secondary type="submit" { "Mark email as verified" } }
            }
        }
        h2 id="sessions" { "Sessions" }
        @if sessions.is_empty() {
            p.muted { "No live session." }
        } @else {
            div.scroll {
                table aria-labelledby="sessions" {
                    thead { tr {
                        th scope="col" { "Started" } th scope="col" { "Last used" }
                        th scope="col" { "Expires" } th scope="col" { "From" }
                        th scope="col" { span.muted { "Action" } }
                    } }
                    tbody {
                        @for session in &sessions {
                            @let record = &session.record;
                            tr {
                                td { (view::when(&record.created_at))
                                    @if session.current { " " span.badge.on { "this console" } } }
                                td { (view::when(&record.last_used_at)) }
                                td { (view::when(&record.expires_at)) }
                                td {
                                    (record.ip.as_deref().unwrap_or("unknown address"))
                                    br;
                                    span.muted { (record.user_agent.as_deref().unwrap_or("")) }
                                }
                                td {
                                    form method="post" action={ (base) "/sessions/" (record.id) "/revoke" } {
                                        (view::csrf_field(console))
                                        button.secondary type="submit"
                                            aria-label={ "Revoke the session started " (record.created_at.format("%Y-%m-%d %H:%M")) } {
                                            "Revoke"
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form method="post" action={ (base) "/sessions/revoke-all" } {
                (view::csrf_field(console))
                div.actions { button.secondary type="submit" { "End every session" } }
            }
        }
        h2 id="events" { "Audit events" }
        (event_rows(&events.items, "events"))
        p { a href={ "/admin/audit?target_id=" (id) } { "Every event of this user" } }
        h2 { "Delete" }
        form method="post" action="/admin/users/bulk" {
            (view::csrf_field(console))
            input type="hidden" name="ids" value=(id);
            input type="hidden" name="action" value="delete";
            div.actions { button.danger type="submit" { "Delete this user…" } }
        }
    };
    view::respond(status, view::page(console, &user.email, Nav::Users, body))
}

fn details_form(console: &Console, user: &User, base: &str) -> Markup {
    html! {
        fieldset {
            legend { "Details" }
            form method="post" action=(base) {
                (view::csrf_field(console))
                label for="email" { "Email" }
                input id="email" name="email" type="email" value=(user.email) required;
                label for="full_name" { "Full name" }
                input id="full_name" name="full_name" type="text"
                    value=(user.full_name.as_deref().unwrap_or(""));
                label.check { input type="checkbox" name="is_active" checked[user.is_active]; "Active" }
                label.check { input type="checkbox" name="is_superuser" checked[user.is_superuser]; "Superuser" }
                label.check { input type="checkbox" name="email_verified" checked[user.email_verified]; "Email verified" }
                div.actions { button type="submit" { "Save" } }
            }
        }
    }
}

#[handler]
pub async fn page(console: Console, Path(id): Path<i64>, Query(done): Query<Done>) -> Response {
    let message = notice_text(done.done.as_deref()).map(view::notice);
    render(&console, id, StatusCode::OK, message).await
}

/// Applies the outcome of a change: back to the page with a notice, or the page again with
/// the reasons.
async fn after(
    posted: &Posted,
    id: i64,
    outcome: Result<(), ServiceError>,
    done: &str,
) -> Response {
    match outcome {
        Ok(()) => view::redirect(&format!("/admin/users/{id}?done={done}")),
        Err(err @ (ServiceError::NotFound(_) | ServiceError::Forbidden(_))) => {
            view::failure_in(&posted.console, err)
        }
        Err(err) => {
            let (status, message, fields) = view::explain(err);
            let shown = view::problems(&message, &fields);
            render(&posted.console, id, status, Some(shown)).await
        }
    }
}

/// Applies `change` to the user as the signed-in superuser, then `after`.
async fn change(posted: &Posted, id: i64, change: ChangeRequest, done: &str) -> Response {
    let console = &posted.console;
    let outcome = console
        .state
        .services
        .users
        .update(&console.caller, id, change)
        .await
        .map(|_| ());
    after(posted, id, outcome, done).await
}

#[handler]
pub async fn edit(posted: Posted, Path(id): Path<i64>) -> Response {
    let edited = ChangeRequest {
        email: posted.text("email").map(str::to_string),
        full_name: Some(posted.text("full_name").map(str::to_string)),
        is_active: Some(posted.checked("is_active")),
        is_superuser: Some(posted.checked("is_superuser")),
        email_verified: Some(posted.checked("email_verified")),
        ..ChangeRequest::default()
    };
    change(&posted, id, edited, "saved").await
}

#[handler]
pub async fn set_password(posted: Posted, Path(id): Path<i64>) -> Response {
    let password = ChangeRequest {
        password: Some(posted.field("password").unwrap_or_default().to_string()),
        ..ChangeRequest::default()
    };
    change(&posted, id, password, "password").await
}

#[handler]
pub async fn mark_verified(posted: Posted, Path(id): Path<i64>) -> Response {
    let verified = ChangeRequest {
        email_verified: Some(true),
        ..ChangeRequest::default()
    };
    change(&posted, id, verified, "verified").await
}

#[handler]
pub async fn revoke_session(
    posted: Posted,
    Path((id, session_id)): Path<(i64, String)>,
) -> Response {
    let console = &posted.console;
    let outcome = console
        .state
        .services
        .auth
        .end_session_of(&console.caller, id, &session_id)
        .await;
    after(&posted, id, outcome, "revoked").await
}

#[handler]
pub async fn revoke_all(posted: Posted, Path(id): Path<i64>) -> Response {
    let console = &posted.console;
    let outcome = console
        .state
        .services
        .auth
        .end_sessions_for(&console.caller, id)
        .await;
    after(&posted, id, outcome, "revoked-all").await
}
