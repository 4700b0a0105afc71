//! Demand sets on the `control` exchange (docs/architecture.md, Symbols):
//! every provider instance publishes the full set of symbols it needs
//! (subscriptions, alert rules, positions) every [`DEMAND_INTERVAL`];
//! ingestion keeps each instance's set for [`DEMAND_TTL`], so a crashed
//! provider's demand expires by itself.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Symbol;

/// How often a provider instance publishes its demand set.
pub const DEMAND_INTERVAL: Duration = Duration::from_secs(10);
/// How long ingestion keeps an instance's last set.
pub const DEMAND_TTL: Duration = Duration::from_secs(30);
/// Binding pattern for demand messages on the `control` exchange.
pub const DEMAND_PATTERN: &str = "demand.*";

/// One provider instance's complete demand at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandSet {
    /// The publishing instance; a newer set replaces its older one.
    pub instance: String,
    pub symbols: Vec<Symbol>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid demand message: {0}")]
pub struct DemandError(#[from] serde_json::Error);

impl DemandSet {
    /// Routing key on the `control` exchange.
    pub fn routing_key(&self) -> String {
        format!("demand.{}", self.instance)
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a demand set serializes"))
    }

    pub fn decode(body: &[u8]) -> Result<DemandSet, DemandError> {
        Ok(serde_json::from_slice(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_invalid_symbols() {
        let set = DemandSet { instance: "p1".into(), symbols: vec![Symbol::parse("AAPL").unwrap()] };
        assert_eq!(DemandSet::decode(&set.encode()).unwrap(), set);
        assert_eq!(set.routing_key(), "demand.p1");
        assert!(DemandSet::decode(br#"{"instance":"p1","symbols":["AA PL"]}"#).is_err());
        assert!(DemandSet::decode(b"garbage").is_err());
    }
}
