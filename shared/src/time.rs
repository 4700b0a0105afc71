//! Timestamp formatting shared by the wire formats.

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 in UTC with `Z`, keeping as many sub-second digits as the value has.
pub fn rfc3339(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Microseconds since the Unix epoch.
pub fn micros(ts: &DateTime<Utc>) -> i64 {
    ts.timestamp_micros()
}

pub fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Serde helper: a `DateTime<Utc>` as `rfc3339` text.
pub mod rfc3339_serde {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc)).map_err(serde::de::Error::custom)
    }
}
