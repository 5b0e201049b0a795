//! What the reconciler reports: sizes, each rank's state and why, actions in flight.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::SizeLimit;
use crate::model::idset::group_by_key;
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
    /// Every rank, in order. Serialized as groups of ranks in the same phase for the same
    /// reason, the way `flux resource status` writes states: a handful of entries at
    /// 1,000 ranks instead of a thousand.
    #[serde(serialize_with = "rank_groups")]
    pub ranks: Vec<RankStatus>,
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

/// Ranks that share a phase and a reason.
#[derive(Debug, Serialize)]
struct RankGroup<'a> {
    ranks: IdSet,
    phase: RankPhase,
    why: &'a Why,
}

/// `ranks` as [`RankGroup`]s, in the order of their lowest rank.
fn rank_groups<S: Serializer>(ranks: &[RankStatus], s: S) -> Result<S::Ok, S::Error> {
    let keyed = ranks.iter().map(|r| ((r.phase, &r.why), r.rank));
    s.collect_seq(group_by_key(keyed).into_iter().map(|group| RankGroup {
        ranks: group.ids,
        phase: group.key.0,
        why: group.key.1,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_serialize_as_groups_of_the_same_phase_and_reason() {
        let rank = |rank, phase, why: &'static str| RankStatus {
            rank,
            phase,
            why: why.into(),
        };
        let ranks = vec![
            rank(0, RankPhase::Up, "leader"),
            rank(1, RankPhase::Up, "up"),
            rank(2, RankPhase::Lost, "lost: draining"),
            rank(3, RankPhase::Up, "up"),
            rank(4, RankPhase::Retiring, "up"),
            rank(5, RankPhase::Up, "up"),
        ];
        let mut json = serde_json::Serializer::new(Vec::new());
        rank_groups(&ranks, &mut json).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json.into_inner()).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"ranks": "0", "phase": "up", "why": "leader"},
                {"ranks": "1,3,5", "phase": "up", "why": "up"},
                {"ranks": "2", "phase": "lost", "why": "lost: draining"},
                {"ranks": "4", "phase": "retiring", "why": "up"},
            ])
        );
    }
}
