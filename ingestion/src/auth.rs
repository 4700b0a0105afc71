//! Who may write market data (`POST /ingest`, gRPC `ProcessData`): the
//! holder of `INGEST_TOKEN`, or an admin. Quotes reach every subscriber,
//! fire alerts and price orders, so an anonymous write is never accepted.

use lizards_shared::admin::{AdminCheck, AdminError, constant_time_eq};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("writing quotes needs `Authorization: Bearer <INGEST_TOKEN or an admin's token>`")]
    Missing,
    #[error(transparent)]
    Token(#[from] AdminError),
}

#[derive(Clone)]
pub struct IngestAuth {
    token: Option<String>,
    admins: AdminCheck,
}

impl IngestAuth {
    pub fn new(token: Option<String>, admins: AdminCheck) -> IngestAuth {
        IngestAuth { token: token.filter(|t| !t.is_empty()), admins }
    }

    /// Ok when `bearer` is INGEST_TOKEN or a current admin's JWT.
    pub async fn admit(&self, bearer: Option<&str>) -> Result<(), Refusal> {
        let bearer = bearer.ok_or(Refusal::Missing)?;
        if self.token.as_deref().is_some_and(|token| constant_time_eq(bearer.as_bytes(), token.as_bytes())) {
            return Ok(());
        }
        Ok(self.admins.confirm(bearer).await?)
    }
}
