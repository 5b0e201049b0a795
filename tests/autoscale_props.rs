//! Properties of the autoscaling policy over random job histories in a small simulated
//! world: jobs arrive and finish, a FIFO scheduler places them on up ranks, grown ranks
//! come up after a delay, retired ranks leave. The world keeps its own books (free
//! ranks, pending demand, since when each rank is idle) to judge every decision.

use std::collections::BTreeMap;

use fluxk8s::model::IdSet;
use fluxk8s::model::queue::{JobJournalResponse, QueueView};
use fluxk8s::planner::{AutoscaleConfig, Autoscaler, Decision, PlannerConfig, Supply};
use proptest::prelude::*;

const MAX: u32 = 8;
/// Seconds a grown rank takes to come online.
const START_DELAY: f64 = 5.0;
const IDLE_TIMEOUT: f64 = 60.0;
const COOLDOWN: f64 = 40.0;
const GROW_PER_MINUTE: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A job needing this many nodes, running this long once placed.
    Submit {
        nodes: u32,
        runtime: f64,
    },
    Wait(f64),
}

struct Job {
    nodes: u32,
    runtime: f64,
    ranks: IdSet,
    ends_at: Option<f64>,
}

struct World {
    now: f64,
    up: IdSet,
    /// Grown ranks and when they come online.
    starting: BTreeMap<u32, f64>,
    desired: Option<u32>,
    jobs: BTreeMap<u64, Job>,
    next_id: u64,
    queue: QueueView,
    /// Since when each up rank has held no job, by the world's own account.
    idle_since: BTreeMap<u32, f64>,
    planner: PlannerConfig,
    auto: Autoscaler,
    /// Every decision taken: when, and whether it grew (else retired).
    moves: Vec<(f64, bool)>,
    /// Ranks added by each grow.
    growth: Vec<(f64, u32)>,
}

impl World {
    fn new(live: u32, min_size: u32, protect: IdSet) -> World {
        let mut queue = QueueView::new();
        feed(&mut queue, r#"{"id":-1,"events":[]}"#.to_owned());
        let up: IdSet = (0..live).collect();
        World {
            now: 0.0,
            idle_since: up.iter().map(|k| (k, 0.0)).collect(),
            up,
            starting: BTreeMap::new(),
            desired: None,
            jobs: BTreeMap::new(),
            next_id: 1,
            queue,
            planner: PlannerConfig {
                min_size,
                protect,
                cooldown: COOLDOWN,
                ..PlannerConfig::default()
            },
            auto: Autoscaler::new(AutoscaleConfig {
                idle_timeout: IDLE_TIMEOUT,
                max_grow_per_minute: GROW_PER_MINUTE,
            }),
            moves: Vec::new(),
            growth: Vec::new(),
        }
    }

    fn expected(&self) -> IdSet {
        self.up.union(&self.starting.keys().copied().collect())
    }

    fn allocated(&self) -> IdSet {
        self.jobs
            .values()
            .fold(IdSet::new(), |all, j| all.union(&j.ranks))
    }

    fn submit(&mut self, nodes: u32, runtime: f64) {
        let id = self.next_id;
        self.next_id += 1;
        self.jobs.insert(
            id,
            Job {
                nodes,
                runtime,
                ranks: IdSet::new(),
                ends_at: None,
            },
        );
        let t = self.now;
        feed(
            &mut self.queue,
            format!(
                r#"{{"id":{id},"events":[{{"timestamp":{t},"name":"submit"}},{{"timestamp":{t},"name":"priority","context":{{"priority":16}}}}],"jobspec":{{"resources":[{{"type":"node","count":{nodes}}}]}}}}"#
            ),
        );
    }

    /// Lets time pass to `until`: ranks come up, jobs end, the scheduler places jobs.
    fn advance(&mut self, until: f64) {
        self.now = until;
        let now = self.now;
        let ready: Vec<u32> = self
            .starting
            .iter()
            .filter(|&(_, &at)| at <= now)
            .map(|(&k, _)| k)
            .collect();
        for k in ready {
            self.starting.remove(&k);
            self.up.insert(k);
            self.idle_since.insert(k, now);
        }
        let ended: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.ends_at.is_some_and(|t| t <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in ended {
            let job = self.jobs.remove(&id).expect("listed");
            for k in job.ranks.iter() {
                self.idle_since.insert(k, now);
            }
            for name in ["free", "clean"] {
                feed(
                    &mut self.queue,
                    format!(r#"{{"id":{id},"events":[{{"timestamp":{now},"name":"{name}"}}]}}"#),
                );
            }
        }
        // FIFO: a job that does not fit holds back the ones behind it, except one that
        // could never fit (left pending here, so autoscaling sees it).
        let ids: Vec<u64> = self.jobs.keys().copied().collect();
        for id in ids {
            if self.jobs[&id].ends_at.is_some() {
                continue;
            }
            let free = self.up.difference(&self.allocated());
            let nodes = self.jobs[&id].nodes;
            if nodes > MAX {
                continue;
            }
            if (free.len() as u32) < nodes {
                break;
            }
            let ranks: IdSet = free.iter().take(nodes as usize).collect();
            for k in ranks.iter() {
                self.idle_since.remove(&k);
            }
            feed(
                &mut self.queue,
                format!(
                    r#"{{"id":{id},"events":[{{"timestamp":{now},"name":"alloc"}}],"R":{{"version":1,"execution":{{"R_lite":[{{"rank":"{ranks}","children":{{"core":"0"}}}}]}}}}}}"#
                ),
            );
            let job = self.jobs.get_mut(&id).expect("listed");
            job.ends_at = Some(now + job.runtime);
            job.ranks = ranks;
        }
    }

    fn supply(&self) -> Supply {
        Supply {
            expected: self.expected(),
            up: self.up.clone(),
            max: MAX,
            desired: self.desired,
        }
    }

    /// One decision, judged against the world's books, then carried out.
    fn decide(&mut self) -> Result<(), String> {
        let supply = self.supply();
        let allocated = self.allocated();
        let decision = self
            .auto
            .decide(&self.queue, Some(&supply), &self.planner, self.now);
        let counted = supply.expected.len() as u32;
        match decision {
            Decision::Hold => Ok(()),
            Decision::Grow { size, why } => {
                let demand: u32 = self
                    .jobs
                    .values()
                    .filter(|j| j.ranks.is_empty() && j.nodes <= MAX)
                    .map(|j| j.nodes)
                    .sum();
                let free = supply.expected.difference(&allocated).len() as u32;
                let current = supply.desired.unwrap_or(0).max(counted);
                if demand <= free {
                    return Err(format!("grew to {size} with {demand} pending, {free} free"));
                }
                if size > MAX || size <= current || size - current > demand - free {
                    return Err(format!(
                        "grew from {current} to {size}: pending work needs {} more ({why})",
                        demand - free
                    ));
                }
                self.growth.push((self.now, size - current));
                let window: u32 = self
                    .growth
                    .iter()
                    .filter(|&&(t, _)| t > self.now - 60.0)
                    .map(|&(_, n)| n)
                    .sum();
                if window > GROW_PER_MINUTE {
                    return Err(format!("{window} ranks added within a minute"));
                }
                self.moves.push((self.now, true));
                let mut adding = size.saturating_sub(counted);
                for k in 1..MAX {
                    if adding == 0 {
                        break;
                    }
                    if !self.expected().contains(k) {
                        self.starting.insert(k, self.now + START_DELAY);
                        adding -= 1;
                    }
                }
                self.desired = Some(size);
                Ok(())
            }
            Decision::Retire { ranks, reason } => {
                if !reason.starts_with("fluxk8s: autoscale") {
                    return Err(format!("drain reason {reason:?}"));
                }
                let busy = ranks.intersection(&allocated);
                if !busy.is_empty() {
                    return Err(format!("retired busy ranks {busy}"));
                }
                if ranks.contains(0) || !ranks.intersection(&self.planner.protect).is_empty() {
                    return Err(format!("retired rank 0 or a protected rank: {ranks}"));
                }
                if !ranks.difference(&self.up).is_empty() {
                    return Err(format!("retired ranks {ranks} not all up"));
                }
                if counted - (ranks.len() as u32) < self.planner.min_size {
                    return Err(format!("retiring {ranks} goes below min-size"));
                }
                for k in ranks.iter() {
                    let since = self.idle_since.get(&k).copied().unwrap_or(f64::INFINITY);
                    if self.now - since < IDLE_TIMEOUT {
                        return Err(format!("rank {k} retired after {}s idle", self.now - since));
                    }
                }
                self.moves.push((self.now, false));
                for k in ranks.iter() {
                    self.up.remove(k);
                    self.idle_since.remove(&k);
                }
                self.desired = self.desired.map(|d| {
                    d.saturating_sub(ranks.len() as u32)
                        .max(self.planner.min_size)
                });
                Ok(())
            }
        }
    }

    fn run(&mut self, ops: &[Op]) -> Result<(), String> {
        for op in ops {
            match op {
                Op::Submit { nodes, runtime } => self.submit(*nodes, *runtime),
                Op::Wait(seconds) => {
                    // Decide at every second, as the engine does at every event or wake-up.
                    let until = self.now + seconds;
                    while self.now + 1.0 <= until {
                        self.advance(self.now + 1.0);
                        self.decide()?;
                    }
                    continue;
                }
            }
            self.advance(self.now);
            self.decide()?;
        }
        self.check_no_flapping()
    }

    /// Opposite moves are at least the cooldown apart.
    fn check_no_flapping(&self) -> Result<(), String> {
        for pair in self.moves.windows(2) {
            let ((t1, grew1), (t2, grew2)) = (pair[0], pair[1]);
            if grew1 != grew2 && t2 - t1 < COOLDOWN {
                return Err(format!("flapped: {pair:?} within the cooldown {COOLDOWN}s"));
            }
        }
        Ok(())
    }
}

fn feed(queue: &mut QueueView, payload: String) {
    let response = JobJournalResponse::parse(&payload).expect("the world writes valid payloads");
    queue
        .apply(&response)
        .expect("the world writes valid events");
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1..=MAX + 3, 1.0..300.0f64).prop_map(|(nodes, runtime)| Op::Submit { nodes, runtime }),
        3 => (1.0..120.0f64).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Growth never exceeds what pending work lacks (nor the maximum, nor the rate);
    /// retirement takes only up, jobless ranks idle past the timeout, never rank 0 or a
    /// protected one, never below min-size; opposite moves are a cooldown apart.
    #[test]
    fn decisions_follow_the_queue_and_never_touch_busy_ranks(
        live in 1..=4u32,
        min_size in 1..=3u32,
        protect in proptest::collection::btree_set(1..MAX, 0..2),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut world = World::new(live, min_size, protect.into_iter().collect());
        if let Err(violation) = world.run(&ops) {
            prop_assert!(false, "{violation}");
        }
    }

    /// A load that comes and goes at every period makes no move against the last one
    /// within the cooldown, whatever the period.
    #[test]
    fn an_alternating_load_does_not_flap(
        period in 5.0..150.0f64,
        nodes in 2..=MAX,
        cycles in 3..12usize,
    ) {
        let mut world = World::new(2, 2, IdSet::new());
        let ops: Vec<Op> = (0..cycles)
            .flat_map(|_| [Op::Submit { nodes, runtime: period / 2.0 }, Op::Wait(period)])
            .collect();
        if let Err(violation) = world.run(&ops) {
            prop_assert!(false, "{violation}");
        }
        // The load was served: it grew at least once when a job needed more ranks.
        prop_assert!(nodes <= 2 || world.moves.iter().any(|&(_, grew)| grew));
    }
}
