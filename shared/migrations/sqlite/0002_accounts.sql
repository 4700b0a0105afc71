-- Accounts, the same tables as PostgreSQL's 0003_accounts.sql.
-- Times are microseconds since the Unix epoch (UTC); booleans are 0 or 1.
-- Money and quantities are TEXT holding the exact decimal (SQLite has no
-- decimal type and its arithmetic on them would be floating point), so all
-- arithmetic on them happens in Rust. STRICT: a value of the wrong type is
-- an error, not silently stored. Foreign keys are enforced on every
-- connection (sqlx turns the pragma on), so deleting a user deletes
-- everything of theirs.
CREATE TABLE IF NOT EXISTS users (
    id                        INTEGER PRIMARY KEY AUTOINCREMENT,
    email                     TEXT    NOT NULL UNIQUE,
    password_hash             TEXT    NOT NULL,
    role                      TEXT    NOT NULL CHECK (role IN ('user', 'admin')),
    email_notifications       INTEGER NOT NULL CHECK (email_notifications IN (0, 1)),
    webhook_url               TEXT,
    webhook_secret            TEXT,
    telegram_chat_id          INTEGER,
    telegram_link_code        TEXT    UNIQUE,
    min_notification_interval INTEGER NOT NULL CHECK (min_notification_interval >= 0),
    last_notified_at          INTEGER,
    created_at                INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS users_telegram_chat_id ON users (telegram_chat_id);

CREATE TABLE IF NOT EXISTS alert_rules (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id        INTEGER NOT NULL REFERENCES users ON DELETE CASCADE,
    -- NULL for portfolio rules.
    symbol         TEXT,
    kind           TEXT    NOT NULL
                   CHECK (kind IN ('above', 'below', 'change_pct', 'portfolio_change_pct')),
    threshold      REAL    NOT NULL,
    window_minutes INTEGER CHECK (window_minutes >= 0),
    cooldown       INTEGER NOT NULL CHECK (cooldown >= 0),
    -- Channel names, comma-separated in channel order: `email,ws`.
    channels       TEXT    NOT NULL,
    active         INTEGER CHECK (active IN (0, 1)),
    baseline       REAL,
    observed_at    INTEGER,
    last_fired_at  INTEGER,
    -- Compare-and-set token of concurrent evaluators.
    version        INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
) STRICT;

-- Evaluation looks rules up by the quote's symbol.
CREATE INDEX IF NOT EXISTS alert_rules_symbol ON alert_rules (symbol);
CREATE INDEX IF NOT EXISTS alert_rules_user_id ON alert_rules (user_id, id);

CREATE TABLE IF NOT EXISTS alerts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users ON DELETE CASCADE,
    -- Kept (as NULL) when the rule is deleted: the alert stays in history.
    rule_id    INTEGER REFERENCES alert_rules ON DELETE SET NULL,
    symbol     TEXT,
    kind       TEXT    NOT NULL
               CHECK (kind IN ('above', 'below', 'change_pct', 'portfolio_change_pct')),
    threshold  REAL    NOT NULL,
    price      REAL,
    change_pct REAL,
    message    TEXT    NOT NULL,
    fired_at   INTEGER NOT NULL,
    published  INTEGER NOT NULL CHECK (published IN (0, 1))
) STRICT;

CREATE INDEX IF NOT EXISTS alerts_user_id ON alerts (user_id, id DESC);
-- Deleting a rule sets its alerts' rule_id to NULL: find them by index.
CREATE INDEX IF NOT EXISTS alerts_rule_id ON alerts (rule_id);
-- The republisher's scan: few rows, so a partial index stays tiny.
CREATE INDEX IF NOT EXISTS alerts_unpublished ON alerts (id) WHERE NOT published;

CREATE TABLE IF NOT EXISTS alert_deliveries (
    alert_id INTEGER NOT NULL REFERENCES alerts ON DELETE CASCADE,
    channel  TEXT    NOT NULL CHECK (channel IN ('email', 'webhook', 'telegram', 'ws')),
    status   TEXT    NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'suppressed', 'skipped')),
    attempts INTEGER NOT NULL CHECK (attempts >= 0),
    at       INTEGER NOT NULL,
    error    TEXT,
    PRIMARY KEY (alert_id, channel)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS portfolios (
    user_id      INTEGER PRIMARY KEY REFERENCES users ON DELETE CASCADE,
    cash         TEXT    NOT NULL,
    realised_pnl TEXT    NOT NULL
) STRICT;

-- Open positions only: a position sold down to zero is deleted.
CREATE TABLE IF NOT EXISTS positions (
    user_id  INTEGER NOT NULL REFERENCES users ON DELETE CASCADE,
    symbol   TEXT    NOT NULL,
    quantity TEXT    NOT NULL,
    avg_cost TEXT    NOT NULL,
    PRIMARY KEY (user_id, symbol)
) STRICT, WITHOUT ROWID;

-- Holders of a symbol (portfolio rules) and refcounts.
CREATE INDEX IF NOT EXISTS positions_symbol ON positions (symbol);

CREATE TABLE IF NOT EXISTS orders (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id  INTEGER NOT NULL REFERENCES users ON DELETE CASCADE,
    symbol   TEXT    NOT NULL,
    side     TEXT    NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity TEXT    NOT NULL,
    price    TEXT    NOT NULL,
    value    TEXT    NOT NULL,
    at       INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS orders_user_id ON orders (user_id, id DESC);
