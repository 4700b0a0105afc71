//! Behaviour every `Cache` adapter must show (Redis): keyed bytes, optional
//! expiry, delete reporting whether the key existed, and GCRA rate
//! limiting that stays exact under concurrency. Keys are unique per check,
//! so the suite can share one real server.

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use lizards_shared::cache::{Cache, MemoryCache, Quota, Throttle};

use crate::helpers::{eventually, unique};

/// Short enough to wait for, long enough to read the value back first.
const SHORT_TTL: Duration = Duration::from_millis(300);

pub async fn run_all(cache: &dyn Cache) {
    set_value_can_be_read_back(cache).await;
    missing_key_reads_as_none(cache).await;
    overwrite_replaces_the_value(cache).await;
    value_expires_after_its_ttl(cache).await;
    overwrite_without_ttl_removes_the_expiry(cache).await;
    delete_reports_whether_the_key_existed(cache).await;
    a_burst_of_limit_is_allowed_then_the_next_is_denied(cache).await;
    slots_come_back_one_interval_apart(cache).await;
    throttled_keys_are_independent(cache).await;
    a_cost_takes_that_many_slots_all_or_none(cache).await;
    concurrent_requests_on_one_key_allow_exactly_the_limit(cache).await;
    a_lease_has_one_holder_until_it_lapses(cache).await;
    a_released_lease_can_be_taken_at_once(cache).await;
    concurrent_lease_takers_get_one_holder(cache).await;
}

async fn set(cache: &dyn Cache, key: &str, value: &'static str, ttl: Option<Duration>) {
    cache.set(key, Bytes::from_static(value.as_bytes()), ttl).await.expect("set is accepted");
}

async fn get(cache: &dyn Cache, key: &str) -> Option<Bytes> {
    cache.get(key).await.expect("get answers")
}

async fn wait_until_expired(cache: &dyn Cache, key: &str) {
    eventually(&format!("'{key}' expires"), || async move { get(cache, key).await.is_none() }).await;
}

pub async fn set_value_can_be_read_back(cache: &dyn Cache) {
    let key = unique("contract.cache");
    set(cache, &key, "value", None).await;
    assert_eq!(get(cache, &key).await, Some(Bytes::from_static(b"value")));
}

pub async fn missing_key_reads_as_none(cache: &dyn Cache) {
    assert_eq!(get(cache, &unique("contract.cache")).await, None);
}

pub async fn overwrite_replaces_the_value(cache: &dyn Cache) {
    let key = unique("contract.cache");
    set(cache, &key, "old", None).await;
    set(cache, &key, "new", None).await;
    assert_eq!(get(cache, &key).await, Some(Bytes::from_static(b"new")));
}

pub async fn value_expires_after_its_ttl(cache: &dyn Cache) {
    let key = unique("contract.cache");
    set(cache, &key, "short-lived", Some(SHORT_TTL)).await;
    assert_eq!(get(cache, &key).await, Some(Bytes::from_static(b"short-lived")), "readable before its TTL");
    wait_until_expired(cache, &key).await;
}

/// Like Redis `SET` without `EX`: the new value has no expiry.
pub async fn overwrite_without_ttl_removes_the_expiry(cache: &dyn Cache) {
    let overwritten = unique("contract.cache");
    let witness = unique("contract.cache");
    set(cache, &overwritten, "expiring", Some(SHORT_TTL)).await;
    // Set later with the same TTL, the witness expires after the overwritten
    // key's first expiry would have.
    set(cache, &witness, "expiring", Some(SHORT_TTL)).await;
    set(cache, &overwritten, "kept", None).await;
    wait_until_expired(cache, &witness).await;
    assert_eq!(get(cache, &overwritten).await, Some(Bytes::from_static(b"kept")));
}

pub async fn delete_reports_whether_the_key_existed(cache: &dyn Cache) {
    let key = unique("contract.cache");
    set(cache, &key, "value", None).await;
    assert!(cache.delete(&key).await.expect("delete answers"), "an existing key");
    assert_eq!(get(cache, &key).await, None);
    assert!(!cache.delete(&key).await.expect("delete answers"), "a deleted key");

    let expired = unique("contract.cache");
    set(cache, &expired, "value", Some(SHORT_TTL)).await;
    wait_until_expired(cache, &expired).await;
    assert!(!cache.delete(&expired).await.expect("delete answers"), "an expired key");
}

async fn throttle(cache: &dyn Cache, key: &str, quota: Quota) -> Throttle {
    cache.throttle(key, quota, 1).await.expect("throttle answers")
}

pub async fn a_cost_takes_that_many_slots_all_or_none(cache: &dyn Cache) {
    let quota = Quota::new(10, Duration::from_secs(3600));
    let key = &unique("contract.throttle");
    let take = |cost| async move { cache.throttle(key, quota, cost).await.expect("throttle answers") };
    let four = take(4).await;
    assert!(four.allowed && four.remaining == 6, "{four:?}");
    let seven = take(7).await;
    assert!(!seven.allowed, "7 of the 6 left: {seven:?}");
    let six = take(6).await;
    assert!(six.allowed && six.remaining == 0, "a denied batch took nothing: {six:?}");
    assert!(!take(1).await.allowed);
    assert!(!cache.throttle(&unique("contract.throttle"), quota, 11).await.unwrap().allowed, "over the limit");
}

/// How far a duration the store reports may trail the ideal one: the time
/// the calls themselves took, on a busy machine.
const SLACK: Duration = Duration::from_secs(1);

pub async fn a_burst_of_limit_is_allowed_then_the_next_is_denied(cache: &dyn Cache) {
    // One slot every 2 s: the whole burst fits well within one interval.
    let quota = Quota::new(5, Duration::from_secs(10));
    let interval = quota.window / quota.limit;
    let key = unique("contract.throttle");
    for expected_remaining in (0..quota.limit).rev() {
        let outcome = throttle(cache, &key, quota).await;
        assert!(outcome.allowed, "request {} of the burst: {outcome:?}", quota.limit - expected_remaining);
        assert_eq!(outcome.remaining, expected_remaining, "{outcome:?}");
        assert_eq!(outcome.retry_after, Duration::ZERO, "{outcome:?}");
        let ideal_reset = interval * (quota.limit - expected_remaining);
        assert!(outcome.reset_after <= ideal_reset && outcome.reset_after + SLACK > ideal_reset, "{outcome:?}");
    }

    let denied = throttle(cache, &key, quota).await;
    assert!(!denied.allowed, "one over the limit: {denied:?}");
    assert_eq!(denied.remaining, 0);
    assert!(denied.retry_after <= interval && denied.retry_after + SLACK > interval, "{denied:?}");
    assert!(denied.reset_after <= quota.window && denied.reset_after + SLACK > quota.window, "{denied:?}");

    let again = throttle(cache, &key, quota).await;
    assert!(!again.allowed && again.retry_after <= denied.retry_after, "a denied request takes no slot: {again:?}");
}

/// Waiting what the store says is the behaviour under test here, so these
/// sleeps are the check itself, not synchronisation.
pub async fn slots_come_back_one_interval_apart(cache: &dyn Cache) {
    // One slot every 50 ms.
    let quota = Quota::new(10, Duration::from_millis(500));
    let key = unique("contract.throttle");
    for _ in 0..quota.limit {
        assert!(throttle(cache, &key, quota).await.allowed, "the burst is allowed");
    }
    let denied = throttle(cache, &key, quota).await;
    assert!(!denied.allowed, "{denied:?}");

    tokio::time::sleep(denied.retry_after).await;
    let back = throttle(cache, &key, quota).await;
    assert!(back.allowed, "a slot is back after retry_after {:?}: {back:?}", denied.retry_after);

    tokio::time::sleep(back.reset_after).await;
    for n in 1..=quota.limit {
        let outcome = throttle(cache, &key, quota).await;
        assert!(outcome.allowed, "request {n} after reset_after {:?}: {outcome:?}", back.reset_after);
    }
    eventually("a slot comes back", || {
        let key = &key;
        async move { throttle(cache, key, quota).await.allowed }
    })
    .await;
}

pub async fn throttled_keys_are_independent(cache: &dyn Cache) {
    let quota = Quota::new(2, Duration::from_secs(3600));
    let (exhausted, fresh) = (unique("contract.throttle"), unique("contract.throttle"));
    for _ in 0..quota.limit {
        assert!(throttle(cache, &exhausted, quota).await.allowed);
    }
    assert!(!throttle(cache, &exhausted, quota).await.allowed, "the first key is used up");

    let other = throttle(cache, &fresh, quota).await;
    assert!(other.allowed, "another key has its own quota: {other:?}");
    assert_eq!(other.remaining, quota.limit - 1);
}

pub async fn concurrent_requests_on_one_key_allow_exactly_the_limit(cache: &dyn Cache) {
    let quota = Quota::new(50, Duration::from_secs(3600));
    let key = unique("contract.throttle");
    let outcomes = join_all((0..200).map(|_| throttle(cache, &key, quota))).await;

    let mut remaining: Vec<u32> = outcomes.iter().filter(|t| t.allowed).map(|t| t.remaining).collect();
    assert_eq!(remaining.len(), 50, "allowed of 200 concurrent requests on a 50/1h quota");
    remaining.sort_unstable();
    let each_once: Vec<u32> = (0..50).collect();
    assert_eq!(remaining, each_once, "every allowed request saw its own count");
    assert!(outcomes.iter().filter(|t| !t.allowed).all(|t| t.remaining == 0 && !t.retry_after.is_zero()));
}

pub async fn a_lease_has_one_holder_until_it_lapses(cache: &dyn Cache) {
    let key = unique("contract.lease");
    assert!(cache.lease(&key, "a", SHORT_TTL).await.expect("lease answers"), "a free lease is taken");
    assert!(!cache.lease(&key, "b", SHORT_TTL).await.expect("lease answers"), "a held lease is refused");
    assert!(cache.lease(&key, "a", SHORT_TTL).await.expect("lease answers"), "the holder renews it");
    assert!(get(cache, &key).await.is_none(), "leases do not show up as values");
    eventually("the lease lapses and b takes it", || async {
        cache.lease(&key, "b", SHORT_TTL).await.expect("lease answers")
    })
    .await;
    assert!(!cache.lease(&key, "a", SHORT_TTL).await.expect("lease answers"), "a lost it");
}

pub async fn a_released_lease_can_be_taken_at_once(cache: &dyn Cache) {
    let key = unique("contract.lease");
    let long = Duration::from_secs(3600);
    assert!(cache.lease(&key, "a", long).await.expect("lease answers"));
    cache.release(&key, "b").await.expect("release answers");
    assert!(!cache.lease(&key, "b", long).await.expect("lease answers"), "only the holder releases");
    cache.release(&key, "a").await.expect("release answers");
    assert!(cache.lease(&key, "b", long).await.expect("lease answers"), "released: b takes it");
    cache.release(&key, "b").await.expect("release answers");
}

pub async fn concurrent_lease_takers_get_one_holder(cache: &dyn Cache) {
    let key = unique("contract.lease");
    let owners: Vec<String> = (0..20).map(|i| format!("owner-{i}")).collect();
    let long = Duration::from_secs(3600);
    let taken = join_all(owners.iter().map(|owner| cache.lease(&key, owner, long))).await;
    let holders = taken.into_iter().filter(|t| *t.as_ref().expect("lease answers")).count();
    assert_eq!(holders, 1, "of 20 concurrent takers");
}

mod embedded {
    use super::*;

    #[tokio::test]
    async fn a_lease_has_one_holder_until_it_lapses() {
        super::a_lease_has_one_holder_until_it_lapses(&MemoryCache::default()).await;
    }

    #[tokio::test]
    async fn a_released_lease_can_be_taken_at_once() {
        super::a_released_lease_can_be_taken_at_once(&MemoryCache::default()).await;
    }

    #[tokio::test]
    async fn concurrent_lease_takers_get_one_holder() {
        super::concurrent_lease_takers_get_one_holder(&MemoryCache::default()).await;
    }

    #[tokio::test]
    async fn set_value_can_be_read_back() {
        super::set_value_can_be_read_back(&MemoryCache::default()).await;
    }

    #[tokio::test]
    async fn missing_key_reads_as_none() {
        super::missing_key_reads_as_none(&MemoryCache::default()).await;
    }

    #[tokio::test]
    async fn overwrite_replaces_the_value() {
        super::overwrite_replaces_the_value(&MemoryCache::default()).await;
    }

    #[tokio::test]
    async fn value_expires_after_its_ttl() {
        super::value_expires_after_its_ttl(&MemoryCache::default()).await;
    }

    #[tokio::test]
    async fn overwrite_without_ttl_removes_the_expiry() {
        super::overwrite_without_ttl_removes_the_expiry(&MemoryCache::default()).await;
    }

    #[tokio::test]
    async fn delete_reports_whether_the_key_existed() {
        super::delete_reports_whether_the_key_existed(&MemoryCache::default()).await;
    }

    #[tokio::test]
    async fn a_burst_of_limit_is_allowed_then_the_next_is_denied() {
        super::a_burst_of_limit_is_allowed_then_the_next_is_denied(&MemoryCache::default()).await;
    }

    #[tokio::test]
    async fn slots_come_back_one_interval_apart() {
        super::slots_come_back_one_interval_apart(&MemoryCache::default()).await;
    }

    #[tokio::test]
    async fn throttled_keys_are_independent() {
        super::throttled_keys_are_independent(&MemoryCache::default()).await;
    }

    #[tokio::test]
    async fn concurrent_requests_on_one_key_allow_exactly_the_limit() {
        super::concurrent_requests_on_one_key_allow_exactly_the_limit(&MemoryCache::default()).await;
    }

    #[tokio::test]
    async fn checks_do_not_interfere_on_one_shared_cache() {
        super::run_all(&MemoryCache::default()).await;
    }
}

/// The same checks on Redis (`REDIS_URL`), each under a key prefix of its
/// own, plus what only a server can show: failing fast while it is down
/// and recovering, without a restart, once it is back.
mod redis {
    use std::{
        net::{Ipv4Addr, SocketAddr, TcpListener},
        process::Stdio,
        time::Duration,
    };

    use lizards_shared::cache::{CacheError, RedisCache, redis::OPERATION_TIMEOUT};
    use tokio::{
        net::TcpStream,
        process::{Child, Command},
        time::Instant,
    };

    use super::*;
    use crate::helpers::{real_url, within};

    /// Slack over the adapter's own timeout for scheduling on a busy machine.
    const FAIL_FAST: Duration = Duration::from_millis(2_500);

    /// A cache under a fresh key prefix, whose keys go when the test passes.
    struct Fresh {
        cache: RedisCache,
        url: String,
        prefix: String,
    }

    impl Fresh {
        async fn connect() -> Option<Fresh> {
            let url = real_url("REDIS_URL")?;
            let prefix = unique("lizards-test.cache");
            let cache = RedisCache::connect(&url, &prefix).await.expect("Redis at REDIS_URL answers");
            Some(Fresh { cache, url, prefix })
        }

        async fn clean_up(self) {
            let client = ::redis::Client::open(self.url).expect("a valid URL");
            let mut connection = client.get_multiplexed_async_connection().await.expect("Redis answers");
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg(format!("{}:*", self.prefix))
                .query_async(&mut connection)
                .await
                .expect("KEYS");
            if !keys.is_empty() {
                let _: () = ::redis::cmd("DEL").arg(keys).query_async(&mut connection).await.expect("DEL");
            }
        }
    }

    #[tokio::test]
    async fn set_value_can_be_read_back() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::set_value_can_be_read_back(&fresh.cache).await;
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn missing_key_reads_as_none() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::missing_key_reads_as_none(&fresh.cache).await;
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn overwrite_replaces_the_value() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::overwrite_replaces_the_value(&fresh.cache).await;
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn value_expires_after_its_ttl() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::value_expires_after_its_ttl(&fresh.cache).await;
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn overwrite_without_ttl_removes_the_expiry() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::overwrite_without_ttl_removes_the_expiry(&fresh.cache).await;
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn delete_reports_whether_the_key_existed() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::delete_reports_whether_the_key_existed(&fresh.cache).await;
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn a_burst_of_limit_is_allowed_then_the_next_is_denied() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::a_burst_of_limit_is_allowed_then_the_next_is_denied(&fresh.cache).await;
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn slots_come_back_one_interval_apart() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::slots_come_back_one_interval_apart(&fresh.cache).await;
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn throttled_keys_are_independent() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::throttled_keys_are_independent(&fresh.cache).await;
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn a_lease_has_one_holder_until_it_lapses() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::a_lease_has_one_holder_until_it_lapses(&fresh.cache).await;
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn a_released_lease_can_be_taken_at_once() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::a_released_lease_can_be_taken_at_once(&fresh.cache).await;
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn concurrent_lease_takers_get_one_holder() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::concurrent_lease_takers_get_one_holder(&fresh.cache).await;
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn concurrent_requests_on_one_key_allow_exactly_the_limit() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::concurrent_requests_on_one_key_allow_exactly_the_limit(&fresh.cache).await;
        fresh.clean_up().await;
    }

    /// Several gateways share one Redis: separate connections (as separate
    /// processes would have) still count against one quota.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn clients_on_separate_connections_share_one_quota() {
        let Some(fresh) = Fresh::connect().await else { return };
        let quota = Quota::new(30, Duration::from_secs(3600));
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(RedisCache::connect(&fresh.url, &fresh.prefix).await.expect("connects"));
        }
        let calls = clients.iter().flat_map(|client| (0..40).map(move |_| client.throttle("shared-quota", quota, 1)));
        let outcomes = join_all(calls).await;
        let allowed = outcomes.into_iter().map(|o| o.expect("throttle answers")).filter(|t| t.allowed).count();
        assert_eq!(allowed, 30, "allowed of 120 requests from three clients on a 30/1h quota");
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn checks_do_not_interfere_on_one_shared_cache() {
        let Some(fresh) = Fresh::connect().await else { return };
        super::run_all(&fresh.cache).await;
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn ping_answers() {
        let Some(fresh) = Fresh::connect().await else { return };
        fresh.cache.ping().await.expect("Redis answers PING");
        fresh.clean_up().await;
    }

    #[tokio::test]
    async fn key_prefixes_keep_users_apart() {
        let Some(one) = Fresh::connect().await else { return };
        let other = Fresh::connect().await.expect("REDIS_URL is set");
        set(&one.cache, "shared-name", "one's", None).await;
        assert_eq!(get(&other.cache, "shared-name").await, None, "another prefix does not see it");
        assert!(!other.cache.delete("shared-name").await.expect("delete answers"));
        assert_eq!(get(&one.cache, "shared-name").await, Some(Bytes::from_static(b"one's")));
        one.clean_up().await;
        other.clean_up().await;
    }

    #[tokio::test]
    async fn connecting_to_a_closed_port_fails_fast() {
        if real_url("REDIS_URL").is_none() {
            return;
        }
        let started = Instant::now();
        let result = RedisCache::connect(&format!("redis://127.0.0.1:{}", free_port()), "x").await;
        assert!(matches!(result, Err(CacheError::Unavailable(_))), "gave {result:?}");
        assert!(started.elapsed() < FAIL_FAST, "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn operations_fail_fast_while_redis_is_down_and_work_again_once_it_is_back() {
        // Gated like the other real runs; needs `redis-server` on PATH.
        if real_url("REDIS_URL").is_none() {
            return;
        }
        let port = free_port();
        let mut server = OwnRedis::start(port).await;
        let cache = RedisCache::connect(&server.url(), &unique("lizards-test.cache")).await.expect("connects");
        set(&cache, "before", "outage", None).await;

        server.stop().await;
        for (operation, result, took) in timed_operations(&cache).await {
            assert!(matches!(result, Err(CacheError::Unavailable(_))), "{operation} while down gave {result:?}");
            assert!(took < FAIL_FAST, "{operation} took {took:?} to fail, over {OPERATION_TIMEOUT:?}");
        }

        let _server = OwnRedis::start(port).await;
        eventually("the cache reconnects", || async { cache.ping().await.is_ok() }).await;
        set(&cache, "after", "outage", Some(Duration::from_secs(60))).await;
        assert_eq!(get(&cache, "after").await, Some(Bytes::from_static(b"outage")));
        assert!(cache.delete("after").await.expect("delete answers"));
    }

    #[tokio::test]
    async fn operations_time_out_while_redis_hangs_and_work_again_once_it_answers() {
        if real_url("REDIS_URL").is_none() {
            return;
        }
        let server = OwnRedis::start(free_port()).await;
        let cache = RedisCache::connect(&server.url(), &unique("lizards-test.cache")).await.expect("connects");
        set(&cache, "before", "hang", None).await;

        // A stopped process keeps its socket open but never answers: the
        // response timeout, not a refused connection, has to end each call.
        server.signal("STOP");
        for (operation, result, took) in timed_operations(&cache).await {
            assert!(matches!(result, Err(CacheError::Unavailable(_))), "{operation} while hung gave {result:?}");
            assert!(took < FAIL_FAST, "{operation} took {took:?} to fail, over {OPERATION_TIMEOUT:?}");
        }

        // Timed-out commands may still run once Redis resumes (the DELETE
        // above, say): only what is written afterwards is checked.
        server.signal("CONT");
        eventually("the cache answers again", || async { cache.ping().await.is_ok() }).await;
        set(&cache, "after", "hang", None).await;
        assert_eq!(get(&cache, "after").await, Some(Bytes::from_static(b"hang")));
    }

    /// Every operation once, with its result and how long it took.
    async fn timed_operations(cache: &RedisCache) -> Vec<(&'static str, Result<(), CacheError>, Duration)> {
        let mut results = Vec::new();
        let started = Instant::now();
        let result = cache.get("before").await.map(drop);
        results.push(("get", result, started.elapsed()));
        let started = Instant::now();
        let result = cache.set("key", Bytes::from_static(b"v"), None).await;
        results.push(("set", result, started.elapsed()));
        let started = Instant::now();
        let result = cache.delete("before").await.map(drop);
        results.push(("delete", result, started.elapsed()));
        let started = Instant::now();
        let result = cache.ping().await;
        results.push(("ping", result, started.elapsed()));
        let started = Instant::now();
        let result = cache.throttle("quota", Quota::new(1, Duration::from_secs(1)), 1).await.map(drop);
        results.push(("throttle", result, started.elapsed()));
        results
    }

    /// A port nothing listens on (the OS just handed it out and it was
    /// released again).
    fn free_port() -> u16 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port");
        listener.local_addr().expect("bound address").port()
    }

    /// A throwaway `redis-server` this test may stop, unlike the shared one.
    struct OwnRedis {
        port: u16,
        child: Child,
    }

    impl OwnRedis {
        async fn start(port: u16) -> OwnRedis {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no"])
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server is installed (apt-get install redis-server)");
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            eventually("the own redis-server listens", || async move { TcpStream::connect(addr).await.is_ok() }).await;
            OwnRedis { port, child }
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        /// Sends `signal` (`STOP`, `CONT`) to the server process.
        fn signal(&self, signal: &str) {
            let pid = self.child.id().expect("redis-server is running");
            let status = std::process::Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status()
                .expect("kill(1) runs");
            assert!(status.success(), "kill -{signal} {pid} failed");
        }

        /// Kills the server and waits until it has exited.
        async fn stop(&mut self) {
            within("redis-server to exit", self.child.kill()).await.expect("redis-server is killed");
        }
    }
}
