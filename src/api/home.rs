//! What a browser asks for first: the root (sent on to the docs) and a favicon (none).

use poem_openapi::{ApiResponse, OpenApi};

use super::ApiTags;

pub struct HomeApi;

#[derive(ApiResponse)]
pub enum ToDocs {
    /// The API's documentation is at `/docs`.
    #[oai(status = 303)]
    SeeOther(#[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
pub enum NoIcon {
    /// Roster has no icon; browsers stop asking for a day.
    #[oai(status = 204)]
    NoContent(#[oai(header = "Cache-Control")] String),
}

#[OpenApi(tag = "ApiTags::Browser")]
impl HomeApi {
    /// Start page
    ///
    /// Sends a browser to the Swagger UI at `/docs`.
    #[oai(path = "/", method = "get", operation_id = "home")]
    async fn home(&self) -> ToDocs {
        ToDocs::SeeOther("/docs".to_string())
    }

    /// Favicon
    ///
    /// No icon (204), so a browser's console shows no error.
    #[oai(path = "/favicon.ico", method = "get", operation_id = "favicon")]
    async fn favicon(&self) -> NoIcon {
        NoIcon::NoContent("public, max-age=86400".to_string())
    }
}
