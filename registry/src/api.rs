//! HTTP handlers of the seed contract and the documents they
//! return.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, FromRef, Path, State,
        rejection::{BytesRejection, FailedToBufferBody},
    },
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, put},
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::{
    auth::{WriteToken, Writer},
    error::ApiError,
    model::{FieldError, Registration, Status},
    store::{InstanceRecord, RegistryStore, ServiceRecord},
};

/// Largest registration body read: a real one is a few hundred bytes, and
/// the limit keeps a client from making the registry buffer megabytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn RegistryStore>,
    /// TTL of registrations that do not ask for one.
    pub default_ttl: Duration,
    pub token: WriteToken,
}

impl FromRef<AppState> for WriteToken {
    fn from_ref(state: &AppState) -> WriteToken {
        state.token.clone()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/services", get(list_services))
        .route("/services/{service_id}", get(get_service).post(register))
        .route("/services/{service_id}/{instance_id}", delete(deregister))
        .route("/services/{service_id}/{instance_id}/heartbeat", put(heartbeat))
        .route("/prometheus/targets", get(prometheus_targets))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Body of a successful registration or heartbeat.
#[derive(Serialize)]
struct Registered {
    service_id: String,
    instance_id: String,
    ttl_seconds: u64,
}

impl Registered {
    fn new(service_id: &str, instance_id: &str, ttl: Duration) -> Registered {
        Registered {
            service_id: service_id.to_string(),
            instance_id: instance_id.to_string(),
            ttl_seconds: whole_seconds(ttl),
        }
    }
}

/// Rounds up so that a client renewing every `ttl_seconds` is never late.
fn whole_seconds(ttl: Duration) -> u64 {
    (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1)
}

/// RFC 3339, UTC, whole seconds: `2031-10-10T12:11:42Z`.
fn timestamp(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn register(
    State(state): State<AppState>,
    Path(service_id): Path<String>,
    _writer: Writer,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Registered>, ApiError> {
    let body = body.map_err(unreadable_body)?;
    let registration = Registration::parse(&service_id, &body, state.default_ttl).map_err(ApiError::Invalid)?;
    let address = registration.host.authority(registration.port);
    let upserted = state.store.upsert(registration, Utc::now()).await?;
    if upserted.created {
        tracing::info!(service = %service_id, instance = %upserted.instance_id, %address, "instance registered");
    } else {
        tracing::debug!(service = %service_id, instance = %upserted.instance_id, %address, "instance re-registered");
    }
    Ok(Json(Registered::new(&service_id, &upserted.instance_id, upserted.ttl)))
}

/// A body that could not be read is a bad `body` field like any other, so
/// clients get the same 400 problem instead of axum's plain-text 413.
pub(crate) fn unreadable_body(rejection: BytesRejection) -> ApiError {
    let message = match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            format!("is too large: at most {MAX_BODY_BYTES} bytes ({} KiB) are accepted", MAX_BODY_BYTES / 1024)
        }
        other => format!("could not be read: {}", other.body_text()),
    };
    ApiError::Invalid(vec![FieldError::new("body", message)])
}

async fn heartbeat(
    State(state): State<AppState>,
    Path((service_id, instance_id)): Path<(String, String)>,
    _writer: Writer,
) -> Result<Json<Registered>, ApiError> {
    match state.store.renew(&service_id, &instance_id, Utc::now()).await? {
        Some(ttl) => Ok(Json(Registered::new(&service_id, &instance_id, ttl))),
        None => Err(ApiError::UnknownInstance { service_id, instance_id }),
    }
}

async fn deregister(
    State(state): State<AppState>,
    Path((service_id, instance_id)): Path<(String, String)>,
    _writer: Writer,
) -> Result<StatusCode, ApiError> {
    if !state.store.remove(&service_id, &instance_id).await? {
        return Err(ApiError::UnknownInstance { service_id, instance_id });
    }
    tracing::info!(service = %service_id, instance = %instance_id, "instance deregistered");
    Ok(StatusCode::NO_CONTENT)
}

/// One service as `GET /services/{service-id}` returns it.
#[derive(Serialize)]
struct ServiceDoc<'a> {
    service_name: &'a str,
    instance_count: usize,
    registered_at: String,
    instances: Vec<InstanceDoc<'a>>,
}

impl<'a> ServiceDoc<'a> {
    fn new(service: &'a ServiceRecord) -> ServiceDoc<'a> {
        ServiceDoc {
            service_name: &service.name,
            instance_count: service.instances.len(),
            registered_at: timestamp(&service.registered_at),
            instances: service.instances.iter().map(InstanceDoc::new).collect(),
        }
    }
}

#[derive(Serialize)]
struct InstanceDoc<'a> {
    instance_id: &'a str,
    ip_address: &'a str,
    /// A string, whatever type the registration used (seed contract).
    port_number: String,
    protocol: &'static str,
    status: &'static str,
    last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    health_check_path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a std::collections::BTreeMap<String, String>>,
}

impl<'a> InstanceDoc<'a> {
    fn new(instance: &'a InstanceRecord) -> InstanceDoc<'a> {
        InstanceDoc {
            instance_id: &instance.instance_id,
            ip_address: instance.host.as_str(),
            port_number: instance.port.to_string(),
            protocol: instance.protocol.as_str(),
            status: instance.status.as_str(),
            last_seen: timestamp(&instance.last_seen),
            health_check_path: instance.health_check_path.as_ref().map(|path| path.as_str()),
            metadata: Some(&instance.metadata).filter(|metadata| !metadata.is_empty()),
        }
    }
}

// The documents borrow from records the handler owns, so handlers render
// them into a `Response` before returning.

async fn get_service(State(state): State<AppState>, Path(service_id): Path<String>) -> Result<Response, ApiError> {
    let service = state.store.get(&service_id).await?.ok_or(ApiError::UnknownService(service_id))?;
    Ok(Json(ServiceDoc::new(&service)).into_response())
}

/// A service in `GET /services`: the single-service document plus its id.
#[derive(Serialize)]
struct ListedService<'a> {
    service_id: &'a str,
    #[serde(flatten)]
    doc: ServiceDoc<'a>,
}

#[derive(Serialize)]
struct ServiceList<'a> {
    services: Vec<ListedService<'a>>,
}

async fn list_services(State(state): State<AppState>) -> Result<Response, ApiError> {
    let services = state.store.list().await?;
    let listed = services
        .iter()
        .map(|service| ListedService { service_id: service.service_id.as_str(), doc: ServiceDoc::new(service) })
        .collect();
    Ok(Json(ServiceList { services: listed }).into_response())
}

/// One group of Prometheus HTTP service discovery.
#[derive(Serialize)]
struct TargetGroup<'a> {
    targets: [String; 1],
    labels: TargetLabels<'a>,
}

#[derive(Serialize)]
struct TargetLabels<'a> {
    service: &'a str,
    instance_id: &'a str,
}

/// Every instance not marked critical, one group each so that its labels
/// identify it.
async fn prometheus_targets(State(state): State<AppState>) -> Result<Response, ApiError> {
    let services = state.store.list().await?;
    let groups: Vec<TargetGroup> = services
        .iter()
        .flat_map(|service| service.instances.iter().map(move |instance| (service, instance)))
        .filter(|(_, instance)| instance.status != Status::Critical)
        .map(|(service, instance)| TargetGroup {
            targets: [instance.authority()],
            labels: TargetLabels { service: service.service_id.as_str(), instance_id: &instance.instance_id },
        })
        .collect();
    Ok(Json(groups).into_response())
}
