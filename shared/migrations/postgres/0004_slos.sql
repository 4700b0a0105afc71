-- Service-level objectives of the registry's SLO manager and
-- their evaluations, from which status and violations are computed.
-- `labels` is a JSON object of label matchers (text, as SQLite keeps it).
CREATE TABLE IF NOT EXISTS slos (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text             NOT NULL CONSTRAINT slos_name_unique UNIQUE,
    metric         text             NOT NULL,
    labels         text             NOT NULL,
    aggregation    text             NOT NULL CHECK (aggregation IN ('value', 'rate_5m', 'p50', 'p95', 'p99')),
    comparison     text             NOT NULL CHECK (comparison IN ('<', '>')),
    threshold      double precision NOT NULL,
    window_minutes bigint           NOT NULL CHECK (window_minutes > 0),
    created_at     timestamptz      NOT NULL,
    updated_at     timestamptz      NOT NULL
);

-- One row per SLO per evaluation; `value` and `met` are NULL when the
-- metric had no data then.
CREATE TABLE IF NOT EXISTS slo_samples (
    slo_id bigint      NOT NULL REFERENCES slos ON DELETE CASCADE,
    at     timestamptz NOT NULL,
    value  double precision,
    met    boolean,
    PRIMARY KEY (slo_id, at)
);
