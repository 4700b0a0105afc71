//! `Pipeline::process`: store raw → validate → publish, on the embedded
//! broker and raw store.

use std::sync::Arc;

use chrono::{Duration, SubsecRound, Timelike, Utc};
use lizards_ingestion::{
    metrics::Metrics,
    pipeline::{Outcome, Pipeline, PipelineError},
    sources::RawRecord,
    validate::Reject,
};
use lizards_shared::{
    Symbol,
    broker::{MemoryBroker, declare_topology},
    quote::{decode_message, encode_batch, shard, shard_routing_key},
    rawstore::RawOutcome,
};
use prometheus::Registry;
use serde_json::{Value, json};

use crate::helpers::{
    JUMP_PCT, RETENTION_DAYS, RecordingRawStore, SOURCE, counter, histogram_count, pipeline_harness, record, record_at,
};

const PUBLISHED: &str = "lizards_quotes_published_total";
const REJECTED: &str = "lizards_quotes_rejected_total";
const FLAGGED: &str = "lizards_quotes_flagged_total";

fn accepted(flags: &[&str]) -> Option<RawOutcome> {
    Some(RawOutcome::Accepted { flags: flags.iter().map(|f| f.to_string()).collect() })
}

fn rejected(reason: &str) -> Option<RawOutcome> {
    Some(RawOutcome::Rejected { reason: reason.to_string() })
}

#[tokio::test]
async fn valid_record_is_published_with_the_exact_wire_body() {
    let mut h = pipeline_harness().await;
    let ts = (Utc::now() - Duration::seconds(1)).with_nanosecond(123_456_789).expect("valid nanoseconds");
    let record = record_at("aapl", 228.5, ts);

    let (ingest_id, flags) = h.publish(record.clone()).await;
    assert!(flags.is_empty());
    let delivery = h.next_published().await;
    assert_eq!(delivery.routing_key, shard_routing_key(shard(&Symbol::parse("AAPL").expect("valid symbol"))));

    let (doc, outcome) = h.raw.document(&ingest_id).await;
    assert_eq!(ingest_id, h.raw.last_id(), "the ingest id is the raw document's id");
    assert_eq!(outcome, accepted(&[]));
    assert_eq!((doc.source.as_str(), doc.symbol.as_str(), doc.source_ts), (SOURCE, "aapl", ts), "kept as received");
    assert_eq!(doc.body, record.body);
    assert_eq!(doc.received_at, doc.received_at.trunc_subsecs(6), "received_at has microsecond precision");

    let wire: Value = serde_json::from_slice(&delivery.body).expect("a JSON body");
    let expected = json!({"v": 2, "quotes": [{
        "symbol": "AAPL",
        "price": 228.5,
        "ts": ts.trunc_subsecs(6).to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "volume": 1200.0,
        "source": SOURCE,
        "ingest_id": ingest_id,
        "ingested_at": doc.received_at.timestamp_micros(),
    }]});
    assert_eq!(wire, expected);
    let ts = &wire["quotes"][0]["ts"];
    assert!(ts.as_str().is_some_and(|ts| ts.ends_with(".123456Z")), "ts has microseconds: {ts}");

    let quotes = decode_message(&delivery.body).expect("the body decodes").quotes;
    assert_eq!(quotes[0].ingested_at, doc.received_at);
    assert_eq!(delivery.body, encode_batch(&quotes), "exactly the canonical encoding");
}

#[tokio::test]
async fn a_symbol_with_a_dot_is_routed_by_its_shard() {
    let mut h = pipeline_harness().await;
    h.publish(record("BRK.B", 452.0)).await;
    let delivery = h.next_published().await;
    let symbol = Symbol::parse("BRK.B").expect("valid symbol");
    assert_eq!(delivery.routing_key, shard_routing_key(shard(&symbol)));
    let quotes = decode_message(&delivery.body).expect("the body decodes").quotes;
    assert_eq!(quotes[0].symbol, symbol);
}

#[tokio::test]
async fn invalid_records_are_kept_with_their_reason_and_not_published() {
    let mut h = pipeline_harness().await;
    let now = Utc::now();
    let mut negative_volume = record("AAPL", 1.0);
    negative_volume.volume = Some(-5.0);
    let cases = [
        (record("AAPL", 0.0), Reject::InvalidPrice),
        (record("MSFT", -1.0), Reject::InvalidPrice),
        (record("NVDA", f64::NAN), Reject::InvalidPrice),
        (record("TSLA", f64::INFINITY), Reject::InvalidPrice),
        (record_at("AAPL", 1.0, now + Duration::minutes(6)), Reject::FutureTimestamp),
        (record_at("AAPL", 1.0, now - Duration::days(i64::from(RETENTION_DAYS) + 1)), Reject::TooOld),
        (record("AA PL", 1.0), Reject::InvalidSymbol),
        (record("ABCDEFGHIJKLMNOPQRSTU", 1.0), Reject::InvalidSymbol),
        (negative_volume, Reject::InvalidVolume),
    ];
    for (record, reason) in cases {
        let what = format!("{record:?}");
        assert_eq!(h.process(record).await, Outcome::Rejected(reason), "{what}");
        assert_eq!(h.raw.outcome(&h.raw.last_id()).await, rejected(reason.label()), "{what}");
    }
    assert_eq!(h.raw.stored(), 9, "every rejected record is kept");
    assert!(h.published_before_fence().await.is_empty(), "nothing is published");
    assert_eq!(h.counter(PUBLISHED, &[]), 0);

    let rejections = [("invalid_price", 4), ("future_timestamp", 1), ("too_old", 1), ("invalid_symbol", 2)];
    for (reason, count) in rejections.into_iter().chain([("invalid_volume", 1)]) {
        assert_eq!(h.counter(REJECTED, &[("source", SOURCE), ("reason", reason)]), count, "{reason}");
    }
}

#[tokio::test]
async fn duplicate_record_is_rejected_and_published_once() {
    let mut h = pipeline_harness().await;
    let original = record("AAPL", 228.0);
    let (ingest_id, _) = h.publish(original.clone()).await;

    let again = record_at("AAPL", 229.0, original.ts);
    assert_eq!(h.process(again).await, Outcome::Rejected(Reject::Duplicate));
    assert_eq!(h.process(original.clone()).await, Outcome::Rejected(Reject::Duplicate));
    let published = h.published_before_fence().await;
    assert_eq!(published.iter().map(|q| q.ingest_id.as_str()).collect::<Vec<_>>(), [ingest_id.as_str()]);
    assert_eq!(h.raw.outcome(&ingest_id).await, accepted(&[]), "the first copy keeps its outcome");
    assert_eq!(h.counter(REJECTED, &[("reason", "duplicate")]), 2);

    let other_source = RawRecord { source: "other".to_string(), ..original };
    h.publish(other_source).await;
}

/// The harness flags moves beyond [`JUMP_PCT`] (20 %).
#[tokio::test]
async fn price_jump_is_published_and_flagged() {
    let mut h = pipeline_harness().await;
    let start = Utc::now() - Duration::seconds(10);
    let at = |seconds| start + Duration::seconds(seconds);

    assert_eq!(h.publish(record_at("AAPL", 100.0, at(0))).await.1, Vec::<String>::new(), "a first price");
    let (jumped, flags) = h.publish(record_at("AAPL", 125.0, at(1))).await;
    assert_eq!(flags, ["jump"], "+25 %");
    assert_eq!(h.raw.outcome(&jumped).await, accepted(&["jump"]));
    assert_eq!(h.publish(record_at("AAPL", 110.0, at(2))).await.1, Vec::<String>::new(), "-12 % from the last");
    assert_eq!(h.publish(record_at("AAPL", 80.0, at(3))).await.1, ["jump"], "-27 %");
    assert_eq!(h.publish(record_at("MSFT", 1_000.0, at(4))).await.1, Vec::<String>::new(), "jumps are per symbol");

    let prices: Vec<f64> = h.published_before_fence().await.iter().map(|q| q.price).collect();
    assert_eq!(prices, [100.0, 125.0, 110.0, 80.0, 1_000.0], "flagged quotes are published too");
    assert_eq!(h.counter(FLAGGED, &[("source", SOURCE), ("flag", "jump")]), 2);
}

#[tokio::test]
async fn metrics_count_each_outcome_per_source() {
    let h = pipeline_harness().await;
    let duplicate = record("AAPL", 228.0);
    h.process(duplicate.clone()).await;
    h.process(duplicate).await;
    h.process(record("MSFT", 415.0)).await;
    h.process(record("NVDA", 0.0)).await;
    let other = RawRecord { source: "other".to_string(), ..record("AAPL", 228.0) };
    h.process(other).await;

    assert_eq!(h.counter(PUBLISHED, &[("source", SOURCE)]), 2);
    assert_eq!(h.counter(PUBLISHED, &[("source", "other")]), 1);
    assert_eq!(h.counter(REJECTED, &[("source", SOURCE), ("reason", "duplicate")]), 1);
    assert_eq!(h.counter(REJECTED, &[("source", SOURCE), ("reason", "invalid_price")]), 1);
    assert_eq!(h.counter(FLAGGED, &[]), 0);
    let confirms = histogram_count(&h.registry, "lizards_delivery_time_seconds", &[("exchange", "quotes")]);
    assert_eq!(confirms, 3, "one publish-to-confirm time per published quote");
}

#[tokio::test]
async fn raw_store_outage_does_not_stop_live_prices() {
    let mut h = pipeline_harness().await;
    h.raw.go_down();
    let (ingest_id, _) = h.publish(record("AAPL", 228.0)).await;
    assert!(!ingest_id.is_empty());
    let quotes = decode_message(&h.next_published().await.body).expect("the body decodes").quotes;
    assert_eq!(quotes[0].ingest_id, ingest_id);
    assert_eq!(h.raw.stored(), 0);
    assert_eq!(h.counter("lizards_raw_store_errors_total", &[("operation", "insert")]), 1);
}

#[tokio::test]
async fn unconfirmed_publish_is_an_error_and_counted() {
    // No topology: the `quotes` exchange does not exist, so nothing is confirmed.
    let broker = Arc::new(MemoryBroker::new());
    let registry = Registry::new();
    let raw = Arc::new(RecordingRawStore::new());
    let metrics = Metrics::new(&registry);
    metrics.prime_source(SOURCE);
    let pipeline = Pipeline::new(broker, raw.clone(), metrics, RETENTION_DAYS, JUMP_PCT);

    let result = pipeline.process(record("AAPL", 228.0)).await;
    assert!(matches!(result, Err(PipelineError::Publish(_))), "{result:?}");
    assert_eq!(counter(&registry, "lizards_publish_failures_total", &[("source", SOURCE)]), 1);
    assert_eq!(counter(&registry, PUBLISHED, &[]), 0);
    assert_eq!(raw.outcome(&raw.last_id()).await, rejected("publish_failed"));
}

#[tokio::test]
async fn a_record_whose_publish_failed_is_published_when_sent_again_and_only_then_a_duplicate() {
    let broker = Arc::new(MemoryBroker::new());
    let raw = Arc::new(RecordingRawStore::new());
    let metrics = Metrics::new(&Registry::new());
    metrics.prime_source(SOURCE);
    let pipeline = Pipeline::new(broker.clone(), raw.clone(), metrics, RETENTION_DAYS, JUMP_PCT);
    let sent = record("AAPL", 228.0);
    assert!(pipeline.process(sent.clone()).await.is_err(), "no exchange yet: not confirmed");
    let first = raw.last_id();

    declare_topology(broker.as_ref()).await.expect("topology is declared");
    let again = pipeline.process(sent.clone()).await.expect("published this time");
    assert!(matches!(&again, Outcome::Published { ingest_id, .. } if *ingest_id == first), "{again:?}");
    assert_eq!(raw.stored(), 1, "the raw copy of the first attempt is reused");
    assert!(matches!(raw.outcome(&first).await, Some(RawOutcome::Accepted { .. })));

    let third = pipeline.process(sent).await.expect("answered");
    assert!(matches!(third, Outcome::Rejected(Reject::Duplicate)), "published once, then a duplicate: {third:?}");
}

#[tokio::test]
async fn a_quote_from_the_future_is_published_as_received_now_and_kept_raw_as_sent() {
    let mut h = pipeline_harness().await;
    let sent = Utc::now() + Duration::minutes(4);
    let (ingest_id, _) = h.publish(record_at("AAPL", 0.01, sent)).await;
    let quote = h.published_before_fence().await.pop().expect("published");
    assert_eq!(quote.ts, quote.ingested_at, "ordered as the time it was received, not four minutes ahead");
    let (doc, _) = h.raw.document(&ingest_id).await;
    assert_eq!(doc.source_ts, sent, "the raw document keeps what the source said");
}

#[tokio::test]
async fn source_ids_that_are_not_configured_share_one_metric_series() {
    let h = pipeline_harness().await;
    for invented in ["made-up-1", "made-up-2"] {
        h.publish(RawRecord { source: invented.to_string(), ..record("AAPL", 1.0) }).await;
    }
    assert_eq!(h.counter(PUBLISHED, &[("source", "other")]), 2);
    let families = h.registry.gather();
    let labels = families.iter().flat_map(|f| f.get_metric()).flat_map(|m| m.get_label());
    assert!(labels.into_iter().all(|label| !label.value().starts_with("made-up")), "no series per invented id");
}

#[tokio::test]
async fn new_symbols_beyond_the_cap_are_rejected_and_known_ones_still_pass() {
    let broker = Arc::new(MemoryBroker::new());
    lizards_shared::broker::declare_topology(broker.as_ref()).await.expect("topology");
    let registry = Registry::new();
    let metrics = Metrics::new(&registry);
    metrics.prime_source(SOURCE);
    let raw = Arc::new(RecordingRawStore::new());
    let pipeline = Pipeline::new(broker, raw, metrics, RETENTION_DAYS, JUMP_PCT).with_max_symbols(2);
    let process = async |symbol: &str| pipeline.process(record(symbol, 10.0)).await.expect("the broker confirms");
    assert!(matches!(process("AAA").await, Outcome::Published { .. }));
    assert!(matches!(process("BBB").await, Outcome::Published { .. }));
    assert_eq!(process("CCC").await, Outcome::Rejected(Reject::TooManySymbols), "a third symbol");
    assert!(matches!(process("AAA").await, Outcome::Published { .. }), "known symbols go on");
    assert_eq!(counter(&registry, REJECTED, &[("reason", "too_many_symbols")]), 1);
}
