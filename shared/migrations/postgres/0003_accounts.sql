-- Accounts: users, alert rules with their evaluation state, fired
-- alerts with one delivery row per channel, portfolios, positions and
-- orders. Money and quantities are NUMERIC (exact, read as rust_decimal);
-- prices and thresholds are double precision like the quotes they are
-- compared with. Unsigned counts (seconds, minutes, attempts) are bigint so
-- any u32 fits. Deleting a user deletes everything of theirs.
CREATE TABLE IF NOT EXISTS users (
    id                        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Named: the store maps a violation of exactly this one to EmailTaken.
    email                     text        NOT NULL CONSTRAINT users_email_unique UNIQUE,
    password_hash             text        NOT NULL,
    role                      text        NOT NULL CHECK (role IN ('user', 'admin')),
    email_notifications       boolean     NOT NULL,
    webhook_url               text,
    webhook_secret            text,
    telegram_chat_id          bigint,
    telegram_link_code        text        UNIQUE,
    min_notification_interval bigint      NOT NULL CHECK (min_notification_interval >= 0),
    last_notified_at          timestamptz,
    created_at                timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS users_telegram_chat_id ON users (telegram_chat_id);

CREATE TABLE IF NOT EXISTS alert_rules (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        bigint           NOT NULL REFERENCES users ON DELETE CASCADE,
    -- NULL for portfolio rules.
    symbol         text COLLATE "C",
    kind           text             NOT NULL
                   CHECK (kind IN ('above', 'below', 'change_pct', 'portfolio_change_pct')),
    threshold      double precision NOT NULL,
    window_minutes bigint           CHECK (window_minutes >= 0),
    cooldown       bigint           NOT NULL CHECK (cooldown >= 0),
    -- Channel names, comma-separated in channel order: `email,ws`.
    channels       text             NOT NULL,
    active         boolean,
    baseline       double precision,
    observed_at    timestamptz,
    last_fired_at  timestamptz,
    -- Compare-and-set token of concurrent evaluators.
    version        bigint           NOT NULL,
    created_at     timestamptz      NOT NULL
);

-- Evaluation looks rules up by the quote's symbol.
CREATE INDEX IF NOT EXISTS alert_rules_symbol ON alert_rules (symbol);
CREATE INDEX IF NOT EXISTS alert_rules_user_id ON alert_rules (user_id, id);

CREATE TABLE IF NOT EXISTS alerts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint           NOT NULL REFERENCES users ON DELETE CASCADE,
    -- Kept (as NULL) when the rule is deleted: the alert stays in history.
    rule_id    bigint           REFERENCES alert_rules ON DELETE SET NULL,
    symbol     text COLLATE "C",
    kind       text             NOT NULL
               CHECK (kind IN ('above', 'below', 'change_pct', 'portfolio_change_pct')),
    threshold  double precision NOT NULL,
    price      double precision,
    change_pct double precision,
    message    text             NOT NULL,
    fired_at   timestamptz      NOT NULL,
    published  boolean          NOT NULL
);

CREATE INDEX IF NOT EXISTS alerts_user_id ON alerts (user_id, id DESC);
-- Deleting a rule sets its alerts' rule_id to NULL: find them by index.
CREATE INDEX IF NOT EXISTS alerts_rule_id ON alerts (rule_id);
-- The republisher's scan: few rows, so a partial index stays tiny.
CREATE INDEX IF NOT EXISTS alerts_unpublished ON alerts (id) WHERE NOT published;

CREATE TABLE IF NOT EXISTS alert_deliveries (
    alert_id bigint      NOT NULL REFERENCES alerts ON DELETE CASCADE,
    channel  text        NOT NULL CHECK (channel IN ('email', 'webhook', 'telegram', 'ws')),
    status   text        NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'suppressed', 'skipped')),
    attempts bigint      NOT NULL CHECK (attempts >= 0),
    at       timestamptz NOT NULL,
    error    text,
    PRIMARY KEY (alert_id, channel)
);

CREATE TABLE IF NOT EXISTS portfolios (
    user_id      bigint  PRIMARY KEY REFERENCES users ON DELETE CASCADE,
    cash         numeric NOT NULL,
    realised_pnl numeric NOT NULL
);

-- Open positions only: a position sold down to zero is deleted.
CREATE TABLE IF NOT EXISTS positions (
    user_id  bigint           NOT NULL REFERENCES users ON DELETE CASCADE,
    symbol   text COLLATE "C" NOT NULL,
    quantity numeric          NOT NULL CHECK (quantity > 0),
    avg_cost numeric          NOT NULL,
    PRIMARY KEY (user_id, symbol)
);

-- Holders of a symbol (portfolio rules) and refcounts.
CREATE INDEX IF NOT EXISTS positions_symbol ON positions (symbol);

CREATE TABLE IF NOT EXISTS orders (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id  bigint           NOT NULL REFERENCES users ON DELETE CASCADE,
    symbol   text COLLATE "C" NOT NULL,
    side     text             NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity numeric          NOT NULL,
    price    numeric          NOT NULL,
    value    numeric          NOT NULL,
    at       timestamptz      NOT NULL
);

CREATE INDEX IF NOT EXISTS orders_user_id ON orders (user_id, id DESC);
