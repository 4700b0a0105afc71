//! Instances from the registry: traffic spreads over live instances,
//! deregistered and evicted ones stop receiving it, a killed one is
//! skipped after its first failure, and routes have their own timeouts.

use std::{collections::HashMap, time::Duration};

use lizards_shared::config::Balancer;
use reqwest::{Method, StatusCode};

use crate::helpers::*;

/// Which upstream port answered each of `n` sequential requests.
async fn ports(gateway: &TestGateway, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let response = gateway.get("/alerts/spread").await;
        assert_eq!(response.status(), StatusCode::OK);
        *seen.entry(response.headers()["x-upstream-port"].to_str().unwrap().to_string()).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn traffic_spreads_across_two_live_instances_with_either_balancer() {
    for balancer in [Balancer::P2c, Balancer::RoundRobin] {
        let registry = spawn_registry().await;
        let first = spawn_upstream(&registry, None).await;
        let second = spawn_upstream(&registry, None).await;
        let gateway =
            spawn_gateway(&registry, SharedStore::new().connect().await, |c| c.gateway.gateway_balancer = balancer)
                .await;
        gateway.wait_for_upstreams(2).await;

        let seen = ports(&gateway, 60).await;
        for upstream in [&first, &second] {
            let share = seen.get(&upstream.addr.port().to_string()).copied().unwrap_or(0);
            assert!(share >= 10, "{balancer:?}: {share} of 60 requests reached {}", upstream.addr);
        }
    }
}

#[tokio::test]
async fn p2c_prefers_the_less_busy_instance() {
    let registry = spawn_registry().await;
    let slow = spawn_upstream(&registry, None).await;
    let fast = spawn_upstream(&registry, None).await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |_| {}).await;
    gateway.wait_for_upstreams(2).await;
    slow.set_delay(Duration::from_millis(1500));
    let (slow_before, fast_before) = (slow.requests(), fast.requests());

    // Requests arrive one after another while those on the slow instance
    // pile up: p2c sends new ones to the instance with fewer in flight.
    let mut pending = Vec::new();
    for _ in 0..40 {
        let gateway_url = gateway.url.clone();
        let http = gateway.http.clone();
        pending.push(tokio::spawn(async move { http.get(format!("{gateway_url}/alerts/busy")).send().await }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for request in pending {
        assert_eq!(request.await.unwrap().unwrap().status(), StatusCode::OK);
    }

    let (to_slow, to_fast) = (slow.requests() - slow_before, fast.requests() - fast_before);
    assert!(to_fast > to_slow * 3, "slow got {to_slow}, fast got {to_fast}");
}

#[tokio::test]
async fn deregistered_and_evicted_instances_stop_receiving_traffic() {
    let registry = spawn_registry().await;
    let staying = spawn_upstream(&registry, None).await;
    let leaving = spawn_upstream(&registry, None).await;
    let expiring = spawn_upstream(&registry, Some(2)).await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |_| {}).await;
    gateway.wait_for_upstreams(3).await;

    registry.client.deregister("provider", &leaving.instance_id).await.unwrap();
    // `expiring` never renews its 2 s registration: evicted by the TTL.
    // The gateway's own count, not a run of requests that happened to miss
    // the others: 12 in a row to one of two instances is 1 in 4,096, and
    // polled for 2 s that once passed while `expiring` was still routed.
    eventually("the gateway knows one provider instance", || async {
        metric(&gateway.metrics().await, "lizards_gateway_upstream_instances", &["upstream=\"provider\""]) == 1.0
    })
    .await;
    let (left, expired) = (leaving.requests(), expiring.requests());
    let seen = ports(&gateway, 20).await;
    assert!(seen.keys().eq([staying.addr.port().to_string()].iter()), "only the live instance answers: {seen:?}");
    assert_eq!((leaving.requests(), expiring.requests()), (left, expired), "no more traffic for them");
}

#[tokio::test]
async fn killed_instance_is_skipped_after_its_first_failure() {
    let registry = spawn_registry().await;
    let survivor = spawn_upstream(&registry, None).await;
    let victim = spawn_upstream(&registry, None).await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |c| {
        // The registry would notice the death too; this shows the gateway
        // needs no one to tell it.
        c.gateway.gateway_refresh = Duration::from_secs(3600);
        c.gateway.gateway_balancer = Balancer::RoundRobin;
    })
    .await;
    gateway.wait_for_upstreams(2).await;

    victim.kill();
    let before = survivor.requests();
    for _ in 0..20 {
        assert_eq!(gateway.get("/alerts/after-kill").await.status(), StatusCode::OK, "retried on the survivor");
    }
    assert_eq!(survivor.requests() - before, 20);
    let errors = metric(&gateway.metrics().await, "lizards_gateway_upstream_errors_total", &["kind=\"connect\""]);
    assert_eq!(errors, 1.0, "one failure, then the dead instance is skipped");
}

#[tokio::test]
async fn a_registry_outage_keeps_the_last_known_instances() {
    let registry = spawn_registry().await;
    let upstream = spawn_upstream(&registry, None).await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |_| {}).await;
    gateway.wait_for_upstreams(1).await;

    registry.stop();
    eventually("the registry is gone", || async { registry.client.instances("provider").await.is_err() }).await;
    // Several refresh periods (100 ms) pass without the registry.
    let before = upstream.requests();
    for _ in 0..10 {
        assert_eq!(gateway.get("/alerts/while-registry-down").await.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(upstream.requests() - before, 10, "still routed to the instance last listed");
}

#[tokio::test]
async fn routes_have_their_own_upstream_timeouts() {
    let registry = spawn_registry().await;
    let _upstream = spawn_upstream(&registry, None).await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |c| {
        c.gateway.gateway_route_timeouts = "/quotes=300ms".parse().unwrap();
        c.gateway.gateway_upstream_timeout = Duration::from_secs(5);
    })
    .await;

    let timed_out = gateway.get("/quotes/SLOW").await;
    assert_eq!(timed_out.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(timed_out.headers()["content-type"], "application/problem+json");
    let patient = gateway.request(Method::GET, "/alerts/SLOW").send().await.unwrap();
    assert_eq!(patient.status(), StatusCode::OK, "other routes wait up to GATEWAY_UPSTREAM_TIMEOUT");
}
