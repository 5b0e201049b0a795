//! The runner: a simulated MiniCluster (or bare Indexed Job) with its Flux side, and
//! fluxk8s wired to both the way the broker module wires it: stream payloads and driver
//! reports into the [`Engine`], its effects carried out (Flux RPCs on the simulated
//! leader, Kubernetes actions through a real [`Driver`]) and their results fed back.
//!
//! Time is real: `now` is monotonic seconds since the start, so the planner's timers
//! count for real (use [`quick_planner`] for short ones).

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::NAMESPACE;
use super::picture::{self, Picture, or_dash};
use crate::engine::{Effect, Engine, FluxRequest};
use crate::k8s::{Command, Driver, DriverConfig, K8sError, Outcome, Report, Tuning};
use crate::model::history::{FluxState, History};
use crate::model::{Action, IdSet, PodPhase};
use crate::planner::{PlannerConfig, RequestError, ResizeAnswer, RetireAnswer};
use crate::sim::flux::{BrokerState, RpcFailure, SimFlux};
use crate::sim::{
    ApiError, IndexedJobSpec, MiniClusterSpec, RequestRecord, SimCluster, SimOptions, Verb,
};

/// Kubelet pacing: short, but long enough that the driver's views and the runner's
/// looks catch every pod Pending and Terminating even on a loaded machine: the timeline
/// pictures show them, and must come out the same each run.
const POD_START_DELAY: Duration = Duration::from_millis(100);
const TERMINATION_DELAY: Duration = Duration::from_millis(50);
/// Converged: nothing changed for this long and nothing is in flight.
const QUIET: Duration = Duration::from_millis(300);
/// Longest pause between two passes of the loop when nothing is happening.
const TICK: Duration = Duration::from_millis(2);
/// Longest wait for the leader, for fluxk8s to sync, and for each convergence.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What runs the brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// A Flux Operator MiniCluster; `complete_workers` is `spec.flux.completeWorkers`.
    MiniCluster { complete_workers: bool },
    /// An Indexed Job created directly, without an operator.
    BareJob,
}

/// The cluster a run starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// MiniCluster and Job name; brokers are `<name>-<rank>`.
    pub name: String,
    pub kind: JobKind,
    /// Ranks running at the start.
    pub size: u32,
    /// Configured ranks (the MiniCluster's `maxSize`, the Flux instance size).
    pub max_size: u32,
    /// `backoffLimitPerIndex` of the Job (for a MiniCluster: the operator variant of PR #213).
    pub backoff_limit_per_index: Option<u32>,
}

impl ClusterSpec {
    /// A MiniCluster as the released operator makes it (no per-index backoff, no
    /// completeWorkers).
    pub fn minicluster(size: u32, max_size: u32) -> Self {
        Self {
            name: "flux-sample".to_owned(),
            kind: JobKind::MiniCluster {
                complete_workers: false,
            },
            size,
            max_size,
            backoff_limit_per_index: None,
        }
    }

    /// A bare Indexed Job of `size` whose Flux instance has exactly `size` ranks.
    pub fn bare_job(size: u32) -> Self {
        Self {
            kind: JobKind::BareJob,
            max_size: size,
            ..Self::minicluster(size, size)
        }
    }

    /// The scenario-file form of this spec.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            JobKind::MiniCluster { .. } => "minicluster",
            JobKind::BareJob => "bare-job",
        };
        let mut text = format!("{kind} size={} max={}", self.size, self.max_size);
        if let Some(limit) = self.backoff_limit_per_index {
            text.push_str(&format!(" backoff-per-index={limit}"));
        }
        if self.kind
            == (JobKind::MiniCluster {
                complete_workers: true,
            })
        {
            text.push_str(" complete-workers");
        }
        text.push_str(&format!(" name={}", self.name));
        text
    }

    fn check(&self) -> Result<(), RunError> {
        if self.size == 0 || self.size > self.max_size {
            return Err(RunError::Invalid(format!(
                "size {} must be between 1 and max {}",
                self.size, self.max_size
            )));
        }
        Ok(())
    }
}

/// Planner timers short enough for runs of a few seconds.
pub fn quick_planner() -> PlannerConfig {
    PlannerConfig {
        cooldown: 0.0,
        retry_interval: 2.0,
        startup_timeout: 10.0,
        startup_backoff: 1.0,
        max_actions_per_minute: 100,
        ..PlannerConfig::default()
    }
}

/// Driver pacing for the loopback sim.
fn quick_tuning() -> Tuning {
    Tuning {
        request_timeout: Duration::from_secs(2),
        retry_base: Duration::from_millis(20),
        retry_cap: Duration::from_millis(200),
        forbidden_first: Duration::from_millis(75),
        forbidden_retry: Duration::from_millis(150),
        watch_timeout: Duration::from_secs(60),
    }
}

/// Who changes the cluster.
#[derive(Debug, Clone)]
pub enum Mode {
    /// fluxk8s runs on rank 0 with this planner configuration.
    Fluxk8s(PlannerConfig),
    /// Nobody: people drain in Flux and patch sizes themselves.
    ByHand,
}

/// Why a run step failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start the simulated API server: {0}")]
    Sim(#[source] std::io::Error),
    #[error("Kubernetes API: {0}")]
    Api(#[from] ApiError),
    #[error("Kubernetes driver: {0}")]
    Driver(#[from] K8sError),
    #[error("Flux: {0}")]
    Flux(#[from] RpcFailure),
    #[error("fluxk8s refused: {0}")]
    Refused(#[from] RequestError),
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout { what: String, waited: Duration },
    #[error("{0}")]
    Invalid(String),
}

/// fluxk8s as loaded in the leader: the engine, its driver, and the driver's wake-ups.
struct Fluxk8s {
    engine: Engine,
    driver: Driver,
    woken: Receiver<()>,
    /// The engine status after the last pass.
    status: Value,
}

/// A running simulated cluster, with or without fluxk8s. See the module docs.
pub struct Cluster {
    spec: ClusterSpec,
    /// `Some` when fluxk8s runs.
    planner: Option<PlannerConfig>,
    sim: SimCluster,
    flux: SimFlux,
    fluxk8s: Option<Fluxk8s>,
    started: Instant,
    timeline: Vec<String>,
    /// Print timeline lines as they are written.
    echo: bool,
    picture: Picture,
    last_change: Instant,
    /// By hand, what the runner sees of the brokers and pods and the requests it makes:
    /// the history fluxk8s would have kept. With fluxk8s, its engine keeps its own.
    by_hand_history: History,
}

impl Cluster {
    /// Starts the cluster, waits for the leader, loads fluxk8s (in [`Mode::Fluxk8s`])
    /// and waits until everything has converged. With `echo`, the timeline is printed
    /// as it is written.
    pub fn start(spec: ClusterSpec, mode: Mode, echo: bool) -> Result<Cluster, RunError> {
        spec.check()?;
        let operator_backoff = match spec.kind {
            JobKind::MiniCluster { .. } => spec.backoff_limit_per_index,
            JobKind::BareJob => None,
        };
        let sim = SimCluster::start(SimOptions {
            pod_start_delay: POD_START_DELAY,
            termination_delay: TERMINATION_DELAY,
            operator_backoff_limit_per_index: operator_backoff,
            ..SimOptions::default()
        })
        .map_err(RunError::Sim)?;
        // Subscribed before any pod exists, so the Flux side sees every one start.
        let flux = SimFlux::new(NAMESPACE, &spec.name, spec.max_size, sim.subscribe_pods());
        let mut cluster = Cluster {
            planner: match mode {
                Mode::Fluxk8s(planner) => Some(planner),
                Mode::ByHand => None,
            },
            sim,
            flux,
            fluxk8s: None,
            started: Instant::now(),
            timeline: Vec::new(),
            echo,
            picture: Picture::default(),
            last_change: Instant::now(),
            by_hand_history: History::new(),
            spec,
        };
        cluster.note(format!("create {}", cluster.spec.describe()));
        cluster.create_workload()?;
        cluster.run_until("the leader (rank 0) to come up", STEP_TIMEOUT, |c| {
            c.flux.leader_up()
        })?;
        cluster.load_module()?;
        cluster.converge()?;
        Ok(cluster)
    }

    fn create_workload(&self) -> Result<(), RunError> {
        let spec = &self.spec;
        match spec.kind {
            JobKind::MiniCluster { complete_workers } => {
                let mut mc = MiniClusterSpec::new(&spec.name, spec.size, spec.max_size);
                mc.complete_workers = complete_workers;
                self.sim.create_minicluster(NAMESPACE, &mc)?;
            }
            JobKind::BareJob => {
                let mut job = IndexedJobSpec::new(&spec.name, spec.size);
                job.backoff_limit_per_index = spec.backoff_limit_per_index;
                self.sim.create_job(NAMESPACE, &job)?;
            }
        }
        Ok(())
    }

    /// Loads fluxk8s as rank 0's rc1 would: engine, driver, and both stream subscriptions;
    /// returns once it has synced both views. Nothing in by-hand mode.
    fn load_module(&mut self) -> Result<(), RunError> {
        let Some(planner) = self.planner.clone() else {
            return Ok(());
        };
        let (wake_tx, woken) = mpsc::channel();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            // The runner may be gone at shutdown; then nobody needs waking.
            let _ = wake_tx.send(());
        });
        let config = DriverConfig {
            hostname: Some(format!("{}-0", self.spec.name)),
            tuning: quick_tuning(),
            ..DriverConfig::default()
        };
        let driver = Driver::spawn_with_config(self.sim.kube_config(NAMESPACE), config, wake)?;
        let mut engine = Engine::new(planner, false);
        engine.journal_restarted();
        engine.job_journal_restarted();
        self.flux.subscribe_journal()?;
        self.flux.subscribe_overlay()?;
        self.flux.subscribe_jobs()?;
        self.fluxk8s = Some(Fluxk8s {
            engine,
            driver,
            woken,
            status: Value::Null,
        });
        self.note("fluxk8s loaded on rank 0: following resource.journal, overlay.monitor and job-manager.events-journal");
        self.run_until(
            "fluxk8s to sync the Flux and Kubernetes views",
            STEP_TIMEOUT,
            |c| c.status().is_some_and(|s| s["plan"]["synced"] == true),
        )
    }

    /// Unloads fluxk8s and loads a fresh one (new engine, new driver), as `flux module
    /// reload` would: everything it knew must come back from the views.
    pub fn reload_module(&mut self) -> Result<(), RunError> {
        if let Some(old) = self.fluxk8s.take() {
            old.driver.shutdown();
            self.note("fluxk8s unloaded");
        }
        self.load_module()
    }

    /// The leader restarts without a persistent statedir (its drains are lost) and
    /// fluxk8s, which runs in it, starts afresh.
    pub fn restart_leader(&mut self) -> Result<(), RunError> {
        self.flux.restart_leader();
        self.note("Flux leader restarted: drains lost (no persistent statedir)");
        self.reload_module()
    }

    /// Seconds since the start.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Adds a timeline line, stamped with the time.
    pub fn note(&mut self, text: impl AsRef<str>) {
        let line = format!("[{:6.2}s] {}", self.now(), text.as_ref());
        if self.echo {
            println!("{line}");
        }
        self.timeline.push(line);
    }

    /// Every timeline line so far.
    pub fn timeline(&self) -> &[String] {
        &self.timeline
    }

    /// The current state of every side, one labelled line each.
    pub fn describe_state(&self) -> Vec<String> {
        self.picture.lines()
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    pub fn sim(&self) -> &SimCluster {
        &self.sim
    }

    pub fn flux(&self) -> &SimFlux {
        &self.flux
    }

    /// The running fluxk8s engine (`None` by hand).
    pub fn engine(&self) -> Option<&Engine> {
        self.fluxk8s.as_ref().map(|k| &k.engine)
    }

    /// What fluxk8s saw and did; by hand, what the runner saw of the same and the
    /// requests it made.
    pub fn history(&self) -> &History {
        self.engine()
            .map_or(&self.by_hand_history, |engine| engine.history())
    }

    /// By hand: records a request in the history (fluxk8s records its own).
    fn by_hand_request(&mut self, text: &str, ranks: Option<&IdSet>) {
        if self.fluxk8s.is_none() {
            let now = self.now();
            self.by_hand_history.request(now, text, ranks);
        }
    }

    /// By hand: records the brokers' and pods' states that changed, and the size.
    fn observe_by_hand(&mut self) {
        if self.fluxk8s.is_some() {
            return;
        }
        let now = self.now();
        let flux = &self.flux;
        let states = (0..flux.size()).filter_map(|k| {
            let state = match flux.state(k)? {
                BrokerState::Up if flux.drain(k).is_some() => FluxState::Drained,
                BrokerState::Up => FluxState::Up,
                BrokerState::Lost => FluxState::Lost,
                BrokerState::Offline | BrokerState::NeverStarted => FluxState::Offline,
            };
            Some((k, state))
        });
        self.by_hand_history.flux(now, states);
        let pods = self.sim.pod_views(NAMESPACE, &self.spec.name);
        self.by_hand_history.pods(now, &pods);
        if let Some(size) = self.kube_size() {
            self.by_hand_history.size(now, size);
        }
    }

    /// The engine status after the last pass (`None` by hand).
    pub fn status(&self) -> Option<&Value> {
        self.fluxk8s.as_ref().map(|k| &k.status)
    }

    /// The planner's phase and reason for `rank` (`None` by hand or before sync).
    pub fn rank_status(&self, rank: u32) -> Option<(String, String)> {
        let ranks = self.status()?["detail"].as_array()?;
        let entry = ranks.iter().find(|r| r["rank"] == rank)?;
        Some((
            entry["phase"].as_str()?.to_owned(),
            entry["why"].as_str()?.to_owned(),
        ))
    }

    /// One pass: follow the pods, feed the engine, carry out its effects. Returns whether
    /// anything happened.
    pub fn tick(&mut self) -> bool {
        let now = self.now();
        let mut busy = self.flux.pump() > 0;
        let mut notes = Vec::new();
        if let Some(k) = self.fluxk8s.as_mut() {
            for payload in self.flux.take_journal() {
                k.engine.journal(&payload, now);
                busy = true;
            }
            for payload in self.flux.take_overlay() {
                k.engine.overlay(&payload, now);
                busy = true;
            }
            for payload in self.flux.take_job_journal() {
                k.engine.job_journal(&payload, now);
                busy = true;
            }
            while let Some(report) = k.driver.try_recv() {
                if let Report::Finished { id, outcome } = &report
                    && *outcome != Outcome::Done
                {
                    notes.push(format!(
                        "fluxk8s    Kubernetes action {id} ended: {outcome:?}"
                    ));
                }
                k.engine.kube_report(report, now);
                busy = true;
            }
            let effects = k.engine.step(now);
            busy |= !effects.is_empty();
            for effect in effects {
                carry_out(k, &mut self.flux, &self.sim, effect, now, &mut notes);
            }
            k.status = k.engine.status_json(now);
        }
        for line in notes {
            self.note(line);
        }
        self.refresh_picture(busy);
        busy
    }

    fn refresh_picture(&mut self, busy: bool) {
        self.observe_by_hand();
        let picture = Picture {
            flux: picture::flux_line(&self.flux),
            pods: picture::pods_line(&self.sim, &self.spec.name),
            kube: picture::kube_line(&self.sim, &self.spec.name),
            plan: self.status().map(picture::plan_line).unwrap_or_default(),
        };
        let changes = picture.changes(&self.picture);
        if busy || !changes.is_empty() {
            self.last_change = Instant::now();
        }
        for line in changes {
            self.note(line);
        }
        self.picture = picture;
    }

    /// Waits for the driver to report, or a tick at most.
    fn pause(&self) {
        match &self.fluxk8s {
            Some(k) => {
                // A wake-up only means "look again"; several may be queued.
                if k.woken.recv_timeout(TICK).is_ok() {
                    while k.woken.try_recv().is_ok() {}
                }
            }
            None => std::thread::sleep(TICK),
        }
    }

    /// Runs until `done` holds, or fails after `timeout` naming `what`.
    pub fn run_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Result<(), RunError> {
        let deadline = Instant::now() + timeout;
        loop {
            let busy = self.tick();
            if done(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.note(format!("timed out waiting for {what}"));
                return Err(RunError::Timeout {
                    what: what.to_owned(),
                    waited: timeout,
                });
            }
            if !busy {
                self.pause();
            }
        }
    }

    /// Runs for `duration`, whatever happens.
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            if !self.tick() {
                self.pause();
            }
        }
    }

    /// Nothing changed for a while, no pod is starting or stopping, and fluxk8s (if
    /// running) is synced with nothing in flight. A planner timer longer than the quiet
    /// period (a cooldown, a backoff) is not waited for.
    pub fn converged(&self) -> bool {
        let pods_settled = self
            .sim
            .pod_views(NAMESPACE, &self.spec.name)
            .iter()
            .all(|p| {
                p.phase != PodPhase::Pending && !(p.terminating && p.phase == PodPhase::Running)
            });
        let fluxk8s_idle = self.status().is_none_or(|s| {
            s["plan"]["synced"] == true
                && s["in_flight"] == 0
                && s["plan"]["pending"].as_array().is_some_and(Vec::is_empty)
        });
        self.last_change.elapsed() >= QUIET && pods_settled && fluxk8s_idle
    }

    /// Runs until [`Cluster::converged`].
    pub fn converge(&mut self) -> Result<(), RunError> {
        self.run_until("the cluster to converge", STEP_TIMEOUT, Cluster::converged)
    }

    /// An administrator drains `ranks` (`flux resource drain`: no mode, so an existing
    /// drain is an error).
    pub fn drain(&mut self, ranks: &IdSet, reason: &str) -> Result<(), RunError> {
        let payload = json!({"targets": ranks.to_string(), "reason": reason}).to_string();
        self.flux.rpc(&self.sim, "resource.drain", &payload, 0)?;
        self.by_hand_request(&format!("drain {ranks} ({reason})"), Some(ranks));
        self.note(format!("admin: flux resource drain {ranks} {reason:?}"));
        Ok(())
    }

    /// An administrator undrains `ranks`.
    pub fn undrain(&mut self, ranks: &IdSet) -> Result<(), RunError> {
        let payload = json!({"targets": ranks.to_string()}).to_string();
        self.flux.rpc(&self.sim, "resource.undrain", &payload, 0)?;
        self.by_hand_request(&format!("undrain {ranks}"), Some(ranks));
        self.note(format!("admin: flux resource undrain {ranks}"));
        Ok(())
    }

    fn fluxk8s_mut(&mut self) -> Result<&mut Fluxk8s, RunError> {
        self.fluxk8s
            .as_mut()
            .ok_or_else(|| RunError::Invalid("fluxk8s is not running (by-hand run)".to_owned()))
    }

    /// Asks fluxk8s for `n` live ranks, as its `resize` RPC does; `who` names the asker
    /// in the timeline.
    pub fn request_size(&mut self, n: u32, who: &str) -> Result<ResizeAnswer, RunError> {
        let now = self.now();
        let answer = self.fluxk8s_mut()?.engine.request_size(n, now)?;
        let mut line = format!(
            "{who}: fluxk8s resize {n} -> target {}, reachable {}",
            answer.target, answer.reachable
        );
        if !answer.limited_by.is_empty() {
            let limits = serde_json::to_string(&answer.limited_by).unwrap_or_default();
            line.push_str(&format!(", limited by {limits}"));
        }
        self.note(line);
        Ok(answer)
    }

    /// Asks fluxk8s to retire `ranks` for good, as its `retire` RPC does.
    pub fn request_retire(&mut self, ranks: &IdSet) -> Result<RetireAnswer, RunError> {
        let now = self.now();
        let answer = self.fluxk8s_mut()?.engine.request_retire(ranks, now)?;
        self.note(format!(
            "fluxk8s retire {ranks} -> accepted {}, already going {}, target {}",
            or_dash(&answer.accepted),
            or_dash(&answer.already),
            answer
                .desired_size
                .map_or_else(|| "unchanged".to_owned(), |n| n.to_string())
        ));
        Ok(answer)
    }

    /// By hand: patch `MiniCluster.spec.size` directly.
    pub fn set_size_by_hand(&mut self, size: u32) -> Result<(), RunError> {
        if self.spec.kind == JobKind::BareJob {
            return Err(RunError::Invalid(
                "resizing a bare Job by hand is not simulated".to_owned(),
            ));
        }
        self.sim.set_minicluster_size(
            NAMESPACE,
            &self.spec.name,
            i64::from(size),
            "kubectl-scale",
        )?;
        self.by_hand_request(&format!("kubectl: size {size}"), None);
        self.note(format!(
            "by hand: kubectl patch minicluster {} size={size}",
            self.spec.name
        ));
        Ok(())
    }

    /// The broker of `rank` crashes while its pod keeps running.
    pub fn crash_broker(&mut self, rank: u32) {
        self.flux.crash_broker(rank);
        self.note(format!("broker {rank} crashes; its pod keeps running"));
    }

    /// Another client deletes the live pod of `rank` (a pod lost behind fluxk8s's back).
    pub fn kill_pod(&mut self, rank: u32) -> Result<(), RunError> {
        let pod = self
            .sim
            .pod_views(NAMESPACE, &self.spec.name)
            .into_iter()
            .find(|p| p.index == rank && p.is_live())
            .ok_or_else(|| RunError::Invalid(format!("rank {rank} has no live pod")))?;
        self.sim.delete_pod(NAMESPACE, &pod.name)?;
        self.by_hand_request(&format!("kubectl delete pod {}", pod.name), None);
        self.note(format!("someone else: kubectl delete pod {}", pod.name));
        Ok(())
    }

    /// Ranks Flux can schedule on: up and not drained.
    pub fn live_ranks(&self) -> IdSet {
        self.flux.live()
    }

    /// Indexes with a live pod (pending or running, not terminating).
    pub fn live_pods(&self) -> IdSet {
        self.sim
            .pod_views(NAMESPACE, &self.spec.name)
            .iter()
            .filter(|p| p.is_live())
            .map(|p| p.index)
            .collect()
    }

    /// The size asked of Kubernetes: `MiniCluster.spec.size`, or the bare Job's completions.
    pub fn kube_size(&self) -> Option<u32> {
        let size = match self.sim.minicluster(NAMESPACE, &self.spec.name) {
            Some(mc) => mc["spec"]["size"].as_u64(),
            None => self.sim.job(NAMESPACE, &self.spec.name)?["spec"]["completions"].as_u64(),
        };
        size.and_then(|n| u32::try_from(n).ok())
    }

    /// The Job's `(parallelism, completions)`.
    pub fn job_size(&self) -> Option<(u32, u32)> {
        let job = self.sim.job(NAMESPACE, &self.spec.name)?;
        let field = |name: &str| {
            job["spec"][name]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
        };
        Some((field("parallelism")?, field("completions")?))
    }

    /// Every pod DELETE the API server answered (only fluxk8s talks to it over HTTP).
    pub fn pod_deletes(&self) -> Vec<RequestRecord> {
        self.sim
            .requests()
            .records
            .into_iter()
            .filter(|r| r.verb == Some(Verb::Delete) && r.resource.as_deref() == Some("pods"))
            .collect()
    }
}

/// Carries out one effect as the module does: an RPC to the leader (answered at once
/// here), or a command queued on the driver.
fn carry_out(
    k: &mut Fluxk8s,
    flux: &mut SimFlux,
    sim: &SimCluster,
    effect: Effect,
    now: f64,
    notes: &mut Vec<String>,
) {
    match effect {
        Effect::FluxRpc { id, request } => {
            let FluxRequest {
                topic,
                payload,
                nodeid,
                expects_reply,
            } = request;
            notes.push(format!("fluxk8s -> {topic} {payload} (rank {nodeid})"));
            let answer = flux.rpc(sim, topic, &payload, nodeid);
            if let Err(err) = &answer {
                notes.push(format!("fluxk8s    {topic} failed: {err}"));
            }
            // A one-way request is done once sent: no answer reaches the sender.
            let outcome = if expects_reply { answer } else { Ok(()) };
            k.engine.flux_finished(id, outcome.map_err(Into::into), now);
        }
        Effect::Kube { id, action } => {
            notes.push(format!("fluxk8s -> {}", Action::Kube(action.clone())));
            if let Err(err) = k.driver.send(Command::Apply { id, action }) {
                k.engine.finished(id, Err(err.to_string()), now);
            }
        }
    }
}
