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
//! ([`edits`]), named with the field and the manager. A field another
//! manager owns inside a subtree k8sworker no longer renders is taken over
//! before the write that removes the subtree ([`handover`]).

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
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

/// Another manager's fields a write of `desired` would leave behind: each
/// leaf another manager owns under a node `manager` owns (in its `Apply`
/// entry) and `desired` no longer has. Server-side apply removes only what
/// the applier alone owns, so such a leaf would keep a half subtree alive (a
/// liveness probe with a `timeoutSeconds` and no handler, which the API
/// server refuses).
///
/// Returns `managedFields` with those leaves moved from their managers'
/// entries into `manager`'s, so that the apply that follows removes the
/// whole subtree, and the moved fields for a person ([`Handover`]);
/// `None` when nothing would be left behind (or `manager` has no `Apply`
/// entry).
pub fn handover(
    entries: &[ManagedFieldsEntry],
    desired: &Value,
    manager: &str,
) -> Option<Handover> {
    let is_ours = |entry: &ManagedFieldsEntry| {
        entry.manager.as_deref() == Some(manager)
            && entry.operation.as_deref() == Some("Apply")
            && entry.subresource.is_none()
    };
    let ours_at = entries.iter().position(is_ours)?;
    let ours = entries[ours_at].fields_v1.as_ref()?.0.clone();
    let mut entries = entries.to_vec();
    let mut moved = Vec::new();
    let mut taken = Vec::new();
    for entry in entries.iter_mut() {
        if is_ours(entry)
            || entry.manager.as_deref() == Some(manager)
            || matches!(entry.subresource.as_deref(), Some("status") | Some("scale"))
        {
            continue;
        }
        let Some(fields) = entry.fields_v1.as_mut() else {
            continue;
        };
        for path in leaves(&fields.0) {
            let dangling = (1..path.len()).any(|depth| {
                node(&ours, &path[..depth]).is_some() && value_at(desired, &path[..depth]).is_none()
            });
            if dangling {
                remove(&mut fields.0, &path);
                moved.push((
                    Display(&path).to_string(),
                    entry.manager.clone().unwrap_or_default(),
                ));
                taken.push(path);
            }
        }
    }
    if taken.is_empty() {
        return None;
    }
    if let Some(fields) = entries[ours_at].fields_v1.as_mut() {
        for path in &taken {
            insert(&mut fields.0, path);
        }
    }
    entries.retain(|entry| {
        entry
            .fields_v1
            .as_ref()
            .is_some_and(|f| f.0.as_object().is_some_and(|map| !map.is_empty()))
    });
    Some(Handover { entries, moved })
}

/// What [`handover`] found: the `managedFields` to write before the apply,
/// and the fields moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Handover {
    /// The object's `managedFields`, the moved fields now `manager`'s.
    pub entries: Vec<ManagedFieldsEntry>,
    /// Each moved field and the manager it was taken from, for a person.
    pub moved: Vec<(String, String)>,
}

/// The node at `path` in a FieldsV1 set.
fn node<'a>(fields: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(fields, |node, element| node.as_object()?.get(element))
}

/// Removes the leaf at `path` and the parents it leaves empty.
fn remove(fields: &mut Value, path: &[String]) {
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
        remove(child, rest);
        if child.as_object().is_some_and(serde_json::Map::is_empty) {
            map.remove(first);
        }
    }
}

/// Adds the leaf at `path`.
fn insert(fields: &mut Value, path: &[String]) {
    let mut node = fields;
    for element in path {
        let Some(map) = node.as_object_mut() else {
            return;
        };
        node = map
            .entry(element.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(elements: &[&str]) -> Vec<String> {
        elements.iter().map(|e| e.to_string()).collect()
    }

    /// Issue 12, case 2: another manager's `timeoutSeconds` inside the
    /// probe we no longer render moves to us; its labels stay theirs.
    #[test]
    fn a_field_inside_a_removed_subtree_is_handed_over() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
        let probe = json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"gateway\"}": {"f:livenessProbe": {"f:timeoutSeconds": {}}}}}}}});
        let ours_fields = json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"gateway\"}": {".": {}, "f:name": {}, "f:image": {},
                "f:livenessProbe": {"f:httpGet": {"f:path": {}, "f:port": {}}}}}}}}});
        let entry = |manager: &str, operation: &str, fields: Value| ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        };
        let mut label = json!({"f:metadata": {"f:labels": {"f:team": {}}}});
        let entries = vec![
            entry("k8sworker", "Apply", ours_fields),
            entry("kubectl-patch", "Update", probe),
            entry("kubectl-label", "Update", label.clone()),
        ];
        let with_probe = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "gateway", "image": "g:1", "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}}}]}}}});
        assert_eq!(handover(&entries, &with_probe, "k8sworker"), None);
        let without = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "gateway", "image": "g:1"}]}}}});
        let Handover {
            entries: handed,
            moved,
        } = handover(&entries, &without, "k8sworker").unwrap();
        assert_eq!(
            moved,
            [(
                "spec.template.spec.containers[name=gateway].livenessProbe.timeoutSeconds"
                    .to_owned(),
                "kubectl-patch".to_owned()
            )]
        );
        let managers: Vec<&str> = handed.iter().filter_map(|e| e.manager.as_deref()).collect();
        assert_eq!(
            managers,
            ["k8sworker", "kubectl-label"],
            "the emptied entry is gone"
        );
        let ours = &handed[0].fields_v1.as_ref().unwrap().0;
        assert!(
            ours.pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"gateway\"}/f:livenessProbe/f:timeoutSeconds")
                .is_some(),
            "{ours}"
        );
        assert_eq!(
            handed[1].fields_v1.as_ref().unwrap().0,
            std::mem::take(&mut label)
        );
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
