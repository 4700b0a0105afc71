//! Each channel delivers: e-mail with text and HTML parts, signed
//! webhooks, skipped channels without a target, the per-user minimum
//! interval, and a rule fired by a real provider.

use hmac::{Hmac, Mac};
use lizards_shared::accounts::{Channel, DeliveryStatus, Targets};
use sha2::Sha256;

use crate::{
    fakes::{SmtpSink, WebhookReceiver},
    helpers::{email_only, spawn_with, wait_for, webhook},
};

#[tokio::test]
async fn an_alert_email_arrives_with_text_and_html_parts() {
    let sink = SmtpSink::start().await;
    let notifier = spawn_with(|c| c.notifier.smtp_url = Some(sink.url())).await;
    let user = notifier.user(email_only(), 0).await;

    let alert = notifier.fire(&user, &[Channel::Email, Channel::Ws]).await;

    let sent = notifier.wait_status(alert.id, Channel::Email, DeliveryStatus::Sent).await;
    assert_eq!(sent.attempts, 1);
    assert_eq!(sent.error, None);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.to, [user.email.to_string()]);
    assert!(mail.from.contains("alerts@lizards.local"), "{}", mail.from);
    let data = &mail.data;
    assert!(data.contains("Subject: Lizards alert: AAPL rose above 150"), "{data}");
    assert!(data.contains(&format!("To: {}", user.email)), "{data}");
    assert!(data.contains("multipart/alternative"), "{data}");
    assert!(data.contains("Content-Type: text/plain"), "{data}");
    assert!(data.contains("Content-Type: text/html"), "{data}");
    assert!(data.contains("AAPL rose above 150: now 156.5"), "{data}");
    assert!(data.contains("<h2"), "the HTML part is HTML: {data}");
    // The provider sends ws itself; the notifier leaves it alone.
    assert_eq!(notifier.delivery(alert.id, Channel::Ws).await.status, DeliveryStatus::Pending);
    assert_eq!(notifier.metric("lizards_notifications_total", &[r#"channel="email""#, r#"outcome="sent""#]).await, 1.0);
    assert_eq!(notifier.metric("lizards_notification_delivery_seconds_count", &[r#"channel="email""#]).await, 1.0);
    assert_eq!(notifier.metric("lizards_notification_seconds_count", &[r#"channel="email""#]).await, 1.0);
    notifier.stop().await;
}

#[tokio::test]
async fn a_webhook_gets_the_alert_json_signed_with_the_users_secret() {
    let receiver = WebhookReceiver::start().await;
    // No SMTP_URL and no bot token: those channels are skipped.
    let notifier = spawn_with(|_| {}).await;
    let targets = Targets { email: true, telegram_chat_id: Some(42), ..webhook(&receiver.url(), Some("s3cret")) };
    let user = notifier.user(targets, 0).await;

    let alert = notifier.fire(&user, &[Channel::Email, Channel::Webhook, Channel::Telegram]).await;

    notifier.wait_status(alert.id, Channel::Webhook, DeliveryStatus::Sent).await;
    let hooks = receiver.hooks();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook.header("content-type"), Some("application/json"));
    assert_eq!(hook.header("x-lizards-event"), Some("alert"));
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(&hook.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hook.header("x-lizards-signature"), Some(format!("sha256={expected}").as_str()));
    let body = hook.json();
    assert_eq!(body["type"], "alert");
    assert_eq!(body["user_id"], user.id.0);
    assert_eq!(body["alert"]["id"], alert.id.0);
    assert_eq!(body["alert"]["symbol"], "AAPL");
    assert_eq!(body["alert"]["kind"], "above");
    assert_eq!(body["alert"]["price"], 156.5);
    assert_eq!(body["alert"]["message"], "AAPL rose above 150: now 156.5");

    for channel in [Channel::Email, Channel::Telegram] {
        let skipped = notifier.delivery(alert.id, channel).await;
        assert_eq!(skipped.status, DeliveryStatus::Skipped, "{channel}");
        assert!(skipped.error.as_deref().unwrap_or_default().contains("not configured"), "{skipped:?}");
    }
    assert_eq!(notifier.metric("lizards_notifications_total", &[r#"outcome="skipped""#]).await, 2.0);
    notifier.stop().await;
}

#[tokio::test]
async fn a_webhook_without_a_secret_is_not_signed() {
    let receiver = WebhookReceiver::start().await;
    let notifier = spawn_with(|_| {}).await;
    let user = notifier.user(webhook(&receiver.url(), None), 0).await;

    let alert = notifier.fire(&user, &[Channel::Webhook]).await;

    notifier.wait_status(alert.id, Channel::Webhook, DeliveryStatus::Sent).await;
    assert_eq!(receiver.hooks()[0].header("x-lizards-signature"), None);
    notifier.stop().await;
}

#[tokio::test]
async fn a_second_alert_inside_the_minimum_interval_is_suppressed() {
    let receiver = WebhookReceiver::start().await;
    let sink = SmtpSink::start().await;
    let notifier = spawn_with(|c| c.notifier.smtp_url = Some(sink.url())).await;
    let targets = Targets { email: true, ..webhook(&receiver.url(), None) };
    let user = notifier.user(targets, 3600).await;

    let first = notifier.fire(&user, &[Channel::Email, Channel::Webhook]).await;
    notifier.wait_status(first.id, Channel::Webhook, DeliveryStatus::Sent).await;
    notifier.wait_status(first.id, Channel::Email, DeliveryStatus::Sent).await;
    let second = notifier.fire(&user, &[Channel::Email, Channel::Webhook]).await;

    for channel in [Channel::Email, Channel::Webhook] {
        let suppressed = notifier.wait_status(second.id, channel, DeliveryStatus::Suppressed).await;
        assert_eq!(suppressed.attempts, 0);
    }
    assert_eq!(receiver.hooks().len(), 1);
    assert_eq!(sink.mails().len(), 1);
    assert_eq!(notifier.metric("lizards_notifications_total", &[r#"outcome="suppressed""#]).await, 2.0);
    notifier.wait_handled(2).await;
    assert_eq!(notifier.broker_dead().await, 0, "suppressed is not a failure");
    notifier.stop().await;
}

#[tokio::test]
async fn a_rule_fired_by_the_provider_reaches_the_users_webhook() {
    let receiver = WebhookReceiver::start().await;
    let (notifier, provider) = crate::helpers::spawn_with_provider().await;
    let token = provider.register(&serde_json::json!({"webhook_url": receiver.url(), "webhook_secret": "k"})).await;
    provider.seed("MSFT", 100.0).await;
    let rule = serde_json::json!({"symbol": "MSFT", "kind": "above", "threshold": 105, "channels": ["webhook", "ws"]});
    let answer = provider.post("/alerts/rules", &token, &rule).await;
    assert_eq!(answer.0, 201, "{}", answer.1);

    provider.seed("MSFT", 104.0).await;
    provider.seed("MSFT", 106.0).await;

    wait_for("the webhook is called", || async { !receiver.hooks().is_empty() }).await;
    let body = receiver.hooks()[0].json();
    assert_eq!(body["alert"]["symbol"], "MSFT");
    assert_eq!(body["alert"]["price"], 106.0);
    let alert_id = lizards_shared::accounts::AlertId(body["alert"]["id"].as_i64().unwrap());
    notifier.wait_status(alert_id, Channel::Webhook, DeliveryStatus::Sent).await;
    wait_for("GET /alerts shows the webhook sent", || async {
        let alerts = provider.get("/alerts", &token).await;
        alerts["alerts"][0]["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["channel"] == "webhook" && d["status"] == "sent"))
    })
    .await;
    provider.stop().await;
    notifier.stop().await;
}

#[tokio::test]
async fn a_webhook_to_an_internal_address_stored_earlier_is_refused_at_send_time() {
    // The URLs got in before the rule (or the address) changed: the
    // notifier checks again and calls none of them.
    let receiver = WebhookReceiver::start().await;
    let notifier = spawn_with(|c| c.notifier.webhook_allow_private = false).await;
    let literal = receiver.url();
    let by_name = literal.replace("127.0.0.1", "localhost");
    assert_ne!(literal, by_name, "{literal}");
    for url in [literal, by_name] {
        let user = notifier.user(webhook(&url, None), 0).await;
        let alert = notifier.fire(&user, &[Channel::Webhook]).await;
        let failed = notifier.wait_status(alert.id, Channel::Webhook, DeliveryStatus::Failed).await;
        assert_eq!(failed.attempts, 1, "refused for good, not retried: {failed:?}");
        let error = failed.error.expect("a reason");
        assert!(error.starts_with("webhook: refused"), "{url}: {error}");
        assert!(!error.contains("127.0.0.1") && !error.contains("localhost"), "no network detail: {error}");
    }
    assert!(receiver.hooks().is_empty(), "an internal address was called");
    notifier.stop().await;
}

/// A webhook host that accepts connections and never answers.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let url = format!("http://{}/hook", listener.local_addr().expect("an address"));
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, holder)
}

#[tokio::test]
async fn a_users_black_hole_webhook_does_not_stall_other_users_deliveries() {
    let (hole, holder) = black_hole().await;
    let receiver = WebhookReceiver::start().await;
    let notifier = spawn_with(|c| c.notifier.webhook_timeout = std::time::Duration::from_secs(3)).await;
    let stuck = notifier.user(webhook(&hole, None), 0).await;
    // More alerts than the notifier takes at once before this isolation.
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(notifier.fire(&stuck, &[Channel::Webhook]).await);
    }
    let other = notifier.user(webhook(&receiver.url(), None), 0).await;
    let alert = notifier.fire(&other, &[Channel::Webhook]).await;

    let what = "the other user's alert is delivered while the first user's webhook hangs";
    lizards_testkit::eventually_within(what, std::time::Duration::from_secs(2), || async {
        notifier.delivery(alert.id, Channel::Webhook).await.status == DeliveryStatus::Sent
    })
    .await;
    // One in flight and eight waiting; the rest are suppressed, not queued.
    let mut suppressed = 0;
    for alert in &flood {
        let delivery = notifier.delivery(alert.id, Channel::Webhook).await;
        suppressed += usize::from(delivery.status == DeliveryStatus::Suppressed);
    }
    assert_eq!(suppressed, flood.len() - 1 - lizards_provider::notifier::worker::MAX_WAITING);
    holder.abort();
    notifier.stop().await;
}
