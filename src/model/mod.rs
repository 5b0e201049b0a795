//! The pure model: rank state as Flux reports it, the Kubernetes view, the actions that
//! join them and how they end. No I/O.

pub mod action;
mod changed;
mod derived;
pub mod flux;
pub mod history;
pub mod hostlist;
pub mod idset;
pub mod kube;
pub mod queue;
pub mod report;

pub use action::{Action, DRAIN_REASON_PREFIX, FIELD_MANAGER, FluxAction, KubeAction};
pub use changed::ChangedRanks;
pub use flux::{FluxView, JournalResponse, OverlayStatus, PayloadError};
pub use idset::IdSet;
pub use kube::{
    Annotation, DESIRED_SIZE_ANNOTATION, JobView, KubeView, LivePod, MiniClusterView, PodGroup,
    PodIndex, PodPhase, PodView,
};
pub use report::{Outcome, Problem, Refusal, RefusalKind, Report, Retry};
