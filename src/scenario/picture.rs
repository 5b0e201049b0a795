//! One-line renderings of each side's state, for the timeline (and to tell when things
//! stopped changing).

use std::collections::BTreeMap;

use serde_json::Value;

use super::NAMESPACE;
use crate::model::history::{self, History, Panel};
use crate::model::{IdSet, PodPhase};
use crate::sim::SimCluster;
use crate::sim::flux::{BrokerState, SimFlux};

/// The state of every side, one line each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Picture {
    pub flux: String,
    pub pods: String,
    pub kube: String,
    /// What fluxk8s makes of it (empty without fluxk8s).
    pub plan: String,
}

impl Picture {
    /// The labelled lines that differ from `before`.
    pub fn changes(&self, before: &Picture) -> Vec<String> {
        [
            ("flux", &self.flux, &before.flux),
            ("pods", &self.pods, &before.pods),
            ("k8s", &self.kube, &before.kube),
            ("fluxk8s", &self.plan, &before.plan),
        ]
        .into_iter()
        .filter(|(_, now, then)| now != then && !now.is_empty())
        .map(|(label, now, _)| format!("{label:<8}{now}"))
        .collect()
    }

    /// Every line, labelled.
    pub fn lines(&self) -> Vec<String> {
        self.changes(&Picture::default())
    }
}

/// An idset, or `-` when empty.
pub(crate) fn or_dash(ids: &IdSet) -> String {
    if ids.is_empty() {
        "-".to_owned()
    } else {
        ids.to_string()
    }
}

/// `up 0-1,3  lost 2  drained 2 "why"`, omitting empty parts.
pub(crate) fn flux_line(flux: &SimFlux) -> String {
    let mut parts = vec![format!("up {}", or_dash(&flux.online()))];
    let lost = flux.lost();
    if !lost.is_empty() {
        parts.push(format!("lost {lost}"));
    }
    let left: IdSet = (0..flux.size())
        .filter(|&k| flux.state(k) == Some(BrokerState::Offline))
        .collect();
    if !left.is_empty() {
        parts.push(format!("exited {left}"));
    }
    let mut by_reason: BTreeMap<String, IdSet> = BTreeMap::new();
    for k in flux.drained().iter() {
        let reason = flux
            .drain(k)
            .and_then(|d| d.reason.clone())
            .unwrap_or_default();
        by_reason.entry(reason).or_default().insert(k);
    }
    for (reason, ranks) in by_reason {
        parts.push(format!("drained {ranks} {reason:?}"));
    }
    parts.join("  ")
}

/// Pod indexes by phase: `Running 0-1,3  Pending 4  Failed 2`.
pub(crate) fn pods_line(sim: &SimCluster, job: &str) -> String {
    let mut by_phase: BTreeMap<&str, IdSet> = BTreeMap::new();
    for pod in sim.pod_views(NAMESPACE, job) {
        let phase = match pod.phase {
            _ if pod.terminating && pod.is_live() => "Terminating",
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
            PodPhase::Unknown => "Unknown",
        };
        by_phase.entry(phase).or_default().insert(pod.index);
    }
    if by_phase.is_empty() {
        return "none".to_owned();
    }
    const ORDER: [&str; 6] = [
        "Running",
        "Pending",
        "Terminating",
        "Succeeded",
        "Failed",
        "Unknown",
    ];
    ORDER
        .iter()
        .filter_map(|phase| by_phase.get(phase).map(|ids| format!("{phase} {ids}")))
        .collect::<Vec<_>>()
        .join("  ")
}

fn number(value: &Value) -> String {
    value
        .as_i64()
        .map_or_else(|| "?".to_owned(), |n| n.to_string())
}

fn indexes(value: &Value) -> String {
    match value.as_str() {
        Some(text) if !text.is_empty() => text.to_owned(),
        _ => "-".to_owned(),
    }
}

/// `MiniCluster size 4 (max 10)  Job 4/4 completed - failed 2`.
pub(crate) fn kube_line(sim: &SimCluster, job: &str) -> String {
    let mut parts = Vec::new();
    if let Some(mc) = sim.minicluster(NAMESPACE, job) {
        parts.push(format!(
            "MiniCluster size {} (max {})",
            number(&mc["spec"]["size"]),
            number(&mc["spec"]["maxSize"])
        ));
    }
    match sim.job(NAMESPACE, job) {
        Some(job) => parts.push(format!(
            "Job completions {} parallelism {}  completed {}  failed {}",
            number(&job["spec"]["completions"]),
            number(&job["spec"]["parallelism"]),
            indexes(&job["status"]["completedIndexes"]),
            indexes(&job["status"]["failedIndexes"]),
        )),
        None => parts.push("no Job".to_owned()),
    }
    parts.join("  ")
}

/// From the engine status: the target, and every rank that is not simply up, with why.
pub(crate) fn plan_line(status: &Value) -> String {
    let plan = &status["plan"];
    if plan["synced"] != true {
        return "waiting for both views to sync".to_owned();
    }
    let mut parts = vec![match plan["desired_size"].as_u64() {
        Some(n) => format!("target {n}"),
        None => "no target (holding the size)".to_owned(),
    }];
    for rank in status["detail"].as_array().into_iter().flatten() {
        let phase = rank["phase"].as_str().unwrap_or("?");
        let why = rank["why"].as_str().unwrap_or("");
        match phase {
            "up" => {}
            "retired" if why == "retired: above size" => {}
            // Its "why" counts seconds; the phase is enough here.
            "starting" => parts.push(format!("{}: starting", rank["rank"])),
            _ => parts.push(format!("{}: {why}", rank["rank"])),
        }
    }
    for waiting in plan["waiting"].as_array().into_iter().flatten() {
        // Per-rank waits repeat the rank's own line.
        if let Some(text) = waiting.as_str().filter(|t| !t.starts_with("rank ")) {
            parts.push(format!("waiting: {text}"));
        }
    }
    parts.join(" | ")
}

/// The timeline picture of a run with fluxk8s and, below it, of the same steps by hand:
/// the history each kept, drawn one above the other.
pub fn timeline_svg(title: &str, with: &History, by_hand: Option<&History>) -> String {
    let panel = |heading: &str, history| Panel {
        heading: heading.to_owned(),
        history,
        ranks: None,
        clock: false,
    };
    let mut panels = vec![panel("with fluxk8s: what it saw and did", with)];
    if let Some(by_hand) = by_hand {
        panels.push(panel(
            "by hand: drain in Flux, patch the MiniCluster size",
            by_hand,
        ));
    }
    history::svg(title, &panels)
}
