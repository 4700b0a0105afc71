//! The Prometheus text exposition format, as the registered instances'
//! `/metrics` serve it: samples and their labels (comments and timestamps
//! are skipped), and quantiles of histogram buckets.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Series {
    /// Whether the series carries every label of `matchers` with its value.
    pub fn matches(&self, matchers: &BTreeMap<String, String>) -> bool {
        matchers.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// Every sample in `text`; a line that cannot be read is skipped.
pub fn parse(text: &str) -> Vec<Series> {
    text.lines().filter(|line| !line.starts_with('#')).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Series> {
    let line = line.trim();
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = number(rest.split_whitespace().next()?)?;
    Some(Series { name, labels, value })
}

/// `key="value",...}` → the labels and what follows the `}`.
fn parse_labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = text.find('=')?;
        let key = text[..eq].trim().to_string();
        let mut chars = text[eq + 1..].strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        labels.insert(key, value);
        text = &text[eq + 1 + 1 + end + 1..];
    }
}

/// A sample value or a bucket bound (`le`), `+Inf` and `NaN` included.
pub fn number(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// The `q` quantile of cumulative histogram buckets (upper bound → count,
/// `+Inf` included), interpolated linearly inside its bucket like
/// Prometheus's `histogram_quantile`; `None` without observations.
pub fn quantile(q: f64, buckets: &BTreeMap<Bound, f64>) -> Option<f64> {
    let total = *buckets.get(&Bound(f64::INFINITY))?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (Bound(upper), count) in buckets {
        if *count >= rank {
            if upper.is_infinite() {
                // Beyond the last finite bound: its bound is all we know.
                return Some(lower);
            }
            let share = if *count > below { (rank - below) / (count - below) } else { 0.0 };
            return Some(lower + (upper - lower) * share);
        }
        (lower, below) = (*upper, *count);
    }
    None
}

/// A bucket's upper bound, ordered (bounds are never NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound(pub f64);

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Bound) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Bound) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP lizards_ws_connections Open WebSocket connections
# TYPE lizards_ws_connections gauge
lizards_ws_connections{service="provider"} 3
lizards_errors_total{kind="say \"hi\"\n",service="provider"} 2 1700000000000
lizards_e2e_latency_seconds_bucket{service="provider",le="0.01"} 90
lizards_e2e_latency_seconds_bucket{service="provider",le="+Inf"} 100
plain_metric 1.5e3
broken{service="x" 7
"#;

    #[test]
    fn samples_labels_and_escapes_are_read_and_bad_lines_skipped() {
        let series = parse(TEXT);
        assert_eq!(series.len(), 5, "{series:?}");
        assert_eq!(series[0].name, "lizards_ws_connections");
        assert_eq!(series[0].labels["service"], "provider");
        assert_eq!(series[0].value, 3.0);
        assert_eq!(series[1].labels["kind"], "say \"hi\"\n");
        assert_eq!(series[1].value, 2.0);
        assert_eq!(series[3].labels["le"], "+Inf");
        assert_eq!(series[4], Series { name: "plain_metric".into(), labels: BTreeMap::new(), value: 1500.0 });
        let provider = BTreeMap::from([("service".to_string(), "provider".to_string())]);
        assert!(series[0].matches(&provider) && !series[4].matches(&provider));
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket_like_prometheus() {
        let buckets: BTreeMap<Bound, f64> =
            [(0.01, 50.0), (0.02, 90.0), (0.05, 100.0), (f64::INFINITY, 100.0)].map(|(b, c)| (Bound(b), c)).into();
        assert_eq!(quantile(0.5, &buckets), Some(0.01));
        assert!((quantile(0.7, &buckets).unwrap() - 0.015).abs() < 1e-12);
        assert!((quantile(0.99, &buckets).unwrap() - 0.047).abs() < 1e-12);
        let beyond: BTreeMap<Bound, f64> = [(0.01, 1.0), (f64::INFINITY, 10.0)].map(|(b, c)| (Bound(b), c)).into();
        assert_eq!(quantile(0.99, &beyond), Some(0.01));
        let empty: BTreeMap<Bound, f64> = [(0.01, 0.0), (f64::INFINITY, 0.0)].map(|(b, c)| (Bound(b), c)).into();
        assert_eq!(quantile(0.5, &empty), None);
    }
}
