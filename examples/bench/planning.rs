//! Planning cost: `Reconciler::plan` on synthetic views (every rank online, every pod
//! running), in four situations: nothing to do, 500 ranks drained in the middle, a
//! request to halve the size, and the pass after it; and, on the same views, what the module thread spends on
//! a driver report (a view with one pod changed, and its step) and on a plain status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxk8s::engine::Engine;
use fluxk8s::model::flux::JournalResponse;
use fluxk8s::model::{FluxView, IdSet, JobView, KubeView, PodPhase, PodView, Report};
use fluxk8s::planner::Reconciler;
use serde_json::{Value, json};

use crate::measure::{ms, percentile};

pub struct Planning {
    ranks: u32,
    situation: &'static str,
    actions: usize,
    times: Vec<Duration>,
}

const RUNS: usize = 10;

/// The journal of `ranks` brokers, every one online or (`starting`) only the leader.
fn journal(ranks: u32, drained: Option<(u32, u32)>, starting: bool) -> Vec<String> {
    let all = IdSet::range(0, ranks - 1).to_string();
    let online = if starting {
        "0".to_owned()
    } else {
        all.clone()
    };
    let mut events = vec![json!({"timestamp": 1.0, "name": "restart", "context": {
        "ranks": all, "online": online, "nodelist": format!("r-[0-{}]", ranks - 1),
    }})];
    if let Some((lo, hi)) = drained {
        events.push(json!({"timestamp": 2.0, "name": "drain", "context": {
            "idset": IdSet::range(lo, hi).to_string(), "reason": "maintenance",
        }}));
    }
    [json!({"events": events}), json!({"events": []})]
        .iter()
        .map(Value::to_string)
        .collect()
}

fn flux_view(ranks: u32, drained: Option<(u32, u32)>) -> FluxView {
    let mut view = FluxView::new();
    for payload in journal(ranks, drained, false) {
        let response = JournalResponse::parse(&payload).expect("payload parses");
        view.apply_journal(&response).expect("payload applies");
    }
    view
}

fn kube_view(ranks: u32) -> KubeView {
    KubeView::new(
        JobView {
            name: "r".into(),
            uid: "job-uid".into(),
            parallelism: ranks,
            completions: ranks,
            backoff_limit: 6,
            backoff_limit_per_index: Some(0),
            has_pod_failure_policy: false,
            completed_indexes: IdSet::new(),
            failed_indexes: IdSet::new(),
            active: ranks,
            succeeded: 0,
            failed: 0,
            size_manager: None,
            desired_size: None,
        },
        None,
        (0..ranks)
            .map(|k| PodView {
                name: format!("r-{k}-abcde"),
                uid: format!("uid-{k}"),
                index: k,
                phase: PodPhase::Running,
                ready: true,
                terminating: false,
            })
            .map(Arc::new)
            .collect(),
    )
}

/// Times `plan` on a fresh reconciler prepared by `prepare` (so every run decides).
fn measure(
    ranks: u32,
    situation: &'static str,
    flux: &FluxView,
    kube: &KubeView,
    prepare: impl Fn(&mut Reconciler),
) -> Planning {
    let mut times = Vec::with_capacity(RUNS);
    let mut actions = 0;
    for _ in 0..RUNS {
        let mut reconciler = Reconciler::new(crate::storm::planner());
        prepare(&mut reconciler);
        let started = Instant::now();
        actions = reconciler.plan(flux, Some(kube), 100.0).len();
        times.push(started.elapsed());
    }
    Planning {
        ranks,
        situation,
        actions,
        times,
    }
}

/// An engine synced with `ranks` brokers and their pods, every one up and running, or
/// with every worker starting (its pod pending, its broker not up yet), as in a grow;
/// and the pod view it was given.
pub fn synced_engine(ranks: u32, starting: bool) -> (Engine, KubeView) {
    let mut engine = Engine::new(crate::storm::planner(), false);
    for payload in journal(ranks, None, starting) {
        engine.journal(&payload, 1.0);
    }
    let mut kube = kube_view(ranks);
    if starting {
        kube.edit_pods(|pods| {
            for pod in pods.iter_mut().skip(1) {
                *pod = Arc::new(PodView {
                    phase: PodPhase::Pending,
                    ready: false,
                    ..PodView::clone(pod)
                });
            }
        });
    }
    engine.kube_report(Report::View(Box::new(kube.clone())), 1.0);
    engine.kube_report(Report::Synced, 1.0);
    engine.step(1.0);
    (engine, kube)
}

/// The module thread's share of a driver report and of a plain status, on a
/// [`synced_engine`].
pub struct EngineCost {
    ranks: u32,
    situation: &'static str,
    /// A view with one pod gone not ready, taken and planned on.
    report: Vec<Duration>,
    /// `Engine::status` serialized, as the status handler answers it.
    status: Vec<Duration>,
    /// The same status asked again at once, nothing changed between.
    status_again: Vec<Duration>,
    status_bytes: usize,
}

pub fn engine_costs() -> Vec<EngineCost> {
    [(1_000, false), (10_000, false), (10_000, true)]
        .into_iter()
        .map(|(ranks, starting)| {
            let (mut engine, kube) = synced_engine(ranks, starting);
            let mut cost = EngineCost {
                ranks,
                situation: if starting {
                    "workers starting"
                } else {
                    "all up"
                },
                report: Vec::with_capacity(RUNS),
                status: Vec::with_capacity(RUNS),
                status_again: Vec::with_capacity(RUNS),
                status_bytes: 0,
            };
            for run in 0..RUNS {
                // Pod `run` is replaced by a new running pod: a change the planner reads (a
                // readiness flip it would not plan on), and has nothing to do about.
                let mut view = kube.clone();
                view.edit_pods(|pods| {
                    pods[run] = Arc::new(PodView {
                        uid: format!("{}-again", pods[run].uid),
                        ..PodView::clone(&pods[run])
                    })
                });
                // The driver makes a view's pod index on its own thread before sending it.
                view.pod_index();
                let now = 2.0 + run as f64;
                let started = Instant::now();
                report_and_step(&mut engine, view, now);
                cost.report.push(started.elapsed());
                let started = Instant::now();
                let text = status_text(&engine, now);
                cost.status.push(started.elapsed());
                cost.status_bytes = text.len();
                let started = Instant::now();
                status_text(&engine, now + 0.5);
                cost.status_again.push(started.elapsed());
            }
            cost
        })
        .collect()
}

// Out of line, so that a profiler can count them (`--toggle-collect=*report_and_step`).
#[inline(never)]
fn report_and_step(engine: &mut Engine, view: KubeView, now: f64) {
    engine.kube_report(Report::View(Box::new(view)), now);
    engine.step(now);
}

#[inline(never)]
pub fn status_text(engine: &Engine, now: f64) -> String {
    serde_json::to_string(&engine.status(now, None)).expect("status encodes")
}

pub fn print_engine_costs(costs: &[EngineCost]) {
    println!(
        "\n| ranks | situation | driver report and step: median / max | plain status: median / max | the same status again: median / max | status bytes |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for c in costs {
        println!(
            "| {} | {} | {} / {} | {} / {} | {} / {} | {} |",
            c.ranks,
            c.situation,
            ms(percentile(&c.report, 50.0)),
            ms(*c.report.iter().max().expect("runs")),
            ms(percentile(&c.status, 50.0)),
            ms(*c.status.iter().max().expect("runs")),
            ms(percentile(&c.status_again, 50.0)),
            ms(*c.status_again.iter().max().expect("runs")),
            c.status_bytes
        );
    }
    println!(
        "\n{RUNS} of each, one engine per size, on one thread (wall time, not CPU). Each report \
         replaces one running pod with another. The status asked again half a second later, \
         with nothing changed, puts the kept assessment into words."
    );
}

pub fn run() -> Vec<Planning> {
    let mut results = Vec::new();
    for ranks in [1_000, 10_000] {
        let kube = kube_view(ranks);
        let steady = flux_view(ranks, None);
        results.push(measure(
            ranks,
            "steady: nothing to do",
            &steady,
            &kube,
            |_| {},
        ));
        let middle = (ranks / 10, ranks / 10 + 499);
        let drained = flux_view(ranks, Some(middle));
        results.push(measure(ranks, "500 ranks drained", &drained, &kube, |_| {}));
        results.push(measure(ranks, "resize to half", &steady, &kube, |r| {
            r.request_size(ranks / 2, &steady, Some(&kube), 99.0)
                .expect("resize accepted");
        }));
        // The pass after: half the ranks chosen to retire, their drains not seen yet.
        results.push(measure(
            ranks,
            "half retiring, next pass",
            &steady,
            &kube,
            |r| {
                r.request_size(ranks / 2, &steady, Some(&kube), 99.0)
                    .expect("resize accepted");
                r.plan(&steady, Some(&kube), 99.0);
            },
        ));
    }
    results
}

pub fn print(results: &[Planning]) {
    println!("| ranks | situation | actions | plan median | plan max |");
    println!("|---:|---|---:|---:|---:|");
    let mut met = true;
    for r in results {
        let max = *r.times.iter().max().expect("runs");
        if r.ranks == 10_000 {
            met &= max < Duration::from_millis(5);
        }
        println!(
            "| {} | {} | {} | {} | {} |",
            r.ranks,
            r.situation,
            r.actions,
            ms(percentile(&r.times, 50.0)),
            ms(max)
        );
    }
    println!(
        "\n{RUNS} runs each, a fresh Reconciler per run. Target < 5 ms at 10,000 ranks: {}",
        if met { "met" } else { "MISSED" }
    );
}
