//! Guard of the write routes (GETs are always public). With
//! `REGISTRY_TOKEN` set, a write must present it as a bearer token; without
//! one, writes are accepted from loopback only, so a peer on the network
//! cannot register itself as `provider` and receive other people's logins.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::request::Parts,
};
use lizards_shared::admin::{bearer_header, constant_time_eq};

use crate::error::ApiError;

/// Who may write: the holders of a token, or, without one, local processes.
#[derive(Clone, Default)]
pub struct WriteToken(Option<Arc<str>>);

impl WriteToken {
    pub fn new(token: Option<String>) -> WriteToken {
        WriteToken(token.filter(|t| !t.is_empty()).map(Arc::from))
    }

    /// How writes are guarded, for the start-up log line.
    pub fn mode(&self) -> &'static str {
        match self.0 {
            Some(_) => "writes need REGISTRY_TOKEN",
            None => "REGISTRY_TOKEN unset: writes are accepted from loopback only",
        }
    }

    fn admits(&self, parts: &Parts, peer: Option<SocketAddr>) -> Result<(), ApiError> {
        let Some(expected) = &self.0 else {
            return match peer {
                Some(peer) if peer.ip().to_canonical().is_loopback() => Ok(()),
                _ => Err(ApiError::Unauthorized("registry writes are accepted from loopback only (no REGISTRY_TOKEN)")),
            };
        };
        match bearer_header(&parts.headers) {
            Some(presented) if constant_time_eq(presented.as_bytes(), expected.as_bytes()) => Ok(()),
            _ => Err(ApiError::Unauthorized("missing or wrong bearer token")),
        }
    }
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
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
        token.admits(parts, peer).map(|()| Writer)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{Request, header};

    use super::*;

    fn parts(authorization: Option<&str>) -> Parts {
        let mut request = Request::builder();
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request.body(()).expect("request").into_parts().0
    }

    const LOCAL: Option<SocketAddr> = Some(SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000));

    #[test]
    fn without_a_token_only_loopback_writes_are_admitted() {
        let open = WriteToken::new(None);
        assert!(open.admits(&parts(None), LOCAL).is_ok());
        assert!(open.admits(&parts(None), Some("[::1]:4000".parse().unwrap())).is_ok());
        assert!(open.admits(&parts(None), Some("[::ffff:127.0.0.1]:4000".parse().unwrap())).is_ok());
        assert!(open.admits(&parts(None), Some("10.0.1.7:4000".parse().unwrap())).is_err());
        assert!(open.admits(&parts(None), None).is_err(), "an unknown peer is not local");
        assert!(
            WriteToken::new(Some(String::new())).admits(&parts(None), Some("10.0.1.7:1".parse().unwrap())).is_err()
        );
    }

    #[test]
    fn with_a_token_only_the_matching_bearer_is_admitted_from_anywhere() {
        let token = WriteToken::new(Some("s3cret".to_string()));
        let remote = Some("10.0.1.7:4000".parse().unwrap());
        assert!(token.admits(&parts(Some("Bearer s3cret")), remote).is_ok());
        assert!(token.admits(&parts(Some("bearer s3cret")), remote).is_ok());
        assert!(token.admits(&parts(None), LOCAL).is_err(), "loopback needs the token too");
        assert!(token.admits(&parts(Some("Bearer s3cre")), remote).is_err());
        assert!(token.admits(&parts(Some("Basic s3cret")), remote).is_err());
    }
}
