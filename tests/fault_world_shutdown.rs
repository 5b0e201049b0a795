//! The fault world's brokers leave as flux-core brokers do: the one-way
//! `state-machine.post {"event":"shutdown"}` takes a broker offline at once (the engine
//! sees it before it steps again) and its container exits 0, so the pod succeeds and the
//! index completes. A drain storm in the middle of a Job then sends one shutdown per rank
//! and no Kubernetes request, however long the retry interval lasts.

use std::time::Duration;

use fluxk8s::model::{IdSet, PodPhase};
use fluxk8s::scenario::{NAMESPACE, World, default_sim, test_planner};
use fluxk8s::sim::Verb;

#[test]
fn drained_middle_ranks_go_offline_at_their_one_shutdown_and_their_indexes_complete() {
    let sim = default_sim();
    let mut world =
        World::with_bare_job(sim.clone(), "leave", 12, test_planner()).expect("the world starts");
    let drained: IdSet = "3-8".parse().expect("idset");
    let requests_before = sim.requests().len();

    world
        .admin_drain(&drained, "maintenance")
        .expect("flux resource drain");
    assert_eq!(world.flux_rpcs.get("state-machine.post"), Some(&6));
    let online = world
        .engine()
        .expect("fluxk8s is loaded")
        .flux()
        .rank_sets()
        .online
        .clone();
    assert!(
        online.intersection(&drained).is_empty(),
        "the engine saw every broker go offline within the step that shut it down: {online}"
    );

    let staying: IdSet = "0-2,9-11".parse().expect("idset");
    assert!(
        world.run_until(Duration::from_secs(20), |w| w.live_indexes() == staying
            && w.kube_idle()),
        "the drained pods never ended: {:#}",
        world.status()
    );
    // Twice the test planner's retry interval: a shutdown not seen to take effect would
    // have been sent again by now.
    world.run_for(Duration::from_secs(2));
    assert_eq!(
        world.flux_rpcs.get("state-machine.post"),
        Some(&6),
        "one shutdown per rank"
    );
    let pods = sim.pod_views(NAMESPACE, "leave");
    for rank in drained.iter() {
        let phases: Vec<PodPhase> = pods
            .iter()
            .filter(|pod| pod.index == rank)
            .map(|pod| pod.phase)
            .collect();
        assert_eq!(phases, [PodPhase::Succeeded], "rank {rank}: {pods:?}");
    }
    let job = sim.job(NAMESPACE, "leave").expect("the Job");
    assert_eq!(job["status"]["completedIndexes"], "3-8", "{job:#}");
    let log = sim.requests();
    let changes: Vec<_> = log.records[requests_before..]
        .iter()
        .filter(|r| !matches!(r.verb, Some(Verb::Get | Verb::List | Verb::Watch)))
        .collect();
    assert!(changes.is_empty(), "no Kubernetes change: {changes:?}");
}
