//! Field ownership: which fields other field managers hold, and whether one
//! of them is a field k8sworker sets.
//!
//! The API server records, per field manager, the fields it set
//! (`metadata.managedFields[].fieldsV1`, the "FieldsV1" format of
//! structured-merge-diff: `f:<name>` a field, `k:<json>` a list item by its
//! keys, `v:<json>` a set item by value, `i:<n>` a list item by index, `.`
//! the node itself). An executor reports each field another manager owns
//! ([`ForeignField`]: [`leaves`] of its entries, with the value found there).
//! Fields k8sworker does not render are not its to judge (`kubectl rollout
//! restart`'s `restartedAt` annotation, `kubectl label`); a field it renders
//! with another value than the one found, owned by another manager, is drift
//! ([`edits`]), named with the field and the manager.

use std::fmt;

use serde_json::Value;

/// A field another field manager owns on an observed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignField {
    /// The field manager (`kubectl-rollout`, `kubectl-edit`, …).
    pub manager: String,
    /// The field's path, as FieldsV1 elements (`f:spec`, `k:{"name":"c"}`, …).
    pub path: Vec<String>,
    /// The value found at the path, as JSON; `None` when the executor did
    /// not read it (outside `metadata` of a kind observed by metadata only).
    pub value: Option<String>,
}

/// The leaf paths of a FieldsV1 set: each field with no field below it.
/// A node's own `.` marker is not a field.
pub fn leaves(fields: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    walk(fields, &mut Vec::new(), &mut out);
    out
}

fn walk(node: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let children: Vec<(&String, &Value)> = node
        .as_object()
        .map(|map| map.iter().filter(|(key, _)| key.as_str() != ".").collect())
        .unwrap_or_default();
    if children.is_empty() {
        if !path.is_empty() {
            out.push(path.clone());
        }
        return;
    }
    for (key, child) in children {
        path.push(key.clone());
        walk(child, path, out);
        path.pop();
    }
}

/// The value at a FieldsV1 `path` in an object's JSON, when it is there.
pub fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut node = object;
    for element in path {
        node = if let Some(name) = element.strip_prefix("f:") {
            node.as_object()?.get(name)?
        } else if let Some(keys) = element.strip_prefix("k:") {
            let keys: serde_json::Map<String, Value> = serde_json::from_str(keys).ok()?;
            node.as_array()?
                .iter()
                .find(|item| keys.iter().all(|(k, v)| item.get(k) == Some(v)))?
        } else if let Some(value) = element.strip_prefix("v:") {
            let value: Value = serde_json::from_str(value).ok()?;
            node.as_array()?.iter().find(|item| **item == value)?
        } else if let Some(index) = element.strip_prefix("i:") {
            node.as_array()?.get(index.parse::<usize>().ok()?)?
        } else {
            return None;
        };
    }
    Some(node)
}

/// A FieldsV1 path for a person: `spec.template.spec.containers[name=web].image`.
#[derive(Debug)]
pub struct Display<'a>(pub &'a [String]);

impl fmt::Display for Display<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, element) in self.0.iter().enumerate() {
            if let Some(name) = element.strip_prefix("f:") {
                if index > 0 {
                    f.write_str(".")?;
                }
                f.write_str(name)?;
            } else if let Some(keys) = element.strip_prefix("k:") {
                let keys: serde_json::Map<String, Value> =
                    serde_json::from_str(keys).unwrap_or_default();
                let keys: Vec<String> = keys
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{k}={s}"),
                        other => format!("{k}={other}"),
                    })
                    .collect();
                write!(f, "[{}]", keys.join(","))?;
            } else if let Some(value) = element.strip_prefix("v:") {
                write!(f, "[{value}]")?;
            } else if let Some(index) = element.strip_prefix("i:") {
                write!(f, "[{index}]")?;
            } else {
                f.write_str(element)?;
            }
        }
        Ok(())
    }
}

/// The fields of `desired` (an object's JSON as k8sworker renders it) that
/// another manager holds with another value: `(field, manager)` for a
/// person, e.g. `("spec.template.spec.containers[name=web].image",
/// "kubectl-edit")`. A field whose value the executor did not read counts
/// when k8sworker sets it.
pub fn edits(desired: &Value, foreign: &[ForeignField]) -> Vec<(String, String)> {
    foreign
        .iter()
        .filter(|field| {
            let Some(want) = value_at(desired, &field.path) else {
                return false;
            };
            match &field.value {
                None => true,
                Some(found) => serde_json::from_str::<Value>(found).ok().as_ref() != Some(want),
            }
        })
        .map(|field| (Display(&field.path).to_string(), field.manager.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(elements: &[&str]) -> Vec<String> {
        elements.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn leaves_skip_the_self_marker() {
        let fields = json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"web\"}": {".": {}, "f:image": {}}
        }}}}, "f:metadata": {"f:labels": {"f:team": {}}}});
        let mut found = leaves(&fields);
        found.sort();
        assert_eq!(
            found,
            [
                path(&["f:metadata", "f:labels", "f:team"]),
                path(&[
                    "f:spec",
                    "f:template",
                    "f:spec",
                    "f:containers",
                    "k:{\"name\":\"web\"}",
                    "f:image"
                ]),
            ]
        );
        assert_eq!(
            Display(&found[1]).to_string(),
            "spec.template.spec.containers[name=web].image"
        );
    }

    #[test]
    fn only_a_field_we_set_with_another_value_is_an_edit() {
        let desired = json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}}}});
        let image = path(&[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"web\"}",
            "f:image",
        ]);
        let field = |manager: &str, path: Vec<String>, value: Option<&str>| ForeignField {
            manager: manager.into(),
            path,
            value: value.map(String::from),
        };
        let restarted = field(
            "kubectl-rollout",
            path(&[
                "f:spec",
                "f:template",
                "f:metadata",
                "f:annotations",
                "f:kubectl.kubernetes.io/restartedAt",
            ]),
            Some("\"2026-01-01T00:00:00Z\""),
        );
        let label = field(
            "kubectl-label",
            path(&["f:metadata", "f:labels", "f:team"]),
            Some("\"a\""),
        );
        let same = field("argocd", image.clone(), Some("\"web:1\""));
        assert_eq!(edits(&desired, &[restarted, label, same]), []);
        let edited = field("kubectl-edit", image.clone(), Some("\"web:2\""));
        assert_eq!(
            edits(&desired, &[edited]),
            [(
                "spec.template.spec.containers[name=web].image".to_owned(),
                "kubectl-edit".to_owned()
            )]
        );
        let unread = field("kubectl-edit", image, None);
        assert_eq!(edits(&desired, &[unread]).len(), 1);
    }
}
