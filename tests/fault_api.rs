//! Faults of the Kubernetes API server, with the real engine and driver against the sim
//! and the simulated Flux side following the pods: an outage in the middle of a resize, conflicts,
//! missing permissions, bursts of server errors, dropped watches, and a slow server.
//! Each test checks the intent survives, the status says what is wrong, the work
//! converges once the fault ends, and the request log shows nothing done twice.

use std::time::{Duration, Instant};

use fluxk8s::model::{IdSet, KubeAction, Retry};
use fluxk8s::planner::PlannerConfig;
use fluxk8s::scenario::{
    ALL_VERBS, World, answered, api_down, default_sim, events_with_reason, test_planner,
};
use fluxk8s::sim::Verb;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(20);

fn ids(text: &str) -> IdSet {
    text.parse().expect("idset")
}

/// The Kubernetes problems the engine's status lists.
fn kube_problems(world: &World) -> Vec<Value> {
    world.status()["kubernetes"]["problems"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Live pods and Flux both show exactly `live` running.
fn converged_to(world: &World, live: &IdSet) -> bool {
    &world.live_indexes() == live && &world.flux().online() == live
}

/// Converged, every driver command answered, and no Kubernetes problem left.
fn recovered(world: &World, live: &IdSet) -> bool {
    converged_to(world, live) && world.kube_idle() && kube_problems(world).is_empty()
}

/// Requests a grow while the API server is down for 30 s, checks the engine keeps the
/// intent and says why it waits, then lets the server back and waits until everything
/// settled (every driver command answered).
fn grow_through_a_30s_outage(
    retry_interval: f64,
) -> (World, std::sync::Arc<fluxk8s::sim::SimCluster>) {
    let sim = default_sim();
    // The module's planner settings, but for the retry interval under test.
    let planner = PlannerConfig {
        cooldown: 0.0,
        retry_interval,
        ..PlannerConfig::default()
    };
    let mut world =
        World::with_minicluster(sim.clone(), "down", 2, 6, planner).expect("the world starts");
    api_down(&sim);
    let answer = world.request_size(6).expect("resize accepted");
    assert_eq!(answer.target, 6, "{answer:?}");

    let outage = Instant::now();
    let waiting = world.run_until(Duration::from_secs(10), |w| {
        kube_problems(w)
            .iter()
            .any(|p| p["area"].as_str().is_some_and(|a| a.starts_with("command")))
    });
    assert!(
        waiting,
        "no Kubernetes problem reported: {:#}",
        world.status()
    );
    world.run_until(Duration::from_secs(30), |_| {
        outage.elapsed() >= Duration::from_secs(30)
    });
    let status = world.status();
    assert_eq!(status["desired_size"], 6, "the intent is kept: {status:#}");
    let problems = kube_problems(&world);
    assert!(
        problems
            .iter()
            .all(|p| p["retrying_in"].is_number() && p["forbidden"] == false),
        "every problem is being retried: {problems:#?}"
    );
    assert!(
        problems.iter().any(|p| p["what"]
            .as_str()
            .is_some_and(|w| w.contains("503") || w.contains("unavailable"))),
        "the status says the server is unavailable: {problems:#?}"
    );
    assert!(
        answered(&sim, Verb::Patch, "miniclusters", 503) > 0,
        "the resize was attempted during the outage"
    );
    assert_eq!(answered(&sim, Verb::Patch, "miniclusters", 200), 0);

    sim.faults().clear();
    let all = ids("0-5");
    assert!(
        world.run_until(CONVERGE, |w| recovered(w, &all)),
        "never converged after the outage: {:#}",
        world.status()
    );
    (world, sim)
}

/// Nothing done twice: one size command, one patch landed, one Event.
fn resized_once(world: &World, sim: &fluxk8s::sim::SimCluster) {
    assert_eq!(
        world.commands(|a| matches!(a, KubeAction::SetSize { .. })),
        1,
        "the engine asked once: {:?}",
        world.kube_log
    );
    assert_eq!(
        answered(sim, Verb::Patch, "miniclusters", 200),
        1,
        "exactly one resize landed"
    );
    assert_eq!(events_with_reason(sim, "Resized"), 1);
    assert_eq!(answered(sim, Verb::Delete, "pods", 200), 0);
}

#[test]
fn api_down_30s_in_a_resize_keeps_the_intent_and_converges_once() {
    // A retry interval longer than the outage: the engine's own re-issue stays out.
    let (world, sim) = grow_through_a_30s_outage(120.0);
    resized_once(&world, &sim);
}

/// With the module's own 30 s retry interval, an outage that long must not make the
/// planner issue the resize again while the driver still retries the first one (it did:
/// the driver then patched twice and recorded two Events).
#[test]
fn api_down_for_the_whole_retry_interval_does_not_repeat_the_resize() {
    let (world, sim) = grow_through_a_30s_outage(PlannerConfig::default().retry_interval);
    resized_once(&world, &sim);
}

#[test]
fn conflicts_409_are_re_planned_and_each_change_lands_once() {
    let sim = default_sim();
    let mut world =
        World::with_bare_job(sim.clone(), "conflict", 4, test_planner()).expect("the world starts");
    sim.faults().fail_next(&[Verb::Delete], "pods", 1, 409);
    world.crash_brokers(&ids("2"));
    world.request_retire(&ids("2")).expect("retire accepted");
    let live = ids("0-1,3");
    assert!(
        world.run_until(CONVERGE, |w| converged_to(w, &live) && w.kube_idle()),
        "retire never finished: {:#}",
        world.status()
    );
    assert_eq!(answered(&sim, Verb::Delete, "pods", 409), 1);
    assert_eq!(
        answered(&sim, Verb::Delete, "pods", 200),
        1,
        "one delete landed"
    );
    let failed_first = world
        .kube_log
        .values()
        .filter(|(a, outcome)| {
            matches!(a, KubeAction::DeletePod { .. })
                && matches!(
                    outcome,
                    Some(fluxk8s::k8s::Outcome::Retryable(Retry::Conflict(_)))
                )
        })
        .count();
    assert_eq!(
        failed_first, 1,
        "the conflict came back as a failure: {:?}",
        world.kube_log
    );
    let problems = world.status()["problems"].to_string();
    assert!(
        problems.contains("409") || problems.contains("modified"),
        "{problems}"
    );

    // Conflicts on a Job patch (its parallelism, or the desired-size annotation).
    sim.faults().fail_next(&[Verb::Patch], "jobs", 1, 409);
    let patches_before = answered(&sim, Verb::Patch, "jobs", 200);
    world.request_size(2).expect("resize accepted");
    let shrunk = world.run_until(CONVERGE, |w| w.flux().online().len() == 2 && w.kube_idle());
    assert!(shrunk, "shrink never finished: {:#}", world.status());
    assert_eq!(answered(&sim, Verb::Patch, "jobs", 409), 1);
    let landed = answered(&sim, Verb::Patch, "jobs", 200) - patches_before;
    assert!(landed >= 1, "the shrink landed");
    // The Job is patched for the size and for the desired-size annotation.
    let job_patches = world.commands(|a| {
        matches!(
            a,
            KubeAction::SetSize { .. } | KubeAction::RecordDesiredSize { .. }
        )
    });
    assert_eq!(
        landed + 1,
        job_patches,
        "every patch command sent one successful patch, the conflicting one none"
    );
}

#[test]
fn forbidden_403_names_the_missing_permission_until_rbac_allows_it() {
    let sim = default_sim();
    let mut world =
        World::with_bare_job(sim.clone(), "rbac", 4, test_planner()).expect("the world starts");
    sim.faults().forbid(Verb::Delete, "pods");
    world.crash_brokers(&ids("2"));
    world.request_retire(&ids("2")).expect("retire accepted");
    let named = world.run_until(CONVERGE, |w| {
        kube_problems(w).iter().any(|p| {
            p["forbidden"] == true
                && p["what"]
                    .as_str()
                    .is_some_and(|what| what.contains("delete") && what.contains("pods"))
        })
    });
    assert!(named, "no 403 naming delete pods: {:#}", world.status());
    assert_eq!(
        world.live_indexes(),
        ids("0-3"),
        "nothing deleted while forbidden"
    );

    sim.faults().allow(Verb::Delete, "pods");
    let live = ids("0-1,3");
    assert!(
        world.run_until(CONVERGE, |w| recovered(w, &live)),
        "never recovered: {:#}",
        world.status()
    );
    assert!(answered(&sim, Verb::Delete, "pods", 403) >= 1);
    assert_eq!(answered(&sim, Verb::Delete, "pods", 200), 1);
    assert_eq!(events_with_reason(&sim, "RetiredRank"), 1);
}

#[test]
fn bursts_of_5xx_are_retried_and_each_change_lands_once() {
    let sim = default_sim();
    let mut world =
        World::with_bare_job(sim.clone(), "burst", 6, test_planner()).expect("the world starts");
    for (resource, code) in [("pods", 500), ("jobs", 503), ("events", 500)] {
        sim.faults().fail_next(&ALL_VERBS, resource, 6, code);
    }
    world.crash_brokers(&ids("2,4"));
    world.request_retire(&ids("2,4")).expect("retire accepted");
    let live = ids("0-1,3,5");
    assert!(
        world.run_until(CONVERGE, |w| converged_to(w, &live) && w.kube_idle()),
        "never converged: {:#}",
        world.status()
    );
    assert_eq!(
        answered(&sim, Verb::Delete, "pods", 200),
        2,
        "one delete per retired rank"
    );
    assert_eq!(
        world.commands(|a| matches!(a, KubeAction::DeletePod { .. })),
        2,
        "each rank commanded once: {:?}",
        world.kube_log
    );
    let pod_failures = ALL_VERBS
        .iter()
        .map(|&verb| answered(&sim, verb, "pods", 500))
        .sum::<usize>();
    assert_eq!(
        pod_failures, 6,
        "every injected pod failure was met, and got past"
    );
}

#[test]
fn dropped_watches_and_expired_history_during_a_grow_do_not_repeat_it() {
    let sim = default_sim();
    let mut world = World::with_minicluster(sim.clone(), "watch", 2, 8, test_planner())
        .expect("the world starts");
    world.request_size(8).expect("resize accepted");
    for round in 0..10 {
        sim.faults().drop_watches();
        if round == 5 {
            sim.faults().expire_history();
        }
        world.run_for(Duration::from_millis(30));
    }
    let all = ids("0-7");
    assert!(
        world.run_until(CONVERGE, |w| converged_to(w, &all) && w.kube_idle()),
        "never converged: {:#}",
        world.status()
    );
    assert_eq!(answered(&sim, Verb::Patch, "miniclusters", 200), 1);
    assert_eq!(events_with_reason(&sim, "Resized"), 1);
    assert!(
        sim.requests().count(Verb::Watch, "pods") > 2,
        "the pod watch was re-opened"
    );
}

#[test]
fn a_one_second_api_latency_never_slows_an_engine_call() {
    const LATENCY: Duration = Duration::from_secs(1);
    let sim = default_sim();
    let mut world =
        World::with_bare_job(sim.clone(), "slow", 4, test_planner()).expect("the world starts");
    sim.faults().set_latency(LATENCY);
    world.timings = Default::default();
    let started = Instant::now();
    world.crash_brokers(&ids("1"));
    world.request_retire(&ids("1")).expect("retire accepted");
    let live = ids("0,2-3");
    assert!(
        world.run_until(CONVERGE, |w| converged_to(w, &live) && w.kube_idle()),
        "never converged: {:#}",
        world.status()
    );
    // A get and a delete at least, each a second late.
    assert!(started.elapsed() >= 2 * LATENCY);
    // What a call costs the reactor is its CPU time: wall time on a loaded machine also
    // counts the other threads that ran meanwhile.
    let (kind, cpu) = world.timings.longest_cpu().expect("engine calls were made");
    assert!(
        cpu < Duration::from_millis(10),
        "engine call {kind} took {cpu:?} of CPU: {:?}",
        world.timings
    );
    // A call that waited on the API server (which costs no CPU) would take a latency.
    let (kind, wall) = world.timings.longest().expect("engine calls were made");
    assert!(
        wall < LATENCY,
        "engine call {kind} took {wall:?}, as long as a request: {:?}",
        world.timings
    );
    assert!(
        world.timings.0["step"].calls > 10,
        "the engine kept stepping"
    );
    assert_eq!(answered(&sim, Verb::Delete, "pods", 200), 1);
}

#[test]
fn a_delete_refused_422_is_not_issued_again_and_the_status_says_why() {
    let sim = default_sim();
    let mut world =
        World::with_bare_job(sim.clone(), "invalid", 4, test_planner()).expect("the world starts");
    sim.faults().fail_next(&[Verb::Delete], "pods", 1, 422);
    world.crash_brokers(&ids("2"));
    world
        .request_retire(&ids("2"))
        .expect("the retire is taken");
    let refused = |w: &World| {
        w.status()["plan"]["refused"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    };
    assert!(
        world.run_until(CONVERGE, refused),
        "the refusal never showed: {:#}",
        world.status()
    );
    // Many retry intervals (1 s here) later, from the same views: not issued again.
    world.run_for(Duration::from_secs(3));
    assert_eq!(answered(&sim, Verb::Delete, "pods", 422), 1);
    assert_eq!(
        answered(&sim, Verb::Delete, "pods", 200),
        0,
        "nothing deleted"
    );
    assert_eq!(
        world.commands(|a| matches!(a, KubeAction::DeletePod { .. })),
        1,
        "the engine asked once: {:?}",
        world.kube_log
    );
    let status = world.status();
    let refusal = &status["plan"]["refused"][0];
    assert_eq!(refusal["refusal"], "invalid", "{status:#}");
    let why = refusal["why"].as_str().unwrap_or_default();
    assert!(why.starts_with("invalid: HTTP 422"), "{why}");
    assert!(
        refusal["action"]["Kube"]["DeletePod"]["index"] == 2,
        "{refusal:#}"
    );
    let pending = status["plan"]["pending"].to_string();
    assert!(
        !pending.contains("DeletePod"),
        "refused, so not pending: {pending}"
    );
}
