//! Per-connection limits: a token bucket for client messages and a sliding
//! window of error-causing frames.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket { rate: rate.into(), burst: burst.max(1).into(), tokens: burst.max(1).into(), last: now }
    }

    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct ErrorBudget {
    limit: usize,
    window: Duration,
    times: VecDeque<Instant>,
}

impl ErrorBudget {
    pub fn new(limit: usize, window: Duration) -> ErrorBudget {
        ErrorBudget { limit: limit.max(1), window, times: VecDeque::new() }
    }

    /// Records an error; `true` once `limit` errors fell within the window.
    pub fn record(&mut self, now: Instant) -> bool {
        while self.times.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.window) {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.times.len() >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(20, 50, start);
        assert_eq!((0..60).filter(|_| bucket.try_take(start)).count(), 50);
        let later = start + Duration::from_millis(500);
        assert_eq!((0..60).filter(|_| bucket.try_take(later)).count(), 10);
    }

    #[test]
    fn budget_trips_on_the_tenth_error_within_the_window() {
        let start = Instant::now();
        let mut budget = ErrorBudget::new(10, Duration::from_secs(10));
        for i in 0..9 {
            assert!(!budget.record(start + Duration::from_millis(i)));
        }
        assert!(budget.record(start + Duration::from_millis(9)));
        let mut budget = ErrorBudget::new(10, Duration::from_secs(10));
        for i in 0..20 {
            assert!(!budget.record(start + Duration::from_secs(2 * i)), "spread out errors never trip");
        }
    }
}
