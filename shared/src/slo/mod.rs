//! The SLO port (docs/operations.md, "SLO manager"): service-level objectives the registry's SLO
//! manager evaluates, and their evaluation history. Both SQL stores
//! implement it (SQLite embedded, PostgreSQL real); one contract suite
//! checks both. Status and violations are computed here from the history,
//! the same for every store.

mod postgres;
mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub type SloId = i64;

#[derive(Debug, thiserror::Error)]
pub enum SloStoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("an SLO with this name already exists")]
    NameTaken,
    #[error("stored {field} cannot be read: {value}")]
    Corrupt { field: &'static str, value: String },
}

/// How the metric's series become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// The sum of the matching series' current values (gauges, counters).
    Value,
    /// The per-second increase of the matching counters over 5 minutes.
    Rate5m,
    /// Quantiles of a histogram's observations over 5 minutes.
    P50,
    P95,
    P99,
}

impl Aggregation {
    pub const ALL: [Aggregation; 5] =
        [Aggregation::Value, Aggregation::Rate5m, Aggregation::P50, Aggregation::P95, Aggregation::P99];

    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Value => "value",
            Aggregation::Rate5m => "rate_5m",
            Aggregation::P50 => "p50",
            Aggregation::P95 => "p95",
            Aggregation::P99 => "p99",
        }
    }

    pub fn parse(text: &str) -> Option<Aggregation> {
        Aggregation::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// The quantile of a histogram aggregation.
    pub fn quantile(self) -> Option<f64> {
        match self {
            Aggregation::P50 => Some(0.5),
            Aggregation::P95 => Some(0.95),
            Aggregation::P99 => Some(0.99),
            Aggregation::Value | Aggregation::Rate5m => None,
        }
    }
}

/// Which side of the threshold meets the objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `<`: met while the value is below the threshold.
    Below,
    /// `>`: met while the value is above the threshold.
    Above,
}

impl Comparison {
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Below => "<",
            Comparison::Above => ">",
        }
    }

    pub fn parse(text: &str) -> Option<Comparison> {
        match text {
            "<" => Some(Comparison::Below),
            ">" => Some(Comparison::Above),
            _ => None,
        }
    }

    pub fn met(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Below => value < threshold,
            Comparison::Above => value > threshold,
        }
    }
}

/// An objective as its owner states it (validated at the HTTP edge).
#[derive(Debug, Clone, PartialEq)]
pub struct SloSpec {
    pub name: String,
    /// A Prometheus metric name (for histograms, without `_bucket`).
    pub metric: String,
    /// Label matchers (equality) the series must carry.
    pub labels: BTreeMap<String, String>,
    pub aggregation: Aggregation,
    pub comparison: Comparison,
    pub threshold: f64,
    /// The window `compliance` is computed over.
    pub window_minutes: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    pub id: SloId,
    pub spec: SloSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One evaluation of one SLO; `value` and `met` are `None` when the metric
/// had no data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub slo_id: SloId,
    pub at: DateTime<Utc>,
    pub value: Option<f64>,
    pub met: Option<bool>,
}

impl Sample {
    pub fn new(slo: &Slo, at: DateTime<Utc>, value: Option<f64>) -> Sample {
        let met = value.map(|v| slo.spec.comparison.met(v, slo.spec.threshold));
        Sample { slo_id: slo.id, at, value, met }
    }
}

/// `NameTaken` for a unique violation (the only unique key is the name),
/// else the database error.
fn write_error(error: sqlx::Error) -> SloStoreError {
    if error.as_database_error().is_some_and(|e| e.is_unique_violation()) {
        SloStoreError::NameTaken
    } else {
        SloStoreError::Database(error)
    }
}

#[async_trait]
pub trait SloStore: Send + Sync {
    /// `NameTaken` if another SLO has the name.
    async fn create_slo(&self, spec: &SloSpec, now: DateTime<Utc>) -> Result<Slo, SloStoreError>;
    /// Replaces the spec; its history is kept. `None` if there is no such
    /// SLO, `NameTaken` if another has the name.
    async fn update_slo(&self, id: SloId, spec: &SloSpec, now: DateTime<Utc>) -> Result<Option<Slo>, SloStoreError>;
    /// Deletes the SLO and its history; `false` if there was none.
    async fn delete_slo(&self, id: SloId) -> Result<bool, SloStoreError>;
    async fn slo(&self, id: SloId) -> Result<Option<Slo>, SloStoreError>;
    /// Every SLO, oldest first.
    async fn slos(&self) -> Result<Vec<Slo>, SloStoreError>;
    /// Stores evaluations; one already stored for the same SLO and time is
    /// kept as it was.
    async fn record_samples(&self, samples: &[Sample]) -> Result<(), SloStoreError>;
    /// An SLO's evaluations at or after `since`, oldest first.
    async fn samples(&self, id: SloId, since: DateTime<Utc>) -> Result<Vec<Sample>, SloStoreError>;
    /// Deletes evaluations older than `before`; how many.
    async fn prune_samples(&self, before: DateTime<Utc>) -> Result<u64, SloStoreError>;
}

/// A stretch of evaluations that missed the objective: from the first
/// violated one to the next that met it (`None` while still violated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Violation {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    /// The worst value seen in it.
    pub worst: f64,
}

/// The violations in `samples` (oldest first). Evaluations without data
/// neither start nor end one.
pub fn violations(samples: &[Sample], comparison: Comparison) -> Vec<Violation> {
    let mut found: Vec<Violation> = Vec::new();
    let mut open: Option<Violation> = None;
    for sample in samples {
        match (sample.met, sample.value, open.as_mut()) {
            (Some(false), Some(value), None) => open = Some(Violation { start: sample.at, end: None, worst: value }),
            (Some(false), Some(value), Some(current)) => {
                let worse = match comparison {
                    Comparison::Below => value > current.worst,
                    Comparison::Above => value < current.worst,
                };
                if worse {
                    current.worst = value;
                }
            }
            (Some(true), _, Some(_)) => {
                let mut closed = open.take().expect("open violation");
                closed.end = Some(sample.at);
                found.push(closed);
            }
            _ => {}
        }
    }
    found.extend(open);
    found
}

/// The share of evaluations with data that met the objective, `None`
/// without any.
pub fn compliance(samples: &[Sample]) -> Option<f64> {
    let judged: Vec<bool> = samples.iter().filter_map(|s| s.met).collect();
    if judged.is_empty() {
        return None;
    }
    Some(judged.iter().filter(|met| **met).count() as f64 / judged.len() as f64)
}

/// Binds a spec's columns in table order: name, metric, labels, aggregation,
/// comparison, threshold, window_minutes (both adapters' inserts and
/// updates).
fn bind_spec<'q, DB: sqlx::Database>(
    query: sqlx::query::Query<'q, DB, DB::Arguments>,
    spec: &SloSpec,
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    for<'e> String: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    for<'e> &'static str: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    for<'e> f64: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    for<'e> i64: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
{
    query
        .bind(spec.name.clone())
        .bind(spec.metric.clone())
        .bind(labels_text(&spec.labels))
        .bind(spec.aggregation.as_str())
        .bind(spec.comparison.as_str())
        .bind(spec.threshold)
        .bind(i64::from(spec.window_minutes))
}

/// Labels as stored: a JSON object.
fn labels_text(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).expect("labels serialize")
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, SloStoreError> {
    serde_json::from_str(text).map_err(|_| SloStoreError::Corrupt { field: "labels", value: text.to_string() })
}

fn parse_aggregation(text: &str) -> Result<Aggregation, SloStoreError> {
    Aggregation::parse(text).ok_or_else(|| SloStoreError::Corrupt { field: "aggregation", value: text.to_string() })
}

fn parse_comparison(text: &str) -> Result<Comparison, SloStoreError> {
    Comparison::parse(text).ok_or_else(|| SloStoreError::Corrupt { field: "comparison", value: text.to_string() })
}

fn window(minutes: i64) -> Result<u32, SloStoreError> {
    u32::try_from(minutes).map_err(|_| SloStoreError::Corrupt { field: "window_minutes", value: minutes.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + second, 0).unwrap()
    }

    fn sample(second: i64, value: Option<f64>) -> Sample {
        Sample { slo_id: 1, at: at(second), value, met: value.map(|v| Comparison::Below.met(v, 10.0)) }
    }

    #[test]
    fn violations_run_from_the_first_miss_to_the_next_meet() {
        let samples = [
            sample(0, Some(5.0)),
            sample(15, Some(12.0)),
            sample(30, None),
            sample(45, Some(20.0)),
            sample(60, Some(3.0)),
            sample(75, Some(11.0)),
        ];
        let found = violations(&samples, Comparison::Below);
        assert_eq!(
            found,
            vec![
                Violation { start: at(15), end: Some(at(60)), worst: 20.0 },
                Violation { start: at(75), end: None, worst: 11.0 },
            ]
        );
        assert_eq!(compliance(&samples), Some(2.0 / 5.0));
        assert_eq!(compliance(&[sample(0, None)]), None);
    }

    #[test]
    fn comparisons_and_aggregations_round_trip_their_text() {
        for aggregation in Aggregation::ALL {
            assert_eq!(Aggregation::parse(aggregation.as_str()), Some(aggregation));
        }
        assert_eq!(Comparison::parse("<"), Some(Comparison::Below));
        assert!(Comparison::Above.met(2.0, 1.0) && !Comparison::Above.met(1.0, 1.0));
        assert_eq!(Aggregation::P99.quantile(), Some(0.99));
    }
}
