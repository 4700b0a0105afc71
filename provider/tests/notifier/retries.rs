//! Failures: retries until the SMTP server comes back, dead-lettering
//! after the last attempt, redelivered messages, unreadable messages.

use lizards_shared::{
    accounts::{AccountStore, Channel, Delivery, DeliveryStatus, Targets},
    broker::{ALERTS_EXCHANGE, Broker},
};

use crate::{
    fakes::{SmtpSink, WebhookReceiver, free_port},
    helpers::{email_only, spawn_with, wait_for, webhook},
};

#[tokio::test]
async fn email_is_retried_until_the_smtp_server_comes_back_and_sent_once() {
    let port = free_port();
    let notifier = spawn_with(|c| {
        c.notifier.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        c.notifier.notify_retry_base = std::time::Duration::from_millis(100);
        c.notifier.notify_max_attempts = 50;
    })
    .await;
    let user = notifier.user(email_only(), 0).await;

    let alert = notifier.fire(&user, &[Channel::Email]).await;

    wait_for("a second attempt is recorded while pending", || async {
        let delivery = notifier.delivery(alert.id, Channel::Email).await;
        delivery.attempts >= 2 && delivery.status == DeliveryStatus::Pending
    })
    .await;
    let retrying = notifier.delivery(alert.id, Channel::Email).await;
    assert!(retrying.error.as_deref().is_some_and(|e| e.contains("SMTP")), "{retrying:?}");
    assert!(notifier.metric("lizards_notifications_total", &[r#"outcome="retried""#]).await > 0.0);
    assert_eq!(notifier.broker_dead().await, 0);

    let sink = SmtpSink::start_on(port).await;

    let sent = notifier.wait_status(alert.id, Channel::Email, DeliveryStatus::Sent).await;
    assert!(sent.attempts >= 2, "{sent:?}");
    assert_eq!(sent.error, None);
    notifier.wait_handled(1).await;
    assert_eq!(sink.mails().len(), 1, "sent exactly once");
    assert_eq!(sink.mails()[0].to, [user.email.to_string()]);
    assert_eq!(notifier.broker_dead().await, 0);
    notifier.stop().await;
}

#[tokio::test]
async fn exhausted_retries_fail_the_delivery_and_dead_letter_the_message() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_with(500);
    let notifier = spawn_with(|c| c.notifier.notify_max_attempts = 2).await;
    let user = notifier.user(webhook(&receiver.url(), None), 0).await;

    let alert = notifier.fire(&user, &[Channel::Webhook]).await;

    let failed = notifier.wait_status(alert.id, Channel::Webhook, DeliveryStatus::Failed).await;
    assert_eq!(failed.attempts, 2);
    assert!(failed.error.as_deref().is_some_and(|e| e.contains("500")), "{failed:?}");
    wait_for("the message is dead-lettered", || async { notifier.broker_dead().await == 1 }).await;
    assert_eq!(receiver.hooks().len(), 2);
    let failed_count = notifier.metric("lizards_notifications_total", &[r#"channel="webhook""#, r#"outcome="failed""#]);
    assert_eq!(failed_count.await, 1.0);
    assert_eq!(notifier.metric("lizards_notifications_total", &[r#"outcome="retried""#]).await, 1.0);
    let dead_lettered = notifier.metric("lizards_messages_dead_lettered_total", &[r#"queue="notify""#]).await;
    assert_eq!(dead_lettered, 1.0);
    notifier.stop().await;
}

#[tokio::test]
async fn a_permanent_webhook_error_fails_at_once() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_with(410);
    let notifier = spawn_with(|c| c.notifier.notify_max_attempts = 5).await;
    let user = notifier.user(webhook(&receiver.url(), None), 0).await;

    let alert = notifier.fire(&user, &[Channel::Webhook]).await;

    let failed = notifier.wait_status(alert.id, Channel::Webhook, DeliveryStatus::Failed).await;
    assert_eq!(failed.attempts, 1);
    wait_for("the message is dead-lettered", || async { notifier.broker_dead().await == 1 }).await;
    assert_eq!(receiver.hooks().len(), 1);
    notifier.stop().await;
}

#[tokio::test]
async fn a_redelivered_message_does_not_send_a_channel_already_sent() {
    let receiver = WebhookReceiver::start().await;
    let sink = SmtpSink::start().await;
    let notifier = spawn_with(|c| c.notifier.smtp_url = Some(sink.url())).await;
    let user = notifier.user(Targets { email: true, ..webhook(&receiver.url(), None) }, 0).await;

    let alert = notifier.fire(&user, &[Channel::Webhook]).await;
    notifier.wait_status(alert.id, Channel::Webhook, DeliveryStatus::Sent).await;
    notifier.wait_handled(1).await;
    // The same message again (the outbox republished it, or an ack was lost).
    notifier.publish(&alert).await;
    notifier.wait_handled(2).await;
    assert_eq!(receiver.hooks().len(), 1, "the webhook is not called twice");

    // A message whose e-mail went out before a crash: only the webhook is left.
    let alert = notifier.store_alert(&user, &[Channel::Email, Channel::Webhook]).await;
    let sent =
        Delivery { status: DeliveryStatus::Sent, attempts: 1, ..notifier.delivery(alert.id, Channel::Email).await };
    notifier.store.set_delivery(alert.id, &sent).await.unwrap();
    notifier.publish(&alert).await;
    notifier.wait_status(alert.id, Channel::Webhook, DeliveryStatus::Sent).await;
    notifier.wait_handled(3).await;
    assert_eq!(receiver.hooks().len(), 2);
    assert!(sink.mails().is_empty(), "the e-mail was sent before: {:?}", sink.mails());
    assert_eq!(notifier.delivery(alert.id, Channel::Email).await, sent);
    notifier.stop().await;
}

#[tokio::test]
async fn an_unreadable_message_is_dead_lettered_and_the_worker_goes_on() {
    let receiver = WebhookReceiver::start().await;
    let notifier = spawn_with(|_| {}).await;
    let user = notifier.user(webhook(&receiver.url(), None), 0).await;

    for body in [&b"not json at all"[..], br#"{"v":1,"user_id":1}"#, br#"{"v":1,"user_id":1,"alert":{"id":"x"}}"#] {
        notifier.broker.publish(ALERTS_EXCHANGE, "alert.1", bytes::Bytes::from_static(body)).await.unwrap();
    }
    let alert = notifier.fire(&user, &[Channel::Webhook]).await;

    notifier.wait_status(alert.id, Channel::Webhook, DeliveryStatus::Sent).await;
    wait_for("three messages are dead-lettered", || async { notifier.broker_dead().await == 3 }).await;
    let dead_lettered = notifier.metric("lizards_messages_dead_lettered_total", &[r#"queue="notify""#]).await;
    assert_eq!(dead_lettered, 3.0);
    assert_eq!(notifier.metric("lizards_errors_total", &[r#"kind="decode""#]).await, 3.0);
    notifier.stop().await;
}

#[tokio::test]
async fn an_alert_of_a_deleted_user_is_acked_and_dropped() {
    let receiver = WebhookReceiver::start().await;
    let notifier = spawn_with(|_| {}).await;
    let user = notifier.user(webhook(&receiver.url(), None), 0).await;
    let alert = notifier.store_alert(&user, &[Channel::Webhook]).await;
    notifier.store.delete_user(user.id).await.unwrap();

    notifier.publish(&alert).await;

    notifier.wait_handled(1).await;
    assert!(receiver.hooks().is_empty());
    assert_eq!(notifier.broker_dead().await, 0);
    notifier.stop().await;
}

#[tokio::test]
async fn shutdown_between_retries_puts_the_message_back() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_with(503);
    let notifier = spawn_with(|c| {
        c.notifier.notify_max_attempts = 100;
        c.notifier.notify_retry_base = std::time::Duration::from_secs(30);
        c.notifier.notify_retry_max = std::time::Duration::from_secs(30);
    })
    .await;
    let user = notifier.user(webhook(&receiver.url(), None), 0).await;
    let alert = notifier.fire(&user, &[Channel::Webhook]).await;
    wait_for("a first attempt failed", || async { notifier.delivery(alert.id, Channel::Webhook).await.attempts == 1 })
        .await;

    let broker = notifier.broker.clone();
    let started = std::time::Instant::now();
    notifier.stop().await;

    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the 30 s wait does not hold shutdown up");
    assert_eq!(broker.queue_len(lizards_shared::broker::NOTIFY_QUEUE).await.unwrap(), 1, "requeued, not lost");
    assert_eq!(broker.queue_len(lizards_shared::broker::DEAD_QUEUE).await.unwrap(), 0);
}
