//! Registration, login and account changes, and the
//! first admin.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{Rng, distr::Alphanumeric};
use serde::{Deserialize, Deserializer};

use super::{Accounts, passwords, rules::NewRule};
use lizards_shared::{
    accounts::{AccountError, Email, NewUser, Rule, RuleKind, Targets, User, UserId, UserPatch},
    jwt::Role,
};

use crate::{error::ApiError, public_url};

/// Longest accepted webhook URL.
const MAX_URL: usize = 2048;
/// Longest webhook signing secret.
const MAX_SECRET: usize = 256;
/// Longest minimum interval between notifications: one week.
pub const MAX_INTERVAL: u32 = 7 * 86_400;
/// Address of the admin created when ADMIN_EMAIL is not set.
pub const DEFAULT_ADMIN_EMAIL: &str = "admin@lizards.local";

/// A Telegram chat id: a number, or a string of one (seed clients sent
/// either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatId(pub i64);

impl<'de> Deserialize<'de> for ChatId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ChatId, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ChatId(n)),
            Raw::Text(text) => {
                text.trim().parse().map(ChatId).map_err(|_| serde::de::Error::custom("expected an integer chat id"))
            }
        }
    }
}

/// `POST /auth/register`: the account, plus the seeds' optional alert
/// (`ticker` with `high_value` and/or `low_value`) and targets.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Registration {
    pub email: String,
    pub password: String,
    pub ticker: Option<String>,
    pub high_value: Option<f64>,
    pub low_value: Option<f64>,
    pub telegram_chat_id: Option<ChatId>,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
}

/// `PATCH /users/me` and `PATCH /admin/users/{id}`: only the fields sent
/// change; `null` clears an optional target.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserChanges {
    pub email: Option<String>,
    pub password: Option<String>,
    /// Required by a user changing their own password or e-mail, so a
    /// stolen token cannot take the account over.
    pub current_password: Option<String>,
    pub email_notifications: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub webhook_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub webhook_secret: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub telegram_chat_id: Option<Option<ChatId>>,
    pub min_notification_interval: Option<u32>,
    /// Admins only.
    pub role: Option<String>,
}

/// A field that was sent, possibly as `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A new account, its seed rules, and the code that links its Telegram
/// chat when the sign-up named one.
pub struct Registered {
    pub user: User,
    pub rules: Vec<Rule>,
    pub telegram_link_code: Option<String>,
}

/// How long a Telegram link code works.
pub const LINK_CODE_TTL: Duration = Duration::from_secs(15 * 60);

/// A link code: random letters, a dash and its expiry (Unix seconds). It
/// is stored whole, so a code with a changed expiry matches nothing.
fn new_link_code(now: DateTime<Utc>) -> String {
    let random: String = rand::rng().sample_iter(&Alphanumeric).take(12).map(char::from).collect();
    let expires = now.timestamp() + i64::try_from(LINK_CODE_TTL.as_secs()).unwrap_or(i64::MAX / 2);
    format!("{random}-{expires}")
}

/// Whether a link code's time is up (or it carries none).
pub fn link_code_expired(code: &str, now: DateTime<Utc>) -> bool {
    let expires = code.rsplit_once('-').and_then(|(_, expires)| expires.parse::<i64>().ok());
    expires.is_none_or(|expires| now.timestamp() >= expires)
}

/// What a login returns.
pub struct Token {
    pub access_token: String,
    pub expires_in: u64,
}

fn email(text: &str) -> Result<Email, ApiError> {
    Email::parse(text).map_err(|e| ApiError::invalid("email", e.to_string()))
}

fn webhook_secret(text: &str) -> Result<String, ApiError> {
    if text.is_empty() || text.len() > MAX_SECRET {
        return Err(ApiError::invalid("webhook_secret", "must be 1 to 256 characters"));
    }
    Ok(text.to_string())
}

pub fn role(text: &str) -> Result<Role, ApiError> {
    match text {
        "user" => Ok(Role::User),
        "admin" => Ok(Role::Admin),
        _ => Err(ApiError::invalid("role", "must be 'user' or 'admin'")),
    }
}

fn interval(seconds: u32) -> Result<u32, ApiError> {
    if seconds > MAX_INTERVAL {
        return Err(ApiError::invalid("min_notification_interval", format!("must be at most {MAX_INTERVAL} seconds")));
    }
    Ok(seconds)
}

fn price(field: &'static str, value: f64) -> Result<f64, ApiError> {
    if !value.is_finite() || value <= 0.0 {
        return Err(ApiError::invalid(field, "must be a positive number"));
    }
    Ok(value)
}

impl Accounts {
    /// A webhook URL a user may save: http(s) to a public internet address
    /// (docs/security.md), unless private ones are allowed.
    async fn webhook_url(&self, text: &str) -> Result<String, ApiError> {
        let invalid = |message: &str| ApiError::invalid("webhook_url", message);
        if text.len() > MAX_URL {
            return Err(invalid("must be at most 2048 characters"));
        }
        let url = reqwest::Url::parse(text).map_err(|e| invalid(&format!("is not a URL: {e}")))?;
        if let Err(refused) = public_url::check(&url, self.allow_private_webhooks).await {
            self.metrics.accounts.with_label_values(&["webhook_refused"]).inc();
            tracing::info!(%refused, "webhook URL refused");
            return Err(invalid(&refused.to_string()));
        }
        Ok(url.to_string())
    }

    /// Creates a user account (role `user`) and the seed-style rules. A
    /// `telegram_chat_id` is not linked as given (anyone could name anyone's
    /// chat): the account gets a link code for the bot instead, returned
    /// with it.
    pub async fn register(&self, registration: Registration) -> Result<Registered, ApiError> {
        let email = email(&registration.email)?;
        passwords::check(&registration.password)?;
        let targets = Targets {
            email: true,
            webhook_url: match registration.webhook_url.as_deref() {
                Some(text) => Some(self.webhook_url(text).await?),
                None => None,
            },
            webhook_secret: registration.webhook_secret.as_deref().map(webhook_secret).transpose()?,
            telegram_chat_id: None,
        };
        let seed_rules = self.seed_rules(&registration).await?;
        let password_hash = passwords::hash(&registration.password).await?;
        let user = self
            .store
            .create_user(&NewUser { email, password_hash, role: Role::User, targets, min_notification_interval: 0 })
            .await?;
        let mut rules = Vec::with_capacity(seed_rules.len());
        for rule in seed_rules {
            match self.create_rule(&user, rule).await {
                Ok(rule) => rules.push(rule),
                Err(error) => {
                    // No half-made accounts: the client may simply retry.
                    let _ = self.store.delete_user(user.id).await;
                    return Err(error);
                }
            }
        }
        let telegram_link_code = match registration.telegram_chat_id {
            Some(_) => Some(self.telegram_link_code(user.id).await?),
            None => None,
        };
        self.metrics.accounts.with_label_values(&["registered"]).inc();
        tracing::info!(user = %user.id, rules = rules.len(), "user registered");
        Ok(Registered { user, rules, telegram_link_code })
    }

    /// The seeds' sign-up alert: `ticker` above `high_value` and/or below
    /// `low_value`.
    async fn seed_rules(&self, registration: &Registration) -> Result<Vec<NewRule>, ApiError> {
        let bounds = [
            (RuleKind::Above, "high_value", registration.high_value),
            (RuleKind::Below, "low_value", registration.low_value),
        ];
        let Some(ticker) = &registration.ticker else {
            if registration.high_value.is_some() || registration.low_value.is_some() {
                return Err(ApiError::invalid("ticker", "is required with high_value or low_value"));
            }
            return Ok(Vec::new());
        };
        if registration.high_value.is_none() && registration.low_value.is_none() {
            return Err(ApiError::invalid("ticker", "needs high_value and/or low_value"));
        }
        let symbol = self.known_symbol("ticker", ticker).await?;
        let mut rules = Vec::new();
        for (kind, field, value) in bounds {
            if let Some(value) = value {
                rules.push(NewRule::price_bound(symbol.clone(), kind, price(field, value)?));
            }
        }
        Ok(rules)
    }

    /// A bearer token for the account, or 401 without saying whether the
    /// e-mail exists. After LOGIN_FAILURES failures for one address, its
    /// logins wait (429) whatever address they come from: guessing one
    /// account's password from many addresses gains nothing.
    pub async fn login(&self, email_text: &str, password: &str) -> Result<Token, ApiError> {
        let refused = || ApiError::Unauthenticated("invalid e-mail or password".into());
        let email = Email::parse(email_text).ok();
        // Keyed by the address asked for, whether or not it has an account.
        let throttle_key = email.as_ref().map(|email| format!("login:{}", email.as_str()));
        if let Some(key) = &throttle_key {
            self.refuse_while_locked(key).await?;
        }
        let user = match &email {
            Some(email) => self.store.user_by_email(email).await?,
            None => None,
        };
        if !passwords::verify(password, user.as_ref().map(|u| u.password_hash.as_str())).await {
            self.metrics.accounts.with_label_values(&["login_failed"]).inc();
            if let Some(key) = &throttle_key {
                self.count_failure(key).await;
            }
            return Err(refused());
        }
        let user = user.ok_or_else(refused)?;
        let access_token = self
            .jwt
            .issue(&user.id.to_string(), user.email.as_str(), user.role, user.token_version, self.token_ttl)
            .map_err(|_| ApiError::Internal)?;
        self.metrics.accounts.with_label_values(&["logged_in"]).inc();
        Ok(Token { access_token, expires_in: self.token_ttl.as_secs() })
    }

    /// The caller's own changes: a new password or e-mail needs the
    /// current password.
    pub async fn update_own(&self, user: &User, changes: UserChanges) -> Result<User, ApiError> {
        if changes.password.is_some() || changes.email.is_some() {
            let Some(current) = changes.current_password.as_deref() else {
                return Err(ApiError::invalid("current_password", "is required to change the password or e-mail"));
            };
            if !passwords::verify(current, Some(&user.password_hash)).await {
                self.metrics.accounts.with_label_values(&["current_password_wrong"]).inc();
                return Err(ApiError::Forbidden("current_password is wrong".into()));
            }
        }
        self.update(user.id, changes, false).await
    }

    /// 429 while the address is locked after too many failures.
    async fn refuse_while_locked(&self, key: &str) -> Result<(), ApiError> {
        let lock = match self.cache.get(&format!("{key}:locked")).await {
            Ok(lock) => lock,
            Err(error) => {
                // Fail open: a cache outage must not lock everyone out.
                tracing::warn!(%error, "login throttle unknown (cache unreachable)");
                return Ok(());
            }
        };
        let Some(until) = lock else { return Ok(()) };
        let until: i64 = std::str::from_utf8(&until).ok().and_then(|t| t.parse().ok()).unwrap_or_default();
        let retry_after = u64::try_from(until - chrono::Utc::now().timestamp()).unwrap_or(0).max(1);
        self.metrics.accounts.with_label_values(&["login_throttled"]).inc();
        Err(ApiError::TooManyRequests {
            message: format!("too many failed logins for this account; retry in {retry_after} s"),
            retry_after,
        })
    }

    /// Counts a failed login; past the quota the address is locked until
    /// the quota lets one more attempt through (so each further failure
    /// waits again: a growing backoff while the guessing goes on).
    async fn count_failure(&self, key: &str) {
        let throttle = match self.cache.throttle(&format!("{key}:failures"), self.login_failures, 1).await {
            Ok(throttle) => throttle,
            Err(error) => {
                tracing::warn!(%error, "login failure not counted (cache unreachable)");
                return;
            }
        };
        if throttle.allowed {
            return;
        }
        let wait = throttle.retry_after.max(std::time::Duration::from_secs(1));
        let until = chrono::Utc::now().timestamp() + i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 2) + 1;
        let lock = bytes::Bytes::from(until.to_string());
        if let Err(error) = self.cache.set(&format!("{key}:locked"), lock, Some(wait)).await {
            tracing::warn!(%error, "login lock not set (cache unreachable)");
        }
        tracing::warn!(retry_after_s = wait.as_secs(), "too many failed logins for one account; locked");
    }

    /// Applies `changes` to user `id`; `by_admin` allows changing the role.
    /// A password, e-mail or role change revokes the user's earlier tokens.
    pub async fn update(&self, id: UserId, changes: UserChanges, by_admin: bool) -> Result<User, ApiError> {
        if changes.role.is_some() && !by_admin {
            return Err(ApiError::Forbidden("only an admin can change a role".into()));
        }
        let password_hash = match &changes.password {
            Some(password) => {
                passwords::check(password)?;
                Some(passwords::hash(password).await?)
            }
            None => None,
        };
        let patch = UserPatch {
            email: changes.email.as_deref().map(email).transpose()?,
            password_hash,
            role: changes.role.as_deref().map(role).transpose()?,
            email_notifications: changes.email_notifications,
            webhook_url: match changes.webhook_url {
                Some(Some(text)) => Some(Some(self.webhook_url(&text).await?)),
                Some(None) => Some(None),
                None => None,
            },
            webhook_secret: changes
                .webhook_secret
                .map(|secret| secret.as_deref().map(webhook_secret).transpose())
                .transpose()?,
            telegram_chat_id: match changes.telegram_chat_id {
                Some(Some(_)) => {
                    return Err(ApiError::invalid(
                        "telegram_chat_id",
                        "a chat is linked by the bot only: get a code with POST /users/me/telegram and send \
                         /start <code> to it from that chat (null unlinks)",
                    ));
                }
                unlink => unlink.map(|_| None),
            },
            telegram_link_code: None,
            min_notification_interval: changes.min_notification_interval.map(interval).transpose()?,
        };
        let revoked = !patch.revoking_changes().is_empty();
        let user =
            self.store.update_user(id, &patch).await?.ok_or_else(|| ApiError::NotFound(format!("no user {id}")))?;
        tracing::info!(user = %id, by_admin, token_version = user.token_version, revoked, "user updated");
        Ok(user)
    }

    pub async fn delete(&self, id: UserId) -> Result<(), ApiError> {
        if !self.store.delete_user(id).await? {
            return Err(ApiError::NotFound(format!("no user {id}")));
        }
        self.metrics.accounts.with_label_values(&["deleted"]).inc();
        tracing::info!(user = %id, "user deleted");
        Ok(())
    }

    /// A fresh one-time code the user sends the Telegram bot as
    /// `/start <code>` to link their chat.
    pub async fn telegram_link_code(&self, id: UserId) -> Result<String, ApiError> {
        let code = new_link_code(Utc::now());
        let patch = UserPatch { telegram_link_code: Some(Some(code.clone())), ..UserPatch::default() };
        self.store.update_user(id, &patch).await?.ok_or_else(|| ApiError::NotFound(format!("no user {id}")))?;
        Ok(code)
    }

    /// An admin account exists after this: ADMIN_EMAIL/ADMIN_PASSWORD when
    /// set (created, or an existing admin given that password), else, when
    /// there is no admin yet, `admin@lizards.local` with a random password
    /// that is logged once. An existing account that is not an admin is
    /// never promoted: whoever registered the address first would become
    /// admin, so start-up fails instead.
    pub async fn ensure_admin(&self, email_text: Option<&str>, password: Option<&str>) -> Result<(), ApiError> {
        match (email_text, password) {
            (Some(email_text), Some(password)) => {
                let email = email(email_text)?;
                passwords::check(password)?;
                match self.store.user_by_email(&email).await? {
                    Some(user) if user.role != Role::Admin => {
                        return Err(ApiError::Conflict(format!(
                            "ADMIN_EMAIL {email} belongs to an existing account that is not an admin; it is not \
                             promoted (anyone could have registered it). Choose another ADMIN_EMAIL, or delete \
                             that account first"
                        )));
                    }
                    Some(user) => {
                        if !passwords::verify(password, Some(&user.password_hash)).await {
                            let patch = UserPatch {
                                password_hash: Some(passwords::hash(password).await?),
                                ..UserPatch::default()
                            };
                            self.store.update_user(user.id, &patch).await?;
                        }
                    }
                    None => {
                        self.create_admin(email.clone(), password).await?;
                    }
                }
                tracing::info!(%email, "admin account from ADMIN_EMAIL is ready");
                Ok(())
            }
            (None, None) if !self.store.has_admin().await? => {
                let password: String = rand::rng().sample_iter(&Alphanumeric).take(20).map(char::from).collect();
                let email = Email::parse(DEFAULT_ADMIN_EMAIL).expect("valid address");
                self.create_admin(email.clone(), &password).await?;
                // Printed once: the hash is all that is kept.
                tracing::warn!(%email, %password, "created the first admin with a random password; set ADMIN_EMAIL and ADMIN_PASSWORD to choose one");
                Ok(())
            }
            (None, None) => Ok(()),
            _ => Err(ApiError::invalid("ADMIN_EMAIL", "ADMIN_EMAIL and ADMIN_PASSWORD must be set together")),
        }
    }

    async fn create_admin(&self, email: Email, password: &str) -> Result<User, ApiError> {
        let password_hash = passwords::hash(password).await?;
        let targets = Targets { email: true, ..Targets::default() };
        let new = NewUser { email, password_hash, role: Role::Admin, targets, min_notification_interval: 0 };
        match self.store.create_user(&new).await {
            Ok(user) => Ok(user),
            // Another instance created it at the same moment.
            Err(AccountError::EmailTaken) => {
                self.store.user_by_email(&new.email).await?.ok_or(ApiError::Conflict("admin e-mail is taken".into()))
            }
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_codes_carry_their_expiry() {
        let now = Utc::now();
        let code = new_link_code(now);
        assert!(!link_code_expired(&code, now));
        assert!(!link_code_expired(&code, now + chrono::Duration::minutes(14)));
        assert!(link_code_expired(&code, now + chrono::Duration::minutes(15)));
        assert!(link_code_expired("Ab3dE5gH7jK9", now), "a code without its expiry");
        assert!(link_code_expired("Ab3dE5gH7jK9-soon", now));
    }
}
