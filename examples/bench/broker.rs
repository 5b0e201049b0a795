//! What the loaded module costs a real broker of 1,000 configured ranks (rank 0 up, as a
//! MiniCluster's leader is before its workers start): resident memory before and after
//! `flux module load`, what it does while nothing happens (wake-ups, stream replies, API
//! requests over an idle minute), and the CPU time of its reactor callbacks, as the
//! module measures them, through a grow to 1,000 ranks whose brokers never start, their
//! drain at the startup timeout, status requests, a shrink back to 1 and a status with
//! every rank's detail.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use fluxk8s::sim::MiniClusterSpec;
use serde_json::Value;

use crate::measure::ms;
use crate::report::{counts_text, requests_between};
use fluxk8s::scenario::flux_core::{Scratch, flux_or_skip, leader_only_start, transcript};
use fluxk8s::scenario::{NAMESPACE, default_sim};

/// Configured ranks: the broker's size and the MiniCluster's `maxSize`.
const RANKS: u32 = 1_000;

pub struct BrokerCost {
    rss_before_kib: u64,
    rss_loaded_kib: u64,
    rss_after_idle_kib: u64,
    idle: Duration,
    wakeups: i64,
    journal_replies: i64,
    overlay_replies: i64,
    requests: String,
    /// The module's own figures after the work: callback kind → (calls, longest, total).
    callbacks: BTreeMap<String, (u64, Duration, Duration)>,
    work: Duration,
    work_requests: String,
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_kib(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}: no VmRSS figure", path.display()))
}

/// Runs the instance, loads the module against the sim, idles, works, and reports;
/// `None` without flux-core.
pub fn run() -> Option<BrokerCost> {
    let flux = flux_or_skip("broker cost")?;
    let idle_secs: u64 = std::env::var("BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let sim = default_sim();
    sim.create_minicluster(NAMESPACE, &MiniClusterSpec::new("bench", 1, RANKS))
        .expect("MiniCluster created");
    let scratch = Scratch::new("bench-broker");
    let kubeconfig = scratch.path("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, NAMESPACE)
        .expect("kubeconfig written");
    let top = RANKS - 1;
    let script = format!(
        r#"
        cd {dir}
        pid=$(flux getattr broker.pid)
        rss() {{ awk '/VmRSS/{{print $2}}' /proc/$pid/status > $1; }}
        rpc() {{ flux python -c 'import flux,sys,json; print(flux.Flux().rpc(sys.argv[1], json.loads(sys.argv[2])).get_str())' "$@"; }}
        # Waits until the status satisfies a Python expression over it (`s`).
        until_status() {{
            for i in $(seq 600); do
                rpc libfluxk8s.status '{{}}' > status.json
                if flux python -c "import json,sys; s=json.load(open('status.json')); sys.exit(0 if ($1) else 1)"; then return 0; fi
                sleep 0.1
            done
            echo "status never showed: $1" >&2; cat status.json >&2; return 1
        }}
        sleep 1; rss rss-before
        flux module load $SO kubeconfig={kubeconfig} minicluster=bench namespace={NAMESPACE} \
            startup-timeout=2 cooldown=0 max-grow-per-minute={RANKS} max-actions-per-minute=100000
        until_status 's["kubernetes"]["synced"] and s["flux"]["synced"]'
        sleep 1
        rss rss-loaded
        flux module stats libfluxk8s > start.json
        touch idle-start
        sleep {idle_secs}
        flux module stats libfluxk8s > end.json
        touch idle-end
        rss rss-idle
        rpc libfluxk8s.resize '{{"size": {RANKS}}}'
        until_status 'sum(g["count"] for g in s["kubernetes"]["view"]["pods"] if g["phase"] == "Running") == {RANKS}'
        until_status 's["flux"]["drained"] == "1-{top}"'
        for i in $(seq 10); do rpc libfluxk8s.status '{{}}' > /dev/null; done
        rpc libfluxk8s.resize '{{"size": 1}}'
        until_status 'sum(g["count"] for g in s["kubernetes"]["view"]["pods"]) == 1 and not s["plan"]["pending"]'
        rpc libfluxk8s.status '{{"ranks": "0-{top}"}}' > /dev/null
        flux module stats libfluxk8s > work.json
        touch work-end
        flux module remove libfluxk8s
        "#,
        dir = scratch.0.display(),
        kubeconfig = kubeconfig.display(),
    );
    let marks = ["idle-start", "idle-end", "work-end"].map(|name| scratch.path(name));
    let mut broker = leader_only_start(&flux, &scratch, RANKS, idle_secs + 240, &script);
    let broker = std::thread::spawn(move || broker.output().expect("run flux start"));
    // When each mark appeared, as the sim's request log counts time.
    let mut seen: [Option<Instant>; 3] = [None; 3];
    while !broker.is_finished() {
        for (mark, at) in marks.iter().zip(seen.iter_mut()) {
            if at.is_none() && mark.exists() {
                *at = Some(Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = broker.join().expect("the broker thread");
    assert!(output.status.success(), "{}", transcript(&output));
    let [Some(from), Some(to), Some(worked)] = seen else {
        panic!(
            "the idle and work marks were not all seen: {}",
            transcript(&output)
        );
    };
    let (start, end, work) = (
        read_json(&scratch.path("start.json")),
        read_json(&scratch.path("end.json")),
        read_json(&scratch.path("work.json")),
    );
    let delta = |pointer: &str| {
        let at = |v: &Value| v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
        at(&end) - at(&start)
    };
    let millis = |v: &Value| Duration::from_secs_f64(v.as_f64().unwrap_or(0.0) / 1e3);
    let callbacks = work["callbacks"]
        .as_object()
        .expect("the module reports its callbacks")
        .iter()
        .map(|(kind, cost)| {
            let calls = cost["calls"].as_u64().unwrap_or(0);
            let figures = (
                calls,
                millis(&cost["cpu_ms_longest"]),
                millis(&cost["cpu_ms_total"]),
            );
            (kind.clone(), figures)
        })
        .collect();
    Some(BrokerCost {
        rss_before_kib: read_kib(&scratch.path("rss-before")),
        rss_loaded_kib: read_kib(&scratch.path("rss-loaded")),
        rss_after_idle_kib: read_kib(&scratch.path("rss-idle")),
        idle: to - from,
        wakeups: delta("/counters/wakeups"),
        journal_replies: delta("/flux/journal/replies"),
        overlay_replies: delta("/flux/overlay/replies"),
        requests: counts_text(&requests_between(&sim.requests(), from, to)),
        callbacks,
        work: worked - to,
        work_requests: counts_text(&requests_between(&sim.requests(), to, worked)),
    })
}

pub fn print(cost: Option<&BrokerCost>) {
    let Some(c) = cost else {
        println!("\nReal broker: skipped (no flux-core; set FLUX_CORE_PREFIX).");
        return;
    };
    let added = c.rss_loaded_kib as i64 - c.rss_before_kib as i64;
    println!(
        "\nReal broker (flux-core, 1,000 configured ranks with rank 0 up, module connected to \
         the sim):\n"
    );
    println!("| figure | value |");
    println!("|---|---:|");
    println!("| broker RSS before load | {} KiB |", c.rss_before_kib);
    println!(
        "| broker RSS loaded and synced | {} KiB |",
        c.rss_loaded_kib
    );
    println!("| RSS added by the module | {added} KiB |");
    println!(
        "| broker RSS after the idle window | {} KiB |",
        c.rss_after_idle_kib
    );
    let minutes = c.idle.as_secs_f64() / 60.0;
    println!("| idle window | {:.1} s |", c.idle.as_secs_f64());
    println!(
        "| module wake-ups in it | {} ({:.1}/min) |",
        c.wakeups,
        c.wakeups as f64 / minutes
    );
    println!("| journal stream replies in it | {} |", c.journal_replies);
    println!("| overlay stream replies in it | {} |", c.overlay_replies);
    println!("| API requests in it | {} |", c.requests);
    let polling = c.wakeups > 0 || c.journal_replies > 0 || c.requests != "none";
    println!(
        "\nNo periodic polling (no wake-up, reply or request while idle): {}",
        if polling { "MISSED" } else { "met" }
    );
    println!(
        "\nThe module's reactor callbacks at 1,000 ranks, in CPU time as the module measures \
         them (`callbacks` in its status), from loading through a grow to 1,000 (brokers \
         that never start, drained at the startup timeout), status requests, a shrink back \
         to 1 and a status with every rank's detail ({} of work; API requests: {}):\n",
        ms(c.work),
        c.work_requests
    );
    println!("| callback | calls | longest CPU | mean CPU |");
    println!("|---|---:|---:|---:|");
    for (kind, (calls, longest, total)) in &c.callbacks {
        let mean = total.div_f64((*calls).max(1) as f64);
        println!("| {kind} | {calls} | {} | {} |", ms(*longest), ms(mean));
    }
    if let Some((kind, (_, longest, _))) = c.callbacks.iter().max_by_key(|(_, (_, l, _))| *l) {
        let verdict = if *longest < Duration::from_millis(1) {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "\nLongest reactor callback in the broker (CPU): {kind}, {} (target < 1 ms: \
             {verdict})",
            ms(*longest)
        );
    }
}
