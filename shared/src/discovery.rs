//! Client of the service registry (docs/architecture.md, Service registry):
//! every service registers at start, renews by heartbeat, re-registers if
//! evicted and deregisters on shutdown; callers look instances up by
//! service id.

use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::{retry::Backoff, shutdown::Shutdown};

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("registry unreachable: {0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("registry answered {status}: {body}")]
    Status { status: StatusCode, body: String },
}

/// What a service registers about itself.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    #[serde(skip)]
    pub service_id: String,
    pub name: String,
    pub ip_address: String,
    pub port_number: String,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
}

impl Registration {
    pub fn http(service_id: &str, name: &str, host: &str, port: u16) -> Registration {
        Registration {
            service_id: service_id.to_string(),
            name: name.to_string(),
            ip_address: host.to_string(),
            port_number: port.to_string(),
            protocol: "HTTP".to_string(),
            health_check_path: Some("/healthz".to_string()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Registered {
    pub service_id: String,
    pub instance_id: String,
    pub ttl_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Instance {
    pub instance_id: String,
    pub ip_address: String,
    pub port_number: String,
    pub protocol: String,
    #[serde(default)]
    pub status: String,
}

impl Instance {
    /// `host:port`, bracketing IPv6 literals.
    pub fn authority(&self) -> String {
        if self.ip_address.contains(':') {
            format!("[{}]:{}", self.ip_address, self.port_number)
        } else {
            format!("{}:{}", self.ip_address, self.port_number)
        }
    }

    /// Instances marked critical by health checks are skipped.
    pub fn is_healthy(&self) -> bool {
        self.status != "critical"
    }
}

#[derive(Deserialize)]
struct ServiceDoc {
    instances: Vec<Instance>,
}

#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl RegistryClient {
    pub fn new(base: &str, token: Option<String>) -> RegistryClient {
        RegistryClient { base: base.trim_end_matches('/').to_string(), token, http: crate::http::client() }
    }

    fn write(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request.timeout(Duration::from_secs(5));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn register(&self, registration: &Registration) -> Result<Registered, DiscoveryError> {
        let url = format!("{}/services/{}", self.base, registration.service_id);
        let response = self.write(self.http.post(url).json(registration)).send().await?;
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        Ok(response.json().await?)
    }

    /// Renews a registration; `Ok(false)` when the registry no longer knows it.
    pub async fn heartbeat(&self, service_id: &str, instance_id: &str) -> Result<bool, DiscoveryError> {
        let url = format!("{}/services/{service_id}/{instance_id}/heartbeat", self.base);
        let response = self.write(self.http.put(url)).send().await?;
        match response.status() {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(response).await),
        }
    }

    pub async fn deregister(&self, service_id: &str, instance_id: &str) -> Result<(), DiscoveryError> {
        let url = format!("{}/services/{service_id}/{instance_id}", self.base);
        let response = self.write(self.http.delete(url)).send().await?;
        match response.status() {
            status if status.is_success() || status == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(status_error(response).await),
        }
    }

    /// Instances of a service (empty when the service is unknown).
    pub async fn instances(&self, service_id: &str) -> Result<Vec<Instance>, DiscoveryError> {
        let url = format!("{}/services/{service_id}", self.base);
        let response = self.http.get(url).timeout(Duration::from_secs(5)).send().await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            status if status.is_success() => Ok(response.json::<ServiceDoc>().await?.instances),
            _ => Err(status_error(response).await),
        }
    }
}

async fn status_error(response: reqwest::Response) -> DiscoveryError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    DiscoveryError::Status { status, body }
}

/// Keeps `registration` registered until `shutdown`, then deregisters;
/// with an empty REGISTRY_URL it only waits for shutdown.
/// Retries with backoff while the registry is unreachable, so services start
/// in any order.
pub async fn keep_registered(
    client: RegistryClient,
    registration: Registration,
    heartbeat: Duration,
    shutdown: Shutdown,
) {
    if client.base.is_empty() {
        // A role kept off the registry's network (the notifier in compose)
        // is found another way.
        tracing::info!(service = %registration.service_id, "REGISTRY_URL is empty: not registering");
        return shutdown.cancelled().await;
    }
    let mut instance: Option<String> = None;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let wait = match &instance {
            None => match client.register(&registration).await {
                Ok(registered) => {
                    tracing::info!(service = %registration.service_id, instance = %registered.instance_id, "registered");
                    instance = Some(registered.instance_id);
                    backoff.reset();
                    heartbeat
                }
                Err(error) => {
                    tracing::warn!(service = %registration.service_id, %error, "registration failed, retrying");
                    backoff.next_delay()
                }
            },
            Some(id) => match client.heartbeat(&registration.service_id, id).await {
                Ok(true) => heartbeat,
                Ok(false) => {
                    tracing::warn!(service = %registration.service_id, "registry forgot us, re-registering");
                    instance = None;
                    Duration::ZERO
                }
                Err(error) => {
                    tracing::warn!(service = %registration.service_id, %error, "heartbeat failed");
                    heartbeat.min(Duration::from_secs(2))
                }
            },
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if let Some(id) = instance {
        match client.deregister(&registration.service_id, &id).await {
            Ok(()) => tracing::info!(service = %registration.service_id, instance = %id, "deregistered"),
            Err(error) => tracing::warn!(service = %registration.service_id, %error, "deregistration failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn without_a_registry_url_nothing_registers_and_it_waits_for_shutdown() {
        let registration = Registration::http("notifier", "Lizards notifier", "127.0.0.1", 8700);
        let shutdown = Shutdown::new();
        let task = tokio::spawn(keep_registered(
            RegistryClient::new("", None),
            registration,
            Duration::from_secs(10),
            shutdown.clone(),
        ));
        // An early return would read as a dead worker to the supervisor.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!task.is_finished());
        shutdown.cancel();
        task.await.expect("stops at shutdown");
    }
}
