//! `metadata.managedFields` as the API server keeps them for updates, reduced to what
//! readers of this simulator look at: which field manager last changed each top-level
//! `spec` field. A write moves the fields it changes into its manager's entry (operation
//! `Update`, with `subresource` for a write through `/scale`), out of every other entry;
//! an entry left owning nothing is dropped.

use serde_json::{Map, Value, json};

use super::state::now_timestamp;

/// Gives `manager` the `spec` fields that differ between `before` and `after`.
pub fn own_changed_spec_fields(
    before: &Value,
    after: &mut Value,
    manager: &str,
    subresource: Option<&str>,
) {
    let empty = Map::new();
    let spec_of = |object: &Value| object["spec"].as_object().cloned().unwrap_or_default();
    let (old, new) = (spec_of(before), spec_of(after));
    let changed: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|key| old.get(*key) != new.get(*key))
        .map(|key| format!("f:{key}"))
        .collect();
    if changed.is_empty() {
        return;
    }
    let api_version = after["apiVersion"].clone();
    let entries = after["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut kept: Vec<Value> = Vec::with_capacity(entries.len() + 1);
    let mut mine: Map<String, Value> = Map::new();
    for mut entry in entries {
        let same_writer = entry["manager"] == manager
            && entry["operation"] == "Update"
            && entry["subresource"].as_str() == subresource;
        let fields = entry["fieldsV1"]["f:spec"]
            .as_object()
            .unwrap_or(&empty)
            .clone();
        if same_writer {
            mine.extend(fields);
            continue;
        }
        let left: Map<String, Value> = fields
            .into_iter()
            .filter(|(key, _)| !changed.contains(key))
            .collect();
        if left.is_empty() && entry["fieldsV1"].as_object().is_some_and(|f| f.len() <= 1) {
            continue;
        }
        entry["fieldsV1"]["f:spec"] = Value::Object(left);
        kept.push(entry);
    }
    mine.extend(changed.into_iter().map(|key| (key, json!({}))));
    let mut entry = json!({
        "manager": manager,
        "operation": "Update",
        "apiVersion": api_version,
        "time": now_timestamp(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": mine},
    });
    if let Some(subresource) = subresource {
        entry["subresource"] = json!(subresource);
    }
    kept.push(entry);
    after["metadata"]["managedFields"] = Value::Array(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managers_of(object: &Value, field: &str) -> Vec<String> {
        object["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["fieldsV1"]["f:spec"].get(field).is_some())
            .map(|e| e["manager"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_last_writer_of_a_field_owns_it_alone() {
        let before = json!({"apiVersion": "v1", "metadata": {}, "spec": {"size": 4, "maxSize": 8}});
        let mut created = before.clone();
        created["spec"]["size"] = json!(5);
        own_changed_spec_fields(&before, &mut created, "fluxk8s", None);
        assert_eq!(managers_of(&created, "f:size"), ["fluxk8s"]);
        assert!(managers_of(&created, "f:maxSize").is_empty(), "unchanged");

        let mut scaled = created.clone();
        scaled["spec"]["size"] = json!(12);
        own_changed_spec_fields(&created, &mut scaled, "kubectl-scale", Some("scale"));
        assert_eq!(managers_of(&scaled, "f:size"), ["kubectl-scale"]);
        let entries = scaled["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(
            entries.len(),
            1,
            "fluxk8s's entry owned nothing else: {entries:?}"
        );
        assert_eq!(entries[0]["subresource"], "scale");

        let mut unchanged = scaled.clone();
        own_changed_spec_fields(&scaled, &mut unchanged, "other", None);
        assert_eq!(
            unchanged, scaled,
            "a write that changes nothing owns nothing"
        );
    }
}
