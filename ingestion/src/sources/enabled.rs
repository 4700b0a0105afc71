//! Which sources run, with what settings: `SOURCES` names them; each web
//! source gets its poll interval, its free-tier rate limit (unless
//! `SOURCE_RATE_LIMITS` replaces it), the shared timeout, breaker and lease
//! settings, and its API key.

use std::{sync::Arc, time::Duration};

use lizards_shared::{
    cache::Quota,
    config::{Config, IngestionConfig},
};

use super::{
    Api, Source, SourceStatus, alphavantage::AlphaVantage, binance::Binance, coingecko::CoinGecko, finnhub::Finnhub,
    html, stooq::Stooq, synthetic::Synthetic, yahoo::Yahoo,
};
use crate::{
    breaker::BreakerSettings,
    poller::{PollSettings, Poller, Shared},
};

/// Every kind of source `SOURCES` may name.
pub const KINDS: &[&str] = &["synthetic", "html", "yahoo", "coingecko", "alphavantage", "finnhub", "binance", "stooq"];

/// Outbound limit per source: the provider's published free tier (Yahoo
/// and Stooq publish none: a polite rate that stays clear of their blocks).
fn free_tier(kind: &str) -> Quota {
    let text = match kind {
        "coingecko" => "30/1m",
        "alphavantage" => "25/1d",
        "finnhub" => "60/1m",
        // 6,000 request weight per minute; the all-pairs ticker weighs 4.
        "binance" => "600/1m",
        _ => "30/1m",
    };
    text.parse().expect("free-tier quotas are valid")
}

/// Jittered backoff after a failed round starts here and doubles up to the
/// poll interval.
const BACKOFF_MIN: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    #[error("unknown source '{0}' (known: {known})", known = KINDS.join(", "))]
    Unknown(String),
    #[error("source '{id}' needs {variable}")]
    MissingKey { id: &'static str, variable: &'static str },
    #[error("source 'html' needs HTML_SOURCES_FILE")]
    NoPagesFile,
    #[error(transparent)]
    Pages(#[from] html::HtmlConfigError),
}

fn key(value: &Option<String>, id: &'static str, variable: &'static str) -> Result<String, SourcesError> {
    value.clone().filter(|k| !k.is_empty()).ok_or(SourcesError::MissingKey { id, variable })
}

fn settings(config: &IngestionConfig, id: &str, interval: Duration, quota: Quota) -> PollSettings {
    let quota = config.source_rate_limits.as_ref().and_then(|limits| limits.get(id)).copied().unwrap_or(quota);
    PollSettings {
        interval,
        quota,
        timeout: config.source_timeout,
        breaker: BreakerSettings {
            failure_threshold: config.breaker_failure_threshold,
            failure_window: config.breaker_failure_window,
            recovery_timeout: config.breaker_recovery_timeout,
            half_open_max_calls: config.breaker_half_open_calls,
            success_threshold: config.breaker_half_open_calls,
            ..BreakerSettings::default()
        },
        lease_ttl: config.source_lease_ttl,
        backoff_min: BACKOFF_MIN,
        backoff_max: interval,
    }
}

/// A web API with the settings it is polled with.
type Configured = (Arc<dyn Api>, PollSettings);

/// The web APIs of `kind` with their settings.
fn apis(config: &IngestionConfig, kind: &str) -> Result<Vec<Configured>, SourcesError> {
    let c = config;
    let one = |api: Arc<dyn Api>, interval| {
        let settings = settings(c, api.id(), interval, free_tier(kind));
        Ok(vec![(api, settings)])
    };
    match kind {
        "yahoo" => one(Arc::new(Yahoo::new(&c.yahoo_url)), c.poll_interval_yahoo),
        "coingecko" => {
            one(Arc::new(CoinGecko::new(&c.coingecko_url, c.coingecko_api_key.clone())), c.poll_interval_coingecko)
        }
        "alphavantage" => {
            let key = key(&c.alphavantage_api_key, "alphavantage", "ALPHAVANTAGE_API_KEY")?;
            one(Arc::new(AlphaVantage::new(&c.alphavantage_url, key)), c.poll_interval_alphavantage)
        }
        "finnhub" => {
            let key = key(&c.finnhub_api_key, "finnhub", "FINNHUB_API_KEY")?;
            one(Arc::new(Finnhub::new(&c.finnhub_url, key)), c.poll_interval_finnhub)
        }
        "binance" => one(Arc::new(Binance::new(&c.binance_url)), c.poll_interval_binance),
        "stooq" => one(Arc::new(Stooq::new(&c.stooq_url)), c.poll_interval_stooq),
        "html" => {
            let path = c.html_sources_file.as_deref().ok_or(SourcesError::NoPagesFile)?;
            let pages = html::load(path)?;
            Ok(pages
                .into_iter()
                .map(|page| {
                    let interval = page.config.interval.unwrap_or(c.poll_interval_html);
                    let quota = page.rate_limit().unwrap_or(free_tier(html::KIND));
                    let settings = settings(c, &page.config.id, interval, quota);
                    (Arc::new(page) as Arc<dyn Api>, settings)
                })
                .collect())
        }
        other => Err(SourcesError::Unknown(other.to_string())),
    }
}

/// The sources `SOURCES` enables, ready to run.
pub fn enabled(config: &Config, shared: &Shared) -> Result<Vec<Arc<dyn Source>>, SourcesError> {
    let c = &config.ingestion;
    let mut sources: Vec<Arc<dyn Source>> = Vec::new();
    for kind in c.sources.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if kind == super::synthetic::ID {
            sources.push(Arc::new(Synthetic::new(c.synthetic_rate, c.synthetic_seed, &c.synthetic_symbols)));
            continue;
        }
        for (api, settings) in apis(c, kind)? {
            sources.push(Arc::new(Poller::new(api, settings, shared.clone())));
        }
    }
    Ok(sources)
}

/// `/sources/status` entries of the kinds not enabled.
pub fn disabled(config: &Config) -> Vec<SourceStatus> {
    let enabled: Vec<&str> = config.ingestion.sources.iter().map(|s| s.trim()).collect();
    KINDS
        .iter()
        .filter(|kind| !enabled.contains(kind))
        .map(|kind| SourceStatus {
            id: kind.to_string(),
            kind,
            base_url: default_url(kind).to_string(),
            enabled: false,
            polling: None,
        })
        .collect()
}

fn default_url(kind: &str) -> &'static str {
    match kind {
        "yahoo" => super::yahoo::DEFAULT_URL,
        "coingecko" => super::coingecko::DEFAULT_URL,
        "alphavantage" => super::alphavantage::DEFAULT_URL,
        "finnhub" => super::finnhub::DEFAULT_URL,
        "binance" => super::binance::DEFAULT_URL,
        "stooq" => super::stooq::DEFAULT_URL,
        "synthetic" => "synthetic://gbm",
        _ => "",
    }
}
