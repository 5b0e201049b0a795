//! The API operations, independent of HTTP: each takes the request's decoded parts, applies
//! it to the state like the API server would, lets the controllers react, and returns the
//! response object or the error `Status`.

use serde_json::{Value, json};

use super::kinds::Kind;
use super::managed::own_changed_fields;
use super::operator::scale_selector;
use super::patch::{JsonPatchError, json_patch, merge_patch};
use super::state::{Propagation, SimState};
use super::status::{ApiError, success_status};
use super::store::{Filter, ObjectKey};

/// The patch formats, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchFormat {
    Merge,
    Json,
    /// Strategic merge: built-in kinds only; the sim applies it only to patches without
    /// lists, where it equals a merge patch.
    Strategic,
}

impl PatchFormat {
    /// The format named by a PATCH `Content-Type`, or 415 as the API server answers.
    pub fn from_content_type(content_type: Option<&str>, kind: Kind) -> Result<Self, ApiError> {
        let media = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        let builtin = kind != Kind::MiniCluster;
        match media {
            "application/merge-patch+json" => Ok(PatchFormat::Merge),
            "application/json-patch+json" => Ok(PatchFormat::Json),
            "application/strategic-merge-patch+json" if builtin => Ok(PatchFormat::Strategic),
            _ => {
                let mut accepted = vec![
                    "application/json-patch+json",
                    "application/merge-patch+json",
                ];
                if builtin {
                    accepted.push("application/strategic-merge-patch+json");
                }
                Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types \
                         include: {} (server-side apply is not simulated)",
                        accepted.join(", ")
                    ),
                ))
            }
        }
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

fn contains_array(value: &Value) -> bool {
    match value {
        Value::Array(_) => true,
        Value::Object(fields) => fields.values().any(contains_array),
        _ => false,
    }
}

/// `DeleteOptions` fields the sim honours.
struct DeleteOptions {
    uid: Option<String>,
    resource_version: Option<String>,
    grace_seconds: Option<i64>,
    propagation: Option<Propagation>,
}

fn delete_options(options: &Value) -> Result<DeleteOptions, ApiError> {
    let propagation = match options["propagationPolicy"].as_str() {
        None => match options["orphanDependents"].as_bool() {
            Some(true) => Some(Propagation::Orphan),
            Some(false) => Some(Propagation::Background),
            None => None,
        },
        Some("Orphan") => Some(Propagation::Orphan),
        // Foreground differs only in when the owner disappears, which the sim does not model.
        Some("Background" | "Foreground") => Some(Propagation::Background),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown propagationPolicy {other:?}"
            )));
        }
    };
    if !options["dryRun"].is_null() {
        return Err(ApiError::bad_request("dryRun is not simulated"));
    }
    Ok(DeleteOptions {
        uid: options["preconditions"]["uid"].as_str().map(Into::into),
        resource_version: options["preconditions"]["resourceVersion"]
            .as_str()
            .map(Into::into),
        grace_seconds: options["gracePeriodSeconds"].as_i64(),
        propagation,
    })
}

fn check_preconditions(
    key: &ObjectKey,
    object: &Value,
    options: &DeleteOptions,
) -> Result<(), ApiError> {
    let resource = key.kind.group_resource();
    let meta = &object["metadata"];
    if let Some(uid) = &options.uid
        && meta["uid"].as_str() != Some(uid.as_str())
    {
        let why = format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta["uid"].as_str().unwrap_or_default()
        );
        return Err(ApiError::conflict(&resource, &key.name, &why));
    }
    if let Some(version) = &options.resource_version
        && meta["resourceVersion"].as_str() != Some(version.as_str())
    {
        let why = format!(
            "Precondition failed: ResourceVersion in precondition: {version}, ResourceVersion in \
             object meta: {}",
            meta["resourceVersion"].as_str().unwrap_or_default()
        );
        return Err(ApiError::conflict(&resource, &key.name, &why));
    }
    Ok(())
}

impl SimState {
    fn current(&self, key: &ObjectKey) -> Result<Value, ApiError> {
        self.store
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&key.kind.group_resource(), &key.name))
    }

    pub fn api_get(&self, key: &ObjectKey) -> Result<Value, ApiError> {
        self.current(key)
    }

    /// A `<Kind>List` with the store's current resourceVersion.
    pub fn api_list(&self, filter: &Filter) -> Value {
        json!({
            "apiVersion": filter.kind.api_version(),
            "kind": format!("{}List", filter.kind.kind()),
            "metadata": {"resourceVersion": self.store.resource_version().to_string()},
            "items": self.store.list(filter),
        })
    }

    pub fn api_create(
        &mut self,
        kind: Kind,
        namespace: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let created = self.create_object(kind, namespace, parse_body(body)?)?;
        self.settle();
        Ok(created)
    }

    /// PUT: the body must carry the resourceVersion it was read at.
    pub fn api_replace(
        &mut self,
        key: &ObjectKey,
        body: &[u8],
        manager: &str,
    ) -> Result<Value, ApiError> {
        let mut body = parse_body(body)?;
        own_changed_fields(&self.current(key)?, &mut body, manager, None);
        let version = body["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        let Some(version) = version.filter(|v| !v.is_empty()) else {
            return Err(ApiError::invalid(
                &key.kind.group_kind(),
                &key.name,
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            ));
        };
        let updated = self.update_object(key, body, Some(&version))?;
        self.settle();
        Ok(updated)
    }

    /// PATCH; a resourceVersion in the patched result must still be current (optimistic
    /// concurrency with a merge patch that names one).
    pub fn api_patch(
        &mut self,
        key: &ObjectKey,
        format: PatchFormat,
        body: &[u8],
        manager: &str,
    ) -> Result<Value, ApiError> {
        let current = self.current(key)?;
        let mut patched = apply_patch(&current, format, body)?;
        own_changed_fields(&current, &mut patched, manager, None);
        let version = patched["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        let updated = self.update_object(key, patched, version.as_deref())?;
        self.settle();
        Ok(updated)
    }

    /// DELETE with optional `DeleteOptions` body; returns the object (terminating, for a
    /// running pod).
    pub fn api_delete(&mut self, key: &ObjectKey, body: &[u8]) -> Result<Value, ApiError> {
        let options = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            parse_body(body)?
        };
        let options = delete_options(&options)?;
        let current = self.current(key)?;
        check_preconditions(key, &current, &options)?;
        let propagation = options
            .propagation
            .unwrap_or(Propagation::default_for(key.kind));
        let deleted = self.delete_object(key, options.grace_seconds, propagation)?;
        self.settle();
        Ok(deleted)
    }

    /// POST `pods/{name}/eviction`: same preconditions as a delete; the pod gets a
    /// `DisruptionTarget` condition, then is deleted. No PodDisruptionBudgets exist in the
    /// sim, so an eviction is never refused with 429.
    pub fn api_evict(&mut self, key: &ObjectKey, body: &[u8]) -> Result<Value, ApiError> {
        let eviction = parse_body(body)?;
        if eviction["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n != key.name)
        {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
        let options = delete_options(&eviction["deleteOptions"])?;
        let mut pod = self.current(key)?;
        check_preconditions(key, &pod, &options)?;
        let ended = matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        if !ended {
            let condition = json!({
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting",
                "lastTransitionTime": super::state::now_timestamp(),
            });
            match pod["status"]["conditions"].as_array_mut() {
                Some(conditions) => conditions.push(condition),
                None => pod["status"]["conditions"] = json!([condition]),
            }
            self.write(key, pod);
        }
        self.delete_object(key, options.grace_seconds, Propagation::Background)?;
        self.settle();
        Ok(success_status(201))
    }

    /// The `autoscaling/v1` Scale of a MiniCluster: `spec.size` ↔ `spec.replicas`.
    pub fn api_get_scale(&self, key: &ObjectKey) -> Result<Value, ApiError> {
        Ok(scale_of(&self.current(key)?))
    }

    pub fn api_patch_scale(
        &mut self,
        key: &ObjectKey,
        format: PatchFormat,
        body: &[u8],
        manager: &str,
    ) -> Result<Value, ApiError> {
        let scale = scale_of(&self.current(key)?);
        let patched = apply_patch(&scale, format, body)?;
        self.write_scale(key, &patched, manager)
    }

    pub fn api_replace_scale(
        &mut self,
        key: &ObjectKey,
        body: &[u8],
        manager: &str,
    ) -> Result<Value, ApiError> {
        let scale = parse_body(body)?;
        self.write_scale(key, &scale, manager)
    }

    fn write_scale(
        &mut self,
        key: &ObjectKey,
        scale: &Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
        if replicas < 0 || replicas > i64::from(i32::MAX) {
            return Err(ApiError::invalid(
                "Scale.autoscaling",
                &key.name,
                &format!(
                    "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
                ),
            ));
        }
        let current = self.current(key)?;
        let mut minicluster = current.clone();
        minicluster["spec"]["size"] = json!(replicas);
        own_changed_fields(&current, &mut minicluster, manager, Some("scale"));
        let version = scale["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        let updated = self.update_object(key, minicluster, version.as_deref())?;
        self.settle();
        Ok(scale_of(&updated))
    }
}

fn apply_patch(current: &Value, format: PatchFormat, body: &[u8]) -> Result<Value, ApiError> {
    let patch = parse_body(body)?;
    let mut patched = current.clone();
    match format {
        PatchFormat::Merge => merge_patch(&mut patched, &patch),
        PatchFormat::Strategic if contains_array(&patch) => {
            return Err(ApiError::bad_request(
                "the sim applies strategic merge patches only when they contain no lists; use a \
                 merge or JSON patch",
            ));
        }
        PatchFormat::Strategic => merge_patch(&mut patched, &patch),
        PatchFormat::Json => json_patch(&mut patched, &patch).map_err(|err| match err {
            JsonPatchError::Malformed(why) => ApiError::bad_request(why),
            JsonPatchError::NotApplied(why) => ApiError::new(422, "Invalid", why),
        })?,
    }
    Ok(patched)
}

fn scale_of(minicluster: &Value) -> Value {
    let metadata = &minicluster["metadata"];
    let name = metadata["name"].as_str().unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": name,
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": minicluster["spec"]["size"]},
        "status": {
            "replicas": minicluster["status"]["size"].as_i64().unwrap_or(0),
            "selector": scale_selector(name),
        },
    })
}
