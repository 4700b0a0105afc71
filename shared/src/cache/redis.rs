//! The cache port on Redis, through one auto-reconnecting
//! [`ConnectionManager`]. Every operation is bounded by
//! [`OPERATION_TIMEOUT`]: while Redis is down callers get
//! `CacheError::Unavailable` quickly instead of waiting on reconnect
//! attempts, and once it is back the next operations reconnect by
//! themselves.
//!
//! [`connection_manager`] and [`bounded`] are public so other Redis-backed
//! state (the registry, leases) gets the same timeouts and reconnection.

use std::{future::Future, sync::LazyLock, time::Duration};

use ::redis::{
    AsyncCommands, RedisError, Script, SetExpiry, SetOptions,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use async_trait::async_trait;
use bytes::Bytes;

use super::{Cache, CacheError, Quota, Throttle};

/// Longest one Redis operation may take, reconnecting included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection attempt gives up after this long (a host that drops
/// packets would otherwise hold it for the OS's TCP timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Reconnect attempts per outage detection, with jittered exponential
/// backoff. Kept small: a later operation starts a new round, so a long
/// outage costs nothing here, and recovery is noticed within a fraction of
/// a second of Redis coming back.
const RECONNECT_RETRIES: usize = 2;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisUnavailable {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis did not answer within {0:?}")]
    TimedOut(Duration),
}

impl From<RedisUnavailable> for CacheError {
    fn from(error: RedisUnavailable) -> CacheError {
        CacheError::Unavailable(error.to_string())
    }
}

/// Connects to `url` (`redis://`, `rediss://`, `unix://`) with Lizards'
/// timeouts and reconnection policy; fails if Redis does not answer within
/// [`OPERATION_TIMEOUT`].
pub async fn connection_manager(url: &str) -> Result<ConnectionManager, RedisUnavailable> {
    let client = ::redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(OPERATION_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_min_delay(RECONNECT_MIN_DELAY)
        .set_max_delay(RECONNECT_MAX_DELAY);
    bounded(ConnectionManager::new_with_config(client, config)).await
}

/// Awaits a Redis operation for at most [`OPERATION_TIMEOUT`].
pub async fn bounded<T>(operation: impl Future<Output = Result<T, RedisError>>) -> Result<T, RedisUnavailable> {
    match tokio::time::timeout(OPERATION_TIMEOUT, operation).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(RedisUnavailable::TimedOut(OPERATION_TIMEOUT)),
    }
}

/// [`Cache`] on Redis. Cloning shares the connection.
#[derive(Clone)]
pub struct RedisCache {
    connection: ConnectionManager,
    key_prefix: String,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache").field("key_prefix", &self.key_prefix).finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Connects to `url`. Every key is stored as `{key_prefix}:{key}` (as
    /// is when the prefix is empty), so that several users, or parallel
    /// tests, can share one Redis.
    pub async fn connect(url: &str, key_prefix: &str) -> Result<RedisCache, CacheError> {
        let connection = connection_manager(url).await?;
        Ok(RedisCache { connection, key_prefix: key_prefix.to_string() })
    }

    fn lease_key(&self, key: &str) -> String {
        self.key(&format!("lease:{key}"))
    }

    fn key(&self, key: &str) -> String {
        if self.key_prefix.is_empty() { key.to_string() } else { format!("{}:{key}", self.key_prefix) }
    }
}

/// Longest expiry sent to Redis: it refuses one that overflows its clock
/// (`Duration::MAX`, say), and a century is "never" for a cache.
const MAX_TTL_MILLIS: u64 = 100 * 365 * 86_400 * 1000;

/// `PX` takes whole milliseconds, at least one: a shorter TTL still
/// expires (almost) at once instead of being refused by Redis.
fn expiry(ttl: Duration) -> SetExpiry {
    SetExpiry::PX(ttl_millis(ttl))
}

fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).clamp(1, MAX_TTL_MILLIS)
}

/// One GCRA step (see the module docs of [`super`]), atomic because Redis
/// runs a script alone. It reads Redis' own clock, so every gateway sharing
/// this Redis agrees on "now". Same integer microsecond arithmetic as the
/// memory adapter; the numbers stay below 2^53, exact in Lua's doubles.
///
/// KEYS[1]: the key; ARGV[1]: emission interval T (µs); ARGV[2]: limit.
/// Returns {allowed (0|1), remaining, reset_after (µs), retry_after (µs)}.
const GCRA_LUA: &str = r#"
local interval = tonumber(ARGV[1])
local window = interval * tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + interval * tonumber(ARGV[3])
local allow_at = new_tat - window
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
local ahead = new_tat - now
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(ahead / 1000))
return {1, math.floor((window - ahead) / interval), ahead, 0}
"#;

/// Loaded into Redis on first use and then run by its hash (`EVALSHA`,
/// reloading by itself if Redis lost its script cache).
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA_LUA));

/// Takes or extends a lease atomically: KEYS[1] the lease, ARGV[1] the
/// owner, ARGV[2] the TTL in ms. Returns 1 when `owner` holds it now.
const LEASE_LUA: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Deletes a lease only if `owner` (ARGV[1]) holds it.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"#;

static LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(LEASE_LUA));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let mut connection = self.connection.clone();
        let value: Option<Vec<u8>> = bounded(connection.get(self.key(key))).await?;
        Ok(value.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let key = self.key(key);
        // A plain SET also clears any earlier expiry, as the port promises.
        let options = match ttl {
            Some(ttl) => SetOptions::default().with_expiration(expiry(ttl)),
            None => SetOptions::default(),
        };
        let () = bounded(connection.set_options(key, value.as_ref(), options)).await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let mut connection = self.connection.clone();
        let removed: u64 = bounded(connection.del(self.key(key))).await?;
        Ok(removed > 0)
    }

    async fn ping(&self) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let _: String = bounded(::redis::cmd("PING").query_async(&mut connection)).await?;
        Ok(())
    }

    async fn throttle(&self, key: &str, quota: Quota, cost: u32) -> Result<Throttle, CacheError> {
        let mut connection = self.connection.clone();
        let mut invocation = GCRA.key(self.key(key));
        invocation.arg(quota.interval_micros()).arg(quota.limit.max(1)).arg(cost.max(1));
        let (allowed, remaining, reset_after, retry_after): (u8, u32, u64, u64) =
            bounded(invocation.invoke_async(&mut connection)).await?;
        Ok(Throttle {
            allowed: allowed == 1,
            remaining,
            reset_after: Duration::from_micros(reset_after),
            retry_after: Duration::from_micros(retry_after),
        })
    }

    async fn lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, CacheError> {
        let mut connection = self.connection.clone();
        let mut invocation = LEASE.key(self.lease_key(key));
        invocation.arg(owner).arg(ttl_millis(ttl));
        let held: u8 = bounded(invocation.invoke_async(&mut connection)).await?;
        Ok(held == 1)
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let mut invocation = RELEASE.key(self.lease_key(key));
        invocation.arg(owner);
        let _: u8 = bounded(invocation.invoke_async(&mut connection)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_whole_milliseconds_and_never_zero() {
        assert!(matches!(expiry(Duration::from_micros(10)), SetExpiry::PX(1)));
        assert!(matches!(expiry(Duration::from_millis(1500)), SetExpiry::PX(1500)));
        assert!(matches!(expiry(Duration::MAX), SetExpiry::PX(MAX_TTL_MILLIS)));
    }
}
