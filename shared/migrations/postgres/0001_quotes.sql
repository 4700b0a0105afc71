-- Quotes and the latest quote per symbol. Times are timestamptz
-- (microseconds, UTC). Symbols and sources compare bytewise (COLLATE "C"):
-- the order does not depend on the server's locale, and index maintenance
-- on the hot insert path skips locale-aware comparison.
CREATE TABLE IF NOT EXISTS quotes (
    symbol      text COLLATE "C" NOT NULL,
    ts          timestamptz      NOT NULL,
    price       double precision NOT NULL,
    volume      double precision,
    source      text COLLATE "C" NOT NULL,
    ingest_id   text             NOT NULL,
    ingested_at timestamptz      NOT NULL,
    received_at timestamptz      NOT NULL,
    -- Redelivery is idempotent: the same observation is stored once.
    PRIMARY KEY (symbol, source, ts)
);

-- History, means and candles: one symbol, newest first.
CREATE INDEX IF NOT EXISTS quotes_symbol_ts ON quotes (symbol, ts DESC);

-- Retention deletes by age across all symbols. Rows arrive roughly in time
-- order, so a BRIN index finds the old ones at a tiny fraction of a B-tree's
-- cost on every insert.
CREATE INDEX IF NOT EXISTS quotes_ts ON quotes USING brin (ts);

CREATE TABLE IF NOT EXISTS latest_quotes (
    symbol      text COLLATE "C" PRIMARY KEY,
    ts          timestamptz      NOT NULL,
    price       double precision NOT NULL,
    volume      double precision,
    source      text COLLATE "C" NOT NULL,
    ingest_id   text             NOT NULL,
    ingested_at timestamptz      NOT NULL,
    updated_at  timestamptz      NOT NULL
);
