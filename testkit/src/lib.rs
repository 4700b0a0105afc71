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
///
/// For RabbitMQ and PostgreSQL it also holds [`servers`] shared until the
/// process exits, so a test that restarts them never does it under this one.
pub fn real_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => {
            if RESTARTABLE.contains(&var) {
                servers::hold(servers::Use::Shared);
            }
            Some(url)
        }
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set in CI: run scripts/services.sh and export what it prints")
        }
        _ => {
            eprintln!("{var} not set: skipping the real-server run (eval \"$(scripts/services.sh)\")");
            None
        }
    }
}

/// The servers fault tests stop and start again.
const RESTARTABLE: [&str; 2] = ["AMQP_URL", "DATABASE_URL"];

/// A lock across processes (`flock` on one file in the temp directory)
/// between the tests that restart the shared RabbitMQ and PostgreSQL
/// (exclusive) and every test that uses them (shared). Whatever runs the
/// tests (`cargo test` binaries one after another, nextest one process per
/// test), a restart never happens under another test.
pub mod servers {
    use std::{fs::File, sync::Mutex};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Use {
        Shared,
        /// The caller stops and starts the servers.
        Exclusive,
    }

    /// The lock this process holds, kept until it exits.
    static HELD: Mutex<Option<(File, Use)>> = Mutex::new(None);

    /// Takes the lock for the rest of the process, waiting for tests in
    /// other processes that hold it the other way. A process that already
    /// holds it keeps what it has.
    pub fn hold(mode: Use) {
        let mut held = HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.is_some() {
            return;
        }
        let path = std::env::temp_dir().join("lizards-test-servers.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()));
        let locked = match mode {
            Use::Shared => file.lock_shared(),
            Use::Exclusive => file.lock(),
        };
        locked.unwrap_or_else(|error| panic!("cannot lock {}: {error}", path.display()));
        *held = Some((file, mode));
    }
}
