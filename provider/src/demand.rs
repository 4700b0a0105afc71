//! This instance's demand set on the `control` exchange (SPEC §4): the
//! symbols its clients watch, published in full every
//! [`DEMAND_INTERVAL`] and soon after it changes, so ingestion polls what
//! someone needs and a crashed instance's demand expires on its own.
//! (Alert rules and positions join the set with issue 7's accounts.)

use std::{collections::HashSet, sync::Arc, time::Duration};

use lizards_shared::{
    Symbol,
    broker::{Broker, CONTROL_EXCHANGE},
    demand::{DEMAND_INTERVAL, DemandSet},
    shutdown::Shutdown,
};
use tokio::time::Instant;

use crate::hub::Hub;

/// How often the watched set is compared with the last one published.
const CHANGE_CHECK: Duration = Duration::from_millis(250);

pub async fn publish(broker: Arc<dyn Broker>, hub: Arc<Hub>, instance: String, shutdown: Shutdown) {
    let mut published: Option<HashSet<Symbol>> = None;
    let mut next_full = Instant::now();
    loop {
        let watched = hub.watched();
        if published.as_ref() != Some(&watched) || Instant::now() >= next_full {
            let mut symbols: Vec<Symbol> = watched.iter().cloned().collect();
            symbols.sort();
            let set = DemandSet { instance: instance.clone(), symbols };
            match broker.publish(CONTROL_EXCHANGE, &set.routing_key(), set.encode()).await {
                Ok(()) => {
                    tracing::debug!(symbols = set.symbols.len(), "demand set published");
                    published = Some(watched);
                    next_full = Instant::now() + DEMAND_INTERVAL;
                }
                // Retried at the next check; ingestion keeps the last set meanwhile.
                Err(error) => tracing::warn!(%error, "demand set not published"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHANGE_CHECK) => {}
        }
    }
}
