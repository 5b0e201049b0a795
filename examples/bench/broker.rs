//! What the loaded module costs a real broker: a flux-core broker configured with 10,
//! 100, 1,000 and 10,000 ranks (rank 0 up, as a MiniCluster's leader is before its
//! workers start), the module loaded against the simulated API server with that many
//! pods at most. `broker.py`, run inside the broker, takes the module through a grow to
//! every rank (brokers that never start), plain status requests, a drain storm of the
//! middle half, the start-up-timeout drain of the rest, a shrink back to 1 and every
//! rank's detail; then, in a broker of 16, resize cycles 12 ↔ 4 for memory growth. The
//! module measures its own reactor callbacks (`callbacks` in its status); the simulator
//! logs every API request with the time it took to answer.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use fluxk8s::sim::{MiniClusterSpec, RequestLog};
use serde_json::Value;

use crate::measure::{clock_floor, ms, percentile};
use crate::report::{counts_text, progress, requests_between};
use fluxk8s::scenario::flux_core::{Scratch, flux_or_skip, leader_only_start, transcript};
use fluxk8s::scenario::{NAMESPACE, default_sim};

/// Configured ranks of each run: the broker's size and the MiniCluster's `maxSize`.
const SIZES: [u32; 4] = [10, 100, 1_000, 10_000];

/// The phases `broker.py` marks, in order.
const PHASES: [&str; 8] = [
    "idle", "grow", "status", "storm", "timeout", "shrink", "detail", "cycles",
];

/// The memory run: `maxSize`, and cycles of resize HIGH ↔ LOW (`BENCH_CYCLES`, default
/// 100).
const CYCLE_RANKS: u32 = 16;
const CYCLE_HIGH: u32 = 12;
const CYCLE_LOW: u32 = 4;

/// One broker run.
pub struct Run {
    ranks: u32,
    results: Value,
    /// Each phase's API requests, by verb, resource and status.
    requests: BTreeMap<&'static str, String>,
    /// Wall time of each phase as the bench saw its marks.
    walls: BTreeMap<&'static str, Duration>,
    /// The simulated server's own time per answered request (watches excluded).
    sim_cost: Vec<Duration>,
    /// The same idle, measured on a computation outside the broker.
    idle_control: Option<IdleControl>,
}

/// What this machine charges a computation for the memory it left idle: a plain status
/// of an engine of as many ranks, in the bench's own process (no broker, no Flux), timed
/// with the module's clock before an idle as long as the broker's and just after it.
struct IdleControl {
    idle: Duration,
    /// The least of five statuses before the idle.
    warm: Duration,
    first_after: Duration,
    again: Duration,
}

impl IdleControl {
    /// Runs beside the broker's idle window, on a thread of its own.
    fn beside(ranks: u32, idle: Duration) -> std::thread::JoinHandle<IdleControl> {
        std::thread::spawn(move || {
            let (engine, _) = crate::planning::synced_engine(ranks, false);
            let timed = |now: f64| {
                fluxk8s::flux::cpu_time_of(|| crate::planning::status_text(&engine, now))
                    .1
                    .unwrap_or_default()
            };
            let warm = (0..5)
                .map(|run| timed(2.0 + f64::from(run)))
                .min()
                .expect("five runs");
            std::thread::sleep(idle);
            IdleControl {
                idle,
                warm,
                first_after: timed(10.0),
                again: timed(10.5),
            }
        })
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The runs at every size, then the memory run; empty without flux-core.
pub fn run() -> Vec<Run> {
    if flux_or_skip("broker cost").is_none() {
        return Vec::new();
    }
    let idle_secs = env_number("BENCH_IDLE_SECS", 60);
    let cycles = env_number("BENCH_CYCLES", 100);
    // `BENCH_SIZES` (a comma list) picks some of the sizes, to look at one closely; empty,
    // none (the memory run alone).
    let sizes: Vec<u32> = match std::env::var("BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .filter(|n| !n.trim().is_empty())
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("BENCH_SIZES: a comma list of rank counts")
            })
            .collect(),
        Err(_) => SIZES.to_vec(),
    };
    let largest = sizes.iter().copied().max();
    let mut runs: Vec<Run> = sizes
        .into_iter()
        // The idle window once, in the largest broker.
        .map(|ranks| {
            let idle = if Some(ranks) == largest { idle_secs } else { 0 };
            one(ranks, idle, "")
        })
        .collect();
    if cycles > 0 {
        let plan = format!("{CYCLE_HIGH}:{CYCLE_LOW}:{cycles}");
        runs.push(one(CYCLE_RANKS, 0, &plan));
    }
    runs
}

/// One broker of `ranks`, idle for `idle_secs`, then either the work phases or, with
/// `cycles` ("HIGH:LOW:COUNT"), resize cycles.
fn one(ranks: u32, idle_secs: u64, cycles: &str) -> Run {
    progress(&format!("broker of {ranks} ranks {cycles}"));
    let flux = flux_or_skip("broker cost").expect("flux-core");
    let sim = default_sim();
    sim.create_minicluster(NAMESPACE, &MiniClusterSpec::new("bench", 1, ranks))
        .expect("MiniCluster created");
    let scratch = Scratch::new(&format!("bench-broker-{ranks}"));
    let kubeconfig = scratch.path("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, NAMESPACE)
        .expect("kubeconfig written");
    let script = scratch.path("broker.py");
    std::fs::write(&script, include_str!("broker.py")).expect("broker.py written");
    let load = format!(
        "kubeconfig={} minicluster=bench namespace={NAMESPACE} startup-timeout=30 cooldown=0 \
         max-grow-per-minute={ranks} max-actions-per-minute=100000",
        kubeconfig.display()
    );
    let mut command = leader_only_start(
        &flux,
        &scratch,
        ranks,
        idle_secs + 1_800,
        &format!("flux python {}", script.display()),
    );
    command
        .env("BENCH_DIR", &scratch.0)
        .env("BENCH_RANKS", ranks.to_string())
        .env("BENCH_IDLE_SECS", idle_secs.to_string())
        .env("BENCH_CYCLES", cycles)
        .env("BENCH_LOAD", load);
    let control =
        (idle_secs > 0).then(|| IdleControl::beside(ranks, Duration::from_secs(idle_secs)));
    let output = command.output().expect("run flux start");
    assert!(output.status.success(), "{}", transcript(&output));
    let log = sim.requests();
    let mut requests = BTreeMap::new();
    let mut walls = BTreeMap::new();
    let clocks = (Instant::now(), SystemTime::now());
    for phase in PHASES {
        let mark = |end| mark_instant(&scratch.path(&format!("{phase}-{end}")), clocks);
        if let (Some(from), Some(to)) = (mark("start"), mark("end")) {
            requests.insert(phase, counts_text(&requests_between(&log, from, to)));
            walls.insert(phase, to - from);
        }
    }
    Run {
        ranks,
        results: read_json(&scratch.path("results.json")),
        requests,
        walls,
        sim_cost: answer_times(&log),
        idle_control: control.map(|c| c.join().expect("the idle control ran")),
    }
}

/// When the script wrote the mark at `path` (its text: the wall clock in nanoseconds), as
/// the sim's request log counts time: `clocks` reads both clocks at one moment. A mark's
/// own time, not when someone saw the file: a request right after a mark stays after it.
fn mark_instant(path: &Path, (instant, wall): (Instant, SystemTime)) -> Option<Instant> {
    let text = std::fs::read_to_string(path).ok()?;
    let nanos: u64 = text.trim().parse().expect("a mark holds nanoseconds");
    let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
    let before_now = wall.duration_since(at).expect("a mark written before now");
    Some(instant - before_now)
}

/// How long the simulated server took to answer each request other than a watch.
fn answer_times(log: &RequestLog) -> Vec<Duration> {
    log.records
        .iter()
        .filter(|r| !r.query.contains("watch=true"))
        .map(|r| r.answered - r.received)
        .collect()
}

/// Milliseconds as the module writes them, as a duration.
fn millis(value: &Value) -> Duration {
    Duration::from_secs_f64(value.as_f64().unwrap_or(0.0) / 1e3)
}

fn seconds(value: &Value) -> String {
    ms(Duration::from_secs_f64(value.as_f64().unwrap_or(0.0)))
}

/// Mean CPU per call of `kind` within `phase`: (calls, mean).
fn phase_mean(run: &Run, phase: &str, kind: &str) -> Option<(u64, Duration)> {
    let figures = &run.results["phases"][phase];
    let at = |side: &str, field: &str| figures[side][kind][field].clone();
    let calls = at("callbacks_after", "calls").as_u64().unwrap_or(0)
        - at("callbacks_before", "calls").as_u64().unwrap_or(0);
    let total = millis(&at("callbacks_after", "cpu_ms_total"))
        .saturating_sub(millis(&at("callbacks_before", "cpu_ms_total")));
    (calls > 0).then(|| (calls, total.div_f64(calls as f64)))
}

fn kib(run: &Run, which: &str) -> i64 {
    run.results["rss_kib"][which].as_i64().unwrap_or(0)
}

pub fn print(runs: &[Run]) {
    if runs.is_empty() {
        println!("\nReal broker: skipped (no flux-core; set FLUX_CORE_PREFIX).");
        return;
    }
    let (sized, memory): (Vec<&Run>, Vec<&Run>) = runs
        .iter()
        .partition(|r| r.results["cycles"].as_array().is_none_or(Vec::is_empty));
    if !sized.is_empty() {
        print_sized(&sized);
    }
    for r in memory {
        print_memory(r);
    }
}

/// The table of the runs at each size, and each one's verdict on the 1 ms bound.
fn print_sized(sized: &[&Run]) {
    println!(
        "\nReal broker (flux-core, N configured ranks with rank 0 up; module against the \
         sim; startup-timeout 30 s):\n"
    );
    let header: Vec<String> = sized.iter().map(|r| format!("{} ranks", r.ranks)).collect();
    println!("| figure | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(sized.len()));
    let row = |name: &str, cell: &dyn Fn(&Run) -> String| {
        let cells: Vec<String> = sized.iter().map(|r| cell(r)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    let phase_field = |phase: &'static str, field: &'static str| {
        move |r: &Run| r.results["phases"][phase][field].to_string()
    };
    row("start-up: load → both views synced", &|r| {
        seconds(&r.results["startup_s"])
    });
    row("RSS added by the module (loaded, synced)", &|r| {
        format!("{} KiB", kib(r, "loaded") - kib(r, "before"))
    });
    row("RSS at the end, over before load", &|r| {
        format!("{} KiB", kib(r, "end") - kib(r, "before"))
    });
    row("grow 1 → N: wall", &|r| {
        seconds(&r.results["phases"]["grow"]["wall_s"])
    });
    row("grow: API requests", &|r| phase_requests(r, "grow"));
    row("driver report: mean CPU in the grow", &|r| {
        mean_text(phase_mean(r, "grow", "driver reports"))
    });
    row("plain status: bytes", &phase_field("status", "bytes"));
    row("plain status: mean CPU in the module", &|r| {
        mean_text(phase_mean(r, "status", "request handler"))
    });
    row("plain status: round trip p50 (client)", &|r| {
        seconds(&r.results["phases"]["status"]["round_trip_p50_s"])
    });
    row("storm: ranks drained", &|r| {
        r.results["phases"]["storm"]["ranks"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    });
    row("storm: actions issued", &phase_field("storm", "actions"));
    row("storm: drain → plan settled", &|r| {
        seconds(&r.results["phases"]["storm"]["settled_s"])
    });
    row("storm: API requests", &|r| phase_requests(r, "storm"));
    row("start-up timeout drain: API requests", &|r| {
        phase_requests(r, "timeout")
    });
    row("shrink N → 1: wall", &|r| {
        seconds(&r.results["phases"]["shrink"]["wall_s"])
    });
    row("shrink: API requests", &|r| phase_requests(r, "shrink"));
    row(
        "every rank's detail: pages",
        &phase_field("detail", "pages"),
    );
    row("detail: largest page", &|r| {
        format!(
            "{} bytes",
            r.results["phases"]["detail"]["largest_page_bytes"]
        )
    });
    row("detail: mean CPU per page", &|r| {
        mean_text(phase_mean(r, "detail", "request handler"))
    });
    row(
        "idle window: wall, wake-ups, stream replies, API requests",
        &|r| match r.walls.get("idle") {
            None => "-".to_owned(),
            Some(wall) => {
                let idle = &r.results["phases"]["idle"];
                format!(
                    "{:.0} s, {}, {}, {}",
                    wall.as_secs_f64(),
                    idle["wakeups"],
                    idle["journal_replies"].as_i64().unwrap_or(0)
                        + idle["overlay_replies"].as_i64().unwrap_or(0),
                    phase_requests(r, "idle")
                )
            }
        },
    );
    row("RSS after the idle window, over loaded", &|r| {
        if r.results["rss_kib"].get("after_idle").is_some() {
            format!("{} KiB", kib(r, "after_idle") - kib(r, "loaded"))
        } else {
            "-".to_owned()
        }
    });
    row("RSS in the idle window, each minute, over loaded", &|r| {
        match r.results["phases"]["idle"]["rss_kib_each_minute"].as_array() {
            Some(minutes) => minutes
                .iter()
                .map(|rss| format!("{:+}", rss.as_i64().unwrap_or(0) - kib(r, "loaded")))
                .collect::<Vec<_>>()
                .join(" "),
            None => "-".to_owned(),
        }
    });
    row("sim: its own time per answer p50 / p99 / max", &|r| {
        sim_cost_text(&r.sim_cost)
    });
    // The callbacks by kind, then the request handlers' by method.
    for (field, label) in [("callbacks", "callback"), ("requests", "request")] {
        let kinds: std::collections::BTreeSet<String> = sized
            .iter()
            .filter_map(|r| r.results[field].as_object())
            .flat_map(|c| c.keys().cloned())
            .collect();
        for kind in &kinds {
            row(&format!("longest {label}: {kind} (CPU)"), &|r| {
                let cost = &r.results[field][kind.as_str()];
                if cost.is_null() {
                    "-".to_owned()
                } else {
                    let over = match cost.get("calls_over_1ms") {
                        Some(over) => format!(", {over} over 1 ms"),
                        None => String::new(),
                    };
                    format!(
                        "{} ({} calls{over})",
                        ms(millis(&cost["cpu_ms_longest"])),
                        cost["calls"]
                    )
                }
            });
        }
    }
    row(
        "callbacks over 1 ms: at load, then by phase",
        &over_bound_by_phase,
    );
    for r in sized {
        print_longest(r);
        if let Some(control) = &r.idle_control {
            println!(
                "\nThe idle window beside work with no broker: a plain status of an engine of \
                 {} ranks in the bench's own process, on the module's clock, took {} before an \
                 idle of {} s, {} the first time after it and {} once more.",
                r.ranks,
                ms(control.warm),
                control.idle.as_secs(),
                ms(control.first_after),
                ms(control.again)
            );
        }
    }
    // As many samples as the largest run had callbacks, each about a quiet status's work.
    let callbacks = sized
        .iter()
        .filter_map(|r| r.results["callbacks"].as_object())
        .map(|c| c.values().filter_map(|k| k["calls"].as_u64()).sum::<u64>())
        .max()
        .unwrap_or(0);
    let floor = clock_floor(Duration::from_micros(100), callbacks.max(10_000) as usize);
    println!(
        "\nThe clock's floor: the same clock (this thread's CPU time) around a fixed \
         computation, {} times on this machine just after: median {}, longest {}, {} over 1 ms.",
        floor.runs,
        ms(floor.median),
        ms(floor.longest),
        floor.over_1ms
    );
}

fn phase_requests(run: &Run, phase: &str) -> String {
    run.requests
        .get(phase)
        .cloned()
        .unwrap_or_else(|| "-".to_owned())
}

fn mean_text(mean: Option<(u64, Duration)>) -> String {
    mean.map_or("-".to_owned(), |(calls, mean)| {
        format!("{} ({calls})", ms(mean))
    })
}

fn sim_cost_text(costs: &[Duration]) -> String {
    if costs.is_empty() {
        return "-".to_owned();
    }
    let longest = costs.iter().max().copied().unwrap_or_default();
    format!(
        "{} / {} / {} ({} requests)",
        ms(percentile(costs, 50.0)),
        ms(percentile(costs, 99.0)),
        ms(longest),
        costs.len()
    )
}

/// Callbacks of every kind over 1 ms: from the load to the first phase, then in each
/// phase, with the phase's longest callback where it raised the run's.
fn over_bound_by_phase(run: &Run) -> String {
    let over = |callbacks: &Value| -> u64 {
        callbacks.as_object().map_or(0, |kinds| {
            kinds
                .values()
                .filter_map(|k| k["calls_over_1ms"].as_u64())
                .sum()
        })
    };
    let mut parts = Vec::new();
    for phase in PHASES {
        let figures = &run.results["phases"][phase];
        if figures.is_null() {
            continue;
        }
        let (before, after) = (&figures["callbacks_before"], &figures["callbacks_after"]);
        if parts.is_empty() {
            parts.push(format!("load {}", over(before)));
        }
        let count = over(after) - over(before);
        let raised = after
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(kind, cost)| {
                let longest = millis(&cost["cpu_ms_longest"]);
                (longest > millis(&before[kind]["cpu_ms_longest"])).then_some(longest)
            });
        match raised.max().filter(|_| count > 0) {
            Some(longest) => parts.push(format!("{phase} {count} ({})", ms(longest))),
            None => parts.push(format!("{phase} {count}")),
        }
    }
    parts.join(", ")
}

/// The verdict on the 1 ms bound for one run.
fn print_longest(run: &Run) {
    let Some(callbacks) = run.results["callbacks"].as_object() else {
        return;
    };
    if let Some((kind, longest)) = callbacks
        .iter()
        .map(|(kind, cost)| (kind, millis(&cost["cpu_ms_longest"])))
        .max_by_key(|(_, longest)| *longest)
    {
        let verdict = if longest < fluxk8s::flux::CALLBACK_BOUND {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "\nLongest reactor callback at {} ranks (CPU): {kind}, {} (target < 1 ms: \
             {verdict})",
            run.ranks,
            ms(longest)
        );
    }
}

fn print_memory(run: &Run) {
    let rss: Vec<i64> = run.results["cycles"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let (Some(first), Some(last)) = (rss.first(), rss.last()) else {
        return;
    };
    let at = |i: usize| rss.get(i).copied().unwrap_or(*last);
    let per_cycle = |from: usize| (last - at(from)) as f64 / (rss.len() - 1 - from).max(1) as f64;
    println!(
        "\nMemory across {} resize cycles {CYCLE_HIGH} ↔ {CYCLE_LOW} (maxSize {CYCLE_RANKS}), \
         broker RSS after each: before load {} KiB, loaded {} KiB, after cycle 1 {first} KiB, \
         10 {} KiB, 50 {} KiB, last {last} KiB; {:.1} KiB per cycle over all, {:.1} KiB per \
         cycle over the second half. Requests: {}. Wall {:.1} s.",
        rss.len(),
        kib(run, "before"),
        kib(run, "loaded"),
        at(9),
        at(49),
        per_cycle(0),
        per_cycle(rss.len() / 2),
        phase_requests(run, "cycles"),
        run.walls.get("cycles").map_or(0.0, Duration::as_secs_f64)
    );
    print_longest(run);
}
