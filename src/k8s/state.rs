//! The driver's in-memory picture of the Job, its MiniCluster and its pods, fed by watch
//! events and turned into [`KubeView`] snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use tracing::{debug, warn};

use crate::model::{
    Annotation, DESIRED_SIZE_ANNOTATION, IdSet, JobView, KubeView, MiniClusterView, PodPhase,
    PodView,
};

/// Label and annotation holding a Job pod's completion index (= Flux rank).
pub const COMPLETION_INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

/// The Job controller's default `spec.backoffLimit` (docs/kubernetes.md 2.2).
const DEFAULT_BACKOFF_LIMIT: u32 = 6;

/// A pod as the driver keeps it: its view plus who controls it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRecord {
    /// Shared with every [`KubeView`] that shows the pod.
    pub view: Arc<PodView>,
    /// uid of the controller ownerReference, if any.
    pub controller_uid: Option<String>,
}

/// How a store files its objects: by name, or (pods) by completion index and name, so
/// that a store of 10,000 pods is already in the order a view lists them.
trait Filed {
    type Key: Ord + Clone + std::fmt::Debug;
    fn key(&self, name: &str) -> Self::Key;
}

impl Filed for JobView {
    type Key = String;
    fn key(&self, name: &str) -> String {
        name.to_owned()
    }
}

impl Filed for MiniClusterView {
    type Key = String;
    fn key(&self, name: &str) -> String {
        name.to_owned()
    }
}

impl Filed for PodRecord {
    type Key = (u32, String);
    fn key(&self, name: &str) -> (u32, String) {
        (self.view.index, name.to_owned())
    }
}

/// Objects filed by key, and each one's key by name (what watch events name).
#[derive(Debug)]
struct Filing<T: Filed> {
    objects: BTreeMap<T::Key, T>,
    keys: BTreeMap<String, T::Key>,
}

impl<T: Filed> Default for Filing<T> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            keys: BTreeMap::new(),
        }
    }
}

impl<T: Filed> Filing<T> {
    fn insert(&mut self, name: String, value: T) {
        let key = value.key(&name);
        // Filed under another key before (a pod whose index label was edited).
        if let Some(old) = self.keys.insert(name, key.clone())
            && old != key
        {
            self.objects.remove(&old);
        }
        self.objects.insert(key, value);
    }

    fn remove(&mut self, name: &str) {
        if let Some(key) = self.keys.remove(name) {
            self.objects.remove(&key);
        }
    }

    fn get(&self, name: &str) -> Option<&T> {
        self.objects.get(self.keys.get(name)?)
    }
}

/// Objects of one watch, replaced wholesale when a (re)list completes.
#[derive(Debug)]
struct Store<T: Filed> {
    filed: Filing<T>,
    /// Objects of a list in progress; swapped in at `InitDone` so a relist never shows a
    /// half-listed picture.
    listing: Option<Filing<T>>,
    listed_once: bool,
}

impl<T: Filed> Default for Store<T> {
    fn default() -> Self {
        Self {
            filed: Filing::default(),
            listing: None,
            listed_once: false,
        }
    }
}

impl<T: Filed> Store<T> {
    /// Applies one watch event; `convert` gives the name and value, or `None` to skip an
    /// object that cannot be used.
    fn apply<K>(&mut self, event: Event<K>, convert: impl Fn(&K) -> Option<(String, T)>)
    where
        K: ResourceExt,
    {
        match event {
            Event::Init => self.listing = Some(Filing::default()),
            Event::InitApply(obj) => {
                if let (Some(listing), Some((name, value))) = (self.listing.as_mut(), convert(&obj))
                {
                    listing.insert(name, value);
                }
            }
            Event::InitDone => {
                if let Some(listing) = self.listing.take() {
                    self.filed = listing;
                }
                self.listed_once = true;
            }
            Event::Apply(obj) => match convert(&obj) {
                Some((name, value)) => self.filed.insert(name, value),
                None => self.filed.remove(&obj.name_any()),
            },
            Event::Delete(obj) => self.filed.remove(&obj.name_any()),
        }
    }

    /// The objects in key order.
    fn objects(&self) -> impl Iterator<Item = &T> {
        self.filed.objects.values()
    }
}

/// Everything the watches have reported so far.
#[derive(Debug, Default)]
pub struct ClusterState {
    job: Store<JobView>,
    minicluster: Store<MiniClusterView>,
    pods: Store<PodRecord>,
    /// Whether a MiniCluster is watched at all (bare Jobs have none).
    watches_minicluster: bool,
    /// Events applied so far: unchanged means nothing to publish.
    revision: u64,
}

impl ClusterState {
    /// An empty state; `watches_minicluster` says whether a MiniCluster watch feeds it.
    pub fn new(watches_minicluster: bool) -> Self {
        Self {
            watches_minicluster,
            ..Self::default()
        }
    }

    /// Applies a Job watch event.
    pub fn apply_job(&mut self, event: Event<Job>) {
        self.revision += 1;
        self.job
            .apply(event, |job| Some((job.name_any(), job_view(job))));
    }

    /// Applies a MiniCluster watch event.
    pub fn apply_minicluster(&mut self, event: Event<DynamicObject>) {
        self.revision += 1;
        self.minicluster
            .apply(event, |mc| Some((mc.name_any(), minicluster_view(mc))));
    }

    /// Applies a pod watch event; pods without a completion index are skipped.
    pub fn apply_pod(&mut self, event: Event<Pod>) {
        self.revision += 1;
        self.pods.apply(event, |pod| {
            let record = pod_record(pod)?;
            Some((record.view.name.clone(), record))
        });
    }

    /// Counts the events applied; it changes whenever the state may have.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// True once every watch has completed its first list.
    pub fn synced(&self) -> bool {
        self.job.listed_once
            && self.pods.listed_once
            && (!self.watches_minicluster || self.minicluster.listed_once)
    }

    /// The Job, if it currently exists (the watch selects it by name, so at most one).
    pub fn job(&self) -> Option<&JobView> {
        self.job.objects().next()
    }

    /// The pod of that name, as the pod watch last showed it.
    pub fn pod(&self, name: &str) -> Option<&PodRecord> {
        self.pods.filed.get(name)
    }

    /// The MiniCluster, if watched and present.
    pub fn minicluster(&self) -> Option<&MiniClusterView> {
        self.minicluster.objects().next()
    }

    /// A snapshot: the Job, its MiniCluster and the pods whose controller is this Job
    /// (by uid, so pods of an earlier Job of the same name never count). `None` while the
    /// Job does not exist.
    pub fn view(&self) -> Option<KubeView> {
        let job = self.job()?.clone();
        // The pod store is filed by (index, name): the view needs no sort.
        let pods = self
            .pods
            .objects()
            .filter(|p| p.controller_uid.as_deref() == Some(job.uid.as_str()))
            .map(|p| Arc::clone(&p.view))
            .collect();
        Some(KubeView::new(job, self.minicluster().cloned(), pods))
    }
}

fn to_u32(value: Option<i32>, default: u32) -> u32 {
    value.map_or(default, |v| u32::try_from(v).unwrap_or(0))
}

fn parse_indexes(job: &str, field: &str, value: Option<&String>) -> IdSet {
    let Some(text) = value else {
        return IdSet::new();
    };
    text.parse().unwrap_or_else(|err| {
        warn!("Job {job}: ignoring unparsable status.{field}: {err}");
        IdSet::new()
    })
}

/// The parts of a Job the planner needs.
pub fn job_view(job: &Job) -> JobView {
    let name = job.name_any();
    let spec = job.spec.as_ref();
    let status = job.status.as_ref();
    let parallelism = to_u32(spec.and_then(|s| s.parallelism), 1);
    JobView {
        uid: job.uid().unwrap_or_default(),
        parallelism,
        // Kubernetes defaults completions to parallelism when unset.
        completions: to_u32(spec.and_then(|s| s.completions), parallelism),
        backoff_limit: to_u32(spec.and_then(|s| s.backoff_limit), DEFAULT_BACKOFF_LIMIT),
        backoff_limit_per_index: spec
            .and_then(|s| s.backoff_limit_per_index)
            .map(|v| u32::try_from(v).unwrap_or(0)),
        has_pod_failure_policy: spec.is_some_and(|s| s.pod_failure_policy.is_some()),
        completed_indexes: parse_indexes(
            &name,
            "completedIndexes",
            status.and_then(|s| s.completed_indexes.as_ref()),
        ),
        failed_indexes: parse_indexes(
            &name,
            "failedIndexes",
            status.and_then(|s| s.failed_indexes.as_ref()),
        ),
        active: to_u32(status.and_then(|s| s.active), 0),
        succeeded: to_u32(status.and_then(|s| s.succeeded), 0),
        failed: to_u32(status.and_then(|s| s.failed), 0),
        size_manager: field_manager(job.managed_fields(), &["f:spec", "f:parallelism"]),
        desired_size: desired_size(job.annotations(), job.managed_fields()),
        name,
    }
}

/// The desired-size annotation with the manager that last set it.
fn desired_size(
    annotations: &BTreeMap<String, String>,
    entries: &[ManagedFieldsEntry],
) -> Option<Annotation> {
    let value = annotations.get(DESIRED_SIZE_ANNOTATION)?;
    let key = format!("f:{DESIRED_SIZE_ANNOTATION}");
    Some(Annotation {
        value: value.clone(),
        manager: field_manager(entries, &["f:metadata", "f:annotations", &key]),
    })
}

/// The manager whose `managedFields` entry owns the field at `path` (`["f:spec",
/// "f:size"]`): the last writer of it.
fn field_manager(entries: &[ManagedFieldsEntry], path: &[&str]) -> Option<String> {
    entries
        .iter()
        .filter(|entry| {
            entry.fields_v1.as_ref().is_some_and(|fields| {
                path.iter()
                    .try_fold(&fields.0, |at, key| at.get(*key))
                    .is_some()
            })
        })
        .max_by(|a, b| {
            a.time
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.time.as_ref().map(|t| t.0))
        })
        .and_then(|entry| entry.manager.clone())
}

fn json_u32(value: &serde_json::Value, pointer: &str) -> Option<u32> {
    value
        .pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
}

/// The parts of a MiniCluster the planner needs. `max_size` is `spec.maxSize`, else the
/// operator's `status.maximumSize`, else `spec.size` (the operator's default).
pub fn minicluster_view(mc: &DynamicObject) -> MiniClusterView {
    let size = json_u32(&mc.data, "/spec/size").unwrap_or(0);
    let max_size = json_u32(&mc.data, "/spec/maxSize")
        .filter(|&m| m > 0)
        .or_else(|| json_u32(&mc.data, "/status/maximumSize").filter(|&m| m > 0))
        .unwrap_or(size);
    MiniClusterView {
        name: mc.name_any(),
        uid: mc.uid().unwrap_or_default(),
        size,
        max_size,
        complete_workers: mc
            .data
            .pointer("/spec/flux/completeWorkers")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        size_manager: field_manager(mc.managed_fields(), &["f:spec", "f:size"]),
        desired_size: desired_size(mc.annotations(), mc.managed_fields()),
    }
}

/// A pod's completion index from its label, else its annotation.
fn completion_index(pod: &Pod) -> Option<u32> {
    let text = pod
        .labels()
        .get(COMPLETION_INDEX_KEY)
        .or_else(|| pod.annotations().get(COMPLETION_INDEX_KEY))?;
    text.parse().ok()
}

/// uid of the pod's controller ownerReference.
fn controller_uid(pod: &Pod) -> Option<String> {
    pod.owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

fn pod_phase(pod: &Pod) -> PodPhase {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        _ => PodPhase::Unknown,
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conds| {
            conds
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// A pod as the driver keeps it; `None` for a pod without a completion index.
pub fn pod_record(pod: &Pod) -> Option<PodRecord> {
    let name = pod.name_any();
    let Some(index) = completion_index(pod) else {
        debug!("pod {name} has no {COMPLETION_INDEX_KEY}; not a broker pod");
        return None;
    };
    Some(PodRecord {
        view: Arc::new(PodView {
            uid: pod.uid().unwrap_or_default(),
            index,
            phase: pod_phase(pod),
            ready: pod_ready(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            name,
        }),
        controller_uid: controller_uid(pod),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, uid: &str, index: Option<u32>, owner: &str, phase: &str) -> Pod {
        let mut labels = serde_json::Map::new();
        if let Some(i) = index {
            labels.insert(COMPLETION_INDEX_KEY.to_owned(), json!(i.to_string()));
        }
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "uid": uid, "labels": labels, "resourceVersion": "1",
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": owner,
                    "controller": true
                }]
            },
            "status": {
                "phase": phase,
                "conditions": [{"type": "Ready", "status": if phase == "Running" { "True" } else { "False" }}]
            }
        }))
        .expect("valid pod")
    }

    fn job(uid: &str) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "j", "uid": uid, "resourceVersion": "1"},
            "spec": {
                "parallelism": 4, "completions": 4, "backoffLimit": 100,
                "completionMode": "Indexed",
                "template": {"spec": {"containers": []}}
            },
            "status": {"active": 3, "succeeded": 1, "completedIndexes": "2"}
        }))
        .expect("valid job")
    }

    #[test]
    fn job_view_reads_sizes_policy_and_indexes() {
        let view = job_view(&job("u1"));
        assert_eq!(view.name, "j");
        assert_eq!((view.parallelism, view.completions), (4, 4));
        assert_eq!(view.backoff_limit, 100);
        assert_eq!(view.backoff_limit_per_index, None);
        assert!(!view.has_pod_failure_policy);
        assert_eq!(view.completed_indexes, IdSet::range(2, 2));
        assert!(view.failed_indexes.is_empty());
        assert_eq!((view.active, view.succeeded, view.failed), (3, 1, 0));
    }

    #[test]
    fn minicluster_view_prefers_spec_max_size_then_status() {
        let mc = |data| DynamicObject {
            types: None,
            metadata: serde_json::from_value(json!({"name": "mc", "uid": "m1"})).unwrap(),
            data,
        };
        let full = minicluster_view(&mc(json!({
            "spec": {"size": 3, "maxSize": 8, "flux": {"completeWorkers": true}},
            "status": {"maximumSize": 5}
        })));
        assert_eq!(
            (full.size, full.max_size, full.complete_workers),
            (3, 8, true)
        );
        let status_only = minicluster_view(&mc(json!({
            "spec": {"size": 3}, "status": {"maximumSize": 5}
        })));
        assert_eq!(status_only.max_size, 5);
        let bare = minicluster_view(&mc(json!({"spec": {"size": 3}})));
        assert_eq!((bare.max_size, bare.complete_workers), (3, false));
    }

    /// A state whose Job (uid `u1`) is listed, and whose pod list has begun.
    fn listing_pods() -> ClusterState {
        let mut state = ClusterState::new(false);
        state.apply_job(Event::Init);
        state.apply_job(Event::InitApply(job("u1")));
        state.apply_job(Event::InitDone);
        state.apply_pod(Event::Init);
        state
    }

    #[test]
    fn view_keeps_only_pods_the_job_controls_sorted_by_index() {
        let mut state = listing_pods();
        state.apply_pod(Event::InitApply(pod(
            "j-2-a",
            "p2",
            Some(2),
            "u1",
            "Running",
        )));
        state.apply_pod(Event::InitApply(pod(
            "j-0-a",
            "p0",
            Some(0),
            "u1",
            "Running",
        )));
        state.apply_pod(Event::InitApply(pod(
            "j-1-old",
            "px",
            Some(1),
            "old-job",
            "Running",
        )));
        state.apply_pod(Event::InitApply(pod(
            "services", "ps", None, "u1", "Running",
        )));
        // By name, "j-10-*" comes before "j-2-a"; by index it comes after, and a
        // replacement beside its predecessor is ordered by name.
        for name in ["j-10-b", "j-10-a"] {
            state.apply_pod(Event::InitApply(pod(name, name, Some(10), "u1", "Pending")));
        }
        assert!(!state.synced(), "pods not listed yet");
        state.apply_pod(Event::InitDone);
        assert!(state.synced());
        let view = state.view().expect("job present");
        let names: Vec<_> = view.pods().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["j-0-a", "j-2-a", "j-10-a", "j-10-b"]);
        assert!(view.pods()[0].ready);
        assert_eq!(view.pods()[1].phase, PodPhase::Running);
    }

    #[test]
    fn a_pod_is_refiled_when_its_index_changes_and_found_by_name() {
        let mut state = listing_pods();
        state.apply_pod(Event::InitDone);
        state.apply_pod(Event::Apply(pod("j-x", "p", Some(1), "u1", "Running")));
        state.apply_pod(Event::Apply(pod("j-x", "p", Some(3), "u1", "Running")));
        let indexes = |state: &ClusterState| -> Vec<u32> {
            let view = state.view().expect("job present");
            view.pods().iter().map(|p| p.index).collect()
        };
        assert_eq!(indexes(&state), [3], "filed once, under its new index");
        assert_eq!(state.pod("j-x").map(|p| p.view.index), Some(3));
        state.apply_pod(Event::Delete(pod("j-x", "p", Some(3), "u1", "Running")));
        assert!(indexes(&state).is_empty());
        assert!(state.pod("j-x").is_none());
    }

    #[test]
    fn relist_replaces_the_store_only_when_done() {
        let mut state = ClusterState::new(false);
        state.apply_job(Event::InitDone);
        state.apply_job(Event::Apply(job("u1")));
        state.apply_pod(Event::InitDone);
        state.apply_pod(Event::Apply(pod("j-1-a", "p1", Some(1), "u1", "Running")));
        state.apply_pod(Event::Init);
        state.apply_pod(Event::InitApply(pod(
            "j-2-a",
            "p2",
            Some(2),
            "u1",
            "Pending",
        )));
        let during = state.view().unwrap();
        assert_eq!(during.pods().len(), 1);
        assert_eq!(during.pods()[0].name, "j-1-a");
        state.apply_pod(Event::InitDone);
        let after = state.view().unwrap();
        assert_eq!(after.pods().len(), 1);
        assert_eq!(after.pods()[0].name, "j-2-a");
    }

    #[test]
    fn deleted_job_gives_no_view_and_minicluster_gates_sync() {
        let mut state = ClusterState::new(true);
        state.apply_job(Event::InitDone);
        state.apply_pod(Event::InitDone);
        assert!(!state.synced(), "minicluster not listed yet");
        state.apply_minicluster(Event::InitDone);
        assert!(state.synced());
        state.apply_job(Event::Apply(job("u1")));
        assert!(state.view().is_some());
        state.apply_job(Event::Delete(job("u1")));
        assert!(state.view().is_none());
    }

    #[test]
    fn index_comes_from_label_or_annotation() {
        let mut p = pod("j-3-a", "p3", None, "u1", "Running");
        assert_eq!(completion_index(&p), None);
        p.metadata.annotations = Some([(COMPLETION_INDEX_KEY.to_owned(), "3".to_owned())].into());
        assert_eq!(completion_index(&p), Some(3));
        assert_eq!(controller_uid(&p).as_deref(), Some("u1"));
    }
}
