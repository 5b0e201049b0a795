//! The reconciler: what it keeps between plans, the requests it takes, and the two ways
//! in: [`Reconciler::plan`] (decide, record) and [`Reconciler::status`] (decide, put into
//! words). The policies are in [`super::decide`], the bookkeeping of actions in
//! [`super::pending`] and [`super::rate`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::autoscale::Supply;
use super::decide::{Effect, Pass, Planned};
use super::follow::Announcement;
use super::pending::Issued;
use super::rank_map::RankMap;
use super::rate::RateLimit;
use super::reasons;
use super::scene::{Frozen, KeptScene, Rank};
use super::status::{PlanStatus, RankRuns, SizeWriter};
use super::verdict::{Hold, Verdict};
use super::{PlannerConfig, RequestError, ResizeAnswer, RetireAnswer, SizeLimit};
use crate::model::{Action, FluxView, IdSet, KubeAction, KubeView, Outcome};

/// Growth backoff after failed starts never exceeds this (seconds).
const MAX_BACKOFF: f64 = 3600.0;

/// Decides actions from the Flux and Kubernetes views. See the module docs of
/// [`crate::planner`] for what it keeps and why.
#[derive(Debug, Clone)]
pub struct Reconciler {
    pub(super) config: PlannerConfig,
    /// The live size asked for; `None` until a request (nothing grows or shrinks).
    pub(super) desired: Option<u32>,
    /// Why the desired size was asked, for the reason of the size raise (autoscale).
    pub(super) grow_reason: Option<String>,
    /// The size the views showed at the last plan, to notice another writer's change.
    pub(super) seen_size: Option<u32>,
    /// Another writer set the desired size: fluxk8s follows it and writes no size.
    pub(super) size_set_by: Option<SizeWriter>,
    /// The desired-size annotation at the last plan (`None` before the first).
    pub(super) seen_annotation: Option<Option<String>>,
    /// What to record as Events: size changes taken over, annotation requests.
    pub(super) announcements: Vec<Announcement>,
    /// Ranks chosen to retire (resize victims, retire requests), with the drain reason to
    /// use. Once drained, the drain itself carries the intent across restarts.
    pub(super) retiring: BTreeMap<u32, Arc<str>>,
    /// Actions pending until the views show them, and those refused.
    pub(super) issued: Issued,
    /// Ranks seen up while their index was active; one that goes down after that was
    /// lost behind our back. Rebuilt from the views after a restart.
    pub(super) seen_up: IdSet,
    /// Active ranks not seen up yet, and when they were first expected.
    pub(super) waiting_since: RankMap<f64>,
    /// Retiring ranks that run jobs, and since when (for `drain_grace`).
    pub(super) busy_since: BTreeMap<u32, f64>,
    /// Ranks already counted as failed starts (so a re-issued drain does not count twice).
    pub(super) startup_failed: IdSet,
    /// Consecutive failed starts, for the growth backoff.
    pub(super) startup_failures: u32,
    pub(super) growth_blocked_until: f64,
    pub(super) last_grow: Option<f64>,
    pub(super) last_shrink: Option<f64>,
    pub(super) rate: RateLimit,
    /// Retiring ranks whose broker was seen to go down after a shutdown, and how often.
    pub(super) shutdowns: BTreeMap<u32, u32>,
    /// When the last plan ran, and whether it left moves for the next pass.
    pub(super) planned_at: f64,
    pub(super) more_now: bool,
    /// Retire requests taken: the scene kept for the next plan holds until another.
    pub(super) retire_requests: u64,
    /// The last plan's scene, for the next plan to patch where ranks changed.
    pub(super) kept: KeptScene,
    /// Where a scene read outside a plan is made, kept between them: a scene made afresh
    /// (200 KB at 10,000 ranks) had its pages faulted in again by many statuses and
    /// requests, as the allocator gives freed room of that size back to the system.
    pub(super) scene_room: RefCell<Vec<Rank>>,
}

/// What a status decides before it is put into words: a scene, one pass of the policies
/// and every rank's verdict as runs. It holds until the views or the reconciler change or
/// a deadline of [`Reconciler::wake_at`] passes, so a caller that tracks those (the
/// engine) can put it into words again and again.
#[derive(Debug)]
pub struct Assessment {
    expected_size: u32,
    kube_size: u32,
    max_size: u32,
    frozen: Option<Frozen>,
    verdicts: RankMap<Verdict>,
    holds: Vec<Hold>,
    limits: Vec<SizeLimit>,
}

fn both_synced<'a>(flux: &FluxView, kube: Option<&'a KubeView>) -> Option<&'a KubeView> {
    kube.filter(|_| flux.synced() && flux.size() > 0)
}

impl Reconciler {
    /// A reconciler with no request yet: it enforces drains but holds the size.
    pub fn new(config: PlannerConfig) -> Self {
        Self {
            config,
            desired: None,
            grow_reason: None,
            seen_size: None,
            size_set_by: None,
            seen_annotation: None,
            announcements: Vec::new(),
            retiring: BTreeMap::new(),
            issued: Issued::default(),
            seen_up: IdSet::new(),
            waiting_since: RankMap::default(),
            busy_since: BTreeMap::new(),
            startup_failed: IdSet::new(),
            startup_failures: 0,
            growth_blocked_until: f64::NEG_INFINITY,
            last_grow: None,
            last_shrink: None,
            rate: RateLimit::default(),
            shutdowns: BTreeMap::new(),
            planned_at: f64::NEG_INFINITY,
            more_now: false,
            retire_requests: 0,
            kept: KeptScene::default(),
            scene_room: RefCell::default(),
        }
    }

    /// When to plan again if no event comes: a pass left moves over (at once), or a
    /// deadline after the last plan ends a rate window, a cooldown, a start-up timeout, a
    /// drain grace, the growth backoff or an action's retry wait. Each deadline passes
    /// once, so an idle instance is never woken.
    pub fn wake_at(&self) -> Option<f64> {
        if self.more_now {
            return Some(self.planned_at);
        }
        let cooldown = self.config.cooldown;
        let grace = self.config.drain_grace;
        [
            self.rate.window_ends(),
            self.last_grow.map(|t| t + cooldown),
            self.last_shrink.map(|t| t + cooldown),
            Some(self.growth_blocked_until),
        ]
        .into_iter()
        .flatten()
        .chain(
            self.waiting_since
                .values()
                .map(|t| t + self.config.startup_timeout),
        )
        .chain(
            grace
                .into_iter()
                .flat_map(|g| self.busy_since.values().map(move |t| t + g)),
        )
        .chain(self.issued.retry_times())
        .filter(|&t| t > self.planned_at)
        .min_by(f64::total_cmp)
    }

    /// The configuration in force.
    pub fn config(&self) -> &PlannerConfig {
        &self.config
    }

    /// Applies new tunables (a configuration reload); requests and actions in flight stay.
    pub fn set_config(&mut self, config: PlannerConfig) {
        self.config = config;
    }

    /// Asks for `n` live ranks. Asking the current target again changes nothing.
    pub fn request_size(
        &mut self,
        n: u32,
        flux: &FluxView,
        kube: Option<&KubeView>,
        now: f64,
    ) -> Result<ResizeAnswer, RequestError> {
        self.request_size_because(n, None, flux, kube, now)
    }

    /// [`Self::request_size`], with why (`None`: a plain request) for the raise's reason.
    pub(crate) fn request_size_because(
        &mut self,
        n: u32,
        why: Option<String>,
        flux: &FluxView,
        kube: Option<&KubeView>,
        now: f64,
    ) -> Result<ResizeAnswer, RequestError> {
        // What is wrong with the request itself is said first, synced or not.
        if n == 0 {
            return Err(RequestError::ZeroSize);
        }
        let kube = both_synced(flux, kube).ok_or(RequestError::NotSynced)?;
        let (target, reachable, limited_by) = self.with_scene(flux, kube, None, |scene| {
            let mut limited_by = Vec::new();
            let mut target = n;
            if target > scene.max {
                target = scene.max;
                limited_by.push(SizeLimit::MaximumSize { max: scene.max });
            }
            if target < self.config.min_size {
                target = self.config.min_size.min(scene.max);
                limited_by.push(SizeLimit::MinSize {
                    min: self.config.min_size,
                });
            }
            let (reachable, capacity_limits) = self.capacity(scene, now);
            if reachable < target {
                limited_by.extend(capacity_limits);
            }
            (target, reachable, limited_by)
        });
        let changed = self.desired != Some(target) || self.size_set_by.is_some();
        self.desired = Some(target);
        self.grow_reason = why;
        self.size_set_by = None;
        Ok(ResizeAnswer {
            requested: n,
            target,
            reachable,
            limited_by,
            changed,
        })
    }

    /// Asks for these ranks to be retired for good (and not replaced).
    pub fn request_retire(
        &mut self,
        ranks: &IdSet,
        flux: &FluxView,
        kube: Option<&KubeView>,
    ) -> Result<RetireAnswer, RequestError> {
        self.request_retire_because(ranks, reasons::by_request(), flux, kube)
    }

    /// [`Self::request_retire`] with the drain reason to use (one of [`reasons`]).
    pub(crate) fn request_retire_because(
        &mut self,
        ranks: &IdSet,
        reason: String,
        flux: &FluxView,
        kube: Option<&KubeView>,
    ) -> Result<RetireAnswer, RequestError> {
        if ranks.contains(0) {
            return Err(RequestError::RankZero);
        }
        let kube = both_synced(flux, kube).ok_or(RequestError::NotSynced)?;
        let (accepted, already, leaving) = self.with_scene(flux, kube, None, |scene| {
            if let Some(rank) = ranks.last().filter(|&k| k >= scene.max) {
                return Err(RequestError::OutOfRange {
                    rank,
                    size: scene.max,
                });
            }
            let protected = ranks.intersection(&self.config.protect);
            if !protected.is_empty() {
                return Err(RequestError::Protected(protected));
            }
            let rank = |k: u32| &scene.ranks[k as usize];
            let accepted: IdSet = ranks
                .iter()
                .filter(|&k| rank(k).active && !rank(k).retire)
                .collect();
            let already = ranks.difference(&accepted);
            let leaving = accepted.iter().filter(|&k| rank(k).counted).count() as u32;
            let left = scene.counted() - leaving;
            if leaving > 0 && left < self.config.min_size {
                return Err(RequestError::BelowMinSize {
                    ranks: accepted,
                    left,
                    min_size: self.config.min_size,
                });
            }
            Ok((accepted, already, leaving))
        })?;
        let reason: Arc<str> = reason.into();
        self.retire_requests += 1;
        for k in accepted.iter() {
            self.retiring.insert(k, Arc::clone(&reason));
        }
        if let Some(desired) = self.desired.as_mut() {
            *desired = desired.saturating_sub(leaving).max(self.config.min_size);
        }
        Ok(RetireAnswer {
            accepted,
            already,
            desired_size: self.desired,
        })
    }

    /// Decides the next actions and records them as pending. Calling it again on the same
    /// views returns nothing new; nothing is decided until both views are synced.
    pub fn plan(&mut self, flux: &FluxView, kube: Option<&KubeView>, now: f64) -> Vec<Action> {
        self.plan_since(flux, kube, None, now)
    }

    /// [`Self::plan`], told which ranks changed since the last plan (their Flux state or
    /// their live pod; `None`: not known): only those are read again when nothing every
    /// rank reads changed, so a pod that starts among 10,000 costs a rank, not 10,000.
    pub fn plan_since(
        &mut self,
        flux: &FluxView,
        kube: Option<&KubeView>,
        changed: Option<&IdSet>,
        now: f64,
    ) -> Vec<Action> {
        let Some(kube) = both_synced(flux, kube) else {
            self.kept = KeptScene::default();
            return Vec::new();
        };
        self.follow_annotation(flux, kube, now);
        self.follow_other_writer(flux, kube);
        self.rate.slide(now);
        for rank in self.issued.forget_done(flux, kube, now) {
            *self.shutdowns.entry(rank).or_default() += 1;
        }
        // One scene per plan: what observing and choosing victims change is folded into it.
        let (mut scene, basis) = self.scene_since(flux, kube, changed);
        self.observe(&mut scene, now);
        self.choose_victims(&mut scene, now);
        let decisions = self.decide(&scene, Pass::Act, now);
        self.keep_scene(scene, basis);
        self.planned_at = now;
        self.more_now = decisions.more_now;
        // A refusal stands while the plan asks for that very action; a plan that asks
        // for something else has seen the views change.
        self.issued.keep_refused(|action| {
            matches!(action, Action::Kube(KubeAction::RecordDesiredSize { .. }))
                || decisions.refused_again.contains(action)
        });
        let mut actions = Vec::with_capacity(decisions.actions.len());
        for planned in decisions.actions {
            self.record(&planned, now);
            actions.push(planned.action);
        }
        actions
    }

    /// The executor's report on an action `plan` returned. Done still waits for the views
    /// to show the effect (a dry run is done and changes nothing); done or retryable, it
    /// may be issued again after the retry interval if they do not. A refused action is
    /// pending no more: the next plan decides afresh from the views, and does not issue it
    /// again as it was.
    pub fn action_finished(&mut self, action: &Action, outcome: Outcome, now: f64) {
        let retry_after = now + self.config.retry_interval;
        self.issued.finished(action, outcome, retry_after, now);
    }

    /// The current picture: sizes, each rank and why, pending actions, limits.
    pub fn status(&self, flux: &FluxView, kube: Option<&KubeView>, now: f64) -> PlanStatus {
        let assessment = self.assess(flux, kube, now);
        self.status_of(flux, kube, assessment.as_ref(), now)
    }

    /// The scene and the policies' verdicts a status puts into words; `None` until both
    /// views are synced.
    pub fn assess(&self, flux: &FluxView, kube: Option<&KubeView>, now: f64) -> Option<Assessment> {
        self.assess_since(flux, kube, None, now)
    }

    /// [`Self::assess`], told which ranks changed since the last plan (`None`: maybe
    /// every rank): that plan's scene serves with them made again, unless something else
    /// every rank reads changed since.
    pub fn assess_since(
        &self,
        flux: &FluxView,
        kube: Option<&KubeView>,
        changed: Option<&IdSet>,
        now: f64,
    ) -> Option<Assessment> {
        let kube = both_synced(flux, kube)?;
        Some(self.with_scene(flux, kube, changed, |scene| {
            let decisions = self.decide(scene, Pass::Explain, now);
            Assessment {
                expected_size: scene.counted(),
                kube_size: scene.size,
                max_size: scene.max,
                frozen: scene.frozen,
                verdicts: decisions.verdicts,
                holds: decisions.holds,
                limits: decisions.limits,
            }
        }))
    }

    /// [`Self::status`] from an assessment of these views (`None`: not synced).
    pub fn status_of(
        &self,
        flux: &FluxView,
        kube: Option<&KubeView>,
        assessment: Option<&Assessment>,
        now: f64,
    ) -> PlanStatus {
        let pending = self.issued.pending_status();
        let refused = self.issued.refused_status();
        let Some(assessment) = assessment else {
            return PlanStatus {
                synced: false,
                desired_size: self.desired,
                size_set_by: self.size_set_by.clone(),
                real_size: flux.real_size(),
                expected_size: 0,
                kube_size: kube.map(KubeView::requested_size),
                max_size: flux.size(),
                frozen: None,
                limits: Vec::new(),
                waiting: vec!["waiting for both views to sync".into()],
                ranks: RankRuns::default(),
                pending,
                refused,
                startup_failures: self.startup_failures,
            };
        };
        let frozen = assessment.frozen.map(|frozen| self.frozen_words(frozen));
        let frozen_text = frozen.as_deref();
        PlanStatus {
            synced: true,
            desired_size: self.desired,
            size_set_by: self.size_set_by.clone(),
            real_size: flux.real_size(),
            expected_size: assessment.expected_size,
            kube_size: Some(assessment.kube_size),
            max_size: assessment.max_size,
            limits: assessment.limits.clone(),
            waiting: self.hold_words(&assessment.holds, frozen_text),
            ranks: self.rank_words(&assessment.verdicts, flux.occupancy(), frozen_text, now),
            frozen,
            pending,
            refused,
            startup_failures: self.startup_failures,
        }
    }

    /// The ranks autoscaling can count on, once both views are synced.
    pub fn supply(&self, flux: &FluxView, kube: Option<&KubeView>) -> Option<Supply> {
        let kube = both_synced(flux, kube)?;
        Some(self.with_scene(flux, kube, None, |scene| {
            let counted = || scene.ranks.iter().filter(|r| r.counted);
            Supply {
                expected: counted().map(|r| r.k).collect(),
                up: counted()
                    .filter(|r| r.online && !r.down())
                    .map(|r| r.k)
                    .collect(),
                max: scene.max,
                desired: self.desired,
            }
        }))
    }

    fn record(&mut self, planned: &Planned, now: f64) {
        self.issued.record(&planned.action, now);
        match &planned.effect {
            Effect::None => {}
            Effect::Move => self.rate.record(now),
            Effect::Grow => {
                self.rate.record(now);
                self.last_grow = Some(now);
            }
            Effect::StartupTimeout(ranks) => {
                let fresh = ranks.difference(&self.startup_failed);
                if !fresh.is_empty() {
                    self.startup_failures += fresh.len() as u32;
                    self.startup_failed = self.startup_failed.union(&fresh);
                    let doubling = 2f64.powi(self.startup_failures.min(16) as i32 - 1);
                    self.growth_blocked_until =
                        now + (self.config.startup_backoff * doubling).min(MAX_BACKOFF);
                }
            }
        }
    }
}
