//! The runner: a simulated MiniCluster (or bare Indexed Job) with its Flux side, and
//! fluxk8s wired to both (the [`World`]), with a timeline of what happened and why, a
//! picture of each side's state, and the same steps by hand for contrast.
//!
//! Time is real: `now` is monotonic seconds since the start, so the planner's timers
//! count for real (use [`quick_planner`] for short ones).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::NAMESPACE;
use super::picture::{self, Picture, or_dash};
use super::spec::{ClusterSpec, JobKind};
use super::world::{RunError, Traffic, World};
use crate::engine::Engine;
use crate::k8s::Tuning;
use crate::model::history::{FluxState, History};
use crate::model::{IdSet, PodPhase};
use crate::planner::{PlannerConfig, ResizeAnswer, RetireAnswer};
use crate::sim::flux::{BrokerState, SimFlux};
use crate::sim::{RequestRecord, SimCluster, SimOptions, Verb};

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

/// The world at one moment, for the timeline: the traffic since the last moment, the
/// engine status (`None` by hand) and each side's state.
struct Moment {
    traffic: Vec<Traffic>,
    status: Option<Value>,
    picture: Picture,
}

impl Moment {
    fn of(world: &mut World, name: &str) -> Moment {
        let traffic = world.take_traffic();
        let status = world.engine().is_some().then(|| world.status());
        let picture = Picture {
            flux: picture::flux_line(world.flux()),
            pods: picture::pods_line(world.sim(), name),
            kube: picture::kube_line(world.sim(), name),
            plan: status.as_ref().map(picture::plan_line).unwrap_or_default(),
        };
        Moment {
            traffic,
            status,
            picture,
        }
    }
}

/// A running simulated cluster, with or without fluxk8s. See the module docs.
pub struct Cluster {
    spec: ClusterSpec,
    /// `Some` when fluxk8s runs.
    planner: Option<PlannerConfig>,
    world: World,
    /// The engine status after the last pass (`None` by hand).
    status: Option<Value>,
    timeline: Vec<String>,
    /// Print timeline lines as they are written.
    echo: bool,
    picture: Picture,
    last_change: Instant,
    /// Moments the world kept between rounds of effects (after the engine acted, before
    /// it heard back), not shown yet.
    rounds: Rc<RefCell<Vec<Moment>>>,
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
        let mut world = World::new(Arc::new(sim), &spec)?;
        world.keep_traffic();
        let rounds = Rc::new(RefCell::new(Vec::new()));
        let kept = Rc::clone(&rounds);
        let name = spec.name.clone();
        world.watch_rounds(move |world| kept.borrow_mut().push(Moment::of(world, &name)));
        let mut cluster = Cluster {
            planner: match mode {
                Mode::Fluxk8s(planner) => Some(planner),
                Mode::ByHand => None,
            },
            world,
            status: None,
            timeline: Vec::new(),
            echo,
            picture: Picture::default(),
            last_change: Instant::now(),
            rounds,
            by_hand_history: History::new(),
            spec,
        };
        cluster.note(format!("create {}", cluster.spec.describe()));
        cluster.run_until("the leader (rank 0) to come up", STEP_TIMEOUT, |c| {
            c.flux().leader_up()
        })?;
        cluster.load_module()?;
        cluster.converge()?;
        Ok(cluster)
    }

    /// Loads fluxk8s as rank 0's rc1 would: engine, driver, and both stream subscriptions;
    /// returns once it has synced both views. Nothing in by-hand mode.
    fn load_module(&mut self) -> Result<(), RunError> {
        let Some(planner) = self.planner.clone() else {
            return Ok(());
        };
        self.world.load_module(planner, quick_tuning())?;
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
        if self.world.unload_module() {
            self.note("fluxk8s unloaded");
        }
        self.load_module()
    }

    /// The leader restarts without a persistent statedir (its drains are lost) and
    /// fluxk8s, which runs in it, starts afresh.
    pub fn restart_leader(&mut self) -> Result<(), RunError> {
        self.world.restart_leader();
        self.note("Flux leader restarted: drains lost (no persistent statedir)");
        self.reload_module()
    }

    /// Seconds since the start.
    pub fn now(&self) -> f64 {
        self.world.now()
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
        self.world.sim()
    }

    pub fn flux(&self) -> &SimFlux {
        self.world.flux()
    }

    /// The running fluxk8s engine (`None` by hand).
    pub fn engine(&self) -> Option<&Engine> {
        self.world.engine()
    }

    /// What fluxk8s saw and did; by hand, what the runner saw of the same and the
    /// requests it made.
    pub fn history(&self) -> &History {
        self.engine()
            .map_or(&self.by_hand_history, |engine| engine.history())
    }

    /// By hand: records a request in the history (fluxk8s records its own).
    fn by_hand_request(&mut self, text: &str, ranks: Option<&IdSet>) {
        if self.world.engine().is_none() {
            let now = self.now();
            self.by_hand_history.request(now, text, ranks);
        }
    }

    /// By hand: records the brokers' and pods' states that changed, and the size.
    fn observe_by_hand(&mut self) {
        if self.world.engine().is_some() {
            return;
        }
        let now = self.now();
        let flux = self.world.flux();
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
        let pods = self.sim().pod_views(NAMESPACE, &self.spec.name);
        self.by_hand_history.pods(now, &pods);
        if let Some(size) = self.kube_size() {
            self.by_hand_history.size(now, size);
        }
    }

    /// The engine status after the last pass (`None` by hand).
    pub fn status(&self) -> Option<&Value> {
        self.status.as_ref()
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

    /// One pass, after waiting at most `wait` for something to happen: the world pumps
    /// once, and what passed and what changed goes on the timeline. Returns whether
    /// anything happened.
    fn tick(&mut self, wait: Duration) -> bool {
        let busy = self.world.pump(wait);
        self.observe_by_hand();
        self.show_rounds();
        let now = Moment::of(&mut self.world, &self.spec.name);
        self.show(now, busy);
        busy
    }

    /// Shows the moments the world kept between rounds of effects, in order.
    fn show_rounds(&mut self) {
        let rounds = std::mem::take(&mut *self.rounds.borrow_mut());
        for moment in rounds {
            self.show(moment, true);
        }
    }

    /// Writes a moment's traffic and what changed since the last one shown on the
    /// timeline.
    fn show(&mut self, moment: Moment, busy: bool) {
        for traffic in moment.traffic {
            self.note(traffic.to_string());
        }
        if moment.status.is_some() {
            self.status = moment.status;
        }
        let changes = moment.picture.changes(&self.picture);
        if busy || !changes.is_empty() {
            self.last_change = Instant::now();
        }
        for line in changes {
            self.note(line);
        }
        self.picture = moment.picture;
    }

    /// Runs until `done` holds, or fails after `timeout` naming `what`.
    pub fn run_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Result<(), RunError> {
        let deadline = Instant::now() + timeout;
        let mut wait = Duration::ZERO;
        loop {
            let busy = self.tick(wait);
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
            wait = if busy { Duration::ZERO } else { TICK };
        }
    }

    /// Runs for `duration`, whatever happens.
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        let mut wait = Duration::ZERO;
        while Instant::now() < deadline {
            wait = if self.tick(wait) {
                Duration::ZERO
            } else {
                TICK
            };
        }
    }

    /// Nothing changed for a while, no pod is starting or stopping, and fluxk8s (if
    /// running) is synced with nothing in flight. A planner timer longer than the quiet
    /// period (a cooldown, a backoff) is not waited for.
    pub fn converged(&self) -> bool {
        let pods_settled = self
            .sim()
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
        self.world.admin_drain(ranks, reason)?;
        self.by_hand_request(&format!("drain {ranks} ({reason})"), Some(ranks));
        self.note(format!("admin: flux resource drain {ranks} {reason:?}"));
        Ok(())
    }

    /// An administrator undrains `ranks`.
    pub fn undrain(&mut self, ranks: &IdSet) -> Result<(), RunError> {
        self.world.admin_undrain(ranks)?;
        self.by_hand_request(&format!("undrain {ranks}"), Some(ranks));
        self.note(format!("admin: flux resource undrain {ranks}"));
        Ok(())
    }

    /// Asks fluxk8s for `n` live ranks, as its `resize` RPC does; `who` names the asker
    /// in the timeline.
    pub fn request_size(&mut self, n: u32, who: &str) -> Result<ResizeAnswer, RunError> {
        let answer = self.world.request_size(n)?;
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
        let answer = self.world.request_retire(ranks)?;
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
        self.sim().set_minicluster_size(
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
        self.world.crash_brokers(&IdSet::range(rank, rank));
        self.note(format!("broker {rank} crashes; its pod keeps running"));
    }

    /// Another client deletes the live pod of `rank` (a pod lost behind fluxk8s's back).
    pub fn kill_pod(&mut self, rank: u32) -> Result<(), RunError> {
        let pod = self
            .sim()
            .pod_views(NAMESPACE, &self.spec.name)
            .into_iter()
            .find(|p| p.index == rank && p.is_live())
            .ok_or_else(|| RunError::Invalid(format!("rank {rank} has no live pod")))?;
        self.sim().delete_pod(NAMESPACE, &pod.name)?;
        self.by_hand_request(&format!("kubectl delete pod {}", pod.name), None);
        self.note(format!("someone else: kubectl delete pod {}", pod.name));
        Ok(())
    }

    /// Ranks Flux can schedule on: up and not drained.
    pub fn live_ranks(&self) -> IdSet {
        self.flux().live()
    }

    /// Indexes with a live pod (pending or running, not terminating).
    pub fn live_pods(&self) -> IdSet {
        self.sim()
            .pod_views(NAMESPACE, &self.spec.name)
            .iter()
            .filter(|p| p.is_live())
            .map(|p| p.index)
            .collect()
    }

    /// The size asked of Kubernetes: `MiniCluster.spec.size`, or the bare Job's completions.
    pub fn kube_size(&self) -> Option<u32> {
        let size = match self.sim().minicluster(NAMESPACE, &self.spec.name) {
            Some(mc) => mc["spec"]["size"].as_u64(),
            None => self.sim().job(NAMESPACE, &self.spec.name)?["spec"]["completions"].as_u64(),
        };
        size.and_then(|n| u32::try_from(n).ok())
    }

    /// The Job's `(parallelism, completions)`.
    pub fn job_size(&self) -> Option<(u32, u32)> {
        let job = self.sim().job(NAMESPACE, &self.spec.name)?;
        let field = |name: &str| {
            job["spec"][name]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
        };
        Some((field("parallelism")?, field("completions")?))
    }

    /// Every pod DELETE the API server answered (only fluxk8s talks to it over HTTP).
    pub fn pod_deletes(&self) -> Vec<RequestRecord> {
        self.sim()
            .requests()
            .records
            .into_iter()
            .filter(|r| r.verb == Some(Verb::Delete) && r.resource.as_deref() == Some("pods"))
            .collect()
    }
}
