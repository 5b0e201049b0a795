//! What each engine call costs, timed by the [`World`](super::World) around every call it
//! makes: each one is what a reactor callback costs the broker. The bench reads them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::flux::{CALLBACK_BOUND, thread_cpu_time};

/// The longest and total time of one kind of engine call: wall time, and the CPU time of
/// the calling thread (what the call itself cost; on a busy machine the wall time also
/// counts the time other threads ran instead).
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    pub calls: u64,
    pub longest: Duration,
    pub total: Duration,
    pub longest_cpu: Duration,
    pub total_cpu: Duration,
    /// Calls whose CPU time passed the module's bound on a reactor callback.
    pub over_bound_cpu: u64,
}

impl CallStats {
    fn add(&mut self, took: Duration, cpu: Duration) {
        self.calls += 1;
        self.total += took;
        self.longest = self.longest.max(took);
        self.total_cpu += cpu;
        self.longest_cpu = self.longest_cpu.max(cpu);
        self.over_bound_cpu += u64::from(cpu > CALLBACK_BOUND);
    }

    /// Adds `more` in, keeping the longest and summing the rest.
    pub fn merge(&mut self, more: &CallStats) {
        self.calls += more.calls;
        self.total += more.total;
        self.longest = self.longest.max(more.longest);
        self.total_cpu += more.total_cpu;
        self.longest_cpu = self.longest_cpu.max(more.longest_cpu);
        self.over_bound_cpu += more.over_bound_cpu;
    }
}

/// Engine call timings by kind: `journal`, `kube_report`, `step`, ...
#[derive(Debug, Clone, Default)]
pub struct CallTimings(pub BTreeMap<&'static str, CallStats>);

impl CallTimings {
    pub(super) fn time<T>(&mut self, kind: &'static str, call: impl FnOnce() -> T) -> T {
        let cpu_time = || thread_cpu_time().expect("the thread's CPU clock reads");
        let cpu_before = cpu_time();
        let started = Instant::now();
        let result = call();
        let took = started.elapsed();
        let cpu = cpu_time() - cpu_before;
        self.0.entry(kind).or_default().add(took, cpu);
        result
    }

    /// Adds `more` in, call kind by call kind.
    pub fn merge(&mut self, more: &CallTimings) {
        for (kind, stats) in &more.0 {
            self.0.entry(kind).or_default().merge(stats);
        }
    }

    /// The longest single call of any kind (wall time), and its kind.
    pub fn longest(&self) -> Option<(&'static str, Duration)> {
        self.0
            .iter()
            .map(|(kind, stats)| (*kind, stats.longest))
            .max_by_key(|(_, longest)| *longest)
    }

    /// The call with the most CPU time of any kind, and its kind.
    pub fn longest_cpu(&self) -> Option<(&'static str, Duration)> {
        self.0
            .iter()
            .map(|(kind, stats)| (*kind, stats.longest_cpu))
            .max_by_key(|(_, longest)| *longest)
    }
}
