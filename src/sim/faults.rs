//! Fault injection: per verb and resource, fail the next N requests with a code, forbid
//! a verb until cleared, or hold requests unanswered until released; and add latency to
//! every call. Rules are checked before a request touches the state, like authorization
//! and a failing API server would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::status::ApiError;

/// The API verbs, as RBAC names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
}

impl Verb {
    /// The verbs that change state.
    pub const WRITES: [Verb; 4] = [Verb::Create, Verb::Update, Verb::Patch, Verb::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

/// What a request is about, for fault rules and the request log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget {
    pub verb: Verb,
    /// `pods`, `pods/eviction`, `miniclusters/scale`, ...
    pub resource: String,
    /// API group of the resource (`""` for core).
    pub group: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug)]
struct FailNext {
    verbs: Vec<Verb>,
    resource: String,
    remaining: u32,
    code: u16,
}

/// The active fault rules.
#[derive(Debug, Default)]
pub(crate) struct FaultRules {
    fail_next: Vec<FailNext>,
    forbidden: BTreeSet<(Verb, String)>,
    /// Requests with these verbs and resources wait unanswered until released.
    hold: BTreeSet<(Verb, String)>,
    /// Requests waiting under a hold now, by verb and resource.
    held: BTreeMap<(Verb, String), usize>,
    pub(crate) latency: Duration,
}

impl FaultRules {
    /// The error to answer `target` with instead of serving it, if any; consumes one
    /// "fail next" count.
    pub(crate) fn check(&mut self, target: &RequestTarget, user: &str) -> Option<ApiError> {
        if self
            .forbidden
            .contains(&(target.verb, target.resource.clone()))
        {
            return Some(forbidden(target, user));
        }
        let rule = self.fail_next.iter_mut().find(|rule| {
            rule.remaining > 0
                && rule.resource == target.resource
                && rule.verbs.contains(&target.verb)
        })?;
        rule.remaining -= 1;
        let code = rule.code;
        self.fail_next.retain(|rule| rule.remaining > 0);
        Some(injected(code, target))
    }
}

fn qualified_resource(target: &RequestTarget) -> String {
    let base = target.resource.split('/').next().unwrap_or_default();
    if target.group.is_empty() {
        base.to_owned()
    } else {
        format!("{base}.{}", target.group)
    }
}

/// The authorizer's 403, worded as the API server words it.
fn forbidden(target: &RequestTarget, user: &str) -> ApiError {
    let subject = match &target.name {
        Some(name) => format!("{} \"{name}\"", qualified_resource(target)),
        None => qualified_resource(target),
    };
    let scope = match &target.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_owned(),
    };
    let mut error = ApiError::new(
        403,
        "Forbidden",
        format!(
            "{subject} is forbidden: User \"{user}\" cannot {} resource \"{}\" in API group \"{}\"{scope}",
            target.verb.as_str(),
            target.resource,
            target.group
        ),
    );
    if let Some(name) = &target.name {
        let plural = target.resource.split('/').next().unwrap_or_default();
        error.details = Some((name.clone(), plural.to_owned()));
    }
    error
}

/// Waits while a hold covers `target`'s verb and resource, counted in
/// [`Faults::held`] meanwhile (also when the wait is dropped: the client went away, or
/// the server stopped).
pub(crate) async fn wait_while_held(shared: &Shared, target: &RequestTarget) {
    struct Counted<'a>(&'a Shared, (Verb, String));
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            let mut rules = self.0.faults();
            if let Some(count) = rules.held.get_mut(&self.1) {
                *count -= 1;
                if *count == 0 {
                    rules.held.remove(&self.1);
                }
            }
        }
    }

    let key = (target.verb, target.resource.clone());
    let mut counted = None;
    loop {
        // Made before the check: a release between the two still wakes it.
        let released = shared.released.notified();
        let holding = {
            let mut rules = shared.faults();
            let holding = rules.hold.contains(&key);
            if holding && counted.is_none() {
                *rules.held.entry(key.clone()).or_default() += 1;
            }
            holding
        };
        if !holding {
            return;
        }
        counted.get_or_insert_with(|| Counted(shared, key.clone()));
        released.await;
    }
}

/// An injected failure with the reason and message the API server uses for that code.
fn injected(code: u16, target: &RequestTarget) -> ApiError {
    let resource = qualified_resource(target);
    let name = target.name.as_deref().unwrap_or_default();
    match code {
        409 => ApiError::modified(&resource, name),
        429 => ApiError::new(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        ),
        503 => ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => ApiError::new(
            504,
            "Timeout",
            "the server was unable to return a response in the time allotted",
        ),
        _ => ApiError::new(
            code,
            "InternalError",
            "Internal error occurred: injected fault",
        ),
    }
}

/// The fault-injection handle of a running [`super::SimCluster`].
#[derive(Clone)]
pub struct Faults {
    pub(crate) shared: Arc<Shared>,
}

impl Faults {
    /// The next `count` requests with one of `verbs` on `resource` fail with `code`
    /// (500, 503, 409, 429, ...).
    pub fn fail_next(&self, verbs: &[Verb], resource: &str, count: u32, code: u16) {
        self.shared.faults().fail_next.push(FailNext {
            verbs: verbs.to_vec(),
            resource: resource.to_owned(),
            remaining: count,
            code,
        });
    }

    /// `verb` on `resource` gets 403 Forbidden until [`Faults::allow`] or [`Faults::clear`].
    pub fn forbid(&self, verb: Verb, resource: &str) {
        self.shared
            .faults()
            .forbidden
            .insert((verb, resource.to_owned()));
    }

    pub fn allow(&self, verb: Verb, resource: &str) {
        self.shared
            .faults()
            .forbidden
            .remove(&(verb, resource.to_owned()));
    }

    /// Added before every request is served.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults().latency = latency;
    }

    /// Requests with `verb` on `resource` are received but not answered until
    /// [`Faults::release`] or [`Faults::clear`], as by a server that hangs on them.
    pub fn hold(&self, verb: Verb, resource: &str) {
        self.shared
            .faults()
            .hold
            .insert((verb, resource.to_owned()));
    }

    /// Ends the hold on `verb` on `resource`: the requests it held are served now.
    pub fn release(&self, verb: Verb, resource: &str) {
        self.shared
            .faults()
            .hold
            .remove(&(verb, resource.to_owned()));
        self.shared.released.notify_waiters();
    }

    /// Requests with `verb` on `resource` received and being held now: a test waits for
    /// this to know a request is in flight.
    pub fn held(&self, verb: Verb, resource: &str) -> usize {
        let key = (verb, resource.to_owned());
        self.shared.faults().held.get(&key).copied().unwrap_or(0)
    }

    /// Removes every rule and the latency, and serves the held requests.
    pub fn clear(&self) {
        let mut rules = self.shared.faults();
        *rules = FaultRules {
            // Still held until their handlers wake and count themselves out.
            held: std::mem::take(&mut rules.held),
            ..FaultRules::default()
        };
        drop(rules);
        self.shared.released.notify_waiters();
    }

    /// Closes every open watch stream now (as an API server restart would); clients
    /// resume from their last resourceVersion.
    pub fn drop_watches(&self) {
        self.shared.with_state(|state| state.store.drop_watches());
    }

    /// Forgets the change history (etcd compaction): a watch resuming from any earlier
    /// resourceVersion gets a 410 Expired ERROR event, and the client must relist.
    pub fn expire_history(&self) {
        self.shared.with_state(|state| state.store.compact());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(verb: Verb, resource: &str, group: &str, name: Option<&str>) -> RequestTarget {
        RequestTarget {
            verb,
            resource: resource.into(),
            group: group.into(),
            namespace: Some("default".into()),
            name: name.map(Into::into),
        }
    }

    #[test]
    fn forbidden_message_has_the_authorizer_shape() {
        let mut rules = FaultRules::default();
        rules.forbidden.insert((Verb::Delete, "pods".into()));
        let err = rules
            .check(
                &target(Verb::Delete, "pods", "", Some("x")),
                "system:serviceaccount:default:flux-k8s",
            )
            .unwrap();
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "pods \"x\" is forbidden: User \"system:serviceaccount:default:flux-k8s\" cannot \
             delete resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let err = rules.check(&target(Verb::Delete, "pods", "", None), "u");
        assert!(err.is_some());
        assert!(
            rules
                .check(&target(Verb::Get, "pods", "", Some("x")), "u")
                .is_none()
        );
    }

    #[test]
    fn fail_next_counts_down_per_verb_and_resource() {
        let mut rules = FaultRules::default();
        rules.fail_next.push(FailNext {
            verbs: vec![Verb::Patch],
            resource: "miniclusters".into(),
            remaining: 2,
            code: 503,
        });
        let patch = target(Verb::Patch, "miniclusters", "flux-framework.org", Some("m"));
        assert!(
            rules
                .check(
                    &target(Verb::Get, "miniclusters", "flux-framework.org", Some("m")),
                    "u"
                )
                .is_none()
        );
        assert_eq!(
            rules.check(&patch, "u").unwrap().reason,
            "ServiceUnavailable"
        );
        assert_eq!(rules.check(&patch, "u").unwrap().code, 503);
        assert!(rules.check(&patch, "u").is_none(), "only the next two fail");
    }
}
