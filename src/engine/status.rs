//! The engine's status and the progress a watcher is sent: the views, the plan in words
//! and the recent problems, serialized straight from typed structs.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Engine, EngineCounters};
use crate::model::flux::RankSets;
use crate::model::{IdSet, JobView, KubeView, MiniClusterView, PodGroup, PodView, Problem};
use crate::planner::{AutoscaleStatus, Autoscaler, PlanStatus, RankPhase, Why};

impl Engine {
    /// Sizes, rank states, the Kubernetes view and the plan, to serialize as the status;
    /// with `detail`, also each of those ranks on its own, with its pods.
    pub fn status(&self, now: f64, detail: Option<&IdSet>) -> Status<'_> {
        let flux = &self.flux;
        let plan = self.plan_status(now);
        let detail = detail.map(|ranks| self.rank_detail(&plan, ranks));
        Status {
            real_size: flux.real_size(),
            desired_size: plan.desired_size,
            max_size: flux.size(),
            flux: FluxStatus {
                synced: flux.synced(),
                size: flux.size(),
                ranks: flux.rank_sets(),
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

    fn plan_status(&self, now: f64) -> PlanStatus {
        let assessment = self.assessment(now);
        self.reconciler
            .status_of(&self.flux, self.kube.synced(), assessment.as_deref(), now)
    }

    /// Each of `ranks` in the instance, with the plan's word on it (none before both
    /// views are synced) and its pods.
    fn rank_detail<'a>(&'a self, plan: &PlanStatus, ranks: &IdSet) -> Vec<RankDetail<'a>> {
        let pods_of = |k: u32| -> &[Arc<PodView>] {
            self.kube.view.as_ref().map_or(&[], |view| view.pods_of(k))
        };
        let in_instance = IdSet::range(0, self.flux.size().saturating_sub(1));
        ranks
            .intersection(&in_instance)
            .iter()
            .map(|k| {
                let planned = plan.ranks.get(k);
                RankDetail {
                    rank: k,
                    phase: planned.as_ref().map(|r| r.phase),
                    why: planned.map_or_else(|| Why::from(""), |r| r.why),
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
        let plan = self.plan_status(now);
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
    pub why: Why,
    pub pods: &'a [Arc<PodView>],
}

/// The Flux side of the status.
#[derive(Debug, Serialize)]
pub struct FluxStatus<'a> {
    pub synced: bool,
    pub size: u32,
    #[serde(flatten)]
    pub ranks: &'a RankSets,
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
        pods: &'a [PodGroup],
    }
    let Some(view) = view else {
        return s.serialize_none();
    };
    s.serialize_some(&ViewStatus {
        job: &view.job,
        minicluster: view.minicluster.as_ref(),
        pods: view.pod_index().groups(),
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
