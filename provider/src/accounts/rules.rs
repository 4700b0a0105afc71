//! Alert rules: validation, and creation with the state
//! the evaluator starts from.

use chrono::Utc;
use lizards_shared::{
    Symbol,
    accounts::{Channel, Rule, RuleId, RuleKind, RuleSpec, RuleState, User, UserId},
};
use serde::Deserialize;

use super::Accounts;
use crate::{alerts::eval, error::ApiError};

pub const DEFAULT_COOLDOWN: u32 = 15 * 60;
pub const MAX_COOLDOWN: u32 = 7 * 86_400;
/// Longest `change_pct` window: one week, in minutes.
pub const MAX_WINDOW: u32 = 7 * 24 * 60;
/// Largest percentage a rule may ask for.
pub const MAX_PCT: f64 = 1000.0;
/// Rules one user may have.
pub const MAX_RULES: usize = 100;

/// Floors that keep one user's rules from firing on every tick
/// (ALERT_MIN_COOLDOWN, ALERT_MIN_CHANGE_PCT).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleLimits {
    /// Seconds.
    pub min_cooldown: u32,
    pub min_change_pct: f64,
}

impl RuleLimits {
    pub fn from_config(config: &lizards_shared::config::ProviderConfig) -> RuleLimits {
        let min_cooldown = u32::try_from(config.alert_min_cooldown.as_secs()).unwrap_or(u32::MAX);
        RuleLimits { min_cooldown, min_change_pct: config.alert_min_change_pct }
    }
}

/// A rule as clients send it (`POST /alerts/rules`); `PATCH` sends any
/// subset and the rest is kept.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuleInput {
    pub symbol: Option<String>,
    pub kind: Option<String>,
    pub threshold: Option<f64>,
    /// `change_pct` only: minutes.
    pub window: Option<u32>,
    /// Seconds between two firings.
    pub cooldown: Option<u32>,
    pub channels: Option<Vec<String>>,
}

/// A validated rule, before its symbol is checked with the sources.
#[derive(Debug, Clone)]
pub struct NewRule {
    pub symbol: Option<String>,
    pub spec: RuleSpec,
}

impl NewRule {
    /// The seeds' sign-up rule: `symbol` above or below `price`.
    pub fn price_bound(symbol: Symbol, kind: RuleKind, price: f64) -> NewRule {
        let spec = RuleSpec {
            symbol: Some(symbol),
            kind,
            threshold: price,
            window_minutes: None,
            cooldown: DEFAULT_COOLDOWN,
            channels: Channel::ALL.to_vec(),
        };
        NewRule { symbol: None, spec }
    }

    /// Checks every field but the symbol's existence.
    pub fn parse(input: RuleInput, limits: RuleLimits) -> Result<NewRule, ApiError> {
        let kind_text = input.kind.as_deref().ok_or_else(|| ApiError::invalid("kind", "is required"))?;
        let kind = RuleKind::parse(kind_text).ok_or_else(|| {
            ApiError::invalid("kind", "must be one of above, below, change_pct, portfolio_change_pct")
        })?;
        let threshold = input.threshold.ok_or_else(|| ApiError::invalid("threshold", "is required"))?;
        let symbol = match (kind, input.symbol) {
            (RuleKind::PortfolioChangePct, Some(_)) => {
                return Err(ApiError::invalid("symbol", "must not be set for portfolio_change_pct"));
            }
            (RuleKind::PortfolioChangePct, None) => None,
            (_, None) => return Err(ApiError::invalid("symbol", "is required")),
            (_, Some(symbol)) => Some(symbol),
        };
        check_threshold(kind, threshold, limits.min_change_pct)?;
        if input.window.is_some() && kind != RuleKind::ChangePct {
            return Err(ApiError::invalid("window", "is only for change_pct rules"));
        }
        if let Some(window) = input.window
            && !(1..=MAX_WINDOW).contains(&window)
        {
            return Err(ApiError::invalid("window", format!("must be 1 to {MAX_WINDOW} minutes")));
        }
        let cooldown = input.cooldown.unwrap_or(DEFAULT_COOLDOWN);
        if !(limits.min_cooldown..=MAX_COOLDOWN).contains(&cooldown) {
            let min = limits.min_cooldown;
            return Err(ApiError::invalid("cooldown", format!("must be {min} to {MAX_COOLDOWN} seconds")));
        }
        let channels = channels(input.channels)?;
        let spec = RuleSpec { symbol: None, kind, threshold, window_minutes: input.window, cooldown, channels };
        Ok(NewRule { symbol, spec })
    }
}

fn check_threshold(kind: RuleKind, threshold: f64, min_pct: f64) -> Result<(), ApiError> {
    if !threshold.is_finite() {
        return Err(ApiError::invalid("threshold", "must be a finite number"));
    }
    match kind {
        RuleKind::Above | RuleKind::Below if threshold <= 0.0 => {
            Err(ApiError::invalid("threshold", "must be a positive price"))
        }
        RuleKind::ChangePct | RuleKind::PortfolioChangePct
            if threshold == 0.0 || threshold.abs() < min_pct || threshold.abs() > MAX_PCT =>
        {
            let range = format!("from ±{min_pct} to ±{MAX_PCT}");
            Err(ApiError::invalid("threshold", format!("must be a non-zero percentage {range}")))
        }
        _ => Ok(()),
    }
}

/// Sorted and without duplicates; all four when not given.
fn channels(names: Option<Vec<String>>) -> Result<Vec<Channel>, ApiError> {
    let Some(names) = names else { return Ok(Channel::ALL.to_vec()) };
    let mut channels = names
        .iter()
        .map(|name| {
            Channel::parse(name).ok_or_else(|| {
                let shown: String = name.chars().take(32).collect();
                ApiError::invalid("channels", format!("'{shown}' is not one of email, webhook, telegram, ws"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    channels.sort();
    channels.dedup();
    if channels.is_empty() {
        return Err(ApiError::invalid("channels", "must name at least one channel"));
    }
    Ok(channels)
}

/// The input a stored rule would be sent as, so a PATCH can be laid over it.
fn input_of(spec: &RuleSpec) -> RuleInput {
    RuleInput {
        symbol: spec.symbol.as_ref().map(|s| s.to_string()),
        kind: Some(spec.kind.as_str().to_string()),
        threshold: Some(spec.threshold),
        window: spec.window_minutes,
        cooldown: Some(spec.cooldown),
        channels: Some(spec.channels.iter().map(|c| c.as_str().to_string()).collect()),
    }
}

impl Accounts {
    /// Stores a rule for `user`, starting from the current price (or
    /// portfolio value): a condition already true when the rule is created
    /// fires only after it turned false and true again.
    pub async fn create_rule(&self, user: &User, rule: NewRule) -> Result<Rule, ApiError> {
        if self.store.rules_of(user.id).await?.len() >= MAX_RULES {
            return Err(ApiError::Conflict(format!("a user may have at most {MAX_RULES} rules")));
        }
        let spec = self.with_symbol(rule).await?;
        let state = self.initial_state(user.id, &spec).await?;
        let rule = self.store.create_rule(user.id, &spec, &state).await?;
        tracing::info!(user = %user.id, rule = %rule.id, kind = %spec.kind, "alert rule created");
        Ok(rule)
    }

    pub async fn rule(&self, user: UserId, id: RuleId) -> Result<Rule, ApiError> {
        self.store.rule(user, id).await?.ok_or_else(|| ApiError::NotFound(format!("no alert rule {id}")))
    }

    /// Lays `changes` over the stored rule; the rule then starts afresh.
    pub async fn update_rule(&self, user: UserId, id: RuleId, changes: RuleInput) -> Result<Rule, ApiError> {
        let current = self.rule(user, id).await?;
        let base = input_of(&current.spec);
        let kind_changed = changes.kind.is_some();
        let merged = RuleInput {
            symbol: changes.symbol.or(if kind_changed { None } else { base.symbol }),
            kind: changes.kind.or(base.kind),
            threshold: changes.threshold.or(base.threshold),
            window: changes.window.or(if kind_changed { None } else { base.window }),
            cooldown: changes.cooldown.or(base.cooldown),
            channels: changes.channels.or(base.channels),
        };
        let spec = self.with_symbol(NewRule::parse(merged, self.rule_limits)?).await?;
        let state = self.initial_state(user, &spec).await?;
        self.store
            .update_rule(user, id, &spec, &state)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no alert rule {id}")))
    }

    pub async fn delete_rule(&self, user: UserId, id: RuleId) -> Result<(), ApiError> {
        if !self.store.delete_rule(user, id).await? {
            return Err(ApiError::NotFound(format!("no alert rule {id}")));
        }
        Ok(())
    }

    /// The rule's specification with its symbol checked against the sources.
    async fn with_symbol(&self, rule: NewRule) -> Result<RuleSpec, ApiError> {
        let mut spec = rule.spec;
        if let Some(text) = rule.symbol {
            spec.symbol = Some(self.known_symbol("symbol", &text).await?);
        }
        if let Some(symbol) = &spec.symbol {
            // Before the rule exists: its first quote must not be skipped.
            self.interest.add(symbol);
        }
        Ok(spec)
    }

    async fn initial_state(&self, user: UserId, spec: &RuleSpec) -> Result<RuleState, ApiError> {
        let observed = match &spec.symbol {
            Some(symbol) => self.latest(symbol).await.map(|q| q.price),
            None => self.portfolio_value(user).await?,
        };
        Ok(eval::initial_state(spec, observed, Utc::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kind: &str, symbol: Option<&str>, threshold: f64) -> RuleInput {
        RuleInput {
            kind: Some(kind.into()),
            symbol: symbol.map(str::to_string),
            threshold: Some(threshold),
            ..RuleInput::default()
        }
    }

    const LIMITS: RuleLimits = RuleLimits { min_cooldown: 60, min_change_pct: 0.1 };

    fn parse(input: RuleInput) -> Result<NewRule, ApiError> {
        NewRule::parse(input, LIMITS)
    }

    fn field_of(result: Result<NewRule, ApiError>) -> &'static str {
        match result {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn rules_take_defaults_for_cooldown_and_channels() {
        let rule = parse(input("above", Some("AAPL"), 150.0)).unwrap();
        assert_eq!(rule.spec.cooldown, DEFAULT_COOLDOWN);
        assert_eq!(rule.spec.channels, Channel::ALL);
        let rule = parse(RuleInput {
            channels: Some(vec!["ws".into(), "email".into(), "ws".into()]),
            ..input("change_pct", Some("AAPL"), -5.0)
        })
        .unwrap();
        assert_eq!(rule.spec.channels, [Channel::Email, Channel::Ws]);
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field_of(parse(input("sideways", Some("AAPL"), 1.0))), "kind");
        assert_eq!(field_of(parse(input("above", None, 1.0))), "symbol");
        assert_eq!(field_of(parse(input("portfolio_change_pct", Some("AAPL"), 5.0))), "symbol");
        assert_eq!(field_of(parse(input("above", Some("AAPL"), -1.0))), "threshold");
        assert_eq!(field_of(parse(input("below", Some("AAPL"), f64::NAN))), "threshold");
        assert_eq!(field_of(parse(input("change_pct", Some("AAPL"), 0.0))), "threshold");
        assert_eq!(field_of(parse(input("change_pct", Some("AAPL"), 1001.0))), "threshold");
        let window_on_above = RuleInput { window: Some(5), ..input("above", Some("AAPL"), 1.0) };
        assert_eq!(field_of(parse(window_on_above)), "window");
        let zero_window = RuleInput { window: Some(0), ..input("change_pct", Some("AAPL"), 1.0) };
        assert_eq!(field_of(parse(zero_window)), "window");
        let long_cooldown = RuleInput { cooldown: Some(MAX_COOLDOWN + 1), ..input("above", Some("AAPL"), 1.0) };
        assert_eq!(field_of(parse(long_cooldown)), "cooldown");
        let no_channels = RuleInput { channels: Some(vec![]), ..input("above", Some("AAPL"), 1.0) };
        assert_eq!(field_of(parse(no_channels)), "channels");
        let sms = RuleInput { channels: Some(vec!["sms".into()]), ..input("above", Some("AAPL"), 1.0) };
        assert_eq!(field_of(parse(sms)), "channels");
    }

    #[test]
    fn rules_that_would_fire_on_every_tick_are_refused() {
        let eager = RuleInput { cooldown: Some(0), ..input("above", Some("AAPL"), 1.0) };
        assert_eq!(field_of(parse(eager)), "cooldown");
        let minute = RuleInput { cooldown: Some(60), ..input("above", Some("AAPL"), 1.0) };
        assert_eq!(parse(minute).unwrap().spec.cooldown, 60);
        for tiny in [0.0001, -0.05] {
            assert_eq!(field_of(parse(input("change_pct", Some("AAPL"), tiny))), "threshold", "{tiny}");
            assert_eq!(field_of(parse(input("portfolio_change_pct", None, tiny))), "threshold", "{tiny}");
        }
        assert!(parse(input("change_pct", Some("AAPL"), -0.1)).is_ok());
    }
}
