//! The reconciler: compares what should run with what runs and decides the next actions.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::autoscale::Supply;
use super::reasons::{self, DrainKind};
use super::status::{PendingStatus, PlanStatus, RankPhase, RankStatus, RefusedStatus, SizeWriter};
use super::{PlannerConfig, RequestError, ResizeAnswer, RetireAnswer, SizeLimit};
use crate::model::flux::RankState;
use crate::model::queue::Occupancy;
use crate::model::{
    Action, DESIRED_SIZE_ANNOTATION, FIELD_MANAGER, FluxAction, FluxView, IdSet, KubeAction,
    KubeView, Outcome, PodPhase, PodView, Refusal,
};

/// The rate limit counts actions over this window (seconds).
const RATE_WINDOW: f64 = 60.0;
/// Most moves one plan issues, so that one reactor callback stays short however many
/// ranks leave at once; the rest go in the next passes, right after.
const MOVES_PER_PASS: usize = 64;
/// Growth backoff after failed starts never exceeds this (seconds).
const MAX_BACKOFF: f64 = 3600.0;
/// A broker that comes back this many times after a clean shutdown has a pod that
/// restarts it (its container does not end with the broker): stop trying.
pub(super) const MAX_SHUTDOWNS: u32 = 3;
/// An action the executor has not answered is issued again only after this long: the
/// executor answers every action (the driver retries on its own), so this only guards
/// against an answer that was lost.
const UNANSWERED_RETRY: f64 = 600.0;

/// An action issued and not yet seen to take effect.
#[derive(Debug, Clone)]
struct Pending {
    action: Action,
    issued_at: f64,
    /// When it may be issued again if still not seen: retry interval after the issue or
    /// after a reported failure.
    retry_after: f64,
    /// `None` until the executor answers: done, or retryable (a refusal is no longer
    /// pending).
    outcome: Option<Outcome>,
    /// For a drain or undrain: the ranks whose drain state it still decides. A later
    /// request for a rank takes it over, so the older one cannot undo it when it lands.
    speaks_for: IdSet,
}

/// Decides actions from the Flux and Kubernetes views. See the module docs of
/// [`crate::planner`] for what it keeps and why.
#[derive(Debug, Clone)]
pub struct Reconciler {
    config: PlannerConfig,
    /// The live size asked for; `None` until a request (nothing grows or shrinks).
    desired: Option<u32>,
    /// Why the desired size was asked, for the reason of the size raise (autoscale).
    grow_reason: Option<String>,
    /// The size the views showed at the last plan, to notice another writer's change.
    seen_size: Option<u32>,
    /// Another writer set the desired size: fluxk8s follows it and writes no size.
    size_set_by: Option<SizeWriter>,
    /// The desired-size annotation at the last plan (`None` before the first).
    seen_annotation: Option<Option<String>>,
    /// What to record as Events: size changes taken over, annotation requests.
    announcements: Vec<Announcement>,
    /// Ranks chosen to retire (resize victims, retire requests), with the drain reason to
    /// use. Once drained, the drain itself carries the intent across restarts.
    retiring: BTreeMap<u32, String>,
    pending: Vec<Pending>,
    /// Actions their executor refused, not issued again as they were while the plan still
    /// asks for them.
    refused: Vec<Refused>,
    /// Ranks seen up while their index was active; one that goes down after that was
    /// lost behind our back. Rebuilt from the views after a restart.
    seen_up: IdSet,
    /// Active ranks not seen up yet, and when they were first expected.
    waiting_since: BTreeMap<u32, f64>,
    /// Retiring ranks that run jobs, and since when (for `drain_grace`).
    busy_since: BTreeMap<u32, f64>,
    /// Ranks already counted as failed starts (so a re-issued drain does not count twice).
    startup_failed: IdSet,
    /// Consecutive failed starts, for the growth backoff.
    startup_failures: u32,
    growth_blocked_until: f64,
    last_grow: Option<f64>,
    last_shrink: Option<f64>,
    /// When rate-limited actions were issued, within the last window.
    recent_moves: Vec<f64>,
    /// Retiring ranks whose broker was seen to go down after a shutdown, and how often.
    shutdowns: BTreeMap<u32, u32>,
    /// When the last plan ran, and whether it left moves for the next pass.
    planned_at: f64,
    more_now: bool,
}

/// What is known of one rank, with actions in flight folded in.
#[derive(Debug, Clone)]
struct Rank<'a> {
    k: u32,
    /// Below the size and not completed/failed: Kubernetes runs (or recreates) a pod.
    active: bool,
    /// Why the index does not run, when it is below the size.
    finished: Option<&'static str>,
    online: bool,
    ever_online: bool,
    /// The overlay saw its connection drop.
    lost: bool,
    seen_up: bool,
    busy: bool,
    /// The drain as it will be once pending drains/undrains land.
    drain: Option<DrainKind>,
    /// Flux has the drain now (the scheduler stopped using the rank).
    flux_drained: bool,
    protected: bool,
    /// Should be removed: drained (not for a lost pod) or chosen, and removable.
    retire: bool,
    /// Expected to run: active and not on its way out.
    counted: bool,
    live_pod: Option<&'a PodView>,
}

/// Both views, reduced to what the policies need.
struct Scene<'a> {
    kube: &'a KubeView,
    /// The size asked of Kubernetes.
    size: u32,
    /// The most ranks there can be: broker size and MiniCluster `maxSize`.
    max: u32,
    ranks: Vec<Rank<'a>>,
    frozen: Option<String>,
    in_flight: InFlight,
    /// Which ranks run jobs, and until when.
    occupancy: &'a Occupancy,
}

/// The pending actions, indexed once per scene: a storm has hundreds, and every rank
/// looks its own up.
struct InFlight {
    /// Ranks our pending drains (`Some`, with the kind) or undrains (`None`) will change;
    /// the latest wins.
    drains: HashMap<u32, Option<DrainKind>>,
    shutdowns: HashSet<u32>,
    /// A delete is the same whatever its reason: keyed by the pod's uid.
    deletes: HashSet<String>,
    sizes: Vec<Action>,
    /// Ranks with a drain or undrain not answered yet: no other is sent for them until it
    /// is, so the resource module never has two for one rank to apply in either order.
    unanswered: IdSet,
}

impl InFlight {
    fn of(pending: &[Pending]) -> Self {
        let mut in_flight = InFlight {
            drains: HashMap::new(),
            shutdowns: HashSet::new(),
            deletes: HashSet::new(),
            sizes: Vec::new(),
            unanswered: IdSet::new(),
        };
        for p in pending {
            let ranks = &p.speaks_for;
            if p.outcome.is_none() && !ranks.is_empty() {
                in_flight.unanswered = in_flight.unanswered.union(ranks);
            }
            match &p.action {
                Action::Flux(FluxAction::Drain { reason, .. }) => {
                    let kind = reasons::kind_of_reason(reason);
                    in_flight
                        .drains
                        .extend(ranks.iter().map(|k| (k, Some(kind))));
                }
                Action::Flux(FluxAction::Undrain { .. }) => {
                    in_flight.drains.extend(ranks.iter().map(|k| (k, None)));
                }
                Action::Flux(FluxAction::Shutdown { rank }) => {
                    in_flight.shutdowns.insert(*rank);
                }
                Action::Kube(KubeAction::DeletePod { uid, .. }) => {
                    in_flight.deletes.insert(uid.clone());
                }
                size @ Action::Kube(KubeAction::SetSize { .. }) => {
                    in_flight.sizes.push(size.clone())
                }
                Action::Kube(
                    KubeAction::RecordEvent { .. } | KubeAction::RecordDesiredSize { .. },
                ) => {}
            }
        }
        in_flight
    }

    /// The drain of rank `k` once our pending drains/undrains land. A drain by others
    /// stays whatever we have in flight.
    fn intended_drain(&self, k: u32, state: &RankState) -> Option<DrainKind> {
        let now = state.drain.as_ref().map(reasons::kind_of);
        match (now, self.drains.get(&k).copied()) {
            (Some(DrainKind::Admin), _) | (_, None) => now,
            (Some(_), Some(None)) => None,
            (Some(ours), Some(Some(_))) => Some(ours),
            (None, Some(intended)) => intended,
        }
    }

    /// This move (shutdown, delete of the same pod, size change) is in flight.
    fn has_move(&self, action: &Action) -> bool {
        match action {
            Action::Flux(FluxAction::Shutdown { rank }) => self.shutdowns.contains(rank),
            Action::Kube(KubeAction::DeletePod { uid, .. }) => self.deletes.contains(uid),
            Action::Kube(KubeAction::SetSize { .. }) => self.sizes.contains(action),
            // Not moves: `intended_drain` folds them into the scene instead.
            Action::Flux(FluxAction::Drain { .. } | FluxAction::Undrain { .. }) => false,
            Action::Kube(KubeAction::RecordEvent { .. } | KubeAction::RecordDesiredSize { .. }) => {
                false
            }
        }
    }
}

impl Rank<'_> {
    /// Was seen up while active and is gone (lost, or offline).
    fn down(&self) -> bool {
        self.seen_up && (self.lost || !self.online)
    }
}

impl Scene<'_> {
    fn counted(&self) -> u32 {
        self.ranks.iter().filter(|r| r.counted).count() as u32
    }

    /// Kubernetes has applied the size it was asked, and truncated its index lists.
    fn settled_at(&self, size: u32) -> bool {
        settled_at(self.kube, size)
    }
}

fn settled_at(kube: &KubeView, size: u32) -> bool {
    let job = &kube.job;
    kube.requested_size() == size
        && job.completions == size
        && job.parallelism == size
        && kube.finished_indexes().last().is_none_or(|k| k < size)
}

/// What one pass decided, for `plan` to record and `status` to report.
struct Assessment {
    actions: Vec<Planned>,
    ranks: Vec<RankStatus>,
    waiting: Vec<String>,
    limits: Vec<SizeLimit>,
    /// Moves were left for the next pass: plan again right away.
    more_now: bool,
    /// Refused actions this pass asked for again, and held.
    refused_again: Vec<Action>,
}

/// An action with the bookkeeping its issue implies.
struct Planned {
    action: Action,
    effect: Effect,
}

#[derive(Debug, Clone, PartialEq)]
enum Effect {
    None,
    /// Counts against the rate limit.
    Move,
    /// A size raise: starts the cooldown before any shrink.
    Grow,
    /// Drains ranks that never came online: counts failures, backs growth off.
    StartupTimeout(IdSet),
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
            pending: Vec::new(),
            refused: Vec::new(),
            seen_up: IdSet::new(),
            waiting_since: BTreeMap::new(),
            busy_since: BTreeMap::new(),
            startup_failed: IdSet::new(),
            startup_failures: 0,
            growth_blocked_until: f64::NEG_INFINITY,
            last_grow: None,
            last_shrink: None,
            recent_moves: Vec::new(),
            shutdowns: BTreeMap::new(),
            planned_at: f64::NEG_INFINITY,
            more_now: false,
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
            self.recent_moves.first().map(|t| t + RATE_WINDOW),
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
        .chain(self.pending.iter().map(|p| p.retry_after))
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
        let scene = self.scene(flux, kube);
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
        let (reachable, capacity_limits) = self.capacity(&scene, now);
        if reachable < target {
            limited_by.extend(capacity_limits);
        }
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
        let scene = self.scene(flux, kube);
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
        for k in accepted.iter() {
            self.retiring.insert(k, reason.clone());
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
        let Some(kube) = both_synced(flux, kube) else {
            return Vec::new();
        };
        self.follow_annotation(flux, kube, now);
        self.follow_other_writer(flux, kube);
        self.forget_done(flux, kube, now);
        // One scene per plan: what observing and choosing victims change is folded into it.
        let mut scene = self.scene(flux, kube);
        self.observe(&mut scene, now);
        self.choose_victims(&mut scene, now);
        let assessment = self.assess(&scene, now, false);
        self.planned_at = now;
        self.more_now = assessment.more_now;
        // A refusal stands while the plan asks for that very action; a plan that asks
        // for something else has seen the views change.
        self.refused.retain(|r| {
            matches!(r.action, Action::Kube(KubeAction::RecordDesiredSize { .. }))
                || assessment.refused_again.contains(&r.action)
        });
        let mut actions = Vec::with_capacity(assessment.actions.len());
        for planned in assessment.actions {
            self.record(&planned, now);
            actions.push(planned.action);
        }
        actions
    }

    /// A size on the object that fluxk8s did not write (kubectl, an HPA, a GitOps tool)
    /// becomes the desired size, as a resize would, and fluxk8s stops writing sizes until
    /// a request from Flux: it never undoes another writer's change.
    fn follow_other_writer(&mut self, flux: &FluxView, kube: &KubeView) {
        let size = kube.requested_size();
        let Some(before) = self.seen_size.replace(size) else {
            return;
        };
        let ours = self.pending.iter().any(|p| {
            matches!(p.action, Action::Kube(KubeAction::SetSize { size: asked, .. }) if asked == size)
        }) || kube.size_manager() == Some(FIELD_MANAGER);
        if size == before || ours {
            return;
        }
        let max = kube
            .minicluster
            .as_ref()
            .map_or(flux.size(), |mc| mc.max_size.min(flux.size()));
        let writer = SizeWriter {
            manager: kube.size_manager().unwrap_or("unknown").to_owned(),
            size,
        };
        tracing::info!(
            "size {before} -> {size} set by {}: following it as the desired size",
            writer.manager
        );
        self.desired = Some(size.max(self.config.min_size).min(max.max(1)));
        self.grow_reason = None;
        self.announcements.push(Announcement {
            reason: "SizeFollowed",
            message: format!(
                "size set to {size} by {}: fluxk8s takes it as the desired size and changes \
                 no size until a resize from Flux",
                writer.manager
            ),
            warning: false,
        });
        self.size_set_by = Some(writer);
    }

    /// The desired-size annotation: at the first plan it restores the intent a reload or
    /// a new rank-0 pod forgot; later, a value fluxk8s did not write is a resize request,
    /// drain-aware like `flux k8s resize`, and a bad one is refused with a Warning Event.
    fn follow_annotation(&mut self, flux: &FluxView, kube: &KubeView, now: f64) {
        let annotation = kube.desired_size();
        let value = annotation.map(|a| a.value.clone());
        let Some(before) = self.seen_annotation.replace(value.clone()) else {
            if let Some(size) = value.as_deref().and_then(parse_size)
                && self.desired.is_none()
            {
                tracing::info!("desired size {size} restored from {DESIRED_SIZE_ANNOTATION}");
                // Clamped and checked as a request; only a broken view could refuse it.
                let _ = self.request_size_because(size, None, flux, Some(kube), now);
            }
            return;
        };
        let Some(annotation) = annotation.filter(|_| before != value) else {
            return;
        };
        let ours = annotation.manager.as_deref() == Some(FIELD_MANAGER)
            || self.pending.iter().any(|p| {
                matches!(p.action, Action::Kube(KubeAction::RecordDesiredSize { size })
                    if size.to_string() == annotation.value)
            });
        if ours {
            return;
        }
        let who = annotation.manager.as_deref().unwrap_or("unknown");
        let announcement = match parse_size(&annotation.value) {
            Some(size) => match self.request_size_because(size, None, flux, Some(kube), now) {
                Ok(answer) => {
                    tracing::info!(
                        "resize to {size} asked by {who} through {DESIRED_SIZE_ANNOTATION}"
                    );
                    Announcement {
                        reason: "ResizeRequested",
                        message: format!(
                            "{DESIRED_SIZE_ANNOTATION}={size} set by {who}: resizing to {} live \
                             ranks, drain-aware",
                            answer.target
                        ),
                        warning: false,
                    }
                }
                Err(err) => Announcement {
                    reason: "BadDesiredSize",
                    message: format!(
                        "{DESIRED_SIZE_ANNOTATION}={size} set by {who} refused: {err}"
                    ),
                    warning: true,
                },
            },
            None => Announcement {
                reason: "BadDesiredSize",
                message: format!(
                    "{DESIRED_SIZE_ANNOTATION}={:?} set by {who} is not a whole number >= 1: \
                     nothing changed",
                    annotation.value
                ),
                warning: true,
            },
        };
        if announcement.warning {
            tracing::warn!("{}", announcement.message);
        }
        self.announcements.push(announcement);
    }

    /// What the object and its Events should record after a plan: the desired size as
    /// an annotation when the object says another, and what happened since the last call
    /// (size changes followed, annotation requests and refusals). Apart from [`plan`],
    /// whose actions change the cluster.
    ///
    /// [`plan`]: Self::plan
    pub fn records(&mut self, kube: Option<&KubeView>, now: f64) -> Vec<Action> {
        let mut records: Vec<Action> = std::mem::take(&mut self.announcements)
            .into_iter()
            .map(|said| {
                Action::Kube(KubeAction::RecordEvent {
                    reason: said.reason.to_owned(),
                    message: said.message,
                    warning: said.warning,
                })
            })
            .collect();
        // Alone only once nothing is in flight: a size change on the way carries it in
        // its own patch instead (one patch per resize).
        let wanted = kube
            .and_then(|kube| self.unrecorded_desired(kube))
            .map(|size| Action::Kube(KubeAction::RecordDesiredSize { size }));
        self.refused.retain(|r| {
            !matches!(r.action, Action::Kube(KubeAction::RecordDesiredSize { .. }))
                || Some(&r.action) == wanted.as_ref()
        });
        if let Some(action) = wanted
            && self.pending.is_empty()
            && !self.is_refused(&action)
        {
            let planned = Planned {
                action,
                effect: Effect::None,
            };
            self.record(&planned, now);
            records.push(planned.action);
        }
        records
    }

    /// The executor refused this very action: it is not issued again as it was.
    fn is_refused(&self, action: &Action) -> bool {
        self.refused.iter().any(|r| &r.action == action)
    }

    /// The desired size, when the object's annotation does not say it yet (and no other
    /// writer's size is being followed).
    fn unrecorded_desired(&self, kube: &KubeView) -> Option<u32> {
        let size = self.desired.filter(|_| self.size_set_by.is_none())?;
        (!kube.records_desired_size(size)).then_some(size)
    }

    /// The executor's report on an action `plan` returned. Done still waits for the views
    /// to show the effect (a dry run is done and changes nothing); done or retryable, it
    /// may be issued again after the retry interval if they do not. A refused action is
    /// pending no more: the next plan decides afresh from the views, and does not issue it
    /// again as it was.
    pub fn action_finished(&mut self, action: &Action, outcome: Outcome, now: f64) {
        let Some(at) = self.pending.iter().rposition(|p| &p.action == action) else {
            return;
        };
        match outcome {
            Outcome::Refused(refusal) => {
                let pending = self.pending.remove(at);
                self.refused.retain(|r| r.action != pending.action);
                self.refused.push(Refused {
                    action: pending.action,
                    refusal,
                    at: now,
                });
            }
            outcome => {
                let pending = &mut self.pending[at];
                pending.retry_after = now + self.config.retry_interval;
                pending.outcome = Some(outcome);
            }
        }
    }

    /// The current picture: sizes, each rank and why, pending actions, limits.
    pub fn status(&self, flux: &FluxView, kube: Option<&KubeView>, now: f64) -> PlanStatus {
        let pending = self
            .pending
            .iter()
            .map(|p| PendingStatus {
                action: p.action.clone(),
                issued_at: p.issued_at,
                outcome: p.outcome.as_ref().map(Outcome::to_string),
            })
            .collect();
        let refused = self
            .refused
            .iter()
            .map(|r| RefusedStatus {
                action: r.action.clone(),
                refused_at: r.at,
                refusal: r.refusal.kind(),
                why: r.refusal.to_string(),
            })
            .collect();
        let Some(kube) = both_synced(flux, kube) else {
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
                ranks: Vec::new(),
                pending,
                refused,
                startup_failures: self.startup_failures,
            };
        };
        let scene = self.scene(flux, kube);
        let assessment = self.assess(&scene, now, true);
        PlanStatus {
            synced: true,
            desired_size: self.desired,
            size_set_by: self.size_set_by.clone(),
            real_size: flux.real_size(),
            expected_size: scene.counted(),
            kube_size: Some(scene.size),
            max_size: scene.max,
            frozen: scene.frozen,
            limits: assessment.limits,
            waiting: assessment.waiting,
            ranks: assessment.ranks,
            pending,
            refused,
            startup_failures: self.startup_failures,
        }
    }

    /// The ranks autoscaling can count on, once both views are synced.
    pub fn supply(&self, flux: &FluxView, kube: Option<&KubeView>) -> Option<Supply> {
        let kube = both_synced(flux, kube)?;
        let scene = self.scene(flux, kube);
        let counted = || scene.ranks.iter().filter(|r| r.counted);
        Some(Supply {
            expected: counted().map(|r| r.k).collect(),
            up: counted()
                .filter(|r| r.online && !r.down())
                .map(|r| r.k)
                .collect(),
            max: scene.max,
            desired: self.desired,
        })
    }

    fn scene<'a>(&self, flux: &'a FluxView, kube: &'a KubeView) -> Scene<'a> {
        let max = kube
            .minicluster
            .as_ref()
            .map_or(flux.size(), |mc| mc.max_size.min(flux.size()));
        let size = kube.requested_size();
        // One pass over the pods, not one per rank: plans stay linear in the size.
        let mut live_pods: Vec<Option<&PodView>> = vec![None; max as usize];
        for pod in kube.pods.iter().map(Arc::as_ref).filter(|p| p.is_live()) {
            if let Some(slot @ None) = live_pods.get_mut(pod.index as usize) {
                *slot = Some(pod);
            }
        }
        let unknown = RankState::default();
        let in_flight = InFlight::of(&self.pending);
        let ranks: Vec<Rank> = (0..max)
            .map(|k| {
                let state = flux.rank(k).unwrap_or(&unknown);
                let seen_up = self.seen_up.contains(k);
                let finished = if k >= size {
                    None
                } else if kube.job.completed_indexes.contains(k) {
                    Some("index completed")
                } else if kube.job.failed_indexes.contains(k) {
                    Some("index failed")
                } else {
                    None
                };
                let active = k < size && finished.is_none();
                let drain = in_flight.intended_drain(k, state);
                let protected = self.config.protect.contains(k);
                let retire = active
                    && k != 0
                    && !protected
                    && (matches!(drain, Some(DrainKind::Admin | DrainKind::OursRetire))
                        || self.retiring.contains_key(&k));
                Rank {
                    k,
                    active,
                    finished,
                    online: state.online,
                    ever_online: state.ever_online,
                    lost: state.lost,
                    seen_up,
                    busy: flux.occupancy().may_be_busy(k),
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
                    live_pod: live_pods[k as usize],
                }
            })
            .collect();
        let frozen = self.frozen(&ranks);
        Scene {
            kube,
            size,
            max,
            ranks,
            frozen,
            in_flight,
            occupancy: flux.occupancy(),
        }
    }

    /// Why removals are suspended: too many ranks lost at once looks like an outage.
    fn frozen(&self, ranks: &[Rank<'_>]) -> Option<String> {
        let active = ranks.iter().filter(|r| r.active).count();
        let lost = ranks
            .iter()
            .filter(|r| r.active && r.k != 0 && r.down() && !r.retire)
            .count();
        (active > 0 && lost as f64 > self.config.max_lost_fraction * active as f64).then(|| {
            format!(
                "{lost} of {active} ranks lost, more than max-lost-fraction {}",
                self.config.max_lost_fraction
            )
        })
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
        (base..scene.max)
            .filter(|&k| scene.ranks[k as usize].drain != Some(DrainKind::Admin))
            .collect()
    }

    /// How many live ranks the instance can reach, and what stops it reaching more.
    fn capacity(&self, scene: &Scene<'_>, now: f64) -> (u32, Vec<SizeLimit>) {
        let base = self.lowering_base(scene, now);
        let usable = self.usable_from(scene, base);
        let reachable = scene.counted() + usable.len() as u32;
        let mut limits = Vec::new();
        // Below the base, an index that does not count now never will.
        let holes: IdSet = (1..base)
            .filter(|&k| !scene.ranks[k as usize].counted)
            .collect();
        if !holes.is_empty() {
            limits.push(SizeLimit::CannotComeBack { ranks: holes });
        }
        let drained = IdSet::range(base, scene.max.saturating_sub(1)).difference(&usable);
        if base < scene.max && !drained.is_empty() {
            limits.push(SizeLimit::DrainedByOthers { ranks: drained });
        }
        (reachable, limits)
    }

    /// Drops pending actions that took effect (counting shutdowns) or may be retried, and
    /// moves out of the rate window.
    fn forget_done(&mut self, flux: &FluxView, kube: &KubeView, now: f64) {
        self.recent_moves.retain(|&t| t > now - RATE_WINDOW);
        let took_effect = |pending: &Pending| took_effect(pending, flux, kube);
        for pending in &self.pending {
            if let Action::Flux(FluxAction::Shutdown { rank }) = pending.action
                && took_effect(pending)
            {
                *self.shutdowns.entry(rank).or_default() += 1;
            }
        }
        self.pending
            .retain(|p| now < p.retry_after && !took_effect(p));
    }

    /// Records what the scene shows: ranks seen up, ranks waiting to start, retiring ranks
    /// that are busy; the scene then reflects the ranks seen up.
    fn observe(&mut self, scene: &mut Scene<'_>, now: f64) {
        for rank in &mut scene.ranks {
            let k = rank.k;
            // The broker must be its running pod's: after a size lowered and raised again,
            // the old pod's broker may still be online beside a new pod that is pending, and
            // its end is not a lost pod.
            let runs_in_live_pod = rank
                .live_pod
                .is_some_and(|pod| pod.phase == PodPhase::Running);
            if rank.active && rank.online && !rank.down() && runs_in_live_pod {
                self.seen_up.insert(k);
            } else if !rank.active {
                self.seen_up.remove(k);
            }
            rank.seen_up = self.seen_up.contains(k);
            let starting = rank.active
                && k != 0
                && !rank.online
                && !rank.seen_up
                && matches!(rank.drain, None | Some(DrainKind::OursObserved));
            if starting {
                self.waiting_since.entry(k).or_insert(now);
            } else if self.waiting_since.remove(&k).is_some() && rank.online {
                self.startup_failures = 0;
            }
            if rank.online || !rank.active {
                self.startup_failed.remove(k);
            }
            if rank.retire && rank.busy {
                self.busy_since.entry(k).or_insert(now);
            } else {
                self.busy_since.remove(&k);
            }
            if !rank.active {
                self.retiring.remove(&k);
                self.shutdowns.remove(&k);
            }
        }
        scene.frozen = self.frozen(&scene.ranks);
    }

    /// Picks the ranks a shrink retires: not running first, then idle ones, highest first,
    /// then busy ones only if there are not enough, those whose jobs end soonest first;
    /// never rank 0 or a protected rank. Waits while the job-manager has not said which
    /// ranks run jobs: an unknown rank is never taken for idle.
    fn choose_victims(&mut self, scene: &mut Scene<'_>, now: f64) {
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
        let reason = reasons::resize(target);
        // Victims are only chosen while nothing is frozen, and a retiring rank does not
        // count as lost: the scene's `frozen` stays as it is.
        for victim in candidates {
            self.retiring.insert(victim.k, reason.clone());
            victim.retire = true;
            victim.counted = false;
        }
        self.last_shrink = Some(now);
    }

    fn cooling_after(&self, last: Option<f64>, now: f64) -> bool {
        last.is_some_and(|t| now < t + self.config.cooldown)
    }

    fn pending_size(&self) -> Option<u32> {
        self.pending.iter().find_map(|p| match p.action {
            Action::Kube(KubeAction::SetSize { size, .. }) => Some(size),
            _ => None,
        })
    }

    /// The next growth step toward the desired size, or why there is none.
    fn growth(&self, scene: &Scene<'_>, now: f64, waiting: &mut Vec<String>) -> Growth {
        let Some(target) = self.desired else {
            return Growth::default();
        };
        let need = target.saturating_sub(scene.counted());
        if need == 0 {
            return Growth::default();
        }
        let hold = |why: String, waiting: &mut Vec<String>| {
            waiting.push(format!("growth by {need}: {why}"));
            Growth::default()
        };
        if now < self.growth_blocked_until {
            return hold(
                format!(
                    "backing off after {} failed start(s) until t={}",
                    self.startup_failures, self.growth_blocked_until
                ),
                waiting,
            );
        }
        if self.cooling_after(self.last_shrink, now) {
            return hold("cooldown after a shrink".into(), waiting);
        }
        if let Some(writer) = &self.size_set_by {
            return hold(
                format!(
                    "the size is {}'s ({}): fluxk8s changes it only for a request from Flux",
                    writer.manager, writer.size
                ),
                waiting,
            );
        }
        if let Some(size) = self.pending_size() {
            return hold(format!("size change to {size} in flight"), waiting);
        }
        if !scene.settled_at(scene.size) {
            return hold(
                format!("waiting for the Job to reach size {}", scene.size),
                waiting,
            );
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
            return hold("no index left that can run".into(), waiting);
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

    /// One pass of every policy over the views. Pure: `plan` records the result.
    /// `report`: also say where each rank stands and why (for the status; a plan skips
    /// that text).
    fn assess(&self, scene: &Scene<'_>, now: f64, report: bool) -> Assessment {
        let mut waiting = Vec::new();
        let mut ranks = Vec::with_capacity(scene.ranks.len());
        let mut drains: BTreeMap<String, IdSet> = BTreeMap::new();
        // Made once: a storm of lost or late ranks shares them.
        let lost_reason = reasons::pod_lost();
        let never_online_reason = reasons::never_online(self.config.startup_timeout);
        let mut timed_out = IdSet::new();
        let mut undrain = IdSet::new();
        let mut removals: Vec<Action> = Vec::new();
        // Retired ranks' texts by (why, drain), for the ranks that share them.
        let mut retired: Vec<(&str, &str, Cow<'static, str>)> = Vec::new();
        // The text of the last start time seen, for the ranks that share it.
        let mut starting: Option<(f64, Cow<'static, str>)> = None;
        // Retiring ranks kept drained, by reason: one waiting line per reason.
        let mut kept: Vec<(Cow<'static, str>, IdSet)> = Vec::new();

        let growth = self.growth(scene, now, &mut waiting);
        let growing_to = growth.raise_to.or(self.pending_size()).unwrap_or(0);
        // Another writer's size is not lowered either: retiring ranks leave in place.
        let base = if scene.frozen.is_some() || self.size_set_by.is_some() {
            scene.size
        } else {
            self.lowering_base(scene, now)
        };
        if let Some(target) = self.desired
            && scene.counted() > target
        {
            if let Some(frozen) = &scene.frozen {
                waiting.push(format!("shrink to {target}: frozen ({frozen})"));
            } else if self.cooling_after(self.last_grow, now) {
                waiting.push(format!("shrink to {target}: cooldown after a grow"));
            } else if !scene.occupancy.known() {
                waiting.push(format!(
                    "shrink to {target}: waiting for the job-manager to say which ranks run jobs"
                ));
            }
        }

        for rank in &scene.ranks {
            let k = rank.k;
            let mut say = |phase, why: Cow<'static, str>| {
                if report {
                    ranks.push(RankStatus {
                        rank: k,
                        phase,
                        why,
                    })
                }
            };
            // Text made per rank only when it is reported.
            let text = |make: &dyn Fn() -> String| match report {
                true => Cow::Owned(make()),
                false => Cow::Borrowed(""),
            };
            if k == 0 {
                say(RankPhase::Up, "leader: runs fluxk8s, never retired".into());
                continue;
            }
            if !rank.active {
                let why = rank.finished.unwrap_or("above size");
                // Restart recovery: a retired rank whose fluxk8s drain was lost.
                let retired_by_us =
                    rank.finished.is_some() || (rank.ever_online && k >= growing_to);
                if rank.drain.is_none() && retired_by_us {
                    add_drain(&mut drains, &reasons::still_retired(why), k);
                }
                let drained = match rank.drain {
                    None => "",
                    Some(DrainKind::Admin) => ", drained by others",
                    Some(_) => ", drained by fluxk8s",
                };
                // A few texts for hundreds of ranks after a shrink: each made once.
                let text = match retired.iter().find(|(w, d, _)| (*w, *d) == (why, drained)) {
                    Some((_, _, text)) => text.clone(),
                    None => {
                        let made = text(&|| format!("retired: {why}{drained}"));
                        retired.push((why, drained, made.clone()));
                        made
                    }
                };
                say(RankPhase::Retired, text);
                continue;
            }
            if rank.retire {
                let (phase, why) =
                    self.retire_step(scene, rank, base, now, &mut |action| removals.push(action));
                if let Some(reason) = self.retiring.get(&k)
                    && rank.drain.is_none()
                {
                    add_drain(&mut drains, reason, k);
                }
                if phase == RankPhase::Drained {
                    match kept.iter_mut().find(|(reason, _)| *reason == why) {
                        Some((_, ranks)) => {
                            ranks.insert(k);
                        }
                        None => kept.push((why.clone(), IdSet::range(k, k))),
                    }
                }
                say(phase, why);
                continue;
            }
            match rank.drain {
                Some(DrainKind::OursLost) if rank.online && !rank.down() => {
                    undrain.insert(k);
                    say(
                        RankPhase::Up,
                        "back online: lifting the fluxk8s lost drain".into(),
                    );
                }
                Some(DrainKind::OursObserved) if rank.online && !rank.down() => {
                    undrain.insert(k);
                    say(
                        RankPhase::Up,
                        "back above the size: lifting the fluxk8s retired drain".into(),
                    );
                }
                Some(DrainKind::OursLost) => say(
                    RankPhase::Lost,
                    "lost: drained by fluxk8s, waiting for the pod to come back".into(),
                ),
                Some(DrainKind::Admin | DrainKind::OursRetire) => {
                    say(RankPhase::Drained, "drained, kept: protected".into())
                }
                None if rank.online && !rank.down() => say(RankPhase::Up, "up".into()),
                None | Some(DrainKind::OursObserved) if rank.down() => {
                    add_drain(&mut drains, &lost_reason, k);
                    say(RankPhase::Lost, "lost: draining".into());
                }
                None | Some(DrainKind::OursObserved) => {
                    let since = self.waiting_since.get(&k).copied().unwrap_or(now);
                    if now - since >= self.config.startup_timeout {
                        add_drain(&mut drains, &never_online_reason, k);
                        timed_out.insert(k);
                        say(RankPhase::Starting, "never came online: draining".into());
                    } else {
                        // Ranks started together share a start time and its text (made
                        // once, not per rank: 999 ranks start with one grow).
                        let why = match &starting {
                            Some((at, why)) if *at == since => why.clone(),
                            _ => {
                                let why = text(&|| {
                                    format!(
                                        "starting for {:.0}s (startup-timeout {}s)",
                                        (now - since).max(0.0),
                                        self.config.startup_timeout
                                    )
                                });
                                starting = Some((since, why.clone()));
                                why
                            }
                        };
                        say(RankPhase::Starting, why);
                    }
                }
            }
        }

        for (why, ranks) in kept {
            waiting.push(format!("ranks {ranks}: {why}"));
        }
        let mut actions = Vec::new();
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
        let mut refused_again = Vec::new();
        let mut unless_refused = |planned: Planned, actions: &mut Vec<Planned>| {
            if self.is_refused(&planned.action) {
                refused_again.push(planned.action);
            } else {
                actions.push(planned);
            }
        };
        for (reason, ids) in drains {
            let ids = hold_unanswered(ids);
            if ids.is_empty() {
                continue;
            }
            let effect = if reason == never_online_reason {
                Effect::StartupTimeout(timed_out.intersection(&ids))
            } else {
                Effect::None
            };
            let action = Action::Flux(FluxAction::Drain { ranks: ids, reason });
            unless_refused(Planned { action, effect }, &mut actions);
        }
        let undrain = hold_unanswered(undrain.union(&growth.undrain));
        if !undrain.is_empty() {
            let action = Action::Flux(FluxAction::Undrain { ranks: undrain });
            let effect = Effect::None;
            unless_refused(Planned { action, effect }, &mut actions);
        }
        if !held.is_empty() {
            waiting.push(format!(
                "ranks {held}: a drain or undrain is in flight; correcting once it is answered"
            ));
        }
        let lower_for_retirement = (base < scene.size.min(scene.max)
            && scene.ranks[base as usize..scene.size.min(scene.max) as usize]
                .iter()
                .any(|r| r.retire))
        .then_some(base);
        let size_change = match (growth.lower_to, growth.raise_to, lower_for_retirement) {
            (Some(size), _, _) => {
                Some((size, "recycle retired indexes before growing", Effect::Move))
            }
            (None, Some(size), _) => Some((
                size,
                self.grow_reason.as_deref().unwrap_or("grow"),
                Effect::Grow,
            )),
            (None, None, Some(size)) => Some((size, "retire the highest ranks", Effect::Move)),
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
            if let Some(in_flight) = self.pending_size() {
                waiting.push(format!(
                    "size {size} ({why}): size change to {in_flight} in flight"
                ));
            } else {
                moves.push(Planned {
                    action: Action::Kube(KubeAction::SetSize {
                        size,
                        reason: format!("fluxk8s: {why}"),
                        desired: self.unrecorded_desired(scene.kube),
                    }),
                    effect,
                });
            }
        }
        let budget = self.config.max_actions_per_minute as usize;
        let mut used = self.recent_moves.len();
        let (mut passed, mut held_by_rate, mut next_pass) = (0, 0, 0);
        for planned in moves {
            if scene.in_flight.has_move(&planned.action) {
                continue;
            }
            if self.is_refused(&planned.action) {
                refused_again.push(planned.action);
            } else if used >= budget {
                held_by_rate += 1;
            } else if passed >= MOVES_PER_PASS {
                next_pass += 1;
            } else {
                used += 1;
                passed += 1;
                actions.push(planned);
            }
        }
        if held_by_rate > 0 {
            waiting.push(format!(
                "rate limit (max-actions-per-minute {budget}): holding {held_by_rate} \
                 removal(s) or size change(s)"
            ));
        }
        if next_pass > 0 {
            waiting.push(format!(
                "{next_pass} more removal(s) in the next pass (at most {MOVES_PER_PASS} a pass)"
            ));
        }
        let limits = match self.desired {
            Some(target) => {
                let (reachable, limits) = self.capacity(scene, now);
                if reachable < target {
                    limits
                } else {
                    Vec::new()
                }
            }
            None => Vec::new(),
        };
        Assessment {
            actions,
            ranks,
            waiting,
            limits,
            more_now: next_pass > 0,
            refused_again,
        }
    }

    /// Where a retiring rank is on its way out, and the removal to issue if it can go now.
    fn retire_step(
        &self,
        scene: &Scene<'_>,
        rank: &Rank,
        base: u32,
        now: f64,
        remove: &mut dyn FnMut(Action),
    ) -> (RankPhase, Cow<'static, str>) {
        let k = rank.k;
        let retiring = |why: Cow<'static, str>| (RankPhase::Retiring, why);
        if !rank.flux_drained {
            return retiring("draining".into());
        }
        if !self.ready(rank, now) {
            let grace = match self.config.drain_grace {
                Some(grace) => format!(" or {grace}s"),
                None => String::new(),
            };
            if !scene.occupancy.known() {
                return retiring(
                    format!("draining: waiting for the job-manager to say if it runs jobs{grace}")
                        .into(),
                );
            }
            // Only retiring busy ranks, and only in a status: one pass over the jobs each.
            let job = scene.occupancy.last_to_end().get(&k).map(|a| {
                let until = a.expiration.map_or("no time limit".to_owned(), |t| {
                    format!("until {}", utc_clock(t))
                });
                format!(" ({until}, job {})", a.job)
            });
            return retiring(
                format!(
                    "draining: busy{}, waiting idle{grace}",
                    job.unwrap_or_default()
                )
                .into(),
            );
        }
        if k >= base {
            return retiring(format!("leaving: size lowered to {base}").into());
        }
        if let Some(frozen) = &scene.frozen {
            return retiring(format!("drained, removal frozen: {frozen}").into());
        }
        // A clean exit 0 completes the index whatever the Job's failure policy (the Flux
        // Operator's worker loop ends on exit 0), and lets the broker run rc3.
        let shutdowns = self.shutdowns.get(&k).copied().unwrap_or(0);
        if rank.online {
            if shutdowns >= MAX_SHUTDOWNS {
                return (
                    RankPhase::Drained,
                    format!(
                        "drained, kept: its broker came back after {shutdowns} clean shutdowns \
                         (the pod restarts it)"
                    )
                    .into(),
                );
            }
            remove(Action::Flux(FluxAction::Shutdown { rank: k }));
            return retiring(
                "leaving: broker told to shut down (exit 0 completes its index)".into(),
            );
        }
        if shutdowns > 0 && rank.live_pod.is_some() {
            return retiring("leaving: broker shut down, waiting for its pod to complete".into());
        }
        let per_index_zero = scene.kube.job.backoff_limit_per_index == Some(0);
        match rank.live_pod {
            Some(pod) if per_index_zero => {
                remove(Action::Kube(KubeAction::DeletePod {
                    index: k,
                    pod: pod.name.clone(),
                    uid: pod.uid.clone(),
                    reason: "fluxk8s: retire drained rank (index fails for good)".into(),
                }));
                retiring("leaving: deleting its pod (backoffLimitPerIndex 0)".into())
            }
            Some(_) => (
                RankPhase::Drained,
                "drained, kept: its broker is not online to be shut down, and a deleted pod \
                 would be recreated"
                    .into(),
            ),
            None => retiring("leaving: waiting for its index to finish".into()),
        }
    }

    fn record(&mut self, planned: &Planned, now: f64) {
        let speaks_for = match &planned.action {
            Action::Flux(FluxAction::Drain { ranks, .. } | FluxAction::Undrain { ranks }) => {
                self.take_over_drain_state(ranks);
                ranks.clone()
            }
            _ => IdSet::new(),
        };
        self.pending.push(Pending {
            action: planned.action.clone(),
            issued_at: now,
            retry_after: now + UNANSWERED_RETRY,
            outcome: None,
            speaks_for,
        });
        match &planned.effect {
            Effect::None => {}
            Effect::Move => self.recent_moves.push(now),
            Effect::Grow => {
                self.recent_moves.push(now);
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

    /// A new drain or undrain for `ranks` decides their state from now on: older ones,
    /// all answered (see [`InFlight::unanswered`]), no longer speak for them, and one that
    /// speaks for no rank is forgotten.
    fn take_over_drain_state(&mut self, ranks: &IdSet) {
        self.pending.retain_mut(|p| {
            if p.speaks_for.is_empty() {
                return true;
            }
            p.speaks_for = p.speaks_for.difference(ranks);
            !p.speaks_for.is_empty()
        });
    }
}

/// An action its executor refused, and why.
#[derive(Debug, Clone)]
struct Refused {
    action: Action,
    refusal: Refusal,
    at: f64,
}

/// Something to record as a Kubernetes Event.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    pub reason: &'static str,
    pub message: String,
    /// Something was refused: a `Warning` Event.
    pub warning: bool,
}

/// A size as a user writes it in the annotation: a whole number >= 1.
fn parse_size(text: &str) -> Option<u32> {
    text.trim().parse().ok().filter(|&n| n >= 1)
}

/// `HH:MM UTC` of a time in seconds since the epoch: when a job's time limit ends.
fn utc_clock(epoch: f64) -> String {
    let minutes = (epoch.max(0.0) / 60.0) as u64;
    format!("{:02}:{:02} UTC", minutes / 60 % 24, minutes % 60)
}

/// Adds rank `k` to the drain for `reason`, copying the reason only for its first rank.
fn add_drain(drains: &mut BTreeMap<String, IdSet>, reason: &str, k: u32) {
    match drains.get_mut(reason) {
        Some(ranks) => {
            ranks.insert(k);
        }
        None => {
            drains.insert(reason.to_owned(), IdSet::range(k, k));
        }
    }
}

/// The views show the pending action's effect (a drain or undrain: on the ranks it still
/// speaks for).
fn took_effect(pending: &Pending, flux: &FluxView, kube: &KubeView) -> bool {
    let drained = |k: u32| flux.rank(k).is_some_and(|r| r.drain.is_some());
    let ranks = &pending.speaks_for;
    match &pending.action {
        Action::Flux(FluxAction::Drain { .. }) => ranks.iter().all(drained),
        Action::Flux(FluxAction::Undrain { .. }) => !ranks.iter().any(|k| {
            flux.rank(k)
                .and_then(|r| r.drain.as_ref())
                .is_some_and(|d| d.ours)
        }),
        Action::Flux(FluxAction::Shutdown { rank }) => !flux.rank(*rank).is_some_and(|r| r.online),
        // The index is compared first: a plan with a delete pending stays a pass of
        // integer compares, not a hash of every pod's uid.
        Action::Kube(KubeAction::DeletePod { index, uid, .. }) => !kube
            .pods
            .iter()
            .any(|p| p.index == *index && p.uid == *uid && p.is_live()),
        Action::Kube(KubeAction::SetSize { size, .. }) => settled_at(kube, *size),
        Action::Kube(KubeAction::RecordEvent { .. }) => true,
        Action::Kube(KubeAction::RecordDesiredSize { size }) => kube.records_desired_size(*size),
    }
}
