//! The `Quote` and its broker message bodies (docs/architecture.md, Broker
//! topology): a batch of quotes of one symbol shard (version 2, what
//! ingestion publishes) or a single quote (version 1, still accepted).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Symbol, time};

/// Version of the single-quote broker message body.
pub const WIRE_VERSION: u8 = 1;
/// Version of the batch body: `{"v":2,"quotes":[...]}`.
pub const BATCH_VERSION: u8 = 2;
/// Symbol shards of the quotes exchange: a batch holds quotes of one shard
/// and is routed by `quote.shard.<n>`, so a live queue binds the shards of
/// the symbols it watches. Changing it re-routes every symbol: every
/// process of a deployment must agree.
pub const SHARDS: u16 = 16;

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

#[derive(Serialize)]
struct BatchRef<'a> {
    v: u8,
    quotes: &'a [Quote],
}

/// Any body: the version first, a batch's quotes left raw so that one bad
/// quote spoils only itself.
#[derive(Deserialize)]
struct Envelope<'a> {
    v: u8,
    #[serde(borrow, default)]
    quotes: Option<Vec<&'a serde_json::value::RawValue>>,
}

/// A quote of a batch that could not be read, kept as it came.
#[derive(Debug)]
pub struct Poison {
    pub body: Bytes,
    pub error: DecodeError,
}

/// What a broker message body held.
#[derive(Debug, Default)]
pub struct Decoded {
    pub quotes: Vec<Quote>,
    /// The unreadable quotes of a batch (a single-quote body that cannot be
    /// read is an error of the whole message instead).
    pub poison: Vec<Poison>,
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
        wire.quote.checked()
    }

    fn checked(self) -> Result<Quote, DecodeError> {
        if !self.price.is_finite() || self.price <= 0.0 {
            return Err(DecodeError::Price(self.price));
        }
        Ok(self)
    }
}

/// The batch body of `quotes` (one shard's; see [`shard_routing_key`]).
pub fn encode_batch(quotes: &[Quote]) -> Bytes {
    let wire = BatchRef { v: BATCH_VERSION, quotes };
    Bytes::from(serde_json::to_vec(&wire).expect("quotes serialize"))
}

/// Reads a batch or a single-quote body. An error means the message as a
/// whole is unreadable; a batch's unreadable quotes come back as poison.
pub fn decode_message(body: &[u8]) -> Result<Decoded, DecodeError> {
    let envelope: Envelope = serde_json::from_slice(body)?;
    match (envelope.v, envelope.quotes) {
        (WIRE_VERSION, _) => Ok(Decoded { quotes: vec![Quote::decode(body)?], poison: Vec::new() }),
        (BATCH_VERSION, Some(items)) => {
            let mut decoded = Decoded { quotes: Vec::with_capacity(items.len()), poison: Vec::new() };
            for item in items {
                let quote = serde_json::from_str::<Quote>(item.get()).map_err(DecodeError::from);
                match quote.and_then(Quote::checked) {
                    Ok(quote) => decoded.quotes.push(quote),
                    Err(error) => {
                        decoded.poison.push(Poison { body: Bytes::copy_from_slice(item.get().as_bytes()), error })
                    }
                }
            }
            Ok(decoded)
        }
        (BATCH_VERSION, None) => Err(DecodeError::Json(serde::de::Error::missing_field("quotes"))),
        (other, _) => Err(DecodeError::Version(other)),
    }
}

/// The shard of `symbol`: FNV-1a of its text, stable across processes and
/// releases.
pub fn shard(symbol: &Symbol) -> u16 {
    let hash = symbol
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
    (hash % u64::from(SHARDS)) as u16
}

/// Routing key of a shard's batches. Lower case, so it never equals a
/// single quote's `quote.<SYMBOL>` (symbols are upper case), and `quote.#`
/// matches both.
pub fn shard_routing_key(shard: u16) -> String {
    format!("quote.shard.{shard}")
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
    fn a_batch_round_trips_and_its_bad_quotes_come_back_alone() {
        let good = sample();
        let body = encode_batch(std::slice::from_ref(&good));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["v"], 2);
        assert_eq!(v["quotes"][0]["symbol"], "BRK.B");
        assert!(v["quotes"][0].get("v").is_none());
        let decoded = decode_message(&body).unwrap();
        assert_eq!(decoded.quotes, vec![good.clone()]);
        assert!(decoded.poison.is_empty());

        let mut v = v;
        let mut bad = v["quotes"][0].clone();
        bad["price"] = (-1.0).into();
        let mut unreadable = v["quotes"][0].clone();
        unreadable["symbol"] = "NOT A SYMBOL".into();
        v["quotes"] = serde_json::json!([bad, v["quotes"][0], unreadable, 7]);
        let decoded = decode_message(v.to_string().as_bytes()).unwrap();
        assert_eq!(decoded.quotes, vec![good.clone()]);
        assert_eq!(decoded.poison.len(), 3);
        assert!(matches!(decoded.poison[0].error, DecodeError::Price(_)));
        assert_eq!(&decoded.poison[2].body[..], b"7");
        let poisoned: serde_json::Value = serde_json::from_slice(&decoded.poison[0].body).unwrap();
        assert_eq!(poisoned, bad);
    }

    #[test]
    fn a_message_reads_single_quotes_and_refuses_what_is_not_a_message() {
        assert_eq!(decode_message(&sample().encode()).unwrap().quotes, vec![sample()]);
        assert!(matches!(decode_message(br#"{"v":2}"#), Err(DecodeError::Json(_))));
        assert!(matches!(decode_message(br#"{"v":3,"quotes":[]}"#), Err(DecodeError::Version(3))));
        assert!(matches!(decode_message(b"[1,2]"), Err(DecodeError::Json(_))));
        assert!(decode_message(br#"{"v":2,"quotes":[]}"#).unwrap().quotes.is_empty());
        let mut v: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        v["price"] = 0.0.into();
        assert!(matches!(decode_message(v.to_string().as_bytes()), Err(DecodeError::Price(_))));
    }

    #[test]
    fn shards_are_stable_and_spread() {
        let symbol = |s: &str| Symbol::parse(s).unwrap();
        // Fixed values: every process and release must route alike.
        assert_eq!((shard(&symbol("AAPL")), shard(&symbol("MSFT")), shard(&symbol("BTC-USD"))), (11, 3, 1));
        let used: std::collections::HashSet<u16> = (0..200).map(|i| shard(&symbol(&format!("S{i}")))).collect();
        assert_eq!(used.len(), usize::from(SHARDS), "200 symbols reach every shard");
        assert!(used.iter().all(|&s| s < SHARDS));
        assert_eq!(shard_routing_key(3), "quote.shard.3");
        assert!(crate::broker::topic_matches("quote.#", &shard_routing_key(3)));
        assert!(!crate::broker::topic_matches(&symbol("SHARD").routing_key(), &shard_routing_key(3)));
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
