//! SQLite adapter: one writer connection (SQLite has one writer anyway) and a
//! separate read-only pool for REST and WebSocket snapshots, in WAL mode so
//! readers never wait for the writer.

use std::{path::Path, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    QueryBuilder, Row, Sqlite, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous},
};

use super::{Candle, CandleInterval, DELETE_CHUNK, Mean, QuoteStore, StoreError, candle_window_start};
use crate::{Quote, Symbol, quote::newest_per_symbol, time};

/// Rows per INSERT statement (8 binds each, well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 1000;

pub struct SqliteStore {
    pub(crate) write: SqlitePool,
    pub(crate) read: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
        }
        // A path, not a URL: `?`, `#` or `%` in DATA_DIR must not be parsed.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let write = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new().max_connections(4).connect_with(options.read_only(true)).await?;
        Ok(SqliteStore { write, read })
    }
}

fn quote_from_row(row: &SqliteRow) -> Result<Quote, sqlx::Error> {
    let symbol: String = row.try_get("symbol")?;
    Ok(Quote {
        symbol: Symbol::parse(&symbol).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        price: row.try_get("price")?,
        ts: time::from_micros(row.try_get("ts")?),
        volume: row.try_get("volume")?,
        source: row.try_get("source")?,
        ingest_id: row.try_get("ingest_id")?,
        ingested_at: time::from_micros(row.try_get("ingested_at")?),
    })
}

fn candle_from_row(row: &SqliteRow) -> Result<Candle, sqlx::Error> {
    let count: i64 = row.try_get("n")?;
    Ok(Candle {
        start: time::from_micros(row.try_get("bucket")?),
        open: row.try_get("open")?,
        high: row.try_get("high")?,
        low: row.try_get("low")?,
        close: row.try_get("close")?,
        volume: row.try_get("volume")?,
        count: u32::try_from(count).unwrap_or(u32::MAX),
    })
}

/// `<head> VALUES (...), (...)` binding each quote's columns and `now`.
fn rows(head: &'static str, quotes: &[&Quote], now: i64) -> QueryBuilder<Sqlite> {
    let mut query = QueryBuilder::new(head);
    query.push_values(quotes.iter().copied(), |mut row, q: &Quote| {
        row.push_bind(q.symbol.as_str())
            .push_bind(time::micros(&q.ts))
            .push_bind(q.price)
            .push_bind(q.volume)
            .push_bind(&q.source)
            .push_bind(&q.ingest_id)
            .push_bind(time::micros(&q.ingested_at))
            .push_bind(now);
    });
    query
}

#[async_trait]
impl QuoteStore for SqliteStore {
    async fn insert_batch(&self, quotes: &[Quote]) -> Result<u64, StoreError> {
        if quotes.is_empty() {
            return Ok(0);
        }
        let now = time::micros(&Utc::now());
        let mut tx = self.write.begin().await?;
        let mut inserted = 0;
        let all: Vec<&Quote> = quotes.iter().collect();
        for chunk in all.chunks(ROWS_PER_STATEMENT) {
            let mut insert = rows(
                "INSERT INTO quotes (symbol, ts, price, volume, source, ingest_id, ingested_at, received_at) ",
                chunk,
                now,
            );
            insert.push(" ON CONFLICT (symbol, source, ts) DO NOTHING");
            inserted += insert.build().execute(&mut *tx).await?.rows_affected();
        }
        // One upsert per symbol with its newest quote of the batch; the WHERE
        // keeps latest_quotes from moving backwards in time.
        let newest = newest_per_symbol(quotes);
        for chunk in newest.chunks(ROWS_PER_STATEMENT) {
            let mut upsert = rows(
                "INSERT INTO latest_quotes (symbol, ts, price, volume, source, ingest_id, ingested_at, updated_at) ",
                chunk,
                now,
            );
            upsert.push(
                " ON CONFLICT (symbol) DO UPDATE SET ts = excluded.ts, price = excluded.price, \
                 volume = excluded.volume, source = excluded.source, ingest_id = excluded.ingest_id, \
                 ingested_at = excluded.ingested_at, updated_at = excluded.updated_at \
                 WHERE excluded.ts > latest_quotes.ts",
            );
            upsert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn latest(&self, symbol: &Symbol) -> Result<Option<Quote>, StoreError> {
        let sql = "SELECT symbol, ts, price, volume, source, ingest_id, ingested_at \
                   FROM latest_quotes WHERE symbol = ?";
        let row = sqlx::query(sql).bind(symbol.as_str()).fetch_optional(&self.read).await?;
        Ok(row.as_ref().map(quote_from_row).transpose()?)
    }

    async fn latest_all(&self) -> Result<Vec<Quote>, StoreError> {
        let sql = "SELECT symbol, ts, price, volume, source, ingest_id, ingested_at \
                   FROM latest_quotes ORDER BY symbol";
        let rows = sqlx::query(sql).fetch_all(&self.read).await?;
        Ok(rows.iter().map(quote_from_row).collect::<Result<_, _>>()?)
    }

    async fn history(
        &self,
        symbol: &Symbol,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Quote>, StoreError> {
        let sql = "SELECT symbol, ts, price, volume, source, ingest_id, ingested_at FROM quotes \
                   WHERE symbol = ? AND ts >= ? AND ts <= ? ORDER BY ts DESC LIMIT ?";
        let rows = sqlx::query(sql)
            .bind(symbol.as_str())
            .bind(from.as_ref().map(time::micros).unwrap_or(i64::MIN))
            .bind(to.as_ref().map(time::micros).unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(quote_from_row).collect::<Result<_, _>>()?)
    }

    async fn mean_of_last(&self, symbol: &Symbol, last: u32) -> Result<Option<Mean>, StoreError> {
        let row = sqlx::query(
            "SELECT AVG(price) AS mean, COUNT(*) AS n FROM \
             (SELECT price FROM quotes WHERE symbol = ? ORDER BY ts DESC LIMIT ?)",
        )
        .bind(symbol.as_str())
        .bind(last)
        .fetch_one(&self.read)
        .await?;
        let count: i64 = row.try_get("n")?;
        let mean: Option<f64> = row.try_get("mean")?;
        Ok(mean.filter(|_| count > 0).map(|mean| Mean { mean, count: count as u32 }))
    }

    async fn candles(
        &self,
        symbol: &Symbol,
        interval: CandleInterval,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Candle>, StoreError> {
        let from_us = from.as_ref().map(time::micros).unwrap_or(i64::MIN);
        let to_us = to.as_ref().map(time::micros).unwrap_or(i64::MAX);
        let newest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(ts) FROM quotes WHERE symbol = ? AND ts >= ? AND ts <= ?")
                .bind(symbol.as_str())
                .bind(from_us)
                .bind(to_us)
                .fetch_one(&self.read)
                .await?;
        let Some(newest) = newest else { return Ok(Vec::new()) };
        let start = candle_window_start(interval, from, time::from_micros(newest), limit);
        // The bucket is the timestamp rounded down to a multiple of the width
        // (a floor, also before 1970); open and close are the prices ranked
        // first by time either way, ties broken by source.
        let sql = "SELECT bucket, COUNT(*) AS n, MAX(price) AS high, MIN(price) AS low, SUM(volume) AS volume, \
                   MAX(CASE WHEN first = 1 THEN price END) AS open, MAX(CASE WHEN last = 1 THEN price END) AS close \
                   FROM (SELECT bucket, price, volume, \
                           ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY ts, source) AS first, \
                           ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY ts DESC, source DESC) AS last \
                         FROM (SELECT ts - (((ts % ?1) + ?1) % ?1) AS bucket, ts, source, price, volume \
                               FROM quotes WHERE symbol = ?2 AND ts >= ?3 AND ts <= ?4)) \
                   GROUP BY bucket ORDER BY bucket";
        let rows = sqlx::query(sql)
            .bind(interval.micros())
            .bind(symbol.as_str())
            .bind(time::micros(&start))
            .bind(newest)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(candle_from_row).collect::<Result<_, _>>()?)
    }

    async fn count(&self, symbol: &Symbol) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM quotes WHERE symbol = ?")
            .bind(symbol.as_str())
            .fetch_one(&self.read)
            .await?;
        Ok(n as u64)
    }

    async fn delete_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            // WITHOUT ROWID: chunks are picked by the primary key.
            let chunk = sqlx::query(
                "DELETE FROM quotes WHERE (symbol, source, ts) IN \
                 (SELECT symbol, source, ts FROM quotes WHERE ts < ? LIMIT ?)",
            )
            .bind(time::micros(&cutoff))
            .bind(DELETE_CHUNK)
            .execute(&self.write)
            .await?
            .rows_affected();
            deleted += chunk;
            if chunk < DELETE_CHUNK as u64 {
                return Ok(deleted);
            }
        }
    }

    async fn untrack_idle(&self, idle_before: DateTime<Utc>, keep: &[Symbol]) -> Result<Vec<Symbol>, StoreError> {
        // The symbols to keep travel as one JSON array (SQLite has no arrays).
        let keep =
            serde_json::to_string(&keep.iter().map(Symbol::as_str).collect::<Vec<_>>()).expect("strings serialize");
        let rows: Vec<String> = sqlx::query_scalar(
            "DELETE FROM latest_quotes WHERE updated_at < ? AND symbol NOT IN (SELECT value FROM json_each(?)) \
             RETURNING symbol",
        )
        .bind(time::micros(&idle_before))
        .bind(keep)
        .fetch_all(&self.write)
        .await?;
        Ok(rows.iter().filter_map(|s| Symbol::parse(s).ok()).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }
}
