//! The SLO manager: objectives kept in the SQL store, evaluated
//! every `SLO_INTERVAL` from Prometheus or the registry's own scrape, each
//! evaluation stored, and status and violations computed from that
//! history.

mod api;
mod exposition;
mod measure;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use lizards_shared::{
    shutdown::Shutdown,
    slo::{Sample, Slo, SloStore},
};
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

pub use api::{SloState, router};
pub use measure::Source;

/// Evaluations are kept this long: the longest violations query (6 h) and
/// the longest window (24 h).
const KEEP: chrono::TimeDelta = chrono::TimeDelta::hours(25);
/// Older evaluations are deleted this often, not at every evaluation (the
/// delete scans the table; nothing reads past 24 hours anyway).
const PRUNE_EVERY: chrono::TimeDelta = chrono::TimeDelta::hours(1);

#[derive(Clone)]
pub struct SloMetrics {
    evaluations: IntCounterVec,
    value: GaugeVec,
    met: GaugeVec,
}

impl SloMetrics {
    pub fn new(registry: &Registry) -> SloMetrics {
        let metrics = SloMetrics {
            evaluations: lizards_shared::telemetry::counter_vec(
                registry,
                "lizards_slo_evaluations_total",
                "SLO evaluations by outcome (met, violated, no_data, failed)",
                &["outcome"],
            ),
            value: gauge_vec(registry, "lizards_slo_value", "Each SLO's latest value"),
            met: gauge_vec(registry, "lizards_slo_met", "1 while an SLO is met, 0 while violated"),
        };
        for outcome in ["met", "violated", "no_data", "failed"] {
            metrics.evaluations.with_label_values(&[outcome]);
        }
        metrics
    }
}

fn gauge_vec(registry: &Registry, name: &str, help: &str) -> GaugeVec {
    let gauge = GaugeVec::new(Opts::new(name, help), &["slo"]).expect("valid gauge");
    lizards_shared::telemetry::register(registry, gauge)
}

/// Evaluates every SLO each `interval` until `shutdown`.
pub async fn run(
    store: Arc<dyn SloStore>,
    mut source: Source,
    interval: Duration,
    metrics: SloMetrics,
    shutdown: Shutdown,
) {
    tracing::info!(source = source.name(), ?interval, "SLO manager evaluating");
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned: Option<DateTime<Utc>> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let now = Utc::now();
        if let Err(error) = evaluate(store.as_ref(), &mut source, &metrics, now).await {
            metrics.evaluations.with_label_values(&["failed"]).inc();
            tracing::warn!(%error, source = source.name(), "SLO evaluation failed");
        }
        if pruned.is_none_or(|at| now - at >= PRUNE_EVERY) {
            match store.prune_samples(now - KEEP).await {
                Ok(_) => pruned = Some(now),
                Err(error) => tracing::warn!(%error, "pruning old SLO evaluations failed"),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum EvaluateError {
    #[error(transparent)]
    Store(#[from] lizards_shared::slo::SloStoreError),
    #[error(transparent)]
    Measure(#[from] measure::MeasureError),
}

async fn evaluate(
    store: &dyn SloStore,
    source: &mut Source,
    metrics: &SloMetrics,
    now: DateTime<Utc>,
) -> Result<(), EvaluateError> {
    let slos = store.slos().await?;
    let values = if slos.is_empty() { Vec::new() } else { source.measure(&slos, now).await? };
    let samples: Vec<Sample> = slos.iter().zip(values).map(|(slo, value)| Sample::new(slo, now, value)).collect();
    store.record_samples(&samples).await?;
    metrics.value.reset();
    metrics.met.reset();
    for (slo, sample) in slos.iter().zip(&samples) {
        report(slo, sample, metrics);
    }
    Ok(())
}

fn report(slo: &Slo, sample: &Sample, metrics: &SloMetrics) {
    let name = slo.spec.name.as_str();
    let outcome = match (sample.value, sample.met) {
        (Some(value), Some(met)) => {
            metrics.value.with_label_values(&[name]).set(value);
            metrics.met.with_label_values(&[name]).set(if met { 1.0 } else { 0.0 });
            if met { "met" } else { "violated" }
        }
        _ => "no_data",
    };
    metrics.evaluations.with_label_values(&[outcome]).inc();
    tracing::debug!(slo = name, value = ?sample.value, outcome, "SLO evaluated");
}
