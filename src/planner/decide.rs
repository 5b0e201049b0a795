//! One pass of every policy over a scene: the actions to issue, a typed [`Verdict`] per
//! rank and the [`Hold`]s that keep actions back. No words: [`super::words`] writes them
//! when a status asks.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::SizeLimit;
use super::rank_map::RankMap;
use super::reasons::{self, DrainKind};
use super::reconciler::Reconciler;
use super::scene::{Finished, Rank, Scene, ascending};
use super::verdict::{GrowthHold, Hold, Leaving, Quiet, ShrinkHold, SizeChange, Verdict};
use crate::model::{Action, FluxAction, IdSet, KubeAction};

/// A broker that comes back this many times after a clean shutdown has a pod that
/// restarts it (its container does not end with the broker): stop trying.
pub(super) const MAX_SHUTDOWNS: u32 = 3;

/// What one pass decided, for `plan` to record and `status` to put into words.
pub(super) struct Decisions {
    pub actions: Vec<Planned>,
    /// Every rank's verdict, when the pass explains.
    pub verdicts: RankMap<Verdict>,
    pub holds: Vec<Hold>,
    pub limits: Vec<SizeLimit>,
    /// Moves were left for the next pass: plan again right away.
    pub more_now: bool,
    /// Refused actions this pass asked for again, and held.
    pub refused_again: Vec<Action>,
}

/// An action with the bookkeeping its issue implies.
#[derive(Debug, PartialEq)]
pub(super) struct Planned {
    pub action: Action,
    pub effect: Effect,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Effect {
    None,
    /// Counts against the rate limit.
    Move,
    /// A size raise: starts the cooldown before any shrink.
    Grow,
    /// Drains ranks that never came online: counts failures, backs growth off.
    StartupTimeout(IdSet),
}

/// What a pass of the policies is for. Both pass the quiet ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// The actions, and what holds them.
    Act,
    /// Also every rank's verdict (the quiet ones' from the scene's totals) and the limits
    /// on the size, for a status.
    Explain,
    /// [`Pass::Explain`], reading every rank: what debug builds check the others against.
    #[cfg(debug_assertions)]
    Every,
}

/// How the size changes next, if growth is wanted.
#[derive(Debug, Default)]
struct Growth {
    /// Lower first to this size, so trailing retired indexes can run again.
    lower_to: Option<u32>,
    raise_to: Option<u32>,
    /// Our drains on indexes about to run again.
    undrain: IdSet,
}

impl Reconciler {
    /// One pass of every policy over the scene. Pure: `plan` records the result.
    pub(super) fn decide(&self, scene: &Scene<'_>, pass: Pass, now: f64) -> Decisions {
        let decisions = self.decide_once(scene, pass, now);
        #[cfg(debug_assertions)]
        {
            let every = self.decide_once(scene, Pass::Every, now);
            fn acts(d: &Decisions) -> (&[Planned], &[Hold], bool, &[Action]) {
                (&d.actions, &d.holds, d.more_now, &d.refused_again)
            }
            assert_eq!(
                acts(&decisions),
                acts(&every),
                "passing quiet ranks by acts alike"
            );
            if pass == Pass::Explain {
                assert_eq!(
                    (&decisions.verdicts, &decisions.limits),
                    (&every.verdicts, &every.limits),
                    "the quiet ranks' kept verdicts read as the ranks"
                );
            }
        }
        decisions
    }

    fn decide_once(&self, scene: &Scene<'_>, pass: Pass, now: f64) -> Decisions {
        let mut holds = Vec::new();
        // The verdicts of the ranks read, when the pass explains: runs, as thousands of
        // ranks leaving together read alike.
        let mut verdicts = RankMap::default();
        // By reason: the ranks drained plainly, and those whose drain is overwritten.
        let mut drains: BTreeMap<String, [IdSet; 2]> = BTreeMap::new();
        // Made once: a storm of lost or late ranks shares them, and a shrink retires
        // thousands above the size at once (by why the index does not run).
        let lost_reason = reasons::pod_lost();
        let never_online_reason = reasons::never_online(self.config.startup_timeout);
        let [above_size, completed, failed] =
            [None, Some(Finished::Completed), Some(Finished::Failed)].map(|finished| {
                reasons::still_retired(finished.map_or("above size", Finished::words))
            });
        let mut timed_out = IdSet::new();
        let mut undrain = IdSet::new();
        let mut removals: Vec<Action> = Vec::new();
        // Retiring ranks kept drained, by why: one hold each.
        let mut kept: Vec<(Leaving, IdSet)> = Vec::new();

        let mut waiting_since = self.waiting_since.ascending();
        let mut retiring = ascending(&self.retiring);
        let growth = self.growth(scene, now, &mut holds);
        let growing_to = growth.raise_to.or(self.issued.size()).unwrap_or(0);
        // Another writer's size is not lowered either: retiring ranks leave in place.
        let base = if scene.frozen.is_some() || self.size_set_by.is_some() {
            scene.size
        } else {
            self.lowering_base(scene, now)
        };
        if let Some(target) = self.desired
            && scene.counted() > target
        {
            let why = if scene.frozen.is_some() {
                Some(ShrinkHold::Frozen)
            } else if self.cooling_after(self.last_grow, now) {
                Some(ShrinkHold::CooldownAfterGrow)
            } else if !scene.occupancy.known() {
                Some(ShrinkHold::OccupancyUnknown)
            } else {
                None
            };
            holds.extend(why.map(|why| Hold::Shrink { target, why }));
        }

        let read = match pass {
            #[cfg(debug_assertions)]
            Pass::Every => scene
                .max
                .checked_sub(1)
                .map_or_else(IdSet::new, |last| IdSet::range(0, last)),
            Pass::Act | Pass::Explain => {
                let timeout = self.config.startup_timeout;
                let timed_out = self
                    .waiting_since
                    .ranks_where(|since| now - since >= timeout);
                scene.totals.eventful.union(&timed_out)
            }
        };
        for rank in read.iter().map(|k| &scene.ranks[k as usize]) {
            let k = rank.k;
            let verdict = if k == 0 {
                Verdict::Leader
            } else if !rank.active {
                // Restart recovery: a retired rank whose fluxk8s drain was lost.
                let retired_by_us =
                    rank.finished.is_some() || (rank.ever_online && k >= growing_to);
                if rank.drain.is_none() && retired_by_us {
                    let reason = match rank.finished {
                        None => &above_size,
                        Some(Finished::Completed) => &completed,
                        Some(Finished::Failed) => &failed,
                    };
                    add_drain(&mut drains, reason, rank);
                }
                rank.retired()
            } else if rank.retire {
                let leaving =
                    self.retire_step(scene, rank, base, now, &mut |action| removals.push(action));
                if let Some(reason) = retiring(k)
                    && rank.drain.is_none()
                {
                    add_drain(&mut drains, reason, rank);
                }
                if leaving.kept() {
                    match kept.iter_mut().find(|(why, _)| *why == leaving) {
                        Some((_, ranks)) => {
                            ranks.insert(k);
                        }
                        None => kept.push((leaving, IdSet::range(k, k))),
                    }
                }
                Verdict::Leaving(leaving)
            } else {
                match rank.drain {
                    Some(DrainKind::OursLost) if rank.online && !rank.down() => {
                        undrain.insert(k);
                        Verdict::BackOnline
                    }
                    Some(DrainKind::OursObserved) if rank.online && !rank.down() => {
                        undrain.insert(k);
                        Verdict::BackAboveSize
                    }
                    Some(DrainKind::OursLost) => Verdict::LostDrained,
                    Some(DrainKind::Admin | DrainKind::OursRetire) => Verdict::Protected,
                    None if rank.online && !rank.down() => Verdict::Up,
                    None | Some(DrainKind::OursObserved) if rank.down() => {
                        add_drain(&mut drains, &lost_reason, rank);
                        Verdict::LostDraining
                    }
                    None | Some(DrainKind::OursObserved) => {
                        let since = waiting_since(k).unwrap_or(now);
                        if now - since >= self.config.startup_timeout {
                            add_drain(&mut drains, &never_online_reason, rank);
                            timed_out.insert(k);
                            Verdict::NeverOnline
                        } else {
                            Verdict::Starting { since }
                        }
                    }
                }
            };
            if pass != Pass::Act {
                verdicts.push(k, verdict);
            }
        }

        holds.extend(
            kept.into_iter()
                .map(|(why, ranks)| Hold::Kept { ranks, why }),
        );
        let mut actions = Vec::new();
        let mut refused_again = Vec::new();
        // A rank whose last drain or undrain is unanswered waits for the answer; the next
        // pass corrects it with one request if it is still wanted.
        let unanswered = &scene.in_flight.unanswered;
        let mut held = IdSet::new();
        let mut hold_unanswered = |ids: IdSet| {
            let busy = ids.intersection(unanswered);
            if busy.is_empty() {
                return ids;
            }
            held = held.union(&busy);
            ids.difference(&busy)
        };
        let mut unless_refused = |planned: Planned, actions: &mut Vec<Planned>| {
            if self.issued.is_refused(&planned.action) {
                refused_again.push(planned.action);
            } else {
                actions.push(planned);
            }
        };
        let drains = drains
            .into_iter()
            .flat_map(|(reason, [plain, overwritten])| {
                [(reason.clone(), false, plain), (reason, true, overwritten)]
            });
        for (reason, overwrite, ids) in drains {
            let ids = hold_unanswered(ids);
            if ids.is_empty() {
                continue;
            }
            let effect = if reason == never_online_reason {
                Effect::StartupTimeout(timed_out.intersection(&ids))
            } else {
                Effect::None
            };
            let action = Action::Flux(FluxAction::Drain {
                ranks: ids,
                reason,
                overwrite,
            });
            unless_refused(Planned { action, effect }, &mut actions);
        }
        let undrain = hold_unanswered(undrain.union(&growth.undrain));
        if !undrain.is_empty() {
            let action = Action::Flux(FluxAction::Undrain { ranks: undrain });
            let effect = Effect::None;
            unless_refused(Planned { action, effect }, &mut actions);
        }
        if !held.is_empty() {
            holds.push(Hold::DrainStateInFlight { ranks: held });
        }
        let lower_for_retirement = (base < scene.size.min(scene.max)
            && scene.ranks[base as usize..scene.size.min(scene.max) as usize]
                .iter()
                .any(|r| r.retire))
        .then_some(base);
        let size_change = match (growth.lower_to, growth.raise_to, lower_for_retirement) {
            (Some(size), _, _) => Some((size, SizeChange::Recycle, Effect::Move)),
            (None, Some(size), _) => Some((size, SizeChange::Grow, Effect::Grow)),
            (None, None, Some(size)) => Some((size, SizeChange::RetireHighest, Effect::Move)),
            (None, None, None) => None,
        };
        let mut moves: Vec<Planned> = removals
            .into_iter()
            .map(|action| Planned {
                action,
                effect: Effect::Move,
            })
            .collect();
        if let Some((size, why, effect)) = size_change {
            if let Some(in_flight) = self.issued.size() {
                holds.push(Hold::SizeInFlight {
                    size,
                    why,
                    in_flight,
                });
            } else {
                moves.push(Planned {
                    action: Action::Kube(KubeAction::SetSize {
                        size,
                        reason: format!("fluxk8s: {}", self.size_change_words(why)),
                        desired: self.unrecorded_desired(scene.kube),
                    }),
                    effect,
                });
            }
        }
        let mut budget = self.rate.budget(self.config.max_actions_per_minute);
        for planned in moves {
            if scene.in_flight.has_move(&planned.action) {
                continue;
            }
            if self.issued.is_refused(&planned.action) {
                refused_again.push(planned.action);
            } else if budget.admit() {
                actions.push(planned);
            }
        }
        if budget.held_by_rate > 0 {
            holds.push(Hold::RateLimit {
                per_minute: budget.per_minute,
                held: budget.held_by_rate,
            });
        }
        if budget.next_pass > 0 {
            holds.push(Hold::NextPass {
                moves: budget.next_pass,
            });
        }
        let limits = match self.desired {
            Some(target) if pass != Pass::Act => {
                let (reachable, limits) = self.capacity(scene, now);
                if reachable < target {
                    limits
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        };
        if pass == Pass::Explain {
            verdicts = self.verdict_runs(scene, &verdicts, now);
        }
        Decisions {
            actions,
            verdicts,
            holds,
            limits,
            more_now: budget.next_pass > 0,
            refused_again,
        }
    }

    /// Every rank's verdict: those of the ranks a pass read from `read`, the quiet
    /// ranks' as the scene's totals keep them (a starting one's with since when it waits).
    /// Steps along runs, not ranks.
    fn verdict_runs(
        &self,
        scene: &Scene<'_>,
        read: &RankMap<Verdict>,
        now: f64,
    ) -> RankMap<Verdict> {
        let mut runs = RankMap::default();
        // Ranks `from..=to`, as read, or as `quiet` where not read.
        let mut put = |from: u32, to: u32, quiet: Option<Verdict>| {
            for (from, to, verdict) in read.pieces(from, to) {
                if let Some(verdict) = verdict.or(quiet) {
                    runs.push_run(from, to, verdict);
                }
            }
        };
        let Some(last) = scene.max.checked_sub(1) else {
            return RankMap::default();
        };
        for (from, to, quiet) in scene.totals.quiet.pieces(0, last) {
            match quiet {
                // Eventful ranks: every one was read.
                None => put(from, to, None),
                Some(Quiet::Is(verdict)) => put(from, to, Some(verdict)),
                Some(Quiet::Starting) => {
                    for (from, to, since) in self.waiting_since.pieces(from, to) {
                        let since = since.unwrap_or(now);
                        put(from, to, Some(Verdict::Starting { since }));
                    }
                }
            }
        }
        runs
    }

    /// Where a retiring rank is on its way out, and the removal to issue if it can go now.
    fn retire_step(
        &self,
        scene: &Scene<'_>,
        rank: &Rank,
        base: u32,
        now: f64,
        remove: &mut dyn FnMut(Action),
    ) -> Leaving {
        let k = rank.k;
        if !rank.flux_drained {
            return Leaving::Draining;
        }
        if !self.ready(rank, now) {
            if !scene.occupancy.known() {
                return Leaving::WaitingForJobManager;
            }
            return Leaving::Busy;
        }
        if k >= base {
            return Leaving::SizeLowered { base };
        }
        if scene.frozen.is_some() {
            return Leaving::Frozen;
        }
        // A clean exit 0 completes the index whatever the Job's failure policy (the Flux
        // Operator's worker loop ends on exit 0), and lets the broker run rc3.
        let shutdowns = self.shutdowns.get(&k).copied().unwrap_or(0);
        if rank.online {
            if shutdowns >= MAX_SHUTDOWNS {
                return Leaving::KeptRestarted { shutdowns };
            }
            remove(Action::Flux(FluxAction::Shutdown { rank: k }));
            return Leaving::ShutdownSent;
        }
        if shutdowns > 0 && rank.has_live_pod {
            return Leaving::PodCompleting;
        }
        let per_index_zero = scene.kube.job.backoff_limit_per_index == Some(0);
        match scene.kube.live_pod(k) {
            Some(pod) if per_index_zero => {
                remove(Action::Kube(KubeAction::DeletePod {
                    index: k,
                    pod: pod.name.clone(),
                    uid: pod.uid.clone(),
                    reason: "fluxk8s: retire drained rank (index fails for good)".into(),
                }));
                Leaving::DeletingPod
            }
            Some(_) => Leaving::KeptNoWayOut,
            None => Leaving::IndexFinishing,
        }
    }

    /// A retiring rank may go: Flux has drained it and it is idle (or past the grace).
    fn ready(&self, rank: &Rank, now: f64) -> bool {
        let grace_over = || match (self.config.drain_grace, self.busy_since.get(&rank.k)) {
            (Some(grace), Some(since)) => now >= since + grace,
            _ => false,
        };
        rank.flux_drained && (!rank.busy || grace_over())
    }

    /// The size to lower to so that every index above it is one that should not run:
    /// 1 + the highest index that must stay.
    fn lowering_base(&self, scene: &Scene<'_>, now: f64) -> u32 {
        let top = scene.size.min(scene.max);
        (0..top)
            .rev()
            .find(|&k| {
                let rank = &scene.ranks[k as usize];
                k == 0 || (rank.active && !(rank.retire && self.ready(rank, now)))
            })
            .map_or(1, |k| k + 1)
    }

    /// Indexes at or above `base` worth starting: those nobody else has drained.
    fn usable_from(&self, scene: &Scene<'_>, base: u32) -> IdSet {
        if base >= scene.max {
            return IdSet::new();
        }
        IdSet::range(base, scene.max - 1).difference(&scene.totals.drained_by_others)
    }

    /// How many live ranks the instance can reach, and what stops it reaching more.
    pub(super) fn capacity(&self, scene: &Scene<'_>, now: f64) -> (u32, Vec<SizeLimit>) {
        let base = self.lowering_base(scene, now);
        let usable = self.usable_from(scene, base);
        let reachable = scene.counted() + usable.len() as u32;
        let mut limits = Vec::new();
        // Below the base, an index that does not count now never will.
        let below_base = IdSet::range(1, base.saturating_sub(1));
        let holes = scene.totals.uncounted.intersection(&below_base);
        if !holes.is_empty() {
            limits.push(SizeLimit::CannotComeBack { ranks: holes });
        }
        let drained = IdSet::range(base, scene.max.saturating_sub(1)).difference(&usable);
        if base < scene.max && !drained.is_empty() {
            limits.push(SizeLimit::DrainedByOthers { ranks: drained });
        }
        (reachable, limits)
    }

    /// Picks the ranks a shrink retires: not running first, then idle ones, highest first,
    /// then busy ones only if there are not enough, those whose jobs end soonest first;
    /// never rank 0 or a protected rank. Waits while the job-manager has not said which
    /// ranks run jobs: an unknown rank is never taken for idle.
    pub(super) fn choose_victims(&mut self, scene: &mut Scene<'_>, now: f64) {
        let Some(target) = self.desired else { return };
        let counted = scene.counted();
        if counted <= target
            || scene.frozen.is_some()
            || self.cooling_after(self.last_grow, now)
            || !scene.occupancy.known()
        {
            return;
        }
        let needed = (counted - target) as usize;
        let occupancy = scene.occupancy;
        let mut candidates: Vec<&mut Rank> = scene
            .ranks
            .to_mut()
            .iter_mut()
            .filter(|r| r.counted && r.k != 0 && !r.protected)
            .collect();
        candidates.sort_by_key(|r| (r.online && !r.down(), r.busy, Reverse(r.k)));
        let free = candidates.iter().take_while(|r| !r.busy).count();
        if free < needed {
            // Busy ranks by when their last job's time limit ends (none: last).
            let ends = occupancy.last_to_end();
            let end = |k: u32| ends.get(&k).and_then(|a| a.expiration);
            candidates[free..].sort_by(|a, b| {
                let (a, b) = (
                    end(a.k).unwrap_or(f64::INFINITY),
                    end(b.k).unwrap_or(f64::INFINITY),
                );
                a.total_cmp(&b)
            });
        }
        candidates.truncate(needed);
        if candidates.is_empty() {
            return;
        }
        let reason: Arc<str> = reasons::resize(target).into();
        // Victims are only chosen while nothing is frozen, and a retiring rank does not
        // count as lost: the scene's `frozen` stays as it is. Its totals follow.
        let totals = &mut scene.totals;
        let mut chosen: Vec<(u32, Arc<str>)> = candidates
            .into_iter()
            .map(|victim| {
                let before = victim.clone();
                victim.retire = true;
                victim.counted = false;
                totals.replace(&before, victim);
                (victim.k, Arc::clone(&reason))
            })
            .collect();
        // One ordered build, not an insert per victim: a shrink from 10,000 chooses
        // thousands. No victim is retiring already (candidates are counted ranks).
        chosen.sort_unstable_by_key(|&(k, _)| k);
        let retiring = std::mem::take(&mut self.retiring);
        self.retiring = retiring.into_iter().chain(chosen).collect();
        self.last_shrink = Some(now);
    }

    pub(super) fn cooling_after(&self, last: Option<f64>, now: f64) -> bool {
        last.is_some_and(|t| now < t + self.config.cooldown)
    }

    /// The next growth step toward the desired size, or why there is none.
    fn growth(&self, scene: &Scene<'_>, now: f64, holds: &mut Vec<Hold>) -> Growth {
        let Some(target) = self.desired else {
            return Growth::default();
        };
        let need = target.saturating_sub(scene.counted());
        if need == 0 {
            return Growth::default();
        }
        let mut hold = |why: GrowthHold| {
            holds.push(Hold::Growth { need, why });
            Growth::default()
        };
        if now < self.growth_blocked_until {
            return hold(GrowthHold::BackingOff {
                failures: self.startup_failures,
                until: self.growth_blocked_until,
            });
        }
        if self.cooling_after(self.last_shrink, now) {
            return hold(GrowthHold::CooldownAfterShrink);
        }
        if let Some(writer) = &self.size_set_by {
            return hold(GrowthHold::OthersSize {
                manager: writer.manager.clone(),
                size: writer.size,
            });
        }
        if let Some(size) = self.issued.size() {
            return hold(GrowthHold::SizeInFlight { size });
        }
        if !scene.settled_at(scene.size) {
            return hold(GrowthHold::JobNotAt { size: scene.size });
        }
        // Lowering kills the retiring pods above the base, so not while frozen.
        let base = if scene.frozen.is_some() {
            scene.size
        } else {
            self.lowering_base(scene, now)
        };
        let chosen: Vec<u32> = self
            .usable_from(scene, base)
            .iter()
            .take(need as usize)
            .collect();
        let Some(&last) = chosen.last() else {
            return hold(GrowthHold::NoIndexLeft);
        };
        if base < scene.size {
            return Growth {
                lower_to: Some(base),
                ..Growth::default()
            };
        }
        let raise_to = last + 1;
        let undrain = (scene.size..raise_to)
            .filter(|&k| {
                scene.ranks[k as usize]
                    .drain
                    .is_some_and(|d| d != DrainKind::Admin)
            })
            .collect();
        Growth {
            lower_to: None,
            raise_to: Some(raise_to),
            undrain,
        }
    }
}

/// Adds `rank` to the drain for `reason`, copying the reason only for its first rank. A
/// rank held by our record of a retirement we only saw has that record overwritten
/// (`update` would leave it, and the rank would be drained again every pass).
fn add_drain(drains: &mut BTreeMap<String, [IdSet; 2]>, reason: &str, rank: &Rank) {
    let overwrite = usize::from(rank.drain == Some(DrainKind::OursObserved));
    match drains.get_mut(reason) {
        Some(sets) => {
            sets[overwrite].insert(rank.k);
        }
        None => {
            let mut sets = [IdSet::new(), IdSet::new()];
            sets[overwrite].insert(rank.k);
            drains.insert(reason.to_owned(), sets);
        }
    }
}
