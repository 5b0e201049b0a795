//! The simulated cluster's state machine: the store plus the controllers (Flux Operator,
//! Job controller, kubelet) that react to every change. One lock guards it; every method
//! runs to completion synchronously, so a request is applied with all its consequences.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::job_pods::JobPods;
use super::kinds::Kind;
use super::pod_views::PodViews;
use super::status::ApiError;
use super::store::{Change, ObjectKey, Store};

/// Finalizer the Job controller puts on its pods until it has counted them.
pub const JOB_TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Grace period of a pod that names none (the Kubernetes default).
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// How the simulated cluster behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Kubelet: time from pod creation to Running and Ready.
    pub pod_start_delay: Duration,
    /// Kubelet: how long a container takes to exit after SIGTERM; the pod's grace period
    /// caps it (grace 0 stops it at once).
    pub termination_delay: Duration,
    /// Operator variant: `backoffLimitPerIndex` on the Jobs it creates (the unmerged
    /// flux-operator PR #213 sets 0, docs/kubernetes.md 2.3); `None` is the released
    /// operator, which sets none.
    pub operator_backoff_limit_per_index: Option<u32>,
    /// Changes kept for watches that resume from an older resourceVersion.
    pub history_limit: usize,
    /// The user named in 403 messages.
    pub user: String,
    /// Seed of the generator for pod name suffixes and uids (deterministic runs).
    pub seed: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            pod_start_delay: Duration::from_millis(2),
            termination_delay: Duration::from_millis(5),
            operator_backoff_limit_per_index: None,
            history_limit: 1000,
            user: "system:serviceaccount:default:flux-k8s".into(),
            seed: 0x5eed_f1a5,
        }
    }
}

/// What happened to a pod, for tests that make a fake Flux follow the pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub namespace: String,
    pub pod: String,
    /// `batch.kubernetes.io/job-name`, if a Job owns the pod.
    pub job: Option<String>,
    /// `batch.kubernetes.io/job-completion-index`, if any.
    pub index: Option<u32>,
    pub kind: PodEventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodEventKind {
    /// The container runs (pod Running and Ready).
    Started,
    /// The pod was deleted; its container got SIGTERM.
    Terminating,
    /// The container exited.
    Ended { exit_code: i32 },
    /// The pod object is gone.
    Deleted,
}

/// Work the kubelet does later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimerAction {
    StartPod { key: ObjectKey, uid: String },
    StopPod { key: ObjectKey, uid: String },
}

#[derive(Debug)]
struct Timer {
    due: Instant,
    /// Order of scheduling: timers due at the same instant run in the order they were set.
    sequence: u64,
    action: TimerAction,
}

impl Timer {
    fn order(&self) -> (Instant, u64) {
        (self.due, self.sequence)
    }
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order().cmp(&other.order())
    }
}

/// The objects whose controller has to run, because something it reads changed. Each
/// controller reads only its own object and what that owns, so a request that changes one
/// pod runs one Job sync, not one per Job in the cluster.
#[derive(Debug, Default)]
struct Queue {
    miniclusters: BTreeSet<ObjectKey>,
    jobs: BTreeSet<ObjectKey>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.miniclusters.is_empty() && self.jobs.is_empty()
    }

    fn merge(&mut self, other: Queue) {
        self.miniclusters.extend(other.miniclusters);
        self.jobs.extend(other.jobs);
    }

    fn add(&mut self, key: &ObjectKey) {
        match key.kind {
            Kind::MiniCluster => self.miniclusters.insert(key.clone()),
            Kind::Job => self.jobs.insert(key.clone()),
            Kind::Pod | Kind::Event | Kind::EventV1 => false,
        };
    }

    /// Queues the readers of each changed object: a MiniCluster's operator reconcile reads
    /// it and the Job of the same name; a Job's sync reads the Job and the pods it controls
    /// (before and after the change, so a pod that lost its owner is let go of too).
    fn add_changes(&mut self, changes: &[Arc<Change>]) {
        for change in changes {
            let key = &change.key;
            match key.kind {
                Kind::MiniCluster => self.add(key),
                Kind::Job => {
                    self.add(key);
                    self.add(&ObjectKey::new(
                        Kind::MiniCluster,
                        &key.namespace,
                        &key.name,
                    ));
                }
                Kind::Pod => {
                    for version in change.previous().into_iter().chain(change.current()) {
                        if let Some(("Job", job, _)) = controller_of(version) {
                            self.add(&ObjectKey::new(Kind::Job, &key.namespace, job));
                        }
                    }
                }
                Kind::Event | Kind::EventV1 => {}
            }
        }
    }
}

/// What one `settle` did: traced, and bounded by tests so that a request's cost cannot
/// grow with the size of the cluster again unnoticed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SettleWork {
    pub rounds: usize,
    pub reconciles: usize,
    pub job_syncs: usize,
    /// Pods the Job controller read, over all its syncs.
    pub pods_read: usize,
}

/// A small deterministic generator (xorshift64*) for names and uids.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Five characters from the alphabet Kubernetes uses for generated names.
    fn name_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| ALPHABET[(self.next() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    fn uid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
}

/// Reads a stored object as its typed form. Stored objects were validated on the way in,
/// so a failure is a sim bug, reported and skipped rather than panicking a request.
pub(crate) fn decode<T: DeserializeOwned>(object: &Value) -> Option<T> {
    serde_json::from_value(object.clone())
        .inspect_err(|e| tracing::error!("sim: stored object does not decode: {e}"))
        .ok()
}

/// `metadata.ownerReferences[]` entry that is the controller, as (kind, name, uid).
pub(crate) fn controller_of(object: &Value) -> Option<(&str, &str, &str)> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| Some((r["kind"].as_str()?, r["name"].as_str()?, r["uid"].as_str()?)))
}

/// An ownerReference that makes `owner` the controller of the object that carries it.
pub(crate) fn controller_reference(kind: Kind, owner: &Value) -> Value {
    json!({
        "apiVersion": kind.api_version(),
        "kind": kind.kind(),
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The current time as Kubernetes writes timestamps.
pub(crate) fn timestamp_after(delay: Duration) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now()
        + k8s_openapi::jiff::SignedDuration::try_from(delay).unwrap_or_default();
    let time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
    serde_json::to_value(time).unwrap_or(Value::Null)
}

pub(crate) fn now_timestamp() -> Value {
    timestamp_after(Duration::ZERO)
}

/// How dependents of a deleted object are treated (`DeleteOptions.propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Orphan,
    Background,
}

impl Propagation {
    /// The API default: batch/v1 Jobs orphan their pods (legacy), everything else cascades.
    pub(crate) fn default_for(kind: Kind) -> Self {
        match kind {
            Kind::Job => Propagation::Orphan,
            _ => Propagation::Background,
        }
    }
}

/// The whole simulated cluster.
pub struct SimState {
    pub(crate) store: Store,
    pub(crate) options: SimOptions,
    rng: Rng,
    timers: BinaryHeap<Reverse<Timer>>,
    timers_set: u64,
    pod_listeners: Vec<std_mpsc::Sender<PodEvent>>,
    /// Controllers to run in this settle.
    queue: Queue,
    /// Controllers that failed to write (say a generated pod name was taken) run again at
    /// the next settle, as the real ones requeue.
    requeued: Queue,
    pub(crate) job_pods: JobPods,
    pub(crate) pod_views: PodViews,
    pub(crate) settle_work: SettleWork,
}

impl SimState {
    pub fn new(options: SimOptions) -> Self {
        Self {
            store: Store::new(options.history_limit),
            rng: Rng(options.seed | 1),
            options,
            timers: BinaryHeap::new(),
            timers_set: 0,
            pod_listeners: Vec::new(),
            queue: Queue::default(),
            requeued: Queue::default(),
            job_pods: JobPods::default(),
            pod_views: PodViews::default(),
            settle_work: SettleWork::default(),
        }
    }

    pub fn subscribe_pods(&mut self) -> std_mpsc::Receiver<PodEvent> {
        let (sender, receiver) = std_mpsc::channel();
        self.pod_listeners.push(sender);
        receiver
    }

    pub(crate) fn emit_pod_event(&mut self, pod: &Value, kind: PodEventKind) {
        let labels = &pod["metadata"]["labels"];
        let event = PodEvent {
            namespace: pod["metadata"]["namespace"].as_str().unwrap_or("").into(),
            pod: pod["metadata"]["name"].as_str().unwrap_or("").into(),
            job: labels["batch.kubernetes.io/job-name"]
                .as_str()
                .map(Into::into),
            index: labels["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .and_then(|i| i.parse().ok()),
            kind,
        };
        self.pod_listeners.retain(|l| l.send(event.clone()).is_ok());
    }

    pub(crate) fn schedule(&mut self, delay: Duration, action: TimerAction) {
        self.timers_set += 1;
        self.timers.push(Reverse(Timer {
            due: Instant::now() + delay,
            sequence: self.timers_set,
            action,
        }));
    }

    /// When the next kubelet action is due.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(timer)| timer.due)
    }

    /// Runs every kubelet action due by `deadline`, then lets the controllers react.
    pub fn fire_timers(&mut self, deadline: Instant) {
        // Everything due runs first, then the controllers settle once: settling after
        // each of a thousand pod starts made large Jobs quadratic.
        let mut fired = false;
        while self
            .timers
            .peek()
            .is_some_and(|Reverse(timer)| timer.due <= deadline)
        {
            let Some(Reverse(timer)) = self.timers.pop() else {
                break;
            };
            self.run_timer(timer.action);
            fired = true;
        }
        if fired {
            self.settle();
        }
    }

    /// Stores a new object: name (from `generateName` if needed), uid, timestamps and the
    /// per-kind defaults, as the API server does on create.
    pub(crate) fn create_object(
        &mut self,
        kind: Kind,
        namespace: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let mut object = kind.normalize(body).map_err(|why| {
            ApiError::bad_request(format!("the {} object is not valid: {why}", kind.kind()))
        })?;
        let metadata = &mut object["metadata"];
        match metadata["namespace"].as_str() {
            Some(ns) if ns != namespace => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({ns}) does not match the namespace \
                     sent on the request ({namespace})"
                )));
            }
            _ => metadata["namespace"] = json!(namespace),
        }
        if metadata["name"].as_str().is_none_or(str::is_empty) {
            let Some(prefix) = metadata["generateName"].as_str().filter(|p| !p.is_empty()) else {
                return Err(ApiError::invalid(
                    &kind.group_kind(),
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            };
            metadata["name"] = json!(format!("{prefix}{}", self.rng.name_suffix()));
        }
        let name = metadata["name"].as_str().unwrap_or_default().to_owned();
        let key = ObjectKey::new(kind, namespace, &name);
        if self.store.get(&key).is_some() {
            return Err(ApiError::already_exists(&kind.group_resource(), &name));
        }
        let uid = self.rng.uid();
        let metadata = &mut object["metadata"];
        metadata["uid"] = json!(uid);
        metadata["creationTimestamp"] = now_timestamp();
        metadata["generation"] = json!(1);
        for server_field in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
        ] {
            if let Some(fields) = metadata.as_object_mut() {
                fields.remove(server_field);
            }
        }
        if kind.has_status_subresource()
            && let Some(fields) = object.as_object_mut()
        {
            fields.remove("status");
        }
        match kind {
            Kind::Job => super::job_controller::default_and_validate_new_job(&mut object)?,
            Kind::Pod => super::kubelet::admit_pod(&mut object),
            Kind::MiniCluster => super::operator::default_new_minicluster(&mut object),
            Kind::Event | Kind::EventV1 => {}
        }
        let stored = self.store.create(key.clone(), object);
        if kind == Kind::Pod {
            let delay = self.options.pod_start_delay;
            self.schedule(delay, TimerAction::StartPod { key, uid });
        }
        Ok(stored)
    }

    /// Writes a new version of an object through the main resource: server-managed metadata
    /// is kept, `status` too when it is a subresource, and `expected_version` (if any) must
    /// be current.
    pub(crate) fn update_object(
        &mut self,
        key: &ObjectKey,
        proposed: Value,
        expected_version: Option<&str>,
    ) -> Result<Value, ApiError> {
        let kind = key.kind;
        let current = self
            .store
            .get(key)
            .ok_or_else(|| ApiError::not_found(&kind.group_resource(), &key.name))?
            .clone();
        if let Some(expected) = expected_version.filter(|v| !v.is_empty())
            && current["metadata"]["resourceVersion"].as_str() != Some(expected)
        {
            return Err(ApiError::modified(&kind.group_resource(), &key.name));
        }
        let mut object = kind.normalize(proposed).map_err(|why| {
            ApiError::bad_request(format!("the {} object is not valid: {why}", kind.kind()))
        })?;
        for (field, immutable) in [("name", &key.name), ("namespace", &key.namespace)] {
            match object["metadata"][field].as_str() {
                Some(given) if given != immutable.as_str() => {
                    return Err(ApiError::invalid(
                        &kind.group_kind(),
                        &key.name,
                        &format!("metadata.{field}: Invalid value: {given:?}: field is immutable"),
                    ));
                }
                _ => object["metadata"][field] = json!(immutable),
            }
        }
        for system_field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match current["metadata"].get(system_field) {
                Some(value) => object["metadata"][system_field] = value.clone(),
                None => {
                    if let Some(fields) = object["metadata"].as_object_mut() {
                        fields.remove(system_field);
                    }
                }
            }
        }
        if kind.has_status_subresource() {
            match current.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    if let Some(fields) = object.as_object_mut() {
                        fields.remove("status");
                    }
                }
            }
        }
        if kind == Kind::Job {
            super::job_controller::validate_job_update(&current, &object)?;
        }
        if object.get("spec") != current.get("spec") {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
            object["metadata"]["generation"] = json!(generation + 1);
        }
        Ok(self.write(key, object))
    }

    /// Stores a controller's (or kubelet's) change, which skips API validation, and finishes
    /// a deletion the change unblocked.
    pub(crate) fn write(&mut self, key: &ObjectKey, object: Value) -> Value {
        let stored = self.store.update(key.clone(), object);
        self.finish_deletion_if_ready(key);
        stored
    }

    /// Removes an object marked for deletion once nothing holds it: no finalizers and, for a
    /// pod, the kubelet has stopped it (`deletionGracePeriodSeconds` 0).
    fn finish_deletion_if_ready(&mut self, key: &ObjectKey) {
        let Some(object) = self.store.get(key) else {
            return;
        };
        let metadata = &object["metadata"];
        let ready = !metadata["deletionTimestamp"].is_null()
            && metadata["finalizers"].as_array().is_none_or(Vec::is_empty)
            && (key.kind != Kind::Pod || metadata["deletionGracePeriodSeconds"] == 0);
        if ready
            && let Some(deleted) = self.store.delete(key)
            && key.kind == Kind::Pod
        {
            self.emit_pod_event(&deleted, PodEventKind::Deleted);
        }
    }

    /// Removes `finalizer` from an object (a no-op write if absent).
    pub(crate) fn remove_finalizer(&mut self, key: &ObjectKey, finalizer: &str) {
        let Some(mut object) = self.store.get(key).cloned() else {
            return;
        };
        if let Some(finalizers) = object["metadata"]["finalizers"].as_array_mut() {
            finalizers.retain(|f| f != finalizer);
            if finalizers.is_empty()
                && let Some(metadata) = object["metadata"].as_object_mut()
            {
                metadata.remove("finalizers");
            }
        }
        self.write(key, object);
    }

    /// Starts deleting an object. A pod is marked terminating and stopped by the kubelet
    /// after at most its grace period; other kinds go at once unless finalizers hold them.
    /// Dependents are then orphaned or deleted per `propagation`.
    pub(crate) fn delete_object(
        &mut self,
        key: &ObjectKey,
        grace_seconds: Option<i64>,
        propagation: Propagation,
    ) -> Result<Value, ApiError> {
        let mut object = self
            .store
            .get(key)
            .ok_or_else(|| ApiError::not_found(&key.kind.group_resource(), &key.name))?
            .clone();
        if !object["metadata"]["deletionTimestamp"].is_null() {
            return Ok(object);
        }
        let held = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if key.kind != Kind::Pod && !held {
            let deleted = self.store.delete(key).unwrap_or(object);
            self.collect_dependents(&deleted, propagation);
            return Ok(deleted);
        }
        let grace = if key.kind == Kind::Pod {
            grace_seconds
                .or_else(|| object["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(DEFAULT_GRACE_SECONDS)
                .max(0)
        } else {
            0
        };
        object["metadata"]["deletionTimestamp"] =
            timestamp_after(Duration::from_secs(grace.unsigned_abs()));
        object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        let stored = self.write(key, object);
        if key.kind == Kind::Pod && self.store.get(key).is_some() {
            super::kubelet::begin_termination(self, key, &stored, grace);
        }
        self.collect_dependents(&stored, propagation);
        Ok(stored)
    }

    /// Garbage collection of the objects `owner` controls: an orphaned dependent loses its
    /// ownerReference, otherwise it is deleted. Either way a pod's job-tracking finalizer is
    /// dropped, since no Job controller will account it any more.
    fn collect_dependents(&mut self, owner: &Value, propagation: Propagation) {
        let Some(owner_uid) = owner["metadata"]["uid"].as_str() else {
            return;
        };
        let dependents: Vec<ObjectKey> = self.store.owned_by(owner_uid).cloned().collect();
        for key in dependents {
            if key.kind == Kind::Pod {
                self.remove_finalizer(&key, JOB_TRACKING_FINALIZER);
            }
            match propagation {
                Propagation::Orphan => {
                    if let Some(mut object) = self.store.get(&key).cloned()
                        && let Some(refs) = object["metadata"]["ownerReferences"].as_array_mut()
                    {
                        refs.retain(|r| r["uid"] != owner_uid);
                        self.write(&key, object);
                    }
                }
                Propagation::Background => {
                    // A dependent that went away meanwhile needs nothing more.
                    let _ = self.delete_object(&key, None, Propagation::Background);
                }
            }
        }
    }

    fn run_timer(&mut self, action: TimerAction) {
        super::kubelet::run(self, action);
    }

    /// Has the controller of `key` (a MiniCluster or Job) run again at the next settle.
    pub(crate) fn requeue(&mut self, key: &ObjectKey) {
        self.requeued.add(key);
    }

    /// Lets the controllers react to the changes since the last settle until nothing
    /// changes: in each round the operator first (so a direct Job edit is undone before
    /// the Job controller acts on it), then the Job controller, each only for the objects
    /// whose inputs changed.
    pub fn settle(&mut self) {
        const MAX_ROUNDS: usize = 64;
        self.settle_work = SettleWork::default();
        let requeued = std::mem::take(&mut self.requeued);
        self.queue.merge(requeued);
        for _ in 0..MAX_ROUNDS {
            self.absorb_changes();
            if self.queue.is_empty() {
                tracing::trace!("sim: settled: {:?}", self.settle_work);
                return;
            }
            self.settle_work.rounds += 1;
            for key in std::mem::take(&mut self.queue.miniclusters) {
                self.settle_work.reconciles += 1;
                super::operator::reconcile(self, &key);
            }
            self.absorb_changes();
            for key in std::mem::take(&mut self.queue.jobs) {
                self.settle_work.job_syncs += 1;
                super::job_controller::sync(self, &key);
            }
        }
        tracing::error!("sim: controllers did not settle after {MAX_ROUNDS} rounds");
    }

    /// Takes the store's changes since the last call into the pod indexes and the queue of
    /// controllers to run. Readers of an index call it first: the Job controller so it sees
    /// its own writes.
    pub(crate) fn absorb_changes(&mut self) {
        let changes = self.store.take_changes();
        self.job_pods.apply(&changes);
        self.pod_views.apply(&changes);
        self.queue.add_changes(&changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_use_the_kubernetes_alphabet_and_uids_differ() {
        let mut rng = Rng(7);
        let suffix = rng.name_suffix();
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
        let (a, b) = (rng.uid(), rng.uid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn a_job_that_could_not_create_its_pod_tries_again_at_the_next_settle() {
        let mut state = SimState::new(SimOptions::default());
        // Generated next: the uids of two blocking pods and of the Job, then the names of
        // the Job's first pod (taken), of its retry in the next round (taken too, and the
        // Job has nothing else to write, so the settle ends), and of the next settle's try.
        let mut rng = Rng(state.rng.0);
        for _ in 0..3 {
            rng.uid();
        }
        for _ in 0..2 {
            let taken = format!("job-0-{}", rng.name_suffix());
            let blocking = json!({"metadata": {"name": taken}, "spec": {"containers": []}});
            state.create_object(Kind::Pod, "ns", blocking).unwrap();
        }
        let job = json!({"metadata": {"name": "job"}, "spec": {
            "completionMode": "Indexed", "completions": 1, "parallelism": 1,
            "template": {"spec": {"restartPolicy": "Never", "containers": []}}}});
        state.create_object(Kind::Job, "ns", job).unwrap();
        let job_pods = |state: &SimState| {
            state
                .store
                .objects(Kind::Pod, Some("ns"))
                .filter(|(_, pod)| pod["metadata"]["labels"]["job-name"] == "job")
                .count()
        };
        state.settle();
        assert_eq!(job_pods(&state), 0, "both generated names were taken");
        state.settle();
        assert_eq!(job_pods(&state), 1);
    }

    #[test]
    fn create_rejects_a_duplicate_and_a_nameless_object() {
        let mut state = SimState::new(SimOptions::default());
        let event = json!({"metadata": {"name": "e"}, "involvedObject": {}});
        state
            .create_object(Kind::Event, "ns", event.clone())
            .unwrap();
        let err = state.create_object(Kind::Event, "ns", event).unwrap_err();
        assert_eq!((err.code, err.reason), (409, "AlreadyExists"));
        let err = state
            .create_object(Kind::Event, "ns", json!({"involvedObject": {}}))
            .unwrap_err();
        assert_eq!(err.code, 422);
        let generated = state
            .create_object(
                Kind::Event,
                "ns",
                json!({"metadata": {"generateName": "e-"}, "involvedObject": {}}),
            )
            .unwrap();
        assert!(
            generated["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("e-")
        );
    }
}
