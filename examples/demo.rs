//! fluxk8s in a few seconds, with nothing to install: a simulated Kubernetes API server
//! and a simulated Flux instance, driven by the same engine and Kubernetes driver the
//! broker module runs.
//!
//! ```text
//! cargo run --example demo                      # the Downsize walkthrough
//! cargo run --example demo -- --scenario FILE   # your own scenario
//! cargo run --example demo -- --svg FILE        # also draw the timeline picture
//! ```
//!
//! It replays the scenario with fluxk8s (printing the timeline as it goes and checking
//! the scenario's `expect` lines), then replays the same steps by hand, the way people
//! resize today (drain in Flux, patch the MiniCluster size), and compares the two.
//! With `--svg FILE` it writes both runs' timelines as one SVG picture, one above the
//! other (the README's picture is `--svg docs/downsize.svg`).
//! The exit status is 0 when every expectation held, 1 when one did not, 2 on bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use fluxk8s::scenario::{
    Checkpoint, JobKind, Mode, Outcome, Script, play, quick_planner, timeline_svg,
};

const DEFAULT_SCENARIO: &str = include_str!("scenarios/downsize.txt");
const USAGE: &str = "usage: demo [--scenario FILE] [--svg FILE]";

/// What the command line asks for.
struct Args {
    script: Script,
    svg: Option<PathBuf>,
}

fn main() -> ExitCode {
    let Args { script, svg } = match parse_args(std::env::args().skip(1).collect()) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    println!("=== {} — with fluxk8s", script.title);
    let with = play(&script, Mode::Fluxk8s(quick_planner()), true);
    summarize(&with);

    let by_hand = match script.cluster.kind {
        JobKind::MiniCluster { .. } => {
            println!();
            println!(
                "=== {} — the same steps by hand (drain in Flux, patch the MiniCluster size)",
                script.title
            );
            let by_hand = play(&script, Mode::ByHand, true);
            if let Some(error) = &by_hand.error {
                println!("by-hand run stopped: {error}");
            }
            contrast(&with.checkpoints, &by_hand.checkpoints);
            Some(by_hand)
        }
        JobKind::BareJob => None,
    };

    println!();
    println!("{}", verdict(&script, &with, by_hand.as_ref()));
    if let Some(path) = svg {
        let by_hand = by_hand.as_ref().map(|outcome| &outcome.history);
        let picture = timeline_svg(&script.title, &with.history, by_hand);
        if let Err(err) = std::fs::write(&path, picture) {
            eprintln!("cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
        println!("timeline picture written to {}", path.display());
    }
    if with.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_args(args: Vec<String>) -> Result<Args, String> {
    let mut scenario = None;
    let mut svg = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let slot = match flag.as_str() {
            "--scenario" => &mut scenario,
            "--svg" => &mut svg,
            "--help" | "-h" => return Err(USAGE.to_owned()),
            _ => return Err(format!("unexpected argument {flag:?}\n{USAGE}")),
        };
        let value = rest
            .next()
            .ok_or_else(|| format!("{flag} needs a file\n{USAGE}"))?;
        if slot.replace(PathBuf::from(value)).is_some() {
            return Err(format!("{flag} given twice\n{USAGE}"));
        }
    }
    let script = match scenario {
        Some(file) => Script::load(&file)?,
        None => Script::parse(DEFAULT_SCENARIO).map_err(|e| format!("built-in scenario: {e}"))?,
    };
    Ok(Args { script, svg })
}

fn summarize(outcome: &Outcome) {
    println!();
    println!("final state:");
    for line in &outcome.final_state {
        println!("  {line}");
    }
    if let Some(error) = &outcome.error {
        println!("stopped: {error}");
    }
    for check in &outcome.checks {
        let mark = if check.passed { "ok  " } else { "FAIL" };
        println!(
            "  {mark} line {:>3}: {:<28} found {}",
            check.line, check.what, check.found
        );
    }
}

fn live_text(checkpoint: &Checkpoint) -> String {
    format!(
        "{} live ({}), size {}",
        checkpoint.live.len(),
        checkpoint.live,
        checkpoint
            .size
            .map_or_else(|| "?".to_owned(), |n| n.to_string())
    )
}

/// Side by side, after each `wait converged`.
fn contrast(with: &[Checkpoint], by_hand: &[Checkpoint]) {
    println!();
    println!(
        "{:<12} {:>5}  {:<32} by hand",
        "after line", "asked", "with fluxk8s"
    );
    for (ours, theirs) in with.iter().zip(by_hand) {
        let asked = ours.asked.map_or_else(|| "-".to_owned(), |n| n.to_string());
        println!(
            "{:<12} {asked:>5}  {:<32} {}",
            ours.line,
            live_text(ours),
            live_text(theirs)
        );
    }
}

/// The first point where the by-hand cluster did not have the size asked for.
fn by_hand_shortfall(by_hand: &Outcome) -> Option<&Checkpoint> {
    by_hand
        .checkpoints
        .iter()
        .find(|c| c.asked.is_some_and(|n| n as usize != c.live.len()))
}

fn verdict(script: &Script, with: &Outcome, by_hand: Option<&Outcome>) -> String {
    let total = with.checks.len();
    let mut line = match (&with.error, with.failures().count()) {
        (Some(error), _) => format!("FAIL: {}: {error}", script.title),
        (None, 0) => format!(
            "PASS: {}: all {total} expectations hold with fluxk8s",
            script.title
        ),
        (None, failed) => format!(
            "FAIL: {}: {failed} of {total} expectations failed with fluxk8s",
            script.title
        ),
    };
    if let Some(miss) = by_hand.and_then(by_hand_shortfall) {
        line.push_str(&format!(
            "; by hand the cluster had {} live ranks when {} were asked (after line {})",
            miss.live.len(),
            miss.asked.unwrap_or(0),
            miss.line
        ));
    }
    line
}
