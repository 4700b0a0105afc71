//! JSON request bodies: read with a size limit and parsed into a typed
//! request, every failure a problem that names it (415 not JSON, 413 too
//! large, 400 malformed JSON, 422 wrong shape naming the field).

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderMap, StatusCode, header},
};
use lizards_shared::problem::Problem;
use serde::de::DeserializeOwned;

/// Largest JSON body of the accounts, alerts and portfolio endpoints.
pub const MAX_BODY: usize = 64 * 1024;

/// A JSON body parsed into `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Problem> {
        if !is_json(request.headers()) {
            return Err(problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the body as application/json".into()));
        }
        let announced = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|length| length > MAX_BODY as u64) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY).await.map_err(|_| too_large())?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses a JSON document into `T`: 400 when it is not JSON, 422 naming the
/// field when it has the wrong shape.
pub fn parse<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Problem> {
    if bytes.is_empty() {
        return Err(problem(StatusCode::BAD_REQUEST, "the body is empty; a JSON object is expected".into()));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| problem(StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let detail = if path == "." { e.inner().to_string() } else { format!("'{path}': {}", e.inner()) };
        problem(StatusCode::UNPROCESSABLE_ENTITY, detail)
    })
}

/// JSON, or no content type at all (a bare `curl -d`).
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return true };
    let Ok(value) = value.to_str() else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn too_large() -> Problem {
    problem(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {} KiB", MAX_BODY / 1024))
}

fn problem(status: StatusCode, detail: String) -> Problem {
    Problem::new(status, status.canonical_reason().unwrap_or("Error")).detail(detail)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Order {
        symbol: String,
        quantity: f64,
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        let error = parse::<Order>(&Bytes::from_static(br#"{"symbol":"AAPL","quantity":"x"}"#)).unwrap_err();
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error.detail.unwrap().starts_with("'quantity': invalid type"));
        let error = parse::<Order>(&Bytes::from_static(br#"{"quantity":1}"#)).unwrap_err();
        assert_eq!(error.detail.as_deref(), Some("missing field `symbol`"));
    }

    #[test]
    fn malformed_or_empty_bodies_are_bad_requests() {
        for body in [&b""[..], b"{", b"nope", b"{\"symbol\":}"] {
            let error = parse::<Order>(&Bytes::copy_from_slice(body)).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{body:?}");
        }
    }
}
