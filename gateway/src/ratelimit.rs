//! Rate limiting at the edge: one GCRA quota per caller and policy, kept
//! in the cache port (Redis when set, so every gateway shares one count).
//! Responses carry `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers); a limited request gets 429 with
//! `Retry-After`. When the store fails the request goes through (fail
//! open), with a warning when that starts and a metric for every one.
//!
//! A busy key takes its slots from the store in batches (leases) instead of
//! one round trip per request: a batch doubles each time the previous one
//! was used up within [`LEASE_FOR`], shrinks to what was used when it was
//! not, and is never more than 1/[`BATCH_SHARE`] of what the store still
//! has, so near the limit every slot is asked for singly and the gateways
//! together admit the policy's count (docs/decisions.md).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
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

use crate::{client::limit_key, identity::Identity, metrics::Metrics};

/// Anonymous lookups ask every source about an invented symbol: they have
/// a budget of their own, so nobody can spend the sources' free tiers.
const LOOKUP_PATH: &str = "/sources/lookup/";

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

/// Longest a leased slot may wait for its request: a slot is spent within
/// a second of the store counting it, so leases never add up to a burst.
const LEASE_FOR: Duration = Duration::from_secs(1);
/// Largest batch, and its share of the slots the store still has.
const MAX_BATCH: u32 = 64;
const BATCH_SHARE: u32 = 8;
/// Checks between sweeps of expired leases.
const SWEEP_EVERY: u32 = 4096;

/// Slots of one key this gateway has taken from the store ahead of use.
struct Lease {
    slots: u32,
    /// The batch it was taken in, and the store's count after it.
    batch: u32,
    remaining: u32,
    reset_at: Instant,
    expires: Instant,
}

impl Lease {
    /// Adds a batch just taken from the store (one slot of it goes to the
    /// request that took it). Slots still valid are kept, and the lease
    /// counts as one batch of all it holds, so `slots < batch` always.
    fn add(&mut self, batch: u32, throttle: &Throttle, now: Instant) {
        if self.expires <= now {
            self.slots = 0;
        }
        self.slots += batch - 1;
        self.batch = self.slots + 1;
        self.remaining = throttle.remaining;
        self.reset_at = now + throttle.reset_after;
        self.expires = now + LEASE_FOR;
    }

    /// The batch to ask for next, from how this one went.
    fn next_batch(&self, now: Instant) -> u32 {
        let grown = if self.slots == 0 && now < self.expires { self.batch * 2 } else { self.batch - self.slots };
        grown.min(self.remaining / BATCH_SHARE).clamp(1, MAX_BATCH)
    }
}

pub struct RateLimiter {
    store: Arc<dyn Cache>,
    leases: Mutex<HashMap<String, Lease>>,
    checks: AtomicU32,
    anonymous: Policy,
    user: Policy,
    auth: Policy,
    websocket: Policy,
    lookup: Policy,
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
            leases: Mutex::default(),
            checks: AtomicU32::new(0),
            anonymous: Policy { name: "default", quota: config.rate_limit_anonymous },
            user: Policy { name: "user", quota: config.rate_limit_user },
            auth: Policy { name: "auth", quota: config.rate_limit_auth },
            websocket: Policy { name: "websocket", quota: config.rate_limit_ws },
            lookup: Policy { name: "lookup", quota: config.rate_limit_lookup },
            metrics,
            failing: AtomicBool::new(false),
        })
    }

    /// The policy a request falls under and the key it is counted by.
    fn policy(&self, route_prefix: &str, path: &str, upgrade: bool, identity: &Identity) -> (&Policy, String) {
        let by_ip = |policy: &'static str| format!("ratelimit:{policy}:{}", limit_key(identity.ip));
        if upgrade {
            (&self.websocket, by_ip("websocket"))
        } else if identity.user.is_none() && path.starts_with(LOOKUP_PATH) {
            (&self.lookup, by_ip("lookup"))
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
        path: &str,
        upgrade: bool,
        identity: &Identity,
    ) -> Result<Option<Counted<'_>>, Response> {
        let (policy, key) = self.policy(route_prefix, path, upgrade, identity);
        let started = Instant::now();
        let result = self.take(&key, policy.quota).await;
        self.metrics.ratelimit_check.observe(started.elapsed().as_secs_f64());
        let throttle = match result {
            Ok(throttle) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate-limit store is back; limits apply again");
                }
                throttle
            }
            Err(error) => {
                self.metrics.store_failure("ratelimit");
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

impl RateLimiter {
    /// One slot for `key`: from this gateway's lease, else from the store
    /// (with a batch for the lease when the key is busy).
    async fn take(&self, key: &str, quota: Quota) -> Result<Throttle, lizards_shared::cache::CacheError> {
        let now = Instant::now();
        let batch = {
            let mut leases = self.leases.lock().expect("leases lock");
            if self.checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(SWEEP_EVERY) {
                leases.retain(|_, lease| lease.expires > now);
            }
            match leases.get_mut(key) {
                Some(lease) if lease.slots > 0 && now < lease.expires => {
                    lease.slots -= 1;
                    return Ok(Throttle {
                        allowed: true,
                        remaining: lease.remaining + lease.slots,
                        reset_after: lease.reset_at.saturating_duration_since(now),
                        retry_after: Duration::ZERO,
                    });
                }
                Some(lease) => lease.next_batch(now),
                None => 1,
            }
        };
        let mut throttle = self.store.throttle(key, quota, batch).await?;
        let mut batch = batch;
        if !throttle.allowed && batch > 1 {
            batch = 1;
            throttle = self.store.throttle(key, quota, 1).await?;
        }
        if throttle.allowed {
            // Concurrent takers of one key add to one lease: no slot counted
            // by the store is dropped while it is still valid.
            let mut leases = self.leases.lock().expect("leases lock");
            let lease = leases.entry(key.to_string()).or_insert(Lease {
                slots: 0,
                batch,
                remaining: 0,
                reset_at: now,
                expires: now,
            });
            lease.add(batch, &throttle, now);
            throttle.remaining += lease.slots;
        }
        Ok(throttle)
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
        RateLimiter::new(&config, Arc::new(MemoryCache::default()), metrics).unwrap()
    }

    fn anonymous() -> Identity {
        Identity { ip: IpAddr::from([10, 0, 0, 1]), user: None }
    }

    #[tokio::test]
    async fn fields_follow_the_draft_and_the_excess_gets_429() {
        let limiter = limiter("2/1m");
        let mut headers = HeaderMap::new();
        limiter.check("/quotes", "/quotes/AAPL", false, &anonymous()).await.unwrap().unwrap().annotate(&mut headers);
        assert_eq!(headers["ratelimit-policy"], "\"default\";q=2;w=60");
        assert_eq!(headers["ratelimit"], "\"default\";r=1;t=30");

        assert!(limiter.check("/quotes", "/quotes/AAPL", false, &anonymous()).await.is_ok());
        let limited =
            limiter.check("/quotes", "/quotes/AAPL", false, &anonymous()).await.err().expect("third is limited");
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "30");
        assert_eq!(limited.headers()["ratelimit"], "\"default\";r=0;t=60");
    }

    #[tokio::test]
    async fn a_busy_key_takes_batches_that_shrink_near_the_limit() {
        let store = Arc::new(MemoryCache::default());
        let mut config = lizards_shared::config::Config::defaults().gateway;
        config.rate_limit_anonymous = "1000/1h".parse().unwrap();
        let limiter = RateLimiter::new(&config, store.clone(), Metrics::new(&metrics_registry("gateway"))).unwrap();
        let mut admitted = 0;
        for _ in 0..1500 {
            if limiter.check("/quotes", "/quotes/AAPL", false, &anonymous()).await.is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 1000, "every slot is used, none twice");
        let batch = limiter.leases.lock().unwrap().values().map(|lease| lease.batch).max().unwrap();
        assert_eq!(batch, 1, "the last slots were asked for one by one");
    }

    #[test]
    fn lease_batches_grow_when_used_up_and_shrink_to_what_was_used() {
        let now = Instant::now();
        let lease = |slots, remaining, expires| Lease { slots, batch: 8, remaining, reset_at: now, expires };
        let live = now + Duration::from_secs(1);
        assert_eq!(lease(0, 10_000, live).next_batch(now), 16, "used up in time: doubles");
        assert_eq!(lease(0, 10_000, now).next_batch(now), 8, "used up, but slowly: stays");
        assert_eq!(lease(5, 10_000, now).next_batch(now), 3, "expired with 5 left: what was used");
        assert_eq!(lease(0, 40, live).next_batch(now), 5, "at most an eighth of what is left");
        assert_eq!(lease(0, 3, live).next_batch(now), 1, "near the limit, one at a time");
        let big = Lease { batch: 64, ..lease(0, 1_000_000, live) };
        assert_eq!(big.next_batch(now), MAX_BATCH);
    }

    /// Two requests that both found the lease empty take a batch each from
    /// the store and both add theirs. A lease that then expires unused
    /// once underflowed `batch - slots` here, and the panic, holding the
    /// leases lock, poisoned it: every later request on that gateway
    /// panicked too.
    #[test]
    fn concurrent_batches_add_up_and_an_unused_lease_expires_cleanly() {
        let now = Instant::now();
        let granted = Throttle {
            allowed: true,
            remaining: 10_000,
            reset_after: Duration::from_secs(60),
            retry_after: Duration::ZERO,
        };
        let mut lease = Lease { slots: 0, batch: 16, remaining: 10_000, reset_at: now, expires: now };
        lease.add(16, &granted, now);
        lease.add(16, &granted, now);
        assert_eq!((lease.slots, lease.batch), (30, 31), "both batches kept, less the two slots spent");
        let later = now + LEASE_FOR;
        assert_eq!(lease.next_batch(later), 1, "nothing of it used: the next batch is one slot");
        lease.slots = 0;
        assert_eq!(lease.next_batch(now), 62, "all used in time: doubles");
    }

    #[test]
    fn users_websockets_auth_and_lookups_have_their_own_policies() {
        let limiter = limiter("2/1m");
        let user = Identity { ip: IpAddr::from([10, 0, 0, 1]), user: Some("u1".into()) };
        assert_eq!(limiter.policy("/quotes", "/quotes", false, &user).0.name, "user");
        assert_eq!(limiter.policy("/quotes", "/quotes", false, &user).1, "ratelimit:user:u1");
        assert_eq!(limiter.policy("/auth", "/auth/login", false, &user).0.name, "auth");
        assert_eq!(limiter.policy("/ws", "/ws", true, &user).0.name, "websocket");
        assert_eq!(limiter.policy("/quotes", "/quotes", false, &anonymous()).1, "ratelimit:default:10.0.0.1");
        let lookup = limiter.policy("/sources", "/sources/lookup/XYZ", false, &anonymous());
        assert_eq!((lookup.0.name, lookup.1.as_str()), ("lookup", "ratelimit:lookup:10.0.0.1"));
        assert_eq!(limiter.policy("/sources", "/sources/lookup/XYZ", false, &user).0.name, "user");
        let v6 = Identity { ip: "2001:db8::1:2:3:4".parse().unwrap(), user: None };
        assert_eq!(limiter.policy("/quotes", "/quotes", false, &v6).1, "ratelimit:default:2001:db8::/64");
    }
}
