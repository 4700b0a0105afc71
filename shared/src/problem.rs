//! RFC 9457 problem details, the one error body of every HTTP edge.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub title: String,
    pub detail: Option<String>,
    /// Extension members, e.g. `errors` naming each bad field.
    /// Boxed: keeps `Result<_, Problem>` small (the map is rarely used).
    pub extensions: Box<Map<String, Value>>,
}

impl Problem {
    pub fn new(status: StatusCode, title: impl Into<String>) -> Problem {
        Problem { status, title: title.into(), detail: None, extensions: Box::default() }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Problem {
        self.detail = Some(detail.into());
        self
    }

    pub fn with(mut self, key: &str, value: Value) -> Problem {
        self.extensions.insert(key.to_string(), value);
        self
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "Not Found").detail(detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "Bad Request").detail(detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").detail(detail)
    }

    pub fn body(&self) -> Value {
        let mut body = json!({"type": "about:blank", "title": self.title, "status": self.status.as_u16()});
        if let Some(detail) = &self.detail {
            body["detail"] = detail.clone().into();
        }
        let map = body.as_object_mut().expect("object");
        map.extend(self.extensions.iter().map(|(k, v)| (k.clone(), v.clone())));
        body
    }
}

pub const CONTENT_TYPE: &str = "application/problem+json";

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}
