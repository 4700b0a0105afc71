-- Service-level objectives, the same tables as PostgreSQL's 0004_slos.sql.
-- Times are microseconds since the Unix epoch (UTC); booleans 0 or 1.
CREATE TABLE IF NOT EXISTS slos (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT    NOT NULL UNIQUE,
    metric         TEXT    NOT NULL,
    labels         TEXT    NOT NULL,
    aggregation    TEXT    NOT NULL CHECK (aggregation IN ('value', 'rate_5m', 'p50', 'p95', 'p99')),
    comparison     TEXT    NOT NULL CHECK (comparison IN ('<', '>')),
    threshold      REAL    NOT NULL,
    window_minutes INTEGER NOT NULL CHECK (window_minutes > 0),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS slo_samples (
    slo_id INTEGER NOT NULL REFERENCES slos ON DELETE CASCADE,
    at     INTEGER NOT NULL,
    value  REAL,
    met    INTEGER CHECK (met IN (0, 1)),
    PRIMARY KEY (slo_id, at)
) STRICT;
