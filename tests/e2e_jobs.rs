//! Shrinks with jobs running, end to end: the real engine and driver against the
//! simulated API server and a Flux side whose job-manager places jobs on ranks and tells
//! of them on `job-manager.events-journal`. A shrink takes idle ranks before busy ones,
//! busy ones whose jobs end soonest first, and retires a busy rank when its job ends.

use std::time::Duration;

use fluxk8s::model::IdSet;
use fluxk8s::scenario::{NAMESPACE, World, default_sim, test_planner};

const CONVERGE: Duration = Duration::from_secs(30);

fn ids(text: &str) -> IdSet {
    text.parse().unwrap()
}

/// Ranks online and not drained.
fn live(world: &World) -> IdSet {
    world.flux().online().difference(&world.flux().drained())
}

/// Runs until the engine has heard of the jobs on `busy`: a job started well before a
/// resize, as in life, not in the same instant (then it could not have been seen).
fn until_seen_busy(world: &mut World, busy: &str) {
    let seen = world.run_until(CONVERGE, |w| {
        w.engine().expect("fluxk8s is loaded").flux().busy() == &ids(busy)
    });
    assert!(
        seen,
        "the engine never saw {busy} busy: {:#}",
        world.status()
    );
}

/// The uid of the running pod of `job`'s index `index`.
fn pod_uid(world: &World, job: &str, index: u32) -> String {
    let pods = world.sim().pod_views(NAMESPACE, job);
    let running = pods.iter().find(|p| p.index == index && !p.terminating);
    running.map(|p| p.uid.clone()).unwrap_or_default()
}

#[test]
fn a_shrink_retires_an_idle_rank_and_leaves_the_job_on_the_highest_running() {
    let mut world = World::with_minicluster(default_sim(), "busy", 4, 4, test_planner())
        .expect("the world starts");
    let job = world
        .flux_mut()
        .run_job(&ids("3"), Some(3600.0))
        .expect("the job starts on rank 3");
    until_seen_busy(&mut world, "3");
    let pod_of_3 = pod_uid(&world, "busy", 3);
    world.request_size(3).expect("resize accepted");
    let settled = world.run_until(CONVERGE, |w| {
        live(w) == ids("0-1,3") && w.kube_idle() && w.status()["in_flight"] == 0
    });
    assert!(
        settled,
        "rank 2 was not the one retired: {:#}",
        world.status()
    );
    assert_eq!(
        world.flux().shut_down(),
        [2],
        "only the idle rank 2 was shut down"
    );
    let running: Vec<_> = world.flux().jobs().running().map(|(id, _)| id).collect();
    assert_eq!(running, [job], "the job still runs");
    assert_eq!(pod_uid(&world, "busy", 3), pod_of_3, "rank 3 kept its pod");
}

#[test]
fn a_shrink_that_needs_a_busy_rank_takes_the_soonest_ending_and_retires_it_when_free() {
    let mut world = World::with_minicluster(default_sim(), "ending", 4, 4, test_planner())
        .expect("the world starts");
    let long = world
        .flux_mut()
        .run_job(&ids("3"), Some(7200.0))
        .expect("a long job on 3");
    let short = world
        .flux_mut()
        .run_job(&ids("2"), Some(600.0))
        .expect("a short job on 2");
    until_seen_busy(&mut world, "2-3");
    world.request_size(2).expect("resize accepted");
    // Rank 1 is idle and goes at once; rank 2, whose job ends first, waits for it.
    let waiting = world.run_until(CONVERGE, |w| {
        w.flux().shut_down() == [1] && w.flux().drained() == ids("1-2") && w.kube_idle()
    });
    assert!(waiting, "not waiting on rank 2: {:#}", world.status());
    let said = world.rank_why(2).unwrap_or_default();
    assert!(
        said.starts_with("draining: busy (until ") && said.contains("waiting idle"),
        "{said}"
    );
    // Nothing more happens while the job runs: rank 2 stays up, rank 3 undrained.
    world.run_for(Duration::from_millis(500));
    assert_eq!(world.flux().shut_down(), [1]);
    assert_eq!(live(&world), ids("0,3"));

    assert!(world.flux_mut().end_job(short), "the short job ends");
    let retired = world.run_until(CONVERGE, |w| {
        w.flux().shut_down() == [1, 2] && w.kube_idle() && w.status()["in_flight"] == 0
    });
    assert!(
        retired,
        "rank 2 not retired once free: {:#}",
        world.status()
    );
    let running: Vec<_> = world.flux().jobs().running().map(|(id, _)| id).collect();
    assert_eq!(running, [long], "the long job on rank 3 was left alone");
    assert_eq!(live(&world), ids("0,3"));
}

#[test]
fn a_job_on_a_lost_rank_fails_and_frees_its_other_ranks_for_a_shrink() {
    let mut world = World::with_minicluster(default_sim(), "lostjob", 4, 4, test_planner())
        .expect("the world starts");
    world
        .flux_mut()
        .run_job(&ids("2-3"), None)
        .expect("a job on 2-3");
    until_seen_busy(&mut world, "2-3");
    world.crash_brokers(&ids("3"));
    let freed = world.run_until(CONVERGE, |w| {
        w.flux().jobs().running().next().is_none()
            && w.engine()
                .expect("fluxk8s is loaded")
                .flux()
                .busy()
                .is_empty()
    });
    assert!(
        freed,
        "the failed job still holds ranks: {:#}",
        world.status()
    );
    // Rank 2 is idle again, so a shrink takes it at once rather than waiting on a job.
    world.request_size(2).expect("resize accepted");
    // Index 2 is now the top one: the lower size itself retires it.
    let retired = world.run_until(CONVERGE, |w| {
        !w.flux().online().contains(2) && w.rank_why(2).unwrap_or_default().starts_with("retired")
    });
    assert!(retired, "rank 2 was not retired: {:#}", world.status());
}
