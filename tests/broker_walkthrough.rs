//! The Downsize walkthrough with real brokers and the real module: the module's
//! Kubernetes driver talks over HTTP to the simulated API server running in this test,
//! whose pods are bridged to `flux broker` processes (tests/common/bridge.rs). Skipped
//! without flux-core.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;
use std::sync::Arc;

use common::bridge::{BrokerEvent, PodBridge};
use common::cluster::{As, Cluster};
use fluxk8s::model::{DESIRED_SIZE_ANNOTATION, IdSet, PodPhase};
use fluxk8s::scenario::flux_core::{flux_or_skip, transcript};
use fluxk8s::sim::{MiniClusterSpec, SimCluster, SimOptions, Verb};
use serde_json::Value;

const NAMESPACE: &str = "flux";
const NAME: &str = "flux-sample";

/// The field `key` of the status's `flux` section.
fn flux_field<'a>(status: &'a Value, key: &str) -> &'a str {
    status["flux"][key].as_str().unwrap_or_default()
}

/// A MiniCluster of `size` pods out of `max_size` configured hosts, every pod running
/// a broker, the module loaded on rank 0 against the sim and synced with both sides.
struct Walkthrough {
    // Dropped first: the bridge stops before the brokers and the server go.
    bridge: PodBridge,
    cluster: Arc<Cluster>,
    sim: Arc<SimCluster>,
}

impl Walkthrough {
    fn start(tag: &str, size: u32, max_size: u32) -> Option<Walkthrough> {
        Self::start_with_env(tag, size, max_size, &[])
    }

    /// [`Walkthrough::start`] with extra environment for the brokers.
    fn start_with_env(
        tag: &str,
        size: u32,
        max_size: u32,
        broker_env: &[(&str, &str)],
    ) -> Option<Walkthrough> {
        let flux = flux_or_skip(tag)?;
        let mut cluster = Cluster::new(&flux, tag, NAME, max_size, "");
        for (key, value) in broker_env {
            cluster.set_broker_env(key, value);
        }
        let cluster = Arc::new(cluster);
        let sim = Arc::new(SimCluster::start(SimOptions::default()).expect("sim starts"));
        let bridge = PodBridge::start(sim.clone(), cluster.clone(), NAMESPACE, NAME);
        sim.create_minicluster(NAMESPACE, &MiniClusterSpec::new(NAME, size, max_size))
            .expect("MiniCluster created");
        let walk = Walkthrough {
            bridge,
            cluster,
            sim,
        };
        walk.cluster
            .wait_for("the leader's pod to run its broker", || {
                walk.bridge.started().contains(&0).then_some(())
            });
        let kubeconfig = walk.cluster.dir().join("kubeconfig");
        walk.sim
            .write_kubeconfig(&kubeconfig, NAMESPACE)
            .expect("kubeconfig written");
        walk.load_module();
        let online = format!("0-{}", size - 1);
        walk.cluster
            .wait_for_status("every pod's broker online and Kubernetes synced", |s| {
                s["flux"]["synced"] == true
                    && flux_field(s, "online") == online
                    && s["kubernetes"]["synced"] == true
            });
        Some(walk)
    }

    /// Loads the module against the sim (again, after a `flux module remove`).
    fn load_module(&self) {
        let kubeconfig = self.cluster.dir().join("kubeconfig");
        self.cluster.load_module(&[
            &format!("kubeconfig={}", kubeconfig.display()),
            &format!("namespace={NAMESPACE}"),
            // The walkthrough grows right after it shrinks.
            "cooldown=0",
        ]);
    }

    /// Events of `reason` recorded so far.
    fn events(&self, reason: &str) -> Vec<Value> {
        self.sim
            .events(NAMESPACE)
            .into_iter()
            .filter(|event| event["reason"] == reason)
            .collect()
    }

    /// Asks the module for `size` live ranks through `flux k8s resize`.
    fn resize(&self, size: u32) {
        self.cluster.flux_ok(&["k8s", "resize", &size.to_string()]);
    }

    fn job(&self) -> Value {
        self.sim.job(NAMESPACE, NAME).expect("the operator's Job")
    }

    fn dmesg(&self) -> String {
        String::from_utf8_lossy(&self.cluster.flux_ok(&["dmesg"]).stdout).into_owned()
    }

    /// Waits until `check` holds on the status, then asserts the bridge still runs.
    fn wait_for_status(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let status = self.cluster.wait_for_status(what, check);
        assert!(self.bridge.is_alive(), "the pod bridge died");
        status
    }
}

#[test]
fn downsize_shuts_a_real_broker_down_and_its_index_completes() {
    let Some(walk) = Walkthrough::start("walk-downsize", 4, 7) else {
        return;
    };
    let started_before = walk.bridge.started();
    assert_eq!(started_before, [0, 1, 2, 3], "one broker per pod");

    walk.cluster
        .flux_ok(&["resource", "drain", "2", "Goodbye rank 2"]);
    let code = walk
        .cluster
        .wait_for("broker 2 to exit by itself", || walk.bridge.exit_code(2));
    assert_eq!(code, 0, "a broker shut down by state-machine.post exits 0");
    assert!(
        walk.dmesg().contains("shut down broker 2"),
        "the module logs the shutdown"
    );
    walk.cluster.wait_for("index 2 to complete", || {
        (walk.job()["status"]["completedIndexes"] == "2").then_some(())
    });
    let status = walk.wait_for_status("rank 2 offline", |s| flux_field(s, "online") == "0-1,3");
    assert_eq!(flux_field(&status, "drained"), "2", "the drain stays");
    let pod_two = walk
        .sim
        .pod_views(NAMESPACE, NAME)
        .into_iter()
        .find(|pod| pod.index == 2)
        .expect("pod 2 is kept");
    assert_eq!(pod_two.phase, PodPhase::Succeeded);

    walk.resize(3);
    walk.wait_for_status("size 3 reached", |s| {
        s["real_size"] == 3 && s["desired_size"] == 3 && s["in_flight"] == 0
    });

    walk.resize(4);
    walk.wait_for_status("rank 4 online", |s| {
        s["real_size"] == 4 && flux_field(s, "online") == "0-1,3-4"
    });
    // Index 2 cannot come back, so 6 live ranks take 7 indexes.
    walk.resize(6);
    walk.wait_for_status("ranks 5 and 6 online", |s| {
        s["real_size"] == 6 && flux_field(s, "online") == "0-1,3-6"
    });

    let history = walk.bridge.history();
    assert_eq!(
        walk.bridge.started(),
        [0, 1, 2, 3, 4, 5, 6],
        "every index started once, index 2 never again: {history:?}"
    );
    assert!(
        !history
            .iter()
            .any(|event| matches!(event, BrokerEvent::Killed(_))),
        "no broker was killed: {history:?}"
    );
    let exits: Vec<&BrokerEvent> = history
        .iter()
        .filter(|event| matches!(event, BrokerEvent::Exited { .. }))
        .collect();
    assert_eq!(
        exits,
        [&BrokerEvent::Exited { rank: 2, code: 0 }],
        "only broker 2 ended by itself"
    );
    let rank_two = &walk.cluster.status_of(&IdSet::range(2, 2))["detail"][0];
    assert_eq!(rank_two["phase"], "retired");
    assert_eq!(
        rank_two["why"],
        "retired: index completed, drained by others"
    );
    let requests = walk.sim.requests();
    assert_eq!(requests.count(Verb::Delete, "pods"), 0, "no pod deleted");
    assert_eq!(
        requests.count(Verb::Create, "pods/eviction"),
        0,
        "no pod evicted"
    );
    assert_eq!(walk.job()["status"]["completedIndexes"], "2");

    // The broker log holds fluxk8s's own lines an administrator reads, none of its
    // libraries' traces: by default nothing below info.
    let dmesg = walk.dmesg();
    let ours: Vec<&str> = dmesg.lines().filter(|l| l.contains(" fluxk8s.")).collect();
    assert!(
        ours.iter()
            .all(|l| !l.contains("fluxk8s.debug") && !l.contains("fluxk8s.trace")),
        "{ours:#?}"
    );
    println!(
        "fluxk8s lines in flux dmesg for load, drain, resize 3, 4, 6: {}",
        ours.len()
    );
}

#[test]
fn a_panic_in_the_kubernetes_worker_is_contained_and_the_driver_restarts() {
    let broker_env = [("FLUXK8S_TEST_PANIC", "1")];
    let Some(walk) = Walkthrough::start_with_env("walk-panic", 2, 3, &broker_env) else {
        return;
    };
    let answer = walk
        .cluster
        .rpc("fluxk8s.test-panic", Some(r#"{"in":"worker"}"#), As::Owner)
        .expect("the request is answered");
    assert_eq!(answer, serde_json::json!({}));
    // The problem shows for the second before the restart; the log keeps it.
    walk.cluster.wait_for("the worker's panic in the broker log", || {
        walk.dmesg()
            .contains("the Kubernetes driver stopped after a panic: panic requested through FLUXK8S_TEST_PANIC; restarting in 1s")
            .then_some(())
    });
    // The driver restarts by itself with a fresh view; no reload is needed.
    let status = walk.wait_for_status("the driver restarted and synced", |s| {
        s["kubernetes"]["restarts"] == 1
            && s["kubernetes"]["synced"] == true
            && s["kubernetes"]["problems"]
                .as_array()
                .is_some_and(Vec::is_empty)
    });
    assert_eq!(flux_field(&status, "online"), "0-1");
    walk.resize(3);
    walk.wait_for_status("rank 2 up after a resize", |s| {
        s["real_size"] == 3 && flux_field(s, "online") == "0-2"
    });
    assert!(
        walk.dmesg()
            .contains("the Kubernetes driver restarts (restart 1)")
    );
    walk.cluster.flux_ok(&["module", "remove", "fluxk8s"]);
    walk.cluster.flux_ok(&["getattr", "size"]);
}

#[test]
fn a_shrink_retires_an_idle_rank_while_a_job_runs_on_the_highest() {
    let Some(walk) = Walkthrough::start("walk-busy", 4, 5) else {
        return;
    };
    let submitted = walk
        .cluster
        .flux_ok(&["submit", "-N1", "--requires=rank:3", "sleep", "6"]);
    let job = String::from_utf8_lossy(&submitted.stdout).trim().to_owned();
    walk.cluster
        .flux_ok(&["job", "wait-event", "-t", "30", &job, "start"]);

    walk.resize(3);
    walk.wait_for_status("rank 2 retired, the busy rank 3 kept", |s| {
        s["real_size"] == 3 && flux_field(s, "online") == "0-1,3"
    });
    let code = walk
        .cluster
        .wait_for("broker 2 to exit by itself", || walk.bridge.exit_code(2));
    assert_eq!(code, 0, "the idle rank was shut down cleanly");
    assert!(walk.cluster.is_running(3), "the job's rank still runs");

    // The job runs to its end and succeeds: `flux job status` exits with its code.
    walk.cluster
        .flux_ok(&["job", "wait-event", "-t", "30", &job, "clean"]);
    walk.cluster.flux_ok(&["job", "status", &job]);
    let status = walk.cluster.status();
    assert_eq!(
        flux_field(&status, "drained"),
        "2",
        "only rank 2 was drained"
    );
    let dmesg = walk.dmesg();
    assert!(
        dmesg.contains("drain rank(s) 2 (fluxk8s: retired by resize to 3)"),
        "{dmesg}"
    );
}

/// Calls of each reactor callback kind, from the status's `callbacks`.
fn callback_calls(status: &Value) -> BTreeMap<String, u64> {
    let kinds = status["callbacks"]
        .as_object()
        .expect("callbacks in the status");
    kinds
        .iter()
        .map(|(kind, cost)| (kind.clone(), cost["calls"].as_u64().unwrap_or(0)))
        .collect()
}

#[test]
fn a_busy_rank_waits_for_its_job_with_nothing_polled_and_goes_when_it_ends() {
    // Rank 2 is a middle rank, so it is shut down rather than cut by the size.
    let Some(walk) = Walkthrough::start("walk-job-end", 4, 4) else {
        return;
    };
    let submitted = walk.cluster.flux_ok(&[
        "submit",
        "-N1",
        "-t",
        "10m",
        "--requires=rank:2",
        "sleep",
        "600",
    ]);
    let job = String::from_utf8_lossy(&submitted.stdout).trim().to_owned();
    walk.cluster
        .flux_ok(&["job", "wait-event", "-t", "30", &job, "start"]);
    walk.cluster.flux_ok(&["k8s", "retire", "2"]);
    walk.wait_for_status("rank 2 drained", |s| flux_field(s, "drained") == "2");
    let detail = walk.cluster.status_of(&IdSet::range(2, 2));
    let why = detail["detail"][0]["why"].as_str().unwrap_or_default();
    assert!(why.starts_with("draining: busy (until "), "{why}");

    // While the job runs, nothing runs in the module but the handlers of the status
    // requests that look (and their clients' disconnects): no timer, no request to the
    // job-manager, no stream reply, no driver report. The window is longer than the 5 s
    // poll this replaced.
    let before = walk.cluster.status();
    std::thread::sleep(std::time::Duration::from_secs(6));
    let after = walk.cluster.status();
    let (was, is) = (callback_calls(&before), callback_calls(&after));
    let moved: Vec<String> = is
        .iter()
        .filter(|&(kind, calls)| was.get(kind) != Some(calls) && kind != "request handler")
        .map(|(kind, calls)| format!("{kind}: {} -> {calls}", was.get(kind).unwrap_or(&0)))
        .collect();
    assert!(
        moved.is_empty(),
        "callbacks ran while waiting on the job: {moved:?}"
    );
    assert!(walk.cluster.is_running(2), "the busy rank still runs");

    // The job ends: its `free` event retires the rank, with no poll to wait for.
    walk.cluster.flux_ok(&["cancel", &job]);
    walk.wait_for_status("rank 2 retired", |s| {
        flux_field(s, "online") == "0-1,3" && s["real_size"] == 3
    });
    let code = walk
        .cluster
        .wait_for("broker 2 to exit by itself", || walk.bridge.exit_code(2));
    assert_eq!(code, 0, "rank 2 was shut down cleanly");
}

#[test]
fn resizes_that_change_their_mind_send_one_drain_state_request_per_rank_at_a_time() {
    let Some(walk) = Walkthrough::start("walk-flap", 3, 6) else {
        return;
    };
    for round in 0..10 {
        walk.resize(if round % 2 == 0 { 6 } else { 3 });
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    walk.resize(5);
    let status = walk.wait_for_status("5 live ranks, nothing in flight", |s| {
        s["real_size"] == 5 && s["desired_size"] == 5 && s["in_flight"] == 0
    });
    let problems = status["problems"].to_string();
    assert!(
        !problems.contains("drain rank(s)"),
        "a drain or undrain failed: {problems}"
    );
    let dmesg = walk.dmesg();
    let requests = dmesg
        .lines()
        .filter(|line| line.contains("fluxk8s") && line.contains("drain rank(s)"))
        .count();
    assert!(
        !dmesg.contains("not drained") && !dmesg.contains("already drained"),
        "{dmesg}"
    );
    println!("drain and undrain requests over 11 resizes: {requests}");
}

#[test]
fn another_writers_size_is_followed_both_ways_and_never_written_back() {
    let Some(walk) = Walkthrough::start("walk-hpa", 4, 8) else {
        return;
    };
    let scale = |size: i64| {
        walk.sim
            .set_minicluster_size(NAMESPACE, NAME, size, "kubectl-scale")
            .expect("scaled");
    };
    scale(8);
    walk.wait_for_status("8 ranks up", |s| {
        s["real_size"] == 8 && flux_field(s, "online") == "0-7"
    });
    scale(4);
    walk.wait_for_status("ranks 4-7 gone and drained as above the size", |s| {
        flux_field(s, "online") == "0-3" && flux_field(s, "drained") == "4-7"
    });
    scale(8);
    let status = walk.wait_for_status("8 ranks up and undrained again", |s| {
        s["real_size"] == 8
            && flux_field(s, "online") == "0-7"
            && flux_field(s, "drained").is_empty()
    });
    assert_eq!(status["desired_size"], 8);
    assert_eq!(status["plan"]["size_set_by"]["manager"], "kubectl-scale");
    // A few seconds more: nothing takes the size back.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let minicluster = walk.sim.minicluster(NAMESPACE, NAME).expect("MiniCluster");
    assert_eq!(minicluster["spec"]["size"], 8);
    let requests = walk.sim.requests();
    assert_eq!(
        requests.count(Verb::Patch, "miniclusters"),
        0,
        "fluxk8s wrote the size"
    );
    assert_eq!(
        walk.events("SizeFollowed").len(),
        3,
        "one Event per size change followed"
    );
    let dmesg = walk.dmesg();
    assert!(
        dmesg.contains("drain rank(s) 4-7 (fluxk8s: retired (above size))"),
        "{dmesg}"
    );
}

#[test]
fn a_kubectl_annotation_resizes_drain_aware_and_the_target_survives_a_reload() {
    let Some(walk) = Walkthrough::start("walk-annotate", 4, 7) else {
        return;
    };
    let annotate = |value: &str| {
        walk.sim
            .annotate_minicluster(
                NAMESPACE,
                NAME,
                DESIRED_SIZE_ANNOTATION,
                value,
                "kubectl-annotate",
            )
            .expect("annotated");
    };
    walk.cluster
        .flux_ok(&["resource", "drain", "2", "Goodbye rank 2"]);
    let code = walk
        .cluster
        .wait_for("broker 2 to exit by itself", || walk.bridge.exit_code(2));
    assert_eq!(code, 0);

    annotate("3");
    walk.wait_for_status("3 live ranks, rank 3 kept", |s| {
        s["real_size"] == 3 && s["desired_size"] == 3 && flux_field(s, "online") == "0-1,3"
    });
    let asked = walk.events("ResizeRequested");
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0]["message"],
        format!(
            "{DESIRED_SIZE_ANNOTATION}=3 set by kubectl-annotate: resizing to 3 live ranks, \
             drain-aware"
        )
    );
    annotate("4");
    walk.wait_for_status("4 live ranks", |s| {
        s["real_size"] == 4 && flux_field(s, "online") == "0-1,3-4"
    });

    // A reload forgets nothing: the new module reads the target back from the object.
    walk.cluster.flux_ok(&["module", "remove", "fluxk8s"]);
    walk.load_module();
    walk.wait_for_status("the target restored", |s| {
        s["kubernetes"]["synced"] == true && s["desired_size"] == 4 && s["real_size"] == 4
    });

    annotate("lots");
    let refused = walk.cluster.wait_for("a Warning for the bad value", || {
        walk.events("BadDesiredSize").into_iter().next()
    });
    assert_eq!(refused["type"], "Warning");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"lots\" set by kubectl-annotate is not a whole number")),
        "{refused}"
    );
    assert_eq!(walk.cluster.status()["desired_size"], 4, "nothing changed");
    assert_eq!(
        walk.bridge.started(),
        [0, 1, 2, 3, 4],
        "index 2 never started again"
    );
}

#[test]
fn resize_wait_prints_progress_until_reached_and_says_why_it_cannot_be() {
    let Some(walk) = Walkthrough::start("walk-wait", 2, 4) else {
        return;
    };
    let mut watch = walk
        .cluster
        .flux_command(&["k8s", "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("flux k8s watch runs");
    walk.wait_for_status("the watch stream open", |s| s["watchers"] == 1);
    let k8s = |args: &[&str]| {
        let output = walk.cluster.flux(&[&["k8s"], args].concat());
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        println!("$ flux k8s {}\n{stdout}{stderr}", args.join(" "));
        (output, stdout, stderr)
    };

    let (grow, out, _) = k8s(&["resize", "4", "--wait", "--timeout", "60"]);
    assert!(grow.status.success(), "{}", transcript(&grow));
    assert!(
        out.starts_with("size 4 requested: target 4, reachable 4\n"),
        "{out}"
    );
    assert!(
        out.contains("starting 2-3: "),
        "the ranks on their way: {out}"
    );
    assert!(out.ends_with("size 4 reached\n"), "{out}");
    let status = walk.cluster.status();
    assert_eq!(
        (status["real_size"].as_u64(), status["in_flight"].as_u64()),
        (Some(4), Some(0))
    );

    let (shrink, out, _) = k8s(&["resize", "3", "--wait", "--timeout", "60"]);
    assert!(shrink.status.success(), "{}", transcript(&shrink));
    assert!(
        out.contains("retiring 3: "),
        "the rank on its way out: {out}"
    );
    assert!(out.ends_with("size 3 reached\n"), "{out}");

    // Kubernetes refuses size changes from now on.
    walk.sim.faults().forbid(Verb::Patch, "miniclusters");
    // Beyond the MiniCluster's maxSize: refused at once with the limit.
    let (beyond, out, err) = k8s(&["resize", "9", "--wait"]);
    assert_eq!(beyond.status.code(), Some(3), "{}", transcript(&beyond));
    assert!(out.contains("limited by maximum-size: max 4"), "{out}");
    assert_eq!(
        err,
        "flux-k8s: size 9 cannot be reached (target 4, reachable 4)\n"
    );

    // Kubernetes refuses the size change, so 4 never comes.
    let (stuck, _, err) = k8s(&["resize", "4", "--wait", "--timeout", "3"]);
    assert_eq!(stuck.status.code(), Some(4), "{}", transcript(&stuck));
    assert_eq!(err, "flux-k8s: timed out after 3s waiting for size 4\n");

    let _ = watch.kill();
    let _ = watch.wait();
    let mut lines = String::new();
    watch
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut lines)
        .expect("watch output");
    println!("$ flux k8s watch\n{lines}");
    let lines: Vec<&str> = lines.lines().collect();
    assert!(lines.len() >= 4, "a line per change: {lines:#?}");
    assert!(
        lines[0].contains("size 2 (expected 2)"),
        "now first: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("starting 2-3: ")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("retiring 3: ")),
        "{lines:#?}"
    );
    // HH:MM:SS, then what changed: no line repeats the one before it.
    assert!(
        lines.windows(2).all(|w| w[0][8..] != w[1][8..]),
        "{lines:#?}"
    );
    // Every client went away: the broker's disconnect dropped their streams.
    walk.wait_for_status("no watcher left", |s| s["watchers"] == 0);
}

#[test]
fn retire_wait_prints_progress_until_the_rank_is_retired() {
    let Some(walk) = Walkthrough::start("walk-retire-wait", 3, 4) else {
        return;
    };
    let retire = walk
        .cluster
        .flux(&["k8s", "retire", "1", "--wait", "--timeout", "60"]);
    let out = String::from_utf8_lossy(&retire.stdout);
    println!("$ flux k8s retire 1 --wait --timeout 60\n{out}");
    assert!(retire.status.success(), "{}", transcript(&retire));
    assert!(out.starts_with("retiring ranks 1\n"), "{out}");
    assert!(
        out.contains("retiring 1: "),
        "the rank on its way out: {out}"
    );
    assert!(out.ends_with("ranks 1 retired\n"), "{out}");
    let status = walk.cluster.status_of(&IdSet::range(1, 1));
    assert_eq!(status["detail"][0]["phase"], "retired");
    assert_eq!(flux_field(&status, "online"), "0,2");
}
