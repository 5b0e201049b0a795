//! The sans-I/O core that the broker module, the demo and the end-to-end tests share:
//! Flux stream payloads, Kubernetes driver reports and requests go in; [`Effect`]s (RPCs
//! to send, driver commands to queue) come out, each with an id whose result comes back
//! through [`Engine::finished`]. Time comes in as `now`; nothing here blocks or does I/O.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use crate::model::flux::{FluxView, JournalEvent, JournalResponse, OverlayStatus};
use crate::model::history::{FluxState, History};
use crate::model::queue::{JobJournalResponse, Occupancy, QueueView};
use crate::model::{
    Action, ChangedRanks, DRAIN_REASON_PREFIX, FluxAction, IdSet, KubeAction, KubeView, Outcome,
    PodIndex, Problem, Refusal, Report, Retry,
};
use crate::planner::{
    Assessment, AutoscaleConfig, Autoscaler, Decision, PlannerConfig, Reconciler, RequestError,
    ResizeAnswer, RetireAnswer, Supply,
};

mod status;

pub use status::{
    AutoscaleReport, FluxStatus, KubeStatus, ProblemStatus, Progress, RankDetail, RecentProblem,
    Status,
};

/// How many recent errors the status keeps.
const PROBLEMS_KEPT: usize = 20;

/// Something the shell must do; its result comes back through [`Engine::finished`].
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send this request to a broker.
    FluxRpc { id: u64, request: FluxRequest },
    /// Queue this command on the Kubernetes driver.
    Kube { id: u64, action: KubeAction },
}

/// A request to a broker service.
#[derive(Debug, Clone, PartialEq)]
pub struct FluxRequest {
    pub topic: &'static str,
    pub payload: String,
    /// The rank whose broker serves it.
    pub nodeid: u32,
    /// False for a one-way request (no response is sent): it is done once sent.
    pub expects_reply: bool,
}

/// How a Flux request failed: the errno of its error response (or of the failed send)
/// and the text that came with it.
#[derive(Debug, Clone, PartialEq)]
pub struct FluxFailure {
    pub errno: i32,
    pub text: String,
}

impl FluxFailure {
    /// What the failure means for the `action` that sent the request.
    fn outcome(self, action: Option<&Action>) -> Outcome {
        let drain_state = matches!(
            action,
            Some(Action::Flux(
                FluxAction::Drain { .. } | FluxAction::Undrain { .. }
            ))
        );
        match self.errno {
            // From the resource module: the rank already is as asked (an undrain of a rank
            // that is not drained) or is unknown to it. The view that planned the request
            // lagged behind the journal, which will bring it up to date.
            libc::EEXIST | libc::ENOENT if drain_state => {
                tracing::debug!("{}: the journal will show the rank as it is", self.text);
                Outcome::Done
            }
            libc::EEXIST | libc::ENOENT => Retry::Conflict(self.text).into(),
            libc::EINVAL | libc::EPROTO => Refusal::Invalid(self.text).into(),
            libc::ETIMEDOUT => Retry::Timeout(self.text).into(),
            // EHOSTUNREACH, ENOSYS (a broker or service not up yet), ...
            _ => Retry::Unreachable(self.text).into(),
        }
    }
}

/// The request that carries out a Flux-side action.
pub fn flux_request(action: &FluxAction) -> FluxRequest {
    let to_leader = |topic, payload: Value| FluxRequest {
        topic,
        payload: payload.to_string(),
        nodeid: 0,
        expects_reply: true,
    };
    match action {
        // "update" keeps a drain someone set meanwhile instead of failing with EEXIST.
        FluxAction::Drain {
            ranks,
            reason,
            overwrite,
        } => to_leader(
            "resource.drain",
            json!({
                "targets": ranks.to_string(),
                "reason": reason,
                "mode": if *overwrite { "overwrite" } else { "update" },
            }),
        ),
        FluxAction::Undrain { ranks } => {
            to_leader("resource.undrain", json!({"targets": ranks.to_string()}))
        }
        // The broker's own state machine: "shutdown" takes a follower through cleanup and
        // rc3 to exit 0. The service only takes one-way requests.
        FluxAction::Shutdown { rank } => FluxRequest {
            topic: "state-machine.post",
            payload: json!({"event": "shutdown", "error": false}).to_string(),
            nodeid: *rank,
            expects_reply: false,
        },
    }
}

/// The ranks an action is about, if it is about ranks.
fn action_ranks(action: &Action) -> Option<IdSet> {
    match action {
        Action::Flux(FluxAction::Drain { ranks, .. } | FluxAction::Undrain { ranks }) => {
            Some(ranks.clone())
        }
        Action::Flux(FluxAction::Shutdown { rank: k })
        | Action::Kube(KubeAction::DeletePod { index: k, .. }) => Some(IdSet::range(*k, *k)),
        Action::Kube(_) => None,
    }
}

/// The latest Kubernetes view from the driver.
#[derive(Debug, Default)]
struct KubeSide {
    view: Option<KubeView>,
    /// `view` is the view the last plan read.
    view_planned: bool,
    /// The pod index of the view the last plan read, once a newer view replaced it: the
    /// next plan compares it with its own view's, once for all the views between. (Before
    /// the first view there is none to compare: a plan without both views synced keeps no
    /// scene, so the first plan on a view reads every rank.)
    planned_index: Option<PodIndex>,
    /// Every watch has listed once: decisions may use the view.
    synced: bool,
    problems: BTreeMap<String, Problem>,
    /// How often the driver restarted after a panic.
    restarts: u32,
}

impl KubeSide {
    fn synced(&self) -> Option<&KubeView> {
        self.view.as_ref().filter(|_| self.synced)
    }
}

/// Counters for the status.
#[derive(Debug, Default, Clone, Serialize)]
pub struct EngineCounters {
    pub journal_events: u64,
    pub overlay_events: u64,
    pub job_events: u64,
    pub kube_reports: u64,
    pub plans: u64,
    pub actions: u64,
    pub actions_failed: u64,
}

/// Views, reconciler, and the actions in flight.
#[derive(Debug)]
pub struct Engine {
    flux: FluxView,
    kube: KubeSide,
    reconciler: Reconciler,
    /// The job queue: who holds which ranks, and for autoscaling what waits.
    queue: QueueView,
    /// The queue's allocation revision the Flux view was last given.
    allocations_seen: u64,
    /// `None` while autoscaling is off.
    autoscaler: Option<Autoscaler>,
    dry_run: bool,
    next_id: u64,
    in_flight: BTreeMap<u64, Action>,
    /// Overlay payloads that arrived before the journal told the instance size (the two
    /// streams race at subscription), applied once it has.
    early_overlay: Vec<String>,
    problems: VecDeque<(f64, String)>,
    counters: EngineCounters,
    /// What was seen and done, for `<name>.history` and the pictures.
    history: History,
    /// The reconciler's last assessment for a status or a watcher, dropped by every
    /// change to the engine: statuses asked while nothing changes put it into words again
    /// instead of passing over every rank each time.
    assessed: RefCell<Option<Assessed>>,
    /// Something the planner reads changed since the last plan. Without it a step plans
    /// only once a deadline of [`Engine::wake_at`] has come: a plan on the same inputs
    /// decides what the last one did.
    unplanned: bool,
}

/// An assessment, and the times it holds for: from when it was made until the
/// reconciler's next deadline.
#[derive(Debug)]
struct Assessed {
    from: f64,
    until: Option<f64>,
    /// `None`: the views were not both synced.
    assessment: Option<Arc<Assessment>>,
}

impl Engine {
    pub fn new(planner: PlannerConfig, dry_run: bool) -> Self {
        Engine {
            flux: FluxView::new(),
            kube: KubeSide::default(),
            reconciler: Reconciler::new(planner),
            queue: QueueView::new(),
            allocations_seen: 0,
            autoscaler: None,
            dry_run,
            next_id: 0,
            in_flight: BTreeMap::new(),
            early_overlay: Vec::new(),
            problems: VecDeque::new(),
            counters: EngineCounters::default(),
            history: History::new(),
            assessed: RefCell::new(None),
            unplanned: true,
        }
    }

    /// New tunables from a configuration reload; requests and actions in flight stay.
    pub fn reconfigure(&mut self, planner: PlannerConfig, dry_run: bool) {
        self.changed();
        self.reconciler.set_config(planner);
        self.dry_run = dry_run;
    }

    /// Turns autoscaling on (or retunes it) or off; idle times survive a retune.
    pub fn set_autoscale(&mut self, config: Option<AutoscaleConfig>) {
        self.changed();
        match (config, self.autoscaler.as_mut()) {
            (Some(config), Some(autoscaler)) => autoscaler.set_config(config),
            (config, _) => self.autoscaler = config.map(Autoscaler::new),
        }
    }

    fn forget_assessment(&mut self) {
        *self.assessed.get_mut() = None;
    }

    /// Something the planner reads changed: the assessment no longer holds, and the next
    /// step plans.
    fn changed(&mut self) {
        self.forget_assessment();
        self.unplanned = true;
    }

    /// The reconciler's assessment at `now`: the last one while it holds.
    fn assessment(&self, now: f64) -> Option<Arc<Assessment>> {
        let mut assessed = self.assessed.borrow_mut();
        if let Some(kept) = assessed.as_ref()
            && kept.from <= now
            && kept.until.is_none_or(|until| now < until)
        {
            return kept.assessment.clone();
        }
        // The last plan's scene holds but for the ranks changed since.
        let changed = self.with_pod_changes(self.flux.changed().clone());
        let assessment = self
            .reconciler
            .assess_since(&self.flux, self.kube.synced(), changed.ranks(), now)
            .map(Arc::new);
        *assessed = Some(Assessed {
            from: now,
            until: self.reconciler.wake_at(),
            assessment: assessment.clone(),
        });
        assessment
    }

    pub fn queue(&self) -> &QueueView {
        &self.queue
    }

    /// When to step again even if no event comes: the planner's next deadline (a rate
    /// window, cooldown or timeout ends; moves left for the next pass) or autoscaling's.
    pub fn wake_at(&self) -> Option<f64> {
        let autoscale = self.autoscaler.as_ref().and_then(|a| a.status().wake_at);
        [self.reconciler.wake_at(), autoscale]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp)
    }

    pub fn flux(&self) -> &FluxView {
        &self.flux
    }

    pub fn kube(&self) -> Option<&KubeView> {
        self.kube.view.as_ref()
    }

    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// What the engine saw and did, bounded.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Logs an error and keeps it for the status.
    pub fn note_problem(&mut self, now: f64, text: String) {
        tracing::error!("{text}");
        if self.problems.len() == PROBLEMS_KEPT {
            self.problems.pop_front();
        }
        self.problems.push_back((now, text));
    }

    /// A new `resource.journal` subscription starts: its backlog replays everything.
    pub fn journal_restarted(&mut self) {
        self.changed();
        self.flux.restart_journal();
    }

    /// One `resource.journal` response. A bad one is reported and skipped, not fatal.
    pub fn journal(&mut self, payload: &str, now: f64) {
        self.changed();
        self.counters.journal_events += 1;
        let applied = JournalResponse::parse(payload)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                self.flux.apply_journal(&r).map_err(|e| e.to_string())?;
                self.record_journal(&r, now);
                // The instance's R tells the node size that slot-only jobs are sized by.
                r.resources
                    .map_or(Ok(()), |resources| self.queue.set_resources(&resources))
            });
        if let Err(err) = applied {
            self.note_problem(now, format!("resource.journal: {err}: {payload}"));
        }
        if self.flux.size() > 0 {
            for early in std::mem::take(&mut self.early_overlay) {
                self.apply_overlay(&early, now);
            }
        }
    }

    /// Records the new state of the ranks a journal response named, and a drain someone
    /// else made (once the backlog is over) as their request.
    fn record_journal(&mut self, response: &JournalResponse, now: f64) {
        let mut named = IdSet::new();
        for entry in &response.entries {
            match &entry.event {
                JournalEvent::Restart { .. } => {
                    named = IdSet::range(0, self.flux.size().saturating_sub(1));
                }
                JournalEvent::Drain { ranks, reason, .. } if self.flux.synced() => {
                    let reason = reason.as_deref().unwrap_or_default();
                    if !reason.starts_with(DRAIN_REASON_PREFIX) {
                        let text = format!("drain {ranks} ({reason})");
                        self.history.request(now, &text, Some(ranks));
                    }
                    named = named.union(ranks);
                }
                event => {
                    if let Some(ranks) = event.ranks() {
                        named = named.union(ranks);
                    }
                }
            }
        }
        self.record_ranks(&named, now);
    }

    fn record_ranks(&mut self, ranks: &IdSet, now: f64) {
        let flux = &self.flux;
        let states = ranks
            .iter()
            .filter_map(|k| Some((k, FluxState::of(flux.rank(k)?))));
        self.history.flux(now, states);
    }

    /// A new `job-manager.events-journal` subscription starts: its backlog resends every
    /// active job, and until it has, any rank may be running one.
    pub fn job_journal_restarted(&mut self) {
        self.changed();
        self.queue.restart();
        self.follow_allocations();
    }

    /// One `job-manager.events-journal` response.
    pub fn job_journal(&mut self, payload: &str, now: f64) {
        self.changed();
        self.counters.job_events += 1;
        let applied = JobJournalResponse::parse(payload)
            .map_err(|e| e.to_string())
            .and_then(|r| self.queue.apply(&r));
        if let Err(err) = applied {
            self.note_problem(now, format!("job-manager.events-journal: {err}: {payload}"));
        }
        self.follow_allocations();
    }

    /// There is no job-manager (its journal answers ENOSYS), so no job runs.
    pub fn no_job_manager(&mut self) {
        self.changed();
        self.queue.restart();
        self.flux.set_occupancy(Occupancy::default());
        self.allocations_seen = self.queue.allocation_revision();
    }

    /// Gives the Flux view the queue's allocations when they changed.
    fn follow_allocations(&mut self) {
        let revision = self.queue.allocation_revision();
        if revision != self.allocations_seen {
            self.allocations_seen = revision;
            self.flux.set_occupancy(self.queue.occupancy());
        }
    }

    /// One `overlay.monitor` response.
    pub fn overlay(&mut self, payload: &str, now: f64) {
        self.changed();
        self.counters.overlay_events += 1;
        if self.flux.size() == 0 {
            self.early_overlay.push(payload.to_owned());
            return;
        }
        self.apply_overlay(payload, now);
    }

    fn apply_overlay(&mut self, payload: &str, now: f64) {
        let applied = OverlayStatus::parse(payload)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                self.flux.apply_overlay(&s).map_err(|e| e.to_string())?;
                Ok(s.rank)
            });
        match applied {
            Ok(rank) => self.record_ranks(&IdSet::range(rank, rank), now),
            Err(err) => self.note_problem(now, format!("overlay.monitor: {err}: {payload}")),
        }
    }

    /// Ranks running jobs, for a shell with no job-manager journal to follow.
    pub fn set_busy(&mut self, busy: IdSet) {
        self.changed();
        self.flux.set_busy(busy);
    }

    /// One report from the Kubernetes driver. Returns the view a new one replaced, for the
    /// caller to free where freeing is cheap (see `Driver::release`).
    pub fn kube_report(&mut self, report: Report, now: f64) -> Option<KubeView> {
        // A view that differs only in what the planner does not read (a pod's readiness,
        // the Job's pod counts) changes no plan: it is kept for the status, not planned on.
        let plans_alike = match (&report, &self.kube.view) {
            (Report::View(view), Some(before)) => before.plans_like(view),
            _ => false,
        };
        if !plans_alike {
            self.changed();
        }
        self.counters.kube_reports += 1;
        match report {
            Report::View(view) => {
                match self.kube.view.as_ref() {
                    Some(before) => self.history.pods_since(now, before.pods(), view.pods()),
                    None => self.history.pods(now, view.pods().iter().map(Arc::as_ref)),
                }
                self.history.size(now, view.requested_size());
                let mut replaced = self.kube.view.replace(*view);
                if let Some(planned) = replaced.as_mut()
                    && std::mem::take(&mut self.kube.view_planned)
                {
                    self.kube.planned_index = Some(planned.take_pod_index());
                }
                return replaced;
            }
            Report::Synced => {
                self.kube.synced = true;
                tracing::info!("Kubernetes view synced");
            }
            Report::Finished { id, outcome } => self.finished(id, outcome, now),
            Report::Problem(problem) => {
                let text = format!("kubernetes {}: {}", problem.area, problem.what);
                if problem.forbidden {
                    tracing::error!("{text}");
                } else {
                    tracing::warn!("{text}");
                }
                self.kube.problems.insert(problem.area.clone(), problem);
            }
            Report::Restarted { restarts } => {
                self.kube.restarts = restarts;
                // Planning waits for the new worker's fresh lists.
                self.kube.synced = false;
                let lost: Vec<u64> = self
                    .in_flight
                    .iter()
                    .filter(|(_, action)| matches!(action, Action::Kube(_)))
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    let abandoned = Retry::Abandoned("the Kubernetes driver restarted".into());
                    self.finished(id, abandoned.into(), now);
                }
            }
            Report::Cleared { area } => {
                if self.kube.problems.remove(&area).is_some() {
                    tracing::info!("kubernetes {area}: recovered");
                }
            }
        }
        None
    }

    /// The answer to the Flux request of effect `id`.
    pub fn flux_finished(&mut self, id: u64, outcome: Result<(), FluxFailure>, now: f64) {
        let outcome = match outcome {
            Ok(()) => Outcome::Done,
            Err(failure) => failure.outcome(self.in_flight.get(&id)),
        };
        self.finished(id, outcome, now);
    }

    /// The outcome of effect `id`. Unknown ids (e.g. after a reload) are ignored.
    pub fn finished(&mut self, id: u64, outcome: Outcome, now: f64) {
        self.changed();
        let Some(action) = self.in_flight.remove(&id) else {
            return;
        };
        if outcome != Outcome::Done {
            self.counters.actions_failed += 1;
            self.note_problem(now, format!("{action}: {outcome}"));
            let text = format!("failed: {action}: {outcome}");
            self.history
                .action(now, &text, action_ranks(&action).as_ref());
        }
        self.reconciler.action_finished(&action, outcome, now);
    }

    pub fn request_size(&mut self, n: u32, now: f64) -> Result<ResizeAnswer, RequestError> {
        self.changed();
        let answer = self
            .reconciler
            .request_size(n, &self.flux, self.kube.synced(), now)?;
        if answer.changed {
            tracing::info!("resize to {n} requested (target {})", answer.target);
        }
        let text = match answer.target == n {
            true => format!("resize {n}"),
            false => format!("resize {n} (target {})", answer.target),
        };
        self.history.request(now, &text, None);
        Ok(answer)
    }

    pub fn request_retire(
        &mut self,
        ranks: &IdSet,
        now: f64,
    ) -> Result<RetireAnswer, RequestError> {
        self.changed();
        let answer = self
            .reconciler
            .request_retire(ranks, &self.flux, self.kube.synced())?;
        tracing::info!("retire {ranks} requested (accepted {})", answer.accepted);
        self.history
            .request(now, &format!("retire {ranks}"), Some(ranks));
        Ok(answer)
    }

    /// Plans and returns what to do now. In dry run every action is only logged and
    /// counted as done. With nothing changed since the last plan and no deadline come, it
    /// returns nothing without planning.
    pub fn step(&mut self, now: f64) -> Vec<Effect> {
        let due = self.wake_at().is_some_and(|at| at <= now);
        if !std::mem::take(&mut self.unplanned) && !due {
            return Vec::new();
        }
        self.forget_assessment();
        self.counters.plans += 1;
        self.autoscale(now);
        let flux_changed = self.flux.take_changed();
        let changed = self.with_pod_changes(flux_changed);
        self.kube.planned_index = None;
        self.kube.view_planned = true;
        let kube = self.kube.synced();
        let mut actions = self
            .reconciler
            .plan_since(&self.flux, kube, changed.ranks(), now);
        let records = self.reconciler.records(self.kube.synced(), now);
        actions.extend(records);
        let mut effects = Vec::with_capacity(actions.len());
        for action in actions {
            self.counters.actions += 1;
            self.record_action(&action, now);
            if self.dry_run {
                tracing::info!("dry-run: would {action}");
                self.reconciler.action_finished(&action, Outcome::Done, now);
                continue;
            }
            tracing::info!("{action}");
            self.next_id += 1;
            let id = self.next_id;
            effects.push(match &action {
                Action::Flux(flux_action) => Effect::FluxRpc {
                    id,
                    request: flux_request(flux_action),
                },
                Action::Kube(kube_action) => Effect::Kube {
                    id,
                    action: kube_action.clone(),
                },
            });
            self.in_flight.insert(id, action);
        }
        effects
    }

    /// `changed`, the ranks whose Flux state changed since the last plan, with those whose
    /// live pod changed since added.
    fn with_pod_changes(&self, mut changed: ChangedRanks) -> ChangedRanks {
        if let Some(planned) = &self.kube.planned_index
            && let Some(view) = &self.kube.view
        {
            changed.add(&planned.live_changes(view.pod_index()));
        }
        changed
    }

    /// An action that changes the cluster, for the history; Events and annotations only
    /// record what the history has already.
    fn record_action(&mut self, action: &Action, now: f64) {
        if matches!(
            action,
            Action::Kube(KubeAction::RecordEvent { .. } | KubeAction::RecordDesiredSize { .. })
        ) {
            return;
        }
        let text = match self.dry_run {
            true => format!("dry-run: would {action}"),
            false => action.to_string(),
        };
        self.history
            .action(now, &text, action_ranks(action).as_ref());
    }

    /// Runs the autoscaling policy and passes its decision to the reconciler.
    fn autoscale(&mut self, now: f64) {
        let Some(autoscaler) = self.autoscaler.as_mut() else {
            return;
        };
        let kube = self.kube.synced();
        let supply = self.reconciler.supply(&self.flux, kube);
        let planner = self.reconciler.config();
        if supply.is_none() && self.flux.synced() {
            let flux_only = Supply::from_flux(&self.flux);
            autoscaler.preview(&self.queue, &flux_only, planner, now);
            return;
        }
        let decided = match autoscaler.decide(&self.queue, supply.as_ref(), planner, now) {
            Decision::Hold => return,
            Decision::Grow { size, why } => {
                tracing::info!("{why}");
                self.history
                    .request(now, &format!("autoscale: {why}"), None);
                self.reconciler
                    .request_size_because(size, Some(why), &self.flux, kube, now)
                    .map(drop)
            }
            Decision::Retire { ranks, reason } => {
                tracing::info!("autoscale: retire ranks {ranks} ({reason})");
                let text = format!("autoscale: retire {ranks} ({reason})");
                self.history.request(now, &text, Some(&ranks));
                self.reconciler
                    .request_retire_because(&ranks, reason, &self.flux, kube)
                    .map(drop)
            }
        };
        if let Err(err) = decided {
            self.note_problem(now, format!("autoscale: {err}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{JobView, MiniClusterView, PodPhase, PodView};
    use crate::planner::{PlanStatus, RankPhase};

    const RESTART: &str = r#"{"events":[{"timestamp":1.0,"name":"restart","context":{"ranks":"0-3","online":"0-3","nodelist":"mc-[0-3]"}}]}"#;
    const BACKLOG_END: &str = r#"{"events":[]}"#;

    fn kube(size: u32) -> KubeView {
        KubeView::new(
            JobView {
                active: size,
                ..JobView::new("mc", "job", size)
            },
            Some(MiniClusterView {
                name: "mc".into(),
                uid: "mc".into(),
                size,
                max_size: 4,
                complete_workers: false,
                size_manager: None,
                desired_size: None,
            }),
            (0..size)
                .map(|index| PodView::running(format!("mc-{index}"), format!("uid-{index}"), index))
                .map(Arc::new)
                .collect(),
        )
    }

    /// An engine with both views synced: 4 ranks online, 4 pods running.
    fn synced(dry_run: bool) -> Engine {
        let mut engine = Engine::new(PlannerConfig::default(), dry_run);
        engine.journal(RESTART, 0.0);
        engine.journal(BACKLOG_END, 0.0);
        engine.kube_report(Report::View(Box::new(kube(4))), 0.0);
        engine.kube_report(Report::Synced, 0.0);
        engine
    }

    #[test]
    fn a_new_view_hands_back_the_one_it_replaced() {
        let mut engine = Engine::new(PlannerConfig::default(), false);
        assert!(
            engine
                .kube_report(Report::View(Box::new(kube(4))), 0.0)
                .is_none()
        );
        let replaced = engine.kube_report(Report::View(Box::new(kube(3))), 1.0);
        assert_eq!(replaced.map(|view| view.requested_size()), Some(4));
        assert_eq!(engine.kube().map(KubeView::requested_size), Some(3));
        assert!(engine.kube_report(Report::Synced, 1.0).is_none());
    }

    #[test]
    fn progress_stays_small_at_ten_thousand_ranks_mid_resize() {
        let n = 10_000;
        let last = n - 1;
        let restart = format!(
            r#"{{"events":[{{"timestamp":1.0,"name":"restart","context":{{"ranks":"0-{last}","online":"0-{last}","nodelist":"mc-[0-{last}]"}}}}]}}"#
        );
        let mut engine = Engine::new(PlannerConfig::default(), false);
        engine.journal(&restart, 0.0);
        engine.journal(BACKLOG_END, 0.0);
        let mut view = kube(n);
        view.minicluster.as_mut().expect("a MiniCluster").max_size = n;
        engine.kube_report(Report::View(Box::new(view)), 0.0);
        engine.kube_report(Report::Synced, 0.0);
        engine.request_size(n / 2, 0.0).expect("synced");
        assert!(!engine.step(0.0).is_empty(), "the shrink starts");
        let text = serde_json::to_string(&engine.progress(0.0)).expect("JSON");
        assert!(
            text.contains(r#""ranks":"5000-9999","phase":"retiring""#),
            "{text}"
        );
        assert!(text.len() < 1_000, "{} bytes: {text}", text.len());
        println!(
            "progress at {n} ranks mid-shrink: {} bytes: {text}",
            text.len()
        );
    }

    /// The plan a status shows is what the reconciler says now, whether the engine
    /// assessed afresh or put its kept assessment into words again.
    fn plan_is_current(engine: &Engine, now: f64) -> PlanStatus {
        let plan = engine.status(now, None).plan;
        let current = engine
            .reconciler
            .status(&engine.flux, engine.kube.synced(), now);
        assert_eq!(plan, current, "at {now}");
        plan
    }

    fn assessed_at(engine: &Engine) -> Option<f64> {
        engine.assessed.borrow().as_ref().map(|kept| kept.from)
    }

    /// Rank 3's pod runs but its broker has not come up: it is starting, with a start-up
    /// deadline 300 s after the first plan that saw it, at 10 s.
    fn rank_3_starting() -> Engine {
        let mut engine = Engine::new(PlannerConfig::default(), false);
        let restart = r#"{"events":[{"timestamp":1.0,"name":"restart","context":{"ranks":"0-3","online":"0-2","nodelist":"mc-[0-3]"}}]}"#;
        engine.journal(restart, 0.0);
        engine.journal(BACKLOG_END, 0.0);
        engine.kube_report(Report::View(Box::new(kube(4))), 0.0);
        engine.kube_report(Report::Synced, 0.0);
        engine.step(10.0);
        assert_eq!(engine.wake_at(), Some(310.0));
        engine
    }

    #[test]
    fn a_status_reuses_its_assessment_until_a_change_or_a_deadline() {
        let mut engine = rank_3_starting();

        let starting = plan_is_current(&engine, 20.0);
        assert_eq!(starting.ranks.get(3).unwrap().phase, RankPhase::Starting);
        assert_eq!(assessed_at(&engine), Some(20.0));
        plan_is_current(&engine, 300.0);
        assert_eq!(assessed_at(&engine), Some(20.0), "nothing changed: kept");

        // The deadline passed without a plan: assessed again, and the rank timed out.
        let late = plan_is_current(&engine, 311.0);
        assert_eq!(assessed_at(&engine), Some(311.0));
        assert_ne!(late.ranks.get(3).unwrap(), starting.ranks.get(3).unwrap());

        // A request changes the reconciler: the next status does not use the old words.
        engine.request_size(2, 312.0).expect("synced");
        assert_eq!(assessed_at(&engine), None);
        assert_eq!(plan_is_current(&engine, 312.0).desired_size, Some(2));
        // So does a view.
        engine.kube_report(Report::View(Box::new(kube(3))), 313.0);
        assert_eq!(plan_is_current(&engine, 313.0).kube_size, Some(3));
    }

    #[test]
    fn a_step_plans_after_a_change_the_planner_reads_or_at_a_deadline() {
        let mut engine = rank_3_starting();
        let plans = |engine: &Engine| engine.counters().plans;
        assert_eq!(plans(&engine), 1);
        engine.step(11.0);
        assert_eq!(plans(&engine), 1, "nothing changed, no deadline: no plan");

        // Rank 3's pod turns unready and the Job counts pods anew: nothing the planner
        // reads, so neither a plan nor the kept assessment goes.
        plan_is_current(&engine, 12.0);
        let mut view = kube(4);
        view.job.active = 3;
        view.edit_pods(|pods| {
            pods[3] = Arc::new(PodView {
                ready: false,
                ..PodView::clone(&pods[3])
            })
        });
        engine.kube_report(Report::View(Box::new(view.clone())), 13.0);
        assert_eq!(assessed_at(&engine), Some(12.0));
        engine.step(13.0);
        assert_eq!(plans(&engine), 1);
        plan_is_current(&engine, 13.0);

        // Its pod ends: planned on at once.
        view.edit_pods(|pods| {
            pods[3] = Arc::new(PodView {
                phase: PodPhase::Failed,
                ..PodView::clone(&pods[3])
            })
        });
        engine.kube_report(Report::View(Box::new(view)), 14.0);
        assert_eq!(assessed_at(&engine), None);
        engine.step(14.0);
        assert_eq!(plans(&engine), 2);

        // The start-up deadline comes with no event: the step plans, and drains rank 3.
        engine.step(200.0);
        assert_eq!(plans(&engine), 2);
        let late = engine.step(311.0);
        assert_eq!(plans(&engine), 3);
        assert!(
            late.iter().any(|effect| matches!(
                effect,
                Effect::FluxRpc { request, .. } if request.topic == "resource.drain"
            )),
            "{late:?}"
        );
    }

    fn drain_rank_2(engine: &mut Engine) {
        let drain = r#"{"events":[{"timestamp":2.0,"name":"drain","context":{"idset":"2","nodelist":"mc-2","reason":"bad disk","overwrite":0}}]}"#;
        engine.journal(drain, 1.0);
    }

    #[test]
    fn overlay_events_before_the_journal_are_applied_once_the_size_is_known() {
        let mut engine = Engine::new(PlannerConfig::default(), false);
        engine.overlay(r#"{"rank":2,"status":"lost","torpid":false}"#, 0.0);
        assert_eq!(engine.flux().size(), 0);
        engine.journal(RESTART, 0.0);
        assert_eq!(engine.flux().rank_sets().lost.to_string(), "2");
        assert_eq!(
            engine.status_json(0.0)["problems"],
            json!([]),
            "nothing was dropped"
        );
    }

    #[test]
    fn a_drained_rank_is_shut_down_by_a_one_way_request_to_its_own_broker() {
        let mut engine = synced(false);
        drain_rank_2(&mut engine);
        let effects = engine.step(1.0);
        let [Effect::FluxRpc { id, request }] = &effects[..] else {
            panic!("{effects:?}")
        };
        assert_eq!(request.topic, "state-machine.post");
        assert_eq!(request.nodeid, 2);
        assert!(!request.expects_reply);
        let payload: Value = serde_json::from_str(&request.payload).unwrap();
        assert_eq!(payload, json!({"event": "shutdown", "error": false}));
        engine.finished(*id, Outcome::Done, 1.0);
        assert!(
            engine.step(2.0).is_empty(),
            "nothing new until the views change"
        );
        assert_eq!(engine.status_json(2.0)["in_flight"], 0);
    }

    #[test]
    fn the_history_has_the_drain_the_shutdown_and_the_pods_in_order() {
        use crate::model::history::{Change, FluxState, PodState};
        let mut engine = synced(false);
        drain_rank_2(&mut engine);
        let Effect::FluxRpc { id, .. } = engine.step(1.0).remove(0) else {
            panic!("a Flux effect")
        };
        engine.finished(id, Retry::Unreachable("EHOSTUNREACH".into()).into(), 1.5);
        let mut view = kube(4);
        view.edit_pods(|pods| {
            pods[2] = Arc::new(PodView {
                phase: PodPhase::Succeeded,
                ..PodView::running("mc-2".into(), "uid-2".into(), 2)
            })
        });
        engine.kube_report(Report::View(Box::new(view)), 2.0);
        engine.request_retire(&"3".parse().unwrap(), 3.0).unwrap();
        let since_sync: Vec<(f64, Change)> = engine
            .history()
            .entries(0, None)
            .into_iter()
            .skip_while(|e| e.time < 1.0)
            .map(|e| (e.time, e.change))
            .collect();
        let two = || Some("2".parse::<IdSet>().unwrap());
        let shutdown = "shut down broker 2: it exits 0 and its index completes";
        assert_eq!(
            since_sync,
            [
                (
                    1.0,
                    Change::Request {
                        text: "drain 2 (bad disk)".into(),
                        ranks: two()
                    }
                ),
                (
                    1.0,
                    Change::Flux {
                        ranks: "2".parse().unwrap(),
                        state: FluxState::Drained
                    }
                ),
                (
                    1.0,
                    Change::Action {
                        text: shutdown.into(),
                        ranks: two()
                    }
                ),
                (
                    1.5,
                    Change::Action {
                        text: format!("failed: {shutdown}: retryable: unreachable: EHOSTUNREACH"),
                        ranks: two()
                    }
                ),
                (
                    2.0,
                    Change::Pod {
                        ranks: "2".parse().unwrap(),
                        state: PodState::Succeeded
                    }
                ),
                (
                    3.0,
                    Change::Request {
                        text: "retire 3".into(),
                        ranks: Some("3".parse().unwrap())
                    }
                ),
            ]
        );
    }

    #[test]
    fn dry_run_plans_and_logs_but_emits_nothing() {
        let mut engine = synced(true);
        drain_rank_2(&mut engine);
        assert!(engine.step(1.0).is_empty());
        assert_eq!(engine.counters().actions, 1);
        let pending = &engine.status_json(1.0)["plan"]["pending"];
        assert_eq!(pending[0]["outcome"], "ok", "{pending}");
    }

    #[test]
    fn a_failed_effect_is_reported_in_the_status() {
        let mut engine = synced(false);
        drain_rank_2(&mut engine);
        let Effect::FluxRpc { id, .. } = engine.step(1.0).remove(0) else {
            panic!("a Flux effect")
        };
        engine.finished(id, Retry::Unreachable("EHOSTUNREACH".into()).into(), 1.5);
        let status = engine.status_json(1.5);
        let what = status["problems"][0]["what"].as_str().unwrap();
        assert!(
            what.contains("shut down broker 2") && what.contains("EHOSTUNREACH"),
            "{what}"
        );
        assert_eq!(engine.counters().actions_failed, 1);
    }

    #[test]
    fn a_refused_command_is_shown_with_its_reason_and_not_sent_again() {
        let mut engine = synced(false);
        let mut view = kube(4);
        view.job.backoff_limit_per_index = Some(0);
        engine.kube_report(Report::View(Box::new(view)), 0.0);
        // Rank 2's broker is down (its pod runs): the way out is deleting its pod.
        let offline = r#"{"events":[{"timestamp":1.5,"name":"offline","context":{"idset":"2"}}]}"#;
        engine.journal(offline, 0.5);
        drain_rank_2(&mut engine);
        let [Effect::Kube { id, action }] = &engine.step(1.0)[..] else {
            panic!("one Kubernetes command")
        };
        assert!(matches!(action, KubeAction::DeletePod { index: 2, .. }));
        let replaced = Refusal::Replaced {
            current_uid: Some("uid-2b".into()),
        };
        let finished = Report::Finished {
            id: *id,
            outcome: replaced.into(),
        };
        engine.kube_report(finished, 1.5);
        assert!(engine.step(2.0).is_empty(), "not sent again as it was");
        assert!(
            engine.step(100.0).is_empty(),
            "nor after the retry interval"
        );
        let status = engine.status_json(100.0);
        let refused = &status["plan"]["refused"][0];
        assert_eq!(refused["refusal"], "replaced", "{status:#}");
        assert_eq!(refused["why"], "pod was replaced (now uid uid-2b)");
        let what = status["problems"][0]["what"].as_str().unwrap();
        assert!(
            what.contains("delete pod mc-2")
                && what.ends_with("refused: pod was replaced (now uid uid-2b)"),
            "{what}"
        );
    }

    #[test]
    fn flux_errors_are_sorted_into_done_retryable_and_refused() {
        let drain = Action::Flux(FluxAction::Drain {
            ranks: "1".parse().unwrap(),
            reason: "fluxk8s: x".into(),
            overwrite: false,
        });
        let shutdown = Action::Flux(FluxAction::Shutdown { rank: 1 });
        let failed = |errno, action| {
            FluxFailure {
                errno,
                text: "t".into(),
            }
            .outcome(Some(action))
        };
        assert_eq!(
            failed(libc::EEXIST, &drain),
            Outcome::Done,
            "the view lagged"
        );
        assert_eq!(
            failed(libc::ENOENT, &shutdown),
            Retry::Conflict("t".into()).into()
        );
        assert_eq!(
            failed(libc::EHOSTUNREACH, &shutdown),
            Retry::Unreachable("t".into()).into()
        );
        assert_eq!(
            failed(libc::ETIMEDOUT, &drain),
            Retry::Timeout("t".into()).into()
        );
        assert_eq!(
            failed(libc::EINVAL, &drain),
            Refusal::Invalid("t".into()).into()
        );
        assert_eq!(
            failed(libc::EPROTO, &drain),
            Refusal::Invalid("t".into()).into()
        );
    }

    #[test]
    fn requests_need_both_views() {
        let mut engine = Engine::new(PlannerConfig::default(), false);
        assert_eq!(
            engine.request_size(3, 0.0).unwrap_err(),
            RequestError::NotSynced
        );
        let mut engine = synced(false);
        let answer = engine.request_size(3, 0.0).unwrap();
        assert_eq!(answer.target, 3);
        assert!(engine.request_retire(&"0".parse().unwrap(), 0.0).is_err());
    }

    #[test]
    fn malformed_stream_payloads_are_reported_not_fatal() {
        let mut engine = synced(false);
        engine.journal("{not json", 1.0);
        engine.overlay(r#"{"rank":"two"}"#, 1.0);
        let problems = engine.status_json(1.0)["problems"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(problems, 2);
        assert_eq!(
            engine.flux().rank_sets().online.to_string(),
            "0-3",
            "the view is intact"
        );
    }

    #[test]
    fn the_detail_lists_each_asked_rank_with_its_own_pods_whatever_the_view_order() {
        let mut engine = synced(false);
        let mut view = kube(4);
        // A second live pod at index 2, out of order too.
        let replacement = PodView::running("mc-2-new".into(), "uid-2-new".into(), 2);
        view.edit_pods(|pods| {
            pods.reverse();
            pods.insert(1, Arc::new(replacement));
        });
        engine.kube_report(Report::View(Box::new(view)), 1.0);
        let status =
            serde_json::to_value(engine.status(1.0, Some(&"1-2,9".parse().unwrap()))).unwrap();
        let detail = status["detail"].as_array().unwrap();
        let ranks: Vec<_> = detail.iter().map(|d| d["rank"].clone()).collect();
        assert_eq!(ranks, [1, 2], "rank 9 is beyond the instance: {status:#}");
        let names = |at: usize| -> Vec<&str> {
            let pods = detail[at]["pods"].as_array().unwrap();
            pods.iter().map(|p| p["name"].as_str().unwrap()).collect()
        };
        assert_eq!(names(0), ["mc-1"]);
        assert_eq!(names(1).len(), 2);
        assert!(names(1).contains(&"mc-2") && names(1).contains(&"mc-2-new"));
        assert_eq!(detail[0]["phase"], "up");
        assert!(engine.status_json(1.0).get("detail").is_some());
        assert!(
            serde_json::to_value(engine.status(1.0, None))
                .unwrap()
                .get("detail")
                .is_none()
        );
    }
}
