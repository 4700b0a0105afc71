//! This instance's demand set on the `control` exchange: the
//! symbols its clients watch and those alert rules or open positions name,
//! published in full every [`DEMAND_INTERVAL`] and as soon as it changes, so
//! ingestion polls what someone needs and a crashed instance's demand
//! expires on its own.

use std::{sync::Arc, time::Duration};

use lizards_shared::{
    Symbol,
    broker::{Broker, CONTROL_EXCHANGE},
    demand::{DEMAND_INTERVAL, DemandSet},
    shutdown::Shutdown,
};

use crate::{alerts::Interest, hub::Hub};

/// A failed publish is retried after this long.
const RETRY: Duration = Duration::from_secs(1);

pub async fn publish(
    broker: Arc<dyn Broker>,
    hub: Arc<Hub>,
    interest: Arc<Interest>,
    instance: String,
    shutdown: Shutdown,
) {
    let mut changes = hub.demand_changes();
    let mut interest_changes = interest.changes();
    loop {
        let mut watched = hub.watched();
        watched.extend(interest.all());
        let mut symbols: Vec<Symbol> = watched.into_iter().collect();
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
            _ = interest_changes.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
