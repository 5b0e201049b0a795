//! Fuzzing the Flux inputs: `resource.journal` and `overlay.monitor` payloads, their
//! application to the Flux view, and whole input sequences through the engine (stream
//! payloads, resize and retire requests as the module's RPCs pass them, busy ranks,
//! Kubernetes views). Nothing may panic or hang; every bad input is answered with an
//! error, and the engine's safety rules hold whatever comes in.
//!
//! `FUZZ_CASES=N` sets the cases per target (default 2,000).

mod fuzz_support;

use std::sync::Arc;

use fluxk8s::engine::{Effect, Engine};
use fluxk8s::k8s::Report;
use fluxk8s::model::flux::JournalResponse;
use fluxk8s::model::{
    FluxView, IdSet, JobView, KubeAction, KubeView, Outcome, OverlayStatus, PodPhase, PodView,
    Refusal, Retry,
};
use fluxk8s::planner::PlannerConfig;
use proptest::prelude::*;
use serde_json::Value;

use fuzz_support::{config, idset_text, journal_payload, overlay_payload};

/// Highest rank the sequence targets use: small instances keep each case fast.
const RANKS: u32 = 24;

/// Holds after any input: the rank sets partition and nest as they must.
fn check_view(view: &FluxView) -> Result<(), TestCaseError> {
    let size = view.size();
    let all = if size == 0 {
        IdSet::new()
    } else {
        IdSet::range(0, size - 1)
    };
    let sets = view.rank_sets();
    prop_assert_eq!(sets.online.union(&sets.offline), all);
    prop_assert!(sets.online.intersection(&sets.offline).is_empty());
    prop_assert!(sets.drained_by_fluxk8s.difference(&sets.drained).is_empty());
    prop_assert!(view.real_size() as usize <= sets.online.len());
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn journal_parse_answers_every_payload(payload in journal_payload(10_000)) {
        match JournalResponse::parse(&payload) {
            Ok(response) => {
                let value: Value = serde_json::from_str(&payload).expect("parsed once");
                prop_assert_eq!(
                    response.entries.len(),
                    value["events"].as_array().map_or(usize::MAX, Vec::len)
                );
            }
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }

    #[test]
    fn overlay_parse_answers_every_payload(payload in overlay_payload(64)) {
        match OverlayStatus::parse(&payload) {
            Ok(status) => {
                let value: Value = serde_json::from_str(&payload).expect("parsed once");
                prop_assert_eq!(Some(u64::from(status.rank)), value["rank"].as_u64());
                prop_assert_eq!(Some(status.torpid), value["torpid"].as_bool());
            }
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }

    #[test]
    fn flux_view_stays_consistent_under_any_event_sequence(
        payloads in prop::collection::vec(
            prop_oneof![3 => journal_payload(RANKS), 1 => overlay_payload(RANKS)],
            1..8,
        )
    ) {
        let mut view = FluxView::new();
        for payload in &payloads {
            if let Ok(response) = JournalResponse::parse(payload) {
                // An inapplicable event is refused, and the view stays consistent.
                let _ = view.apply_journal(&response);
            } else if let Ok(status) = OverlayStatus::parse(payload) {
                let _ = view.apply_overlay(&status);
            }
            check_view(&view)?;
        }
    }

    #[test]
    fn engine_keeps_its_safety_rules_under_any_input_sequence(
        inputs in prop::collection::vec(input(), 1..10)
    ) {
        let mut engine = Engine::new(
            PlannerConfig { cooldown: 0.0, ..PlannerConfig::default() },
            false,
        );
        let mut last_id: u64 = 0;
        for (step, input) in inputs.into_iter().enumerate() {
            let now = step as f64 * 7.0;
            match input {
                Input::Journal(payload) => engine.journal(&payload, now),
                Input::Overlay(payload) => engine.overlay(&payload, now),
                Input::Resize(n) => {
                    let _ = engine.request_size(n, now);
                }
                Input::Retire(text) => {
                    // The module's retire RPC parses first and refuses what does not parse.
                    if let Ok(ranks) = text.parse::<IdSet>() {
                        let _ = engine.request_retire(&ranks, now);
                    }
                }
                Input::Busy(text) => engine.set_busy(text.parse().unwrap_or_default()),
                Input::Kube(view) => {
                    engine.kube_report(Report::View(view), now);
                    engine.kube_report(Report::Synced, now);
                }
                Input::Finished { back, ending } => {
                    let id = last_id.saturating_sub(back);
                    let outcome = match ending {
                        0 => Outcome::Done,
                        1 => Retry::Unreachable("failed".to_owned()).into(),
                        _ => Refusal::Invalid("refused".to_owned()).into(),
                    };
                    engine.finished(id, outcome, now);
                }
            }
            for effect in engine.step(now) {
                let id = match &effect {
                    Effect::FluxRpc { id, request } => {
                        prop_assert!(serde_json::from_str::<Value>(&request.payload).is_ok());
                        // Only the broker's own state machine is asked of a follower; the
                        // leader is never told to shut down.
                        prop_assert!(request.nodeid != 0 || request.expects_reply);
                        *id
                    }
                    Effect::Kube { id, action } => {
                        match action {
                            KubeAction::DeletePod { index, .. } => prop_assert_ne!(*index, 0),
                            KubeAction::SetSize { size, .. } => prop_assert!(*size >= 1),
                            KubeAction::RecordEvent { reason, .. } => {
                                prop_assert_eq!(reason, "SizeFollowed")
                            }
                            KubeAction::RecordDesiredSize { size } => prop_assert!(*size >= 1),
                        }
                        *id
                    }
                };
                prop_assert!(id > last_id, "effect ids increase");
                last_id = id;
            }
            check_view(engine.flux())?;
            let status = engine.status_json(now);
            prop_assert!(status["plan"].is_object());
        }
    }
}

/// One thing that can reach the engine.
#[derive(Debug, Clone)]
enum Input {
    Journal(String),
    Overlay(String),
    Resize(u32),
    Retire(String),
    Busy(String),
    Kube(Box<KubeView>),
    /// The answer to the effect `back` ids before the latest (or an unknown id).
    Finished {
        back: u64,
        /// Done, retryable or refused.
        ending: u8,
    },
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        6 => journal_payload(RANKS).prop_map(Input::Journal),
        2 => overlay_payload(RANKS).prop_map(Input::Overlay),
        2 => prop_oneof![0u32..=RANKS + 2, any::<u32>()].prop_map(Input::Resize),
        2 => idset_text(RANKS).prop_map(Input::Retire),
        1 => idset_text(RANKS).prop_map(Input::Busy),
        3 => kube_view().prop_map(|view| Input::Kube(Box::new(view))),
        2 => (0u64..4, 0u8..3).prop_map(|(back, ending)| Input::Finished { back, ending }),
    ]
}

/// A Kubernetes view of a bare Job or a MiniCluster's Job, with pods in any state.
fn kube_view() -> impl Strategy<Value = KubeView> {
    let pod = (0..RANKS, 0u8..5, any::<bool>(), any::<bool>(), 0u8..3).prop_map(
        |(index, phase, ready, terminating, generation)| PodView {
            name: format!("job-{index}-{generation}"),
            uid: format!("uid-{index}-{generation}"),
            index,
            phase: [
                PodPhase::Pending,
                PodPhase::Running,
                PodPhase::Succeeded,
                PodPhase::Failed,
                PodPhase::Unknown,
            ][phase as usize],
            ready,
            terminating,
        },
    );
    let indexes = || prop::collection::btree_set(0..RANKS, 0..4);
    (
        0..=RANKS,
        prop::option::of(0u32..2),
        indexes(),
        indexes(),
        prop::option::of((0..=RANKS, 0..=RANKS, any::<bool>())),
        prop::collection::vec(pod, 0..RANKS as usize),
    )
        .prop_map(
            |(size, per_index, completed, failed, minicluster, mut pods)| {
                pods.sort_by_key(|p| p.index);
                KubeView::new(
                    JobView {
                        name: "job".into(),
                        uid: "job-uid".into(),
                        parallelism: size,
                        completions: size,
                        backoff_limit: 6,
                        backoff_limit_per_index: per_index,
                        has_pod_failure_policy: false,
                        completed_indexes: completed.into_iter().collect(),
                        failed_indexes: failed.into_iter().collect(),
                        active: pods.len() as u32,
                        succeeded: 0,
                        failed: 0,
                        size_manager: None,
                        desired_size: None,
                    },
                    minicluster.map(|(mc_size, max, complete_workers)| {
                        fluxk8s::model::MiniClusterView {
                            name: "job".into(),
                            uid: "mc-uid".into(),
                            size: mc_size,
                            max_size: max,
                            complete_workers,
                            size_manager: None,
                            desired_size: None,
                        }
                    }),
                    pods.into_iter().map(Arc::new).collect(),
                )
            },
        )
}
