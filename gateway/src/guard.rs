//! Routes whose writes are not for everyone. Market data (`/ingest`) is
//! written with INGEST_TOKEN or by an admin; SLOs (`/slos`) are changed by
//! admins only. The gateway checks before routing, so an anonymous write
//! never reaches the service, and the service checks again.

use axum::{
    http::{HeaderMap, HeaderValue, Method, header},
    response::{IntoResponse, Response},
};
use lizards_shared::admin::{AdminCheck, IngestAccess, bearer_header};

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
    pub ingest: IngestAccess,
    pub registry_token: Option<String>,
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl Guard {
    /// Ok when the caller may use `access` with `method`; else the refusal
    /// (401, 403 or 503 problem).
    pub async fn check(&self, access: Access, method: &Method, headers: &HeaderMap) -> Result<(), Response> {
        let presented = bearer_header(headers);
        let result = match access {
            Access::Public => return Ok(()),
            Access::AdminWrites if is_read(method) => return Ok(()),
            Access::Ingest => self.ingest.admit(presented).await,
            Access::AdminWrites => self.admins.admit(presented).await,
        };
        result.map_err(IntoResponse::into_response)
    }

    /// The credentials an admin write is forwarded with: the caller proved
    /// to be an admin here, and the registry trusts its own token (or, with
    /// none, the gateway's loopback address), not user tokens.
    pub fn vouch(&self, access: Access, method: &Method, headers: &mut HeaderMap) {
        if access != Access::AdminWrites || is_read(method) {
            return;
        }
        headers.remove(header::AUTHORIZATION);
        let value = self.registry_token.as_ref().and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok());
        if let Some(value) = value {
            headers.insert(header::AUTHORIZATION, value);
        }
    }
}
