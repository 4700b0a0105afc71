//! Telegram: the bot links a chat with `/start <code>`, sets the minimum
//! interval with `/set <seconds>`, and alerts go to the linked chat.

use lizards_shared::accounts::{AccountStore, Channel, DeliveryStatus, Targets, UserPatch};

use crate::{
    fakes::{BOT_TOKEN, FakeTelegram},
    helpers::{TestNotifier, spawn_with, wait_for},
};

/// A notifier whose bot talks to `telegram`.
async fn spawn_with_bot(telegram: &FakeTelegram) -> TestNotifier {
    let url = telegram.url();
    spawn_with(|c| {
        c.notifier.telegram_bot_token = Some(BOT_TOKEN.into());
        c.notifier.telegram_api_url = url;
    })
    .await
}

#[tokio::test]
async fn a_chat_linked_with_start_gets_alerts_and_set_changes_the_interval() {
    let telegram = FakeTelegram::start().await;
    let notifier = spawn_with_bot(&telegram).await;
    let user = notifier.user(Targets::default(), 0).await;
    // A code carries its expiry (Unix seconds) after the last dash.
    let code = format!("link-code-{}", chrono::Utc::now().timestamp() + 600);
    let patch = UserPatch { telegram_link_code: Some(Some(code.clone())), ..UserPatch::default() };
    notifier.store.update_user(user.id, &patch).await.unwrap();
    let chat = 4242;

    telegram.say(chat, &format!("/start {code}"));
    wait_for("the chat is linked", || async {
        notifier.user_now(user.id).await.targets.telegram_chat_id == Some(chat)
    })
    .await;
    wait_for("the bot confirms", || async {
        telegram.sent_to(chat).iter().any(|t| t.contains(&format!("Linked to {}", user.email)))
    })
    .await;
    assert_eq!(notifier.user_now(user.id).await.telegram_link_code, None, "a code links once");

    telegram.say(chat, "/set 120");
    wait_for("the interval is set", || async { notifier.user_now(user.id).await.min_notification_interval == 120 })
        .await;
    wait_for("the bot confirms /set", || async { telegram.sent_to(chat).iter().any(|t| t.contains("120 s")) }).await;

    let alert = notifier.fire(&user, &[Channel::Telegram]).await;

    let sent = notifier.wait_status(alert.id, Channel::Telegram, DeliveryStatus::Sent).await;
    assert_eq!(sent.attempts, 1);
    let texts = telegram.sent_to(chat);
    let alert_text = texts.iter().find(|t| t.contains("Lizards alert")).expect("the alert message");
    assert!(alert_text.contains("AAPL rose above 150"), "{alert_text}");
    notifier.stop().await;
}

#[tokio::test]
async fn the_bot_explains_unknown_codes_bad_commands_and_unlinked_chats() {
    let telegram = FakeTelegram::start().await;
    let notifier = spawn_with_bot(&telegram).await;

    telegram.say(7, "/start no-such-code");
    telegram.say(8, "/set 120");
    telegram.say(9, "/set forever");
    telegram.say(10, "hello");

    wait_for("four replies", || async { telegram.sent().len() == 4 }).await;
    assert!(telegram.sent_to(7)[0].contains("POST /users/me/telegram"), "{:?}", telegram.sent_to(7));
    assert!(telegram.sent_to(8)[0].contains("not linked"), "{:?}", telegram.sent_to(8));
    assert!(telegram.sent_to(9)[0].contains("Usage: /set"), "{:?}", telegram.sent_to(9));
    assert!(telegram.sent_to(10)[0].contains("/start <code>"), "{:?}", telegram.sent_to(10));
    notifier.stop().await;
}

#[tokio::test]
async fn telegram_is_skipped_without_a_bot_token() {
    let notifier = spawn_with(|_| {}).await;
    let user = notifier.user(Targets { telegram_chat_id: Some(5), ..Targets::default() }, 0).await;

    let alert = notifier.fire(&user, &[Channel::Telegram]).await;

    let skipped = notifier.wait_status(alert.id, Channel::Telegram, DeliveryStatus::Skipped).await;
    assert_eq!(skipped.attempts, 0);
    notifier.wait_handled(1).await;
    assert_eq!(notifier.broker_dead().await, 0);
    notifier.stop().await;
}

#[tokio::test]
async fn an_expired_link_code_links_nothing() {
    let telegram = FakeTelegram::start().await;
    let notifier = spawn_with_bot(&telegram).await;
    let user = notifier.user(Targets::default(), 0).await;
    let code = format!("link-code-{}", chrono::Utc::now().timestamp() - 1);
    let patch = UserPatch { telegram_link_code: Some(Some(code.clone())), ..UserPatch::default() };
    notifier.store.update_user(user.id, &patch).await.unwrap();

    telegram.say(77, &format!("/start {code}"));
    wait_for("the bot answers", || async { !telegram.sent_to(77).is_empty() }).await;
    assert!(telegram.sent_to(77)[0].contains("expired"), "{:?}", telegram.sent_to(77));
    assert_eq!(notifier.user_now(user.id).await.targets.telegram_chat_id, None, "not linked");
    notifier.stop().await;
}
