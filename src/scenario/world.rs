//! The one simulated world: the real [`Engine`] and [`Driver`] against the simulated API
//! server ([`SimCluster`]), with the simulated Flux side ([`SimFlux`]) following its pods
//! (a pod whose container starts runs its rank's broker, one that ends or is deleted takes
//! it away) and serving the engine's Flux RPCs as brokers would: drains and undrains on the
//! leader, and the one-way `state-machine.post` shutdown, which takes the broker offline at
//! once and ends its pod's container with exit 0 at the next pump.
//!
//! [`World::pump`] does what the module's reactor callbacks do: feed stream payloads and
//! driver reports to the engine, step it, and route the effects. Every engine call is
//! timed into [`World::timings`] (the bench's figures); what passed between fluxk8s and
//! either side can be kept as [`Traffic`], and a watcher sees each moment between acting
//! and hearing back (the scenario runner's timeline). The scenario runner
//! ([`Cluster`](super::Cluster)), the fault tests and the bench stand on it.
//!
//! Time is real: [`World::now`] is monotonic seconds since the world was made, so the
//! planner's timers count for real.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::NAMESPACE;
use super::spec::{ClusterSpec, JobKind};
use super::timings::CallTimings;
use crate::engine::{Effect, Engine, FluxRequest, RankDetail};
use crate::k8s::{Command, Driver, DriverConfig, K8sError, Outcome, Report, Tuning};
use crate::model::{Action, IdSet, KubeAction, Retry};
use crate::planner::{PlannerConfig, RankPhase, RequestError, ResizeAnswer, RetireAnswer};
use crate::rpc::detail_page;
use crate::sim::flux::{RpcFailure, SimFlux};
use crate::sim::{
    ApiError, IndexedJobSpec, MiniClusterSpec, PodEvent, SimCluster, SimOptions, Verb,
};

/// Why a step of a run failed.
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

/// What passed between fluxk8s and the two sides, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Traffic {
    /// A Flux RPC fluxk8s sent (answered at once).
    FluxRpc(FluxRequest),
    /// The RPC just sent failed.
    FluxFailed {
        topic: &'static str,
        failure: RpcFailure,
    },
    /// A command fluxk8s gave its driver.
    Kube(KubeAction),
    /// A driver command that ended other than done.
    KubeEnded { id: u64, outcome: Outcome },
}

impl fmt::Display for Traffic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Traffic::FluxRpc(request) => write!(
                f,
                "fluxk8s -> {} {} (rank {})",
                request.topic, request.payload, request.nodeid
            ),
            Traffic::FluxFailed { topic, failure } => {
                write!(f, "fluxk8s    {topic} failed: {failure}")
            }
            Traffic::Kube(action) => write!(f, "fluxk8s -> {}", Action::Kube(action.clone())),
            Traffic::KubeEnded { id, outcome } => {
                write!(f, "fluxk8s    Kubernetes action {id} ended: {outcome:?}")
            }
        }
    }
}

/// Longest wait for fluxk8s to sync both views after a load.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Every verb, for faults that hit the whole API.
pub const ALL_VERBS: [Verb; 7] = [
    Verb::Get,
    Verb::List,
    Verb::Watch,
    Verb::Create,
    Verb::Update,
    Verb::Patch,
    Verb::Delete,
];

/// Every resource fluxk8s touches.
pub const RESOURCES: [&str; 5] = [
    "pods",
    "jobs",
    "miniclusters",
    "miniclusters/scale",
    "events",
];

/// A simulated cluster with the default options, started, to share with a world; panics
/// when it cannot start (a test helper).
pub fn default_sim() -> Arc<SimCluster> {
    Arc::new(SimCluster::start(SimOptions::default()).expect("the sim starts"))
}

/// Planner settings for the fault tests: no cooldown or rate limit in the way, quick
/// re-issues.
pub fn test_planner() -> PlannerConfig {
    PlannerConfig {
        cooldown: 0.0,
        max_actions_per_minute: 100_000,
        retry_interval: 1.0,
        ..PlannerConfig::default()
    }
}

/// Driver pacing of [`World::with_minicluster`] and [`World::with_bare_job`]: failures
/// are retried within a fraction of a second.
pub fn fast_tuning() -> Tuning {
    Tuning {
        request_timeout: Duration::from_secs(5),
        retry_base: Duration::from_millis(20),
        retry_cap: Duration::from_millis(500),
        forbidden_first: Duration::from_millis(100),
        forbidden_retry: Duration::from_millis(200),
        watch_timeout: Duration::from_secs(30),
    }
}

/// What [`World::watch_rounds`] keeps.
type RoundWatcher = Box<dyn FnMut(&mut World)>;

/// fluxk8s as loaded in the leader: the engine, its driver, and the driver commands sent
/// and not answered yet.
struct Fluxk8s {
    engine: Engine,
    driver: Driver,
    kube_in_flight: BTreeSet<u64>,
}

/// Engine + driver + simulated Flux against one simulated cluster. See the module docs.
pub struct World {
    sim: Arc<SimCluster>,
    flux: SimFlux,
    /// The Job running the brokers (pod index = rank).
    job: String,
    /// `None` until loaded, and in a by-hand run.
    fluxk8s: Option<Fluxk8s>,
    /// What the last load used, for reloads.
    loaded_with: Option<(PlannerConfig, Tuning)>,
    /// Rung by the driver and by every pod event (SimFlux has one to follow).
    wakes: Receiver<()>,
    wake_tx: Sender<()>,
    started: Instant,
    /// Every engine call, timed by kind (`journal`, `kube_report`, `step`, ...).
    pub timings: CallTimings,
    /// Kept only once [`World::keep_traffic`] asked for it.
    traffic: Option<Vec<Traffic>>,
    /// Called between rounds of effects (see [`World::watch_rounds`]).
    between_rounds: Option<RoundWatcher>,
    /// Every command sent to the driver, by (engine generation, id), with its answer once
    /// it came. Each load starts a new generation (a new engine numbers from 1 again).
    pub kube_log: BTreeMap<(u32, u64), (KubeAction, Option<Outcome>)>,
    generation: u32,
    /// Flux RPCs the engine sent, by topic (one-way ones included, whether or not a
    /// broker was there to get them).
    pub flux_rpcs: BTreeMap<&'static str, u64>,
    /// When the engine last sent a Flux RPC of each topic.
    pub flux_rpc_last_sent: BTreeMap<&'static str, Instant>,
}

impl World {
    /// Brokers for the ranks of `spec` follow the pods from before the workload is made,
    /// so they see every pod start; then the workload is created. fluxk8s is not loaded.
    pub fn new(sim: Arc<SimCluster>, spec: &ClusterSpec) -> Result<World, RunError> {
        spec.check()?;
        let (wake_tx, wakes) = mpsc::channel();
        let pods = follow_pods(&sim, &wake_tx);
        let flux = SimFlux::new(NAMESPACE, &spec.name, spec.max_size, pods);
        match spec.kind {
            JobKind::MiniCluster { complete_workers } => {
                let mut mc = MiniClusterSpec::new(&spec.name, spec.size, spec.max_size);
                mc.complete_workers = complete_workers;
                sim.create_minicluster(NAMESPACE, &mc)?;
            }
            JobKind::BareJob => {
                let mut job = IndexedJobSpec::new(&spec.name, spec.size);
                job.backoff_limit_per_index = spec.backoff_limit_per_index;
                sim.create_job(NAMESPACE, &job)?;
            }
        }
        Ok(World {
            sim,
            flux,
            job: spec.name.clone(),
            fluxk8s: None,
            loaded_with: None,
            wakes,
            wake_tx,
            started: Instant::now(),
            timings: CallTimings::default(),
            traffic: None,
            between_rounds: None,
            kube_log: BTreeMap::new(),
            generation: 0,
            flux_rpcs: BTreeMap::new(),
            flux_rpc_last_sent: BTreeMap::new(),
        })
    }

    /// A MiniCluster (completeWorkers) of `size` ranks (at most `max`), its ranks online
    /// and fluxk8s loaded and synced.
    pub fn with_minicluster(
        sim: Arc<SimCluster>,
        name: &str,
        size: u32,
        max: u32,
        planner: PlannerConfig,
    ) -> Result<World, RunError> {
        let spec = ClusterSpec {
            name: name.to_owned(),
            kind: JobKind::MiniCluster {
                complete_workers: true,
            },
            size,
            max_size: max,
            backoff_limit_per_index: None,
        };
        Self::start(sim, &spec, planner)
    }

    /// A bare Indexed Job of `size` ranks with `backoffLimitPerIndex: 0` (a deleted pod
    /// fails its index for good), its ranks online and fluxk8s loaded and synced.
    pub fn with_bare_job(
        sim: Arc<SimCluster>,
        name: &str,
        size: u32,
        planner: PlannerConfig,
    ) -> Result<World, RunError> {
        let spec = ClusterSpec {
            name: name.to_owned(),
            backoff_limit_per_index: Some(0),
            ..ClusterSpec::bare_job(size)
        };
        Self::start(sim, &spec, planner)
    }

    /// Once the first `spec.size` ranks are online, fluxk8s is loaded (with
    /// [`fast_tuning`]) and synced.
    fn start(
        sim: Arc<SimCluster>,
        spec: &ClusterSpec,
        planner: PlannerConfig,
    ) -> Result<World, RunError> {
        let mut world = World::new(sim, spec)?;
        let running = spec.size as usize;
        let wait = Duration::from_secs(60);
        if !world.run_until(wait, |w| w.flux.online().len() == running) {
            return Err(RunError::Timeout {
                what: format!("{running} ranks online (online: {})", world.flux.online()),
                waited: wait,
            });
        }
        world.load_module(planner, fast_tuning())?;
        world.sync(SYNC_TIMEOUT)?;
        Ok(world)
    }

    /// From now on, keep what passes between fluxk8s and the two sides, for
    /// [`World::take_traffic`].
    pub fn keep_traffic(&mut self) {
        self.traffic.get_or_insert_with(Vec::new);
    }

    /// The traffic kept since the last call.
    pub fn take_traffic(&mut self) -> Vec<Traffic> {
        self.traffic
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Calls `watch` after each round of effects that sent Flux RPCs, before what the
    /// brokers said of them is fed back: the moment the engine has acted and not yet
    /// heard, which the scenario runner shows on its timeline.
    pub fn watch_rounds(&mut self, watch: impl FnMut(&mut World) + 'static) {
        self.between_rounds = Some(Box::new(watch));
    }

    fn record(&mut self, traffic: impl FnOnce() -> Traffic) {
        if let Some(kept) = &mut self.traffic {
            kept.push(traffic());
        }
    }

    /// What loading the module on rank 0 does: a driver, an engine, and subscriptions to
    /// `resource.journal` (its backlog replays Flux's state), `overlay.monitor` and
    /// `job-manager.events-journal` (who holds which ranks). A module already loaded is
    /// unloaded first. Returns before the views are synced.
    pub fn load_module(&mut self, planner: PlannerConfig, tuning: Tuning) -> Result<(), RunError> {
        self.unload_module();
        let wake_tx = self.wake_tx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            // The world may be gone at shutdown; then nobody needs waking.
            let _ = wake_tx.send(());
        });
        let config = DriverConfig {
            hostname: Some(format!("{}-0", self.job)),
            tuning: tuning.clone(),
            ..DriverConfig::default()
        };
        let driver = Driver::spawn_with_config(self.sim.kube_config(NAMESPACE), config, wake)?;
        let mut engine = Engine::new(planner.clone(), false);
        engine.journal_restarted();
        engine.job_journal_restarted();
        self.flux.subscribe_journal()?;
        self.flux.subscribe_overlay()?;
        self.flux.subscribe_jobs()?;
        self.generation += 1;
        self.fluxk8s = Some(Fluxk8s {
            engine,
            driver,
            kube_in_flight: BTreeSet::new(),
        });
        self.loaded_with = Some((planner, tuning));
        self.feed_flux_streams();
        Ok(())
    }

    /// Stops the driver (joined, its commands abandoned) and drops the engine; returns
    /// whether fluxk8s was loaded.
    pub fn unload_module(&mut self) -> bool {
        let Some(old) = self.fluxk8s.take() else {
            return false;
        };
        old.driver.shutdown();
        true
    }

    /// What a module reload does: a new engine and driver, with the settings of the last
    /// load, subscribed afresh; returns once both views are synced. Flux itself, and the
    /// cluster, carry on.
    pub fn reload_module(&mut self) -> Result<(), RunError> {
        let (planner, tuning) = self
            .loaded_with
            .clone()
            .ok_or_else(|| RunError::Invalid("fluxk8s was never loaded".to_owned()))?;
        self.load_module(planner, tuning)?;
        self.sync(SYNC_TIMEOUT)
    }

    /// Pumps until both views are synced.
    pub fn sync(&mut self, timeout: Duration) -> Result<(), RunError> {
        if self.run_until(timeout, World::synced) {
            return Ok(());
        }
        Err(RunError::Timeout {
            what: format!(
                "fluxk8s to sync the Flux and Kubernetes views: {:#}",
                self.status()
            ),
            waited: timeout,
        })
    }

    /// The leader restarts without a persistent statedir: its drains are lost. fluxk8s,
    /// which runs in it, is left to the caller to reload.
    pub fn restart_leader(&mut self) {
        self.flux.restart_leader();
    }

    /// Seconds since the world was made: the engine's clock.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn sim(&self) -> &Arc<SimCluster> {
        &self.sim
    }

    pub fn flux(&self) -> &SimFlux {
        &self.flux
    }

    /// The Flux side, to run and end jobs on it.
    pub fn flux_mut(&mut self) -> &mut SimFlux {
        &mut self.flux
    }

    /// The running fluxk8s engine (`None` before it is loaded, or by hand).
    pub fn engine(&self) -> Option<&Engine> {
        self.fluxk8s.as_ref().map(|k| &k.engine)
    }

    fn fluxk8s_mut(&mut self) -> Result<&mut Fluxk8s, RunError> {
        self.fluxk8s
            .as_mut()
            .ok_or_else(|| RunError::Invalid("fluxk8s is not running (by-hand run)".to_owned()))
    }

    /// Both views synced, as the engine's status says.
    pub fn synced(&self) -> bool {
        self.engine().is_some_and(|engine| {
            let status = engine.status(self.now(), None);
            status.flux.synced && status.kubernetes.synced
        })
    }

    /// The status with every rank's detail, as JSON (`null` without fluxk8s): for
    /// assertions and their messages. Conditions polled in a loop read the typed status
    /// instead (a JSON tree of 1,000 ranks left on the pump's thread would be freed into
    /// the engine's next call).
    pub fn status(&self) -> Value {
        self.engine()
            .map_or(Value::Null, |engine| engine.status_json(self.now()))
    }

    /// Where the planner has `rank`, if anywhere yet.
    pub fn rank_phase(&self, rank: u32) -> Option<RankPhase> {
        self.rank_detail(rank, |detail| detail.phase)?
    }

    /// The planner's word on `rank` (`None` before fluxk8s is loaded).
    pub fn rank_why(&self, rank: u32) -> Option<String> {
        self.rank_detail(rank, |detail| detail.why.to_string())
    }

    /// `read` of the engine's status detail for `rank` alone.
    fn rank_detail<T>(&self, rank: u32, read: impl FnOnce(&RankDetail<'_>) -> T) -> Option<T> {
        let one = IdSet::range(rank, rank);
        let status = self.engine()?.status(self.now(), Some(&one));
        status.detail?.first().map(read)
    }

    /// What the module's status requests do (the engine's status, serialized): the plain
    /// request, timed as `status`, and the first page of every rank's detail, as the
    /// module answers `flux k8s status all`, timed as `status, a page of ranks`.
    pub fn time_status_requests(&mut self) {
        let now = self.now();
        let Some(k) = &self.fluxk8s else {
            return;
        };
        let engine = &k.engine;
        let size = engine.flux().size();
        let (page, _) = detail_page(&IdSet::range(0, size.saturating_sub(1)), size);
        for (kind, detail) in [("status", None), ("status, a page of ranks", Some(&page))] {
            self.timings.time(kind, || {
                serde_json::to_string(&engine.status(now, detail)).expect("the status serializes")
            });
        }
    }

    /// Feeds what Flux sent on both streams since the last call, as the stream callbacks
    /// do. Returns how many payloads there were.
    fn feed_flux_streams(&mut self) -> usize {
        let journal = self.flux.take_journal();
        let overlay = self.flux.take_overlay();
        let jobs = self.flux.take_job_journal();
        if let Some(k) = &mut self.fluxk8s {
            for payload in &journal {
                let now = self.started.elapsed().as_secs_f64();
                self.timings
                    .time("journal", || k.engine.journal(payload, now));
            }
            for payload in &overlay {
                let now = self.started.elapsed().as_secs_f64();
                self.timings
                    .time("overlay", || k.engine.overlay(payload, now));
            }
            for payload in &jobs {
                let now = self.started.elapsed().as_secs_f64();
                self.timings
                    .time("jobs", || k.engine.job_journal(payload, now));
            }
        }
        journal.len() + overlay.len() + jobs.len()
    }

    /// Feeds the driver's reports to the engine, as the driver's wake-up callback does.
    /// Returns how many there were.
    fn feed_driver_reports(&mut self) -> usize {
        let Some(k) = &mut self.fluxk8s else {
            return 0;
        };
        let mut reports = 0;
        while let Some(report) = k.driver.try_recv() {
            reports += 1;
            if let Report::Finished { id, outcome } = &report {
                k.kube_in_flight.remove(id);
                if let Some(entry) = self.kube_log.get_mut(&(self.generation, *id)) {
                    entry.1 = Some(outcome.clone());
                }
                if *outcome != Outcome::Done
                    && let Some(kept) = &mut self.traffic
                {
                    kept.push(Traffic::KubeEnded {
                        id: *id,
                        outcome: outcome.clone(),
                    });
                }
            }
            let now = self.started.elapsed().as_secs_f64();
            let replaced = self
                .timings
                .time("kube_report", || k.engine.kube_report(report, now));
            if let Some(view) = replaced {
                k.driver.release(view);
            }
        }
        reports
    }

    /// An administrator drains `ranks` (`flux resource drain`: no mode, so an existing
    /// drain is an error): the journal event reaches the engine, which steps at once.
    /// Returns the instant just before the engine got it.
    pub fn admin_drain(&mut self, ranks: &IdSet, reason: &str) -> Result<Instant, RunError> {
        let request = json!({"targets": ranks.to_string(), "reason": reason}).to_string();
        self.flux.rpc("resource.drain", &request, 0)?;
        let fed_at = Instant::now();
        self.feed_flux_streams();
        self.step();
        Ok(fed_at)
    }

    /// An administrator undrains `ranks`; the engine hears of it at once and steps.
    pub fn admin_undrain(&mut self, ranks: &IdSet) -> Result<(), RunError> {
        let request = json!({"targets": ranks.to_string()}).to_string();
        self.flux.rpc("resource.undrain", &request, 0)?;
        self.feed_flux_streams();
        self.step();
        Ok(())
    }

    /// The brokers of `ranks` die while their pods keep running: Flux sees them lost,
    /// Kubernetes sees nothing.
    pub fn crash_brokers(&mut self, ranks: &IdSet) {
        for rank in ranks.iter() {
            self.flux.crash_broker(rank);
        }
        self.feed_flux_streams();
    }

    /// `flux k8s resize N`, as the module's RPC handler does it (request, then step).
    pub fn request_size(&mut self, size: u32) -> Result<ResizeAnswer, RunError> {
        let now = self.now();
        let answer = self.fluxk8s_mut()?.engine.request_size(size, now)?;
        self.step();
        Ok(answer)
    }

    /// `flux k8s retire IDSET`, as the module's RPC handler does it.
    pub fn request_retire(&mut self, ranks: &IdSet) -> Result<RetireAnswer, RunError> {
        let now = self.now();
        let answer = self.fluxk8s_mut()?.engine.request_retire(ranks, now)?;
        self.step();
        Ok(answer)
    }

    /// Plans and routes the effects; Flux RPCs are served at once, and what the brokers
    /// said of them on the streams fed back, so this repeats until the engine has nothing
    /// more to say. Returns how many effects there were.
    pub fn step(&mut self) -> usize {
        let mut routed = 0;
        loop {
            let now = self.now();
            let Some(k) = &mut self.fluxk8s else {
                return routed;
            };
            let effects = self.timings.time("step", || k.engine.step(now));
            routed += effects.len();
            let mut flux_side = false;
            for effect in effects {
                match effect {
                    Effect::Kube { id, action } => self.send_to_driver(id, action),
                    Effect::FluxRpc { id, request } => {
                        flux_side = true;
                        self.flux_rpc(id, request);
                    }
                }
            }
            if !flux_side {
                return routed;
            }
            if let Some(mut watch) = self.between_rounds.take() {
                watch(self);
                self.between_rounds = Some(watch);
            }
            self.feed_flux_streams();
        }
    }

    /// Queues a command on the driver; one it cannot take fails at once, as in the module.
    fn send_to_driver(&mut self, id: u64, action: KubeAction) {
        self.record(|| Traffic::Kube(action.clone()));
        let now = self.now();
        let Some(k) = &mut self.fluxk8s else {
            return;
        };
        self.kube_log
            .insert((self.generation, id), (action.clone(), None));
        match k.driver.send(Command::Apply { id, action }) {
            Ok(()) => {
                k.kube_in_flight.insert(id);
            }
            Err(err) => k
                .engine
                .finished(id, Retry::Unreachable(err.to_string()).into(), now),
        }
    }

    /// Sends one Flux RPC to its broker and gives the engine the answer it would get: a
    /// one-way request is done once sent, whatever the broker makes of it.
    fn flux_rpc(&mut self, id: u64, request: FluxRequest) {
        *self.flux_rpcs.entry(request.topic).or_default() += 1;
        self.flux_rpc_last_sent
            .insert(request.topic, Instant::now());
        let answer = self
            .flux
            .rpc(request.topic, &request.payload, request.nodeid);
        let topic = request.topic;
        let expects_reply = request.expects_reply;
        self.record(|| Traffic::FluxRpc(request));
        if let Err(failure) = &answer {
            self.record(|| Traffic::FluxFailed {
                topic,
                failure: failure.clone(),
            });
        }
        let outcome = if expects_reply {
            answer.map_err(Into::into)
        } else {
            Ok(())
        };
        let now = self.now();
        if let Some(k) = &mut self.fluxk8s {
            self.timings
                .time("finished", || k.engine.flux_finished(id, outcome, now));
        }
    }

    /// Waits for a pod event or a driver report (at most `wait`), lets the brokers follow
    /// the pods, feeds the streams and reports to the engine and steps. Returns whether
    /// anything came or was done.
    pub fn pump(&mut self, wait: Duration) -> bool {
        if self.wakes.recv_timeout(wait).is_ok() {
            // One look serves every wake-up queued so far.
            while self.wakes.try_recv().is_ok() {}
        }
        let exits = self.flux.end_exited(&self.sim);
        let pod_events = self.flux.pump();
        let payloads = self.feed_flux_streams();
        let reports = self.feed_driver_reports();
        let effects = self.step();
        exits + reports + pod_events + payloads + effects > 0
    }

    /// Pumps until `done` holds (checked after every pump) or `timeout` passes.
    pub fn run_until(&mut self, timeout: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            // Timers (retries, rate windows) need a step now and then even when idle.
            self.pump(left.min(Duration::from_millis(50)));
        }
    }

    /// Pumps for `duration`, whatever happens.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(duration, |_| false);
    }

    /// No driver command is waiting for its answer.
    pub fn kube_idle(&self) -> bool {
        self.fluxk8s
            .as_ref()
            .is_none_or(|k| k.kube_in_flight.is_empty())
    }

    /// Commands sent to the driver that match `pick`.
    pub fn commands(&self, pick: impl Fn(&KubeAction) -> bool) -> usize {
        self.kube_log.values().filter(|(a, _)| pick(a)).count()
    }

    /// Live pods of the Job, by index.
    pub fn live_indexes(&self) -> IdSet {
        self.sim
            .pod_views(NAMESPACE, &self.job)
            .iter()
            .filter(|pod| pod.is_live())
            .map(|pod| pod.index)
            .collect()
    }
}

/// Pod events for SimFlux, from now on. Each one also rings `wake`, so a pump waiting
/// for the driver wakes for the pods too.
fn follow_pods(sim: &SimCluster, wake: &Sender<()>) -> Receiver<PodEvent> {
    let events = sim.subscribe_pods();
    let (forward, followed) = mpsc::channel();
    let wake = wake.clone();
    std::thread::spawn(move || {
        // Ends when the sim or the world is gone.
        while let Ok(event) = events.recv() {
            if forward.send(event).is_err() || wake.send(()).is_err() {
                break;
            }
        }
    });
    followed
}

/// The API server goes down: every request on every resource fluxk8s uses is answered
/// 503 until `sim.faults().clear()`, and open watch streams are cut, as a restarting
/// server would.
pub fn api_down(sim: &SimCluster) {
    for resource in RESOURCES {
        sim.faults().fail_next(&ALL_VERBS, resource, u32::MAX, 503);
    }
    sim.faults().drop_watches();
}

/// Requests with this verb on this resource answered with this status.
pub fn answered(sim: &SimCluster, verb: Verb, resource: &str, status: u16) -> usize {
    sim.requests()
        .records
        .iter()
        .filter(|r| r.verb == Some(verb) && r.resource.as_deref() == Some(resource))
        .filter(|r| r.status == status)
        .count()
}

/// Events the sim holds with this reason.
pub fn events_with_reason(sim: &SimCluster, reason: &str) -> usize {
    sim.events(NAMESPACE)
        .iter()
        .filter(|event| event["reason"] == reason)
        .count()
}
