//! Both views reduced to what the policies need, one [`Rank`] per rank with the actions
//! in flight folded in; and what the reconciler notes from each scene.

use std::borrow::Borrow;

use super::pending::InFlight;
use super::reasons::{DrainKind, DrainKinds};
use super::reconciler::Reconciler;
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
pub(super) struct Scene<'a> {
    pub kube: &'a KubeView,
    /// The size asked of Kubernetes.
    pub size: u32,
    /// The most ranks there can be: broker size and MiniCluster `maxSize`.
    pub max: u32,
    pub ranks: Vec<Rank>,
    pub frozen: Option<Frozen>,
    pub in_flight: InFlight,
    /// Which ranks run jobs, and until when.
    pub occupancy: &'a Occupancy,
}

/// A time per rank (when an active rank was first expected up), kept in rank order as
/// runs of neighbours with the same time: the ranks of one grow start waiting together,
/// so 10,000 starting ranks are one run, and the passes over the ranks step along a few
/// runs instead of 10,000 entries.
#[derive(Debug, Clone, Default)]
pub(super) struct RankTimes(Vec<(u32, u32, f64)>);

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

impl RankTimes {
    pub fn times(&self) -> impl Iterator<Item = f64> + '_ {
        self.0.iter().map(|&(_, _, t)| t)
    }

    /// Adds rank `k`, waiting since `since`; ranks are added in ascending order.
    pub fn push(&mut self, k: u32, since: f64) {
        match self.0.last_mut() {
            Some((_, hi, t)) if *hi + 1 == k && *t == since => *hi = k,
            _ => self.0.push((k, k, since)),
        }
    }

    /// The time of each rank asked, for ranks asked in ascending order.
    pub fn ascending(&self) -> impl FnMut(u32) -> Option<f64> + '_ {
        let mut rest = self.0.iter().peekable();
        move |k| {
            while rest.next_if(|&&(_, hi, _)| hi < k).is_some() {}
            rest.peek()
                .filter(|&&&(lo, _, _)| lo <= k)
                .map(|&&(_, _, t)| t)
        }
    }
}

/// Active ranks, and those of them lost, counted as a pass makes them: what
/// [`Reconciler::frozen`] weighs, without passes of its own.
#[derive(Debug, Default, Clone, Copy)]
struct LossTally {
    lost: usize,
    active: usize,
}

impl LossTally {
    fn count(&mut self, rank: &Rank) {
        if rank.active {
            self.active += 1;
            if rank.k != 0 && rank.down() && !rank.retire {
                self.lost += 1;
            }
        }
    }
}

impl Rank {
    /// Was seen up while active and is gone (lost, or offline).
    pub fn down(&self) -> bool {
        self.seen_up && (self.lost || !self.online)
    }
}

impl Scene<'_> {
    pub fn counted(&self) -> u32 {
        self.ranks.iter().filter(|r| r.counted).count() as u32
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
    /// Every rank made from the views.
    pub(super) fn scene<'a>(&self, flux: &'a FluxView, kube: &'a KubeView) -> Scene<'a> {
        let in_flight = self.issued.in_flight();
        let ranks = self.every_rank(flux, kube, &in_flight, Vec::new());
        self.scene_of(flux, kube, ranks, in_flight)
    }

    /// Every rank's entry, made into `ranks` (emptied first: its room is used again).
    fn every_rank(
        &self,
        flux: &FluxView,
        kube: &KubeView,
        in_flight: &InFlight,
        mut ranks: Vec<Rank>,
    ) -> Vec<Rank> {
        let max = max_ranks(flux, kube);
        ranks.clear();
        ranks.reserve(max as usize);
        self.make_ranks(flux, kube, in_flight, 0..max, |rank| ranks.push(rank));
        ranks
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
        let ranks = match changed {
            Some(changed) if holds => {
                let mut ranks = kept.ranks;
                let patched = changed.iter().take_while(|&k| k < basis.max);
                self.make_ranks(flux, kube, &in_flight, patched, |rank| {
                    let k = rank.k as usize;
                    ranks[k] = rank;
                });
                debug_assert_eq!(
                    ranks,
                    self.scene(flux, kube).ranks,
                    "a scene patched for ranks {changed} reads as one made anew"
                );
                ranks
            }
            _ => self.every_rank(flux, kube, &in_flight, kept.ranks),
        };
        (self.scene_of(flux, kube, ranks, in_flight), basis)
    }

    /// The last plan's scene, for views as that plan saw them, if nothing else every
    /// rank reads changed since: a status just after a plan reads it instead of every
    /// rank.
    pub(super) fn kept_scene<'a>(
        &self,
        flux: &'a FluxView,
        kube: &'a KubeView,
    ) -> Option<Scene<'a>> {
        let in_flight = self.issued.in_flight();
        if !self.kept_holds(&Basis::of(self, flux, kube), &in_flight) {
            return None;
        }
        let scene = self.scene_of(flux, kube, self.kept.ranks.clone(), in_flight);
        debug_assert_eq!(
            scene.ranks,
            self.scene(flux, kube).ranks,
            "the kept scene reads as one made anew"
        );
        Some(scene)
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
            ranks: scene.ranks,
            in_flight: Some(scene.in_flight),
            basis: Some(basis),
        };
    }

    fn scene_of<'a>(
        &self,
        flux: &'a FluxView,
        kube: &'a KubeView,
        ranks: Vec<Rank>,
        in_flight: InFlight,
    ) -> Scene<'a> {
        let mut tally = LossTally::default();
        ranks.iter().for_each(|rank| tally.count(rank));
        Scene {
            kube,
            size: kube.requested_size(),
            max: max_ranks(flux, kube),
            ranks,
            frozen: self.frozen(tally),
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
    fn frozen(&self, LossTally { lost, active }: LossTally) -> Option<Frozen> {
        (active > 0 && lost as f64 > self.config.max_lost_fraction * active as f64)
            .then_some(Frozen { lost, active })
    }

    /// Records what the scene shows: ranks seen up, ranks waiting to start, retiring ranks
    /// that are busy; the scene then reflects the ranks seen up.
    pub(super) fn observe(&mut self, scene: &mut Scene<'_>, now: f64) {
        let was_waiting = std::mem::take(&mut self.waiting_since);
        let mut was_waiting_since = was_waiting.ascending();
        let mut waiting = RankTimes::default();
        let mut tally = LossTally::default();
        for rank in &mut scene.ranks {
            let k = rank.k;
            // The broker must be its running pod's: after a size lowered and raised again,
            // the old pod's broker may still be online beside a new pod that is pending, and
            // its end is not a lost pod.
            let runs_in_live_pod = rank.live_pod_runs;
            // `rank.seen_up` is still what the set held when the scene was made: the set
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
            match (was_waiting_since(k), starting) {
                (since, true) => waiting.push(k, since.unwrap_or(now)),
                (Some(_), false) if rank.online => self.startup_failures = 0,
                _ => {}
            }
            // The emptiness checks keep a pass over 10,000 quiet ranks from paying a look-up
            // per rank in each of the (mostly empty) maps.
            if (rank.online || !rank.active) && !self.startup_failed.is_empty() {
                self.startup_failed.remove(k);
            }
            if rank.retire && rank.busy {
                self.busy_since.entry(k).or_insert(now);
            }
            tally.count(rank);
        }
        // What no longer applies is dropped by walking each map once, not by a search per
        // rank: after a shrink, thousands of ranks stop being active in one pass.
        let ranks = &scene.ranks;
        let kept = |k: u32, keep: fn(&Rank) -> bool| ranks.get(k as usize).is_none_or(keep);
        self.busy_since
            .retain(|&k, _| kept(k, |r| r.retire && r.busy));
        self.retiring.retain(|&k, _| kept(k, |r| r.active));
        self.shutdowns.retain(|&k, _| kept(k, |r| r.active));
        self.waiting_since = waiting;
        scene.frozen = self.frozen(tally);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{RankTimes, ascending};

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

    #[test]
    fn rank_times_keep_neighbours_with_one_time_as_a_run() {
        let mut times = RankTimes::default();
        for (k, t) in [(2, 10.0), (3, 10.0), (4, 11.0), (7, 11.0), (8, 11.0)] {
            times.push(k, t);
        }
        assert_eq!(times.0, [(2, 3, 10.0), (4, 4, 11.0), (7, 8, 11.0)]);
        let mut since = times.ascending();
        let asked: Vec<Option<f64>> = [0, 2, 3, 4, 5, 7, 8, 8, 9]
            .into_iter()
            .map(&mut since)
            .collect();
        assert_eq!(
            asked,
            [
                None,
                Some(10.0),
                Some(10.0),
                Some(11.0),
                None,
                Some(11.0),
                Some(11.0),
                Some(11.0),
                None
            ]
        );
        assert_eq!(times.times().sum::<f64>(), 32.0);
        assert_eq!(RankTimes::default().ascending()(0), None);
    }
}
