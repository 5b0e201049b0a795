//! What the loaded module costs a real broker: resident memory before and after
//! `flux module load`, and what it does while nothing happens (wake-ups, stream replies,
//! API requests over an idle minute).

use std::path::Path;
use std::time::{Duration, Instant};

use fluxk8s::sim::MiniClusterSpec;
use serde_json::Value;

use crate::flux_core::{Scratch, flux_or_skip, flux_start, transcript};
use crate::report::{counts_text, requests_between};
use crate::world::{NS, sim};

pub struct BrokerCost {
    rss_before_kib: u64,
    rss_loaded_kib: u64,
    rss_after_idle_kib: u64,
    idle: Duration,
    wakeups: i64,
    journal_replies: i64,
    overlay_replies: i64,
    requests: String,
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

/// Runs a one-broker instance that loads the module against the sim, idles, and
/// reports; `None` without flux-core.
pub fn run() -> Option<BrokerCost> {
    let flux = flux_or_skip("broker cost")?;
    let idle_secs: u64 = std::env::var("BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let sim = sim();
    sim.create_minicluster(NS, &MiniClusterSpec::new("bench", 1, 1))
        .expect("MiniCluster created");
    let scratch = Scratch::new("bench-broker");
    let kubeconfig = scratch.path("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, NS)
        .expect("kubeconfig written");
    let synced = r#"import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["kubernetes"]["synced"] else 1)"#;
    let script = format!(
        r#"
        cd {dir}
        pid=$(flux getattr broker.pid)
        rss() {{ awk '/VmRSS/{{print $2}}' /proc/$pid/status > $1; }}
        sleep 1; rss rss-before
        flux module load $SO kubeconfig={kubeconfig} minicluster=bench namespace={NS}
        for i in $(seq 200); do
            flux module stats libfluxk8s > start.json
            if flux python -c '{synced}' start.json; then break; fi
            sleep 0.1
        done
        sleep 1
        rss rss-loaded
        flux module stats libfluxk8s > start.json
        touch idle-start
        sleep {idle_secs}
        flux module stats libfluxk8s > end.json
        touch idle-end
        rss rss-idle
        flux module remove libfluxk8s
        "#,
        dir = scratch.0.display(),
        kubeconfig = kubeconfig.display(),
    );
    let (idle_start, idle_end) = (scratch.path("idle-start"), scratch.path("idle-end"));
    let broker = std::thread::spawn(move || flux_start(&flux, 1, &script, &[]));
    let mut window: (Option<Instant>, Option<Instant>) = (None, None);
    while !broker.is_finished() {
        if window.0.is_none() && idle_start.exists() {
            window.0 = Some(Instant::now());
        }
        if window.1.is_none() && idle_end.exists() {
            window.1 = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = broker.join().expect("the broker thread");
    assert!(output.status.success(), "{}", transcript(&output));
    let (Some(from), Some(to)) = window else {
        panic!("the idle window was not seen: {}", transcript(&output));
    };
    let (start, end) = (
        read_json(&scratch.path("start.json")),
        read_json(&scratch.path("end.json")),
    );
    let delta = |pointer: &str| {
        let at = |v: &Value| v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
        at(&end) - at(&start)
    };
    Some(BrokerCost {
        rss_before_kib: read_kib(&scratch.path("rss-before")),
        rss_loaded_kib: read_kib(&scratch.path("rss-loaded")),
        rss_after_idle_kib: read_kib(&scratch.path("rss-idle")),
        idle: to - from,
        wakeups: delta("/counters/wakeups"),
        journal_replies: delta("/flux/journal/replies"),
        overlay_replies: delta("/flux/overlay/replies"),
        requests: counts_text(&requests_between(&sim.requests(), from, to)),
    })
}

pub fn print(cost: Option<&BrokerCost>) {
    let Some(c) = cost else {
        println!("\nReal broker: skipped (no flux-core; set FLUX_CORE_PREFIX).");
        return;
    };
    let added = c.rss_loaded_kib as i64 - c.rss_before_kib as i64;
    println!("\nReal broker (flux-core, one broker, module connected to the sim):\n");
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
}
