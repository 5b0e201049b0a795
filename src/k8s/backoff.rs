//! Exponential backoff with jitter for retrying Kubernetes requests and watches.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Doubling delays from `base` up to `cap`, each drawn at random from the upper half of its
/// step ("equal jitter"), so many clients retrying together spread out yet still back off.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff whose first delay is about `base` and which never exceeds `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The delay before the next attempt; each call moves one step further.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        jitter(step, random_fraction())
    }

    /// Starts over from `base`, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The un-jittered delay of attempt `n`: `base * 2^n`, at most `cap`.
    fn step(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// `step/2 + fraction * step/2`: never below half the step, never above it.
fn jitter(step: Duration, fraction: f64) -> Duration {
    let half = step / 2;
    half + half.mul_f64(fraction.clamp(0.0, 1.0))
}

/// A number in `[0, 1)` from the standard library's per-instance random hash keys; good
/// enough to spread retries, and avoids a random-number crate.
fn random_fraction() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    // 53 bits fill an f64 mantissa exactly.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_bounds_and_stop_at_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        let mut backoff = Backoff::new(base, cap);
        let expected_steps = [100, 200, 400, 800, 1600, 2000, 2000, 2000];
        for step_ms in expected_steps {
            let step = Duration::from_millis(step_ms);
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} outside [{step:?}/2, {step:?}]"
            );
        }
    }

    #[test]
    fn reset_returns_to_base() {
        let base = Duration::from_millis(100);
        let mut backoff = Backoff::new(base, Duration::from_secs(30));
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= base);
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let cap = Duration::from_secs(30);
        let mut backoff = Backoff::new(Duration::from_secs(1), cap);
        for _ in 0..200 {
            assert!(backoff.next_delay() <= cap);
        }
    }

    #[test]
    fn jitter_spans_the_upper_half() {
        let step = Duration::from_secs(8);
        assert_eq!(jitter(step, 0.0), Duration::from_secs(4));
        assert_eq!(jitter(step, 1.0), step);
        assert_eq!(jitter(step, 0.5), Duration::from_secs(6));
    }

    #[test]
    fn random_fraction_varies_and_stays_in_range() {
        let draws: Vec<f64> = (0..64).map(|_| random_fraction()).collect();
        assert!(draws.iter().all(|f| (0.0..1.0).contains(f)));
        let first = draws[0];
        assert!(
            draws.iter().any(|f| *f != first),
            "64 identical draws: not random"
        );
    }
}
