//! A whole fluxk8s on a bench: the real [`Engine`] and [`Driver`] against the simulated API
//! server, with a fake Flux beside them. The fake Flux follows the pods (a pod whose
//! container starts brings its rank online, one whose container ends takes it offline) and
//! carries out the engine's Flux RPCs (drain, undrain, shutdown) as a broker would, by
//! answering them and emitting the matching `resource.journal` events.
//!
//! The pump loop does what the module's reactor callbacks do: feed stream payloads and
//! driver reports to the engine, step it, and route the effects. Every engine call is
//! timed, since each one is what a reactor callback costs the broker.
//!
//! Shared by the fault tests (`tests/fault_*.rs`) and `examples/bench.rs`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use fluxk8s::engine::{Effect, Engine};
use fluxk8s::k8s::{Command, Driver, DriverConfig, Outcome, Report, Tuning};
use fluxk8s::model::{IdSet, KubeAction};
use fluxk8s::planner::PlannerConfig;
use fluxk8s::sim::{
    IndexedJobSpec, MiniClusterSpec, PodEvent, PodEventKind, SimCluster, SimOptions, Verb,
};
use serde_json::{Value, json};

/// What wakes the pump: the driver's doorbell or a pod lifecycle event.
enum Input {
    Wake,
    Pod(PodEvent),
}

/// The longest and total time of one kind of engine call.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    pub calls: u64,
    pub longest: Duration,
    pub total: Duration,
}

impl CallStats {
    fn add(&mut self, took: Duration) {
        self.calls += 1;
        self.total += took;
        self.longest = self.longest.max(took);
    }
}

/// Engine call timings by kind: `journal`, `kube_report`, `step`, ...
#[derive(Debug, Clone, Default)]
pub struct CallTimings(pub BTreeMap<&'static str, CallStats>);

impl CallTimings {
    fn time<T>(&mut self, kind: &'static str, call: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = call();
        self.0.entry(kind).or_default().add(started.elapsed());
        result
    }

    /// The longest single call of any kind, and its kind.
    pub fn longest(&self) -> Option<(&'static str, Duration)> {
        self.0
            .iter()
            .map(|(kind, stats)| (*kind, stats.longest))
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
        forbidden_retry: Duration::from_millis(200),
        watch_timeout: Duration::from_secs(30),
    }
}

/// The instance the fake Flux plays: its Job (pod index = rank) and broker size.
#[derive(Debug, Clone)]
pub struct Instance {
    pub namespace: String,
    pub job: String,
    /// Configured ranks (the broker size, i.e. the maximum size).
    pub size: u32,
}

/// Flux as the brokers would report it: which ranks are up and which are drained.
#[derive(Debug)]
pub struct FakeFlux {
    instance: Instance,
    online: IdSet,
    drains: BTreeMap<u32, String>,
    /// Ranks told to shut down, whose pods fake Flux ends with exit 0.
    shut_down: IdSet,
    epoch: Instant,
}

impl FakeFlux {
    fn timestamp(&self) -> f64 {
        // Flux writes seconds since the Unix epoch; any steady origin does here.
        1.7e9 + self.epoch.elapsed().as_secs_f64()
    }

    fn event(&self, name: &str, context: Value) -> String {
        json!({"events": [{"timestamp": self.timestamp(), "name": name, "context": context}]})
            .to_string()
    }

    /// The `resource.journal` backlog a fresh subscription gets: restart, the drains
    /// grouped by reason, then the empty response that ends the backlog.
    pub fn backlog(&self) -> Vec<String> {
        let last = self.instance.size - 1;
        let nodelist = match last {
            0 => format!("{}-0", self.instance.job),
            _ => format!("{}-[0-{last}]", self.instance.job),
        };
        let mut payloads = vec![self.event(
            "restart",
            json!({
                "ranks": IdSet::range(0, last).to_string(),
                "online": self.online.to_string(),
                "nodelist": nodelist,
            }),
        )];
        let mut by_reason: BTreeMap<&str, IdSet> = BTreeMap::new();
        for (rank, reason) in &self.drains {
            by_reason.entry(reason).or_default().insert(*rank);
        }
        payloads.extend(
            by_reason
                .iter()
                .map(|(reason, ranks)| self.drain_event(ranks, reason)),
        );
        payloads.push(json!({"events": []}).to_string());
        payloads
    }

    fn drain_event(&self, ranks: &IdSet, reason: &str) -> String {
        self.event(
            "drain",
            json!({"idset": ranks.to_string(), "reason": reason, "overwrite": 0}),
        )
    }

    /// Records a drain (by anyone) and returns its journal event.
    pub fn drain(&mut self, ranks: &IdSet, reason: &str) -> String {
        for rank in ranks.iter() {
            self.drains.entry(rank).or_insert_with(|| reason.to_owned());
        }
        self.drain_event(ranks, reason)
    }

    fn undrain(&mut self, ranks: &IdSet) -> String {
        for rank in ranks.iter() {
            self.drains.remove(&rank);
        }
        self.event("undrain", json!({"idset": ranks.to_string()}))
    }

    pub fn online(&self) -> &IdSet {
        &self.online
    }

    pub fn drained(&self) -> IdSet {
        self.drains.keys().copied().collect()
    }
}

/// Engine + driver + fake Flux against one simulated cluster.
pub struct World {
    pub sim: Arc<SimCluster>,
    pub engine: Engine,
    pub driver: Driver,
    pub flux: FakeFlux,
    pub timings: CallTimings,
    planner: PlannerConfig,
    tuning: Tuning,
    inputs: Receiver<Input>,
    input_tx: Sender<Input>,
    started: Instant,
    /// Driver commands sent and not answered yet.
    kube_in_flight: BTreeSet<u64>,
    /// Every command sent to the driver, by (engine generation, id), with its answer once
    /// it came. A reload starts a new generation (a new engine numbers from 1 again).
    pub kube_log: BTreeMap<(u32, u64), (KubeAction, Option<Outcome>)>,
    generation: u32,
    /// Flux RPCs carried out, by topic.
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
        sim.create_minicluster(NS, &MiniClusterSpec::new(name, size, max))
            .expect("MiniCluster created");
        Self::started_with(sim, name, size, max, planner)
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
        sim.create_job(NS, &spec).expect("Job created");
        Self::started_with(sim, name, size, size, planner)
    }

    fn started_with(
        sim: Arc<SimCluster>,
        job: &str,
        running: u32,
        size: u32,
        planner: PlannerConfig,
    ) -> World {
        let instance = Instance {
            namespace: NS.to_owned(),
            job: job.to_owned(),
            size,
        };
        let mut world = World::start(sim, instance, planner, fast_tuning());
        let up = world.run_until(Duration::from_secs(60), |w| {
            w.flux.online().len() == running as usize
        });
        assert!(
            up,
            "{running} ranks never came online: {:#}",
            world.status()
        );
        world
    }

    /// Starts the engine and driver for `instance` on `sim`, replays the Flux backlog
    /// (ranks online = pods already running), and waits until both views are synced.
    pub fn start(
        sim: Arc<SimCluster>,
        instance: Instance,
        planner: PlannerConfig,
        tuning: Tuning,
    ) -> World {
        let (input_tx, inputs) = mpsc::channel();
        let pod_events = sim.subscribe_pods();
        let forward = input_tx.clone();
        std::thread::spawn(move || {
            // Ends when the sim or the world is gone.
            while let Ok(event) = pod_events.recv() {
                if forward.send(Input::Pod(event)).is_err() {
                    break;
                }
            }
        });
        let online: IdSet = sim
            .pod_views(&instance.namespace, &instance.job)
            .iter()
            .filter(|pod| pod.is_live() && pod.ready)
            .map(|pod| pod.index)
            .filter(|&index| index < instance.size)
            .collect();
        let flux = FakeFlux {
            instance,
            online,
            drains: BTreeMap::new(),
            shut_down: IdSet::new(),
            epoch: Instant::now(),
        };
        let driver = spawn_driver(&sim, &flux.instance, &tuning, &input_tx);
        let mut world = World {
            engine: Engine::new(planner.clone(), false),
            driver,
            flux,
            sim,
            timings: CallTimings::default(),
            planner,
            tuning,
            inputs,
            input_tx,
            started: Instant::now(),
            kube_in_flight: BTreeSet::new(),
            kube_log: BTreeMap::new(),
            generation: 0,
            flux_rpcs: BTreeMap::new(),
        };
        world.replay_backlog();
        let synced = world.run_until(Duration::from_secs(30), |w| w.synced());
        assert!(synced, "views never synced: {:#}", world.status());
        world
    }

    /// What a module reload does: a new engine and driver (the old driver is stopped and
    /// joined first, abandoning its commands), the Flux backlog replayed to the new
    /// engine. Flux itself, and the cluster, carry on.
    pub fn reload(&mut self) {
        let fresh = spawn_driver(&self.sim, &self.flux.instance, &self.tuning, &self.input_tx);
        let old = std::mem::replace(&mut self.driver, fresh);
        old.shutdown();
        self.engine = Engine::new(self.planner.clone(), false);
        self.kube_in_flight.clear();
        self.generation += 1;
        self.replay_backlog();
        let synced = self.run_until(Duration::from_secs(30), |w| w.synced());
        assert!(
            synced,
            "views never synced after reload: {:#}",
            self.status()
        );
    }

    fn replay_backlog(&mut self) {
        self.engine.journal_restarted();
        for payload in self.flux.backlog() {
            self.feed_journal(&payload);
        }
    }

    /// Seconds since the world started: the engine's clock.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn instance(&self) -> &Instance {
        &self.flux.instance
    }

    /// Both views synced, as the engine's status says.
    pub fn synced(&self) -> bool {
        let status = self.status();
        status["flux"]["synced"] == true && status["kubernetes"]["synced"] == true
    }

    pub fn status(&self) -> Value {
        self.engine.status_json(self.now())
    }

    /// Feeds one `resource.journal` payload, as the journal stream callback does.
    pub fn feed_journal(&mut self, payload: &str) {
        let now = self.now();
        let engine = &mut self.engine;
        self.timings
            .time("journal", || engine.journal(payload, now));
    }

    /// An administrator drains `ranks` (`flux resource drain`): the journal event reaches
    /// the engine, which steps at once. Returns the instant just before the engine got it.
    pub fn admin_drain(&mut self, ranks: &IdSet, reason: &str) -> Instant {
        let payload = self.flux.drain(ranks, reason);
        let fed_at = Instant::now();
        self.feed_journal(&payload);
        self.step();
        fed_at
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
    /// The brokers of `ranks` die while their pods keep running: Flux sees them go
    /// offline, Kubernetes sees nothing. Retiring such a rank takes a pod delete, the path
    /// these tests exercise (a rank whose broker is up is shut down instead).
    pub fn crash_brokers(&mut self, ranks: &IdSet) {
        for rank in ranks.iter() {
            self.flux.online.remove(rank);
        }
        let event = self
            .flux
            .event("offline", json!({"idset": ranks.to_string()}));
        self.feed_journal(&event);
    }

    pub fn request_retire(&mut self, ranks: &IdSet) -> Value {
        let answer = self
            .engine
            .request_retire(ranks)
            .unwrap_or_else(|e| panic!("retire {ranks} refused: {e}"));
        self.step();
        serde_json::to_value(answer).expect("answer serializes")
    }

    /// Plans and routes the effects; Flux RPCs are answered at once, and their journal
    /// events fed back, so this repeats until the engine has nothing more to say.
    pub fn step(&mut self) {
        loop {
            let now = self.now();
            let engine = &mut self.engine;
            let effects = self.timings.time("step", || engine.step(now));
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
                        self.flux_rpc(id, request.topic, &request.payload, request.nodeid);
                    }
                }
            }
            if !flux_side {
                return;
            }
        }
    }

    /// Carries out one Flux RPC as rank 0 would, then answers it.
    fn flux_rpc(&mut self, id: u64, topic: &'static str, payload: &str, nodeid: u32) {
        *self.flux_rpcs.entry(topic).or_default() += 1;
        let request: Value = serde_json::from_str(payload).expect("the engine sends JSON");
        let ranks = |key: &str| -> IdSet {
            request[key]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{topic}: bad {key} in {payload}"))
        };
        match topic {
            "resource.drain" => {
                let reason = request["reason"].as_str().unwrap_or_default().to_owned();
                let event = self.flux.drain(&ranks("targets"), &reason);
                self.feed_journal(&event);
            }
            "resource.undrain" => {
                let event = self.flux.undrain(&ranks("targets"));
                self.feed_journal(&event);
            }
            "state-machine.post" => {
                assert_eq!(request["event"], "shutdown", "{payload}");
                let rank = nodeid;
                // The broker shuts down and exits 0: its pod completes.
                self.flux.shut_down.insert(rank);
                let instance = &self.flux.instance;
                // A pod already gone has nothing left to end.
                let _ = self
                    .sim
                    .end_index(&instance.namespace, &instance.job, rank, 0);
            }
            other => panic!("unexpected Flux RPC {other}"),
        }
        let now = self.now();
        let engine = &mut self.engine;
        self.timings
            .time("finished", || engine.finished(id, Ok(()), now));
    }

    /// Takes what is waiting (at most `wait` for the first input), feeds it to the engine
    /// and steps. Returns whether anything came.
    pub fn pump(&mut self, wait: Duration) -> bool {
        let first = match self.inputs.recv_timeout(wait) {
            Ok(input) => Some(input),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => unreachable!("the world holds a sender"),
        };
        let mut came_online = IdSet::new();
        let mut went_offline = IdSet::new();
        let waiting: Vec<Input> = first.into_iter().chain(self.inputs.try_iter()).collect();
        for input in waiting {
            if let Input::Pod(event) = input {
                self.follow_pod(event, &mut came_online, &mut went_offline);
            }
        }
        if !went_offline.is_empty() {
            let event = self
                .flux
                .event("offline", json!({"idset": went_offline.to_string()}));
            self.feed_journal(&event);
        }
        if !came_online.is_empty() {
            let event = self
                .flux
                .event("online", json!({"idset": came_online.to_string()}));
            self.feed_journal(&event);
        }
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
            let engine = &mut self.engine;
            self.timings
                .time("kube_report", || engine.kube_report(report, now));
        }
        self.step();
        reports > 0 || !came_online.is_empty() || !went_offline.is_empty()
    }

    /// A broker runs while its pod's container runs.
    fn follow_pod(&mut self, event: PodEvent, online: &mut IdSet, offline: &mut IdSet) {
        let instance = &self.flux.instance;
        let ours = event.namespace == instance.namespace
            && event.job.as_deref() == Some(instance.job.as_str());
        let Some(rank) = event.index.filter(|&k| ours && k < instance.size) else {
            return;
        };
        match event.kind {
            PodEventKind::Started => {
                self.flux.online.insert(rank);
                offline.remove(rank);
                online.insert(rank);
            }
            PodEventKind::Ended { .. } => {
                if self.flux.online.remove(rank) {
                    online.remove(rank);
                    offline.insert(rank);
                }
            }
            PodEventKind::Terminating | PodEventKind::Deleted => {}
        }
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
        let instance = &self.flux.instance;
        self.sim
            .pod_views(&instance.namespace, &instance.job)
            .iter()
            .filter(|pod| pod.is_live())
            .map(|pod| pod.index)
            .collect()
    }
}

fn spawn_driver(
    sim: &SimCluster,
    instance: &Instance,
    tuning: &Tuning,
    inputs: &Sender<Input>,
) -> Driver {
    let wake_tx = inputs.clone();
    let wake = Arc::new(move || {
        // The world is gone: nobody to wake.
        let _ = wake_tx.send(Input::Wake);
    });
    let config = DriverConfig {
        namespace: Some(instance.namespace.clone()),
        job: Some(instance.job.clone()),
        hostname: Some(format!("{}-0", instance.job)),
        tuning: tuning.clone(),
        ..DriverConfig::default()
    };
    Driver::spawn_with_config(sim.kube_config(&instance.namespace), config, wake)
        .expect("the driver starts")
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
