//! Ingestion HTTP API: `GET /sources` and symbol lookups across sources.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::get,
};
use lizards_shared::{Symbol, problem::Problem};
use serde_json::json;

use crate::sources::Source;

#[derive(Clone)]
pub struct ApiState {
    pub sources: Arc<Vec<Arc<dyn Source>>>,
}

pub fn routes(state: ApiState) -> Router {
    Router::new().route("/sources", get(list_sources)).route("/sources/lookup/{symbol}", get(lookup)).with_state(state)
}

async fn list_sources(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let urls: Vec<&str> = state.sources.iter().map(|s| s.base_url()).collect();
    Json(json!({ "sources": urls }))
}

/// Which enabled sources can quote a symbol; 404 when none can.
async fn lookup(State(state): State<ApiState>, Path(text): Path<String>) -> Response {
    let symbol = match Symbol::parse(&text) {
        Ok(symbol) => symbol,
        Err(error) => return Problem::bad_request(error.to_string()).into_response(),
    };
    let mut found = Vec::new();
    for source in state.sources.iter() {
        match source.lookup(&symbol).await {
            Ok(true) => found.push(source.id().to_string()),
            Ok(false) => {}
            Err(error) => tracing::warn!(source = source.id(), %error, "lookup failed"),
        }
    }
    if found.is_empty() {
        return Problem::not_found(format!("Invalid stock symbol: {symbol}")).into_response();
    }
    Json(json!({ "symbol": symbol, "sources": found })).into_response()
}
