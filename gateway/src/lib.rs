//! Gateway: the edge of Lizards. Routes by path prefix to instances found in
//! the registry (REST streamed, WebSockets bridged) and serves the web UI.

pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod ui;
pub mod upstream;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use lizards_shared::{
    config::Config,
    discovery::{Registration, RegistryClient, keep_registered},
    service::Started,
    shutdown::Shutdown,
    telemetry::{self, HttpMetrics, Readiness},
};

use crate::upstream::Upstreams;

pub const SERVICE_ID: &str = "gateway";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot bind: {0}")]
    Bind(#[from] std::io::Error),
}

pub struct GatewayState {
    pub upstreams: Arc<Upstreams>,
    pub http: reqwest::Client,
    pub metrics: metrics::Metrics,
    pub upstream_timeout: Duration,
}

pub async fn build(config: Config, shutdown: Shutdown) -> Result<Started, GatewayError> {
    let registry_client = RegistryClient::new(&config.common.registry_url, config.common.registry_token.clone());
    let upstreams = Arc::new(Upstreams::new(registry_client.clone()));
    let registry = telemetry::metrics_registry(SERVICE_ID);
    let state = Arc::new(GatewayState {
        upstreams: upstreams.clone(),
        http: lizards_shared::http::client(),
        metrics: metrics::Metrics::new(&registry),
        upstream_timeout: config.gateway.gateway_upstream_timeout,
    });

    let readiness: Readiness = {
        let upstreams = upstreams.clone();
        Arc::new(move || {
            let ready = upstreams.has_any();
            Box::pin(async move { if ready { Ok(()) } else { Err("no upstream instance known yet".to_string()) } })
        })
    };
    let router = Router::new()
        .fallback(proxy::handle)
        .with_state(state)
        .merge(telemetry::ops_routes(registry.clone(), readiness));
    let router = telemetry::http_layers(router, HttpMetrics::new(&registry));

    let (listener, addr) = lizards_shared::http::bind(config.common.bind_host, config.gateway.gateway_port).await?;
    tracing::info!(%addr, "gateway listening");

    let refresh = {
        let (upstreams, shutdown, every) = (upstreams.clone(), shutdown.clone(), config.gateway.gateway_refresh);
        tokio::spawn(async move { upstreams.run(every, shutdown).await })
    };
    let registration = Registration::http(SERVICE_ID, "Lizards gateway", &config.advertise_host(), addr.port());
    let registered = keep_registered(registry_client, registration, config.common.registry_heartbeat, shutdown.clone());

    let serve = async move {
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(error) = server.await {
            tracing::error!(%error, "gateway server failed");
        }
        let _ = tokio::join!(refresh, registered);
        tracing::info!("gateway stopped");
    };
    Ok(Started { addr, serve: Box::pin(serve) })
}
