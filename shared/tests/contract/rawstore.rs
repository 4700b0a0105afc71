//! Behaviour every `RawStore` adapter must show (MongoDB `raw_quotes`): each
//! record kept with its id, unique on source + symbol + source time, with the
//! outcome validation gave it. Each check uses a source name of its own, so
//! the suite can share one real database.
//!
//! Times are whole milliseconds: the precision of a BSON date.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use lizards_shared::rawstore::{MemoryRawStore, RawDocument, RawOutcome, RawStore, RawStoreError};
use serde_json::json;

use crate::helpers::unique;

/// An id no adapter hands out (a well-formed MongoDB ObjectId, too).
const UNKNOWN_ID: &str = "000000000000000000000000";

pub async fn run_all(store: &dyn RawStore) {
    insert_returns_an_id_and_get_returns_the_document(store).await;
    same_source_symbol_and_time_is_a_duplicate(store).await;
    documents_differing_in_one_key_part_are_not_duplicates(store).await;
    outcome_is_kept_with_the_document(store).await;
    unknown_id_has_no_document(store).await;
    a_record_rejected_for_a_reason_is_reclaimed_once(store).await;
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn document(source: &str, symbol: &str, source_ts: DateTime<Utc>) -> RawDocument {
    RawDocument {
        source: source.to_string(),
        symbol: symbol.to_string(),
        source_ts,
        received_at: now(),
        body: json!({"symbol": symbol, "price": 150.23, "nested": {"volume": 1200}}),
    }
}

async fn insert(store: &dyn RawStore, doc: &RawDocument) -> String {
    store.insert(doc.clone()).await.expect("a new document is stored")
}

async fn get(store: &dyn RawStore, id: &str) -> Option<(RawDocument, Option<RawOutcome>)> {
    store.get(id).await.expect("get answers")
}

pub async fn insert_returns_an_id_and_get_returns_the_document(store: &dyn RawStore) {
    let doc = document(&unique("contract"), "AAPL", now());
    let id = insert(store, &doc).await;
    assert!(!id.is_empty());
    assert_eq!(get(store, &id).await, Some((doc, None)), "stored as given, without an outcome yet");
}

pub async fn same_source_symbol_and_time_is_a_duplicate(store: &dyn RawStore) {
    let doc = document(&unique("contract"), "AAPL", now());
    let first = insert(store, &doc).await;
    let again = RawDocument { body: json!({"other": "body"}), received_at: now(), ..doc.clone() };
    let result = store.insert(again).await;
    assert!(matches!(result, Err(RawStoreError::Duplicate)), "second insert gave {result:?}");
    assert_eq!(get(store, &first).await.map(|(doc, _)| doc), Some(doc), "the first copy is untouched");
}

pub async fn documents_differing_in_one_key_part_are_not_duplicates(store: &dyn RawStore) {
    let source = unique("contract");
    let ts = now();
    let base = document(&source, "AAPL", ts);
    let variants = [
        base.clone(),
        document(&unique("contract"), "AAPL", ts),
        document(&source, "MSFT", ts),
        document(&source, "AAPL", ts + chrono::Duration::milliseconds(1)),
    ];
    let mut ids = Vec::new();
    for doc in &variants {
        ids.push(insert(store, doc).await);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), variants.len(), "every document has its own id");
}

pub async fn outcome_is_kept_with_the_document(store: &dyn RawStore) {
    let doc = document(&unique("contract"), "AAPL", now());
    let id = insert(store, &doc).await;
    let accepted = RawOutcome::Accepted { flags: vec!["jump".to_string()] };
    store.set_outcome(&id, accepted.clone()).await.expect("outcome is stored");
    assert_eq!(get(store, &id).await, Some((doc.clone(), Some(accepted))));

    let rejected = RawOutcome::Rejected { reason: "invalid_price".to_string() };
    store.set_outcome(&id, rejected.clone()).await.expect("outcome is replaced");
    assert_eq!(get(store, &id).await, Some((doc, Some(rejected))));
}

pub async fn unknown_id_has_no_document(store: &dyn RawStore) {
    assert_eq!(get(store, UNKNOWN_ID).await, None);
}

/// The embedded store's own promises: a cap and a TTL, standing in for
/// MongoDB's TTL index and disk.
pub async fn a_record_rejected_for_a_reason_is_reclaimed_once(store: &dyn RawStore) {
    let doc = document(&unique("contract"), "AAPL", now());
    assert_eq!(store.reclaim(&doc, "publish_failed").await.expect("answers"), None, "nothing stored yet");
    let id = insert(store, &doc).await;
    assert_eq!(store.reclaim(&doc, "publish_failed").await.expect("answers"), None, "no outcome yet");
    let failed = RawOutcome::Rejected { reason: "publish_failed".into() };
    store.set_outcome(&id, failed).await.expect("outcome saved");
    assert_eq!(store.reclaim(&doc, "invalid_price").await.expect("answers"), None, "another reason");
    assert_eq!(store.reclaim(&doc, "publish_failed").await.expect("answers"), Some(id.clone()));
    assert_eq!(get(store, &id).await.map(|(_, outcome)| outcome), Some(None), "its outcome is cleared");
    assert_eq!(store.reclaim(&doc, "publish_failed").await.expect("answers"), None, "claimed once");
}

mod embedded {
    use super::*;

    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    fn store() -> MemoryRawStore {
        MemoryRawStore::new(1_000, WEEK)
    }

    #[tokio::test]
    async fn insert_returns_an_id_and_get_returns_the_document() {
        super::insert_returns_an_id_and_get_returns_the_document(&store()).await;
    }

    #[tokio::test]
    async fn same_source_symbol_and_time_is_a_duplicate() {
        super::same_source_symbol_and_time_is_a_duplicate(&store()).await;
    }

    #[tokio::test]
    async fn documents_differing_in_one_key_part_are_not_duplicates() {
        super::documents_differing_in_one_key_part_are_not_duplicates(&store()).await;
    }

    #[tokio::test]
    async fn outcome_is_kept_with_the_document() {
        super::outcome_is_kept_with_the_document(&store()).await;
    }

    #[tokio::test]
    async fn unknown_id_has_no_document() {
        super::unknown_id_has_no_document(&store()).await;
    }

    #[tokio::test]
    async fn a_record_rejected_for_a_reason_is_reclaimed_once() {
        super::a_record_rejected_for_a_reason_is_reclaimed_once(&store()).await;
    }

    #[tokio::test]
    async fn checks_do_not_interfere_on_one_shared_store() {
        super::run_all(&store()).await;
    }

    #[tokio::test]
    async fn cap_evicts_the_oldest_and_frees_its_key() {
        let store = MemoryRawStore::new(3, WEEK);
        let ts = now();
        let docs: Vec<RawDocument> = ["A", "B", "C", "D"].iter().map(|s| document("capped", s, ts)).collect();
        let mut ids = Vec::new();
        for doc in &docs {
            ids.push(insert(&store, doc).await);
        }
        assert_eq!(get(&store, &ids[0]).await, None, "the oldest went over the cap");
        for (id, doc) in ids.iter().zip(&docs).skip(1) {
            assert_eq!(get(&store, id).await.map(|(doc, _)| doc).as_ref(), Some(doc));
        }

        let again = insert(&store, &docs[0]).await;
        assert_ne!(again, ids[0], "a new id for the new copy");
        assert_eq!(get(&store, &ids[1]).await, None, "which pushed out the next oldest");
    }

    #[tokio::test]
    async fn expired_documents_are_dropped_and_free_their_key() {
        let ttl = Duration::from_secs(60);
        let store = MemoryRawStore::new(1_000, ttl);
        let expired =
            RawDocument { received_at: now() - chrono::Duration::minutes(2), ..document("ttl", "AAPL", now()) };
        let old_id = insert(&store, &expired).await;
        let fresh = document("ttl", "MSFT", now());
        let fresh_id = insert(&store, &fresh).await;

        assert_eq!(get(&store, &old_id).await, None, "received longer ago than the TTL");
        assert_eq!(get(&store, &fresh_id).await.map(|(doc, _)| doc), Some(fresh));
        let again = RawDocument { received_at: now(), ..expired };
        insert(&store, &again).await;
    }

    #[tokio::test]
    async fn ttl_longer_than_the_calendar_keeps_documents() {
        let store = MemoryRawStore::new(1_000, Duration::MAX);
        let doc = document("forever", "AAPL", now());
        let id = insert(&store, &doc).await;
        insert(&store, &document("forever", "MSFT", now())).await;
        assert_eq!(get(&store, &id).await.map(|(doc, _)| doc), Some(doc));
    }
}

/// The same checks on MongoDB (`MONGODB_URI`), each in a database of its
/// own that is dropped when the check passes, plus the collection's
/// indexes and document shape, which only a server can show.
mod mongo {
    use std::net::{Ipv4Addr, TcpListener};

    use lizards_shared::rawstore::MongoRawStore;
    use mongodb::{
        Client, Database,
        bson::{Bson, Document, doc, oid::ObjectId},
    };
    use tokio::time::Instant;

    use super::*;
    use crate::helpers::{DEADLINE, real_url};

    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    /// A store on a fresh database, and that database to look into and drop.
    struct Fresh {
        store: MongoRawStore,
        database: Database,
    }

    impl Fresh {
        async fn connect(ttl: Duration) -> Option<Fresh> {
            let uri = real_url("MONGODB_URI")?;
            // MongoDB database names cannot hold '.'.
            let name = unique("lizards_contract").replace('.', "_");
            let store = MongoRawStore::connect(&uri, &name, ttl).await.expect("MongoDB at MONGODB_URI answers");
            let database = Client::with_uri_str(&uri).await.expect("a second client").database(&name);
            Some(Fresh { store, database })
        }

        async fn drop_database(self) {
            self.database.drop().await.expect("test database dropped");
        }

        async fn stored(&self, id: &str) -> Document {
            let id = ObjectId::parse_str(id).expect("ids are ObjectId hex");
            let raw = self.database.collection::<Document>("raw_quotes");
            raw.find_one(doc! {"_id": id}).await.expect("find_one answers").expect("the document is stored")
        }

        /// Every index of `raw_quotes` by name.
        async fn indexes(&self) -> Vec<Document> {
            let raw = self.database.collection::<Document>("raw_quotes");
            let mut cursor = raw.list_indexes().await.expect("listIndexes answers");
            let mut indexes = Vec::new();
            while cursor.advance().await.expect("listIndexes cursor") {
                let index = cursor.deserialize_current().expect("an index description");
                indexes.push(mongodb::bson::to_document(&index).expect("index as document"));
            }
            indexes
        }
    }

    #[tokio::test]
    async fn insert_returns_an_id_and_get_returns_the_document() {
        let Some(fresh) = Fresh::connect(WEEK).await else { return };
        super::insert_returns_an_id_and_get_returns_the_document(&fresh.store).await;
        fresh.drop_database().await;
    }

    #[tokio::test]
    async fn same_source_symbol_and_time_is_a_duplicate() {
        let Some(fresh) = Fresh::connect(WEEK).await else { return };
        super::same_source_symbol_and_time_is_a_duplicate(&fresh.store).await;
        fresh.drop_database().await;
    }

    #[tokio::test]
    async fn documents_differing_in_one_key_part_are_not_duplicates() {
        let Some(fresh) = Fresh::connect(WEEK).await else { return };
        super::documents_differing_in_one_key_part_are_not_duplicates(&fresh.store).await;
        fresh.drop_database().await;
    }

    #[tokio::test]
    async fn outcome_is_kept_with_the_document() {
        let Some(fresh) = Fresh::connect(WEEK).await else { return };
        super::outcome_is_kept_with_the_document(&fresh.store).await;
        fresh.drop_database().await;
    }

    #[tokio::test]
    async fn unknown_id_has_no_document() {
        let Some(fresh) = Fresh::connect(WEEK).await else { return };
        super::unknown_id_has_no_document(&fresh.store).await;
        assert_eq!(get(&fresh.store, "not-an-object-id").await, None, "an id this store could not have made");
        fresh.drop_database().await;
    }

    #[tokio::test]
    async fn a_record_rejected_for_a_reason_is_reclaimed_once() {
        let Some(fresh) = Fresh::connect(WEEK).await else { return };
        super::a_record_rejected_for_a_reason_is_reclaimed_once(&fresh.store).await;
        fresh.drop_database().await;
    }

    #[tokio::test]
    async fn checks_do_not_interfere_on_one_shared_store() {
        let Some(fresh) = Fresh::connect(WEEK).await else { return };
        super::run_all(&fresh.store).await;
        fresh.store.ping().await.expect("MongoDB answers ping");
        fresh.drop_database().await;
    }

    #[tokio::test]
    async fn connect_creates_the_ttl_and_unique_indexes() {
        let Some(fresh) = Fresh::connect(WEEK).await else { return };
        let indexes = fresh.indexes().await;
        let ttl = indexes.iter().find(|index| index.get_document("key").ok() == Some(&doc! {"received_at": 1}));
        let ttl = ttl.expect("an index on received_at");
        assert_eq!(expire_after(ttl), Some(WEEK.as_secs() as i64), "{ttl}");
        let unique_key = doc! {"source": 1, "symbol": 1, "source_ts": 1};
        let unique = indexes.iter().find(|index| index.get_document("key").ok() == Some(&unique_key));
        let unique = unique.expect("an index on source, symbol, source_ts");
        assert_eq!(unique.get_bool("unique").ok(), Some(true), "{unique}");
        fresh.drop_database().await;
    }

    #[tokio::test]
    async fn connecting_with_another_retention_changes_the_ttl_index() {
        let Some(fresh) = Fresh::connect(WEEK).await else { return };
        let uri = real_url("MONGODB_URI").expect("checked by connect");
        let day = Duration::from_secs(86_400);
        let again = MongoRawStore::connect(&uri, fresh.database.name(), day).await.expect("reconnects");
        let indexes = fresh.indexes().await;
        let ttl = indexes.iter().find(|index| index.get_document("key").ok() == Some(&doc! {"received_at": 1}));
        assert_eq!(ttl.and_then(expire_after), Some(day.as_secs() as i64));
        // Connecting again with the same settings changes nothing.
        drop(again);
        MongoRawStore::connect(&uri, fresh.database.name(), day).await.expect("reconnects");
        fresh.drop_database().await;
    }

    /// `expireAfterSeconds`, whichever integer type the server used.
    fn expire_after(index: &Document) -> Option<i64> {
        match index.get("expireAfterSeconds")? {
            Bson::Int32(seconds) => Some(i64::from(*seconds)),
            Bson::Int64(seconds) => Some(*seconds),
            Bson::Double(seconds) => Some(*seconds as i64),
            _ => None,
        }
    }

    #[tokio::test]
    async fn documents_keep_dates_and_the_outcome_as_plain_fields() {
        let Some(fresh) = Fresh::connect(WEEK).await else { return };
        let doc = document(&unique("contract"), "AAPL", now());
        let id = insert(&fresh.store, &doc).await;
        let flags = vec!["jump".to_string()];
        fresh.store.set_outcome(&id, RawOutcome::Accepted { flags }).await.expect("outcome stored");

        let stored = fresh.stored(&id).await;
        for (field, expected) in [("source_ts", doc.source_ts), ("received_at", doc.received_at)] {
            let date = stored.get_datetime(field).unwrap_or_else(|_| panic!("{field} is a BSON date: {stored}"));
            assert_eq!(date.timestamp_millis(), expected.timestamp_millis(), "{field}");
        }
        assert_eq!(stored.get_str("status").ok(), Some("accepted"), "{stored}");
        assert_eq!(stored.get_array("flags").ok(), Some(&vec![Bson::String("jump".into())]), "{stored}");
        assert!(stored.get("reason").is_none(), "{stored}");
        assert_eq!(stored.get_document("body").and_then(|body| body.get_str("symbol")).ok(), Some("AAPL"));

        let reason = "invalid_price".to_string();
        fresh.store.set_outcome(&id, RawOutcome::Rejected { reason }).await.expect("outcome stored");
        let stored = fresh.stored(&id).await;
        assert_eq!(stored.get_str("status").ok(), Some("rejected"), "{stored}");
        assert_eq!(stored.get_str("reason").ok(), Some("invalid_price"), "{stored}");
        assert!(stored.get("flags").is_none(), "{stored}");
        fresh.drop_database().await;
    }

    #[tokio::test]
    async fn connecting_to_a_closed_port_fails_within_the_deadline() {
        if real_url("MONGODB_URI").is_none() {
            return;
        }
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port").local_addr().expect("addr").port();
        let started = Instant::now();
        let result = MongoRawStore::connect(&format!("mongodb://127.0.0.1:{port}"), "unused", WEEK).await;
        assert!(matches!(result, Err(RawStoreError::Unavailable(_))), "gave {result:?}");
        assert!(started.elapsed() < DEADLINE, "took {:?}", started.elapsed());
    }
}
