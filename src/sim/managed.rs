//! `metadata.managedFields` as the API server keeps them for updates, reduced to what
//! readers of this simulator look at: which field manager last changed each top-level
//! `spec` field and each annotation. A write moves the fields it changes into its
//! manager's entry (operation `Update`, with `subresource` for a write through `/scale`),
//! out of every other entry; an entry left owning nothing is dropped.

use serde_json::{Map, Value, json};

use super::state::now_timestamp;

/// Gives `manager` the `spec` fields and annotations that differ between `before` and
/// `after`.
pub fn own_changed_fields(
    before: &Value,
    after: &mut Value,
    manager: &str,
    subresource: Option<&str>,
) {
    let mut changed = changed_keys(&before["spec"], &after["spec"], &["f:spec"]);
    changed.extend(changed_keys(
        &before["metadata"]["annotations"],
        &after["metadata"]["annotations"],
        &["f:metadata", "f:annotations"],
    ));
    if changed.is_empty() {
        return;
    }
    let entries = after["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut kept: Vec<Value> = Vec::with_capacity(entries.len() + 1);
    let mut mine = json!({});
    for mut entry in entries {
        let same_writer = entry["manager"] == manager
            && entry["operation"] == "Update"
            && entry["subresource"].as_str() == subresource;
        if same_writer {
            mine = entry["fieldsV1"].take();
            continue;
        }
        for path in &changed {
            remove_path(&mut entry["fieldsV1"], path);
        }
        if entry["fieldsV1"].as_object().is_some_and(|f| !f.is_empty()) {
            kept.push(entry);
        }
    }
    for path in &changed {
        insert_path(&mut mine, path);
    }
    let mut entry = json!({
        "manager": manager,
        "operation": "Update",
        "apiVersion": after["apiVersion"].clone(),
        "time": now_timestamp(),
        "fieldsType": "FieldsV1",
        "fieldsV1": mine,
    });
    if let Some(subresource) = subresource {
        entry["subresource"] = json!(subresource);
    }
    kept.push(entry);
    after["metadata"]["managedFields"] = Value::Array(kept);
}

/// The keys of two objects whose values differ, each as a fieldsV1 path under `prefix`.
fn changed_keys(before: &Value, after: &Value, prefix: &[&str]) -> Vec<Vec<String>> {
    let empty = Map::new();
    let (old, new) = (
        before.as_object().unwrap_or(&empty),
        after.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| old.get(*key) != new.get(*key))
        .map(|key| {
            let mut path: Vec<String> = prefix.iter().map(|p| (*p).to_owned()).collect();
            path.push(format!("f:{key}"));
            path
        })
        .collect()
}

fn insert_path(fields: &mut Value, path: &[String]) {
    let mut at = fields;
    for key in path {
        if !at.is_object() {
            *at = json!({});
        }
        at = at
            .as_object_mut()
            .expect("made an object above")
            .entry(key.clone())
            .or_insert_with(|| json!({}));
    }
}

/// Removes `path`, and the maps it leaves empty on the way up.
fn remove_path(fields: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(map) = fields.as_object_mut() else {
        return;
    };
    if rest.is_empty() {
        map.remove(first);
        return;
    }
    if let Some(child) = map.get_mut(first) {
        remove_path(child, rest);
        if child.as_object().is_some_and(Map::is_empty) {
            map.remove(first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managers_of(object: &Value, path: &[&str]) -> Vec<String> {
        object["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                path.iter()
                    .try_fold(&e["fieldsV1"], |at, key| at.get(*key))
                    .is_some()
            })
            .map(|e| e["manager"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_last_writer_of_a_field_owns_it_alone() {
        let size = ["f:spec", "f:size"];
        let before = json!({"apiVersion": "v1", "metadata": {}, "spec": {"size": 4, "maxSize": 8}});
        let mut created = before.clone();
        created["spec"]["size"] = json!(5);
        own_changed_fields(&before, &mut created, "fluxk8s", None);
        assert_eq!(managers_of(&created, &size), ["fluxk8s"]);
        assert!(
            managers_of(&created, &["f:spec", "f:maxSize"]).is_empty(),
            "unchanged"
        );

        let mut scaled = created.clone();
        scaled["spec"]["size"] = json!(12);
        own_changed_fields(&created, &mut scaled, "kubectl-scale", Some("scale"));
        assert_eq!(managers_of(&scaled, &size), ["kubectl-scale"]);
        let entries = scaled["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(
            entries.len(),
            1,
            "fluxk8s's entry owned nothing else: {entries:?}"
        );
        assert_eq!(entries[0]["subresource"], "scale");

        let mut unchanged = scaled.clone();
        own_changed_fields(&scaled, &mut unchanged, "other", None);
        assert_eq!(
            unchanged, scaled,
            "a write that changes nothing owns nothing"
        );
    }

    #[test]
    fn annotations_are_owned_key_by_key() {
        let key = "f:fluxk8s.flux-framework.org/desired-size";
        let path = ["f:metadata", "f:annotations", key];
        let before = json!({"metadata": {"annotations": {"a": "1"}}, "spec": {"size": 4}});
        let mut annotated = before.clone();
        annotated["metadata"]["annotations"]["fluxk8s.flux-framework.org/desired-size"] =
            json!("3");
        own_changed_fields(&before, &mut annotated, "kubectl-annotate", None);
        assert_eq!(managers_of(&annotated, &path), ["kubectl-annotate"]);
        assert!(managers_of(&annotated, &["f:metadata", "f:annotations", "f:a"]).is_empty());
        let mut ours = annotated.clone();
        ours["metadata"]["annotations"]["fluxk8s.flux-framework.org/desired-size"] = json!("4");
        ours["spec"]["size"] = json!(5);
        own_changed_fields(&annotated, &mut ours, "fluxk8s", None);
        assert_eq!(managers_of(&ours, &path), ["fluxk8s"]);
        assert_eq!(managers_of(&ours, &["f:spec", "f:size"]), ["fluxk8s"]);
        assert_eq!(
            ours["metadata"]["managedFields"].as_array().unwrap().len(),
            1
        );
    }
}
