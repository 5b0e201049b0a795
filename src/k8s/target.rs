//! Which Job (and MiniCluster) this broker belongs to.

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{ApiResource, GroupVersionKind};

/// API group of the Flux Operator's MiniCluster.
pub const MINICLUSTER_GROUP: &str = "flux-framework.org";
/// The MiniCluster version this driver speaks.
pub const MINICLUSTER_VERSION: &str = "v1alpha2";
/// Kind of the Flux Operator's custom resource.
pub const MINICLUSTER_KIND: &str = "MiniCluster";

/// The MiniCluster resource: it has no Rust type, so it is handled as a `DynamicObject`.
pub fn minicluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(MINICLUSTER_GROUP, MINICLUSTER_VERSION, MINICLUSTER_KIND),
        "miniclusters",
    )
}

/// The objects the driver watches and acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    /// The Indexed Job running the brokers.
    pub job: String,
    /// The MiniCluster owning the Job, if an operator manages it.
    pub minicluster: Option<String>,
}

/// Where to look, from the module's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A MiniCluster by name; its Job has the same name.
    MiniCluster(String),
    /// A Job by name; its MiniCluster (if any) is found through its ownerReference.
    Job(String),
}

/// Why the target could not be named from the settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("hostname {0:?} is not of the form <name>-<index>; set job= or minicluster=")]
    BadHostname(String),
    #[error("no target: set job= or minicluster=, or give the broker's hostname")]
    Nothing,
}

impl Lookup {
    /// `minicluster=` wins, then `job=`, then the name in the hostname.
    pub fn from_settings(
        minicluster: Option<&str>,
        job: Option<&str>,
        hostname: Option<&str>,
    ) -> Result<Self, LookupError> {
        if let Some(mc) = minicluster {
            return Ok(Self::MiniCluster(mc.to_owned()));
        }
        if let Some(job) = job {
            return Ok(Self::Job(job.to_owned()));
        }
        let hostname = hostname.ok_or(LookupError::Nothing)?;
        job_name_from_hostname(hostname)
            .map(|name| Self::Job(name.to_owned()))
            .ok_or_else(|| LookupError::BadHostname(hostname.to_owned()))
    }
}

/// `flux-sample-0` (or `flux-sample-0.svc.ns...`) gives `flux-sample`: Indexed Job pods are
/// named `<job>-<index>`.
pub fn job_name_from_hostname(hostname: &str) -> Option<&str> {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let (name, index) = short.rsplit_once('-')?;
    let index_ok = !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit());
    (index_ok && !name.is_empty()).then_some(name)
}

/// The name of the MiniCluster (flux-framework.org/v1alpha2) that owns `job`, if any.
pub fn owning_minicluster(job: &Job) -> Option<String> {
    let api_version = format!("{MINICLUSTER_GROUP}/{MINICLUSTER_VERSION}");
    job.owner_references()
        .iter()
        .find(|r| r.kind == MINICLUSTER_KIND && r.api_version == api_version)
        .map(|r| r.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hostname_gives_job_name() {
        assert_eq!(job_name_from_hostname("flux-sample-0"), Some("flux-sample"));
        assert_eq!(
            job_name_from_hostname("flux-sample-12"),
            Some("flux-sample")
        );
        assert_eq!(
            job_name_from_hostname("flux-sample-3.flux-service.default.svc.cluster.local"),
            Some("flux-sample")
        );
        assert_eq!(job_name_from_hostname("flux-sample"), None);
        assert_eq!(job_name_from_hostname("flux-sample-"), None);
        assert_eq!(job_name_from_hostname("-0"), None);
        assert_eq!(job_name_from_hostname("laptop"), None);
    }

    #[test]
    fn settings_order_is_minicluster_job_hostname() {
        let pick = |mc, job, host| Lookup::from_settings(mc, job, host);
        assert_eq!(
            pick(Some("mc"), Some("j"), Some("h-0")),
            Ok(Lookup::MiniCluster("mc".into()))
        );
        assert_eq!(
            pick(None, Some("j"), Some("h-0")),
            Ok(Lookup::Job("j".into()))
        );
        assert_eq!(pick(None, None, Some("h-0")), Ok(Lookup::Job("h".into())));
        assert_eq!(
            pick(None, None, Some("laptop")),
            Err(LookupError::BadHostname("laptop".into()))
        );
        assert_eq!(pick(None, None, None), Err(LookupError::Nothing));
    }

    #[test]
    fn owner_reference_must_be_a_v1alpha2_minicluster() {
        let job = |api_version: &str, kind: &str| -> Job {
            serde_json::from_value(json!({"metadata": {"name": "j", "ownerReferences": [{
                "apiVersion": api_version, "kind": kind, "name": "owner", "uid": "u"
            }]}}))
            .unwrap()
        };
        assert_eq!(
            owning_minicluster(&job("flux-framework.org/v1alpha2", "MiniCluster")),
            Some("owner".to_owned())
        );
        assert_eq!(
            owning_minicluster(&job("flux-framework.org/v1alpha1", "MiniCluster")),
            None
        );
        assert_eq!(owning_minicluster(&job("batch/v1", "CronJob")), None);
    }

    #[test]
    fn minicluster_resource_has_the_crd_plural() {
        let ar = minicluster_resource();
        assert_eq!(ar.api_version, "flux-framework.org/v1alpha2");
        assert_eq!(
            (ar.kind.as_str(), ar.plural.as_str()),
            ("MiniCluster", "miniclusters")
        );
    }
}
