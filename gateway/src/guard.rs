//! Routes whose writes are not for everyone. Market data (`/ingest`) is
//! written with INGEST_TOKEN or by an admin; SLOs (`/slos`) are changed by
//! admins only. The gateway checks before routing, so an anonymous write
//! never reaches the service, and the service checks again.

use axum::{
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use lizards_shared::{
    admin::{AdminCheck, AdminError, bearer, constant_time_eq},
    problem::Problem,
};

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone; the service decides per operation.
    Public,
    /// Every method needs INGEST_TOKEN or an admin's token.
    Ingest,
    /// Reads are public; writes need an admin's token, and are forwarded
    /// with the registry's own credentials.
    AdminWrites,
}

pub struct Guard {
    pub admins: AdminCheck,
    pub ingest_token: Option<String>,
    pub registry_token: Option<String>,
}

impl Guard {
    /// Ok when the caller may use `access` with `method`; else the refusal.
    pub async fn check(&self, access: Access, method: &Method, headers: &HeaderMap) -> Result<(), Response> {
        let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
        let result = match access {
            Access::Public => return Ok(()),
            Access::AdminWrites if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) => return Ok(()),
            Access::Ingest => match (presented, &self.ingest_token) {
                (Some(token), Some(expected)) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
                (Some(token), _) => self.admins.confirm(token).await,
                (None, _) => Err(AdminError::Invalid(
                    "writing quotes needs `Authorization: Bearer <INGEST_TOKEN or an admin's token>`".into(),
                )),
            },
            Access::AdminWrites => match presented {
                Some(token) => self.admins.confirm(token).await,
                None => Err(AdminError::Invalid("this change needs an admin's bearer token".into())),
            },
        };
        result.map_err(refused)
    }

    /// The credentials an admin write is forwarded with: the caller proved
    /// to be an admin here, and the registry trusts its own token (or, with
    /// none, the gateway's loopback address), not user tokens.
    pub fn vouch(&self, access: Access, method: &Method, headers: &mut HeaderMap) {
        if access != Access::AdminWrites || matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return;
        }
        headers.remove(header::AUTHORIZATION);
        let value = self.registry_token.as_ref().and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok());
        if let Some(value) = value {
            headers.insert(header::AUTHORIZATION, value);
        }
    }
}

fn refused(error: AdminError) -> Response {
    let status = match error {
        AdminError::Invalid(_) => StatusCode::UNAUTHORIZED,
        AdminError::NotAdmin => StatusCode::FORBIDDEN,
        AdminError::Unconfirmed(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut response =
        Problem::new(status, status.canonical_reason().unwrap_or("Refused")).detail(error.to_string()).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}
