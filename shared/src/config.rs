//! All configuration, in one place: a typed struct read from environment
//! variables (12-factor), each with its default, listed by `lizards --help`
//! and in docs/configuration.md.

use std::{net::IpAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::cache::Quota;

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
    /// Base URL of the service registry; empty: this role does not register
    /// (it must be found another way).
    #[arg(long, env = "REGISTRY_URL", default_value = "http://127.0.0.1:8500")]
    pub registry_url: String,
    /// Bearer token required for registry writes; unset: the registry
    /// accepts writes from loopback only.
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
    /// Bound in bytes of the in-process cache used when REDIS_URL is unset
    /// (sessions, cached responses, idempotent answers); past it the least
    /// recently used entries are evicted.
    #[arg(long, env = "CACHE_MAX_BYTES", default_value_t = crate::cache::memory::DEFAULT_MAX_BYTES)]
    pub cache_max_bytes: u64,
    /// HS256 secret that signs and verifies user tokens; unset means a random secret created once in DATA_DIR/jwt_secret.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Retention window in days: ingestion rejects quotes older than this.
    #[arg(long, env = "RETENTION_DAYS", default_value_t = 14)]
    pub retention_days: u32,
    /// How long an on-demand symbol lookup across the sources may take.
    #[arg(long, env = "SYMBOL_LOOKUP_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub symbol_lookup_timeout: Duration,
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
    /// Prometheus the SLO manager queries; unset: it scrapes the registered
    /// instances' `/metrics` itself.
    #[arg(long, env = "PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// How often every SLO is evaluated.
    #[arg(long, env = "SLO_INTERVAL", default_value = "15s", value_parser = duration)]
    pub slo_interval: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct IngestionConfig {
    /// Ingestion HTTP port (0 picks a free port).
    #[arg(long, env = "INGESTION_PORT", default_value_t = 8600)]
    pub ingestion_port: u16,
    /// Ingestion gRPC port, `dataprocessor.DataProcessor` (0 picks a free port).
    #[arg(long, env = "INGESTION_GRPC_PORT", default_value_t = 50051)]
    pub ingestion_grpc_port: u16,
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
    /// Embedded raw store: most documents kept (~0.65 KiB resident each,
    /// allocated for the cap at start).
    #[arg(long, env = "RAW_CAP", default_value_t = 50_000)]
    pub raw_cap: usize,
    /// Raw documents expire after this many days.
    #[arg(long, env = "RAW_TTL_DAYS", default_value_t = 7)]
    pub raw_ttl_days: u32,
    /// Symbols the web sources poll whatever the demand, comma separated.
    #[arg(long, env = "ALWAYS_ON_SYMBOLS", value_delimiter = ',')]
    pub always_on_symbols: Vec<String>,
    /// Symbols nobody demands any more are polled this much longer.
    #[arg(long, env = "DEMAND_GRACE", default_value = "5m", value_parser = duration)]
    pub demand_grace: Duration,
    /// One call to a web source, body included, gives up after this long.
    #[arg(long, env = "SOURCE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub source_timeout: Duration,
    /// A source's polling lease (Redis) lapses this long after its holder
    /// stops renewing it; another ingestion instance then takes over.
    #[arg(long, env = "SOURCE_LEASE_TTL", default_value = "15s", value_parser = duration)]
    pub source_lease_ttl: Duration,
    /// Outbound limits replacing the sources' free-tier defaults, comma
    /// separated `source=requests/window`, e.g. `finnhub=30/1m`.
    #[arg(long, env = "SOURCE_RATE_LIMITS")]
    pub source_rate_limits: Option<PerSource<Quota>>,
    /// Circuit breaker of every web source (one per source): failures
    /// within BREAKER_FAILURE_WINDOW that open it.
    #[arg(long, env = "BREAKER_FAILURE_THRESHOLD", default_value_t = 5)]
    pub breaker_failure_threshold: usize,
    /// Window in which breaker failures count (consecutive or not).
    #[arg(long, env = "BREAKER_FAILURE_WINDOW", default_value = "60s", value_parser = duration)]
    pub breaker_failure_window: Duration,
    /// An open breaker lets trial calls through after this long.
    #[arg(long, env = "BREAKER_RECOVERY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub breaker_recovery_timeout: Duration,
    /// Trial calls of a half-open breaker; that many successes close it.
    #[arg(long, env = "BREAKER_HALF_OPEN_CALLS", default_value_t = 3)]
    pub breaker_half_open_calls: usize,
    /// Poll interval of the Yahoo Finance chart source.
    #[arg(long, env = "POLL_INTERVAL_YAHOO", default_value = "60s", value_parser = duration)]
    pub poll_interval_yahoo: Duration,
    /// Poll interval of CoinGecko.
    #[arg(long, env = "POLL_INTERVAL_COINGECKO", default_value = "10m", value_parser = duration)]
    pub poll_interval_coingecko: Duration,
    /// Poll interval of Alpha Vantage (its free tier still caps the calls).
    #[arg(long, env = "POLL_INTERVAL_ALPHAVANTAGE", default_value = "60s", value_parser = duration)]
    pub poll_interval_alphavantage: Duration,
    /// Poll interval of Finnhub.
    #[arg(long, env = "POLL_INTERVAL_FINNHUB", default_value = "60s", value_parser = duration)]
    pub poll_interval_finnhub: Duration,
    /// Poll interval of Binance.
    #[arg(long, env = "POLL_INTERVAL_BINANCE", default_value = "60s", value_parser = duration)]
    pub poll_interval_binance: Duration,
    /// Poll interval of Stooq.
    #[arg(long, env = "POLL_INTERVAL_STOOQ", default_value = "60s", value_parser = duration)]
    pub poll_interval_stooq: Duration,
    /// Poll interval of HTML pages that set none in HTML_SOURCES_FILE.
    #[arg(long, env = "POLL_INTERVAL_HTML", default_value = "60s", value_parser = duration)]
    pub poll_interval_html: Duration,
    /// Base URL of the Yahoo Finance API (tests point it at a fixture server).
    #[arg(long, env = "YAHOO_URL", default_value = "https://query1.finance.yahoo.com/")]
    pub yahoo_url: String,
    /// Base URL of CoinGecko.
    #[arg(long, env = "COINGECKO_URL", default_value = "https://api.coingecko.com/")]
    pub coingecko_url: String,
    /// Base URL of Alpha Vantage.
    #[arg(long, env = "ALPHAVANTAGE_URL", default_value = "https://www.alphavantage.co/")]
    pub alphavantage_url: String,
    /// Base URL of Finnhub.
    #[arg(long, env = "FINNHUB_URL", default_value = "https://finnhub.io/")]
    pub finnhub_url: String,
    /// Base URL of Binance.
    #[arg(long, env = "BINANCE_URL", default_value = "https://api.binance.com/")]
    pub binance_url: String,
    /// Base URL of Stooq.
    #[arg(long, env = "STOOQ_URL", default_value = "https://stooq.com/")]
    pub stooq_url: String,
    /// CoinGecko demo API key (optional).
    #[arg(long, env = "COINGECKO_API_KEY", hide_env_values = true)]
    pub coingecko_api_key: Option<String>,
    /// Alpha Vantage API key (required by the `alphavantage` source).
    #[arg(long, env = "ALPHAVANTAGE_API_KEY", hide_env_values = true)]
    pub alphavantage_api_key: Option<String>,
    /// Finnhub API key (required by the `finnhub` source).
    #[arg(long, env = "FINNHUB_API_KEY", hide_env_values = true)]
    pub finnhub_api_key: Option<String>,
    /// Most distinct symbols ingestion publishes (sources and the ingest
    /// API together); a quote of a new symbol beyond it is rejected
    /// (`too_many_symbols`), so invented symbols cannot grow the stores
    /// without bound.
    #[arg(long, env = "INGEST_MAX_SYMBOLS", default_value_t = 10_000)]
    pub ingest_max_symbols: usize,
    /// Bearer token that lets a client write quotes (`POST /ingest`, gRPC
    /// `ProcessData`) besides an admin's JWT; unset: only admins may.
    #[arg(long, env = "INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// TOML file describing the pages of the `html` scraper source.
    #[arg(long, env = "HTML_SOURCES_FILE")]
    pub html_sources_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ProviderConfig {
    /// Provider HTTP and WebSocket port (0 picks a free port).
    #[arg(long, env = "PROVIDER_PORT", default_value_t = 7890)]
    pub provider_port: u16,
    /// Port of the gRPC accounts twin `lizards.v1.Accounts` (0 picks a free port).
    #[arg(long, env = "PROVIDER_GRPC_PORT", default_value_t = 50052)]
    pub provider_grpc_port: u16,
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
    /// Largest batch the persistence worker writes in one transaction.
    #[arg(long, env = "PERSIST_BATCH", default_value_t = 2000)]
    pub persist_batch: usize,
    /// Longest a quote waits for its batch to fill.
    #[arg(long, env = "PERSIST_LINGER", default_value = "20ms", value_parser = duration)]
    pub persist_linger: Duration,
    /// Lifetime of the access tokens POST /auth/login issues.
    #[arg(long, env = "JWT_TTL", default_value = "1h", value_parser = duration)]
    pub jwt_ttl: Duration,
    /// E-mail of the admin account ensured at start-up (with ADMIN_PASSWORD).
    /// Without both, an embedded start with no admin creates
    /// admin@lizards.local with a random password logged once.
    #[arg(long, env = "ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Password of the ADMIN_EMAIL account (at least 8 characters).
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// How often retention deletes old quotes and untracks unused symbols.
    #[arg(long, env = "RETENTION_INTERVAL", default_value = "1h", value_parser = duration)]
    pub retention_interval: Duration,
    /// Failed logins per account (`failures/window`, counted in Redis when
    /// set): past it, that account's logins wait (429 with Retry-After),
    /// whichever address they come from.
    #[arg(long, env = "LOGIN_FAILURES", default_value = "10/15m")]
    pub login_failures: Quota,
    /// Shortest cooldown an alert rule may ask for (the default is 15 min).
    #[arg(long, env = "ALERT_MIN_COOLDOWN", default_value = "60s", value_parser = duration)]
    pub alert_min_cooldown: Duration,
    /// Smallest percentage a `change_pct` or `portfolio_change_pct` rule may
    /// ask for (a tinier one fires on every tick).
    #[arg(long, env = "ALERT_MIN_CHANGE_PCT", default_value_t = 0.1)]
    pub alert_min_change_pct: f64,
    /// Alerts notified per user (`alerts/window`, shared through Redis when
    /// set); alerts beyond it are recorded with every delivery `suppressed`.
    #[arg(long, env = "ALERT_USER_QUOTA", default_value = "30/1h")]
    pub alert_user_quota: Quota,
    /// How long an Idempotency-Key's answer is kept for replay.
    #[arg(long, env = "IDEMPOTENCY_TTL", default_value = "24h", value_parser = duration)]
    pub idempotency_ttl: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    /// Gateway HTTP port (0 picks a free port).
    #[arg(long, env = "GATEWAY_PORT", default_value_t = 8080)]
    pub gateway_port: u16,
    /// How often the gateway refreshes instance lists from the registry.
    #[arg(long, env = "GATEWAY_REFRESH", default_value = "2s", value_parser = duration)]
    pub gateway_refresh: Duration,
    /// Upstream timeout for proxied requests (and WebSocket handshakes).
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub gateway_upstream_timeout: Duration,
    /// Per-route upstream timeouts overriding GATEWAY_UPSTREAM_TIMEOUT:
    /// comma-separated `path=duration`, the longest matching path wins (`*`
    /// matches one path segment).
    #[arg(long, env = "GATEWAY_ROUTE_TIMEOUTS", default_value = "/quotes=5s,/symbols=5s,/ingest=30s")]
    pub gateway_route_timeouts: PathRules<HumanDuration>,
    /// How a request picks among a service's instances.
    #[arg(long, env = "GATEWAY_BALANCER", value_enum, default_value = "p2c")]
    pub gateway_balancer: Balancer,
    /// Rate limiting at the gateway (shared through Redis when REDIS_URL is set).
    #[arg(long, env = "RATE_LIMIT", default_value_t = true, action = ArgAction::Set)]
    pub rate_limit: bool,
    /// Anonymous requests per client IP (`requests/window`).
    #[arg(long, env = "RATE_LIMIT_ANONYMOUS", default_value = "120/1m")]
    pub rate_limit_anonymous: Quota,
    /// Requests per user carrying a valid JWT.
    #[arg(long, env = "RATE_LIMIT_USER", default_value = "600/1m")]
    pub rate_limit_user: Quota,
    /// Anonymous symbol lookups (`GET /sources/lookup/...`) per client IP:
    /// each may cost a call to every source's free-tier quota.
    #[arg(long, env = "RATE_LIMIT_LOOKUP", default_value = "10/1m")]
    pub rate_limit_lookup: Quota,
    /// Reverse proxies in front of the gateway, comma-separated CIDRs
    /// (`10.0.0.0/8,::1/128`): their `X-Forwarded-For` names the client.
    /// Anyone else's is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Requests to `/auth/*` per client IP.
    #[arg(long, env = "RATE_LIMIT_AUTH", default_value = "10/1m")]
    pub rate_limit_auth: Quota,
    /// New WebSocket connections per client IP.
    #[arg(long, env = "RATE_LIMIT_WS", default_value = "30/1m")]
    pub rate_limit_ws: Quota,
    /// Response caching at the gateway (in Redis when REDIS_URL is set).
    #[arg(long, env = "CACHE", default_value_t = true, action = ArgAction::Set)]
    pub cache: bool,
    /// Cache TTL per GET route: comma-separated `path=duration`, the longest
    /// matching path wins (`*` matches one segment); other routes are not
    /// cached.
    #[arg(
        long,
        env = "CACHE_TTLS",
        default_value = "/quotes/*=1s,/quotes/*/history=10s,/quotes/*/mean=10s,/quotes/*/candles=10s,\
/symbols=1s,/symbols/search=60s,/sources=60s,/sources/status=5s,/services=2s"
    )]
    pub cache_ttls: PathRules<HumanDuration>,
    /// Origins allowed by CORS: `*` or a comma-separated list.
    #[arg(long, env = "CORS_ORIGINS", default_value = "*", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
}

/// The notifier (`--target notifier`): e-mail, webhook and Telegram
/// deliveries of fired alerts from the `notify` queue.
#[derive(Debug, Clone, Args)]
pub struct NotifierConfig {
    /// Notifier HTTP port for /metrics, /healthz and /readyz (0 picks a free port).
    #[arg(long, env = "NOTIFIER_PORT", default_value_t = 8700)]
    pub notifier_port: u16,
    /// SMTP server for e-mail notifications: `smtp://host:port` (plain),
    /// `smtp://host:port?tls=required` (STARTTLS) or `smtps://user:pass@host:465`
    /// (TLS); unset means e-mail deliveries are skipped.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender of notification e-mails.
    #[arg(long, env = "SMTP_FROM", default_value = "Lizards <alerts@lizards.local>")]
    pub smtp_from: String,
    /// Telegram bot token; unset means Telegram deliveries are skipped and
    /// the bot does not poll.
    #[arg(long, env = "TELEGRAM_BOT_TOKEN", hide_env_values = true)]
    pub telegram_bot_token: Option<String>,
    /// Base URL of the Telegram Bot API (tests point it at a local fake).
    #[arg(long, env = "TELEGRAM_API_URL", default_value = "https://api.telegram.org")]
    pub telegram_api_url: String,
    /// Poll the bot's updates for `/start <code>` and `/set <seconds>`
    /// (only one notifier per bot token may poll).
    #[arg(long, env = "TELEGRAM_POLL", default_value_t = true, action = ArgAction::Set)]
    pub telegram_poll: bool,
    /// Long-polling timeout of one getUpdates call (whole seconds).
    #[arg(long, env = "TELEGRAM_POLL_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub telegram_poll_timeout: Duration,
    /// Attempts per channel before a delivery fails and its message is dead-lettered.
    #[arg(long, env = "NOTIFY_MAX_ATTEMPTS", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    pub notify_max_attempts: u32,
    /// Wait before the first retry; it doubles on each further retry.
    #[arg(long, env = "NOTIFY_RETRY_BASE", default_value = "1s", value_parser = duration)]
    pub notify_retry_base: Duration,
    /// Longest wait between two retries.
    #[arg(long, env = "NOTIFY_RETRY_MAX", default_value = "60s", value_parser = duration)]
    pub notify_retry_max: Duration,
    /// One webhook POST (and one Telegram call) gives up after this long.
    #[arg(long, env = "WEBHOOK_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub webhook_timeout: Duration,
    /// Let webhook URLs name loopback, private, link-local and other
    /// internal addresses (tests, private deployments); refused otherwise.
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = ArgAction::Set)]
    pub webhook_allow_private: bool,
}

/// How the gateway spreads requests over a service's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Balancer {
    /// Each instance in turn.
    RoundRobin,
    /// The less busy of two instances picked at random (power of two choices).
    P2c,
}

/// Values per source id: `finnhub=30/1m,yahoo=60/1m`.
#[derive(Debug, Clone, PartialEq)]
pub struct PerSource<T>(pub Vec<(String, T)>);

impl<T> PerSource<T> {
    pub fn get(&self, source: &str) -> Option<&T> {
        self.0.iter().find(|(id, _)| id == source).map(|(_, value)| value)
    }
}

impl<T: FromStr> FromStr for PerSource<T>
where
    T::Err: std::fmt::Display,
{
    type Err = String;

    fn from_str(text: &str) -> Result<PerSource<T>, String> {
        let entries = text.split(',').map(str::trim).filter(|entry| !entry.is_empty());
        let parsed = entries.map(|entry| {
            let (id, value) = entry.split_once('=').ok_or_else(|| format!("{entry:?} is not source=value"))?;
            let value = value.trim().parse::<T>().map_err(|e| format!("{}: {e}", id.trim()))?;
            Ok((id.trim().to_string(), value))
        });
        parsed.collect::<Result<Vec<_>, String>>().map(PerSource)
    }
}

/// A duration written the human way (`5s`, `1m30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;

    fn from_str(text: &str) -> Result<HumanDuration, Self::Err> {
        duration(text).map(HumanDuration)
    }
}

/// Values by URL path: `/quotes/*/history=10s,/sources=60s`. A rule matches
/// a path whose leading segments it matches (`*` matches any one segment);
/// the rule with the most segments wins.
#[derive(Debug, Clone, PartialEq)]
pub struct PathRules<T> {
    rules: Vec<(Vec<String>, T)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PathRulesError {
    #[error("'{0}' is not `path=value`")]
    NotAPair(String),
    #[error("'{0}' does not start with '/'")]
    NotAPath(String),
    #[error("'{rule}': {reason}")]
    BadValue { rule: String, reason: String },
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl<T> PathRules<T> {
    /// The value of the most specific rule matching `path`.
    pub fn lookup(&self, path: &str) -> Option<&T> {
        self.rules
            .iter()
            .filter(|(pattern, _)| {
                let mut path = segments(path);
                pattern.iter().all(|want| path.next().is_some_and(|got| want == "*" || want == got))
            })
            .max_by_key(|(pattern, _)| pattern.len())
            .map(|(_, value)| value)
    }
}

impl<T: FromStr> FromStr for PathRules<T>
where
    T::Err: std::fmt::Display,
{
    type Err = PathRulesError;

    fn from_str(text: &str) -> Result<PathRules<T>, PathRulesError> {
        let mut rules = Vec::new();
        for rule in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (path, value) = rule.split_once('=').ok_or_else(|| PathRulesError::NotAPair(rule.to_string()))?;
            if !path.starts_with('/') {
                return Err(PathRulesError::NotAPath(path.to_string()));
            }
            let value = value
                .trim()
                .parse()
                .map_err(|e: T::Err| PathRulesError::BadValue { rule: rule.to_string(), reason: e.to_string() })?;
            rules.push((segments(path.trim()).map(str::to_string).collect(), value));
        }
        Ok(PathRules { rules })
    }
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
    #[command(flatten)]
    pub notifier: NotifierConfig,
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
        self.ingestion.ingestion_grpc_port = 0;
        self.provider.provider_port = 0;
        self.provider.provider_grpc_port = 0;
        self.gateway.gateway_port = 0;
        self.notifier.notifier_port = 0;
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
        assert_eq!(c.ingestion.ingestion_grpc_port, 50051);
        assert_eq!(c.notifier.notifier_port, 8700);
        assert_eq!(c.common.registry_url, "http://127.0.0.1:8500");
        assert_eq!(c.provider.ws_max_symbols, 1024);
        assert_eq!(c.provider.ws_slow_close, Duration::from_secs(30));
        assert_eq!(c.provider.session_ttl, Duration::from_secs(300));
        assert_eq!(c.ingestion.sources, vec!["synthetic".to_string()]);
        assert_eq!(c.advertise_host(), "127.0.0.1");
        assert_eq!(c.gateway.rate_limit_anonymous, Quota::new(120, Duration::from_secs(60)));
        assert_eq!(c.gateway.rate_limit_auth, Quota::new(10, Duration::from_secs(60)));
        assert_eq!(c.gateway.cache_ttls.lookup("/quotes/AAPL"), Some(&HumanDuration(Duration::from_secs(1))));
    }

    #[test]
    fn path_rules_pick_the_most_specific_match() {
        let rules: PathRules<HumanDuration> = "/quotes/*=1s, /quotes/*/history=10s,/sources=60s".parse().unwrap();
        let ttl = |path| rules.lookup(path).map(|d| d.0.as_secs());
        assert_eq!(ttl("/quotes/AAPL"), Some(1));
        assert_eq!(ttl("/quotes/AAPL/history"), Some(10));
        assert_eq!(ttl("/quotes/AAPL/mean"), Some(1));
        assert_eq!(ttl("/sources/status"), Some(60));
        assert_eq!(ttl("/quotes"), None, "`*` needs a segment");
        assert_eq!(ttl("/symbols"), None);
    }

    #[test]
    fn path_rules_reject_malformed_text() {
        assert!("/quotes".parse::<PathRules<HumanDuration>>().is_err());
        assert!("quotes=1s".parse::<PathRules<HumanDuration>>().is_err());
        assert!("/quotes=soon".parse::<PathRules<HumanDuration>>().is_err());
        assert!("".parse::<PathRules<HumanDuration>>().unwrap().lookup("/x").is_none());
    }

    #[test]
    fn per_source_values_parse_and_name_the_bad_entry() {
        let limits: PerSource<Quota> = "finnhub=30/1m, yahoo = 60/1m".parse().unwrap();
        assert_eq!(limits.get("finnhub"), Some(&Quota::new(30, Duration::from_secs(60))));
        assert_eq!(limits.get("yahoo"), Some(&Quota::new(60, Duration::from_secs(60))));
        assert_eq!(limits.get("stooq"), None);
        let error = "finnhub=lots".parse::<PerSource<Quota>>().unwrap_err();
        assert!(error.starts_with("finnhub:"), "{error}");
        assert!("finnhub".parse::<PerSource<Quota>>().is_err());
    }
}
