//! Consumes `notify`: each message is handled in its own task, so one
//! alert waiting between retries does not hold up the others, and each
//! user has a lane of their own: one of their messages is handled at a
//! time, at most [`MAX_WAITING`] more wait behind it, and further ones are
//! settled at once with their deliveries `suppressed`. So one user's
//! webhook that never answers holds one task and a few prefetch slots, not
//! everyone's deliveries. A message is acked once every channel of its
//! alert is final, dead-lettered when one failed for good or when it
//! cannot be read, and requeued when the store is unreachable or shutdown
//! comes between two attempts.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use lizards_shared::{
    accounts::{AlertId, UserId},
    broker::{Broker, ConsumeOptions, Consumer, Delivery as Message, NOTIFY_QUEUE, declare_topology},
    retry::Backoff,
    shutdown::Shutdown,
};
use serde_json::Value;
use tokio::task::JoinSet;

use super::{
    deliver::{Deliverer, Outcome},
    metrics::Metrics,
};
use crate::alerts;

/// Messages taken at once: handled, or waiting in their user's lane.
pub const PREFETCH: u16 = 256;
/// Messages of one user waiting behind the one being handled.
pub const MAX_WAITING: usize = 8;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Wait before requeueing a message the store could not serve.
const STORE_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Worker {
    pub broker: Arc<dyn Broker>,
    pub deliverer: Arc<Deliverer>,
    pub metrics: Metrics,
    /// Longest shutdown waits for messages in flight.
    pub drain: Duration,
}

impl Worker {
    pub async fn run(self, shutdown: Shutdown) {
        let mut tasks = JoinSet::new();
        let mut lanes = Lanes::default();
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        let mut consumer: Option<Box<dyn Consumer>> = None;
        loop {
            let Some(current) = consumer.as_mut() else {
                match self.open().await {
                    Ok(opened) => {
                        consumer = Some(opened);
                        backoff.reset();
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot consume {NOTIFY_QUEUE}, retrying");
                        if !backoff.wait(&shutdown).await {
                            break;
                        }
                    }
                }
                continue;
            };
            let step = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => Step::Joined(joined),
                message = current.next() => Step::Received(message),
            };
            match step {
                Step::Joined(joined) => {
                    let task = match joined {
                        Ok((task, ())) => task,
                        Err(error) => {
                            self.metrics.errors.with_label_values(&["notifier_task"]).inc();
                            tracing::error!(%error, "a notification task failed");
                            error.id()
                        }
                    };
                    // The lane moves on even when its task failed.
                    if let Some(user) = lanes.finished(task)
                        && let Some(next) = lanes.next(user)
                    {
                        self.spawn(&mut tasks, &mut lanes, next, Some(user), &shutdown);
                    }
                }
                Step::Received(Some(message)) => match lanes.admit(message) {
                    Admitted::Now(message, lane) => self.spawn(&mut tasks, &mut lanes, message, lane, &shutdown),
                    Admitted::Waiting => {}
                    Admitted::Overflow(message, id) => self.overflow(message, id).await,
                },
                Step::Received(None) => {
                    tracing::warn!("{NOTIFY_QUEUE} consumer closed; consuming again");
                    consumer = None;
                    if !backoff.wait(&shutdown).await {
                        break;
                    }
                }
            }
        }
        // Messages still waiting in a lane go back; in-flight ones finish
        // (their retries stop waiting) and settle before the consumer goes;
        // what is still unsettled goes back too.
        for message in lanes.drain() {
            let _ = message.nack(true).await;
        }
        let drained = tokio::time::timeout(self.drain, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(left = tasks.len(), "notifications still sending after the grace period; requeued");
            tasks.abort_all();
        }
        if let Some(mut consumer) = consumer {
            consumer.cancel().await;
        }
        tracing::info!("notifier worker stopped");
    }

    /// Handles `message` in a task of its own, remembered as `lane`'s.
    fn spawn(
        &self,
        tasks: &mut JoinSet<()>,
        lanes: &mut Lanes,
        message: Message,
        lane: Option<UserId>,
        shutdown: &Shutdown,
    ) {
        let (deliverer, metrics, shutdown) = (self.deliverer.clone(), self.metrics.clone(), shutdown.clone());
        let task = tasks.spawn(handle(deliverer, metrics, message, shutdown)).id();
        if let Some(user) = lane {
            lanes.running.insert(task, user);
        }
    }

    /// A message past its user's lane: its deliveries are suppressed and
    /// it is acked (requeued if the store cannot record that).
    async fn overflow(&self, message: Message, id: AlertId) {
        let reason = format!("more than {MAX_WAITING} notifications of this user were waiting");
        match self.deliverer.suppress_pending(id, &reason).await {
            Ok(()) => {
                tracing::info!(alert = %id, %reason, "alert suppressed");
                let _ = message.ack().await;
            }
            Err(error) => {
                self.metrics.errors.with_label_values(&["database"]).inc();
                tracing::warn!(%error, alert = %id, "store unavailable; alert requeued");
                // As in `settle`: a requeued message comes straight back.
                tokio::time::sleep(STORE_BACKOFF).await;
                let _ = message.nack(true).await;
            }
        }
        self.metrics.consumed.with_label_values(&[NOTIFY_QUEUE]).inc();
    }

    async fn open(&self) -> Result<Box<dyn Consumer>, lizards_shared::broker::BrokerError> {
        declare_topology(self.broker.as_ref()).await?;
        self.broker.consume(NOTIFY_QUEUE, ConsumeOptions { prefetch: PREFETCH, no_ack: false }).await
    }
}

enum Step {
    Joined(Result<(tokio::task::Id, ()), tokio::task::JoinError>),
    Received(Option<Message>),
}

/// Per-user lanes: users with a message in flight, and what waits behind.
#[derive(Default)]
struct Lanes {
    busy: HashMap<UserId, VecDeque<Message>>,
    /// The user of each running task.
    running: HashMap<tokio::task::Id, UserId>,
}

enum Admitted {
    /// Handle it now, in the user's lane (none for an unreadable message).
    Now(Message, Option<UserId>),
    /// It waits in its user's lane.
    Waiting,
    /// Its user's lane is full.
    Overflow(Message, AlertId),
}

impl Lanes {
    fn admit(&mut self, message: Message) -> Admitted {
        // Unreadable messages have no lane: they are dead-lettered at once.
        let Ok(alert) = alert_id(&message.body) else { return Admitted::Now(message, None) };
        let Some(user) = user_of(&message.body) else { return Admitted::Now(message, None) };
        let Some(waiting) = self.busy.get_mut(&user) else {
            self.busy.insert(user, VecDeque::new());
            return Admitted::Now(message, Some(user));
        };
        if waiting.len() < MAX_WAITING {
            waiting.push_back(message);
            return Admitted::Waiting;
        }
        Admitted::Overflow(message, alert)
    }

    /// The user whose task ended, if it ran in a lane.
    fn finished(&mut self, task: tokio::task::Id) -> Option<UserId> {
        self.running.remove(&task)
    }

    /// The user's next message, or none (the lane closes).
    fn next(&mut self, user: UserId) -> Option<Message> {
        let waiting = self.busy.get_mut(&user)?;
        let next = waiting.pop_front();
        if next.is_none() {
            self.busy.remove(&user);
        }
        next
    }

    fn drain(&mut self) -> impl Iterator<Item = Message> + use<> {
        std::mem::take(&mut self.busy).into_values().flatten()
    }
}

/// The user a `notify` message is for, if it can be read.
fn user_of(body: &[u8]) -> Option<UserId> {
    alerts::decode(body).ok().map(|published| published.user_id)
}

/// Handles one message to the end and settles it. Counted as consumed
/// once settled, so the count says "handled", not "taken".
async fn handle(deliverer: Arc<Deliverer>, metrics: Metrics, message: Message, shutdown: Shutdown) {
    settle(&deliverer, &metrics, message, &shutdown).await;
    metrics.consumed.with_label_values(&[NOTIFY_QUEUE]).inc();
    metrics.ops.operations.with_label_values(&["message"]).inc();
}

async fn settle(deliverer: &Deliverer, metrics: &Metrics, message: Message, shutdown: &Shutdown) {
    let id = match alert_id(&message.body) {
        Ok(id) => id,
        Err(error) => {
            tracing::warn!(%error, routing_key = %message.routing_key, "unreadable notify message dead-lettered");
            metrics.errors.with_label_values(&["decode"]).inc();
            dead_letter(metrics, message).await;
            return;
        }
    };
    match deliverer.deliver(id, message.redelivered, shutdown).await {
        Ok(Outcome::Done) => {
            if let Err(error) = message.ack().await {
                tracing::warn!(%error, alert = %id, "ack failed; the redelivery skips what was sent");
            }
        }
        Ok(Outcome::Failed) => dead_letter(metrics, message).await,
        Ok(Outcome::Unfinished) => {
            let _ = message.nack(true).await;
        }
        Err(error) => {
            metrics.errors.with_label_values(&["database"]).inc();
            tracing::warn!(%error, alert = %id, "store unavailable; alert requeued");
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(STORE_BACKOFF) => {}
            }
            let _ = message.nack(true).await;
        }
    }
}

async fn dead_letter(metrics: &Metrics, message: Message) {
    metrics.dead_lettered.with_label_values(&[NOTIFY_QUEUE]).inc();
    if let Err(error) = message.nack(false).await {
        tracing::warn!(%error, "dead-lettering failed");
    }
}

/// The alert a `notify` message is about.
fn alert_id(body: &[u8]) -> Result<AlertId, String> {
    let published = alerts::decode(body)?;
    published.alert.get("id").and_then(Value::as_i64).map(AlertId).ok_or_else(|| "alert without an id".to_string())
}

#[cfg(test)]
mod tests {
    use super::alert_id;

    #[test]
    fn messages_name_their_alert_or_are_refused() {
        assert_eq!(alert_id(br#"{"v":1,"user_id":3,"alert":{"id":7}}"#).unwrap().0, 7);
        for body in [&b"not json"[..], br#"{"v":1,"user_id":3}"#, br#"{"v":1,"user_id":3,"alert":{"id":"x"}}"#] {
            assert!(alert_id(body).is_err());
        }
    }
}
