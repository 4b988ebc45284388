//! What the executor keeps of an object it reads: the facts Observe
//! reports ([`ObservedComponent`]) and a precondition compares ([`Found`]),
//! taken from its metadata, or from a StatefulSet or Service whole.
//!
//! Each object carries the fields other field managers own, with the values
//! found where they were read ([`k8sworker_core::managed`]): a value outside
//! `metadata` only for the kinds read whole.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8sworker_core::component::Object;
use k8sworker_core::immutable;
use k8sworker_core::labels;
use k8sworker_core::managed;
use k8sworker_proto::v1::{ComponentRef, ForeignField, ObservedComponent};
use kube::{Resource as _, api::ObjectMeta};
use serde_json::{Value, json};

use crate::kinds::Kind;

/// What the executor found at a step's name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `metadata.labels`; the installation of an object from before owner
    /// records is read from them.
    pub labels: BTreeMap<String, String>,
    /// The owner annotation, when present.
    pub owner_record: Option<String>,
    /// It has a deletion timestamp: it is on its way out.
    pub deleting: bool,
}

impl Found {
    /// The facts of an object's metadata.
    pub fn from_object_meta(metadata: &ObjectMeta) -> Self {
        Found {
            uid: metadata.uid.clone().unwrap_or_default(),
            resource_version: metadata.resource_version.clone().unwrap_or_default(),
            labels: metadata.labels.clone().unwrap_or_default(),
            owner_record: metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::OWNER))
                .cloned(),
            deleting: metadata.deletion_timestamp.is_some(),
        }
    }
}

/// The installation an object belongs to, by its labels: the value of
/// `k8sworker.io/installation` when `app.kubernetes.io/managed-by` is ours.
pub fn owner(labels: &BTreeMap<String, String>) -> Option<&str> {
    (labels.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGER))
        .then(|| labels.get(labels::INSTALLATION).map(String::as_str))
        .flatten()
}

/// An object read by metadata, as Observe reports it.
pub(crate) fn from_meta(kind: Kind, metadata: &ObjectMeta) -> ObservedComponent {
    let labels = metadata.labels.clone().unwrap_or_default();
    ObservedComponent {
        r#ref: Some(ComponentRef {
            api_version: kind.api_version().to_string(),
            kind: kind.as_str().to_string(),
            namespace: metadata.namespace.clone().unwrap_or_default(),
            name: metadata.name.clone().unwrap_or_default(),
        }),
        uid: metadata.uid.clone().unwrap_or_default(),
        resource_version: metadata.resource_version.clone().unwrap_or_default(),
        spec_hash: metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::SPEC_HASH))
            .cloned()
            .unwrap_or_default(),
        owner: owner(&labels).unwrap_or_default().to_string(),
        owner_record: metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::OWNER))
            .cloned(),
        replicas: None,
        ready_replicas: None,
        foreign_managers: foreign_managers(metadata),
        immutable_fields: Default::default(),
        foreign_fields: foreign_fields(metadata, None),
    }
}

/// Each leaf field another manager owns (entries as in [`foreign_managers`]),
/// with the value found: read from `object` (the whole object's JSON) when
/// given, else only for fields under `metadata`.
fn foreign_fields(metadata: &ObjectMeta, object: Option<&Value>) -> Vec<ForeignField> {
    let meta_only;
    let (source, whole) = match object {
        Some(object) => (object, true),
        None => {
            meta_only = json!({ "metadata": metadata });
            (&meta_only, false)
        }
    };
    foreign_entries(metadata)
        .flat_map(|(manager, fields)| {
            managed::leaves(fields).into_iter().map(move |path| {
                let readable = whole || path.first().map(String::as_str) == Some("f:metadata");
                ForeignField {
                    manager: manager.to_owned(),
                    value_json: readable
                        .then(|| managed::value_at(source, &path).map(Value::to_string))
                        .flatten(),
                    path,
                }
            })
        })
        .collect()
}

/// The managedFields entries of managers other than k8sworker on the object
/// itself (not its status or scale): manager and FieldsV1 set.
fn foreign_entries(metadata: &ObjectMeta) -> impl Iterator<Item = (&str, &Value)> {
    metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| !matches!(entry.subresource.as_deref(), Some("status") | Some("scale")))
        .filter_map(|entry| Some((entry.manager.as_deref()?, &entry.fields_v1.as_ref()?.0)))
        .filter(|(manager, _)| *manager != labels::MANAGER)
}

/// A Service with its immutable fields (`spec.clusterIP`).
pub(crate) fn from_service(service: &Service) -> ObservedComponent {
    ObservedComponent {
        immutable_fields: immutable::fields(&Object::Service(service.clone()))
            .into_iter()
            .collect(),
        foreign_fields: foreign_fields(
            &service.metadata,
            serde_json::to_value(service).ok().as_ref(),
        ),
        ..from_meta(Kind::Service, &service.metadata)
    }
}

/// Field managers other than k8sworker that wrote the object itself (not its
/// status or scale): someone changed it outside k8sworker.
fn foreign_managers(metadata: &ObjectMeta) -> Vec<String> {
    let managers: BTreeSet<String> = metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| !matches!(entry.subresource.as_deref(), Some("status") | Some("scale")))
        .filter_map(|entry| entry.manager.clone())
        .filter(|manager| manager != labels::MANAGER)
        .collect();
    managers.into_iter().collect()
}

/// A StatefulSet with its replicas and immutable fields.
pub(crate) fn from_statefulset(statefulset: &StatefulSet) -> ObservedComponent {
    ObservedComponent {
        replicas: Some(
            statefulset
                .spec
                .as_ref()
                .and_then(|spec| spec.replicas)
                .unwrap_or(1),
        ),
        ready_replicas: Some(
            statefulset
                .status
                .as_ref()
                .and_then(|status| status.ready_replicas)
                .unwrap_or(0),
        ),
        immutable_fields: immutable::fields(&Object::StatefulSet(Box::new(statefulset.clone())))
            .into_iter()
            .collect(),
        foreign_fields: foreign_fields(
            statefulset.meta(),
            serde_json::to_value(statefulset).ok().as_ref(),
        ),
        ..from_meta(Kind::StatefulSet, statefulset.meta())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};

    fn mk_meta(labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("vantiq-inst-configmap-0".into()),
            namespace: Some("ns-a".into()),
            uid: Some("u1".into()),
            resource_version: Some("12".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            annotations: Some([(labels::SPEC_HASH.to_string(), "abc".to_string())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn owner_is_reported_only_for_our_objects() {
        let ours = from_meta(
            Kind::ConfigMap,
            &mk_meta(&[
                (labels::MANAGED_BY, labels::MANAGER),
                (labels::INSTALLATION, "inst"),
            ]),
        );
        assert_eq!(ours.owner, "inst");
        assert_eq!(ours.spec_hash, "abc");
        assert_eq!(ours.uid, "u1");
        assert_eq!(ours.resource_version, "12");
        assert_eq!(ours.r#ref.unwrap().kind, "ConfigMap");

        let foreign = from_meta(Kind::ConfigMap, &mk_meta(&[(labels::INSTALLATION, "inst")]));
        assert_eq!(foreign.owner, "");
    }

    #[test]
    fn foreign_managers_ignore_ours_and_subresources() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let entry = |manager: &str, subresource: Option<&str>| ManagedFieldsEntry {
            manager: Some(manager.into()),
            subresource: subresource.map(String::from),
            ..Default::default()
        };
        let mut meta = mk_meta(&[]);
        meta.managed_fields = Some(vec![
            entry(labels::MANAGER, None),
            entry(labels::MANAGER, Some("scale")),
            entry("kube-controller-manager", Some("status")),
            entry("kubectl-edit", None),
            entry("kubectl-edit", None),
            entry("argocd", None),
        ]);
        assert_eq!(foreign_managers(&meta), ["argocd", "kubectl-edit"]);
    }

    #[test]
    fn foreign_fields_carry_their_values_where_read() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
        let entry = |manager: &str, fields: Value| ManagedFieldsEntry {
            manager: Some(manager.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        };
        let mut meta = mk_meta(&[("team", "a")]);
        meta.managed_fields = Some(vec![
            entry(
                labels::MANAGER,
                json!({"f:metadata": {"f:labels": {"f:team": {}}}}),
            ),
            entry(
                "kubectl-label",
                json!({"f:metadata": {"f:labels": {"f:team": {}}}}),
            ),
            entry("kubectl-edit", json!({"f:data": {"f:key": {}}})),
        ]);
        let found = foreign_fields(&meta, None);
        let described: Vec<(String, Vec<String>, Option<String>)> = found
            .into_iter()
            .map(|f| (f.manager, f.path, f.value_json))
            .collect();
        assert_eq!(
            described,
            [
                (
                    "kubectl-label".to_owned(),
                    vec!["f:metadata".to_owned(), "f:labels".into(), "f:team".into()],
                    Some("\"a\"".to_owned())
                ),
                (
                    "kubectl-edit".to_owned(),
                    vec!["f:data".to_owned(), "f:key".into()],
                    None
                ),
            ],
            "a value outside metadata of an object read by metadata is never read"
        );
    }

    #[test]
    fn statefulsets_report_replicas() {
        let sts = StatefulSet {
            metadata: mk_meta(&[]),
            spec: Some(StatefulSetSpec {
                replicas: Some(3),
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                ready_replicas: Some(2),
                ..Default::default()
            }),
        };
        let observed = from_statefulset(&sts);
        assert_eq!(
            (observed.replicas, observed.ready_replicas),
            (Some(3), Some(2))
        );
        assert_eq!(
            observed.immutable_fields.get("spec.podManagementPolicy"),
            Some(&"\"OrderedReady\"".to_owned()),
            "{:?}",
            observed.immutable_fields
        );
    }
}
