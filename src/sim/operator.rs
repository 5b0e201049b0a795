//! The Flux Operator's MiniCluster reconcile (docs/kubernetes.md §4): the
//! MiniCluster owns an Indexed Job whose parallelism and completions follow `spec.size`,
//! clamped to `[1, status.maximumSize]`; direct Job size edits are undone.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::kinds::Kind;
use super::state::{SimState, controller_reference, decode};
use super::store::ObjectKey;

/// The operator's default Job `backoffLimit` when `spec.backoffLimit` is 0 or unset.
const DEFAULT_BACKOFF_LIMIT: i32 = 100;

/// A `flux-framework.org/v1alpha2` MiniCluster: the fields the operator's scaling uses;
/// other spec fields are kept as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MiniCluster {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: MiniClusterSpecFields,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MiniClusterStatus>,
}

fn default_size() -> i32 {
    1
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MiniClusterSpecFields {
    #[serde(default = "default_size")]
    pub size: i32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_size: i32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backoff_limit: i32,
    #[serde(default)]
    pub flux: FluxSpec,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Default for MiniClusterSpecFields {
    fn default() -> Self {
        Self {
            size: default_size(),
            max_size: 0,
            backoff_limit: 0,
            flux: FluxSpec::default(),
            other: Map::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FluxSpec {
    #[serde(default)]
    pub complete_workers: bool,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MiniClusterStatus {
    #[serde(default)]
    pub size: i32,
    #[serde(default)]
    pub maximum_size: i32,
    #[serde(default)]
    pub selector: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// CRD defaulting on create: `maxSize` defaults to `size`.
pub(crate) fn default_new_minicluster(object: &mut Value) {
    if object["spec"]["maxSize"].as_i64().is_none_or(|m| m == 0) {
        object["spec"]["maxSize"] = object["spec"]["size"].clone();
    }
}

/// The `hpa-selector` label value selecting a MiniCluster's pods (its scale selector).
pub(crate) fn scale_selector(name: &str) -> String {
    format!("hpa-selector={name}")
}

/// The Job the operator creates for a MiniCluster (`NewMiniClusterJob`).
fn new_job(minicluster: &Value, mc: &MiniCluster, backoff_limit_per_index: Option<u32>) -> Value {
    let name = mc.metadata.name.clone().unwrap_or_default();
    let namespace = mc.metadata.namespace.clone().unwrap_or_default();
    let backoff_limit = if mc.spec.backoff_limit == 0 {
        DEFAULT_BACKOFF_LIMIT
    } else {
        mc.spec.backoff_limit
    };
    let mut job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "ownerReferences": [controller_reference(Kind::MiniCluster, minicluster)],
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": mc.spec.size,
            "parallelism": mc.spec.size,
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": 31_500_000,
            "template": {
                "metadata": {
                    "labels": {
                        "app": "flux-operator",
                        "app.kubernetes.io/name": name,
                        "namespace": namespace,
                        "hpa-selector": name,
                    },
                },
                "spec": {
                    "subdomain": name,
                    "setHostnameAsFQDN": false,
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": false,
                    "containers": [{"name": name, "image": "ghcr.io/rse-ops/flux-sample:latest"}],
                },
            },
        },
    });
    if let Some(limit) = backoff_limit_per_index {
        job["spec"]["backoffLimitPerIndex"] = json!(limit);
    }
    job
}

/// One reconcile of one MiniCluster.
pub(crate) fn reconcile(state: &mut SimState, key: &ObjectKey) {
    let Some(object) = state.store.get(key).cloned() else {
        return;
    };
    let Some(mut mc) = decode::<MiniCluster>(&object) else {
        return;
    };
    if mc.metadata.deletion_timestamp.is_some() {
        return;
    }
    let mut status = mc.status.clone().unwrap_or_else(|| MiniClusterStatus {
        // First validation fixes the ceiling: max(size, maxSize).
        maximum_size: mc.spec.size.max(mc.spec.max_size),
        size: mc.spec.size,
        selector: scale_selector(&key.name),
        other: Map::new(),
    });
    let job_key = ObjectKey::new(Kind::Job, &key.namespace, &key.name);
    let Some(job) = state.store.get(&job_key).cloned() else {
        let job = new_job(&object, &mc, state.options.operator_backoff_limit_per_index);
        if let Err(err) = state.create_object(Kind::Job, &key.namespace, job) {
            tracing::error!("sim: operator could not create Job {}: {err}", key.name);
            state.requeue(key);
        }
        write_status(state, key, &object, status);
        return;
    };
    let parallelism = job["spec"]["parallelism"].as_i64().unwrap_or(0);
    let size = i64::from(mc.spec.size);
    if parallelism != size {
        if size < 1 {
            // restoreOriginalSize: the spec goes back to what the Job runs.
            mc.spec.size = i32::try_from(parallelism).unwrap_or(1);
            write_spec_size(state, key, &object, mc.spec.size);
            return;
        }
        if size > i64::from(status.maximum_size) {
            // disallowScale: the request is denied, spec goes back to the ceiling.
            write_spec_size(state, key, &object, status.maximum_size);
            return;
        }
        // allowScale: parallelism and completions together.
        let mut scaled = job.clone();
        scaled["spec"]["parallelism"] = json!(size);
        scaled["spec"]["completions"] = json!(size);
        if let Err(err) = state.update_object(&job_key, scaled, None) {
            tracing::error!("sim: operator could not scale Job {}: {err}", key.name);
            state.requeue(key);
            return;
        }
    }
    status.size = mc.spec.size;
    write_status(state, key, &object, status);
}

fn write_spec_size(state: &mut SimState, key: &ObjectKey, object: &Value, size: i32) {
    let mut updated = object.clone();
    updated["spec"]["size"] = json!(size);
    if let Err(err) = state.update_object(key, updated, None) {
        tracing::error!(
            "sim: operator could not restore size of {}: {err}",
            key.name
        );
        state.requeue(key);
    }
}

fn write_status(state: &mut SimState, key: &ObjectKey, object: &Value, status: MiniClusterStatus) {
    let Ok(status) = serde_json::to_value(status) else {
        return;
    };
    if object["status"] != status {
        let mut updated = state
            .store
            .get(key)
            .cloned()
            .unwrap_or_else(|| object.clone());
        updated["status"] = status;
        state.write(key, updated);
    }
}
