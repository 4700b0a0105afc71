//! The Telegram bot's commands, read by long-polling `getUpdates`:
//! `/start <code>` links the chat to the account holding that code
//! (`POST /users/me/telegram`), `/set <seconds>` sets the linked user's
//! minimum interval between notifications, `/stop` unlinks, anything else
//! gets the help text.

use std::{sync::Arc, time::Duration};

use chrono::Utc;

use lizards_shared::{
    accounts::{AccountError, AccountStore, UserPatch},
    retry::Backoff,
    shutdown::Shutdown,
};

use super::{metrics::Metrics, telegram::Telegram};
use crate::accounts::users::link_code_expired;

/// The longest minimum interval `/set` accepts: a week.
pub const MAX_INTERVAL: u32 = 604_800;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

const HELP: &str = "Lizards alerts bot.\n\
/start <code> - link this chat to your Lizards account (get a code with POST /users/me/telegram)\n\
/set <seconds> - least time between two notifications (0 to 604800)\n\
/stop - unlink this chat";

const HOW_TO_LINK: &str = "To link this chat, get a one-time code while signed in to Lizards \
(POST /users/me/telegram) and send /start <code> here.";

#[derive(Clone)]
pub struct Bot {
    pub telegram: Arc<Telegram>,
    pub store: Arc<dyn AccountStore>,
    pub metrics: Metrics,
    /// Long-polling wait of one `getUpdates`.
    pub poll_timeout: Duration,
}

impl Bot {
    /// Polls until shutdown; errors (the API away, another poller holding
    /// the token) back off and retry.
    pub async fn run(self, shutdown: Shutdown) {
        let mut offset: Option<i64> = None;
        let mut backoff = Backoff::new(Duration::from_millis(500), MAX_BACKOFF);
        tracing::info!("Telegram bot polling for commands");
        loop {
            let polled = tokio::select! {
                _ = shutdown.cancelled() => break,
                polled = self.telegram.get_updates(offset, self.poll_timeout) => polled,
            };
            match polled {
                Ok(updates) => {
                    backoff.reset();
                    for update in updates {
                        // Confirmed on the next poll: a crash repeats at most this batch.
                        offset = Some(offset.unwrap_or(i64::MIN).max(update.update_id + 1));
                        let Some(message) = update.message else { continue };
                        let Some(text) = message.text else { continue };
                        self.answer(message.chat.id, &text).await;
                    }
                }
                Err(error) => {
                    self.metrics.errors.with_label_values(&["telegram_poll"]).inc();
                    tracing::warn!(%error, "Telegram getUpdates failed; retrying");
                    if !backoff.wait(&shutdown).await {
                        break;
                    }
                }
            }
        }
        tracing::info!("Telegram bot stopped");
    }

    async fn answer(&self, chat_id: i64, text: &str) {
        let (command, argument) = parse(text);
        let reply = match self.handle(chat_id, command, argument).await {
            Ok((outcome, reply)) => {
                self.metrics.bot_commands.with_label_values(&[command_label(command), outcome]).inc();
                reply
            }
            Err(error) => {
                self.metrics.errors.with_label_values(&["database"]).inc();
                self.metrics.bot_commands.with_label_values(&[command_label(command), "error"]).inc();
                tracing::warn!(%error, chat_id, "Telegram command failed");
                "Something went wrong on our side; please try again later.".to_string()
            }
        };
        if let Err(error) = self.telegram.send_message(chat_id, &reply).await {
            self.metrics.errors.with_label_values(&["telegram_reply"]).inc();
            tracing::warn!(error = %error.reason, chat_id, "Telegram reply not sent");
        }
    }

    /// The outcome label and the reply.
    async fn handle(
        &self,
        chat_id: i64,
        command: &str,
        argument: &str,
    ) -> Result<(&'static str, String), AccountError> {
        match command {
            "/start" if argument.is_empty() => Ok(("no_code", format!("Welcome to Lizards alerts. {HOW_TO_LINK}"))),
            "/start" if link_code_expired(argument, Utc::now()) => {
                Ok(("expired_code", format!("That code is unknown or has expired. {HOW_TO_LINK}")))
            }
            "/start" => match self.store.link_telegram(argument, chat_id).await? {
                Some(user) => {
                    tracing::info!(user = %user.id, chat_id, "Telegram chat linked");
                    Ok((
                        "linked",
                        format!(
                            "Linked to {}. Alerts will arrive here; /set <seconds> sets the least time between them.",
                            user.email
                        ),
                    ))
                }
                None => Ok(("unknown_code", format!("That code is unknown or was used already. {HOW_TO_LINK}"))),
            },
            "/set" => {
                let Some(seconds) = argument.parse::<u32>().ok().filter(|s| *s <= MAX_INTERVAL) else {
                    return Ok(("invalid", format!("Usage: /set <seconds>, from 0 to {MAX_INTERVAL}.")));
                };
                let Some(user) = self.store.user_by_telegram_chat(chat_id).await? else {
                    return Ok(("not_linked", format!("This chat is not linked to a Lizards account. {HOW_TO_LINK}")));
                };
                let patch = UserPatch { min_notification_interval: Some(seconds), ..UserPatch::default() };
                self.store.update_user(user.id, &patch).await?;
                tracing::info!(user = %user.id, seconds, "minimum notification interval set from Telegram");
                Ok(("set", format!("Done: at most one notification every {seconds} s.")))
            }
            "/stop" => {
                let Some(user) = self.store.user_by_telegram_chat(chat_id).await? else {
                    return Ok(("not_linked", "This chat is not linked to a Lizards account.".to_string()));
                };
                let patch = UserPatch { telegram_chat_id: Some(None), ..UserPatch::default() };
                self.store.update_user(user.id, &patch).await?;
                Ok(("unlinked", "Unlinked: no more alerts in this chat.".to_string()))
            }
            _ => Ok(("help", HELP.to_string())),
        }
    }
}

/// `/start@LizardsBot  abc ` → (`/start`, `abc`).
fn parse(text: &str) -> (&str, &str) {
    let text = text.trim();
    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let command = word.split('@').next().unwrap_or(word);
    (command, rest.trim())
}

/// Metric label of a command (others are `other`, not the user's text).
fn command_label(command: &str) -> &'static str {
    match command {
        "/start" => "start",
        "/set" => "set",
        "/stop" => "stop",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn commands_are_split_from_their_argument_and_bot_name() {
        assert_eq!(parse("/start abc"), ("/start", "abc"));
        assert_eq!(parse("  /start@LizardsBot   abc  "), ("/start", "abc"));
        assert_eq!(parse("/set 120"), ("/set", "120"));
        assert_eq!(parse("/help"), ("/help", ""));
        assert_eq!(parse("hello there"), ("hello", "there"));
    }
}
