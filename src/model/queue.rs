//! The Flux job queue as the job-manager's `events-journal` stream tells it: which jobs
//! wait for resources and how many nodes each needs, which hold which ranks.
//!
//! The stream's backlog sends every active job with its events so far, its jobspec and
//! its R, then a sentinel with id -1; after that one response per event. So the queue is
//! known exactly from the stream alone, with no query and no polling.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::flux::PayloadError;
use super::idset::IdSet;

/// The events the queue view needs; the stream is asked for these only.
pub const QUEUE_EVENTS: &[&str] = &[
    "submit",
    "priority",
    "urgency",
    "flux-restart",
    "alloc",
    "free",
    "exception",
    "clean",
];

/// A Flux job id; shown in Flux's F58 form (`ƒ` + base58), as `flux jobs` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = Vec::new();
        let mut rest = self.0;
        loop {
            digits.push(BASE58[(rest % 58) as usize]);
            rest /= 58;
            if rest == 0 {
                break;
            }
        }
        digits.reverse();
        // Every digit is ASCII from BASE58.
        write!(f, "ƒ{}", String::from_utf8_lossy(&digits))
    }
}

impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How much a job asks for, from its jobspec (RFC 25, version 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Demand {
    /// `-N`: a node count.
    Nodes(u32),
    /// Slots only: how many, and cores in each; nodes depend on the node size.
    Slots { slots: u32, cores_per_slot: u32 },
}

impl Demand {
    /// Nodes needed, given the cores of one node (slots never span nodes); `None` when
    /// the answer needs a node size that is not known.
    pub fn nodes(&self, cores_per_node: Option<u32>) -> Option<u32> {
        match *self {
            Demand::Nodes(n) => Some(n),
            Demand::Slots {
                slots,
                cores_per_slot,
            } => {
                let per_node = cores_per_node? / cores_per_slot.max(1);
                (per_node > 0).then(|| slots.div_ceil(per_node))
            }
        }
    }

    /// Reads the demand of a jobspec's top-level resource.
    pub fn from_jobspec(jobspec: &Value) -> Result<Demand, String> {
        let top = jobspec
            .get("resources")
            .and_then(Value::as_array)
            .and_then(|r| r.first())
            .ok_or("jobspec has no resources")?;
        match top.get("type").and_then(Value::as_str) {
            Some("node") => Ok(Demand::Nodes(count(top)?)),
            Some("slot") => {
                let cores = top
                    .get("with")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|r| r.get("type").and_then(Value::as_str) == Some("core"))
                    .map(count)
                    .transpose()?
                    .unwrap_or(1);
                Ok(Demand::Slots {
                    slots: count(top)?,
                    cores_per_slot: cores,
                })
            }
            other => Err(format!("unsupported top-level resource {other:?}")),
        }
    }
}

/// A resource `count`: a number, or a range whose `min` is what must be had.
fn count(resource: &Value) -> Result<u32, String> {
    let count = resource.get("count");
    count
        .and_then(Value::as_u64)
        .or_else(|| count.and_then(|c| c.get("min")).and_then(Value::as_u64))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("bad resource count {}", count.unwrap_or(&Value::Null)))
}

/// The ranks of an R (version 1): the union of `execution.R_lite[].rank`.
pub fn r_ranks(r: &Value) -> Result<IdSet, String> {
    r_lite(r)?.try_fold(IdSet::new(), |all, entry| {
        let (ranks, _) = entry?;
        Ok(all.union(&ranks))
    })
}

/// The fewest cores any rank of an R has (`R_lite[].children.core`).
pub fn r_min_cores_per_rank(r: &Value) -> Result<Option<u32>, String> {
    r_lite(r)?.try_fold(None, |fewest: Option<u32>, entry| {
        let (_, cores) = entry?;
        Ok(Some(fewest.map_or(cores, |f| f.min(cores))))
    })
}

type RLiteEntry = Result<(IdSet, u32), String>;

fn r_lite(r: &Value) -> Result<impl Iterator<Item = RLiteEntry> + '_, String> {
    let entries = r
        .pointer("/execution/R_lite")
        .and_then(Value::as_array)
        .ok_or("R has no execution.R_lite")?;
    Ok(entries.iter().map(|entry| {
        let idset = |field: &str| -> Result<IdSet, String> {
            entry
                .pointer(field)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("R_lite entry without {field}"))?
                .parse()
                .map_err(|e| format!("{e}"))
        };
        let cores = match entry.pointer("/children/core") {
            None => 0,
            Some(_) => idset("/children/core")?.len() as u32,
        };
        Ok((idset("/rank")?, cores))
    }))
}

/// Which ranks run jobs, and until when, as the job-manager tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Occupancy {
    /// False while the job-manager's backlog is awaited: then any rank may be busy.
    known: bool,
    busy: IdSet,
    allocations: Vec<Allocation>,
}

/// One job's hold on ranks.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub job: JobId,
    pub ranks: IdSet,
    /// Seconds since the epoch; `None` without a time limit.
    pub expiration: Option<f64>,
}

/// With no job-manager, no job runs.
impl Default for Occupancy {
    fn default() -> Self {
        Self::of_ranks(IdSet::new())
    }
}

impl Occupancy {
    /// Not known yet: every rank counts as busy.
    pub fn unknown() -> Self {
        Occupancy {
            known: false,
            busy: IdSet::new(),
            allocations: Vec::new(),
        }
    }

    /// These ranks are busy, with no job or end known.
    pub fn of_ranks(busy: IdSet) -> Self {
        Occupancy {
            known: true,
            busy,
            allocations: Vec::new(),
        }
    }

    pub fn known(&self) -> bool {
        self.known
    }

    /// Ranks known to run jobs.
    pub fn busy(&self) -> &IdSet {
        &self.busy
    }

    /// For ranks asked in ascending order: rank `k` runs a job, or nobody knows yet that
    /// it does not.
    pub fn may_be_busy(&self) -> impl FnMut(u32) -> bool + '_ {
        let mut busy = self.busy.ascending();
        move |k| !self.known || busy.contains(k)
    }

    /// For each busy rank, the allocation that ends last: when the rank is free again.
    /// Built on demand (a shrink that has to take busy ranks), in one pass over the jobs.
    pub fn last_to_end(&self) -> std::collections::HashMap<u32, &Allocation> {
        let mut last: std::collections::HashMap<u32, &Allocation> =
            std::collections::HashMap::new();
        let end = |a: &Allocation| a.expiration.unwrap_or(f64::INFINITY);
        for allocation in &self.allocations {
            for k in allocation.ranks.iter() {
                let slot = last.entry(k).or_insert(allocation);
                if end(allocation) > end(slot) {
                    *slot = allocation;
                }
            }
        }
        last
    }
}

/// Where a job is, as far as resources go (RFC 21 states, folded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobPhase {
    /// Submitted, waiting for dependencies or a priority.
    Early,
    /// In SCHED: waiting for the scheduler (held when its priority is 0).
    Sched,
    /// Holds resources (from `alloc` until `free`).
    Allocated,
    /// On its way out, holding nothing.
    Ending,
}

/// One active job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueuedJob {
    pub id: JobId,
    pub phase: JobPhase,
    pub priority: Option<u64>,
    /// What it asks for, or why that is not known.
    pub demand: Result<Demand, String>,
    /// Ranks it holds (from the R of its `alloc`).
    pub ranks: IdSet,
    /// Submit time (seconds since the epoch, from the job's eventlog).
    pub submitted: Option<f64>,
    /// When its time limit ends its allocation (seconds since the epoch, the R's
    /// `execution.expiration`); `None` without a limit.
    pub expiration: Option<f64>,
}

impl QueuedJob {
    fn new(id: JobId) -> Self {
        QueuedJob {
            id,
            phase: JobPhase::Early,
            priority: None,
            demand: Err("no jobspec seen".into()),
            ranks: IdSet::new(),
            submitted: None,
            expiration: None,
        }
    }

    /// Waits for the scheduler with a priority above 0 (priority 0 = held).
    pub fn is_pending(&self) -> bool {
        self.phase == JobPhase::Sched && self.priority.is_some_and(|p| p > 0)
    }
}

/// One event of a job's eventlog (RFC 18).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JobEvent {
    pub timestamp: f64,
    pub name: String,
    #[serde(default)]
    pub context: Value,
}

/// One `job-manager.events-journal` response.
#[derive(Debug, Clone, PartialEq)]
pub struct JobJournalResponse {
    /// `None` for the sentinel that ends the backlog.
    pub id: Option<JobId>,
    pub events: Vec<JobEvent>,
    pub jobspec: Option<Value>,
    pub r: Option<Value>,
}

#[derive(Deserialize)]
struct RawResponse {
    id: i64,
    events: Vec<JobEvent>,
    jobspec: Option<Value>,
    #[serde(rename = "R")]
    r: Option<Value>,
}

impl JobJournalResponse {
    pub fn parse(payload: &str) -> Result<Self, PayloadError> {
        let raw: RawResponse = serde_json::from_str(payload).map_err(|e| PayloadError::Field {
            field: "events-journal response".into(),
            why: e.to_string(),
        })?;
        // FLUX_JOBID_ANY, packed as a signed 64-bit integer, marks the backlog's end.
        let id = match raw.id {
            -1 => None,
            id => Some(JobId(u64::try_from(id).map_err(|_| {
                PayloadError::Field {
                    field: "id".into(),
                    why: format!("{id} is not a job id"),
                }
            })?)),
        };
        Ok(Self {
            id,
            events: raw.events,
            jobspec: raw.jobspec,
            r: raw.r,
        })
    }
}

/// The active jobs, and what the instance's nodes look like.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueView {
    jobs: BTreeMap<JobId, QueuedJob>,
    synced: bool,
    cores_per_node: Option<u32>,
    allocation_revision: u64,
}

impl QueueView {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new subscription starts: its backlog resends every active job.
    pub fn restart(&mut self) {
        self.jobs.clear();
        self.synced = false;
        self.allocation_revision += 1;
    }

    /// The backlog has been received since the last restart.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Cores of the smallest node, when the instance's R is known.
    pub fn cores_per_node(&self) -> Option<u32> {
        self.cores_per_node
    }

    /// Learns the node size from the instance's R (from `resource-define`).
    pub fn set_resources(&mut self, r: &Value) -> Result<(), String> {
        self.cores_per_node = r_min_cores_per_rank(r)?.filter(|&c| c > 0);
        Ok(())
    }

    pub fn jobs(&self) -> impl Iterator<Item = &QueuedJob> {
        self.jobs.values()
    }

    /// Pending jobs in the order the scheduler considers them: priority, then age (job
    /// ids grow with submit time).
    pub fn pending(&self) -> Vec<&QueuedJob> {
        let mut pending: Vec<&QueuedJob> = self.jobs.values().filter(|j| j.is_pending()).collect();
        pending.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.id));
        pending
    }

    /// Ranks held by jobs.
    pub fn allocated(&self) -> IdSet {
        self.jobs
            .values()
            .fold(IdSet::new(), |all, job| all.union(&job.ranks))
    }

    /// Which ranks run jobs and until when; unknown until the backlog has arrived.
    pub fn occupancy(&self) -> Occupancy {
        if !self.synced {
            return Occupancy::unknown();
        }
        let allocations: Vec<Allocation> = self
            .jobs
            .values()
            .filter(|job| !job.ranks.is_empty())
            .map(|job| Allocation {
                job: job.id,
                ranks: job.ranks.clone(),
                expiration: job.expiration,
            })
            .collect();
        Occupancy {
            known: true,
            busy: allocations
                .iter()
                .fold(IdSet::new(), |all, a| all.union(&a.ranks)),
            allocations,
        }
    }

    /// Counts changes of who holds which ranks (an alloc, a free, the backlog's end), so
    /// a follower rebuilds the [`Occupancy`] only when it changed.
    pub fn allocation_revision(&self) -> u64 {
        self.allocation_revision
    }

    /// Applies one response. An event that does not parse is reported after the rest of
    /// the response is applied.
    pub fn apply(&mut self, response: &JobJournalResponse) -> Result<(), String> {
        let Some(id) = response.id else {
            self.synced = true;
            self.allocation_revision += 1;
            return Ok(());
        };
        let job = self.jobs.entry(id).or_insert_with(|| QueuedJob::new(id));
        if let Some(jobspec) = &response.jobspec {
            job.demand = Demand::from_jobspec(jobspec);
        }
        let held_before = job.ranks.clone();
        let mut problems = Vec::new();
        let mut cleaned = false;
        for event in &response.events {
            match apply_event(job, event, response.r.as_ref()) {
                Ok(done) => cleaned |= done,
                Err(why) => problems.push(format!("{id} {}: {why}", event.name)),
            }
        }
        if cleaned {
            self.jobs.remove(&id);
        }
        let held_now = self.jobs.get(&id).map(|job| &job.ranks);
        if held_now.map_or(!held_before.is_empty(), |now| *now != held_before) {
            self.allocation_revision += 1;
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Applies one event to a job; true when the job is gone (`clean`).
fn apply_event(job: &mut QueuedJob, event: &JobEvent, r: Option<&Value>) -> Result<bool, String> {
    let context = &event.context;
    match event.name.as_str() {
        "submit" => job.submitted = Some(event.timestamp),
        "priority" => {
            job.priority = Some(
                context
                    .get("priority")
                    .and_then(Value::as_u64)
                    .ok_or("no priority in context")?,
            );
            if job.phase == JobPhase::Early {
                job.phase = JobPhase::Sched;
            }
        }
        // Back to PRIORITY until the next `priority` event.
        "urgency" | "flux-restart" if job.phase == JobPhase::Sched => job.phase = JobPhase::Early,
        "alloc" => {
            let r = r.ok_or("alloc without R")?;
            job.ranks = r_ranks(r)?;
            job.expiration = r
                .pointer("/execution/expiration")
                .and_then(Value::as_f64)
                .filter(|&t| t > 0.0);
            job.phase = JobPhase::Allocated;
        }
        "free" => {
            job.ranks = IdSet::new();
            job.phase = JobPhase::Ending;
        }
        "exception" => {
            let severity = context.get("severity").and_then(Value::as_u64);
            // Severity 0 ends the job; it keeps its resources until `free`.
            if severity == Some(0) && job.phase != JobPhase::Allocated {
                job.phase = JobPhase::Ending;
            }
        }
        "clean" => return Ok(true),
        _ => {}
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(view: &mut QueueView, payload: &str) {
        view.apply(&JobJournalResponse::parse(payload).unwrap())
            .unwrap();
    }

    const JOBSPEC_N4: &str = r#"{"resources":[{"type":"node","count":4,"with":[{"type":"slot","count":1,"with":[{"type":"core","count":1}],"label":"task"}]}],"tasks":[],"attributes":{},"version":1}"#;

    #[test]
    fn f58_matches_flux_job_id() {
        // `flux job id --to=f58` prints these.
        assert_eq!(JobId(0).to_string(), "ƒ1");
        assert_eq!(JobId(57).to_string(), "ƒz");
        assert_eq!(JobId(58).to_string(), "ƒ21");
    }

    #[test]
    fn demand_from_node_and_slot_jobspecs() {
        let n4: Value = serde_json::from_str(JOBSPEC_N4).unwrap();
        assert_eq!(Demand::from_jobspec(&n4), Ok(Demand::Nodes(4)));
        let slots: Value = serde_json::from_str(
            r#"{"resources":[{"type":"slot","count":5,"with":[{"type":"core","count":2}]}]}"#,
        )
        .unwrap();
        let demand = Demand::from_jobspec(&slots).unwrap();
        assert_eq!(
            demand,
            Demand::Slots {
                slots: 5,
                cores_per_slot: 2
            }
        );
        // Two 2-core slots fit on a 4-core node: 5 slots need 3 nodes.
        assert_eq!(demand.nodes(Some(4)), Some(3));
        assert_eq!(demand.nodes(Some(1)), None, "a slot bigger than any node");
        assert_eq!(demand.nodes(None), None);
        assert!(Demand::from_jobspec(&serde_json::json!({"resources":[]})).is_err());
        assert!(
            Demand::from_jobspec(&serde_json::json!({"resources":[{"type":"gpu","count":1}]}))
                .is_err()
        );
    }

    #[test]
    fn a_job_goes_from_pending_to_allocated_to_gone() {
        let mut view = QueueView::new();
        apply(&mut view, r#"{"id":-1,"events":[]}"#);
        assert!(view.synced());
        apply(
            &mut view,
            &format!(
                r#"{{"id":1234,"events":[{{"timestamp":1.0,"name":"submit","context":{{"urgency":16}}}}],"jobspec":{JOBSPEC_N4}}}"#
            ),
        );
        apply(
            &mut view,
            r#"{"id":1234,"events":[{"timestamp":1.1,"name":"priority","context":{"priority":16}}]}"#,
        );
        let pending = view.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].demand, Ok(Demand::Nodes(4)));
        apply(
            &mut view,
            r#"{"id":1234,"events":[{"timestamp":2.0,"name":"alloc","context":{}}],"R":{"version":1,"execution":{"R_lite":[{"rank":"0-3","children":{"core":"0"}}]}}}"#,
        );
        assert!(view.pending().is_empty());
        assert_eq!(view.allocated().to_string(), "0-3");
        apply(
            &mut view,
            r#"{"id":1234,"events":[{"timestamp":3.0,"name":"free","context":{}}]}"#,
        );
        assert!(view.allocated().is_empty());
        apply(
            &mut view,
            r#"{"id":1234,"events":[{"timestamp":3.1,"name":"clean","context":{}}]}"#,
        );
        assert_eq!(view.jobs().count(), 0);
    }

    #[test]
    fn held_and_failed_jobs_are_not_pending() {
        let mut view = QueueView::new();
        apply(
            &mut view,
            &format!(
                r#"{{"id":7,"events":[{{"timestamp":1.0,"name":"submit","context":{{}}}},{{"timestamp":1.1,"name":"priority","context":{{"priority":0}}}}],"jobspec":{JOBSPEC_N4}}}"#
            ),
        );
        assert!(view.pending().is_empty(), "priority 0 is held");
        apply(
            &mut view,
            r#"{"id":7,"events":[{"timestamp":2.0,"name":"urgency","context":{"urgency":16}},{"timestamp":2.0,"name":"priority","context":{"priority":16}}]}"#,
        );
        assert_eq!(view.pending().len(), 1);
        apply(
            &mut view,
            r#"{"id":7,"events":[{"timestamp":3.0,"name":"exception","context":{"type":"cancel","severity":0}}]}"#,
        );
        assert!(view.pending().is_empty());
    }

    #[test]
    fn pending_order_is_priority_then_age_and_restart_forgets() {
        let mut view = QueueView::new();
        for (id, priority) in [(30, 5), (10, 5), (20, 9)] {
            apply(
                &mut view,
                &format!(
                    r#"{{"id":{id},"events":[{{"timestamp":1.0,"name":"priority","context":{{"priority":{priority}}}}}]}}"#
                ),
            );
        }
        let order: Vec<u64> = view.pending().iter().map(|j| j.id.0).collect();
        assert_eq!(order, [20, 10, 30]);
        view.restart();
        assert!(!view.synced());
        assert_eq!(view.jobs().count(), 0);
    }

    #[test]
    fn node_size_comes_from_the_instance_r() {
        let mut view = QueueView::new();
        let r = serde_json::json!({"version":1,"execution":{"R_lite":[
            {"rank":"0-7","children":{"core":"0-3"}},{"rank":"8-9","children":{"core":"0-1"}}]}});
        view.set_resources(&r).unwrap();
        assert_eq!(view.cores_per_node(), Some(2));
        assert_eq!(r_ranks(&r).unwrap().to_string(), "0-9");
        assert!(
            view.set_resources(&serde_json::json!({"version":1}))
                .is_err()
        );
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert!(JobJournalResponse::parse("nope").is_err());
        assert!(JobJournalResponse::parse(r#"{"events":[]}"#).is_err());
        assert!(JobJournalResponse::parse(r#"{"id":-5,"events":[]}"#).is_err());
        let mut view = QueueView::new();
        let alloc_without_r = r#"{"id":3,"events":[{"timestamp":1.0,"name":"alloc"}]}"#;
        let err = view
            .apply(&JobJournalResponse::parse(alloc_without_r).unwrap())
            .unwrap_err();
        assert!(err.contains("alloc without R"), "{err}");
    }
}
