//! The two patch formats the sim accepts: JSON merge patch (RFC 7386) and JSON patch
//! (RFC 6902). Errors are strings; the caller maps them to the HTTP code the API server uses
//! (400 for a malformed patch, 422 for one that does not apply).

use serde_json::{Map, Value};

/// Applies a JSON merge patch: objects merge recursively, `null` removes, anything else
/// replaces (arrays included).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(fields) = target else {
        unreachable!("target was just made an object");
    };
    for (key, value) in patch_fields {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Why a JSON patch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonPatchError {
    /// The patch document itself is malformed (HTTP 400).
    Malformed(String),
    /// A well-formed operation did not apply, e.g. a failed `test` (HTTP 422).
    NotApplied(String),
}

/// Applies a JSON patch (`add`, `remove`, `replace`, `test`, `move`, `copy`) atomically: on
/// error `target` is unchanged.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| JsonPatchError::Malformed("a JSON patch must be an array".into()))?;
    let mut doc = target.clone();
    for op in ops {
        apply_op(&mut doc, op)?;
    }
    *target = doc;
    Ok(())
}

fn apply_op(doc: &mut Value, op: &Value) -> Result<(), JsonPatchError> {
    let field = |name: &str| {
        op.get(name)
            .ok_or_else(|| JsonPatchError::Malformed(format!("operation {op} is missing {name:?}")))
    };
    let str_field = |name: &str| {
        field(name)?.as_str().ok_or_else(|| {
            JsonPatchError::Malformed(format!("operation {op}: {name:?} must be a string"))
        })
    };
    let path = parse_pointer(str_field("path")?)?;
    match str_field("op")? {
        "add" => add(doc, &path, field("value")?.clone()),
        "remove" => remove(doc, &path).map(drop),
        "replace" => {
            let slot = resolve_mut(doc, &path)?;
            *slot = field("value")?.clone();
            Ok(())
        }
        "test" => {
            let expected = field("value")?;
            let actual = resolve_mut(doc, &path)?;
            if actual == expected {
                Ok(())
            } else {
                Err(JsonPatchError::NotApplied(format!(
                    "testing value {} failed: test failed",
                    str_field("path")?
                )))
            }
        }
        "move" => {
            let from = parse_pointer(str_field("from")?)?;
            let value = remove(doc, &from)?;
            add(doc, &path, value)
        }
        "copy" => {
            let from = parse_pointer(str_field("from")?)?;
            let value = resolve_mut(doc, &from)?.clone();
            add(doc, &path, value)
        }
        other => Err(JsonPatchError::Malformed(format!(
            "unexpected kind of operation: {other}"
        ))),
    }
}

/// Splits an RFC 6901 pointer into unescaped tokens.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, JsonPatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| JsonPatchError::Malformed(format!("invalid JSON pointer {pointer:?}")))?;
    Ok(rest
        .split('/')
        .map(|token| token.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn missing(path: &[String]) -> JsonPatchError {
    JsonPatchError::NotApplied(format!("doc is missing path: \"/{}\"", path.join("/")))
}

fn array_index(token: &str, len: usize, path: &[String]) -> Result<usize, JsonPatchError> {
    match token.parse::<usize>() {
        Ok(index) if index < len && (token == "0" || !token.starts_with('0')) => Ok(index),
        _ => Err(missing(path)),
    }
}

fn resolve_mut<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, JsonPatchError> {
    let mut current = doc;
    for token in path {
        current = match current {
            Value::Object(fields) => fields.get_mut(token).ok_or_else(|| missing(path))?,
            Value::Array(items) => {
                let index = array_index(token, items.len(), path)?;
                &mut items[index]
            }
            _ => return Err(missing(path)),
        };
    }
    Ok(current)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), JsonPatchError> {
    let Some((last, parent_path)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match resolve_mut(doc, parent_path)? {
        Value::Object(fields) => {
            fields.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                // Insertion may target one past the end.
                array_index(last, items.len() + 1, path)?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(missing(path)),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, JsonPatchError> {
    let (last, parent_path) = path
        .split_last()
        .ok_or_else(|| JsonPatchError::NotApplied("cannot remove the whole document".into()))?;
    match resolve_mut(doc, parent_path)? {
        Value::Object(fields) => fields.remove(last).ok_or_else(|| missing(path)),
        Value::Array(items) => {
            let index = array_index(last, items.len(), path)?;
            Ok(items.remove(index))
        }
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut doc,
            &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"x": 1}}),
        );
        assert_eq!(
            doc,
            json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"x": 1}})
        );
    }

    #[test]
    fn json_patch_test_guards_the_replace() {
        let mut doc = json!({"spec": {"size": 4}});
        let guarded = |old, new| {
            json!([{"op": "test", "path": "/spec/size", "value": old},
                   {"op": "replace", "path": "/spec/size", "value": new}])
        };
        json_patch(&mut doc, &guarded(4, 3)).unwrap();
        assert_eq!(doc["spec"]["size"], 3);
        let err = json_patch(&mut doc, &guarded(4, 2)).unwrap_err();
        assert!(matches!(err, JsonPatchError::NotApplied(_)), "{err:?}");
        assert_eq!(
            doc["spec"]["size"], 3,
            "a failed patch must leave the document unchanged"
        );
    }

    #[test]
    fn json_patch_add_remove_with_escaped_keys_and_arrays() {
        let mut doc = json!({"metadata": {"annotations": {}}, "list": [1, 3]});
        let patch = json!([
            {"op": "add", "path": "/metadata/annotations/example.com~1note", "value": "x"},
            {"op": "add", "path": "/list/1", "value": 2},
            {"op": "add", "path": "/list/-", "value": 4},
            {"op": "remove", "path": "/list/0"},
        ]);
        json_patch(&mut doc, &patch).unwrap();
        assert_eq!(doc["metadata"]["annotations"]["example.com/note"], "x");
        assert_eq!(doc["list"], json!([2, 3, 4]));
    }

    #[test]
    fn json_patch_rejects_malformed_and_missing_paths() {
        let mut doc = json!({"a": 1});
        assert!(matches!(
            json_patch(&mut doc, &json!({"op": "add"})),
            Err(JsonPatchError::Malformed(_))
        ));
        assert!(matches!(
            json_patch(&mut doc, &json!([{"op": "frobnicate", "path": "/a"}])),
            Err(JsonPatchError::Malformed(_))
        ));
        assert!(matches!(
            json_patch(
                &mut doc,
                &json!([{"op": "replace", "path": "/b/c", "value": 1}])
            ),
            Err(JsonPatchError::NotApplied(_))
        ));
    }
}
