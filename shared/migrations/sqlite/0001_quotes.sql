-- Times are microseconds since the Unix epoch (UTC).
CREATE TABLE IF NOT EXISTS quotes (
    symbol      TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    price       REAL    NOT NULL,
    volume      REAL,
    source      TEXT    NOT NULL,
    ingest_id   TEXT    NOT NULL,
    ingested_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (symbol, source, ts)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS quotes_symbol_ts ON quotes (symbol, ts);
CREATE INDEX IF NOT EXISTS quotes_ts ON quotes (ts);

CREATE TABLE IF NOT EXISTS latest_quotes (
    symbol      TEXT PRIMARY KEY,
    ts          INTEGER NOT NULL,
    price       REAL    NOT NULL,
    volume      REAL,
    source      TEXT    NOT NULL,
    ingest_id   TEXT    NOT NULL,
    ingested_at INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
