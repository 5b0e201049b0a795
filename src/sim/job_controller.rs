//! The Kubernetes Job controller, for Indexed Jobs (the only mode MiniClusters use): API
//! validation of Job writes, and `sync`, which accounts finished pods, removes pods out of
//! range, creates the missing indexes and keeps `status` accurate
//! (docs/kubernetes.md §1, §2).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::job_pods::PodFacts;
use super::kinds::Kind;
use super::state::{
    JOB_TRACKING_FINALIZER, Propagation, SimState, controller_reference, now_timestamp,
};
use super::status::ApiError;
use super::store::ObjectKey;
use crate::model::IdSet;

pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
/// Label and annotation carrying a pod's completion index (= Flux rank).
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Pod annotation: failures of this index so far (only with `backoffLimitPerIndex`).
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";

/// The API server's default `backoffLimit`, and the one used with `backoffLimitPerIndex`.
const DEFAULT_BACKOFF_LIMIT: i64 = 6;
const MAX_INT32: i64 = i32::MAX as i64;

fn invalid(job: &Value, errors: &str) -> ApiError {
    let name = job["metadata"]["name"].as_str().unwrap_or_default();
    ApiError::invalid(&Kind::Job.group_kind(), name, errors)
}

/// Defaulting and validation of a new Job (API server create): selector and template
/// labels from the Job's uid, the spec defaults, and the rules this sim relies on.
pub(crate) fn default_and_validate_new_job(job: &mut Value) -> Result<(), ApiError> {
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let uid = job["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let spec = &mut job["spec"];
    if !spec.is_object() {
        return Err(invalid(job, "spec: Required value"));
    }
    let indexed = spec["completionMode"] == "Indexed";
    if spec["completionMode"].is_null() {
        spec["completionMode"] = json!("NonIndexed");
    }
    if indexed && spec["completions"].is_null() {
        return Err(invalid(
            job,
            "spec.completions: Required value: when completion mode is Indexed",
        ));
    }
    if !indexed && !spec["backoffLimitPerIndex"].is_null() {
        return Err(invalid(
            job,
            "spec.backoffLimitPerIndex: Forbidden: requires indexed completion mode",
        ));
    }
    for field in [
        "parallelism",
        "completions",
        "backoffLimit",
        "backoffLimitPerIndex",
    ] {
        if spec[field].as_i64().is_some_and(|v| v < 0) {
            let message = format!("spec.{field}: Invalid value: {}: must be >= 0", spec[field]);
            return Err(invalid(job, &message));
        }
    }
    let spec = &mut job["spec"];
    if spec["parallelism"].is_null() {
        spec["parallelism"] = json!(1);
    }
    if spec["backoffLimit"].is_null() {
        let per_index = !spec["backoffLimitPerIndex"].is_null();
        spec["backoffLimit"] = json!(if per_index {
            MAX_INT32
        } else {
            DEFAULT_BACKOFF_LIMIT
        });
    }
    if spec["podReplacementPolicy"].is_null() {
        let with_failure_policy = !spec["podFailurePolicy"].is_null();
        spec["podReplacementPolicy"] = json!(if with_failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        });
    }
    if spec["suspend"].is_null() {
        spec["suspend"] = json!(false);
    }
    let restart_policy = spec["template"]["spec"]["restartPolicy"].as_str();
    if !matches!(restart_policy, Some("Never" | "OnFailure")) {
        return Err(invalid(
            job,
            "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \
             \"Never\"",
        ));
    }
    let spec = &mut job["spec"];
    spec["selector"] = json!({"matchLabels": {CONTROLLER_UID_LABEL: uid}});
    let labels = &mut spec["template"]["metadata"]["labels"];
    for (label, value) in [
        (CONTROLLER_UID_LABEL, &uid),
        (LEGACY_CONTROLLER_UID_LABEL, &uid),
        (JOB_NAME_LABEL, &name),
        (LEGACY_JOB_NAME_LABEL, &name),
    ] {
        labels[label] = json!(value);
    }
    Ok(())
}

/// Validation of a Job update: the template, selector and completion mode are immutable;
/// an Indexed Job's completions may change only together with parallelism, to the same
/// value (elastic Indexed Jobs, docs/kubernetes.md 1.4).
pub(crate) fn validate_job_update(current: &Value, proposed: &Value) -> Result<(), ApiError> {
    let (old, new) = (&current["spec"], &proposed["spec"]);
    for field in ["template", "selector", "completionMode"] {
        if old[field] != new[field] {
            return Err(invalid(
                proposed,
                &format!("spec.{field}: Invalid value: field is immutable"),
            ));
        }
    }
    if old["completions"] != new["completions"] {
        if old["completionMode"] != "Indexed" {
            return Err(invalid(
                proposed,
                &format!(
                    "spec.completions: Invalid value: {}: field is immutable",
                    new["completions"]
                ),
            ));
        }
        if new["completions"] != new["parallelism"] {
            return Err(invalid(
                proposed,
                &format!(
                    "spec.completions: Invalid value: {}: can only be modified in tandem with \
                     spec.parallelism",
                    new["completions"]
                ),
            ));
        }
    }
    Ok(())
}

/// A pod's completion index, from its annotation.
pub(crate) fn pod_index(pod: &Value) -> Option<u32> {
    pod["metadata"]["annotations"][COMPLETION_INDEX]
        .as_str()
        .and_then(|i| i.parse().ok())
}

fn parse_indexes(indexes: Option<&str>, completions: u32) -> IdSet {
    let parsed: IdSet = indexes
        .unwrap_or("")
        .parse()
        .inspect_err(|e| tracing::error!("sim: bad index list in Job status: {e}"))
        .unwrap_or_default();
    // Truncation to the current range: a scaled-out index is forgotten.
    parsed.iter().filter(|i| *i < completions).collect()
}

fn has_condition(conditions: &[Value], kind: &str) -> bool {
    conditions
        .iter()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    let now = now_timestamp();
    json!({"type": kind, "status": "True", "reason": reason, "message": message,
           "lastProbeTime": now, "lastTransitionTime": now})
}

/// What the Job controller knows of the pods this Job controls (controller ownerReference
/// with its uid), in key order, with the writes so far taken in. Reading them borrows the
/// state, so each pass decides first and writes after. They are counted in the settle's
/// work.
fn owned_pods<'a>(
    state: &'a mut SimState,
    namespace: &str,
    job_uid: &str,
) -> Vec<(&'a ObjectKey, &'a PodFacts)> {
    state.absorb_changes();
    let pods: Vec<_> = state
        .job_pods
        .of(job_uid)
        .filter(|(key, _)| key.namespace == namespace)
        .collect();
    state.settle_work.pods_read += pods.len();
    pods
}

/// The Job's limits, read once per sync.
struct Limits {
    completions: u32,
    parallelism: u32,
    backoff_limit: u32,
    per_index: Option<u32>,
    max_failed_indexes: Option<u32>,
    replace_only_failed: bool,
}

/// An int32 count field of a stored Job, negative read as 0.
fn count(value: &Value) -> Option<u32> {
    value
        .as_i64()
        .map(|v| u32::try_from(v.clamp(0, MAX_INT32)).unwrap_or_default())
}

fn limits(job: &Value) -> Option<Limits> {
    let spec = job.get("spec").filter(|spec| spec.is_object())?;
    Some(Limits {
        completions: count(&spec["completions"]).unwrap_or(0),
        parallelism: count(&spec["parallelism"]).unwrap_or(1),
        backoff_limit: count(&spec["backoffLimit"]).unwrap_or(DEFAULT_BACKOFF_LIMIT as u32),
        per_index: count(&spec["backoffLimitPerIndex"]),
        max_failed_indexes: count(&spec["maxFailedIndexes"]),
        replace_only_failed: spec["podReplacementPolicy"] == "Failed",
    })
}

/// One pass of the Job controller over one Job. It reads the Job's JSON directly (stored
/// Jobs were validated against the schema on the way in) and its pods through `job_pods`.
pub(crate) fn sync(state: &mut SimState, key: &ObjectKey) {
    let Some(job) = state.store.get(key).cloned() else {
        return;
    };
    let indexed = job["spec"]["completionMode"] == "Indexed";
    if !indexed || !job["metadata"]["deletionTimestamp"].is_null() {
        // Only Indexed Jobs are simulated; others are stored but never run.
        return;
    }
    let Some(limits) = limits(&job) else {
        return;
    };
    let job_uid = job["metadata"]["uid"].as_str().unwrap_or_default();
    let status = &job["status"];
    let mut completed = parse_indexes(status["completedIndexes"].as_str(), limits.completions);
    let mut failed_indexes = parse_indexes(status["failedIndexes"].as_str(), limits.completions);
    let mut failed = count(&status["failed"]).unwrap_or(0);
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();

    // Account every finished or deleted pod once; the finalizer marks "not yet counted".
    let mut counted = Vec::new();
    let pods = owned_pods(state, &key.namespace, job_uid);
    for (pod_key, pod) in pods {
        if !pod.tracked {
            continue;
        }
        let index = pod.index.filter(|i| *i < limits.completions);
        if pod.succeeded {
            if let Some(index) = index.filter(|i| !failed_indexes.contains(*i)) {
                completed.insert(index);
            }
        } else if pod.failed || pod.terminating {
            // A deleted pod counts as failed, like one that exited non-zero.
            failed += 1;
            if let (Some(limit), Some(index)) = (limits.per_index, index)
                && pod.failure_count + 1 > limit
            {
                failed_indexes.insert(index);
            }
        } else {
            continue;
        }
        counted.push(pod_key.clone());
    }
    for pod_key in &counted {
        state.remove_finalizer(pod_key, JOB_TRACKING_FINALIZER);
    }

    let was_finished =
        has_condition(&conditions, "Complete") || has_condition(&conditions, "Failed");
    if !was_finished {
        let failure = if failed > limits.backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if limits
            .max_failed_indexes
            .is_some_and(|max| failed_indexes.len() > max as usize)
        {
            Some((
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            ))
        } else {
            None
        };
        if let Some((reason, message)) = failure {
            conditions.push(condition("FailureTarget", reason, message));
            conditions.push(condition("Failed", reason, message));
        }
    }
    let job_failed = has_condition(&conditions, "Failed");
    let finished = job_failed || has_condition(&conditions, "Complete");

    // Remove active pods that must not run: all of them once the Job failed; otherwise
    // those scaled out (index >= completions), those of a finished index, and duplicates.
    // The finalizer goes first so these removals are not counted as failures.
    let mut running = IdSet::new();
    let mut unwanted = Vec::new();
    let pods = owned_pods(state, &key.namespace, job_uid);
    for (pod_key, pod) in pods {
        if !pod.active() {
            continue;
        }
        let index = pod.index;
        let keep = !finished
            && index.is_some_and(|i| {
                i < limits.completions && !completed.contains(i) && !failed_indexes.contains(i)
            })
            && index.is_some_and(|i| running.insert(i));
        if !keep {
            unwanted.push(pod_key.clone());
        }
    }
    for pod_key in &unwanted {
        state.remove_finalizer(pod_key, JOB_TRACKING_FINALIZER);
        // The pod may have vanished meanwhile; then there is nothing to delete.
        let _ = state.delete_object(pod_key, None, Propagation::Background);
    }

    if !finished {
        create_missing_pods(
            state,
            key,
            &job,
            &limits,
            &running,
            &completed,
            &failed_indexes,
        );
        let all_done = completed.union(&failed_indexes).len() as u32 >= limits.completions;
        if all_done && failed_indexes.is_empty() {
            conditions.push(condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            conditions.push(condition(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
        } else if all_done {
            conditions.push(condition(
                "FailureTarget",
                "FailedIndexes",
                "Job has failed indexes",
            ));
            conditions.push(condition(
                "Failed",
                "FailedIndexes",
                "Job has failed indexes",
            ));
        }
    }

    write_status(
        state,
        key,
        &job,
        &limits,
        Counts {
            completed,
            failed_indexes,
            failed,
            conditions,
        },
    );
}

fn create_missing_pods(
    state: &mut SimState,
    key: &ObjectKey,
    job: &Value,
    limits: &Limits,
    running: &IdSet,
    completed: &IdSet,
    failed_indexes: &IdSet,
) {
    let job_uid = job["metadata"]["uid"].as_str().unwrap_or_default();
    // Per index: whether a pod of it is still terminating, and its failures so far (one
    // more than the last failed pod of the index recorded), in one pass over the pods.
    let mut terminating = IdSet::new();
    let mut failures: HashMap<u32, u32> = HashMap::new();
    let pods = owned_pods(state, &key.namespace, job_uid);
    for (_, pod) in pods {
        let Some(index) = pod.index else {
            continue;
        };
        if pod.stopping() {
            terminating.insert(index);
        }
        if pod.failed || pod.terminating {
            let most = failures.entry(index).or_default();
            *most = (*most).max(pod.failure_count + 1);
        }
    }
    let room = limits.parallelism.saturating_sub(running.len() as u32) as usize;
    let pending: Vec<u32> = (0..limits.completions)
        .filter(|i| {
            !running.contains(*i) && !completed.contains(*i) && !failed_indexes.contains(*i)
        })
        .filter(|i| !(limits.replace_only_failed && terminating.contains(*i)))
        .take(room)
        .collect();
    for index in pending {
        let failures = failures.get(&index).copied().unwrap_or(0);
        let pod = new_pod(job, index, limits.per_index.map(|_| failures));
        if let Err(err) = state.create_object(Kind::Pod, &key.namespace, pod) {
            tracing::error!("sim: job controller could not create pod for index {index}: {err}");
            state.requeue(key);
        }
    }
}

/// The pod for one index: the template plus the Job's labels, the index label and
/// annotation, hostname `<job>-<index>`, `JOB_COMPLETION_INDEX`, the controller reference
/// and the tracking finalizer.
fn new_pod(job: &Value, index: u32, failure_count: Option<u32>) -> Value {
    let job_name = job["metadata"]["name"].as_str().unwrap_or_default();
    let template = &job["spec"]["template"];
    let mut pod = json!({
        "metadata": template["metadata"].clone(),
        "spec": template["spec"].clone(),
    });
    let metadata = &mut pod["metadata"];
    metadata["generateName"] = json!(format!("{job_name}-{index}-"));
    metadata["labels"][COMPLETION_INDEX] = json!(index.to_string());
    metadata["annotations"][COMPLETION_INDEX] = json!(index.to_string());
    if let Some(count) = failure_count {
        metadata["annotations"][INDEX_FAILURE_COUNT] = json!(count.to_string());
    }
    metadata["ownerReferences"] = json!([controller_reference(Kind::Job, job)]);
    metadata["finalizers"] = json!([JOB_TRACKING_FINALIZER]);
    let spec = &mut pod["spec"];
    if spec["hostname"].is_null() {
        spec["hostname"] = json!(format!("{job_name}-{index}"));
    }
    if let Some(containers) = spec["containers"].as_array_mut() {
        for container in containers {
            let env = container["env"].as_array().cloned().unwrap_or_default();
            let mut env: Vec<Value> = env
                .into_iter()
                .filter(|e| e["name"] != "JOB_COMPLETION_INDEX")
                .collect();
            env.push(json!({"name": "JOB_COMPLETION_INDEX", "value": index.to_string()}));
            container["env"] = json!(env);
        }
    }
    pod
}

struct Counts {
    completed: IdSet,
    failed_indexes: IdSet,
    failed: u32,
    conditions: Vec<Value>,
}

fn write_status(
    state: &mut SimState,
    key: &ObjectKey,
    job: &Value,
    limits: &Limits,
    counts: Counts,
) {
    let job_uid = job["metadata"]["uid"].as_str().unwrap_or_default();
    let (mut active, mut ready, mut terminating) = (0, 0, 0);
    let pods = owned_pods(state, &key.namespace, job_uid);
    for (_, pod) in pods {
        if pod.active() {
            active += 1;
            ready += usize::from(pod.ready);
        } else if pod.stopping() {
            terminating += 1;
        }
    }
    let old = &job["status"];
    let mut status = json!({
        "active": active,
        "ready": ready,
        "terminating": terminating,
        "succeeded": counts.completed.len(),
        "failed": counts.failed,
        "uncountedTerminatedPods": {},
        "startTime": if old["startTime"].is_null() { now_timestamp() } else { old["startTime"].clone() },
    });
    if !counts.completed.is_empty() {
        status["completedIndexes"] = json!(counts.completed.to_string());
    }
    if limits.per_index.is_some() {
        status["failedIndexes"] = json!(counts.failed_indexes.to_string());
    }
    if !counts.conditions.is_empty() {
        status["conditions"] = json!(counts.conditions);
    }
    if has_condition(&counts.conditions, "Complete") {
        status["completionTime"] = if old["completionTime"].is_null() {
            now_timestamp()
        } else {
            old["completionTime"].clone()
        };
    }
    if *old != status {
        let mut updated = job.clone();
        updated["status"] = status;
        // Read the latest: pod writes above do not touch the Job, but stay safe.
        if let Some(latest) = state.store.get(key) {
            updated["metadata"] = latest["metadata"].clone();
            updated["spec"] = latest["spec"].clone();
        }
        state.write(key, updated);
    }
}
