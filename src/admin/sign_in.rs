//! Signing in to and out of the console.

use std::sync::Arc;

use maud::{Markup, html};
use poem::{
    Request, Response, handler,
    http::{StatusCode, header},
    web::{Data, Form},
};
use serde::Deserialize;

use super::{
    console::{Console, Posted, cleared_cookie, session_cookie},
    view,
};
use crate::{
    request_context::current_client_ip,
    service::{ClientInfo, ServiceError},
    state::AppState,
};

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

fn form(email: &str, problem: Option<&str>) -> Markup {
    view::bare_page(
        "Sign in to Roster",
        html! {
            @if let Some(problem) = problem {
                (view::problems(problem, &[]))
            }
            p.muted { "For superusers. Use the email and password of your Roster account." }
            form method="post" action="/admin/login" {
                label for="email" { "Email" }
                input id="email" name="email" type="email" autocomplete="username" required
                    value=(email) autofocus[email.is_empty()];
                label for="password" { "Password" }
                input id="password" name="password" type="password"
                    autocomplete="current-password" required autofocus[!email.is_empty()];
                div.actions { button type="submit" { "Sign in" } }
            }
        },
    )
}

#[handler]
pub async fn page(signed_in: Option<Console>) -> Response {
    match signed_in {
        Some(_) => view::redirect("/admin"),
        None => view::ok(form("", None)),
    }
}

#[handler]
pub async fn submit(
    req: &Request,
    Data(state): Data<&Arc<AppState>>,
    Form(input): Form<SignInForm>,
) -> Response {
    let client = ClientInfo {
        ip: current_client_ip().map(|ip| ip.to_string()),
        user_agent: req.header(header::USER_AGENT).map(str::to_string),
    };
    let email = input.email.trim();
    match state
        .services
        .auth
        .console_sign_in(email, &input.password, client)
        .await
    {
        Ok(signed_in) => {
            let mut response = view::redirect("/admin");
            let cookie = session_cookie(state, &signed_in.token, signed_in.lifetime.as_secs());
            if let Ok(value) = cookie.parse() {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
        }
        Err(err) => {
            // A malformed email gets the same answer as a wrong one, as on the API.
            let (status, message) = match err {
                ServiceError::InvalidCredentials | ServiceError::Invalid(_) => (
                    StatusCode::UNAUTHORIZED,
                    "Incorrect email or password.".to_string(),
                ),
                other => {
                    let (status, message, _) = view::explain(other);
                    (status, message)
                }
            };
            view::respond(status, form(email, Some(&message)))
        }
    }
}

/// Ends the console's session (it disappears from the sessions list) and drops the cookie.
#[handler]
pub async fn sign_out(posted: Posted) -> Response {
    let console = &posted.console;
    let auth = &console.state.services.auth;
    let mut response = match auth
        .end_my_session(&console.caller, &console.caller.session_id)
        .await
    {
        Ok(()) | Err(ServiceError::NotFound(_)) => view::redirect("/admin/login"),
        Err(err) => return view::failure(err),
    };
    if let Ok(value) = cleared_cookie(&console.state).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}
