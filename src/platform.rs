//! Starts one role or every role (`--target all`). In `all`, each service
//! listens on its own port and they find each other through the registry
//! over loopback, exactly as separate processes would; only the embedded
//! backends (broker, stores, cache) are shared in-process objects.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use clap::ValueEnum;
use lizards_provider::Backends;
use lizards_registry::{MemoryRegistryStore, RedisRegistryStore, RegistryStore};
use lizards_shared::{
    accounts::AccountStore,
    broker::{AmqpBroker, Broker, MemoryBroker},
    cache::{Cache, MemoryCache, RedisCache},
    config::Config,
    rawstore::{MemoryRawStore, MongoRawStore, RawStore},
    secrets,
    service::Started,
    shutdown::Shutdown,
    slo::SloStore,
    store::{PostgresStore, QuoteStore, SqliteStore},
    supervisor::{Supervisor, WorkerFailure},
};

/// Prefix of every Redis key Lizards writes.
const REDIS_PREFIX: &str = "lizards";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    All,
    Gateway,
    Registry,
    Ingestion,
    Provider,
    Notifier,
}

/// Addresses of the roles started, and their serving tasks.
#[derive(Default)]
pub struct Platform {
    pub registry: Option<SocketAddr>,
    pub ingestion: Option<SocketAddr>,
    /// Ingestion's gRPC `dataprocessor.DataProcessor`.
    pub ingestion_grpc: Option<SocketAddr>,
    pub provider: Option<SocketAddr>,
    /// The provider's gRPC `lizards.v1.Accounts`.
    pub provider_grpc: Option<SocketAddr>,
    pub gateway: Option<SocketAddr>,
    pub notifier: Option<SocketAddr>,
    /// The roles' broker (benchmarks publish on it as ingestion would).
    pub broker: Option<Arc<dyn Broker>>,
    /// Each started role's workers (tests abort one as a crash would).
    pub supervisors: Vec<Supervisor>,
    tasks: Vec<RoleTask>,
    /// The registry stops last, so the other roles can deregister.
    registry_task: Option<(Shutdown, RoleTask)>,
}

use lizards_shared::service::Serving as RoleTask;

impl Platform {
    /// Waits until every role has stopped (after the shutdown token);
    /// `Err` names the first worker a role could not run without.
    pub async fn stopped(self) -> anyhow::Result<()> {
        let mut failure = None;
        for task in self.tasks {
            record(&mut failure, task.await);
        }
        if let Some((shutdown, task)) = self.registry_task {
            shutdown.cancel();
            record(&mut failure, task.await);
        }
        failure.map_or(Ok(()), Err)
    }
}

fn record(first: &mut Option<anyhow::Error>, ended: Result<Result<(), WorkerFailure>, tokio::task::JoinError>) {
    let error = match ended {
        Ok(Ok(())) => return,
        Ok(Err(failure)) => anyhow::Error::new(failure),
        Err(panic) => anyhow::anyhow!("a role's serving task failed: {panic}"),
    };
    first.get_or_insert(error);
}

/// Runs a started role. When it ends, for whatever reason, every role of
/// the process stops: a process missing a role must not look healthy.
fn run(platform: &mut Platform, started: Started, stop_all: Shutdown) -> (SocketAddr, RoleTask) {
    platform.supervisors.push(started.supervisor);
    let serve = started.serve;
    let task = tokio::spawn(async move {
        let stopped = serve.await;
        stop_all.cancel();
        stopped
    });
    (started.addr, task)
}

/// Backends shared by the roles of this process: the real system where its
/// URL is set, the embedded adapter otherwise.
struct Shared {
    broker: Arc<dyn Broker>,
    raw: Arc<dyn RawStore>,
    cache: Arc<dyn Cache>,
}

impl Shared {
    async fn connect(config: &Config) -> anyhow::Result<Shared> {
        let raw_ttl = Duration::from_secs(u64::from(config.ingestion.raw_ttl_days) * 86_400);
        let broker: Arc<dyn Broker> = match &config.common.amqp_url {
            Some(url) => {
                let broker = AmqpBroker::connect(url).await.with_context(|| "connecting to RabbitMQ (AMQP_URL)")?;
                tracing::info!("broker: RabbitMQ");
                Arc::new(broker)
            }
            None => Arc::new(MemoryBroker::new()),
        };
        let raw: Arc<dyn RawStore> = match &config.common.mongodb_uri {
            Some(uri) => {
                let store = MongoRawStore::connect(uri, &config.common.mongodb_database, raw_ttl)
                    .await
                    .with_context(|| "connecting to MongoDB (MONGODB_URI)")?;
                tracing::info!("raw store: MongoDB");
                Arc::new(store)
            }
            None => Arc::new(MemoryRawStore::new(config.ingestion.raw_cap, raw_ttl)),
        };
        let cache: Arc<dyn Cache> = match &config.common.redis_url {
            Some(url) => {
                let cache =
                    RedisCache::connect(url, REDIS_PREFIX).await.with_context(|| "connecting to Redis (REDIS_URL)")?;
                tracing::info!("cache: Redis");
                Arc::new(cache)
            }
            None => Arc::new(MemoryCache::new(config.common.cache_max_bytes)),
        };
        Ok(Shared { broker, raw, cache })
    }

    /// Registry state: in Redis when set (shared by registry instances).
    async fn registry_store(config: &Config) -> anyhow::Result<Arc<dyn RegistryStore>> {
        Ok(match &config.common.redis_url {
            Some(url) => Arc::new(
                RedisRegistryStore::connect(url, &format!("{REDIS_PREFIX}:registry"))
                    .await
                    .with_context(|| "connecting to Redis for registry state (REDIS_URL)")?,
            ),
            None => Arc::new(MemoryRegistryStore::new()),
        })
    }

    fn embedded_broker(config: &Config) -> bool {
        config.common.amqp_url.is_none()
    }
}

/// The SQL store (PostgreSQL when DATABASE_URL is set, else SQLite under
/// DATA_DIR) as its three ports.
#[derive(Clone)]
struct Sql {
    quotes: Arc<dyn QuoteStore>,
    accounts: Arc<dyn AccountStore>,
    slos: Arc<dyn SloStore>,
}

async fn sql_store(config: &Config) -> anyhow::Result<Sql> {
    if let Some(url) = &config.common.database_url {
        let store =
            Arc::new(PostgresStore::connect(url).await.with_context(|| "connecting to PostgreSQL (DATABASE_URL)")?);
        tracing::info!("SQL store: PostgreSQL");
        return Ok(Sql { quotes: store.clone(), accounts: store.clone(), slos: store });
    }
    let path = config.common.data_dir.join("lizards.db");
    let store = Arc::new(SqliteStore::open(&path).await.with_context(|| format!("opening {}", path.display()))?);
    Ok(Sql { quotes: store.clone(), accounts: store.clone(), slos: store })
}

/// Embedded mode: every role in one process with in-process backends, the
/// only mode in which weak secrets are tolerated (nothing is shared).
pub fn is_embedded(config: &Config, target: Target) -> bool {
    target == Target::All && config.common.amqp_url.is_none() && config.common.database_url.is_none()
}

/// Starts `target` and returns once every started role is listening.
pub async fn start(mut config: Config, target: Target, shutdown: Shutdown) -> anyhow::Result<Platform> {
    lizards_shared::http::install_crypto();
    let mut platform = Platform::default();
    let all = target == Target::All;
    secrets::check(&config, is_embedded(&config, target))?;
    if !all
        && matches!(target, Target::Ingestion | Target::Provider | Target::Notifier)
        && Shared::embedded_broker(&config)
    {
        tracing::warn!("the embedded broker only connects roles inside one process; set AMQP_URL or run --target all");
    }
    let backends = Shared::connect(&config).await?;
    platform.broker = Some(backends.broker.clone());
    // The registry (SLOs), the provider and the notifier share one SQL
    // store in a process.
    let sql = if all || matches!(target, Target::Registry | Target::Provider | Target::Notifier) {
        Some(sql_store(&config).await?)
    } else {
        None
    };

    if all || target == Target::Registry {
        let registry_shutdown = if all { Shutdown::new() } else { shutdown.clone() };
        let stores = lizards_registry::Stores {
            registry: Shared::registry_store(&config).await?,
            slos: sql.as_ref().context("SQL store")?.slos.clone(),
        };
        let started = lizards_registry::build_with(config.clone(), registry_shutdown.clone(), stores).await?;
        // Roles started after the registry use the address it really bound.
        config.common.registry_url = format!("http://{}", lizards_shared::http::dialable(started.addr));
        let (addr, task) = run(&mut platform, started, shutdown.clone());
        platform.registry = Some(addr);
        platform.registry_task = Some((registry_shutdown, task));
    }
    if all || target == Target::Ingestion {
        let started = lizards_ingestion::build(
            config.clone(),
            backends.broker.clone(),
            backends.raw.clone(),
            backends.cache.clone(),
            shutdown.clone(),
        )
        .await?;
        platform.ingestion_grpc = started.grpc;
        let (addr, task) = run(&mut platform, started, shutdown.clone());
        platform.ingestion = Some(addr);
        platform.tasks.push(task);
    }
    if all || target == Target::Provider {
        let Sql { quotes: store, accounts, .. } = sql.clone().context("SQL store")?;
        let backends = Backends { broker: backends.broker.clone(), store, accounts, cache: backends.cache.clone() };
        let started = lizards_provider::build(config.clone(), backends, shutdown.clone()).await?;
        platform.provider_grpc = started.grpc;
        let (addr, task) = run(&mut platform, started, shutdown.clone());
        platform.provider = Some(addr);
        platform.tasks.push(task);
    }
    if all || target == Target::Notifier {
        let accounts = sql.as_ref().context("SQL store")?.accounts.clone();
        let backends = lizards_provider::notifier::Backends { broker: backends.broker.clone(), accounts };
        let started = lizards_provider::notifier::build(config.clone(), backends, shutdown.clone()).await?;
        let (addr, task) = run(&mut platform, started, shutdown.clone());
        platform.notifier = Some(addr);
        platform.tasks.push(task);
    }
    if all || target == Target::Gateway {
        let started = lizards_gateway::build(config.clone(), backends.cache.clone(), shutdown.clone()).await?;
        let (addr, task) = run(&mut platform, started, shutdown.clone());
        platform.gateway = Some(addr);
        platform.tasks.push(task);
    }
    Ok(platform)
}
