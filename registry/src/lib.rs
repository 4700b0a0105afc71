//! The Lizards service registry (SPEC §8): services register their
//! instances, renew them by heartbeat and are evicted when they stop;
//! instances with a health-check path are probed. The gateway routes by
//! what it lists here, and Prometheus discovers its scrape targets here.

mod api;
mod auth;
pub mod error;
mod health;
mod metrics;
pub mod model;
mod slo;
pub mod store;
mod sweep;

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use lizards_shared::{
    config::Config,
    discovery::{Registration, RegistryClient, keep_registered},
    openapi,
    service::Started,
    shutdown::Shutdown,
    slo::SloStore,
    store::SqliteStore,
    telemetry::{HttpMetrics, Operations, always_ready, http_layers, metrics_registry, ops_routes},
};

pub use error::RegistryError;
pub use health::{HEALTH_INTERVAL, HEALTH_TIMEOUT};
pub use store::{MemoryRegistryStore, RedisRegistryStore, RegistryStore};

use crate::{api::AppState, auth::WriteToken, metrics::RegistryMetrics};

/// The service id the registry registers itself under.
pub const SERVICE_ID: &str = "registry";

/// Where the registry keeps its state.
pub struct Stores {
    /// Services and instances (in-process, or Redis shared by registries).
    pub registry: Arc<dyn RegistryStore>,
    /// SLOs and their evaluations (the SQL store).
    pub slos: Arc<dyn SloStore>,
}

/// Binds the registry's listener with the embedded stores; see [`build_with`].
pub async fn build(config: Config, shutdown: Shutdown) -> Result<Started, RegistryError> {
    build_with_store(config, shutdown, Arc::new(MemoryRegistryStore::new())).await
}

/// [`build_with`] `store`, with SLOs in SQLite under `DATA_DIR`.
pub async fn build_with_store(
    config: Config,
    shutdown: Shutdown,
    store: Arc<dyn RegistryStore>,
) -> Result<Started, RegistryError> {
    let path = config.common.data_dir.join("lizards.db");
    let slos = SqliteStore::open(&path).await.map_err(|source| RegistryError::SloStore { path, source })?;
    build_with(config, shutdown, Stores { registry: store, slos: Arc::new(slos) }).await
}

/// Binds `bind_host:registry_port` (port 0 picks a free one) and returns the
/// bound address with the future that serves until `shutdown`. That future
/// also runs the TTL sweeper, the health checker and the SLO manager, and
/// keeps the registry registered in itself like any other service.
pub async fn build_with(config: Config, shutdown: Shutdown, stores: Stores) -> Result<Started, RegistryError> {
    let Stores { registry: store, slos } = stores;
    let (listener, addr) =
        lizards_shared::http::bind("registry's listener", config.common.bind_host, config.registry.registry_port)
            .await?;
    tracing::info!(%addr, "registry listening");

    let prometheus = metrics_registry(SERVICE_ID);
    let metrics = RegistryMetrics::new(&prometheus);
    let slo_metrics = slo::SloMetrics::new(&prometheus);
    let http_metrics = HttpMetrics::new(&prometheus, &Operations::new(&prometheus, &[], &["store"]));
    let token = WriteToken::new(config.common.registry_token.clone());
    tracing::info!(mode = token.mode(), "registry write guard");
    if config.common.registry_token.is_none() && !config.common.bind_host.is_loopback() {
        tracing::warn!(
            %addr,
            "the registry listens beyond loopback without REGISTRY_TOKEN: services on other hosts cannot register"
        );
    }
    let state = AppState { store: store.clone(), default_ttl: config.registry.registry_ttl, token: token.clone() };
    let routes = api::router(state)
        .merge(slo::router(slo::SloState { store: slos.clone(), token }))
        .merge(ops_routes(prometheus, always_ready()))
        .merge(openapi::routes(&openapi::document(include_str!("../openapi.json"))));
    let app = http_layers(routes, http_metrics);
    let background = Background { config, addr, store, slos, metrics, slo_metrics };
    let serve = serve(listener, app, background, shutdown);
    Ok(Started { addr, grpc: None, serve: Box::pin(serve) })
}

/// What runs next to the HTTP server.
struct Background {
    config: Config,
    addr: SocketAddr,
    store: Arc<dyn RegistryStore>,
    slos: Arc<dyn SloStore>,
    metrics: RegistryMetrics,
    slo_metrics: slo::SloMetrics,
}

async fn serve(listener: lizards_shared::http::Listener, app: Router, background: Background, shutdown: Shutdown) {
    // A child token also stops the tasks if the server ends on its own,
    // without shutting down the rest of the process.
    let tasks = shutdown.child_token();
    let sweeper = tokio::spawn(sweep::run(
        background.store.clone(),
        background.config.registry.registry_sweep,
        background.metrics,
        tasks.clone(),
    ));
    let source = slo::Source::new(background.config.registry.prometheus_url.as_deref(), background.store.clone());
    let slo_manager = tokio::spawn(slo::run(
        background.slos,
        source,
        background.config.registry.slo_interval,
        background.slo_metrics,
        tasks.clone(),
    ));
    let checker = tokio::spawn(health::run(background.store, tasks.clone()));
    let registration = register_self(&background.config, background.addr, tasks.clone());

    let stop_tasks = tasks.clone();
    let signal = async move {
        tasks.cancelled().await;
        // Deregistering goes through our own listener, so the server only
        // stops once that request has been answered.
        let _ = registration.await;
    };
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(signal).await {
        tracing::error!(%error, "registry server failed");
    }
    stop_tasks.cancel();
    let _ = tokio::join!(sweeper, checker, slo_manager);
    tracing::info!("registry stopped");
}

/// Registers the registry in itself, exactly as every other service does.
fn register_self(config: &Config, addr: SocketAddr, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
    let client = RegistryClient::new(
        &format!("http://{}", lizards_shared::http::dialable(addr)),
        config.common.registry_token.clone(),
    );
    let registration = Registration::http(SERVICE_ID, "Lizards registry", &config.advertise_host(), addr.port());
    keep_registered(client, registration, config.common.registry_heartbeat, shutdown)
}
