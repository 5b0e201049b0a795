//! What the reconciler reports: sizes, each rank's state and why, actions in flight.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::SizeLimit;
use super::rank_map::RankMap;
use crate::model::idset::group_runs_by_key;
use crate::model::{Action, IdSet, RefusalKind};

/// Where a rank stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RankPhase {
    /// Online and usable.
    Up,
    /// Expected to come online (pod being created or starting).
    Starting,
    /// Was up and is gone without fluxk8s retiring it.
    Lost,
    /// On its way out: drained, waiting to be removed.
    Retiring,
    /// Its index will not run (completed, failed, or above the size).
    Retired,
    /// Drained, but kept (protected, or no mechanism can remove it).
    Drained,
}

/// One rank's state and the reason for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankStatus {
    pub rank: u32,
    pub phase: RankPhase,
    pub why: Why,
}

/// A reason in words, shared by the ranks that have it: a status of 10,000 ranks makes
/// each text once, and grouping them mostly compares pointers.
#[derive(Debug, Clone, Eq)]
pub struct Why(Arc<str>);

impl Deref for Why {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Why {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl PartialEq<&str> for Why {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Hash for Why {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl From<&str> for Why {
    fn from(text: &str) -> Self {
        Why(text.into())
    }
}

impl From<Cow<'static, str>> for Why {
    fn from(text: Cow<'static, str>) -> Self {
        Why(text.as_ref().into())
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Why {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// An action issued and not yet seen to take effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingStatus {
    pub action: Action,
    pub issued_at: f64,
    /// `None` until the executor reports; then `ok`, or `retryable: ` and why.
    pub outcome: Option<String>,
}

/// An action its executor refused: not issued again as it was while the plan still asks
/// for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefusedStatus {
    pub action: Action,
    pub refused_at: f64,
    pub refusal: RefusalKind,
    /// The refusal and its reason, in words.
    pub why: String,
}

/// The reconciler's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanStatus {
    /// Both views are synced, so decisions are being made.
    pub synced: bool,
    /// The requested live size, if any request was made since the module started.
    pub desired_size: Option<u32>,
    /// Set when the desired size is one someone else wrote to the object (kubectl, an
    /// HPA): fluxk8s follows it and changes no size itself.
    pub size_set_by: Option<SizeWriter>,
    /// Online ranks that are not drained.
    pub real_size: u32,
    /// Ranks expected to run once pods in flight have started.
    pub expected_size: u32,
    /// The size asked of Kubernetes.
    pub kube_size: Option<u32>,
    pub max_size: u32,
    /// Set while deletes and shrinks are suspended, with the reason.
    pub frozen: Option<String>,
    pub limits: Vec<SizeLimit>,
    /// Why actions are being held back right now (cooldown, rate limit, backoff, ...).
    pub waiting: Vec<String>,
    /// Every rank, in order.
    pub ranks: RankRuns,
    pub pending: Vec<PendingStatus>,
    /// Left out while there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedStatus>,
    pub startup_failures: u32,
}

/// Who set the size fluxk8s now follows, as the object's `managedFields` tell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeWriter {
    /// The field manager that owns the size (`kubectl-scale`, the HPA's controller
    /// manager, ...), or `unknown` when the object does not say.
    pub manager: String,
    pub size: u32,
}

/// Every rank's phase and reason, in order, kept as runs of neighbours that read the
/// same: 10,000 ranks in a handful of runs, not 10,000 entries. Serialized as groups of
/// ranks in the same phase for the same reason, the way `flux resource status` writes
/// states.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RankRuns(RankMap<(RankPhase, Why)>);

impl RankRuns {
    /// Adds ranks `first..=last`, the ones after the last added.
    pub(super) fn push(&mut self, first: u32, last: u32, phase: RankPhase, why: Why) {
        self.0.push_run(first, last, (phase, why));
    }

    /// Rank `k`'s phase and reason, if it has them.
    pub fn get(&self, k: u32) -> Option<RankStatus> {
        self.0.value_of(k).map(|read| rank_status(k, read))
    }

    /// Every rank, in order.
    pub fn iter(&self) -> impl Iterator<Item = RankStatus> + '_ {
        self.0
            .runs_kept()
            .flat_map(|(first, last, read)| (*first..=*last).map(move |k| rank_status(k, read)))
    }
}

/// Rank `k`, which reads as `(phase, why)`.
fn rank_status(k: u32, (phase, why): &(RankPhase, Why)) -> RankStatus {
    RankStatus {
        rank: k,
        phase: *phase,
        why: why.clone(),
    }
}

/// Ranks that share a phase and a reason.
#[derive(Debug, Serialize)]
struct RankGroup<'a> {
    ranks: IdSet,
    phase: RankPhase,
    why: &'a Why,
}

impl Serialize for RankRuns {
    /// As [`RankGroup`]s, in the order of their lowest rank.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let keyed = self
            .0
            .runs_kept()
            .map(|(first, last, (phase, why))| ((*phase, why), *first, *last));
        s.collect_seq(group_runs_by_key(keyed).into_iter().map(|group| RankGroup {
            ranks: group.ids,
            phase: group.key.0,
            why: group.key.1,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_serialize_as_groups_of_the_same_phase_and_reason() {
        let mut ranks = RankRuns::default();
        let up = Why::from("up");
        ranks.push(0, 0, RankPhase::Up, "leader".into());
        ranks.push(1, 1, RankPhase::Up, up.clone());
        ranks.push(2, 2, RankPhase::Lost, "lost: draining".into());
        ranks.push(3, 3, RankPhase::Up, up.clone());
        ranks.push(4, 4, RankPhase::Retiring, up.clone());
        ranks.push(5, 6, RankPhase::Up, up.clone());
        // Equal words that are not the same text still make one run.
        ranks.push(7, 7, RankPhase::Up, "up".into());
        assert_eq!(ranks.0.runs_kept().count(), 6);
        let json = serde_json::to_value(&ranks).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"ranks": "0", "phase": "up", "why": "leader"},
                {"ranks": "1,3,5-7", "phase": "up", "why": "up"},
                {"ranks": "2", "phase": "lost", "why": "lost: draining"},
                {"ranks": "4", "phase": "retiring", "why": "up"},
            ])
        );
        let every: Vec<(u32, RankPhase)> = ranks.iter().map(|r| (r.rank, r.phase)).collect();
        assert_eq!(every.len(), 8);
        assert_eq!(every[4], (4, RankPhase::Retiring));
        assert_eq!(ranks.get(6).map(|r| r.why), Some(up));
        assert_eq!(ranks.get(8), None);
    }
}
