//! Sizing the instance to its queue, the way Slurm's power saving sizes a cluster:
//! grow when pending jobs cannot start on the ranks there are, retire ranks that have
//! had no job for `idle_timeout`.
//!
//! Pure: the queue view, what the reconciler can count on ([`Supply`]) and `now` go in;
//! a [`Decision`] comes out. The engine hands it to the reconciler as a resize or a
//! retire request, so the reconciler's safety rules still apply (min-size, protected
//! ranks, busy ranks kept until idle, rate limits, start-up backoff).

use std::collections::BTreeMap;

use serde::Serialize;

use super::PlannerConfig;
use super::reasons;
use crate::model::queue::{JobId, QueueView};
use crate::model::{FluxView, IdSet};

/// `max_grow_per_minute` counts ranks added over this window (seconds).
const GROWTH_WINDOW: f64 = 60.0;
/// Jobs named in a reason; the rest are counted.
const JOBS_NAMED: usize = 3;

/// Tunables of autoscaling.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscaleConfig {
    /// A rank with no job for this many seconds may be retired.
    pub idle_timeout: f64,
    /// Ranks added per rolling minute, at most.
    pub max_grow_per_minute: u32,
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        AutoscaleConfig {
            idle_timeout: 300.0,
            max_grow_per_minute: 10,
        }
    }
}

/// What the reconciler can count on (see `Reconciler::supply`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Supply {
    /// Ranks expected to run: up, starting, or lost and coming back; not retiring.
    pub expected: IdSet,
    /// Of those, the ranks online now.
    pub up: IdSet,
    /// The most ranks the instance can have.
    pub max: u32,
    /// The live size asked for so far, if any.
    pub desired: Option<u32>,
}

impl Supply {
    /// What Flux alone tells, for a preview while Kubernetes is not synced: the online
    /// ranks nobody drained, out of the broker size.
    pub fn from_flux(flux: &FluxView) -> Supply {
        let sets = flux.rank_sets();
        let up = sets.online.difference(&sets.drained);
        Supply {
            expected: up.clone(),
            up,
            max: flux.size(),
            desired: None,
        }
    }
}

/// What autoscaling asks of the reconciler now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing (the status says why).
    Hold,
    /// Ask for `size` live ranks; `why` becomes the reason of the size change.
    Grow { size: u32, why: String },
    /// Retire these idle ranks, draining them with `reason`.
    Retire { ranks: IdSet, reason: String },
}

/// One pending job as autoscaling counts it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingJob {
    pub id: JobId,
    /// Nodes it needs, when known.
    pub nodes: Option<u32>,
    pub verdict: String,
}

/// A rank with no job, and for how long.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdleRank {
    pub rank: u32,
    pub idle_for: f64,
}

/// A decision taken, and when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Taken {
    pub at: f64,
    pub what: String,
}

/// Autoscaling's report for the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AutoscaleStatus {
    /// The job-manager journal's backlog has been received.
    pub queue_synced: bool,
    pub pending: Vec<PendingJob>,
    pub running_jobs: usize,
    /// Ranks held by jobs.
    pub allocated: IdSet,
    /// Expected ranks holding no job (idle, or still starting).
    pub free: IdSet,
    pub idle: Vec<IdleRank>,
    /// Nodes needed by the pending jobs that can fit at all.
    pub demand: u32,
    /// What autoscaling wants now, or why it waits.
    pub decision: String,
    pub last_grow: Option<Taken>,
    pub last_retire: Option<Taken>,
    /// When it must look again even if nothing happens (an idle timeout or a cooldown
    /// ends); `None` when only an event can change its mind.
    pub wake_at: Option<f64>,
}

/// The autoscaling policy with what it remembers: since when ranks are idle, and its
/// recent decisions (for the cooldown and the growth rate).
#[derive(Debug, Clone)]
pub struct Autoscaler {
    config: AutoscaleConfig,
    idle_since: BTreeMap<u32, f64>,
    /// Ranks added by recent grows: when, and how many.
    recent_growth: Vec<(f64, u32)>,
    last_grow_at: Option<f64>,
    last_retire_at: Option<f64>,
    status: AutoscaleStatus,
}

/// The numbers one decision is made from.
struct Picture {
    /// Ranks expected to run.
    counted: u32,
    free: u32,
    demand: u32,
    /// Pending jobs counted in the demand, in scheduling order.
    asking: Vec<(JobId, u32)>,
}

impl Autoscaler {
    pub fn new(config: AutoscaleConfig) -> Self {
        Autoscaler {
            config,
            idle_since: BTreeMap::new(),
            recent_growth: Vec::new(),
            last_grow_at: None,
            last_retire_at: None,
            status: AutoscaleStatus::default(),
        }
    }

    pub fn config(&self) -> &AutoscaleConfig {
        &self.config
    }

    /// New tunables (a reload); idle times and past decisions stay.
    pub fn set_config(&mut self, config: AutoscaleConfig) {
        self.config = config;
    }

    /// The report of the last decision.
    pub fn status(&self) -> &AutoscaleStatus {
        &self.status
    }

    /// Decides what to ask of the reconciler now, and records it as taken: the caller
    /// passes it on. `supply` is `None` until both views are synced.
    pub fn decide(
        &mut self,
        queue: &QueueView,
        supply: Option<&Supply>,
        planner: &PlannerConfig,
        now: f64,
    ) -> Decision {
        self.recent_growth
            .retain(|&(at, _)| at > now - GROWTH_WINDOW);
        let mut status = AutoscaleStatus {
            queue_synced: queue.synced(),
            last_grow: self.status.last_grow.take(),
            last_retire: self.status.last_retire.take(),
            ..AutoscaleStatus::default()
        };
        let decision = match supply {
            None => hold(
                &mut status,
                "waiting for the Flux and Kubernetes views to sync",
            ),
            Some(_) if !queue.synced() => hold(
                &mut status,
                "waiting for the job queue (job-manager.events-journal)",
            ),
            Some(supply) => {
                let picture = self.observe(queue, supply, now, &mut status);
                if picture.demand > picture.free {
                    self.grow(supply, &picture, planner, now, &mut status)
                } else {
                    self.retire(&picture, planner, now, &mut status)
                }
            }
        };
        self.status = status;
        decision
    }

    /// What it would decide on `supply`, reported in the status but not taken (nothing
    /// can act while the Kubernetes view is not synced). Idle times still count.
    pub fn preview(
        &mut self,
        queue: &QueueView,
        supply: &Supply,
        planner: &PlannerConfig,
        now: f64,
    ) {
        let mut trial = self.clone();
        let decision = trial.decide(queue, Some(supply), planner, now);
        self.idle_since = trial.idle_since;
        let taken = (self.status.last_grow.take(), self.status.last_retire.take());
        self.status = AutoscaleStatus {
            last_grow: taken.0,
            last_retire: taken.1,
            ..trial.status
        };
        let decided = &self.status.decision;
        self.status.decision = match decision {
            Decision::Hold => format!("{decided} (Kubernetes view not synced)"),
            _ => format!("Kubernetes view not synced; would: {decided}"),
        };
    }

    /// Updates idle times and sums up the queue against the supply.
    fn observe(
        &mut self,
        queue: &QueueView,
        supply: &Supply,
        now: f64,
        status: &mut AutoscaleStatus,
    ) -> Picture {
        let allocated = queue.allocated();
        let idle = supply.up.difference(&allocated);
        self.idle_since.retain(|&k, _| idle.contains(k));
        for k in idle.iter() {
            self.idle_since.entry(k).or_insert(now);
        }
        status.idle = self
            .idle_since
            .iter()
            .map(|(&rank, &since)| IdleRank {
                rank,
                idle_for: now - since,
            })
            .collect();
        status.free = supply.expected.difference(&allocated);
        status.running_jobs = queue.jobs().filter(|j| !j.ranks.is_empty()).count();
        status.allocated = allocated;

        let mut asking = Vec::new();
        for job in queue.pending() {
            let nodes = job
                .demand
                .as_ref()
                .ok()
                .and_then(|d| d.nodes(queue.cores_per_node()));
            let verdict = match (&job.demand, nodes) {
                (Err(why), _) => format!("not counted: {why}"),
                (Ok(_), None) => {
                    "not counted: its slots need the node size, unknown or too small".into()
                }
                (Ok(_), Some(n)) if n > supply.max => format!(
                    "cannot fit even at the maximum size {}: needs {n} nodes",
                    supply.max
                ),
                (Ok(_), Some(n)) => {
                    asking.push((job.id, n));
                    "counted in the demand".into()
                }
            };
            status.pending.push(PendingJob {
                id: job.id,
                nodes,
                verdict,
            });
        }
        let demand = asking.iter().map(|&(_, n)| n).sum();
        status.demand = demand;
        Picture {
            counted: supply.expected.len() as u32,
            free: status.free.len() as u32,
            demand,
            asking,
        }
    }

    fn grow(
        &mut self,
        supply: &Supply,
        picture: &Picture,
        planner: &PlannerConfig,
        now: f64,
        status: &mut AutoscaleStatus,
    ) -> Decision {
        let Picture {
            counted,
            free,
            demand,
            ..
        } = *picture;
        let wanted = counted + (demand - free);
        let target = wanted.min(supply.max);
        let current = supply.desired.unwrap_or(0).max(counted);
        let jobs = describe_jobs(&picture.asking);
        let need = format!("{demand} node(s) pending for {jobs}, {free} free");
        if target <= current {
            return hold(
                status,
                &format!("{need}: growth to {current} already asked, waiting for ranks to start"),
            );
        }
        if let Some(until) = cooling_until(self.last_retire_at, planner.cooldown, now) {
            status.wake_at = Some(until);
            return hold(
                status,
                &format!("{need}: cooldown after retiring until t={until}"),
            );
        }
        let added: u32 = self.recent_growth.iter().map(|&(_, n)| n).sum();
        let allowance = self.config.max_grow_per_minute.saturating_sub(added);
        if allowance == 0 {
            status.wake_at = self
                .recent_growth
                .first()
                .map(|&(at, _)| at + GROWTH_WINDOW);
            return hold(
                status,
                &format!(
                    "{need}: max-grow-per-minute {} reached",
                    self.config.max_grow_per_minute
                ),
            );
        }
        let size = target.min(current + allowance);
        let mut limits = Vec::new();
        if wanted > supply.max {
            limits.push(format!("capped at the maximum size {}", supply.max));
        }
        if size < target {
            limits.push(format!(
                "max-grow-per-minute {}",
                self.config.max_grow_per_minute
            ));
        }
        let limits = if limits.is_empty() {
            String::new()
        } else {
            format!(" ({})", limits.join(", "))
        };
        let why = format!(
            "autoscale: grow to {size} for {jobs}: {demand} node(s) pending, {free} free{limits}"
        );
        self.recent_growth.push((now, size - current));
        self.last_grow_at = Some(now);
        status.last_grow = Some(Taken {
            at: now,
            what: why.clone(),
        });
        status.decision = why.clone();
        Decision::Grow { size, why }
    }

    fn retire(
        &mut self,
        picture: &Picture,
        planner: &PlannerConfig,
        now: f64,
        status: &mut AutoscaleStatus,
    ) -> Decision {
        let timeout = self.config.idle_timeout;
        // Free ranks beyond what pending jobs are about to take.
        let spare = picture.free - picture.demand;
        let room = picture.counted.saturating_sub(planner.min_size);
        let retirable: Vec<(u32, f64)> = self
            .idle_since
            .iter()
            .rev()
            .filter(|&(&k, _)| k != 0 && !planner.protect.contains(k))
            .map(|(&k, &since)| (k, since))
            .collect();
        let due: Vec<u32> = retirable
            .iter()
            .filter(|&&(_, since)| now - since >= timeout)
            .map(|&(k, _)| k)
            .collect();
        let count = spare.min(room) as usize;
        let victims: IdSet = due.iter().copied().take(count).collect();
        if victims.is_empty() {
            let due: IdSet = due.into_iter().collect();
            let why = if room == 0 {
                format!("at min-size {}", planner.min_size)
            } else if !due.is_empty() {
                format!("ranks {due} idle, kept for the pending jobs")
            } else {
                status.wake_at = (spare > 0)
                    .then(|| retirable.iter().map(|&(_, since)| since + timeout))
                    .and_then(|times| times.min_by(f64::total_cmp));
                format!("no rank idle for {timeout}s")
            };
            return hold(status, &format!("{}; {why}", demand_summary(picture)));
        }
        if let Some(until) = cooling_until(self.last_grow_at, planner.cooldown, now) {
            status.wake_at = Some(until);
            return hold(
                status,
                &format!("ranks {victims} idle: cooldown after growing until t={until}"),
            );
        }
        let what = format!(
            "autoscale: retire ranks {victims}, idle for over {timeout}s ({} left, min-size {})",
            picture.counted - victims.len() as u32,
            planner.min_size
        );
        self.last_retire_at = Some(now);
        status.last_retire = Some(Taken {
            at: now,
            what: what.clone(),
        });
        status.decision = what;
        Decision::Retire {
            ranks: victims,
            reason: reasons::autoscale_idle(timeout),
        }
    }
}

fn hold(status: &mut AutoscaleStatus, why: &str) -> Decision {
    status.decision = why.to_owned();
    Decision::Hold
}

/// When a cooldown started at `last` ends, if it has not yet.
fn cooling_until(last: Option<f64>, cooldown: f64, now: f64) -> Option<f64> {
    last.map(|at| at + cooldown).filter(|&until| now < until)
}

fn demand_summary(picture: &Picture) -> String {
    match picture.demand {
        0 => "no pending job".to_owned(),
        demand => format!(
            "{demand} node(s) pending for {} fit on {} free rank(s)",
            describe_jobs(&picture.asking),
            picture.free
        ),
    }
}

/// `ƒA (4 nodes), ƒB (1 node) and 2 more jobs`.
fn describe_jobs(asking: &[(JobId, u32)]) -> String {
    let mut text = asking
        .iter()
        .take(JOBS_NAMED)
        .map(|(id, n)| format!("{id} ({n} node{})", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ");
    if asking.len() > JOBS_NAMED {
        text.push_str(&format!(" and {} more jobs", asking.len() - JOBS_NAMED));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::queue::JobJournalResponse;

    fn queue(payloads: &[String]) -> QueueView {
        let mut view = QueueView::new();
        for payload in payloads
            .iter()
            .map(String::as_str)
            .chain([r#"{"id":-1,"events":[]}"#])
        {
            view.apply(&JobJournalResponse::parse(payload).unwrap())
                .unwrap();
        }
        view
    }

    fn pending_job(id: u64, nodes: u32) -> String {
        format!(
            r#"{{"id":{id},"events":[{{"timestamp":1.0,"name":"priority","context":{{"priority":16}}}}],"jobspec":{{"resources":[{{"type":"node","count":{nodes}}}]}}}}"#
        )
    }

    fn running_job(id: u64, ranks: &str) -> String {
        format!(
            r#"{{"id":{id},"events":[{{"timestamp":1.0,"name":"priority","context":{{"priority":16}}}},{{"timestamp":1.0,"name":"alloc"}}],"R":{{"version":1,"execution":{{"R_lite":[{{"rank":"{ranks}"}}]}}}}}}"#
        )
    }

    fn supply(expected: &str, up: &str, max: u32) -> Supply {
        Supply {
            expected: expected.parse().unwrap(),
            up: up.parse().unwrap(),
            max,
            desired: None,
        }
    }

    fn planner() -> PlannerConfig {
        PlannerConfig {
            min_size: 2,
            cooldown: 30.0,
            ..PlannerConfig::default()
        }
    }

    #[test]
    fn a_job_too_big_for_the_live_ranks_grows_by_what_it_lacks() {
        let mut auto = Autoscaler::new(AutoscaleConfig::default());
        let queue = queue(&[pending_job(1000, 4)]);
        let decision = auto.decide(&queue, Some(&supply("0-1", "0-1", 10)), &planner(), 0.0);
        let Decision::Grow { size, why } = decision else {
            panic!("{decision:?}")
        };
        assert_eq!(size, 4);
        assert!(
            why.contains("ƒJF (4 nodes)") && why.contains("2 free"),
            "{why}"
        );
        assert_eq!(auto.status().pending[0].nodes, Some(4));
    }

    #[test]
    fn no_growth_while_the_asked_growth_is_on_its_way() {
        let mut auto = Autoscaler::new(AutoscaleConfig::default());
        let queue = queue(&[pending_job(1, 4)]);
        let mut asked = supply("0-1", "0-1", 10);
        asked.desired = Some(4);
        assert_eq!(
            auto.decide(&queue, Some(&asked), &planner(), 0.0),
            Decision::Hold
        );
        let starting = supply("0-3", "0-1", 10);
        assert_eq!(
            auto.decide(&queue, Some(&starting), &planner(), 1.0),
            Decision::Hold
        );
        assert!(
            auto.status().decision.contains("4 free"),
            "{:?}",
            auto.status()
        );
    }

    #[test]
    fn a_job_beyond_the_maximum_size_is_reported_not_grown_for() {
        let mut auto = Autoscaler::new(AutoscaleConfig::default());
        let queue = queue(&[pending_job(1, 12)]);
        let decision = auto.decide(&queue, Some(&supply("0-1", "0-1", 10)), &planner(), 0.0);
        assert_eq!(decision, Decision::Hold);
        let verdict = &auto.status().pending[0].verdict;
        assert!(
            verdict.contains("cannot fit even at the maximum size 10"),
            "{verdict}"
        );
    }

    #[test]
    fn growth_is_capped_by_maximum_size_and_rate() {
        let config = AutoscaleConfig {
            max_grow_per_minute: 3,
            ..AutoscaleConfig::default()
        };
        let mut auto = Autoscaler::new(config);
        let queue = queue(&[pending_job(1, 6), pending_job(2, 6)]);
        let decision = auto.decide(&queue, Some(&supply("0-1", "0-1", 10)), &planner(), 0.0);
        let Decision::Grow { size, why } = decision else {
            panic!("{decision:?}")
        };
        assert_eq!(size, 5, "2 live + 3 per minute");
        assert!(why.contains("capped at the maximum size 10"), "{why}");
        assert!(why.contains("max-grow-per-minute 3"), "{why}");
        let mut grown = supply("0-4", "0-1", 10);
        grown.desired = Some(5);
        assert_eq!(
            auto.decide(&queue, Some(&grown), &planner(), 10.0),
            Decision::Hold
        );
        assert_eq!(auto.status().wake_at, Some(60.0));
        let decision = auto.decide(&queue, Some(&grown), &planner(), 60.5);
        assert!(
            matches!(decision, Decision::Grow { size: 8, .. }),
            "{decision:?}"
        );
    }

    #[test]
    fn idle_ranks_retire_highest_first_down_to_min_size_after_the_timeout() {
        let mut auto = Autoscaler::new(AutoscaleConfig {
            idle_timeout: 100.0,
            ..AutoscaleConfig::default()
        });
        let queue = queue(&[running_job(1, "1")]);
        let live = supply("0-4", "0-4", 10);
        assert_eq!(
            auto.decide(&queue, Some(&live), &planner(), 0.0),
            Decision::Hold
        );
        assert_eq!(auto.status().wake_at, Some(100.0));
        let decision = auto.decide(&queue, Some(&live), &planner(), 100.0);
        let Decision::Retire { ranks, reason } = decision else {
            panic!("{decision:?}")
        };
        // Five live, min-size 2: three go; rank 1 runs a job, rank 0 never goes.
        assert_eq!(ranks.to_string(), "2-4");
        assert_eq!(reason, "fluxk8s: autoscale: idle for over 100s");
        let at_min = supply("0-1", "0-1", 10);
        let empty = queue_with_nothing();
        assert_eq!(
            auto.decide(&empty, Some(&at_min), &planner(), 300.0),
            Decision::Hold
        );
        assert!(
            auto.status().decision.contains("at min-size 2"),
            "{:?}",
            auto.status()
        );
    }

    fn queue_with_nothing() -> QueueView {
        queue(&[])
    }

    #[test]
    fn idle_ranks_are_kept_for_pending_jobs_that_fit() {
        let mut auto = Autoscaler::new(AutoscaleConfig {
            idle_timeout: 10.0,
            ..AutoscaleConfig::default()
        });
        let live = supply("0-4", "0-4", 10);
        let empty = queue_with_nothing();
        auto.decide(&empty, Some(&live), &planner(), 0.0);
        let waiting = queue(&[pending_job(1, 5)]);
        assert_eq!(
            auto.decide(&waiting, Some(&live), &planner(), 50.0),
            Decision::Hold
        );
        assert!(
            auto.status().decision.contains("kept for the pending jobs"),
            "{:?}",
            auto.status()
        );
    }

    #[test]
    fn cooldown_separates_a_grow_from_a_retire() {
        let mut auto = Autoscaler::new(AutoscaleConfig {
            idle_timeout: 5.0,
            ..AutoscaleConfig::default()
        });
        let big = queue(&[pending_job(1, 4)]);
        assert!(matches!(
            auto.decide(&big, Some(&supply("0-1", "0-1", 10)), &planner(), 0.0),
            Decision::Grow { .. }
        ));
        let empty = queue_with_nothing();
        let grown = supply("0-3", "0-3", 10);
        auto.decide(&empty, Some(&grown), &planner(), 1.0);
        assert_eq!(
            auto.decide(&empty, Some(&grown), &planner(), 20.0),
            Decision::Hold
        );
        assert_eq!(auto.status().wake_at, Some(30.0));
        assert!(matches!(
            auto.decide(&empty, Some(&grown), &planner(), 30.0),
            Decision::Retire { .. }
        ));
    }

    #[test]
    fn nothing_is_decided_before_both_views_and_the_queue_are_synced() {
        let mut auto = Autoscaler::new(AutoscaleConfig::default());
        let unsynced = QueueView::new();
        let live = supply("0-1", "0-1", 10);
        assert_eq!(
            auto.decide(&unsynced, Some(&live), &planner(), 0.0),
            Decision::Hold
        );
        assert!(auto.status().decision.contains("job queue"));
        let queue = queue(&[pending_job(1, 4)]);
        assert_eq!(auto.decide(&queue, None, &planner(), 0.0), Decision::Hold);
        assert!(auto.status().decision.contains("views to sync"));
    }

    #[test]
    fn a_preview_reports_the_growth_without_taking_it() {
        let mut auto = Autoscaler::new(AutoscaleConfig::default());
        let queue = queue(&[pending_job(1, 4)]);
        let live = supply("0-1", "0-1", 10);
        auto.preview(&queue, &live, &planner(), 0.0);
        let status = auto.status();
        assert!(
            status
                .decision
                .starts_with("Kubernetes view not synced; would: autoscale: grow to 4"),
            "{status:?}"
        );
        assert_eq!(status.last_grow, None);
        assert_eq!(status.pending[0].nodes, Some(4));
        // Nothing was recorded: once synced, the growth is decided for real.
        assert!(matches!(
            auto.decide(&queue, Some(&live), &planner(), 1.0),
            Decision::Grow { size: 4, .. }
        ));
    }

    #[test]
    fn many_jobs_are_named_then_counted() {
        let asking: Vec<(JobId, u32)> = (0..5).map(|i| (JobId(i), 1)).collect();
        assert_eq!(
            describe_jobs(&asking),
            "ƒ1 (1 node), ƒ2 (1 node), ƒ3 (1 node) and 2 more jobs"
        );
    }
}
