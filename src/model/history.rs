//! What fluxk8s saw and did, kept for "what happened to rank 5 last night": each rank's
//! Flux state and each index's pod as they changed, the size asked of Kubernetes, the
//! requests that came in and the actions fluxk8s took, with their reasons.
//!
//! Bounded whatever the instance: at most [`ENTRIES_KEPT`] entries holding at most
//! [`RUNS_KEPT`] idset runs between them, texts cut at [`TEXT_KEPT`] bytes, and one
//! state per rank and index (up to [`ROWS_KEPT`]). A change of many ranks to one state
//! is one entry, so bringing 10,000 ranks online costs one. What falls off the old end
//! is folded into the state the kept entries start from, so a picture of what is kept
//! still begins with every rank's state.
//!
//! Recording costs what applying the event costs: the ranks an event names, looked up
//! once each; a Kubernetes view, walked once.

mod svg;

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;

use super::flux::RankState;
use super::idset::IdSet;
use super::kube::{PodPhase, PodView};

pub use svg::{Panel, svg};

/// Most entries kept.
pub const ENTRIES_KEPT: usize = 2_000;
/// Most idset runs the kept entries hold between them: ranks changing in a scattered
/// pattern (every other rank) cannot make entries big.
pub const RUNS_KEPT: usize = 20_000;
/// Longest text of a request or an action, in bytes.
pub const TEXT_KEPT: usize = 240;
/// Ranks and indexes followed: changes above are not recorded.
pub const ROWS_KEPT: u32 = 100_000;

/// A rank as Flux sees it, in the four states the picture tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FluxState {
    /// Online and not drained.
    Up,
    /// Online and drained.
    Drained,
    /// Not online: shut down cleanly, or never started.
    Offline,
    /// Gone without a goodbye.
    Lost,
}

impl FluxState {
    pub fn of(rank: &RankState) -> FluxState {
        match rank {
            RankState { lost: true, .. } => FluxState::Lost,
            RankState { online: false, .. } => FluxState::Offline,
            RankState { drain: Some(_), .. } => FluxState::Drained,
            _ => FluxState::Up,
        }
    }
}

/// The pod of an index, as the picture tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PodState {
    #[serde(rename = "none")]
    None,
    Pending,
    Running,
    /// Pending or running, and deleted.
    Terminating,
    Succeeded,
    Failed,
    Unknown,
}

impl PodState {
    pub fn of(pod: &PodView) -> PodState {
        match pod.phase {
            PodPhase::Pending | PodPhase::Running if pod.terminating => PodState::Terminating,
            PodPhase::Pending => PodState::Pending,
            PodPhase::Running => PodState::Running,
            PodPhase::Succeeded => PodState::Succeeded,
            PodPhase::Failed => PodState::Failed,
            PodPhase::Unknown => PodState::Unknown,
        }
    }

    /// Of two pods at one index (an old one going, its replacement coming), the one
    /// that says more of the index now: a live one over one on its way out or done.
    fn liveliness(self) -> u8 {
        match self {
            PodState::Running => 6,
            PodState::Pending => 5,
            PodState::Terminating => 4,
            PodState::Unknown => 3,
            PodState::Failed => 2,
            PodState::Succeeded => 1,
            PodState::None => 0,
        }
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Change {
    /// These ranks are now in this Flux state.
    Flux { ranks: IdSet, state: FluxState },
    /// The pods of these indexes (= ranks) are now in this state.
    Pod { ranks: IdSet, state: PodState },
    /// The size asked of Kubernetes (`MiniCluster.spec.size`, a bare Job's completions).
    Size { size: u32 },
    /// Someone asked for something: a resize, a retire, a drain of their own.
    Request {
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        ranks: Option<IdSet>,
    },
    /// fluxk8s acted, and why.
    Action {
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        ranks: Option<IdSet>,
    },
}

impl Change {
    /// The ranks it is about; `None` for the whole instance.
    pub fn ranks(&self) -> Option<&IdSet> {
        match self {
            Change::Flux { ranks, .. } | Change::Pod { ranks, .. } => Some(ranks),
            Change::Request { ranks, .. } | Change::Action { ranks, .. } => ranks.as_ref(),
            Change::Size { .. } => None,
        }
    }

    fn runs(&self) -> usize {
        self.ranks().map_or(0, IdSet::run_count)
    }

    /// The change as it concerns `only`: `None` when it names ranks, none of them there.
    fn restricted(&self, only: &IdSet) -> Option<Change> {
        let mut change = self.clone();
        match &mut change {
            Change::Flux { ranks, .. } | Change::Pod { ranks, .. } => {
                *ranks = ranks.intersection(only);
                (!ranks.is_empty()).then_some(change)
            }
            Change::Request { ranks, .. } | Change::Action { ranks, .. } => match ranks {
                Some(named) if named.intersection(only).is_empty() => None,
                _ => Some(change),
            },
            Change::Size { .. } => Some(change),
        }
    }
}

/// A change, numbered and timed (seconds: the epoch in the module, since the start in
/// the demo).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// Counts every entry ever recorded: a follower asks for those after the last seen.
    pub seq: u64,
    pub time: f64,
    #[serde(flatten)]
    pub change: Change,
}

/// Each row's state at one moment, `None` where nothing is known.
#[derive(Debug, Clone, Default, PartialEq)]
struct States {
    flux: Vec<Option<FluxState>>,
    pods: Vec<PodState>,
    size: Option<u32>,
}

impl States {
    fn apply(&mut self, change: &Change) {
        match change {
            Change::Flux { ranks, state } => {
                for k in ranks.iter() {
                    *slot(&mut self.flux, k, None) = Some(*state);
                }
            }
            Change::Pod { ranks, state } => {
                for k in ranks.iter() {
                    *slot(&mut self.pods, k, PodState::None) = *state;
                }
            }
            Change::Size { size } => self.size = Some(*size),
            Change::Request { .. } | Change::Action { .. } => {}
        }
    }
}

/// Of the states of two pods of one index, the one the index shows: the livelier.
fn livelier(a: PodState, b: PodState) -> PodState {
    if b.liveliness() > a.liveliness() {
        b
    } else {
        a
    }
}

/// The indexes, ascending, where `before` and `after` (sorted by index) do not hold the
/// very same pods. Pods of an unchanged index are the same allocation in both views.
fn touched_indexes(before: &[Arc<PodView>], after: &[Arc<PodView>]) -> Vec<u32> {
    use std::cmp::Ordering;
    let mut touched: Vec<u32> = Vec::new();
    let mut touch = |k: u32| {
        if touched.last() != Some(&k) {
            touched.push(k);
        }
    };
    let (mut i, mut j) = (0, 0);
    loop {
        match (before.get(i), after.get(j)) {
            (Some(old), Some(new)) if Arc::ptr_eq(old, new) => (i, j) = (i + 1, j + 1),
            (Some(old), Some(new)) => match (old.index, &old.name).cmp(&(new.index, &new.name)) {
                Ordering::Less => {
                    touch(old.index);
                    i += 1;
                }
                Ordering::Greater => {
                    touch(new.index);
                    j += 1;
                }
                Ordering::Equal => {
                    touch(new.index);
                    (i, j) = (i + 1, j + 1);
                }
            },
            (Some(old), None) => {
                touch(old.index);
                i += 1;
            }
            (None, Some(new)) => {
                touch(new.index);
                j += 1;
            }
            (None, None) => break,
        }
    }
    // Views out of (index, name) order touch more indexes, and in any order.
    touched.sort_unstable();
    touched.dedup();
    touched
}

/// Row `k` of `rows`, grown with `empty` to reach it.
fn slot<T: Clone>(rows: &mut Vec<T>, k: u32, empty: T) -> &mut T {
    let k = k as usize;
    if rows.len() <= k {
        rows.resize(k + 1, empty);
    }
    &mut rows[k]
}

/// The bounded history. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct History {
    entries: VecDeque<Entry>,
    /// Idset runs held by `entries`.
    runs: usize,
    next_seq: u64,
    /// Every row's state after the last entry: changes are recorded against it.
    now: States,
    /// Every row's state before the first entry kept.
    start: States,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the Flux state of the ranks given (ascending) that changed; one entry per
    /// new state.
    pub fn flux(&mut self, time: f64, ranks: impl IntoIterator<Item = (u32, FluxState)>) {
        let mut changed: Vec<(FluxState, IdSet)> = Vec::new();
        for (k, state) in ranks {
            if k >= ROWS_KEPT {
                break;
            }
            if self.now.flux.get(k as usize).copied().flatten() != Some(state) {
                add(&mut changed, state, k);
            }
        }
        for (state, ranks) in changed {
            self.push(time, Change::Flux { ranks, state });
        }
    }

    /// Records the pods of a Kubernetes view: every index whose pod state changed, an
    /// index with no pod now being `none`.
    pub fn pods<'a>(&mut self, time: f64, pods: impl IntoIterator<Item = &'a PodView>) {
        let mut states = vec![PodState::None; self.now.pods.len()];
        for pod in pods {
            if pod.index >= ROWS_KEPT {
                continue;
            }
            let state = slot(&mut states, pod.index, PodState::None);
            *state = livelier(*state, PodState::of(pod));
        }
        let changed = states.into_iter().enumerate().map(|(k, s)| (k as u32, s));
        self.record_pods(time, changed);
    }

    /// [`Self::pods`] for a view that follows `before`, both sorted by index: only the
    /// indexes where a pod is not the very one `before` shared are looked at, so a view
    /// of 10,000 pods with one changed costs a pointer comparison per pod.
    pub fn pods_since(&mut self, time: f64, before: &[Arc<PodView>], after: &[Arc<PodView>]) {
        let touched = touched_indexes(before, after);
        let states = touched.into_iter().map(|k| {
            let from = after.partition_point(|p| p.index < k);
            let state = after[from..]
                .iter()
                .take_while(|p| p.index == k)
                .fold(PodState::None, |state, pod| {
                    livelier(state, PodState::of(pod))
                });
            (k, state)
        });
        self.record_pods(time, states);
    }

    /// Records the indexes whose state is not what it was, grouped by state.
    fn record_pods(&mut self, time: f64, states: impl Iterator<Item = (u32, PodState)>) {
        let mut changed: Vec<(PodState, IdSet)> = Vec::new();
        for (k, state) in states.filter(|&(k, _)| k < ROWS_KEPT) {
            if self
                .now
                .pods
                .get(k as usize)
                .copied()
                .unwrap_or(PodState::None)
                != state
            {
                add(&mut changed, state, k);
            }
        }
        for (state, ranks) in changed {
            self.push(time, Change::Pod { ranks, state });
        }
    }

    /// Records the size asked of Kubernetes, if it changed.
    pub fn size(&mut self, time: f64, size: u32) {
        if self.now.size != Some(size) {
            self.push(time, Change::Size { size });
        }
    }

    /// Records a request (the ranks it names, if any).
    pub fn request(&mut self, time: f64, text: &str, ranks: Option<&IdSet>) {
        let change = Change::Request {
            text: cut(text),
            ranks: ranks.cloned(),
        };
        self.push(time, change);
    }

    /// Records an action of fluxk8s, with why (the ranks it acts on, if any).
    pub fn action(&mut self, time: f64, text: &str, ranks: Option<&IdSet>) {
        let change = Change::Action {
            text: cut(text),
            ranks: ranks.cloned(),
        };
        self.push(time, change);
    }

    fn push(&mut self, time: f64, change: Change) {
        self.now.apply(&change);
        self.runs += change.runs();
        self.entries.push_back(Entry {
            seq: self.next_seq,
            time,
            change,
        });
        self.next_seq += 1;
        while self.entries.len() > ENTRIES_KEPT || self.runs > RUNS_KEPT {
            let Some(oldest) = self.entries.pop_front() else {
                break;
            };
            self.runs -= oldest.change.runs();
            self.start.apply(&oldest.change);
        }
    }

    /// Entries kept, oldest first.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries recorded and no longer kept.
    pub fn dropped(&self) -> u64 {
        self.next_seq - self.entries.len() as u64
    }

    /// The sequence number the next entry will have.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The kept entries from sequence number `from` on, as they concern `ranks` (all of
    /// them without a filter): changes of ranks cut to those asked about, requests and
    /// actions naming none of them left out, whole-instance ones kept.
    pub fn entries(&self, from: u64, ranks: Option<&IdSet>) -> Vec<Entry> {
        let skip = from.saturating_sub(self.dropped()) as usize;
        self.entries
            .iter()
            .skip(skip)
            .filter_map(|entry| {
                let change = match ranks {
                    Some(only) => entry.change.restricted(only)?,
                    None => entry.change.clone(),
                };
                Some(Entry { change, ..*entry })
            })
            .collect()
    }

    /// Rows (ranks or indexes) the history knows of.
    pub fn rows(&self) -> u32 {
        self.now.flux.len().max(self.now.pods.len()) as u32
    }

    /// What is held, in bytes, roughly: the bound the module docs promise.
    pub fn footprint(&self) -> usize {
        let texts: usize = self
            .entries
            .iter()
            .map(|e| match &e.change {
                Change::Request { text, .. } | Change::Action { text, .. } => text.capacity(),
                _ => 0,
            })
            .sum();
        let rows = |s: &States| s.flux.capacity() + s.pods.capacity();
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.runs * std::mem::size_of::<(u32, u32)>()
            + texts
            + rows(&self.now)
            + rows(&self.start)
    }
}

/// Adds `k` to the set of `state` (a handful of states: a linear search).
fn add<S: PartialEq>(groups: &mut Vec<(S, IdSet)>, state: S, k: u32) {
    match groups.iter_mut().find(|(s, _)| *s == state) {
        Some((_, ranks)) => {
            ranks.insert(k);
        }
        None => groups.push((state, IdSet::range(k, k))),
    }
}

/// `text`, cut at [`TEXT_KEPT`] bytes on a character boundary.
fn cut(text: &str) -> String {
    if text.len() <= TEXT_KEPT {
        return text.to_owned();
    }
    let mut end = TEXT_KEPT - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests;
