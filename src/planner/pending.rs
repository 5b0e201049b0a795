//! The actions issued and not yet seen to take effect, and those their executor refused:
//! what is in flight for each rank, when an action may go again, and which drain or
//! undrain still decides a rank's drain state.

use std::collections::HashSet;

use super::reasons::{self, DrainKind};
use super::scene::settled_at;
use super::status::{PendingStatus, RefusedStatus};
use crate::model::{Action, FluxAction, FluxView, IdSet, KubeAction, KubeView, Outcome, Refusal};

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

/// An action its executor refused, and why.
#[derive(Debug, Clone)]
struct Refused {
    action: Action,
    refusal: Refusal,
    at: f64,
}

/// The actions issued: pending until the views show them, or refused.
#[derive(Debug, Clone, Default)]
pub(super) struct Issued {
    pending: Vec<Pending>,
    /// Not issued again as they were while the plan still asks for them.
    refused: Vec<Refused>,
}

impl Issued {
    /// Records `action` as issued at `now`. A drain or undrain takes over the drain state
    /// of its ranks from older ones.
    pub fn record(&mut self, action: &Action, now: f64) {
        let speaks_for = match action {
            Action::Flux(FluxAction::Drain { ranks, .. } | FluxAction::Undrain { ranks }) => {
                self.take_over_drain_state(ranks);
                ranks.clone()
            }
            _ => IdSet::new(),
        };
        self.pending.push(Pending {
            action: action.clone(),
            issued_at: now,
            retry_after: now + UNANSWERED_RETRY,
            outcome: None,
            speaks_for,
        });
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

    /// The executor's answer on `action`. Done or retryable, it stays pending until the
    /// views show it or `retry_after`; refused, it is pending no more and held as refused.
    pub fn finished(&mut self, action: &Action, outcome: Outcome, retry_after: f64, now: f64) {
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
                pending.retry_after = retry_after;
                pending.outcome = Some(outcome);
            }
        }
    }

    /// Drops pending actions that took effect or may be retried; returns the ranks whose
    /// shutdown took effect.
    pub fn forget_done(&mut self, flux: &FluxView, kube: &KubeView, now: f64) -> Vec<u32> {
        let mut shut_down = Vec::new();
        self.pending.retain(|p| {
            let took_effect = took_effect(p, flux, kube);
            if let Action::Flux(FluxAction::Shutdown { rank }) = p.action
                && took_effect
            {
                shut_down.push(rank);
            }
            now < p.retry_after && !took_effect
        });
        shut_down
    }

    /// The executor refused this very action: it is not issued again as it was.
    pub fn is_refused(&self, action: &Action) -> bool {
        self.refused.iter().any(|r| &r.action == action)
    }

    /// Forgets the refusals `still_asked` does not ask for again: the plan has moved on.
    pub fn keep_refused(&mut self, still_asked: impl Fn(&Action) -> bool) {
        self.refused.retain(|r| still_asked(&r.action));
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Some pending action matches.
    pub fn any(&self, matches: impl Fn(&Action) -> bool) -> bool {
        self.pending.iter().any(|p| matches(&p.action))
    }

    /// The size a pending size change asks for.
    pub fn size(&self) -> Option<u32> {
        self.pending.iter().find_map(|p| match p.action {
            Action::Kube(KubeAction::SetSize { size, .. }) => Some(size),
            _ => None,
        })
    }

    /// When pending actions may be issued again.
    pub fn retry_times(&self) -> impl Iterator<Item = f64> + '_ {
        self.pending.iter().map(|p| p.retry_after)
    }

    /// The pending actions indexed for a scene.
    pub fn in_flight(&self) -> InFlight {
        InFlight::of(&self.pending)
    }

    pub fn pending_status(&self) -> Vec<PendingStatus> {
        self.pending
            .iter()
            .map(|p| PendingStatus {
                action: p.action.clone(),
                issued_at: p.issued_at,
                outcome: p.outcome.as_ref().map(Outcome::to_string),
            })
            .collect()
    }

    pub fn refused_status(&self) -> Vec<RefusedStatus> {
        self.refused
            .iter()
            .map(|r| RefusedStatus {
                action: r.action.clone(),
                refused_at: r.at,
                refusal: r.refusal.kind(),
                why: r.refusal.to_string(),
            })
            .collect()
    }
}

/// The pending actions, indexed once per scene: a storm has hundreds, and every rank
/// looks its own up.
#[derive(Debug, Clone)]
pub(super) struct InFlight {
    /// What our pending drains and undrains will make of each rank, the latest winning;
    /// indexed by rank (a drain of 5,000 ranks is 5,000 stores, not 5,000 hashes), and
    /// empty while none is pending.
    drains: Vec<Intended>,
    shutdowns: HashSet<u32>,
    /// A delete is the same whatever its reason: keyed by the pod's uid.
    deletes: HashSet<String>,
    sizes: Vec<Action>,
    /// Ranks with a drain or undrain not answered yet: no other is sent for them until it
    /// is, so the resource module never has two for one rank to apply in either order.
    pub unanswered: IdSet,
}

/// What a rank's pending drains and undrains will make of it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Intended {
    Untouched,
    Drained(DrainKind),
    Undrained,
}

impl InFlight {
    /// Records that the ranks `ranks` will be `intended` once a pending request lands.
    fn intend(&mut self, ranks: &IdSet, intended: Intended) {
        let Some(last) = ranks.last() else { return };
        if self.drains.len() <= last as usize {
            self.drains.resize(last as usize + 1, Intended::Untouched);
        }
        for k in ranks.iter() {
            self.drains[k as usize] = intended;
        }
    }

    fn of(pending: &[Pending]) -> Self {
        let mut in_flight = InFlight {
            drains: Vec::new(),
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
                    in_flight.intend(ranks, Intended::Drained(kind));
                }
                Action::Flux(FluxAction::Undrain { .. }) => {
                    in_flight.intend(ranks, Intended::Undrained);
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

    /// The drain of rank `k` once our pending drains/undrains land, from the drain Flux
    /// holds now. A drain by others stays whatever we have in flight.
    pub fn intended_drain(&self, k: u32, now: Option<DrainKind>) -> Option<DrainKind> {
        let pending = self.drains.get(k as usize).copied();
        match (now, pending.unwrap_or(Intended::Untouched)) {
            (Some(DrainKind::Admin), _) | (_, Intended::Untouched) => now,
            (_, Intended::Undrained) => None,
            // Only our record of a retirement we saw is drained over (overwritten).
            (Some(DrainKind::OursObserved) | None, Intended::Drained(kind)) => Some(kind),
            (Some(ours), Intended::Drained(_)) => Some(ours),
        }
    }

    /// Whether `other` makes the same of every rank's drain: a scene made with either
    /// reads alike.
    pub fn drains_like(&self, other: &InFlight) -> bool {
        self.drains == other.drains
    }

    /// This move (shutdown, delete of the same pod, size change) is in flight.
    pub fn has_move(&self, action: &Action) -> bool {
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

/// The views show the pending action's effect (a drain or undrain: on the ranks it still
/// speaks for).
fn took_effect(pending: &Pending, flux: &FluxView, kube: &KubeView) -> bool {
    let drained = |k: u32| flux.rank(k).is_some_and(|r| r.drain.is_some());
    let ranks = &pending.speaks_for;
    match &pending.action {
        Action::Flux(FluxAction::Drain {
            reason,
            overwrite: true,
            ..
        }) => ranks.iter().all(|k| {
            flux.rank(k)
                .and_then(|r| r.drain.as_ref())
                .is_some_and(|d| *d.reason == **reason)
        }),
        Action::Flux(FluxAction::Drain { .. }) => ranks.iter().all(drained),
        Action::Flux(FluxAction::Undrain { .. }) => !ranks.iter().any(|k| {
            flux.rank(k)
                .and_then(|r| r.drain.as_ref())
                .is_some_and(|d| d.ours)
        }),
        Action::Flux(FluxAction::Shutdown { rank }) => !flux.rank(*rank).is_some_and(|r| r.online),
        // Only the index's own pods are read: a plan with deletes pending reads a few pods
        // each, not every pod of the view.
        Action::Kube(KubeAction::DeletePod { index, uid, .. }) => !kube
            .pods_of(*index)
            .iter()
            .any(|p| p.uid == *uid && p.is_live()),
        Action::Kube(KubeAction::SetSize { size, .. }) => settled_at(kube, *size),
        Action::Kube(KubeAction::RecordEvent { .. }) => true,
        Action::Kube(KubeAction::RecordDesiredSize { size }) => kube.records_desired_size(*size),
    }
}
