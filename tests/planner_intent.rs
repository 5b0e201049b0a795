//! The desired size kept on the object: written when a request changes it, restored by a
//! new module (reload, rank-0 restart), and a request of its own when a user sets it.

mod planner_world;

use fluxk8s::model::{Action, Annotation, DESIRED_SIZE_ANNOTATION, FluxAction, KubeAction};
use fluxk8s::planner::{PlannerConfig, Reconciler};
use planner_world::{JobKind, World};

fn config() -> PlannerConfig {
    PlannerConfig {
        cooldown: 0.0,
        ..PlannerConfig::default()
    }
}

fn annotation(world: &World) -> Option<&str> {
    world.kube.desired_size().map(|a| a.value.as_str())
}

fn annotate(world: &mut World, value: &str, manager: &str) {
    world
        .kube
        .minicluster
        .as_mut()
        .expect("a MiniCluster")
        .desired_size = Some(Annotation {
        value: value.to_owned(),
        manager: Some(manager.to_owned()),
    });
}

#[test]
fn a_reload_and_a_rank_0_restart_keep_the_target() {
    let mut world = World::new(JobKind::OperatorDefault, 4, 8);
    let mut reconciler = Reconciler::new(config());
    world.run(&mut reconciler, 2);
    reconciler
        .request_size(6, &world.flux, Some(&world.kube), world.now)
        .unwrap();
    world.step(&mut reconciler);
    assert_eq!(annotation(&world), Some("6"), "written with the request");

    // A module reload: a new reconciler knows no request, the object does.
    reconciler = Reconciler::new(config());
    world.run(&mut reconciler, 10);
    assert_eq!(world.live_ranks().len(), 6);
    let status = reconciler.status(&world.flux, Some(&world.kube), world.now);
    assert_eq!(status.desired_size, Some(6));

    // A shrink, then rank 0 restarts without a statedir: drains and module are gone.
    reconciler
        .request_size(3, &world.flux, Some(&world.kube), world.now)
        .unwrap();
    world.run(&mut reconciler, 10);
    assert_eq!(world.live_ranks().len(), 3);
    assert_eq!(
        annotation(&world),
        Some("3"),
        "in the size patch, or alone once done"
    );
    world.forget_drains();
    reconciler = Reconciler::new(config());
    world.run(&mut reconciler, 20);
    assert_eq!(world.live_ranks().len(), 3, "{:?}", world.log);
    assert_eq!(
        reconciler
            .status(&world.flux, Some(&world.kube), world.now)
            .desired_size,
        Some(3)
    );
}

#[test]
fn a_users_annotation_is_a_drain_aware_resize_and_a_bad_one_changes_nothing() {
    let mut world = World::new(JobKind::OperatorDefault, 4, 8);
    let mut reconciler = Reconciler::new(config());
    world.run(&mut reconciler, 2);
    world.admin_drain("2", "Goodbye rank 2");
    annotate(&mut world, "3", "kubectl-annotate");
    let actions = world.step(&mut reconciler);
    let said = events(&actions);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].starts_with("ResizeRequested: "), "{said:?}");
    assert!(
        actions
            .iter()
            .all(|a| !matches!(a, Action::Kube(KubeAction::SetSize { .. }))),
        "rank 2 leaves in place, rank 3 stays: {actions:?}"
    );
    world.run(&mut reconciler, 10);
    assert_eq!(world.live_ranks().to_string(), "0-1,3");
    assert_eq!(world.kube.minicluster.as_ref().unwrap().size, 4);
    assert!(world.kube.job.completed_indexes.contains(2));

    annotate(&mut world, "three", "kubectl-annotate");
    let before = world.log.len();
    world.run(&mut reconciler, 3);
    assert_eq!(
        reconciler
            .status(&world.flux, Some(&world.kube), world.now)
            .desired_size,
        Some(3)
    );
    assert!(
        world.log[before..]
            .iter()
            .all(|(_, a)| !matches!(a, Action::Flux(FluxAction::Drain { .. }))),
        "a bad value changes nothing"
    );
}

#[test]
fn the_annotation_requests_and_refusals_are_announced() {
    let mut world = World::new(JobKind::OperatorDefault, 4, 8);
    let mut reconciler = Reconciler::new(config());
    world.run(&mut reconciler, 2);
    annotate(&mut world, "3", "kubectl-annotate");
    assert_eq!(
        events(&world.step(&mut reconciler)),
        [format!(
            "ResizeRequested: {DESIRED_SIZE_ANNOTATION}=3 set by kubectl-annotate: resizing to \
             3 live ranks, drain-aware"
        )]
    );
    annotate(&mut world, "0", "kubectl-annotate");
    let actions = world.step(&mut reconciler);
    assert_eq!(
        events(&actions),
        [format!(
            "BadDesiredSize: {DESIRED_SIZE_ANNOTATION}=\"0\" set by kubectl-annotate is not a \
             whole number >= 1: nothing changed"
        )]
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Kube(KubeAction::RecordEvent { warning: true, .. })
    )));
}

/// The Events among `actions`, as `reason: message`.
fn events(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Kube(KubeAction::RecordEvent {
                reason, message, ..
            }) => Some(format!("{reason}: {message}")),
            _ => None,
        })
        .collect()
}
