//! The resources the sim serves: their API group, version, names, and how a stored object
//! is validated (a round trip through its typed form, which also prunes unknown fields the
//! way a structural schema does).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::api::events::v1::Event as EventV1;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::operator::MiniCluster;

/// A served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Job,
    MiniCluster,
    /// `core/v1` Event.
    Event,
    /// `events.k8s.io/v1` Event (stored apart from core events in the sim).
    EventV1,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Pod,
        Kind::Job,
        Kind::MiniCluster,
        Kind::Event,
        Kind::EventV1,
    ];

    /// API group; empty for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Pod | Kind::Event => "",
            Kind::Job => "batch",
            Kind::MiniCluster => "flux-framework.org",
            Kind::EventV1 => "events.k8s.io",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            Kind::MiniCluster => "v1alpha2",
            _ => "v1",
        }
    }

    /// `apiVersion` as objects carry it: `v1`, `batch/v1`, ...
    pub fn api_version(self) -> String {
        match self.group() {
            "" => self.version().to_owned(),
            group => format!("{group}/{}", self.version()),
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Job => "Job",
            Kind::MiniCluster => "MiniCluster",
            Kind::Event | Kind::EventV1 => "Event",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Job => "jobs",
            Kind::MiniCluster => "miniclusters",
            Kind::Event | Kind::EventV1 => "events",
        }
    }

    /// `jobs.batch`, as error messages name a resource.
    pub fn group_resource(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// `Job.batch`, as validation errors name a kind.
    pub fn group_kind(self) -> String {
        match self.group() {
            "" => self.kind().to_owned(),
            group => format!("{}.{group}", self.kind()),
        }
    }

    /// Whether `status` is a subresource: writes to the main resource leave it alone. (The
    /// sim does not serve `/status` itself: only its controllers write status.)
    pub fn has_status_subresource(self) -> bool {
        matches!(self, Kind::Pod | Kind::Job | Kind::MiniCluster)
    }

    /// The subresources served for this kind, besides `status`.
    pub fn subresources(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &["eviction"],
            Kind::MiniCluster => &["scale"],
            _ => &[],
        }
    }

    /// The kind served at `/apis/{group}/{version}/.../{plural}` (`group` empty for `/api/v1`).
    pub fn from_path(group: &str, version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.version() == version && k.plural() == plural)
    }

    /// Validates `object` against the typed schema and returns its canonical JSON, with
    /// `apiVersion` and `kind` filled in. An `apiVersion`/`kind` that names another type is
    /// refused.
    pub fn normalize(self, object: Value) -> Result<Value, String> {
        fn round_trip<T: Serialize + DeserializeOwned>(object: Value) -> Result<Value, String> {
            let typed: T = serde_json::from_value(object).map_err(|e| e.to_string())?;
            serde_json::to_value(typed).map_err(|e| e.to_string())
        }
        if !object.is_object() {
            return Err("the body must be a JSON object".into());
        }
        for (field, expected) in [
            ("apiVersion", self.api_version()),
            ("kind", self.kind().into()),
        ] {
            match object.get(field).and_then(Value::as_str) {
                Some(given) if given != expected => {
                    return Err(format!("{field} {given:?} does not match {expected:?}"));
                }
                _ => {}
            }
        }
        let mut canonical = match self {
            Kind::Pod => round_trip::<Pod>(object),
            Kind::Job => round_trip::<Job>(object),
            Kind::MiniCluster => round_trip::<MiniCluster>(object),
            Kind::Event => round_trip::<CoreEvent>(object),
            Kind::EventV1 => round_trip::<EventV1>(object),
        }?;
        canonical["apiVersion"] = json!(self.api_version());
        canonical["kind"] = json!(self.kind());
        Ok(canonical)
    }

    /// The `APIResource` entries of this kind for an `APIResourceList`.
    fn api_resources(self) -> Vec<Value> {
        let verbs = [
            "create", "delete", "get", "list", "patch", "update", "watch",
        ];
        let mut resources = vec![json!({
            "name": self.plural(),
            "singularName": self.kind().to_lowercase(),
            "namespaced": true,
            "kind": self.kind(),
            "verbs": verbs,
        })];
        for sub in self.subresources() {
            let (kind, group, version, verbs) = match *sub {
                "eviction" => ("Eviction", "policy", "v1", vec!["create"]),
                _ => ("Scale", "autoscaling", "v1", vec!["get", "patch", "update"]),
            };
            resources.push(json!({
                "name": format!("{}/{sub}", self.plural()),
                "singularName": "",
                "namespaced": true,
                "group": group,
                "version": version,
                "kind": kind,
                "verbs": verbs,
            }));
        }
        resources
    }
}

/// The group/versions served, as `(group, version)` pairs; group `""` is the core API.
fn served_group_versions() -> Vec<(&'static str, &'static str)> {
    let mut pairs: Vec<_> = Kind::ALL.iter().map(|k| (k.group(), k.version())).collect();
    pairs.sort();
    pairs.dedup();
    pairs
}

/// `GET /api/{version}` or `/apis/{group}/{version}`: the `APIResourceList`, if served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| k.group() == group && k.version() == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let group_version = kinds[0].api_version();
    let resources: Vec<Value> = kinds.into_iter().flat_map(Kind::api_resources).collect();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// `GET /api`: the core `APIVersions`.
pub fn core_api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// `GET /apis`: the `APIGroupList` of the named groups.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = served_group_versions()
        .into_iter()
        .filter(|(group, _)| !group.is_empty())
        .map(|(group, version)| {
            let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
            json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /version`.
pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-fluxk8s-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_fills_type_meta_and_rejects_a_foreign_kind() {
        let pod = Kind::Pod
            .normalize(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}))
            .unwrap();
        assert_eq!(pod["apiVersion"], "v1");
        assert_eq!(pod["kind"], "Pod");
        let err = Kind::Job
            .normalize(json!({"apiVersion": "v1", "kind": "Pod"}))
            .unwrap_err();
        assert!(err.contains("apiVersion"), "{err}");
        assert!(
            Kind::Job
                .normalize(json!({"spec": {"parallelism": "x"}}))
                .is_err()
        );
    }

    #[test]
    fn discovery_lists_the_scale_subresource_of_miniclusters() {
        let list = api_resource_list("flux-framework.org", "v1alpha2").unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["miniclusters", "miniclusters/scale"]);
        assert!(api_resource_list("apps", "v1").is_none());
        let groups = api_group_list();
        assert_eq!(groups["groups"].as_array().unwrap().len(), 3);
    }
}
