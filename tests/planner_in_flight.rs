//! One drain-state request per rank at a time: the reconciler against a Flux whose
//! answers to drains and undrains come late, while pods die and resizes change its mind.

mod planner_world;

use std::collections::VecDeque;

use fluxk8s::model::{Action, FluxAction, IdSet, Outcome};
use fluxk8s::planner::{PlannerConfig, RankPhase, Reconciler};
use planner_world::{JobKind, World};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Event {
    KillPod(u32),
    Resize(u32),
    /// The resource module answers this many of the requests it holds, oldest first.
    Answer(u8),
    /// The controllers run (pods start, brokers join) without an answer coming.
    Tick,
}

const MAX: u32 = 8;

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => (1..MAX).prop_map(Event::KillPod),
        3 => (1..=MAX).prop_map(Event::Resize),
        3 => (0..4u8).prop_map(Event::Answer),
        3 => Just(Event::Tick),
    ]
}

fn config() -> PlannerConfig {
    PlannerConfig {
        cooldown: 0.0,
        ..PlannerConfig::default()
    }
}

fn ranks_of(action: &Action) -> Option<&IdSet> {
    match action {
        Action::Flux(FluxAction::Drain { ranks, .. } | FluxAction::Undrain { ranks }) => {
            Some(ranks)
        }
        _ => None,
    }
}

/// The world, with drains and undrains held until answered.
struct Late {
    world: World,
    reconciler: Reconciler,
    unanswered: VecDeque<Action>,
    drain_state_requests: usize,
    failures: Vec<String>,
}

impl Late {
    /// Plans once; other actions are carried out at once, drains and undrains wait.
    fn plan(&mut self) -> Result<(), TestCaseError> {
        let now = self.world.now;
        for action in self
            .reconciler
            .plan(&self.world.flux, Some(&self.world.kube), now)
        {
            let Some(ranks) = ranks_of(&action) else {
                let outcome = self.world.apply(&action);
                self.reconciler.action_finished(&action, outcome, now);
                continue;
            };
            for earlier in &self.unanswered {
                let both = ranks.intersection(ranks_of(earlier).expect("drain state"));
                prop_assert!(
                    both.is_empty(),
                    "{action:?} sent while {earlier:?} is unanswered (ranks {both})"
                );
            }
            self.drain_state_requests += 1;
            self.unanswered.push_back(action);
        }
        Ok(())
    }

    /// The resource module applies the oldest request and answers it.
    fn answer(&mut self) {
        if let Some(action) = self.unanswered.pop_front() {
            let outcome = self.world.apply(&action);
            if outcome != Outcome::Done {
                self.failures.push(format!("{action:?}: {outcome}"));
            }
            self.reconciler
                .action_finished(&action, outcome, self.world.now);
        }
    }

    fn tick(&mut self) {
        self.world.tick();
        self.world.now += planner_world::STEP;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn drain_state_requests_never_overlap_and_converge(
        kind in prop_oneof![Just(JobKind::PerIndexZero), Just(JobKind::OperatorDefault)],
        size in 2..=MAX,
        events in proptest::collection::vec(event(), 1..40),
        last in 1..=MAX,
    ) {
        let mut late = Late {
            world: World::new(kind, size, MAX),
            reconciler: Reconciler::new(config()),
            unanswered: VecDeque::new(),
            drain_state_requests: 0,
            failures: Vec::new(),
        };
        for event in &events {
            match event {
                Event::KillPod(k) => late.world.kill_pod(*k),
                Event::Resize(n) => {
                    let (flux, kube, now) = (&late.world.flux, &late.world.kube, late.world.now);
                    let _ = late.reconciler.request_size(*n, flux, Some(kube), now);
                }
                Event::Answer(n) => (0..*n).for_each(|_| late.answer()),
                Event::Tick => late.tick(),
            }
            late.plan()?;
        }

        // Quiet: one last request, every answer comes, time passes.
        let (flux, kube, now) = (&late.world.flux, &late.world.kube, late.world.now);
        let answer = late.reconciler.request_size(last, flux, Some(kube), now).unwrap();
        for _ in 0..200 {
            while !late.unanswered.is_empty() {
                late.answer();
            }
            late.plan()?;
            late.tick();
        }
        while !late.unanswered.is_empty() {
            late.answer();
        }
        prop_assert!(late.failures.is_empty(), "failed requests: {:?}", late.failures);
        let status = late.reconciler.status(&late.world.flux, Some(&late.world.kube), late.world.now);
        if status.limits.is_empty() && status.frozen.is_none() {
            prop_assert_eq!(late.world.live_ranks().len() as u32, answer.target, "{:#?}", status);
        }
        // The wanted drain state: a rank the plan calls up is undrained, and a rank that
        // fluxk8s holds drained for a lost pod is not online.
        for rank in status.ranks.iter() {
            let state = late.world.flux.rank(rank.rank).expect("configured rank");
            if rank.phase == RankPhase::Up {
                prop_assert!(state.drain.is_none(), "rank {} up but drained: {:?}", rank.rank, state);
            }
            let lost_drain = state.drain.as_ref().is_some_and(|d| &*d.reason == "fluxk8s: pod lost");
            prop_assert!(!(lost_drain && state.online), "rank {} online with a lost drain", rank.rank);
        }
        let quiet = late.reconciler.plan(&late.world.flux, Some(&late.world.kube), late.world.now);
        prop_assert!(quiet.is_empty(), "not quiet: {:?}", quiet);
    }
}
