//! A whole fluxk8s on a bench: the real [`Engine`] and [`Driver`] against the simulated API
//! server, with the simulated Flux side ([`SimFlux`]) beside them. SimFlux follows the pods
//! (a pod whose container starts runs its rank's broker, one that ends or is deleted takes
//! it away) and serves the engine's Flux RPCs as brokers would: drains and undrains on the
//! leader, and the one-way `state-machine.post` shutdown, which takes the broker offline at
//! once and ends its pod's container with exit 0.
//!
//! The pump loop does what the module's reactor callbacks do: feed stream payloads and
//! driver reports to the engine, step it, and route the effects. Every engine call is
//! timed, since each one is what a reactor callback costs the broker.
//!
//! Shared by the fault tests (`tests/fault_*.rs`) and `examples/bench`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use fluxk8s::engine::{Effect, Engine, FluxRequest};
use fluxk8s::flux::thread_cpu_time;
use fluxk8s::k8s::{Command, Driver, DriverConfig, Outcome, Report, Tuning};
use fluxk8s::model::{IdSet, KubeAction};
use fluxk8s::planner::{PlannerConfig, RankPhase};
use fluxk8s::sim::flux::SimFlux;
use fluxk8s::sim::{
    ApiError, IndexedJobSpec, MiniClusterSpec, PodEvent, SimCluster, SimOptions, Verb,
};
use serde_json::{Value, json};

/// The longest and total time of one kind of engine call: wall time, and the CPU time of
/// the calling thread (what the call itself cost; on a busy machine the wall time also
/// counts the time other threads ran instead).
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    pub calls: u64,
    pub longest: Duration,
    pub total: Duration,
    pub longest_cpu: Duration,
    pub total_cpu: Duration,
}

impl CallStats {
    fn add(&mut self, took: Duration, cpu: Duration) {
        self.calls += 1;
        self.total += took;
        self.longest = self.longest.max(took);
        self.total_cpu += cpu;
        self.longest_cpu = self.longest_cpu.max(cpu);
    }

    /// Adds `more` in, keeping the longest and summing the rest.
    pub fn merge(&mut self, more: &CallStats) {
        self.calls += more.calls;
        self.total += more.total;
        self.longest = self.longest.max(more.longest);
        self.total_cpu += more.total_cpu;
        self.longest_cpu = self.longest_cpu.max(more.longest_cpu);
    }
}

/// Engine call timings by kind: `journal`, `kube_report`, `step`, ...
#[derive(Debug, Clone, Default)]
pub struct CallTimings(pub BTreeMap<&'static str, CallStats>);

impl CallTimings {
    fn time<T>(&mut self, kind: &'static str, call: impl FnOnce() -> T) -> T {
        let cpu_time = || thread_cpu_time().expect("the thread's CPU clock reads");
        let cpu_before = cpu_time();
        let started = Instant::now();
        let result = call();
        let took = started.elapsed();
        let cpu = cpu_time() - cpu_before;
        self.0.entry(kind).or_default().add(took, cpu);
        result
    }

    /// Adds `more` in, call kind by call kind.
    pub fn merge(&mut self, more: &CallTimings) {
        for (kind, stats) in &more.0 {
            self.0.entry(kind).or_default().merge(stats);
        }
    }

    /// The longest single call of any kind (wall time), and its kind.
    pub fn longest(&self) -> Option<(&'static str, Duration)> {
        self.0
            .iter()
            .map(|(kind, stats)| (*kind, stats.longest))
            .max_by_key(|(_, longest)| *longest)
    }

    /// The call with the most CPU time of any kind, and its kind.
    pub fn longest_cpu(&self) -> Option<(&'static str, Duration)> {
        self.0
            .iter()
            .map(|(kind, stats)| (*kind, stats.longest_cpu))
            .max_by_key(|(_, longest)| *longest)
    }
}

/// The namespace every world runs in.
pub const NS: &str = "flux";

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

/// A started simulated cluster, shareable with a world.
pub fn sim() -> Arc<SimCluster> {
    Arc::new(SimCluster::start(SimOptions::default()).expect("the sim starts"))
}

/// Planner settings for tests: no cooldown or rate limit in the way, quick re-issues.
pub fn test_planner() -> PlannerConfig {
    PlannerConfig {
        cooldown: 0.0,
        max_actions_per_minute: 100_000,
        retry_interval: 1.0,
        ..PlannerConfig::default()
    }
}

/// Driver pacing for tests: failures are retried within a fraction of a second.
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

/// Engine + driver + simulated Flux against one simulated cluster.
pub struct World {
    pub sim: Arc<SimCluster>,
    pub engine: Engine,
    pub driver: Driver,
    pub flux: SimFlux,
    pub timings: CallTimings,
    /// The Job running the brokers (pod index = rank).
    job: String,
    planner: PlannerConfig,
    tuning: Tuning,
    /// Rung by the driver and by every pod event (SimFlux has one to follow).
    wakes: Receiver<()>,
    wake_tx: Sender<()>,
    started: Instant,
    /// Driver commands sent and not answered yet.
    kube_in_flight: BTreeSet<u64>,
    /// Every command sent to the driver, by (engine generation, id), with its answer once
    /// it came. A reload starts a new generation (a new engine numbers from 1 again).
    pub kube_log: BTreeMap<(u32, u64), (KubeAction, Option<Outcome>)>,
    generation: u32,
    /// Flux RPCs the engine sent, by topic (one-way ones included, whether or not a
    /// broker was there to get them).
    pub flux_rpcs: BTreeMap<&'static str, u64>,
}

impl World {
    /// A MiniCluster of `size` ranks (at most `max`), its pods running and their ranks
    /// online.
    pub fn with_minicluster(
        sim: Arc<SimCluster>,
        name: &str,
        size: u32,
        max: u32,
        planner: PlannerConfig,
    ) -> World {
        let spec = MiniClusterSpec::new(name, size, max);
        Self::start(sim, name, max, size, planner, |sim| {
            sim.create_minicluster(NS, &spec)
        })
    }

    /// A bare Indexed Job of `size` ranks with `backoffLimitPerIndex: 0` (a deleted pod
    /// fails its index for good), its pods running and their ranks online.
    pub fn with_bare_job(
        sim: Arc<SimCluster>,
        name: &str,
        size: u32,
        planner: PlannerConfig,
    ) -> World {
        let mut spec = IndexedJobSpec::new(name, size);
        spec.backoff_limit_per_index = Some(0);
        Self::start(sim, name, size, size, planner, |sim| {
            sim.create_job(NS, &spec)
        })
    }

    /// Brokers for `configured` ranks of `job` follow the pods from before `create` makes
    /// the workload, so they see every pod start; once `running` ranks are up, fluxk8s is
    /// loaded and waits until both its views are synced.
    fn start(
        sim: Arc<SimCluster>,
        job: &str,
        configured: u32,
        running: u32,
        planner: PlannerConfig,
        create: impl FnOnce(&SimCluster) -> Result<Value, ApiError>,
    ) -> World {
        let (wake_tx, wakes) = mpsc::channel();
        let flux = SimFlux::new(NS, job, configured, follow_pods(&sim, &wake_tx));
        if let Err(err) = create(&sim) {
            panic!("cannot create the workload {job}: {err}");
        }
        let tuning = fast_tuning();
        let driver = spawn_driver(&sim, job, &tuning, &wake_tx);
        let mut world = World {
            engine: Engine::new(planner.clone(), false),
            driver,
            flux,
            sim,
            timings: CallTimings::default(),
            job: job.to_owned(),
            planner,
            tuning,
            wakes,
            wake_tx,
            started: Instant::now(),
            kube_in_flight: BTreeSet::new(),
            kube_log: BTreeMap::new(),
            generation: 0,
            flux_rpcs: BTreeMap::new(),
        };
        let up = world.run_until(Duration::from_secs(60), |w| {
            w.flux.online().len() == running as usize
        });
        assert!(
            up,
            "{running} ranks never came online, only {}",
            world.flux.online()
        );
        world.load_module();
        world
    }

    /// What loading the module on rank 0 does: subscribe to `resource.journal` (its
    /// backlog replays Flux's state), `overlay.monitor` and `job-manager.events-journal`
    /// (who holds which ranks), then wait until both views are synced.
    fn load_module(&mut self) {
        self.engine.journal_restarted();
        self.engine.job_journal_restarted();
        if let Err(err) = self.flux.subscribe_journal() {
            panic!("resource.journal refused: {err}");
        }
        if let Err(err) = self.flux.subscribe_overlay() {
            panic!("overlay.monitor refused: {err}");
        }
        if let Err(err) = self.flux.subscribe_jobs() {
            panic!("job-manager.events-journal refused: {err}");
        }
        self.feed_flux_streams();
        let synced = self.run_until(Duration::from_secs(30), |w| w.synced());
        assert!(synced, "views never synced: {:#}", self.status());
    }

    /// What a module reload does: a new engine and driver (the old driver is stopped and
    /// joined first, abandoning its commands), subscribed afresh. Flux itself, and the
    /// cluster, carry on.
    pub fn reload(&mut self) {
        let fresh = spawn_driver(&self.sim, &self.job, &self.tuning, &self.wake_tx);
        let old = std::mem::replace(&mut self.driver, fresh);
        old.shutdown();
        self.engine = Engine::new(self.planner.clone(), false);
        self.kube_in_flight.clear();
        self.generation += 1;
        self.load_module();
    }

    /// Seconds since the world started: the engine's clock.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Both views synced, as the engine's status says.
    pub fn synced(&self) -> bool {
        let status = self.engine.status(self.now(), None);
        status.flux.synced && status.kubernetes.synced
    }

    /// The status with every rank's detail, as JSON: for assertions and their messages.
    /// Conditions polled in a loop read the typed status instead (a JSON tree of 1,000
    /// ranks left on the pump's thread would be freed into the engine's next call).
    pub fn status(&self) -> Value {
        self.engine.status_json(self.now())
    }

    /// Where the planner has `rank`, if anywhere yet.
    pub fn rank_phase(&self, rank: u32) -> Option<RankPhase> {
        let one = IdSet::range(rank, rank);
        let status = self.engine.status(self.now(), Some(&one));
        status.detail?.first()?.phase
    }

    /// What the module's status requests do (the engine's status, serialized): the plain
    /// request, timed as `status`, and one asking for every rank one by one, timed as
    /// `status, every rank`.
    pub fn time_status_requests(&mut self) {
        let now = self.now();
        let every_rank = IdSet::range(0, self.engine.flux().size().saturating_sub(1));
        let engine = &self.engine;
        for (kind, detail) in [("status", None), ("status, every rank", Some(&every_rank))] {
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
        for payload in &journal {
            let now = self.now();
            self.timings
                .time("journal", || self.engine.journal(payload, now));
        }
        for payload in &overlay {
            let now = self.now();
            self.timings
                .time("overlay", || self.engine.overlay(payload, now));
        }
        for payload in &jobs {
            let now = self.now();
            self.timings
                .time("jobs", || self.engine.job_journal(payload, now));
        }
        journal.len() + overlay.len() + jobs.len()
    }

    /// An administrator drains `ranks` (`flux resource drain`): the journal event reaches
    /// the engine, which steps at once. Returns the instant just before the engine got it.
    pub fn admin_drain(&mut self, ranks: &IdSet, reason: &str) -> Instant {
        let request = json!({"targets": ranks.to_string(), "reason": reason}).to_string();
        if let Err(err) = self.flux.rpc(&self.sim, "resource.drain", &request, 0) {
            panic!("flux resource drain {ranks} refused: {err}");
        }
        let fed_at = Instant::now();
        self.feed_flux_streams();
        self.step();
        fed_at
    }

    /// The brokers of `ranks` die while their pods keep running: Flux sees them lost,
    /// Kubernetes sees nothing. Retiring such a rank takes a pod delete, the path these
    /// tests exercise (a rank whose broker is up is shut down instead).
    pub fn crash_brokers(&mut self, ranks: &IdSet) {
        for rank in ranks.iter() {
            self.flux.crash_broker(rank);
        }
        self.feed_flux_streams();
    }

    /// `flux k8s resize N`, as the module's RPC handler does it (request, then step).
    pub fn request_size(&mut self, size: u32) -> Value {
        let now = self.now();
        let answer = self
            .engine
            .request_size(size, now)
            .unwrap_or_else(|e| panic!("resize to {size} refused: {e}"));
        self.step();
        serde_json::to_value(answer).expect("answer serializes")
    }

    /// `flux k8s retire IDSET`, as the module's RPC handler does it.
    pub fn request_retire(&mut self, ranks: &IdSet) -> Value {
        let now = self.now();
        let answer = self
            .engine
            .request_retire(ranks, now)
            .unwrap_or_else(|e| panic!("retire {ranks} refused: {e}"));
        self.step();
        serde_json::to_value(answer).expect("answer serializes")
    }

    /// Plans and routes the effects; Flux RPCs are served at once, and what the brokers
    /// said of them on the streams fed back, so this repeats until the engine has nothing
    /// more to say.
    pub fn step(&mut self) {
        loop {
            let now = self.now();
            let effects = self.timings.time("step", || self.engine.step(now));
            let mut flux_side = false;
            for effect in effects {
                match effect {
                    Effect::Kube { id, action } => {
                        self.kube_in_flight.insert(id);
                        self.kube_log
                            .insert((self.generation, id), (action.clone(), None));
                        self.driver
                            .send(Command::Apply { id, action })
                            .expect("the driver takes commands");
                    }
                    Effect::FluxRpc { id, request } => {
                        flux_side = true;
                        self.flux_rpc(id, &request);
                    }
                }
            }
            if !flux_side {
                return;
            }
            self.feed_flux_streams();
        }
    }

    /// Sends one Flux RPC to its broker and gives the engine the answer it would get: a
    /// one-way request is done once sent, whatever the broker makes of it.
    fn flux_rpc(&mut self, id: u64, request: &FluxRequest) {
        *self.flux_rpcs.entry(request.topic).or_default() += 1;
        let answer = self
            .flux
            .rpc(&self.sim, request.topic, &request.payload, request.nodeid)
            .map_err(Into::into);
        let outcome = if request.expects_reply {
            answer
        } else {
            Ok(())
        };
        let now = self.now();
        self.timings
            .time("finished", || self.engine.flux_finished(id, outcome, now));
    }

    /// Waits for a pod event or a driver report (at most `wait`), lets the brokers follow
    /// the pods, feeds the streams and reports to the engine and steps. Returns whether
    /// anything came.
    pub fn pump(&mut self, wait: Duration) -> bool {
        if self.wakes.recv_timeout(wait).is_ok() {
            // One look serves every wake-up queued so far.
            while self.wakes.try_recv().is_ok() {}
        }
        let pod_events = self.flux.pump();
        let payloads = self.feed_flux_streams();
        let mut reports = 0;
        while let Some(report) = self.driver.try_recv() {
            reports += 1;
            if let Report::Finished { id, outcome } = &report {
                self.kube_in_flight.remove(id);
                if let Some(entry) = self.kube_log.get_mut(&(self.generation, *id)) {
                    entry.1 = Some(outcome.clone());
                }
            }
            let now = self.now();
            self.timings
                .time("kube_report", || self.engine.kube_report(report, now));
        }
        self.step();
        reports + pod_events + payloads > 0
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
        self.kube_in_flight.is_empty()
    }

    /// Commands sent to the driver that match `pick`.
    pub fn commands(&self, pick: impl Fn(&KubeAction) -> bool) -> usize {
        self.kube_log.values().filter(|(a, _)| pick(a)).count()
    }

    /// Live pods of the Job, by index.
    pub fn live_indexes(&self) -> IdSet {
        self.sim
            .pod_views(NS, &self.job)
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

fn spawn_driver(sim: &SimCluster, job: &str, tuning: &Tuning, wake: &Sender<()>) -> Driver {
    let wake = wake.clone();
    let wake = Arc::new(move || {
        // The world is gone: nobody to wake.
        let _ = wake.send(());
    });
    let config = DriverConfig {
        namespace: Some(NS.to_owned()),
        job: Some(job.to_owned()),
        hostname: Some(format!("{job}-0")),
        tuning: tuning.clone(),
        ..DriverConfig::default()
    };
    Driver::spawn_with_config(sim.kube_config(NS), config, wake).expect("the driver starts")
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
    sim.events(NS)
        .iter()
        .filter(|event| event["reason"] == reason)
        .count()
}
