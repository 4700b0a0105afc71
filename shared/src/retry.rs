//! The one retry policy of every reconnect and redo loop: exponential with
//! full jitter (backon), so instances that lost the same server do not all
//! come back in lockstep when it returns.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::shutdown::Shutdown;

/// Delays between attempts, growing from `min` to `max` with jitter, until
/// [`Backoff::reset`] after a success.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let builder =
            ExponentialBuilder::default().with_jitter().with_min_delay(min).with_max_delay(max).without_max_times();
        Backoff { delays: builder.build(), builder, max }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // Without a maximum number of attempts the iterator never ends.
        self.delays.next().unwrap_or(self.max)
    }

    /// Sleeps the next delay; `false` when shutdown comes first.
    pub async fn wait(&mut self, shutdown: &Shutdown) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(self.next_delay()) => true,
        }
    }

    /// Starts again from the minimum (after an attempt succeeded).
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_maximum_with_jitter_and_reset() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let mut backoff = Backoff::new(min, max);
        let first = backoff.next_delay();
        // Full jitter adds up to the delay itself on top of it.
        assert!(first >= min && first < min * 2, "{first:?}");
        let later: Vec<Duration> = (0..20).map(|_| backoff.next_delay()).collect();
        assert!(later.iter().all(|d| *d <= max * 2), "{later:?}");
        assert!(later.last().is_some_and(|d| *d >= max), "{later:?}");
        backoff.reset();
        assert!(backoff.next_delay() < min * 2);
    }

    #[test]
    fn two_instances_do_not_retry_in_lockstep() {
        let delays = || {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            (0..8).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_ne!(delays(), delays());
    }
}
