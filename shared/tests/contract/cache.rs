//! Behaviour every `Cache` adapter must show (Redis): keyed bytes, optional
//! expiry, delete reporting whether the key existed. Keys are unique per
//! check, so the suite can share one real server.

use std::time::Duration;

use bytes::Bytes;
use lizards_shared::cache::{Cache, MemoryCache};

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

mod embedded {
    use super::*;

    #[tokio::test]
    async fn set_value_can_be_read_back() {
        super::set_value_can_be_read_back(&MemoryCache::new()).await;
    }

    #[tokio::test]
    async fn missing_key_reads_as_none() {
        super::missing_key_reads_as_none(&MemoryCache::new()).await;
    }

    #[tokio::test]
    async fn overwrite_replaces_the_value() {
        super::overwrite_replaces_the_value(&MemoryCache::new()).await;
    }

    #[tokio::test]
    async fn value_expires_after_its_ttl() {
        super::value_expires_after_its_ttl(&MemoryCache::new()).await;
    }

    #[tokio::test]
    async fn overwrite_without_ttl_removes_the_expiry() {
        super::overwrite_without_ttl_removes_the_expiry(&MemoryCache::new()).await;
    }

    #[tokio::test]
    async fn delete_reports_whether_the_key_existed() {
        super::delete_reports_whether_the_key_existed(&MemoryCache::new()).await;
    }

    #[tokio::test]
    async fn checks_do_not_interfere_on_one_shared_cache() {
        super::run_all(&MemoryCache::new()).await;
    }
}
