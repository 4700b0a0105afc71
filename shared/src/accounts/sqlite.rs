//! SQLite adapter of the accounts port, on the quote store's pools: reads
//! go to the read-only pool, anything that writes to the single writer
//! connection.
//!
//! Times are microseconds since the epoch and money and quantities exact
//! decimal text (see the migration), converted here. With one writer
//! connection, transactions of this process never interleave; they start
//! with `BEGIN IMMEDIATE` anyway, so one that reads before it writes holds
//! the write lock from the start even against another process on the file.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteExecutor, sqlite::SqliteRow};

use super::{
    AccountError, AccountStore, Alert, AlertId, Channel, Delivery, DeliveryStatus, Email, NewAlert, NewUser, Order,
    OrderId, OrderRequest, Portfolio, Position, Role, Rule, RuleId, RuleKind, RuleSpec, RuleState, Side, StateSave,
    SymbolRefs, Targets, UPDATE_STATE, User, UserId, UserPatch, channels_text, count, decode, ledger, parse_channels,
    parse_role, pending_deliveries, role_counts, with_deliveries,
};
use crate::{Symbol, store::SqliteStore, time};

/// A write transaction holding the database's write lock from its start.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// A user's cash and positions in one statement (one snapshot): no row
/// when they never deposited, one row with NULL position columns when they
/// hold nothing.
const PORTFOLIO: &str = "\
    SELECT p.cash, p.realised_pnl, s.symbol, s.quantity, s.avg_cost \
    FROM portfolios p LEFT JOIN positions s ON s.user_id = p.user_id \
    WHERE p.user_id = $1 ORDER BY s.symbol";

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| e.is_unique_violation())
}

fn symbol(text: &str) -> Result<Symbol, AccountError> {
    decode("symbol", text, |text| Symbol::parse(text).ok())
}

fn decimal(row: &SqliteRow, column: &str) -> Result<Decimal, AccountError> {
    decode(column, row.try_get(column)?, |text| text.parse().ok())
}

fn timestamp(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, AccountError> {
    Ok(time::from_micros(row.try_get(column)?))
}

fn optional_timestamp(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>, AccountError> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(time::from_micros))
}

fn micros(at: Option<DateTime<Utc>>) -> Option<i64> {
    at.as_ref().map(time::micros)
}

fn user_from_row(row: &SqliteRow) -> Result<User, AccountError> {
    Ok(User {
        id: UserId(row.try_get("id")?),
        email: decode("email", row.try_get("email")?, |text| Email::parse(text).ok())?,
        password_hash: row.try_get("password_hash")?,
        role: decode("role", row.try_get("role")?, parse_role)?,
        targets: Targets {
            email: row.try_get("email_notifications")?,
            webhook_url: row.try_get("webhook_url")?,
            webhook_secret: row.try_get("webhook_secret")?,
            telegram_chat_id: row.try_get("telegram_chat_id")?,
        },
        min_notification_interval: count("min_notification_interval", row.try_get("min_notification_interval")?)?,
        telegram_link_code: row.try_get("telegram_link_code")?,
        token_version: row.try_get("token_version")?,
        created_at: timestamp(row, "created_at")?,
    })
}

fn rule_from_row(row: &SqliteRow) -> Result<Rule, AccountError> {
    let window_minutes: Option<i64> = row.try_get("window_minutes")?;
    Ok(Rule {
        id: RuleId(row.try_get("id")?),
        user_id: UserId(row.try_get("user_id")?),
        spec: RuleSpec {
            symbol: row.try_get::<Option<&str>, _>("symbol")?.map(symbol).transpose()?,
            kind: decode("kind", row.try_get("kind")?, RuleKind::parse)?,
            threshold: row.try_get("threshold")?,
            window_minutes: window_minutes.map(|w| count("window_minutes", w)).transpose()?,
            cooldown: count("cooldown", row.try_get("cooldown")?)?,
            channels: parse_channels(row.try_get("channels")?)?,
        },
        state: RuleState {
            active: row.try_get("active")?,
            baseline: row.try_get("baseline")?,
            observed_at: optional_timestamp(row, "observed_at")?,
            last_fired_at: optional_timestamp(row, "last_fired_at")?,
            version: row.try_get("version")?,
        },
        created_at: timestamp(row, "created_at")?,
    })
}

/// An alert row without its deliveries.
fn alert_from_row(row: &SqliteRow) -> Result<Alert, AccountError> {
    Ok(Alert {
        id: AlertId(row.try_get("id")?),
        user_id: UserId(row.try_get("user_id")?),
        rule_id: row.try_get::<Option<i64>, _>("rule_id")?.map(RuleId),
        symbol: row.try_get::<Option<&str>, _>("symbol")?.map(symbol).transpose()?,
        kind: decode("kind", row.try_get("kind")?, RuleKind::parse)?,
        threshold: row.try_get("threshold")?,
        price: row.try_get("price")?,
        change_pct: row.try_get("change_pct")?,
        message: row.try_get("message")?,
        fired_at: timestamp(row, "fired_at")?,
        deliveries: Vec::new(),
        published: row.try_get("published")?,
    })
}

/// The delivery columns of an alert row joined with its deliveries, `None`
/// for an alert without any.
fn delivery_from_row(row: &SqliteRow) -> Result<Option<Delivery>, AccountError> {
    let Some(channel) = row.try_get::<Option<&str>, _>("channel")? else { return Ok(None) };
    Ok(Some(Delivery {
        channel: decode("channel", channel, Channel::parse)?,
        status: decode("status", row.try_get("status")?, DeliveryStatus::parse)?,
        attempts: count("attempts", row.try_get("attempts")?)?,
        at: timestamp(row, "at")?,
        error: row.try_get("error")?,
    }))
}

fn alerts_from_rows(rows: &[SqliteRow]) -> Result<Vec<Alert>, AccountError> {
    let rows = rows.iter().map(|row| Ok((alert_from_row(row)?, delivery_from_row(row)?)));
    Ok(with_deliveries(rows.collect::<Result<Vec<_>, AccountError>>()?))
}

fn order_from_row(row: &SqliteRow) -> Result<Order, AccountError> {
    Ok(Order {
        id: OrderId(row.try_get("id")?),
        user_id: UserId(row.try_get("user_id")?),
        symbol: symbol(row.try_get("symbol")?)?,
        side: decode("side", row.try_get("side")?, Side::parse)?,
        quantity: decimal(row, "quantity")?,
        price: decimal(row, "price")?,
        value: decimal(row, "value")?,
        at: timestamp(row, "at")?,
    })
}

/// The rule's state written over `expected_version` (bumping it): whether
/// the rule was still at that version.
async fn update_state<'e>(
    db: impl SqliteExecutor<'e>,
    rule: RuleId,
    expected_version: i64,
    state: &RuleState,
) -> Result<bool, AccountError> {
    let saved = sqlx::query(UPDATE_STATE)
        .bind(rule.0)
        .bind(expected_version)
        .bind(state.active)
        .bind(state.baseline)
        .bind(micros(state.observed_at))
        .bind(micros(state.last_fired_at))
        .execute(db)
        .await?;
    Ok(saved.rows_affected() == 1)
}

async fn load_portfolio<'e>(db: impl SqliteExecutor<'e>, user: UserId) -> Result<Portfolio, AccountError> {
    let rows = sqlx::query(PORTFOLIO).bind(user.0).fetch_all(db).await?;
    let Some(first) = rows.first() else { return Ok(Portfolio::default()) };
    let mut positions = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(held) = row.try_get::<Option<&str>, _>("symbol")? {
            positions.push(Position {
                symbol: symbol(held)?,
                quantity: decimal(row, "quantity")?,
                avg_cost: decimal(row, "avg_cost")?,
            });
        }
    }
    Ok(Portfolio { cash: decimal(first, "cash")?, realised_pnl: decimal(first, "realised_pnl")?, positions })
}

impl SqliteStore {
    /// Whether someone other than `id` has the address. SQLite reports
    /// which constraint failed only in its message text, so after a unique
    /// violation of an update (the e-mail or the Telegram link code) this
    /// tells which one.
    async fn email_taken_by_other(&self, email: &Email, id: UserId) -> Result<bool, AccountError> {
        let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE email = $1 AND id <> $2)")
            .bind(email.as_str())
            .bind(id.0)
            .fetch_one(&self.write)
            .await?;
        Ok(taken)
    }
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_user(&self, user: &NewUser) -> Result<User, AccountError> {
        let row = sqlx::query(
            "INSERT INTO users (email, password_hash, role, email_notifications, webhook_url, webhook_secret, \
                                telegram_chat_id, min_notification_interval, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
        )
        .bind(user.email.as_str())
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(user.targets.email)
        .bind(&user.targets.webhook_url)
        .bind(&user.targets.webhook_secret)
        .bind(user.targets.telegram_chat_id)
        .bind(i64::from(user.min_notification_interval))
        .bind(time::micros(&Utc::now()))
        .fetch_one(&self.write)
        .await
        // The e-mail is the only unique column a new user sets.
        .map_err(|error| if is_unique_violation(&error) { AccountError::EmailTaken } else { error.into() })?;
        user_from_row(&row)
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, AccountError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1").bind(id.0).fetch_optional(&self.read).await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, AccountError> {
        let row =
            sqlx::query("SELECT * FROM users WHERE email = $1").bind(email.as_str()).fetch_optional(&self.read).await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn update_user(&self, id: UserId, patch: &UserPatch) -> Result<Option<User>, AccountError> {
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE users SET ");
        let mut set = query.separated(", ");
        let mut changes = 0;
        if let Some(email) = &patch.email {
            set.push("email = ").push_bind_unseparated(email.as_str());
            changes += 1;
        }
        if let Some(hash) = &patch.password_hash {
            set.push("password_hash = ").push_bind_unseparated(hash.as_str());
            changes += 1;
        }
        if let Some(role) = patch.role {
            set.push("role = ").push_bind_unseparated(role.as_str());
            changes += 1;
        }
        if let Some(on) = patch.email_notifications {
            set.push("email_notifications = ").push_bind_unseparated(on);
            changes += 1;
        }
        if let Some(url) = &patch.webhook_url {
            set.push("webhook_url = ").push_bind_unseparated(url.as_deref());
            changes += 1;
        }
        if let Some(secret) = &patch.webhook_secret {
            set.push("webhook_secret = ").push_bind_unseparated(secret.as_deref());
            changes += 1;
        }
        if let Some(chat) = patch.telegram_chat_id {
            set.push("telegram_chat_id = ").push_bind_unseparated(chat);
            changes += 1;
        }
        if let Some(code) = &patch.telegram_link_code {
            set.push("telegram_link_code = ").push_bind_unseparated(code.as_deref());
            changes += 1;
        }
        if let Some(seconds) = patch.min_notification_interval {
            set.push("min_notification_interval = ").push_bind_unseparated(i64::from(seconds));
            changes += 1;
        }
        if changes == 0 {
            return self.user(id).await;
        }
        super::push_token_version(&mut set, patch);
        query.push(" WHERE id = ").push_bind(id.0).push(" RETURNING *");
        match query.build().fetch_optional(&self.write).await {
            Ok(row) => row.as_ref().map(user_from_row).transpose(),
            Err(error) if is_unique_violation(&error) => match &patch.email {
                Some(email) if self.email_taken_by_other(email, id).await? => Err(AccountError::EmailTaken),
                _ => Err(error.into()),
            },
            Err(error) => Err(error.into()),
        }
    }

    async fn delete_user(&self, id: UserId) -> Result<bool, AccountError> {
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1").bind(id.0).execute(&self.write).await?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn users(&self) -> Result<Vec<User>, AccountError> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY id").fetch_all(&self.read).await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn has_admin(&self) -> Result<bool, AccountError> {
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE role = 'admin')")
            .fetch_one(&self.read)
            .await?;
        Ok(any)
    }

    async fn users_by_role(&self) -> Result<Vec<(Role, u64)>, AccountError> {
        let rows = sqlx::query_as("SELECT role, count(*) FROM users GROUP BY role ORDER BY role")
            .fetch_all(&self.read)
            .await?;
        role_counts(rows)
    }

    async fn link_telegram(&self, code: &str, chat_id: i64) -> Result<Option<User>, AccountError> {
        // One transaction: two bots polling at once cannot both use the
        // code, and the chat leaves any account it was linked to before.
        let mut tx = self.write.begin_with(BEGIN_WRITE).await?;
        let holder: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE telegram_link_code = $1")
            .bind(code)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(holder) = holder else { return Ok(None) };
        sqlx::query("UPDATE users SET telegram_chat_id = NULL WHERE telegram_chat_id = $1 AND id <> $2")
            .bind(chat_id)
            .bind(holder)
            .execute(&mut *tx)
            .await?;
        let row =
            sqlx::query("UPDATE users SET telegram_chat_id = $2, telegram_link_code = NULL WHERE id = $1 RETURNING *")
                .bind(holder)
                .bind(chat_id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        user_from_row(&row).map(Some)
    }

    async fn user_by_telegram_chat(&self, chat_id: i64) -> Result<Option<User>, AccountError> {
        let row = sqlx::query("SELECT * FROM users WHERE telegram_chat_id = $1")
            .bind(chat_id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn claim_notification_slot(&self, id: UserId, now: DateTime<Utc>) -> Result<bool, AccountError> {
        let claimed = sqlx::query(
            "UPDATE users SET last_notified_at = $2 WHERE id = $1 AND (last_notified_at IS NULL \
             OR last_notified_at <= $2 - min_notification_interval * 1000000)",
        )
        .bind(id.0)
        .bind(time::micros(&now))
        .execute(&self.write)
        .await?;
        Ok(claimed.rows_affected() > 0)
    }

    async fn create_rule(&self, user: UserId, spec: &RuleSpec, state: &RuleState) -> Result<Rule, AccountError> {
        let row = sqlx::query(
            "INSERT INTO alert_rules (user_id, symbol, kind, threshold, window_minutes, cooldown, channels, \
                                      active, baseline, observed_at, last_fired_at, version, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12) RETURNING *",
        )
        .bind(user.0)
        .bind(spec.symbol.as_ref().map(Symbol::as_str))
        .bind(spec.kind.as_str())
        .bind(spec.threshold)
        .bind(spec.window_minutes.map(i64::from))
        .bind(i64::from(spec.cooldown))
        .bind(channels_text(&spec.channels))
        .bind(state.active)
        .bind(state.baseline)
        .bind(micros(state.observed_at))
        .bind(micros(state.last_fired_at))
        .bind(time::micros(&Utc::now()))
        .fetch_one(&self.write)
        .await?;
        rule_from_row(&row)
    }

    async fn rule(&self, user: UserId, id: RuleId) -> Result<Option<Rule>, AccountError> {
        let row = sqlx::query("SELECT * FROM alert_rules WHERE id = $2 AND user_id = $1")
            .bind(user.0)
            .bind(id.0)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(rule_from_row).transpose()
    }

    async fn rules_of(&self, user: UserId) -> Result<Vec<Rule>, AccountError> {
        let rows = sqlx::query("SELECT * FROM alert_rules WHERE user_id = $1 ORDER BY id")
            .bind(user.0)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(rule_from_row).collect()
    }

    async fn update_rule(
        &self,
        user: UserId,
        id: RuleId,
        spec: &RuleSpec,
        state: &RuleState,
    ) -> Result<Option<Rule>, AccountError> {
        // The version moves on too, so an evaluation of the old rule still
        // in flight fails to save instead of overwriting the fresh state.
        let row = sqlx::query(
            "UPDATE alert_rules SET symbol = $3, kind = $4, threshold = $5, window_minutes = $6, cooldown = $7, \
                 channels = $8, active = $9, baseline = $10, observed_at = $11, last_fired_at = $12, \
                 version = version + 1 \
             WHERE id = $2 AND user_id = $1 RETURNING *",
        )
        .bind(user.0)
        .bind(id.0)
        .bind(spec.symbol.as_ref().map(Symbol::as_str))
        .bind(spec.kind.as_str())
        .bind(spec.threshold)
        .bind(spec.window_minutes.map(i64::from))
        .bind(i64::from(spec.cooldown))
        .bind(channels_text(&spec.channels))
        .bind(state.active)
        .bind(state.baseline)
        .bind(micros(state.observed_at))
        .bind(micros(state.last_fired_at))
        .fetch_optional(&self.write)
        .await?;
        row.as_ref().map(rule_from_row).transpose()
    }

    async fn delete_rule(&self, user: UserId, id: RuleId) -> Result<bool, AccountError> {
        let deleted = sqlx::query("DELETE FROM alert_rules WHERE id = $2 AND user_id = $1")
            .bind(user.0)
            .bind(id.0)
            .execute(&self.write)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn all_rules(&self) -> Result<Vec<Rule>, AccountError> {
        let rows = sqlx::query("SELECT * FROM alert_rules ORDER BY id").fetch_all(&self.read).await?;
        rows.iter().map(rule_from_row).collect()
    }

    async fn rules_for_quote(&self, symbol: &Symbol) -> Result<Vec<Rule>, AccountError> {
        // A UNION rather than an OR, so each half uses its index.
        let rows = sqlx::query(
            "SELECT * FROM alert_rules WHERE symbol = $1 \
             UNION \
             SELECT * FROM alert_rules WHERE kind = 'portfolio_change_pct' \
                 AND user_id IN (SELECT user_id FROM positions WHERE symbol = $1) \
             ORDER BY id",
        )
        .bind(symbol.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(rule_from_row).collect()
    }

    async fn save_evaluation(
        &self,
        rule: RuleId,
        expected_version: i64,
        state: &RuleState,
        alert: Option<&NewAlert>,
    ) -> Result<Option<Alert>, AccountError> {
        let mut tx = self.write.begin_with(BEGIN_WRITE).await?;
        let saved = update_state(&mut *tx, rule, expected_version, state).await?;
        if !saved {
            // Dropping the transaction rolls it back (nothing was written).
            return Err(AccountError::Conflict);
        }
        let Some(new) = alert else {
            tx.commit().await?;
            return Ok(None);
        };
        let row = sqlx::query(
            "INSERT INTO alerts (user_id, rule_id, symbol, kind, threshold, price, change_pct, message, fired_at, \
                                 published) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, FALSE) RETURNING *",
        )
        .bind(new.user_id.0)
        .bind(new.rule_id.0)
        .bind(new.symbol.as_ref().map(Symbol::as_str))
        .bind(new.kind.as_str())
        .bind(new.threshold)
        .bind(new.price)
        .bind(new.change_pct)
        .bind(&new.message)
        .bind(time::micros(&new.fired_at))
        .fetch_one(&mut *tx)
        .await?;
        let mut stored = alert_from_row(&row)?;
        stored.deliveries = pending_deliveries(&new.channels, stored.fired_at);
        for delivery in &stored.deliveries {
            sqlx::query(
                "INSERT INTO alert_deliveries (alert_id, channel, status, attempts, at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(stored.id.0)
            .bind(delivery.channel.as_str())
            .bind(delivery.status.as_str())
            .bind(i64::from(delivery.attempts))
            .bind(time::micros(&delivery.at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(stored))
    }

    async fn save_states(&self, saves: &[StateSave]) -> Result<Vec<RuleId>, AccountError> {
        let mut tx = self.write.begin_with(BEGIN_WRITE).await?;
        let mut moved_on = Vec::new();
        for save in saves {
            if !update_state(&mut *tx, save.rule, save.expected_version, &save.state).await? {
                moved_on.push(save.rule);
            }
        }
        tx.commit().await?;
        Ok(moved_on)
    }
    async fn alerts_of(&self, user: UserId, limit: u32) -> Result<Vec<Alert>, AccountError> {
        let rows = sqlx::query(
            "SELECT a.*, d.channel, d.status, d.attempts, d.at, d.error \
             FROM (SELECT * FROM alerts WHERE user_id = $1 ORDER BY id DESC LIMIT $2) a \
             LEFT JOIN alert_deliveries d ON d.alert_id = a.id ORDER BY a.id DESC",
        )
        .bind(user.0)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        alerts_from_rows(&rows)
    }

    async fn alert(&self, id: AlertId) -> Result<Option<Alert>, AccountError> {
        let rows = sqlx::query(
            "SELECT a.*, d.channel, d.status, d.attempts, d.at, d.error \
             FROM alerts a LEFT JOIN alert_deliveries d ON d.alert_id = a.id WHERE a.id = $1",
        )
        .bind(id.0)
        .fetch_all(&self.read)
        .await?;
        Ok(alerts_from_rows(&rows)?.pop())
    }

    async fn all_alerts(&self, limit: u32) -> Result<Vec<Alert>, AccountError> {
        let rows = sqlx::query(
            "SELECT a.*, d.channel, d.status, d.attempts, d.at, d.error \
             FROM (SELECT * FROM alerts ORDER BY id DESC LIMIT $1) a \
             LEFT JOIN alert_deliveries d ON d.alert_id = a.id ORDER BY a.id DESC",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        alerts_from_rows(&rows)
    }

    async fn set_delivery(&self, alert: AlertId, delivery: &Delivery) -> Result<(), AccountError> {
        sqlx::query(
            "INSERT INTO alert_deliveries (alert_id, channel, status, attempts, at, error) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (alert_id, channel) DO UPDATE SET status = excluded.status, \
                 attempts = excluded.attempts, at = excluded.at, error = excluded.error",
        )
        .bind(alert.0)
        .bind(delivery.channel.as_str())
        .bind(delivery.status.as_str())
        .bind(i64::from(delivery.attempts))
        .bind(time::micros(&delivery.at))
        .bind(&delivery.error)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn unpublished_alerts(&self, before: DateTime<Utc>, limit: u32) -> Result<Vec<Alert>, AccountError> {
        let rows = sqlx::query(
            "SELECT a.*, d.channel, d.status, d.attempts, d.at, d.error \
             FROM (SELECT * FROM alerts WHERE NOT published AND fired_at < $1 ORDER BY id LIMIT $2) a \
             LEFT JOIN alert_deliveries d ON d.alert_id = a.id ORDER BY a.id",
        )
        .bind(time::micros(&before))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        alerts_from_rows(&rows)
    }

    async fn mark_published(&self, alert: AlertId) -> Result<(), AccountError> {
        sqlx::query("UPDATE alerts SET published = TRUE WHERE id = $1").bind(alert.0).execute(&self.write).await?;
        Ok(())
    }

    async fn portfolio(&self, user: UserId) -> Result<Portfolio, AccountError> {
        load_portfolio(&self.read, user).await
    }

    async fn deposit(&self, user: UserId, amount: Decimal) -> Result<Portfolio, AccountError> {
        // The sum is computed here: SQLite would add the texts as floats.
        let mut tx = self.write.begin_with(BEGIN_WRITE).await?;
        let before = load_portfolio(&mut *tx, user).await?;
        let cash = before.cash.checked_add(amount).ok_or(ledger::OrderError::TooLarge)?;
        sqlx::query(
            "INSERT INTO portfolios (user_id, cash, realised_pnl) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET cash = excluded.cash",
        )
        .bind(user.0)
        .bind(cash.to_string())
        .bind(before.realised_pnl.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Portfolio { cash, ..before })
    }

    async fn place_order(
        &self,
        user: UserId,
        order: &OrderRequest,
        at: DateTime<Utc>,
    ) -> Result<(Order, Portfolio), AccountError> {
        let mut tx = self.write.begin_with(BEGIN_WRITE).await?;
        let account = sqlx::query("SELECT cash, realised_pnl FROM portfolios WHERE user_id = $1")
            .bind(user.0)
            .fetch_optional(&mut *tx)
            .await?;
        let held = sqlx::query("SELECT quantity, avg_cost FROM positions WHERE user_id = $1 AND symbol = $2")
            .bind(user.0)
            .bind(order.symbol.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let book = ledger::Book {
            cash: account.as_ref().map(|row| decimal(row, "cash")).transpose()?.unwrap_or_default(),
            realised_pnl: account.as_ref().map(|row| decimal(row, "realised_pnl")).transpose()?.unwrap_or_default(),
            quantity: held.as_ref().map(|row| decimal(row, "quantity")).transpose()?.unwrap_or_default(),
            avg_cost: held.as_ref().map(|row| decimal(row, "avg_cost")).transpose()?.unwrap_or_default(),
        };
        // On a refused order the transaction is dropped: rolled back.
        let fill = ledger::apply(book, order.side, order.quantity, order.price)?;
        sqlx::query(
            "INSERT INTO portfolios (user_id, cash, realised_pnl) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET cash = excluded.cash, realised_pnl = excluded.realised_pnl",
        )
        .bind(user.0)
        .bind(fill.book.cash.to_string())
        .bind(fill.book.realised_pnl.to_string())
        .execute(&mut *tx)
        .await?;
        if fill.book.quantity.is_zero() {
            sqlx::query("DELETE FROM positions WHERE user_id = $1 AND symbol = $2")
                .bind(user.0)
                .bind(order.symbol.as_str())
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "INSERT INTO positions (user_id, symbol, quantity, avg_cost) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, symbol) DO UPDATE SET quantity = excluded.quantity, \
                     avg_cost = excluded.avg_cost",
            )
            .bind(user.0)
            .bind(order.symbol.as_str())
            .bind(fill.book.quantity.to_string())
            .bind(fill.book.avg_cost.to_string())
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query(
            "INSERT INTO orders (user_id, symbol, side, quantity, price, value, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        )
        .bind(user.0)
        .bind(order.symbol.as_str())
        .bind(order.side.as_str())
        .bind(order.quantity.to_string())
        .bind(order.price.to_string())
        .bind(fill.value.to_string())
        .bind(time::micros(&at))
        .fetch_one(&mut *tx)
        .await?;
        let stored = order_from_row(&row)?;
        let portfolio = load_portfolio(&mut *tx, user).await?;
        tx.commit().await?;
        Ok((stored, portfolio))
    }

    async fn orders_of(&self, user: UserId, limit: u32) -> Result<Vec<Order>, AccountError> {
        let rows = sqlx::query("SELECT * FROM orders WHERE user_id = $1 ORDER BY id DESC LIMIT $2")
            .bind(user.0)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(order_from_row).collect()
    }

    async fn all_orders(&self, limit: u32) -> Result<Vec<Order>, AccountError> {
        let rows = sqlx::query("SELECT * FROM orders ORDER BY id DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(order_from_row).collect()
    }

    async fn symbol_refcounts(&self) -> Result<Vec<SymbolRefs>, AccountError> {
        let rows = sqlx::query(
            "SELECT symbol, COUNT(by_rule) AS rules, COUNT(by_position) AS positions FROM ( \
                 SELECT symbol, 1 AS by_rule, NULL AS by_position FROM alert_rules WHERE symbol IS NOT NULL \
                 UNION ALL \
                 SELECT symbol, NULL, 1 FROM positions \
             ) refs GROUP BY symbol ORDER BY symbol",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let rules: i64 = row.try_get("rules")?;
                let positions: i64 = row.try_get("positions")?;
                Ok(SymbolRefs {
                    symbol: symbol(row.try_get("symbol")?)?,
                    rules: rules.unsigned_abs(),
                    positions: positions.unsigned_abs(),
                })
            })
            .collect()
    }
}
