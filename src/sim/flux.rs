//! A simulated Flux side for a MiniCluster (or bare Indexed Job) whose pods run in a
//! [`SimCluster`]: one broker per configured rank (`<name>-<i>`), following the pods, with the leader's resource
//! module (drains, `resource.journal`), overlay (`overlay.monitor`) and each follower's
//! state machine (`state-machine.post` shutdown).
//!
//! Payloads have the exact shapes flux-core 0.88 sends (docs/flux-core.md §2–§4): the
//! journal backlog is `restart`, `resource-define` with `R`, the history since the leader
//! started, then the empty `{"events":[]}` sentinel; live events follow one per response.
//!
//! Pods map to brokers so: a pod whose container starts runs the broker of its completion
//! index, which joins the leader (journal `online`, overlay `full`); a pod deleted, or whose
//! container exits non-zero, loses its broker (overlay `lost`, journal `offline`); a
//! container exiting 0 is a clean shutdown (overlay `offline`, journal `offline`).
//!
//! The leader's job-manager is [`SimJobs`]: tests start and end jobs on ranks, and
//! `job-manager.events-journal` tells who holds which.
//!
//! Simplification: after [`SimFlux::restart_leader`] the followers are taken to rejoin the
//! new leader at once. Real followers get a disconnect and exit 0 (docs/flux-core.md 4.3),
//! which under the Flux Operator's worker loop completes their pods; that is not modelled.

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::jobs::SimJobs;
use super::{PodEvent, PodEventKind, SimCluster};
use crate::model::queue::JobId;
use crate::model::{IdSet, hostlist};

/// Most events in one backlog response, as `reslog.c` batches them (docs/flux-core.md 2.1).
const BACKLOG_BATCH: usize = 100;

/// Where a broker is, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    /// Its pod has not run since the leader started.
    NeverStarted,
    /// Connected to the leader.
    Up,
    /// Gone without a goodbye (crash, deleted pod, administrative disconnect).
    Lost,
    /// Shut down cleanly.
    Offline,
}

/// A drain as the resource module keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDrain {
    /// `None` when drained without a reason.
    pub reason: Option<String>,
    pub timestamp: f64,
}

/// An RPC error response: the errno and the text flux-core sends with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({errno})")]
pub struct RpcFailure {
    pub errno: &'static str,
    pub message: String,
}

impl From<RpcFailure> for crate::engine::FluxFailure {
    fn from(failure: RpcFailure) -> Self {
        let errno = match failure.errno {
            "EEXIST" => libc::EEXIST,
            "ENOENT" => libc::ENOENT,
            "EINVAL" => libc::EINVAL,
            "EPROTO" => libc::EPROTO,
            "EPERM" => libc::EPERM,
            "ENOSYS" => libc::ENOSYS,
            "EHOSTUNREACH" => libc::EHOSTUNREACH,
            _ => libc::EIO,
        };
        Self {
            errno,
            text: failure.to_string(),
        }
    }
}

impl RpcFailure {
    fn new(errno: &'static str, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Broker {
    state: BrokerState,
    /// The pod running this broker, so events about an older pod of the same index (one
    /// still terminating beside its replacement) are ignored.
    pod: Option<String>,
    torpid: bool,
    drain: Option<SimDrain>,
}

/// The Flux side of one instance. Call [`SimFlux::pump`] to follow the pods, then take
/// the stream payloads with [`SimFlux::take_journal`] and [`SimFlux::take_overlay`].
pub struct SimFlux {
    namespace: String,
    job: String,
    hostnames: Vec<String>,
    brokers: Vec<Broker>,
    pods: Receiver<PodEvent>,
    /// Journal events since the leader started: what a new subscriber's backlog replays.
    history: Vec<Value>,
    /// Responses waiting for the `resource.journal` subscriber, if there is one.
    journal: Option<VecDeque<String>>,
    /// Responses waiting for the `overlay.monitor` subscriber, if there is one.
    overlay: Option<VecDeque<String>>,
    /// Ranks whose broker a `state-machine.post` shutdown reached, in order.
    shut_down: Vec<u32>,
    /// Pods whose broker exited 0 on a shutdown: their container ends at the next pump,
    /// as a kubelet notices an exit after the fact, not inside the request that caused it.
    exited: Vec<String>,
    jobs: SimJobs,
}

/// Seconds since the epoch, as Flux timestamps its events.
fn timestamp() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl SimFlux {
    /// Brokers for ranks `0..size` of the Job `job` in `namespace`, following `pods` (from
    /// [`SimCluster::subscribe_pods`], taken before the Job's pods are created).
    pub fn new(namespace: &str, job: &str, size: u32, pods: Receiver<PodEvent>) -> Self {
        let broker = Broker {
            state: BrokerState::NeverStarted,
            pod: None,
            torpid: false,
            drain: None,
        };
        Self {
            namespace: namespace.to_owned(),
            job: job.to_owned(),
            hostnames: (0..size).map(|i| format!("{job}-{i}")).collect(),
            brokers: vec![broker; size as usize],
            pods,
            history: Vec::new(),
            journal: None,
            overlay: None,
            shut_down: Vec::new(),
            exited: Vec::new(),
            jobs: SimJobs::default(),
        }
    }

    /// Ranks whose broker was shut down by request, in order.
    pub fn shut_down(&self) -> &[u32] {
        &self.shut_down
    }

    /// Broker `rank` dies while its pod keeps running (a broker crashing in its
    /// container): lost to the leader, and Kubernetes sees nothing. Nothing happens to
    /// the leader, a rank beyond the size, or a broker that is not up.
    pub fn crash_broker(&mut self, rank: u32) {
        if rank != 0 {
            self.leave(rank, BrokerState::Lost);
        }
    }

    /// Configured ranks (the instance size, i.e. the MiniCluster's `maxSize`).
    pub fn size(&self) -> u32 {
        self.brokers.len() as u32
    }

    /// Host names in rank order.
    pub fn hostnames(&self) -> &[String] {
        &self.hostnames
    }

    /// Where broker `rank` is.
    pub fn state(&self, rank: u32) -> Option<BrokerState> {
        self.brokers.get(rank as usize).map(|b| b.state)
    }

    /// The drain on `rank`, if any.
    pub fn drain(&self, rank: u32) -> Option<&SimDrain> {
        self.brokers.get(rank as usize)?.drain.as_ref()
    }

    fn select(&self, keep: impl Fn(&Broker) -> bool) -> IdSet {
        (0..self.size())
            .filter(|&k| keep(&self.brokers[k as usize]))
            .collect()
    }

    /// Ranks whose broker is up.
    pub fn online(&self) -> IdSet {
        self.select(|b| b.state == BrokerState::Up)
    }

    /// Ranks lost (gone without a goodbye) and not back.
    pub fn lost(&self) -> IdSet {
        self.select(|b| b.state == BrokerState::Lost)
    }

    /// Drained ranks, whoever drained them.
    pub fn drained(&self) -> IdSet {
        self.select(|b| b.drain.is_some())
    }

    /// Ranks the scheduler can use: up and not drained.
    pub fn live(&self) -> IdSet {
        self.select(|b| b.state == BrokerState::Up && b.drain.is_none())
    }

    /// The leader (rank 0) is up, so its services answer.
    pub fn leader_up(&self) -> bool {
        self.state(0) == Some(BrokerState::Up)
    }

    /// Journal events since the leader started (each one event object).
    pub fn journal_history(&self) -> &[Value] {
        &self.history
    }

    /// Ends the containers of brokers that exited on a shutdown since the last call;
    /// returns how many.
    pub fn end_exited(&mut self, sim: &SimCluster) -> usize {
        let exited = std::mem::take(&mut self.exited);
        for pod in &exited {
            if let Err(err) = sim.end_pod(&self.namespace, pod, 0) {
                tracing::warn!(
                    "sim flux: a broker exited 0 but its pod {pod} could not end: {err}"
                );
            }
        }
        exited.len()
    }

    /// Applies the pod events that arrived since the last call; returns how many there were.
    pub fn pump(&mut self) -> usize {
        let mut seen = 0;
        while let Ok(event) = self.pods.try_recv() {
            seen += 1;
            self.follow(&event);
        }
        seen
    }

    fn follow(&mut self, event: &PodEvent) {
        if event.namespace != self.namespace || event.job.as_deref() != Some(self.job.as_str()) {
            return;
        }
        let Some(rank) = event.index.filter(|&k| k < self.size()) else {
            return;
        };
        let broker = &mut self.brokers[rank as usize];
        let current = broker.pod.as_deref() == Some(event.pod.as_str());
        match event.kind {
            PodEventKind::Started => {
                broker.pod = Some(event.pod.clone());
                if broker.state != BrokerState::Up {
                    self.join(rank);
                }
            }
            // An older pod of this index going away does not touch the running broker.
            _ if !current => {}
            PodEventKind::Ended { exit_code: 0 } => self.leave(rank, BrokerState::Offline),
            PodEventKind::Terminating | PodEventKind::Ended { .. } | PodEventKind::Deleted => {
                self.leave(rank, BrokerState::Lost)
            }
        }
    }

    /// Broker `rank` connects to the leader; the leader itself starts its history.
    fn join(&mut self, rank: u32) {
        self.brokers[rank as usize].state = BrokerState::Up;
        if rank == 0 {
            self.start_leader(&IdSet::new());
            let waiting = self.online();
            self.post("online", json!({"idset": waiting.to_string()}));
            return;
        }
        self.post("online", json!({"idset": rank.to_string()}));
        self.report_overlay(rank);
    }

    /// Broker `rank` goes away (`Lost` or `Offline`); nothing happens if it is not up.
    fn leave(&mut self, rank: u32, how: BrokerState) {
        let Some(broker) = self
            .brokers
            .get_mut(rank as usize)
            .filter(|b| b.state == BrokerState::Up)
        else {
            return;
        };
        broker.state = how;
        broker.torpid = false;
        self.report_overlay(rank);
        self.post("offline", json!({"idset": rank.to_string()}));
        self.jobs.rank_lost(rank, timestamp());
    }

    /// Starts a job on `ranks`, every one of them up, with a time limit of `limit`
    /// seconds (its R's expiration) if given.
    pub fn run_job(&mut self, ranks: &IdSet, limit: Option<f64>) -> Result<JobId, RpcFailure> {
        let down = ranks.difference(&self.online());
        if ranks.is_empty() || !down.is_empty() {
            return Err(RpcFailure::new(
                "EINVAL",
                format!("cannot run a job on {ranks}: {down} not up"),
            ));
        }
        let now = timestamp();
        Ok(self.jobs.run(ranks, now, limit.map(|l| now + l)))
    }

    /// Job `id` completes with exit 0; false if it is not running.
    pub fn end_job(&mut self, id: JobId) -> bool {
        self.jobs.end(id, timestamp(), 0)
    }

    /// The running jobs and the ranks each holds.
    pub fn jobs(&self) -> &SimJobs {
        &self.jobs
    }

    /// A follower stops answering (`true`, as after SIGSTOP) or answers again.
    pub fn set_torpid(&mut self, rank: u32, torpid: bool) {
        let Some(broker) = self.brokers.get_mut(rank as usize) else {
            return;
        };
        if broker.state != BrokerState::Up || broker.torpid == torpid || rank == 0 {
            return;
        }
        broker.torpid = torpid;
        let name = if torpid { "torpid" } else { "lively" };
        self.post(name, json!({"idset": rank.to_string()}));
        self.report_overlay(rank);
    }

    /// Rank 0 starts: a fresh journal history whose `restart` names `online`.
    fn start_leader(&mut self, online: &IdSet) {
        let last = self.size().saturating_sub(1);
        let all = IdSet::range(0, last);
        let nodelist = hostlist::encode(&self.hostnames);
        self.history = vec![
            json!({
                "timestamp": timestamp(),
                "name": "restart",
                "context": {
                    "ranks": all.to_string(),
                    "online": online.to_string(),
                    "nodelist": nodelist,
                },
            }),
            json!({
                "timestamp": timestamp(),
                "name": "resource-define",
                "context": {"method": "configuration"},
            }),
        ];
    }

    /// The resource set the leader was configured with.
    fn resources(&self) -> Value {
        let last = self.size().saturating_sub(1);
        json!({
            "version": 1,
            "execution": {
                "R_lite": [{"rank": IdSet::range(0, last).to_string(), "children": {"core": "0-1"}}],
                "starttime": 0.0,
                "expiration": 0.0,
                "nodelist": [hostlist::encode(&self.hostnames)],
            },
        })
    }

    /// The leader restarts without a persistent statedir: drains are lost (docs/flux-core.md
    /// 3.4), lost ranks are forgotten, the streams end, and a new history starts with the
    /// followers that are up. Subscribers must subscribe again.
    pub fn restart_leader(&mut self) {
        for broker in &mut self.brokers {
            broker.drain = None;
            broker.torpid = false;
            if broker.state == BrokerState::Lost {
                broker.state = BrokerState::Offline;
            }
        }
        self.journal = None;
        self.overlay = None;
        self.jobs.leader_restarted();
        let online = self.online();
        self.start_leader(&online);
    }

    /// Records a journal event and sends it to the subscriber, if any.
    fn post(&mut self, name: &str, context: Value) {
        if self.history.is_empty() {
            // No leader, no journal: the event is lost, as it would be.
            return;
        }
        let event = json!({"timestamp": timestamp(), "name": name, "context": context});
        if let Some(queue) = &mut self.journal {
            queue.push_back(json!({"events": [event.clone()]}).to_string());
        }
        self.history.push(event);
    }

    /// Sends rank `rank`'s overlay status to the subscriber, if any.
    fn report_overlay(&mut self, rank: u32) {
        if let Some(status) = self.overlay_status(rank)
            && let Some(queue) = &mut self.overlay
        {
            queue.push_back(status.to_string());
        }
    }

    /// What `overlay.monitor` says of child `rank` now (rank 0 is nobody's child).
    fn overlay_status(&self, rank: u32) -> Option<Value> {
        let broker = self.brokers.get(rank as usize).filter(|_| rank != 0)?;
        let status = match broker.state {
            BrokerState::Up => "full",
            BrokerState::Lost => "lost",
            BrokerState::Offline | BrokerState::NeverStarted => "offline",
        };
        Some(json!({"rank": rank, "status": status, "torpid": broker.torpid}))
    }

    /// Opens `resource.journal`: the backlog is queued at once. ENOSYS while the leader
    /// is down (its resource module is not loaded).
    pub fn subscribe_journal(&mut self) -> Result<(), RpcFailure> {
        let (Some(restart), Some(define)) = (self.history.first(), self.history.get(1)) else {
            return Err(RpcFailure::new("ENOSYS", "the leader is not up"));
        };
        let mut backlog = VecDeque::new();
        backlog.push_back(json!({"events": [restart]}).to_string());
        backlog.push_back(json!({"events": [define], "R": self.resources()}).to_string());
        for batch in self.history[2..].chunks(BACKLOG_BATCH) {
            backlog.push_back(json!({ "events": batch }).to_string());
        }
        backlog.push_back(json!({"events": []}).to_string());
        self.journal = Some(backlog);
        Ok(())
    }

    /// Opens `overlay.monitor`: one status per child that is up or lost (offline children
    /// are left out of the first batch, as the overlay does).
    pub fn subscribe_overlay(&mut self) -> Result<(), RpcFailure> {
        if !self.leader_up() {
            return Err(RpcFailure::new("ENOSYS", "the leader is not up"));
        }
        let batch = (1..self.size())
            .filter(|&k| {
                matches!(
                    self.brokers[k as usize].state,
                    BrokerState::Up | BrokerState::Lost
                )
            })
            .filter_map(|k| self.overlay_status(k))
            .map(|status| status.to_string())
            .collect();
        self.overlay = Some(batch);
        Ok(())
    }

    /// Opens `job-manager.events-journal`: its backlog is queued at once. ENOSYS while
    /// the leader is down.
    pub fn subscribe_jobs(&mut self) -> Result<(), RpcFailure> {
        if !self.leader_up() {
            return Err(RpcFailure::new("ENOSYS", "the leader is not up"));
        }
        self.jobs.subscribe();
        Ok(())
    }

    /// The `job-manager.events-journal` responses since the last call.
    pub fn take_job_journal(&mut self) -> Vec<String> {
        self.jobs.take_journal()
    }

    /// The `resource.journal` responses since the last call.
    pub fn take_journal(&mut self) -> Vec<String> {
        self.journal
            .as_mut()
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// The `overlay.monitor` responses since the last call.
    pub fn take_overlay(&mut self) -> Vec<String> {
        self.overlay
            .as_mut()
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// Serves one request to broker `nodeid`: `resource.drain` and `resource.undrain` on
    /// rank 0, and a follower's `state-machine.post` shutdown: the broker shuts down
    /// cleanly and exits 0, which ends its pod with exit 0 at [`SimFlux::end_exited`].
    pub fn rpc(&mut self, topic: &str, payload: &str, nodeid: u32) -> Result<(), RpcFailure> {
        if !self.leader_up() {
            return Err(RpcFailure::new("EHOSTUNREACH", "the leader is not up"));
        }
        let request: Map<String, Value> = serde_json::from_str(payload)
            .map_err(|e| RpcFailure::new("EPROTO", format!("malformed request: {e}")))?;
        match (topic, nodeid) {
            ("resource.drain", 0) => self.drain_request(&request),
            ("resource.undrain", 0) => self.undrain_request(&request),
            ("state-machine.post", _) => self.post_state_event(nodeid, &request),
            _ => Err(RpcFailure::new(
                "ENOSYS",
                format!("no service for {topic} on rank {nodeid}"),
            )),
        }
    }

    /// `targets` as ranks: an idset, or host names mapped to ranks.
    fn targets(&self, request: &Map<String, Value>) -> Result<IdSet, RpcFailure> {
        let targets = string_field(request, "targets")?
            .ok_or_else(|| RpcFailure::new("EPROTO", "targets is required"))?;
        let ranks: IdSet = match targets.parse() {
            Ok(ranks) => ranks,
            Err(_) => {
                let hosts = hostlist::expand(targets)
                    .map_err(|e| RpcFailure::new("EINVAL", e.to_string()))?;
                hosts
                    .iter()
                    .map(|host| {
                        self.hostnames
                            .iter()
                            .position(|h| h == host)
                            .map(|k| k as u32)
                            .ok_or_else(|| {
                                RpcFailure::new("ENOENT", format!("host {host} not found"))
                            })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        match ranks.last() {
            None => Err(RpcFailure::new("EINVAL", "idset is empty")),
            Some(last) if last >= self.size() => {
                Err(RpcFailure::new("EINVAL", "idset is out of range"))
            }
            Some(_) => Ok(ranks),
        }
    }

    fn nodelist(&self, ranks: &IdSet) -> String {
        let hosts: Vec<&String> = ranks.iter().map(|k| &self.hostnames[k as usize]).collect();
        hostlist::encode(&hosts)
    }

    /// `drain.c` `drain_cb` (docs/flux-core.md 3.2): without a mode, any target already
    /// drained with a reason fails the request (EEXIST); `update` leaves those as they are;
    /// `overwrite` replaces the reason, `force-overwrite` the timestamp too.
    fn drain_request(&mut self, request: &Map<String, Value>) -> Result<(), RpcFailure> {
        let ranks = self.targets(request)?;
        let reason = string_field(request, "reason")?;
        let (update, overwrite) = match string_field(request, "mode")? {
            None => (false, 0),
            Some("update") => (true, 0),
            Some("overwrite") => (false, 1),
            Some("force-overwrite") => (false, 2),
            Some(_) => return Err(RpcFailure::new("EINVAL", "Invalid mode specified")),
        };
        if !update && overwrite == 0 {
            let already = self.select(|b| b.drain.as_ref().is_some_and(|d| d.reason.is_some()));
            let clash = ranks.intersection(&already);
            if !clash.is_empty() {
                return Err(RpcFailure::new(
                    "EEXIST",
                    format!("{} {clash} already drained", plural_rank(&clash)),
                ));
            }
        }
        let now = timestamp();
        for k in ranks.iter() {
            let broker = &mut self.brokers[k as usize];
            let keep = overwrite == 0 && broker.drain.as_ref().is_some_and(|d| d.reason.is_some());
            if keep {
                continue;
            }
            let timestamp = match &broker.drain {
                Some(old) if overwrite != 2 => old.timestamp,
                _ => now,
            };
            broker.drain = Some(SimDrain {
                reason: reason.map(str::to_owned),
                timestamp,
            });
        }
        let mut context = json!({
            "idset": ranks.to_string(),
            "nodelist": self.nodelist(&ranks),
            "overwrite": overwrite,
        });
        if let Some(reason) = reason {
            context["reason"] = json!(reason);
        }
        self.post("drain", context);
        Ok(())
    }

    /// `drain.c` `undrain_cb` (docs/flux-core.md 3.2): any target not drained fails the
    /// request (EEXIST) unless a mode is given.
    fn undrain_request(&mut self, request: &Map<String, Value>) -> Result<(), RpcFailure> {
        let ranks = self.targets(request)?;
        let reason = string_field(request, "reason")?;
        let overwrite = match string_field(request, "mode")? {
            None => None,
            Some("update") => Some(0),
            Some("overwrite") => Some(1),
            Some("force-overwrite") => Some(2),
            Some(other) => {
                return Err(RpcFailure::new(
                    "EINVAL",
                    format!("invalid undrain mode '{other}' specified"),
                ));
            }
        };
        if overwrite.is_none() {
            let undrained = ranks.difference(&self.drained());
            if !undrained.is_empty() {
                return Err(RpcFailure::new(
                    "EEXIST",
                    format!("{} {undrained} not drained", plural_rank(&undrained)),
                ));
            }
        }
        for k in ranks.iter() {
            self.brokers[k as usize].drain = None;
        }
        let mut context = json!({
            "idset": ranks.to_string(),
            "nodelist": self.nodelist(&ranks),
            "overwrite": overwrite.unwrap_or(0),
        });
        if let Some(reason) = reason {
            context["reason"] = json!(reason);
        }
        self.post("undrain", context);
        Ok(())
    }

    /// `state_machine.c` `state_machine_post_cb` (docs/flux-core.md 4.1) on broker `rank`:
    /// the `shutdown` event takes a follower through cleanup and rc3 to exit 0. The request
    /// is one-way, so a broker that is not up simply never gets it. The leader is never shut
    /// down here: that would end the instance, and fluxk8s must never ask it.
    fn post_state_event(
        &mut self,
        rank: u32,
        request: &Map<String, Value>,
    ) -> Result<(), RpcFailure> {
        let event = string_field(request, "event")?
            .ok_or_else(|| RpcFailure::new("EPROTO", "event is required"))?;
        if event != "shutdown" {
            return Err(RpcFailure::new(
                "EINVAL",
                format!("event {event} is not simulated"),
            ));
        }
        if rank == 0 {
            return Err(RpcFailure::new(
                "EPERM",
                "shutting down the leader ends the instance",
            ));
        }
        let Some(broker) = self.brokers.get(rank as usize) else {
            return Err(RpcFailure::new("EHOSTUNREACH", format!("no rank {rank}")));
        };
        if broker.state != BrokerState::Up {
            return Ok(());
        }
        self.exited.extend(broker.pod.clone());
        self.shut_down.push(rank);
        self.leave(rank, BrokerState::Offline);
        Ok(())
    }
}

/// `rank` or `ranks`, as flux-core words its errors.
fn plural_rank(ranks: &IdSet) -> &'static str {
    if ranks.len() > 1 { "ranks" } else { "rank" }
}

/// An optional string field; present but not a string is EPROTO, as `flux_request_unpack`.
fn string_field<'a>(
    request: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, RpcFailure> {
    match request.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RpcFailure::new("EPROTO", format!("{key} must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{self, Sender};

    use super::*;
    use crate::model::OverlayStatus;
    use crate::model::flux::{ChildStatus, FluxView, JournalEvent, JournalResponse};
    use crate::sim::SimOptions;

    const NS: &str = "flux";
    const JOB: &str = "demo";

    fn ids(text: &str) -> IdSet {
        text.parse().unwrap()
    }

    /// A SimFlux of 4 ranks fed by hand-made pod events.
    fn flux() -> (SimFlux, Sender<PodEvent>) {
        let (tx, rx) = mpsc::channel();
        (SimFlux::new(NS, JOB, 4, rx), tx)
    }

    fn event(tx: &Sender<PodEvent>, index: u32, pod: &str, kind: PodEventKind) {
        tx.send(PodEvent {
            namespace: NS.into(),
            pod: pod.into(),
            job: Some(JOB.into()),
            index: Some(index),
            kind,
        })
        .unwrap();
    }

    fn start(tx: &Sender<PodEvent>, index: u32) {
        event(
            tx,
            index,
            &format!("{JOB}-{index}-a"),
            PodEventKind::Started,
        );
    }

    /// A SimFlux whose `ranks` are up, with both streams subscribed and their backlog
    /// taken, so only what happens next is queued.
    fn followed_with(ranks: &[u32]) -> SimFlux {
        let (mut flux, tx) = flux();
        for &rank in ranks {
            start(&tx, rank);
        }
        flux.pump();
        flux.subscribe_journal().unwrap();
        flux.subscribe_overlay().unwrap();
        flux.take_journal();
        flux.take_overlay();
        flux
    }

    /// Applies every journal and overlay payload to a FluxView, as the engine does.
    fn apply(view: &mut FluxView, flux: &mut SimFlux) {
        for payload in flux.take_journal() {
            let response = JournalResponse::parse(&payload).expect("journal payload parses");
            view.apply_journal(&response)
                .expect("journal payload applies");
        }
        for payload in flux.take_overlay() {
            let status = OverlayStatus::parse(&payload).expect("overlay payload parses");
            view.apply_overlay(&status)
                .expect("overlay payload applies");
        }
    }

    fn sim() -> SimCluster {
        SimCluster::start(SimOptions::default()).unwrap()
    }

    #[test]
    fn the_backlog_has_the_shape_flux_sends() {
        let (mut flux, tx) = flux();
        assert_eq!(flux.subscribe_journal().unwrap_err().errno, "ENOSYS");
        start(&tx, 1);
        start(&tx, 0);
        flux.pump();
        flux.subscribe_journal().unwrap();
        assert_eq!(flux.hostnames()[3], "demo-3");
        let backlog: Vec<Value> = flux
            .take_journal()
            .iter()
            .map(|p| serde_json::from_str(p).unwrap())
            .collect();
        assert_eq!(backlog.len(), 4, "{backlog:?}");
        let restart = &backlog[0]["events"][0];
        assert_eq!(restart["name"], "restart");
        assert!(restart["timestamp"].is_f64());
        assert_eq!(
            restart["context"],
            json!({"ranks": "0-3", "online": "", "nodelist": "demo-[0-3]"})
        );
        assert_eq!(backlog[1]["events"][0]["name"], "resource-define");
        assert_eq!(
            backlog[1]["R"]["execution"]["R_lite"][0]["rank"], "0-3",
            "{}",
            backlog[1]
        );
        assert_eq!(backlog[1]["R"]["execution"]["nodelist"][0], "demo-[0-3]");
        assert_eq!(backlog[2]["events"][0]["name"], "online");
        assert_eq!(backlog[2]["events"][0]["context"]["idset"], "0-1");
        assert_eq!(backlog[3], json!({"events": []}));
    }

    #[test]
    fn pods_starting_and_ending_drive_both_streams() {
        let (mut flux, tx) = flux();
        start(&tx, 0);
        start(&tx, 1);
        start(&tx, 2);
        flux.pump();
        flux.subscribe_journal().unwrap();
        flux.subscribe_overlay().unwrap();
        let mut view = FluxView::new();
        apply(&mut view, &mut flux);
        assert!(view.synced());
        assert_eq!(view.rank_sets().online, ids("0-2"));
        assert_eq!(flux.hostnames()[2], "demo-2");

        // Deleted: lost. Its replacement starts while the old pod is still ending.
        event(&tx, 2, "demo-2-a", PodEventKind::Terminating);
        flux.pump();
        let overlay = flux.take_overlay();
        assert_eq!(overlay, [r#"{"rank":2,"status":"lost","torpid":false}"#]);
        let journal = flux.take_journal();
        let offline: Value = serde_json::from_str(&journal[0]).unwrap();
        assert_eq!(offline["events"][0]["name"], "offline");
        assert_eq!(offline["events"][0]["context"], json!({"idset": "2"}));
        view.apply_journal(&JournalResponse::parse(&journal[0]).unwrap())
            .unwrap();
        view.apply_overlay(&OverlayStatus::parse(&overlay[0]).unwrap())
            .unwrap();
        assert_eq!(view.rank_sets().lost, ids("2"));

        event(&tx, 2, "demo-2-b", PodEventKind::Started);
        event(&tx, 2, "demo-2-a", PodEventKind::Ended { exit_code: 143 });
        event(&tx, 2, "demo-2-a", PodEventKind::Deleted);
        flux.pump();
        assert_eq!(
            flux.state(2),
            Some(BrokerState::Up),
            "the old pod is ignored"
        );
        apply(&mut view, &mut flux);
        assert!(view.rank_sets().lost.is_empty());
        assert_eq!(view.rank_sets().online, ids("0-2"));

        // A clean exit is offline, not lost; a crash is lost.
        event(&tx, 1, "demo-1-a", PodEventKind::Ended { exit_code: 0 });
        event(&tx, 2, "demo-2-b", PodEventKind::Ended { exit_code: 1 });
        flux.pump();
        let statuses: Vec<ChildStatus> = flux
            .take_overlay()
            .iter()
            .map(|p| OverlayStatus::parse(p).unwrap().status)
            .collect();
        assert_eq!(statuses, [ChildStatus::Offline, ChildStatus::Lost]);
        assert_eq!(flux.online(), ids("0"));
        assert_eq!(flux.lost(), ids("2"));

        // Events of other Jobs, or beyond the size, are not ours.
        let mut other = PodEvent {
            namespace: NS.into(),
            pod: "other-1-a".into(),
            job: Some("other".into()),
            index: Some(1),
            kind: PodEventKind::Started,
        };
        tx.send(other.clone()).unwrap();
        other.job = Some(JOB.into());
        other.index = Some(9);
        tx.send(other).unwrap();
        assert_eq!(flux.pump(), 2);
        assert_eq!(flux.online(), ids("0"));
    }

    #[test]
    fn torpid_and_lively_are_reported_on_both_streams() {
        let mut flux = followed_with(&[0, 3]);
        flux.set_torpid(3, true);
        let journal = flux.take_journal();
        let torpid = JournalResponse::parse(&journal[0]).unwrap();
        assert_eq!(torpid.entries[0].event, JournalEvent::Torpid(ids("3")));
        assert_eq!(
            flux.take_overlay(),
            [r#"{"rank":3,"status":"full","torpid":true}"#]
        );
        flux.set_torpid(3, false);
        let lively = JournalResponse::parse(&flux.take_journal()[0]).unwrap();
        assert_eq!(lively.entries[0].event, JournalEvent::Lively(ids("3")));
    }

    #[test]
    fn a_crashed_broker_is_lost_and_the_leader_or_an_unknown_rank_is_left_alone() {
        let mut flux = followed_with(&[0, 1]);
        flux.crash_broker(1);
        assert_eq!(
            flux.take_overlay(),
            [r#"{"rank":1,"status":"lost","torpid":false}"#]
        );
        let offline = JournalResponse::parse(&flux.take_journal()[0]).unwrap();
        assert_eq!(offline.entries[0].event, JournalEvent::Offline(ids("1")));
        flux.crash_broker(0);
        flux.crash_broker(9);
        assert_eq!(flux.online(), ids("0"));
        assert_eq!(flux.lost(), ids("1"));
        assert!(flux.take_journal().is_empty() && flux.take_overlay().is_empty());
    }

    #[test]
    fn drain_and_undrain_answer_as_flux_core_does() {
        let (mut flux, tx) = flux();
        let drain = |flux: &mut SimFlux, payload: Value| {
            flux.rpc("resource.drain", &payload.to_string(), 0)
        };
        assert_eq!(
            drain(&mut flux, json!({"targets": "1"})).unwrap_err().errno,
            "EHOSTUNREACH",
            "no leader, no resource module"
        );
        start(&tx, 0);
        flux.pump();
        flux.subscribe_journal().unwrap();
        let mut view = FluxView::new();
        apply(&mut view, &mut flux);

        drain(&mut flux, json!({"targets": "2", "reason": "bad disk"})).unwrap();
        let again = drain(&mut flux, json!({"targets": "1-2", "reason": "x"})).unwrap_err();
        assert_eq!(again, RpcFailure::new("EEXIST", "rank 2 already drained"));
        drain(
            &mut flux,
            json!({"targets": "1-2", "reason": "fluxk8s: x", "mode": "update"}),
        )
        .unwrap();
        assert_eq!(flux.drain(2).unwrap().reason.as_deref(), Some("bad disk"));
        assert_eq!(flux.drain(1).unwrap().reason.as_deref(), Some("fluxk8s: x"));
        drain(&mut flux, json!({"targets": "demo-3"})).unwrap();
        assert_eq!(flux.drain(3).unwrap().reason, None, "hostnames work");
        let journal = flux.take_journal();
        let last: Value = serde_json::from_str(journal.last().unwrap()).unwrap();
        assert_eq!(
            last["events"][0]["context"],
            json!({"idset": "3", "nodelist": "demo-3", "overwrite": 0}),
            "no reason key without a reason"
        );
        for payload in &journal {
            view.apply_journal(&JournalResponse::parse(payload).unwrap())
                .unwrap();
        }
        assert_eq!(view.rank_sets().drained, flux.drained());
        assert_eq!(view.rank_sets().drained_by_fluxk8s, ids("1"));

        let errors = [
            (json!({"targets": "4"}), "EINVAL", "idset is out of range"),
            (json!({"targets": ""}), "EINVAL", "idset is empty"),
            (
                json!({"targets": "nohost"}),
                "ENOENT",
                "host nohost not found",
            ),
            (
                json!({"targets": "1", "mode": "x"}),
                "EINVAL",
                "Invalid mode",
            ),
            (json!({"reason": "x"}), "EPROTO", "targets is required"),
            (json!({"targets": 1}), "EPROTO", "targets must be a string"),
        ];
        for (payload, errno, text) in errors {
            let err = drain(&mut flux, payload.clone()).unwrap_err();
            assert_eq!(err.errno, errno, "{payload}: {err}");
            assert!(err.message.contains(text), "{payload}: {err}");
        }

        let undrain = |flux: &mut SimFlux, payload: Value| {
            flux.rpc("resource.undrain", &payload.to_string(), 0)
        };
        assert_eq!(
            undrain(&mut flux, json!({"targets": "0-1"})).unwrap_err(),
            RpcFailure::new("EEXIST", "rank 0 not drained")
        );
        undrain(&mut flux, json!({"targets": "1-2"})).unwrap();
        assert_eq!(flux.drained(), ids("3"));
        let undrained: Value = serde_json::from_str(&flux.take_journal()[0]).unwrap();
        assert_eq!(
            undrained["events"][0]["context"],
            json!({"idset": "1-2", "nodelist": "demo-[1-2]", "overwrite": 0})
        );
        assert_eq!(
            flux.rpc("resource.bogus", "{}", 0).unwrap_err().errno,
            "ENOSYS"
        );
        assert_eq!(
            flux.rpc("resource.drain", "not json", 0).unwrap_err().errno,
            "EPROTO"
        );
    }

    #[test]
    fn a_shutdown_ends_the_broker_cleanly_and_its_pod_with_exit_0() {
        let sim = sim();
        let (mut flux, tx) = flux();
        start(&tx, 0);
        start(&tx, 1);
        flux.pump();
        flux.subscribe_overlay().unwrap();
        let shutdown = json!({"event": "shutdown", "error": false}).to_string();
        let post = |flux: &mut SimFlux, rank: u32| flux.rpc("state-machine.post", &shutdown, rank);
        assert_eq!(post(&mut flux, 0).unwrap_err().errno, "EPERM");
        assert_eq!(post(&mut flux, 9).unwrap_err().errno, "EHOSTUNREACH");
        // One-way: a broker that is not up never hears it.
        assert_eq!(post(&mut flux, 2), Ok(()));
        assert_eq!(flux.state(2), Some(BrokerState::NeverStarted));
        assert_eq!(post(&mut flux, 1), Ok(()));
        assert_eq!(flux.state(1), Some(BrokerState::Offline));
        // The container's exit reaches Kubernetes after the request, once.
        assert_eq!(flux.end_exited(&sim), 1);
        assert_eq!(flux.end_exited(&sim), 0);
        let overlay = flux.take_overlay();
        assert!(
            overlay
                .iter()
                .any(|o| o.contains(r#""rank":1"#) && o.contains(r#""status":"offline""#)),
            "{overlay:?}"
        );
        let drain = json!({"targets": "1"}).to_string();
        assert_eq!(
            flux.rpc("resource.drain", &drain, 1).unwrap_err().errno,
            "ENOSYS",
            "the resource service is rank 0's"
        );
    }

    #[test]
    fn a_leader_restart_loses_drains_and_ends_the_streams() {
        let (mut flux, tx) = flux();
        start(&tx, 0);
        start(&tx, 1);
        start(&tx, 2);
        event(&tx, 2, "demo-2-a", PodEventKind::Deleted);
        flux.pump();
        flux.subscribe_journal().unwrap();
        flux.subscribe_overlay().unwrap();
        let drain = json!({"targets": "1", "reason": "keep me"}).to_string();
        flux.rpc("resource.drain", &drain, 0).unwrap();
        assert_eq!(flux.lost(), ids("2"));

        flux.restart_leader();
        assert!(flux.take_journal().is_empty(), "the old streams ended");
        assert!(flux.drained().is_empty());
        assert!(flux.lost().is_empty(), "a new leader never saw rank 2");
        flux.subscribe_journal().unwrap();
        flux.subscribe_overlay().unwrap();
        let mut view = FluxView::new();
        apply(&mut view, &mut flux);
        assert!(view.synced());
        assert_eq!(view.rank_sets().online, ids("0-1"));
        assert!(view.rank_sets().drained.is_empty());
        assert!(
            flux.journal_history()
                .iter()
                .all(|event| event["name"] != "drain"),
            "{:?}",
            flux.journal_history()
        );
    }
}
