//! The real kube client (kube 5 + k8s-openapi) against the simulated API server, end to
//! end over HTTP: reads, watches (resume and 410 relist), patches, the scale subresource,
//! deletes with preconditions, eviction, events and injected faults.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, EvictParams, GroupVersionKind, ListParams,
    Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::{reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use fluxk8s::model::PodPhase;
use fluxk8s::sim::{IndexedJobSpec, MiniClusterSpec, SimCluster, SimOptions, Verb};

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(5);

fn start(options: SimOptions) -> SimCluster {
    SimCluster::start(options).expect("the sim starts")
}

fn client(sim: &SimCluster) -> Client {
    Client::try_from(sim.kube_config(NS)).expect("a client for the sim")
}

fn miniclusters(client: Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("flux-framework.org", "v1alpha2", "MiniCluster");
    Api::namespaced_with(
        client,
        NS,
        &ApiResource::from_gvk_with_plural(&gvk, "miniclusters"),
    )
}

/// Indexes whose pod is Running and not terminating.
fn running(sim: &SimCluster, job: &str) -> Vec<u32> {
    sim.pod_views(NS, job)
        .into_iter()
        .filter(|p| p.phase == PodPhase::Running && !p.terminating)
        .map(|p| p.index)
        .collect()
}

fn wait_running(sim: &SimCluster, job: &str, expected: &[u32]) {
    let held = sim.wait_for(WAIT, |sim| running(sim, job) == expected);
    assert!(
        held,
        "running indexes {:?}, expected {expected:?}",
        running(sim, job)
    );
}

fn api_status(err: kube::Error) -> Box<kube::core::Status> {
    match err {
        kube::Error::Api(status) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn pod_name(sim: &SimCluster, job: &str, index: u32) -> (String, String) {
    let pod = sim
        .pod_views(NS, job)
        .into_iter()
        .find(|p| p.index == index && p.is_live())
        .expect("a live pod at the index");
    (pod.name, pod.uid)
}

#[tokio::test]
async fn get_and_list_with_label_and_field_selectors() {
    let sim = start(SimOptions::default());
    sim.create_minicluster(NS, &MiniClusterSpec::new("flux-sample", 3, 4))
        .unwrap();
    wait_running(&sim, "flux-sample", &[0, 1, 2]);
    let client = client(&sim);
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let selected = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=flux-sample"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 3);
    let list_version: u64 = selected.metadata.resource_version.unwrap().parse().unwrap();
    assert!(
        list_version >= 2,
        "a list carries the global resourceVersion"
    );
    let name = selected.items[1].name_any();
    let by_name = pods
        .list(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let none = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=other"))
        .await;
    assert!(none.unwrap().items.is_empty());

    let job = Api::<Job>::default_namespaced(client.clone())
        .get("flux-sample")
        .await
        .unwrap();
    let spec = job.spec.unwrap();
    assert_eq!(
        (spec.completions, spec.parallelism, spec.backoff_limit),
        (Some(3), Some(3), Some(100))
    );
    assert_eq!(job.status.unwrap().active, Some(3));
    let mc = miniclusters(client.clone())
        .get("flux-sample")
        .await
        .unwrap();
    assert_eq!(mc.data["spec"]["maxSize"], 4);
    assert_eq!(mc.data["status"]["maximumSize"], 4);
    let missing = Api::<Job>::default_namespaced(client)
        .get("nope")
        .await
        .unwrap_err();
    let status = api_status(missing);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn watcher_resumes_after_dropped_watches_and_relists_after_410() {
    let sim = start(SimOptions::default());
    sim.create_minicluster(NS, &MiniClusterSpec::new("m", 2, 6))
        .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client(&sim));
    let config = watcher::Config::default().labels("batch.kubernetes.io/job-name=m");
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(pods, config));
    tokio::spawn(stream.for_each(|_| async {}));
    let seen_running = |expected: usize| {
        let reader = reader.clone();
        async move {
            for _ in 0..1000 {
                let count = reader
                    .state()
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .count();
                if count == expected {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            false
        }
    };
    assert!(seen_running(2).await);
    assert_eq!(sim.requests().count(Verb::List, "pods"), 1);

    // A dropped watch resumes from the last resourceVersion: no relist.
    assert!(
        sim.wait_for(WAIT, |sim| sim.open_watches() == 1),
        "the watcher is watching"
    );
    sim.faults().drop_watches();
    sim.set_minicluster_size(NS, "m", 4, "kubectl-scale")
        .unwrap();
    assert!(
        seen_running(4).await,
        "changes made while the watch was down are replayed"
    );
    assert_eq!(sim.requests().count(Verb::List, "pods"), 1);
    assert_eq!(sim.requests().count(Verb::Watch, "pods"), 2);

    // After compaction the resumed watch gets a 410 ERROR event, and the watcher relists.
    assert!(
        sim.wait_for(WAIT, |sim| sim.open_watches() == 1),
        "the watcher watches again"
    );
    sim.faults().expire_history();
    sim.faults().drop_watches();
    sim.set_minicluster_size(NS, "m", 3, "kubectl-scale")
        .unwrap();
    assert!(seen_running(3).await);
    assert_eq!(
        sim.requests().count(Verb::List, "pods"),
        2,
        "410 Gone forces a relist"
    );
}

#[tokio::test]
async fn minicluster_merge_patch_drives_the_job_and_direct_job_edits_are_undone() {
    let sim = start(SimOptions::default());
    sim.create_minicluster(NS, &MiniClusterSpec::new("m", 2, 5))
        .unwrap();
    let client = client(&sim);
    let mcs = miniclusters(client.clone());
    let params = PatchParams::default();
    mcs.patch("m", &params, &Patch::Merge(json!({"spec": {"size": 4}})))
        .await
        .unwrap();
    wait_running(&sim, "m", &[0, 1, 2, 3]);
    let job = sim.job(NS, "m").unwrap();
    assert_eq!(
        (
            job["spec"]["parallelism"].as_i64(),
            job["spec"]["completions"].as_i64()
        ),
        (Some(4), Some(4))
    );
    assert_eq!(sim.minicluster(NS, "m").unwrap()["status"]["size"], 4);

    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let edit = json!({"spec": {"parallelism": 1, "completions": 1}});
    jobs.patch("m", &params, &Patch::Merge(edit)).await.unwrap();
    let job = jobs.get("m").await.unwrap();
    assert_eq!(
        job.spec.unwrap().parallelism,
        Some(4),
        "the operator reverted the edit"
    );
    wait_running(&sim, "m", &[0, 1, 2, 3]);

    let alone = jobs
        .patch(
            "m",
            &params,
            &Patch::Merge(json!({"spec": {"completions": 2}})),
        )
        .await;
    let status = api_status(alone.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));

    let too_big = mcs
        .patch("m", &params, &Patch::Merge(json!({"spec": {"size": 9}})))
        .await
        .unwrap();
    assert_eq!(too_big.data["spec"]["size"], 9, "the write is accepted ...");
    assert_eq!(
        mcs.get("m").await.unwrap().data["spec"]["size"],
        5,
        "... then denied by the operator"
    );
}

#[tokio::test]
async fn json_patch_test_operation_guards_a_resize() {
    let sim = start(SimOptions::default());
    sim.create_minicluster(NS, &MiniClusterSpec::new("m", 3, 4))
        .unwrap();
    let mcs = miniclusters(client(&sim));
    let guarded = |old: u32, new: u32| -> Patch<()> {
        let ops = json!([{"op": "test", "path": "/spec/size", "value": old},
                         {"op": "replace", "path": "/spec/size", "value": new}]);
        Patch::Json(serde_json::from_value(ops).unwrap())
    };
    mcs.patch("m", &PatchParams::default(), &guarded(3, 2))
        .await
        .unwrap();
    let stale = mcs
        .patch("m", &PatchParams::default(), &guarded(3, 4))
        .await
        .unwrap_err();
    assert_eq!(api_status(stale).code, 422);
    wait_running(&sim, "m", &[0, 1]);
    let strategic = mcs
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 3}})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        api_status(strategic).code,
        415,
        "CRDs reject strategic merge patches"
    );
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_spec_size() {
    let sim = start(SimOptions::default());
    sim.create_minicluster(NS, &MiniClusterSpec::new("m", 2, 4))
        .unwrap();
    let mcs = miniclusters(client(&sim));
    let scale = mcs.get_scale("m").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    let status = scale.status.unwrap();
    assert_eq!(
        (status.replicas, status.selector.as_deref()),
        (2, Some("hpa-selector=m"))
    );
    let patch = Patch::Merge(json!({"spec": {"replicas": 3}}));
    let patched = mcs
        .patch_scale("m", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().replicas, Some(3));
    wait_running(&sim, "m", &[0, 1, 2]);
    assert_eq!(
        mcs.get_scale("m").await.unwrap().status.unwrap().replicas,
        3
    );
    let negative = Patch::Merge(json!({"spec": {"replicas": -1}}));
    let err = mcs
        .patch_scale("m", &PatchParams::default(), &negative)
        .await
        .unwrap_err();
    assert_eq!(api_status(err).code, 422);
}

#[tokio::test]
async fn delete_with_uid_precondition_conflicts_or_recreates_the_index() {
    let sim = start(SimOptions::default());
    sim.create_minicluster(NS, &MiniClusterSpec::new("m", 3, 3))
        .unwrap();
    wait_running(&sim, "m", &[0, 1, 2]);
    let pods: Api<Pod> = Api::default_namespaced(client(&sim));
    let (name, uid) = pod_name(&sim, "m", 2);
    let with_uid = |uid: &str| DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        grace_period_seconds: Some(1),
        ..DeleteParams::default()
    };
    let conflict = pods
        .delete(&name, &with_uid("00000000-wrong"))
        .await
        .unwrap_err();
    let status = api_status(conflict);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));

    let deleted = pods.delete(&name, &with_uid(&uid)).await.unwrap();
    let terminating = deleted
        .left()
        .expect("a running pod is returned while terminating");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    let replaced = sim.wait_for(WAIT, |sim| {
        running(sim, "m") == [0, 1, 2] && pod_name(sim, "m", 2).1 != uid
    });
    assert!(replaced, "index 2 is recreated with a new pod");
    assert_eq!(sim.job(NS, "m").unwrap()["status"]["failed"], 1);
}

#[tokio::test]
async fn per_index_backoff_zero_makes_a_deleted_index_fail_for_good() {
    let options = SimOptions {
        operator_backoff_limit_per_index: Some(0),
        ..SimOptions::default()
    };
    let sim = start(options);
    sim.create_minicluster(NS, &MiniClusterSpec::new("m", 3, 3))
        .unwrap();
    wait_running(&sim, "m", &[0, 1, 2]);
    let pods: Api<Pod> = Api::default_namespaced(client(&sim));
    let (name, uid) = pod_name(&sim, "m", 1);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    pods.delete(&name, &params).await.unwrap();
    let failed = sim.wait_for(WAIT, |sim| {
        sim.job(NS, "m").unwrap()["status"]["failedIndexes"] == "1"
            && sim.pod_views(NS, "m").len() == 2
    });
    assert!(failed, "job status {}", sim.job(NS, "m").unwrap()["status"]);
    wait_running(&sim, "m", &[0, 2]);
}

#[tokio::test]
async fn exit_zero_completes_and_scale_down_truncates() {
    let sim = start(SimOptions::default());
    sim.create_minicluster(NS, &MiniClusterSpec::new("m", 5, 5))
        .unwrap();
    wait_running(&sim, "m", &[0, 1, 2, 3, 4]);
    sim.end_index(NS, "m", 2, 0).unwrap();
    sim.end_index(NS, "m", 4, 0).unwrap();
    wait_running(&sim, "m", &[0, 1, 3]);
    let jobs: Api<Job> = Api::default_namespaced(client(&sim));
    let status = jobs.get("m").await.unwrap().status.unwrap();
    assert_eq!(
        (status.completed_indexes.as_deref(), status.succeeded),
        (Some("2,4"), Some(2))
    );

    let mcs = miniclusters(client(&sim));
    mcs.patch(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 3}})),
    )
    .await
    .unwrap();
    wait_running(&sim, "m", &[0, 1]);
    let status = jobs.get("m").await.unwrap().status.unwrap();
    assert_eq!(
        status.completed_indexes.as_deref(),
        Some("2"),
        "index 4 is truncated away"
    );
    assert_eq!(
        status.failed,
        Some(0),
        "scale-down removals are not failures"
    );
}

#[tokio::test]
async fn eviction_of_a_bare_indexed_job_pod() {
    let sim = start(SimOptions::default());
    sim.create_job(NS, &IndexedJobSpec::new("j", 2)).unwrap();
    wait_running(&sim, "j", &[0, 1]);
    let pods: Api<Pod> = Api::default_namespaced(client(&sim));
    let (name, uid) = pod_name(&sim, "j", 1);
    let params = EvictParams {
        delete_options: Some(DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        }),
        ..EvictParams::default()
    };
    let status = pods.evict(&name, &params).await.unwrap();
    assert_eq!(status.code, 201);
    let evicted = pods.get(&name).await;
    if let Ok(pod) = evicted {
        let conditions = pod.status.unwrap().conditions.unwrap();
        assert!(conditions.iter().any(|c| c.type_ == "DisruptionTarget"));
    }
    let replaced = sim.wait_for(WAIT, |sim| {
        running(sim, "j") == [0, 1] && pod_name(sim, "j", 1).1 != uid
    });
    assert!(replaced);
}

#[tokio::test]
async fn events_of_both_apis_are_created_and_listed() {
    let sim = start(SimOptions::default());
    let client = client(&sim);
    let core: Api<Event> = Api::default_namespaced(client.clone());
    let event: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "fluxk8s-"},
        "involvedObject": {"kind": "MiniCluster", "name": "m", "namespace": NS},
        "reason": "Resize", "message": "size 3 -> 4", "type": "Normal",
    }))
    .unwrap();
    let created = core.create(&PostParams::default(), &event).await.unwrap();
    assert!(created.name_any().starts_with("fluxk8s-"));

    let reporter = kube::runtime::events::Reporter {
        controller: "fluxk8s".into(),
        instance: None,
    };
    let recorder = kube::runtime::events::Recorder::new(client.clone(), reporter);
    let reference = ObjectReference {
        kind: Some("MiniCluster".into()),
        name: Some("m".into()),
        namespace: Some(NS.into()),
        ..ObjectReference::default()
    };
    let retire = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Retire".into(),
        note: Some("rank 3".into()),
        action: "Disconnect".into(),
        secondary: None,
    };
    recorder.publish(&retire, &reference).await.unwrap();
    recorder.publish(&retire, &reference).await.unwrap();
    let listed = Api::<EventV1>::default_namespaced(client)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        listed.items.len(),
        1,
        "the repeat is a series patch, not a new event"
    );
    assert_eq!(listed.items[0].series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(
        core.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    assert_eq!(sim.events(NS).len(), 2);
}

#[tokio::test]
async fn injected_403_and_5xx_reach_the_client_as_api_errors() {
    let sim = start(SimOptions::default());
    sim.create_minicluster(NS, &MiniClusterSpec::new("m", 2, 2))
        .unwrap();
    wait_running(&sim, "m", &[0, 1]);
    let client = client(&sim);
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let (name, _) = pod_name(&sim, "m", 1);
    sim.faults().forbid(Verb::Delete, "pods");
    let status = api_status(
        pods.delete(&name, &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        format!(
            "pods \"{name}\" is forbidden: User \"system:serviceaccount:default:flux-k8s\" cannot \
             delete resource \"pods\" in API group \"\" in the namespace \"default\""
        )
    );
    sim.faults().allow(Verb::Delete, "pods");

    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    sim.faults().fail_next(&[Verb::Get], "jobs", 2, 500);
    let status = api_status(jobs.get("m").await.unwrap_err());
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError")
    );
    assert_eq!(api_status(jobs.get("m").await.unwrap_err()).code, 500);
    jobs.get("m").await.expect("only the next two fail");
    // kube's default client retries 503 (and 429, 504) itself, so the caller sees success.
    sim.faults().fail_next(&[Verb::Get], "jobs", 2, 503);
    jobs.get("m").await.expect("retried past two 503s");

    sim.faults()
        .fail_next(&Verb::WRITES, "miniclusters", 1, 409);
    let conflict = miniclusters(client)
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 1}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(conflict).code, 409);
    assert_eq!(
        sim.minicluster(NS, "m").unwrap()["spec"]["size"],
        2,
        "a refused write changes nothing"
    );
    let log = sim.requests();
    assert_eq!((log.count_status(500), log.count_status(503)), (2, 2));
    assert_eq!(log.count(Verb::Get, "jobs"), 6);
    assert_eq!(log.count(Verb::Patch, "miniclusters"), 1);
    let patch = log
        .records
        .iter()
        .find(|r| r.verb == Some(Verb::Patch))
        .unwrap();
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
}

#[tokio::test]
async fn a_held_request_is_answered_only_when_released() {
    let sim = start(SimOptions::default());
    sim.create_job(NS, &IndexedJobSpec::new("j", 1)).unwrap();
    sim.faults().hold(Verb::Get, "jobs");
    let jobs: Api<Job> = Api::default_namespaced(client(&sim));
    let get = tokio::spawn(async move { jobs.get("j").await });
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.faults().held(Verb::Get, "jobs") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the get never arrived"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Other requests are served meanwhile.
    let pods: Api<Pod> = Api::default_namespaced(client(&sim));
    pods.list(&ListParams::default()).await.unwrap();
    assert!(!get.is_finished());
    assert_eq!(sim.requests().count(Verb::Get, "jobs"), 0);

    sim.faults().release(Verb::Get, "jobs");
    assert_eq!(get.await.unwrap().unwrap().name_any(), "j");
    assert_eq!(sim.faults().held(Verb::Get, "jobs"), 0);
    assert_eq!(sim.requests().count(Verb::Get, "jobs"), 1);
}

#[tokio::test]
async fn kubeconfig_file_points_the_client_at_the_sim() {
    let sim = start(SimOptions::default());
    sim.create_job(NS, &IndexedJobSpec::new("j", 1)).unwrap();
    let dir = std::env::temp_dir().join(format!("fluxk8s-sim-kubeconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config");
    sim.write_kubeconfig(&path, "default").unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = Client::try_from(config).unwrap();
    let job = Api::<Job>::default_namespaced(client)
        .get("j")
        .await
        .unwrap();
    assert_eq!(job.name_any(), "j");
    std::fs::remove_dir_all(&dir).unwrap();
}
