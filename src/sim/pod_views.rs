//! The pods of each Job as the shared model sees them ([`PodView`]), for
//! [`SimCluster::pod_views`](super::SimCluster::pod_views). Tests and benchmarks ask for them
//! after every pod event; building them from every stored pod's JSON each time made the
//! harness, not fluxk8s, the cost of a 1,000-rank storm. So they are kept per pod change,
//! like `job_pods`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::job_controller::{JOB_NAME_LABEL, pod_index};
use super::kinds::Kind;
use super::store::Change;
use crate::model::{PodPhase, PodView};

/// A pod as the shared model sees it; `None` for a pod without a completion index.
fn pod_view(pod: &Value) -> Option<PodView> {
    let phase = match pod["status"]["phase"].as_str() {
        Some("Pending") => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        _ => PodPhase::Unknown,
    };
    let ready = pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    Some(PodView {
        name: pod["metadata"]["name"].as_str()?.to_owned(),
        uid: pod["metadata"]["uid"].as_str()?.to_owned(),
        index: pod_index(pod)?,
        phase,
        ready,
        terminating: !pod["metadata"]["deletionTimestamp"].is_null(),
    })
}

/// The Job a pod is labelled with (`batch.kubernetes.io/job-name`).
fn job_label(pod: &Value) -> Option<&str> {
    pod["metadata"]["labels"][JOB_NAME_LABEL].as_str()
}

/// Views by namespace, then job-name label, then pod name; kept in step with the store by
/// [`PodViews::apply`] on every change, in commit order.
#[derive(Debug, Default)]
pub(crate) struct PodViews(HashMap<String, HashMap<String, BTreeMap<String, PodView>>>);

impl PodViews {
    pub fn apply(&mut self, changes: &[Arc<Change>]) {
        for change in changes.iter().filter(|c| c.key.kind == Kind::Pod) {
            let (namespace, name) = (&change.key.namespace, &change.key.name);
            if let Some(job) = change.previous().and_then(job_label)
                && let Some(jobs) = self.0.get_mut(namespace)
                && let Some(views) = jobs.get_mut(job)
            {
                views.remove(name);
                if views.is_empty() {
                    jobs.remove(job);
                }
            }
            if let Some(pod) = change.current()
                && let Some(job) = job_label(pod)
                && let Some(view) = pod_view(pod)
            {
                let jobs = self.0.entry(namespace.clone()).or_default();
                let views = jobs.entry(job.to_owned()).or_default();
                views.insert(name.clone(), view);
            }
        }
    }

    /// The views of the pods labelled with `job` in `namespace`, by pod name.
    pub fn of(&self, namespace: &str, job: &str) -> impl Iterator<Item = &PodView> {
        self.0
            .get(namespace)
            .and_then(|jobs| jobs.get(job))
            .into_iter()
            .flat_map(BTreeMap::values)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sim::job_controller::COMPLETION_INDEX;
    use crate::sim::store::{ObjectKey, Store};

    fn pod(job: &str, index: Option<u32>, phase: &str) -> Value {
        let mut pod = json!({"metadata": {"name": "p", "uid": "u", "labels": {JOB_NAME_LABEL: job}},
                             "status": {"phase": phase}});
        if let Some(index) = index {
            pod["metadata"]["annotations"] = json!({COMPLETION_INDEX: index.to_string()});
        }
        pod
    }

    fn views(store: &mut Store, views: &mut PodViews, job: &str) -> Vec<(u32, PodPhase)> {
        views.apply(&store.take_changes());
        views.of("ns", job).map(|v| (v.index, v.phase)).collect()
    }

    #[test]
    fn views_follow_each_pod_through_phase_label_and_deletion() {
        let (mut store, mut index) = (Store::new(10), PodViews::default());
        let key = ObjectKey::new(Kind::Pod, "ns", "p");
        store.create(key.clone(), pod("a", None, "Pending"));
        assert!(
            views(&mut store, &mut index, "a").is_empty(),
            "no index, no view"
        );
        store.update(key.clone(), pod("a", Some(3), "Running"));
        assert_eq!(views(&mut store, &mut index, "a"), [(3, PodPhase::Running)]);
        store.update(key.clone(), pod("b", Some(3), "Running"));
        assert!(views(&mut store, &mut index, "a").is_empty());
        assert_eq!(views(&mut store, &mut index, "b"), [(3, PodPhase::Running)]);
        store.delete(&key);
        assert!(views(&mut store, &mut index, "b").is_empty());
    }
}
