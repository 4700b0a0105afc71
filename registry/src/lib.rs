//! The Lizards service registry: services register their
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

use lizards_shared::{
    config::Config,
    discovery::{Registration, RegistryClient, keep_registered},
    openapi,
    service::Started,
    shutdown::Shutdown,
    slo::SloStore,
    store::SqliteStore,
    supervisor::{Policy, Supervisor},
    telemetry::{HttpMetrics, Operations, Readiness, http_layers, metrics_registry, ops_routes},
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
    lizards_shared::http::install_crypto();
    let Stores { registry: store, slos } = stores;
    let (listener, addr) =
        lizards_shared::http::bind("registry's listener", config.common.bind_host, config.registry.registry_port)
            .await?;
    tracing::info!(%addr, "registry listening");

    let prometheus = metrics_registry(SERVICE_ID);
    let supervisor = Supervisor::new(SERVICE_ID, &prometheus, shutdown.clone());
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
        .merge(ops_routes(prometheus, workers_ready(supervisor.clone())))
        .merge(openapi::routes(&openapi::document(include_str!("../openapi.json"))));
    let app = http_layers(routes, http_metrics).into_make_service_with_connect_info::<SocketAddr>();

    let every = config.registry.registry_sweep;
    supervisor.spawn("sweeper", Policy::Restart, {
        let store = store.clone();
        move |stop| sweep::run(store.clone(), every, metrics.clone(), stop)
    });
    let (source, every) =
        (slo::Source::new(config.registry.prometheus_url.as_deref(), store.clone()), config.registry.slo_interval);
    supervisor.spawn("SLO manager", Policy::Restart, move |stop| {
        slo::run(slos.clone(), source.clone(), every, slo_metrics.clone(), stop)
    });
    supervisor.spawn("health checker", Policy::Restart, move |stop| health::run(store.clone(), stop));
    // Deregistering goes through our own listener, so the server stops
    // only once that request has been answered: the registration loop,
    // which deregisters at shutdown and then returns, is its signal.
    let registered = register_self(&config, addr, shutdown);
    supervisor.spawn_once("HTTP server", async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(registered).await;
        served.map_err(|error| format!("serving HTTP on {addr}: {error}"))
    });

    let workers = supervisor.clone();
    let serve = async move {
        let stopped = workers.stopped().await;
        tracing::info!("registry stopped");
        stopped
    };
    Ok(Started { addr, grpc: None, supervisor, serve: Box::pin(serve) })
}

/// Ready while every worker runs (the registry has no other dependency it
/// cannot serve without).
fn workers_ready(workers: Supervisor) -> Readiness {
    Arc::new(move || {
        let ready = workers.check();
        Box::pin(async move { ready })
    })
}

/// Registers the registry in itself, exactly as every other service does.
fn register_self(config: &Config, addr: SocketAddr, shutdown: Shutdown) -> impl Future<Output = ()> + use<> {
    let client = RegistryClient::new(
        &format!("http://{}", lizards_shared::http::dialable(addr)),
        config.common.registry_token.clone(),
    );
    let registration = Registration::http(SERVICE_ID, "Lizards registry", &config.advertise_host(), addr.port());
    keep_registered(client, registration, config.common.registry_heartbeat, shutdown)
}
