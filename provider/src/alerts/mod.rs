//! Alerts: rules are evaluated once per quote from `alerts.eval`
//! ([`evaluator`]); a fired alert is stored with the rule's new state, then
//! published on the `alerts` exchange as `alert.<user id>`, which feeds both
//! the durable `notify` queue (the notifier) and every provider's live
//! queue (the user's WebSockets). [`outbox`] republishes alerts whose
//! publish was not confirmed.

pub mod eval;
pub mod evaluator;
pub mod outbox;

use bytes::Bytes;
use lizards_shared::{
    accounts::{Alert, UserId},
    broker::{ALERTS_EXCHANGE, Broker, BrokerError},
    time,
};
use serde_json::{Value, json};

/// Version of the `notify` message body.
pub const MESSAGE_VERSION: u32 = 1;

/// An alert as `GET /alerts` lists it and the `alert` frame carries it.
pub fn alert_json(alert: &Alert) -> Value {
    json!({
        "id": alert.id,
        "rule_id": alert.rule_id,
        "symbol": alert.symbol,
        "kind": alert.kind,
        "threshold": alert.threshold,
        "price": alert.price,
        "change_pct": alert.change_pct,
        "message": alert.message,
        "fired_at": time::rfc3339(&alert.fired_at),
        "deliveries": alert.deliveries,
    })
}

/// The message published for a fired alert: its user and the alert.
pub fn encode(alert: &Alert) -> Bytes {
    let body = json!({ "v": MESSAGE_VERSION, "user_id": alert.user_id, "alert": alert_json(alert) });
    Bytes::from(serde_json::to_vec(&body).expect("alert serializes"))
}

/// A published alert as the live feed and the notifier read it.
#[derive(Debug, Clone)]
pub struct Published {
    pub user_id: UserId,
    pub alert: Value,
}

pub fn decode(body: &[u8]) -> Result<Published, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let user_id = value.get("user_id").and_then(Value::as_i64).ok_or("no user_id")?;
    let alert = value.get("alert").filter(|a| a.is_object()).cloned().ok_or("no alert object")?;
    Ok(Published { user_id: UserId(user_id), alert })
}

pub fn routing_key(user: UserId) -> String {
    format!("alert.{user}")
}

/// Publishes a stored alert (confirmed by the broker when it returns Ok).
pub async fn publish(broker: &dyn Broker, alert: &Alert) -> Result<(), BrokerError> {
    broker.publish(ALERTS_EXCHANGE, &routing_key(alert.user_id), encode(alert)).await
}

/// Symbols some alert rule or open position names: quotes of other symbols
/// skip evaluation, and these join the instance's demand set so ingestion
/// keeps polling them. Rule and order changes add to it at once; a refresh
/// from the store (every [`INTEREST_REFRESH`]) drops what is gone and picks
/// up other instances' changes.
#[derive(Default)]
pub struct Interest {
    symbols: std::sync::RwLock<std::collections::HashSet<lizards_shared::Symbol>>,
    changes: std::sync::OnceLock<tokio::sync::watch::Sender<u64>>,
}

pub const INTEREST_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

impl Interest {
    pub fn contains(&self, symbol: &lizards_shared::Symbol) -> bool {
        self.symbols.read().expect("interest lock").contains(symbol)
    }

    pub fn all(&self) -> Vec<lizards_shared::Symbol> {
        self.symbols.read().expect("interest lock").iter().cloned().collect()
    }

    pub fn add(&self, symbol: &lizards_shared::Symbol) {
        if self.symbols.write().expect("interest lock").insert(symbol.clone()) {
            self.changed();
        }
    }

    pub fn replace(&self, symbols: std::collections::HashSet<lizards_shared::Symbol>) {
        let mut current = self.symbols.write().expect("interest lock");
        if *current != symbols {
            *current = symbols;
            drop(current);
            self.changed();
        }
    }

    /// Bumped on every change (the demand publisher follows it).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.get_or_init(|| tokio::sync::watch::channel(0).0).subscribe()
    }

    fn changed(&self) {
        if let Some(sender) = self.changes.get() {
            sender.send_modify(|n| *n += 1);
        }
    }

    /// Reloads from the store until shutdown.
    pub async fn refresh(
        self: std::sync::Arc<Self>,
        store: std::sync::Arc<dyn lizards_shared::accounts::AccountStore>,
        shutdown: lizards_shared::shutdown::Shutdown,
    ) {
        loop {
            match store.symbol_refcounts().await {
                Ok(refs) => self.replace(refs.into_iter().map(|r| r.symbol).collect()),
                Err(error) => tracing::warn!(%error, "cannot reload the symbols alert rules and positions use"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(INTEREST_REFRESH) => {}
            }
        }
    }
}
