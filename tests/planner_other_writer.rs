//! Sharing the size with another writer (kubectl, an HPA): the reconciler follows its
//! changes both ways and never writes the size itself.

mod planner_world;

use fluxk8s::model::{Action, KubeAction};
use fluxk8s::planner::{PlannerConfig, Reconciler};
use planner_world::{JobKind, World};
use proptest::prelude::*;

const MAX: u32 = 10;
const HPA: &str = "horizontal-pod-autoscaler";

#[derive(Debug, Clone)]
enum Event {
    /// The other writer sets the size.
    Scale(u32),
    KillPod(u32),
    Wait,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (1..=MAX).prop_map(Event::Scale),
        1 => (1..MAX).prop_map(Event::KillPod),
        2 => Just(Event::Wait),
    ]
}

fn scale(world: &mut World, size: u32) {
    let mc = world.kube.minicluster.as_mut().expect("a MiniCluster");
    mc.size = size;
    mc.size_manager = Some(HPA.to_owned());
}

fn size_writes(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Kube(KubeAction::SetSize { .. })))
        .count()
}

#[test]
fn a_grow_after_an_outside_shrink_is_followed_not_undone() {
    let mut world = World::new(JobKind::OperatorDefault, 4, 16);
    let mut reconciler = Reconciler::new(PlannerConfig::default());
    world.run(&mut reconciler, 3);
    for size in [12, 4, 12] {
        scale(&mut world, size);
        world.run(&mut reconciler, 6);
    }
    assert_eq!(
        world
            .log
            .iter()
            .filter(|(_, a)| matches!(a, Action::Kube(KubeAction::SetSize { .. })))
            .count(),
        0,
        "fluxk8s wrote the size: {:?}",
        world.log
    );
    assert_eq!(world.live_ranks().to_string(), "0-11");
    assert!(
        world.flux.rank_sets().drained.is_empty(),
        "{:?}",
        world.flux.rank_sets().drained
    );
    let status = reconciler.status(&world.flux, Some(&world.kube), world.now);
    assert_eq!(status.desired_size, Some(12));
    assert_eq!(status.size_set_by.as_ref().unwrap().manager, HPA);
    // The drains of the shrink said what they were: an observation, lifted on return.
    let drains: Vec<String> = world
        .log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Flux(fluxk8s::model::FluxAction::Drain { ranks, reason, .. }) => {
                Some(format!("{ranks}: {reason}"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(drains, ["4-11: fluxk8s: retired (above size)"]);

    // A resize from Flux takes the size back.
    reconciler
        .request_size(6, &world.flux, Some(&world.kube), world.now)
        .unwrap();
    world.run(&mut reconciler, 12);
    assert_eq!(world.live_ranks().len(), 6);
    assert!(
        reconciler
            .status(&world.flux, Some(&world.kube), world.now)
            .size_set_by
            .is_none()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn another_writers_size_is_followed_and_never_reverted(
        size in 1..=MAX,
        events in proptest::collection::vec(event(), 1..20),
        last in 1..=MAX,
    ) {
        let mut world = World::new(JobKind::OperatorDefault, size, MAX);
        let mut reconciler = Reconciler::new(PlannerConfig::default());
        for event in &events {
            match event {
                Event::Scale(n) => scale(&mut world, *n),
                Event::KillPod(k) => world.kill_pod(*k),
                Event::Wait => world.now += 60.0,
            }
            let actions = world.step(&mut reconciler);
            prop_assert_eq!(size_writes(&actions), 0, "{:?}", actions);
        }
        let before_last = world.kube.minicluster.as_ref().unwrap().size;
        scale(&mut world, last);
        for _ in 0..60 {
            let actions = world.step(&mut reconciler);
            prop_assert_eq!(size_writes(&actions), 0, "{:?}", actions);
        }
        prop_assert_eq!(world.kube.minicluster.as_ref().unwrap().size, last);
        // The size's ranks run, undrained: drains placed only for "above size" were lifted.
        prop_assert_eq!(world.live_ranks().len() as u32, last, "{:?}", world.flux.rank_sets().drained);
        let status = reconciler.status(&world.flux, Some(&world.kube), world.now);
        if before_last != last {
            prop_assert_eq!(status.desired_size, Some(last));
        } else {
            prop_assert!(status.desired_size.is_none_or(|d| d == last), "{:?}", status.desired_size);
        }
    }
}
