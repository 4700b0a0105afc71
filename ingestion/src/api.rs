//! Ingestion HTTP API: `GET /sources`, symbol lookups across sources and
//! `POST /ingest`, the REST twin of the gRPC `ProcessData`.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, Path, State,
        rejection::{BytesRejection, FailedToBufferBody},
    },
    http::{HeaderMap, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use lizards_shared::{
    Symbol,
    admin::{IngestAccess, bearer_header},
    problem::Problem,
};
use serde_json::json;

use crate::{
    ingest::{Api, ContentError, Ingest, MAX_CONTENT_BYTES, Report},
    lookup::{Finder, Found},
    sources::{Source, SourceStatus},
};

#[derive(Clone)]
pub struct ApiState {
    pub sources: Arc<Vec<Arc<dyn Source>>>,
    /// `/sources/status` entries of the kinds not enabled.
    pub disabled: Arc<Vec<SourceStatus>>,
    pub finder: Finder,
    pub ingest: Ingest,
    pub access: IngestAccess,
}

pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/sources", get(list_sources))
        .route("/sources/status", get(source_status))
        .route("/sources/lookup/{symbol}", get(lookup))
        .route("/ingest", post(ingest).layer(DefaultBodyLimit::max(MAX_CONTENT_BYTES)))
        .with_state(state)
}

async fn list_sources(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let urls: Vec<&str> = state.sources.iter().map(|s| s.base_url()).collect();
    Json(json!({ "sources": urls }))
}

/// Every source with its state: breaker, lease, last success and error,
/// symbols polled and call counts; kinds not enabled are listed too.
async fn source_status(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let mut all: Vec<SourceStatus> = state.sources.iter().map(|s| s.status()).collect();
    all.extend(state.disabled.iter().cloned());
    Json(json!({ "sources": all }))
}

/// Which source can quote a symbol (the first to say so): 404 when every
/// source says none, 503 when none knew it and some could not answer.
async fn lookup(State(state): State<ApiState>, Path(text): Path<String>) -> Response {
    let symbol = match Symbol::parse(&text) {
        Ok(symbol) => symbol,
        Err(error) => return Problem::bad_request(error.to_string()).into_response(),
    };
    match state.finder.find(&symbol).await {
        Found::Known(source) => Json(json!({ "symbol": symbol, "sources": [source] })).into_response(),
        Found::Unknown => Problem::not_found(format!("Invalid stock symbol: {symbol}")).into_response(),
        Found::Unanswered(problems) => {
            Problem::unavailable(format!("No source knew {symbol}; some could not answer: {}", problems.join("; ")))
                .into_response()
        }
    }
}

/// `POST /ingest`: the body is the gRPC call's `content`; the caller must
/// present INGEST_TOKEN or an admin's token (401/403 problem otherwise,
/// before the body is read). 200 with the
/// report when at least one quote was accepted (`status` says whether all
/// were); when none was: 422 problem with the same counts and items, or 503
/// when the broker failed to confirm. A body that is not a quote list is a
/// 400 (not JSON), 413 (over 4 MiB or 10,000 items) or 422 problem.
async fn ingest(State(state): State<ApiState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    if let Err(refusal) = state.access.admit(bearer_header(&headers)).await {
        state.ingest.count_unauthorized(Api::Rest);
        return refusal.into_response();
    }
    if !is_json(&headers) {
        state.ingest.count_refused(Api::Rest);
        let detail = "send the quotes as application/json";
        return problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail.to_string()).into_response();
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            state.ingest.count_refused(Api::Rest);
            return unreadable_body(rejection).into_response();
        }
    };
    match state.ingest.ingest(Api::Rest, &body).await {
        Ok(report) => report_response(report),
        Err(error) => refused(&error).into_response(),
    }
}

/// JSON, or no content type at all (a bare `curl --data-binary`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else { return true };
    let Ok(value) = value.to_str() else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn problem(status: StatusCode, detail: String) -> Problem {
    Problem::new(status, status.canonical_reason().unwrap_or("Error")).detail(detail)
}

fn report_response(report: Report) -> Response {
    if report.accepted() > 0 {
        return Json(report).into_response();
    }
    let status =
        if report.publish_failed() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::UNPROCESSABLE_ENTITY };
    problem(status, report.message())
        .with("accepted", json!(report.accepted()))
        .with("rejected", json!(report.rejected()))
        .with("items", json!(report.items))
        .into_response()
}

fn refused(error: &ContentError) -> Problem {
    let status = match error {
        ContentError::Malformed(_) => StatusCode::BAD_REQUEST,
        ContentError::TooLarge(_) | ContentError::TooManyItems(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ContentError::NotQuotes | ContentError::Empty => StatusCode::UNPROCESSABLE_ENTITY,
    };
    problem(status, error.to_string())
}

/// A body over the limit is a 413 problem instead of axum's plain text.
fn unreadable_body(rejection: BytesRejection) -> Problem {
    match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("content: more than {MAX_CONTENT_BYTES} bytes, at most {MAX_CONTENT_BYTES} (4 MiB) are accepted"),
        ),
        other => problem(StatusCode::BAD_REQUEST, format!("content: could not be read ({})", other.body_text())),
    }
}
