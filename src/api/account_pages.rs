//! The small HTML pages that complete each emailed link: choose a new password, confirm an
//! address, accept an invitation. Server-rendered, no JavaScript, no cookies: a form is
//! safe from cross-site forgery because it must carry the link's one-time token, which
//! only the mail's recipient has. Security headers come from `middleware::headers`.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::Query,
    payload::{Form, Html},
};
use serde::Deserialize;

use super::ApiTags;
use crate::{
    error::ApiError,
    mail::html_escape,
    service::{LinkKind, ServiceError},
    state::AppState,
};

pub struct AccountPages;

#[derive(ApiResponse)]
pub enum Page {
    /// The page.
    #[oai(status = 200)]
    Ok(Html<String>),
    /// The link is incomplete, expired or already used.
    #[oai(status = 400)]
    BadLink(Html<String>),
    /// The password breaks a rule; the form again, with the reasons.
    #[oai(status = 422)]
    Invalid(Html<String>),
    /// Too many attempts; try again later.
    #[oai(status = 429)]
    TooMany(Html<String>),
    /// Something failed on our side.
    #[oai(status = 500)]
    Failed(Html<String>),
    /// The server cannot do this right now.
    #[oai(status = 503)]
    Unavailable(Html<String>),
}

/// A form setting a password from a link.
#[derive(Debug, Deserialize, Object)]
#[oai(example)]
pub struct PasswordForm {
    pub token: Option<String>,
    pub password: Option<String>,
    pub confirm_password: Option<String>,
}

const EXPIRED: &str = "This link has expired or was already used. Ask for a new one: \
request another password reset, or ask your administrator to invite you again.";
const INCOMPLETE: &str = "This link is incomplete: open the whole link from the mail.";

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Roster</title><style>body{{font-family:system-ui,sans-serif;max-width:28rem;\
margin:3rem auto;padding:0 1rem;color:#222}}label{{display:block;margin:1rem 0 .25rem}}\
input[type=password]{{width:100%;padding:.5rem;box-sizing:border-box}}button{{margin-top:1.25rem;\
padding:.5rem 1rem}}.error{{color:#a40000}}.ok{{color:#1a6b1a}}</style></head><body>\
<h1>{title}</h1>{body}</body></html>",
        title = html_escape(title)
    )
}

fn message(title: &str, class: &str, text: &str) -> String {
    layout(
        title,
        &format!("<p class=\"{class}\">{}</p>", html_escape(text)),
    )
}

/// A form choosing a password, keeping the token; `errors` above it.
fn password_form(title: &str, action: &str, token: &str, errors: &[String]) -> String {
    let errors: String = errors
        .iter()
        .map(|e| format!("<p class=\"error\">{}</p>", html_escape(e)))
        .collect();
    layout(
        title,
        &format!(
            "{errors}<form method=\"post\" action=\"{action}\">\
<input type=\"hidden\" name=\"token\" value=\"{token}\">\
<label for=\"password\">New password (8 to 128 characters)</label>\
<input id=\"password\" name=\"password\" type=\"password\" minlength=\"8\" maxlength=\"128\" \
autocomplete=\"new-password\" required>\
<label for=\"confirm_password\">The same password again</label>\
<input id=\"confirm_password\" name=\"confirm_password\" type=\"password\" minlength=\"8\" \
maxlength=\"128\" autocomplete=\"new-password\" required>\
<button type=\"submit\">Save password</button></form>",
            token = html_escape(token)
        ),
    )
}

/// The page for a failure: a dead link, broken rules (the form again), or ours.
fn failure(err: ServiceError, retry_form: impl Fn(&[String]) -> String) -> Page {
    match err {
        ServiceError::InvalidToken => {
            Page::BadLink(Html(message("Link not valid", "error", EXPIRED)))
        }
        ServiceError::Invalid(errors) => {
            let reasons: Vec<String> = errors
                .iter()
                .map(|e| format!("The password {}.", e.message))
                .collect();
            Page::Invalid(Html(retry_form(&reasons)))
        }
        other => {
            let api = ApiError::from(other);
            let text = format!(
                "{} (request id {})",
                api.body().message,
                api.body().request_id
            );
            let page = Html(message("Something went wrong", "error", &text));
            match api.body().error.as_str() {
                "rate_limited" => Page::TooMany(page),
                "service_unavailable" | "request_timeout" => Page::Unavailable(page),
                _ => Page::Failed(page),
            }
        }
    }
}

struct PasswordPage {
    kind: LinkKind,
    title: &'static str,
    action: &'static str,
    done: &'static str,
}

const RESET: PasswordPage = PasswordPage {
    kind: LinkKind::PasswordReset,
    title: "Choose a new password",
    action: "/account/reset-password",
    done: "Your password was changed and every session of your account was ended. \
You can now log in with the new password.",
};

const INVITE: PasswordPage = PasswordPage {
    kind: LinkKind::Invitation,
    title: "Accept your invitation",
    action: "/account/accept-invite",
    done: "Your password is set and your address is confirmed. You can now log in.",
};

impl PasswordPage {
    async fn show(&self, state: &AppState, token: Option<String>) -> Page {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Page::BadLink(Html(message("Link not valid", "error", INCOMPLETE)));
        };
        match state.services.account.link_is_live(self.kind, &token).await {
            Ok(true) => Page::Ok(Html(password_form(self.title, self.action, &token, &[]))),
            Ok(false) => failure(ServiceError::InvalidToken, |_| String::new()),
            Err(e) => failure(e, |_| String::new()),
        }
    }

    async fn submit(&self, state: &AppState, form: PasswordForm) -> Page {
        let Some(token) = form.token.filter(|t| !t.is_empty()) else {
            return Page::BadLink(Html(message("Link not valid", "error", INCOMPLETE)));
        };
        let again = |errors: &[String]| password_form(self.title, self.action, &token, errors);
        let password = form.password.unwrap_or_default();
        if form.confirm_password.as_deref() != Some(password.as_str()) {
            return Page::Invalid(Html(again(&["The two passwords differ.".to_string()])));
        }
        let account = &state.services.account;
        let result = match self.kind {
            LinkKind::Invitation => account.accept_invite(&token, &password).await,
            _ => account.confirm_password_reset(&token, &password).await,
        };
        match result {
            Ok(()) => Page::Ok(Html(message("Done", "ok", self.done))),
            Err(e) => failure(e, again),
        }
    }
}

#[OpenApi(prefix_path = "/account", tag = "ApiTags::AccountPages")]
impl AccountPages {
    /// Password reset page
    ///
    /// The page the reset mail links to: a form for the new password.
    #[oai(
        path = "/reset-password",
        method = "get",
        operation_id = "reset_password_page"
    )]
    async fn reset_page(&self, state: Data<&Arc<AppState>>, token: Query<Option<String>>) -> Page {
        RESET.show(&state, token.0).await
    }

    /// Password reset form
    ///
    /// Sets the new password (as `POST /api/v1/auth/password-reset/confirm`).
    #[oai(
        path = "/reset-password",
        method = "post",
        operation_id = "reset_password_form"
    )]
    async fn reset_submit(&self, state: Data<&Arc<AppState>>, form: Form<PasswordForm>) -> Page {
        RESET.submit(&state, form.0).await
    }

    /// Email verification page
    ///
    /// The page the verification mail links to: opening it confirms the address.
    #[oai(
        path = "/verify-email",
        method = "get",
        operation_id = "verify_email_page"
    )]
    async fn verify_page(&self, state: Data<&Arc<AppState>>, token: Query<Option<String>>) -> Page {
        let Some(token) = token.0.filter(|t| !t.is_empty()) else {
            return Page::BadLink(Html(message("Link not valid", "error", INCOMPLETE)));
        };
        match state.services.account.verify_email(&token).await {
            Ok(()) => Page::Ok(Html(message(
                "Address confirmed",
                "ok",
                "Thank you: your email address is confirmed.",
            ))),
            Err(e) => failure(e, |_| String::new()),
        }
    }

    /// Invitation page
    ///
    /// The page the invitation mail links to: a form for the invitee's password.
    #[oai(
        path = "/accept-invite",
        method = "get",
        operation_id = "accept_invite_page"
    )]
    async fn invite_page(&self, state: Data<&Arc<AppState>>, token: Query<Option<String>>) -> Page {
        INVITE.show(&state, token.0).await
    }

    /// Invitation form
    ///
    /// Sets the invitee's password (as `POST /api/v1/auth/accept-invite`).
    #[oai(
        path = "/accept-invite",
        method = "post",
        operation_id = "accept_invite_form"
    )]
    async fn invite_submit(&self, state: Data<&Arc<AppState>>, form: Form<PasswordForm>) -> Page {
        INVITE.submit(&state, form.0).await
    }
}
