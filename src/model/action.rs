//! What fluxk8s does: the planner's output, carried out by the module (Flux side) and the
//! Kubernetes driver (Kubernetes side).

use serde::Serialize;

use super::idset::IdSet;

/// Every drain fluxk8s makes starts with this, so it never touches anyone else's.
pub const DRAIN_REASON_PREFIX: &str = "fluxk8s:";

/// The field manager of fluxk8s's writes (and the component of its Events): the
/// object's `managedFields` tell its size changes from another writer's.
pub const FIELD_MANAGER: &str = "fluxk8s";

/// An action on the Flux side, carried out on the module thread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum FluxAction {
    /// `resource.drain` with a reason starting with [`DRAIN_REASON_PREFIX`]. A drain
    /// already there stays (`mode: update`) unless `overwrite`, which fluxk8s sets only to
    /// replace its own record of a retirement it saw (docs/flux-core.md 3.2).
    Drain {
        ranks: IdSet,
        reason: String,
        overwrite: bool,
    },
    /// `resource.undrain`; only ever for drains fluxk8s set.
    Undrain { ranks: IdSet },
    /// `state-machine.post {"event":"shutdown"}` to broker N: it shuts down cleanly and
    /// exits 0 (docs/flux-core.md 4.1). The Flux Operator's worker loop ends on exit 0
    /// (with or without `completeWorkers`), so the pod succeeds, the index completes, and
    /// the Job does not recreate it (docs/kubernetes.md 4.5, 1.3).
    Shutdown { rank: u32 },
}

/// An action on the Kubernetes side, carried out by the driver.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum KubeAction {
    /// DELETE the pod with a `preconditions.uid`, so a replacement is never hit
    /// (docs/kubernetes.md 3.1).
    DeletePod {
        index: u32,
        pod: String,
        uid: String,
        reason: String,
    },
    /// Set the size: `MiniCluster.spec.size` when an operator owns the Job, else the
    /// Job's parallelism and completions together.
    SetSize {
        size: u32,
        reason: String,
        /// Also records this desired size in the annotation, in the same patch.
        desired: Option<u32>,
    },
    /// Record a Normal Event on the MiniCluster (else the Job): what fluxk8s saw and how
    /// it took it, for what changes no object.
    RecordEvent {
        reason: String,
        message: String,
        /// A `Warning` Event (something was refused), else `Normal`.
        warning: bool,
    },
    /// Record the live size asked of fluxk8s in the `DESIRED_SIZE_ANNOTATION` of the
    /// MiniCluster (the Job when there is none).
    RecordDesiredSize { size: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Action {
    Flux(FluxAction),
    Kube(KubeAction),
}

/// One line for logs and status: what is done and why.
impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Flux(FluxAction::Drain { ranks, reason, .. }) => {
                write!(f, "drain rank(s) {ranks} ({reason})")
            }
            Action::Flux(FluxAction::Undrain { ranks }) => write!(f, "undrain rank(s) {ranks}"),
            Action::Flux(FluxAction::Shutdown { rank }) => {
                write!(
                    f,
                    "shut down broker {rank}: it exits 0 and its index completes"
                )
            }
            Action::Kube(KubeAction::DeletePod {
                index,
                pod,
                uid,
                reason,
            }) => write!(f, "delete pod {pod} (index {index}, uid {uid}): {reason}"),
            Action::Kube(KubeAction::SetSize { size, reason, .. }) => {
                write!(f, "set size to {size}: {reason}")
            }
            Action::Kube(KubeAction::RecordEvent {
                reason, message, ..
            }) => {
                write!(f, "record Event {reason}: {message}")
            }
            Action::Kube(KubeAction::RecordDesiredSize { size }) => {
                write!(f, "record desired size {size} on the object")
            }
        }
    }
}
