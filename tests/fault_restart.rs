//! A module reload in the middle of a retire: a new engine and driver (the old driver
//! stopped, its commands abandoned) learn the intent from Flux alone (the fluxk8s drain)
//! and finish the job, never deleting the pod a second time.
//!
//! A panic inside the driver worker is tested where its trigger is (`Command::Panic`,
//! which the module's `test-panic` request sends with `{"in": "worker"}` under
//! `FLUXK8S_TEST_PANIC`): tests/k8s_driver.rs
//! (`a_worker_panic_is_reported_and_the_driver_refuses_further_commands`) and
//! tests/broker_walkthrough.rs (`a_panic_in_the_kubernetes_worker_is_contained_and_reported`).

use std::time::Duration;

use fluxk8s::model::{IdSet, KubeAction};
use fluxk8s::scenario::{World, answered, default_sim, test_planner};
use fluxk8s::sim::Verb;

const CONVERGE: Duration = Duration::from_secs(20);

fn retired_for_good(world: &World, rank: u32) -> bool {
    !world.live_indexes().contains(rank)
        && !world.flux().online().contains(rank)
        && world.flux().drained().contains(rank)
}

#[test]
fn reload_while_the_delete_cannot_land_finishes_with_one_delete() {
    let sim = default_sim();
    let mut world =
        World::with_bare_job(sim.clone(), "reload-a", 4, test_planner()).expect("the world starts");
    sim.faults().forbid(Verb::Delete, "pods");
    world.crash_brokers(&"2".parse::<IdSet>().unwrap());
    world
        .request_retire(&"2".parse::<IdSet>().unwrap())
        .expect("retire accepted");
    let stuck = world.run_until(CONVERGE, |_| answered(&sim, Verb::Delete, "pods", 403) > 0);
    assert!(stuck, "the delete was never tried: {:#}", world.status());
    assert!(world.flux().drained().contains(2), "Flux holds the drain");

    world.reload_module().expect("the module reloads");
    sim.faults().allow(Verb::Delete, "pods");
    assert!(
        world.run_until(CONVERGE, |w| retired_for_good(w, 2) && w.kube_idle()),
        "the new module never finished the retire: {:#}",
        world.status()
    );
    assert_eq!(answered(&sim, Verb::Delete, "pods", 200), 1);
    assert_eq!(world.live_indexes(), "0-1,3".parse().unwrap());
    assert_eq!(
        world.commands(|a| matches!(a, KubeAction::DeletePod { .. })),
        2,
        "one delete from each engine, the new one planned from the Flux drain alone"
    );
}

#[test]
fn reload_after_the_delete_landed_but_before_its_answer_deletes_nothing_more() {
    let sim = default_sim();
    let mut world =
        World::with_bare_job(sim.clone(), "reload-b", 4, test_planner()).expect("the world starts");
    // Slow enough that the driver is still recording the Event, its last step, when
    // the module goes away.
    sim.faults().set_latency(Duration::from_millis(300));
    world.crash_brokers(&"1".parse::<IdSet>().unwrap());
    world
        .request_retire(&"1".parse::<IdSet>().unwrap())
        .expect("retire accepted");
    let landed = world.run_until(CONVERGE, |_| answered(&sim, Verb::Delete, "pods", 200) == 1);
    assert!(landed, "the delete never landed: {:#}", world.status());
    let unanswered = world.kube_log.values().any(|(action, outcome)| {
        matches!(action, KubeAction::DeletePod { .. }) && outcome.is_none()
    });
    assert!(
        unanswered,
        "the engine must not know yet: {:?}",
        world.kube_log
    );

    sim.faults().clear();
    world.reload_module().expect("the module reloads");
    assert!(
        world.run_until(CONVERGE, |w| retired_for_good(w, 1) && w.kube_idle()),
        "never settled: {:#}",
        world.status()
    );
    world.run_for(Duration::from_secs(2));
    assert_eq!(
        sim.requests().count(Verb::Delete, "pods"),
        1,
        "no second DELETE after the reload"
    );
    assert_eq!(
        world.commands(|a| matches!(a, KubeAction::DeletePod { .. })),
        1,
        "the new engine asked for nothing: {:?}",
        world.kube_log
    );
}
