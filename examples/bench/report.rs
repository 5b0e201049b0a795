//! Figures and tables: percentiles, durations, request counts, the machine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::measure::ms;
use fluxk8s::sim::{RequestLog, SimCluster};

use fluxk8s::scenario::CallTimings;

/// A progress line on stderr, with the time since the bench started.
pub fn progress(what: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!("[{:7.1} s] {what}", start.elapsed().as_secs_f64());
}

pub fn section(title: &str) {
    progress(title);
    println!("\n### {title}\n");
}

/// Requests the server received in `[from, to)`, by verb, resource and status, e.g.
/// `delete pods 200: 500`.
pub fn requests_between(log: &RequestLog, from: Instant, to: Instant) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in log
        .records
        .iter()
        .filter(|r| r.received >= from && r.received < to)
    {
        let verb = record.verb.map_or("discovery", |v| v.as_str());
        let resource = record.resource.as_deref().unwrap_or(&record.path);
        *counts
            .entry(format!("{verb} {resource} {}", record.status))
            .or_default() += 1;
    }
    counts
}

/// `delete pods 200: 500, get pods 200: 500`; `none` when empty.
pub fn counts_text(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(what, n)| format!("{what}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Requests received from `from` on.
pub fn requests_since(sim: &SimCluster, from: Instant) -> BTreeMap<String, usize> {
    requests_between(
        &sim.requests(),
        from,
        Instant::now() + Duration::from_secs(3600),
    )
}

/// The machine the figures come from.
pub fn machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|kb| kb.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .map_or("unknown".to_owned(), |kb| {
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("## fluxk8s benchmarks\n");
    println!("- machine: {cpus} CPUs (nproc), {model}, {memory} memory");
    println!(
        "- build: {} profile",
        if cfg!(debug_assertions) {
            "debug (numbers are not representative)"
        } else {
            "release"
        }
    );
}

/// The longest single engine call of each kind, from the runs of 1,000 ranks and more.
pub fn print_engine_calls(timings: &CallTimings) {
    if timings.0.is_empty() {
        println!("Engine calls: none measured (sections 1 to 3 did not run).");
        return;
    }
    println!(
        "Engine calls of the 1,000- and 10,000-rank runs (each is what one reactor callback costs the broker; \
         `status` is the status request's work). CPU is the calling thread's own time; wall \
         also counts the time the bench's other threads (simulated server, driver) ran \
         instead:\n"
    );
    println!(
        "| call | calls | longest CPU | CPU over 1 ms | mean CPU | longest wall | mean wall |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (kind, stats) in &timings.0 {
        let calls = u32::try_from(stats.calls.max(1)).unwrap_or(u32::MAX);
        println!(
            "| {kind} | {} | {} | {} | {} | {} | {} |",
            stats.calls,
            ms(stats.longest_cpu),
            stats.over_bound_cpu,
            ms(stats.total_cpu / calls),
            ms(stats.longest),
            ms(stats.total / calls)
        );
    }
    if let Some((kind, longest)) = timings.longest_cpu() {
        let verdict = if longest < fluxk8s::flux::CALLBACK_BOUND {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "\nLongest engine call (CPU): {kind}, {} (target < 1 ms: {verdict})",
            ms(longest)
        );
    }
}
