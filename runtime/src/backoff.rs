//! The retry backoff of every loop that reconnects or retries: etcd registration and watches,
//! the chain source, a gateway redialing an agent, a listener whose `accept` fails.
//!
//! Delays start at `min` and double per consecutive failure up to `max`; a success
//! ([`Backoff::reset`]) starts over. With jitter each delay is drawn from `[d/2, d]`, so that
//! many processes retrying at once (every agent after an etcd restart) spread out.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff; see the module docs.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: bool,
    next: Duration,
}

impl Backoff {
    /// From `min` doubling to `max`, without jitter.
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            jitter: false,
            next: min,
        }
    }

    /// The background loops' backoff: 100 ms doubling to 5 s, jittered.
    pub const fn retry() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).with_jitter()
    }

    /// The same, with each delay drawn from `[d/2, d]`.
    pub const fn with_jitter(mut self) -> Backoff {
        self.jitter = true;
        self
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The delay before the next attempt (and one failure more counted).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        if !self.jitter {
            return d;
        }
        use std::hash::{BuildHasher, Hasher};
        let draw = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            % 1000;
        d / 2 + d / 2 * draw as u32 / 1000
    }

    /// Sleeps for the next delay; false if `shutdown` fired first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = shutdown.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_its_bound_and_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let ms: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        let mut b = Backoff::retry();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
        assert!(b.next_delay() >= Duration::from_millis(2500));
    }
}
