//! The web UI: plain HTML/CSS/JS embedded in the binary, no build step.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use lizards_shared::problem::Problem;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

pub fn serve(path: &str) -> Response {
    let (body, content_type) = match path {
        "/" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => {
            return Problem::new(StatusCode::NOT_FOUND, "Not Found")
                .detail(format!("no route for {path}"))
                .into_response();
        }
    };
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}
