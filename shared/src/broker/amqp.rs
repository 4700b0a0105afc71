//! RabbitMQ adapter (lapin). One connection with a confirm-mode publishing
//! channel, one channel per consumer. The topology this process declared is
//! remembered and replayed after a reconnect, and consumers re-open
//! themselves, so a broker restart is survived: nothing confirmed is lost,
//! unacked deliveries are redelivered by RabbitMQ, and publishes fail (are
//! not confirmed) only while the broker is away.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
};
use tokio::sync::Mutex as AsyncMutex;

use super::{Acker, Broker, BrokerError, ConsumeOptions, Consumer, Delivery, ExchangeKind, QueueSpec};
use crate::retry::Backoff;

/// Longest wait for the broker when (re)connecting in a request path.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Backoff bounds of consumers waiting for the broker to come back.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

#[derive(Clone)]
pub struct AmqpBroker {
    inner: Arc<Inner>,
}

struct Inner {
    uri: String,
    /// The live connection and its publishing channel, read on every
    /// publish without waiting; replaced on reconnect.
    current: Mutex<Option<Link>>,
    /// Serializes reconnects, so one outage opens one new connection.
    link: AsyncMutex<()>,
    topology: Mutex<Topology>,
}

#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    publisher: Channel,
}

/// What this process declared, to replay after a reconnect.
#[derive(Default, Clone)]
struct Topology {
    exchanges: Vec<(String, ExchangeKind)>,
    queues: Vec<QueueSpec>,
    bindings: BTreeSet<(String, String, String)>,
}

fn unavailable(error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(error.to_string())
}

/// Maps AMQP channel errors (404 NOT_FOUND, 406 PRECONDITION_FAILED) to
/// the port's errors.
fn classify(error: lapin::Error, exchange: Option<&str>, queue: Option<&str>) -> BrokerError {
    let text = error.to_string();
    if text.contains("PRECONDITION_FAILED") || text.contains("inequivalent") {
        let name = queue.or(exchange).unwrap_or_default().to_string();
        return BrokerError::Inequivalent { name, detail: text };
    }
    if text.contains("NOT_FOUND") || text.contains("404") {
        if text.contains("exchange")
            && let Some(exchange) = exchange
        {
            return BrokerError::UnknownExchange(exchange.to_string());
        }
        if let Some(queue) = queue {
            return BrokerError::UnknownQueue(queue.to_string());
        }
        if let Some(exchange) = exchange {
            return BrokerError::UnknownExchange(exchange.to_string());
        }
    }
    unavailable(text)
}

fn queue_arguments(spec: &QueueSpec) -> FieldTable {
    let mut arguments = FieldTable::default();
    if let Some(dlx) = &spec.dead_letter_exchange {
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dlx.as_str().into()));
    }
    if let Some(max) = spec.max_length {
        arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(max as i64));
    }
    arguments
}

fn queue_options(spec: &QueueSpec) -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: spec.durable,
        // A per-instance auto-delete queue is also exclusive: it dies with
        // the connection of a crashed instance instead of leaking.
        exclusive: spec.auto_delete,
        auto_delete: spec.auto_delete,
        ..QueueDeclareOptions::default()
    }
}

fn kind(kind: ExchangeKind) -> lapin::ExchangeKind {
    match kind {
        ExchangeKind::Topic => lapin::ExchangeKind::Topic,
        ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
    }
}

async fn declare_exchange(channel: &Channel, name: &str, exchange_kind: ExchangeKind) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(name.into(), kind(exchange_kind), options, FieldTable::default()).await
}

async fn declare_queue(channel: &Channel, spec: &QueueSpec) -> lapin::Result<lapin::Queue> {
    channel.queue_declare(spec.name.as_str().into(), queue_options(spec), queue_arguments(spec)).await
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, pattern: &str) -> lapin::Result<()> {
    channel
        .queue_bind(queue.into(), exchange.into(), pattern.into(), QueueBindOptions::default(), FieldTable::default())
        .await
}

impl AmqpBroker {
    /// Connects once (failing fast with the reason if the broker is not
    /// reachable); later outages are handled by reconnecting.
    pub async fn connect(uri: &str) -> Result<AmqpBroker, BrokerError> {
        let broker = AmqpBroker {
            inner: Arc::new(Inner {
                uri: uri.to_string(),
                current: Mutex::new(None),
                link: AsyncMutex::new(()),
                topology: Mutex::default(),
            }),
        };
        broker.link().await?;
        Ok(broker)
    }

    /// The current link, reconnecting (and replaying the topology) if it is
    /// gone.
    async fn link(&self) -> Result<Link, BrokerError> {
        if let Some(link) = self.healthy_link() {
            return Ok(link);
        }
        let _reconnecting = self.inner.link.lock().await;
        // Someone else may have reconnected while we waited.
        if let Some(link) = self.healthy_link() {
            return Ok(link);
        }
        let link = tokio::time::timeout(CONNECT_TIMEOUT, self.open())
            .await
            .map_err(|_| unavailable("timed out connecting to RabbitMQ"))??;
        tracing::info!("connected to RabbitMQ");
        *self.inner.current.lock().expect("link lock") = Some(link.clone());
        Ok(link)
    }

    fn healthy_link(&self) -> Option<Link> {
        let current = self.inner.current.lock().expect("link lock");
        current
            .as_ref()
            .filter(|link| link.connection.status().connected() && link.publisher.status().connected())
            .cloned()
    }

    fn drop_link(&self) {
        *self.inner.current.lock().expect("link lock") = None;
    }

    async fn open(&self) -> Result<Link, BrokerError> {
        let properties = ConnectionProperties::default().with_connection_name("lizards".into());
        let connection = Connection::connect(&self.inner.uri, properties).await.map_err(unavailable)?;
        let publisher = connection.create_channel().await.map_err(unavailable)?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(unavailable)?;
        let topology = self.inner.topology.lock().expect("topology lock").clone();
        for (name, exchange_kind) in &topology.exchanges {
            declare_exchange(&publisher, name, *exchange_kind).await.map_err(unavailable)?;
        }
        for spec in &topology.queues {
            declare_queue(&publisher, spec).await.map_err(unavailable)?;
        }
        for (queue, exchange, pattern) in &topology.bindings {
            bind(&publisher, queue, exchange, pattern).await.map_err(unavailable)?;
        }
        Ok(Link { connection: Arc::new(connection), publisher })
    }

    /// A fresh channel for a one-off operation that may fail with a channel
    /// error (AMQP closes the channel on 404), keeping the publisher intact.
    async fn scratch_channel(&self) -> Result<Channel, BrokerError> {
        self.link().await?.connection.create_channel().await.map_err(unavailable)
    }

    fn forget_queue(&self, queue: &str) {
        let mut topology = self.inner.topology.lock().expect("topology lock");
        topology.queues.retain(|q| q.name != queue);
        topology.bindings.retain(|(q, _, _)| q != queue);
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    async fn declare_exchange(&self, name: &str, exchange_kind: ExchangeKind) -> Result<(), BrokerError> {
        let channel = self.scratch_channel().await?;
        declare_exchange(&channel, name, exchange_kind).await.map_err(|e| classify(e, Some(name), None))?;
        let _ = channel.close(200, "ok".into()).await;
        let mut topology = self.inner.topology.lock().expect("topology lock");
        if !topology.exchanges.iter().any(|(n, _)| n == name) {
            topology.exchanges.push((name.to_string(), exchange_kind));
        }
        Ok(())
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> Result<(), BrokerError> {
        // Exclusive queues belong to the connection, not the channel: a
        // scratch channel of the main link will do, and a refusal (406)
        // closes only it.
        let channel = self.scratch_channel().await?;
        declare_queue(&channel, spec).await.map_err(|e| classify(e, None, Some(&spec.name)))?;
        let _ = channel.close(200, "ok".into()).await;
        let mut topology = self.inner.topology.lock().expect("topology lock");
        if !topology.queues.iter().any(|q| q.name == spec.name) {
            topology.queues.push(spec.clone());
        }
        Ok(())
    }

    async fn bind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BrokerError> {
        let channel = self.scratch_channel().await?;
        bind(&channel, queue, exchange, pattern).await.map_err(|e| classify(e, Some(exchange), Some(queue)))?;
        let _ = channel.close(200, "ok".into()).await;
        let binding = (queue.to_string(), exchange.to_string(), pattern.to_string());
        self.inner.topology.lock().expect("topology lock").bindings.insert(binding);
        Ok(())
    }

    async fn unbind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BrokerError> {
        let channel = self.scratch_channel().await?;
        channel
            .queue_unbind(queue.into(), exchange.into(), pattern.into(), FieldTable::default())
            .await
            .map_err(|e| classify(e, Some(exchange), Some(queue)))?;
        let _ = channel.close(200, "ok".into()).await;
        let binding = (queue.to_string(), exchange.to_string(), pattern.to_string());
        self.inner.topology.lock().expect("topology lock").bindings.remove(&binding);
        Ok(())
    }

    async fn publish(&self, exchange: &str, routing_key: &str, body: Bytes) -> Result<(), BrokerError> {
        let link = self.link().await?;
        let properties = BasicProperties::default().with_delivery_mode(PERSISTENT);
        let confirm = link
            .publisher
            .basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions::default(), &body, properties)
            .await
            .map_err(|e| classify(e, Some(exchange), None))?;
        match confirm.await {
            Ok(confirmation) if confirmation.is_ack() => Ok(()),
            Ok(_) => Err(BrokerError::NotConfirmed("broker nacked the message".into())),
            Err(error) => {
                let error = classify(error, Some(exchange), None);
                // Publishing to a missing exchange closes the channel: the
                // next call re-opens the link.
                if matches!(error, BrokerError::UnknownExchange(_)) {
                    self.drop_link();
                }
                Err(error)
            }
        }
    }

    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Box<dyn Consumer>, BrokerError> {
        let mut consumer = AmqpConsumer {
            broker: self.clone(),
            queue: queue.to_string(),
            options,
            auto_delete: self
                .inner
                .topology
                .lock()
                .expect("topology lock")
                .queues
                .iter()
                .any(|q| q.name == queue && q.auto_delete),
            open: None,
            cancelled: false,
        };
        consumer.open().await?;
        Ok(Box::new(consumer))
    }

    async fn queue_len(&self, queue: &str) -> Result<usize, BrokerError> {
        let channel = self.scratch_channel().await?;
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let declared = channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .map_err(|e| classify(e, None, Some(queue)))?;
        let _ = channel.close(200, "ok".into()).await;
        Ok(declared.message_count() as usize)
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        self.link().await.map(|_| ())
    }
}

struct AmqpConsumer {
    broker: AmqpBroker,
    queue: String,
    options: ConsumeOptions,
    auto_delete: bool,
    open: Option<(Channel, lapin::Consumer)>,
    cancelled: bool,
}

impl AmqpConsumer {
    async fn open(&mut self) -> Result<(), BrokerError> {
        let link = self.broker.link().await?;
        // Exclusive queues can only be consumed on their own connection,
        // which is the link's; each consumer gets its own channel on it.
        let channel = link.connection.create_channel().await.map_err(unavailable)?;
        if !self.options.no_ack && self.options.prefetch > 0 {
            channel.basic_qos(self.options.prefetch, BasicQosOptions::default()).await.map_err(unavailable)?;
        }
        let options = BasicConsumeOptions { no_ack: self.options.no_ack, ..BasicConsumeOptions::default() };
        let consumer = channel
            .basic_consume(self.queue.as_str().into(), ShortString::from(""), options, FieldTable::default())
            .await
            .map_err(|e| classify(e, None, Some(&self.queue)))?;
        self.open = Some((channel, consumer));
        Ok(())
    }

    fn delivery(delivery: lapin::message::Delivery, no_ack: bool) -> Delivery {
        let acker: Option<Box<dyn Acker>> =
            if no_ack { None } else { Some(Box::new(AmqpAcker { acker: delivery.acker.clone() })) };
        Delivery::new(Bytes::from(delivery.data), delivery.routing_key.to_string(), delivery.redelivered, acker)
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        loop {
            if self.cancelled {
                return None;
            }
            if let Some((_, consumer)) = self.open.as_mut() {
                match consumer.next().await {
                    Some(Ok(delivery)) => return Some(Self::delivery(delivery, self.options.no_ack)),
                    Some(Err(error)) => tracing::warn!(queue = %self.queue, %error, "consumer lost; reconnecting"),
                    None => tracing::warn!(queue = %self.queue, "consumer cancelled; reconnecting"),
                }
                self.open = None;
            }
            match self.open().await {
                Ok(()) => {
                    tracing::info!(queue = %self.queue, "consumer re-opened");
                    backoff.reset();
                }
                Err(BrokerError::UnknownQueue(_)) => return None,
                Err(error) => {
                    tracing::debug!(queue = %self.queue, %error, "broker still away");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn cancel(&mut self) {
        self.cancelled = true;
        if let Some((channel, _)) = self.open.take() {
            // Closing the channel cancels the consumer and requeues its unacked deliveries.
            let _ = channel.close(200, "consumer cancelled".into()).await;
        }
        if self.auto_delete {
            self.broker.forget_queue(&self.queue);
        }
    }

    fn try_next(&mut self) -> Option<Delivery> {
        let (_, consumer) = self.open.as_mut()?;
        match consumer.next().now_or_never()? {
            Some(Ok(delivery)) => Some(Self::delivery(delivery, self.options.no_ack)),
            _ => None,
        }
    }
}

impl Drop for AmqpConsumer {
    /// Closing the channel hands its unacked deliveries back to the queue
    /// (redelivered to other consumers), and deletes an auto-delete queue
    /// with its last consumer.
    fn drop(&mut self) {
        if self.auto_delete {
            self.broker.forget_queue(&self.queue);
        }
        if let Some((channel, _)) = self.open.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = channel.close(200, "consumer dropped".into()).await;
            });
        }
    }
}

struct AmqpAcker {
    acker: lapin::Acker,
}

impl AmqpAcker {
    /// lapin answers `false` for an acker already used or whose channel
    /// closed (its delivery went back to the queue): the port's `Stale`.
    fn settled(&self, sent: lapin::Result<bool>) -> Result<(), BrokerError> {
        match sent {
            Ok(true) => Ok(()),
            Ok(false) => Err(BrokerError::Stale("used before, or its channel is closed".into())),
            Err(error) => Err(unavailable(error)),
        }
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(&self) -> Result<(), BrokerError> {
        self.settled(self.acker.ack(BasicAckOptions::default()).await)
    }

    async fn ack_through(&self) -> Result<(), BrokerError> {
        self.settled(self.acker.ack(BasicAckOptions { multiple: true }).await)
    }

    async fn nack(&self, requeue: bool) -> Result<(), BrokerError> {
        let options = BasicNackOptions { requeue, multiple: false };
        self.settled(self.acker.nack(options).await)
    }
}
