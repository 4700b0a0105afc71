//! One alert's notifications: which channels still need sending, the
//! user's minimum interval, and each channel's send with retries. Every
//! attempt is recorded on the stored alert (`pending` while retrying with
//! its count and last error, then `sent` or `failed`), so a redelivered
//! message resumes where the last one stopped and never sends a channel
//! that is already `sent` again.

use std::{sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use futures::future::join_all;
use lizards_shared::{
    accounts::{AccountError, AccountStore, Alert, AlertId, Channel, Delivery, DeliveryStatus, User},
    shutdown::Shutdown,
};
use tokio::time::Instant;

use super::{email::Mailer, metrics::Metrics, telegram::Telegram, templates, webhook::Webhooks};

/// The channels the notifier sends (the provider sends `ws` itself).
pub const CHANNELS: [Channel; 3] = [Channel::Email, Channel::Webhook, Channel::Telegram];

/// Longest error text kept on a delivery.
const MAX_ERROR: usize = 500;

/// Why one send attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// Retrying cannot help (a 4xx answer, a rejected address).
    pub permanent: bool,
    pub reason: String,
}

impl SendError {
    pub fn transient(reason: impl Into<String>) -> SendError {
        SendError { permanent: false, reason: reason.into() }
    }

    pub fn permanent(reason: impl Into<String>) -> SendError {
        SendError { permanent: true, reason: reason.into() }
    }
}

/// Attempts per channel and the waits between them: `base`, doubling,
/// at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Retry {
    /// The wait after the `attempt`-th failed attempt (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let mut delays =
            ExponentialBuilder::new().with_min_delay(self.base).with_max_delay(self.max).without_max_times().build();
        let index = attempt.saturating_sub(1) as usize;
        delays.nth(index).unwrap_or(self.max).min(self.max)
    }
}

/// What becomes of the message once its alert was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every channel is final and none failed: ack.
    Done,
    /// A channel failed for good: dead-letter the message.
    Failed,
    /// Interrupted by shutdown with a channel still pending: requeue.
    Unfinished,
}

/// How one channel's sending ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Sent,
    Failed,
    Interrupted,
}

pub struct Deliverer {
    pub store: Arc<dyn AccountStore>,
    /// `None` without SMTP_URL.
    pub mailer: Option<Mailer>,
    pub webhooks: Webhooks,
    /// `None` without TELEGRAM_BOT_TOKEN.
    pub telegram: Option<Arc<Telegram>>,
    pub retry: Retry,
    pub metrics: Metrics,
}

impl Deliverer {
    /// Sends what is still pending of the stored alert `id`. `redelivered`
    /// messages may have claimed the user's notification slot already.
    /// Store errors before any send are returned (the caller requeues).
    pub async fn deliver(&self, id: AlertId, redelivered: bool, shutdown: &Shutdown) -> Result<Outcome, AccountError> {
        let Some(alert) = self.store.alert(id).await? else {
            tracing::info!(alert = %id, "alert gone (its user was deleted); nothing to send");
            return Ok(Outcome::Done);
        };
        let Some(user) = self.store.user(alert.user_id).await? else {
            tracing::info!(alert = %id, user = %alert.user_id, "user gone; nothing to send");
            return Ok(Outcome::Done);
        };
        let pending: Vec<&Delivery> = alert
            .deliveries
            .iter()
            .filter(|d| CHANNELS.contains(&d.channel) && d.status == DeliveryStatus::Pending)
            .collect();
        let mut sendable = Vec::new();
        for delivery in pending {
            match self.unavailable(&user, delivery.channel) {
                Some(reason) => {
                    self.record(&alert, delivery.channel, DeliveryStatus::Skipped, delivery.attempts, Some(reason))
                        .await;
                    self.metrics.count(delivery.channel, "skipped");
                }
                None => sendable.push(delivery),
            }
        }
        if sendable.is_empty() {
            return Ok(Outcome::Done);
        }
        // A redelivered message may have taken the slot already: sending
        // again beats suppressing an alert nobody received.
        let claimed =
            redelivered || slot_taken(&alert) || self.store.claim_notification_slot(user.id, Utc::now()).await?;
        if !claimed {
            tracing::info!(user = %user.id, alert = %alert.id, "inside the user's minimum interval; suppressed");
            for delivery in sendable {
                let reason = "inside the user's minimum interval between notifications";
                self.record(&alert, delivery.channel, DeliveryStatus::Suppressed, delivery.attempts, Some(reason))
                    .await;
                self.metrics.count(delivery.channel, "suppressed");
            }
            return Ok(Outcome::Done);
        }
        let sends = sendable.iter().map(|d| self.send_with_retries(&user, &alert, d.channel, d.attempts, shutdown));
        let ended = join_all(sends).await;
        Ok(if ended.contains(&Ended::Interrupted) {
            Outcome::Unfinished
        } else if ended.contains(&Ended::Failed) {
            Outcome::Failed
        } else {
            Outcome::Done
        })
    }

    /// Why `channel` cannot reach `user`, or `None` when it can.
    fn unavailable(&self, user: &User, channel: Channel) -> Option<&'static str> {
        match channel {
            Channel::Email if self.mailer.is_none() => Some("e-mail is not configured (SMTP_URL)"),
            Channel::Email if !user.targets.email => Some("the user turned e-mail notifications off"),
            Channel::Webhook if user.targets.webhook_url.is_none() => Some("the user has no webhook URL"),
            Channel::Telegram if self.telegram.is_none() => Some("Telegram is not configured (TELEGRAM_BOT_TOKEN)"),
            Channel::Telegram if user.targets.telegram_chat_id.is_none() => Some("the user has no Telegram chat"),
            Channel::Ws => Some("sent by the provider"),
            _ => None,
        }
    }

    /// Sends one channel until it is sent, fails for good or shutdown
    /// interrupts the wait between two attempts. `done` attempts were made
    /// before (by an earlier delivery of the same message).
    async fn send_with_retries(
        &self,
        user: &User,
        alert: &Alert,
        channel: Channel,
        done: u32,
        shutdown: &Shutdown,
    ) -> Ended {
        let mut attempt = done;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = self.send(user, alert, channel).await;
            self.metrics.send_seconds.with_label_values(&[channel.as_str()]).observe(started.elapsed().as_secs_f64());
            let error = match result {
                Ok(()) => {
                    self.record(alert, channel, DeliveryStatus::Sent, attempt, None).await;
                    self.metrics.count(channel, "sent");
                    let since_fired = (Utc::now() - alert.fired_at).to_std().unwrap_or_default();
                    self.metrics
                        .delivery_seconds
                        .with_label_values(&[channel.as_str()])
                        .observe(since_fired.as_secs_f64());
                    tracing::info!(user = %user.id, alert = %alert.id, %channel, attempt, "notification sent");
                    return Ended::Sent;
                }
                Err(error) => error,
            };
            if error.permanent || attempt >= self.retry.max_attempts {
                self.record(alert, channel, DeliveryStatus::Failed, attempt, Some(&error.reason)).await;
                self.metrics.count(channel, "failed");
                tracing::warn!(
                    user = %user.id, alert = %alert.id, %channel, attempt, permanent = error.permanent,
                    error = %error.reason, "notification failed"
                );
                return Ended::Failed;
            }
            self.record(alert, channel, DeliveryStatus::Pending, attempt, Some(&error.reason)).await;
            self.metrics.count(channel, "retried");
            let wait = self.retry.delay_after(attempt);
            tracing::info!(
                user = %user.id, alert = %alert.id, %channel, attempt, error = %error.reason,
                retry_in_ms = wait.as_millis() as u64, "notification attempt failed; retrying"
            );
            tokio::select! {
                _ = shutdown.cancelled() => return Ended::Interrupted,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn send(&self, user: &User, alert: &Alert, channel: Channel) -> Result<(), SendError> {
        match channel {
            Channel::Email => match &self.mailer {
                Some(mailer) => mailer.send(&user.email, &templates::render(alert, user)).await,
                None => Err(SendError::permanent("e-mail is not configured")),
            },
            Channel::Webhook => match &user.targets.webhook_url {
                Some(url) => self.webhooks.send(url, user.targets.webhook_secret.as_deref(), alert).await,
                None => Err(SendError::permanent("no webhook URL")),
            },
            Channel::Telegram => match (&self.telegram, user.targets.telegram_chat_id) {
                (Some(telegram), Some(chat)) => telegram.send_message(chat, &templates::chat_text(alert)).await,
                _ => Err(SendError::permanent("no Telegram chat or bot")),
            },
            Channel::Ws => Err(SendError::permanent("the provider sends ws")),
        }
    }

    /// Records every pending channel of alert `id` as `suppressed` with
    /// `reason` (nothing is sent).
    pub async fn suppress_pending(&self, id: AlertId, reason: &str) -> Result<(), AccountError> {
        let Some(alert) = self.store.alert(id).await? else { return Ok(()) };
        let pending = alert.deliveries.iter().filter(|d| CHANNELS.contains(&d.channel));
        for delivery in pending.filter(|d| d.status == DeliveryStatus::Pending) {
            let suppressed = Delivery {
                channel: delivery.channel,
                status: DeliveryStatus::Suppressed,
                attempts: delivery.attempts,
                at: Utc::now(),
                error: Some(reason.to_string()),
            };
            self.store.set_delivery(id, &suppressed).await?;
            self.metrics.count(delivery.channel, "suppressed");
        }
        Ok(())
    }

    /// Records one channel's state; a store failure is logged and counted
    /// (a redelivery finds the channel as it was last recorded).
    async fn record(
        &self,
        alert: &Alert,
        channel: Channel,
        status: DeliveryStatus,
        attempts: u32,
        error: Option<&str>,
    ) {
        let error = error.map(|e| e.chars().take(MAX_ERROR).collect());
        let delivery = Delivery { channel, status, attempts, at: Utc::now(), error };
        if let Err(error) = self.store.set_delivery(alert.id, &delivery).await {
            self.metrics.errors.with_label_values(&["database"]).inc();
            tracing::warn!(%error, alert = %alert.id, %channel, status = status.as_str(), "delivery state not recorded");
        }
    }
}

/// Whether an earlier delivery of this alert's message got past the
/// minimum-interval check (some channel was attempted or settled by it).
fn slot_taken(alert: &Alert) -> bool {
    alert.deliveries.iter().filter(|d| CHANNELS.contains(&d.channel)).any(|d| {
        d.attempts > 0 || matches!(d.status, DeliveryStatus::Sent | DeliveryStatus::Failed | DeliveryStatus::Suppressed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_waits_double_from_the_base_up_to_the_cap() {
        let retry = Retry { max_attempts: 6, base: Duration::from_secs(1), max: Duration::from_secs(5) };
        let waits: Vec<u64> = (1..=5).map(|n| retry.delay_after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
    }
}
