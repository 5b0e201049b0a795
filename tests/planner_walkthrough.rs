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
        &*drain.reason, "bad memory",
        "the admin drain is left as it is"
    );

    resize(&mut world, &mut reconciler, 3);
    assert_eq!(world.live_ranks(), ids("0-1,3"));
    (world, reconciler)
}

/// The drained rank's broker is shut down cleanly: exit 0 completes its index, which the
/// Job then never recreates, whatever its failure policy.
fn shutdown_retires_rank_2(kind: JobKind) {
    let (mut world, mut reconciler) = walkthrough(kind);
    assert!(world.kube.job.completed_indexes.contains(2));
    let removals: Vec<_> = world
        .log
        .iter()
        .filter(|(_, a)| {
            matches!(
                a,
                Action::Flux(FluxAction::Shutdown { .. })
                    | Action::Kube(KubeAction::DeletePod { .. })
            )
        })
        .map(|(_, a)| a.clone())
        .collect();
    assert_eq!(
        removals,
        vec![Action::Flux(FluxAction::Shutdown { rank: 2 })]
    );

    resize(&mut world, &mut reconciler, 4);
    assert_eq!(world.live_ranks(), ids("0-1,3-4"));
    resize(&mut world, &mut reconciler, 6);
    assert_eq!(world.live_ranks(), ids("0-1,3-6"));
    assert!(!world.live_indexes().contains(2));
    let status = reconciler.status(&world.flux, Some(&world.kube), world.now);
    assert_eq!((status.real_size, status.expected_size), (6, 6));
    assert_eq!(status.ranks.get(2).unwrap().phase, RankPhase::Retired);
    assert_eq!(
        status.ranks.get(2).unwrap().why,
        "retired: index completed, drained by others"
    );

    // Shrinking to 2 retires the top ranks by lowering the size.
    resize(&mut world, &mut reconciler, 2);
    assert_eq!(world.live_ranks(), ids("0-1"));
    assert_eq!(world.kube.job.completions, 2);
}

#[test]
fn per_index_backoff_job_retires_rank_2_by_shutdown() {
    shutdown_retires_rank_2(JobKind::PerIndexZero);
}

#[test]
fn complete_workers_job_retires_rank_2_by_shutdown() {
    shutdown_retires_rank_2(JobKind::CompleteWorkers);
}

#[test]
fn operator_default_job_retires_rank_2_by_shutdown() {
    shutdown_retires_rank_2(JobKind::OperatorDefault);
}

#[test]
fn bare_job_retires_rank_2_by_shutdown() {
    shutdown_retires_rank_2(JobKind::Bare);
}

#[test]
fn dry_run_reissues_only_after_the_retry_interval() {
    let mut world = World::new(JobKind::PerIndexZero, 4, 10);
    world.dry_run = true;
    let mut reconciler = Reconciler::new(quick());
    world.admin_drain("2", "bad memory");
    // Dry run: the drain is already there (admin), the shutdown is "done" but nothing
    // happens, so it is asked again, no sooner than the retry interval.
    world.run(&mut reconciler, 30);
    let shutdowns: Vec<f64> = world
        .log
        .iter()
        .filter(|(_, a)| a == &Action::Flux(FluxAction::Shutdown { rank: 2 }))
        .map(|(t, _)| *t)
        .collect();
    let retry = reconciler.config().retry_interval;
    assert!(shutdowns.len() >= 2, "{shutdowns:?}");
    assert!(
        shutdowns.windows(2).all(|w| w[1] - w[0] >= retry),
        "{shutdowns:?}"
    );
    assert!(world.live_indexes().contains(2));
}
