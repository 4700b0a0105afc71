//! The web UI: plain HTML/CSS/JS (ES modules) embedded in the binary, no
//! build step.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use lizards_shared::problem::Problem;

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the UI: path, body, content type.
const FILES: &[(&str, &str, &str)] = &[
    ("/", include_str!("ui/index.html"), "text/html; charset=utf-8"),
    ("/index.html", include_str!("ui/index.html"), "text/html; charset=utf-8"),
    ("/style.css", include_str!("ui/style.css"), "text/css; charset=utf-8"),
    ("/logo.svg", include_str!("ui/logo.svg"), "image/svg+xml"),
    // Browsers ask for it on pages without a <link rel="icon">.
    ("/favicon.ico", include_str!("ui/logo.svg"), "image/svg+xml"),
    ("/app.js", include_str!("ui/app.js"), JS),
    ("/api.js", include_str!("ui/api.js"), JS),
    ("/stream.js", include_str!("ui/stream.js"), JS),
    ("/watchlist.js", include_str!("ui/watchlist.js"), JS),
    ("/chart.js", include_str!("ui/chart.js"), JS),
    ("/account.js", include_str!("ui/account.js"), JS),
    ("/portfolio.js", include_str!("ui/portfolio.js"), JS),
    ("/alerts.js", include_str!("ui/alerts.js"), JS),
];

pub fn serve(path: &str) -> Response {
    match FILES.iter().find(|(file, ..)| *file == path) {
        Some((_, body, content_type)) => {
            ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], *body).into_response()
        }
        None => Problem::new(StatusCode::NOT_FOUND, "Not Found").detail(format!("no route for {path}")).into_response(),
    }
}
