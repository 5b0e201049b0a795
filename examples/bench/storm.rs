//! Drain storms: ranks 1-5,000 drained in one journal event, on a bare Indexed Job (in the
//! middle, brokers shut down; the tail, the size lowered) and on a MiniCluster whose
//! workers complete (brokers shut down).

use std::time::{Duration, Instant};

use fluxk8s::model::{IdSet, KubeAction};
use fluxk8s::planner::PlannerConfig;
use fluxk8s::sim::Verb;

use crate::measure::ms;
use crate::report::{counts_text, requests_between, requests_since};
use fluxk8s::scenario::{CallTimings, World, default_sim};

/// The planner for benchmarks: the module's defaults, with the per-minute action limit
/// (20, not configurable in the module) and the grow/shrink cooldown out of the way, so
/// what is measured is fluxk8s, not its brakes.
pub fn planner() -> PlannerConfig {
    PlannerConfig {
        cooldown: 0.0,
        max_actions_per_minute: 100_000,
        ..PlannerConfig::default()
    }
}

pub struct Storm {
    name: &'static str,
    /// Drain fed → every command answered (or, without commands, the last pod ended).
    done: Duration,
    /// Drain fed → the last pod DELETE or size PATCH the API server received, if any.
    last_change: Option<Duration>,
    /// Drain fed → last broker shutdown sent, if any.
    last_shutdown: Option<Duration>,
    commands: String,
    flux_rpcs: String,
    requests: String,
    /// Requests in the second after it was all done.
    after: String,
}

const DRAINED: (u32, u32) = (1, 5_000);

/// The one-way request that tells a broker to shut down.
const SHUTDOWN_TOPIC: &str = "state-machine.post";

fn storm(
    name: &'static str,
    mut world: World,
    finished: impl Fn(&World) -> bool,
    calls: &mut CallTimings,
) -> Storm {
    crate::report::progress(&format!("storm: {name}: instance up"));
    let sim = world.sim().clone();
    world.timings = CallTimings::default();
    let rpcs_before = world.flux_rpcs.clone();
    let fed = world
        .admin_drain(&IdSet::range(DRAINED.0, DRAINED.1), "bench: storm")
        .expect("flux resource drain");
    let over = world.run_until(Duration::from_secs(120), |w| w.kube_idle() && finished(w));
    assert!(
        over,
        "{name}: the storm never settled: {:#}",
        world.status()
    );
    let done = fed.elapsed();
    let end = Instant::now();
    world.time_status_requests();
    world.run_for(Duration::from_secs(1));
    let log = sim.requests();
    let last_change = log
        .records
        .iter()
        .filter(|r| matches!(r.verb, Some(Verb::Delete | Verb::Patch)) && r.received >= fed)
        .map(|r| r.received - fed)
        .max();
    let last_shutdown = world
        .flux_rpc_last_sent
        .get(SHUTDOWN_TOPIC)
        .filter(|&&sent| sent >= fed)
        .map(|&sent| sent - fed);
    let deletes = world.commands(|a| matches!(a, KubeAction::DeletePod { .. }));
    let sizes: Vec<String> = world
        .kube_log
        .values()
        .filter_map(|(a, _)| match a {
            KubeAction::SetSize { size, .. } => Some(size.to_string()),
            _ => None,
        })
        .collect();
    let rpcs = world
        .flux_rpcs
        .iter()
        .map(|(topic, n)| format!("{topic}: {}", n - rpcs_before.get(topic).unwrap_or(&0)))
        .collect::<Vec<_>>()
        .join(", ");
    calls.merge(&world.timings);
    Storm {
        name,
        done,
        last_change,
        last_shutdown,
        commands: format!("{deletes} pod deletes, size set to [{}]", sizes.join(", ")),
        flux_rpcs: if rpcs.is_empty() { "none".into() } else { rpcs },
        requests: counts_text(&requests_between(&log, fed, end)),
        after: counts_text(&requests_since(&sim, end)),
    }
}

fn none_live(world: &World) -> bool {
    let live = world.live_indexes();
    (DRAINED.0..=DRAINED.1).all(|k| !live.contains(k))
}

/// 10,001 ranks, 1-5,000 drained: in the middle, below live ranks, so each broker (up) is
/// shut down and its exit 0 completes its index.
pub fn middle(calls: &mut CallTimings) -> Storm {
    let world = World::with_bare_job(default_sim(), "storm-mid", 10_001, planner())
        .expect("the world starts");
    storm(
        "bare Job, 10,001 ranks, drain 1-5,000 (middle)",
        world,
        none_live,
        calls,
    )
}

/// 5,001 ranks, 1-5,000 drained: the whole tail, so the size is lowered instead.
pub fn tail(calls: &mut CallTimings) -> Storm {
    let world = World::with_bare_job(default_sim(), "storm-tail", 5_001, planner())
        .expect("the world starts");
    storm(
        "bare Job, 5,001 ranks, drain 1-5,000 (tail)",
        world,
        none_live,
        calls,
    )
}

/// A MiniCluster with completeWorkers: the brokers are shut down and their pods
/// complete, without a Kubernetes request.
pub fn completing_workers(calls: &mut CallTimings) -> Storm {
    let world = World::with_minicluster(default_sim(), "storm-mc", 10_001, 10_001, planner())
        .expect("the world starts");
    storm(
        "MiniCluster (completeWorkers), 10,001 ranks, drain 1-5,000",
        world,
        none_live,
        calls,
    )
}

pub fn print(storms: &[Storm]) {
    for s in storms {
        println!("**{}**\n", s.name);
        println!("- wall time, drain fed → all done: {}", ms(s.done));
        if let Some(last) = s.last_change {
            println!("- drain fed → last DELETE or PATCH received: {}", ms(last));
        }
        if let Some(last) = s.last_shutdown {
            println!("- drain fed → last shutdown sent: {}", ms(last));
        }
        // The target bounds the requests fluxk8s sends (issue 17): the pods' ends after
        // them are the simulated kubelet's and Job controller's work.
        let (bounded, measured) = match (s.last_shutdown, s.last_change) {
            (Some(last), _) => (last, "every shutdown sent"),
            (None, Some(last)) => (last, "every API change received"),
            (None, None) => (s.done, "all done"),
        };
        println!("- engine commands to the driver: {}", s.commands);
        println!("- Flux RPCs: {}", s.flux_rpcs);
        println!(
            "- API requests (verb resource status: count): {}",
            s.requests
        );
        println!("- API requests in the idle second after: {}", s.after);
        let verdict = if bounded < Duration::from_secs(2) {
            "met"
        } else {
            "MISSED"
        };
        println!("- target < 2 s ({measured}): {verdict}\n");
    }
}

/// Removals (pod deletes and broker shutdowns) in the first 3 s of a middle storm with
/// the module's fixed limit of 20 per minute.
pub fn rate_limited() -> (usize, Duration) {
    let mut world = World::with_bare_job(
        default_sim(),
        "storm-limited",
        10_001,
        PlannerConfig {
            cooldown: 0.0,
            ..PlannerConfig::default()
        },
    )
    .expect("the world starts");
    let window = Duration::from_secs(3);
    world
        .admin_drain(&IdSet::range(DRAINED.0, DRAINED.1), "bench: storm")
        .expect("flux resource drain");
    world.run_for(window);
    let deletes = world.commands(|a| matches!(a, KubeAction::DeletePod { .. }));
    let shutdowns = world.flux_rpcs.get(SHUTDOWN_TOPIC).copied().unwrap_or(0);
    (deletes + shutdowns as usize, window)
}

pub fn print_rate_limited((removals, window): &(usize, Duration)) {
    println!(
        "With the module's default max-actions-per-minute = 20, the middle storm issues \
         {removals} removals in its first {} s, and as many per rolling minute after (the \
         module wakes itself when the window ends): the {} take about {} minutes. Raise \
         the setting to retire thousands of ranks at once.",
        window.as_secs(),
        DRAINED.1 - DRAINED.0 + 1,
        (DRAINED.1 - DRAINED.0 + 1).div_ceil((*removals).max(1) as u32)
    );
}
