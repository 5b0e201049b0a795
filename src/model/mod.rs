//! The pure model: rank state as Flux reports it, the Kubernetes view, and the actions
//! that join them. No I/O.

pub mod action;
pub mod flux;
pub mod history;
pub mod hostlist;
pub mod idset;
pub mod kube;
pub mod queue;

pub use action::{Action, DRAIN_REASON_PREFIX, FIELD_MANAGER, FluxAction, KubeAction};
pub use flux::{FluxView, JournalResponse, OverlayStatus, PayloadError};
pub use idset::IdSet;
pub use kube::{
    Annotation, DESIRED_SIZE_ANNOTATION, JobView, KubeView, MiniClusterView, PodPhase, PodView,
};
