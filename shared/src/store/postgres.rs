//! PostgreSQL adapter: a write pool for the persistence worker and a
//! separate read-only pool for REST and WebSocket snapshots, so a burst of
//! history queries never takes the connections the writer needs (and a bug
//! on the read side cannot write).
//!
//! A batch is written in one transaction with `INSERT ... SELECT FROM
//! UNNEST(...)`, binding one array per column: eight bind parameters however
//! many rows, and one prepared statement that stays cached. It is first
//! tried as a plain INSERT, which PostgreSQL runs ~1.5x faster than `ON
//! CONFLICT DO NOTHING` (no speculative insertion per row); only a batch
//! that hits a stored quote (a redelivery) is written again, skipping
//! duplicates. COPY into a temporary table and INSERT from there measured
//! slower: the same INSERT plus writing the staging table.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    PgPool, Postgres, Row,
    migrate::Migrator,
    postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow},
    query::Query,
};

use super::{Candle, CandleInterval, DELETE_CHUNK, Mean, QuoteStore, StoreError, candle_window_start};
use crate::{Quote, Symbol, quote::newest_per_symbol};

/// The persistence worker writes one batch at a time; a few more cover
/// several workers and the retention job.
const WRITE_CONNECTIONS: u32 = 4;
/// REST and WebSocket snapshot reads in flight at once.
const READ_CONNECTIONS: u32 = 8;
/// While PostgreSQL is down, callers get an error after this long instead of
/// waiting: the persistence worker requeues its batch, REST answers 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// A read taking longer is cancelled by the server (a runaway history
/// query must not pin a connection).
const READ_STATEMENT_TIMEOUT: &str = "10s";
/// Bounds a write that waits on a lock held by a stuck transaction.
const WRITE_STATEMENT_TIMEOUT: &str = "60s";

/// The quote store's migrations keep their own bookkeeping table, so other
/// stores sharing the database can number their migrations independently.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations_quotes";

/// Every row new: the common case.
/// A batch goes in with binary COPY, PostgreSQL's fastest way in; COPY
/// knows no ON CONFLICT, so a batch holding a stored row fails whole and
/// is written again with [`INSERT_NEW_QUOTES`].
const COPY_QUOTES: &str = "COPY quotes (symbol, ts, price, volume, source, ingest_id, ingested_at, received_at) \
    FROM STDIN (FORMAT binary)";

/// Some rows already stored (or twice in the batch): skip them.
const INSERT_NEW_QUOTES: &str = "\
    INSERT INTO quotes (symbol, ts, price, volume, source, ingest_id, ingested_at, received_at) \
    SELECT symbol, ts, price, volume, source, ingest_id, ingested_at, $8 \
    FROM UNNEST($1::text[], $2::timestamptz[], $3::float8[], $4::float8[], $5::text[], $6::text[], \
                $7::timestamptz[]) AS batch (symbol, ts, price, volume, source, ingest_id, ingested_at) \
    ON CONFLICT (symbol, source, ts) DO NOTHING";

/// SQLSTATE of a duplicate key.
const UNIQUE_VIOLATION: &str = "23505";

/// The WHERE keeps `latest_quotes` from moving backwards in time.
const UPSERT_LATEST: &str = "\
    INSERT INTO latest_quotes (symbol, ts, price, volume, source, ingest_id, ingested_at, updated_at) \
    SELECT symbol, ts, price, volume, source, ingest_id, ingested_at, $8 \
    FROM UNNEST($1::text[], $2::timestamptz[], $3::float8[], $4::float8[], $5::text[], $6::text[], \
                $7::timestamptz[]) AS batch (symbol, ts, price, volume, source, ingest_id, ingested_at) \
    ON CONFLICT (symbol) DO UPDATE SET ts = excluded.ts, price = excluded.price, volume = excluded.volume, \
        source = excluded.source, ingest_id = excluded.ingest_id, ingested_at = excluded.ingested_at, \
        updated_at = excluded.updated_at \
    WHERE excluded.ts > latest_quotes.ts";

pub struct PostgresStore {
    pub(crate) write: PgPool,
    pub(crate) read: PgPool,
}

impl PostgresStore {
    /// Connects both pools and brings the schema up to date. Several
    /// processes may do this at once against one database: the migrator
    /// holds a PostgreSQL advisory lock while it runs.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("lizards");
        let write = PgPoolOptions::new()
            .max_connections(WRITE_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone().options([("statement_timeout", WRITE_STATEMENT_TIMEOUT)]))
            .await?;
        let mut migrator: Migrator = sqlx::migrate!("./migrations/postgres");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&write).await?;
        // A startup parameter rather than a SET after connecting: every
        // connection is read-only from its first statement, at no extra
        // round trip.
        let read_options =
            options.options([("default_transaction_read_only", "on"), ("statement_timeout", READ_STATEMENT_TIMEOUT)]);
        let read = PgPoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(read_options)
            .await?;
        Ok(PostgresStore { write, read })
    }

    /// The read-only pool behind every query of this store except writes.
    pub fn read_pool(&self) -> &PgPool {
        &self.read
    }

    /// Closes both pools, waiting for connections in use to come back.
    pub async fn close(&self) {
        tokio::join!(self.write.close(), self.read.close());
    }
}

/// A batch as one array per column, for `UNNEST`.
struct Columns<'a> {
    symbol: Vec<&'a str>,
    ts: Vec<DateTime<Utc>>,
    price: Vec<f64>,
    volume: Vec<Option<f64>>,
    source: Vec<&'a str>,
    ingest_id: Vec<&'a str>,
    ingested_at: Vec<DateTime<Utc>>,
}

impl<'a> Columns<'a> {
    fn of(quotes: &[&'a Quote]) -> Columns<'a> {
        let n = quotes.len();
        let mut columns = Columns {
            symbol: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            price: Vec::with_capacity(n),
            volume: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            ingest_id: Vec::with_capacity(n),
            ingested_at: Vec::with_capacity(n),
        };
        for quote in quotes {
            columns.symbol.push(quote.symbol.as_str());
            columns.ts.push(quote.ts);
            columns.price.push(quote.price);
            columns.volume.push(quote.volume);
            columns.source.push(&quote.source);
            columns.ingest_id.push(&quote.ingest_id);
            columns.ingested_at.push(quote.ingested_at);
        }
        columns
    }

    /// `sql` with the columns as `$1..$7` and `now` as `$8`.
    fn bind(self, sql: &'static str, now: DateTime<Utc>) -> Query<'a, Postgres, PgArguments> {
        sqlx::query(sql)
            .bind(self.symbol)
            .bind(self.ts)
            .bind(self.price)
            .bind(self.volume)
            .bind(self.source)
            .bind(self.ingest_id)
            .bind(self.ingested_at)
            .bind(now)
    }
}

fn quote_from_row(row: &PgRow) -> Result<Quote, sqlx::Error> {
    let symbol: &str = row.try_get("symbol")?;
    Ok(Quote {
        symbol: Symbol::parse(symbol).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        price: row.try_get("price")?,
        ts: row.try_get("ts")?,
        volume: row.try_get("volume")?,
        source: row.try_get("source")?,
        ingest_id: row.try_get("ingest_id")?,
        ingested_at: row.try_get("ingested_at")?,
    })
}

fn candle_from_row(row: &PgRow) -> Result<Candle, sqlx::Error> {
    let count: i64 = row.try_get("n")?;
    Ok(Candle {
        start: row.try_get("start")?,
        open: row.try_get("open")?,
        high: row.try_get("high")?,
        low: row.try_get("low")?,
        close: row.try_get("close")?,
        volume: row.try_get("volume")?,
        count: u32::try_from(count).unwrap_or(u32::MAX),
    })
}

/// How a batch's rows go in.
#[derive(Clone, Copy)]
enum Write {
    Copy,
    SkipStored,
}

impl PostgresStore {
    /// One transaction: the quotes, then `latest_quotes`.
    async fn write_batch(
        &self,
        write: Write,
        quotes: &[&Quote],
        newest: &[&Quote],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.write.begin().await?;
        let inserted = match write {
            Write::Copy => {
                let mut copy = tx.copy_in_raw(COPY_QUOTES).await?;
                copy.send(binary_rows(quotes, now)).await?;
                copy.finish().await?
            }
            Write::SkipStored => {
                Columns::of(quotes).bind(INSERT_NEW_QUOTES, now).execute(&mut *tx).await?.rows_affected()
            }
        };
        Columns::of(newest).bind(UPSERT_LATEST, now).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(inserted)
    }
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The rows in PostgreSQL's binary COPY format: a header, then per row its
/// field count and each field as a length and big-endian bytes (-1 for
/// NULL), then -1.
fn binary_rows(quotes: &[&Quote], now: DateTime<Utc>) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, value: &str) {
        out.extend_from_slice(&(value.len() as i32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    fn float(out: &mut Vec<u8>, value: f64) {
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
    fn time(out: &mut Vec<u8>, value: DateTime<Utc>) {
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&(value.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes());
    }
    let mut out = Vec::with_capacity(19 + quotes.len() * 128);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension
    for quote in quotes {
        out.extend_from_slice(&8i16.to_be_bytes());
        text(&mut out, quote.symbol.as_str());
        time(&mut out, quote.ts);
        float(&mut out, quote.price);
        match quote.volume {
            Some(volume) => float(&mut out, volume),
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        text(&mut out, &quote.source);
        text(&mut out, &quote.ingest_id);
        time(&mut out, quote.ingested_at);
        time(&mut out, now);
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == UNIQUE_VIOLATION)
}

#[async_trait]
impl QuoteStore for PostgresStore {
    async fn insert_batch(&self, quotes: &[Quote]) -> Result<u64, StoreError> {
        if quotes.is_empty() {
            return Ok(0);
        }
        // Rows in key order: concurrent writers (several providers, a
        // redelivered batch) then take their locks in the same order and
        // cannot deadlock; the index pages are also touched in order.
        let mut sorted: Vec<&Quote> = quotes.iter().collect();
        sorted.sort_unstable_by(|a, b| (&a.symbol, a.ts, &a.source).cmp(&(&b.symbol, b.ts, &b.source)));
        let mut newest = newest_per_symbol(quotes);
        newest.sort_unstable_by(|a, b| a.symbol.cmp(&b.symbol));

        let now = Utc::now();
        match self.write_batch(Write::Copy, &sorted, &newest, now).await {
            Err(StoreError::Database(error)) if is_unique_violation(&error) => {
                // The failed transaction was rolled back whole: nothing of
                // the first attempt is left behind.
                self.write_batch(Write::SkipStored, &sorted, &newest, now).await
            }
            result => result,
        }
    }

    async fn latest(&self, symbol: &Symbol) -> Result<Option<Quote>, StoreError> {
        let sql = "SELECT symbol, ts, price, volume, source, ingest_id, ingested_at \
                   FROM latest_quotes WHERE symbol = $1";
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
        // COALESCE to ±infinity keeps one plan (an index range scan) for
        // every combination of bounds.
        let sql = "SELECT symbol, ts, price, volume, source, ingest_id, ingested_at FROM quotes WHERE symbol = $1 \
                   AND ts >= COALESCE($2, '-infinity'::timestamptz) AND ts <= COALESCE($3, 'infinity'::timestamptz) \
                   ORDER BY ts DESC LIMIT $4";
        let rows = sqlx::query(sql)
            .bind(symbol.as_str())
            .bind(from)
            .bind(to)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(quote_from_row).collect::<Result<_, _>>()?)
    }

    async fn mean_of_last(&self, symbol: &Symbol, last: u32) -> Result<Option<Mean>, StoreError> {
        let row = sqlx::query(
            "SELECT AVG(price) AS mean, COUNT(*) AS n FROM \
             (SELECT price FROM quotes WHERE symbol = $1 ORDER BY ts DESC LIMIT $2) AS newest",
        )
        .bind(symbol.as_str())
        .bind(i64::from(last))
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
        let newest: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT MAX(ts) FROM quotes WHERE symbol = $1 \
             AND ts >= COALESCE($2, '-infinity'::timestamptz) AND ts <= COALESCE($3, 'infinity'::timestamptz)",
        )
        .bind(symbol.as_str())
        .bind(from)
        .bind(to)
        .fetch_one(&self.read)
        .await?;
        let Some(newest) = newest else { return Ok(Vec::new()) };
        let start = candle_window_start(interval, from, newest, limit);
        // date_bin from the epoch gives the same UTC-aligned buckets as
        // `CandleInterval::bucket_start`; ties in time are broken by source
        // so open and close do not depend on the plan.
        let rows = sqlx::query(
            "SELECT date_bin($2::float8 * INTERVAL '1 second', ts, 'epoch'::timestamptz) AS start, \
                    (array_agg(price ORDER BY ts, source))[1] AS open, \
                    MAX(price) AS high, MIN(price) AS low, \
                    (array_agg(price ORDER BY ts DESC, source DESC))[1] AS close, \
                    SUM(volume) AS volume, COUNT(*) AS n \
             FROM quotes WHERE symbol = $1 AND ts >= $3 AND ts <= $4 \
             GROUP BY 1 ORDER BY 1",
        )
        .bind(symbol.as_str())
        .bind(interval.seconds())
        .bind(start)
        .bind(newest)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(candle_from_row).collect::<Result<_, _>>()?)
    }

    async fn count(&self, symbol: &Symbol) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM quotes WHERE symbol = $1")
            .bind(symbol.as_str())
            .fetch_one(&self.read)
            .await?;
        Ok(n as u64)
    }

    async fn delete_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let chunk =
                sqlx::query("DELETE FROM quotes WHERE ctid IN (SELECT ctid FROM quotes WHERE ts < $1 LIMIT $2)")
                    .bind(cutoff)
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
        let keep: Vec<&str> = keep.iter().map(Symbol::as_str).collect();
        let rows: Vec<String> = sqlx::query_scalar(
            "DELETE FROM latest_quotes WHERE updated_at < $1 AND NOT (symbol = ANY($2)) RETURNING symbol",
        )
        .bind(idle_before)
        .bind(&keep)
        .fetch_all(&self.write)
        .await?;
        Ok(rows.iter().filter_map(|s| Symbol::parse(s).ok()).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }
}
