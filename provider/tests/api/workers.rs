//! The provider's supervisor: a worker that dies is counted and reported,
//! then restarted or the provider stops, as the worker's policy says.

use crate::helpers::{spawn, wait_for};

#[tokio::test]
async fn a_crashed_persister_is_counted_restarted_and_persists_again() {
    let provider = spawn().await;
    provider.seed("AMD", 1.0).await;
    wait_for(|| async { provider.supervisor.abort("persister") }).await;
    wait_for(|| async { provider.metric_where("lizards_worker_exits_total", "worker=\"persister\"").await == 1.0 })
        .await;
    // Only a restarted persister stores this one.
    provider.seed("AMD", 2.0).await;
    wait_for(|| async { provider.supervisor.check().is_ok() }).await;
    let ready = provider.http.get(provider.url("/readyz")).send().await.expect("readyz answers");
    assert_eq!(ready.status(), 200);
    provider.stop().await;
}

#[tokio::test]
async fn a_crashed_live_feed_stops_the_provider_with_the_cause() {
    let provider = spawn().await;
    let supervisor = provider.supervisor.clone();
    wait_for(|| async { supervisor.abort("live feed") }).await;
    let failure = provider.ended().await.expect_err("the provider cannot run without its live feed");
    assert_eq!(failure.to_string(), "the provider's live feed worker was aborted");
    let ready = supervisor.check().expect_err("readiness stays red");
    assert!(ready.contains("live feed"), "{ready}");
}
