//! The accounts domain: ids, e-mail addresses, users, alert rules, alerts
//! and portfolios. Text from clients becomes these types at the edge
//! (`Email::parse`, `Channel::parse`, ...); the store only sees them.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::ledger::Side;
use crate::{Symbol, jwt::Role};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                text.parse().map($name)
            }
        }
    };
}

id_type!(
    /// A user's id: the JWT's `sub`.
    UserId
);
id_type!(RuleId);
id_type!(AlertId);
id_type!(OrderId);

/// Longest e-mail address (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;

/// An e-mail address, trimmed and lower-cased: `local@domain.tld`, no
/// spaces or control characters, at most 254 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an e-mail address")]
pub struct EmailError(pub String);

impl Email {
    pub fn parse(text: &str) -> Result<Email, EmailError> {
        let email = text.trim().to_lowercase();
        let shown = || EmailError(text.chars().take(64).collect());
        if email.is_empty() || email.len() > MAX_EMAIL || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(shown());
        }
        let Some((local, domain)) = email.split_once('@') else { return Err(shown()) };
        let labels_ok = domain.split('.').all(|label| !label.is_empty());
        if local.is_empty() || domain.contains('@') || !domain.contains('.') || !labels_ok {
            return Err(shown());
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a user's notifications go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Targets {
    /// Send e-mail to the account's address.
    pub email: bool,
    pub webhook_url: Option<String>,
    /// Key of the webhook's HMAC-SHA256 signature header (never shown back).
    #[serde(skip)]
    pub webhook_secret: Option<String>,
    pub telegram_chat_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub password_hash: String,
    pub role: Role,
    pub targets: Targets,
    /// Least time between two notifications to this user, seconds.
    pub min_notification_interval: u32,
    /// A one-time code the user sends the Telegram bot (`/start <code>`).
    pub telegram_link_code: Option<String>,
    /// Moves on every password, e-mail or role change; tokens carry the
    /// version they were issued at and older ones are refused.
    pub token_version: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub email: Email,
    pub password_hash: String,
    pub role: Role,
    pub targets: Targets,
    pub min_notification_interval: u32,
}

/// Changes to a user; `None` leaves a field as it is. For the optional
/// targets, `Some(None)` clears them. A change of password, e-mail or role
/// also moves the token version (see [`UserPatch::revoking_changes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    pub email: Option<Email>,
    pub password_hash: Option<String>,
    pub role: Option<Role>,
    pub email_notifications: Option<bool>,
    pub webhook_url: Option<Option<String>>,
    pub webhook_secret: Option<Option<String>>,
    pub telegram_chat_id: Option<Option<i64>>,
    pub telegram_link_code: Option<Option<String>>,
    pub min_notification_interval: Option<u32>,
}

impl UserPatch {
    /// The changes that revoke the user's earlier tokens, as (column, new
    /// value): a token must not outlive the password it was obtained with,
    /// the address it was issued to, or the role it carried. The stores move
    /// the token version when any of these really changes value.
    pub fn revoking_changes(&self) -> Vec<(&'static str, String)> {
        let changes = [
            ("password_hash", self.password_hash.clone()),
            ("email", self.email.as_ref().map(|email| email.as_str().to_string())),
            ("role", self.role.map(|role| role.as_str().to_string())),
        ];
        changes.into_iter().filter_map(|(column, value)| Some((column, value?))).collect()
    }
}

/// How a notification reaches a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Webhook,
    Telegram,
    /// An `alert` frame on the user's authenticated WebSockets.
    Ws,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Email, Channel::Webhook, Channel::Telegram, Channel::Ws];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
            Channel::Telegram => "telegram",
            Channel::Ws => "ws",
        }
    }

    pub fn parse(text: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// The price rises above the threshold.
    Above,
    /// The price falls below the threshold.
    Below,
    /// The price moves by the threshold percent (signed) against the
    /// baseline, or against the price `window_minutes` ago when set.
    ChangePct,
    /// The user's portfolio value moves by the threshold percent (signed).
    PortfolioChangePct,
}

impl RuleKind {
    pub const ALL: [RuleKind; 4] =
        [RuleKind::Above, RuleKind::Below, RuleKind::ChangePct, RuleKind::PortfolioChangePct];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Above => "above",
            RuleKind::Below => "below",
            RuleKind::ChangePct => "change_pct",
            RuleKind::PortfolioChangePct => "portfolio_change_pct",
        }
    }

    pub fn parse(text: &str) -> Option<RuleKind> {
        RuleKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a user asks a rule to watch.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    /// The symbol watched; `None` only for `portfolio_change_pct`.
    pub symbol: Option<Symbol>,
    pub kind: RuleKind,
    pub threshold: f64,
    /// `change_pct` only: compare with the price this many minutes ago.
    pub window_minutes: Option<u32>,
    /// Least time between two firings, seconds.
    pub cooldown: u32,
    /// Sorted, without duplicates, never empty.
    pub channels: Vec<Channel>,
}

/// What the evaluator remembers between quotes. It lives in the SQL store,
/// so any provider instance can evaluate the next quote: each quote is
/// evaluated once across instances (docs/architecture.md, "Broker topology").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleState {
    /// Whether the condition held at the last observation (`None`: not yet
    /// observed). A rule fires when this goes from false to true.
    pub active: Option<bool>,
    /// The price (or portfolio value) `change_pct` rules compare with: the
    /// one when the rule was created or last fired.
    pub baseline: Option<f64>,
    /// Source time of the last quote evaluated: older ones are ignored.
    pub observed_at: Option<DateTime<Utc>>,
    pub last_fired_at: Option<DateTime<Utc>>,
    /// Bumped on every save: the compare-and-set token of
    /// `save_evaluation`.
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: RuleId,
    pub user_id: UserId,
    pub spec: RuleSpec,
    pub state: RuleState,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not attempted yet, or being retried.
    Pending,
    Sent,
    /// Given up after the last retry (dead-lettered).
    Failed,
    /// Dropped: the user's minimum interval had not passed.
    Suppressed,
    /// The user has no such target configured.
    Skipped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Suppressed => "suppressed",
            DeliveryStatus::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Sent,
            DeliveryStatus::Failed,
            DeliveryStatus::Suppressed,
            DeliveryStatus::Skipped,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One channel's delivery of one alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub channel: Channel,
    pub status: DeliveryStatus,
    pub attempts: u32,
    #[serde(with = "crate::time::rfc3339_serde")]
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An alert about to be stored: one `pending` delivery per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub user_id: UserId,
    pub rule_id: RuleId,
    pub symbol: Option<Symbol>,
    pub kind: RuleKind,
    pub threshold: f64,
    pub price: Option<f64>,
    pub change_pct: Option<f64>,
    pub message: String,
    pub fired_at: DateTime<Utc>,
    pub channels: Vec<Channel>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: AlertId,
    pub user_id: UserId,
    /// `None` once the rule was deleted.
    pub rule_id: Option<RuleId>,
    pub symbol: Option<Symbol>,
    pub kind: RuleKind,
    pub threshold: f64,
    pub price: Option<f64>,
    pub change_pct: Option<f64>,
    pub message: String,
    pub fired_at: DateTime<Utc>,
    /// One per channel, in channel order.
    pub deliveries: Vec<Delivery>,
    pub published: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub symbol: Symbol,
    pub quantity: Decimal,
    /// Average price paid per unit of the quantity held.
    pub avg_cost: Decimal,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Portfolio {
    pub cash: Decimal,
    pub realised_pnl: Decimal,
    /// Open positions (quantity > 0), by symbol.
    pub positions: Vec<Position>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub symbol: Symbol,
    pub side: Side,
    pub quantity: Decimal,
    /// The execution price (the latest quote's).
    pub price: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub symbol: Symbol,
    pub side: Side,
    pub quantity: Decimal,
    pub price: Decimal,
    /// Cash paid (buy) or received (sell): quantity × price in cents.
    pub value: Decimal,
    pub at: DateTime<Utc>,
}

/// Why a symbol is still in use (retention keeps symbols with any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolRefs {
    pub symbol: Symbol,
    pub rules: u64,
    pub positions: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(Email::parse("  Ann@Example.COM ").unwrap().as_str(), "ann@example.com");
        assert_eq!(Email::parse("a.b+tag@mail.example.org").unwrap().as_str(), "a.b+tag@mail.example.org");
    }

    #[test]
    fn malformed_emails_are_refused() {
        let long = format!("{}@example.com", "a".repeat(250));
        for text in ["", "ann", "ann@", "@example.com", "ann@example", "a b@example.com", "a@b@c.com", "a@.com", &long]
        {
            assert!(Email::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn channels_and_kinds_parse_their_names() {
        for channel in Channel::ALL {
            assert_eq!(Channel::parse(channel.as_str()), Some(channel));
        }
        for kind in RuleKind::ALL {
            assert_eq!(RuleKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Channel::parse("sms"), None);
        assert_eq!(RuleKind::parse("ABOVE"), None);
    }
}
