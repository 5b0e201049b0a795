//! Reaction: a retire request fed to the engine (the request handler's path, then a step)
//! until the pod's DELETE reaches the API server, against the bare DELETE round trip of a
//! kube client on the same server. The rank's broker is crashed first: a rank whose broker
//! is up leaves by a clean Flux-side shutdown, with no API call to time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxk8s::model::{IdSet, PodPhase};
use fluxk8s::planner::RankPhase;
use fluxk8s::sim::{IndexedJobSpec, SimCluster, Verb};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use crate::measure::{direct_client, ms, percentile, uid_guarded};
use fluxk8s::scenario::{CallTimings, NAMESPACE, World, default_sim};

pub struct Reaction {
    ranks: u32,
    reaction: Vec<Duration>,
    /// Client call to response.
    bare_round_trip: Vec<Duration>,
    /// Client call to the server receiving it.
    bare_one_way: Vec<Duration>,
}

/// A client that DELETEs directly, configured as the driver's (no kube retries).
struct BareClient {
    runtime: tokio::runtime::Runtime,
    pods: Api<Pod>,
    /// (name, uid) of pods still to delete.
    victims: Vec<(String, String)>,
}

impl BareClient {
    fn new(sim: &SimCluster, job: &str, count: u32) -> BareClient {
        let mut spec = IndexedJobSpec::new(job, count);
        spec.backoff_limit_per_index = Some(0);
        sim.create_job(NAMESPACE, &spec).expect("bare Job created");
        let running = sim.wait_for(Duration::from_secs(60), |s| {
            s.pod_views(NAMESPACE, job)
                .iter()
                .filter(|p| p.phase == PodPhase::Running)
                .count()
                == count as usize
        });
        assert!(running, "the bare Job's pods never ran");
        let (runtime, client) = direct_client(sim, NAMESPACE);
        let pods: Api<Pod> = Api::namespaced(client, NAMESPACE);
        let mut victims: Vec<(String, String)> = sim
            .pod_views(NAMESPACE, job)
            .into_iter()
            .map(|p| (p.name, p.uid))
            .collect();
        // Warm the connection, as the driver's is.
        let (name, _) = victims.last().expect("a pod").clone();
        runtime.block_on(pods.get(&name)).expect("warm-up get");
        victims.reverse();
        BareClient {
            runtime,
            pods,
            victims,
        }
    }

    /// One uid-guarded DELETE: (round trip, time until the server had it).
    fn delete_one(&mut self, sim: &SimCluster) -> (Duration, Duration) {
        let (name, uid) = self.victims.pop().expect("enough bare pods");
        let params = uid_guarded(uid);
        let sent = Instant::now();
        self.runtime
            .block_on(self.pods.delete(&name, &params))
            .expect("bare delete");
        let round_trip = sent.elapsed();
        let received = delete_received(sim, &name).expect("the server logged the delete");
        (round_trip, received - sent)
    }
}

/// When the server received the DELETE of pod `name`.
fn delete_received(sim: &SimCluster, name: &str) -> Option<Instant> {
    let suffix = format!("/pods/{name}");
    sim.requests()
        .records
        .iter()
        .find(|r| r.verb == Some(Verb::Delete) && r.path.ends_with(&suffix))
        .map(|r| r.received)
}

/// Ranks worth draining one by one: not rank 0, not the top one (draining the top rank
/// lowers the size instead), spread over the instance.
fn candidates(ranks: u32, wanted: usize) -> Vec<u32> {
    let all: Vec<u32> = (1..ranks.saturating_sub(1)).collect();
    let step = all.len().div_ceil(wanted.max(1)).max(1);
    all.into_iter().step_by(step).take(wanted).collect()
}

/// `samples` reactions at `ranks` ranks, in as many instances as it takes (a retired
/// index never comes back), each followed by a bare DELETE on the same server.
pub fn run(ranks: u32, samples: usize, calls: &mut CallTimings) -> Reaction {
    let mut result = Reaction {
        ranks,
        reaction: Vec::new(),
        bare_round_trip: Vec::new(),
        bare_one_way: Vec::new(),
    };
    while result.reaction.len() < samples {
        // A fresh server per instance, so every round starts from the same empty cluster.
        let sim: Arc<SimCluster> = default_sim();
        let ranks_now = candidates(ranks, samples - result.reaction.len());
        let mut bare = BareClient::new(&sim, "bare", ranks_now.len() as u32);
        let job = "react";
        let mut world = World::with_bare_job(sim.clone(), job, ranks, crate::storm::planner())
            .expect("the world starts");
        world.timings = CallTimings::default();
        for rank in ranks_now {
            let pod = sim
                .pod_views(NAMESPACE, job)
                .into_iter()
                .find(|p| p.index == rank && p.is_live())
                .expect("a live pod at the rank");
            // A rank whose broker is up leaves by a clean shutdown (no API call); the
            // DELETE path is a rank whose broker is down: crash it first, let fluxk8s
            // drain it as lost, then time the retire from request to DELETE.
            let one = IdSet::range(rank, rank);
            // Lost means seen up, then gone.
            let seen_up = world.run_until(Duration::from_secs(10), |w| {
                w.rank_phase(rank) == Some(RankPhase::Up)
            });
            assert!(seen_up, "rank {rank} never came up");
            // The status reads the views; the planner records a rank as seen up when it
            // plans with them, which a pass now makes sure of.
            world.step();
            world.crash_brokers(&one);
            let drained = world.run_until(Duration::from_secs(10), |w| {
                w.flux().drained().contains(rank) && w.kube_idle()
            });
            assert!(
                drained,
                "rank {rank} was not drained as lost: {:#}",
                world.status()
            );
            let fed = Instant::now();
            world.request_retire(&one).expect("retire accepted");
            let answered = world.run_until(Duration::from_secs(10), |w| w.kube_idle());
            let received = delete_received(&sim, &pod.name);
            let (true, Some(received)) = (answered, received) else {
                panic!("no DELETE for rank {rank}: {:#}", world.status());
            };
            result.reaction.push(received - fed);
            let (round_trip, one_way) = bare.delete_one(&sim);
            result.bare_round_trip.push(round_trip);
            result.bare_one_way.push(one_way);
            let gone = world.run_until(Duration::from_secs(10), |w| {
                !w.live_indexes().contains(rank) && w.kube_idle()
            });
            assert!(gone, "rank {rank}'s pod never went");
        }
        if ranks >= 1_000 {
            calls.merge(&world.timings);
        }
        crate::report::progress(&format!(
            "reaction at {ranks} ranks: {} samples",
            result.reaction.len()
        ));
    }
    result
}

pub fn print(results: &[Reaction]) {
    println!(
        "| ranks | samples | reaction p50 | reaction p99 | bare DELETE round trip p50 | p99 | \
         ratio p50 | ratio p99 | bare DELETE one way p50 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut met = true;
    for r in results {
        let (p50, p99) = (percentile(&r.reaction, 50.0), percentile(&r.reaction, 99.0));
        let (b50, b99) = (
            percentile(&r.bare_round_trip, 50.0),
            percentile(&r.bare_round_trip, 99.0),
        );
        let ratio50 = p50.as_secs_f64() / b50.as_secs_f64();
        let ratio99 = p99.as_secs_f64() / b99.as_secs_f64();
        met &= ratio50 <= 1.5 && ratio99 <= 1.5;
        println!(
            "| {} | {} | {} | {} | {} | {} | {ratio50:.2} | {ratio99:.2} | {} |",
            r.ranks,
            r.reaction.len(),
            ms(p50),
            ms(p99),
            ms(b50),
            ms(b99),
            ms(percentile(&r.bare_one_way, 50.0)),
        );
    }
    println!(
        "\nTarget ratio ≤ 1.5 at every size: {}",
        if met { "met" } else { "MISSED" }
    );
}
