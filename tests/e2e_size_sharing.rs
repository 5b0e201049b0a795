//! The real engine and driver against the simulated API server and Flux side: resizes
//! that change their mind (one drain-state request per change), and a size shared with
//! an HPA-like writer (followed both ways, never written back).

use std::time::Duration;

use fluxk8s::model::IdSet;
use fluxk8s::scenario::{NAMESPACE, World, default_sim, events_with_reason, test_planner};
use fluxk8s::sim::Verb;

const CONVERGE: Duration = Duration::from_secs(30);

fn live(world: &World) -> IdSet {
    world.flux().online().difference(&world.flux().drained())
}

#[test]
fn flapping_resizes_converge_with_no_failed_drain_request() {
    let sim = default_sim();
    let mut world = World::with_minicluster(sim.clone(), "flap", 4, 12, test_planner())
        .expect("the world starts");
    for round in 0..20 {
        world
            .request_size(if round % 2 == 0 { 12 } else { 4 })
            .expect("resize accepted");
        world.run_for(Duration::from_millis(300));
    }
    world.request_size(8).expect("resize accepted");
    let settled = world.run_until(CONVERGE, |w| {
        live(w).len() == 8 && w.kube_idle() && w.status()["in_flight"] == 0
    });
    assert!(settled, "never settled at 8: {:#}", world.status());
    let problems = world.status()["problems"].to_string();
    assert!(
        !problems.contains("drain rank(s)"),
        "a drain or undrain failed: {problems}"
    );
    let drains = world.flux_rpcs.get("resource.drain").copied().unwrap_or(0);
    let undrains = world
        .flux_rpcs
        .get("resource.undrain")
        .copied()
        .unwrap_or(0);
    eprintln!("21 resizes: {drains} drain and {undrains} undrain requests");
    assert!(
        drains + undrains <= 21,
        "more than one drain-state request per change of mind: {drains} + {undrains}"
    );
}

#[test]
fn an_hpa_like_writer_is_followed_both_ways_and_never_reverted() {
    let sim = default_sim();
    let mut world = World::with_minicluster(sim.clone(), "hpa", 4, 12, test_planner())
        .expect("the world starts");
    let patches_before = sim.requests().count(Verb::Patch, "miniclusters");
    for (followed, size) in [12, 4, 12, 6].into_iter().enumerate() {
        sim.set_minicluster_size(
            NAMESPACE,
            "hpa",
            i64::from(size),
            "horizontal-pod-autoscaler",
        )
        .expect("scaled");
        // Flux alone can show the size reached before the engine saw the change: wait
        // for the engine to have followed it too.
        let reached = world.run_until(CONVERGE, |w| {
            live(w).len() == size as usize
                && w.kube_idle()
                && w.status()["desired_size"] == size
                && events_with_reason(&sim, "SizeFollowed") == followed + 1
        });
        assert!(reached, "never reached {size}: {:#}", world.status());
    }
    world.run_for(Duration::from_secs(2));
    let status = world.status();
    assert_eq!(status["desired_size"], 6);
    assert_eq!(
        status["plan"]["size_set_by"]["manager"],
        "horizontal-pod-autoscaler"
    );
    assert!(
        world.flux().drained().iter().all(|k| k >= 6),
        "{}",
        world.flux().drained()
    );
    assert_eq!(
        sim.requests().count(Verb::Patch, "miniclusters"),
        patches_before,
        "fluxk8s wrote to the MiniCluster"
    );
    assert_eq!(events_with_reason(&sim, "SizeFollowed"), 4);
}
