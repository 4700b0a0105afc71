//! One supervisor per role: every background worker (persister, alert
//! evaluator, live feed, pollers, ...) runs under it, so a worker that
//! panics or returns before shutdown cannot leave the process up with its
//! work silently stopped.
//!
//! An unexpected exit is logged with its cause, counted in
//! `lizards_worker_exits_total{worker}` and turns readiness red while the
//! worker is down. Then, by the worker's [`Policy`], it is restarted after a
//! jittered backoff, or the role stops: the shared shutdown token is
//! cancelled and [`Supervisor::stopped`] reports the failure, which the
//! binary turns into a non-zero exit.

use std::{
    collections::{BTreeSet, HashMap},
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus::{IntCounterVec, Registry};
use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;

use crate::{retry::Backoff, shutdown::Shutdown, telemetry};

/// Restart delays: from 100 ms up to 30 s, reset after a run that lasted
/// longer than the maximum.
const RESTART_MIN: Duration = Duration::from_millis(100);
const RESTART_MAX: Duration = Duration::from_secs(30);

/// What happens when a worker ends before shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Start it again after a backoff: its state lives elsewhere (a queue,
    /// a database), so a fresh run carries on where the last one stopped.
    Restart,
    /// Stop the role (and the process): the worker cannot be rebuilt in
    /// place, and an orchestrator restarting the process is the safe fix.
    Stop,
}

/// A worker that ended before shutdown under [`Policy::Stop`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {role}'s {worker} worker {cause}")]
pub struct WorkerFailure {
    pub role: &'static str,
    pub worker: Arc<str>,
    pub cause: String,
}

#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    role: &'static str,
    shutdown: Shutdown,
    exits: IntCounterVec,
    tasks: TaskTracker,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    down: BTreeSet<Arc<str>>,
    running: HashMap<Arc<str>, AbortHandle>,
    failure: Option<WorkerFailure>,
}

impl Supervisor {
    /// `role` names the role in logs and failures ("provider");
    /// the exit counter is registered in `registry`.
    pub fn new(role: &'static str, registry: &Registry, shutdown: Shutdown) -> Supervisor {
        let exits = telemetry::counter_vec(
            registry,
            "lizards_worker_exits_total",
            "Background workers that ended before shutdown (panicked, returned or were aborted)",
            &["worker"],
        );
        let inner = Inner { role, shutdown, exits, tasks: TaskTracker::new(), state: Mutex::default() };
        Supervisor { inner: Arc::new(inner) }
    }

    /// Runs the worker `start(shutdown)` returns until shutdown; `start` is
    /// called again for each restart. A worker may return `()` or a `Result`,
    /// whose error is a failure even during shutdown.
    pub fn spawn<F, Fut>(&self, worker: impl Into<Arc<str>>, policy: Policy, mut start: F)
    where
        F: FnMut(Shutdown) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Outcome + Send,
    {
        let (supervisor, worker) = (self.clone(), worker.into());
        // The series exists at 0 from the start, so the first exit is a rate.
        self.inner.exits.with_label_values(&[worker.as_ref()]);
        self.inner.tasks.spawn(async move {
            let mut backoff = Backoff::new(RESTART_MIN, RESTART_MAX);
            loop {
                let started = tokio::time::Instant::now();
                let task = tokio::spawn(start(supervisor.inner.shutdown.clone()));
                supervisor.state().running.insert(worker.clone(), task.abort_handle());
                let result = task.await;
                supervisor.state().running.remove(&worker);
                let shutting_down = supervisor.inner.shutdown.is_cancelled();
                let cause = match result.map(Outcome::failure) {
                    Ok(Some(failure)) => format!("failed: {failure}"),
                    Ok(None) if shutting_down => return,
                    Ok(None) => "returned before shutdown".to_string(),
                    Err(error) if error.is_panic() => format!("panicked: {}", panic_message(error.into_panic())),
                    Err(_) => "was aborted".to_string(),
                };
                if !supervisor.exited(&worker, policy, cause) {
                    return;
                }
                if started.elapsed() > RESTART_MAX {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = supervisor.inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                tracing::info!(role = supervisor.inner.role, %worker, "restarting worker");
                supervisor.state().down.remove(&worker);
            }
        });
    }

    /// Runs a worker that can run only once (it owns a listener or a
    /// consumer) under [`Policy::Stop`].
    pub fn spawn_once<Fut>(&self, worker: impl Into<Arc<str>>, future: Fut)
    where
        Fut: Future + Send + 'static,
        Fut::Output: Outcome + Send,
    {
        let mut future = Some(future);
        self.spawn(worker, Policy::Stop, move |_| future.take().expect("a Stop worker is started once"));
    }

    /// Records an unexpected exit; returns whether to restart.
    fn exited(&self, worker: &Arc<str>, policy: Policy, cause: String) -> bool {
        let role = self.inner.role;
        self.inner.exits.with_label_values(&[worker.as_ref()]).inc();
        let mut state = self.state();
        state.down.insert(worker.clone());
        match policy {
            Policy::Restart => {
                tracing::error!(role, %worker, %cause, "worker ended unexpectedly; restarting it after a backoff");
                true
            }
            Policy::Stop => {
                tracing::error!(role, %worker, %cause, "worker ended unexpectedly; stopping the {role}");
                state.failure.get_or_insert(WorkerFailure { role, worker: worker.clone(), cause });
                drop(state);
                self.inner.shutdown.cancel();
                false
            }
        }
    }

    /// The role it supervises.
    pub fn role(&self) -> &'static str {
        self.inner.role
    }

    /// Readiness: `Err` names the workers that are down.
    pub fn check(&self) -> Result<(), String> {
        let state = self.state();
        if state.down.is_empty() {
            return Ok(());
        }
        let down: Vec<&str> = state.down.iter().map(AsRef::as_ref).collect();
        Err(format!("{} worker(s) down: {}", self.inner.role, down.join(", ")))
    }

    /// Waits (after shutdown) until every worker has stopped; the first
    /// [`Policy::Stop`] failure, if any.
    pub async fn stopped(&self) -> Result<(), WorkerFailure> {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.state().failure.clone().map_or(Ok(()), Err)
    }

    /// Fault hook for tests: aborts the running `worker` as a crash would.
    /// Returns whether it was running.
    pub fn abort(&self, worker: &str) -> bool {
        self.state().running.get(worker).map(AbortHandle::abort).is_some()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a worker's future returns: `()`, or a `Result` whose error says
/// why it failed.
pub trait Outcome {
    fn failure(self) -> Option<String>;
}

impl Outcome for () {
    fn failure(self) -> Option<String> {
        None
    }
}

impl<E: std::fmt::Display> Outcome for Result<(), E> {
    fn failure(self) -> Option<String> {
        self.err().map(|error| error.to_string())
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload.downcast_ref::<&str>().map_or("(no message)".to_string(), |m| (*m).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn supervisor() -> (Supervisor, Registry, Shutdown) {
        let (registry, shutdown) = (Registry::new(), Shutdown::new());
        (Supervisor::new("provider", &registry, shutdown.clone()), registry, shutdown)
    }

    fn exits(registry: &Registry, worker: &str) -> u64 {
        let families = registry.gather();
        let family = families.iter().find(|f| f.name() == "lizards_worker_exits_total");
        family
            .into_iter()
            .flat_map(|f| f.get_metric())
            .filter(|m| m.get_label().iter().any(|l| l.value() == worker))
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// A worker that counts its starts and panics on its first run.
    fn panics_once(starts: Arc<AtomicUsize>) -> impl FnMut(Shutdown) -> futures::future::BoxFuture<'static, ()> {
        move |shutdown| {
            let starts = starts.clone();
            Box::pin(async move {
                if starts.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("injected");
                }
                shutdown.cancelled().await;
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_restart_worker_is_counted_reported_down_and_started_again() {
        let (supervisor, registry, shutdown) = supervisor();
        let starts = Arc::new(AtomicUsize::new(0));
        supervisor.spawn("persister", Policy::Restart, panics_once(starts.clone()));
        // Let the first run panic; time is paused, so no restart yet.
        while exits(&registry, "persister") == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(supervisor.check(), Err("provider worker(s) down: persister".to_string()));
        tokio::time::sleep(RESTART_MIN * 2).await;
        while starts.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(supervisor.check(), Ok(()));
        assert_eq!(exits(&registry, "persister"), 1);
        shutdown.cancel();
        assert!(supervisor.stopped().await.is_ok());
        assert_eq!(exits(&registry, "persister"), 1, "a stop at shutdown is not an exit");
    }

    #[tokio::test]
    async fn a_stop_worker_that_returns_cancels_shutdown_and_reports_the_failure() {
        let (supervisor, registry, shutdown) = supervisor();
        supervisor.spawn("live feed", Policy::Stop, |_| async {});
        shutdown.cancelled().await;
        let failure = supervisor.stopped().await.expect_err("the worker failed");
        assert_eq!(failure.to_string(), "the provider's live feed worker returned before shutdown");
        assert_eq!(exits(&registry, "live feed"), 1);
        assert!(supervisor.check().is_err(), "readiness stays red");
    }

    #[tokio::test]
    async fn abort_is_a_crash_and_stops_a_stop_worker() {
        let (supervisor, _registry, shutdown) = supervisor();
        supervisor.spawn("grpc", Policy::Stop, |running: Shutdown| async move { running.cancelled().await });
        while !supervisor.abort("grpc") {
            tokio::task::yield_now().await;
        }
        shutdown.cancelled().await;
        let failure = supervisor.stopped().await.expect_err("aborted");
        assert_eq!(failure.cause, "was aborted");
        assert!(!supervisor.abort("grpc"), "nothing left to abort");
    }
}
