//! In-process broker with the semantics of RabbitMQ that Lizards relies on.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use super::{Acker, Broker, BrokerError, ConsumeOptions, Consumer, Delivery, ExchangeKind, QueueSpec, topic_matches};

#[derive(Clone, Default)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    exchanges: RwLock<HashMap<String, Exchange>>,
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    next_consumer: AtomicU64,
}

struct Exchange {
    kind: ExchangeKind,
    /// Bindings without wildcards, looked up by routing key.
    exact: HashMap<String, Vec<Arc<Queue>>>,
    wildcard: Vec<(String, Arc<Queue>)>,
}

#[derive(Clone)]
struct Message {
    body: Bytes,
    routing_key: Arc<str>,
    redelivered: bool,
    /// Position in the queue (set on arrival): a requeued message goes back
    /// to its place, as in RabbitMQ.
    seq: u64,
}

struct Queue {
    spec: QueueSpec,
    state: Mutex<QueueState>,
    notify: Notify,
    broker: Weak<Inner>,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Message>,
    /// Delivery tag → (consumer id, message).
    unacked: HashMap<u64, (u64, Message)>,
    next_tag: u64,
    next_seq: u64,
    consumers: usize,
    deleted: bool,
}

impl MemoryBroker {
    pub fn new() -> MemoryBroker {
        MemoryBroker::default()
    }

    fn queue(&self, name: &str) -> Result<Arc<Queue>, BrokerError> {
        let queues = self.inner.queues.read().expect("queues lock");
        queues.get(name).cloned().ok_or_else(|| BrokerError::UnknownQueue(name.to_string()))
    }
}

impl Inner {
    fn route(&self, exchange: &str, routing_key: &str, body: Bytes) -> Result<(), BrokerError> {
        let targets: Vec<Arc<Queue>> = {
            let exchanges = self.exchanges.read().expect("exchanges lock");
            let exchange = exchanges.get(exchange).ok_or_else(|| BrokerError::UnknownExchange(exchange.to_string()))?;
            let mut targets: Vec<Arc<Queue>> = match exchange.kind {
                ExchangeKind::Fanout => exchange.wildcard.iter().map(|(_, q)| q.clone()).collect(),
                ExchangeKind::Topic => exchange
                    .wildcard
                    .iter()
                    .filter(|(pattern, _)| topic_matches(pattern, routing_key))
                    .map(|(_, q)| q.clone())
                    .collect(),
            };
            if let Some(queues) = exchange.exact.get(routing_key) {
                targets.extend(queues.iter().cloned());
            }
            targets
        };
        let routing_key: Arc<str> = routing_key.into();
        let mut seen = Vec::with_capacity(targets.len());
        for queue in targets {
            // A queue bound twice still gets one copy, as in AMQP.
            if seen.iter().any(|q| Arc::ptr_eq(q, &queue)) {
                continue;
            }
            queue.push(Message { body: body.clone(), routing_key: routing_key.clone(), redelivered: false, seq: 0 });
            seen.push(queue);
        }
        Ok(())
    }

    fn delete_queue(&self, name: &str) {
        let removed = self.queues.write().expect("queues lock").remove(name);
        if let Some(queue) = removed {
            let mut exchanges = self.exchanges.write().expect("exchanges lock");
            for exchange in exchanges.values_mut() {
                exchange.wildcard.retain(|(_, q)| !Arc::ptr_eq(q, &queue));
                for queues in exchange.exact.values_mut() {
                    queues.retain(|q| !Arc::ptr_eq(q, &queue));
                }
                exchange.exact.retain(|_, queues| !queues.is_empty());
            }
            queue.state.lock().expect("queue lock").deleted = true;
            queue.notify.notify_waiters();
        }
    }
}

impl QueueState {
    /// Puts a message back in its original place, marked redelivered.
    fn requeue(&mut self, mut message: Message) {
        message.redelivered = true;
        let at = self.ready.partition_point(|m| m.seq < message.seq);
        self.ready.insert(at, message);
    }
}

impl Queue {
    fn push(&self, mut message: Message) {
        let dropped = {
            let mut state = self.state.lock().expect("queue lock");
            state.next_seq += 1;
            message.seq = state.next_seq;
            let full = self.spec.max_length.is_some_and(|max| state.ready.len() >= max);
            let dropped = if full { state.ready.pop_front() } else { None };
            state.ready.push_back(message);
            dropped
        };
        self.notify.notify_waiters();
        // As RabbitMQ's drop-head overflow: the oldest is dead-lettered.
        if let Some(dropped) = dropped {
            self.dead_letter(dropped);
        }
    }

    fn dead_letter(&self, message: Message) {
        if let (Some(dlx), Some(broker)) = (&self.spec.dead_letter_exchange, self.broker.upgrade()) {
            let _ = broker.route(dlx, &message.routing_key, message.body);
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn declare_exchange(&self, name: &str, kind: ExchangeKind) -> Result<(), BrokerError> {
        let mut exchanges = self.inner.exchanges.write().expect("exchanges lock");
        let exchange = exchanges.entry(name.to_string()).or_insert_with(|| Exchange {
            kind,
            exact: HashMap::new(),
            wildcard: Vec::new(),
        });
        if exchange.kind != kind {
            let detail = format!("declared {:?}, exists as {:?}", kind, exchange.kind);
            return Err(BrokerError::Inequivalent { name: name.to_string(), detail });
        }
        Ok(())
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> Result<(), BrokerError> {
        let mut queues = self.inner.queues.write().expect("queues lock");
        let queue = queues.entry(spec.name.clone()).or_insert_with(|| {
            Arc::new(Queue {
                spec: spec.clone(),
                state: Mutex::new(QueueState::default()),
                notify: Notify::new(),
                broker: Arc::downgrade(&self.inner),
            })
        });
        if queue.spec != *spec {
            let detail = format!("declared {spec:?}, exists as {:?}", queue.spec);
            return Err(BrokerError::Inequivalent { name: spec.name.clone(), detail });
        }
        Ok(())
    }

    async fn bind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BrokerError> {
        let queue = self.queue(queue)?;
        let mut exchanges = self.inner.exchanges.write().expect("exchanges lock");
        let ex = exchanges.get_mut(exchange).ok_or_else(|| BrokerError::UnknownExchange(exchange.to_string()))?;
        let wildcard = ex.kind == ExchangeKind::Fanout || pattern.contains(['*', '#']);
        if wildcard {
            if !ex.wildcard.iter().any(|(p, q)| p == pattern && Arc::ptr_eq(q, &queue)) {
                ex.wildcard.push((pattern.to_string(), queue));
            }
        } else {
            let queues = ex.exact.entry(pattern.to_string()).or_default();
            if !queues.iter().any(|q| Arc::ptr_eq(q, &queue)) {
                queues.push(queue);
            }
        }
        Ok(())
    }

    async fn unbind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BrokerError> {
        let queue = self.queue(queue)?;
        let mut exchanges = self.inner.exchanges.write().expect("exchanges lock");
        let ex = exchanges.get_mut(exchange).ok_or_else(|| BrokerError::UnknownExchange(exchange.to_string()))?;
        ex.wildcard.retain(|(p, q)| !(p == pattern && Arc::ptr_eq(q, &queue)));
        if let Some(queues) = ex.exact.get_mut(pattern) {
            queues.retain(|q| !Arc::ptr_eq(q, &queue));
            if queues.is_empty() {
                ex.exact.remove(pattern);
            }
        }
        Ok(())
    }

    async fn publish(&self, exchange: &str, routing_key: &str, body: Bytes) -> Result<(), BrokerError> {
        self.inner.route(exchange, routing_key, body)
    }

    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Box<dyn Consumer>, BrokerError> {
        let queue = self.queue(queue)?;
        queue.state.lock().expect("queue lock").consumers += 1;
        Ok(Box::new(MemoryConsumer {
            queue,
            id: self.inner.next_consumer.fetch_add(1, Ordering::Relaxed),
            options,
            in_flight: Arc::new(AtomicUsize::new(0)),
            closed: false,
        }))
    }

    async fn queue_len(&self, queue: &str) -> Result<usize, BrokerError> {
        Ok(self.queue(queue)?.state.lock().expect("queue lock").ready.len())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

struct MemoryConsumer {
    queue: Arc<Queue>,
    id: u64,
    options: ConsumeOptions,
    in_flight: Arc<AtomicUsize>,
    /// Cancelled: its unacked messages went back, nothing more comes.
    closed: bool,
}

enum Take {
    Got(Delivery),
    Wait,
    Closed,
}

impl MemoryConsumer {
    fn take(&self) -> Take {
        let mut state = self.queue.state.lock().expect("queue lock");
        if state.deleted || self.closed {
            return Take::Closed;
        }
        let prefetch = self.options.prefetch as usize;
        if !self.options.no_ack && prefetch > 0 && self.in_flight.load(Ordering::Acquire) >= prefetch {
            return Take::Wait;
        }
        let Some(message) = state.ready.pop_front() else {
            return Take::Wait;
        };
        let routing_key = message.routing_key.to_string();
        if self.options.no_ack {
            return Take::Got(Delivery::new(message.body, routing_key, message.redelivered, None));
        }
        let tag = state.next_tag;
        state.next_tag += 1;
        state.unacked.insert(tag, (self.id, message.clone()));
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let acker =
            MemoryAcker { queue: self.queue.clone(), tag, consumer: self.id, in_flight: self.in_flight.clone() };
        Take::Got(Delivery::new(message.body, routing_key, message.redelivered, Some(Box::new(acker))))
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let queue = self.queue.clone();
            let notified = queue.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.take() {
                Take::Got(delivery) => return Some(delivery),
                Take::Closed => return None,
                Take::Wait => notified.await,
            }
        }
    }

    fn try_next(&mut self) -> Option<Delivery> {
        match self.take() {
            Take::Got(delivery) => Some(delivery),
            _ => None,
        }
    }

    async fn cancel(&mut self) {
        self.close();
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        self.close();
    }
}

impl MemoryConsumer {
    /// Like a closed AMQP channel: unacked messages go back to the queue,
    /// marked redelivered (their acks now fail), and an auto-delete queue
    /// goes away with its last consumer.
    fn close(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let delete = {
            let mut state = self.queue.state.lock().expect("queue lock");
            let mine: Vec<u64> =
                state.unacked.iter().filter(|(_, (consumer, _))| *consumer == self.id).map(|(tag, _)| *tag).collect();
            for tag in mine {
                if let Some((_, message)) = state.unacked.remove(&tag) {
                    state.requeue(message);
                }
            }
            state.consumers -= 1;
            self.queue.spec.auto_delete && state.consumers == 0
        };
        if delete && let Some(broker) = self.queue.broker.upgrade() {
            broker.delete_queue(&self.queue.spec.name);
        }
        self.queue.notify.notify_waiters();
    }
}

struct MemoryAcker {
    queue: Arc<Queue>,
    tag: u64,
    consumer: u64,
    in_flight: Arc<AtomicUsize>,
}

impl MemoryAcker {
    /// Takes the delivery out of the unacked set; `Stale` when it is no
    /// longer there (settled before, or requeued with its consumer), as
    /// RabbitMQ refuses an unknown delivery tag.
    fn settle(&self) -> Result<Message, BrokerError> {
        let removed = self.queue.state.lock().expect("queue lock").unacked.remove(&self.tag);
        let (_, message) = removed.ok_or_else(|| self.stale())?;
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        Ok(message)
    }

    fn stale(&self) -> BrokerError {
        BrokerError::Stale(format!("delivery {} on '{}'", self.tag, self.queue.spec.name))
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<(), BrokerError> {
        self.settle()?;
        self.queue.notify.notify_waiters();
        Ok(())
    }

    async fn ack_through(&self) -> Result<(), BrokerError> {
        {
            let mut state = self.queue.state.lock().expect("queue lock");
            if !state.unacked.contains_key(&self.tag) {
                return Err(self.stale());
            }
            let before = state.unacked.len();
            state.unacked.retain(|tag, (consumer, _)| !(*consumer == self.consumer && *tag <= self.tag));
            self.in_flight.fetch_sub(before - state.unacked.len(), Ordering::AcqRel);
        }
        self.queue.notify.notify_waiters();
        Ok(())
    }

    async fn nack(&self, requeue: bool) -> Result<(), BrokerError> {
        let message = self.settle()?;
        if requeue {
            self.queue.state.lock().expect("queue lock").requeue(message);
        } else {
            self.queue.dead_letter(message);
        }
        self.queue.notify.notify_waiters();
        Ok(())
    }
}
