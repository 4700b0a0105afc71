//! Small tools every contract suite uses: unique names, so the suites can
//! share one real server, and waits bounded by a deadline.

use std::{future::Future, time::Duration};

use tokio::time::{Instant, sleep, timeout};

/// How long any single expected event may take, even on a busy CI machine.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// How often `eventually` re-checks its condition.
const POLL: Duration = Duration::from_millis(10);

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
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < DEADLINE, "timed out after {DEADLINE:?} waiting until {what}");
        sleep(POLL).await;
    }
}

/// The URL of a real server for a contract run, from the environment.
/// Missing in CI (`CI` set) fails the test: CI starts every server
/// (`scripts/services.sh`). Missing elsewhere skips the real run.
pub fn real_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set in CI: run scripts/services.sh and export what it prints")
        }
        _ => {
            eprintln!("{var} not set: skipping the real-server contract run (eval \"$(scripts/services.sh)\")");
            None
        }
    }
}
