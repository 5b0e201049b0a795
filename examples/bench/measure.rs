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

/// What the module's clock (this thread's CPU time) reads around the same fixed work,
/// done `runs` times: a floor under any "longest callback". On a virtual machine the
/// thread is also charged for what interrupts it (this kernel keeps no separate IRQ
/// time), so a rare sample of the same work reads several times its median.
pub struct ClockFloor {
    pub runs: usize,
    pub median: Duration,
    pub longest: Duration,
    pub over_1ms: usize,
}

/// Times a fixed computation of about `work` (calibrated first) `runs` times with the
/// clock the module's callback costs use.
pub fn clock_floor(work: Duration, runs: usize) -> ClockFloor {
    let table: Vec<u64> = (0..16_384u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9))
        .collect();
    let step = |rounds: u64| {
        let mut sum = 0u64;
        for i in 0..rounds {
            sum = sum.wrapping_add(table[(sum as usize ^ i as usize) & (table.len() - 1)]);
        }
        std::hint::black_box(sum)
    };
    let cpu = |rounds: u64| {
        fluxk8s::flux::cpu_time_of(|| step(rounds))
            .1
            .unwrap_or_default()
    };
    let mut rounds = 1_000u64;
    while cpu(rounds) < work {
        rounds *= 2;
    }
    let mut times: Vec<Duration> = (0..runs).map(|_| cpu(rounds)).collect();
    let over_1ms = times
        .iter()
        .filter(|t| **t > fluxk8s::flux::CALLBACK_BOUND)
        .count();
    times.sort();
    ClockFloor {
        runs,
        median: times[runs / 2],
        longest: times[runs - 1],
        over_1ms,
    }
}
