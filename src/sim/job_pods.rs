//! The Job controller's index of its pods: for each Job uid, what the controller reads of
//! each pod it controls. A sync reads every pod of its Job several times; reading these
//! few fields out of each pod's JSON on every sync made one pod DELETE cost milliseconds
//! at 1,000 pods, so they are taken once, when the pod changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::job_controller::{INDEX_FAILURE_COUNT, pod_index};
use super::kinds::Kind;
use super::state::{JOB_TRACKING_FINALIZER, controller_of};
use super::store::{Change, ObjectKey};

/// What the Job controller reads of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodFacts {
    /// The completion index annotation.
    pub index: Option<u32>,
    /// Phase `Succeeded`.
    pub succeeded: bool,
    /// Phase `Failed`.
    pub failed: bool,
    /// Marked for deletion.
    pub terminating: bool,
    /// Condition `Ready` is `True`.
    pub ready: bool,
    /// Still carries the job-tracking finalizer: not yet counted.
    pub tracked: bool,
    /// The index's failures before this pod (`backoffLimitPerIndex`).
    pub failure_count: u32,
}

impl PodFacts {
    pub fn of(pod: &Value) -> Self {
        let metadata = &pod["metadata"];
        let status = &pod["status"];
        Self {
            index: pod_index(pod),
            succeeded: status["phase"] == "Succeeded",
            failed: status["phase"] == "Failed",
            terminating: !metadata["deletionTimestamp"].is_null(),
            ready: status["conditions"].as_array().is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            }),
            tracked: metadata["finalizers"]
                .as_array()
                .is_some_and(|fs| fs.iter().any(|f| f == JOB_TRACKING_FINALIZER)),
            failure_count: metadata["annotations"][INDEX_FAILURE_COUNT]
                .as_str()
                .and_then(|count| count.parse().ok())
                .unwrap_or(0),
        }
    }

    /// The container has exited.
    pub fn ended(&self) -> bool {
        self.succeeded || self.failed
    }

    /// Running or about to, and not on its way out.
    pub fn active(&self) -> bool {
        !self.ended() && !self.terminating
    }

    /// Terminating with its container still up.
    pub fn stopping(&self) -> bool {
        self.terminating && !self.ended()
    }
}

/// The uid of the Job that controls `pod`, if one does.
fn controlling_job(pod: &Value) -> Option<&str> {
    controller_of(pod)
        .filter(|(kind, _, _)| *kind == "Job")
        .map(|(_, _, uid)| uid)
}

/// Pod facts by controlling Job uid, then pod key; kept in step with the store by
/// [`JobPods::apply`] on every change, in commit order.
#[derive(Debug, Default)]
pub(crate) struct JobPods(HashMap<String, BTreeMap<ObjectKey, PodFacts>>);

impl JobPods {
    pub fn apply(&mut self, changes: &[Arc<Change>]) {
        for change in changes.iter().filter(|c| c.key.kind == Kind::Pod) {
            let key = &change.key;
            if let Some(uid) = change.previous().and_then(controlling_job)
                && let Some(pods) = self.0.get_mut(uid)
            {
                pods.remove(key);
                if pods.is_empty() {
                    self.0.remove(uid);
                }
            }
            if let Some(pod) = change.current()
                && let Some(uid) = controlling_job(pod)
            {
                let facts = PodFacts::of(pod);
                self.0
                    .entry(uid.to_owned())
                    .or_default()
                    .insert(key.clone(), facts);
            }
        }
    }

    /// The pods the Job with this uid controls, in key order.
    pub fn of(&self, job_uid: &str) -> impl Iterator<Item = (&ObjectKey, &PodFacts)> {
        self.0.get(job_uid).into_iter().flatten()
    }
}
