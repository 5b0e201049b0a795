//! What fluxk8s knows of the Kubernetes side: the Indexed Job, the MiniCluster that owns
//! it (if any), and the Job's pods by completion index (= Flux rank).
//!
//! The driver (`crate::k8s`) fills a [`KubeView`] from watches; the planner reads it.

use std::sync::Arc;

use serde::Serialize;

use super::derived::Derived;
use super::idset::{IdSet, group_by_key};

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

    /// Equal but for the pod counts (`active`, `succeeded`, `failed`), which the planner
    /// does not read: the Job's status changes with every pod that starts or ends.
    fn plans_like(&self, other: &JobView) -> bool {
        let JobView {
            name,
            uid,
            parallelism,
            completions,
            backoff_limit,
            backoff_limit_per_index,
            has_pod_failure_policy,
            completed_indexes,
            failed_indexes,
            active: _,
            succeeded: _,
            failed: _,
            size_manager,
            desired_size,
        } = self;
        *name == other.name
            && *uid == other.uid
            && *parallelism == other.parallelism
            && *completions == other.completions
            && *backoff_limit == other.backoff_limit
            && *backoff_limit_per_index == other.backoff_limit_per_index
            && *has_pod_failure_policy == other.has_pod_failure_policy
            && *completed_indexes == other.completed_indexes
            && *failed_indexes == other.failed_indexes
            && *size_manager == other.size_manager
            && *desired_size == other.desired_size
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
    /// Equal but for readiness, which the planner does not read.
    fn plans_like(&self, other: &PodView) -> bool {
        let PodView {
            name,
            uid,
            index,
            phase,
            ready: _,
            terminating,
        } = self;
        *name == other.name
            && *uid == other.uid
            && *index == other.index
            && *phase == other.phase
            && *terminating == other.terminating
    }

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
    /// Pods of the Job, sorted by index (the constructors keep it so: a rank's pods are a
    /// slice); an index may briefly have two (an old one terminating beside its
    /// replacement). Shared with the driver's own records: a new
    /// view costs the broker's thread a reference count per pod, not two strings
    /// allocated on the driver's thread and freed on the broker's.
    pods: Vec<Arc<PodView>>,
    /// Made from `pods` when first asked, and dropped with any change to them.
    #[serde(skip)]
    index: Derived<PodIndex>,
}

/// What plans and statuses read of every pod, made once per view (by the driver, on its
/// own thread, before it sends the view): each index's live pod in one dense table, so a
/// pass over 10,000 ranks reads it in order instead of following a pointer per pod, and
/// the pods in groups of one state, as a status lists them.
#[derive(Debug, Clone, Default)]
pub struct PodIndex {
    /// By completion index: its first live pod (see [`PodView::is_live`]), if any.
    live: Vec<Option<LivePod>>,
    /// The same as one byte per index (see [`liveness`]): two indexes compare it a slice
    /// at a time, a memory compare, and read entries only where a slice differs.
    liveness: Vec<u8>,
    groups: Vec<PodGroup>,
}

/// What a plan reads of an index's pods, as [`PodIndex::liveness`] keeps it.
fn liveness(live: Option<LivePod>) -> u8 {
    match live {
        None => 0,
        Some(LivePod { running: false, .. }) => 1,
        Some(LivePod { running: true, .. }) => 2,
    }
}

/// An index's live pod: where it is in the view's pods, and whether it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivePod {
    at: u32,
    pub running: bool,
}

/// Pods in one state, by completion index; `count` also counts an index twice when it has
/// two such pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodGroup {
    pub indexes: IdSet,
    pub phase: PodPhase,
    pub ready: bool,
    pub terminating: bool,
    pub count: usize,
}

impl PodIndex {
    fn of(pods: &[Arc<PodView>]) -> PodIndex {
        let mut live: Vec<Option<LivePod>> = Vec::new();
        for (at, pod) in pods.iter().enumerate().filter(|(_, p)| p.is_live()) {
            let k = pod.index as usize;
            if live.len() <= k {
                live.resize(k + 1, None);
            }
            live[k].get_or_insert(LivePod {
                at: at as u32,
                running: pod.phase == PodPhase::Running,
            });
        }
        let by_state = pods
            .iter()
            .map(|pod| ((pod.phase, pod.ready, pod.terminating), pod.index));
        let groups = group_by_key(by_state)
            .into_iter()
            .map(|group| PodGroup {
                indexes: group.ids,
                phase: group.key.0,
                ready: group.key.1,
                terminating: group.key.2,
                count: group.count,
            })
            .collect();
        let liveness = live.iter().map(|&pod| liveness(pod)).collect();
        PodIndex {
            live,
            liveness,
            groups,
        }
    }

    /// The live pod of index `k`, if any.
    pub fn live(&self, k: u32) -> Option<LivePod> {
        self.live.get(k as usize).copied().flatten()
    }

    /// The indexes whose live pod came, went, or started or stopped running between this
    /// index and `newer`: what a plan reads of the pods.
    pub fn live_changes(&self, newer: &PodIndex) -> IdSet {
        // A pod that starts among 10,000 differs in one slice of this many.
        const SLICE: usize = 256;
        let (old, new) = (&self.liveness, &newer.liveness);
        let at = |states: &[u8], k: usize| states.get(k).copied().unwrap_or(0);
        let len = old.len().max(new.len());
        let mut changed = IdSet::new();
        for start in (0..len).step_by(SLICE) {
            let end = (start + SLICE).min(len);
            if old
                .get(start..end)
                .is_some_and(|o| new.get(start..end) == Some(o))
            {
                continue;
            }
            for k in (start..end).filter(|&k| at(old, k) != at(new, k)) {
                changed.insert(k as u32);
            }
        }
        changed
    }

    /// Every pod, in groups of one (phase, ready, terminating), in the order each state
    /// first comes by index.
    pub fn groups(&self) -> &[PodGroup] {
        &self.groups
    }
}

impl KubeView {
    /// A view of these objects. The pods are sorted by index here, where the view is made
    /// (the driver's thread), so whoever reads it never checks.
    pub fn new(
        job: JobView,
        minicluster: Option<MiniClusterView>,
        mut pods: Vec<Arc<PodView>>,
    ) -> Self {
        sort_by_index(&mut pods);
        KubeView {
            job,
            minicluster,
            pods,
            index: Derived::default(),
        }
    }

    /// The pods of the Job, sorted by index.
    pub fn pods(&self) -> &[Arc<PodView>] {
        &self.pods
    }

    /// The pods of index `k`, found by binary search: a few pods read, not every one.
    pub fn pods_of(&self, k: u32) -> &[Arc<PodView>] {
        let from = self.pods.partition_point(|p| p.index < k);
        let to = from + self.pods[from..].partition_point(|p| p.index == k);
        &self.pods[from..to]
    }

    /// Changes the pods; they are sorted by index again after, and the index is made again
    /// when next asked.
    pub fn edit_pods<R>(&mut self, edit: impl FnOnce(&mut Vec<Arc<PodView>>) -> R) -> R {
        self.index.reset();
        let result = edit(&mut self.pods);
        sort_by_index(&mut self.pods);
        result
    }

    /// Whether the planner sees the same in `other`: the same Job and MiniCluster but for
    /// the Job's pod counts, and the same pods but for their readiness. Pods that did not
    /// change are the same shared records, so they cost a pointer compare each.
    pub fn plans_like(&self, other: &KubeView) -> bool {
        self.job.plans_like(&other.job)
            && self.minicluster == other.minicluster
            && self.pods.len() == other.pods.len()
            && self
                .pods
                .iter()
                .zip(&other.pods)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a.plans_like(b))
    }

    /// The pods' [`PodIndex`] taken out (made first if it was not), for whoever frees the
    /// view to keep.
    pub fn take_pod_index(&mut self) -> PodIndex {
        self.index
            .take()
            .unwrap_or_else(|| PodIndex::of(&self.pods))
    }

    /// The pods' [`PodIndex`], made on first use.
    pub fn pod_index(&self) -> &PodIndex {
        self.index.get_or_make(|| PodIndex::of(&self.pods))
    }

    /// The pod a [`LivePod`] of this view's index stands for.
    pub fn pod_at(&self, live: LivePod) -> &PodView {
        &self.pods[live.at as usize]
    }

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
        self.pod_index().live(index).map(|live| self.pod_at(live))
    }

    /// Indexes the Job will not recreate while they stay below completions.
    pub fn finished_indexes(&self) -> IdSet {
        self.job.completed_indexes.union(&self.job.failed_indexes)
    }
}

/// A stable sort: pods of one index keep the order they came in (the driver's, by name).
fn sort_by_index(pods: &mut [Arc<PodView>]) {
    if !pods.is_sorted_by_key(|p| p.index) {
        pods.sort_by_key(|p| p.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(index: u32, name: &str, phase: PodPhase, terminating: bool) -> Arc<PodView> {
        Arc::new(PodView {
            phase,
            terminating,
            ..PodView::running(name.into(), format!("uid-{name}"), index)
        })
    }

    #[test]
    fn the_pod_index_finds_each_live_pod_and_is_made_again_after_a_change() {
        let mut view = KubeView::new(
            JobView::new("j", "job-uid", 4),
            None,
            vec![
                pod(0, "j-0", PodPhase::Running, false),
                pod(1, "j-1-old", PodPhase::Running, true),
                pod(1, "j-1-new", PodPhase::Pending, false),
                pod(2, "j-2", PodPhase::Succeeded, false),
                pod(3, "j-3", PodPhase::Running, false),
            ],
        );
        let live = |view: &KubeView, k| view.live_pod(k).map(|p| p.name.clone());
        assert_eq!(live(&view, 0).as_deref(), Some("j-0"));
        // The terminating pod is not the index's live one; its replacement is, and waits.
        assert_eq!(live(&view, 1).as_deref(), Some("j-1-new"));
        assert!(!view.pod_index().live(1).unwrap().running);
        assert!(view.pod_index().live(0).unwrap().running);
        assert_eq!(live(&view, 2), None);
        assert_eq!(live(&view, 9), None);
        let groups: Vec<(String, PodPhase, bool, usize)> = view
            .pod_index()
            .groups()
            .iter()
            .map(|g| (g.indexes.to_string(), g.phase, g.terminating, g.count))
            .collect();
        assert_eq!(
            groups,
            [
                ("0,3".into(), PodPhase::Running, false, 2),
                ("1".into(), PodPhase::Running, true, 1),
                ("1".into(), PodPhase::Pending, false, 1),
                ("2".into(), PodPhase::Succeeded, false, 1),
            ]
        );

        // A view equals one with the same pods whether or not its index was made.
        let unindexed = KubeView::new(view.job.clone(), None, view.pods().to_vec());
        assert_eq!(view, unindexed);

        view.edit_pods(|pods| pods[4] = pod(3, "j-3", PodPhase::Failed, false));
        assert_eq!(live(&view, 3), None);
        assert_ne!(view, unindexed);
    }

    #[test]
    fn live_changes_name_the_indexes_whose_live_pod_came_went_or_started() {
        let running = |k: u32| pod(k, &format!("j-{k}"), PodPhase::Running, false);
        let before = KubeView::new(
            JobView::new("j", "job-uid", 700),
            None,
            (0..600).map(running).collect(),
        );
        let mut after = before.clone();
        after.edit_pods(|pods| {
            // Readiness is not read; a pod that stops running is, past the first slice too.
            pods[3] = Arc::new(PodView {
                ready: false,
                ..(*pods[3]).clone()
            });
            pods[300] = pod(300, "j-300", PodPhase::Pending, false);
            pods[5] = pod(5, "j-5", PodPhase::Running, true);
            pods.retain(|p| p.index != 10);
            pods.push(running(650));
        });
        let changes =
            |a: &KubeView, b: &KubeView| a.pod_index().live_changes(b.pod_index()).to_string();
        assert_eq!(changes(&before, &after), "5,10,300,650");
        assert_eq!(changes(&after, &before), "5,10,300,650");
        assert_eq!(changes(&before, &before.clone()), "");
    }

    #[test]
    fn a_view_keeps_its_pods_sorted_by_index_and_an_index_pods_in_their_order() {
        let names = |view: &KubeView| -> Vec<String> {
            view.pods().iter().map(|p| p.name.clone()).collect()
        };
        let mut view = KubeView::new(
            JobView::new("j", "job-uid", 4),
            None,
            vec![
                pod(3, "j-3", PodPhase::Running, false),
                pod(1, "j-1-old", PodPhase::Running, true),
                pod(0, "j-0", PodPhase::Running, false),
                pod(1, "j-1-new", PodPhase::Pending, false),
            ],
        );
        assert_eq!(names(&view), ["j-0", "j-1-old", "j-1-new", "j-3"]);
        view.edit_pods(|pods| {
            pods.reverse();
            pods.push(pod(2, "j-2", PodPhase::Pending, false));
        });
        assert_eq!(names(&view), ["j-0", "j-1-new", "j-1-old", "j-2", "j-3"]);
        assert_eq!(view.live_pod(2).map(|p| p.name.as_str()), Some("j-2"));
        let of = |k| -> Vec<&str> { view.pods_of(k).iter().map(|p| p.name.as_str()).collect() };
        assert_eq!(of(1), ["j-1-new", "j-1-old"]);
        assert_eq!(of(3), ["j-3"]);
        assert!(of(4).is_empty());
    }

    #[test]
    fn the_planner_sees_no_change_in_readiness_or_pod_counts_and_every_other() {
        let view = KubeView::new(
            JobView::new("j", "job-uid", 2),
            None,
            vec![
                pod(0, "j-0", PodPhase::Running, false),
                pod(1, "j-1", PodPhase::Running, false),
            ],
        );
        let changed = |change: &dyn Fn(&mut KubeView)| {
            let mut other = view.clone();
            change(&mut other);
            !view.plans_like(&other)
        };
        assert!(!changed(&|_| {}));
        assert!(!changed(&|v| v.job.active = 1));
        assert!(!changed(&|v| v.job.succeeded = 1));
        let edit_pod_1 = |edit: fn(&mut PodView)| {
            move |v: &mut KubeView| {
                v.edit_pods(|pods| edit(Arc::make_mut(&mut pods[1])));
            }
        };
        assert!(!changed(&edit_pod_1(|p| p.ready = false)));
        assert!(changed(&edit_pod_1(|p| p.phase = PodPhase::Failed)));
        assert!(changed(&edit_pod_1(|p| p.terminating = true)));
        assert!(changed(&edit_pod_1(|p| p.uid = "new".into())));
        assert!(changed(&|v| v.job.completions = 1));
        assert!(changed(&|v| {
            v.job.failed_indexes.insert(1);
        }));
        assert!(changed(&|v| v.edit_pods(|pods| pods.truncate(1))));
    }
}
