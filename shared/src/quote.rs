//! The `Quote` and its broker message body (SPEC §3).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Symbol, time};

/// Version of the broker message body.
pub const WIRE_VERSION: u8 = 1;

/// A validated price observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub symbol: Symbol,
    pub price: f64,
    /// The source's own time of the observation.
    #[serde(with = "time::rfc3339_serde")]
    pub ts: DateTime<Utc>,
    pub volume: Option<f64>,
    pub source: String,
    /// Unique per raw record (the raw document's id).
    pub ingest_id: String,
    /// When ingestion received the record, microseconds since the epoch.
    #[serde(with = "micros_serde")]
    pub ingested_at: DateTime<Utc>,
}

/// Why a broker message body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed quote message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported quote message version {0}")]
    Version(u8),
    #[error("price must be finite and positive, got {0}")]
    Price(f64),
}

#[derive(Serialize)]
struct WireRef<'a> {
    v: u8,
    #[serde(flatten)]
    quote: &'a Quote,
}

#[derive(Deserialize)]
struct Wire {
    v: u8,
    #[serde(flatten)]
    quote: Quote,
}

impl Quote {
    /// The broker body: `{"v":1,"symbol",...}`.
    pub fn encode(&self) -> Bytes {
        let wire = WireRef { v: WIRE_VERSION, quote: self };
        Bytes::from(serde_json::to_vec(&wire).expect("quote serializes"))
    }

    pub fn decode(body: &[u8]) -> Result<Quote, DecodeError> {
        let wire: Wire = serde_json::from_slice(body)?;
        if wire.v != WIRE_VERSION {
            return Err(DecodeError::Version(wire.v));
        }
        let price = wire.quote.price;
        if !price.is_finite() || price <= 0.0 {
            return Err(DecodeError::Price(price));
        }
        Ok(wire.quote)
    }
}

/// Each symbol's newest quote of a batch (by source time).
pub fn newest_per_symbol(quotes: &[Quote]) -> Vec<&Quote> {
    let mut newest: std::collections::HashMap<&Symbol, &Quote> = std::collections::HashMap::with_capacity(quotes.len());
    for quote in quotes {
        let entry = newest.entry(&quote.symbol).or_insert(quote);
        if quote.ts > entry.ts {
            *entry = quote;
        }
    }
    newest.into_values().collect()
}

mod micros_serde {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(ts.timestamp_micros())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let us = i64::deserialize(d)?;
        DateTime::from_timestamp_micros(us).ok_or_else(|| serde::de::Error::custom("ingested_at out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Quote {
        Quote {
            symbol: Symbol::parse("BRK.B").unwrap(),
            price: 412.5,
            ts: DateTime::parse_from_rfc3339("2024-09-14T12:34:56.123456Z").unwrap().to_utc(),
            volume: Some(1200.0),
            source: "synthetic".into(),
            ingest_id: "abc".into(),
            ingested_at: DateTime::from_timestamp_micros(1_726_317_296_123_999).unwrap(),
        }
    }

    #[test]
    fn encode_has_the_wire_shape_and_round_trips() {
        let q = sample();
        let body = q.encode();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["symbol"], "BRK.B");
        assert_eq!(v["ts"], "2024-09-14T12:34:56.123456Z");
        assert_eq!(v["ingested_at"], 1_726_317_296_123_999i64);
        assert_eq!(Quote::decode(&body).unwrap(), q);
    }

    #[test]
    fn decode_rejects_garbage_wrong_version_and_bad_prices() {
        assert!(matches!(Quote::decode(b"{nope"), Err(DecodeError::Json(_))));
        let mut v: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        v["v"] = 2.into();
        assert!(matches!(Quote::decode(v.to_string().as_bytes()), Err(DecodeError::Version(2))));
        v["v"] = 1.into();
        v["price"] = (-1.0).into();
        assert!(matches!(Quote::decode(v.to_string().as_bytes()), Err(DecodeError::Price(_))));
        v["price"] = 1.0.into();
        v["symbol"] = "NOT A SYMBOL".into();
        assert!(Quote::decode(v.to_string().as_bytes()).is_err());
    }
}
