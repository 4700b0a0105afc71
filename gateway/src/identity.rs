//! Who is calling: the user of a valid JWT (`Authorization: Bearer`, or
//! `?token=` on WebSocket upgrades, where browsers cannot set headers),
//! else an anonymous client known by its IP. A token that is present but
//! invalid or expired is refused at the edge with 401.

use std::net::IpAddr;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use lizards_shared::{
    jwt::{Jwt, JwtError},
    problem::Problem,
};

pub struct Identity {
    pub ip: IpAddr,
    /// `sub` of a verified token.
    pub user: Option<String>,
}

/// The bearer token of a request, if it carries one.
fn token<'a>(headers: &'a HeaderMap, uri: &'a Uri, upgrade: bool) -> Option<&'a str> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|value| {
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let query =
        || uri.query()?.split('&').find_map(|pair| pair.strip_prefix("token=")).filter(|token| !token.is_empty());
    bearer.or_else(|| if upgrade { query() } else { None })
}

/// Identifies the caller. On `/auth/*` tokens are not checked: a client
/// logging in again with an expired token must not be turned away.
pub fn identify(
    jwt: &Jwt,
    headers: &HeaderMap,
    uri: &Uri,
    upgrade: bool,
    ip: IpAddr,
    check_token: bool,
) -> Result<Identity, JwtError> {
    let Some(token) = token(headers, uri, upgrade).filter(|_| check_token) else {
        return Ok(Identity { ip, user: None });
    };
    Ok(Identity { ip, user: Some(jwt.verify(token)?.sub) })
}

/// 401 for a token that did not verify.
pub fn unauthorized(error: &JwtError) -> Response {
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized").detail(error.to_string()).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comes_from_the_bearer_header_or_the_upgrade_query() {
        let uri: Uri = "/ws?session=s&token=abc".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(token(&headers, &uri, true), Some("abc"));
        assert_eq!(token(&headers, &uri, false), None, "only upgrades read the query");
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer xyz"));
        assert_eq!(token(&headers, &uri, false), Some("xyz"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwdw=="));
        assert_eq!(token(&headers, &"/quotes".parse().unwrap(), false), None);
    }
}
