//! The audit log: newest first, filtered by action (or a family, `user.*`), actor and
//! target, paged by cursor.

use maud::{Markup, html};
use poem::{Response, handler, web::Query};
use serde::Deserialize;

use super::{
    console::Console,
    view::{self, Nav},
};
use crate::{
    service::{ServiceError, audit::AuditFilter},
    store::AuditEvent,
};

const PAGE_SIZE: u32 = 50;

#[derive(Deserialize, Default)]
pub struct AuditParams {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor_id: String,
    #[serde(default)]
    target_id: String,
    cursor: Option<String>,
}

fn user_id(field: &str, value: &str) -> Result<Option<i64>, ServiceError> {
    match value.trim() {
        "" => Ok(None),
        v => v
            .parse()
            .map(Some)
            .map_err(|_| ServiceError::invalid(field, "must be a user id (a whole number)")),
    }
}

fn user_link(id: Option<i64>) -> Markup {
    html! {
        @match id {
            Some(id) => a href={ "/admin/users/" (id) } { "user " (id) },
            None => span.muted { "—" },
        }
    }
}

/// A table of events (the audit page and a user's page share it).
pub fn event_rows(events: &[AuditEvent], labelled_by: &str) -> Markup {
    html! {
        @if events.is_empty() {
            p.muted { "No event." }
        } @else {
            div.scroll {
                table aria-labelledby=(labelled_by) {
                    thead { tr {
                        th scope="col" { "When" } th scope="col" { "Action" }
                        th scope="col" { "By" } th scope="col" { "Whom" }
                        th scope="col" class="hide-narrow" { "From" }
                        th scope="col" { "Details" }
                    } }
                    tbody {
                        @for event in events {
                            tr {
                                td { (view::when(&event.at)) }
                                td { code { (event.action) } }
                                td { (user_link(event.actor_id)) }
                                td { (user_link(event.target_id)) }
                                td class="hide-narrow" { (event.actor_ip.as_deref().unwrap_or("")) }
                                td.details { (event.details.to_string()) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[handler]
pub async fn page(console: Console, Query(params): Query<AuditParams>) -> Response {
    let filter = match (
        user_id("actor_id", &params.actor_id),
        user_id("target_id", &params.target_id),
    ) {
        (Ok(actor_id), Ok(target_id)) => AuditFilter {
            action: Some(params.action.trim().to_string()).filter(|a| !a.is_empty()),
            actor_id,
            target_id,
            after: None,
            before: None,
        },
        (Err(err), _) | (_, Err(err)) => return view::failure_in(&console, err),
    };
    let listed = console
        .state
        .services
        .audit
        .list(&console.caller, filter, PAGE_SIZE, params.cursor.as_deref())
        .await;
    let events = match listed {
        Ok(events) => events,
        Err(err) => return view::failure_in(&console, err),
    };
    let next = events.next_cursor.as_deref().map(|cursor| {
        serde_urlencoded::to_string([
            ("action", params.action.trim()),
            ("actor_id", params.actor_id.trim()),
            ("target_id", params.target_id.trim()),
            ("cursor", cursor),
        ])
        .unwrap_or_default()
    });
    let body = html! {
        form.filters method="get" action="/admin/audit" role="search" {
            div {
                label for="action" { "Action" }
                input id="action" name="action" type="text" value=(params.action)
                    placeholder="user.updated or user.*";
            }
            div {
                label for="actor_id" { "By user id" }
                input id="actor_id" name="actor_id" type="text" inputmode="numeric" value=(params.actor_id);
            }
            div {
                label for="target_id" { "Whom (user id)" }
                input id="target_id" name="target_id" type="text" inputmode="numeric" value=(params.target_id);
            }
            div { button type="submit" { "Filter" } }
        }
        h2 id="events" { "Events, newest first" }
        (event_rows(&events.items, "events"))
        nav.pager aria-label="Pages" {
            @if params.cursor.is_some() {
                a href="/admin/audit" { "« Newest" }
            }
            @if let Some(next) = next {
                a href={ "/admin/audit?" (next) } { "Older events »" }
            }
        }
    };
    view::ok(view::page(&console, "Audit log", Nav::Audit, body))
}
