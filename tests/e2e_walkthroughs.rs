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

#[test]
fn downsize_with_per_index_backoff_deletes_only_pod_two_and_never_recreates_it() {
    let mut cluster = start(with_per_index_backoff(4, 10));
    let bystanders = drain_two_and_resize_to_three(&mut cluster);
    assert_eq!(cluster.live_pods(), ids("0-1,3"), "pod 2 is gone");
    let deletes = cluster.pod_deletes();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes_of(&cluster, &bystanders), 0);
    assert_eq!(
        cluster.flux().drain(2).unwrap().reason.as_deref(),
        Some("Goodbye rank 2"),
        "the administrator's drain is left as it is"
    );

    resize(&mut cluster, 4);
    assert_eq!(cluster.live_ranks(), ids("0-1,3-4"));
    resize(&mut cluster, 6);
    assert_eq!(cluster.live_ranks(), ids("0-1,3-6"));
    assert_eq!(cluster.live_pods(), ids("0-1,3-6"), "index 2 never came back");
    assert_eq!(deletes_of(&cluster, &bystanders), 0);
    assert_eq!(cluster.pod_deletes().len(), 1);
    let (phase, why) = cluster.rank_status(2).unwrap();
    assert_eq!(phase, "retired");
    assert_eq!(why, "retired: index failed, drained by others");
}

#[test]
fn downsize_with_complete_workers_disconnects_the_broker_and_deletes_nothing() {
    let mut cluster = start(with_complete_workers(4, 10));
    drain_two_and_resize_to_three(&mut cluster);
    assert_eq!(cluster.flux().state(2), Some(BrokerState::Lost));
    assert_eq!(cluster.live_pods(), ids("0-1,3"));
    let job = cluster.sim().job("flux", &cluster.spec().name).unwrap();
    assert_eq!(job["status"]["completedIndexes"], "2");

    resize(&mut cluster, 4);
    assert_eq!(cluster.live_ranks(), ids("0-1,3-4"));
    resize(&mut cluster, 6);
    assert_eq!(cluster.live_ranks(), ids("0-1,3-6"));
    assert_eq!(cluster.live_pods(), ids("0-1,3-6"));
    assert!(cluster.pod_deletes().is_empty(), "no pod was deleted");
}

#[test]
fn downsize_with_a_bare_job_keeps_rank_two_drained_and_says_why() {
    let mut cluster = start(bare_job(4, 10));
    let bystanders = drain_two_and_resize_to_three(&mut cluster);
    assert_eq!(cluster.live_pods(), ids("0-3"), "nothing can remove pod 2");
    let (phase, why) = cluster.rank_status(2).unwrap();
    assert_eq!(phase, "drained");
    assert!(why.contains("no mechanism"), "{why}");
    let waiting = &cluster.status().unwrap()["plan"]["waiting"];
    assert!(
        waiting
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("rank 2:")),
        "{waiting}"
    );

    resize(&mut cluster, 4);
    assert_eq!(cluster.live_ranks(), ids("0-1,3-4"));
    resize(&mut cluster, 6);
    assert_eq!(cluster.live_ranks(), ids("0-1,3-6"));
    assert!(cluster.pod_deletes().is_empty());
    assert_eq!(deletes_of(&cluster, &bystanders), 0);
}
