//! Whether a bearer token is an admin's, for the services that keep no
//! accounts (the gateway, ingestion). The signature and the `admin` role
//! claim are checked here; then the provider, which holds the accounts,
//! confirms that the account still exists, is still an admin and has not
//! revoked the token (password, e-mail or role changed since). So a
//! revoked admin token is refused everywhere, not only by the provider.

use std::time::Duration;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use crate::{
    discovery::RegistryClient,
    jwt::{Jwt, Role},
    problem::Problem,
};

/// Registry id of the service that holds the accounts.
const ACCOUNTS_SERVICE: &str = "provider";

/// One confirmation call to the provider.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// No bearer token at all: 401; the text says which one is wanted.
    #[error("{0}")]
    Missing(&'static str),
    /// The token did not verify, or the provider refused it (revoked,
    /// account gone): 401.
    #[error("{0}")]
    Invalid(String),
    /// A valid token of someone who is not an admin: 403.
    #[error("this needs an admin's token")]
    NotAdmin,
    /// No provider could confirm the token just now: 503.
    #[error("the admin token cannot be confirmed now: {0}")]
    Unconfirmed(String),
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::Missing(_) | AdminError::Invalid(_) => StatusCode::UNAUTHORIZED,
            AdminError::NotAdmin => StatusCode::FORBIDDEN,
            AdminError::Unconfirmed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A problem response; a 401 carries the `WWW-Authenticate: Bearer` challenge.
impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let title = status.canonical_reason().unwrap_or("Refused");
        let mut response = Problem::new(status, title).detail(self.to_string()).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[derive(Clone)]
pub struct AdminCheck {
    jwt: Jwt,
    registry: RegistryClient,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Me {
    role: Role,
}

impl AdminCheck {
    pub fn new(jwt: Jwt, registry: RegistryClient) -> AdminCheck {
        AdminCheck { jwt, registry, http: crate::http::client() }
    }

    /// Ok when `presented` is a current admin's token.
    pub async fn admit(&self, presented: Option<&str>) -> Result<(), AdminError> {
        self.confirm(presented.ok_or(AdminError::Missing("this needs an admin's bearer token"))?).await
    }

    /// Ok when `token` is a current admin's.
    pub async fn confirm(&self, token: &str) -> Result<(), AdminError> {
        let claims = self.jwt.verify(token).map_err(|e| AdminError::Invalid(e.to_string()))?;
        if claims.role != Role::Admin {
            return Err(AdminError::NotAdmin);
        }
        let instances =
            self.registry.instances(ACCOUNTS_SERVICE).await.map_err(|e| AdminError::Unconfirmed(e.to_string()))?;
        let mut last = "no provider instance is registered".to_string();
        for instance in instances.iter().filter(|i| i.is_healthy()) {
            let url = format!("http://{}/users/me", instance.authority());
            let answer = self.http.get(url).bearer_auth(token).timeout(CONFIRM_TIMEOUT).send().await;
            match answer {
                Ok(response) if response.status() == StatusCode::OK => {
                    let me: Me = response.json().await.map_err(|e| AdminError::Unconfirmed(e.to_string()))?;
                    return if me.role == Role::Admin { Ok(()) } else { Err(AdminError::NotAdmin) };
                }
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    return Err(AdminError::Invalid("the token was revoked or its account deleted".into()));
                }
                Ok(response) => last = format!("provider answered {}", response.status()),
                Err(error) => last = format!("provider unreachable ({})", error.without_url()),
            }
        }
        Err(AdminError::Unconfirmed(last))
    }
}

/// Who may write market data (`POST /ingest`, gRPC `ProcessData`): the
/// holder of `INGEST_TOKEN`, or an admin. Quotes reach every subscriber,
/// fire alerts and price orders, so an anonymous write is never accepted.
#[derive(Clone)]
pub struct IngestAccess {
    token: Option<String>,
    admins: AdminCheck,
}

impl IngestAccess {
    pub fn new(token: Option<String>, admins: AdminCheck) -> IngestAccess {
        IngestAccess { token: token.filter(|t| !t.is_empty()), admins }
    }

    /// Ok when `presented` is INGEST_TOKEN or a current admin's token.
    pub async fn admit(&self, presented: Option<&str>) -> Result<(), AdminError> {
        let presented = presented.ok_or(AdminError::Missing(
            "writing quotes needs `Authorization: Bearer <INGEST_TOKEN or an admin's token>`",
        ))?;
        if self.token.as_deref().is_some_and(|token| constant_time_eq(presented.as_bytes(), token.as_bytes())) {
            return Ok(());
        }
        self.admins.confirm(presented).await
    }
}

/// The token of a request's `Authorization: Bearer` header, if any.
pub fn bearer_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()).and_then(bearer)
}

/// The credentials of an `Authorization: Bearer <token>` header value
/// (scheme case-insensitive), if it is one.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

/// Compares without stopping at the first difference, so response timing
/// does not reveal how much of a guessed token was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}
