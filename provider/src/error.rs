//! Errors of the accounts, alerts and portfolio APIs, and their one mapping
//! to RFC 9457 problems (REST) and gRPC statuses (the Accounts twin).

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use lizards_shared::{
    accounts::{AccountError, OrderError},
    problem::Problem,
};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is invalid.
    #[error("'{field}': {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Order(#[from] OrderError),
    #[error("{0}")]
    Unavailable(String),
    /// Too many attempts: retry after this many seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { field, message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } | ApiError::Order(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn problem(&self) -> Problem {
        let status = self.status();
        let problem = Problem::new(status, status.canonical_reason().unwrap_or("Error")).detail(self.to_string());
        match self {
            ApiError::Invalid { field, message } => {
                problem.with("errors", json!([{ "field": field, "message": message }]))
            }
            _ => problem,
        }
    }

    pub fn grpc(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            ApiError::Invalid { .. } => tonic::Status::invalid_argument(message),
            ApiError::Order(_) => tonic::Status::failed_precondition(message),
            ApiError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            ApiError::Forbidden(_) => tonic::Status::permission_denied(message),
            ApiError::NotFound(_) => tonic::Status::not_found(message),
            ApiError::Conflict(_) => tonic::Status::already_exists(message),
            ApiError::Unavailable(_) => tonic::Status::unavailable(message),
            ApiError::TooManyRequests { .. } => tonic::Status::resource_exhausted(message),
            ApiError::Internal => tonic::Status::internal(message),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(error: AccountError) -> ApiError {
        match error {
            AccountError::EmailTaken => ApiError::Conflict(error.to_string()),
            AccountError::Order(order) => ApiError::Order(order),
            AccountError::Conflict => ApiError::Unavailable("the data changed concurrently; try again".into()),
            AccountError::Database(error) => {
                tracing::warn!(%error, "accounts database failed");
                ApiError::Unavailable("accounts are temporarily unavailable".into())
            }
            AccountError::Corrupt(error) => {
                tracing::error!(%error, "accounts database holds an unreadable value");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.problem().into_response();
        match self {
            ApiError::Unauthenticated(_) => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        response
    }
}
