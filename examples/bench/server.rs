//! The simulated API server alone (`src/sim`): what one request costs it as the pod count
//! grows, so benchmarks of fluxk8s at 1,000 ranks measure fluxk8s rather than the
//! simulator.
//!
//! Per size: an Indexed Job of that many pods (create → all Running), uid-guarded pod
//! DELETEs by a kube client (as the driver sends them) while a pod watch is open, and a
//! MiniCluster scaled from 1 to that size and back through the scale subresource.

use std::time::{Duration, Instant};

use fluxk8s::model::PodPhase;
use fluxk8s::sim::{IndexedJobSpec, MiniClusterSpec, SimCluster, SimOptions};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, WatchParams};
use serde_json::json;

use crate::measure::{direct_client, ms, percentile, uid_guarded};

const NS: &str = "default";
const DELETES: usize = 200;
const WAIT: Duration = Duration::from_secs(300);

fn running(sim: &SimCluster, job: &str) -> usize {
    sim.pod_views(NS, job)
        .iter()
        .filter(|p| p.phase == PodPhase::Running && !p.terminating)
        .count()
}

fn at_size(pods: u32) {
    let sim = SimCluster::start(SimOptions::default()).expect("sim starts");
    let (runtime, client) = direct_client(&sim, NS);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), NS);

    // A pod watch stays open throughout, as the driver's does: every change fans out to it.
    let watch_api = pod_api.clone();
    let watch = runtime.spawn(async move {
        let stream = watch_api.watch(&WatchParams::default(), "0").await;
        let mut stream = stream.expect("watch opens").boxed();
        while stream.next().await.is_some() {}
    });
    runtime.block_on(async {
        while sim.open_watches() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });

    let started = Instant::now();
    let mut spec = IndexedJobSpec::new("bare", pods);
    spec.backoff_limit_per_index = Some(0);
    sim.create_job(NS, &spec).expect("Job created");
    let created = started.elapsed();
    assert!(sim.wait_for(WAIT, |s| running(s, "bare") == pods as usize));
    let all_running = started.elapsed();

    let mut victims: Vec<(String, String)> = sim
        .pod_views(NS, "bare")
        .into_iter()
        .map(|p| (p.name, p.uid))
        .collect();
    victims.truncate(DELETES.min(pods as usize));
    let mut round_trips = Vec::new();
    for (name, uid) in victims {
        let params = uid_guarded(uid);
        let sent = Instant::now();
        runtime
            .block_on(pod_api.delete(&name, &params))
            .expect("delete");
        round_trips.push(sent.elapsed());
    }

    let mut mc = MiniClusterSpec::new("mc", 1, pods);
    mc.complete_workers = false;
    sim.create_minicluster(NS, &mc)
        .expect("MiniCluster created");
    assert!(sim.wait_for(WAIT, |s| running(s, "mc") == 1));
    let mcs: Api<kube::core::DynamicObject> = Api::namespaced_with(
        client,
        NS,
        &kube::discovery::ApiResource {
            group: "flux-framework.org".into(),
            version: "v1alpha2".into(),
            api_version: "flux-framework.org/v1alpha2".into(),
            kind: "MiniCluster".into(),
            plural: "miniclusters".into(),
        },
    );
    let scale = |size: u32, done: &dyn Fn(&SimCluster) -> bool| {
        let patch = Patch::Merge(json!({"spec": {"replicas": size}}));
        let sent = Instant::now();
        runtime
            .block_on(mcs.patch_scale("mc", &PatchParams::default(), &patch))
            .expect("scale patch");
        let answered = sent.elapsed();
        assert!(sim.wait_for(WAIT, done));
        (answered, sent.elapsed())
    };
    let grow = scale(pods, &|s| running(s, "mc") == pods as usize);
    let shrink = scale(1, &|s| s.pod_views(NS, "mc").len() == 1);
    watch.abort();

    println!(
        "| {pods} | {} | {} | {} | {} | {} / {} | {} / {} |",
        ms(created),
        ms(all_running),
        ms(percentile(&round_trips, 50.0)),
        ms(percentile(&round_trips, 99.0)),
        ms(grow.0),
        ms(grow.1),
        ms(shrink.0),
        ms(shrink.1),
    );
}

pub fn run() {
    println!(
        "| pods | Job create answered | all Running | pod DELETE p50 | p99 | \
         scale 1 → pods: answered / all Running | scale back to 1: answered / pods gone |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for pods in [10, 100, 1_000] {
        at_size(pods);
    }
}
