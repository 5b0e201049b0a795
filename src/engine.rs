//! The sans-I/O core that the broker module, the demo and the end-to-end tests share:
//! Flux stream payloads, Kubernetes driver reports and requests go in; [`Effect`]s (RPCs
//! to send, driver commands to queue) come out, each with an id whose result comes back
//! through [`Engine::finished`]. Time comes in as `now`; nothing here blocks or does I/O.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::k8s::{Outcome, Problem, Report};
use crate::model::flux::{FluxView, JournalEvent, JournalResponse, OverlayStatus};
use crate::model::history::{FluxState, History};
use crate::model::idset::group_by_key;
use crate::model::queue::{JobJournalResponse, Occupancy, QueueView};
use crate::model::{
    Action, DRAIN_REASON_PREFIX, FluxAction, IdSet, JobView, KubeAction, KubeView, MiniClusterView,
    PodPhase, PodView,
};
use crate::planner::{
    AutoscaleConfig, AutoscaleStatus, Autoscaler, Decision, PlanStatus, PlannerConfig, RankPhase,
    Reconciler, RequestError, ResizeAnswer, RetireAnswer, Supply,
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

/// How a Flux request failed.
#[derive(Debug, Clone, PartialEq)]
pub enum FluxFailure {
    /// EEXIST or ENOENT from the resource module: the rank already is as asked (an undrain
    /// of a rank that is not drained) or is unknown to it. The view that planned the request
    /// lagged behind the journal, which will bring it up to date: nothing to report.
    ViewLagged(String),
    Failed(String),
}

impl FluxFailure {
    pub fn from_errno(errno: i32, text: String) -> Self {
        match errno {
            libc::EEXIST | libc::ENOENT => FluxFailure::ViewLagged(text),
            _ => FluxFailure::Failed(text),
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
        FluxAction::Drain { ranks, reason } => to_leader(
            "resource.drain",
            json!({"targets": ranks.to_string(), "reason": reason, "mode": "update"}),
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
        }
    }

    /// New tunables from a configuration reload; requests and actions in flight stay.
    pub fn reconfigure(&mut self, planner: PlannerConfig, dry_run: bool) {
        self.reconciler.set_config(planner);
        self.dry_run = dry_run;
    }

    /// Turns autoscaling on (or retunes it) or off; idle times survive a retune.
    pub fn set_autoscale(&mut self, config: Option<AutoscaleConfig>) {
        match (config, self.autoscaler.as_mut()) {
            (Some(config), Some(autoscaler)) => autoscaler.set_config(config),
            (config, _) => self.autoscaler = config.map(Autoscaler::new),
        }
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
        self.flux.restart_journal();
    }

    /// One `resource.journal` response. A bad one is reported and skipped, not fatal.
    pub fn journal(&mut self, payload: &str, now: f64) {
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
        self.queue.restart();
        self.follow_allocations();
    }

    /// One `job-manager.events-journal` response.
    pub fn job_journal(&mut self, payload: &str, now: f64) {
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
        self.flux.set_busy(busy);
    }

    /// One report from the Kubernetes driver.
    pub fn kube_report(&mut self, report: Report, now: f64) {
        self.counters.kube_reports += 1;
        match report {
            Report::View(mut view) => {
                // Sorted by index (the driver sends them so): a rank's pods are a slice.
                if !view.pods.is_sorted_by_key(|p| p.index) {
                    view.pods.sort_by_key(|p| p.index);
                }
                self.history.pods(now, view.pods.iter().map(Arc::as_ref));
                self.history.size(now, view.requested_size());
                self.kube.view = Some(*view);
            }
            Report::Synced => {
                self.kube.synced = true;
                tracing::info!("Kubernetes view synced");
            }
            Report::Finished { id, outcome } => {
                let outcome = match outcome {
                    Outcome::Done => Ok(()),
                    Outcome::Replaced { current_uid } => Err(format!(
                        "pod was replaced (now uid {})",
                        current_uid.as_deref().unwrap_or("none")
                    )),
                    Outcome::Refused(why) => Err(format!("refused: {why}")),
                    Outcome::Failed(why) => Err(format!("failed: {why}")),
                    Outcome::Abandoned => Err("abandoned at shutdown".to_owned()),
                };
                self.finished(id, outcome, now);
            }
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
                    self.finished(
                        id,
                        Err("abandoned: the Kubernetes driver restarted".into()),
                        now,
                    );
                }
            }
            Report::Cleared { area } => {
                if self.kube.problems.remove(&area).is_some() {
                    tracing::info!("kubernetes {area}: recovered");
                }
            }
        }
    }

    /// The answer to the Flux request of effect `id`.
    pub fn flux_finished(&mut self, id: u64, outcome: Result<(), FluxFailure>, now: f64) {
        let outcome = match outcome {
            Ok(()) => Ok(()),
            Err(FluxFailure::ViewLagged(why)) => match self.in_flight.get(&id) {
                Some(
                    action @ Action::Flux(FluxAction::Drain { .. } | FluxAction::Undrain { .. }),
                ) => {
                    tracing::debug!("{action}: {why}; the journal will show the rank as it is");
                    Ok(())
                }
                _ => Err(why),
            },
            Err(FluxFailure::Failed(why)) => Err(why),
        };
        self.finished(id, outcome, now);
    }

    /// The result of effect `id`. Unknown ids (e.g. after a reload) are ignored.
    pub fn finished(&mut self, id: u64, outcome: Result<(), String>, now: f64) {
        let Some(action) = self.in_flight.remove(&id) else {
            return;
        };
        if let Err(err) = &outcome {
            self.counters.actions_failed += 1;
            self.note_problem(now, format!("{action}: {err}"));
            let text = format!("failed: {action}: {err}");
            self.history
                .action(now, &text, action_ranks(&action).as_ref());
        }
        self.reconciler.action_finished(&action, outcome, now);
    }

    pub fn request_size(&mut self, n: u32, now: f64) -> Result<ResizeAnswer, RequestError> {
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
        let answer = self
            .reconciler
            .request_retire(ranks, &self.flux, self.kube.synced())?;
        tracing::info!("retire {ranks} requested (accepted {})", answer.accepted);
        self.history
            .request(now, &format!("retire {ranks}"), Some(ranks));
        Ok(answer)
    }

    /// Plans and returns what to do now. In dry run every action is only logged and
    /// counted as done.
    pub fn step(&mut self, now: f64) -> Vec<Effect> {
        self.counters.plans += 1;
        self.autoscale(now);
        let mut actions = self.reconciler.plan(&self.flux, self.kube.synced(), now);
        let records = self.reconciler.records(self.kube.synced(), now);
        actions.extend(records);
        let mut effects = Vec::with_capacity(actions.len());
        for action in actions {
            self.counters.actions += 1;
            self.record_action(&action, now);
            if self.dry_run {
                tracing::info!("dry-run: would {action}");
                self.reconciler.action_finished(&action, Ok(()), now);
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

    /// Sizes, rank states, the Kubernetes view and the plan, to serialize as the status;
    /// with `detail`, also each of those ranks on its own, with its pods.
    pub fn status(&self, now: f64, detail: Option<&IdSet>) -> Status<'_> {
        let flux = &self.flux;
        let plan = self.reconciler.status(flux, self.kube.synced(), now);
        let detail = detail.map(|ranks| self.rank_detail(&plan, ranks));
        Status {
            real_size: flux.real_size(),
            desired_size: plan.desired_size,
            max_size: flux.size(),
            flux: FluxStatus {
                synced: flux.synced(),
                size: flux.size(),
                online: flux.online(),
                offline: flux.offline(),
                lost: flux.lost(),
                torpid: flux.torpid(),
                drained: flux.drained(),
                drained_by_fluxk8s: flux.drained_by_us(),
                never_started: flux.never_started(),
                busy: flux.busy(),
                busy_known: flux.occupancy().known(),
                shell: Map::new(),
            },
            kubernetes: KubeStatus {
                synced: self.kube.synced,
                restarts: self.kube.restarts,
                view: self.kube.view.as_ref(),
                problems: self.kube.problems.values().map(ProblemStatus).collect(),
                shell: Map::new(),
            },
            plan,
            autoscale: AutoscaleReport {
                enabled: self.autoscaler.is_some(),
                report: self.autoscaler.as_ref().map(Autoscaler::status),
                shell: Map::new(),
            },
            in_flight: self.in_flight.len(),
            problems: self
                .problems
                .iter()
                .map(|(time, what)| RecentProblem { time: *time, what })
                .collect(),
            engine: &self.counters,
            detail,
            shell: Map::new(),
        }
    }

    /// Each of `ranks` in the instance, with the plan's word on it (none before both
    /// views are synced) and its pods.
    fn rank_detail<'a>(&'a self, plan: &PlanStatus, ranks: &IdSet) -> Vec<RankDetail<'a>> {
        let pods: &[Arc<PodView>] = self.kube.view.as_ref().map_or(&[], |view| &view.pods);
        // The view's pods are sorted by index (see `kube_report`).
        let pods_of = |k: u32| {
            let from = pods.partition_point(|p| p.index < k);
            let to = from + pods[from..].partition_point(|p| p.index == k);
            &pods[from..to]
        };
        let in_instance = IdSet::range(0, self.flux.size().saturating_sub(1));
        ranks
            .intersection(&in_instance)
            .iter()
            .map(|k| {
                // The plan lists ranks in order.
                let planned = plan
                    .ranks
                    .binary_search_by_key(&k, |r| r.rank)
                    .ok()
                    .map(|at| &plan.ranks[at]);
                RankDetail {
                    rank: k,
                    phase: planned.map(|r| r.phase),
                    why: planned.map_or(Cow::Borrowed(""), |r| r.why.clone()),
                    pods: pods_of(k),
                }
            })
            .collect()
    }

    /// [`Engine::status`] with every rank's detail, as a JSON value, for callers that
    /// look fields up.
    pub fn status_json(&self, now: f64) -> Value {
        let every_rank = IdSet::range(0, self.flux.size().saturating_sub(1));
        serde_json::to_value(self.status(now, Some(&every_rank)))
            .expect("the status has string keys only")
    }

    /// The [`Progress`] now: what the status says of sizes and the plan.
    pub fn progress(&self, now: f64) -> Progress {
        let plan = self.reconciler.status(&self.flux, self.kube.synced(), now);
        Progress {
            real_size: self.flux.real_size(),
            desired_size: plan.desired_size,
            max_size: self.flux.size(),
            in_flight: self.in_flight.len(),
            plan,
        }
    }
}

/// What a watcher of the module is sent on each change: the status's sizes and plan,
/// under the status's own field names, without what moves by itself (uptime, counters,
/// problems' times). An unchanged picture serializes to the same text, and 10,000 ranks
/// take a handful of rank groups.
#[derive(Debug, Serialize)]
pub struct Progress {
    pub real_size: u32,
    pub desired_size: Option<u32>,
    pub max_size: u32,
    pub in_flight: usize,
    pub plan: PlanStatus,
}

/// The engine's status. Serialized straight to text (a status of 1,000 ranks built as a
/// JSON value first cost several times more). `shell` fields carry what the program
/// running the engine adds (the module: streams, connection, name, ...).
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    pub real_size: u32,
    pub desired_size: Option<u32>,
    pub max_size: u32,
    pub flux: FluxStatus<'a>,
    pub kubernetes: KubeStatus<'a>,
    pub plan: PlanStatus,
    pub autoscale: AutoscaleReport<'a>,
    pub in_flight: usize,
    pub problems: Vec<RecentProblem<'a>>,
    pub engine: &'a EngineCounters,
    /// The ranks asked about, one by one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Vec<RankDetail<'a>>>,
    #[serde(flatten)]
    pub shell: Map<String, Value>,
}

/// One rank in the status's detail: where it stands, why, and its pods.
#[derive(Debug, Serialize)]
pub struct RankDetail<'a> {
    pub rank: u32,
    /// `None` until both views are synced and the planner has a word on the rank.
    pub phase: Option<RankPhase>,
    pub why: Cow<'static, str>,
    pub pods: &'a [Arc<PodView>],
}

/// The Flux side of the status.
#[derive(Debug, Serialize)]
pub struct FluxStatus<'a> {
    pub synced: bool,
    pub size: u32,
    pub online: IdSet,
    pub offline: IdSet,
    pub lost: IdSet,
    pub torpid: IdSet,
    pub drained: IdSet,
    pub drained_by_fluxk8s: IdSet,
    pub never_started: IdSet,
    pub busy: &'a IdSet,
    /// The job-manager's allocations are known (else any rank may be busy).
    pub busy_known: bool,
    #[serde(flatten)]
    pub shell: Map<String, Value>,
}

/// The Kubernetes side of the status.
#[derive(Debug, Serialize)]
pub struct KubeStatus<'a> {
    pub synced: bool,
    /// Restarts of the driver after a panic since load.
    pub restarts: u32,
    #[serde(serialize_with = "view_with_pod_groups")]
    pub view: Option<&'a KubeView>,
    pub problems: Vec<ProblemStatus<'a>>,
    #[serde(flatten)]
    pub shell: Map<String, Value>,
}

/// The view with its pods in groups of the same state (a status of 1,000 ranks lists a
/// handful, not 1,000 pods; the detail names the pods of the ranks asked about).
fn view_with_pod_groups<S: serde::Serializer>(
    view: &Option<&KubeView>,
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct ViewStatus<'a> {
        job: &'a JobView,
        minicluster: Option<&'a MiniClusterView>,
        pods: Vec<PodGroup>,
    }
    /// Pods in one state, by completion index; `count` also counts an index twice when
    /// it has two such pods.
    #[derive(Serialize)]
    struct PodGroup {
        indexes: IdSet,
        phase: PodPhase,
        ready: bool,
        terminating: bool,
        count: usize,
    }
    let Some(view) = view else {
        return s.serialize_none();
    };
    let by_state = view
        .pods
        .iter()
        .map(|pod| ((pod.phase, pod.ready, pod.terminating), pod.index));
    let pods = group_by_key(by_state)
        .into_iter()
        .map(|group| PodGroup {
            indexes: group.ids,
            phase: group.key.0,
            ready: group.key.1,
            terminating: group.key.2,
            count: group.count,
        })
        .collect();
    s.serialize_some(&ViewStatus {
        job: &view.job,
        minicluster: view.minicluster.as_ref(),
        pods,
    })
}

/// A current Kubernetes problem, with its retry delay in seconds.
#[derive(Debug)]
pub struct ProblemStatus<'a>(&'a Problem);

impl Serialize for ProblemStatus<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let p = self.0;
        let mut out = s.serialize_struct("Problem", 4)?;
        out.serialize_field("area", &p.area)?;
        out.serialize_field("what", &p.what)?;
        out.serialize_field("forbidden", &p.forbidden)?;
        out.serialize_field("retrying_in", &p.retrying_in.map(|d| d.as_secs_f64()))?;
        out.end()
    }
}

/// Autoscaling in the status: whether it is on and, if so, its last decision.
#[derive(Debug, Serialize)]
pub struct AutoscaleReport<'a> {
    pub enabled: bool,
    #[serde(flatten)]
    pub report: Option<&'a AutoscaleStatus>,
    #[serde(flatten)]
    pub shell: Map<String, Value>,
}

/// One of the last errors, with when it happened.
#[derive(Debug, Serialize)]
pub struct RecentProblem<'a> {
    pub time: f64,
    pub what: &'a str,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{JobView, MiniClusterView, PodView};

    const RESTART: &str = r#"{"events":[{"timestamp":1.0,"name":"restart","context":{"ranks":"0-3","online":"0-3","nodelist":"mc-[0-3]"}}]}"#;
    const BACKLOG_END: &str = r#"{"events":[]}"#;

    fn kube(size: u32) -> KubeView {
        KubeView {
            job: JobView {
                active: size,
                ..JobView::new("mc", "job", size)
            },
            minicluster: Some(MiniClusterView {
                name: "mc".into(),
                uid: "mc".into(),
                size,
                max_size: 4,
                complete_workers: false,
                size_manager: None,
                desired_size: None,
            }),
            pods: (0..size)
                .map(|index| PodView::running(format!("mc-{index}"), format!("uid-{index}"), index))
                .map(Arc::new)
                .collect(),
        }
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
        assert_eq!(engine.flux().lost().to_string(), "2");
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
        engine.finished(*id, Ok(()), 1.0);
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
        engine.finished(id, Err("EHOSTUNREACH".into()), 1.5);
        let mut view = kube(4);
        view.pods[2] = Arc::new(PodView {
            phase: PodPhase::Succeeded,
            ..PodView::running("mc-2".into(), "uid-2".into(), 2)
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
                        text: format!("failed: {shutdown}: EHOSTUNREACH"),
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
        engine.finished(id, Err("EHOSTUNREACH".into()), 1.5);
        let status = engine.status_json(1.5);
        let what = status["problems"][0]["what"].as_str().unwrap();
        assert!(
            what.contains("shut down broker 2") && what.contains("EHOSTUNREACH"),
            "{what}"
        );
        assert_eq!(engine.counters().actions_failed, 1);
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
            engine.flux().online().to_string(),
            "0-3",
            "the view is intact"
        );
    }

    #[test]
    fn the_detail_lists_each_asked_rank_with_its_own_pods_whatever_the_view_order() {
        let mut engine = synced(false);
        let mut view = kube(4);
        view.pods.reverse();
        // A second live pod at index 2, out of order too.
        let replacement = PodView::running("mc-2-new".into(), "uid-2-new".into(), 2);
        view.pods.insert(1, Arc::new(replacement));
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
