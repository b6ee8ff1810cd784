//! The console's static files, compiled into the binary: its stylesheet and htmx (vendored
//! from the `htmx.org` npm package, 2.0.11, with its licence beside it in `assets/`).

use poem::{
    Response, handler,
    http::{StatusCode, header},
    web::Path,
};

pub const CSS_PATH: &str = "/admin/assets/admin.css";
pub const HTMX_PATH: &str = "/admin/assets/htmx-2.0.11.min.js";

const CSS: &str = include_str!("assets/admin.css");
const HTMX: &str = include_str!("assets/htmx-2.0.11.min.js");

#[handler]
pub fn serve(Path(name): Path<String>) -> Response {
    let (body, content_type, cache) = match name.as_str() {
        "admin.css" => (CSS, "text/css; charset=utf-8", "public, max-age=300"),
        // The version is in the name: a new htmx gets a new name.
        "htmx-2.0.11.min.js" => (
            HTMX,
            "text/javascript; charset=utf-8",
            "public, max-age=31536000, immutable",
        ),
        _ => return Response::builder().status(StatusCode::NOT_FOUND).finish(),
    };
    Response::builder()
        .content_type(content_type)
        .header(header::CACHE_CONTROL, cache)
        .body(body)
}
