//! The HTTP API: one module per tag, all typed so the OpenAPI spec is generated from the code.

mod account;
mod account_pages;
mod audit;
mod auth;
mod bearer;
mod dashboard;
pub mod dto;
mod examples;
pub(crate) mod export;
mod health;
mod home;
mod json_body;
mod metrics;
mod page_json;
mod sessions;
mod spec_doc;
mod users;

use poem_openapi::{
    ApiResponse, OpenApiService, Tags,
    payload::Json,
    types::{ToJSON, Type},
};

use crate::domain::User;

pub use account::AccountApi;
pub use account_pages::AccountPages;
pub use audit::AuditApi;
pub use auth::{AuthApi, LOGIN_BUCKET_PATHS};
pub use bearer::BearerAuth;
pub use dashboard::DashboardApi;
pub use health::HealthApi;
pub use home::HomeApi;
pub use json_body::JsonBody;
pub use metrics::MetricsApi;
pub use page_json::EncodedUsers;
pub use sessions::SessionsApi;
pub use users::UsersApi;

#[derive(Tags)]
pub enum ApiTags {
    /// Log in, rotate and revoke tokens, register.
    Auth,
    /// Password reset, email verification and invitations, completed from emailed links.
    Account,
    /// The HTML pages the emailed links open (for browsers; they work without JavaScript).
    AccountPages,
    /// Manage user accounts.
    Users,
    /// See and end login sessions.
    Sessions,
    /// Who did what to whom: the trail of changes to accounts and sessions.
    Audit,
    /// Aggregate figures over all users.
    Dashboard,
    /// Liveness, readiness and dependency checks.
    Health,
    /// Operational figures.
    Metrics,
    /// What a browser asks for first.
    Browser,
}

pub type RosterApi = (
    AuthApi,
    AccountApi,
    UsersApi,
    SessionsApi,
    AuditApi,
    DashboardApi,
    HealthApi,
    MetricsApi,
    AccountPages,
    HomeApi,
);

const DESCRIPTION: &str = "Self-hosted user management. Log in with `POST /api/v1/auth/login`, \
then press **Authorize** and paste the `access_token`.";

pub fn service() -> OpenApiService<RosterApi, ()> {
    OpenApiService::new(
        (
            AuthApi,
            AccountApi,
            UsersApi,
            SessionsApi,
            AuditApi,
            DashboardApi,
            HealthApi,
            MetricsApi,
            AccountPages,
            HomeApi,
        ),
        "Roster",
        env!("CARGO_PKG_VERSION"),
    )
    .description(DESCRIPTION)
}

/// The OpenAPI document, exactly as served at `/openapi.json` (and shown at `/docs`).
pub fn spec_json() -> String {
    spec_doc::normalise(&service().spec())
}

/// Swagger UI's page, showing `spec_json()`.
pub fn swagger_ui_html() -> String {
    let api = service();
    api.swagger_ui_html().replace(&api.spec(), &spec_json())
}

#[derive(ApiResponse)]
pub enum Created<T: ToJSON + Type + Send + Sync> {
    /// Created; `Location` is the new resource's URL.
    #[oai(status = 201)]
    Created(Json<T>, #[oai(header = "Location")] String),
}

impl Created<dto::UserOut> {
    pub fn user(user: User) -> Self {
        let location = format!("/api/v1/users/{}", user.id);
        Self::Created(Json(user.into()), location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MAX_PAGE_SIZE;

    /// The page size limit is declared to poem-openapi as a literal; it must be the
    /// domain's one limit.
    #[test]
    fn the_spec_declares_the_domain_page_size_limit() {
        let spec: serde_json::Value = serde_json::from_str(&spec_json()).unwrap();
        let size = spec["paths"]["/api/v1/users"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "size")
            .unwrap();
        assert_eq!(
            size["schema"]["maximum"].as_f64(),
            Some(MAX_PAGE_SIZE as f64)
        );
    }

    /// Enum parameters are inline (generators refuse `allOf` of an enum) and keep their
    /// values, description and default; nothing else of the document changes.
    #[test]
    fn enum_parameters_are_inline_with_their_default() {
        let spec: serde_json::Value = serde_json::from_str(&spec_json()).unwrap();
        let sort = spec["paths"]["/api/v1/users"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "sort")
            .unwrap();
        assert_eq!(sort["schema"]["default"], "-created_at");
        assert_eq!(sort["schema"]["type"], "string");
        assert_eq!(sort["schema"]["enum"].as_array().unwrap().len(), 8);
        assert!(sort["schema"]["description"].is_string());
        let parameters = spec["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|ops| ops.as_object().unwrap().values())
            .filter_map(|op| op["parameters"].as_array())
            .flatten();
        for param in parameters {
            assert!(param["schema"].get("allOf").is_none(), "{param}");
        }
        let original: serde_json::Value = serde_json::from_str(&service().spec()).unwrap();
        assert_eq!(
            spec["components"]["schemas"]["SortParam"],
            original["components"]["schemas"]["SortParam"]
        );
        assert_eq!(spec["tags"], original["tags"]);
    }

    /// The login bucket names routes that exist, as POST operations (the admin console's
    /// sign-in is not in the API document; its integration test covers it).
    #[test]
    fn login_bucket_paths_are_real_post_routes() {
        let spec: serde_json::Value = serde_json::from_str(&spec_json()).unwrap();
        for path in LOGIN_BUCKET_PATHS
            .iter()
            .filter(|p| !p.starts_with("/admin/"))
        {
            assert!(spec["paths"][path]["post"].is_object(), "{path}");
        }
    }
}
