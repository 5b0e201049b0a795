//! A tiny fake of Kubernetes (Job controller + Flux Operator) and Flux, applying the
//! planner's actions the way docs/kubernetes.md §1–§4 and docs/flux-core.md §2–§4 describe.
//! Flux state is fed to the real `FluxView` as journal/overlay JSON payloads.
//!
//! It stays apart from `fluxk8s::scenario::World` on purpose: time here is virtual (a pass
//! every 5 s, so cooldowns, start-up timeouts and rate windows of minutes pass in
//! microseconds) and a pass is a pure function of the views, which the property tests
//! need to run hundreds of cases each and shrink a failure to the same failure. The World
//! runs in real time, with an HTTP server, a driver thread and kubelet timers, so each
//! case would take real seconds and thread scheduling would decide the interleaving.

#![allow(dead_code)] // each test binary uses a different part of the world

use std::sync::Arc;

use fluxk8s::model::flux::{JournalResponse, OverlayStatus};
use fluxk8s::model::{
    Action, Annotation, FIELD_MANAGER, FluxAction, FluxView, IdSet, JobView, KubeAction, KubeView,
    MiniClusterView, Outcome, PodPhase, PodView, Refusal, Retry,
};
use fluxk8s::planner::Reconciler;

/// How the Job keeps a retired index gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// MiniCluster whose Job has `backoffLimitPerIndex: 0`: a deleted pod fails its index.
    PerIndexZero,
    /// MiniCluster with `completeWorkers`: an exiting broker completes its index.
    CompleteWorkers,
    /// MiniCluster as the Flux Operator makes it by default: a broker that exits 0
    /// completes its index, a deleted pod comes back.
    OperatorDefault,
    /// A plain Indexed Job, no operator: deleted pods come back.
    Bare,
}

/// Seconds between two reconcile passes.
pub const STEP: f64 = 5.0;

pub struct World {
    pub kind: JobKind,
    pub flux: FluxView,
    pub kube: KubeView,
    pub now: f64,
    /// Actions are acknowledged but not carried out.
    pub dry_run: bool,
    next_uid: u64,
    /// Every action the planner issued, with the time.
    pub log: Vec<(f64, Action)>,
}

impl World {
    /// A running instance: `size` pods of `max` configured ranks, all online.
    pub fn new(kind: JobKind, size: u32, max: u32) -> Self {
        let minicluster = (kind != JobKind::Bare).then(|| MiniClusterView {
            name: "mc".into(),
            uid: "mc-uid".into(),
            size,
            max_size: max,
            complete_workers: kind == JobKind::CompleteWorkers,
            size_manager: None,
            desired_size: None,
        });
        let job = JobView {
            backoff_limit_per_index: (kind == JobKind::PerIndexZero).then_some(0),
            ..JobView::new("mc", "job-uid", size)
        };
        let mut world = World {
            kind,
            flux: FluxView::new(),
            kube: KubeView::new(job, minicluster, Vec::new()),
            now: 1000.0,
            dry_run: false,
            next_uid: 0,
            log: Vec::new(),
        };
        world.replay_backlog(&IdSet::new());
        world.settle();
        world
    }

    fn journal(&mut self, name: &str, context: &str) {
        let payload = format!(
            r#"{{"events":[{{"timestamp":{},"name":"{name}","context":{context}}}]}}"#,
            self.now
        );
        let response = JournalResponse::parse(&payload).expect("world payload parses");
        self.flux
            .apply_journal(&response)
            .expect("world event applies");
    }

    fn overlay(&mut self, rank: u32, status: &str) {
        let payload = format!(r#"{{"rank":{rank},"status":"{status}","torpid":false}}"#);
        let status = OverlayStatus::parse(&payload).expect("world overlay parses");
        self.flux
            .apply_overlay(&status)
            .expect("world overlay applies");
    }

    /// A journal (re)subscription as after a leader restart without a persistent statedir:
    /// the backlog starts from the ranks online now and has no drains.
    pub fn replay_backlog(&mut self, online: &IdSet) {
        let max = self.max_size();
        self.flux.restart_journal();
        self.journal(
            "restart",
            &format!(
                r#"{{"ranks":"0-{}","online":"{online}","nodelist":"mc-[0-{}]"}}"#,
                max - 1,
                max - 1
            ),
        );
        self.journal("resource-define", r#"{"method":"configuration"}"#);
        let end = JournalResponse::parse(r#"{"events":[]}"#).expect("sentinel parses");
        self.flux.apply_journal(&end).expect("sentinel applies");
    }

    /// The leader lost its drains (`kill -9` without a persistent statedir).
    pub fn forget_drains(&mut self) {
        let online = self.flux.rank_sets().online.clone();
        self.replay_backlog(&online);
    }

    pub fn max_size(&self) -> u32 {
        self.kube
            .minicluster
            .as_ref()
            .map_or(self.kube.job.completions.max(10), |mc| mc.max_size)
    }

    fn broker_gone(&mut self, index: u32, how: &str) {
        if self.flux.rank(index).is_some_and(|r| r.online) {
            self.overlay(index, how);
            self.journal("offline", &format!(r#"{{"idset":"{index}"}}"#));
        }
    }

    fn remove_pod(&mut self, index: u32) {
        self.kube
            .edit_pods(|pods| pods.retain(|p| p.index != index));
    }

    /// One round of the controllers: the operator copies `spec.size`, the Job controller
    /// truncates index lists, removes pods above the size and creates missing ones;
    /// Pending pods start and their brokers join.
    pub fn tick(&mut self) {
        if let Some(mc) = &self.kube.minicluster {
            self.kube.job.parallelism = mc.size;
            self.kube.job.completions = mc.size;
        }
        let size = self.kube.job.completions;
        let keep_below = |ids: &IdSet| ids.iter().filter(|&k| k < size).collect::<IdSet>();
        self.kube.job.completed_indexes = keep_below(&self.kube.job.completed_indexes);
        self.kube.job.failed_indexes = keep_below(&self.kube.job.failed_indexes);
        let above: Vec<u32> = self
            .kube
            .pods()
            .iter()
            .filter(|p| p.index >= size)
            .map(|p| p.index)
            .collect();
        for index in above {
            self.broker_gone(index, "offline");
            self.remove_pod(index);
        }
        let mut joined = IdSet::new();
        self.kube.edit_pods(|pods| {
            for pod in pods.iter_mut().map(Arc::make_mut) {
                if pod.phase == PodPhase::Pending {
                    pod.phase = PodPhase::Running;
                    pod.ready = true;
                    joined.insert(pod.index);
                }
            }
        });
        for index in joined.iter() {
            self.journal("online", &format!(r#"{{"idset":"{index}"}}"#));
            self.overlay(index, "full");
        }
        let finished = self.kube.finished_indexes();
        let live = self.live_indexes();
        let missing: Vec<u32> = (0..size)
            .filter(|&k| !finished.contains(k) && !live.contains(k))
            .collect();
        self.kube.edit_pods(|pods| {
            for index in missing {
                self.next_uid += 1;
                pods.push(Arc::new(PodView {
                    name: format!("mc-{index}-{}", self.next_uid),
                    uid: format!("uid-{}", self.next_uid),
                    index,
                    phase: PodPhase::Pending,
                    ready: false,
                    terminating: false,
                }));
            }
        });
        self.kube.job.active = self.kube.pods().iter().filter(|p| p.is_live()).count() as u32;
    }

    /// Ticks until nothing is pending.
    pub fn settle(&mut self) {
        for _ in 0..4 {
            self.tick();
        }
    }

    /// Carries out one action as Kubernetes and Flux would; errors are the ones they give.
    pub fn apply(&mut self, action: &Action) -> Outcome {
        if self.dry_run {
            return Outcome::Done;
        }
        match action {
            Action::Flux(FluxAction::Drain {
                ranks,
                reason,
                overwrite,
            }) => {
                // Stricter than fluxk8s's `update` mode: a drain of a drained rank is a
                // wasted request, and shows as one.
                if !overwrite && let Some(k) = ranks.iter().find(|&k| self.drained(k)) {
                    return Retry::Conflict(format!("rank {k} already drained")).into();
                }
                let overwrite = u8::from(*overwrite);
                self.journal(
                    "drain",
                    &format!(
                        r#"{{"idset":"{ranks}","reason":"{reason}","overwrite":{overwrite}}}"#
                    ),
                );
            }
            Action::Flux(FluxAction::Undrain { ranks }) => {
                if let Some(k) = ranks.iter().find(|&k| !self.drained(k)) {
                    return Retry::Conflict(format!("rank {k} not drained")).into();
                }
                self.journal("undrain", &format!(r#"{{"idset":"{ranks}"}}"#));
            }
            Action::Flux(FluxAction::Shutdown { rank }) => {
                if !self.flux.rank(*rank).is_some_and(|r| r.online) {
                    // A one-way request to a broker that is not there goes nowhere.
                    return Outcome::Done;
                }
                // The broker exits 0; the container (the operator's worker loop, or the
                // broker itself in a bare Job) ends with it and the pod succeeds.
                self.broker_gone(*rank, "offline");
                self.remove_pod(*rank);
                self.kube.job.completed_indexes.insert(*rank);
                self.kube.job.succeeded += 1;
            }
            Action::Kube(KubeAction::DeletePod { index, uid, .. }) => {
                if !self.kube.pods().iter().any(|p| &p.uid == uid) {
                    // The uid precondition fails: nothing is deleted.
                    return Refusal::Replaced { current_uid: None }.into();
                }
                self.pod_failed(*index);
            }
            Action::Kube(KubeAction::SetSize { size, desired, .. }) => {
                if *size > self.max_size() {
                    return Refusal::Invalid(format!("size {size} denied above maximum")).into();
                }
                match &mut self.kube.minicluster {
                    Some(mc) => mc.size = *size,
                    None => {
                        self.kube.job.parallelism = *size;
                        self.kube.job.completions = *size;
                    }
                }
                if let Some(desired) = desired {
                    self.record_desired_size(*desired);
                }
            }
            Action::Kube(KubeAction::RecordEvent { .. }) => {}
            Action::Kube(KubeAction::RecordDesiredSize { size }) => self.record_desired_size(*size),
        }
        Outcome::Done
    }

    /// fluxk8s's write of the desired-size annotation.
    fn record_desired_size(&mut self, size: u32) {
        let annotation = Some(Annotation {
            value: size.to_string(),
            manager: Some(FIELD_MANAGER.to_owned()),
        });
        match &mut self.kube.minicluster {
            Some(mc) => mc.desired_size = annotation,
            None => self.kube.job.desired_size = annotation,
        }
    }

    fn drained(&self, k: u32) -> bool {
        self.flux.rank(k).is_some_and(|r| r.drain.is_some())
    }

    /// A pod dies (deleted, evicted, node lost): its index fails with per-index backoff 0,
    /// completes with completeWorkers (the worker loop ends on any exit), else comes back.
    fn pod_failed(&mut self, index: u32) {
        self.broker_gone(index, "lost");
        self.remove_pod(index);
        self.kube.job.failed += 1;
        match self.kind {
            JobKind::PerIndexZero => {
                self.kube.job.failed_indexes.insert(index);
            }
            JobKind::CompleteWorkers => {
                self.kube.job.completed_indexes.insert(index);
            }
            JobKind::OperatorDefault | JobKind::Bare => {}
        }
    }

    /// A pod vanishes behind fluxk8s's back.
    pub fn kill_pod(&mut self, index: u32) {
        if self.kube.live_pod(index).is_some() {
            self.pod_failed(index);
        }
    }

    pub fn admin_drain(&mut self, ranks: &str, reason: &str) {
        let ranks: IdSet = ranks.parse().expect("test idset");
        let fresh: IdSet = ranks.iter().filter(|&k| !self.drained(k)).collect();
        if !fresh.is_empty() {
            self.journal(
                "drain",
                &format!(r#"{{"idset":"{fresh}","reason":"{reason}","overwrite":0}}"#),
            );
        }
    }

    pub fn admin_undrain(&mut self, k: u32) {
        if self
            .flux
            .rank(k)
            .and_then(|r| r.drain.as_ref())
            .is_some_and(|d| !d.ours)
        {
            self.journal("undrain", &format!(r#"{{"idset":"{k}"}}"#));
        }
    }

    /// One reconcile pass: plan, carry out, report, then let the controllers run.
    /// Returns the actions issued.
    pub fn step(&mut self, reconciler: &mut Reconciler) -> Vec<Action> {
        let mut actions = reconciler.plan(&self.flux, Some(&self.kube), self.now);
        actions.extend(reconciler.records(Some(&self.kube), self.now));
        for action in &actions {
            let outcome = self.apply(action);
            reconciler.action_finished(action, outcome, self.now);
            self.log.push((self.now, action.clone()));
        }
        self.tick();
        self.now += STEP;
        actions
    }

    /// Runs `steps` passes.
    pub fn run(&mut self, reconciler: &mut Reconciler, steps: usize) {
        for _ in 0..steps {
            self.step(reconciler);
        }
    }

    /// Indexes with a live pod.
    pub fn live_indexes(&self) -> IdSet {
        self.kube
            .pods()
            .iter()
            .filter(|p| p.is_live())
            .map(|p| p.index)
            .collect()
    }

    /// Online, undrained ranks.
    pub fn live_ranks(&self) -> IdSet {
        let sets = self.flux.rank_sets();
        sets.online.difference(&sets.drained)
    }
}
