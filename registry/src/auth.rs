//! Bearer-token guard of the write routes (GETs are always public).

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::header, http::request::Parts};

use crate::error::ApiError;

/// The token writes must present, if one is configured.
#[derive(Clone, Default)]
pub struct WriteToken(Option<Arc<str>>);

impl WriteToken {
    pub fn new(token: Option<String>) -> WriteToken {
        WriteToken(token.map(Arc::from))
    }

    fn admits(&self, parts: &Parts) -> bool {
        let Some(expected) = &self.0 else {
            return true;
        };
        bearer(parts).is_some_and(|presented| constant_time_eq(presented.as_bytes(), expected.as_bytes()))
    }
}

/// The credentials of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without stopping at the first difference, so response timing
/// does not reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Extractor proving the request may write; rejects with a 401 problem.
pub struct Writer;

impl<S> FromRequestParts<S> for Writer
where
    S: Send + Sync,
    WriteToken: axum::extract::FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Writer, ApiError> {
        let token = <WriteToken as axum::extract::FromRef<S>>::from_ref(state);
        if token.admits(parts) { Ok(Writer) } else { Err(ApiError::Unauthorized) }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts(authorization: Option<&str>) -> Parts {
        let mut request = Request::builder();
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request.body(()).expect("request").into_parts().0
    }

    #[test]
    fn without_a_token_every_write_is_admitted() {
        assert!(WriteToken::new(None).admits(&parts(None)));
    }

    #[test]
    fn with_a_token_only_the_matching_bearer_is_admitted() {
        let token = WriteToken::new(Some("s3cret".to_string()));
        assert!(token.admits(&parts(Some("Bearer s3cret"))));
        assert!(token.admits(&parts(Some("bearer s3cret"))));
        assert!(!token.admits(&parts(None)));
        assert!(!token.admits(&parts(Some("Bearer s3cre"))));
        assert!(!token.admits(&parts(Some("Basic s3cret"))));
    }
}
