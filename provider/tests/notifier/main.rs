//! The notifier against real servers started in the test: an
//! SMTP sink, a webhook receiver and a fake Telegram Bot API. Alerts are
//! stored and published on the broker as the provider's evaluator does
//! (one test fires a rule through a real provider).

mod delivery;
mod fakes;
mod helpers;
mod retries;
mod telegram;
