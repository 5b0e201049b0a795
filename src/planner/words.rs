//! The one place the plan is put into words: each rank's verdict and each hold, written
//! only when a status asks.

use std::borrow::Cow;

use super::rank_map::RankMap;
use super::rate::MOVES_PER_PASS;
use super::reconciler::Reconciler;
use super::scene::{Finished, Frozen};
use super::status::{RankRuns, Why};
use super::verdict::{DrainedBy, GrowthHold, Hold, Leaving, ShrinkHold, SizeChange, Verdict};
use crate::model::queue::Occupancy;

/// Texts made for verdicts that share them are looked up among this many recent ones:
/// enough for the few kinds a storm has (999 ranks starting together, or retired), and a
/// bounded search per rank.
const RECENT_TEXTS: usize = 8;

impl Reconciler {
    /// Each rank's phase and why, from the runs of ranks with one verdict.
    pub(super) fn rank_words(
        &self,
        verdicts: &RankMap<Verdict>,
        occupancy: &Occupancy,
        frozen: Option<&str>,
        now: f64,
    ) -> RankRuns {
        // Only retiring busy ranks name their jobs, from one pass over the jobs.
        let mut last_to_end = None;
        let mut made: Vec<(Verdict, Why)> = Vec::new();
        let mut ranks = RankRuns::default();
        for (first, last, verdict) in verdicts.runs() {
            if verdict == Verdict::Leaving(Leaving::Busy) {
                // Named per rank: the job whose time limit ends last.
                let ends = last_to_end.get_or_insert_with(|| occupancy.last_to_end());
                for k in first..=last {
                    let job = ends.get(&k).map_or(String::new(), |a| {
                        let until = a.expiration.map_or("no time limit".to_owned(), |t| {
                            format!("until {}", utc_clock(t))
                        });
                        format!(" ({until}, job {})", a.job)
                    });
                    let why = Why::from(self.leaving_words(Leaving::Busy, frozen, &job));
                    ranks.push(k, k, verdict.phase(), why);
                }
                continue;
            }
            let recent = made.len().saturating_sub(RECENT_TEXTS);
            let why = match made[recent..].iter().find(|(v, _)| *v == verdict) {
                Some((_, text)) => text.clone(),
                None => {
                    let text = Why::from(self.verdict_words(verdict, frozen, now));
                    made.push((verdict, text.clone()));
                    text
                }
            };
            ranks.push(first, last, verdict.phase(), why);
        }
        ranks
    }

    /// A verdict that reads the same for every rank that has it.
    fn verdict_words(&self, verdict: Verdict, frozen: Option<&str>, now: f64) -> Cow<'static, str> {
        match verdict {
            Verdict::Leader => "leader: runs fluxk8s, never retired".into(),
            Verdict::Retired { finished, drained } => {
                let why = match finished {
                    Some(finished) => finished.words(),
                    None => "above size",
                };
                let drained = match drained {
                    None => "",
                    Some(DrainedBy::Others) => ", drained by others",
                    Some(DrainedBy::Fluxk8s) => ", drained by fluxk8s",
                };
                format!("retired: {why}{drained}").into()
            }
            Verdict::Leaving(leaving) => self.leaving_words(leaving, frozen, ""),
            Verdict::Up => "up".into(),
            Verdict::BackOnline => "back online: lifting the fluxk8s lost drain".into(),
            Verdict::BackAboveSize => {
                "back above the size: lifting the fluxk8s retired drain".into()
            }
            Verdict::LostDrained => {
                "lost: drained by fluxk8s, waiting for the pod to come back".into()
            }
            Verdict::LostDraining => "lost: draining".into(),
            Verdict::Protected => "drained, kept: protected".into(),
            Verdict::Starting { since } => format!(
                "starting for {:.0}s (startup-timeout {}s)",
                (now - since).max(0.0),
                self.config.startup_timeout
            )
            .into(),
            Verdict::NeverOnline => "never came online: draining".into(),
        }
    }

    /// `job` names what a busy rank waits for (empty when nothing does).
    fn leaving_words(
        &self,
        leaving: Leaving,
        frozen: Option<&str>,
        job: &str,
    ) -> Cow<'static, str> {
        match leaving {
            Leaving::Draining => "draining".into(),
            Leaving::WaitingForJobManager => format!(
                "draining: waiting for the job-manager to say if it runs jobs{}",
                self.grace_words()
            )
            .into(),
            Leaving::Busy => {
                format!("draining: busy{job}, waiting idle{}", self.grace_words()).into()
            }
            Leaving::SizeLowered { base } => format!("leaving: size lowered to {base}").into(),
            Leaving::Frozen => {
                format!("drained, removal frozen: {}", frozen.unwrap_or_default()).into()
            }
            Leaving::ShutdownSent => {
                "leaving: broker told to shut down (exit 0 completes its index)".into()
            }
            Leaving::PodCompleting => {
                "leaving: broker shut down, waiting for its pod to complete".into()
            }
            Leaving::DeletingPod => "leaving: deleting its pod (backoffLimitPerIndex 0)".into(),
            Leaving::IndexFinishing => "leaving: waiting for its index to finish".into(),
            Leaving::KeptRestarted { shutdowns } => format!(
                "drained, kept: its broker came back after {shutdowns} clean shutdowns (the \
                 pod restarts it)"
            )
            .into(),
            Leaving::KeptNoWayOut => "drained, kept: its broker is not online to be shut \
                                      down, and a deleted pod would be recreated"
                .into(),
        }
    }

    /// ` or Ns` when a drain grace is set.
    fn grace_words(&self) -> String {
        match self.config.drain_grace {
            Some(grace) => format!(" or {grace}s"),
            None => String::new(),
        }
    }

    /// One line per hold, in the order the pass met them.
    pub(super) fn hold_words(&self, holds: &[Hold], frozen: Option<&str>) -> Vec<String> {
        holds
            .iter()
            .map(|hold| match hold {
                Hold::Growth { need, why } => {
                    format!("growth by {need}: {}", growth_hold_words(why))
                }
                Hold::Shrink { target, why } => match why {
                    ShrinkHold::Frozen => {
                        format!(
                            "shrink to {target}: frozen ({})",
                            frozen.unwrap_or_default()
                        )
                    }
                    ShrinkHold::CooldownAfterGrow => {
                        format!("shrink to {target}: cooldown after a grow")
                    }
                    ShrinkHold::OccupancyUnknown => format!(
                        "shrink to {target}: waiting for the job-manager to say which ranks \
                         run jobs"
                    ),
                },
                Hold::Kept { ranks, why } => {
                    format!("ranks {ranks}: {}", self.leaving_words(*why, frozen, ""))
                }
                Hold::DrainStateInFlight { ranks } => format!(
                    "ranks {ranks}: a drain or undrain is in flight; correcting once it is \
                     answered"
                ),
                Hold::SizeInFlight {
                    size,
                    why,
                    in_flight,
                } => format!(
                    "size {size} ({}): size change to {in_flight} in flight",
                    self.size_change_words(*why)
                ),
                Hold::RateLimit { per_minute, held } => format!(
                    "rate limit (max-actions-per-minute {per_minute}): holding {held} \
                     removal(s) or size change(s)"
                ),
                Hold::NextPass { moves } => format!(
                    "{moves} more removal(s) in the next pass (at most {MOVES_PER_PASS} a pass)"
                ),
            })
            .collect()
    }

    /// Why the size changes, as its patch and the status say it.
    pub(super) fn size_change_words(&self, why: SizeChange) -> &str {
        match why {
            SizeChange::Recycle => "recycle retired indexes before growing",
            SizeChange::Grow => self.grow_reason.as_deref().unwrap_or("grow"),
            SizeChange::RetireHighest => "retire the highest ranks",
        }
    }

    pub(super) fn frozen_words(&self, frozen: Frozen) -> String {
        format!(
            "{} of {} ranks lost, more than max-lost-fraction {}",
            frozen.lost, frozen.active, self.config.max_lost_fraction
        )
    }
}

fn growth_hold_words(why: &GrowthHold) -> Cow<'static, str> {
    match why {
        GrowthHold::BackingOff { failures, until } => {
            format!("backing off after {failures} failed start(s) until t={until}").into()
        }
        GrowthHold::CooldownAfterShrink => "cooldown after a shrink".into(),
        GrowthHold::OthersSize { manager, size } => format!(
            "the size is {manager}'s ({size}): fluxk8s changes it only for a request from Flux"
        )
        .into(),
        GrowthHold::SizeInFlight { size } => format!("size change to {size} in flight").into(),
        GrowthHold::JobNotAt { size } => format!("waiting for the Job to reach size {size}").into(),
        GrowthHold::NoIndexLeft => "no index left that can run".into(),
    }
}

impl Finished {
    /// Why the index does not run; also the end of the drain reason that records it.
    pub(super) fn words(self) -> &'static str {
        match self {
            Finished::Completed => "index completed",
            Finished::Failed => "index failed",
        }
    }
}

/// `HH:MM UTC` of a time in seconds since the epoch: when a job's time limit ends.
fn utc_clock(epoch: f64) -> String {
    let minutes = (epoch.max(0.0) / 60.0) as u64;
    format!("{:02}:{:02} UTC", minutes / 60 % 24, minutes % 60)
}
