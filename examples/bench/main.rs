//! fluxk8s benchmarks: reaction time, a drain storm, a 0→1,000 resize, planning at
//! 10,000 ranks, and what the module costs a real broker. Prints Markdown tables.
//!
//! ```text
//! FLUX_CORE_PREFIX=/opt/flux-core cargo run --release --example bench
//! ```
//!
//! Everything runs against the simulated API server on loopback, with the real engine
//! and Kubernetes driver and a fake Flux that follows the pods (tests/fault_world). The
//! broker lines need flux-core (`FLUX_CORE_PREFIX`) and are skipped without it;
//! `BENCH_IDLE_SECS` shortens the idle watch (default 60 s); `BENCH_SECTIONS=1,3` runs only
//! those sections.

#[path = "../../tests/common/flux.rs"]
mod flux_core;
#[path = "../../tests/fault_world/mod.rs"]
mod world;

mod broker;
mod planning;
mod reaction;
mod report;
mod resize;
mod storm;

use world::CallTimings;

/// Whether `BENCH_SECTIONS` (a comma-separated list; unset means all) names `section`.
fn wanted(section: &str) -> bool {
    std::env::var("BENCH_SECTIONS")
        .map_or(true, |list| list.split(',').any(|s| s.trim() == section))
}

fn main() {
    // Quiet: the engine and driver log every action, which would drown the tables.
    report::progress("start");
    report::machine();
    let mut big_calls = CallTimings::default();

    if wanted("1") {
        report::section("1. Reaction: drain event in the engine → DELETE at the API server");
        let reactions: Vec<_> = [10, 100, 1_000]
            .into_iter()
            .map(|ranks| reaction::run(ranks, 200, &mut big_calls))
            .collect();
        reaction::print(&reactions);
    }
    if wanted("2") {
        report::section("2. Drain storm: ranks 1-500 drained in one event");
        storm::print(&[
            storm::middle(&mut big_calls),
            storm::tail(&mut big_calls),
            storm::completing_workers(&mut big_calls),
        ]);
        storm::print_rate_limited(&storm::rate_limited());
    }
    if wanted("3") {
        report::section("3. Resize: grow 1 → 1,000 live ranks, then shrink back to 1");
        resize::print(&resize::run(&mut big_calls));
    }
    if wanted("4") {
        report::section("4. Planner: one Reconciler::plan on synthetic views");
        planning::print(&planning::run());
    }
    if wanted("5") {
        report::section("5. Broker cost");
        report::print_engine_calls(&big_calls);
        broker::print(broker::run().as_ref());
    }
}
