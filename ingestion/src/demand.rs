//! Which symbols the polled sources fetch: the union of every
//! provider instance's last demand set (kept [`DEMAND_TTL`] after it
//! arrived), `ALWAYS_ON_SYMBOLS`, symbols found by an on-demand lookup, and
//! symbols whose demand ended less than `DEMAND_GRACE` ago.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lizards_shared::{
    Symbol,
    broker::{Broker, BrokerError, CONTROL_EXCHANGE, ConsumeOptions, Consumer, QueueSpec},
    demand::{DEMAND_PATTERN, DEMAND_TTL, DemandSet},
    shutdown::Shutdown,
};
use prometheus::IntGauge;

pub struct Demand {
    always_on: Vec<Symbol>,
    grace: Duration,
    state: Mutex<State>,
    gauges: Option<(IntGauge, IntGauge)>,
}

#[derive(Default)]
struct State {
    /// Each provider instance's last set and when it expires.
    instances: HashMap<String, (Vec<Symbol>, Instant)>,
    /// When each symbol was last wanted by someone.
    wanted_at: HashMap<Symbol, Instant>,
}

impl Demand {
    pub fn new(always_on: Vec<Symbol>, grace: Duration) -> Demand {
        Demand { always_on, grace, state: Mutex::default(), gauges: None }
    }

    /// Keeps `symbols` and `instances` gauges up to date.
    pub fn with_gauges(mut self, symbols: IntGauge, instances: IntGauge) -> Demand {
        self.gauges = Some((symbols, instances));
        self
    }

    /// An instance's complete set, replacing its previous one.
    pub fn update(&self, set: DemandSet, now: Instant) {
        let mut state = self.state.lock().expect("demand lock");
        for symbol in &set.symbols {
            state.wanted_at.insert(symbol.clone(), now);
        }
        state.instances.insert(set.instance, (set.symbols, now + DEMAND_TTL));
    }

    /// A symbol someone just asked about (on-demand lookup): polled for the
    /// grace period even before a provider's next set names it.
    pub fn pin(&self, symbol: &Symbol, now: Instant) {
        self.state.lock().expect("demand lock").wanted_at.insert(symbol.clone(), now);
    }

    /// Every symbol to poll at `now`, sorted.
    pub fn symbols(&self, now: Instant) -> Vec<Symbol> {
        let mut state = self.state.lock().expect("demand lock");
        state.instances.retain(|_, (_, expires)| *expires > now);
        let State { instances, wanted_at } = &mut *state;
        for (symbols, _) in instances.values() {
            for symbol in symbols {
                wanted_at.insert(symbol.clone(), now);
            }
        }
        wanted_at.retain(|_, at| now.saturating_duration_since(*at) <= self.grace);
        let all: BTreeSet<Symbol> = wanted_at.keys().chain(&self.always_on).cloned().collect();
        if let Some((symbols, live)) = &self.gauges {
            symbols.set(i64::try_from(all.len()).unwrap_or(i64::MAX));
            live.set(i64::try_from(instances.len()).unwrap_or(i64::MAX));
        }
        all.into_iter().collect()
    }
}

/// Demand messages kept waiting for this instance at most: only the newest
/// set of each provider matters.
const QUEUE_LENGTH: usize = 1_000;

/// Declares this instance's queue on the `control` exchange and consumes it.
pub async fn subscribe(broker: &dyn Broker) -> Result<Box<dyn Consumer>, BrokerError> {
    let queue = format!("ingestion.demand.{}", uuid::Uuid::new_v4());
    let spec =
        QueueSpec { name: queue.clone(), auto_delete: true, max_length: Some(QUEUE_LENGTH), ..Default::default() };
    broker.declare_queue(&spec).await?;
    broker.bind(&queue, CONTROL_EXCHANGE, DEMAND_PATTERN).await?;
    broker.consume(&queue, ConsumeOptions { prefetch: 0, no_ack: true }).await
}

/// Feeds every demand set `consumer` receives into `demand` until shutdown.
/// Unreadable messages are logged and dropped.
pub async fn listen(mut consumer: Box<dyn Consumer>, demand: Arc<Demand>, shutdown: Shutdown) {
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            delivery = consumer.next() => delivery,
        };
        // The queue is auto-delete: the supervisor reports a closed one.
        let Some(delivery) = delivery else { return };
        match DemandSet::decode(&delivery.body) {
            Ok(set) => demand.update(set, Instant::now()),
            Err(error) => tracing::warn!(%error, routing_key = %delivery.routing_key, "demand message dropped"),
        }
    }
    consumer.cancel().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbols(list: &[&str]) -> Vec<Symbol> {
        list.iter().map(|s| Symbol::parse(s).unwrap()).collect()
    }

    fn set(instance: &str, list: &[&str]) -> DemandSet {
        DemandSet { instance: instance.into(), symbols: symbols(list) }
    }

    const GRACE: Duration = Duration::from_secs(300);

    #[test]
    fn polls_the_union_of_instances_and_always_on() {
        let demand = Demand::new(symbols(&["SPY"]), GRACE);
        let t0 = Instant::now();
        demand.update(set("a", &["AAPL", "MSFT"]), t0);
        demand.update(set("b", &["MSFT", "TSLA"]), t0);
        assert_eq!(demand.symbols(t0), symbols(&["AAPL", "MSFT", "SPY", "TSLA"]));
    }

    #[test]
    fn dropped_symbols_stay_for_the_grace_period_then_go() {
        let demand = Demand::new(Vec::new(), GRACE);
        let t0 = Instant::now();
        demand.update(set("a", &["AAPL", "MSFT"]), t0);
        let t1 = t0 + Duration::from_secs(10);
        demand.update(set("a", &["MSFT"]), t1);
        assert_eq!(demand.symbols(t1 + GRACE - Duration::from_secs(11)), symbols(&["AAPL", "MSFT"]));
        // MSFT is still demanded by a's set only while the set lives and is renewed.
        let t2 = t1 + GRACE;
        demand.update(set("a", &["MSFT"]), t2);
        assert_eq!(demand.symbols(t2), symbols(&["MSFT"]));
    }

    #[test]
    fn a_silent_instance_expires_then_its_symbols_after_the_grace() {
        let demand = Demand::new(Vec::new(), Duration::from_secs(60));
        let t0 = Instant::now();
        demand.update(set("crashed", &["AAPL"]), t0);
        let expired = t0 + DEMAND_TTL + Duration::from_secs(1);
        assert_eq!(demand.symbols(expired), symbols(&["AAPL"]), "within the grace after its set expired");
        assert_eq!(demand.symbols(expired + Duration::from_secs(61)), Vec::<Symbol>::new());
    }

    #[test]
    fn a_pinned_lookup_counts_as_demand_for_the_grace() {
        let demand = Demand::new(Vec::new(), Duration::from_secs(60));
        let t0 = Instant::now();
        demand.pin(&Symbol::parse("ZZZZ").unwrap(), t0);
        assert_eq!(demand.symbols(t0 + Duration::from_secs(59)), symbols(&["ZZZZ"]));
        assert!(demand.symbols(t0 + Duration::from_secs(61)).is_empty());
    }
}
