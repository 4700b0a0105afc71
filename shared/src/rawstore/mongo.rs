//! The raw-document store on MongoDB: collection `raw_quotes`, one
//! document per record as received:
//!
//! ```text
//! { _id: ObjectId, source, symbol, source_ts: Date, received_at: Date, body: <the record>,
//!   status?: "accepted" | "rejected", reason?: String, flags?: [String] }
//! ```
//!
//! A TTL index on `received_at` lets MongoDB drop documents after the
//! retention window, and a unique index on `(source, symbol, source_ts)`
//! turns a second copy of a record into `RawStoreError::Duplicate`. Times
//! are BSON dates: whole milliseconds.

use std::{future::IntoFuture, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::{
    Client, Collection, IndexModel,
    bson::{self, Bson, Document, doc, oid::ObjectId},
    error::{CommandError, Error as MongoError, ErrorKind, WriteError, WriteFailure},
    options::{ClientOptions, IndexOptions},
};
use serde_json::Value;

use super::{RawDocument, RawOutcome, RawStore, RawStoreError};

pub const COLLECTION: &str = "raw_quotes";

/// How long the driver looks for a usable server before an operation
/// fails: MongoDB being down shows as `Unavailable` after this long.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on any one operation, for a server that accepts connections but
/// does not answer.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

const TTL_INDEX: &str = "received_at_ttl";
const UNIQUE_INDEX: &str = "source_symbol_source_ts_unique";

/// MongoDB's error codes this adapter tells apart.
const DUPLICATE_KEY: i32 = 11000;
/// MongoDB answers an index that exists with other options with 85; some
/// compatible servers use 86 (same name, other specification).
const INDEX_OPTIONS_CONFLICT: i32 = 85;
const INDEX_KEY_SPECS_CONFLICT: i32 = 86;

/// [`RawStore`] on a MongoDB collection. Cloning shares the client.
#[derive(Clone, Debug)]
pub struct MongoRawStore {
    client: Client,
    database: String,
    collection: Collection<Document>,
}

impl MongoRawStore {
    /// Connects to `uri`, checks the server answers, and makes sure
    /// `database.raw_quotes` has its indexes: documents expire `ttl` after
    /// `received_at` (an existing TTL index is changed to `ttl`), and
    /// source + symbol + source time is unique.
    pub async fn connect(uri: &str, database: &str, ttl: Duration) -> Result<MongoRawStore, RawStoreError> {
        let mut options = bounded(ClientOptions::parse(uri)).await?;
        // Timeouts given in the URI win over these defaults.
        options.server_selection_timeout.get_or_insert(SERVER_SELECTION_TIMEOUT);
        options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
        options.app_name.get_or_insert_with(|| "lizards".to_string());
        let client = Client::with_options(options).map_err(unavailable)?;
        let collection = client.database(database).collection::<Document>(COLLECTION);
        let store = MongoRawStore { client, database: database.to_string(), collection };
        store.ping().await?;
        store.ensure_ttl_index(ttl).await?;
        store.ensure_unique_index().await?;
        Ok(store)
    }

    async fn ensure_ttl_index(&self, ttl: Duration) -> Result<(), RawStoreError> {
        let seconds = expire_after_seconds(ttl);
        let index = IndexModel::builder()
            .keys(doc! {"received_at": 1})
            .options(
                IndexOptions::builder()
                    .name(TTL_INDEX.to_string())
                    .expire_after(Duration::from_secs(seconds.into()))
                    .build(),
            )
            .build();
        match within(self.collection.create_index(index)).await? {
            Ok(_) => Ok(()),
            // The retention setting changed since the index was made:
            // change the index in place rather than dropping it.
            Err(error) if matches!(code(&error), Some(INDEX_OPTIONS_CONFLICT | INDEX_KEY_SPECS_CONFLICT)) => {
                let change = doc! {
                    "collMod": COLLECTION,
                    "index": {"name": TTL_INDEX, "expireAfterSeconds": i64::from(seconds)},
                };
                bounded(self.client.database(&self.database).run_command(change)).await.map(drop)
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn ensure_unique_index(&self) -> Result<(), RawStoreError> {
        let index = IndexModel::builder()
            .keys(doc! {"source": 1, "symbol": 1, "source_ts": 1})
            .options(IndexOptions::builder().name(UNIQUE_INDEX.to_string()).unique(true).build())
            .build();
        bounded(self.collection.create_index(index)).await.map(drop)
    }
}

/// MongoDB takes whole seconds up to `i32::MAX` (some 68 years).
fn expire_after_seconds(ttl: Duration) -> u32 {
    u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX).min(i32::MAX as u32)
}

/// Awaits a driver operation for at most [`OPERATION_TIMEOUT`]; the
/// driver's own error is left for the caller to look into.
async fn within<T>(
    operation: impl IntoFuture<Output = Result<T, MongoError>>,
) -> Result<Result<T, MongoError>, RawStoreError> {
    tokio::time::timeout(OPERATION_TIMEOUT, operation)
        .await
        .map_err(|_| RawStoreError::Unavailable(format!("mongodb did not answer within {OPERATION_TIMEOUT:?}")))
}

/// Like [`within`], every failure being `Unavailable`.
async fn bounded<T>(operation: impl IntoFuture<Output = Result<T, MongoError>>) -> Result<T, RawStoreError> {
    within(operation).await?.map_err(unavailable)
}

fn unavailable(error: MongoError) -> RawStoreError {
    RawStoreError::Unavailable(format!("mongodb: {error}"))
}

/// The server's error code, for the failures that carry one.
fn code(error: &MongoError) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(WriteError { code, .. })) => Some(*code),
        ErrorKind::Command(CommandError { code, .. }) => Some(*code),
        _ => None,
    }
}

fn date(time: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(time.timestamp_millis())
}

fn to_document(id: ObjectId, doc: &RawDocument) -> Document {
    doc! {
        "_id": id,
        "source": &doc.source,
        "symbol": &doc.symbol,
        "source_ts": date(doc.source_ts),
        "received_at": date(doc.received_at),
        "body": json_to_bson(&doc.body),
    }
}

fn from_document(stored: &Document) -> Result<(RawDocument, Option<RawOutcome>), String> {
    let time = |field: &str| -> Result<DateTime<Utc>, String> {
        let date = stored.get_datetime(field).map_err(|error| format!("{field}: {error}"))?;
        DateTime::from_timestamp_millis(date.timestamp_millis()).ok_or_else(|| format!("{field}: out of range"))
    };
    let text = |field: &str| stored.get_str(field).map(str::to_string).map_err(|error| format!("{field}: {error}"));
    let doc = RawDocument {
        source: text("source")?,
        symbol: text("symbol")?,
        source_ts: time("source_ts")?,
        received_at: time("received_at")?,
        body: stored.get("body").map(bson_to_json).unwrap_or(Value::Null),
    };
    let outcome = match stored.get_str("status") {
        Ok("accepted") => {
            let flags = match stored.get_array("flags") {
                Ok(flags) => flags.iter().filter_map(Bson::as_str).map(str::to_string).collect(),
                Err(_) => Vec::new(),
            };
            Some(RawOutcome::Accepted { flags })
        }
        Ok("rejected") => {
            Some(RawOutcome::Rejected { reason: stored.get_str("reason").unwrap_or_default().to_string() })
        }
        Ok(other) => return Err(format!("status: unknown value '{other}'")),
        Err(_) => None,
    };
    Ok((doc, outcome))
}

/// The update recording `outcome`; fields of an earlier outcome go.
fn outcome_update(outcome: &RawOutcome) -> Document {
    match outcome {
        RawOutcome::Accepted { flags } => doc! {
            "$set": {"status": "accepted", "flags": flags},
            "$unset": {"reason": ""},
        },
        RawOutcome::Rejected { reason } => doc! {
            "$set": {"status": "rejected", "reason": reason},
            "$unset": {"flags": ""},
        },
    }
}

/// JSON to BSON as plain values. `Bson::try_from(Value)` would read
/// `{"$date": ...}`-like objects as extended JSON, changing what the
/// source sent. Integers beyond `i64` become doubles.
fn json_to_bson(value: &Value) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Bool(flag) => Bson::Boolean(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => Bson::Int64(integer),
            None => Bson::Double(number.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(text) => Bson::String(text.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(json_to_bson).collect()),
        Value::Object(fields) => {
            Bson::Document(fields.iter().map(|(key, value)| (key.clone(), json_to_bson(value))).collect())
        }
    }
}

/// The inverse of [`json_to_bson`]; BSON types JSON lacks (written by
/// someone else) come out as relaxed extended JSON.
fn bson_to_json(value: &Bson) -> Value {
    match value {
        Bson::Null => Value::Null,
        Bson::Boolean(flag) => Value::Bool(*flag),
        Bson::Int32(integer) => Value::from(*integer),
        Bson::Int64(integer) => Value::from(*integer),
        Bson::Double(number) => serde_json::Number::from_f64(*number).map_or(Value::Null, Value::Number),
        Bson::String(text) => Value::String(text.clone()),
        Bson::Array(items) => Value::Array(items.iter().map(bson_to_json).collect()),
        Bson::Document(fields) => {
            Value::Object(fields.iter().map(|(key, value)| (key.clone(), bson_to_json(value))).collect())
        }
        other => other.clone().into_relaxed_extjson(),
    }
}

#[async_trait]
impl RawStore for MongoRawStore {
    async fn insert(&self, doc: RawDocument) -> Result<String, RawStoreError> {
        let id = ObjectId::new();
        match within(self.collection.insert_one(to_document(id, &doc))).await? {
            Ok(_) => Ok(id.to_hex()),
            Err(error) if code(&error) == Some(DUPLICATE_KEY) => Err(RawStoreError::Duplicate),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn set_outcome(&self, id: &str, outcome: RawOutcome) -> Result<(), RawStoreError> {
        // Not an id this store hands out: like any unknown id, nothing to update.
        let Ok(id) = ObjectId::parse_str(id) else {
            return Ok(());
        };
        bounded(self.collection.update_one(doc! {"_id": id}, outcome_update(&outcome))).await.map(drop)
    }

    async fn reclaim(&self, doc: &RawDocument, reason: &str) -> Result<Option<String>, RawStoreError> {
        let filter = doc! {
            "source": &doc.source,
            "symbol": &doc.symbol,
            "source_ts": date(doc.source_ts),
            "status": "rejected",
            "reason": reason,
        };
        let clear = doc! {"$unset": {"status": "", "reason": "", "flags": ""}};
        let claimed = bounded(self.collection.find_one_and_update(filter, clear)).await?;
        Ok(claimed.and_then(|stored| stored.get_object_id("_id").ok()).map(|id| id.to_hex()))
    }

    async fn get(&self, id: &str) -> Result<Option<(RawDocument, Option<RawOutcome>)>, RawStoreError> {
        let Ok(object_id) = ObjectId::parse_str(id) else {
            return Ok(None);
        };
        let Some(stored) = bounded(self.collection.find_one(doc! {"_id": object_id})).await? else {
            return Ok(None);
        };
        from_document(&stored)
            .map(Some)
            .map_err(|reason| RawStoreError::Unavailable(format!("malformed raw document {id}: {reason}")))
    }

    async fn ping(&self) -> Result<(), RawStoreError> {
        bounded(self.client.database(&self.database).run_command(doc! {"ping": 1})).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_bodies_survive_the_bson_round_trip() {
        let body = json!({
            "symbol": "AAPL", "price": 150.23, "volume": 1200, "negative": -3, "whole_float": 2.0,
            "flags": [true, null, "x"], "nested": {"$date": "not extended JSON", "a.b": 1}
        });
        assert_eq!(bson_to_json(&json_to_bson(&body)), body);
        assert_eq!(bson_to_json(&json_to_bson(&json!("a string body"))), json!("a string body"));
    }

    #[test]
    fn expiry_is_whole_seconds_within_mongodbs_range() {
        assert_eq!(expire_after_seconds(Duration::from_secs(7 * 86_400)), 604_800);
        assert_eq!(expire_after_seconds(Duration::MAX), i32::MAX as u32);
    }

    #[test]
    fn a_new_outcome_clears_the_fields_of_the_old_one() {
        let accepted = outcome_update(&RawOutcome::Accepted { flags: vec!["jump".into()] });
        assert_eq!(accepted.get_document("$unset").expect("unset").keys().collect::<Vec<_>>(), ["reason"]);
        let rejected = outcome_update(&RawOutcome::Rejected { reason: "stale".into() });
        assert_eq!(rejected.get_document("$unset").expect("unset").keys().collect::<Vec<_>>(), ["flags"]);
    }
}
