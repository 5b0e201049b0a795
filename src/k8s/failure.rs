//! What a failed Kubernetes request means for the driver: retry soon, retry slowly (RBAC),
//! or give up with an answer.

use kube::runtime::watcher;

/// The request that failed, named the way RBAC names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub verb: &'static str,
    pub resource: &'static str,
}

/// A failed request, sorted by what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The API server is unreachable, slow, overloaded or broke the connection: retry
    /// with backoff.
    Transient(String),
    /// 403: the Role lacks `verb` on `resource`. Retried slowly, since RBAC may be fixed.
    Forbidden { verb: String, resource: String },
    /// 404.
    NotFound,
    /// 409 (a precondition or resourceVersion did not match).
    Conflict(String),
    /// Any other refusal (400, 422, a request that cannot be built): retrying would not help.
    Rejected(String),
}

impl Failure {
    /// Sorts a client error; `request` names the verb and resource for a 403 whose message
    /// does not.
    pub fn classify(err: &kube::Error, request: Request) -> Self {
        match err {
            kube::Error::Api(status) => {
                Self::from_status(status.code, &status.message, &status.reason, request)
            }
            kube::Error::BuildRequest(e) => Self::Rejected(format!("bad request: {e}")),
            other => Self::Transient(other.to_string()),
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
            watcher::Error::NoResourceVersion => {
                Self::Transient("watch result without resourceVersion".to_owned())
            }
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
                Self::Forbidden { verb, resource }
            }
            404 => Self::NotFound,
            409 => Self::Conflict(detail()),
            // 401: a rotated token is re-read by the client within a minute (see mod.rs);
            // 410: a watch relists on its own; 408/429/5xx: the server asks us to come back.
            401 | 408 | 410 | 429 => Self::Transient(detail()),
            code if code >= 500 => Self::Transient(detail()),
            _ => Self::Rejected(detail()),
        }
    }

    /// One line for logs and the module's status.
    pub fn describe(&self) -> String {
        match self {
            Self::Transient(why) => why.clone(),
            Self::Forbidden { verb, resource } => forbidden_summary(verb, resource),
            Self::NotFound => "not found".to_owned(),
            Self::Conflict(why) | Self::Rejected(why) => why.clone(),
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

/// The status line for a 403, naming what the Role must grant.
pub fn forbidden_summary(verb: &str, resource: &str) -> String {
    format!("forbidden: the Role lacks '{verb}' on '{resource}'")
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
            Failure::Forbidden {
                verb: "delete".to_owned(),
                resource: "pods".to_owned()
            }
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
    fn status_codes_sort_into_retry_classes() {
        let class = |code| Failure::from_status(code, "m", "r", DELETE_PODS);
        assert!(matches!(class(500), Failure::Transient(_)));
        assert!(matches!(class(503), Failure::Transient(_)));
        assert!(matches!(class(429), Failure::Transient(_)));
        assert!(matches!(class(401), Failure::Transient(_)));
        assert_eq!(class(404), Failure::NotFound);
        assert!(matches!(class(409), Failure::Conflict(_)));
        assert!(matches!(class(422), Failure::Rejected(_)));
        assert!(matches!(class(400), Failure::Rejected(_)));
    }

    #[test]
    fn api_error_is_classified_through_its_status() {
        let status = kube::core::Status::failure("pods \"p\" not found", "NotFound").with_code(404);
        let err = kube::Error::Api(Box::new(status));
        assert_eq!(Failure::classify(&err, DELETE_PODS), Failure::NotFound);
    }
}
