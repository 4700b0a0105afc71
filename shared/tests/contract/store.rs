//! Behaviour every `QuoteStore` adapter must show (SQLite, PostgreSQL):
//! idempotent batch inserts, a `latest` that never goes backwards, history,
//! means and candles.
//! Each check uses symbols of its own, so the suite can share one real
//! database.
//!
//! Times are whole microseconds: the precision both SQL stores keep.

use chrono::{DateTime, Duration, Utc};
use lizards_shared::{
    Quote, Symbol,
    store::{Candle, CandleInterval, Mean, QuoteStore, SqliteStore},
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
    candles_aggregate_each_bucket_by_source_time(store).await;
    candles_keep_the_newest_buckets_within_range(store).await;
    candles_of_wider_intervals_align_on_utc(store).await;
    candles_without_volumes_or_quotes(store).await;
    retention_deletes_only_quotes_before_the_cutoff(store).await;
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

/// A candle starting at `start` (RFC 3339).
fn candle(start: &str, [open, high, low, close]: [f64; 4], volume: Option<f64>, count: u32) -> Candle {
    let start = DateTime::parse_from_rfc3339(start).expect("valid time").to_utc();
    Candle { start, open, high, low, close, volume, count }
}

/// Quotes in minutes 12:00, 12:01 and 12:03 (none in 12:02), stored out of
/// time order and across two batches.
async fn insert_candle_quotes(store: &dyn QuoteStore) -> Symbol {
    let symbol = unique_symbol();
    insert(store, &[quote(&symbol, 10, 5.0), quote(&symbol, 90, 3.0), quote(&symbol, 59, 6.0)]).await;
    insert(
        store,
        &[quote(&symbol, 185, 9.0), quote(&symbol, 0, 4.0), quote(&symbol, 61, 8.0), quote(&symbol, 30, 7.0)],
    )
    .await;
    symbol
}

async fn candles(
    store: &dyn QuoteStore,
    symbol: &Symbol,
    interval: CandleInterval,
    from: Option<i64>,
    to: Option<i64>,
    limit: u32,
) -> Vec<Candle> {
    store.candles(symbol, interval, from.map(at), to.map(at), limit).await.expect("candles answer")
}

pub async fn candles_aggregate_each_bucket_by_source_time(store: &dyn QuoteStore) {
    let symbol = insert_candle_quotes(store).await;
    // Volumes are 100 + the quote's second.
    let expected = [
        candle("2024-09-14T12:00:00Z", [4.0, 7.0, 4.0, 6.0], Some(110.0 + 159.0 + 100.0 + 130.0), 4),
        candle("2024-09-14T12:01:00Z", [8.0, 8.0, 3.0, 3.0], Some(190.0 + 161.0), 2),
        candle("2024-09-14T12:03:00Z", [9.0; 4], Some(285.0), 1),
    ];
    assert_eq!(candles(store, &symbol, CandleInterval::OneMinute, None, None, 500).await, expected);

    // Two sources at the same instant: the order is by source, whatever the
    // insert order.
    let tie = unique_symbol();
    let from = |source: &str, price| Quote { source: source.to_string(), ..quote(&tie, 0, price) };
    insert(store, &[from("b", 2.0), from("a", 1.0)]).await;
    let tied = candles(store, &tie, CandleInterval::OneMinute, None, None, 500).await;
    assert_eq!(tied, [candle("2024-09-14T12:00:00Z", [1.0, 2.0, 1.0, 2.0], Some(200.0), 2)], "ties by source");
}

pub async fn candles_keep_the_newest_buckets_within_range(store: &dyn QuoteStore) {
    let symbol = insert_candle_quotes(store).await;
    let starts =
        |candles: Vec<Candle>| candles.into_iter().map(|c| lizards_shared::time::rfc3339(&c.start)).collect::<Vec<_>>();
    let minute = CandleInterval::OneMinute;
    assert_eq!(
        starts(candles(store, &symbol, minute, None, None, 3).await),
        ["2024-09-14T12:01:00Z", "2024-09-14T12:03:00Z"],
        "the last three minutes, one of them without quotes"
    );
    assert_eq!(starts(candles(store, &symbol, minute, None, None, 1).await), ["2024-09-14T12:03:00Z"]);
    assert_eq!(
        starts(candles(store, &symbol, minute, None, Some(100), 500).await),
        ["2024-09-14T12:00:00Z", "2024-09-14T12:01:00Z"],
        "`to` ends the window"
    );
    assert_eq!(
        candles(store, &symbol, minute, Some(30), Some(60), 500).await,
        [candle("2024-09-14T12:00:00Z", [7.0, 7.0, 6.0, 6.0], Some(130.0 + 159.0), 2)],
        "a bucket cut by `from` has only the quotes inside, bounds inclusive"
    );
    assert!(candles(store, &symbol, minute, Some(186), None, 500).await.is_empty(), "an empty range");
}

pub async fn candles_of_wider_intervals_align_on_utc(store: &dyn QuoteStore) {
    let symbol = insert_candle_quotes(store).await;
    let all = |start| candle(start, [4.0, 9.0, 3.0, 9.0], Some(499.0 + 351.0 + 285.0), 7);
    for (interval, start) in [
        (CandleInterval::FiveMinutes, "2024-09-14T12:00:00Z"),
        (CandleInterval::FifteenMinutes, "2024-09-14T12:00:00Z"),
        (CandleInterval::OneHour, "2024-09-14T12:00:00Z"),
        (CandleInterval::OneDay, "2024-09-14T00:00:00Z"),
    ] {
        assert_eq!(candles(store, &symbol, interval, None, None, 500).await, [all(start)], "{interval}");
    }
    let late = unique_symbol();
    insert(
        store,
        &[quote(&late, 3 * 60 * 60, 1.0), quote(&late, 4 * 60 * 60 - 60, 2.0), quote(&late, 4 * 60 * 60, 3.0)],
    )
    .await;
    let hours = candles(store, &late, CandleInterval::OneHour, None, None, 500).await;
    let hours: Vec<(String, u32)> = hours.iter().map(|c| (lizards_shared::time::rfc3339(&c.start), c.count)).collect();
    assert_eq!(hours, [("2024-09-14T15:00:00Z".to_string(), 2), ("2024-09-14T16:00:00Z".to_string(), 1)]);
}

pub async fn candles_without_volumes_or_quotes(store: &dyn QuoteStore) {
    let symbol = unique_symbol();
    insert(
        store,
        &[Quote { volume: None, ..quote(&symbol, 0, 2.0) }, Quote { volume: None, ..quote(&symbol, 1, 1.0) }],
    )
    .await;
    let candles_of = candles(store, &symbol, CandleInterval::OneMinute, None, None, 500).await;
    assert_eq!(candles_of, [candle("2024-09-14T12:00:00Z", [2.0, 2.0, 1.0, 1.0], None, 2)], "no volume to sum");
    let unknown = candles(store, &unique_symbol(), CandleInterval::OneMinute, None, None, 500).await;
    assert!(unknown.is_empty(), "a symbol without quotes has no candles");
}

/// Retention on a shared database: only quotes from before 1995 are
/// involved, so checks running beside it (all after 2024) are untouched.
pub async fn retention_deletes_only_quotes_before_the_cutoff(store: &dyn QuoteStore) {
    let symbol = unique_symbol();
    let year = 365 * 86_400;
    let old = [quote(&symbol, -34 * year, 1.0), quote(&symbol, -34 * year + 1, 2.0)];
    let kept = quote(&symbol, -30 * year, 3.0);
    insert(store, &[old[0].clone(), old[1].clone(), kept.clone()]).await;
    let cutoff = at(-32 * year);
    // The count is not checked: concurrent runs of this check share the range.
    store.delete_before(cutoff).await.expect("retention runs");
    assert_eq!(history(store, &symbol, None, None, 10).await, [kept.ts], "both old quotes went, the newer stayed");
}

mod embedded {
    use super::*;
    use crate::helpers::sqlite;

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
    async fn candles_aggregate_each_bucket_by_source_time() {
        let (_dir, store) = sqlite().await;
        super::candles_aggregate_each_bucket_by_source_time(&store).await;
    }

    #[tokio::test]
    async fn candles_keep_the_newest_buckets_within_range() {
        let (_dir, store) = sqlite().await;
        super::candles_keep_the_newest_buckets_within_range(&store).await;
    }

    #[tokio::test]
    async fn candles_of_wider_intervals_align_on_utc() {
        let (_dir, store) = sqlite().await;
        super::candles_of_wider_intervals_align_on_utc(&store).await;
    }

    #[tokio::test]
    async fn candles_without_volumes_or_quotes() {
        let (_dir, store) = sqlite().await;
        super::candles_without_volumes_or_quotes(&store).await;
    }

    #[tokio::test]
    async fn checks_do_not_interfere_on_one_shared_store() {
        let (_dir, store) = sqlite().await;
        super::run_all(&store).await;
    }

    #[tokio::test]
    async fn retention_deletes_only_quotes_before_the_cutoff() {
        let (_dir, store) = sqlite().await;
        super::retention_deletes_only_quotes_before_the_cutoff(&store).await;
    }

    /// Needs a database of its own: it untracks every idle symbol.
    #[tokio::test]
    async fn untracking_drops_idle_symbols_except_those_kept() {
        let (_dir, store) = sqlite().await;
        let (idle, kept) = (unique_symbol(), unique_symbol());
        insert(&store, &[quote(&idle, 0, 1.0), quote(&kept, 0, 1.0)]).await;
        let none = store.untrack_idle(Utc::now() - Duration::hours(1), &[]).await.expect("untrack runs");
        assert!(none.is_empty(), "both arrived just now");
        let dropped = store
            .untrack_idle(Utc::now() + Duration::seconds(1), std::slice::from_ref(&kept))
            .await
            .expect("untrack runs");
        assert_eq!(dropped, std::slice::from_ref(&idle));
        assert_eq!(latest(&store, &idle).await, None);
        assert!(latest(&store, &kept).await.is_some());
        assert_eq!(count(&store, &idle).await, 1, "its quotes age out by retention, not here");
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

/// The same checks on PostgreSQL (`DATABASE_URL`), all in one shared
/// database: every check uses symbols of its own, so parallel tests, other
/// test binaries and earlier runs do not disturb it.
mod postgres {
    use lizards_shared::store::{PostgresStore, StoreError};

    use super::*;
    use crate::helpers::{postgres, real_url, within};

    #[tokio::test]
    async fn insert_batch_counts_new_rows() {
        let Some(store) = postgres().await else { return };
        super::insert_batch_counts_new_rows(&store).await;
    }

    #[tokio::test]
    async fn redelivered_batch_is_idempotent() {
        let Some(store) = postgres().await else { return };
        super::redelivered_batch_is_idempotent(&store).await;
    }

    #[tokio::test]
    async fn stored_quote_reads_back_unchanged() {
        let Some(store) = postgres().await else { return };
        super::stored_quote_reads_back_unchanged(&store).await;
    }

    #[tokio::test]
    async fn latest_never_moves_backwards() {
        let Some(store) = postgres().await else { return };
        super::latest_never_moves_backwards(&store).await;
    }

    #[tokio::test]
    async fn latest_of_unknown_symbol_is_none() {
        let Some(store) = postgres().await else { return };
        super::latest_of_unknown_symbol_is_none(&store).await;
    }

    #[tokio::test]
    async fn latest_all_has_the_newest_quote_of_every_symbol() {
        let Some(store) = postgres().await else { return };
        super::latest_all_has_the_newest_quote_of_every_symbol(&store).await;
    }

    #[tokio::test]
    async fn history_is_newest_first_within_range_and_limit() {
        let Some(store) = postgres().await else { return };
        super::history_is_newest_first_within_range_and_limit(&store).await;
    }

    #[tokio::test]
    async fn mean_of_last_reports_how_many_prices_it_used() {
        let Some(store) = postgres().await else { return };
        super::mean_of_last_reports_how_many_prices_it_used(&store).await;
    }

    #[tokio::test]
    async fn large_batch_is_stored_completely() {
        let Some(store) = postgres().await else { return };
        super::large_batch_is_stored_completely(&store).await;
    }

    #[tokio::test]
    async fn candles_aggregate_each_bucket_by_source_time() {
        let Some(store) = postgres().await else { return };
        super::candles_aggregate_each_bucket_by_source_time(&store).await;
    }

    #[tokio::test]
    async fn candles_keep_the_newest_buckets_within_range() {
        let Some(store) = postgres().await else { return };
        super::candles_keep_the_newest_buckets_within_range(&store).await;
    }

    #[tokio::test]
    async fn candles_of_wider_intervals_align_on_utc() {
        let Some(store) = postgres().await else { return };
        super::candles_of_wider_intervals_align_on_utc(&store).await;
    }

    #[tokio::test]
    async fn candles_without_volumes_or_quotes() {
        let Some(store) = postgres().await else { return };
        super::candles_without_volumes_or_quotes(&store).await;
    }

    #[tokio::test]
    async fn checks_do_not_interfere_on_one_shared_store() {
        let Some(store) = postgres().await else { return };
        super::run_all(&store).await;
    }

    #[tokio::test]
    async fn retention_deletes_only_quotes_before_the_cutoff() {
        let Some(store) = postgres().await else { return };
        super::retention_deletes_only_quotes_before_the_cutoff(&store).await;
    }

    #[tokio::test]
    async fn untracking_with_an_old_bound_drops_nothing() {
        let Some(store) = postgres().await else { return };
        let symbol = unique_symbol();
        insert(&store, &series(&symbol, 1)).await;
        let dropped =
            store.untrack_idle(Utc::now() - Duration::days(3650), std::slice::from_ref(&symbol)).await.expect("runs");
        assert!(!dropped.contains(&symbol));
        assert!(latest(&store, &symbol).await.is_some());
    }

    #[tokio::test]
    async fn stores_connecting_at_once_all_migrate() {
        let Some(url) = real_url("DATABASE_URL") else { return };
        let connects = (0..4).map(|_| PostgresStore::connect(&url));
        let stores = within("four concurrent connects", futures::future::join_all(connects)).await;
        for store in stores {
            let store = store.expect("every concurrent connect succeeds");
            super::insert_batch_counts_new_rows(&store).await;
            store.close().await;
        }
    }

    #[tokio::test]
    async fn read_pool_refuses_writes() {
        let Some(store) = postgres().await else { return };
        let symbol = unique_symbol();
        let write = sqlx::query(
            "INSERT INTO latest_quotes (symbol, ts, price, source, ingest_id, ingested_at, updated_at) \
             VALUES ($1, now(), 1, 'contract', 'x', now(), now())",
        )
        .bind(symbol.as_str())
        .execute(store.read_pool())
        .await;
        let error = write.expect_err("a write through the read pool fails");
        let code = error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("25006"), "read_only_sql_transaction, got {error}");
        assert_eq!(latest(&store, &symbol).await, None);
    }

    #[tokio::test]
    async fn connecting_to_a_server_that_is_down_errors_instead_of_hanging() {
        // Port 1 on loopback: nothing listens there. The pool retries until
        // its acquire timeout (3 s); `within` fails the test if the error
        // takes longer than the deadline.
        let result = within("a failed connect", PostgresStore::connect("postgres://postgres@127.0.0.1:1/test")).await;
        assert!(matches!(result, Err(StoreError::Database(_))), "an error, not a hang");
    }
}
