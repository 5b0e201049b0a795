//! The controller rules, exercised on the state machine alone (no HTTP). Each test names
//! the Kubernetes behaviour it models and the rows of docs/kubernetes.md it follows.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::job_controller::{COMPLETION_INDEX, INDEX_FAILURE_COUNT, JOB_NAME_LABEL};
use super::kinds::Kind;
use super::state::{PodEventKind, SettleWork, SimOptions, SimState};
use super::store::ObjectKey;
use super::{api, kubelet};

const NS: &str = "default";

/// Lets the kubelet finish everything it has scheduled (starts and stops).
fn run_kubelet(state: &mut SimState) {
    state.fire_timers(Instant::now() + Duration::from_secs(3600));
}

fn create(state: &mut SimState, kind: Kind, body: Value) -> Value {
    let created = state.create_object(kind, NS, body).expect("create");
    state.settle();
    run_kubelet(state);
    created
}

fn minicluster(state: &mut SimState, name: &str, size: u32, max_size: u32) {
    let body = json!({"metadata": {"name": name},
                      "spec": {"size": size, "maxSize": max_size, "flux": {"completeWorkers": true}}});
    create(state, Kind::MiniCluster, body);
}

fn bare_job(state: &mut SimState, name: &str, completions: u32, extra_spec: Value) {
    let mut body = json!({"metadata": {"name": name}, "spec": {
        "completionMode": "Indexed", "completions": completions, "parallelism": completions,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
    super::patch::merge_patch(&mut body["spec"], &extra_spec);
    create(state, Kind::Job, body);
}

fn get(state: &SimState, kind: Kind, name: &str) -> Value {
    state
        .store
        .get(&ObjectKey::new(kind, NS, name))
        .cloned()
        .expect("object exists")
}

fn job_pods(state: &SimState, job: &str) -> Vec<Value> {
    let mut pods: Vec<Value> = state
        .store
        .objects(Kind::Pod, Some(NS))
        .map(|(_, pod)| pod.clone())
        .filter(|pod| pod["metadata"]["labels"][JOB_NAME_LABEL] == job)
        .collect();
    pods.sort_by_key(index_of);
    pods
}

fn index_of(pod: &Value) -> u32 {
    pod["metadata"]["annotations"][COMPLETION_INDEX]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn name_of(pod: &Value) -> String {
    pod["metadata"]["name"].as_str().unwrap().to_owned()
}

/// Indexes with a Running, non-terminating pod.
fn running_indexes(state: &SimState, job: &str) -> Vec<u32> {
    job_pods(state, job)
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(index_of)
        .collect()
}

fn pod_at(state: &SimState, job: &str, index: u32) -> Value {
    job_pods(state, job)
        .into_iter()
        .find(|p| index_of(p) == index && p["metadata"]["deletionTimestamp"].is_null())
        .expect("a live pod at the index")
}

fn delete_pod(state: &mut SimState, name: &str, options: Value) -> Result<Value, super::ApiError> {
    let key = ObjectKey::new(Kind::Pod, NS, name);
    let result = state.api_delete(&key, options.to_string().as_bytes());
    run_kubelet(state);
    result
}

fn patch(
    state: &mut SimState,
    kind: Kind,
    name: &str,
    patch: Value,
) -> Result<Value, super::ApiError> {
    let key = ObjectKey::new(kind, NS, name);
    let result = state.api_patch(
        &key,
        api::PatchFormat::Merge,
        patch.to_string().as_bytes(),
        "test",
    );
    run_kubelet(state);
    result
}

fn end_pod(state: &mut SimState, job: &str, index: u32, exit_code: i32) {
    let name = name_of(&pod_at(state, job, index));
    kubelet::end_pod(state, &ObjectKey::new(Kind::Pod, NS, &name), exit_code).unwrap();
    run_kubelet(state);
}

#[test]
fn operator_creates_an_indexed_job_sized_like_the_minicluster() {
    // docs/kubernetes.md 4.1 (the Job) and 1.1 (pod identity).
    let mut state = SimState::new(SimOptions::default());
    minicluster(&mut state, "flux-sample", 3, 5);
    let mc = get(&state, Kind::MiniCluster, "flux-sample");
    let job = get(&state, Kind::Job, "flux-sample");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(
        (
            job["spec"]["completions"].as_i64(),
            job["spec"]["parallelism"].as_i64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(job["spec"]["backoffLimit"], 100);
    let owner = &job["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool()),
        (Some("MiniCluster"), Some(true))
    );
    assert_eq!(owner["uid"], mc["metadata"]["uid"]);
    assert_eq!(
        mc["status"],
        json!({"size": 3, "maximumSize": 5, "selector": "hpa-selector=flux-sample"})
    );

    let pods = job_pods(&state, "flux-sample");
    assert_eq!(pods.len(), 3);
    for (index, pod) in pods.iter().enumerate() {
        let name = name_of(pod);
        let (prefix, suffix) = name.rsplit_once('-').unwrap();
        assert_eq!(prefix, format!("flux-sample-{index}"));
        assert_eq!(suffix.len(), 5);
        assert_eq!(pod["spec"]["hostname"], format!("flux-sample-{index}"));
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels["batch.kubernetes.io/job-name"], "flux-sample");
        assert_eq!(labels["job-name"], "flux-sample");
        assert_eq!(labels[COMPLETION_INDEX], index.to_string());
        assert_eq!(
            labels["batch.kubernetes.io/controller-uid"],
            job["metadata"]["uid"]
        );
        assert_eq!(labels["hpa-selector"], "flux-sample");
        assert_eq!(
            pod["metadata"]["finalizers"],
            json!(["batch.kubernetes.io/job-tracking"])
        );
        assert_eq!(
            pod["metadata"]["ownerReferences"][0]["uid"],
            job["metadata"]["uid"]
        );
        assert_eq!(pod["status"]["phase"], "Running");
    }
    let status = get(&state, Kind::Job, "flux-sample")["status"].clone();
    assert_eq!(
        (status["active"].as_i64(), status["ready"].as_i64()),
        (Some(3), Some(3))
    );
}

#[test]
fn operator_reverts_a_direct_job_size_edit() {
    // docs/kubernetes.md 4.2: parallelism != spec.size → allowScale patches it back.
    let mut state = SimState::new(SimOptions::default());
    minicluster(&mut state, "m", 3, 6);
    let edited = patch(
        &mut state,
        Kind::Job,
        "m",
        json!({"spec": {"parallelism": 5, "completions": 5}}),
    );
    assert_eq!(
        edited.unwrap()["spec"]["parallelism"],
        5,
        "the write itself is accepted"
    );
    let job = get(&state, Kind::Job, "m");
    assert_eq!(
        (
            job["spec"]["parallelism"].as_i64(),
            job["spec"]["completions"].as_i64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(running_indexes(&state, "m"), [0, 1, 2]);
}

#[test]
fn minicluster_size_is_clamped_to_one_and_maximum_size() {
    // docs/kubernetes.md 4.2: size > maximumSize → disallowScale;
    // size < 1 → restoreOriginalSize.
    let mut state = SimState::new(SimOptions::default());
    minicluster(&mut state, "m", 2, 4);
    patch(
        &mut state,
        Kind::MiniCluster,
        "m",
        json!({"spec": {"size": 9}}),
    )
    .unwrap();
    assert_eq!(get(&state, Kind::MiniCluster, "m")["spec"]["size"], 4);
    assert_eq!(get(&state, Kind::Job, "m")["spec"]["parallelism"], 4);
    patch(
        &mut state,
        Kind::MiniCluster,
        "m",
        json!({"spec": {"size": 0}}),
    )
    .unwrap();
    assert_eq!(get(&state, Kind::MiniCluster, "m")["spec"]["size"], 4);
    assert_eq!(running_indexes(&state, "m"), [0, 1, 2, 3]);
}

#[test]
fn indexed_job_completions_change_only_in_tandem_with_parallelism() {
    // docs/kubernetes.md 1.4, elastic Indexed Jobs: API validation.
    let mut state = SimState::new(SimOptions::default());
    bare_job(&mut state, "j", 3, json!({}));
    let err = patch(
        &mut state,
        Kind::Job,
        "j",
        json!({"spec": {"completions": 2}}),
    )
    .unwrap_err();
    assert_eq!((err.code, err.reason), (422, "Invalid"));
    assert!(
        err.message
            .contains("can only be modified in tandem with spec.parallelism"),
        "{}",
        err.message
    );
    patch(
        &mut state,
        Kind::Job,
        "j",
        json!({"spec": {"parallelism": 2}}),
    )
    .expect("parallelism alone may change");
    patch(
        &mut state,
        Kind::Job,
        "j",
        json!({"spec": {"completions": 2}}),
    )
    .expect("now equal to parallelism");
}

#[test]
fn scale_down_removes_the_highest_indexes_without_counting_failures() {
    // docs/kubernetes.md 1.4: active pods with index >= completions go, not counted.
    let mut state = SimState::new(SimOptions::default());
    minicluster(&mut state, "m", 4, 4);
    let events = state.subscribe_pods();
    patch(
        &mut state,
        Kind::MiniCluster,
        "m",
        json!({"spec": {"size": 2}}),
    )
    .unwrap();
    assert_eq!(running_indexes(&state, "m"), [0, 1]);
    assert_eq!(
        job_pods(&state, "m").len(),
        2,
        "removed pods are gone once stopped"
    );
    let status = get(&state, Kind::Job, "m")["status"].clone();
    assert_eq!(
        (status["failed"].as_i64(), status["active"].as_i64()),
        (Some(0), Some(2))
    );
    let deleted: Vec<u32> = events
        .try_iter()
        .filter(|e| e.kind == PodEventKind::Deleted)
        .filter_map(|e| e.index)
        .collect();
    assert_eq!(deleted.len(), 2);
    assert!(deleted.contains(&2) && deleted.contains(&3));
}

#[test]
fn deleted_pod_counts_as_failed_and_its_index_is_recreated() {
    // docs/kubernetes.md 1.6: default replacement policy, backoffLimit consumed.
    let mut state = SimState::new(SimOptions::default());
    minicluster(&mut state, "m", 3, 3);
    let old = pod_at(&state, "m", 1);
    delete_pod(
        &mut state,
        &name_of(&old),
        json!({"preconditions": {"uid": old["metadata"]["uid"]}}),
    )
    .unwrap();
    let new = pod_at(&state, "m", 1);
    assert_ne!(new["metadata"]["uid"], old["metadata"]["uid"]);
    assert_eq!(
        new["spec"]["hostname"], "m-1",
        "same hostname, so the same Flux rank"
    );
    let status = get(&state, Kind::Job, "m")["status"].clone();
    assert_eq!(
        (status["failed"].as_i64(), status["active"].as_i64()),
        (Some(1), Some(3))
    );
    assert!(
        status.get("failedIndexes").is_none(),
        "no per-index backoff"
    );
}

#[test]
fn per_index_backoff_zero_fails_the_deleted_index_for_good() {
    // docs/kubernetes.md 2.1 and 2.3 (the operator variant of PR #213).
    let options = SimOptions {
        operator_backoff_limit_per_index: Some(0),
        ..SimOptions::default()
    };
    let mut state = SimState::new(options);
    minicluster(&mut state, "m", 4, 4);
    assert_eq!(
        get(&state, Kind::Job, "m")["spec"]["backoffLimitPerIndex"],
        0
    );
    let victim = pod_at(&state, "m", 2);
    delete_pod(
        &mut state,
        &name_of(&victim),
        json!({"gracePeriodSeconds": 5}),
    )
    .unwrap();
    assert_eq!(running_indexes(&state, "m"), [0, 1, 3]);
    let status = get(&state, Kind::Job, "m")["status"].clone();
    assert_eq!(status["failedIndexes"], "2");
    assert_eq!(status["failed"], 1);
    assert!(
        status.get("conditions").is_none(),
        "the Job runs on while other indexes do"
    );
}

#[test]
fn per_index_backoff_one_recreates_once_with_a_failure_count() {
    // docs/kubernetes.md 2.1: job-index-failure-count annotation; index fails when count > limit.
    let mut state = SimState::new(SimOptions::default());
    bare_job(&mut state, "j", 2, json!({"backoffLimitPerIndex": 1}));
    end_pod(&mut state, "j", 1, 3);
    let retry = pod_at(&state, "j", 1);
    assert_eq!(retry["metadata"]["annotations"][INDEX_FAILURE_COUNT], "1");
    end_pod(&mut state, "j", 1, 3);
    let status = get(&state, Kind::Job, "j")["status"].clone();
    assert_eq!(
        (status["failedIndexes"].as_str(), status["failed"].as_i64()),
        (Some("1"), Some(2))
    );
    assert_eq!(running_indexes(&state, "j"), [0]);
}

#[test]
fn failures_beyond_backoff_limit_fail_the_job_and_remove_all_pods() {
    // docs/kubernetes.md 1.6: past backoffLimit the whole Job fails and all pods die.
    let mut state = SimState::new(SimOptions::default());
    bare_job(&mut state, "j", 3, json!({"backoffLimit": 1}));
    end_pod(&mut state, "j", 0, 1);
    assert_eq!(
        running_indexes(&state, "j"),
        [0, 1, 2],
        "one failure is within the limit"
    );
    end_pod(&mut state, "j", 2, 1);
    let job = get(&state, Kind::Job, "j");
    let failed = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed");
    assert_eq!(failed.unwrap()["reason"], "BackoffLimitExceeded");
    assert!(running_indexes(&state, "j").is_empty());
    assert_eq!(job["status"]["active"], 0);
}

#[test]
fn exit_zero_completes_the_index_which_is_not_recreated() {
    // docs/kubernetes.md 1.3 and 4.5 (completeWorkers).
    let mut state = SimState::new(SimOptions::default());
    minicluster(&mut state, "m", 4, 4);
    end_pod(&mut state, "m", 2, 0);
    assert_eq!(running_indexes(&state, "m"), [0, 1, 3]);
    let status = get(&state, Kind::Job, "m")["status"].clone();
    assert_eq!(
        (
            status["completedIndexes"].as_str(),
            status["succeeded"].as_i64()
        ),
        (Some("2"), Some(1))
    );
    end_pod(&mut state, "m", 3, 0);
    assert_eq!(
        get(&state, Kind::Job, "m")["status"]["completedIndexes"],
        "2-3"
    );
}

#[test]
fn a_completed_index_returns_only_after_scaling_below_it_and_back() {
    // docs/kubernetes.md 1.5: truncation of completedIndexes.
    let mut state = SimState::new(SimOptions::default());
    minicluster(&mut state, "m", 4, 4);
    end_pod(&mut state, "m", 3, 0);
    patch(
        &mut state,
        Kind::MiniCluster,
        "m",
        json!({"spec": {"size": 3}}),
    )
    .unwrap();
    assert!(
        get(&state, Kind::Job, "m")["status"]
            .get("completedIndexes")
            .is_none()
    );
    patch(
        &mut state,
        Kind::MiniCluster,
        "m",
        json!({"spec": {"size": 4}}),
    )
    .unwrap();
    assert_eq!(running_indexes(&state, "m"), [0, 1, 2, 3]);
}

#[test]
fn job_completes_when_every_index_succeeded() {
    // docs/kubernetes.md 1.7: Complete once completedIndexes covers 0..completions.
    let mut state = SimState::new(SimOptions::default());
    bare_job(&mut state, "j", 2, json!({}));
    end_pod(&mut state, "j", 0, 0);
    end_pod(&mut state, "j", 1, 0);
    let job = get(&state, Kind::Job, "j");
    let types: Vec<&str> = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
    assert!(!job["status"]["completionTime"].is_null());
}

#[test]
fn delete_with_a_stale_uid_precondition_is_a_409_conflict() {
    // docs/kubernetes.md 3.1: DELETE with preconditions.uid never hits a replacement.
    let mut state = SimState::new(SimOptions::default());
    minicluster(&mut state, "m", 2, 2);
    let pod = pod_at(&state, "m", 1);
    let err = delete_pod(
        &mut state,
        &name_of(&pod),
        json!({"preconditions": {"uid": "not-the-uid"}}),
    )
    .unwrap_err();
    assert_eq!((err.code, err.reason), (409, "Conflict"));
    assert!(
        err.message
            .contains("Precondition failed: UID in precondition: not-the-uid"),
        "{}",
        err.message
    );
    assert_eq!(
        pod_at(&state, "m", 1)["metadata"]["uid"],
        pod["metadata"]["uid"]
    );
}

#[test]
fn deleting_a_running_pod_terminates_it_then_removes_it() {
    // docs/kubernetes.md 3.2: a deleted pod is terminating (deletionTimestamp) until the
    // kubelet stops it.
    let mut state = SimState::new(SimOptions::default());
    minicluster(&mut state, "m", 1, 1);
    let events = state.subscribe_pods();
    let pod = pod_at(&state, "m", 0);
    let key = ObjectKey::new(Kind::Pod, NS, &name_of(&pod));
    let terminating = state.api_delete(&key, b"").unwrap();
    assert!(!terminating["metadata"]["deletionTimestamp"].is_null());
    assert_eq!(terminating["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(
        state.store.get(&key).is_some(),
        "still there until the kubelet stops it"
    );
    run_kubelet(&mut state);
    assert!(state.store.get(&key).is_none());
    let kinds: Vec<PodEventKind> = events
        .try_iter()
        .filter(|e| e.pod == key.name)
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            PodEventKind::Terminating,
            PodEventKind::Ended { exit_code: 143 },
            PodEventKind::Deleted
        ]
    );
}

#[test]
fn eviction_marks_disruption_target_then_deletes() {
    // docs/kubernetes.md 3.3: DisruptionTarget is added by API eviction, not by DELETE.
    let mut state = SimState::new(SimOptions::default());
    minicluster(&mut state, "m", 2, 2);
    let pod = pod_at(&state, "m", 1);
    let key = ObjectKey::new(Kind::Pod, NS, &name_of(&pod));
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": key.name},
                          "deleteOptions": {"preconditions": {"uid": pod["metadata"]["uid"]}}});
    let status = state
        .api_evict(&key, eviction.to_string().as_bytes())
        .unwrap();
    assert_eq!(
        (status["status"].as_str(), status["code"].as_i64()),
        (Some("Success"), Some(201))
    );
    let evicted = state.store.get(&key).unwrap();
    let conditions = evicted["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "DisruptionTarget" && c["reason"] == "EvictionByEvictionAPI")
    );
    assert!(!evicted["metadata"]["deletionTimestamp"].is_null());
    let plain = pod_at(&state, "m", 0);
    let plain_key = ObjectKey::new(Kind::Pod, NS, &name_of(&plain));
    let deleted = state.api_delete(&plain_key, b"").unwrap();
    let plain_conditions = deleted["status"]["conditions"].as_array().unwrap();
    assert!(
        !plain_conditions
            .iter()
            .any(|c| c["type"] == "DisruptionTarget")
    );
}

#[test]
fn deleting_the_job_recreates_it_with_a_new_uid() {
    // docs/kubernetes.md 4.6: a deleted Job is recreated by the operator; old pods are not adopted.
    let mut state = SimState::new(SimOptions::default());
    minicluster(&mut state, "m", 2, 2);
    let old_uid = get(&state, Kind::Job, "m")["metadata"]["uid"].clone();
    let key = ObjectKey::new(Kind::Job, NS, "m");
    state
        .api_delete(
            &key,
            json!({"propagationPolicy": "Background"})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    run_kubelet(&mut state);
    let job = get(&state, Kind::Job, "m");
    assert_ne!(job["metadata"]["uid"], old_uid);
    let pods = job_pods(&state, "m");
    assert_eq!(pods.len(), 2);
    assert!(
        pods.iter()
            .all(|p| p["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"])
    );
}

#[test]
fn merge_patch_with_a_stale_resource_version_is_a_conflict() {
    // docs/kubernetes.md 3.4: metadata.resourceVersion in the merge patch gives optimistic
    // concurrency.
    let mut state = SimState::new(SimOptions::default());
    minicluster(&mut state, "m", 2, 4);
    let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"size": 3}});
    let err = patch(&mut state, Kind::MiniCluster, "m", stale).unwrap_err();
    assert_eq!((err.code, err.reason), (409, "Conflict"));
    let current = get(&state, Kind::MiniCluster, "m")["metadata"]["resourceVersion"].clone();
    let fresh = json!({"metadata": {"resourceVersion": current}, "spec": {"size": 3}});
    patch(&mut state, Kind::MiniCluster, "m", fresh).unwrap();
    assert_eq!(running_indexes(&state, "m"), [0, 1, 2]);
}

#[test]
fn status_is_a_subresource_that_main_resource_writes_cannot_change() {
    // docs/kubernetes.md 3.4: sizes and indexes are in status, written only by controllers.
    let mut state = SimState::new(SimOptions::default());
    minicluster(&mut state, "m", 2, 2);
    let updated = patch(
        &mut state,
        Kind::Job,
        "m",
        json!({"status": {"completedIndexes": "0-1"}}),
    )
    .unwrap();
    assert!(updated["status"].get("completedIndexes").is_none());
    assert_eq!(running_indexes(&state, "m"), [0, 1]);
}

// What settling costs. The sim once synced every Job on every request, each sync reading
// every pod of the namespace: one pod DELETE at 1,000 pods took ~180 ms, and benchmarks of
// fluxk8s measured the sim. These tests bound the work by counting it, not timing it.

/// Passes of one Job sync over its pods: accounting, removal, creation, status.
const POD_PASSES_PER_SYNC: usize = 4;

/// The work of settling a DELETE of one running pod of `job` (which has `size` pods), and
/// of settling the kubelet's stop of that pod and start of its replacement.
fn delete_work(state: &mut SimState, size: u32) -> [SettleWork; 2] {
    bare_job(state, "job", size, json!({}));
    let victim = name_of(&pod_at(state, "job", 1));
    let key = ObjectKey::new(Kind::Pod, NS, &victim);
    state.api_delete(&key, b"").unwrap();
    let request = state.settle_work;
    run_kubelet(state);
    assert_eq!(running_indexes(state, "job").len(), size as usize);
    [request, state.settle_work]
}

#[test]
fn a_pod_change_costs_the_same_beside_a_big_job_and_minicluster() {
    let alone = delete_work(&mut SimState::new(SimOptions::default()), 3);
    let mut crowded = SimState::new(SimOptions::default());
    bare_job(&mut crowded, "other", 300, json!({}));
    minicluster(&mut crowded, "m", 300, 300);
    let beside = delete_work(&mut crowded, 3);
    assert_eq!(alone, beside, "unrelated Jobs and pods were synced or read");
    assert!(alone.iter().all(|work| work.job_syncs > 0));
}

#[test]
fn a_pod_change_takes_as_many_syncs_at_any_job_size_each_reading_its_pods_a_few_times() {
    let small = delete_work(&mut SimState::new(SimOptions::default()), 10);
    let large = delete_work(&mut SimState::new(SimOptions::default()), 300);
    // The Job's pods, and the deleted one while it terminates.
    let pods = 300 + 1;
    for (small, large) in small.iter().zip(&large) {
        let steps = |w: &SettleWork| (w.rounds, w.reconciles, w.job_syncs);
        assert_eq!(steps(small), steps(large));
        assert!(large.pods_read <= large.job_syncs * POD_PASSES_PER_SYNC * pods);
    }
}

#[test]
fn starting_every_pod_of_a_job_settles_once() {
    // The kubelet starts a whole Job's pods, then the controllers react once: settling
    // after each start made large Jobs quadratic.
    let start_work = |size: u32| {
        let mut state = SimState::new(SimOptions::default());
        bare_job(&mut state, "job", size, json!({}));
        assert_eq!(running_indexes(&state, "job").len(), size as usize);
        state.settle_work
    };
    let (small, large) = (start_work(10), start_work(300));
    assert_eq!(
        (small.rounds, small.job_syncs),
        (large.rounds, large.job_syncs)
    );
    assert!(large.pods_read <= large.job_syncs * POD_PASSES_PER_SYNC * 300);
}
