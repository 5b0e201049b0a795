//! fluxk8s benchmarks: reaction time, a drain storm of 5,000, a 0→10,000 resize,
//! planning at 10,000 ranks, what the module costs a real broker of 10 to 10,000 ranks,
//! and what the simulated server costs alone. Prints Markdown tables.
//!
//! ```text
//! FLUX_CORE_PREFIX=/opt/flux-core cargo run --release --example bench [-- SECTION...]
//! ```
//!
//! Everything runs against the simulated API server on loopback, with the real engine
//! and Kubernetes driver and the simulated Flux side (`SimFlux`), wired up by
//! `fluxk8s::scenario::World`. The broker lines need flux-core (`FLUX_CORE_PREFIX`) and
//! are skipped without it; `BENCH_IDLE_SECS` shortens the idle watch (default 60 s),
//! `BENCH_CYCLES` sets the resize cycles of the memory run (default 100, 0: none) and
//! `BENCH_SIZES` picks broker sizes (a comma list; default 10,100,1000,10000).
//! SECTION is one of `reaction`, `storm`, `resize`, `planner`, `broker`, `server`: only
//! those run (default: all).

mod broker;
mod measure;
mod planning;
mod reaction;
mod report;
mod resize;
mod server;
mod storm;

use fluxk8s::scenario::CallTimings;

/// Section names, for choosing some on the command line.
const SECTIONS: [&str; 6] = ["reaction", "storm", "resize", "planner", "broker", "server"];

fn main() {
    let chosen: Vec<String> = std::env::args().skip(1).collect();
    if let Some(unknown) = chosen.iter().find(|c| !SECTIONS.contains(&c.as_str())) {
        eprintln!(
            "bench: unknown section '{unknown}'; sections: {}",
            SECTIONS.join(", ")
        );
        std::process::exit(2);
    }
    let wanted = |section: &str| chosen.is_empty() || chosen.iter().any(|c| c == section);
    // Quiet: the engine and driver log every action, which would drown the tables.
    report::progress("start");
    report::machine();
    let mut big_calls = CallTimings::default();

    if wanted("reaction") {
        report::section("1. Reaction: drain event in the engine → DELETE at the API server");
        let reactions: Vec<_> = [10, 100, 1_000, 10_000]
            .into_iter()
            .map(|ranks| reaction::run(ranks, 200, &mut big_calls))
            .collect();
        reaction::print(&reactions);
    }

    if wanted("storm") {
        report::section("2. Drain storm: ranks 1-5,000 drained in one event");
        storm::print(&[
            storm::middle(&mut big_calls),
            storm::tail(&mut big_calls),
            storm::completing_workers(&mut big_calls),
        ]);
        storm::print_rate_limited(&storm::rate_limited());
    }

    if wanted("resize") {
        report::section("3. Resize: grow 1 → 10,000 live ranks, then shrink back to 1");
        resize::print(&resize::run(&mut big_calls));
    }

    if wanted("planner") {
        report::section("4. Planner: one Reconciler::plan on synthetic views");
        planning::print(&planning::run());
        planning::print_engine_costs(&planning::engine_costs());
    }

    if wanted("broker") || !big_calls.0.is_empty() {
        report::section("5. Broker cost");
        report::print_engine_calls(&big_calls);
    }
    if wanted("broker") {
        broker::print(&broker::run());
    }

    if wanted("server") {
        report::section("6. The simulated server alone: one request's cost as the pods grow");
        server::run();
    }
}
