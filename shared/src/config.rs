//! All configuration, in one place: a typed struct read from environment
//! variables (12-factor), each with its default, listed by `lizards --help`
//! and in docs/configuration.md.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Args, CommandFactory, FromArgMatches, Parser, ValueEnum};

fn duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings every role reads.
#[derive(Debug, Clone, Args)]
pub struct CommonConfig {
    /// Address every listener binds.
    #[arg(long, env = "BIND_HOST", default_value = "0.0.0.0")]
    pub bind_host: IpAddr,
    /// Host a service registers in the registry (default: the bind host, or
    /// 127.0.0.1 when binding every interface).
    #[arg(long, env = "ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// Base URL of the service registry.
    #[arg(long, env = "REGISTRY_URL", default_value = "http://127.0.0.1:8500")]
    pub registry_url: String,
    /// Bearer token required for registry writes when set.
    #[arg(long, env = "REGISTRY_TOKEN")]
    pub registry_token: Option<String>,
    /// How often a service renews its registration.
    #[arg(long, env = "REGISTRY_HEARTBEAT", default_value = "10s", value_parser = duration)]
    pub registry_heartbeat: Duration,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Directory for embedded state (the SQLite database).
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// RabbitMQ; unset means the embedded in-process broker.
    #[arg(long, env = "AMQP_URL")]
    pub amqp_url: Option<String>,
    /// PostgreSQL; unset means an embedded SQLite file in DATA_DIR.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// MongoDB for raw documents; unset means the embedded raw store.
    #[arg(long, env = "MONGODB_URI")]
    pub mongodb_uri: Option<String>,
    /// Database of the raw store in MongoDB.
    #[arg(long, env = "MONGODB_DATABASE", default_value = "lizards")]
    pub mongodb_database: String,
    /// Redis for cache, session, rate-limit and registry state; unset means
    /// in-process state.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Retention window in days: ingestion rejects quotes older than this.
    #[arg(long, env = "RETENTION_DAYS", default_value_t = 14)]
    pub retention_days: u32,
}

#[derive(Debug, Clone, Args)]
pub struct RegistryConfig {
    /// Registry HTTP port (0 picks a free port).
    #[arg(long, env = "REGISTRY_PORT", default_value_t = 8500)]
    pub registry_port: u16,
    /// Default registration TTL; instances not renewed within it are evicted.
    #[arg(long, env = "REGISTRY_TTL", default_value = "30s", value_parser = duration)]
    pub registry_ttl: Duration,
    /// How often expired instances are swept.
    #[arg(long, env = "REGISTRY_SWEEP", default_value = "1s", value_parser = duration)]
    pub registry_sweep: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct IngestionConfig {
    /// Ingestion HTTP port (0 picks a free port).
    #[arg(long, env = "INGESTION_PORT", default_value_t = 8600)]
    pub ingestion_port: u16,
    /// Enabled sources, comma separated.
    #[arg(long, env = "SOURCES", default_value = "synthetic", value_delimiter = ',')]
    pub sources: Vec<String>,
    /// Synthetic source: total updates per second across its universe.
    #[arg(long, env = "SYNTHETIC_RATE", default_value_t = 100.0)]
    pub synthetic_rate: f64,
    /// Synthetic source: random seed (same seed, same price paths).
    #[arg(long, env = "SYNTHETIC_SEED", default_value_t = 42)]
    pub synthetic_seed: u64,
    /// Synthetic source: symbols to generate, comma separated (default: its
    /// whole universe of 30+ US stocks and 11 cryptos).
    #[arg(long, env = "SYNTHETIC_SYMBOLS", value_delimiter = ',')]
    pub synthetic_symbols: Vec<String>,
    /// A move larger than this percentage against the last price is flagged.
    #[arg(long, env = "JUMP_FLAG_PCT", default_value_t = 20.0)]
    pub jump_flag_pct: f64,
    /// Embedded raw store: most documents kept.
    #[arg(long, env = "RAW_CAP", default_value_t = 200_000)]
    pub raw_cap: usize,
    /// Raw documents expire after this many days.
    #[arg(long, env = "RAW_TTL_DAYS", default_value_t = 7)]
    pub raw_ttl_days: u32,
}

#[derive(Debug, Clone, Args)]
pub struct ProviderConfig {
    /// Provider HTTP and WebSocket port (0 picks a free port).
    #[arg(long, env = "PROVIDER_PORT", default_value_t = 7890)]
    pub provider_port: u16,
    /// Optional fixed coalescing window for price updates (0: write as soon
    /// as the socket can take it).
    #[arg(long, env = "WS_BATCH_MS", default_value_t = 0)]
    pub ws_batch_ms: u64,
    /// Close a client whose socket stays unwritable this long (1008).
    #[arg(long, env = "WS_SLOW_CLOSE", default_value = "30s", value_parser = duration)]
    pub ws_slow_close: Duration,
    /// Most symbols one connection may subscribe to.
    #[arg(long, env = "WS_MAX_SYMBOLS", default_value_t = 1024)]
    pub ws_max_symbols: usize,
    /// Client messages per second allowed on one connection.
    #[arg(long, env = "WS_RATE", default_value_t = 20)]
    pub ws_rate: u32,
    /// Burst of client messages allowed on one connection.
    #[arg(long, env = "WS_BURST", default_value_t = 50)]
    pub ws_burst: u32,
    /// Largest client frame, bytes.
    #[arg(long, env = "WS_MAX_FRAME", default_value_t = 65_536)]
    pub ws_max_frame: usize,
    /// Error-causing frames allowed within WS_ERROR_WINDOW before close (1008).
    #[arg(long, env = "WS_ERROR_LIMIT", default_value_t = 10)]
    pub ws_error_limit: usize,
    #[arg(long, env = "WS_ERROR_WINDOW", default_value = "10s", value_parser = duration)]
    pub ws_error_window: Duration,
    /// Server ping interval.
    #[arg(long, env = "WS_PING_INTERVAL", default_value = "20s", value_parser = duration)]
    pub ws_ping_interval: Duration,
    /// Close a connection silent for this long.
    #[arg(long, env = "WS_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub ws_idle_timeout: Duration,
    /// A session survives this long after its last connection closed.
    #[arg(long, env = "SESSION_TTL", default_value = "5m", value_parser = duration)]
    pub session_ttl: Duration,
    /// How long an on-demand symbol lookup may take.
    #[arg(long, env = "SYMBOL_LOOKUP_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub symbol_lookup_timeout: Duration,
    /// Largest batch the persistence worker writes in one transaction.
    #[arg(long, env = "PERSIST_BATCH", default_value_t = 2000)]
    pub persist_batch: usize,
    /// Longest a quote waits for its batch to fill.
    #[arg(long, env = "PERSIST_LINGER", default_value = "20ms", value_parser = duration)]
    pub persist_linger: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    /// Gateway HTTP port (0 picks a free port).
    #[arg(long, env = "GATEWAY_PORT", default_value_t = 8080)]
    pub gateway_port: u16,
    /// How often the gateway refreshes instance lists from the registry.
    #[arg(long, env = "GATEWAY_REFRESH", default_value = "2s", value_parser = duration)]
    pub gateway_refresh: Duration,
    /// Upstream timeout for proxied REST requests.
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub gateway_upstream_timeout: Duration,
}

/// The whole configuration; each role reads its part.
#[derive(Debug, Clone, Parser)]
#[command(name = "lizards", about = "Lizards settings", long_about = None)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonConfig,
    #[command(flatten)]
    pub registry: RegistryConfig,
    #[command(flatten)]
    pub ingestion: IngestionConfig,
    #[command(flatten)]
    pub provider: ProviderConfig,
    #[command(flatten)]
    pub gateway: GatewayConfig,
}

impl Config {
    /// The defaults alone, ignoring the environment (tests start from here).
    pub fn defaults() -> Config {
        let command = Config::command().mut_args(|arg| arg.env(None::<&'static str>));
        let matches = command.get_matches_from(["lizards"]);
        Config::from_arg_matches(&matches).expect("defaults are valid")
    }

    /// Defaults for tests: every port 0, state under `data_dir`, loopback only.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Config {
        Config::defaults().ephemeral(data_dir)
    }

    /// The same settings on loopback with free ports and state under
    /// `data_dir` (tests and in-process benchmarks).
    pub fn ephemeral(mut self, data_dir: impl Into<PathBuf>) -> Config {
        self.common.bind_host = IpAddr::from([127, 0, 0, 1]);
        self.common.data_dir = data_dir.into();
        self.registry.registry_port = 0;
        self.ingestion.ingestion_port = 0;
        self.provider.provider_port = 0;
        self.gateway.gateway_port = 0;
        self
    }

    /// The host a service advertises in the registry.
    pub fn advertise_host(&self) -> String {
        match &self.common.advertise_host {
            Some(host) => host.clone(),
            None if self.common.bind_host.is_unspecified() => "127.0.0.1".to_string(),
            None => self.common.bind_host.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::defaults();
        assert_eq!(c.gateway.gateway_port, 8080);
        assert_eq!(c.provider.provider_port, 7890);
        assert_eq!(c.registry.registry_port, 8500);
        assert_eq!(c.ingestion.ingestion_port, 8600);
        assert_eq!(c.common.registry_url, "http://127.0.0.1:8500");
        assert_eq!(c.provider.ws_max_symbols, 1024);
        assert_eq!(c.provider.ws_slow_close, Duration::from_secs(30));
        assert_eq!(c.provider.session_ttl, Duration::from_secs(300));
        assert_eq!(c.ingestion.sources, vec!["synthetic".to_string()]);
        assert_eq!(c.advertise_host(), "127.0.0.1");
    }
}
