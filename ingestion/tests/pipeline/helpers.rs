//! Test harnesses: a pipeline on in-process adapters with a queue watching
//! everything it publishes, and the whole service spawned on port 0 with
//! fresh state (zero2prod's `spawn_app`).

use std::{
    net::SocketAddr,
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
    grpc::proto::{ProcessingResponse, RawData, data_processor_client::DataProcessorClient},
    metrics::Metrics,
    pipeline::{Outcome, Pipeline},
    sources::RawRecord,
};
use lizards_shared::service::Serving;
use lizards_shared::{
    Quote,
    broker::{
        Broker, BrokerError, ConsumeOptions, Consumer, Delivery, ExchangeKind, MemoryBroker, QUOTES_EXCHANGE,
        QueueSpec, declare_topology,
    },
    cache::MemoryCache,
    config::Config,
    quote::decode_message,
    rawstore::{MemoryRawStore, RawDocument, RawOutcome, RawStore, RawStoreError},
    shutdown::Shutdown,
};
use prometheus::Registry;
use serde_json::json;

pub use lizards_testkit::{eventually, within};

/// The source id of hand-made records.
pub const SOURCE: &str = "test";
/// The INGEST_TOKEN of the spawned services.
pub const INGEST_TOKEN: &str = "ingest-token-of-the-pipeline-tests-0123456789";

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

    async fn reclaim(&self, doc: &RawDocument, reason: &str) -> Result<Option<String>, RawStoreError> {
        self.inner.reclaim(doc, reason).await
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
    metrics.prime_source(SOURCE);
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
        published_before_fence(self.broker.as_ref(), self.observer.as_mut()).await
    }

    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        counter(&self.registry, name, labels)
    }
}

/// The quotes on `observer` not yet read, up to a fence message published now.
async fn published_before_fence(broker: &MemoryBroker, observer: &mut dyn Consumer) -> Vec<Quote> {
    let fence = Bytes::from_static(b"fence");
    broker.publish(QUOTES_EXCHANGE, FENCE_KEY, fence).await.expect("fence is published");
    let mut quotes = Vec::new();
    loop {
        let delivery = next_delivery(observer).await;
        if delivery.routing_key == FENCE_KEY {
            return quotes;
        }
        quotes.extend(decode_message(&delivery.body).expect("a valid message body").quotes);
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

/// The embedded broker, able to stop confirming publishes like a RabbitMQ
/// that refuses them (e.g. on a disk alarm).
pub struct RefusingBroker {
    inner: Arc<MemoryBroker>,
    refusing: AtomicBool,
}

impl RefusingBroker {
    pub fn new(inner: Arc<MemoryBroker>) -> RefusingBroker {
        RefusingBroker { inner, refusing: AtomicBool::new(false) }
    }
}

#[async_trait]
impl Broker for RefusingBroker {
    async fn declare_exchange(&self, name: &str, kind: ExchangeKind) -> Result<(), BrokerError> {
        self.inner.declare_exchange(name, kind).await
    }
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<(), BrokerError> {
        self.inner.declare_queue(spec).await
    }
    async fn bind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BrokerError> {
        self.inner.bind(queue, exchange, pattern).await
    }
    async fn unbind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BrokerError> {
        self.inner.unbind(queue, exchange, pattern).await
    }
    async fn publish(&self, exchange: &str, routing_key: &str, body: Bytes) -> Result<(), BrokerError> {
        if self.refusing.load(Ordering::SeqCst) {
            return Err(BrokerError::NotConfirmed("test broker refuses publishes".to_string()));
        }
        self.inner.publish(exchange, routing_key, body).await
    }
    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Box<dyn Consumer>, BrokerError> {
        self.inner.consume(queue, options).await
    }
    async fn queue_len(&self, queue: &str) -> Result<usize, BrokerError> {
        self.inner.queue_len(queue).await
    }
    async fn ping(&self) -> Result<(), BrokerError> {
        self.inner.ping().await
    }
}

/// The whole ingestion service on port 0, on the embedded broker.
pub struct TestIngestion {
    pub base: String,
    /// The gRPC `dataprocessor.DataProcessor` address.
    pub grpc: SocketAddr,
    pub http: reqwest::Client,
    /// The broker the service publishes to (publishing here bypasses [`TestIngestion::refuse_publishes`]).
    pub broker: Arc<MemoryBroker>,
    service_broker: Arc<RefusingBroker>,
    shutdown: Shutdown,
    server: Option<Serving>,
    _data: tempfile::TempDir,
}

/// A gRPC request carrying INGEST_TOKEN.
pub fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {INGEST_TOKEN}").parse().expect("a valid metadata value");
    request.metadata_mut().insert("authorization", value);
    request
}

pub async fn spawn_ingestion() -> TestIngestion {
    spawn_with(|_| {}).await
}

/// The service without sources: only what a test sends reaches the broker.
pub async fn spawn_quiet_ingestion() -> TestIngestion {
    spawn_with(|config| config.ingestion.sources.clear()).await
}

pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> TestIngestion {
    let data = tempfile::tempdir().expect("temporary data dir");
    let mut config = Config::for_tests(data.path());
    config.ingestion.synthetic_rate = SYNTHETIC_RATE;
    config.common.registry_url = UNUSED_REGISTRY.to_string();
    config.ingestion.ingest_token = Some(INGEST_TOKEN.to_string());
    configure(&mut config);
    let broker = Arc::new(MemoryBroker::new());
    let service_broker = Arc::new(RefusingBroker::new(broker.clone()));
    let raw = Arc::new(MemoryRawStore::new(config.ingestion.raw_cap, Duration::from_secs(86_400)));
    let shutdown = Shutdown::new();
    let started = lizards_ingestion::build(
        config,
        service_broker.clone(),
        raw,
        Arc::new(MemoryCache::default()),
        shutdown.clone(),
    )
    .await
    .expect("ingestion starts");
    let grpc = started.grpc.expect("ingestion serves gRPC");
    let (addr, server) = started.spawn();
    TestIngestion {
        base: format!("http://{addr}"),
        grpc,
        http: lizards_shared::http::client(),
        broker,
        service_broker,
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

    /// The quotes on `observer` not yet read, up to a fence published now:
    /// everything the service published before this call.
    pub async fn published_before_fence(&self, observer: &mut dyn Consumer) -> Vec<Quote> {
        published_before_fence(&self.broker, observer).await
    }

    /// From now on the broker confirms none of the service's publishes.
    pub fn refuse_publishes(&self) {
        self.service_broker.refusing.store(true, Ordering::SeqCst);
    }

    /// A client of the gRPC `dataprocessor.DataProcessor`.
    pub async fn grpc_client(&self) -> DataProcessorClient<tonic::transport::Channel> {
        let client = DataProcessorClient::connect(format!("http://{}", self.grpc));
        within("the gRPC connection", client).await.expect("the gRPC service accepts connections")
    }

    /// `ProcessData` with `content`, over a new gRPC connection.
    pub async fn process_data(&self, content: &str) -> ProcessingResponse {
        let mut client = self.grpc_client().await;
        let call = client.process_data(authorized(RawData { content: content.to_string() }));
        within("ProcessData", call).await.expect("ProcessData answers").into_inner()
    }

    /// `POST /ingest` with `body` as JSON.
    pub async fn post_ingest(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        let request =
            self.http.post(self.url("/ingest")).header("content-type", "application/json").bearer_auth(INGEST_TOKEN);
        let request = request.body(body);
        request.send().await.expect("POST /ingest reaches the ingestion service")
    }

    /// The quotes of the next message on `observer`, with its routing key.
    pub async fn next_quotes(observer: &mut dyn Consumer) -> (String, Vec<Quote>) {
        let delivery = next_delivery(observer).await;
        let decoded = decode_message(&delivery.body).expect("a valid message body");
        assert!(decoded.poison.is_empty() && !decoded.quotes.is_empty(), "only good quotes are published");
        (delivery.routing_key, decoded.quotes)
    }

    /// Cancels the shutdown token and waits for the service to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            within("the service to stop", server)
                .await
                .expect("the service task does not panic")
                .expect("no worker failed");
        }
    }
}

impl Drop for TestIngestion {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
