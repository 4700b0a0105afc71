//! Rate limiting at the edge: one GCRA quota per caller and policy, kept
//! in the cache port (Redis when set, so every gateway shares one count).
//! Responses carry `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers); a limited request gets 429 with
//! `Retry-After`. When the store fails the request goes through (fail
//! open), with a warning when that starts and a metric for every one.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use lizards_shared::{
    cache::{Cache, Quota, Throttle},
    config::GatewayConfig,
    problem::Problem,
};

use crate::{identity::Identity, metrics::Metrics};

pub struct Policy {
    /// Name in the response fields and the metrics.
    pub name: &'static str,
    pub quota: Quota,
}

/// What a request was counted against, for its response fields.
pub struct Counted<'a> {
    policy: &'a Policy,
    throttle: Throttle,
}

pub struct RateLimiter {
    store: Arc<dyn Cache>,
    anonymous: Policy,
    user: Policy,
    auth: Policy,
    websocket: Policy,
    metrics: Metrics,
    /// Set while the store is failing, so the warning is logged once per outage.
    failing: AtomicBool,
}

/// Whole seconds, rounded up (a client waiting that long is never early).
fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

impl RateLimiter {
    /// `None` when rate limiting is off.
    pub fn new(config: &GatewayConfig, store: Arc<dyn Cache>, metrics: Metrics) -> Option<RateLimiter> {
        config.rate_limit.then(|| RateLimiter {
            store,
            anonymous: Policy { name: "default", quota: config.rate_limit_anonymous },
            user: Policy { name: "user", quota: config.rate_limit_user },
            auth: Policy { name: "auth", quota: config.rate_limit_auth },
            websocket: Policy { name: "websocket", quota: config.rate_limit_ws },
            metrics,
            failing: AtomicBool::new(false),
        })
    }

    /// The policy a request falls under and the key it is counted by.
    fn policy(&self, route_prefix: &str, upgrade: bool, identity: &Identity) -> (&Policy, String) {
        let by_ip = |policy: &'static str| format!("ratelimit:{policy}:{}", identity.ip);
        if upgrade {
            (&self.websocket, by_ip("websocket"))
        } else if route_prefix == "/auth" {
            (&self.auth, by_ip("auth"))
        } else if let Some(user) = &identity.user {
            (&self.user, format!("ratelimit:user:{user}"))
        } else {
            (&self.anonymous, by_ip("default"))
        }
    }

    /// Counts the request. `Ok(None)`: not counted (the store failed, so it
    /// goes through); `Err`: the 429 to send back.
    pub async fn check(
        &self,
        route_prefix: &str,
        upgrade: bool,
        identity: &Identity,
    ) -> Result<Option<Counted<'_>>, Response> {
        let (policy, key) = self.policy(route_prefix, upgrade, identity);
        let started = Instant::now();
        let result = self.store.throttle(&key, policy.quota).await;
        self.metrics.ratelimit_check.observe(started.elapsed().as_secs_f64());
        let throttle = match result {
            Ok(throttle) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate-limit store is back; limits apply again");
                }
                throttle
            }
            Err(error) => {
                self.metrics.store_failures.with_label_values(&["ratelimit"]).inc();
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "rate-limit store unavailable; letting requests through unlimited");
                }
                return Ok(None);
            }
        };
        let counted = Counted { policy, throttle };
        if throttle.allowed {
            return Ok(Some(counted));
        }
        self.metrics.limited.with_label_values(&[policy.name]).inc();
        let retry_after = ceil_secs(throttle.retry_after).max(1);
        let mut response = Problem::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
            .detail(format!(
                "rate limit '{}' of {} requests per {} s exceeded; retry in {retry_after} s",
                policy.name,
                policy.quota.limit,
                ceil_secs(policy.quota.window)
            ))
            .into_response();
        counted.annotate(response.headers_mut());
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        Err(response)
    }
}

impl Counted<'_> {
    /// Adds `RateLimit-Policy: "default";q=120;w=60` and
    /// `RateLimit: "default";r=97;t=41`.
    pub fn annotate(&self, headers: &mut HeaderMap) {
        let name = self.policy.name;
        let quota = self.policy.quota;
        let policy = format!("\"{name}\";q={};w={}", quota.limit, ceil_secs(quota.window));
        let state = format!("\"{name}\";r={};t={}", self.throttle.remaining, ceil_secs(self.throttle.reset_after));
        for (field, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(field, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use lizards_shared::{cache::MemoryCache, telemetry::metrics_registry};

    use super::*;

    fn limiter(quota: &str) -> RateLimiter {
        let mut config = lizards_shared::config::Config::defaults().gateway;
        config.rate_limit_anonymous = quota.parse().unwrap();
        let metrics = Metrics::new(&metrics_registry("gateway"));
        RateLimiter::new(&config, Arc::new(MemoryCache::new()), metrics).unwrap()
    }

    fn anonymous() -> Identity {
        Identity { ip: IpAddr::from([10, 0, 0, 1]), user: None }
    }

    #[tokio::test]
    async fn fields_follow_the_draft_and_the_excess_gets_429() {
        let limiter = limiter("2/1m");
        let mut headers = HeaderMap::new();
        limiter.check("/quotes", false, &anonymous()).await.unwrap().unwrap().annotate(&mut headers);
        assert_eq!(headers["ratelimit-policy"], "\"default\";q=2;w=60");
        assert_eq!(headers["ratelimit"], "\"default\";r=1;t=30");

        assert!(limiter.check("/quotes", false, &anonymous()).await.is_ok());
        let limited = limiter.check("/quotes", false, &anonymous()).await.err().expect("third is limited");
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "30");
        assert_eq!(limited.headers()["ratelimit"], "\"default\";r=0;t=60");
    }

    #[test]
    fn users_websockets_and_auth_have_their_own_policies() {
        let limiter = limiter("2/1m");
        let user = Identity { ip: IpAddr::from([10, 0, 0, 1]), user: Some("u1".into()) };
        assert_eq!(limiter.policy("/quotes", false, &user).0.name, "user");
        assert_eq!(limiter.policy("/quotes", false, &user).1, "ratelimit:user:u1");
        assert_eq!(limiter.policy("/auth", false, &user).0.name, "auth");
        assert_eq!(limiter.policy("/ws", true, &user).0.name, "websocket");
        assert_eq!(limiter.policy("/quotes", false, &anonymous()).1, "ratelimit:default:10.0.0.1");
    }
}
