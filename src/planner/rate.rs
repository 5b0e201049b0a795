//! The rate limit on moves (removals, shutdowns, size changes): so many per rolling
//! minute, and at most [`MOVES_PER_PASS`] in one plan.

/// The rate limit counts moves over this window (seconds).
const RATE_WINDOW: f64 = 60.0;
/// Most moves one plan issues, so that one reactor callback stays short however many
/// ranks leave at once; the rest go in the next passes, right after.
pub(super) const MOVES_PER_PASS: usize = 64;

/// When moves were issued, within the last window.
#[derive(Debug, Clone, Default)]
pub(super) struct RateLimit {
    recent: Vec<f64>,
}

impl RateLimit {
    /// Forgets moves that left the window.
    pub fn slide(&mut self, now: f64) {
        self.recent.retain(|&t| t > now - RATE_WINDOW);
    }

    pub fn record(&mut self, now: f64) {
        self.recent.push(now);
    }

    /// When the oldest move leaves the window, making room.
    pub fn window_ends(&self) -> Option<f64> {
        self.recent.first().map(|t| t + RATE_WINDOW)
    }

    /// Room for one plan's moves, within `per_minute`.
    pub fn budget(&self, per_minute: u32) -> Budget {
        Budget {
            per_minute,
            used: self.recent.len(),
            passed: 0,
            held_by_rate: 0,
            next_pass: 0,
        }
    }
}

/// One plan's moves against the rate limit and the per-pass bound.
#[derive(Debug)]
pub(super) struct Budget {
    pub per_minute: u32,
    used: usize,
    passed: usize,
    /// Moves held until the window makes room.
    pub held_by_rate: usize,
    /// Moves left for the next pass, right after this one.
    pub next_pass: usize,
}

impl Budget {
    /// Whether one more move may go now; counts it either way.
    pub fn admit(&mut self) -> bool {
        if self.used >= self.per_minute as usize {
            self.held_by_rate += 1;
            false
        } else if self.passed >= MOVES_PER_PASS {
            self.next_pass += 1;
            false
        } else {
            self.used += 1;
            self.passed += 1;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_go_within_the_window_and_the_pass() {
        let mut rate = RateLimit::default();
        rate.record(0.0);
        rate.record(10.0);
        let mut budget = rate.budget(100);
        let admitted = (0..70).filter(|_| budget.admit()).count();
        assert_eq!(
            (admitted, budget.next_pass, budget.held_by_rate),
            (64, 6, 0)
        );
        let mut budget = rate.budget(3);
        let admitted = (0..3).filter(|_| budget.admit()).count();
        assert_eq!((admitted, budget.held_by_rate), (1, 2));
        assert_eq!(rate.window_ends(), Some(60.0));
        rate.slide(60.0);
        assert_eq!(rate.window_ends(), Some(70.0), "the first left the window");
    }
}
