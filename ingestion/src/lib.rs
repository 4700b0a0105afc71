//! Ingestion service: runs the enabled sources, pushes every record through
//! the store → validate → publish pipeline and serves `GET /sources`; quotes
//! sent by clients come in through `POST /ingest` and the gRPC
//! `dataprocessor.DataProcessor` (the same pipeline, see `ingest.rs`).

pub mod api;
pub mod breaker;
pub mod demand;
pub mod grpc;
pub mod ingest;
pub mod lookup;
pub mod metrics;
pub mod pipeline;
pub mod poller;
pub mod publisher;
pub mod sources;
pub mod validate;

use std::sync::Arc;

use futures::StreamExt;
use lizards_shared::{
    Symbol,
    admin::{AdminCheck, IngestAccess},
    broker::{Broker, BrokerError, declare_topology},
    cache::Cache,
    config::Config,
    discovery::{Registration, RegistryClient, keep_registered},
    jwt::Jwt,
    openapi,
    rawstore::RawStore,
    service::Started,
    shutdown::Shutdown,
    supervisor::{Policy, Supervisor},
    telemetry::{self, HttpMetrics, Readiness},
};
use tokio::sync::mpsc;

use crate::{
    demand::Demand,
    lookup::Finder,
    pipeline::Pipeline,
    sources::{RawRecord, enabled},
};

pub const SERVICE_ID: &str = "ingestion";

/// Records buffered between sources and the pipeline.
const RECORD_BUFFER: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum IngestionError {
    #[error(transparent)]
    Bind(#[from] lizards_shared::http::BindError),
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Sources(#[from] sources::enabled::SourcesError),
    #[error("cannot read the JWT secret: {0}")]
    JwtSecret(std::io::Error),
    #[error("ALWAYS_ON_SYMBOLS: '{text}': {error}")]
    AlwaysOn { text: String, error: lizards_shared::SymbolError },
}

pub async fn build(
    config: Config,
    broker: Arc<dyn Broker>,
    raw: Arc<dyn RawStore>,
    cache: Arc<dyn Cache>,
    shutdown: Shutdown,
) -> Result<Started, IngestionError> {
    declare_topology(broker.as_ref()).await?;

    let registry = telemetry::metrics_registry(SERVICE_ID);
    telemetry::register_cache(&registry, cache.as_ref());
    let metrics = metrics::Metrics::new(&registry);
    let pipeline = Arc::new(
        Pipeline::new(
            broker.clone(),
            raw.clone(),
            metrics.clone(),
            config.common.retention_days,
            config.ingestion.jump_flag_pct,
        )
        .with_max_symbols(config.ingestion.ingest_max_symbols),
    );
    let ingest = ingest::Ingest::new(pipeline.clone(), metrics.clone());
    let http_metrics = HttpMetrics::new(&registry, &metrics.ops);

    let always_on = config
        .ingestion
        .always_on_symbols
        .iter()
        .map(|text| Symbol::parse(text).map_err(|error| IngestionError::AlwaysOn { text: text.clone(), error }));
    let always_on = always_on.collect::<Result<Vec<_>, _>>()?;
    let demand = Arc::new(
        Demand::new(always_on, config.ingestion.demand_grace)
            .with_gauges(metrics.demand_symbols.clone(), metrics.demand_instances.clone()),
    );
    let demand_consumer = demand::subscribe(broker.as_ref()).await?;
    let shared = poller::Shared {
        cache,
        demand: demand.clone(),
        pipeline: pipeline.clone(),
        metrics,
        owner: format!("ingestion-{}", uuid::Uuid::new_v4()),
    };
    let sources = Arc::new(enabled::enabled(&config, &shared)?);
    shared.metrics.prime_source(ingest::DEFAULT_SOURCE);
    for source in sources.iter() {
        shared.metrics.prime_source(source.id());
    }
    let (tx, rx) = mpsc::channel(RECORD_BUFFER);
    let finder = Finder {
        sources: sources.clone(),
        demand: demand.clone(),
        records: tx.clone(),
        timeout: config.common.symbol_lookup_timeout,
    };

    let supervisor = Supervisor::new(SERVICE_ID, &registry, shutdown.clone());
    let workers = supervisor.clone();
    let readiness: Readiness = Arc::new(move || {
        let (broker, raw, workers) = (broker.clone(), raw.clone(), workers.check());
        Box::pin(async move {
            workers?;
            broker.ping().await.map_err(|e| e.to_string())?;
            raw.ping().await.map_err(|e| e.to_string())
        })
    });
    let client = RegistryClient::new(&config.common.registry_url, config.common.registry_token.clone());
    let jwt = Jwt::from_config(&config.common).map_err(IngestionError::JwtSecret)?;
    let access = IngestAccess::new(config.ingestion.ingest_token.clone(), AdminCheck::new(jwt, client.clone()));
    let router = api::routes(api::ApiState {
        sources: sources.clone(),
        disabled: Arc::new(enabled::disabled(&config)),
        finder,
        ingest: ingest.clone(),
        access: access.clone(),
    })
    .merge(telemetry::ops_routes(registry.clone(), readiness))
    .merge(openapi::routes(&openapi::document(include_str!("../openapi.json"))));
    let router = telemetry::http_layers(router, http_metrics);

    let (listener, addr) = lizards_shared::http::bind(
        "ingestion's HTTP listener",
        config.common.bind_host,
        config.ingestion.ingestion_port,
    )
    .await?;
    tracing::info!(%addr, sources = ?config.ingestion.sources, "ingestion listening");
    let (grpc_listener, grpc_addr) = lizards_shared::http::bind_tcp(
        "ingestion's gRPC listener",
        config.common.bind_host,
        config.ingestion.ingestion_grpc_port,
    )
    .await?;
    tracing::info!(addr = %grpc_addr, "ingestion gRPC listening");

    supervisor.spawn_once("demand listener", demand::listen(demand_consumer, demand.clone(), shutdown.clone()));
    for source in sources.iter() {
        let (source, tx) = (source.clone(), tx.clone());
        supervisor.spawn(format!("source {}", source.id()), Policy::Restart, move |stop| {
            let (source, tx) = (source.clone(), tx.clone());
            async move { source.run(tx, stop).await }
        });
    }
    drop(tx);
    // It ends once the sources (and the lookups holding a sender) are gone,
    // after draining what they produced.
    supervisor.spawn_once("pipeline", run_pipeline(pipeline, rx));

    let registration = Registration::http(SERVICE_ID, "Lizards ingestion", &config.advertise_host(), addr.port());
    let heartbeat = config.common.registry_heartbeat;
    supervisor.spawn("registration", Policy::Restart, move |stop| {
        keep_registered(client.clone(), registration.clone(), heartbeat, stop)
    });
    let grpc_server = grpc::serve(grpc_listener, ingest, access, shutdown.clone());
    supervisor.spawn_once("gRPC server", async move {
        grpc_server.await.map_err(|error| format!("serving gRPC on {grpc_addr}: {error}"))
    });
    let http_server = axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).into_future();
    supervisor.spawn_once("HTTP server", async move {
        http_server.await.map_err(|error| format!("serving HTTP on {addr}: {error}"))
    });

    let workers = supervisor.clone();
    let serve = async move {
        let stopped = workers.stopped().await;
        tracing::info!("ingestion stopped");
        stopped
    };
    Ok(Started { addr, grpc: Some(grpc_addr), supervisor, serve: Box::pin(serve) })
}

/// Records processed at once. A confirm from RabbitMQ waits for its disk
/// write, so awaiting them one by one would cap the rate and add that wait
/// to every later quote's latency; the hub and the stores ignore the rare
/// older quote that overtakes a newer one. It also caps the rate at this
/// many quotes per confirm wait: 256 held the broker path near 40,000
/// quotes/s with ~6 ms confirms, with most of the CPU idle.
const IN_FLIGHT: usize = 2048;

async fn run_pipeline(pipeline: Arc<Pipeline>, rx: mpsc::Receiver<RawRecord>) {
    tokio_stream_from(rx)
        .for_each_concurrent(IN_FLIGHT, |record| {
            let pipeline = pipeline.clone();
            async move {
                if let Err(error) = pipeline.process(record).await {
                    tracing::warn!(%error, "quote not published");
                }
            }
        })
        .await;
}

fn tokio_stream_from<T>(mut rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
