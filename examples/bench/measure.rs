//! What the sections share: figures and a kube client that talks to the simulated server
//! directly.

use std::time::Duration;

use fluxk8s::sim::SimCluster;

/// Nearest-rank percentile of unsorted samples.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1e3)
}

/// A kube client on its own current-thread runtime, configured as the driver's (no kube
/// retries), for requests timed without fluxk8s in the way.
pub fn direct_client(sim: &SimCluster, namespace: &str) -> (tokio::runtime::Runtime, kube::Client) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = sim.kube_config(namespace);
    config.default_retry = false;
    let client = runtime
        .block_on(async { kube::Client::try_from(config) })
        .expect("client");
    (runtime, client)
}

/// Delete options with the uid precondition, as the driver sends them.
pub fn uid_guarded(uid: String) -> kube::api::DeleteParams {
    kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..kube::api::DeleteParams::default()
    }
}
