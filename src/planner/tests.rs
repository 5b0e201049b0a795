//! One test (or a few) per policy, on small hand-built views.

use std::sync::Arc;

use super::*;
use crate::model::flux::{ChildStatus, JournalEntry, JournalEvent, OverlayStatus};
use crate::model::{
    Action, FluxAction, FluxView, JobView, KubeAction, KubeView, MiniClusterView, Outcome, PodView,
    Refusal, Retry,
};

fn ids(text: &str) -> IdSet {
    text.parse().unwrap()
}

fn event(flux: &mut FluxView, event: JournalEvent) {
    flux.apply_entry(&JournalEntry {
        timestamp: 1.0,
        event,
    })
    .unwrap();
}

/// A synced view of `size` configured ranks with `online` up.
fn flux_view(size: u32, online: &str) -> FluxView {
    let mut flux = FluxView::new();
    event(
        &mut flux,
        JournalEvent::Restart {
            ranks: IdSet::range(0, size - 1),
            online: ids(online),
            hosts: 0,
        },
    );
    flux.apply_journal(&crate::model::JournalResponse {
        entries: Vec::new(),
        resources: None,
    })
    .unwrap();
    flux
}

fn drain(flux: &mut FluxView, ranks: &str, reason: &str) {
    event(
        flux,
        JournalEvent::Drain {
            ranks: ids(ranks),
            reason: Some(reason.into()),
            overwrite: 0,
        },
    );
}

fn lose(flux: &mut FluxView, rank: u32) {
    flux.apply_overlay(&OverlayStatus {
        rank,
        status: ChildStatus::Lost,
        torpid: false,
    })
    .unwrap();
    event(flux, JournalEvent::Offline(IdSet::range(rank, rank)));
}

#[derive(Clone, Copy)]
enum Kind {
    PerIndexZero,
    CompleteWorkers,
    Bare,
}

/// A Job of `size` with a live pod at every index in `live`.
fn kube_view(kind: Kind, size: u32, max: u32, live: &str) -> KubeView {
    let minicluster = match kind {
        Kind::Bare => None,
        _ => Some(MiniClusterView {
            name: "mc".into(),
            uid: "mc-uid".into(),
            size,
            max_size: max,
            complete_workers: matches!(kind, Kind::CompleteWorkers),
            size_manager: None,
            desired_size: None,
        }),
    };
    KubeView::new(
        JobView {
            backoff_limit_per_index: matches!(kind, Kind::PerIndexZero).then_some(0),
            ..JobView::new("mc", "job-uid", size)
        },
        minicluster,
        ids(live)
            .iter()
            .map(|index| PodView::running(format!("mc-{index}"), format!("uid-{index}"), index))
            .map(Arc::new)
            .collect(),
    )
}

fn drain_action(ranks: &str, reason: &str) -> Action {
    Action::Flux(FluxAction::Drain {
        ranks: ids(ranks),
        reason: reason.into(),
        overwrite: false,
    })
}

fn set_size(actions: &[Action]) -> Option<u32> {
    actions.iter().find_map(|a| match a {
        Action::Kube(KubeAction::SetSize { size, .. }) => Some(*size),
        _ => None,
    })
}

#[test]
fn nothing_is_decided_before_both_views_sync() {
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    let mut flux = flux_view(4, "0-3");
    drain(&mut flux, "3", "admin");
    let kube = kube_view(Kind::PerIndexZero, 4, 4, "0-3");
    assert!(reconciler.plan(&flux, None, 0.0).is_empty());
    let err = reconciler.request_size(2, &flux, None, 0.0).unwrap_err();
    assert_eq!(err, RequestError::NotSynced);
    flux.restart_journal();
    assert!(reconciler.plan(&flux, Some(&kube), 0.0).is_empty());
    assert!(!reconciler.status(&flux, Some(&kube), 0.0).synced);
}

#[test]
fn an_admin_drain_is_retired_with_the_mechanism_that_works() {
    let cases = [
        // Top rank: lowering the size works for any Job.
        (Kind::Bare, "3", Some(3), None),
        // Middle rank with its broker up: a clean shutdown (exit 0) completes the index,
        // whatever the Job's failure policy.
        (Kind::PerIndexZero, "1", None, Some("shutdown")),
        (Kind::CompleteWorkers, "1", None, Some("shutdown")),
        (Kind::Bare, "1", None, Some("shutdown")),
    ];
    for (kind, rank, expected_size, removal) in cases {
        let mut flux = flux_view(4, "0-3");
        drain(&mut flux, rank, "bad disk");
        let kube = kube_view(kind, 4, 4, "0-3");
        let mut reconciler = Reconciler::new(PlannerConfig::default());
        let actions = reconciler.plan(&flux, Some(&kube), 0.0);
        assert_eq!(set_size(&actions), expected_size, "{actions:?}");
        let removed = actions.iter().find_map(|a| match a {
            Action::Kube(KubeAction::DeletePod { index: 1, uid, .. }) => {
                assert_eq!(uid, "uid-1");
                Some("delete")
            }
            Action::Flux(FluxAction::Shutdown { rank: 1 }) => Some("shutdown"),
            _ => None,
        });
        assert_eq!(removed, removal, "{actions:?}");
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Flux(_)) && removal.is_none()),
            "the admin drain is left alone: {actions:?}"
        );
        assert!(
            reconciler.plan(&flux, Some(&kube), 1.0).is_empty(),
            "idempotent"
        );
    }
}

#[test]
fn a_drained_middle_rank_whose_broker_is_down_is_deleted_only_with_per_index_backoff() {
    // Rank 1 is drained, its broker is not online (crashing in its pod), its pod is live.
    let mut flux = flux_view(4, "0,2-3");
    drain(&mut flux, "1", "bad disk");
    let per_index = kube_view(Kind::PerIndexZero, 4, 4, "0-3");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    let actions = reconciler.plan(&flux, Some(&per_index), 0.0);
    assert!(
        matches!(
            &actions[..],
            [Action::Kube(KubeAction::DeletePod { index: 1, .. })]
        ),
        "{actions:?}"
    );

    let bare = kube_view(Kind::Bare, 4, 4, "0-3");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    assert!(reconciler.plan(&flux, Some(&bare), 0.0).is_empty());
    let status = reconciler.status(&flux, Some(&bare), 0.0);
    let rank_1 = status.ranks.get(1).unwrap();
    assert_eq!(rank_1.phase, RankPhase::Drained);
    assert!(
        rank_1.why.contains("not online to be shut down"),
        "{rank_1:?}"
    );
    assert_eq!((status.real_size, status.expected_size), (3, 3));
}

#[test]
fn a_broker_that_keeps_coming_back_after_shutdowns_is_kept_drained() {
    let mut flux = flux_view(4, "0-3");
    drain(&mut flux, "1", "bad disk");
    let kube = kube_view(Kind::Bare, 4, 4, "0-3");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    let shutdown = vec![Action::Flux(FluxAction::Shutdown { rank: 1 })];
    let mut now = 0.0;
    for _ in 0..super::decide::MAX_SHUTDOWNS {
        assert_eq!(reconciler.plan(&flux, Some(&kube), now), shutdown);
        // The broker goes down; its pod stays and restarts it.
        event(&mut flux, JournalEvent::Offline(ids("1")));
        now += 1.0;
        assert!(reconciler.plan(&flux, Some(&kube), now).is_empty());
        let why = reconciler
            .status(&flux, Some(&kube), now)
            .ranks
            .get(1)
            .unwrap()
            .why
            .clone();
        assert!(why.contains("waiting for its pod to complete"), "{why}");
        event(&mut flux, JournalEvent::Online(ids("1")));
        now += 1.0;
    }
    assert!(reconciler.plan(&flux, Some(&kube), now).is_empty());
    let status = reconciler.status(&flux, Some(&kube), now);
    let rank_1 = status.ranks.get(1).unwrap();
    assert_eq!(rank_1.phase, RankPhase::Drained);
    assert!(
        rank_1.why.contains("came back after 3 clean shutdowns"),
        "{rank_1:?}"
    );
}

#[test]
fn a_busy_rank_is_retired_when_idle_or_after_the_grace() {
    let mut flux = flux_view(4, "0-3");
    drain(&mut flux, "1", "bad disk");
    flux.set_busy(ids("1"));
    let kube = kube_view(Kind::PerIndexZero, 4, 4, "0-3");
    let removals = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Kube(KubeAction::DeletePod { .. })
                        | Action::Flux(FluxAction::Shutdown { .. })
                )
            })
            .count()
    };

    let mut patient = Reconciler::new(PlannerConfig::default());
    assert_eq!(removals(&patient.plan(&flux, Some(&kube), 0.0)), 0);
    let status = patient.status(&flux, Some(&kube), 0.0);
    assert_eq!(
        status.ranks.get(1).unwrap().why,
        "draining: busy, waiting idle"
    );
    assert_eq!(removals(&patient.plan(&flux, Some(&kube), 1e6)), 0);

    let config = PlannerConfig {
        drain_grace: Some(60.0),
        ..PlannerConfig::default()
    };
    let mut graceful = Reconciler::new(config);
    assert_eq!(removals(&graceful.plan(&flux, Some(&kube), 0.0)), 0);
    assert_eq!(removals(&graceful.plan(&flux, Some(&kube), 59.0)), 0);
    assert_eq!(removals(&graceful.plan(&flux, Some(&kube), 60.0)), 1);

    flux.set_busy(IdSet::new());
    assert_eq!(removals(&patient.plan(&flux, Some(&kube), 1e6 + 1.0)), 1);
}

#[test]
fn shrinking_picks_idle_ranks_highest_first_never_rank_0_or_protected() {
    let mut flux = flux_view(6, "0-5");
    flux.set_busy(ids("4"));
    let kube = kube_view(Kind::PerIndexZero, 6, 6, "0-5");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    reconciler.request_size(3, &flux, Some(&kube), 0.0).unwrap();
    let actions = reconciler.plan(&flux, Some(&kube), 0.0);
    assert_eq!(
        actions,
        vec![drain_action("2-3,5", "fluxk8s: retired by resize to 3")]
    );

    let config = PlannerConfig {
        protect: ids("5"),
        min_size: 2,
        ..PlannerConfig::default()
    };
    let mut reconciler = Reconciler::new(config);
    let answer = reconciler.request_size(1, &flux, Some(&kube), 0.0).unwrap();
    assert_eq!(answer.target, 2);
    assert_eq!(answer.limited_by, vec![SizeLimit::MinSize { min: 2 }]);
    let actions = reconciler.plan(&flux, Some(&kube), 0.0);
    // Idle ranks first (3, 2, 1), then the busy one (4); 5 is protected, 0 never goes.
    assert_eq!(
        actions,
        vec![drain_action("1-4", "fluxk8s: retired by resize to 2")]
    );
}

#[test]
fn a_lost_rank_held_by_our_record_of_a_retirement_is_drained_over_once() {
    let mut flux = flux_view(4, "0-3");
    let kube = kube_view(Kind::PerIndexZero, 4, 4, "0-3");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    assert!(reconciler.plan(&flux, Some(&kube), 0.0).is_empty());
    // Our record of a retirement, left on a rank that is wanted again, then its pod dies.
    drain(&mut flux, "2", "fluxk8s: retired (above size)");
    lose(&mut flux, 2);
    let lost = Action::Flux(FluxAction::Drain {
        ranks: ids("2"),
        reason: "fluxk8s: pod lost".into(),
        overwrite: true,
    });
    assert_eq!(reconciler.plan(&flux, Some(&kube), 1.0), vec![lost.clone()]);
    reconciler.action_finished(&lost, Outcome::Done, 1.0);
    assert!(
        reconciler.plan(&flux, Some(&kube), 1.5).is_empty(),
        "nothing more until the journal shows the new reason"
    );
    event(
        &mut flux,
        JournalEvent::Drain {
            ranks: ids("2"),
            reason: Some("fluxk8s: pod lost".into()),
            overwrite: 1,
        },
    );
    assert!(reconciler.plan(&flux, Some(&kube), 2.0).is_empty());
    let status = reconciler.status(&flux, Some(&kube), 2.0);
    assert_eq!(status.ranks.get(2).unwrap().phase, RankPhase::Lost);
}

#[test]
fn a_lost_rank_that_was_down_first_is_a_shrink_victim_before_running_ones() {
    let mut flux = flux_view(4, "0-3");
    let kube = kube_view(Kind::PerIndexZero, 4, 4, "0-3");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    assert!(reconciler.plan(&flux, Some(&kube), 0.0).is_empty());
    lose(&mut flux, 1);
    let actions = reconciler.plan(&flux, Some(&kube), 1.0);
    assert_eq!(actions, vec![drain_action("1", "fluxk8s: pod lost")]);
    drain(&mut flux, "1", "fluxk8s: pod lost");
    reconciler.request_size(3, &flux, Some(&kube), 2.0).unwrap();
    let status = reconciler.status(&flux, Some(&kube), 2.0);
    assert_eq!(status.expected_size, 4, "a lost pod is expected back");
    reconciler.plan(&flux, Some(&kube), 2.0);
    let status = reconciler.status(&flux, Some(&kube), 2.0);
    assert_eq!(
        status.ranks.get(1).unwrap().phase,
        RankPhase::Retiring,
        "{:?}",
        status.ranks
    );
    assert_eq!(status.ranks.get(3).unwrap().phase, RankPhase::Up);
}

#[test]
fn growth_counts_holes_and_uses_the_lowest_free_indexes() {
    let flux = flux_view(10, "0-1,3");
    let mut kube = kube_view(Kind::PerIndexZero, 4, 10, "0-1,3");
    kube.job.failed_indexes = ids("2");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    let answer = reconciler.request_size(5, &flux, Some(&kube), 0.0).unwrap();
    assert_eq!(
        (answer.target, answer.reachable, answer.changed),
        (5, 9, true)
    );
    assert!(answer.limited_by.is_empty());
    let again = reconciler.request_size(5, &flux, Some(&kube), 0.0).unwrap();
    assert!(!again.changed, "the same size twice is one change");
    let actions = reconciler.plan(&flux, Some(&kube), 0.0);
    // Live 0,1,3 + two more: indexes 4 and 5, so size 6 (the hole at 2 does not come back).
    assert_eq!(set_size(&actions), Some(6));
    assert!(reconciler.plan(&flux, Some(&kube), 1.0).is_empty());

    let answer = reconciler
        .request_size(12, &flux, Some(&kube), 2.0)
        .unwrap();
    assert_eq!((answer.target, answer.reachable), (10, 9));
    assert_eq!(
        answer.limited_by,
        vec![
            SizeLimit::MaximumSize { max: 10 },
            SizeLimit::CannotComeBack { ranks: ids("2") }
        ]
    );
}

#[test]
fn trailing_retired_indexes_are_recycled_by_lowering_then_raising() {
    let mut flux = flux_view(8, "0-3");
    drain(&mut flux, "4-5", "fluxk8s: retired by resize to 4");
    let mut kube = kube_view(Kind::PerIndexZero, 6, 8, "0-3");
    kube.job.failed_indexes = ids("4-5");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    reconciler.request_size(6, &flux, Some(&kube), 0.0).unwrap();
    assert_eq!(set_size(&reconciler.plan(&flux, Some(&kube), 0.0)), Some(4));

    // Kubernetes applied size 4 and dropped 4-5 from its failed indexes.
    let mut lowered = kube_view(Kind::PerIndexZero, 4, 8, "0-3");
    lowered.job.failed = 2;
    let actions = reconciler.plan(&flux, Some(&lowered), 1.0);
    assert_eq!(set_size(&actions), Some(6));
    assert!(
        actions.contains(&Action::Flux(FluxAction::Undrain { ranks: ids("4-5") })),
        "our retirement drains are lifted on indexes that run again: {actions:?}"
    );
}

#[test]
fn a_lost_pod_is_drained_and_undrained_when_it_is_back() {
    let mut flux = flux_view(4, "0-3");
    let kube = kube_view(Kind::Bare, 4, 4, "0-3");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    assert!(reconciler.plan(&flux, Some(&kube), 0.0).is_empty());
    lose(&mut flux, 2);
    assert_eq!(
        reconciler.plan(&flux, Some(&kube), 1.0),
        vec![drain_action("2", "fluxk8s: pod lost")]
    );
    drain(&mut flux, "2", "fluxk8s: pod lost");
    assert!(reconciler.plan(&flux, Some(&kube), 2.0).is_empty());
    event(&mut flux, JournalEvent::Online(ids("2")));
    assert_eq!(
        reconciler.plan(&flux, Some(&kube), 3.0),
        vec![Action::Flux(FluxAction::Undrain { ranks: ids("2") })]
    );

    // An admin drain on a rank that comes back is never lifted.
    let mut flux = flux_view(4, "0-3");
    drain(&mut flux, "2", "bad disk");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    let actions = reconciler.plan(&flux, Some(&kube), 0.0);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Flux(FluxAction::Undrain { .. })))
    );
}

#[test]
fn a_rank_that_never_comes_online_is_drained_and_growth_backs_off() {
    let flux = flux_view(6, "0-2");
    let kube = kube_view(Kind::PerIndexZero, 4, 6, "0-3");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    assert!(reconciler.plan(&flux, Some(&kube), 0.0).is_empty());
    assert!(reconciler.plan(&flux, Some(&kube), 299.0).is_empty());
    let actions = reconciler.plan(&flux, Some(&kube), 300.0);
    assert_eq!(
        actions,
        vec![drain_action("3", "fluxk8s: never came online within 300s")]
    );
    let status = reconciler.status(&flux, Some(&kube), 300.0);
    assert_eq!(status.startup_failures, 1);

    let mut flux = flux;
    drain(&mut flux, "3", "fluxk8s: never came online within 300s");
    reconciler
        .request_size(4, &flux, Some(&kube), 301.0)
        .unwrap();
    let actions = reconciler.plan(&flux, Some(&kube), 301.0);
    assert_eq!(set_size(&actions), Some(3), "the top rank goes by lowering");
    let status = reconciler.status(&flux, Some(&kube), 301.0);
    assert!(
        status.waiting.iter().any(|w| w.contains("backing off")),
        "{:?}",
        status.waiting
    );
}

#[test]
fn a_starting_rank_under_our_record_of_a_retirement_is_drained_over_at_its_timeout() {
    let mut flux = flux_view(6, "0-2");
    let kube = kube_view(Kind::PerIndexZero, 4, 6, "0-3");
    // Our record of a retirement, left on a rank that is wanted again and starts.
    drain(&mut flux, "3", "fluxk8s: retired (above size)");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    assert!(reconciler.plan(&flux, Some(&kube), 0.0).is_empty());
    assert!(reconciler.plan(&flux, Some(&kube), 299.0).is_empty());
    let never_online = Action::Flux(FluxAction::Drain {
        ranks: ids("3"),
        reason: "fluxk8s: never came online within 300s".into(),
        overwrite: true,
    });
    assert_eq!(
        reconciler.plan(&flux, Some(&kube), 300.0),
        vec![never_online]
    );
    assert_eq!(
        reconciler
            .status(&flux, Some(&kube), 300.0)
            .startup_failures,
        1
    );
}

#[test]
fn removals_freeze_when_too_many_ranks_are_lost() {
    let kube = kube_view(Kind::PerIndexZero, 4, 4, "0-3");
    for (fraction, frozen) in [(0.5, false), (0.25, true)] {
        let mut flux = flux_view(4, "0-3");
        let config = PlannerConfig {
            max_lost_fraction: fraction,
            ..PlannerConfig::default()
        };
        let mut reconciler = Reconciler::new(config);
        assert!(reconciler.plan(&flux, Some(&kube), 0.0).is_empty());
        drain(&mut flux, "1", "bad disk");
        lose(&mut flux, 2);
        lose(&mut flux, 3);
        let actions = reconciler.plan(&flux, Some(&kube), 1.0);
        assert_eq!(actions[0], drain_action("2-3", "fluxk8s: pod lost"));
        let removed = actions
            .iter()
            .any(|a| a == &Action::Flux(FluxAction::Shutdown { rank: 1 }));
        assert_eq!(removed, !frozen, "{actions:?}");
        let status = reconciler.status(&flux, Some(&kube), 1.0);
        assert_eq!(status.frozen.is_some(), frozen);
        if frozen {
            assert!(status.frozen.unwrap().contains("2 of 4 ranks lost"));
            let rank_1 = status.ranks.get(1).unwrap();
            assert!(rank_1.why.contains("frozen"), "{rank_1:?}");
        }
    }
}

#[test]
fn after_a_restart_retired_ranks_are_drained_again_and_nothing_repeats() {
    // Rank 2's index failed and 5 was retired above the size; the leader lost both drains.
    let mut flux = flux_view(8, "0-1,3");
    event(&mut flux, JournalEvent::Online(ids("5")));
    event(&mut flux, JournalEvent::Offline(ids("5")));
    drain(&mut flux, "6", "fluxk8s: retired by resize to 3");
    let mut kube = kube_view(Kind::PerIndexZero, 4, 8, "0-1,3");
    kube.job.failed_indexes = ids("2");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    let actions = reconciler.plan(&flux, Some(&kube), 0.0);
    assert_eq!(
        actions,
        vec![
            drain_action("5", "fluxk8s: retired (above size)"),
            drain_action("2", "fluxk8s: retired (index failed)"),
        ]
    );
    drain(&mut flux, "2", "fluxk8s: retired (index failed)");
    drain(&mut flux, "5", "fluxk8s: retired (above size)");
    // A second restart finds everything in place: no action.
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    assert!(reconciler.plan(&flux, Some(&kube), 1.0).is_empty());
    let status = reconciler.status(&flux, Some(&kube), 1.0);
    assert_eq!(
        status.ranks.get(2).unwrap().why,
        "retired: index failed, drained by fluxk8s"
    );
    assert_eq!(status.ranks.get(7).unwrap().why, "retired: above size");
}

#[test]
fn requests_are_checked() {
    let flux = flux_view(6, "0-3");
    let kube = kube_view(Kind::PerIndexZero, 4, 6, "0-3");
    let config = PlannerConfig {
        protect: ids("3"),
        min_size: 3,
        ..PlannerConfig::default()
    };
    let mut reconciler = Reconciler::new(config);
    let retire =
        |r: &mut Reconciler, ranks: &str| r.request_retire(&ids(ranks), &flux, Some(&kube));
    assert_eq!(retire(&mut reconciler, "0-1"), Err(RequestError::RankZero));
    assert_eq!(
        retire(&mut reconciler, "3"),
        Err(RequestError::Protected(ids("3")))
    );
    assert_eq!(
        retire(&mut reconciler, "6"),
        Err(RequestError::OutOfRange { rank: 6, size: 6 })
    );
    assert!(matches!(
        retire(&mut reconciler, "1-2"),
        Err(RequestError::BelowMinSize { left: 2, .. })
    ));
    assert_eq!(
        reconciler.request_size(0, &flux, Some(&kube), 0.0),
        Err(RequestError::ZeroSize)
    );

    reconciler.request_size(4, &flux, Some(&kube), 0.0).unwrap();
    let answer = retire(&mut reconciler, "2,5").unwrap();
    assert_eq!((answer.accepted, answer.already), (ids("2"), ids("5")));
    assert_eq!(
        answer.desired_size,
        Some(3),
        "a retired rank is not replaced"
    );
    let actions = reconciler.plan(&flux, Some(&kube), 0.0);
    assert_eq!(
        actions,
        vec![drain_action("2", "fluxk8s: retired by request")]
    );
}

#[test]
fn opposite_moves_wait_for_the_cooldown() {
    let flux = flux_view(8, "0-3");
    let kube = kube_view(Kind::PerIndexZero, 4, 8, "0-3");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    reconciler.request_size(6, &flux, Some(&kube), 0.0).unwrap();
    assert_eq!(set_size(&reconciler.plan(&flux, Some(&kube), 0.0)), Some(6));
    let grown = kube_view(Kind::PerIndexZero, 6, 8, "0-5");
    let flux = flux_view(8, "0-5");
    reconciler
        .request_size(2, &flux, Some(&grown), 1.0)
        .unwrap();
    assert!(reconciler.plan(&flux, Some(&grown), 1.0).is_empty());
    let status = reconciler.status(&flux, Some(&grown), 1.0);
    assert!(
        status.waiting.iter().any(|w| w.contains("cooldown")),
        "{:?}",
        status.waiting
    );
    let actions = reconciler.plan(&flux, Some(&grown), 30.0);
    assert_eq!(
        actions,
        vec![drain_action("2-5", "fluxk8s: retired by resize to 2")]
    );
}

#[test]
fn the_rate_limit_holds_extra_removals() {
    let mut flux = flux_view(6, "0-5");
    drain(&mut flux, "1-2", "bad disk");
    let kube = kube_view(Kind::PerIndexZero, 6, 6, "0-5");
    let config = PlannerConfig {
        max_actions_per_minute: 1,
        ..PlannerConfig::default()
    };
    let mut reconciler = Reconciler::new(config);
    assert_eq!(reconciler.plan(&flux, Some(&kube), 0.0).len(), 1);
    let status = reconciler.status(&flux, Some(&kube), 0.0);
    assert!(
        status.waiting.iter().any(|w| w.contains("rate limit")),
        "{:?}",
        status.waiting
    );
    assert!(reconciler.plan(&flux, Some(&kube), 59.0).is_empty());
    assert_eq!(reconciler.plan(&flux, Some(&kube), 61.0).len(), 1);
}

#[test]
fn the_planner_asks_to_be_woken_when_the_rate_window_ends_and_not_when_idle() {
    let mut flux = flux_view(6, "0-5");
    let kube = kube_view(Kind::PerIndexZero, 6, 6, "0-5");
    let config = PlannerConfig {
        max_actions_per_minute: 1,
        cooldown: 0.0,
        ..PlannerConfig::default()
    };
    let mut reconciler = Reconciler::new(config);
    assert!(reconciler.plan(&flux, Some(&kube), 0.0).is_empty());
    assert_eq!(reconciler.wake_at(), None, "nothing to wait for");
    drain(&mut flux, "1-2", "bad disk");
    assert_eq!(reconciler.plan(&flux, Some(&kube), 10.0).len(), 1);
    // The held shutdown can go when the rate window ends; no event need come.
    assert_eq!(reconciler.wake_at(), Some(70.0));
    assert_eq!(reconciler.plan(&flux, Some(&kube), 70.0).len(), 1);
}

#[test]
fn a_storm_leaves_in_passes_of_bounded_size_one_right_after_the_other() {
    let mut flux = flux_view(201, "0-200");
    drain(&mut flux, "1-150", "maintenance");
    let kube = kube_view(Kind::CompleteWorkers, 201, 201, "0-200");
    let config = PlannerConfig {
        max_actions_per_minute: 10_000,
        ..PlannerConfig::default()
    };
    let mut reconciler = Reconciler::new(config);
    let mut passes = Vec::new();
    let mut now = 1.0;
    loop {
        let actions = reconciler.plan(&flux, Some(&kube), now);
        if actions.is_empty() {
            break;
        }
        assert!(
            actions
                .iter()
                .all(|a| matches!(a, Action::Flux(FluxAction::Shutdown { .. })))
        );
        passes.push(actions.len());
        // Each pass but the last asks for the next one at once.
        let more = reconciler.wake_at() == Some(now);
        assert_eq!(more, passes.iter().sum::<usize>() < 150, "{passes:?}");
        now += 0.001;
    }
    assert_eq!(passes, [64, 64, 22]);
}

#[test]
fn a_retryable_action_is_issued_again_after_the_interval_only() {
    let mut flux = flux_view(4, "0-3");
    drain(&mut flux, "1", "bad disk");
    let kube = kube_view(Kind::CompleteWorkers, 4, 4, "0-3");
    let retries = [
        Retry::Unreachable("EHOSTUNREACH".into()),
        Retry::ServerError("HTTP 503: down".into()),
        Retry::Timeout("no answer within 15s".into()),
        Retry::Forbidden {
            verb: "delete".into(),
            resource: "pods".into(),
        },
    ];
    for retry in retries {
        let mut reconciler = Reconciler::new(PlannerConfig::default());
        let actions = reconciler.plan(&flux, Some(&kube), 0.0);
        assert_eq!(
            actions,
            vec![Action::Flux(FluxAction::Shutdown { rank: 1 })]
        );
        let said = format!("retryable: {retry}");
        reconciler.action_finished(&actions[0], retry.into(), 10.0);
        let status = reconciler.status(&flux, Some(&kube), 10.0);
        assert_eq!(status.pending[0].outcome.as_deref(), Some(said.as_str()));
        assert!(status.refused.is_empty());
        assert!(reconciler.plan(&flux, Some(&kube), 39.0).is_empty());
        assert_eq!(reconciler.plan(&flux, Some(&kube), 40.0), actions);
    }
}

#[test]
fn a_done_action_waits_for_the_views_to_show_it() {
    let mut flux = flux_view(4, "0-3");
    drain(&mut flux, "1", "bad disk");
    let kube = kube_view(Kind::CompleteWorkers, 4, 4, "0-3");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    let actions = reconciler.plan(&flux, Some(&kube), 0.0);
    reconciler.action_finished(&actions[0], Outcome::Done, 1.0);
    let status = reconciler.status(&flux, Some(&kube), 1.0);
    assert_eq!(status.pending[0].outcome.as_deref(), Some("ok"));
    assert!(reconciler.plan(&flux, Some(&kube), 30.0).is_empty());
    // The broker went offline: the shutdown took effect and nothing is pending.
    event(&mut flux, JournalEvent::Offline(ids("1")));
    assert!(reconciler.plan(&flux, Some(&kube), 31.0).is_empty());
    let status = reconciler.status(&flux, Some(&kube), 31.0);
    assert!(status.pending.is_empty(), "{:?}", status.pending);
}

#[test]
fn a_refused_action_is_never_issued_again_as_it_was_and_the_status_says_why() {
    let mut flux = flux_view(4, "0,2-3");
    drain(&mut flux, "1", "bad disk");
    let kube = kube_view(Kind::PerIndexZero, 4, 4, "0-3");
    let refusals = [
        Refusal::Invalid("HTTP 422: bad".into()),
        Refusal::NotFound("pods \"mc-1\"".into()),
        Refusal::Replaced { current_uid: None },
    ];
    for refusal in refusals {
        let mut reconciler = Reconciler::new(PlannerConfig::default());
        let actions = reconciler.plan(&flux, Some(&kube), 0.0);
        let [delete @ Action::Kube(KubeAction::DeletePod { .. })] = &actions[..] else {
            panic!("{actions:?}")
        };
        let why = format!("{refusal}");
        let kind = refusal.kind();
        reconciler.action_finished(delete, refusal.into(), 1.0);
        // Planned again at once from the same views, long past the retry interval: held.
        for now in [1.0, 31.0, 1000.0] {
            assert!(
                reconciler.plan(&flux, Some(&kube), now).is_empty(),
                "t={now}"
            );
        }
        let status = reconciler.status(&flux, Some(&kube), 1000.0);
        assert!(status.pending.is_empty(), "{:?}", status.pending);
        let [refused] = &status.refused[..] else {
            panic!("{:?}", status.refused)
        };
        assert_eq!(
            (&refused.action, refused.refusal, refused.why.as_str()),
            (delete, kind, why.as_str())
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["refused"][0]["why"], why.as_str(), "{json:#}");
    }
}

#[test]
fn after_a_refusal_the_plan_follows_the_views_it_now_has() {
    let mut flux = flux_view(4, "0,2-3");
    drain(&mut flux, "1", "bad disk");
    let kube = kube_view(Kind::PerIndexZero, 4, 4, "0-3");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    let actions = reconciler.plan(&flux, Some(&kube), 0.0);
    let replaced = Refusal::Replaced {
        current_uid: Some("uid-1b".into()),
    };
    reconciler.action_finished(&actions[0], replaced.into(), 1.0);
    // The view now shows the pod that replaced it: that one is deleted, at once.
    let mut now_kube = kube.clone();
    let new_pod = PodView::running("mc-1".into(), "uid-1b".into(), 1);
    now_kube.edit_pods(|pods| pods[1] = Arc::new(new_pod));
    let again = reconciler.plan(&flux, Some(&now_kube), 2.0);
    assert!(
        matches!(
            &again[..],
            [Action::Kube(KubeAction::DeletePod { uid, .. })] if uid == "uid-1b"
        ),
        "{again:?}"
    );
    let status = reconciler.status(&flux, Some(&now_kube), 2.0);
    assert!(status.refused.is_empty(), "forgotten once not asked for");
    let json = serde_json::to_value(&status).unwrap();
    assert!(
        json.get("refused").is_none(),
        "no refusal, no field: {json:#}"
    );
}

#[test]
fn the_status_serializes() {
    let flux = flux_view(4, "0-3");
    let kube = kube_view(Kind::PerIndexZero, 4, 4, "0-3");
    let reconciler = Reconciler::new(PlannerConfig::default());
    let json = serde_json::to_value(reconciler.status(&flux, Some(&kube), 0.0)).unwrap();
    assert_eq!(json["real_size"], 4);
    // Ranks in the same phase for the same reason come as one group.
    assert_eq!(json["ranks"][0]["ranks"], "0");
    assert_eq!(json["ranks"][1]["ranks"], "1-3");
    assert_eq!(json["ranks"][1]["phase"], "up");
    assert_eq!(json["max_size"], 4);
}

/// What the job-manager's journal would tell of these allocated jobs: (id, ranks, time
/// limit end in seconds since the epoch, 0 for none).
fn occupancy(jobs: &[(u64, &str, f64)]) -> crate::model::queue::Occupancy {
    use crate::model::queue::{JobJournalResponse, QueueView};
    let mut queue = QueueView::new();
    let mut apply = |payload: String| {
        queue
            .apply(&JobJournalResponse::parse(&payload).unwrap())
            .unwrap()
    };
    for (id, ranks, expiration) in jobs {
        apply(format!(
            r#"{{"id":{id},"events":[{{"timestamp":1.0,"name":"alloc","context":{{}}}}],
            "R":{{"version":1,"execution":{{"R_lite":[{{"rank":"{ranks}","children":{{"core":"0"}}}}],
            "starttime":1.0,"expiration":{expiration}}}}}}}"#
        ));
    }
    apply(r#"{"id":-1,"events":[]}"#.to_owned());
    queue.occupancy()
}

#[test]
fn a_shrink_takes_idle_ranks_and_waits_while_nobody_knows_which_are_busy() {
    let mut flux = flux_view(4, "0-3");
    flux.set_occupancy(crate::model::queue::Occupancy::unknown());
    let kube = kube_view(Kind::CompleteWorkers, 4, 4, "0-3");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    reconciler.request_size(3, &flux, Some(&kube), 0.0).unwrap();
    assert!(reconciler.plan(&flux, Some(&kube), 0.0).is_empty());
    let status = reconciler.status(&flux, Some(&kube), 0.0);
    assert_eq!(
        status.waiting,
        ["shrink to 3: waiting for the job-manager to say which ranks run jobs"]
    );

    // A job on rank 3: the highest idle rank goes instead.
    flux.set_occupancy(occupancy(&[(1234, "3", 0.0)]));
    assert_eq!(
        reconciler.plan(&flux, Some(&kube), 1.0),
        vec![drain_action("2", "fluxk8s: retired by resize to 3")]
    );
}

#[test]
fn busy_victims_are_the_ranks_whose_jobs_end_first_and_the_plan_says_until_when() {
    let mut flux = flux_view(5, "0-4");
    // 14:05 and 09:30 UTC on some day; rank 4's job has no time limit.
    let day = 20_000.0 * 86_400.0;
    let at = |h: f64, m: f64| day + h * 3600.0 + m * 60.0;
    flux.set_occupancy(occupancy(&[
        (58, "1", at(14.0, 5.0)),
        (59, "2-3", at(9.0, 30.0)),
        (60, "4", 0.0),
    ]));
    let kube = kube_view(Kind::CompleteWorkers, 5, 5, "0-4");
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    reconciler.request_size(2, &flux, Some(&kube), 0.0).unwrap();
    let actions = reconciler.plan(&flux, Some(&kube), 0.0);
    // Three busy ranks must go: 2-3 (free at 09:30), then 1 (14:05), not 4 (no limit).
    assert_eq!(
        actions,
        vec![drain_action("1-3", "fluxk8s: retired by resize to 2")]
    );
    drain(&mut flux, "1-3", "fluxk8s: retired by resize to 2");
    let status = reconciler.status(&flux, Some(&kube), 1.0);
    assert_eq!(
        status.ranks.get(1).unwrap().why,
        "draining: busy (until 14:05 UTC, job ƒ21), waiting idle"
    );
    assert_eq!(
        status.ranks.get(2).unwrap().why,
        "draining: busy (until 09:30 UTC, job ƒ22), waiting idle"
    );

    // The journal says job 59 freed its ranks: 2-3 are idle and go, with no timer.
    flux.set_occupancy(occupancy(&[(58, "1", at(14.0, 5.0)), (60, "4", 0.0)]));
    let shutdowns: Vec<Action> = reconciler.plan(&flux, Some(&kube), 2.0);
    assert_eq!(
        shutdowns,
        vec![
            Action::Flux(FluxAction::Shutdown { rank: 2 }),
            Action::Flux(FluxAction::Shutdown { rank: 3 })
        ]
    );
}

mod victims_by_occupancy {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// A shrink takes idle ranks while there are enough; then busy ones whose jobs
        /// end first (no time limit: last).
        #[test]
        fn a_shrink_takes_busy_ranks_only_when_it_must_and_those_ending_first(
            size in 3..12u32,
            jobs in proptest::collection::vec((1..12u32, 0..4u8), 0..12),
            target in 1..12u32,
        ) {
            let target = target.min(size);
            let online = format!("0-{}", size - 1);
            let mut flux = flux_view(size, &online);
            // One job per busy rank; its end: none (0) or one of three times.
            let busy: BTreeMap<u32, f64> = jobs
                .iter()
                .filter(|(k, _)| *k < size)
                .map(|&(k, end)| (k, f64::from(end) * 3600.0))
                .collect();
            let allocations: Vec<(u64, String, f64)> = busy
                .iter()
                .map(|(&k, &end)| (u64::from(k) + 100, k.to_string(), end))
                .collect();
            let listed: Vec<(u64, &str, f64)> = allocations
                .iter()
                .map(|(id, ranks, end)| (*id, ranks.as_str(), *end))
                .collect();
            flux.set_occupancy(occupancy(&listed));
            let kube = kube_view(Kind::CompleteWorkers, size, size, &online);
            let mut reconciler = Reconciler::new(PlannerConfig::default());
            reconciler.request_size(target, &flux, Some(&kube), 0.0).unwrap();
            let victims: IdSet = reconciler
                .plan(&flux, Some(&kube), 0.0)
                .iter()
                .filter_map(|a| match a {
                    Action::Flux(FluxAction::Drain { ranks, .. }) => Some(ranks.clone()),
                    _ => None,
                })
                .fold(IdSet::new(), |all, ranks| all.union(&ranks));
            prop_assert_eq!(victims.len() as u32, size - target);
            prop_assert!(!victims.contains(0));
            let idle = (1..size).filter(|k| !busy.contains_key(k)).count() as u32;
            let needed = size - target;
            let busy_victims: Vec<u32> = victims.iter().filter(|k| busy.contains_key(k)).collect();
            if idle >= needed {
                prop_assert!(busy_victims.is_empty(), "took busy {busy_victims:?} with {idle} idle");
            } else {
                let end = |k: &u32| match busy[k] {
                    0.0 => f64::INFINITY,
                    t => t,
                };
                let latest_taken = busy_victims.iter().map(end).fold(0.0, f64::max);
                let earliest_kept = busy
                    .keys()
                    .filter(|k| !victims.contains(**k))
                    .map(end)
                    .fold(f64::INFINITY, f64::min);
                prop_assert!(
                    latest_taken <= earliest_kept,
                    "took a rank ending at {latest_taken}, kept one ending at {earliest_kept}"
                );
            }
        }
    }
}

#[test]
fn a_plan_told_which_ranks_changed_decides_as_one_that_reads_them_all() {
    let mut flux = flux_view(6, "0-5");
    let mut kube = kube_view(Kind::PerIndexZero, 6, 6, "0-5");
    let mut told = Reconciler::new(PlannerConfig::default());
    let mut reading_all = told.clone();
    // The pods changed since the last plan, as the engine finds them.
    let mut pods_changed = IdSet::new();
    let status_json = |status| serde_json::to_value(status).unwrap();
    let mut both_plan = |flux: &mut FluxView, kube: &KubeView, pods: &mut IdSet, now| {
        let mut changed = flux.take_changed();
        changed.add(&std::mem::take(pods));
        // A status between plans reads the kept scene with the changed ranks made again.
        let between = told.assess_since(flux, Some(kube), changed.ranks(), now);
        assert_eq!(
            status_json(told.status_of(flux, Some(kube), between.as_ref(), now)),
            status_json(reading_all.status(flux, Some(kube), now)),
            "between plans at {now}"
        );
        let actions = told.plan_since(flux, Some(kube), changed.ranks(), now);
        assert_eq!(actions, reading_all.plan(flux, Some(kube), now), "at {now}");
        // The told one's status reads its kept scene: the views are as it planned on.
        let kept = told.assess_since(flux, Some(kube), Some(&IdSet::new()), now);
        assert_eq!(
            status_json(told.status_of(flux, Some(kube), kept.as_ref(), now)),
            status_json(reading_all.status(flux, Some(kube), now)),
            "at {now}"
        );
        actions
    };
    assert!(both_plan(&mut flux, &kube, &mut pods_changed, 0.0).is_empty());
    // A lost pod: one rank's Flux state changes, and only it is read again.
    lose(&mut flux, 2);
    let lost = both_plan(&mut flux, &kube, &mut pods_changed, 1.0);
    assert_eq!(lost, vec![drain_action("2", "fluxk8s: pod lost")]);
    drain(&mut flux, "2", "fluxk8s: pod lost");
    assert!(both_plan(&mut flux, &kube, &mut pods_changed, 2.0).is_empty());
    // Its pod goes, and a replacement comes: one index's live pod changes each time.
    let before = kube.clone();
    kube.edit_pods(|pods| pods.retain(|p| p.index != 2));
    pods_changed = before.pod_index().live_changes(kube.pod_index());
    assert_eq!(pods_changed, ids("2"));
    both_plan(&mut flux, &kube, &mut pods_changed, 3.0);
    let before = kube.clone();
    kube.edit_pods(|pods| {
        pods.push(Arc::new(PodView::running(
            "mc-2b".into(),
            "uid-2b".into(),
            2,
        )))
    });
    pods_changed = before.pod_index().live_changes(kube.pod_index());
    event(&mut flux, JournalEvent::Online(ids("2")));
    let back = both_plan(&mut flux, &kube, &mut pods_changed, 4.0);
    assert_eq!(
        back,
        vec![Action::Flux(FluxAction::Undrain { ranks: ids("2") })]
    );
}
