//! The Kubernetes driver end to end against the simulated API server: discovery, watches,
//! actions, Events, and behaviour under faults.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use fluxk8s::k8s::target::LookupError;
use fluxk8s::k8s::{Command, Driver, DriverConfig, K8sError, Outcome, Problem, Report, Tuning};
use fluxk8s::model::Refusal;
use fluxk8s::model::{KubeAction, KubeView, PodPhase};
use fluxk8s::sim::{IndexedJobSpec, MiniClusterSpec, SimCluster, SimOptions, Verb};

const NS: &str = "flux";
/// Generous: the sim answers in milliseconds, but CI machines stall.
const WAIT: Duration = Duration::from_secs(20);

fn fast_tuning() -> Tuning {
    Tuning {
        request_timeout: Duration::from_secs(2),
        retry_base: Duration::from_millis(20),
        retry_cap: Duration::from_millis(200),
        forbidden_first: Duration::from_millis(75),
        forbidden_retry: Duration::from_millis(150),
        watch_timeout: Duration::from_secs(10),
    }
}

fn config_for(hostname: &str) -> DriverConfig {
    DriverConfig {
        hostname: Some(hostname.to_owned()),
        tuning: fast_tuning(),
        ..DriverConfig::default()
    }
}

fn sim() -> SimCluster {
    SimCluster::start(SimOptions::default()).expect("sim starts")
}

/// The module's side of a driver: drains reports after each wake, remembers them.
struct Module {
    driver: Driver,
    woken: Receiver<()>,
    seen: Vec<Report>,
    view: Option<KubeView>,
    next_id: u64,
}

impl Module {
    fn wake_pair() -> (Arc<dyn Fn() + Send + Sync>, Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let wake = Arc::new(move || {
            let _ = tx.send(());
        });
        (wake, rx)
    }

    fn start(sim: &SimCluster, config: DriverConfig) -> Module {
        let (wake, woken) = Self::wake_pair();
        let driver =
            Driver::spawn_with_config(sim.kube_config(NS), config, wake).expect("driver starts");
        Self::with(driver, woken)
    }

    fn with(driver: Driver, woken: Receiver<()>) -> Module {
        Module {
            driver,
            woken,
            seen: Vec::new(),
            view: None,
            next_id: 1,
        }
    }

    /// Waits for the next report, or `None` at `deadline`.
    fn next_report(&mut self, deadline: Instant) -> Option<Report> {
        loop {
            if let Some(report) = self.driver.try_recv() {
                if let Report::View(view) = &report {
                    self.view = Some((**view).clone());
                }
                self.seen.push(report.clone());
                return Some(report);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            // A wake may come before its report is readable, or be shared by several.
            let _ = self.woken.recv_timeout(left.min(Duration::from_millis(50)));
        }
    }

    /// Waits for a report `pick` accepts.
    fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Report) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        while let Some(report) = self.next_report(deadline) {
            if let Some(found) = pick(&report) {
                return found;
            }
        }
        panic!(
            "timed out waiting for {what}; reports so far: {:#?}",
            self.seen
        );
    }

    /// Waits until the latest view satisfies `want`.
    fn wait_view(&mut self, what: &str, want: impl Fn(&KubeView) -> bool) -> KubeView {
        if let Some(view) = self.view.as_ref().filter(|v| want(v)) {
            return view.clone();
        }
        self.wait_for(what, |report| match report {
            Report::View(view) if want(view) => Some((**view).clone()),
            _ => None,
        })
    }

    fn wait_synced(&mut self) -> KubeView {
        if !self.seen.contains(&Report::Synced) {
            self.wait_for("Synced", |r| (*r == Report::Synced).then_some(()));
        }
        self.view.clone().expect("a view precedes Synced")
    }

    /// Waits until every index below `size` has a running, ready pod.
    fn wait_running(&mut self, size: u32) -> KubeView {
        self.wait_view(&format!("{size} running pods"), |view| {
            (0..size).all(|i| {
                view.live_pod(i)
                    .is_some_and(|p| p.phase == PodPhase::Running)
            })
        })
    }

    fn apply(&mut self, action: KubeAction) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.driver
            .send(Command::Apply { id, action })
            .expect("driver takes commands");
        id
    }

    fn outcome(&mut self, id: u64) -> Outcome {
        // It may have come while waiting for something else.
        if let Some(outcome) = self.seen.iter().find_map(|r| outcome_of(r, id)) {
            return outcome;
        }
        self.wait_for(&format!("outcome of command {id}"), |r| outcome_of(r, id))
    }

    fn finished_count(&self, id: u64) -> usize {
        self.seen
            .iter()
            .filter(|r| outcome_of(r, id).is_some())
            .count()
    }

    fn problems(&self, area: &str) -> Vec<Problem> {
        self.seen
            .iter()
            .filter_map(|r| match r {
                Report::Problem(p) if p.area == area => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    fn cleared(&self, area: &str) -> bool {
        self.seen
            .iter()
            .any(|r| matches!(r, Report::Cleared { area: a } if a == area))
    }
}

/// A MiniCluster of `size` of `max_size` and a driver for it, synced.
fn synced_minicluster(size: u32, max_size: u32) -> (SimCluster, Module) {
    let sim = sim();
    sim.create_minicluster(NS, &MiniClusterSpec::new("flux-sample", size, max_size))
        .unwrap();
    let mut module = Module::start(&sim, config_for("flux-sample-0"));
    module.wait_synced();
    (sim, module)
}

fn outcome_of(report: &Report, id: u64) -> Option<Outcome> {
    match report {
        Report::Finished { id: done, outcome } if *done == id => Some(outcome.clone()),
        _ => None,
    }
}

fn delete_action(view: &KubeView, index: u32, reason: &str) -> KubeAction {
    let pod = view.live_pod(index).expect("live pod at index");
    KubeAction::DeletePod {
        index,
        pod: pod.name.clone(),
        uid: pod.uid.clone(),
        reason: reason.to_owned(),
    }
}

fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("fluxk8s-{tag}-{}", std::process::id()))
}

fn events_with_reason(sim: &SimCluster, reason: &str) -> Vec<serde_json::Value> {
    sim.events(NS)
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

#[test]
fn minicluster_is_found_from_the_hostname_through_a_kubeconfig_file() {
    let sim = sim();
    sim.create_minicluster(NS, &MiniClusterSpec::new("flux-sample", 3, 6))
        .unwrap();
    let kubeconfig = temp_path("kubeconfig-mc");
    sim.write_kubeconfig(&kubeconfig, NS).unwrap();
    let (wake, woken) = Module::wake_pair();
    let config = DriverConfig {
        kubeconfig: Some(kubeconfig.clone()),
        ..config_for("flux-sample-0")
    };
    let driver = Driver::spawn(config, wake).expect("driver starts from the kubeconfig");
    assert_eq!(
        driver.namespace(),
        NS,
        "namespace comes from the kubeconfig context"
    );
    let mut module = Module::with(driver, woken);
    module.wait_synced();
    let view = module.wait_running(3);
    std::fs::remove_file(&kubeconfig).ok();

    let mc = view
        .minicluster
        .as_ref()
        .expect("MiniCluster found via ownerReference");
    assert_eq!(mc.name, "flux-sample");
    assert_eq!((mc.size, mc.max_size, mc.complete_workers), (3, 6, true));
    assert_eq!(view.job.name, "flux-sample");
    assert_eq!((view.job.parallelism, view.job.completions), (3, 3));
    assert_eq!(view.job.backoff_limit, 100, "operator default backoffLimit");
    let indexes: Vec<u32> = view.pods().iter().map(|p| p.index).collect();
    assert_eq!(indexes, [0, 1, 2]);
    let sim_pods = sim.pod_views(NS, "flux-sample");
    for pod in view.pods() {
        let twin = sim_pods
            .iter()
            .find(|p| p.name == pod.name)
            .expect("pod exists");
        assert_eq!((&twin.uid, twin.index), (&pod.uid, pod.index));
    }
}

#[test]
fn bare_job_is_found_from_the_hostname_with_its_failure_policy() {
    let sim = sim();
    let mut spec = IndexedJobSpec::new("solo", 2);
    spec.backoff_limit_per_index = Some(0);
    sim.create_job(NS, &spec).unwrap();
    let mut module = Module::start(&sim, config_for("solo-1"));
    module.wait_synced();
    let view = module.wait_running(2);
    assert_eq!(view.minicluster, None);
    assert_eq!(view.job.name, "solo");
    assert_eq!(view.job.completions, 2);
    assert_eq!(view.job.backoff_limit_per_index, Some(0));
    assert_eq!(view.requested_size(), 2);
}

#[test]
fn missing_job_is_reported_until_it_appears() {
    let sim = sim();
    let mut module = Module::start(&sim, config_for("late-0"));
    let problem = module.wait_for("discovery problem", |r| match r {
        Report::Problem(p) if p.area == "discovery" => Some(p.clone()),
        _ => None,
    });
    assert!(problem.what.contains("not found"), "{problem:?}");
    assert!(problem.retrying_in.is_some());
    sim.create_job(NS, &IndexedJobSpec::new("late", 2)).unwrap();
    module.wait_synced();
    assert!(module.cleared("discovery"));
}

#[test]
fn resize_patches_minicluster_spec_size_and_records_an_event() {
    let (sim, mut module) = synced_minicluster(2, 4);
    let id = module.apply(KubeAction::SetSize {
        size: 4,
        reason: "2 jobs waiting".to_owned(),
        desired: None,
    });
    assert_eq!(module.outcome(id), Outcome::Done);
    module.wait_running(4);
    // The MiniCluster's and the Job's watches may each trail the pods'.
    module.wait_view("MiniCluster size 4 and Job completions 4", |v| {
        v.minicluster.as_ref().is_some_and(|mc| mc.size == 4) && v.job.completions == 4
    });

    let log = sim.requests();
    let patches: Vec<_> = log
        .records
        .iter()
        .filter(|r| r.verb == Some(Verb::Patch))
        .collect();
    assert_eq!(patches.len(), 1, "one patch: {patches:?}");
    assert_eq!(patches[0].resource.as_deref(), Some("miniclusters"));
    assert!(patches[0].path.ends_with("/miniclusters/flux-sample"));
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );

    let events = events_with_reason(&sim, "Resized");
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["involvedObject"]["kind"], "MiniCluster");
    assert_eq!(event["involvedObject"]["name"], "flux-sample");
    assert_eq!(event["reportingComponent"], "fluxk8s");
    assert_eq!(event["source"]["component"], "fluxk8s");
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains("2 -> 4") && message.contains("2 jobs waiting"),
        "{message}"
    );
}

#[test]
fn resize_of_a_bare_job_patches_parallelism_and_completions() {
    let sim = sim();
    sim.create_job(NS, &IndexedJobSpec::new("solo", 2)).unwrap();
    let mut module = Module::start(&sim, config_for("solo-0"));
    module.wait_synced();
    let id = module.apply(KubeAction::SetSize {
        size: 3,
        reason: "grow".to_owned(),
        desired: None,
    });
    assert_eq!(module.outcome(id), Outcome::Done);
    let job = sim.job(NS, "solo").unwrap();
    assert_eq!(job["spec"]["parallelism"], 3);
    assert_eq!(job["spec"]["completions"], 3);
    let log = sim.requests();
    assert_eq!(log.count(Verb::Patch, "jobs"), 1);
    assert_eq!(log.count(Verb::Patch, "miniclusters"), 0);
    module.wait_running(3);
    let events = events_with_reason(&sim, "Resized");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["involvedObject"]["kind"], "Job");
}

#[test]
fn delete_removes_the_pod_and_records_a_retired_rank_event() {
    let (sim, mut module) = synced_minicluster(3, 3);
    let view = module.wait_running(3);
    let action = delete_action(&view, 2, "rank 2 idle for 5m");
    let KubeAction::DeletePod { pod, uid, .. } = &action else {
        unreachable!()
    };
    let (pod, uid) = (pod.clone(), uid.clone());
    let id = module.apply(action);
    assert_eq!(module.outcome(id), Outcome::Done);
    // The old pod leaves the view (terminating, then gone).
    module.wait_view("old pod 2 no longer live", |v| {
        !v.pods().iter().any(|p| p.uid == uid && p.is_live())
    });
    let log = sim.requests();
    let deletes: Vec<_> = log
        .records
        .iter()
        .filter(|r| r.verb == Some(Verb::Delete))
        .collect();
    assert_eq!(deletes.len(), 1);
    assert!(deletes[0].path.ends_with(&format!("/pods/{pod}")));
    assert_eq!(deletes[0].status, 200);
    let events = events_with_reason(&sim, "RetiredRank");
    assert_eq!(events.len(), 1);
    let message = events[0]["message"].as_str().unwrap();
    assert!(
        message.contains("rank 2") && message.contains("idle for 5m"),
        "{message}"
    );
    assert_eq!(events[0]["involvedObject"]["kind"], "MiniCluster");
}

#[test]
fn evict_mode_removes_the_pod_through_the_eviction_api() {
    let sim = sim();
    sim.create_minicluster(NS, &MiniClusterSpec::new("flux-sample", 3, 3))
        .unwrap();
    let config = DriverConfig {
        evict: true,
        ..config_for("flux-sample-0")
    };
    let mut module = Module::start(&sim, config);
    module.wait_synced();
    let view = module.wait_running(3);
    let action = delete_action(&view, 2, "rank 2 drained");
    let KubeAction::DeletePod { uid, .. } = &action else {
        unreachable!()
    };
    let uid = uid.clone();
    let id = module.apply(action);
    assert_eq!(module.outcome(id), Outcome::Done);
    module.wait_view("evicted pod 2 no longer live", |v| {
        !v.pods().iter().any(|p| p.uid == uid && p.is_live())
    });
    let log = sim.requests();
    assert_eq!(log.count(Verb::Create, "pods/eviction"), 1);
    assert_eq!(log.count(Verb::Delete, "pods"), 0, "no plain DELETE");
    assert_eq!(events_with_reason(&sim, "RetiredRank").len(), 1);
}

#[test]
fn a_uid_the_watch_has_replaced_is_answered_without_a_request() {
    let (sim, mut module) = synced_minicluster(3, 3);
    let view = module.wait_running(3);
    let live = view.live_pod(1).unwrap().clone();
    sim.clear_requests();
    let id = module.apply(KubeAction::DeletePod {
        index: 1,
        pod: live.name.clone(),
        uid: "00000000-0000-4000-8000-000000000000".to_owned(),
        reason: "stale plan".to_owned(),
    });
    assert_eq!(
        module.outcome(id),
        Outcome::Refused(Refusal::Replaced {
            current_uid: Some(live.uid.clone())
        })
    );
    let log = sim.requests();
    assert_eq!(log.count(Verb::Delete, "pods"), 0);
    assert_eq!(log.count(Verb::Get, "pods"), 0, "judged on the watch");
    let still = sim.pod_views(NS, "flux-sample");
    assert!(still.iter().any(|p| p.uid == live.uid && p.is_live()));
    assert!(events_with_reason(&sim, "RetiredRank").is_empty());
    assert_eq!(module.finished_count(id), 1);
}

#[test]
fn a_delete_costs_one_pod_request() {
    let (sim, mut module) = synced_minicluster(3, 3);
    let view = module.wait_running(3);
    sim.clear_requests();
    let id = module.apply(delete_action(&view, 2, "rank 2 drained"));
    assert_eq!(module.outcome(id), Outcome::Done);
    let pod_requests: Vec<_> = sim
        .requests()
        .records
        .iter()
        .filter(|r| r.resource.as_deref() == Some("pods") && r.verb != Some(Verb::Watch))
        .map(|r| (r.verb, r.status))
        .collect();
    assert_eq!(pod_requests, [(Some(Verb::Delete), 200)]);
}

#[test]
fn pods_of_an_earlier_job_of_the_same_name_are_refused() {
    let sim = sim();
    sim.create_job(NS, &IndexedJobSpec::new("flux-sample", 2))
        .unwrap();
    let mut module = Module::start(&sim, config_for("flux-sample-0"));
    module.wait_synced();
    let first = module.wait_running(2);
    // Deleting a Job through the API orphans its pods: they keep the job-name label the
    // pod watch selects on, but no controller.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(async {
            let client = kube::Client::try_from(sim.kube_config(NS))?;
            let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
                kube::Api::namespaced(client, NS);
            jobs.delete("flux-sample", &Default::default()).await
        })
        .unwrap();
    sim.create_job(NS, &IndexedJobSpec::new("flux-sample", 2))
        .unwrap();
    module.wait_view("the new Job", |v| v.job.uid != first.job.uid);
    let id = module.apply(delete_action(&first, 1, "old pod"));
    match module.outcome(id) {
        Outcome::Refused(Refusal::Invalid(why)) => {
            assert!(why.contains("not controlled by Job"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(sim.requests().count(Verb::Delete, "pods"), 0);
}

#[test]
fn index_zero_foreign_pods_and_impossible_sizes_are_refused() {
    let sim = sim();
    sim.create_minicluster(NS, &MiniClusterSpec::new("flux-sample", 2, 3))
        .unwrap();
    sim.create_job(NS, &IndexedJobSpec::new("other", 2))
        .unwrap();
    let mut module = Module::start(&sim, config_for("flux-sample-0"));
    module.wait_synced();
    let view = module.wait_running(2);
    assert!(sim.wait_for(WAIT, |s| {
        s.pod_views(NS, "other")
            .iter()
            .filter(|p| p.is_live())
            .count()
            == 2
    }));
    let foreign = sim.pod_views(NS, "other")[1].clone();

    let refused = |module: &mut Module, action: KubeAction| {
        let id = module.apply(action);
        match module.outcome(id) {
            Outcome::Refused(Refusal::Invalid(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    let why = refused(&mut module, delete_action(&view, 0, "never"));
    assert!(why.contains("index 0"), "{why}");
    // A pod the Job's watch does not show is not ours: answered as gone, never deleted.
    let id = module.apply(KubeAction::DeletePod {
        index: 1,
        pod: foreign.name.clone(),
        uid: foreign.uid.clone(),
        reason: "not ours".to_owned(),
    });
    assert_eq!(
        module.outcome(id),
        Outcome::Refused(Refusal::Replaced { current_uid: None })
    );
    assert_eq!(sim.requests().count(Verb::Delete, "pods"), 0);
    let why = refused(
        &mut module,
        KubeAction::SetSize {
            size: 0,
            reason: "x".to_owned(),
            desired: None,
        },
    );
    assert!(why.contains("index 0"), "{why}");
    let why = refused(
        &mut module,
        KubeAction::SetSize {
            size: 4,
            reason: "x".to_owned(),
            desired: None,
        },
    );
    assert!(why.contains("maxSize 3"), "{why}");

    let log = sim.requests();
    assert_eq!(log.count(Verb::Delete, "pods"), 0);
    assert_eq!(log.count(Verb::Patch, "miniclusters"), 0);
}

#[test]
fn server_errors_are_retried_with_backoff_until_done() {
    let (sim, mut module) = synced_minicluster(2, 4);
    sim.faults()
        .fail_next(&[Verb::Patch], "miniclusters", 3, 503);
    sim.faults().fail_next(&[Verb::Delete], "pods", 2, 500);
    let view = module.wait_running(2);
    let resize = module.apply(KubeAction::SetSize {
        size: 3,
        reason: "grow".to_owned(),
        desired: None,
    });
    let delete = module.apply(delete_action(&view, 1, "shrink"));
    assert_eq!(module.outcome(resize), Outcome::Done);
    assert_eq!(module.outcome(delete), Outcome::Done);

    let problems = module.problems(&format!("command {resize}"));
    assert_eq!(
        problems.len(),
        3,
        "one problem per failed attempt: {problems:?}"
    );
    assert!(
        problems
            .iter()
            .all(|p| !p.forbidden && p.retrying_in.is_some())
    );
    assert!(module.cleared(&format!("command {resize}")));
    assert_eq!(module.problems(&format!("command {delete}")).len(), 2);
    let log = sim.requests();
    assert_eq!(log.count_status(503), 3);
    assert_eq!(log.count_status(500), 2);
    assert_eq!(log.count(Verb::Patch, "miniclusters"), 4);
    module.wait_view("size 3", |v| {
        v.minicluster.as_ref().is_some_and(|m| m.size == 3)
    });
}

#[test]
fn forbidden_action_names_verb_and_resource_and_converges_once_allowed() {
    let (sim, mut module) = synced_minicluster(3, 3);
    let view = module.wait_running(3);
    sim.faults().forbid(Verb::Delete, "pods");
    let id = module.apply(delete_action(&view, 2, "retire"));
    let area = format!("command {id}");
    let problem = module.wait_for("403 problem", |r| match r {
        Report::Problem(p) if p.area == area => Some(p.clone()),
        _ => None,
    });
    assert!(problem.forbidden);
    assert_eq!(problem.what, "forbidden: the Role lacks 'delete' on 'pods'");
    // The first retry comes soon (a Role fixed now takes effect), later ones back off.
    let first = fast_tuning().forbidden_first;
    assert!(
        problem
            .retrying_in
            .is_some_and(|delay| delay >= first / 2 && delay <= first),
        "{problem:?}"
    );
    // Still forbidden: retried slowly, not given up.
    module.wait_for("a second 403 report", |r| match r {
        Report::Problem(p) if p.area == area => Some(()),
        _ => None,
    });
    assert_eq!(module.finished_count(id), 0);
    sim.faults().allow(Verb::Delete, "pods");
    assert_eq!(module.outcome(id), Outcome::Done);
    assert!(module.cleared(&area));
}

#[test]
fn forbidden_watch_is_reported_and_syncs_once_allowed() {
    let sim = sim();
    sim.create_job(NS, &IndexedJobSpec::new("solo", 2)).unwrap();
    sim.faults().forbid(Verb::List, "pods");
    let mut module = Module::start(&sim, config_for("solo-0"));
    let problem = module.wait_for("watch 403", |r| match r {
        Report::Problem(p) if p.area == "watch pods" => Some(p.clone()),
        _ => None,
    });
    assert!(problem.forbidden);
    assert_eq!(problem.what, "forbidden: the Role lacks 'list' on 'pods'");
    assert!(!module.seen.contains(&Report::Synced));
    sim.faults().allow(Verb::List, "pods");
    module.wait_synced();
    module.wait_running(2);
    assert!(module.cleared("watch pods"));
}

#[test]
fn dropped_and_expired_watches_keep_the_view_current() {
    let (sim, mut module) = synced_minicluster(2, 4);
    module.wait_running(2);

    // Resumed from the last resourceVersion.
    sim.faults().drop_watches();
    sim.set_minicluster_size(NS, "flux-sample", 3, "kubectl-scale")
        .unwrap();
    module.wait_running(3);

    // History gone: the resumed watches get 410 and relist.
    sim.faults().drop_watches();
    sim.faults().expire_history();
    sim.set_minicluster_size(NS, "flux-sample", 4, "kubectl-scale")
        .unwrap();
    module.wait_running(4);
    module.wait_view("MiniCluster size 4", |v| {
        v.minicluster.as_ref().is_some_and(|mc| mc.size == 4)
    });
    assert!(
        sim.requests().count(Verb::List, "pods") >= 2,
        "pods were relisted"
    );
    // A relist of unchanged objects sends nothing: every snapshot differs from the last.
    let views: Vec<&KubeView> = module
        .seen
        .iter()
        .filter_map(|r| match r {
            Report::View(v) => Some(&**v),
            _ => None,
        })
        .collect();
    assert!(views.windows(2).all(|pair| pair[0] != pair[1]));
}

#[test]
fn a_failed_event_does_not_fail_the_action() {
    let sim = sim();
    sim.create_job(NS, &IndexedJobSpec::new("solo", 2)).unwrap();
    sim.faults().forbid(Verb::Create, "events");
    let mut module = Module::start(&sim, config_for("solo-0"));
    module.wait_synced();
    let id = module.apply(KubeAction::SetSize {
        size: 3,
        reason: "grow".to_owned(),
        desired: None,
    });
    assert_eq!(module.outcome(id), Outcome::Done);
    assert_eq!(
        sim.requests().count(Verb::Create, "events"),
        1,
        "tried once"
    );
    assert!(sim.events(NS).is_empty());
    assert_eq!(sim.job(NS, "solo").unwrap()["spec"]["completions"], 3);
}

#[test]
fn a_slow_api_server_still_converges_and_never_blocks_the_caller() {
    let sim = sim();
    sim.create_minicluster(NS, &MiniClusterSpec::new("flux-sample", 2, 3))
        .unwrap();
    sim.faults().set_latency(Duration::from_millis(300));
    // The driver's first request reads its Job; held, it is surely in flight.
    sim.faults().hold(Verb::Get, "jobs");
    let mut module = Module::start(&sim, config_for("flux-sample-0"));
    assert!(
        sim.wait_for(WAIT, |sim| sim.faults().held(Verb::Get, "jobs") > 0),
        "the driver never asked for its Job"
    );
    // Ends the hold once the caller is back, or after WAIT if it waits on the server:
    // then the check below fails instead of hanging.
    let (returned, caller_back) = mpsc::channel::<()>();
    let faults = sim.faults().clone();
    let releaser = std::thread::spawn(move || {
        let _ = caller_back.recv_timeout(WAIT);
        faults.release(Verb::Get, "jobs");
    });
    let id = module.apply(KubeAction::SetSize {
        size: 3,
        reason: "grow".to_owned(),
        desired: None,
    });
    let _ = module.driver.try_recv();
    assert!(
        sim.faults().held(Verb::Get, "jobs") > 0,
        "send/try_recv waited on the server"
    );
    returned.send(()).unwrap();
    releaser.join().unwrap();
    // Queued until the watches synced, then carried out.
    assert_eq!(module.outcome(id), Outcome::Done);
    module.wait_running(3);
}

#[test]
fn shutdown_is_prompt_while_a_request_hangs() {
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
    let sim = sim();
    sim.create_minicluster(NS, &MiniClusterSpec::new("flux-sample", 2, 3))
        .unwrap();
    let config = DriverConfig {
        tuning: Tuning {
            request_timeout: REQUEST_TIMEOUT,
            ..fast_tuning()
        },
        ..config_for("flux-sample-0")
    };
    let mut module = Module::start(&sim, config);
    module.wait_synced();
    sim.faults().hold(Verb::Patch, "miniclusters");
    module.apply(KubeAction::SetSize {
        size: 3,
        reason: "grow".to_owned(),
        desired: None,
    });
    assert!(
        sim.wait_for(WAIT, |sim| sim.faults().held(Verb::Patch, "miniclusters")
            > 0),
        "the size patch never reached the server"
    );
    let stopping = Instant::now();
    module.driver.shutdown();
    // Waiting for the held patch would take its whole timeout.
    assert!(
        stopping.elapsed() < REQUEST_TIMEOUT,
        "shutdown took {:?}",
        stopping.elapsed()
    );
}

#[test]
fn bad_settings_fail_at_spawn() {
    let (wake, _woken) = Module::wake_pair();
    let missing = DriverConfig {
        kubeconfig: Some(temp_path("no-such-kubeconfig")),
        ..config_for("flux-sample-0")
    };
    match Driver::spawn(missing, wake.clone()) {
        Err(K8sError::Kubeconfig { path, .. }) => {
            assert_eq!(path, temp_path("no-such-kubeconfig"))
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a missing kubeconfig must fail"),
    }
    let nameless = DriverConfig {
        hostname: Some("laptop".to_owned()),
        ..DriverConfig::default()
    };
    assert!(matches!(
        Driver::spawn(nameless, wake),
        Err(K8sError::Target(LookupError::BadHostname(_)))
    ));
}

#[test]
fn a_worker_panic_is_reported_and_the_driver_restarts_with_fresh_lists() {
    let (sim, mut module) = synced_minicluster(2, 3);
    let lists_before = sim.requests().count(Verb::List, "pods");
    let panicked = Instant::now();
    module.driver.send(Command::Panic).unwrap();
    let problem = module.wait_for("the driver's panic report", |report| match report {
        Report::Problem(p) if p.area == "driver" => Some(p.clone()),
        _ => None,
    });
    assert!(
        problem
            .what
            .contains("stopped after a panic: panic requested through FLUXK8S_TEST_PANIC"),
        "{problem:?}"
    );
    assert_eq!(problem.retrying_in, Some(Duration::from_secs(1)));
    module.wait_for("the restart", |report| match report {
        Report::Restarted { restarts: 1 } => Some(()),
        _ => None,
    });
    module.wait_for("the driver problem cleared", |report| match report {
        Report::Cleared { area } if area == "driver" => Some(()),
        _ => None,
    });
    module.wait_for("a fresh sync", |report| match report {
        Report::Synced => Some(()),
        _ => None,
    });
    eprintln!("panic to a fresh sync: {:?}", panicked.elapsed());
    assert!(
        sim.requests().count(Verb::List, "pods") > lists_before,
        "the restarted worker lists the pods afresh"
    );
    // It carries out commands again.
    let id = module.apply(KubeAction::SetSize {
        size: 3,
        reason: "after the restart".into(),
        desired: None,
    });
    assert_eq!(module.outcome(id), Outcome::Done);
    // A shutdown stuck on the worker would never end: WAIT makes that a failure.
    let stopping = Instant::now();
    module.driver.shutdown();
    assert!(
        stopping.elapsed() < WAIT,
        "shutdown took {:?}",
        stopping.elapsed()
    );
}
