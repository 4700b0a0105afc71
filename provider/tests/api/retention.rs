//! Retention: old quotes are deleted and idle symbols nobody uses
//! leave the tracked symbols, while symbols with rules stay.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{quote, spawn_with, wait_for};

#[tokio::test]
async fn retention_deletes_old_quotes_and_untracks_unused_symbols_only() {
    let provider = spawn_with(|c| {
        c.common.retention_days = 1;
        c.provider.retention_interval = Duration::from_millis(300);
    })
    .await;
    let user = provider.user().await;
    let mut old = quote("AGED", 1.0);
    old.ts -= chrono::Duration::days(2);
    provider.publish(&old).await;
    provider.seed("IDLE", 2.0).await;
    provider.seed("RULED", 3.0).await;
    let rule = provider
        .post_as("/alerts/rules", Some(&user.token), json!({"symbol": "RULED", "kind": "above", "threshold": 5}))
        .await;
    assert_eq!(rule.status, 201, "{}", rule.body);

    wait_for(|| async {
        provider.metric_where("lizards_retention_deleted_total", "reason=\"old\"").await >= 1.0
            && provider.metric_where("lizards_retention_deleted_total", "reason=\"unused\"").await >= 2.0
    })
    .await;
    assert_eq!(provider.get_as("/quotes/AGED/history", None).await.body["count"], 0, "the 2-day-old quote is gone");
    let symbols = provider.get_as("/symbols", None).await.body;
    let listed: Vec<&str> =
        symbols["symbols"].as_array().unwrap().iter().filter_map(|s| s["symbol"].as_str()).collect();
    assert!(listed.contains(&"RULED"), "a rule keeps it: {listed:?}");
    assert!(!listed.contains(&"IDLE") && !listed.contains(&"AGED"), "idle and unused: {listed:?}");
    assert_eq!(provider.get_as("/quotes/IDLE/history", None).await.body["count"], 1, "its quotes age out normally");
    assert!(provider.metric("lizards_retention_cycle_seconds_count").await >= 1.0);
}
