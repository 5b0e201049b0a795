//! The drain reasons fluxk8s writes, and how it reads them back after a restart: the
//! reason is the only memory that survives one, so each kind has a fixed wording.

use std::sync::Arc;

use crate::model::DRAIN_REASON_PREFIX;
use crate::model::flux::Drain;

const LOST: &str = "fluxk8s: pod lost";
/// The start of [`still_retired`]'s reasons.
const OBSERVED: &str = "fluxk8s: retired (";

/// Who drained a rank, and for what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainKind {
    /// Someone else (an administrator): the rank must go, and the drain stays theirs.
    Admin,
    /// fluxk8s, because the pod vanished; lifted when the rank is back online.
    OursLost,
    /// fluxk8s, to retire the rank.
    OursRetire,
    /// fluxk8s, recording a retirement it only saw (the rank is above a size someone else
    /// set, or its index finished): not an intent, lifted when the rank runs again.
    OursObserved,
}

/// Classifies a drain reason.
pub(crate) fn kind_of_reason(reason: &str) -> DrainKind {
    if !reason.starts_with(DRAIN_REASON_PREFIX) {
        DrainKind::Admin
    } else if reason.starts_with(LOST) {
        DrainKind::OursLost
    } else if reason.starts_with(OBSERVED) {
        DrainKind::OursObserved
    } else {
        DrainKind::OursRetire
    }
}

/// Classifies the drains Flux holds, rank after rank. The ranks of one drain event share
/// its reason, so a pass over 10,000 drained ranks reads the reason once per event, not
/// once per rank.
#[derive(Default)]
pub(crate) struct DrainKinds {
    last: Option<(Arc<str>, DrainKind)>,
}

impl DrainKinds {
    pub fn of(&mut self, drain: &Drain) -> DrainKind {
        match &self.last {
            Some((reason, kind)) if Arc::ptr_eq(reason, &drain.reason) => *kind,
            _ => {
                let kind = kind_of_reason(&drain.reason);
                self.last = Some((Arc::clone(&drain.reason), kind));
                kind
            }
        }
    }
}

pub(crate) fn pod_lost() -> String {
    LOST.to_owned()
}

pub(crate) fn resize(size: u32) -> String {
    format!("{DRAIN_REASON_PREFIX} retired by resize to {size}")
}

pub(crate) fn by_request() -> String {
    format!("{DRAIN_REASON_PREFIX} retired by request")
}

pub(crate) fn never_online(timeout: f64) -> String {
    format!("{DRAIN_REASON_PREFIX} never came online within {timeout}s")
}

pub(crate) fn autoscale_idle(idle_timeout: f64) -> String {
    format!("{DRAIN_REASON_PREFIX} autoscale: idle for over {idle_timeout}s")
}

/// A rank seen retired (`why`: above the size, index completed or failed) with no drain:
/// after someone else lowered the size, or after a restart lost the drain.
pub(crate) fn still_retired(why: &str) -> String {
    format!("{OBSERVED}{why})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_we_write_reads_back_as_ours_with_its_kind() {
        assert_eq!(kind_of_reason(&pod_lost()), DrainKind::OursLost);
        for reason in [
            resize(3),
            by_request(),
            never_online(300.0),
            autoscale_idle(300.0),
        ] {
            assert!(reason.starts_with(DRAIN_REASON_PREFIX), "{reason}");
            assert_eq!(kind_of_reason(&reason), DrainKind::OursRetire, "{reason}");
        }
        for why in ["above size", "index completed"] {
            assert_eq!(kind_of_reason(&still_retired(why)), DrainKind::OursObserved);
        }
        assert_eq!(still_retired("above size"), "fluxk8s: retired (above size)");
        assert_eq!(kind_of_reason("bad disk"), DrainKind::Admin);
        assert_eq!(kind_of_reason(""), DrainKind::Admin);
        assert_eq!(
            never_online(300.0),
            "fluxk8s: never came online within 300s"
        );
    }

    #[test]
    fn drain_kinds_follow_each_reason_shared_or_not() {
        let drain = |reason: &Arc<str>| Drain {
            reason: Arc::clone(reason),
            timestamp: 0.0,
            ours: reason.starts_with(DRAIN_REASON_PREFIX),
        };
        let lost: Arc<str> = pod_lost().into();
        let admin: Arc<str> = "bad disk".into();
        // The same text in a second string (another drain event) reads alike.
        let lost_again: Arc<str> = pod_lost().into();
        let mut kinds = DrainKinds::default();
        let read: Vec<DrainKind> = [&lost, &lost, &admin, &lost_again, &admin]
            .into_iter()
            .map(|reason| kinds.of(&drain(reason)))
            .collect();
        use DrainKind::{Admin, OursLost};
        assert_eq!(read, [OursLost, OursLost, Admin, OursLost, Admin]);
    }
}
