//! What fluxk8s knows of the Kubernetes side: the Indexed Job, the MiniCluster that owns
//! it (if any), and the Job's pods by completion index (= Flux rank).
//!
//! The driver (`crate::k8s`) fills a [`KubeView`] from watches; the planner reads it.

use std::sync::Arc;

use serde::Serialize;

use super::idset::IdSet;

/// The Indexed Job that runs the brokers: pod with completion index N runs rank N.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    pub name: String,
    pub uid: String,
    pub parallelism: u32,
    pub completions: u32,
    pub backoff_limit: u32,
    /// `spec.backoffLimitPerIndex`; `Some(0)` means a deleted pod fails its index for good.
    pub backoff_limit_per_index: Option<u32>,
    pub has_pod_failure_policy: bool,
    pub completed_indexes: IdSet,
    pub failed_indexes: IdSet,
    pub active: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// The field manager that last set `spec.parallelism` (`metadata.managedFields`).
    pub size_manager: Option<String>,
    /// The [`DESIRED_SIZE_ANNOTATION`] of a bare Job.
    pub desired_size: Option<Annotation>,
}

impl JobView {
    /// A Job of `size` with nothing counted yet, the API's default `backoffLimit` and no
    /// per-index backoff.
    pub fn new(name: &str, uid: &str, size: u32) -> Self {
        JobView {
            name: name.to_owned(),
            uid: uid.to_owned(),
            parallelism: size,
            completions: size,
            backoff_limit: 100,
            backoff_limit_per_index: None,
            has_pod_failure_policy: false,
            completed_indexes: IdSet::new(),
            failed_indexes: IdSet::new(),
            active: 0,
            succeeded: 0,
            failed: 0,
            size_manager: None,
            desired_size: None,
        }
    }
}

/// The Flux Operator MiniCluster that owns the Job. Its `spec.size` drives the Job's
/// parallelism and completions, so sizes are changed here when it exists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MiniClusterView {
    pub name: String,
    pub uid: String,
    pub size: u32,
    pub max_size: u32,
    /// `spec.flux.completeWorkers`: a worker broker that exits ends its pod Succeeded,
    /// which completes the index so the Job does not recreate it.
    pub complete_workers: bool,
    /// The field manager that last set `spec.size` (`metadata.managedFields`).
    pub size_manager: Option<String>,
    /// Its [`DESIRED_SIZE_ANNOTATION`].
    pub desired_size: Option<Annotation>,
}

/// Where fluxk8s keeps the live size asked of it, on the MiniCluster (on the Job when
/// there is none): it survives a module reload and a new rank-0 pod, anyone can read it,
/// and setting it with kubectl asks for a drain-aware resize.
pub const DESIRED_SIZE_ANNOTATION: &str = "fluxk8s.flux-framework.org/desired-size";

/// An annotation's text and the field manager that last set it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Annotation {
    pub value: String,
    pub manager: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// One pod of the Job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    /// `batch.kubernetes.io/job-completion-index`, which is the broker rank.
    pub index: u32,
    pub phase: PodPhase,
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
}

impl PodView {
    /// A running, ready pod.
    pub fn running(name: String, uid: String, index: u32) -> Self {
        PodView {
            name,
            uid,
            index,
            phase: PodPhase::Running,
            ready: true,
            terminating: false,
        }
    }

    /// Running or about to run, and not on its way out.
    pub fn is_live(&self) -> bool {
        matches!(self.phase, PodPhase::Pending | PodPhase::Running) && !self.terminating
    }
}

/// Everything observed on the Kubernetes side at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KubeView {
    pub job: JobView,
    pub minicluster: Option<MiniClusterView>,
    /// Pods of the Job, sorted by index; an index may briefly have two (an old one
    /// terminating beside its replacement). Shared with the driver's own records: a new
    /// view costs the broker's thread a reference count per pod, not two strings
    /// allocated on the driver's thread and freed on the broker's.
    pub pods: Vec<Arc<PodView>>,
}

impl KubeView {
    /// The size Kubernetes is asked to run: the MiniCluster's `spec.size` when an
    /// operator manages the Job, else the Job's completions.
    pub fn requested_size(&self) -> u32 {
        self.minicluster
            .as_ref()
            .map_or(self.job.completions, |mc| mc.size)
    }

    /// Who last set the size Kubernetes is asked to run, as the object records it.
    pub fn size_manager(&self) -> Option<&str> {
        match &self.minicluster {
            Some(mc) => mc.size_manager.as_deref(),
            None => self.job.size_manager.as_deref(),
        }
    }

    /// The desired-size annotation of the object sizes are written to.
    pub fn desired_size(&self) -> Option<&Annotation> {
        match &self.minicluster {
            Some(mc) => mc.desired_size.as_ref(),
            None => self.job.desired_size.as_ref(),
        }
    }

    /// The desired-size annotation says `size`.
    pub fn records_desired_size(&self, size: u32) -> bool {
        self.desired_size()
            .is_some_and(|a| a.value == size.to_string())
    }

    /// The live pod at `index`, if any.
    pub fn live_pod(&self, index: u32) -> Option<&PodView> {
        self.pods
            .iter()
            .find(|p| p.index == index && p.is_live())
            .map(Arc::as_ref)
    }

    /// Indexes the Job will not recreate while they stay below completions.
    pub fn finished_indexes(&self) -> IdSet {
        self.job.completed_indexes.union(&self.job.failed_indexes)
    }
}
