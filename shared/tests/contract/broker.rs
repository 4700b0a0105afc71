//! Behaviour every `Broker` adapter must show: the RabbitMQ semantics the
//! ingestion publisher and the provider's consumers rely on (docs/architecture.md,
//! Broker topology).
//!
//! Each check declares its own uniquely named exchange and queues, so the
//! suite can run against one shared real broker. Only the dead-letter check
//! uses the shared topology (`quotes`, `provider.persist`, `dead`); it picks
//! its own message out and acks anything else it meets there, so run it
//! against a broker that serves tests only.

use bytes::Bytes;
use lizards_shared::broker::{
    Broker, BrokerError, ConsumeOptions, Consumer, DEAD_QUEUE, Delivery, ExchangeKind, PERSIST_QUEUE, QUOTES_EXCHANGE,
    QueueSpec, declare_topology,
};

use crate::helpers::{eventually, unique, within};

/// Manual acknowledgement without a prefetch limit.
const MANUAL: ConsumeOptions = ConsumeOptions { prefetch: 0, no_ack: false };

/// The last message of a check: everything routed before it has arrived
/// once it has, so "nothing else came" needs no waiting.
const FENCE: &str = "fence";

/// Runs every check on one broker, one after the other. Each check is
/// isolated by its own names, so they must not disturb one another.
pub async fn run_all(broker: &dyn Broker) {
    topic_bindings_route_by_routing_key(broker).await;
    queue_bound_twice_gets_one_copy(broker).await;
    unroutable_publish_is_accepted(broker).await;
    publish_to_unknown_exchange_fails(broker).await;
    acked_message_is_not_redelivered(broker).await;
    nack_with_requeue_redelivers_marked_redelivered(broker).await;
    requeued_batch_keeps_its_order(broker).await;
    ack_through_settles_every_earlier_delivery(broker).await;
    nack_without_requeue_dead_letters_through_the_topology(broker).await;
    nack_without_requeue_and_without_dead_letter_exchange_drops_the_message(broker).await;
    prefetch_limits_unacked_deliveries(broker).await;
    dropped_consumer_unacked_messages_are_redelivered_in_order(broker).await;
    competing_consumers_get_each_message_once(broker).await;
    auto_delete_queue_goes_away_with_its_last_consumer(broker).await;
    no_ack_deliveries_need_no_ack(broker).await;
    max_length_drops_the_oldest(broker).await;
    max_length_dead_letters_what_it_drops(broker).await;
    settling_a_delivery_of_a_cancelled_consumer_fails_and_it_is_redelivered(broker).await;
    declaring_again_with_other_settings_is_refused(broker).await;
    unbind_stops_delivery(broker).await;
    queue_len_counts_ready_messages(broker).await;
}

/// What a check remembers of a delivery after settling it.
#[derive(Debug, Clone, PartialEq)]
struct Received {
    routing_key: String,
    body: String,
    redelivered: bool,
}

impl Received {
    fn of(delivery: &Delivery) -> Received {
        Received { routing_key: delivery.routing_key.clone(), body: text(delivery), redelivered: delivery.redelivered }
    }
}

fn text(delivery: &Delivery) -> String {
    String::from_utf8_lossy(&delivery.body).into_owned()
}

fn bodies(received: &[Received]) -> Vec<&str> {
    received.iter().map(|r| r.body.as_str()).collect()
}

fn options(prefetch: u16) -> ConsumeOptions {
    ConsumeOptions { prefetch, no_ack: false }
}

/// The next delivery, within the deadline.
async fn next(consumer: &mut dyn Consumer) -> Delivery {
    within("a delivery", consumer.next()).await.expect("the consumer is still open")
}

async fn ack(delivery: Delivery) {
    delivery.ack().await.expect("ack is accepted");
}

/// A topic exchange of one check, with helpers for its queues.
struct Fixture<'a> {
    broker: &'a dyn Broker,
    exchange: String,
}

impl<'a> Fixture<'a> {
    async fn new(broker: &'a dyn Broker) -> Fixture<'a> {
        let exchange = unique("contract.exchange");
        broker.declare_exchange(&exchange, ExchangeKind::Topic).await.expect("exchange is declared");
        Fixture { broker, exchange }
    }

    /// A fresh queue bound to `patterns`.
    async fn queue(&self, patterns: &[&str]) -> String {
        self.queue_with(QueueSpec::default(), patterns).await
    }

    /// A fresh queue with `spec`'s settings (its name is replaced), bound to `patterns`.
    async fn queue_with(&self, spec: QueueSpec, patterns: &[&str]) -> String {
        let spec = QueueSpec { name: unique("contract.queue"), ..spec };
        self.broker.declare_queue(&spec).await.expect("queue is declared");
        for pattern in patterns {
            self.broker.bind(&spec.name, &self.exchange, pattern).await.expect("queue is bound");
        }
        spec.name
    }

    async fn publish(&self, routing_key: &str, body: &str) {
        let body = Bytes::from(body.to_string());
        self.broker.publish(&self.exchange, routing_key, body).await.expect("publish is confirmed");
    }

    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Box<dyn Consumer> {
        self.broker.consume(queue, options).await.expect("consumer starts")
    }

    /// Consumes `queue` with a consumer of its own, acking everything, and
    /// returns what came before [`FENCE`]. Other consumers of the queue must
    /// be gone, or they would compete for the fence.
    async fn drain_until_fence(&self, queue: &str) -> Vec<Received> {
        let mut consumer = self.consume(queue, options(10)).await;
        let mut received = Vec::new();
        loop {
            let delivery = next(consumer.as_mut()).await;
            let seen = Received::of(&delivery);
            ack(delivery).await;
            if seen.body == FENCE {
                return received;
            }
            received.push(seen);
        }
    }
}

pub async fn topic_bindings_route_by_routing_key(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let aapl = fx.queue(&["quote.AAPL"]).await;
    let everything = fx.queue(&["quote.#"]).await;
    let one_word = fx.queue(&["quote.*"]).await;
    for key in ["quote.AAPL", "quote.MSFT", "quote.BRK_B", "quote.two.words", "control.AAPL"] {
        fx.publish(key, key).await;
    }
    fx.publish("quote.AAPL", FENCE).await;

    let routed = |received: Vec<Received>| -> Vec<String> {
        for r in &received {
            assert_eq!(r.routing_key, r.body, "a delivery carries its routing key");
        }
        received.into_iter().map(|r| r.routing_key).collect()
    };
    assert_eq!(routed(fx.drain_until_fence(&aapl).await), ["quote.AAPL"]);
    assert_eq!(
        routed(fx.drain_until_fence(&everything).await),
        ["quote.AAPL", "quote.MSFT", "quote.BRK_B", "quote.two.words"]
    );
    assert_eq!(routed(fx.drain_until_fence(&one_word).await), ["quote.AAPL", "quote.MSFT", "quote.BRK_B"]);
}

pub async fn queue_bound_twice_gets_one_copy(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["quote.AAPL", "quote.*", "quote.#"]).await;
    fx.publish("quote.AAPL", "once").await;
    fx.publish("quote.AAPL", FENCE).await;
    assert_eq!(bodies(&fx.drain_until_fence(&queue).await), ["once"]);
}

pub async fn unroutable_publish_is_accepted(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let body = Bytes::from_static(b"nobody listens");
    broker.publish(&fx.exchange, "quote.NOBODY", body).await.expect("an unroutable message is still confirmed");
}

pub async fn publish_to_unknown_exchange_fails(broker: &dyn Broker) {
    let missing = unique("contract.missing");
    let result = broker.publish(&missing, "quote.AAPL", Bytes::from_static(b"lost")).await;
    assert!(matches!(result, Err(BrokerError::UnknownExchange(_))), "publish to '{missing}' gave {result:?}");

    // AMQP closes the channel on that error; the broker must stay usable.
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["quote.AAPL"]).await;
    fx.publish("quote.AAPL", "after").await;
    fx.publish("quote.AAPL", FENCE).await;
    assert_eq!(bodies(&fx.drain_until_fence(&queue).await), ["after"]);
}

pub async fn acked_message_is_not_redelivered(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["k"]).await;
    fx.publish("k", "first").await;
    let mut consumer = fx.consume(&queue, MANUAL).await;
    let first = next(consumer.as_mut()).await;
    assert_eq!((text(&first).as_str(), first.redelivered), ("first", false));
    ack(first).await;
    consumer.cancel().await;
    drop(consumer);

    fx.publish("k", "second").await;
    fx.publish("k", FENCE).await;
    let rest = fx.drain_until_fence(&queue).await;
    assert_eq!(bodies(&rest), ["second"]);
    assert!(!rest[0].redelivered);
}

/// The persistence worker acks a whole batch with one `ack_through`.
pub async fn ack_through_settles_every_earlier_delivery(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["k"]).await;
    for body in ["a", "b", "c", "d"] {
        fx.publish("k", body).await;
    }
    let mut consumer = fx.consume(&queue, options(3)).await;
    let batch = [next(consumer.as_mut()).await, next(consumer.as_mut()).await, next(consumer.as_mut()).await];
    let [_, _, last] = batch;
    last.ack_through().await.expect("acked");
    // The prefetch window is free again: the fourth arrives.
    let fourth = next(consumer.as_mut()).await;
    assert_eq!(text(&fourth), "d");
    ack(fourth).await;
    consumer.cancel().await;
    drop(consumer);
    fx.publish("k", FENCE).await;
    assert_eq!(bodies(&fx.drain_until_fence(&queue).await), Vec::<&str>::new(), "nothing comes back");
}

/// A batch handed back (e.g. the database was down) comes back in order.
pub async fn requeued_batch_keeps_its_order(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["k"]).await;
    for body in ["a", "b", "c"] {
        fx.publish("k", body).await;
    }
    let mut consumer = fx.consume(&queue, MANUAL).await;
    let batch = [next(consumer.as_mut()).await, next(consumer.as_mut()).await, next(consumer.as_mut()).await];
    for delivery in batch {
        delivery.nack(true).await.expect("nacked");
    }
    let again = [next(consumer.as_mut()).await, next(consumer.as_mut()).await, next(consumer.as_mut()).await];
    let received: Vec<Received> = again.iter().map(Received::of).collect();
    assert_eq!(bodies(&received), ["a", "b", "c"]);
    assert!(received.iter().all(|r| r.redelivered));
    for delivery in again {
        ack(delivery).await;
    }
    consumer.cancel().await;
}

pub async fn nack_with_requeue_redelivers_marked_redelivered(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["k"]).await;
    fx.publish("k", "retry me").await;
    let mut consumer = fx.consume(&queue, MANUAL).await;
    let first = next(consumer.as_mut()).await;
    assert!(!first.redelivered, "a first delivery is not marked redelivered");
    first.nack(true).await.expect("nack is accepted");

    let again = next(consumer.as_mut()).await;
    assert_eq!((text(&again).as_str(), again.redelivered), ("retry me", true));
    ack(again).await;
    consumer.cancel().await;
    drop(consumer);

    fx.publish("k", FENCE).await;
    assert_eq!(bodies(&fx.drain_until_fence(&queue).await), Vec::<&str>::new(), "acked after the retry");
}

/// Reads `consumer` until the delivery whose body is `marker`, acking any
/// other message met on the way (left over in a shared queue). The consumer
/// must outlive the returned delivery, or settling it has no effect.
async fn find(consumer: &mut dyn Consumer, marker: &str) -> Delivery {
    within(&format!("the message '{marker}'"), async {
        loop {
            let delivery = consumer.next().await.expect("the consumer is still open");
            if delivery.body == marker.as_bytes() {
                return delivery;
            }
            ack(delivery).await;
        }
    })
    .await
}

pub async fn nack_without_requeue_dead_letters_through_the_topology(broker: &dyn Broker) {
    declare_topology(broker).await.expect("topology is declared");
    let marker = unique("poison");
    let routing_key = "quote.CONTRACT";
    broker.publish(QUOTES_EXCHANGE, routing_key, Bytes::from(marker.clone())).await.expect("publish is confirmed");

    let mut persist = broker.consume(PERSIST_QUEUE, options(50)).await.expect("consumer starts");
    let poison = find(persist.as_mut(), &marker).await;
    poison.nack(false).await.expect("nack is accepted");
    persist.cancel().await;
    drop(persist);

    let mut dead = broker.consume(DEAD_QUEUE, options(50)).await.expect("consumer starts");
    let dead_letter = find(dead.as_mut(), &marker).await;
    assert_eq!(dead_letter.routing_key, routing_key, "a dead letter keeps its routing key");
    ack(dead_letter).await;
}

pub async fn nack_without_requeue_and_without_dead_letter_exchange_drops_the_message(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["k"]).await;
    fx.publish("k", "poison").await;
    let mut consumer = fx.consume(&queue, MANUAL).await;
    next(consumer.as_mut()).await.nack(false).await.expect("nack is accepted");
    consumer.cancel().await;
    drop(consumer);

    fx.publish("k", FENCE).await;
    assert_eq!(bodies(&fx.drain_until_fence(&queue).await), Vec::<&str>::new());
}

pub async fn prefetch_limits_unacked_deliveries(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["k"]).await;
    for i in 0..5 {
        fx.publish("k", &i.to_string()).await;
    }
    let mut consumer = fx.consume(&queue, options(2)).await;
    let first = next(consumer.as_mut()).await;
    let second = next(consumer.as_mut()).await;
    assert_eq!((text(&first).as_str(), text(&second).as_str()), ("0", "1"));
    assert!(consumer.try_next().is_none(), "a third delivery while two are unacked");

    ack(first).await;
    let third = next(consumer.as_mut()).await;
    assert_eq!(text(&third), "2");
    assert!(consumer.try_next().is_none(), "a fourth delivery while two are unacked");

    ack(second).await;
    ack(third).await;
    for expected in ["3", "4"] {
        let delivery = next(consumer.as_mut()).await;
        assert_eq!(text(&delivery), expected);
        ack(delivery).await;
    }
}

/// "Provider killed mid-batch": nothing it had not acked is lost.
pub async fn dropped_consumer_unacked_messages_are_redelivered_in_order(broker: &dyn Broker) {
    const TOTAL: usize = 100;
    const TAKEN: u16 = 50;
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["k"]).await;
    for i in 0..TOTAL {
        fx.publish("k", &i.to_string()).await;
    }

    // The prefetch keeps a real broker from pushing more than the taken half.
    let mut crashed = fx.consume(&queue, options(TAKEN)).await;
    let mut held = Vec::new();
    for _ in 0..TAKEN {
        held.push(next(crashed.as_mut()).await);
    }
    let taken: Vec<String> = held.iter().map(text).collect();
    let expected_taken: Vec<String> = (0..usize::from(TAKEN)).map(|i| i.to_string()).collect();
    assert_eq!(taken, expected_taken);
    drop(held);
    drop(crashed);

    let mut survivor = fx.consume(&queue, options(10)).await;
    let mut received = Vec::new();
    for _ in 0..TOTAL {
        let delivery = next(survivor.as_mut()).await;
        received.push((text(&delivery), delivery.redelivered));
        ack(delivery).await;
    }
    let expected: Vec<(String, bool)> = (0..TOTAL).map(|i| (i.to_string(), i < usize::from(TAKEN))).collect();
    assert_eq!(received, expected, "the unacked half first, marked redelivered, then the rest");
    survivor.cancel().await;
    drop(survivor);

    fx.publish("k", FENCE).await;
    assert_eq!(bodies(&fx.drain_until_fence(&queue).await), Vec::<&str>::new(), "each message once");
}

pub async fn competing_consumers_get_each_message_once(broker: &dyn Broker) {
    const TOTAL: usize = 20;
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["k"]).await;
    let mut a = fx.consume(&queue, options(1)).await;
    let mut b = fx.consume(&queue, options(1)).await;
    for i in 0..TOTAL {
        fx.publish("k", &i.to_string()).await;
    }

    // Each holds one unacked delivery, so both must have been served.
    let held_by_a = next(a.as_mut()).await;
    let held_by_b = next(b.as_mut()).await;
    let mut seen = vec![text(&held_by_a), text(&held_by_b)];
    assert_ne!(seen[0], seen[1], "two consumers got the same message");
    ack(held_by_a).await;
    ack(held_by_b).await;

    while seen.len() < TOTAL {
        let delivery = within("a delivery on either consumer", async {
            tokio::select! {
                Some(delivery) = a.next() => delivery,
                Some(delivery) = b.next() => delivery,
                else => panic!("both consumers closed"),
            }
        })
        .await;
        seen.push(text(&delivery));
        ack(delivery).await;
    }
    let mut numbers: Vec<usize> = seen.iter().map(|s| s.parse().expect("a number")).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..TOTAL).collect::<Vec<_>>(), "every message exactly once");
    a.cancel().await;
    b.cancel().await;
    drop((a, b));

    fx.publish("k", FENCE).await;
    assert_eq!(bodies(&fx.drain_until_fence(&queue).await), Vec::<&str>::new());
}

pub async fn auto_delete_queue_goes_away_with_its_last_consumer(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let spec = QueueSpec { auto_delete: true, ..QueueSpec::default() };
    let queue = fx.queue_with(spec, &["k"]).await;
    let first = fx.consume(&queue, MANUAL).await;
    let second = fx.consume(&queue, MANUAL).await;

    drop(first);
    assert!(broker.queue_len(&queue).await.is_ok(), "the queue stays while a consumer is left");
    drop(second);
    let queue = queue.as_str();
    eventually("the auto-delete queue is deleted", || async move {
        matches!(broker.queue_len(queue).await, Err(BrokerError::UnknownQueue(_)))
    })
    .await;
    fx.publish("k", "nobody listens").await;
}

pub async fn no_ack_deliveries_need_no_ack(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["k"]).await;
    fx.publish("k", "a").await;
    fx.publish("k", "b").await;
    let mut consumer = fx.consume(&queue, ConsumeOptions { prefetch: 0, no_ack: true }).await;
    let received = [Received::of(&next(consumer.as_mut()).await), Received::of(&next(consumer.as_mut()).await)];
    assert_eq!(bodies(&received), ["a", "b"]);
    // No-ack deliveries already pushed to a consumer are gone with it: wait
    // until it is really cancelled before publishing more.
    consumer.cancel().await;
    drop(consumer);

    fx.publish("k", FENCE).await;
    assert_eq!(bodies(&fx.drain_until_fence(&queue).await), Vec::<&str>::new(), "nothing comes back");
}

pub async fn max_length_drops_the_oldest(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let spec = QueueSpec { max_length: Some(3), ..QueueSpec::default() };
    let queue = fx.queue_with(spec, &["k"]).await;
    for i in 0..5 {
        fx.publish("k", &i.to_string()).await;
    }
    let name = queue.as_str();
    eventually("the queue holds its maximum", || async move { broker.queue_len(name).await.ok() == Some(3) }).await;

    let mut consumer = fx.consume(&queue, MANUAL).await;
    for expected in ["2", "3", "4"] {
        let delivery = next(consumer.as_mut()).await;
        assert_eq!(text(&delivery), expected, "the two oldest were dropped");
        ack(delivery).await;
    }
}

/// RabbitMQ's drop-head overflow dead-letters what it drops.
pub async fn max_length_dead_letters_what_it_drops(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let dlx = unique("contract.dlx");
    broker.declare_exchange(&dlx, ExchangeKind::Fanout).await.expect("exchange is declared");
    let dead = unique("contract.dead");
    broker.declare_queue(&QueueSpec { name: dead.clone(), ..QueueSpec::default() }).await.expect("queue is declared");
    broker.bind(&dead, &dlx, "").await.expect("queue is bound");
    let spec = QueueSpec { max_length: Some(2), dead_letter_exchange: Some(dlx), ..QueueSpec::default() };
    let queue = fx.queue_with(spec, &["k"]).await;
    for body in ["0", "1", "2", "3"] {
        fx.publish("k", body).await;
    }
    let mut consumer = fx.consume(&dead, MANUAL).await;
    for expected in ["0", "1"] {
        let delivery = next(consumer.as_mut()).await;
        assert_eq!((text(&delivery).as_str(), delivery.routing_key.as_str()), (expected, "k"), "dropped in order");
        ack(delivery).await;
    }
    assert_eq!(broker.queue_len(&queue).await.expect("known queue"), 2);
}

/// A delivery whose consumer was cancelled went back to the queue: acking
/// it is refused (AMQP: its channel is closed) and another consumer gets
/// it, marked redelivered. So a late ack cannot lose a message silently.
pub async fn settling_a_delivery_of_a_cancelled_consumer_fails_and_it_is_redelivered(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["k"]).await;
    fx.publish("k", "late").await;
    let mut first = fx.consume(&queue, MANUAL).await;
    let late = next(first.as_mut()).await;
    first.cancel().await;
    assert!(matches!(late.ack().await, Err(BrokerError::Stale(_))), "an ack after the consumer went is refused");

    let mut second = fx.consume(&queue, MANUAL).await;
    let again = next(second.as_mut()).await;
    assert_eq!(Received::of(&again), Received { routing_key: "k".into(), body: "late".into(), redelivered: true });
    ack(again).await;
}

/// AMQP 406: the first declaration stands, a different one is refused and
/// the broker keeps working.
pub async fn declaring_again_with_other_settings_is_refused(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let spec = QueueSpec { name: unique("contract.queue"), max_length: Some(10), ..QueueSpec::default() };
    broker.declare_queue(&spec).await.expect("queue is declared");
    broker.declare_queue(&spec).await.expect("the same declaration again is accepted");
    let other = QueueSpec { max_length: Some(20), ..spec.clone() };
    let refused = broker.declare_queue(&other).await;
    assert!(matches!(&refused, Err(BrokerError::Inequivalent { name, .. }) if *name == spec.name), "{refused:?}");
    let refused = broker.declare_exchange(&fx.exchange, ExchangeKind::Fanout).await;
    assert!(matches!(&refused, Err(BrokerError::Inequivalent { .. })), "{refused:?}");

    broker.bind(&spec.name, &fx.exchange, "k").await.expect("queue is bound");
    fx.publish("k", "still working").await;
    let mut consumer = fx.consume(&spec.name, MANUAL).await;
    assert_eq!(text(&next(consumer.as_mut()).await), "still working");
}

pub async fn unbind_stops_delivery(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["quote.AAPL", "quote.*", "fence"]).await;
    fx.publish("quote.AAPL", "before").await;
    broker.unbind(&queue, &fx.exchange, "quote.AAPL").await.expect("exact pattern is unbound");
    broker.unbind(&queue, &fx.exchange, "quote.*").await.expect("wildcard pattern is unbound");
    fx.publish("quote.AAPL", "after").await;
    fx.publish("quote.MSFT", "after").await;
    fx.publish("fence", FENCE).await;
    assert_eq!(bodies(&fx.drain_until_fence(&queue).await), ["before"]);
}

pub async fn queue_len_counts_ready_messages(broker: &dyn Broker) {
    let fx = Fixture::new(broker).await;
    let queue = fx.queue(&["k"]).await;
    assert_eq!(broker.queue_len(&queue).await.expect("known queue"), 0);
    for body in ["a", "b", "c"] {
        fx.publish("k", body).await;
    }
    let name = queue.as_str();
    let has_len = |len: usize| async move { broker.queue_len(name).await.ok() == Some(len) };
    eventually("three messages are ready", || has_len(3)).await;

    let mut consumer = fx.consume(&queue, options(1)).await;
    let delivery = next(consumer.as_mut()).await;
    eventually("an unacked delivery is no longer ready", || has_len(2)).await;
    ack(delivery).await;
    consumer.cancel().await;
    drop(consumer);
    eventually("an acked delivery is gone", || has_len(2)).await;

    let missing = unique("contract.missing");
    assert!(matches!(broker.queue_len(&missing).await, Err(BrokerError::UnknownQueue(_))));
    assert!(matches!(broker.consume(&missing, MANUAL).await, Err(BrokerError::UnknownQueue(_))));
}

mod embedded {
    use lizards_shared::broker::MemoryBroker;

    #[tokio::test]
    async fn topic_bindings_route_by_routing_key() {
        super::topic_bindings_route_by_routing_key(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn queue_bound_twice_gets_one_copy() {
        super::queue_bound_twice_gets_one_copy(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn unroutable_publish_is_accepted() {
        super::unroutable_publish_is_accepted(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn publish_to_unknown_exchange_fails() {
        super::publish_to_unknown_exchange_fails(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn acked_message_is_not_redelivered() {
        super::acked_message_is_not_redelivered(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn nack_with_requeue_redelivers_marked_redelivered() {
        super::nack_with_requeue_redelivers_marked_redelivered(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn nack_without_requeue_dead_letters_through_the_topology() {
        super::nack_without_requeue_dead_letters_through_the_topology(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn nack_without_requeue_and_without_dead_letter_exchange_drops_the_message() {
        super::nack_without_requeue_and_without_dead_letter_exchange_drops_the_message(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn prefetch_limits_unacked_deliveries() {
        super::prefetch_limits_unacked_deliveries(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn dropped_consumer_unacked_messages_are_redelivered_in_order() {
        super::dropped_consumer_unacked_messages_are_redelivered_in_order(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn competing_consumers_get_each_message_once() {
        super::competing_consumers_get_each_message_once(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn auto_delete_queue_goes_away_with_its_last_consumer() {
        super::auto_delete_queue_goes_away_with_its_last_consumer(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn ack_through_settles_every_earlier_delivery() {
        super::ack_through_settles_every_earlier_delivery(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn requeued_batch_keeps_its_order() {
        super::requeued_batch_keeps_its_order(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn no_ack_deliveries_need_no_ack() {
        super::no_ack_deliveries_need_no_ack(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn max_length_drops_the_oldest() {
        super::max_length_drops_the_oldest(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn max_length_dead_letters_what_it_drops() {
        super::max_length_dead_letters_what_it_drops(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn settling_a_delivery_of_a_cancelled_consumer_fails_and_it_is_redelivered() {
        super::settling_a_delivery_of_a_cancelled_consumer_fails_and_it_is_redelivered(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn declaring_again_with_other_settings_is_refused() {
        super::declaring_again_with_other_settings_is_refused(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn unbind_stops_delivery() {
        super::unbind_stops_delivery(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn queue_len_counts_ready_messages() {
        super::queue_len_counts_ready_messages(&MemoryBroker::new()).await;
    }

    #[tokio::test]
    async fn checks_do_not_interfere_on_one_shared_broker() {
        super::run_all(&MemoryBroker::new()).await;
    }
}

/// The same contract against RabbitMQ (`AMQP_URL`; CI starts it).
mod rabbitmq {
    use lizards_shared::broker::AmqpBroker;

    use crate::helpers::real_url;

    async fn broker() -> Option<AmqpBroker> {
        let url = real_url("AMQP_URL")?;
        Some(AmqpBroker::connect(&url).await.expect("RabbitMQ reachable at AMQP_URL"))
    }

    #[tokio::test]
    async fn rabbitmq_meets_the_broker_contract() {
        let Some(broker) = broker().await else { return };
        super::run_all(&broker).await;
    }
}
