//! The embedded cache's byte bound, measured by the values really alive.
//!
//! A binary of its own, with this one test, on purpose: moka frees an
//! evicted value through epoch-based reclamation (crossbeam-epoch), once no
//! thread of the process is inside one of its maps. Beside other tests, a
//! thread of theirs paused inside a map holds the epoch back, and evicted
//! values outlive their eviction for a moment: one run of the whole suite
//! counted 18 values alive at once. Alone in its process the count is the
//! cache's own, 16 in every one of 300 runs (100 of them with both cores
//! busy): the 15 that fit and the one being written.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use lizards_shared::cache::{Cache, MemoryCache};

/// A value that counts the live copies of its kind: what the cache really
/// keeps in memory, not what it says it keeps.
struct Counted(Vec<u8>, Arc<AtomicUsize>);

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn filled_past_its_bound_it_keeps_the_recent_entries_and_frees_the_rest() {
    const BOUND: u64 = 1024 * 1024;
    const VALUE: usize = 64 * 1024;
    let cache = MemoryCache::new(BOUND);
    let live = Arc::new(AtomicUsize::new(0));
    let mut most = 0;
    for i in 0..64 {
        live.fetch_add(1, Ordering::SeqCst);
        let value = Bytes::from_owner(Counted(vec![i as u8; VALUE], live.clone()));
        cache.set(&format!("body:{i}"), value, Some(Duration::from_secs(3600))).await.unwrap();
        most = most.max(live.load(Ordering::SeqCst));
    }
    // Four times the bound went in; at most the bound stays.
    assert!(cache.weighed_bytes() <= BOUND, "{} bytes held", cache.weighed_bytes());
    // Values really freed all along, not only unaccounted: at most the one
    // being written beyond the bound.
    assert!(most * VALUE <= BOUND as usize + VALUE, "{most} values of 64 KiB in memory at once");
    // The most recent writes survive, the oldest went.
    for i in 56..64 {
        let value = cache.get(&format!("body:{i}")).await.unwrap();
        assert_eq!(value.map(|v| v[0]), Some(i as u8), "recent entry {i} evicted");
    }
    assert_eq!(cache.get("body:0").await.unwrap(), None);
    let reported = cache.metrics().expect("first role reports the cache");
    assert!(cache.metrics().is_none(), "a second role must not report it again");
    let text = prometheus::TextEncoder::new().encode_to_string(&reported.collect()).unwrap();
    let evicted: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("lizards_cache_evictions_total{reason=\"size\"} "))
        .and_then(|n| n.parse().ok())
        .expect("evictions counted");
    assert!(evicted >= 48, "{evicted} size evictions\n{text}");
    assert!(text.contains("lizards_cache_max_bytes 1048576"), "{text}");
}
