//! The notifier (`--target notifier`): consumes fired alerts from
//! the durable `notify` queue and delivers them by e-mail (SMTP), webhook
//! (signed JSON POST) and Telegram, with the user's minimum interval
//! between notifications, retries with backoff and dead-lettering after
//! the last attempt. A Telegram bot links chats (`/start <code>`) and sets
//! the interval (`/set <seconds>`). Serves `/metrics`, `/healthz` and
//! `/readyz` on NOTIFIER_PORT and registers as `notifier`.

pub mod bot;
pub mod deliver;
pub mod email;
pub mod metrics;
pub mod telegram;
pub mod templates;
pub mod webhook;
pub mod worker;

use std::{sync::Arc, time::Duration};

use lizards_shared::{
    accounts::AccountStore,
    broker::{Broker, BrokerError, declare_topology},
    config::Config,
    discovery::{Registration, RegistryClient, keep_registered},
    openapi,
    service::Started,
    shutdown::Shutdown,
    supervisor::{Policy, Supervisor},
    telemetry::{self, HttpMetrics, Readiness},
};

use self::{
    bot::Bot,
    deliver::{Deliverer, Retry},
    email::{Mailer, MailerError},
    telegram::Telegram,
    webhook::Webhooks,
    worker::Worker,
};

pub const SERVICE_ID: &str = "notifier";

/// Longest shutdown waits for notifications being sent.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// What the notifier runs on.
pub struct Backends {
    pub broker: Arc<dyn Broker>,
    /// Users (targets, minimum interval, Telegram links) and alerts with
    /// their delivery states.
    pub accounts: Arc<dyn AccountStore>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error(transparent)]
    Bind(#[from] lizards_shared::http::BindError),
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Mailer(#[from] MailerError),
}

/// Binds NOTIFIER_PORT and starts consuming; the future serves until
/// `shutdown`, then lets the notifications in flight finish (bounded).
pub async fn build(config: Config, backends: Backends, shutdown: Shutdown) -> Result<Started, NotifierError> {
    lizards_shared::http::install_crypto();
    let Backends { broker, accounts } = backends;
    declare_topology(broker.as_ref()).await?;
    let n = &config.notifier;

    let registry = telemetry::metrics_registry(SERVICE_ID);
    let metrics = metrics::Metrics::new(&registry);
    let mailer = n.smtp_url.as_deref().map(|url| Mailer::new(url, &n.smtp_from)).transpose()?;
    let telegram = n
        .telegram_bot_token
        .as_deref()
        .map(|token| Arc::new(Telegram::new(&n.telegram_api_url, token, n.webhook_timeout)));
    tracing::info!(email = mailer.is_some(), telegram = telegram.is_some(), "notifier channels");
    let deliverer = Arc::new(Deliverer {
        store: accounts.clone(),
        mailer,
        webhooks: Webhooks::new(n.webhook_timeout, n.webhook_allow_private),
        telegram: telegram.clone(),
        retry: Retry { max_attempts: n.notify_max_attempts.max(1), base: n.notify_retry_base, max: n.notify_retry_max },
        metrics: metrics.clone(),
    });

    let supervisor = Supervisor::new(SERVICE_ID, &registry, shutdown.clone());
    let readiness: Readiness = {
        let (broker, accounts, workers) = (broker.clone(), accounts.clone(), supervisor.clone());
        Arc::new(move || {
            let (broker, accounts, workers) = (broker.clone(), accounts.clone(), workers.check());
            Box::pin(async move {
                workers?;
                broker.ping().await.map_err(|e| e.to_string())?;
                // The accounts port has no ping: a cheap query stands in.
                accounts.has_admin().await.map(|_| ()).map_err(|e| e.to_string())
            })
        })
    };
    let routes = telemetry::ops_routes(registry.clone(), readiness)
        .merge(openapi::routes(&openapi::document(include_str!("../../openapi-notifier.json"))));
    let router = telemetry::http_layers(routes, HttpMetrics::new(&registry, &metrics.ops));
    let (listener, addr) =
        lizards_shared::http::bind("notifier's HTTP listener", config.common.bind_host, n.notifier_port).await?;
    tracing::info!(%addr, "notifier listening");

    let worker = Worker { broker, deliverer, metrics: metrics.clone(), drain: DRAIN_GRACE };
    supervisor.spawn("deliveries", Policy::Restart, move |stop| worker.clone().run(stop));
    if let Some(telegram) = telegram.filter(|_| n.telegram_poll) {
        let bot = Bot { telegram, store: accounts, metrics, poll_timeout: n.telegram_poll_timeout };
        supervisor.spawn("Telegram bot", Policy::Restart, move |stop| bot.clone().run(stop));
    }

    let registry_client = RegistryClient::new(&config.common.registry_url, config.common.registry_token.clone());
    let registration = Registration::http(SERVICE_ID, "Lizards notifier", &config.advertise_host(), addr.port());
    let heartbeat = config.common.registry_heartbeat;
    supervisor.spawn("registration", Policy::Restart, move |stop| {
        keep_registered(registry_client.clone(), registration.clone(), heartbeat, stop)
    });
    let http_server = axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).into_future();
    supervisor.spawn_once("HTTP server", async move {
        http_server.await.map_err(|error| format!("serving HTTP on {addr}: {error}"))
    });

    let workers = supervisor.clone();
    let serve = async move {
        let stopped = workers.stopped().await;
        tracing::info!("notifier stopped");
        stopped
    };
    Ok(Started { addr, grpc: None, supervisor, serve: Box::pin(serve) })
}
