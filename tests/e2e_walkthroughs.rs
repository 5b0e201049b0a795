//! The walkthroughs end to end: the real engine and Kubernetes driver, wired as
//! the broker module wires them, against the simulated API server and the simulated Flux
//! side (`fluxk8s::scenario::Cluster`).

use fluxk8s::model::IdSet;
use fluxk8s::scenario::{Cluster, ClusterSpec, JobKind, Mode, quick_planner};
use fluxk8s::sim::flux::BrokerState;

fn ids(text: &str) -> IdSet {
    text.parse().unwrap()
}

fn start(spec: ClusterSpec) -> Cluster {
    Cluster::start(spec, Mode::Fluxk8s(quick_planner()), false).expect("cluster starts")
}

/// Converges, or fails with the timeline so far.
fn converge(cluster: &mut Cluster) {
    if let Err(err) = cluster.converge() {
        panic!("{err}\n{}", cluster.timeline().join("\n"));
    }
}

/// Asserts, printing the timeline when it does not hold.
fn assert_state(cluster: &Cluster, holds: bool, what: &str) {
    assert!(holds, "{what}\n{}", cluster.timeline().join("\n"));
}

fn resize(cluster: &mut Cluster, n: u32) {
    let answer = cluster.request_size(n, "admin").expect("resize accepted");
    assert_eq!(answer.target, n, "{answer:?}");
    converge(cluster);
}

fn with_per_index_backoff(size: u32, max: u32) -> ClusterSpec {
    ClusterSpec {
        backoff_limit_per_index: Some(0),
        ..ClusterSpec::minicluster(size, max)
    }
}

fn with_complete_workers(size: u32, max: u32) -> ClusterSpec {
    ClusterSpec {
        kind: JobKind::MiniCluster {
            complete_workers: true,
        },
        ..ClusterSpec::minicluster(size, max)
    }
}

fn bare_job(size: u32, max: u32) -> ClusterSpec {
    ClusterSpec {
        max_size: max,
        ..ClusterSpec::bare_job(size)
    }
}

/// Names of the live pods at these indexes now.
fn pod_names(cluster: &Cluster, indexes: &IdSet) -> Vec<String> {
    cluster
        .sim()
        .pod_views(fluxk8s::scenario::NAMESPACE, &cluster.spec().name)
        .into_iter()
        .filter(|p| p.is_live() && indexes.contains(p.index))
        .map(|p| p.name)
        .collect()
}

/// Pod DELETEs that named one of `pods`.
fn deletes_of(cluster: &Cluster, pods: &[String]) -> usize {
    cluster
        .pod_deletes()
        .iter()
        .filter(|r| pods.iter().any(|p| r.path.ends_with(&format!("/pods/{p}"))))
        .count()
}

/// Drain rank 2 as an administrator and resize to 3: the walkthrough's common start.
/// Returns the names of the pods of ranks 0, 1 and 3, which must never be touched.
fn drain_two_and_resize_to_three(cluster: &mut Cluster) -> Vec<String> {
    assert_eq!(cluster.live_ranks(), ids("0-3"));
    let bystanders = pod_names(cluster, &ids("0-1,3"));
    assert_eq!(bystanders.len(), 3);
    cluster.drain(&ids("2"), "Goodbye rank 2").unwrap();
    converge(cluster);
    resize(cluster, 3);
    assert_state(
        cluster,
        cluster.live_ranks() == ids("0-1,3"),
        "ranks 0,1,3 stay",
    );
    bystanders
}

fn operator_default(size: u32, max: u32) -> ClusterSpec {
    ClusterSpec::minicluster(size, max)
}

/// The Downsize walkthrough on one kind of Job: rank 2's broker is shut down cleanly, its
/// pod succeeds, index 2 completes and never comes back; no pod is deleted.
fn downsize_by_shutdown(spec: ClusterSpec) {
    let mut cluster = start(spec);
    let bystanders = drain_two_and_resize_to_three(&mut cluster);
    assert_eq!(cluster.flux().shut_down(), [2], "one shutdown, of broker 2");
    assert_eq!(cluster.flux().state(2), Some(BrokerState::Offline));
    assert_eq!(cluster.live_pods(), ids("0-1,3"), "pod 2 is gone");
    let job = cluster.sim().job("flux", &cluster.spec().name).unwrap();
    assert_eq!(job["status"]["completedIndexes"], "2");
    assert_eq!(
        cluster.flux().drain(2).unwrap().reason.as_deref(),
        Some("Goodbye rank 2"),
        "the administrator's drain is left as it is"
    );

    resize(&mut cluster, 4);
    assert_eq!(cluster.live_ranks(), ids("0-1,3-4"));
    resize(&mut cluster, 6);
    assert_eq!(cluster.live_ranks(), ids("0-1,3-6"));
    assert_eq!(
        cluster.live_pods(),
        ids("0-1,3-6"),
        "index 2 never came back"
    );
    assert!(cluster.pod_deletes().is_empty(), "no pod was deleted");
    assert_eq!(deletes_of(&cluster, &bystanders), 0);
    let (phase, why) = cluster.rank_status(2).unwrap();
    assert_eq!(phase, "retired");
    assert_eq!(why, "retired: index completed, drained by others");
}

#[test]
fn downsize_with_the_operator_default_shuts_rank_two_down() {
    downsize_by_shutdown(operator_default(4, 10));
}

#[test]
fn downsize_with_per_index_backoff_shuts_rank_two_down() {
    downsize_by_shutdown(with_per_index_backoff(4, 10));
}

#[test]
fn downsize_with_complete_workers_shuts_rank_two_down() {
    downsize_by_shutdown(with_complete_workers(4, 10));
}

#[test]
fn downsize_with_a_bare_job_shuts_rank_two_down() {
    downsize_by_shutdown(bare_job(4, 10));
}

/// Rank 2's broker crashes inside a pod that keeps running, then rank 2 is retired: only
/// a pod delete can remove it, and only per-index backoff keeps the index gone.
fn retire_a_crashed_broker(spec: ClusterSpec) -> Cluster {
    let mut cluster = start(spec);
    cluster.crash_broker(2);
    converge(&mut cluster);
    assert_eq!(
        cluster.flux().drain(2).unwrap().reason.as_deref(),
        Some("fluxk8s: pod lost")
    );
    cluster.request_retire(&ids("2")).unwrap();
    converge(&mut cluster);
    assert!(
        cluster.flux().shut_down().is_empty(),
        "no broker to shut down"
    );
    cluster
}

#[test]
fn a_retired_rank_whose_broker_is_down_is_deleted_with_per_index_backoff() {
    let cluster = retire_a_crashed_broker(with_per_index_backoff(4, 10));
    let bystanders = pod_names(&cluster, &ids("0-1,3"));
    assert_eq!(
        cluster.pod_deletes().len(),
        1,
        "{:?}",
        cluster.pod_deletes()
    );
    assert_eq!(deletes_of(&cluster, &bystanders), 0);
    assert_eq!(cluster.live_pods(), ids("0-1,3"));
    let job = cluster.sim().job("flux", &cluster.spec().name).unwrap();
    assert_eq!(job["status"]["failedIndexes"], "2");
    let (phase, _) = cluster.rank_status(2).unwrap();
    assert_eq!(phase, "retired");
}

#[test]
fn without_per_index_backoff_a_retired_rank_whose_broker_is_down_stays_drained() {
    let cluster = retire_a_crashed_broker(operator_default(4, 10));
    assert!(cluster.pod_deletes().is_empty());
    assert_eq!(
        cluster.live_pods(),
        ids("0-3"),
        "a deleted pod would come back"
    );
    let (phase, why) = cluster.rank_status(2).unwrap();
    assert_eq!(phase, "drained");
    assert!(why.contains("not online to be shut down"), "{why}");
}

/// fluxk8s's Flux view (built from the payloads) matches the simulated Flux side.
fn assert_views_agree(cluster: &Cluster) {
    let seen = cluster.engine().expect("fluxk8s runs").flux().rank_sets();
    let truth = cluster.flux();
    assert_state(
        cluster,
        seen.online == truth.online()
            && seen.drained == truth.drained()
            && seen.lost == truth.lost(),
        "fluxk8s sees Flux as it is",
    );
}

/// Flux, the Job and the MiniCluster agree on `live` ranks.
fn assert_all_agree(cluster: &Cluster, live: &IdSet) {
    assert_views_agree(cluster);
    assert_eq!(&cluster.live_ranks(), live, "Flux");
    assert_eq!(&cluster.live_pods(), live, "pods");
    let job = cluster.sim().job("flux", &cluster.spec().name).unwrap();
    assert_eq!(job["status"]["active"], live.len(), "Job active pods");
    let (parallelism, completions) = cluster.job_size().unwrap();
    assert_eq!(parallelism, completions);
    assert_eq!(
        cluster.kube_size(),
        Some(completions),
        "MiniCluster and Job"
    );
    let status = cluster.status().unwrap();
    assert_eq!(status["real_size"], live.len());
    assert_eq!(status["plan"]["expected_size"], live.len());
}

/// Size 2; an application asks for 4 through the resize RPC path; it then retires
/// rank 2. Returns the cluster for kind-specific checks.
fn elastic(spec: ClusterSpec) -> Cluster {
    let mut cluster = start(spec);
    assert_eq!(cluster.live_ranks(), ids("0-1"));
    let answer = cluster.request_size(4, "application").unwrap();
    assert_eq!((answer.target, answer.reachable), (4, 8));
    converge(&mut cluster);
    assert_all_agree(&cluster, &ids("0-3"));

    let answer = cluster.request_retire(&ids("2")).unwrap();
    assert_eq!(answer.accepted, ids("2"));
    assert_eq!(answer.desired_size, Some(3));
    converge(&mut cluster);
    cluster
}

/// The elasticity story on one kind of Job: rank 2 leaves by a clean shutdown.
fn elasticity_by_shutdown(spec: ClusterSpec) {
    let cluster = elastic(spec);
    assert_all_agree(&cluster, &ids("0-1,3"));
    assert_eq!(cluster.flux().shut_down(), [2]);
    assert!(cluster.pod_deletes().is_empty());
    let job = cluster.sim().job("flux", &cluster.spec().name).unwrap();
    assert_eq!(job["status"]["completedIndexes"], "2");
    assert_eq!(
        cluster.flux().drain(2).unwrap().reason.as_deref(),
        Some("fluxk8s: retired by request")
    );
}

#[test]
fn elasticity_with_the_operator_default() {
    elasticity_by_shutdown(operator_default(2, 8));
}

#[test]
fn elasticity_with_per_index_backoff() {
    elasticity_by_shutdown(with_per_index_backoff(2, 8));
}

#[test]
fn elasticity_with_complete_workers() {
    elasticity_by_shutdown(with_complete_workers(2, 8));
}

#[test]
fn elasticity_with_a_bare_job() {
    elasticity_by_shutdown(bare_job(2, 8));
}

/// The drains and undrains of `rank` in the journal, in order, as (name, reason).
fn drain_history(cluster: &Cluster, rank: u32) -> Vec<(String, String)> {
    cluster
        .flux()
        .journal_history()
        .iter()
        .filter(|event| matches!(event["name"].as_str(), Some("drain" | "undrain")))
        .filter(|event| {
            event["context"]["idset"]
                .as_str()
                .and_then(|s| s.parse::<IdSet>().ok())
                .is_some_and(|set| set.contains(rank))
        })
        .map(|event| {
            (
                event["name"].as_str().unwrap().to_owned(),
                event["context"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_pod_lost_behind_our_back_is_drained_then_undrained_when_back() {
    let mut cluster = start(ClusterSpec::minicluster(4, 6));
    let old = pod_names(&cluster, &ids("3"));
    cluster.kill_pod(3).unwrap();
    let drained = cluster.run_until(
        "rank 3 drained as lost",
        std::time::Duration::from_secs(20),
        |c| {
            drain_history(c, 3)
                .iter()
                .any(|(name, reason)| name == "drain" && reason == "fluxk8s: pod lost")
        },
    );
    assert_state(&cluster, drained.is_ok(), "fluxk8s drains a lost rank");
    converge(&mut cluster);
    assert_eq!(
        drain_history(&cluster, 3),
        [
            ("drain".to_owned(), "fluxk8s: pod lost".to_owned()),
            ("undrain".to_owned(), String::new()),
        ],
        "drained once, lifted once back online"
    );
    assert_all_agree(&cluster, &ids("0-3"));
    assert_ne!(
        pod_names(&cluster, &ids("3")),
        old,
        "Kubernetes recreated the pod"
    );
    assert!(cluster.pod_deletes().is_empty(), "fluxk8s deleted nothing");
}

#[test]
fn after_a_restart_fluxk8s_reapplies_its_drains_and_repeats_nothing() {
    let mut cluster = start(with_per_index_backoff(4, 10));
    cluster.drain(&ids("2"), "Goodbye rank 2").unwrap();
    converge(&mut cluster);
    assert_eq!(cluster.flux().shut_down(), [2]);

    cluster.restart_leader().expect("fluxk8s reloads");
    converge(&mut cluster);
    assert_eq!(cluster.flux().drained(), ids("2"), "the drain is back");
    assert_eq!(
        cluster.flux().drain(2).unwrap().reason.as_deref(),
        Some("fluxk8s: retired (index completed)")
    );
    assert_eq!(cluster.flux().shut_down(), [2], "no shutdown repeated");
    assert!(cluster.pod_deletes().is_empty(), "and no delete");
    assert_all_agree(&cluster, &ids("0-1,3"));

    // The fresh engine knows nothing but the views, and still grows around index 2.
    resize(&mut cluster, 4);
    assert_all_agree(&cluster, &ids("0-1,3-4"));
    assert!(cluster.pod_deletes().is_empty());
}
