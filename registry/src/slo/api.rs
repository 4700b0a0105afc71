//! `/slos`: create, read, replace and delete objectives (writes need the
//! registry token when one is set), `/slos/status` and
//! `/slos/{id}/violations?hours=1|3|6`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRef, Path, Query, State, rejection::BytesRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use lizards_shared::slo::{
    Aggregation, Comparison, Sample, Slo, SloId, SloSpec, SloStore, SloStoreError, compliance, violations,
};
use serde_json::{Map, Value, json};

use crate::{
    api::{MAX_BODY_BYTES, unreadable_body},
    auth::{WriteToken, Writer},
    error::ApiError,
    model::FieldError,
};

const MAX_NAME: usize = 100;
const MAX_LABELS: usize = 20;
const MAX_TEXT: usize = 200;
const MAX_WINDOW_MINUTES: u64 = 24 * 60;
/// The history a violations query may ask for.
const HOURS: [i64; 3] = [1, 3, 6];

#[derive(Clone)]
pub struct SloState {
    pub store: Arc<dyn SloStore>,
    pub token: WriteToken,
}

impl FromRef<SloState> for WriteToken {
    fn from_ref(state: &SloState) -> WriteToken {
        state.token.clone()
    }
}

pub fn router(state: SloState) -> Router {
    Router::new()
        .route("/slos", get(list).post(create))
        .route("/slos/status", get(status))
        .route("/slos/{id}", get(one).put(replace).delete(remove))
        .route("/slos/{id}/violations", get(violations_of))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn slo_json(slo: &Slo) -> Value {
    let spec = &slo.spec;
    json!({
        "id": slo.id,
        "name": spec.name,
        "metric": spec.metric,
        "labels": spec.labels,
        "aggregation": spec.aggregation.as_str(),
        "comparison": spec.comparison.as_str(),
        "threshold": spec.threshold,
        "window_minutes": spec.window_minutes,
        "created_at": time(&slo.created_at),
        "updated_at": time(&slo.updated_at),
    })
}

fn stored(name: &str, error: SloStoreError) -> ApiError {
    match error {
        SloStoreError::NameTaken => ApiError::SloNameTaken(name.to_string()),
        other => ApiError::SloStore(other),
    }
}

fn id(text: &str) -> Result<SloId, ApiError> {
    text.parse::<SloId>().ok().filter(|id| *id > 0).ok_or_else(|| ApiError::UnknownSlo(text.to_string()))
}

async fn list(State(state): State<SloState>) -> Result<Json<Value>, ApiError> {
    let slos = state.store.slos().await?;
    Ok(Json(json!({ "slos": slos.iter().map(slo_json).collect::<Vec<_>>() })))
}

async fn one(State(state): State<SloState>, Path(text): Path<String>) -> Result<Json<Value>, ApiError> {
    match state.store.slo(id(&text)?).await? {
        Some(slo) => Ok(Json(slo_json(&slo))),
        None => Err(ApiError::UnknownSlo(text)),
    }
}

async fn create(
    State(state): State<SloState>,
    _writer: Writer,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let spec = parse(&body.map_err(unreadable_body)?).map_err(ApiError::InvalidSlo)?;
    let slo = state.store.create_slo(&spec, Utc::now()).await.map_err(|e| stored(&spec.name, e))?;
    tracing::info!(slo = %slo.spec.name, id = slo.id, "SLO created");
    Ok((StatusCode::CREATED, Json(slo_json(&slo))).into_response())
}

async fn replace(
    State(state): State<SloState>,
    Path(text): Path<String>,
    _writer: Writer,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = id(&text)?;
    let spec = parse(&body.map_err(unreadable_body)?).map_err(ApiError::InvalidSlo)?;
    match state.store.update_slo(id, &spec, Utc::now()).await.map_err(|e| stored(&spec.name, e))? {
        Some(slo) => {
            tracing::info!(slo = %slo.spec.name, id, "SLO replaced");
            Ok(Json(slo_json(&slo)))
        }
        None => Err(ApiError::UnknownSlo(text)),
    }
}

async fn remove(
    State(state): State<SloState>,
    Path(text): Path<String>,
    _writer: Writer,
) -> Result<Response, ApiError> {
    if state.store.delete_slo(id(&text)?).await? {
        tracing::info!(id = %text, "SLO deleted");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::UnknownSlo(text))
    }
}

/// Each SLO's latest evaluation and its compliance over its window, and the
/// overall SLA: violated if any SLO is, met if every SLO with data is.
async fn status(State(state): State<SloState>) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let mut entries = Vec::new();
    let (mut met, mut violated, mut no_data) = (0, 0, 0);
    for slo in state.store.slos().await? {
        let window = TimeDelta::minutes(i64::from(slo.spec.window_minutes));
        let samples = state.store.samples(slo.id, now - window).await?;
        let latest = samples.last();
        let state = match latest.and_then(|s| s.met) {
            Some(true) => "met",
            Some(false) => "violated",
            None => "no_data",
        };
        match state {
            "met" => met += 1,
            "violated" => violated += 1,
            _ => no_data += 1,
        }
        let mut entry = slo_json(&slo);
        entry["status"] = json!(state);
        entry["value"] = json!(latest.and_then(|s| s.value));
        entry["evaluated_at"] = json!(latest.map(|s| time(&s.at)));
        entry["compliance"] = json!(compliance(&samples));
        entry["evaluations"] = json!(samples.len());
        entries.push(entry);
    }
    let overall = if violated > 0 {
        "violated"
    } else if met > 0 {
        "met"
    } else {
        "no_data"
    };
    Ok(Json(json!({
        "status": overall,
        "met": met,
        "violated": violated,
        "no_data": no_data,
        "slos": entries,
    })))
}

async fn violations_of(
    State(state): State<SloState>,
    Path(text): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let hours = match params.get("hours").map(String::as_str) {
        None => 1,
        Some(text) => text.parse().ok().filter(|h| HOURS.contains(h)).ok_or_else(|| {
            ApiError::InvalidSlo(vec![FieldError::new("hours", format!("'{text}' must be one of 1, 3 or 6"))])
        })?,
    };
    let Some(slo) = state.store.slo(id(&text)?).await? else {
        return Err(ApiError::UnknownSlo(text));
    };
    let now = Utc::now();
    let samples: Vec<Sample> = state.store.samples(slo.id, now - TimeDelta::hours(hours)).await?;
    let found = violations(&samples, slo.spec.comparison);
    let list: Vec<Value> = found
        .iter()
        .map(|v| {
            let end = v.end.unwrap_or(now);
            json!({
                "start": time(&v.start),
                "end": v.end.as_ref().map(time),
                "ongoing": v.end.is_none(),
                "duration_seconds": (end - v.start).as_seconds_f64(),
                "worst": v.worst,
            })
        })
        .collect();
    Ok(Json(json!({
        "slo_id": slo.id,
        "name": slo.spec.name,
        "hours": hours,
        "count": list.len(),
        "violations": list,
    })))
}

/// An SLO body, with every bad field named.
fn parse(body: &[u8]) -> Result<SloSpec, Vec<FieldError>> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| vec![FieldError::new("body", format!("is not valid JSON: {e}"))])?;
    let Value::Object(fields) = value else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut errors = Vec::new();
    let mut field = |name: &str, check: &dyn Fn(&Value) -> Result<(), String>| match fields.get(name) {
        None | Some(Value::Null) => errors.push(FieldError::new(name, "is required")),
        Some(value) => {
            if let Err(message) = check(value) {
                errors.push(FieldError::new(name, message));
            }
        }
    };
    field("name", &|v| match v.as_str() {
        Some(name) if !name.trim().is_empty() && name.chars().count() <= MAX_NAME => Ok(()),
        _ => Err(format!("must be a text of 1 to {MAX_NAME} characters")),
    });
    field("metric", &|v| match v.as_str() {
        Some(metric) if is_metric_name(metric) => Ok(()),
        _ => Err("must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)".into()),
    });
    field("aggregation", &|v| match v.as_str().and_then(Aggregation::parse) {
        Some(_) => Ok(()),
        None => Err("must be one of value, rate_5m, p50, p95, p99".into()),
    });
    field("comparison", &|v| match v.as_str().and_then(Comparison::parse) {
        Some(_) => Ok(()),
        None => Err("must be \"<\" or \">\"".into()),
    });
    field("threshold", &|v| match v.as_f64() {
        Some(t) if t.is_finite() => Ok(()),
        _ => Err("must be a finite number".into()),
    });
    field("window_minutes", &|v| match v.as_u64() {
        Some(m) if (1..=MAX_WINDOW_MINUTES).contains(&m) => Ok(()),
        _ => Err(format!("must be a whole number of minutes from 1 to {MAX_WINDOW_MINUTES}")),
    });
    let labels = labels(fields.get("labels")).unwrap_or_else(|error| {
        errors.push(FieldError::new("labels", error));
        BTreeMap::new()
    });
    for name in fields.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        errors.push(FieldError::new(name.clone(), "is not a field of an SLO"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let text = |name: &str| fields[name].as_str().expect("checked").to_string();
    Ok(SloSpec {
        name: text("name").trim().to_string(),
        metric: text("metric"),
        labels,
        aggregation: Aggregation::parse(&text("aggregation")).expect("checked"),
        comparison: Comparison::parse(&text("comparison")).expect("checked"),
        threshold: fields["threshold"].as_f64().expect("checked"),
        window_minutes: u32::try_from(fields["window_minutes"].as_u64().expect("checked")).expect("at most a day"),
    })
}

const KNOWN: [&str; 7] = ["name", "metric", "labels", "aggregation", "comparison", "threshold", "window_minutes"];

fn labels(value: Option<&Value>) -> Result<BTreeMap<String, String>, String> {
    let fields: &Map<String, Value> = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(fields)) => fields,
        Some(_) => return Err("must be an object of label names to values".into()),
    };
    if fields.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    fields
        .iter()
        .map(|(name, value)| {
            if !is_label_name(name) {
                return Err(format!("'{name}' is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"));
            }
            match value.as_str() {
                Some(text) if text.chars().count() <= MAX_TEXT => Ok((name.clone(), text.to_string())),
                _ => Err(format!("'{name}' must have a text value of at most {MAX_TEXT} characters")),
            }
        })
        .collect()
}

fn is_metric_name(text: &str) -> bool {
    let mut chars = text.chars();
    text.len() <= MAX_TEXT
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_body_parses_and_every_bad_field_is_named() {
        let good = br#"{"name":" e2e p99 ","metric":"lizards_e2e_latency_seconds","labels":{"service":"provider"},
            "aggregation":"p99","comparison":"<","threshold":0.01,"window_minutes":60}"#;
        let spec = parse(good).expect("valid");
        assert_eq!(spec.name, "e2e p99");
        assert_eq!(spec.aggregation, Aggregation::P99);
        assert_eq!(spec.labels["service"], "provider");

        let bad = br#"{"name":"","metric":"9bad","labels":{"1x":"y"},"aggregation":"p42","comparison":"<=",
            "threshold":"high","window_minutes":0,"extra":1}"#;
        let errors = parse(bad).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["name", "metric", "aggregation", "comparison", "threshold", "window_minutes", "labels", "extra"]
        );
        assert_eq!(parse(b"[1]").unwrap_err()[0].field, "body");
        assert_eq!(parse(b"{").unwrap_err()[0].field, "body");
        assert_eq!(parse(b"{}").unwrap_err().len(), 6, "every required field is named");
    }
}
