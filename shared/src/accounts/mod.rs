//! The accounts port (docs/accounts.md): users, alert rules with their evaluation
//! state, fired alerts with their deliveries, portfolios and orders. Both
//! SQL stores implement it next to [`QuoteStore`](crate::store::QuoteStore)
//! in the same database (SQLite embedded, PostgreSQL real), so one contract
//! suite checks both.
//!
//! Money and quantities are [`Decimal`], never floats; prices and alert
//! thresholds are `f64` like the quotes they are compared with.

pub mod ledger;
mod postgres;
mod sqlite;
pub mod types;

/// Adds the token-version bump of `patch` to an `UPDATE users SET` list,
/// written once for both SQL dialects. SET reads the row as it was, so the
/// version moves only when a revoking value really changes (keeping one's
/// own address does not).
fn push_token_version<DB: sqlx::Database>(set: &mut sqlx::query_builder::Separated<'_, DB, &str>, patch: &UserPatch)
where
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let revoking = patch.revoking_changes();
    if revoking.is_empty() {
        return;
    }
    set.push("token_version = token_version + CASE WHEN ");
    for (i, (column, value)) in revoking.into_iter().enumerate() {
        let or = if i == 0 { "" } else { " OR " };
        set.push_unseparated(format!("{or}{column} <> ")).push_bind_unseparated(value);
    }
    set.push_unseparated(" THEN 1 ELSE 0 END");
}

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

pub use ledger::{OrderError, Side};
pub use types::*;

use crate::{Symbol, jwt::Role};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("an account with this e-mail address already exists")]
    EmailTaken,
    /// The row changed since it was read (another evaluator fired the rule
    /// first); read it again and retry.
    #[error("the rule changed concurrently")]
    Conflict,
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error("stored value cannot be read: {0}")]
    Corrupt(String),
}

/// A rule's new state, to be stored over `expected_version`.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSave {
    pub rule: RuleId,
    pub expected_version: i64,
    pub state: RuleState,
}

/// Users, rules, alerts and portfolios. Every method taking a `UserId`
/// beside another id only sees that user's rows: a rule id of another user
/// is "not found", never someone else's data.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    // Users.
    /// Fails with [`AccountError::EmailTaken`] when the address is in use.
    async fn create_user(&self, user: &NewUser) -> Result<User, AccountError>;
    async fn user(&self, id: UserId) -> Result<Option<User>, AccountError>;
    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, AccountError>;
    /// `None` when the user does not exist; [`AccountError::EmailTaken`]
    /// when the new address belongs to someone else.
    async fn update_user(&self, id: UserId, patch: &UserPatch) -> Result<Option<User>, AccountError>;
    /// Deletes the user with their rules, alerts, portfolio and orders.
    async fn delete_user(&self, id: UserId) -> Result<bool, AccountError>;
    /// Every user, oldest first.
    async fn users(&self) -> Result<Vec<User>, AccountError>;
    /// Whether any user has the admin role.
    async fn has_admin(&self) -> Result<bool, AccountError>;
    /// How many users hold each role (roles nobody holds left out).
    async fn users_by_role(&self) -> Result<Vec<(Role, u64)>, AccountError>;
    /// Links a Telegram chat to the user holding `code` (and clears the
    /// code): the user, or `None` for an unknown code. A chat belongs to one
    /// user: linking it elsewhere unlinks it from the previous account.
    async fn link_telegram(&self, code: &str, chat_id: i64) -> Result<Option<User>, AccountError>;
    async fn user_by_telegram_chat(&self, chat_id: i64) -> Result<Option<User>, AccountError>;
    /// Takes the user's notification slot at `now` if their minimum
    /// interval has passed since the last one (atomic across notifiers).
    async fn claim_notification_slot(&self, id: UserId, now: DateTime<Utc>) -> Result<bool, AccountError>;

    // Alert rules.
    async fn create_rule(&self, user: UserId, spec: &RuleSpec, state: &RuleState) -> Result<Rule, AccountError>;
    async fn rule(&self, user: UserId, id: RuleId) -> Result<Option<Rule>, AccountError>;
    /// The user's rules, oldest first.
    async fn rules_of(&self, user: UserId) -> Result<Vec<Rule>, AccountError>;
    /// Replaces the rule's spec and state (a changed rule starts afresh).
    async fn update_rule(
        &self,
        user: UserId,
        id: RuleId,
        spec: &RuleSpec,
        state: &RuleState,
    ) -> Result<Option<Rule>, AccountError>;
    async fn delete_rule(&self, user: UserId, id: RuleId) -> Result<bool, AccountError>;
    /// Every rule of every user, oldest first (admin).
    async fn all_rules(&self) -> Result<Vec<Rule>, AccountError>;
    /// Rules about `symbol` (above, below, change_pct), and the
    /// portfolio_change_pct rules of users holding it.
    async fn rules_for_quote(&self, symbol: &Symbol) -> Result<Vec<Rule>, AccountError>;
    /// Stores the rule's new state if it is still at `expected_version`,
    /// and the alert it fired (if any) in the same transaction. Fails with
    /// [`AccountError::Conflict`] when another evaluator changed it first.
    async fn save_evaluation(
        &self,
        rule: RuleId,
        expected_version: i64,
        state: &RuleState,
        alert: Option<&NewAlert>,
    ) -> Result<Option<Alert>, AccountError>;
    /// Stores several rules' new states (no alerts) in one transaction,
    /// each only if its rule is still at the expected version; returns the
    /// rules that had moved on, for which nothing was written.
    async fn save_states(&self, saves: &[StateSave]) -> Result<Vec<RuleId>, AccountError>;

    // Alerts.
    /// The user's alerts, newest first.
    async fn alerts_of(&self, user: UserId, limit: u32) -> Result<Vec<Alert>, AccountError>;
    async fn alert(&self, id: AlertId) -> Result<Option<Alert>, AccountError>;
    /// Every user's alerts, newest first (admin).
    async fn all_alerts(&self, limit: u32) -> Result<Vec<Alert>, AccountError>;
    /// Records one channel's delivery state of an alert.
    async fn set_delivery(&self, alert: AlertId, delivery: &Delivery) -> Result<(), AccountError>;
    /// Alerts fired before `before` that were never confirmed published.
    async fn unpublished_alerts(&self, before: DateTime<Utc>, limit: u32) -> Result<Vec<Alert>, AccountError>;
    async fn mark_published(&self, alert: AlertId) -> Result<(), AccountError>;

    // Portfolio.
    /// The user's cash, realised P&L and positions (all zero when they
    /// never deposited).
    async fn portfolio(&self, user: UserId) -> Result<Portfolio, AccountError>;
    /// Adds `amount` (> 0) to the user's cash.
    async fn deposit(&self, user: UserId, amount: Decimal) -> Result<Portfolio, AccountError>;
    /// Executes the order atomically through [`ledger::apply`]; nothing
    /// changes when it fails ([`AccountError::Order`]).
    async fn place_order(
        &self,
        user: UserId,
        order: &OrderRequest,
        at: DateTime<Utc>,
    ) -> Result<(Order, Portfolio), AccountError>;
    /// The user's orders, newest first.
    async fn orders_of(&self, user: UserId, limit: u32) -> Result<Vec<Order>, AccountError>;
    /// Every user's orders, newest first (admin).
    async fn all_orders(&self, limit: u32) -> Result<Vec<Order>, AccountError>;

    /// How many rules and open positions name each symbol (retention and
    /// demand): symbols with neither are absent.
    async fn symbol_refcounts(&self) -> Result<Vec<SymbolRefs>, AccountError>;
}

// Column codecs both SQL stores share: enums are stored as their names, so
// a row read back is checked rather than trusted.

/// Channels as stored: their names comma-separated in channel order
/// (`email,ws`), each once.
fn channels_text(channels: &[Channel]) -> String {
    normalised(channels).iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",")
}

fn parse_channels(text: &str) -> Result<Vec<Channel>, AccountError> {
    text.split(',').filter(|name| !name.is_empty()).map(|name| decode("channel", name, Channel::parse)).collect()
}

/// Sorted into channel order, without duplicates.
fn normalised(channels: &[Channel]) -> Vec<Channel> {
    let mut channels = channels.to_vec();
    channels.sort();
    channels.dedup();
    channels
}

fn parse_role(text: &str) -> Option<Role> {
    match text {
        "user" => Some(Role::User),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

/// A rule's evaluation state written over its expected version, bumping it
/// (both adapters; binds: id, expected version, active, baseline,
/// observed_at, last_fired_at).
const UPDATE_STATE: &str = "UPDATE alert_rules SET active = $3, baseline = $4, observed_at = $5, \
                            last_fired_at = $6, version = version + 1 WHERE id = $1 AND version = $2";

/// `SELECT role, count(*) ... GROUP BY role` rows as roles and counts.
fn role_counts(rows: Vec<(String, i64)>) -> Result<Vec<(Role, u64)>, AccountError> {
    rows.into_iter().map(|(role, n)| Ok((decode("role", &role, parse_role)?, count("count", n)?.into()))).collect()
}

/// A stored text column as `T`, or [`AccountError::Corrupt`] naming it.
fn decode<T>(column: &str, text: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, AccountError> {
    parse(text).ok_or_else(|| AccountError::Corrupt(format!("{column} '{text}'")))
}

/// A stored non-negative count (seconds, minutes, attempts) as `u32`.
fn count(column: &str, value: i64) -> Result<u32, AccountError> {
    u32::try_from(value).map_err(|_| AccountError::Corrupt(format!("{column} {value}")))
}

/// Joined alert and delivery rows (one per delivery, an alert without any
/// once with `None`, the rows of one alert adjacent) as alerts with their
/// deliveries in channel order.
fn with_deliveries(rows: impl IntoIterator<Item = (Alert, Option<Delivery>)>) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = Vec::new();
    for (alert, delivery) in rows {
        match alerts.last_mut() {
            Some(last) if last.id == alert.id => last.deliveries.extend(delivery),
            _ => alerts.push(Alert { deliveries: delivery.into_iter().collect(), ..alert }),
        }
    }
    for alert in &mut alerts {
        alert.deliveries.sort_by_key(|d| d.channel);
    }
    alerts
}

/// The deliveries of a newly fired alert: one `pending` per channel.
fn pending_deliveries(channels: &[Channel], fired_at: DateTime<Utc>) -> Vec<Delivery> {
    normalised(channels)
        .into_iter()
        .map(|channel| Delivery { channel, status: DeliveryStatus::Pending, attempts: 0, at: fired_at, error: None })
        .collect()
}
