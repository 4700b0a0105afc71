//! Accounts, alert rules and portfolios: the operations REST and
//! the gRPC twin share, each in its own module, over the accounts port.

pub mod admin;
pub mod passwords;
pub mod portfolio;
pub mod rest;
pub mod rules;
pub mod users;

use std::{sync::Arc, time::Duration};

use lizards_shared::{
    Quote, Symbol,
    accounts::{AccountStore, User},
    broker::Broker,
    cache::{Cache, Quota},
    jwt::Jwt,
    store::QuoteStore,
};

use crate::{
    alerts::Interest,
    error::ApiError,
    lookup::{Resolver, Snapshots},
    metrics::Metrics,
};

pub struct Accounts {
    pub store: Arc<dyn AccountStore>,
    pub quotes: Arc<dyn QuoteStore>,
    /// The broker, for the admin's view of the dead-letter queue.
    pub broker: Arc<dyn Broker>,
    pub snapshots: Arc<Snapshots>,
    pub resolver: Arc<Resolver>,
    pub jwt: Jwt,
    pub token_ttl: Duration,
    /// Symbols rules and positions name (rule and order changes add theirs).
    pub interest: Arc<Interest>,
    pub metrics: Metrics,
    /// WEBHOOK_ALLOW_PRIVATE: webhook URLs may name internal addresses.
    pub allow_private_webhooks: bool,
    /// Floors of rule cooldowns and percentages.
    pub rule_limits: rules::RuleLimits,
    /// Counts failed logins per account (LOGIN_FAILURES), shared through
    /// Redis when set.
    pub cache: Arc<dyn Cache>,
    pub login_failures: Quota,
}

impl Accounts {
    /// The user a bearer token names: a valid, unexpired token whose user
    /// still exists (a deleted account's tokens stop working at once) and
    /// was issued after the account's last password, e-mail or role change.
    /// Every REST, gRPC and WebSocket authentication goes through here.
    pub async fn authenticate(&self, token: &str) -> Result<User, ApiError> {
        let claims = self.jwt.verify(token).map_err(|e| ApiError::Unauthenticated(e.to_string()))?;
        let id = claims.sub.parse().map_err(|_| ApiError::Unauthenticated("invalid token: bad subject".into()))?;
        let user = self
            .store
            .user(id)
            .await?
            .ok_or_else(|| ApiError::Unauthenticated("the account no longer exists".into()))?;
        if claims.ver != user.token_version {
            self.metrics.accounts.with_label_values(&["token_revoked"]).inc();
            return Err(ApiError::Unauthenticated(
                "token revoked: the account's password, e-mail or role changed since it was issued; log in again"
                    .into(),
            ));
        }
        Ok(user)
    }

    /// A symbol a rule or order may name: parsed, and known to Lizards
    /// (tracked already, or found by an on-demand lookup).
    pub async fn known_symbol(&self, field: &'static str, text: &str) -> Result<Symbol, ApiError> {
        let symbol = Symbol::parse(text).map_err(|e| ApiError::invalid(field, e.to_string()))?;
        if self.resolver.known_now(&symbol) || self.resolver.lookup(&symbol).await {
            return Ok(symbol);
        }
        Err(ApiError::invalid(field, format!("Invalid stock symbol: {symbol}")))
    }

    /// The latest quote of a symbol, if any.
    pub async fn latest(&self, symbol: &Symbol) -> Option<Quote> {
        self.snapshots.get(symbol).await
    }
}
