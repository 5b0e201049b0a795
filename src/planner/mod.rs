//! The pure decision logic: Flux and Kubernetes views in, actions out.
//!
//! Flux is the source of truth for which ranks should run (drains), Kubernetes for which
//! indexes can still run (an Indexed Job never recreates a completed or failed index while
//! the size stays above it). The [`Reconciler`] keeps only what the views cannot tell it
//! (the requested size, actions in flight, timers), so a restarted module rebuilds it from
//! the views alone: fluxk8s drains carry a fixed reason wording.
//!
//! A plan builds a scene of both views (`scene`), decides typed verdicts and actions
//! (`decide`, `verdict`) and records what it issued (`pending`, `rate`); a status decides
//! the same way and only then puts the verdicts into words (`words`). What other writers
//! put on the object is followed in `follow`. Between plans the scene is kept with its
//! totals, so a plan after one event remakes, observes and decides the ranks that event
//! touched and those that ask for something, not all 10,000. A status reads the kept
//! scene the same way, with the ranks changed since the last plan made again: it decides
//! the eventful ranks, and the quiet ones (most of them) read as the scene's totals keep
//! their verdicts, in runs of neighbours.
//!
//! No I/O, no clock: time comes in as `now` (seconds, any monotonic origin).

pub mod autoscale;
mod decide;
mod follow;
mod pending;
mod rank_map;
mod rate;
mod reasons;
mod reconciler;
mod scene;
mod status;
mod verdict;
mod words;

#[cfg(test)]
mod tests;

use serde::Serialize;

use crate::model::IdSet;

pub use autoscale::{AutoscaleConfig, AutoscaleStatus, Autoscaler, Decision, Supply};
pub use reconciler::{Assessment, Reconciler};
pub use status::{
    PendingStatus, PlanStatus, RankPhase, RankRuns, RankStatus, RefusedStatus, SizeWriter, Why,
};

/// Tunables of the policies.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannerConfig {
    /// Shrinking never leaves fewer live ranks than this.
    pub min_size: u32,
    /// Ranks never retired, whatever their drain state.
    pub protect: IdSet,
    /// A drained rank running jobs is retired anyway after this many seconds; `None`
    /// waits for it to be idle.
    pub drain_grace: Option<f64>,
    /// A rank that has not come online this long after it was expected is drained.
    pub startup_timeout: f64,
    /// Deletes and shrinks stop while more than this fraction of ranks are lost.
    pub max_lost_fraction: f64,
    /// Seconds between a grow and a shrink decision (either order).
    pub cooldown: f64,
    /// Kubernetes actions and broker shutdowns allowed per rolling minute.
    pub max_actions_per_minute: u32,
    /// An action not seen to take effect may be issued again after this many seconds.
    pub retry_interval: f64,
    /// Growth pauses this long after a rank fails to start, doubling per consecutive
    /// failure (capped at an hour).
    pub startup_backoff: f64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            min_size: 1,
            protect: IdSet::new(),
            drain_grace: None,
            startup_timeout: 300.0,
            max_lost_fraction: 0.5,
            cooldown: 30.0,
            max_actions_per_minute: 20,
            retry_interval: 30.0,
            startup_backoff: 60.0,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("not ready: the Flux and Kubernetes views are not both synced yet")]
    NotSynced,
    #[error("size must be at least 1 (rank 0 always runs)")]
    ZeroSize,
    #[error("rank 0 runs fluxk8s itself and is never retired")]
    RankZero,
    #[error("ranks {0} are protected")]
    Protected(IdSet),
    #[error("rank {rank} is beyond the instance size {size}")]
    OutOfRange { rank: u32, size: u32 },
    #[error("retiring {ranks} would leave {left} live ranks, below min-size {min_size}")]
    BelowMinSize {
        ranks: IdSet,
        left: u32,
        min_size: u32,
    },
}

/// What bounds a size.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "limit", rename_all = "kebab-case")]
pub enum SizeLimit {
    /// The instance cannot have more ranks (broker size, MiniCluster `maxSize`).
    MaximumSize { max: u32 },
    /// The configured floor.
    MinSize { min: u32 },
    /// Indexes that cannot run again: completed/failed holes below live ranks.
    CannotComeBack { ranks: IdSet },
    /// Indexes drained by someone else, so not worth starting.
    DrainedByOthers { ranks: IdSet },
}

/// The answer to a resize request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResizeAnswer {
    pub requested: u32,
    /// The size the reconciler will aim for (the request within min-size and the maximum).
    pub target: u32,
    /// How many live ranks the instance can reach at most, given its holes.
    pub reachable: u32,
    pub limited_by: Vec<SizeLimit>,
    /// False when this size was already the target (the request changed nothing).
    pub changed: bool,
}

/// The answer to a retire request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetireAnswer {
    /// Ranks that will now be retired.
    pub accepted: IdSet,
    /// Ranks already retired or on their way out.
    pub already: IdSet,
    /// The target size afterwards, lowered so the retired ranks are not replaced.
    pub desired_size: Option<u32>,
}
