//! What a pass decides, typed and without words: a [`Verdict`] per rank and the
//! [`Hold`]s that keep actions back. [`super::words`] writes them out, only when a status
//! asks.

use super::scene::Finished;
use super::status::RankPhase;
use crate::model::IdSet;

/// Where one rank stands, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Verdict {
    /// Rank 0: runs fluxk8s, never retired.
    Leader,
    /// Its index does not run: `finished`, else above the size.
    Retired {
        finished: Option<Finished>,
        drained: Option<DrainedBy>,
    },
    /// On its way out, or drained and kept.
    Leaving(Leaving),
    Up,
    /// Back online after its pod was lost: the fluxk8s lost drain is being lifted.
    BackOnline,
    /// Running again below a size that came back above it: the fluxk8s retired drain is
    /// being lifted.
    BackAboveSize,
    /// Lost and drained by fluxk8s, waiting for its pod to come back.
    LostDrained,
    /// Lost: being drained now.
    LostDraining,
    /// Drained but protected: kept.
    Protected,
    /// Expected online since `since`.
    Starting {
        since: f64,
    },
    /// Never came online within the start-up timeout: being drained.
    NeverOnline,
}

/// What a quiet rank's entry alone says of it (see [`super::scene::Rank::quiet`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Quiet {
    Is(Verdict),
    /// Expected online: its verdict also reads since when, from the reconciler's records.
    Starting,
}

/// Who holds the drain of a retired rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DrainedBy {
    Others,
    Fluxk8s,
}

/// Where a retiring rank is on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leaving {
    /// Flux has not drained it yet.
    Draining,
    /// Drained; whether it runs jobs is not known yet.
    WaitingForJobManager,
    /// Drained and running jobs: waits for them (or the drain grace).
    Busy,
    /// The size is being lowered past it.
    SizeLowered { base: u32 },
    /// Drained, but removals are frozen.
    Frozen,
    /// Its broker was told to shut down.
    ShutdownSent,
    /// Its broker shut down; its pod has yet to complete.
    PodCompleting,
    /// Its pod is being deleted.
    DeletingPod,
    /// Its index has yet to finish.
    IndexFinishing,
    /// Kept drained: its broker came back after this many clean shutdowns.
    KeptRestarted { shutdowns: u32 },
    /// Kept drained: its broker is not online to be shut down, and its pod would be
    /// recreated if deleted.
    KeptNoWayOut,
}

impl Leaving {
    /// Kept drained rather than leaving.
    pub fn kept(self) -> bool {
        matches!(self, Leaving::KeptRestarted { .. } | Leaving::KeptNoWayOut)
    }
}

impl Verdict {
    pub fn phase(self) -> RankPhase {
        match self {
            Verdict::Leader | Verdict::Up | Verdict::BackOnline | Verdict::BackAboveSize => {
                RankPhase::Up
            }
            Verdict::Retired { .. } => RankPhase::Retired,
            Verdict::Leaving(leaving) if leaving.kept() => RankPhase::Drained,
            Verdict::Leaving(_) => RankPhase::Retiring,
            Verdict::LostDrained | Verdict::LostDraining => RankPhase::Lost,
            Verdict::Protected => RankPhase::Drained,
            Verdict::Starting { .. } | Verdict::NeverOnline => RankPhase::Starting,
        }
    }
}

/// Why actions wait.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Hold {
    /// Growth by `need` ranks waits.
    Growth { need: u32, why: GrowthHold },
    /// The shrink to `target` waits.
    Shrink { target: u32, why: ShrinkHold },
    /// Retiring ranks kept drained, for one reason.
    Kept { ranks: IdSet, why: Leaving },
    /// Ranks whose drain or undrain is unanswered: corrected once it is.
    DrainStateInFlight { ranks: IdSet },
    /// A size change waits for the one in flight.
    SizeInFlight {
        size: u32,
        why: SizeChange,
        in_flight: u32,
    },
    /// Moves held by the rate limit.
    RateLimit { per_minute: u32, held: usize },
    /// Moves left for the next pass.
    NextPass { moves: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum GrowthHold {
    BackingOff {
        failures: u32,
        until: f64,
    },
    CooldownAfterShrink,
    /// Another writer set the size: fluxk8s changes it only for a request from Flux.
    OthersSize {
        manager: String,
        size: u32,
    },
    SizeInFlight {
        size: u32,
    },
    JobNotAt {
        size: u32,
    },
    NoIndexLeft,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ShrinkHold {
    Frozen,
    CooldownAfterGrow,
    /// The job-manager has not said which ranks run jobs.
    OccupancyUnknown,
}

/// Why the size changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SizeChange {
    /// Lowered first so trailing retired indexes can run again.
    Recycle,
    /// Raised toward the desired size.
    Grow,
    /// Lowered past the highest ranks, which retire.
    RetireHighest,
}
