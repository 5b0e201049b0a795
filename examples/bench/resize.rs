//! Resize: a MiniCluster grown from 1 to 10,000 live ranks and shrunk back, with SimFlux
//! bringing ranks online as their pods start and carrying out the drains.

use std::time::{Duration, Instant};

use crate::measure::ms;
use crate::report::{counts_text, requests_between};
use fluxk8s::scenario::{CallTimings, World, default_sim};

pub struct Phase {
    name: &'static str,
    wall: Duration,
    requests: String,
    flux_rpcs: String,
    commands: usize,
}

const MAX: u32 = 10_000;

fn phase(world: &mut World, name: &'static str, size: u32, done: impl Fn(&World) -> bool) -> Phase {
    crate::report::progress(name);
    let rpcs_before = world.flux_rpcs.clone();
    let commands_before = world.kube_log.len();
    let started = Instant::now();
    world.request_size(size).expect("resize accepted");
    let over = world.run_until(Duration::from_secs(300), |w| w.kube_idle() && done(w));
    assert!(over, "{name} never finished: {:#}", world.status());
    let wall = started.elapsed();
    world.time_status_requests();
    let rpcs = world
        .flux_rpcs
        .iter()
        .map(|(topic, n)| (topic, n - rpcs_before.get(topic).unwrap_or(&0)))
        .filter(|(_, n)| *n > 0)
        .map(|(topic, n)| format!("{topic}: {n}"))
        .collect::<Vec<_>>();
    Phase {
        name,
        wall,
        requests: counts_text(&requests_between(
            &world.sim().requests(),
            started,
            Instant::now(),
        )),
        flux_rpcs: if rpcs.is_empty() {
            "none".into()
        } else {
            rpcs.join(", ")
        },
        commands: world.kube_log.len() - commands_before,
    }
}

pub fn run(calls: &mut CallTimings) -> Vec<Phase> {
    let mut world = World::with_minicluster(default_sim(), "grow", 1, MAX, crate::storm::planner())
        .expect("the world starts");
    world.timings = CallTimings::default();
    let grow = phase(&mut world, "grow 1 → 10,000", MAX, |w| {
        w.flux().online().len() == MAX as usize
    });
    let shrink = phase(&mut world, "shrink 10,000 → 1", 1, |w| {
        w.flux().online().len() == 1 && w.live_indexes().len() == 1
    });
    calls.merge(&world.timings);
    vec![grow, shrink]
}

pub fn print(phases: &[Phase]) {
    println!(
        "| phase | wall time | driver commands | Flux RPCs | API requests (verb resource status: count) |"
    );
    println!("|---|---:|---:|---|---|");
    for p in phases {
        println!(
            "| {} | {} | {} | {} | {} |",
            p.name,
            ms(p.wall),
            p.commands,
            p.flux_rpcs,
            p.requests
        );
    }
    println!(
        "\nWall time includes the simulated kubelet (2 ms to start a pod, 5 ms to stop one) \
         and SimFlux following the pods."
    );
}
