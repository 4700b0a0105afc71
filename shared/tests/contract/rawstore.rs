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
