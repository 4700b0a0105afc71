//! This instance's demand set on the `control` exchange (SPEC §4): the
//! symbols its clients watch, published in full every
//! [`DEMAND_INTERVAL`] and as soon as it changes, so ingestion polls what
//! someone needs and a crashed instance's demand expires on its own.
//! (Alert rules and positions join the set with issue 7's accounts.)

use std::{sync::Arc, time::Duration};

use lizards_shared::{
    Symbol,
    broker::{Broker, CONTROL_EXCHANGE},
    demand::{DEMAND_INTERVAL, DemandSet},
    shutdown::Shutdown,
};

use crate::hub::Hub;

/// A failed publish is retried after this long.
const RETRY: Duration = Duration::from_secs(1);

pub async fn publish(broker: Arc<dyn Broker>, hub: Arc<Hub>, instance: String, shutdown: Shutdown) {
    let mut changes = hub.demand_changes();
    loop {
        let mut symbols: Vec<Symbol> = hub.watched().into_iter().collect();
        symbols.sort();
        let set = DemandSet { instance: instance.clone(), symbols };
        let wait = match broker.publish(CONTROL_EXCHANGE, &set.routing_key(), set.encode()).await {
            Ok(()) => {
                tracing::debug!(symbols = set.symbols.len(), "demand set published");
                DEMAND_INTERVAL
            }
            // Ingestion keeps the last set meanwhile.
            Err(error) => {
                tracing::warn!(%error, "demand set not published");
                RETRY
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
