//! Registry errors: startup failures, and the request errors every handler
//! maps to one RFC 9457 problem response.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use lizards_shared::problem::Problem;

use crate::{model::FieldError, store::StoreError};

/// Why the registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Bind(#[from] lizards_shared::http::BindError),
    #[error("cannot open the SLO store {}: {source}", path.display())]
    SloStore { path: std::path::PathBuf, source: lizards_shared::store::StoreError },
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid registration")]
    Invalid(Vec<FieldError>),
    #[error("unknown service {0}")]
    UnknownService(String),
    #[error("unknown instance {instance_id} of service {service_id}")]
    UnknownInstance { service_id: String, instance_id: String },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid SLO request")]
    InvalidSlo(Vec<FieldError>),
    #[error("unknown SLO {0}")]
    UnknownSlo(String),
    #[error("an SLO named {0:?} already exists")]
    SloNameTaken(String),
    #[error("the SLO store is unavailable")]
    SloStore(#[from] lizards_shared::slo::SloStoreError),
}

impl ApiError {
    fn problem(&self) -> Problem {
        let detail = self.to_string();
        match self {
            ApiError::Invalid(errors) | ApiError::InvalidSlo(errors) => Problem::bad_request(detail)
                .with("errors", serde_json::to_value(errors).expect("field errors serialize")),
            ApiError::UnknownService(_) | ApiError::UnknownInstance { .. } | ApiError::UnknownSlo(_) => {
                Problem::not_found(detail)
            }
            ApiError::SloNameTaken(_) => Problem::new(StatusCode::CONFLICT, "Conflict").detail(detail),
            ApiError::Unauthorized(_) => Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized").detail(detail),
            ApiError::Store(_) | ApiError::SloStore(_) => Problem::unavailable(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Store(error) = &self {
            tracing::error!(%error, "registry store failed");
        }
        if let ApiError::SloStore(error) = &self {
            tracing::error!(%error, "SLO store failed");
        }
        let mut response = self.problem().into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            // RFC 6750: a 401 names the scheme the client should use.
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
