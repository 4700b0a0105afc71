//! Provider service: persists quotes, fans live `price_update` frames out to
//! WebSocket clients, and serves sessions and the quotes REST API.

pub mod accounts;
pub mod alerts;
pub mod body;
pub mod demand;
pub mod error;
pub mod grpc;
pub mod hub;
pub mod idempotency;
pub mod latest;
pub mod live;
pub mod lookup;
pub mod metrics;
pub mod notifier;
pub mod persist;
pub mod public_url;
pub mod rest;
pub mod retention;
pub mod session;
pub mod stats;
pub mod ws;

use std::{sync::Arc, time::Duration};

use axum::{
    Router, middleware,
    routing::{any, post},
};
use lizards_shared::{
    accounts::AccountStore,
    broker::{Broker, BrokerError, declare_topology},
    cache::Cache,
    config::Config,
    discovery::{Registration, RegistryClient, keep_registered},
    jwt::Jwt,
    openapi,
    service::Started,
    shutdown::Shutdown,
    store::QuoteStore,
    supervisor::{Policy, Supervisor},
    telemetry::{self, HttpMetrics, Readiness},
};

use crate::{
    accounts::Accounts,
    alerts::{Interest, evaluator::Evaluator},
    hub::Hub,
    idempotency::Idempotency,
    latest::LatestCache,
    lookup::{Resolver, Snapshots},
    persist::Persister,
    session::{SessionApi, Sessions},
    ws::{ConnContext, connection::WsSettings},
};

pub const SERVICE_ID: &str = "provider";

/// Longest shutdown waits for WebSockets to send their close frames.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The backends a provider runs on (embedded or real, chosen by the caller).
pub struct Backends {
    pub broker: Arc<dyn Broker>,
    pub store: Arc<dyn QuoteStore>,
    /// Users, rules, alerts and portfolios (the same database as `store`).
    pub accounts: Arc<dyn AccountStore>,
    pub cache: Arc<dyn Cache>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Bind(#[from] lizards_shared::http::BindError),
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("JWT secret: {0}")]
    JwtSecret(std::io::Error),
    #[error("admin account: {0}")]
    Admin(error::ApiError),
}

fn ws_settings(config: &Config) -> WsSettings {
    let p = &config.provider;
    WsSettings {
        batch_window: Duration::from_millis(p.ws_batch_ms),
        slow_close: p.ws_slow_close,
        max_symbols: p.ws_max_symbols,
        rate: p.ws_rate,
        burst: p.ws_burst,
        max_frame: p.ws_max_frame,
        error_limit: p.ws_error_limit,
        error_window: p.ws_error_window,
        ping_interval: p.ws_ping_interval,
        idle_timeout: p.ws_idle_timeout,
    }
}

pub async fn build(config: Config, backends: Backends, shutdown: Shutdown) -> Result<Started, ProviderError> {
    let Backends { broker, store, accounts: account_store, cache } = backends;
    declare_topology(broker.as_ref()).await?;

    let registry = telemetry::metrics_registry(SERVICE_ID);
    telemetry::register_cache(&registry, cache.as_ref());
    let metrics = metrics::Metrics::new(&registry);
    let supervisor = Supervisor::new(SERVICE_ID, &registry, shutdown.clone());
    let latest = Arc::new(LatestCache::default());
    let hub = Arc::new(Hub::new(metrics.clone()));
    let registry_client = RegistryClient::new(&config.common.registry_url, config.common.registry_token.clone());
    let resolver = Arc::new(Resolver::new(
        latest.clone(),
        store.clone(),
        registry_client.clone(),
        config.common.symbol_lookup_timeout,
        metrics.clone(),
    ));
    let snapshots = Arc::new(Snapshots { latest: latest.clone(), store: store.clone(), metrics: metrics.clone() });
    let sessions = Arc::new(Sessions::new(cache.clone(), config.provider.session_ttl));
    let jwt = Jwt::from_config(&config.common).map_err(ProviderError::JwtSecret)?;
    let interest = Arc::new(Interest::default());
    let accounts = Arc::new(Accounts {
        store: account_store.clone(),
        quotes: store.clone(),
        broker: broker.clone(),
        snapshots: snapshots.clone(),
        resolver: resolver.clone(),
        jwt: jwt.clone(),
        token_ttl: config.provider.jwt_ttl,
        interest: interest.clone(),
        metrics: metrics.clone(),
        allow_private_webhooks: config.notifier.webhook_allow_private,
        rule_limits: accounts::rules::RuleLimits::from_config(&config.provider),
        cache: cache.clone(),
        login_failures: config.provider.login_failures,
    });
    let p = &config.provider;
    accounts.ensure_admin(p.admin_email.as_deref(), p.admin_password.as_deref()).await.map_err(ProviderError::Admin)?;
    let idempotency = Arc::new(Idempotency {
        cache: cache.clone(),
        jwt,
        ttl: config.provider.idempotency_ttl,
        metrics: metrics.clone(),
    });

    let live_queue = format!("provider.live.{}", uuid::Uuid::new_v4());
    let live_consumer = live::consume(broker.as_ref(), &live_queue).await?;

    let ctx = Arc::new(ConnContext {
        hub: hub.clone(),
        accounts: accounts.clone(),
        resolver,
        snapshots: snapshots.clone(),
        sessions: sessions.clone(),
        settings: ws_settings(&config),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        connections: tokio_util::task::TaskTracker::new(),
    });
    let connections = ctx.connections.clone();

    let readiness: Readiness = {
        let (broker, store, cache, workers) = (broker.clone(), store.clone(), cache.clone(), supervisor.clone());
        Arc::new(move || {
            let (broker, store, cache) = (broker.clone(), store.clone(), cache.clone());
            let workers = workers.check();
            Box::pin(async move {
                workers?;
                broker.ping().await.map_err(|e| e.to_string())?;
                store.ping().await.map_err(|e| e.to_string())?;
                cache.ping().await.map_err(|e| e.to_string())
            })
        })
    };
    let ws_routes = Router::new().route("/ws", any(ws::upgrade)).route("/", any(ws::upgrade)).with_state(ctx);
    let session_routes = Router::new().route("/session", post(session::create)).with_state(SessionApi {
        sessions,
        accounts: accounts.clone(),
        metrics: metrics.clone(),
    });
    // Every mutating endpoint honours Idempotency-Key.
    let mutating = session_routes
        .merge(accounts::rest::routes(accounts.clone()))
        .layer(middleware::from_fn_with_state(idempotency, idempotency::guard));
    let router = Router::new()
        .merge(ws_routes)
        .merge(mutating)
        .merge(rest::routes(rest::RestState { snapshots, store: store.clone() }))
        .merge(telemetry::ops_routes(registry.clone(), readiness))
        .merge(openapi::routes(&openapi::document(include_str!("../openapi.json"))));
    let router = telemetry::http_layers(router, HttpMetrics::new(&registry, &metrics.ops));

    let (listener, addr) =
        lizards_shared::http::bind("provider's HTTP listener", config.common.bind_host, config.provider.provider_port)
            .await?;
    tracing::info!(%addr, "provider listening");
    let (grpc_listener, grpc_addr) = lizards_shared::http::bind_tcp(
        "provider's gRPC listener",
        config.common.bind_host,
        config.provider.provider_grpc_port,
    )
    .await?;
    tracing::info!(addr = %grpc_addr, "provider gRPC (lizards.v1.Accounts) listening");
    let grpc_server = grpc::serve(grpc_listener, accounts.clone(), shutdown.clone());
    supervisor.spawn_once("gRPC server", async move {
        grpc_server.await.map_err(|error| format!("serving gRPC on {grpc_addr}: {error}"))
    });
    let persister = Persister {
        broker: broker.clone(),
        store: store.clone(),
        latest: latest.clone(),
        metrics: metrics.clone(),
        batch: config.provider.persist_batch,
        linger: config.provider.persist_linger,
    };
    // The persistence worker finishes its batch and acks before stopping.
    supervisor.spawn("persister", Policy::Restart, move |stop| persister.clone().run(stop));
    // The live queue is auto-delete: once its consumer is gone the queue
    // and its bindings are too, so a live feed that ends cannot be resumed.
    supervisor.spawn_once(
        "live feed",
        live::feed(live_consumer, hub.clone(), metrics.clone(), live_queue.clone(), shutdown.clone()),
    );
    supervisor.spawn("live bindings", Policy::Restart, {
        let (broker, hub, metrics) = (broker.clone(), hub.clone(), metrics.clone());
        move |stop| live::bind(broker.clone(), hub.clone(), metrics.clone(), live_queue.clone(), stop)
    });
    supervisor.spawn("demand publisher", Policy::Restart, {
        let (broker, hub, interest) = (broker.clone(), hub.clone(), interest.clone());
        let instance = format!("provider-{}", uuid::Uuid::new_v4());
        move |stop| demand::publish(broker.clone(), hub.clone(), interest.clone(), instance.clone(), stop)
    });
    supervisor.spawn("interest refresh", Policy::Restart, {
        let (interest, accounts) = (interest.clone(), account_store.clone());
        move |stop| interest.clone().refresh(accounts.clone(), stop)
    });
    let stats = stats::Stats {
        quotes: store.clone(),
        accounts: account_store.clone(),
        interest: interest.clone(),
        broker: broker.clone(),
        metrics: metrics.clone(),
    };
    supervisor.spawn("stats", Policy::Restart, move |stop| stats.clone().run(stop));
    let evaluator = Evaluator {
        broker: broker.clone(),
        accounts: accounts.clone(),
        interest,
        metrics: metrics.clone(),
        cache: cache.clone(),
        user_quota: config.provider.alert_user_quota,
    };
    supervisor.spawn("alert evaluator", Policy::Restart, move |stop| evaluator.clone().run(stop));
    let retention = retention::Retention {
        quotes: store.clone(),
        accounts: account_store.clone(),
        hub: hub.clone(),
        latest: latest.clone(),
        days: config.common.retention_days,
        interval: config.provider.retention_interval,
        metrics: metrics.clone(),
    };
    supervisor.spawn("retention", Policy::Restart, move |stop| retention.clone().run(stop));
    supervisor.spawn("alert outbox", Policy::Restart, {
        let (accounts, metrics) = (accounts.clone(), metrics.clone());
        move |stop| alerts::outbox::run(broker.clone(), accounts.clone(), metrics.clone(), stop)
    });

    let registration = Registration::http(SERVICE_ID, "Lizards provider", &config.advertise_host(), addr.port());
    let heartbeat = config.common.registry_heartbeat;
    supervisor.spawn("registration", Policy::Restart, move |stop| {
        keep_registered(registry_client.clone(), registration.clone(), heartbeat, stop)
    });

    let server_shutdown = shutdown.clone();
    supervisor.spawn_once("HTTP server", async move {
        // The peer address scopes anonymous Idempotency-Keys.
        let app = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let served = axum::serve(listener, app).with_graceful_shutdown(server_shutdown.cancelled_owned()).await;
        // Upgraded WebSockets outlive the HTTP server: wait (bounded) until
        // each has sent its 1001 close frame.
        connections.close();
        if tokio::time::timeout(CLOSE_GRACE, connections.wait()).await.is_err() {
            tracing::warn!(left = connections.len(), "connections still closing after the grace period");
        }
        served.map_err(|error| format!("serving HTTP on {addr}: {error}"))
    });

    let workers = supervisor.clone();
    let serve = async move {
        let stopped = workers.stopped().await;
        tracing::info!("provider stopped");
        stopped
    };
    Ok(Started { addr, grpc: Some(grpc_addr), supervisor, serve: Box::pin(serve) })
}
