//! Properties of the reconciler over random histories in the fake world.

mod planner_world;

use fluxk8s::model::{Action, FluxAction, IdSet, KubeAction, Outcome, Refusal};
use fluxk8s::planner::{PlannerConfig, RankPhase, Reconciler, SizeLimit};
use planner_world::{JobKind, World};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Event {
    AdminDrain(u32),
    AdminUndrain(u32),
    KillPod(u32),
    /// The pods of ranks 1..=n die at once: enough of them freezes removals.
    Outage(u32),
    Resize(u32),
    Retire(u32),
    Busy(u32),
    Idle,
    /// The leader lost its drains and fluxk8s restarted with it.
    LeaderRestart,
    /// Only the module restarted.
    ModuleRestart,
    Wait(u8),
}

const MAX: u32 = 8;

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        1 => (1..MAX).prop_map(Event::AdminDrain),
        1 => (1..MAX).prop_map(Event::AdminUndrain),
        1 => (1..MAX).prop_map(Event::KillPod),
        1 => (2..MAX).prop_map(Event::Outage),
        3 => (0..MAX + 3).prop_map(Event::Resize),
        1 => (1..MAX).prop_map(Event::Retire),
        1 => (1..MAX).prop_map(Event::Busy),
        1 => Just(Event::Idle),
        1 => Just(Event::LeaderRestart),
        1 => Just(Event::ModuleRestart),
        2 => (1..20u8).prop_map(Event::Wait),
    ]
}

fn kind() -> impl Strategy<Value = JobKind> {
    prop_oneof![
        Just(JobKind::PerIndexZero),
        Just(JobKind::CompleteWorkers),
        Just(JobKind::OperatorDefault),
        Just(JobKind::Bare)
    ]
}

fn config() -> PlannerConfig {
    PlannerConfig {
        cooldown: 10.0,
        drain_grace: Some(60.0),
        ..PlannerConfig::default()
    }
}

/// Checks every action of one pass; returns a description of the first violation.
fn check_actions(world: &World, actions: &[Action]) -> Result<(), String> {
    let max = world.max_size();
    for action in actions {
        let bad = match action {
            Action::Flux(FluxAction::Drain { ranks, .. })
            | Action::Flux(FluxAction::Undrain { ranks }) => ranks.contains(0),
            Action::Flux(FluxAction::Shutdown { rank }) => *rank == 0,
            Action::Kube(KubeAction::DeletePod { index, .. }) => *index == 0,
            Action::Kube(KubeAction::SetSize { size, .. }) => *size == 0 || *size > max,
            Action::Kube(KubeAction::RecordEvent { .. }) => false,
            Action::Kube(KubeAction::RecordDesiredSize { size }) => *size == 0,
        };
        if bad {
            return Err(format!("forbidden action {action:?}"));
        }
    }
    Ok(())
}

/// One reconcile pass with the per-pass properties checked.
fn step(world: &mut World, reconciler: &mut Reconciler) -> Result<(), TestCaseError> {
    let before = reconciler.status(&world.flux, Some(&world.kube), world.now);
    let actions = reconciler.plan(&world.flux, Some(&world.kube), world.now);
    check_actions(world, &actions).map_err(TestCaseError::fail)?;
    if let Some(frozen) = &before.frozen {
        let size = world.kube.requested_size();
        let removal = actions.iter().find(|action| match action {
            Action::Kube(KubeAction::DeletePod { .. }) => true,
            Action::Flux(FluxAction::Shutdown { .. }) => true,
            Action::Kube(KubeAction::SetSize { size: to, .. }) => *to < size,
            _ => false,
        });
        prop_assert!(removal.is_none(), "{removal:?} while frozen: {frozen}");
        if before
            .desired_size
            .is_some_and(|d| before.expected_size > d)
        {
            prop_assert!(
                before.waiting.iter().any(|w| w.contains(frozen.as_str())),
                "a shrink held by the freeze does not say so: {:?}",
                before.waiting
            );
        }
    }
    let again = reconciler.plan(&world.flux, Some(&world.kube), world.now);
    prop_assert!(again.is_empty(), "second plan on the same views: {again:?}");
    for action in &actions {
        let outcome = world.apply(action);
        // Only a pod replaced in between may refuse (the uid precondition).
        prop_assert!(
            matches!(
                outcome,
                Outcome::Done | Outcome::Refused(Refusal::Replaced { .. })
            ),
            "{action:?} failed: {outcome}"
        );
        reconciler.action_finished(action, outcome, world.now);
    }
    let status = reconciler.status(&world.flux, Some(&world.kube), world.now);
    let finished = world.kube.finished_indexes();
    for rank in status.ranks.iter() {
        let expects_pod = matches!(rank.phase, RankPhase::Up | RankPhase::Starting);
        prop_assert!(
            !(expects_pod
                && finished.contains(rank.rank)
                && rank.rank < world.kube.job.completions),
            "rank {} counted on a finished index: {rank:?}",
            rank.rank
        );
    }
    prop_assert!(status.expected_size <= world.max_size());
    world.tick();
    world.now += planner_world::STEP;
    Ok(())
}

fn apply_event(world: &mut World, reconciler: &mut Reconciler, event: &Event) {
    match event {
        Event::AdminDrain(k) => world.admin_drain(&k.to_string(), "admin"),
        Event::AdminUndrain(k) => world.admin_undrain(*k),
        Event::KillPod(k) => world.kill_pod(*k),
        Event::Outage(n) => (1..=*n).for_each(|k| world.kill_pod(k)),
        Event::Resize(n) => {
            let _ = reconciler.request_size(*n, &world.flux, Some(&world.kube), world.now);
        }
        Event::Retire(k) => {
            let ranks: IdSet = [*k].into_iter().collect();
            let _ = reconciler.request_retire(&ranks, &world.flux, Some(&world.kube));
        }
        Event::Busy(k) => {
            let busy = world.flux.busy().union(&[*k].into_iter().collect());
            world.flux.set_busy(busy);
        }
        Event::Idle => world.flux.set_busy(IdSet::new()),
        Event::LeaderRestart => {
            world.forget_drains();
            *reconciler = Reconciler::new(config());
        }
        Event::ModuleRestart => *reconciler = Reconciler::new(config()),
        Event::Wait(n) => world.now += f64::from(*n) * planner_world::STEP,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_reconciler_is_safe_and_converges(
        kind in kind(),
        size in 1..=MAX,
        events in proptest::collection::vec(event(), 1..25),
        last in 1..=MAX,
    ) {
        let mut world = World::new(kind, size, MAX);
        let mut reconciler = Reconciler::new(config());
        for event in &events {
            apply_event(&mut world, &mut reconciler, event);
            step(&mut world, &mut reconciler)?;
        }

        // Quiet: no more faults, nothing busy, one last request; time passes.
        world.flux.set_busy(IdSet::new());
        let answer = reconciler
            .request_size(last, &world.flux, Some(&world.kube), world.now)
            .unwrap();
        for _ in 0..200 {
            step(&mut world, &mut reconciler)?;
        }
        let status = reconciler.status(&world.flux, Some(&world.kube), world.now);
        let target = status.desired_size.unwrap();
        prop_assert_eq!(target, answer.target);
        prop_assert!(status.frozen.is_none(), "the freeze outlived the outage: {:#?}", status);
        let live = world.live_ranks().len() as u32;
        if status.limits.is_empty() {
            prop_assert_eq!(live, target, "status {:#?}", status);
        } else {
            // As far as it can go, and the limits name the ranks that make up the rest.
            let reachable = reconciler
                .clone()
                .request_size(target, &world.flux, Some(&world.kube), world.now)
                .unwrap()
                .reachable;
            prop_assert!(
                reachable < target,
                "limited, yet {} reachable: {:#?}",
                reachable,
                status
            );
            prop_assert_eq!(live, reachable, "status {:#?}", status);
            let named: u32 = status
                .limits
                .iter()
                .map(|limit| match limit {
                    SizeLimit::CannotComeBack { ranks } | SizeLimit::DrainedByOthers { ranks } => {
                        ranks.len() as u32
                    }
                    _ => 0,
                })
                .sum();
            prop_assert!(
                named >= target - live,
                "limits {:?} for a gap of {}",
                status.limits,
                target - live
            );
        }
        let quiet = reconciler.plan(&world.flux, Some(&world.kube), world.now);
        prop_assert!(quiet.is_empty(), "not quiet: {:?}", quiet);
    }
}
