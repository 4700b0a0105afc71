//! What every Lizards test suite needs (dev-dependency only): waits bounded
//! by a deadline instead of sleeps, unique names so suites can share one
//! real server, the URL of a real server that CI must provide, and a
//! WebSocket client speaking Lizards' frames.

pub mod fixture;
pub mod ws;

use std::{future::Future, time::Duration};

use tokio::time::{Instant, sleep, timeout};

/// How long any single expected event may take, even on a busy CI machine.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How often [`eventually`] re-checks its condition.
const POLL: Duration = Duration::from_millis(20);

/// `prefix` with a random suffix, unique across test runs and processes.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}.{}", uuid::Uuid::new_v4().simple())
}

/// Awaits `future`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(what, DEADLINE, condition).await;
}

/// Polls `condition` until it holds, failing the test after `deadline`.
pub async fn eventually_within<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < deadline, "timed out after {deadline:?} waiting until {what}");
        sleep(POLL).await;
    }
}

/// The URL of a real server from the environment variable `var`. Missing
/// in CI (`CI` set) fails the test: CI starts every server
/// (`scripts/services.sh`). Missing elsewhere returns `None`, and the
/// caller skips its real-server run (saying so).
pub fn real_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set in CI: run scripts/services.sh and export what it prints")
        }
        _ => {
            eprintln!("{var} not set: skipping the real-server run (eval \"$(scripts/services.sh)\")");
            None
        }
    }
}
