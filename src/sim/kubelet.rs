//! The kubelet: runs every pod (Pending → Running and Ready after a delay), ends its
//! container when a test says so, and stops a deleted pod's container on SIGTERM.
//!
//! A container's exit ends the pod (exit 0 → Succeeded, else Failed): in-place container
//! restarts under `restartPolicy: OnFailure` are not modelled.

use std::time::Duration;

use serde_json::{Value, json};

use super::state::{PodEventKind, SimState, TimerAction, now_timestamp};
use super::status::ApiError;
use super::store::ObjectKey;

/// Exit code of a container killed by SIGTERM (128 + 15).
const SIGTERM_EXIT_CODE: i32 = 143;

/// Initial status of a newly created pod: scheduled, not yet running.
pub(crate) fn admit_pod(pod: &mut Value) {
    pod["status"] = json!({
        "phase": "Pending",
        "conditions": [condition("PodScheduled", true, None)],
        "qosClass": "BestEffort",
    });
}

fn condition(kind: &str, status: bool, reason: Option<&str>) -> Value {
    let mut condition = json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "lastTransitionTime": now_timestamp(),
    });
    if let Some(reason) = reason {
        condition["reason"] = json!(reason);
    }
    condition
}

fn container_names(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(Into::into))
                .collect()
        })
        .unwrap_or_default()
}

fn is_running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
}

fn is_ended(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// The pod at `key` if it is still the one with `uid` (not a replacement of the same name).
fn pod_with_uid(state: &SimState, key: &ObjectKey, uid: &str) -> Option<Value> {
    state
        .store
        .get(key)
        .filter(|pod| pod["metadata"]["uid"] == uid)
        .cloned()
}

fn start(state: &mut SimState, key: &ObjectKey, uid: &str) {
    let Some(mut pod) = pod_with_uid(state, key, uid) else {
        return;
    };
    if pod["status"]["phase"] != "Pending" || !pod["metadata"]["deletionTimestamp"].is_null() {
        return;
    }
    let started = now_timestamp();
    let statuses: Vec<Value> = container_names(&pod)
        .into_iter()
        .map(|name| {
            json!({"name": name, "ready": true, "started": true, "restartCount": 0,
                   "image": "", "imageID": "", "state": {"running": {"startedAt": started}}})
        })
        .collect();
    pod["status"] = json!({
        "phase": "Running",
        "startTime": started,
        "podIP": "10.244.0.1",
        "hostIP": "172.18.0.2",
        "qosClass": "BestEffort",
        "conditions": [
            condition("PodScheduled", true, None),
            condition("Initialized", true, None),
            condition("ContainersReady", true, None),
            condition("Ready", true, None),
        ],
        "containerStatuses": statuses,
    });
    let stored = state.write(key, pod);
    state.emit_pod_event(&stored, PodEventKind::Started);
}

/// Ends the pod's containers with `exit_code`, keeping any conditions others added (such
/// as DisruptionTarget).
fn end_containers(pod: &mut Value, exit_code: i32) {
    let finished = now_timestamp();
    let started = pod["status"]["startTime"].clone();
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    let statuses: Vec<Value> = container_names(pod)
        .into_iter()
        .map(|name| {
            json!({"name": name, "ready": false, "started": false, "restartCount": 0,
                   "image": "", "imageID": "",
                   "state": {"terminated": {"exitCode": exit_code, "reason": reason,
                                            "startedAt": started, "finishedAt": finished}}})
        })
        .collect();
    let status = &mut pod["status"];
    status["phase"] = json!(if exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    });
    status["containerStatuses"] = json!(statuses);
    let mut conditions: Vec<Value> = status["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !matches!(c["type"].as_str(), Some("Ready" | "ContainersReady")))
        .collect();
    conditions.push(condition("ContainersReady", false, Some("PodCompleted")));
    conditions.push(condition("Ready", false, Some("PodCompleted")));
    status["conditions"] = json!(conditions);
}

/// The kubelet's last word on a deleted pod: containers are down, the object may go.
fn release(pod: &mut Value) {
    pod["metadata"]["deletionGracePeriodSeconds"] = json!(0);
}

fn stop(state: &mut SimState, key: &ObjectKey, uid: &str) {
    let Some(mut pod) = pod_with_uid(state, key, uid) else {
        return;
    };
    let was_running = is_running(&pod);
    if was_running {
        end_containers(&mut pod, SIGTERM_EXIT_CODE);
    }
    release(&mut pod);
    // The exit is reported before the write, which may remove the pod (Deleted).
    if was_running {
        let exit_code = SIGTERM_EXIT_CODE;
        state.emit_pod_event(&pod, PodEventKind::Ended { exit_code });
    }
    state.write(key, pod);
}

/// Called when a pod is marked for deletion: SIGTERM to a running container, which exits
/// after the configured delay or is killed at the end of the grace period.
pub(crate) fn begin_termination(state: &mut SimState, key: &ObjectKey, pod: &Value, grace: i64) {
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let delay = if is_running(pod) {
        state.emit_pod_event(pod, PodEventKind::Terminating);
        let grace = Duration::from_secs(grace.unsigned_abs());
        state.options.termination_delay.min(grace)
    } else {
        Duration::ZERO
    };
    state.schedule(
        delay,
        TimerAction::StopPod {
            key: key.clone(),
            uid,
        },
    );
}

pub(crate) fn run(state: &mut SimState, action: TimerAction) {
    match action {
        TimerAction::StartPod { key, uid } => start(state, &key, &uid),
        TimerAction::StopPod { key, uid } => stop(state, &key, &uid),
    }
}

/// Ends a pod's container with `exit_code` (0 → Succeeded, else Failed).
pub(crate) fn end_pod(
    state: &mut SimState,
    key: &ObjectKey,
    exit_code: i32,
) -> Result<(), ApiError> {
    let mut pod = state
        .store
        .get(key)
        .cloned()
        .ok_or_else(|| ApiError::not_found("pods", &key.name))?;
    if is_ended(&pod) {
        return Err(ApiError::conflict(
            "pods",
            &key.name,
            "the pod's container has already exited",
        ));
    }
    end_containers(&mut pod, exit_code);
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        release(&mut pod);
    }
    state.emit_pod_event(&pod, PodEventKind::Ended { exit_code });
    state.write(key, pod);
    state.settle();
    Ok(())
}
