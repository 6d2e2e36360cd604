//! The reassignment throttle (Kafka's `follower.replication.throttled.rate`): a replica that a
//! reassignment is adding copies its partition at most this many bytes per second, all such
//! replicas of the broker together, so a move does not take the disk and network from the
//! partitions serving clients. Replicas catching up after a restart are not throttled.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket of `rate` bytes per second holding at most a second's worth.
#[derive(Debug)]
pub struct Throttle {
    rate: u64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Bytes that may pass now; negative is a debt the next taker waits out.
    tokens: f64,
    at: Instant,
}

impl Throttle {
    /// A throttle of `rate` bytes per second; 0 lets everything through.
    pub fn new(rate: u64) -> Throttle {
        Throttle {
            rate,
            bucket: Mutex::new(Bucket {
                tokens: rate as f64,
                at: Instant::now(),
            }),
        }
    }

    /// Counts `bytes` copied; returns how long the copier waits before its next fetch.
    pub fn take(&self, bytes: usize, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rate = self.rate as f64;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate) - bytes as f64;
        bucket.at = now;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copying_is_held_to_the_rate_over_time() {
        let start = Instant::now();
        let throttle = Throttle::new(1_000_000);
        // A second's burst passes at once; what follows waits its share.
        assert_eq!(throttle.take(1_000_000, start), Duration::ZERO);
        let wait = throttle.take(500_000, start);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // After waiting, the debt is paid: 10 MB over the next 10 s average the rate.
        let mut now = start + wait;
        let mut waited = Duration::ZERO;
        for _ in 0..100 {
            let w = throttle.take(100_000, now);
            waited += w;
            now += w;
        }
        assert!((waited.as_secs_f64() - 10.0).abs() < 0.01, "{waited:?}");
        assert_eq!(Throttle::new(0).take(usize::MAX, now), Duration::ZERO);
    }
}
