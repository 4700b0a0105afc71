//! Circuit breaker per source: `failure_threshold` failures
//! within `failure_window` (consecutive or not) open it; after
//! `recovery_timeout` it lets `half_open_max_calls` trial calls through;
//! `success_threshold` consecutive successes close it again, while
//! `half_open_failures` failed trials open it once more.
//!
//! The breaker is plain state driven by the caller's clock (`Instant`
//! arguments), so every transition is tested without waiting.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failure_threshold: usize,
    pub failure_window: Duration,
    pub recovery_timeout: Duration,
    pub half_open_max_calls: usize,
    pub success_threshold: usize,
    pub half_open_failures: usize,
}

impl Default for BreakerSettings {
    /// The defaults documented in docs/sources.md.
    fn default() -> BreakerSettings {
        BreakerSettings {
            failure_threshold: 5,
            failure_window: Duration::from_secs(60),
            recovery_timeout: Duration::from_secs(30),
            half_open_max_calls: 3,
            success_threshold: 3,
            half_open_failures: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub const ALL: [BreakerState; 3] = [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen];

    /// Name in `/sources/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// Value of the breaker-state gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: BreakerState,
    /// Times of the failures still inside the window (closed state).
    failures: VecDeque<Instant>,
    opened_at: Option<Instant>,
    /// Half-open: trial calls out right now, and the outcomes so far.
    trials: usize,
    trial_successes: usize,
    trial_failures: usize,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            state: BreakerState::Closed,
            failures: VecDeque::new(),
            opened_at: None,
            trials: 0,
            trial_successes: 0,
            trial_failures: 0,
        }
    }

    /// The state at `now` (an open breaker whose recovery timeout has
    /// passed is half-open).
    pub fn state(&mut self, now: Instant) -> BreakerState {
        if self.state == BreakerState::Open
            && self.opened_at.is_some_and(|at| now.duration_since(at) >= self.settings.recovery_timeout)
        {
            self.state = BreakerState::HalfOpen;
            (self.trials, self.trial_successes, self.trial_failures) = (0, 0, 0);
        }
        self.state
    }

    /// Whether a call may go out at `now`; a half-open breaker counts it as
    /// one of its trial calls.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.trials < self.settings.half_open_max_calls => {
                self.trials += 1;
                true
            }
            BreakerState::HalfOpen => false,
        }
    }

    pub fn record_success(&mut self, now: Instant) {
        if self.state(now) == BreakerState::HalfOpen {
            self.trials = self.trials.saturating_sub(1);
            self.trial_successes += 1;
            if self.trial_successes >= self.settings.success_threshold {
                self.close();
            }
        }
    }

    pub fn record_failure(&mut self, now: Instant) {
        match self.state(now) {
            BreakerState::Closed => {
                self.failures.push_back(now);
                while self.failures.front().is_some_and(|at| now.duration_since(*at) > self.settings.failure_window) {
                    self.failures.pop_front();
                }
                if self.failures.len() >= self.settings.failure_threshold {
                    self.open(now);
                }
            }
            BreakerState::HalfOpen => {
                self.trials = self.trials.saturating_sub(1);
                self.trial_failures += 1;
                // A success streak is broken by any failure.
                self.trial_successes = 0;
                if self.trial_failures >= self.settings.half_open_failures {
                    self.open(now);
                }
            }
            BreakerState::Open => {}
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.failures.clear();
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.opened_at = None;
        self.failures.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn breaker() -> (Breaker, Instant) {
        (Breaker::new(BreakerSettings::default()), Instant::now())
    }

    fn fail(breaker: &mut Breaker, at: Instant, times: usize) {
        for _ in 0..times {
            assert!(breaker.allow(at));
            breaker.record_failure(at);
        }
    }

    #[test]
    fn five_failures_within_the_window_open_it_even_with_successes_between() {
        let (mut b, t0) = breaker();
        fail(&mut b, t0, 2);
        b.record_success(t0 + S);
        fail(&mut b, t0 + 10 * S, 2);
        assert_eq!(b.state(t0 + 10 * S), BreakerState::Closed);
        fail(&mut b, t0 + 59 * S, 1);
        assert_eq!(b.state(t0 + 59 * S), BreakerState::Open);
        assert!(!b.allow(t0 + 60 * S), "an open breaker lets nothing through");
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let (mut b, t0) = breaker();
        fail(&mut b, t0, 4);
        fail(&mut b, t0 + 61 * S, 1);
        assert_eq!(b.state(t0 + 61 * S), BreakerState::Closed);
    }

    #[test]
    fn walks_closed_open_half_open_closed() {
        let (mut b, t0) = breaker();
        fail(&mut b, t0, 5);
        assert_eq!(b.state(t0 + 29 * S), BreakerState::Open);
        let t1 = t0 + 30 * S;
        assert_eq!(b.state(t1), BreakerState::HalfOpen, "after the recovery timeout");
        for _ in 0..3 {
            assert!(b.allow(t1), "a trial call");
        }
        assert!(!b.allow(t1), "at most 3 trial calls at once");
        for _ in 0..3 {
            b.record_success(t1);
        }
        assert_eq!(b.state(t1), BreakerState::Closed);
        assert!(b.allow(t1));
        fail(&mut b, t1, 4);
        assert_eq!(b.state(t1), BreakerState::Closed, "the old failures were forgotten");
    }

    #[test]
    fn two_failed_trials_open_it_again() {
        let (mut b, t0) = breaker();
        fail(&mut b, t0, 5);
        let t1 = t0 + 30 * S;
        assert!(b.allow(t1) && b.allow(t1));
        b.record_success(t1);
        b.record_failure(t1);
        assert_eq!(b.state(t1), BreakerState::HalfOpen, "one failed trial is not enough");
        assert!(b.allow(t1), "a finished trial frees its slot");
        b.record_failure(t1);
        assert_eq!(b.state(t1), BreakerState::Open);
        assert_eq!(b.state(t1 + 29 * S), BreakerState::Open, "a fresh recovery timeout");
        assert_eq!(b.state(t1 + 30 * S), BreakerState::HalfOpen);
    }

    #[test]
    fn states_have_names_and_gauge_values() {
        assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
        assert_eq!(
            [BreakerState::Closed, BreakerState::HalfOpen, BreakerState::Open].map(BreakerState::gauge),
            [0, 1, 2]
        );
    }
}
