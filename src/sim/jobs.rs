//! The leader's job-manager, as far as fluxk8s sees it: jobs that hold ranks, and the
//! `job-manager.events-journal` stream that tells who holds which.
//!
//! A job here is placed at once on the ranks it is given and runs until it is ended, its
//! time limit being only what its `R` says (`execution.expiration`): nothing ends it by
//! the clock, so a test decides when. A job whose broker goes away ends with a
//! `node-failure` exception, as the job-exec module raises one on a lost rank
//! (docs/flux-core.md 2.6).
//!
//! Payloads have the shapes `src/modules/job-manager/journal.c` sends (docs/flux-core.md
//! 2.5): the backlog is one response per active job with its events so far (and
//! `jobspec`, `R`), then the sentinel `{"id":-1,"events":[]}`; live events follow one per
//! response, `submit` carrying the jobspec and `alloc` the R.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

use crate::model::IdSet;
use crate::model::queue::JobId;

/// One running job.
#[derive(Debug, Clone)]
struct SimJob {
    ranks: IdSet,
    /// Events so far: what a new subscriber's backlog replays.
    events: Vec<Value>,
    jobspec: Value,
    r: Value,
}

/// Running jobs and the journal's subscriber.
#[derive(Debug, Default)]
pub struct SimJobs {
    jobs: BTreeMap<JobId, SimJob>,
    next_id: u64,
    /// Responses waiting for the `job-manager.events-journal` subscriber, if there is one.
    journal: Option<VecDeque<String>>,
}

/// A jobspec asking one slot on each of `nodes` nodes, as `flux run -N` makes it.
fn jobspec(nodes: usize) -> Value {
    json!({
        "version": 1,
        "resources": [{"type": "node", "count": nodes, "with": [
            {"type": "slot", "count": 1, "label": "task", "with": [{"type": "core", "count": 1}]}
        ]}],
        "tasks": [],
        "attributes": {"system": {"duration": 0}},
    })
}

impl SimJobs {
    /// Starts a job on `ranks`; `expiration` (seconds since the epoch) goes in its R, as
    /// the scheduler sets it from the job's time limit.
    pub fn run(&mut self, ranks: &IdSet, now: f64, expiration: Option<f64>) -> JobId {
        // Ids of real jobs are large FLUIDs; any distinct numbers will do here.
        self.next_id += 1;
        let id = JobId(1_000_000 + self.next_id);
        let r = json!({
            "version": 1,
            "execution": {
                "R_lite": [{"rank": ranks.to_string(), "children": {"core": "0"}}],
                "starttime": now,
                "expiration": expiration.unwrap_or(0.0),
            },
        });
        let job = SimJob {
            ranks: ranks.clone(),
            events: Vec::new(),
            jobspec: jobspec(ranks.len()),
            r,
        };
        self.jobs.insert(id, job);
        self.post(id, "submit", now, json!({"urgency": 16, "flags": 0}));
        self.post(id, "priority", now, json!({"priority": 16}));
        self.post(id, "alloc", now, json!({}));
        self.post(id, "start", now, json!({}));
        id
    }

    /// Ends job `id` with `status` (a wait status: 0 for success); false if it is not
    /// running.
    pub fn end(&mut self, id: JobId, now: f64, status: i64) -> bool {
        if !self.jobs.contains_key(&id) {
            return false;
        }
        self.post(id, "finish", now, json!({"status": status}));
        self.post(id, "release", now, json!({"ranks": "all", "final": true}));
        self.post(id, "free", now, json!({}));
        self.post(id, "clean", now, json!({}));
        self.jobs.remove(&id);
        true
    }

    /// Broker `rank` went away: each job on it fails.
    pub fn rank_lost(&mut self, rank: u32, now: f64) {
        let hit: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, job)| job.ranks.contains(rank))
            .map(|(&id, _)| id)
            .collect();
        for id in hit {
            let note = format!("lost contact with job shell on rank {rank}");
            let context = json!({"type": "node-failure", "severity": 0, "note": note});
            self.post(id, "exception", now, context);
            // Killed by SIGKILL, as the shell's tasks are.
            self.end(id, now, 9);
        }
    }

    /// The leader restarted: the job-manager starts empty and its subscriber is gone.
    pub fn leader_restarted(&mut self) {
        self.jobs.clear();
        self.journal = None;
    }

    /// Ranks each running job holds.
    pub fn running(&self) -> impl Iterator<Item = (JobId, &IdSet)> {
        self.jobs.iter().map(|(&id, job)| (id, &job.ranks))
    }

    /// Opens the journal: the backlog (every running job, then the sentinel) is queued.
    pub fn subscribe(&mut self) {
        let mut backlog: VecDeque<String> = self
            .jobs
            .iter()
            .map(|(id, job)| {
                json!({"id": id.0, "events": job.events, "jobspec": job.jobspec, "R": job.r})
                    .to_string()
            })
            .collect();
        backlog.push_back(json!({"id": -1, "events": []}).to_string());
        self.journal = Some(backlog);
    }

    /// The journal responses since the last call.
    pub fn take_journal(&mut self) -> Vec<String> {
        self.journal
            .as_mut()
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// Records event `name` of job `id` and sends it to the subscriber, if any.
    fn post(&mut self, id: JobId, name: &str, now: f64, context: Value) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let event = json!({"timestamp": now, "name": name, "context": context});
        if let Some(queue) = &mut self.journal {
            let mut response = json!({"id": id.0, "events": [event]});
            match name {
                "submit" => response["jobspec"] = job.jobspec.clone(),
                "alloc" => response["R"] = job.r.clone(),
                _ => {}
            }
            queue.push_back(response.to_string());
        }
        job.events.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::queue::{JobJournalResponse, QueueView};

    fn ids(text: &str) -> IdSet {
        text.parse().unwrap()
    }

    fn apply_all(view: &mut QueueView, jobs: &mut SimJobs) {
        for payload in jobs.take_journal() {
            let response = JobJournalResponse::parse(&payload).expect("journal payload parses");
            view.apply(&response).expect("journal payload applies");
        }
    }

    #[test]
    fn the_backlog_and_live_events_give_the_queue_its_occupancy() {
        let mut jobs = SimJobs::default();
        let first = jobs.run(&ids("3"), 10.0, Some(4000.0));
        let mut view = QueueView::new();
        jobs.subscribe();
        apply_all(&mut view, &mut jobs);
        assert!(view.synced());
        let occupancy = view.occupancy();
        assert_eq!(occupancy.busy(), &ids("3"));

        let second = jobs.run(&ids("1-2"), 11.0, None);
        apply_all(&mut view, &mut jobs);
        assert_eq!(view.occupancy().busy(), &ids("1-3"));

        assert!(jobs.end(first, 12.0, 0));
        assert!(!jobs.end(first, 12.0, 0), "a job ends once");
        apply_all(&mut view, &mut jobs);
        assert_eq!(view.occupancy().busy(), &ids("1-2"));
        assert_eq!(
            jobs.running().map(|(id, _)| id).collect::<Vec<_>>(),
            [second]
        );
    }

    #[test]
    fn a_lost_rank_fails_its_jobs_and_a_restart_forgets_them() {
        let mut jobs = SimJobs::default();
        jobs.run(&ids("2-3"), 1.0, None);
        jobs.run(&ids("1"), 1.0, None);
        let mut view = QueueView::new();
        jobs.subscribe();
        apply_all(&mut view, &mut jobs);
        jobs.rank_lost(3, 2.0);
        apply_all(&mut view, &mut jobs);
        assert_eq!(view.occupancy().busy(), &ids("1"));

        jobs.leader_restarted();
        assert!(jobs.take_journal().is_empty(), "the stream ended");
        jobs.subscribe();
        let mut fresh = QueueView::new();
        apply_all(&mut fresh, &mut jobs);
        assert!(fresh.synced() && fresh.occupancy().busy().is_empty());
    }
}
