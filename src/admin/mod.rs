//! The admin console at `/admin`: web pages for the people who run Roster, served by the
//! binary itself. Server-rendered HTML from compiled templates (maud), enhanced by a
//! vendored htmx where it helps (search as you type, paging without reloads); every page
//! and action also works without JavaScript. Only superusers get in; each page calls the
//! same services as the API, so every rule, audit event and cache invalidation is the
//! API's. It is not part of the OpenAPI document: it is for browsers, not clients.

mod assets;
mod audit;
mod console;
mod create;
mod dashboard;
mod sign_in;
mod user;
mod users;
mod view;

use poem::{Route, get, post};

pub use console::{COOKIE, CSRF_FIELD};

/// The console's routes, to be nested at `/admin`.
pub fn routes() -> Route {
    Route::new()
        .at("/", get(dashboard::page))
        .at("/login", get(sign_in::page).post(sign_in::submit))
        .at("/logout", post(sign_in::sign_out))
        .at("/users", get(users::page))
        .at("/users/bulk", post(users::bulk))
        .at("/users/export", get(users::export))
        .at("/users/:id", get(user::page).post(user::edit))
        .at("/users/:id/password", post(user::set_password))
        .at("/users/:id/verify", post(user::mark_verified))
        .at(
            "/users/:id/sessions/:session_id/revoke",
            post(user::revoke_session),
        )
        .at("/users/:id/sessions/revoke-all", post(user::revoke_all))
        .at("/invite", get(create::invite_page).post(create::invite))
        .at("/import", get(create::import_page).post(create::import))
        .at("/audit", get(audit::page))
        .at("/assets/:name", get(assets::serve))
}
