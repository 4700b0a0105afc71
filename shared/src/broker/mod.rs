//! The message-broker port (docs/architecture.md, Broker topology). The embedded adapter keeps RabbitMQ's
//! semantics so the AMQP adapter drops in: topic exchanges, durable and
//! exclusive queues, prefetch, manual ack/nack, redelivery of a lost
//! consumer's unacked messages, dead-lettering and publisher confirms
//! (`publish` returns once the broker has taken the message).

pub mod amqp;
pub mod memory;

use async_trait::async_trait;
use bytes::Bytes;

pub use amqp::AmqpBroker;
pub use memory::MemoryBroker;

pub const QUOTES_EXCHANGE: &str = "quotes";
pub const CONTROL_EXCHANGE: &str = "control";
pub const DEAD_LETTER_EXCHANGE: &str = "dlx";
pub const DEAD_QUEUE: &str = "dead";
pub const PERSIST_QUEUE: &str = "provider.persist";
/// Every quote, evaluated once against the alert rules (competing consumers).
pub const ALERTS_EVAL_QUEUE: &str = "alerts.eval";
/// Most messages (single quotes or batches) waiting for alert evaluation.
pub const ALERTS_EVAL_MAX: usize = 100_000;
/// Fired alerts, routing key `alert.<user id>`.
pub const ALERTS_EXCHANGE: &str = "alerts";
/// Fired alerts for the notifier (acked after delivery).
pub const NOTIFY_QUEUE: &str = "notify";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Topic,
    Fanout,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub durable: bool,
    /// Deleted when its last consumer goes away.
    pub auto_delete: bool,
    pub dead_letter_exchange: Option<String>,
    /// Oldest messages are dropped beyond this length (dead-lettered when
    /// the queue has a dead-letter exchange).
    pub max_length: Option<usize>,
}

impl QueueSpec {
    pub fn durable(name: &str) -> QueueSpec {
        QueueSpec { name: name.to_string(), durable: true, ..QueueSpec::default() }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ConsumeOptions {
    /// Most unacknowledged deliveries at once (0: unlimited).
    pub prefetch: u16,
    /// Deliveries count as acknowledged when sent.
    pub no_ack: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown exchange '{0}'")]
    UnknownExchange(String),
    #[error("unknown queue '{0}'")]
    UnknownQueue(String),
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("publish not confirmed: {0}")]
    NotConfirmed(String),
    /// A queue or exchange declared again with other settings (AMQP 406
    /// PRECONDITION_FAILED); the first declaration stands.
    #[error("'{name}' already exists with other settings: {detail}")]
    Inequivalent { name: String, detail: String },
    /// An ack or nack of a delivery that is no longer outstanding: already
    /// settled, or its consumer (channel) is gone and it went back to the
    /// queue.
    #[error("delivery can no longer be settled: {0}")]
    Stale(String),
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    async fn declare_exchange(&self, name: &str, kind: ExchangeKind) -> Result<(), BrokerError>;
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<(), BrokerError>;
    async fn bind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BrokerError>;
    async fn unbind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BrokerError>;
    /// Returns once the broker confirmed the message (publisher confirms).
    async fn publish(&self, exchange: &str, routing_key: &str, body: Bytes) -> Result<(), BrokerError>;
    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Box<dyn Consumer>, BrokerError>;
    /// Ready messages waiting in a queue.
    async fn queue_len(&self, queue: &str) -> Result<usize, BrokerError>;
    /// Succeeds while the broker is reachable.
    async fn ping(&self) -> Result<(), BrokerError>;
}

#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `None` once the queue or connection is gone.
    async fn next(&mut self) -> Option<Delivery>;
    /// A delivery that is ready now, without waiting.
    fn try_next(&mut self) -> Option<Delivery>;
    /// Stops deliveries and hands unacked messages back to the queue; once
    /// it returns, nothing more arrives here. Dropping a consumer does the
    /// same, but (with a real broker) only eventually.
    async fn cancel(&mut self);
}

#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<(), BrokerError>;
    /// Acknowledges this delivery and every earlier unacknowledged one of
    /// the same consumer (AMQP `multiple`): one frame for a whole batch.
    async fn ack_through(&self) -> Result<(), BrokerError>;
    async fn nack(&self, requeue: bool) -> Result<(), BrokerError>;
}

/// One message handed to a consumer.
pub struct Delivery {
    pub body: Bytes,
    pub routing_key: String,
    pub redelivered: bool,
    acker: Option<Box<dyn Acker>>,
}

impl Delivery {
    pub fn new(body: Bytes, routing_key: String, redelivered: bool, acker: Option<Box<dyn Acker>>) -> Delivery {
        Delivery { body, routing_key, redelivered, acker }
    }

    pub async fn ack(self) -> Result<(), BrokerError> {
        match self.acker {
            Some(acker) => acker.ack().await,
            None => Ok(()),
        }
    }

    /// Acknowledges this and every earlier unsettled delivery of its consumer.
    pub async fn ack_through(self) -> Result<(), BrokerError> {
        match self.acker {
            Some(acker) => acker.ack_through().await,
            None => Ok(()),
        }
    }

    /// Rejects the message: back to the queue, or to the dead-letter exchange.
    pub async fn nack(self, requeue: bool) -> Result<(), BrokerError> {
        match self.acker {
            Some(acker) => acker.nack(requeue).await,
            None => Ok(()),
        }
    }
}

/// Declares the shared topology: `quotes`, `control` and `alerts` topic
/// exchanges, `dlx` with its `dead` queue, and the durable queues
/// `provider.persist` and `alerts.eval` (every quote) and `notify` (every
/// alert); the persist and notify queues dead-letter to `dlx`.
pub async fn declare_topology(broker: &dyn Broker) -> Result<(), BrokerError> {
    broker.declare_exchange(QUOTES_EXCHANGE, ExchangeKind::Topic).await?;
    broker.declare_exchange(CONTROL_EXCHANGE, ExchangeKind::Topic).await?;
    broker.declare_exchange(ALERTS_EXCHANGE, ExchangeKind::Topic).await?;
    broker.declare_exchange(DEAD_LETTER_EXCHANGE, ExchangeKind::Fanout).await?;
    broker.declare_queue(&QueueSpec::durable(DEAD_QUEUE)).await?;
    broker.bind(DEAD_QUEUE, DEAD_LETTER_EXCHANGE, "#").await?;
    let dead_lettered =
        |name| QueueSpec { dead_letter_exchange: Some(DEAD_LETTER_EXCHANGE.to_string()), ..QueueSpec::durable(name) };
    // Without a provider running, alerts.eval would grow without bound; quotes
    // dropped from its head are stale for alerting anyway (and not
    // dead-lettered: they are not poison).
    let eval = QueueSpec { max_length: Some(ALERTS_EVAL_MAX), ..QueueSpec::durable(ALERTS_EVAL_QUEUE) };
    for (spec, exchange, pattern) in [
        (dead_lettered(PERSIST_QUEUE), QUOTES_EXCHANGE, "quote.#"),
        (eval, QUOTES_EXCHANGE, "quote.#"),
        (dead_lettered(NOTIFY_QUEUE), ALERTS_EXCHANGE, "alert.#"),
    ] {
        broker.declare_queue(&spec).await?;
        broker.bind(&spec.name, exchange, pattern).await?;
    }
    Ok(())
}

/// AMQP topic matching: `*` is one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(pw), Some(kw)) if pw == kw => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

/// A message looked at and left in its queue.
#[derive(Debug, Clone)]
pub struct Peeked {
    pub routing_key: String,
    pub body: Bytes,
    pub redelivered: bool,
}

/// Longest a peek waits for the messages the queue said it holds (another
/// consumer may have taken them meanwhile).
const PEEK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The number of ready messages in `queue` and the first `limit` of them,
/// left in place: taken unacked and handed back when the peeking consumer
/// is cancelled (they keep their order and come back marked redelivered).
/// For queues nobody consumes, such as `dead`.
pub async fn peek(broker: &dyn Broker, queue: &str, limit: u16) -> Result<(usize, Vec<Peeked>), BrokerError> {
    let waiting = broker.queue_len(queue).await?;
    let wanted = waiting.min(usize::from(limit));
    let mut seen = Vec::with_capacity(wanted);
    if wanted > 0 {
        let mut consumer = broker.consume(queue, ConsumeOptions { prefetch: limit, no_ack: false }).await?;
        let _ = tokio::time::timeout(PEEK_WAIT, async {
            while seen.len() < wanted
                && let Some(delivery) = consumer.next().await
            {
                seen.push(Peeked {
                    routing_key: delivery.routing_key.clone(),
                    body: delivery.body.clone(),
                    redelivered: delivery.redelivered,
                });
            }
        })
        .await;
        consumer.cancel().await;
    }
    Ok((waiting, seen))
}

/// Starts consuming `queue`, retrying with the jittered backoff (100 ms up
/// to 10 s) while the broker refuses; `None` when shutdown comes first.
pub async fn consume_retrying(
    broker: &dyn Broker,
    queue: &str,
    options: ConsumeOptions,
    shutdown: &crate::shutdown::Shutdown,
) -> Option<Box<dyn Consumer>> {
    let mut backoff =
        crate::retry::Backoff::new(std::time::Duration::from_millis(100), std::time::Duration::from_secs(10));
    loop {
        match broker.consume(queue, options).await {
            Ok(consumer) => return Some(consumer),
            Err(error) => {
                tracing::warn!(%error, queue, "cannot consume, retrying");
                if !backoff.wait(shutdown).await {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("quote.#", "quote.AAPL"));
        assert!(topic_matches("quote.*", "quote.BRK_B"));
        assert!(topic_matches("#", "quote.AAPL"));
        assert!(topic_matches("quote.AAPL", "quote.AAPL"));
        assert!(!topic_matches("quote.AAPL", "quote.MSFT"));
        assert!(!topic_matches("quote.*", "quote.a.b"));
        assert!(topic_matches("quote.#", "quote"));
        assert!(!topic_matches("control.*", "quote.AAPL"));
    }
}
