//! Gateway: the edge of Lizards. Verifies tokens, rate-limits and caches
//! (shared through Redis when set), routes by path prefix to instances
//! found in the registry (REST streamed, WebSockets bridged) and serves the
//! web UI.

pub mod cache;
pub mod client;
pub mod guard;
pub mod identity;
pub mod metrics;
mod openapi;
pub mod proxy;
pub mod ratelimit;
pub mod routes;
pub mod ui;
pub mod upstream;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    http::{HeaderName, HeaderValue, Method},
};
use lizards_shared::{
    admin::{AdminCheck, IngestAccess},
    cache::Cache,
    config::{Config, HumanDuration, PathRules},
    discovery::{Registration, RegistryClient, keep_registered},
    jwt::Jwt,
    service::Started,
    shutdown::Shutdown,
    supervisor::{Policy, Supervisor},
    telemetry::{self, HttpMetrics, Readiness},
};

use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{cache::ResponseCache, ratelimit::RateLimiter, upstream::Upstreams};

pub const SERVICE_ID: &str = "gateway";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Bind(#[from] lizards_shared::http::BindError),
    #[error("cannot read the JWT secret: {0}")]
    JwtSecret(std::io::Error),
    #[error("invalid CORS origin '{0}'")]
    CorsOrigin(String),
}

pub struct GatewayState {
    pub upstreams: Arc<Upstreams>,
    pub http: proxy::HttpClient,
    pub metrics: metrics::Metrics,
    pub jwt: Jwt,
    pub limiter: Option<RateLimiter>,
    pub cache: Option<ResponseCache>,
    pub openapi: openapi::Merger,
    pub guard: guard::Guard,
    /// TRUSTED_PROXIES: whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    upstream_timeout: Duration,
    route_timeouts: PathRules<HumanDuration>,
}

impl GatewayState {
    /// Upstream timeout of the route serving `path`.
    pub fn timeout(&self, path: &str) -> Duration {
        self.route_timeouts.lookup(path).map_or(self.upstream_timeout, |t| t.0)
    }
}

/// CORS for browsers on other origins: the API's methods and headers, and
/// the response fields a client needs to read (limits, cache, request id).
fn cors(origins: &[String]) -> Result<CorsLayer, GatewayError> {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).map_err(|_| GatewayError::CorsOrigin(o.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(list)
    };
    let exposed = ["ratelimit", "ratelimit-policy", "retry-after", "x-cache", "age", "x-request-id"];
    let allowed = ["authorization", "content-type", "cache-control", "idempotency-key", "x-request-id"];
    Ok(CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers(allowed.map(HeaderName::from_static))
        .expose_headers(exposed.map(HeaderName::from_static))
        .max_age(Duration::from_secs(600)))
}

/// Binds the gateway. `store` keeps rate-limit counts and cached responses
/// (Redis, shared by every gateway, or in-process).
pub async fn build(config: Config, store: Arc<dyn Cache>, shutdown: Shutdown) -> Result<Started, GatewayError> {
    let registry_client = RegistryClient::new(&config.common.registry_url, config.common.registry_token.clone());
    let registry = telemetry::metrics_registry(SERVICE_ID);
    telemetry::register_cache(&registry, store.as_ref());
    let metrics = metrics::Metrics::new(&registry);
    let upstreams = Arc::new(Upstreams::new(
        registry_client.clone(),
        config.gateway.gateway_balancer,
        metrics.upstream_instances.clone(),
    ));
    let supervisor = Supervisor::new(SERVICE_ID, &registry, shutdown.clone());
    let http_metrics = HttpMetrics::new(&registry, &metrics.ops);
    let jwt = Jwt::from_config(&config.common).map_err(GatewayError::JwtSecret)?;
    let admins = AdminCheck::new(jwt.clone(), registry_client.clone());
    let guard = guard::Guard {
        ingest: IngestAccess::new(config.ingestion.ingest_token.clone(), admins.clone()),
        admins,
        registry_token: config.common.registry_token.clone().filter(|t| !t.is_empty()),
    };
    let state = Arc::new(GatewayState {
        upstreams: upstreams.clone(),
        http: proxy::http_client(),
        jwt,
        guard,
        trusted_proxies: config.gateway.trusted_proxies.clone(),
        limiter: RateLimiter::new(&config.gateway, store.clone(), metrics.clone()),
        cache: ResponseCache::new(&config.gateway, store, metrics.clone()),
        metrics,
        openapi: openapi::Merger::new(),
        upstream_timeout: config.gateway.gateway_upstream_timeout,
        route_timeouts: config.gateway.gateway_route_timeouts.clone(),
    });

    let readiness: Readiness = {
        let (upstreams, workers) = (upstreams.clone(), supervisor.clone());
        Arc::new(move || {
            let ready = workers.check().and_then(|()| match upstreams.has_any() {
                true => Ok(()),
                false => Err("no upstream instance known yet".to_string()),
            });
            Box::pin(async move { ready })
        })
    };
    let router = Router::new()
        .route("/openapi.json", axum::routing::get(openapi::merged))
        .fallback(proxy::handle)
        .with_state(state)
        .merge(telemetry::ops_routes(registry.clone(), readiness));
    let router = telemetry::http_layers(router.layer(cors(&config.gateway.cors_origins)?), http_metrics);

    let (listener, addr) =
        lizards_shared::http::bind("gateway's listener", config.common.bind_host, config.gateway.gateway_port).await?;
    tracing::info!(%addr, "gateway listening");

    let every = config.gateway.gateway_refresh;
    supervisor.spawn("upstream refresh", Policy::Restart, {
        let upstreams = upstreams.clone();
        move |stop| {
            let upstreams = upstreams.clone();
            async move { upstreams.run(every, stop).await }
        }
    });
    let registration = Registration::http(SERVICE_ID, "Lizards gateway", &config.advertise_host(), addr.port());
    let heartbeat = config.common.registry_heartbeat;
    supervisor.spawn("registration", Policy::Restart, move |stop| {
        keep_registered(registry_client.clone(), registration.clone(), heartbeat, stop)
    });
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let http_server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).into_future();
    supervisor.spawn_once("HTTP server", async move {
        http_server.await.map_err(|error| format!("serving HTTP on {addr}: {error}"))
    });

    let workers = supervisor.clone();
    let serve = async move {
        let stopped = workers.stopped().await;
        tracing::info!("gateway stopped");
        stopped
    };
    Ok(Started { addr, grpc: None, supervisor, serve: Box::pin(serve) })
}
