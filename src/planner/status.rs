//! What the reconciler reports: sizes, each rank's state and why, actions in flight.

use std::borrow::Cow;

use serde::Serialize;

use super::SizeLimit;
use crate::model::Action;

/// Where a rank stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    pub why: Cow<'static, str>,
}

/// An action issued and not yet seen to take effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingStatus {
    pub action: Action,
    pub issued_at: f64,
    /// `None` until the executor reports; `Some("ok")` or the error text.
    pub outcome: Option<String>,
}

/// The reconciler's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanStatus {
    /// Both views are synced, so decisions are being made.
    pub synced: bool,
    /// The requested live size, if any request was made since the module started.
    pub desired_size: Option<u32>,
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
    pub ranks: Vec<RankStatus>,
    pub pending: Vec<PendingStatus>,
    pub startup_failures: u32,
}
