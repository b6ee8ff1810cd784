//! Who is using the console: the session cookie, and the anti-forgery check of every
//! state-changing request.
//!
//! The cookie holds an access token of a normal session (so the session shows in the
//! sessions list and revoking it signs the console out at once: every request checks the
//! session is live, as for the API). It is `HttpOnly` (no script reads it), `SameSite=Strict`
//! (no other site's page sends it) and `Secure` when PUBLIC_URL is https. On top of that
//! every POST must carry the session's synchronizer token (`csrf`, an HMAC of the session id
//! under a server key, rendered into each form), so a forged request is refused with 403
//! even from a browser that ignores SameSite.

use std::sync::Arc;

use poem::{
    FromRequest, Request, RequestBody, Response,
    http::{StatusCode, header},
    web::Form,
};

use super::view;
use crate::{
    service::{Caller, ServiceError},
    state::AppState,
};

pub const COOKIE: &str = "roster_console";
/// The cookie is sent only to the console's own paths.
const COOKIE_PATH: &str = "/admin";
pub const SIGN_IN_PATH: &str = "/admin/login";
/// The form field carrying the synchronizer token.
pub const CSRF_FIELD: &str = "csrf";

/// A signed-in superuser and the anti-forgery token of their session.
pub struct Console {
    pub state: Arc<AppState>,
    pub caller: Caller,
    pub csrf: String,
}

impl Console {
    pub fn email(&self) -> &str {
        &self.caller.user.email
    }
}

/// The value of `name` in the request's `Cookie` header(s).
fn cookie<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn secure(state: &AppState) -> bool {
    state
        .settings
        .mail
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
}

/// `Set-Cookie` holding `token` for `max_age_secs`.
pub fn session_cookie(state: &AppState, token: &str, max_age_secs: u64) -> String {
    let secure = if secure(state) { "; Secure" } else { "" };
    format!(
        "{COOKIE}={token}; Path={COOKIE_PATH}; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    )
}

/// `Set-Cookie` that removes the session cookie.
pub fn cleared_cookie(state: &AppState) -> String {
    session_cookie(state, "", 0)
}

/// To the sign-in page (htmx follows `HX-Redirect` instead of swapping in a login form).
fn to_sign_in(req: &Request, clear: bool) -> poem::Error {
    let mut response = if req.headers().contains_key("hx-request") {
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("HX-Redirect", SIGN_IN_PATH)
            .finish()
    } else {
        view::redirect(SIGN_IN_PATH)
    };
    if clear
        && let Some(state) = req.data::<Arc<AppState>>()
        && let Ok(value) = cleared_cookie(state).parse()
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    poem::Error::from_response(response)
}

impl<'a> FromRequest<'a> for Console {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let state = req
            .data::<Arc<AppState>>()
            .cloned()
            .ok_or_else(|| poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR))?;
        let Some(token) = cookie(req, COOKIE).filter(|t| !t.is_empty()) else {
            return Err(to_sign_in(req, false));
        };
        let caller = match state.services.auth.authenticate(token).await {
            Ok(caller) => caller,
            Err(ServiceError::Unauthenticated(_) | ServiceError::InactiveUser) => {
                return Err(to_sign_in(req, true));
            }
            Err(other) => return Err(poem::Error::from_response(view::failure(other))),
        };
        // A superuser demoted since signing in is signed out of the console.
        if !caller.user.is_superuser {
            return Err(to_sign_in(req, true));
        }
        let csrf = state
            .services
            .auth
            .csrf_token(&caller.session_id)
            .map_err(|e| poem::Error::from_response(view::failure(e)))?;
        Ok(Self {
            state,
            caller,
            csrf,
        })
    }
}

/// A state-changing request of a signed-in superuser: its form fields, accepted only with
/// the session's synchronizer token (else 403, and nothing is done).
pub struct Posted {
    pub console: Console,
    pub fields: Vec<(String, String)>,
}

impl Posted {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field that is present and not blank, trimmed.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.field(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// Every value of a repeated field (checkboxes).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn checked(&self, name: &str) -> bool {
        self.field(name).is_some()
    }
}

/// 403 for a request without the right anti-forgery token.
pub fn forged() -> poem::Error {
    poem::Error::from_response(view::failure(ServiceError::Forbidden(
        "This form is out of date or did not come from this console; reload the page and try again.",
    )))
}

impl Console {
    /// Refuses (403) unless `presented` is this session's synchronizer token.
    pub fn check_csrf(&self, presented: Option<&str>) -> poem::Result<()> {
        match presented {
            Some(token)
                if self
                    .state
                    .services
                    .auth
                    .csrf_matches(&self.caller.session_id, token) =>
            {
                Ok(())
            }
            _ => Err(forged()),
        }
    }
}

impl<'a> FromRequest<'a> for Posted {
    async fn from_request(req: &'a Request, body: &mut RequestBody) -> poem::Result<Self> {
        let console = Console::from_request(req, body).await?;
        let Form(fields) = Form::<Vec<(String, String)>>::from_request(req, body)
            .await
            .map_err(|_| forged())?;
        let posted = Self { console, fields };
        posted.console.check_csrf(posted.field(CSRF_FIELD))?;
        Ok(posted)
    }
}
