//! How actions end, and what the Kubernetes driver tells the engine: the types both sides
//! share, so the sans-I/O engine and the planner never depend on the driver.

use std::time::Duration;

use serde::Serialize;

use super::kube::KubeView;

/// How an action ended: the one answer its executor gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done as asked. The views still have to show it (a dry run is done and changes
    /// nothing).
    Done,
    /// Not done; the same action may work if issued again later.
    Retryable(Retry),
    /// Not done, and issuing it again as it was cannot work: plan again from the views.
    Refused(Refusal),
}

/// Why an action that did not land may land later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// The API server or the broker could not be reached, or the connection broke.
    Unreachable(String),
    /// The server failed or shed load (5xx, 429): it asks to be asked again.
    ServerError(String),
    /// No answer in time.
    Timeout(String),
    /// 403: the Role lacks `verb` on `resource`; an administrator can grant it.
    Forbidden { verb: String, resource: String },
    /// The target changed under the request (409, or a rank not in the state the request
    /// assumed): the next try sees it as it is.
    Conflict(String),
    /// The executor stopped before it finished (the driver restarted or shut down).
    Abandoned(String),
}

/// Why an action can never land as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request is wrong for its target (400, 422, a malformed RPC), or one fluxk8s
    /// never sends (index 0, a pod its Job does not own, a size above `maxSize`).
    Invalid(String),
    /// The pod chosen is not there any more; `current_uid` is the pod now holding its
    /// name, if any. Nothing was deleted.
    Replaced { current_uid: Option<String> },
    /// The object to change does not exist (404).
    NotFound(String),
}

impl From<Retry> for Outcome {
    fn from(retry: Retry) -> Self {
        Outcome::Retryable(retry)
    }
}

impl From<Refusal> for Outcome {
    fn from(refusal: Refusal) -> Self {
        Outcome::Refused(refusal)
    }
}

/// `ok`, or `retryable: <why>` / `refused: <why>`: one line for logs and the status.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Done => f.write_str("ok"),
            Outcome::Retryable(retry) => write!(f, "retryable: {retry}"),
            Outcome::Refused(refusal) => write!(f, "refused: {refusal}"),
        }
    }
}

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retry::Unreachable(why) => write!(f, "unreachable: {why}"),
            Retry::ServerError(why) => write!(f, "server error: {why}"),
            Retry::Timeout(why) => write!(f, "timeout: {why}"),
            Retry::Forbidden { verb, resource } => {
                write!(f, "forbidden: the Role lacks '{verb}' on '{resource}'")
            }
            Retry::Conflict(why) => write!(f, "conflict: {why}"),
            Retry::Abandoned(why) => write!(f, "abandoned: {why}"),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(why) => write!(f, "invalid: {why}"),
            Refusal::Replaced { current_uid } => write!(
                f,
                "pod was replaced (now uid {})",
                current_uid.as_deref().unwrap_or("none")
            ),
            Refusal::NotFound(what) => write!(f, "not found: {what}"),
        }
    }
}

impl Refusal {
    /// The kind, as the status names it.
    pub fn kind(&self) -> RefusalKind {
        match self {
            Refusal::Invalid(_) => RefusalKind::Invalid,
            Refusal::Replaced { .. } => RefusalKind::Replaced,
            Refusal::NotFound(_) => RefusalKind::NotFound,
        }
    }
}

/// [`Refusal`] without its detail, for the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalKind {
    Invalid,
    Replaced,
    NotFound,
}

/// A current trouble of the driver, for the module's status and `flux dmesg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is affected, e.g. `watch pods` or `command 7`; a later [`Report::Cleared`]
    /// with the same area ends it.
    pub area: String,
    /// What went wrong; for a 403, which verb on which resource the Role lacks.
    pub what: String,
    /// A 403: an administrator has to fix RBAC.
    pub forbidden: bool,
    /// When the next attempt is made, if one is scheduled.
    pub retrying_in: Option<Duration>,
}

/// What the Kubernetes driver tells the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A full snapshot after a change; one the engine has not taken yet is replaced by
    /// the next.
    View(Box<KubeView>),
    /// Every watch has listed once; sent once, right after the first [`Report::View`].
    Synced,
    /// The one answer to the command `id`.
    Finished { id: u64, outcome: Outcome },
    /// Something is wrong (and being retried, if `retrying_in` says so).
    Problem(Problem),
    /// The driver panicked and started afresh (`restarts` so far): commands it was
    /// carrying out are lost, and a fresh view and [`Report::Synced`] follow.
    Restarted { restarts: u32 },
    /// The problem in `area` is over.
    Cleared { area: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_reads_as_its_kind_and_reason() {
        let said = |outcome: Outcome| outcome.to_string();
        assert_eq!(said(Outcome::Done), "ok");
        assert_eq!(
            said(Retry::Unreachable("connection refused".into()).into()),
            "retryable: unreachable: connection refused"
        );
        assert_eq!(
            said(Retry::ServerError("HTTP 503: down".into()).into()),
            "retryable: server error: HTTP 503: down"
        );
        assert_eq!(
            said(Retry::Timeout("no answer within 15s".into()).into()),
            "retryable: timeout: no answer within 15s"
        );
        let forbidden = Retry::Forbidden {
            verb: "delete".into(),
            resource: "pods".into(),
        };
        assert_eq!(
            said(forbidden.into()),
            "retryable: forbidden: the Role lacks 'delete' on 'pods'"
        );
        assert_eq!(
            said(Refusal::Invalid("HTTP 422: spec.size: Invalid value".into()).into()),
            "refused: invalid: HTTP 422: spec.size: Invalid value"
        );
        let replaced = Refusal::Replaced {
            current_uid: Some("uid-9".into()),
        };
        assert_eq!(replaced.kind(), RefusalKind::Replaced);
        assert_eq!(
            said(replaced.into()),
            "refused: pod was replaced (now uid uid-9)"
        );
        assert_eq!(
            said(Refusal::NotFound("MiniCluster mc".into()).into()),
            "refused: not found: MiniCluster mc"
        );
    }
}
