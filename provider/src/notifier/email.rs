//! E-mail over SMTP (lettre, pooled connections): one message per alert
//! with plain-text and HTML alternatives rendered from the templates.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use lizards_shared::accounts::Email;

use super::{deliver::SendError, templates::Rendered};

/// Longest one SMTP command may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("SMTP_URL is not a usable SMTP URL: {0}")]
    Url(String),
    #[error("SMTP_FROM is not a mailbox ('Name <address>' or 'address'): {0}")]
    From(String),
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// Checks both settings at start-up; nothing connects until the first
    /// message.
    pub fn new(url: &str, from: &str) -> Result<Mailer, MailerError> {
        let from = from.parse::<Mailbox>().map_err(|e| MailerError::From(e.to_string()))?;
        // The URL may carry a password: name the problem, not the URL.
        let builder =
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map_err(|e| MailerError::Url(e.to_string()))?;
        Ok(Mailer { transport: builder.timeout(Some(SMTP_TIMEOUT)).build(), from })
    }

    pub async fn send(&self, to: &Email, body: &Rendered) -> Result<(), SendError> {
        let to = to
            .as_str()
            .parse::<Mailbox>()
            .map_err(|e| SendError::permanent(format!("invalid recipient address: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(body.subject.as_str())
            .multipart(MultiPart::alternative_plain_html(body.text.clone(), body.html.clone()))
            .map_err(|e| SendError::permanent(format!("cannot build the message: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            // 5xx: the server refused for good (unknown mailbox, policy).
            Err(error) if error.is_permanent() => Err(SendError::permanent(format!("SMTP: {error}"))),
            Err(error) => Err(SendError::transient(format!("SMTP: {error}"))),
        }
    }
}
