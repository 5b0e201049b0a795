//! The walkthrough: a MiniCluster of 4 (max 10), rank 2 drained, then resized,
//! once per way of keeping an index gone.

mod planner_world;

use fluxk8s::model::{Action, FluxAction, IdSet, KubeAction};
use fluxk8s::planner::{PlannerConfig, RankPhase, Reconciler};
use planner_world::{JobKind, World};

fn ids(text: &str) -> IdSet {
    text.parse().unwrap()
}

fn resize(world: &mut World, reconciler: &mut Reconciler, n: u32) {
    let answer = reconciler
        .request_size(n, &world.flux, Some(&world.kube), world.now)
        .unwrap();
    assert_eq!(answer.target, n, "{answer:?}");
    world.run(reconciler, 40);
}

fn quick() -> PlannerConfig {
    PlannerConfig {
        cooldown: 10.0,
        ..PlannerConfig::default()
    }
}

/// Drain 2, then resize 3, 4, 6; returns the world for mechanism-specific checks.
fn walkthrough(kind: JobKind) -> (World, Reconciler) {
    let mut world = World::new(kind, 4, 10);
    let mut reconciler = Reconciler::new(quick());
    assert_eq!(world.live_ranks(), ids("0-3"));

    world.admin_drain("2", "bad memory");
    world.run(&mut reconciler, 20);
    let drain = world.flux.rank(2).unwrap().drain.clone().unwrap();
    assert_eq!(
        drain.reason, "bad memory",
        "the admin drain is left as it is"
    );

    resize(&mut world, &mut reconciler, 3);
    assert_eq!(world.live_ranks(), ids("0-1,3"));
    (world, reconciler)
}

#[test]
fn per_index_backoff_deletes_the_pod_and_it_stays_gone() {
    let (mut world, mut reconciler) = walkthrough(JobKind::PerIndexZero);
    assert!(world.kube.job.failed_indexes.contains(2));
    assert!(!world.live_indexes().contains(2));
    let deletes: Vec<_> = world
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::Kube(KubeAction::DeletePod { .. })))
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");

    resize(&mut world, &mut reconciler, 4);
    assert_eq!(world.live_ranks(), ids("0-1,3-4"));
    resize(&mut world, &mut reconciler, 6);
    assert_eq!(world.live_ranks(), ids("0-1,3-6"));
    assert!(!world.live_indexes().contains(2));
    let status = reconciler.status(&world.flux, Some(&world.kube), world.now);
    assert_eq!((status.real_size, status.expected_size), (6, 6));
    assert_eq!(status.ranks[2].phase, RankPhase::Retired);
    assert_eq!(
        status.ranks[2].why,
        "retired: index failed, drained by others"
    );
}

#[test]
fn complete_workers_disconnects_the_broker_and_the_index_completes() {
    let (mut world, mut reconciler) = walkthrough(JobKind::CompleteWorkers);
    assert!(world.kube.job.completed_indexes.contains(2));
    assert!(
        world
            .log
            .iter()
            .any(|(_, a)| a == &Action::Flux(FluxAction::Disconnect { rank: 2 }))
    );
    resize(&mut world, &mut reconciler, 4);
    resize(&mut world, &mut reconciler, 6);
    assert_eq!(world.live_ranks(), ids("0-1,3-6"));
    assert!(!world.live_indexes().contains(2));
}

#[test]
fn a_bare_job_keeps_the_rank_drained_and_says_why() {
    let (mut world, mut reconciler) = walkthrough(JobKind::Bare);
    assert!(world.live_indexes().contains(2), "nothing could remove it");
    let status = reconciler.status(&world.flux, Some(&world.kube), world.now);
    assert_eq!(status.ranks[2].phase, RankPhase::Drained);
    assert!(
        status.ranks[2].why.contains("no mechanism"),
        "{:?}",
        status.ranks[2]
    );
    assert!(
        status.waiting.iter().any(|w| w.contains("rank 2")),
        "{:?}",
        status.waiting
    );
    assert!(!world.log.iter().any(|(_, a)| matches!(
        a,
        Action::Kube(KubeAction::DeletePod { .. }) | Action::Flux(FluxAction::Disconnect { .. })
    )));

    resize(&mut world, &mut reconciler, 4);
    assert_eq!(world.live_ranks(), ids("0-1,3-4"));
    resize(&mut world, &mut reconciler, 6);
    assert_eq!(world.live_ranks(), ids("0-1,3-6"));

    // Shrinking to 2 retires the top ranks by lowering the size; rank 2 goes with them.
    resize(&mut world, &mut reconciler, 2);
    assert_eq!(world.live_ranks(), ids("0-1"));
    assert_eq!(world.kube.job.completions, 2);
}

#[test]
fn dry_run_reissues_only_after_the_retry_interval() {
    let mut world = World::new(JobKind::PerIndexZero, 4, 10);
    world.dry_run = true;
    let mut reconciler = Reconciler::new(quick());
    world.admin_drain("2", "bad memory");
    // Dry run: the drain is already there (admin), the delete is "done" but nothing happens.
    world.run(&mut reconciler, 30);
    let deletes: Vec<f64> = world
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::Kube(KubeAction::DeletePod { .. })))
        .map(|(t, _)| *t)
        .collect();
    let retry = reconciler.config().retry_interval;
    assert!(deletes.len() >= 2, "{deletes:?}");
    assert!(
        deletes.windows(2).all(|w| w[1] - w[0] >= retry),
        "{deletes:?}"
    );
    assert!(world.live_indexes().contains(2));
}
