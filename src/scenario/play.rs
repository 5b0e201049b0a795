//! Running a [`Script`]: with fluxk8s, checking its `expect` lines; or by hand, replaying
//! the same steps the way people resize today, for contrast.

use super::cluster::{Cluster, Mode};
use super::picture::or_dash;
use super::script::{Command, Expectation, Script, Step};
use super::world::RunError;
use crate::model::IdSet;
use crate::model::history::History;

/// One `expect` line and how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub line: usize,
    /// The `expect` line as written.
    pub what: String,
    pub passed: bool,
    /// What was found.
    pub found: String,
}

/// The state after a `wait converged`, to compare runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub line: usize,
    /// The size last asked for (by `resize`/`app-request`, lowered by `retire`).
    pub asked: Option<u32>,
    pub live: IdSet,
    /// The size asked of Kubernetes.
    pub size: Option<u32>,
}

/// How a run went.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub checks: Vec<Check>,
    pub checkpoints: Vec<Checkpoint>,
    /// The step that could not be carried out (the run stopped there).
    pub error: Option<String>,
    pub timeline: Vec<String>,
    /// What fluxk8s saw and did (by hand: what the runner saw and asked for).
    pub history: History,
    /// The final state, one labelled line per side.
    pub final_state: Vec<String>,
}

impl Outcome {
    /// No step failed and every expectation held.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }
}

/// Runs `script`. With [`Mode::ByHand`], `expect` lines are skipped (they describe
/// fluxk8s) and sizes are patched directly. With `echo`, the timeline is printed live.
pub fn play(script: &Script, mode: Mode, echo: bool) -> Outcome {
    let by_hand = matches!(mode, Mode::ByHand);
    let mut outcome = Outcome::default();
    let mut cluster = match Cluster::start(script.cluster.clone(), mode, echo) {
        Ok(cluster) => cluster,
        Err(err) => {
            outcome.error = Some(format!("starting the cluster: {err}"));
            return outcome;
        }
    };
    let mut asked = None;
    if by_hand {
        cluster.note("by hand: the scenario's `expect` lines describe fluxk8s and are skipped");
    }
    for step in &script.steps {
        if by_hand && matches!(step.command, Command::Expect(_)) {
            continue;
        }
        cluster.note(format!("== line {}: {}", step.line, step.text));
        if let Err(err) = run_step(&mut cluster, step, by_hand, &mut asked, &mut outcome) {
            let text = format!("line {}: {}: {err}", step.line, step.text);
            cluster.note(format!("step failed: {err}"));
            outcome.error = Some(text);
            break;
        }
    }
    outcome.final_state = cluster.describe_state();
    outcome.timeline = cluster.timeline().to_vec();
    outcome.history = cluster.history().clone();
    outcome
}

fn run_step(
    cluster: &mut Cluster,
    step: &Step,
    by_hand: bool,
    asked: &mut Option<u32>,
    outcome: &mut Outcome,
) -> Result<(), RunError> {
    match &step.command {
        Command::Drain { ranks, reason } => cluster.drain(ranks, reason)?,
        Command::Undrain { ranks } => cluster.undrain(ranks)?,
        Command::Resize(n) | Command::AppRequest(n) => {
            *asked = Some(*n);
            if by_hand {
                cluster.set_size_by_hand(*n)?;
            } else {
                let who = match step.command {
                    Command::Resize(_) => "admin",
                    _ => "application (fluxk8s.resize RPC)",
                };
                cluster.request_size(*n, who)?;
            }
        }
        Command::Retire(ranks) => {
            *asked = asked.map(|n| n.saturating_sub(ranks.len() as u32));
            if by_hand {
                // Today's recipe: drain it, then lower the size by as many ranks.
                cluster.drain(ranks, "retired by hand")?;
                let size = cluster.kube_size().unwrap_or(0);
                cluster.set_size_by_hand(size.saturating_sub(ranks.len() as u32).max(1))?;
            } else {
                cluster.request_retire(ranks)?;
            }
        }
        Command::KillPod(rank) => cluster.kill_pod(*rank)?,
        Command::RestartLeader => cluster.restart_leader()?,
        Command::WaitConverged => {
            cluster.converge()?;
            outcome.checkpoints.push(Checkpoint {
                line: step.line,
                asked: *asked,
                live: cluster.live_ranks(),
                size: cluster.kube_size(),
            });
        }
        Command::Wait(duration) => cluster.run_for(*duration),
        Command::Expect(expectation) => {
            let (passed, found) = check(cluster, expectation);
            cluster.note(if passed {
                format!("ok: {found}")
            } else {
                format!("EXPECTATION FAILED: found {found}")
            });
            outcome.checks.push(Check {
                line: step.line,
                what: step.text.clone(),
                passed,
                found,
            });
        }
    }
    Ok(())
}

fn check(cluster: &Cluster, expectation: &Expectation) -> (bool, String) {
    let sets = |label: &str, want: &IdSet, found: IdSet| {
        (want == &found, format!("{label} {}", or_dash(&found)))
    };
    match expectation {
        Expectation::Live(want) => sets("live ranks", want, cluster.live_ranks()),
        Expectation::Pods(want) => sets("live pods", want, cluster.live_pods()),
        Expectation::Drained(want) => sets("drained ranks", want, cluster.flux().drained()),
        Expectation::Size(want) => {
            let found = cluster.kube_size();
            (
                found == Some(*want),
                format!(
                    "size {}",
                    found.map_or_else(|| "unknown".to_owned(), |n| n.to_string())
                ),
            )
        }
        Expectation::Phase { rank, phase } => match cluster.rank_status(*rank) {
            Some((found, why)) => (&found == phase, format!("rank {rank} {found} ({why})")),
            None => (false, format!("no planner status for rank {rank}")),
        },
        Expectation::Deletes(want) => {
            let found = cluster.pod_deletes().len();
            (found == *want, format!("{found} pod deletes"))
        }
    }
}
