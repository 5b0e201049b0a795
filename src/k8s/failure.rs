//! What a failed Kubernetes request means: retry soon, retry slowly (RBAC), or give up
//! with a typed answer ([`Retry`] or [`Refusal`]) for the planner.

use kube::runtime::watcher;

use crate::model::{Outcome, Refusal, Retry};

/// The request that failed, named the way RBAC names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub verb: &'static str,
    pub resource: &'static str,
}

/// A failed request: one the driver retries (transient or forbidden), returns to the
/// planner to try again (a conflict), or answers as refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Retryable(Retry),
    Refused(Refusal),
}

impl From<Failure> for Outcome {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Retryable(retry) => Outcome::Retryable(retry),
            Failure::Refused(refusal) => Outcome::Refused(refusal),
        }
    }
}

impl Failure {
    /// Sorts a client error; `request` names the verb and resource for a 403 whose message
    /// does not.
    pub fn classify(err: &kube::Error, request: Request) -> Self {
        match err {
            kube::Error::Api(status) => {
                Self::from_status(status.code, &status.message, &status.reason, request)
            }
            kube::Error::BuildRequest(e) => {
                Self::Refused(Refusal::Invalid(format!("bad request: {e}")))
            }
            other => Self::Retryable(Retry::Unreachable(other.to_string())),
        }
    }

    /// Sorts a watcher error; a failed initial list counts as the `list` verb.
    pub fn classify_watch(err: &watcher::Error, resource: &'static str) -> Self {
        let list = Request {
            verb: "list",
            resource,
        };
        let watch = Request {
            verb: "watch",
            resource,
        };
        match err {
            watcher::Error::InitialListFailed(e) => Self::classify(e, list),
            watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
                Self::classify(e, watch)
            }
            watcher::Error::WatchError(status) => {
                Self::from_status(status.code, &status.message, &status.reason, watch)
            }
            watcher::Error::NoResourceVersion => Self::Retryable(Retry::ServerError(
                "watch result without resourceVersion".to_owned(),
            )),
        }
    }

    fn from_status(code: u16, message: &str, reason: &str, request: Request) -> Self {
        let detail = || {
            if message.is_empty() {
                format!("HTTP {code} {reason}")
            } else {
                format!("HTTP {code}: {message}")
            }
        };
        match code {
            403 => {
                let (verb, resource) = forbidden_verb_resource(message)
                    .unwrap_or_else(|| (request.verb.to_owned(), request.resource.to_owned()));
                Self::Retryable(Retry::Forbidden { verb, resource })
            }
            404 => Self::Refused(Refusal::NotFound(detail())),
            409 => Self::Retryable(Retry::Conflict(detail())),
            408 => Self::Retryable(Retry::Timeout(detail())),
            // 401: a rotated token is re-read by the client within a minute (see mod.rs);
            // 410: a watch relists on its own; 429/5xx: the server asks us to come back.
            401 | 410 | 429 => Self::Retryable(Retry::ServerError(detail())),
            code if code >= 500 => Self::Retryable(Retry::ServerError(detail())),
            _ => Self::Refused(Refusal::Invalid(detail())),
        }
    }

    /// Not a refusal: trying the same request again after a pause may work.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Retryable(Retry::Unreachable(_) | Retry::ServerError(_) | Retry::Timeout(_))
        )
    }

    /// 403: retried slowly, until an administrator fixes the Role.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::Retryable(Retry::Forbidden { .. }))
    }

    /// 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Refused(Refusal::NotFound(_)))
    }

    /// One line for logs and the module's status: what the server said (for a 403, what
    /// the Role lacks).
    pub fn describe(&self) -> String {
        match self {
            Self::Retryable(
                Retry::Unreachable(why)
                | Retry::ServerError(why)
                | Retry::Timeout(why)
                | Retry::Conflict(why)
                | Retry::Abandoned(why),
            )
            | Self::Refused(Refusal::Invalid(why)) => why.clone(),
            Self::Retryable(forbidden @ Retry::Forbidden { .. }) => forbidden.to_string(),
            Self::Refused(Refusal::NotFound(_)) => "not found".to_owned(),
            Self::Refused(replaced @ Refusal::Replaced { .. }) => replaced.to_string(),
        }
    }
}

/// Pulls verb and resource out of the API server's 403 message, e.g. `pods "x" is
/// forbidden: User "system:serviceaccount:ns:sa" cannot delete resource "pods" in API group
/// "" in the namespace "ns"` gives `("delete", "pods")`.
pub fn forbidden_verb_resource(message: &str) -> Option<(String, String)> {
    let after_cannot = message.split_once(" cannot ")?.1;
    let (verb, rest) = after_cannot.split_once(' ')?;
    let quoted = rest.strip_prefix("resource \"")?;
    let (resource, _) = quoted.split_once('"')?;
    if verb.is_empty() || resource.is_empty() {
        return None;
    }
    Some((verb.to_owned(), resource.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELETE_PODS: Request = Request {
        verb: "delete",
        resource: "pods",
    };

    #[test]
    fn forbidden_message_names_verb_and_resource() {
        let msg = "pods \"flux-sample-3-x\" is forbidden: User \
                   \"system:serviceaccount:default:flux-k8s\" cannot delete resource \"pods\" in \
                   API group \"\" in the namespace \"default\"";
        assert_eq!(
            forbidden_verb_resource(msg),
            Some(("delete".to_owned(), "pods".to_owned()))
        );
    }

    #[test]
    fn forbidden_message_with_subresource_and_group() {
        let msg = "miniclusters.flux-framework.org \"flux-sample\" is forbidden: User \"u\" \
                   cannot patch resource \"miniclusters/scale\" in API group \
                   \"flux-framework.org\" in the namespace \"ns\"";
        assert_eq!(
            forbidden_verb_resource(msg),
            Some(("patch".to_owned(), "miniclusters/scale".to_owned()))
        );
    }

    #[test]
    fn unparsable_forbidden_message_falls_back_to_the_request() {
        assert_eq!(forbidden_verb_resource("access denied"), None);
        assert_eq!(
            Failure::from_status(403, "access denied", "Forbidden", DELETE_PODS),
            Failure::Retryable(Retry::Forbidden {
                verb: "delete".to_owned(),
                resource: "pods".to_owned()
            })
        );
    }

    #[test]
    fn forbidden_summary_reads_as_an_rbac_hint() {
        let failure = Failure::from_status(
            403,
            "jobs \"j\" is forbidden: User \"u\" cannot watch resource \"jobs\" in API group \
             \"batch\"",
            "Forbidden",
            DELETE_PODS,
        );
        assert_eq!(
            failure.describe(),
            "forbidden: the Role lacks 'watch' on 'jobs'"
        );
    }

    #[test]
    fn status_codes_sort_into_retryable_and_refused() {
        let class = |code| Failure::from_status(code, "m", "r", DELETE_PODS);
        let retry = |code| match class(code) {
            Failure::Retryable(retry) => retry,
            refused => panic!("HTTP {code} refused: {refused:?}"),
        };
        let refusal = |code| match class(code) {
            Failure::Refused(refusal) => refusal,
            retryable => panic!("HTTP {code} retryable: {retryable:?}"),
        };
        assert_eq!(retry(500), Retry::ServerError("HTTP 500: m".into()));
        assert_eq!(retry(503), Retry::ServerError("HTTP 503: m".into()));
        assert_eq!(retry(429), Retry::ServerError("HTTP 429: m".into()));
        assert_eq!(retry(401), Retry::ServerError("HTTP 401: m".into()));
        assert_eq!(retry(408), Retry::Timeout("HTTP 408: m".into()));
        assert_eq!(retry(409), Retry::Conflict("HTTP 409: m".into()));
        assert!(matches!(retry(403), Retry::Forbidden { .. }));
        assert_eq!(refusal(404), Refusal::NotFound("HTTP 404: m".into()));
        assert_eq!(refusal(422), Refusal::Invalid("HTTP 422: m".into()));
        assert_eq!(refusal(400), Refusal::Invalid("HTTP 400: m".into()));
        assert!(class(503).is_transient() && !class(409).is_transient());
        assert!(class(403).is_forbidden() && !class(403).is_transient());
        assert!(class(404).is_not_found());
    }

    #[test]
    fn an_unreachable_server_is_retryable() {
        let err = kube::Error::Service("connection refused".into());
        let failure = Failure::classify(&err, DELETE_PODS);
        assert!(
            matches!(&failure, Failure::Retryable(Retry::Unreachable(why)) if why.contains("connection refused")),
            "{failure:?}"
        );
        assert!(failure.is_transient());
    }

    #[test]
    fn api_error_is_classified_through_its_status() {
        let status = kube::core::Status::failure("pods \"p\" not found", "NotFound").with_code(404);
        let err = kube::Error::Api(Box::new(status));
        assert!(Failure::classify(&err, DELETE_PODS).is_not_found());
    }
}
