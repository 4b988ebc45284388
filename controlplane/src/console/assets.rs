//! The console's static files, embedded in the binary at build time.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The script: as-you-type validation of the deploy form (debounced) and
/// the refresh of `data-live` sections without reload.
const SCRIPT: &str = include_str!("assets/console.js");
/// The style sheet (responsive: one column in a narrow window).
const STYLE: &str = include_str!("assets/console.css");

/// `GET /ui/assets/{name}`: `console.js` or `console.css`.
pub async fn serve(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
