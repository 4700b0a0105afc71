//! Test harnesses: a pipeline on in-process adapters with a queue watching
//! everything it publishes, and the whole service spawned on port 0 with
//! fresh state (zero2prod's `spawn_app`).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lizards_ingestion::{
    metrics::Metrics,
    pipeline::{Outcome, Pipeline},
    sources::RawRecord,
};
use lizards_shared::{
    Quote,
    broker::{Broker, ConsumeOptions, Consumer, Delivery, MemoryBroker, QUOTES_EXCHANGE, QueueSpec, declare_topology},
    config::Config,
    rawstore::{MemoryRawStore, RawDocument, RawOutcome, RawStore, RawStoreError},
    shutdown::Shutdown,
};
use prometheus::Registry;
use serde_json::json;
use tokio::task::JoinHandle;

pub use lizards_testkit::{eventually, within};

/// The source id of hand-made records.
pub const SOURCE: &str = "test";

pub const RETENTION_DAYS: u32 = 14;
pub const JUMP_PCT: f64 = 20.0;

/// The queue every test watches, bound to all quotes.
const OBSERVER: &str = "test.observer";

/// Routing key of the fence message: see [`PipelineHarness::published_before_fence`].
const FENCE_KEY: &str = "quote.FENCE";

/// A record from [`SOURCE`] observed now.
pub fn record(symbol: &str, price: f64) -> RawRecord {
    record_at(symbol, price, Utc::now())
}

/// A record from [`SOURCE`] observed at `ts`.
pub fn record_at(symbol: &str, price: f64, ts: DateTime<Utc>) -> RawRecord {
    RawRecord {
        source: SOURCE.to_string(),
        symbol: symbol.to_string(),
        price,
        ts,
        volume: Some(1200.0),
        body: json!({"symbol": symbol, "price": price, "ts": ts.to_rfc3339(), "volume": 1200}),
    }
}

/// A broker queue bound to every quote, consumed without acks.
async fn observe_quotes(broker: &dyn Broker) -> Box<dyn Consumer> {
    broker.declare_queue(&QueueSpec::durable(OBSERVER)).await.expect("observer queue is declared");
    broker.bind(OBSERVER, QUOTES_EXCHANGE, "quote.#").await.expect("observer queue is bound");
    broker.consume(OBSERVER, ConsumeOptions { prefetch: 0, no_ack: true }).await.expect("observer consumes")
}

async fn next_delivery(observer: &mut dyn Consumer) -> Delivery {
    within("a published quote", observer.next()).await.expect("the observer queue is still there")
}

/// The embedded raw store, remembering the id of every document it stored,
/// and able to fail like an unreachable MongoDB.
pub struct RecordingRawStore {
    inner: MemoryRawStore,
    ids: Mutex<Vec<String>>,
    unavailable: AtomicBool,
}

impl RecordingRawStore {
    pub fn new() -> RecordingRawStore {
        RecordingRawStore {
            inner: MemoryRawStore::new(10_000, Duration::from_secs(86_400)),
            ids: Mutex::new(Vec::new()),
            unavailable: AtomicBool::new(false),
        }
    }

    /// Every insert fails from now on.
    pub fn go_down(&self) {
        self.unavailable.store(true, Ordering::SeqCst);
    }

    /// The id of the latest stored document.
    pub fn last_id(&self) -> String {
        self.ids.lock().expect("ids lock").last().cloned().expect("a document was stored")
    }

    pub fn stored(&self) -> usize {
        self.ids.lock().expect("ids lock").len()
    }

    pub async fn document(&self, id: &str) -> (RawDocument, Option<RawOutcome>) {
        self.inner.get(id).await.expect("get answers").expect("the document is kept")
    }

    pub async fn outcome(&self, id: &str) -> Option<RawOutcome> {
        self.document(id).await.1
    }
}

#[async_trait]
impl RawStore for RecordingRawStore {
    async fn insert(&self, doc: RawDocument) -> Result<String, RawStoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(RawStoreError::Unavailable("test store is down".to_string()));
        }
        let id = self.inner.insert(doc).await?;
        self.ids.lock().expect("ids lock").push(id.clone());
        Ok(id)
    }

    async fn set_outcome(&self, id: &str, outcome: RawOutcome) -> Result<(), RawStoreError> {
        self.inner.set_outcome(id, outcome).await
    }

    async fn get(&self, id: &str) -> Result<Option<(RawDocument, Option<RawOutcome>)>, RawStoreError> {
        self.inner.get(id).await
    }

    async fn ping(&self) -> Result<(), RawStoreError> {
        self.inner.ping().await
    }
}

/// A pipeline on the embedded broker and raw store, with its own metrics.
pub struct PipelineHarness {
    pub pipeline: Pipeline,
    pub raw: Arc<RecordingRawStore>,
    pub registry: Registry,
    broker: Arc<MemoryBroker>,
    observer: Box<dyn Consumer>,
}

pub async fn pipeline_harness() -> PipelineHarness {
    let broker = Arc::new(MemoryBroker::new());
    declare_topology(broker.as_ref()).await.expect("topology is declared");
    let observer = observe_quotes(broker.as_ref()).await;
    let raw = Arc::new(RecordingRawStore::new());
    let registry = Registry::new();
    let metrics = Metrics::new(&registry);
    let pipeline = Pipeline::new(broker.clone(), raw.clone(), metrics, RETENTION_DAYS, JUMP_PCT);
    PipelineHarness { pipeline, raw, registry, broker, observer }
}

impl PipelineHarness {
    pub async fn process(&self, record: RawRecord) -> Outcome {
        self.pipeline.process(record).await.expect("the broker confirms")
    }

    /// Processes a record that must be published; its ingest id and flags.
    pub async fn publish(&self, record: RawRecord) -> (String, Vec<String>) {
        match self.process(record).await {
            Outcome::Published { ingest_id, flags } => (ingest_id, flags),
            other => panic!("expected the record to be published, got {other:?}"),
        }
    }

    pub async fn next_published(&mut self) -> Delivery {
        next_delivery(self.observer.as_mut()).await
    }

    /// The quotes published and not yet read. A fence message published
    /// after them marks the end: `publish` returns once the broker routed a
    /// message, so nothing the pipeline published can come after it.
    pub async fn published_before_fence(&mut self) -> Vec<Quote> {
        let fence = Bytes::from_static(b"fence");
        self.broker.publish(QUOTES_EXCHANGE, FENCE_KEY, fence).await.expect("fence is published");
        let mut quotes = Vec::new();
        loop {
            let delivery = self.next_published().await;
            if delivery.routing_key == FENCE_KEY {
                return quotes;
            }
            quotes.push(Quote::decode(&delivery.body).expect("a valid quote body"));
        }
    }

    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        counter(&self.registry, name, labels)
    }
}

fn has_labels(metric: &prometheus::proto::Metric, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(name, value)| metric.get_label().iter().any(|l| l.name() == *name && l.value() == *value))
}

/// The value of counter `name` summed over the series carrying `labels`.
pub fn counter(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    let families = registry.gather();
    let series = families.iter().filter(|f| f.name() == name).flat_map(|f| f.get_metric());
    series.filter(|m| has_labels(m, labels)).map(|m| m.get_counter().get_value() as u64).sum()
}

/// How many observations histogram `name` holds in the series with `labels`.
pub fn histogram_count(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    let families = registry.gather();
    let series = families.iter().filter(|f| f.name() == name).flat_map(|f| f.get_metric());
    series.filter(|m| has_labels(m, labels)).map(|m| m.get_histogram().get_sample_count()).sum()
}

/// Where no registry listens: registration keeps retrying in the background.
const UNUSED_REGISTRY: &str = "http://127.0.0.1:9";

/// Total updates per second of the synthetic source in service tests.
pub const SYNTHETIC_RATE: f64 = 200.0;

/// The whole ingestion service on port 0, on the embedded broker.
pub struct TestIngestion {
    pub base: String,
    pub http: reqwest::Client,
    pub broker: Arc<MemoryBroker>,
    shutdown: Shutdown,
    server: Option<JoinHandle<()>>,
    _data: tempfile::TempDir,
}

pub async fn spawn_ingestion() -> TestIngestion {
    let data = tempfile::tempdir().expect("temporary data dir");
    let mut config = Config::for_tests(data.path());
    config.ingestion.synthetic_rate = SYNTHETIC_RATE;
    config.common.registry_url = UNUSED_REGISTRY.to_string();
    let broker = Arc::new(MemoryBroker::new());
    let raw = Arc::new(MemoryRawStore::new(config.ingestion.raw_cap, Duration::from_secs(86_400)));
    let shutdown = Shutdown::new();
    let started =
        lizards_ingestion::build(config, broker.clone(), raw, shutdown.clone()).await.expect("ingestion starts");
    let (addr, server) = started.spawn();
    TestIngestion {
        base: format!("http://{addr}"),
        http: lizards_shared::http::client(),
        broker,
        shutdown,
        server: Some(server),
        _data: data,
    }
}

impl TestIngestion {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET reaches the ingestion service")
    }

    /// A queue bound to every quote the service publishes from now on.
    pub async fn observe_quotes(&self) -> Box<dyn Consumer> {
        observe_quotes(self.broker.as_ref()).await
    }

    /// The next quote on `observer`, decoded, with its routing key.
    pub async fn next_quote(observer: &mut dyn Consumer) -> (String, Quote) {
        let delivery = next_delivery(observer).await;
        let quote = Quote::decode(&delivery.body).expect("a valid quote body");
        (delivery.routing_key, quote)
    }

    /// Cancels the shutdown token and waits for the service to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            within("the service to stop", server).await.expect("the service task does not panic");
        }
    }
}

impl Drop for TestIngestion {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
