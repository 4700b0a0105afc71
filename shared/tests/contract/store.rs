//! Behaviour every `QuoteStore` adapter must show (PostgreSQL): idempotent
//! batch inserts, a `latest` that never goes backwards, history and means.
//! Each check uses symbols of its own, so the suite can share one real
//! database.
//!
//! Times are whole microseconds: the precision both SQL stores keep.

use chrono::{DateTime, Duration, Utc};
use lizards_shared::{
    Quote, Symbol,
    store::{Mean, QuoteStore, SqliteStore},
};

/// More rows than one INSERT statement carries.
const LARGE_BATCH: usize = 5_000;

pub async fn run_all(store: &dyn QuoteStore) {
    insert_batch_counts_new_rows(store).await;
    redelivered_batch_is_idempotent(store).await;
    stored_quote_reads_back_unchanged(store).await;
    latest_never_moves_backwards(store).await;
    latest_of_unknown_symbol_is_none(store).await;
    latest_all_has_the_newest_quote_of_every_symbol(store).await;
    history_is_newest_first_within_range_and_limit(store).await;
    mean_of_last_reports_how_many_prices_it_used(store).await;
    large_batch_is_stored_completely(store).await;
}

/// A symbol no other check (or run) uses: `T` and 12 hex digits.
fn unique_symbol() -> Symbol {
    let hex = uuid::Uuid::new_v4().simple().to_string().to_ascii_uppercase();
    Symbol::parse(&format!("T{}", &hex[..12])).expect("a valid symbol")
}

/// A fixed origin, so runs are reproducible.
fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-09-14T12:00:00.000001Z").expect("valid time").to_utc()
}

fn at(seconds: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(seconds)
}

fn quote(symbol: &Symbol, seconds: i64, price: f64) -> Quote {
    Quote {
        symbol: symbol.clone(),
        price,
        ts: at(seconds),
        volume: Some(100.0 + seconds as f64),
        source: "contract".to_string(),
        ingest_id: uuid::Uuid::new_v4().to_string(),
        ingested_at: at(seconds) + Duration::microseconds(1_500),
    }
}

/// One quote a second from `t0`, priced 1, 2, 3, ...
fn series(symbol: &Symbol, len: usize) -> Vec<Quote> {
    (0..len).map(|i| quote(symbol, i as i64, (i + 1) as f64)).collect()
}

async fn insert(store: &dyn QuoteStore, quotes: &[Quote]) -> u64 {
    store.insert_batch(quotes).await.expect("batch is stored")
}

async fn latest(store: &dyn QuoteStore, symbol: &Symbol) -> Option<Quote> {
    store.latest(symbol).await.expect("latest answers")
}

async fn count(store: &dyn QuoteStore, symbol: &Symbol) -> u64 {
    store.count(symbol).await.expect("count answers")
}

async fn history(
    store: &dyn QuoteStore,
    symbol: &Symbol,
    from: Option<i64>,
    to: Option<i64>,
    limit: u32,
) -> Vec<DateTime<Utc>> {
    let quotes = store.history(symbol, from.map(at), to.map(at), limit).await.expect("history answers");
    quotes.into_iter().map(|q| q.ts).collect()
}

pub async fn insert_batch_counts_new_rows(store: &dyn QuoteStore) {
    let symbol = unique_symbol();
    assert_eq!(insert(store, &[]).await, 0, "an empty batch");
    let quotes = series(&symbol, 3);
    assert_eq!(insert(store, &quotes).await, 3);

    let mut overlapping = quotes[1..].to_vec();
    overlapping.push(quote(&symbol, 3, 4.0));
    assert_eq!(insert(store, &overlapping).await, 1, "only the one new quote of a partly known batch");
    assert_eq!(count(store, &symbol).await, 4);
}

/// A batch the broker redelivers after a crash before the ack.
pub async fn redelivered_batch_is_idempotent(store: &dyn QuoteStore) {
    let symbol = unique_symbol();
    let quotes = series(&symbol, 10);
    assert_eq!(insert(store, &quotes).await, 10);
    assert_eq!(insert(store, &quotes).await, 0, "nothing new the second time");
    assert_eq!(count(store, &symbol).await, 10, "no duplicate rows");

    let in_batch_twice = [quote(&symbol, 100, 1.0), quote(&symbol, 100, 1.0)];
    assert_eq!(insert(store, &in_batch_twice).await, 1, "a quote twice in one batch is stored once");
}

pub async fn stored_quote_reads_back_unchanged(store: &dyn QuoteStore) {
    let symbol = unique_symbol();
    let with_volume = quote(&symbol, 0, 412.5);
    let without_volume = Quote { volume: None, ..quote(&symbol, 1, 413.25) };
    insert(store, &[with_volume.clone(), without_volume.clone()]).await;
    assert_eq!(latest(store, &symbol).await, Some(without_volume.clone()));
    let stored = store.history(&symbol, None, None, 10).await.expect("history answers");
    assert_eq!(stored, [without_volume, with_volume]);
}

pub async fn latest_never_moves_backwards(store: &dyn QuoteStore) {
    let symbol = unique_symbol();
    let newer = quote(&symbol, 10, 2.0);
    let older = quote(&symbol, 5, 1.0);
    insert(store, std::slice::from_ref(&newer)).await;
    insert(store, std::slice::from_ref(&older)).await;
    assert_eq!(latest(store, &symbol).await, Some(newer.clone()), "an older quote in a later batch");

    let newest = quote(&symbol, 20, 3.0);
    insert(store, &[newest.clone(), quote(&symbol, 15, 2.5)]).await;
    assert_eq!(latest(store, &symbol).await, Some(newest.clone()), "the newest of a batch, whatever its position");

    insert(store, std::slice::from_ref(&newer)).await;
    assert_eq!(latest(store, &symbol).await, Some(newest), "a redelivered quote");
}

pub async fn latest_of_unknown_symbol_is_none(store: &dyn QuoteStore) {
    assert_eq!(latest(store, &unique_symbol()).await, None);
}

pub async fn latest_all_has_the_newest_quote_of_every_symbol(store: &dyn QuoteStore) {
    let (a, b) = (unique_symbol(), unique_symbol());
    insert(store, &[quote(&a, 1, 10.0), quote(&a, 2, 11.0), quote(&b, 7, 20.0)]).await;
    insert(store, &[quote(&b, 3, 19.0)]).await;

    let all = store.latest_all().await.expect("latest_all answers");
    let mine: Vec<(&str, DateTime<Utc>, f64)> =
        all.iter().filter(|q| q.symbol == a || q.symbol == b).map(|q| (q.symbol.as_str(), q.ts, q.price)).collect();
    let mut expected = vec![(a.as_str(), at(2), 11.0), (b.as_str(), at(7), 20.0)];
    expected.sort_by(|x, y| x.0.cmp(y.0));
    assert_eq!(mine, expected, "one row per symbol, ordered by symbol");
}

pub async fn history_is_newest_first_within_range_and_limit(store: &dyn QuoteStore) {
    let symbol = unique_symbol();
    insert(store, &series(&symbol, 10)).await;
    insert(store, &series(&unique_symbol(), 3)).await;

    let all: Vec<DateTime<Utc>> = (0..10).rev().map(at).collect();
    assert_eq!(history(store, &symbol, None, None, 100).await, all, "newest first, this symbol only");
    assert_eq!(history(store, &symbol, None, None, 2).await, [at(9), at(8)], "limit keeps the newest");
    assert_eq!(history(store, &symbol, Some(3), Some(6), 100).await, [at(6), at(5), at(4), at(3)], "bounds inclusive");
    assert_eq!(history(store, &symbol, Some(3), Some(6), 2).await, [at(6), at(5)]);
    assert_eq!(history(store, &symbol, Some(8), None, 100).await, [at(9), at(8)], "from only");
    assert_eq!(history(store, &symbol, None, Some(1), 100).await, [at(1), at(0)], "to only");
    assert!(history(store, &symbol, Some(20), None, 100).await.is_empty(), "an empty range");
}

pub async fn mean_of_last_reports_how_many_prices_it_used(store: &dyn QuoteStore) {
    let symbol = unique_symbol();
    insert(store, &series(&symbol, 5)).await;
    let mean_of_last = |last: u32| {
        let symbol = symbol.clone();
        async move { store.mean_of_last(&symbol, last).await.expect("mean answers") }
    };
    assert_eq!(mean_of_last(3).await, Some(Mean { mean: 4.0, count: 3 }), "prices 5, 4, 3");
    assert_eq!(mean_of_last(10).await, Some(Mean { mean: 3.0, count: 5 }), "only five prices exist");
    let unknown = store.mean_of_last(&unique_symbol(), 10).await.expect("mean answers");
    assert_eq!(unknown, None);
}

pub async fn large_batch_is_stored_completely(store: &dyn QuoteStore) {
    let symbol = unique_symbol();
    let quotes = series(&symbol, LARGE_BATCH);
    assert_eq!(insert(store, &quotes).await, LARGE_BATCH as u64);
    assert_eq!(count(store, &symbol).await, LARGE_BATCH as u64);
    assert_eq!(latest(store, &symbol).await.as_ref(), quotes.last(), "latest is the newest of the batch");
    assert_eq!(insert(store, &quotes).await, 0, "and it is idempotent too");
}

mod embedded {
    use tempfile::TempDir;

    use super::*;

    /// A fresh SQLite store; the directory must outlive it.
    async fn sqlite() -> (TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(&dir.path().join("quotes.db")).await.expect("store opens");
        (dir, store)
    }

    #[tokio::test]
    async fn insert_batch_counts_new_rows() {
        let (_dir, store) = sqlite().await;
        super::insert_batch_counts_new_rows(&store).await;
    }

    #[tokio::test]
    async fn redelivered_batch_is_idempotent() {
        let (_dir, store) = sqlite().await;
        super::redelivered_batch_is_idempotent(&store).await;
    }

    #[tokio::test]
    async fn stored_quote_reads_back_unchanged() {
        let (_dir, store) = sqlite().await;
        super::stored_quote_reads_back_unchanged(&store).await;
    }

    #[tokio::test]
    async fn latest_never_moves_backwards() {
        let (_dir, store) = sqlite().await;
        super::latest_never_moves_backwards(&store).await;
    }

    #[tokio::test]
    async fn latest_of_unknown_symbol_is_none() {
        let (_dir, store) = sqlite().await;
        super::latest_of_unknown_symbol_is_none(&store).await;
    }

    #[tokio::test]
    async fn latest_all_has_the_newest_quote_of_every_symbol() {
        let (_dir, store) = sqlite().await;
        super::latest_all_has_the_newest_quote_of_every_symbol(&store).await;
    }

    #[tokio::test]
    async fn history_is_newest_first_within_range_and_limit() {
        let (_dir, store) = sqlite().await;
        super::history_is_newest_first_within_range_and_limit(&store).await;
    }

    #[tokio::test]
    async fn mean_of_last_reports_how_many_prices_it_used() {
        let (_dir, store) = sqlite().await;
        super::mean_of_last_reports_how_many_prices_it_used(&store).await;
    }

    #[tokio::test]
    async fn large_batch_is_stored_completely() {
        let (_dir, store) = sqlite().await;
        super::large_batch_is_stored_completely(&store).await;
    }

    #[tokio::test]
    async fn checks_do_not_interfere_on_one_shared_store() {
        let (_dir, store) = sqlite().await;
        super::run_all(&store).await;
    }

    #[tokio::test]
    async fn opens_a_path_with_url_special_characters() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("100% sure? #1").join("quotes.db");
        let store = SqliteStore::open(&path).await.expect("store opens");
        insert(&store, &series(&unique_symbol(), 1)).await;
        assert!(path.is_file(), "the database is the file asked for");
    }

    #[tokio::test]
    async fn quotes_survive_reopening_the_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("nested").join("quotes.db");
        let symbol = unique_symbol();
        let quotes = series(&symbol, 3);
        {
            let store = SqliteStore::open(&path).await.expect("store opens");
            insert(&store, &quotes).await;
        }
        let reopened = SqliteStore::open(&path).await.expect("store reopens");
        assert_eq!(count(&reopened, &symbol).await, 3);
        assert_eq!(latest(&reopened, &symbol).await.as_ref(), quotes.last());
    }
}
