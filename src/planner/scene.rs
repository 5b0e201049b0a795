//! Both views reduced to what the policies need, one [`Rank`] per rank with the actions
//! in flight folded in; and what the reconciler notes from each scene.

use std::borrow::{Borrow, Cow};

use super::pending::InFlight;
use super::rank_map::RankMap;
use super::reasons::{DrainKind, DrainKinds};
use super::reconciler::Reconciler;
use super::verdict::{DrainedBy, Quiet, Verdict};
use crate::model::flux::RankState;
use crate::model::queue::Occupancy;
use crate::model::{FluxView, IdSet, KubeView};

/// What is known of one rank, with actions in flight folded in.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Rank {
    pub k: u32,
    /// Below the size and not completed/failed: Kubernetes runs (or recreates) a pod.
    pub active: bool,
    /// Why the index does not run, when it is below the size.
    pub finished: Option<Finished>,
    pub online: bool,
    pub ever_online: bool,
    /// The overlay saw its connection drop.
    pub lost: bool,
    pub seen_up: bool,
    pub busy: bool,
    /// The drain as it will be once pending drains/undrains land.
    pub drain: Option<DrainKind>,
    /// Flux has the drain now (the scheduler stopped using the rank).
    pub flux_drained: bool,
    pub protected: bool,
    /// Should be removed: drained (not for a lost pod) or chosen, and removable.
    pub retire: bool,
    /// Expected to run: active and not on its way out.
    pub counted: bool,
    /// Its index has a live pod (the view's pod index finds it)...
    pub has_live_pod: bool,
    /// ...and that pod runs.
    pub live_pod_runs: bool,
}

/// Why an index below the size does not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finished {
    Completed,
    Failed,
}

/// Why removals are suspended: more ranks lost at once than `max-lost-fraction` allows,
/// which looks like an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frozen {
    pub lost: usize,
    pub active: usize,
}

/// Both views, reduced to what the policies need.
#[derive(Clone)]
pub(super) struct Scene<'a> {
    pub kube: &'a KubeView,
    /// The size asked of Kubernetes.
    pub size: u32,
    /// The most ranks there can be: broker size and MiniCluster `maxSize`.
    pub max: u32,
    /// The last plan's, read in place by a status when no rank changed since.
    pub ranks: Cow<'a, [Rank]>,
    /// What the passes read of every rank at once, kept as the ranks change.
    pub totals: Totals,
    /// The ranks made again when the scene was patched from the last plan's (`None`: made
    /// in full): only those can show anything new.
    pub remade: Option<IdSet>,
    pub frozen: Option<Frozen>,
    pub in_flight: InFlight,
    /// Which ranks run jobs, and until when.
    pub occupancy: &'a Occupancy,
}

/// The value of each rank asked, from entries sorted by rank, for ranks asked in ascending
/// order: a pass over the ranks steps along the entries once instead of searching them per
/// rank.
pub(super) fn ascending<K: Borrow<u32>, V: Copy>(
    entries: impl IntoIterator<Item = (K, V)>,
) -> impl FnMut(u32) -> Option<V> {
    let mut rest = entries.into_iter().peekable();
    move |k| {
        while rest.next_if(|(first, _)| *first.borrow() < k).is_some() {}
        rest.peek()
            .filter(|(first, _)| *first.borrow() == k)
            .map(|&(_, v)| v)
    }
}

/// What the passes of the policies count or collect over every rank, kept beside the
/// ranks: a scene patched where a few ranks changed patches these too, instead of a pass
/// over 10,000 entries for each.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Totals {
    /// Active ranks, and those of them lost: what [`Reconciler::frozen`] weighs.
    active: usize,
    lost: usize,
    counted: usize,
    /// Ranks not expected to run: below the lowering base, holes that cannot come back.
    pub uncounted: IdSet,
    /// Ranks someone else drained: not worth starting.
    pub drained_by_others: IdSet,
    /// Ranks a pass that only acts must read: every other one is [`Rank::quiet`]...
    pub eventful: IdSet,
    /// ...and has its verdict here.
    pub quiet: RankMap<Quiet>,
}

impl Totals {
    pub fn of(ranks: &[Rank]) -> Totals {
        let mut totals = Totals::default();
        ranks.iter().for_each(|rank| totals.add(rank));
        totals
    }

    /// Adds a rank above those added so far.
    fn add(&mut self, rank: &Rank) {
        if let Some(quiet) = self.count(rank, true) {
            self.quiet.push(rank.k, quiet);
        }
    }

    /// `old`, an entry these totals hold, is now `new` (the same rank).
    pub fn replace(&mut self, old: &Rank, new: &Rank) {
        if old != new {
            self.count(old, false);
            let quiet = self.count(new, true);
            self.quiet.set(new.k, quiet);
        }
    }

    /// Adds `rank` to the counts and sets, or takes it out; returns its quiet verdict.
    fn count(&mut self, rank: &Rank, add: bool) -> Option<Quiet> {
        let step = |n: &mut usize| *n = if add { *n + 1 } else { *n - 1 };
        let mark = |set: &mut IdSet| {
            if add {
                set.insert(rank.k);
            } else {
                set.remove(rank.k);
            }
        };
        if rank.active {
            step(&mut self.active);
            if rank.k != 0 && rank.down() && !rank.retire {
                step(&mut self.lost);
            }
        }
        if rank.counted {
            step(&mut self.counted);
        } else {
            mark(&mut self.uncounted);
        }
        if rank.drain == Some(DrainKind::Admin) {
            mark(&mut self.drained_by_others);
        }
        let quiet = rank.quiet();
        if quiet.is_none() {
            mark(&mut self.eventful);
        }
        quiet
    }
}

impl Rank {
    /// Was seen up while active and is gone (lost, or offline).
    pub fn down(&self) -> bool {
        self.seen_up && (self.lost || !self.online)
    }

    /// Its verdict, when that follows from its entry alone and asks for nothing, whatever
    /// the rest of the scene: a pass of the policies that only acts passes it by, and a
    /// status reads it from the scene's totals. A starting rank is quiet until its
    /// start-up timeout, which the passes find by the waiting times.
    pub fn quiet(&self) -> Option<Quiet> {
        if self.k == 0 {
            return Some(Quiet::Is(Verdict::Leader));
        }
        if !self.active {
            // One that ran and has no drain may be ours, retired, with its drain lost.
            let quiet = self.drain.is_some() || (self.finished.is_none() && !self.ever_online);
            return quiet.then_some(Quiet::Is(self.retired()));
        }
        if self.retire {
            return None;
        }
        let up = self.online && !self.down();
        match self.drain {
            Some(DrainKind::Admin | DrainKind::OursRetire) => Some(Quiet::Is(Verdict::Protected)),
            Some(DrainKind::OursLost | DrainKind::OursObserved) if up => None,
            None if up => Some(Quiet::Is(Verdict::Up)),
            Some(DrainKind::OursLost) => Some(Quiet::Is(Verdict::LostDrained)),
            None | Some(DrainKind::OursObserved) => (!self.down()).then_some(Quiet::Starting),
        }
    }

    /// The verdict of a rank whose index does not run.
    pub fn retired(&self) -> Verdict {
        let drained = match self.drain {
            None => None,
            Some(DrainKind::Admin) => Some(DrainedBy::Others),
            Some(_) => Some(DrainedBy::Fluxk8s),
        };
        Verdict::Retired {
            finished: self.finished,
            drained,
        }
    }
}

impl Scene<'_> {
    pub fn counted(&self) -> u32 {
        self.totals.counted as u32
    }

    /// Kubernetes has applied the size it was asked, and truncated its index lists.
    pub fn settled_at(&self, size: u32) -> bool {
        settled_at(self.kube, size)
    }
}

/// The most ranks there can be: broker size and MiniCluster `maxSize`.
fn max_ranks(flux: &FluxView, kube: &KubeView) -> u32 {
    kube.minicluster
        .as_ref()
        .map_or(flux.size(), |mc| mc.max_size.min(flux.size()))
}

/// What every rank's entry reads beside its own Flux state and live pod (and the drains
/// in flight): while it stays as it was, a plan makes again only the ranks that changed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Basis {
    size: u32,
    max: u32,
    completed: IdSet,
    failed: IdSet,
    protect: IdSet,
    /// `None`: which ranks run jobs is not known, and any may.
    busy: Option<IdSet>,
    /// Counts the retire requests taken: each names ranks to retire.
    retire_requests: u64,
}

impl Basis {
    fn of(reconciler: &Reconciler, flux: &FluxView, kube: &KubeView) -> Basis {
        let occupancy = flux.occupancy();
        Basis {
            size: kube.requested_size(),
            max: max_ranks(flux, kube),
            completed: kube.job.completed_indexes.clone(),
            failed: kube.job.failed_indexes.clone(),
            protect: reconciler.config.protect.clone(),
            busy: occupancy.known().then(|| occupancy.busy().clone()),
            retire_requests: reconciler.retire_requests,
        }
    }
}

/// The ranks of the last plan's scene, what they were made on, and the drains that were
/// in flight then.
#[derive(Debug, Clone, Default)]
pub(super) struct KeptScene {
    ranks: Vec<Rank>,
    totals: Totals,
    in_flight: Option<InFlight>,
    basis: Option<Basis>,
}

/// Kubernetes has applied `size`, and truncated its index lists.
pub(super) fn settled_at(kube: &KubeView, size: u32) -> bool {
    let job = &kube.job;
    kube.requested_size() == size
        && job.completions == size
        && job.parallelism == size
        && kube.finished_indexes().last().is_none_or(|k| k < size)
}

impl Reconciler {
    /// Every rank's entry, made into `ranks` (emptied first: its room is used again), and
    /// their totals.
    fn every_rank(
        &self,
        flux: &FluxView,
        kube: &KubeView,
        in_flight: &InFlight,
        mut ranks: Vec<Rank>,
    ) -> (Vec<Rank>, Totals) {
        let max = max_ranks(flux, kube);
        ranks.clear();
        ranks.reserve(max as usize);
        let mut totals = Totals::default();
        self.make_ranks(flux, kube, in_flight, 0..max, |rank| {
            totals.add(&rank);
            ranks.push(rank);
        });
        (ranks, totals)
    }

    /// The scene a plan starts from: the last plan's ranks with those in `changed` made
    /// again, when what every rank reads is as it was then; else every rank. `changed`
    /// (`None`: not known) names the ranks whose Flux state or live pod changed since.
    pub(super) fn scene_since<'a>(
        &mut self,
        flux: &'a FluxView,
        kube: &'a KubeView,
        changed: Option<&IdSet>,
    ) -> (Scene<'a>, Basis) {
        let basis = Basis::of(self, flux, kube);
        let in_flight = self.issued.in_flight();
        let holds = self.kept_holds(&basis, &in_flight);
        let kept = std::mem::take(&mut self.kept);
        let (ranks, totals, remade) = match changed {
            Some(changed) if holds => {
                let (mut ranks, mut totals) = (kept.ranks, kept.totals);
                let remade = self.patch(flux, kube, &in_flight, changed, &mut ranks, &mut totals);
                (ranks, totals, Some(remade))
            }
            _ => {
                let (ranks, totals) = self.every_rank(flux, kube, &in_flight, kept.ranks);
                (ranks, totals, None)
            }
        };
        let mut scene = self.scene_of(flux, kube, Cow::Owned(ranks), totals, in_flight);
        scene.remade = remade;
        (scene, basis)
    }

    /// Runs `body` on a scene read outside a plan (by a status, a request): the last
    /// plan's with the ranks in `changed` since made again, if nothing else every rank
    /// reads changed since (`None`: not known); else every rank. A changed scene is made
    /// in the room kept for such scenes; an unchanged one is read in place.
    pub(super) fn with_scene<R>(
        &self,
        flux: &FluxView,
        kube: &KubeView,
        changed: Option<&IdSet>,
        body: impl FnOnce(&Scene<'_>) -> R,
    ) -> R {
        let in_flight = self.issued.in_flight();
        let (ranks, totals) = match changed {
            Some(changed) if self.kept_holds(&Basis::of(self, flux, kube), &in_flight) => {
                let mut totals = self.kept.totals.clone();
                if changed.is_empty() {
                    (Cow::Borrowed(&self.kept.ranks[..]), totals)
                } else {
                    let mut ranks = self.scene_room.take();
                    ranks.clone_from(&self.kept.ranks);
                    self.patch(flux, kube, &in_flight, changed, &mut ranks, &mut totals);
                    (Cow::Owned(ranks), totals)
                }
            }
            _ => {
                let room = self.scene_room.take();
                let (ranks, totals) = self.every_rank(flux, kube, &in_flight, room);
                (Cow::Owned(ranks), totals)
            }
        };
        let scene = self.scene_of(flux, kube, ranks, totals, in_flight);
        let result = body(&scene);
        if let Cow::Owned(room) = scene.ranks {
            self.scene_room.replace(room);
        }
        result
    }

    /// Makes again the ranks of `changed` in a kept scene's `ranks`, keeping `totals`
    /// theirs. Returns the ranks made again.
    fn patch(
        &self,
        flux: &FluxView,
        kube: &KubeView,
        in_flight: &InFlight,
        changed: &IdSet,
        ranks: &mut [Rank],
        totals: &mut Totals,
    ) -> IdSet {
        let max = max_ranks(flux, kube);
        let remade: IdSet = changed.iter().take_while(|&k| k < max).collect();
        self.make_ranks(flux, kube, in_flight, remade.iter(), |rank| {
            let k = rank.k as usize;
            totals.replace(&ranks[k], &rank);
            ranks[k] = rank;
        });
        debug_assert_eq!(
            ranks,
            self.every_rank(flux, kube, in_flight, Vec::new()).0,
            "a scene patched for ranks {changed} reads as one made anew"
        );
        remade
    }

    /// The kept ranks were made on `basis`, with the drains in flight as `in_flight` has
    /// them.
    fn kept_holds(&self, basis: &Basis, in_flight: &InFlight) -> bool {
        self.kept.basis.as_ref() == Some(basis)
            && self
                .kept
                .in_flight
                .as_ref()
                .is_some_and(|kept| kept.drains_like(in_flight))
    }

    /// Keeps a plan's scene (after observe and the choice of victims, which the
    /// reconciler's own records follow) for the next plan to patch.
    pub(super) fn keep_scene(&mut self, scene: Scene<'_>, basis: Basis) {
        self.kept = KeptScene {
            ranks: scene.ranks.into_owned(),
            totals: scene.totals,
            in_flight: Some(scene.in_flight),
            basis: Some(basis),
        };
    }

    fn scene_of<'a>(
        &self,
        flux: &'a FluxView,
        kube: &'a KubeView,
        ranks: Cow<'a, [Rank]>,
        totals: Totals,
        in_flight: InFlight,
    ) -> Scene<'a> {
        debug_assert_eq!(totals, Totals::of(&ranks), "the totals are the ranks'");
        Scene {
            kube,
            size: kube.requested_size(),
            max: max_ranks(flux, kube),
            ranks,
            frozen: self.frozen(&totals),
            totals,
            remade: None,
            in_flight,
            occupancy: flux.occupancy(),
        }
    }

    /// Makes the entry of each rank of `ranks` (ascending) and hands it to `put`.
    fn make_ranks(
        &self,
        flux: &FluxView,
        kube: &KubeView,
        in_flight: &InFlight,
        ranks: impl Iterator<Item = u32>,
        mut put: impl FnMut(Rank),
    ) {
        let size = kube.requested_size();
        let pods = kube.pod_index();
        let unknown = RankState::default();
        let mut retiring = ascending(&self.retiring);
        let (mut seen_up, mut completed, mut failed, mut protect, mut busy) = (
            self.seen_up.ascending(),
            kube.job.completed_indexes.ascending(),
            kube.job.failed_indexes.ascending(),
            self.config.protect.ascending(),
            flux.occupancy().may_be_busy(),
        );
        let mut kinds = DrainKinds::default();
        for k in ranks {
            let state = flux.rank(k).unwrap_or(&unknown);
            let finished = if k >= size {
                None
            } else if completed.contains(k) {
                Some(Finished::Completed)
            } else if failed.contains(k) {
                Some(Finished::Failed)
            } else {
                None
            };
            let active = k < size && finished.is_none();
            let drain = in_flight.intended_drain(k, state.drain.as_ref().map(|d| kinds.of(d)));
            let protected = protect.contains(k);
            let retire = active
                && k != 0
                && !protected
                && (matches!(drain, Some(DrainKind::Admin | DrainKind::OursRetire))
                    || retiring(k).is_some());
            let live_pod = pods.live(k);
            put(Rank {
                k,
                active,
                finished,
                online: state.online,
                ever_online: state.ever_online,
                lost: state.lost,
                seen_up: seen_up.contains(k),
                busy: busy(k),
                flux_drained: state.drain.is_some(),
                counted: active
                    && !retire
                    && matches!(
                        drain,
                        None | Some(DrainKind::OursLost | DrainKind::OursObserved)
                    ),
                drain,
                protected,
                retire,
                has_live_pod: live_pod.is_some(),
                live_pod_runs: live_pod.is_some_and(|pod| pod.running),
            });
        }
    }

    /// Whether removals are suspended: too many ranks lost at once looks like an outage.
    fn frozen(&self, &Totals { lost, active, .. }: &Totals) -> Option<Frozen> {
        (active > 0 && lost as f64 > self.config.max_lost_fraction * active as f64)
            .then_some(Frozen { lost, active })
    }

    /// Records what the scene shows: ranks seen up, ranks waiting to start, retiring ranks
    /// that are busy; the scene then reflects the ranks seen up. A patched scene shows
    /// nothing new but in the ranks made again, and only those are read.
    pub(super) fn observe(&mut self, scene: &mut Scene<'_>, now: f64) {
        #[cfg(debug_assertions)]
        let whole = scene.remade.is_some().then(|| {
            let (mut reconciler, mut scene) = (self.clone(), scene.clone());
            scene.remade = None;
            reconciler.observe(&mut scene, now);
            (reconciler, scene)
        });
        match scene.remade.take() {
            Some(remade) => self.observe_ranks(scene, &remade, now),
            None => self.observe_every_rank(scene, now),
        }
        scene.frozen = self.frozen(&scene.totals);
        #[cfg(debug_assertions)]
        if let Some((reconciler, whole)) = whole {
            let noted = |r: &Reconciler| {
                (
                    r.seen_up.clone(),
                    r.waiting_since.clone(),
                    r.startup_failures,
                    r.startup_failed.clone(),
                    r.busy_since.clone(),
                    r.retiring.clone(),
                    r.shutdowns.clone(),
                )
            };
            assert_eq!(
                noted(self),
                noted(&reconciler),
                "observing ranks notes as all"
            );
            assert_eq!((&scene.ranks, &scene.totals), (&whole.ranks, &whole.totals));
        }
    }

    fn observe_every_rank(&mut self, scene: &mut Scene<'_>, now: f64) {
        let was_waiting = std::mem::take(&mut self.waiting_since);
        let mut was_waiting_since = was_waiting.ascending();
        let mut waiting = RankMap::default();
        let mut totals = Totals::default();
        for rank in scene.ranks.to_mut() {
            if let Some(since) = self.observe_rank(rank, was_waiting_since(rank.k), now) {
                waiting.push(rank.k, since);
            }
            totals.add(rank);
        }
        // What no longer applies is dropped by walking each map once, not by a search per
        // rank: after a shrink, thousands of ranks stop being active in one pass.
        let ranks = &scene.ranks;
        let kept = |k: u32, keep: fn(&Rank) -> bool| ranks.get(k as usize).is_none_or(keep);
        self.busy_since.retain(|&k, _| kept(k, retiring_busy));
        self.retiring.retain(|&k, _| kept(k, |r| r.active));
        self.shutdowns.retain(|&k, _| kept(k, |r| r.active));
        self.waiting_since = waiting;
        scene.totals = totals;
    }

    /// [`Self::observe_every_rank`] for the ranks in `remade`: for the others, what was
    /// noted at the last plan still holds.
    fn observe_ranks(&mut self, scene: &mut Scene<'_>, remade: &IdSet, now: f64) {
        for k in remade.iter() {
            let rank = &mut scene.ranks.to_mut()[k as usize];
            let before = rank.clone();
            let since = self.observe_rank(rank, self.waiting_since.get(k), now);
            self.waiting_since.set(k, since);
            scene.totals.replace(&before, rank);
            if !retiring_busy(rank) {
                self.busy_since.remove(&k);
            }
            if !rank.active {
                self.retiring.remove(&k);
                self.shutdowns.remove(&k);
            }
        }
    }

    /// Notes what one rank's entry shows (`was_waiting`: since when it waited to start at
    /// the last plan), and returns since when it waits to start now, if it does.
    fn observe_rank(&mut self, rank: &mut Rank, was_waiting: Option<f64>, now: f64) -> Option<f64> {
        let k = rank.k;
        // The broker must be its running pod's: after a size lowered and raised again,
        // the old pod's broker may still be online beside a new pod that is pending, and
        // its end is not a lost pod.
        let runs_in_live_pod = rank.live_pod_runs;
        // `rank.seen_up` is still what the set held when the entry was made: the set
        // changes only for ranks that change, not with a look-up per rank each pass.
        rank.seen_up = if rank.active && rank.online && !rank.down() && runs_in_live_pod {
            if !rank.seen_up {
                self.seen_up.insert(k);
            }
            true
        } else if !rank.active {
            if rank.seen_up {
                self.seen_up.remove(k);
            }
            false
        } else {
            rank.seen_up
        };
        let starting = rank.active
            && k != 0
            && !rank.online
            && !rank.seen_up
            && matches!(rank.drain, None | Some(DrainKind::OursObserved));
        if was_waiting.is_some() && !starting && rank.online {
            self.startup_failures = 0;
        }
        // The emptiness check keeps a pass over 10,000 quiet ranks from paying a look-up
        // per rank in a (mostly empty) set.
        if (rank.online || !rank.active) && !self.startup_failed.is_empty() {
            self.startup_failed.remove(k);
        }
        if retiring_busy(rank) {
            self.busy_since.entry(k).or_insert(now);
        }
        starting.then(|| was_waiting.unwrap_or(now))
    }
}

/// A retiring rank that runs jobs: its drain grace runs.
fn retiring_busy(rank: &Rank) -> bool {
    rank.retire && rank.busy
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::ascending;

    #[test]
    fn a_map_answers_ascending_ranks_by_stepping() {
        let map = BTreeMap::from([(2, "a"), (3, "b"), (7, "c")]);
        let mut entry = ascending(&map);
        let asked: Vec<Option<&&str>> = [0, 2, 3, 5, 7, 7, 9].into_iter().map(&mut entry).collect();
        assert_eq!(
            asked,
            [
                None,
                Some(&"a"),
                Some(&"b"),
                None,
                Some(&"c"),
                Some(&"c"),
                None
            ]
        );
        assert_eq!(ascending(&BTreeMap::<u32, ()>::new())(0), None);
    }
}
