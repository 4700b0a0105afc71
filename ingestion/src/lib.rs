//! Ingestion service: runs the enabled sources, pushes every record through
//! the store → validate → publish pipeline and serves `GET /sources`.

pub mod api;
pub mod breaker;
pub mod metrics;
pub mod pipeline;
pub mod sources;
pub mod validate;

use std::sync::Arc;

use futures::StreamExt;
use lizards_shared::{
    broker::{Broker, BrokerError, declare_topology},
    config::Config,
    discovery::{Registration, RegistryClient, keep_registered},
    rawstore::RawStore,
    service::Started,
    shutdown::Shutdown,
    telemetry::{self, HttpMetrics, Readiness},
};
use tokio::sync::mpsc;

use crate::{
    pipeline::Pipeline,
    sources::{RawRecord, Source, synthetic::Synthetic},
};

pub const SERVICE_ID: &str = "ingestion";

/// Records buffered between sources and the pipeline.
const RECORD_BUFFER: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum IngestionError {
    #[error("cannot bind: {0}")]
    Bind(#[from] std::io::Error),
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("unknown source '{0}' (known: synthetic)")]
    UnknownSource(String),
}

fn sources(config: &Config) -> Result<Vec<Arc<dyn Source>>, IngestionError> {
    let ing = &config.ingestion;
    ing.sources
        .iter()
        .map(|name| match name.trim() {
            sources::synthetic::ID => {
                Ok(Arc::new(Synthetic::new(ing.synthetic_rate, ing.synthetic_seed, &ing.synthetic_symbols))
                    as Arc<dyn Source>)
            }
            other => Err(IngestionError::UnknownSource(other.to_string())),
        })
        .collect()
}

pub async fn build(
    config: Config,
    broker: Arc<dyn Broker>,
    raw: Arc<dyn RawStore>,
    shutdown: Shutdown,
) -> Result<Started, IngestionError> {
    let sources = Arc::new(sources(&config)?);
    declare_topology(broker.as_ref()).await?;

    let registry = telemetry::metrics_registry(SERVICE_ID);
    let metrics = metrics::Metrics::new(&registry);
    let pipeline = Arc::new(Pipeline::new(
        broker.clone(),
        raw.clone(),
        metrics,
        config.common.retention_days,
        config.ingestion.jump_flag_pct,
    ));

    let readiness: Readiness = Arc::new(move || {
        let (broker, raw) = (broker.clone(), raw.clone());
        Box::pin(async move {
            broker.ping().await.map_err(|e| e.to_string())?;
            raw.ping().await.map_err(|e| e.to_string())
        })
    });
    let router = api::routes(api::ApiState { sources: sources.clone() })
        .merge(telemetry::ops_routes(registry.clone(), readiness));
    let router = telemetry::http_layers(router, HttpMetrics::new(&registry));

    let (listener, addr) = lizards_shared::http::bind(config.common.bind_host, config.ingestion.ingestion_port).await?;
    tracing::info!(%addr, sources = ?config.ingestion.sources, "ingestion listening");

    let (tx, rx) = mpsc::channel(RECORD_BUFFER);
    let mut tasks = Vec::new();
    for source in sources.iter() {
        let (source, tx, shutdown) = (source.clone(), tx.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move { source.run(tx, shutdown).await }));
    }
    drop(tx);
    let pipeline_task = tokio::spawn(run_pipeline(pipeline, rx));

    let client = RegistryClient::new(&config.common.registry_url, config.common.registry_token.clone());
    let registration = Registration::http(SERVICE_ID, "Lizards ingestion", &config.advertise_host(), addr.port());
    let registered = keep_registered(client, registration, config.common.registry_heartbeat, shutdown.clone());

    let serve = async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(error) = server.await {
            tracing::error!(%error, "ingestion server failed");
        }
        for task in tasks {
            let _ = task.await;
        }
        // Sources are stopped: the pipeline drains what they produced.
        let _ = pipeline_task.await;
        let _ = registered.await;
        tracing::info!("ingestion stopped");
    };
    Ok(Started { addr, serve: Box::pin(serve) })
}

/// Records processed at once. A confirm from RabbitMQ waits for its disk
/// write, so awaiting them one by one would cap the rate and add that wait
/// to every later quote's latency; the hub and the stores ignore the rare
/// older quote that overtakes a newer one.
const IN_FLIGHT: usize = 256;

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
