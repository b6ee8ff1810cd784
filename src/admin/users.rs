//! The users table: search as you type, filters, sortable columns, cursor paging (a page
//! costs the same at any depth), bulk (de)activation and deletion with a confirmation, and
//! export of the current filters. Without JavaScript the filter form is a plain GET form;
//! with htmx only the results are fetched and swapped as you type.

use maud::{Markup, html};
use poem::{IntoResponse, Request, Response, handler, web::Query};
use serde::Deserialize;

use super::{
    console::{Console, Posted},
    view::{self, Nav},
};
use crate::{
    api::{dto::ExportFormat, export::ExportFile},
    domain::{PageRequest, SortDirection, SortField, User, UserFilter, UserQuery, UserSort},
    service::{ChangeRequest, ServiceError},
};

const DEFAULT_SIZE: u64 = 25;
const SIZES: [u64; 4] = [25, 50, 100, 200];

/// The table's query string, as given.
#[derive(Debug, Default, Deserialize, Clone)]
pub struct ListParams {
    #[serde(default)]
    pub search: String,
    /// `true`, `false` or empty (everyone).
    #[serde(default)]
    pub active: String,
    /// `superuser`, `regular` or empty.
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub sort: String,
    /// Kept as text: a hand-edited query string gets the default, not an error page.
    #[serde(default)]
    pub size: String,
    pub cursor: Option<String>,
    /// A notice to show: what the last action did.
    pub done: Option<String>,
    #[serde(default)]
    pub n: String,
    /// Export only: `csv` (default) or `ndjson`.
    #[serde(default)]
    pub format: String,
}

const SORTS: [(&str, SortField, SortDirection); 8] = [
    ("-created_at", SortField::CreatedAt, SortDirection::Desc),
    ("created_at", SortField::CreatedAt, SortDirection::Asc),
    ("email", SortField::Email, SortDirection::Asc),
    ("-email", SortField::Email, SortDirection::Desc),
    ("full_name", SortField::FullName, SortDirection::Asc),
    ("-full_name", SortField::FullName, SortDirection::Desc),
    ("id", SortField::Id, SortDirection::Asc),
    ("-id", SortField::Id, SortDirection::Desc),
];

impl ListParams {
    fn sort_key(&self) -> &'static str {
        SORTS
            .iter()
            .find(|(k, ..)| *k == self.sort)
            .map_or("-created_at", |(k, ..)| k)
    }

    fn size(&self) -> u64 {
        self.size
            .parse()
            .ok()
            .filter(|s| SIZES.contains(s))
            .unwrap_or(DEFAULT_SIZE)
    }

    fn query(&self) -> Result<UserQuery, ServiceError> {
        let (_, field, direction) = SORTS
            .iter()
            .find(|(k, ..)| *k == self.sort_key())
            .copied()
            .unwrap_or(SORTS[0]);
        Ok(UserQuery {
            filter: UserFilter {
                is_active: flag(&self.active, "true", "false"),
                is_superuser: flag(&self.role, "superuser", "regular"),
                search: Some(self.search.trim().to_string()).filter(|s| !s.is_empty()),
                created_after: None,
                created_before: None,
            },
            sort: UserSort { field, direction },
            page: PageRequest::new(1, self.size()).map_err(|e| ServiceError::Invalid(vec![e]))?,
        })
    }

    /// This list's query string with `changes` applied (an empty value drops a key).
    fn link(&self, changes: &[(&str, &str)]) -> String {
        let size = self.size().to_string();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("search", self.search.trim()),
            ("active", &self.active),
            ("role", &self.role),
            ("sort", self.sort_key()),
            ("size", &size),
        ];
        for (key, value) in changes {
            pairs.retain(|(k, _)| k != key);
            pairs.push((key, value));
        }
        pairs.retain(|(_, v)| !v.is_empty());
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }
}

fn flag(value: &str, yes: &str, no: &str) -> Option<bool> {
    match value {
        v if v == yes => Some(true),
        v if v == no => Some(false),
        _ => None,
    }
}

fn notice_text(params: &ListParams) -> Option<String> {
    let n: u64 = params.n.parse().unwrap_or(0);
    let users = if n == 1 { "user" } else { "users" };
    Some(match params.done.as_deref()? {
        "activated" => format!("Activated {n} {users}."),
        "deactivated" => format!("Deactivated {n} {users}; their sessions ended."),
        "deleted" => format!("Deleted {n} {users}."),
        "imported" => format!("Imported {n} {users}."),
        _ => return None,
    })
}

pub fn status_badges(user: &User) -> Markup {
    html! {
        @if user.is_active { span.badge.on { "active" } } @else { span.badge.off { "inactive" } }
        " "
        @if user.is_superuser { span.badge.admin { "superuser" } }
        @if !user.email_verified { " " span.badge { "unverified" } }
    }
}

fn sortable(params: &ListParams, label: &str, ascending: &str) -> Markup {
    let descending = format!("-{ascending}");
    let current = params.sort_key();
    let (next, state) = if current == ascending {
        (descending.as_str(), Some("ascending"))
    } else if current == descending {
        (ascending, Some("descending"))
    } else {
        (ascending, None)
    };
    let href = format!(
        "/admin/users?{}",
        params.link(&[("sort", next), ("cursor", "")])
    );
    html! {
        th scope="col" aria-sort=[state] {
            a href=(href) hx-get=(href) hx-target="#results" hx-swap="outerHTML" hx-push-url="true" {
                (label)
                @match state { Some("ascending") => " ▲", Some(_) => " ▼", None => "" }
            }
        }
    }
}

/// How many users match: the cached figures know it for the plain filters; a search is not
/// counted (typing must cost one page read at a million users), so its first page says
/// "more than" when it is full.
fn matching(params: &ListParams, listing: &crate::service::ListPage) -> String {
    let shown = listing.items.len();
    let users = |n: u64| match n {
        1 => "1 user matches.".to_string(),
        n => format!("{n} users match."),
    };
    match (listing.total, &listing.next_cursor, &params.cursor) {
        (Some(total), _, _) => users(total),
        (None, None, None) => users(shown as u64),
        (None, Some(_), None) => format!("More than {shown} users match."),
        (None, _, Some(_)) => "More users matching these filters, in the same order.".into(),
    }
}

fn results(console: &Console, params: &ListParams, listing: &crate::service::ListPage) -> Markup {
    html! {
        div id="results" {
            p.muted aria-live="polite" { (matching(params, listing)) }
            form id="bulk" method="post" action="/admin/users/bulk" {
                (view::csrf_field(console))
                div.actions role="group" aria-label="Act on the selected users" {
                    span { "With selected:" }
                    button.secondary type="submit" name="action" value="activate" { "Activate" }
                    button.secondary type="submit" name="action" value="deactivate" { "Deactivate" }
                    button.danger type="submit" name="action" value="delete" { "Delete" }
                }
                div.scroll {
                    table {
                        caption.muted { "Users, " (listing.items.len()) " shown" }
                        thead {
                            tr {
                                th scope="col" { span.muted { "Select" } }
                                (sortable(params, "Email", "email"))
                                (sortable(params, "Name", "full_name"))
                                th scope="col" { "Status" }
                                (sortable(params, "Created", "created_at"))
                                (sortable(params, "Id", "id"))
                            }
                        }
                        tbody {
                            @for user in &listing.items {
                                tr {
                                    td {
                                        input type="checkbox" name="ids" value=(user.id)
                                            aria-label={ "Select " (user.email) };
                                    }
                                    td { a href={ "/admin/users/" (user.id) } { (user.email) } }
                                    td { (user.full_name.as_deref().unwrap_or("")) }
                                    td { (status_badges(user)) }
                                    td { (view::when(&user.created_at)) }
                                    td { (user.id) }
                                }
                            }
                            @if listing.items.is_empty() {
                                tr { td colspan="6" { "No user matches these filters." } }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if params.cursor.is_some() {
                    @let first = format!("/admin/users?{}", params.link(&[("cursor", "")]));
                    a href=(first) hx-get=(first) hx-target="#results" hx-swap="outerHTML" hx-push-url="true" { "« First page" }
                }
                @if let Some(cursor) = &listing.next_cursor {
                    @let next = format!("/admin/users?{}", params.link(&[("cursor", cursor)]));
                    a href=(next) hx-get=(next) hx-target="#results" hx-swap="outerHTML" hx-push-url="true" { "Next page »" }
                }
                span.muted {
                    "Export these users: "
                    a href={ "/admin/users/export?" (params.link(&[("format", "csv")])) } { "CSV" }
                    " · "
                    a href={ "/admin/users/export?" (params.link(&[("format", "ndjson")])) } { "NDJSON" }
                }
            }
        }
    }
}

/// A labelled drop-down of `(value, label)` choices, `current` selected.
fn choice(id: &str, label: &str, choices: &[(&str, &str)], current: &str) -> Markup {
    html! {
        div {
            label for=(id) { (label) }
            select id=(id) name=(id) {
                @for (value, text) in choices {
                    option value=(value) selected[*value == current] { (text) }
                }
            }
        }
    }
}

fn filters(params: &ListParams) -> Markup {
    html! {
        form.filters method="get" action="/admin/users" role="search"
            hx-get="/admin/users" hx-target="#results" hx-swap="outerHTML" hx-push-url="true"
            hx-trigger="input changed delay:250ms from:#search, change, submit" {
            div.grow {
                label for="search" { "Search email or name" }
                input id="search" type="search" name="search" value=(params.search)
                    placeholder="e.g. ada@ or Lovelace" autocomplete="off";
            }
            (choice("active", "Status",
                &[("", "Everyone"), ("true", "Active"), ("false", "Inactive")], &params.active))
            (choice("role", "Role",
                &[("", "Everyone"), ("superuser", "Superusers"), ("regular", "Regular users")],
                &params.role))
            div {
                label for="size" { "Per page" }
                select id="size" name="size" {
                    @for size in SIZES {
                        option value=(size) selected[size == params.size()] { (size) }
                    }
                }
            }
            input type="hidden" name="sort" value=(params.sort_key());
            div { button type="submit" { "Apply" } }
        }
    }
}

#[handler]
pub async fn page(req: &Request, console: Console, Query(params): Query<ListParams>) -> Response {
    let query = match params.query() {
        Ok(query) => query,
        Err(err) => return view::failure_in(&console, err),
    };
    let listed = console
        .state
        .services
        .users
        .browse(&console.caller, &query, params.cursor.as_deref())
        .await;
    let listing = match listed {
        Ok(listing) => listing,
        Err(err) => return view::failure_in(&console, err),
    };
    let fragment = results(&console, &params, &listing);
    // htmx names the element it will swap: then only the results are drawn.
    if req.header("hx-target") == Some("results") {
        return view::ok(fragment);
    }
    let body = html! {
        @if let Some(text) = notice_text(&params) { (view::notice(&text)) }
        (filters(&params))
        (fragment)
    };
    view::ok(view::page(&console, "Users", Nav::Users, body))
}

/// Every user matching the table's filters, in its order, as CSV or NDJSON (streamed).
#[handler]
pub async fn export(console: Console, Query(params): Query<ListParams>) -> Response {
    let format = match params.format.as_str() {
        "ndjson" => ExportFormat::Ndjson,
        _ => ExportFormat::Csv,
    };
    let query = match params.query() {
        Ok(query) => query,
        Err(err) => return view::failure_in(&console, err),
    };
    match console
        .state
        .services
        .users
        .export(&console.caller, &query, None)
    {
        Ok(chunks) => ExportFile::new(chunks, format).into_response(),
        Err(err) => view::failure_in(&console, err),
    }
}

#[derive(Clone, Copy)]
enum BulkAction {
    Activate,
    Deactivate,
    Delete,
}

impl BulkAction {
    fn parse(value: Option<&str>) -> Option<Self> {
        match value? {
            "activate" => Some(Self::Activate),
            "deactivate" => Some(Self::Deactivate),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Activate => "activate",
            Self::Deactivate => "deactivate",
            Self::Delete => "delete",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Self::Activate => "activated",
            Self::Deactivate => "deactivated",
            Self::Delete => "deleted",
        }
    }
}

/// Selected rows → a confirmation page listing them; confirmed → the action on each
/// (each in its own transaction, so one refusal, such as the last active superuser, leaves
/// the others done and is reported).
#[handler]
pub async fn bulk(posted: Posted) -> Response {
    let console = &posted.console;
    let Some(action) = BulkAction::parse(posted.field("action")) else {
        return view::failure_in(
            console,
            ServiceError::invalid("action", "must be activate, deactivate or delete"),
        );
    };
    let mut ids: Vec<i64> = posted
        .all("ids")
        .iter()
        .filter_map(|id| id.parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return view::failure_in(
            console,
            ServiceError::invalid("ids", "select at least one user first"),
        );
    }
    let users = &console.state.services.users;
    if posted.field("confirm") != Some("yes") {
        let mut chosen = Vec::with_capacity(ids.len());
        for id in &ids {
            match users.get(&console.caller, *id).await {
                Ok(user) => chosen.push(user),
                Err(ServiceError::NotFound(_)) => {}
                Err(err) => return view::failure_in(console, err),
            }
        }
        let verb = action.name();
        let body = html! {
            p { "You are about to " strong { (verb) } " " (chosen.len())
                @if chosen.len() == 1 { " user:" } @else { " users:" } }
            ul { @for user in &chosen { li { (user.email) } } }
            @if matches!(action, BulkAction::Delete) {
                p { strong { "Deleting cannot be undone." } " Their sessions end with them." }
            }
            form method="post" action="/admin/users/bulk" {
                (view::csrf_field(console))
                input type="hidden" name="action" value=(verb);
                input type="hidden" name="confirm" value="yes";
                @for user in &chosen { input type="hidden" name="ids" value=(user.id); }
                div.actions {
                    @if matches!(action, BulkAction::Delete) {
                        button.danger type="submit" autofocus { "Yes, delete" }
                    } @else {
                        button type="submit" autofocus { "Yes, " (verb) }
                    }
                    a.button.secondary href="/admin/users" { "Cancel" }
                }
            }
        };
        return view::ok(view::page(console, "Please confirm", Nav::Users, body));
    }
    let mut done = 0u64;
    let mut refused = Vec::new();
    for id in ids {
        let outcome = match action {
            BulkAction::Delete => users.delete(&console.caller, id).await,
            BulkAction::Activate | BulkAction::Deactivate => {
                let change = ChangeRequest {
                    is_active: Some(matches!(action, BulkAction::Activate)),
                    ..ChangeRequest::default()
                };
                users.update(&console.caller, id, change).await.map(|_| ())
            }
        };
        match outcome {
            Ok(()) => done += 1,
            Err(err) => refused.push((format!("user {id}"), view::explain(err).1)),
        }
    }
    if refused.is_empty() {
        return view::redirect(&format!("/admin/users?done={}&n={done}", action.done()));
    }
    let body = html! {
        @if done > 0 { (view::notice(&format!("Done for {done} user(s)."))) }
        (view::problems("Not done for these users:", &refused))
        p { a href="/admin/users" { "Back to the users" } }
    };
    view::respond(
        poem::http::StatusCode::CONFLICT,
        view::page(console, "Partly done", Nav::Users, body),
    )
}
