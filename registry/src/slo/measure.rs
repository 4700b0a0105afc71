//! Where an SLO's value comes from: Prometheus's query API when
//! `PROMETHEUS_URL` is set, else the registry's own scrape of every healthy
//! registered instance's `/metrics` (the embedded mode), with the rates and
//! histogram quantiles computed here over the last 5 minutes of scrapes.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use lizards_shared::slo::{Aggregation, Slo, SloId, SloSpec};
use serde_json::Value;

use super::exposition::{self, Bound, Series};
use crate::store::RegistryStore;

/// Rates and quantiles cover this much history, as PromQL's `[5m]`.
const RANGE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("Prometheus query failed: {0}")]
    Prometheus(String),
    #[error("registry store: {0}")]
    Store(#[from] crate::store::StoreError),
}

#[derive(Clone)]
pub enum Source {
    Prometheus { url: String, http: reqwest::Client },
    Scrape { store: Arc<dyn RegistryStore>, http: reqwest::Client, history: HashMap<SloId, VecDeque<Snapshot>> },
}

/// What one scrape saw of an SLO's metric.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: DateTime<Utc>,
    /// The summed counter (rates) or the summed buckets (quantiles).
    value: Reading,
}

#[derive(Debug, Clone)]
enum Reading {
    Total(f64),
    Buckets(BTreeMap<Bound, f64>),
}

impl Source {
    pub fn new(prometheus_url: Option<&str>, store: Arc<dyn RegistryStore>) -> Source {
        let http = reqwest::Client::builder().timeout(TIMEOUT).build().expect("http client builds");
        match prometheus_url {
            Some(url) => Source::Prometheus { url: url.trim_end_matches('/').to_string(), http },
            None => Source::Scrape { store, http, history: HashMap::new() },
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Source::Prometheus { .. } => "prometheus",
            Source::Scrape { .. } => "scrape",
        }
    }

    /// Every SLO's current value (`None`: no data).
    pub async fn measure(&mut self, slos: &[Slo], now: DateTime<Utc>) -> Result<Vec<Option<f64>>, MeasureError> {
        match self {
            Source::Prometheus { url, http } => {
                let mut values = Vec::with_capacity(slos.len());
                for slo in slos {
                    values.push(query(http, url, &promql(&slo.spec)).await?);
                }
                Ok(values)
            }
            Source::Scrape { store, http, history } => {
                let series = scrape(store.as_ref(), http).await?;
                history.retain(|id, _| slos.iter().any(|slo| slo.id == *id));
                Ok(slos
                    .iter()
                    .map(|slo| scraped(&slo.spec, &series, history.entry(slo.id).or_default(), now))
                    .collect())
            }
        }
    }
}

/// The PromQL of an SLO: `sum(metric{labels})`, `sum(rate(...[5m]))` or
/// `histogram_quantile(q, sum by (le) (rate(metric_bucket{labels}[5m])))`.
pub fn promql(spec: &SloSpec) -> String {
    let matchers: Vec<String> = spec.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    let labels = format!("{{{}}}", matchers.join(","));
    match spec.aggregation.quantile() {
        Some(q) => format!("histogram_quantile({q}, sum by (le) (rate({}_bucket{labels}[5m])))", spec.metric),
        None if spec.aggregation == Aggregation::Rate5m => format!("sum(rate({}{labels}[5m]))", spec.metric),
        None => format!("sum({}{labels})", spec.metric),
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

async fn query(http: &reqwest::Client, url: &str, promql: &str) -> Result<Option<f64>, MeasureError> {
    let failed = |e: &dyn std::fmt::Display| MeasureError::Prometheus(e.to_string());
    let endpoint = reqwest::Url::parse_with_params(&format!("{url}/api/v1/query"), &[("query", promql)])
        .map_err(|e| failed(&e))?;
    let response = http.get(endpoint).send().await;
    let body: Value = response.map_err(|e| failed(&e))?.json().await.map_err(|e| failed(&e))?;
    if body["status"] != "success" {
        return Err(MeasureError::Prometheus(body["error"].as_str().unwrap_or("unknown error").to_string()));
    }
    let value = body["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
    Ok(value.filter(|v| v.is_finite()))
}

/// Every series of every healthy registered instance (an instance that does
/// not answer is left out, as Prometheus would mark it down).
async fn scrape(store: &dyn RegistryStore, http: &reqwest::Client) -> Result<Vec<Series>, MeasureError> {
    let services = store.list().await?;
    let urls: Vec<String> = services
        .iter()
        .flat_map(|service| service.instances.iter())
        .filter(|instance| instance.status != crate::model::Status::Critical)
        .map(|instance| format!("http://{}/metrics", instance.authority()))
        .collect();
    let bodies = futures::future::join_all(urls.iter().map(|url| async move {
        let response = http.get(url).send().await.ok()?;
        response.status().is_success().then_some(())?;
        response.text().await.ok()
    }))
    .await;
    Ok(bodies.into_iter().flatten().flat_map(|text| exposition::parse(&text)).collect())
}

/// An SLO's value from one scrape and its history of earlier ones.
fn scraped(spec: &SloSpec, series: &[Series], history: &mut VecDeque<Snapshot>, now: DateTime<Utc>) -> Option<f64> {
    let reading = match spec.aggregation.quantile() {
        Some(_) => {
            let mut buckets: BTreeMap<Bound, f64> = BTreeMap::new();
            for s in matching(series, &format!("{}_bucket", spec.metric), &spec.labels) {
                let bound = s.labels.get("le").and_then(|le| exposition::number(le)).map(Bound)?;
                *buckets.entry(bound).or_default() += s.value;
            }
            if buckets.is_empty() {
                return None;
            }
            Reading::Buckets(buckets)
        }
        None => {
            let found: Vec<f64> = matching(series, &spec.metric, &spec.labels).map(|s| s.value).collect();
            if found.is_empty() {
                return None;
            }
            Reading::Total(found.iter().sum())
        }
    };
    if spec.aggregation == Aggregation::Value {
        let Reading::Total(total) = reading else { return None };
        return Some(total);
    }
    // The oldest scrape within the range is the baseline of the increase.
    while history.len() > 1 && history.get(1).is_some_and(|s| now - s.at >= RANGE) {
        history.pop_front();
    }
    let base = history.front().cloned();
    history.push_back(Snapshot { at: now, value: reading.clone() });
    match (reading, spec.aggregation.quantile()) {
        (Reading::Total(total), None) => {
            let base = base?;
            let Reading::Total(then) = base.value else { return None };
            let seconds = (now - base.at).as_seconds_f64();
            // A counter that went down was reset: no rate until it has history again.
            (seconds > 0.0 && total >= then).then(|| (total - then) / seconds)
        }
        (Reading::Buckets(buckets), Some(q)) => {
            // Without history yet, the observations since the start.
            let increase = match base.map(|b| b.value) {
                Some(Reading::Buckets(then)) if buckets.iter().all(|(b, c)| then.get(b).is_none_or(|t| c >= t)) => {
                    buckets.iter().map(|(b, c)| (*b, c - then.get(b).copied().unwrap_or(0.0))).collect()
                }
                _ => buckets,
            };
            exposition::quantile(q, &increase)
        }
        _ => None,
    }
}

fn matching<'a>(
    series: &'a [Series],
    name: &'a str,
    labels: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = &'a Series> + 'a {
    series.iter().filter(move |s| s.name == name && s.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lizards_shared::slo::Comparison;

    fn spec(metric: &str, aggregation: Aggregation) -> SloSpec {
        SloSpec {
            name: "s".into(),
            metric: metric.into(),
            labels: BTreeMap::from([("service".into(), "provider".into())]),
            aggregation,
            comparison: Comparison::Below,
            threshold: 1.0,
            window_minutes: 5,
        }
    }

    #[test]
    fn promql_sums_rates_and_quantiles_with_escaped_labels() {
        let mut latency = spec("lizards_e2e_latency_seconds", Aggregation::P99);
        assert_eq!(
            promql(&latency),
            r#"histogram_quantile(0.99, sum by (le) (rate(lizards_e2e_latency_seconds_bucket{service="provider"}[5m])))"#
        );
        latency.labels.insert("odd".into(), "a\"b".into());
        latency.aggregation = Aggregation::Rate5m;
        assert_eq!(promql(&latency), r#"sum(rate(lizards_e2e_latency_seconds{odd="a\"b",service="provider"}[5m]))"#);
        latency.labels.clear();
        latency.aggregation = Aggregation::Value;
        assert_eq!(promql(&latency), "sum(lizards_e2e_latency_seconds{})");
    }

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + second, 0).unwrap()
    }

    fn scrape_text(text: &str) -> Vec<Series> {
        exposition::parse(text)
    }

    #[test]
    fn scraped_values_rates_and_quantiles_follow_prometheus() {
        let mut history = VecDeque::new();
        let value = spec("lizards_ws_connections", Aggregation::Value);
        let two = scrape_text(
            "lizards_ws_connections{service=\"provider\"} 2\nlizards_ws_connections{service=\"provider\",x=\"1\"} 3\nlizards_ws_connections{service=\"gateway\"} 9",
        );
        assert_eq!(scraped(&value, &two, &mut history, at(0)), Some(5.0));
        assert_eq!(scraped(&spec("absent", Aggregation::Value), &two, &mut history, at(0)), None);

        let rate = spec("lizards_ops_total", Aggregation::Rate5m);
        let mut history = VecDeque::new();
        let first = scrape_text("lizards_ops_total{service=\"provider\"} 100");
        assert_eq!(scraped(&rate, &first, &mut history, at(0)), None, "no rate from one scrape");
        let later = scrape_text("lizards_ops_total{service=\"provider\"} 160");
        assert_eq!(scraped(&rate, &later, &mut history, at(30)), Some(2.0));
        let reset = scrape_text("lizards_ops_total{service=\"provider\"} 5");
        assert_eq!(scraped(&rate, &reset, &mut history, at(45)), None, "a reset has no rate");

        let p99 = spec("lat", Aggregation::P99);
        let mut history = VecDeque::new();
        let buckets = |fast: f64, all: f64| {
            scrape_text(&format!(
                "lat_bucket{{service=\"provider\",le=\"0.01\"}} {fast}\nlat_bucket{{service=\"provider\",le=\"0.1\"}} {all}\nlat_bucket{{service=\"provider\",le=\"+Inf\"}} {all}"
            ))
        };
        // Since the start: 99 of 100 fast.
        assert!(scraped(&p99, &buckets(99.0, 100.0), &mut history, at(0)).unwrap() <= 0.01);
        // Then 100 more, all slow: the increase decides.
        let slow = scraped(&p99, &buckets(99.0, 200.0), &mut history, at(15)).unwrap();
        assert!(slow > 0.09, "{slow}");
    }
}
