//! The cache port (Redis): keyed bytes with optional expiry, used for
//! sessions, caching, rate-limit and lease state.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use self::redis::RedisCache;
pub use memory::MemoryCache;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error("cache unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Cache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError>;
    /// Stores `value`; it expires after `ttl` when given.
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), CacheError>;
    /// Returns whether the key existed.
    async fn delete(&self, key: &str) -> Result<bool, CacheError>;
    async fn ping(&self) -> Result<(), CacheError>;
}
