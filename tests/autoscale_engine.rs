//! Autoscaling end to end through the engine: the simulated Kubernetes API server runs
//! the MiniCluster, the real driver talks to it, and the test plays the Flux side by
//! hand: brokers follow their pods (journal online/offline), drains land as journal
//! events, and jobs come and go as job-manager journal payloads. Time is a fake clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxk8s::engine::{Effect, Engine};
use fluxk8s::k8s::{Command, Driver, DriverConfig, Outcome, Report, Tuning};
use fluxk8s::model::{IdSet, JobView, KubeView, MiniClusterView, PodPhase, PodView};
use fluxk8s::planner::{AutoscaleConfig, PlannerConfig};
use fluxk8s::sim::{MiniClusterSpec, SimCluster, SimOptions};
use serde_json::Value;

const NS: &str = "flux";
const NAME: &str = "flux-sample";
const IDLE_TIMEOUT: f64 = 120.0;
/// Real time the whole run may take; the sim answers in milliseconds.
const WAIT: Duration = Duration::from_secs(30);

const JOB: u64 = 4_000_000;
const JOBSPEC_N4: &str = r#"{"resources":[{"type":"node","count":4,"with":[{"type":"slot","count":1,"with":[{"type":"core","count":1}],"label":"task"}]}],"tasks":[],"attributes":{},"version":1}"#;

fn journal_event(name: &str, context: &str) -> String {
    format!(r#"{{"events":[{{"timestamp":1.0,"name":"{name}","context":{context}}}]}}"#)
}

fn job_event(name: &str, extra: &str) -> String {
    format!(
        r#"{{"id":{JOB},"events":[{{"timestamp":1.0,"name":"{name}","context":{{}}}}]{extra}}}"#
    )
}

/// The engine, the driver and the simulated cluster, with the Flux side played by hand.
struct Rig {
    sim: SimCluster,
    driver: Driver,
    engine: Engine,
    now: f64,
    /// Ranks whose broker is online, as the journal told the engine.
    online: IdSet,
    /// Ranks the running job holds.
    allocated: IdSet,
}

impl Rig {
    fn start(live: u32, max: u32, dry_run: bool) -> Rig {
        let sim = SimCluster::start(SimOptions::default()).expect("sim starts");
        sim.create_minicluster(NS, &MiniClusterSpec::new(NAME, live, max))
            .expect("MiniCluster created");
        let config = DriverConfig {
            hostname: Some(format!("{NAME}-0")),
            tuning: Tuning {
                request_timeout: Duration::from_secs(2),
                retry_base: Duration::from_millis(20),
                retry_cap: Duration::from_millis(200),
                forbidden_first: Duration::from_millis(75),
                forbidden_retry: Duration::from_millis(150),
                watch_timeout: Duration::from_secs(10),
            },
            ..DriverConfig::default()
        };
        let driver = Driver::spawn_with_config(sim.kube_config(NS), config, Arc::new(|| {}))
            .expect("driver starts");
        let planner = PlannerConfig {
            min_size: live,
            cooldown: 30.0,
            ..PlannerConfig::default()
        };
        let mut engine = Engine::new(planner, dry_run);
        engine.set_autoscale(Some(AutoscaleConfig {
            idle_timeout: IDLE_TIMEOUT,
            max_grow_per_minute: 10,
        }));
        let last = max - 1;
        let restart = format!(
            r#"{{"events":[{{"timestamp":1.0,"name":"restart","context":{{"ranks":"0-{last}","online":"","nodelist":"{NAME}-[0-{last}]"}}}}]}}"#
        );
        let define = format!(
            r#"{{"events":[{{"timestamp":1.0,"name":"resource-define","context":{{"method":"configuration"}}}}],"R":{{"version":1,"execution":{{"R_lite":[{{"rank":"0-{last}","children":{{"core":"0-1"}}}}]}}}}}}"#
        );
        for payload in [restart.as_str(), &define, r#"{"events":[]}"#] {
            engine.journal(payload, 0.0);
        }
        engine.job_journal_restarted();
        engine.job_journal(r#"{"id":-1,"events":[]}"#, 0.0);
        Rig {
            sim,
            driver,
            engine,
            now: 0.0,
            online: IdSet::new(),
            allocated: IdSet::new(),
        }
    }

    fn job_journal(&mut self, payload: &str) {
        self.engine.job_journal(payload, self.now);
    }

    /// Brokers follow their pods: a running pod's broker is online, others are not.
    fn follow_pods(&mut self) {
        let running: IdSet = self
            .sim
            .pod_views(NS, NAME)
            .iter()
            .filter(|p| p.is_live() && p.phase == PodPhase::Running)
            .map(|p| p.index)
            .collect();
        let came = running.difference(&self.online);
        let went = self.online.difference(&running);
        if !came.is_empty() {
            let payload = journal_event("online", &format!(r#"{{"idset":"{came}"}}"#));
            self.engine.journal(&payload, self.now);
        }
        if !went.is_empty() {
            let payload = journal_event("offline", &format!(r#"{{"idset":"{went}"}}"#));
            self.engine.journal(&payload, self.now);
        }
        self.online = running;
    }

    /// Carries out one effect as flux-core and the module would.
    fn carry_out(&mut self, effect: Effect) {
        match effect {
            Effect::Kube { id, action } => self
                .driver
                .send(Command::Apply { id, action })
                .expect("driver takes commands"),
            Effect::FluxRpc { id, request } => {
                let payload: Value = serde_json::from_str(&request.payload).unwrap();
                match request.topic {
                    "resource.drain" => {
                        let context = serde_json::json!({
                            "idset": payload["targets"], "reason": payload["reason"], "overwrite": 0
                        });
                        let event = journal_event("drain", &context.to_string());
                        self.engine.journal(&event, self.now);
                    }
                    "resource.undrain" => {
                        let context = serde_json::json!({"idset": payload["targets"]});
                        let event = journal_event("undrain", &context.to_string());
                        self.engine.journal(&event, self.now);
                    }
                    // The broker shuts down and exits 0: its pod succeeds.
                    "state-machine.post" => self
                        .sim
                        .end_index(NS, NAME, request.nodeid, 0)
                        .expect("a live pod to end"),
                    other => panic!("unexpected request {other}"),
                }
                self.engine.finished(id, Outcome::Done, self.now);
            }
        }
    }

    /// One turn of the module's loop at fake time `now`.
    fn turn(&mut self) {
        while let Some(report) = self.driver.try_recv() {
            self.engine.kube_report(report, self.now);
        }
        self.follow_pods();
        // The job-manager's answer about which drained ranks still run jobs.
        self.engine.set_busy(self.allocated.clone());
        for effect in self.engine.step(self.now) {
            self.carry_out(effect);
        }
    }

    /// Turns, a fake second each, until `done` holds; panics with the status if it never does.
    fn until(&mut self, what: &str, mut done: impl FnMut(&mut Rig) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} at t={}; status: {:#}",
                self.now,
                self.engine.status_json(self.now)
            );
            self.turn();
            self.now += 1.0;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn minicluster_size(&self) -> u64 {
        let mc = self.sim.minicluster(NS, NAME).expect("MiniCluster exists");
        mc["spec"]["size"].as_u64().expect("spec.size")
    }

    fn status(&self) -> Value {
        self.engine.status_json(self.now)
    }
}

#[test]
fn a_four_node_job_grows_two_ranks_to_four_then_idle_ranks_shrink_back_to_min_size() {
    let mut rig = Rig::start(2, 10, false);
    rig.until("ranks 0-1 online and the Kubernetes view synced", |rig| {
        rig.online.to_string() == "0-1" && rig.status()["kubernetes"]["synced"] == true
    });

    rig.job_journal(&format!(
        r#"{{"id":{JOB},"events":[{{"timestamp":1.0,"name":"submit","context":{{}}}},{{"timestamp":1.0,"name":"priority","context":{{"priority":16}}}}],"jobspec":{JOBSPEC_N4}}}"#
    ));
    rig.until("four ranks online", |rig| rig.online.to_string() == "0-3");
    assert_eq!(rig.minicluster_size(), 4);
    let status = rig.status();
    let grow = status["autoscale"]["last_grow"]["what"].as_str().unwrap();
    assert!(
        grow.starts_with("autoscale: grow to 4 for ƒMW4X (4 nodes)"),
        "{grow}"
    );
    // The driver recorded the reason on the MiniCluster as an Event.
    let resized: Vec<String> = rig
        .sim
        .events(NS)
        .iter()
        .filter(|e| e["reason"] == "Resized")
        .filter_map(|e| {
            e["message"]
                .as_str()
                .or(e["note"].as_str())
                .map(str::to_owned)
        })
        .collect();
    assert!(
        resized
            .iter()
            .any(|m| m.contains("autoscale: grow to 4 for ƒMW4X")),
        "{resized:?}"
    );

    // The scheduler places the job on the four ranks; it runs, then ends.
    rig.allocated = "0-3".parse().unwrap();
    rig.job_journal(&job_event(
        "alloc",
        r#","R":{"version":1,"execution":{"R_lite":[{"rank":"0-3","children":{"core":"0"}}]}}"#,
    ));
    rig.until("the job to hold ranks 0-3", |rig| {
        rig.status()["autoscale"]["allocated"] == "0-3"
    });
    // Longer than the idle timeout: ranks running a job are not idle.
    rig.now += IDLE_TIMEOUT + 50.0;
    rig.turn();
    assert_eq!(rig.minicluster_size(), 4, "busy ranks stay");
    assert!(
        rig.status()["autoscale"]["idle"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    rig.allocated = IdSet::new();
    rig.job_journal(&job_event("free", ""));
    rig.job_journal(&job_event("clean", ""));
    let freed_at = rig.now;

    rig.until("the size back at min-size 2", |rig| {
        rig.minicluster_size() == 2 && rig.online.to_string() == "0-1"
    });
    let status = rig.status();
    let retire = status["autoscale"]["last_retire"]["what"].as_str().unwrap();
    assert!(
        retire.starts_with("autoscale: retire ranks 2-3, idle for over 120s"),
        "{retire}"
    );
    let retired_at = status["autoscale"]["last_retire"]["at"].as_f64().unwrap();
    assert!(
        retired_at >= freed_at + IDLE_TIMEOUT,
        "{retired_at} vs {freed_at}"
    );
    // Flux keeps the reason on the retired ranks' drains.
    let drained = status["flux"]["drained_by_fluxk8s"].as_str().unwrap();
    assert_eq!(drained, "2-3", "{status:#}");
    assert_eq!(status["desired_size"], 2);

    // Another four-node job: the retired indexes run again, their drains lifted.
    let again = JOB + 1;
    rig.job_journal(&format!(
        r#"{{"id":{again},"events":[{{"timestamp":1.0,"name":"priority","context":{{"priority":16}}}}],"jobspec":{JOBSPEC_N4}}}"#
    ));
    rig.until("four ranks online again, undrained", |rig| {
        rig.online.to_string() == "0-3" && rig.status()["flux"]["drained"] == ""
    });
    let status = rig.status();
    let grown_again = status["autoscale"]["last_grow"]["at"].as_f64().unwrap();
    assert!(
        grown_again >= retired_at + 30.0,
        "cooldown after the retire: {status:#}"
    );
    rig.driver.shutdown();
}

/// A synced view of `size` running pods (no driver), for the dry-run test.
fn kube_view(size: u32, max: u32) -> KubeView {
    KubeView::new(
        JobView {
            active: size,
            ..JobView::new(NAME, "job", size)
        },
        Some(MiniClusterView {
            name: NAME.into(),
            uid: "mc".into(),
            size,
            max_size: max,
            complete_workers: true,
            size_manager: None,
            desired_size: None,
        }),
        (0..size)
            .map(|index| PodView::running(format!("{NAME}-{index}"), format!("uid-{index}"), index))
            .map(Arc::new)
            .collect(),
    )
}

#[test]
fn dry_run_shows_what_autoscale_would_do_and_does_nothing() {
    let mut engine = Engine::new(PlannerConfig::default(), true);
    engine.set_autoscale(Some(AutoscaleConfig::default()));
    let restart = r#"{"events":[{"timestamp":1.0,"name":"restart","context":{"ranks":"0-9","online":"0-1","nodelist":"n[0-9]"}}]}"#;
    engine.journal(restart, 0.0);
    engine.journal(r#"{"events":[]}"#, 0.0);
    engine.kube_report(Report::View(Box::new(kube_view(2, 10))), 0.0);
    engine.kube_report(Report::Synced, 0.0);
    engine.job_journal(r#"{"id":-1,"events":[]}"#, 0.0);
    engine.job_journal(
        &format!(
            r#"{{"id":{JOB},"events":[{{"timestamp":1.0,"name":"priority","context":{{"priority":16}}}}],"jobspec":{JOBSPEC_N4}}}"#
        ),
        0.0,
    );
    assert!(engine.step(1.0).is_empty(), "dry run: no effect");
    let status = engine.status_json(1.0);
    let grow = status["autoscale"]["last_grow"]["what"].as_str().unwrap();
    assert!(grow.starts_with("autoscale: grow to 4"), "{grow}");
    assert_eq!(status["desired_size"], 4);
    assert!(
        status["engine"]["actions"].as_u64().unwrap() > 0,
        "{status:#}"
    );
    assert_eq!(status["autoscale"]["pending"][0]["nodes"], 4);
}
