//! What an installation has in the executor's namespace right now.
//!
//! Answered from the watch-fed [`Cache`] once it is synced: no API call.
//! The installation's objects are those of the managed kinds carrying its
//! labels; each requested name the labels did not find is looked up by name
//! (an object in the way, possibly not ours), and each referenced
//! ConfigMap, Secret or claim by name. StatefulSets and Services carry their
//! replica counts and the fields an update may not change (see
//! [`k8sworker_core::immutable`]); each object carries the fields other
//! field managers own, with the values the cache kept
//! ([`k8sworker_core::managed`]: values outside `metadata` only for the
//! kinds watched whole). Secret data never leaves the API server: Secrets
//! are watched as metadata only.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8sworker_core::component::Object;
use k8sworker_core::immutable;
use k8sworker_core::labels;
use k8sworker_core::managed;
use k8sworker_proto::v1::{
    ComponentRef, ForeignField, ObserveRequest, ObserveResponse, ObservedComponent,
};
use kube::{Resource as _, api::ObjectMeta};
use serde_json::{Value, json};

use crate::{Error, cache::Cache, kinds::Kind, precondition::owner};

/// Observes `request.installation` in `namespace` (already checked to be
/// the executor's own) from the synced `cache`.
pub fn observe(
    cache: &Cache,
    namespace: &str,
    request: &ObserveRequest,
) -> Result<ObserveResponse, Error> {
    let names = checked_refs(namespace, &request.names, |kind| kind.is_managed())?;
    let references = checked_refs(namespace, &request.references, |kind| {
        matches!(
            kind,
            Kind::ConfigMap | Kind::Secret | Kind::PersistentVolumeClaim
        )
    })?;

    let mut components: Vec<ObservedComponent> = cache
        .installation(&request.installation)
        .into_iter()
        .map(|entry| entry.observed.clone())
        .collect();
    let seen: BTreeSet<(String, String)> = components
        .iter()
        .filter_map(|c| c.r#ref.as_ref())
        .map(|r| (r.kind.clone(), r.name.clone()))
        .collect();
    let found = names
        .iter()
        .filter(|(_, r)| !seen.contains(&(r.kind.clone(), r.name.clone())))
        .filter_map(|(kind, r)| cache.get(*kind, &r.name))
        .map(|entry| entry.observed.clone());
    components.extend(found);
    components.sort_by(|a, b| {
        let key = |c: &ObservedComponent| {
            let r = c.r#ref.clone().unwrap_or_default();
            (Kind::from_type(&r.api_version, &r.kind), r.name)
        };
        key(a).cmp(&key(b))
    });

    let existing = references
        .into_iter()
        .filter(|(kind, r)| cache.get(*kind, &r.name).is_some())
        .map(|(_, r)| r)
        .collect();
    Ok(ObserveResponse {
        components,
        existing_references: existing,
    })
}

/// Checks kinds and namespaces of requested refs; fills in the namespace.
fn checked_refs(
    namespace: &str,
    refs: &[ComponentRef],
    allowed: impl Fn(Kind) -> bool,
) -> Result<Vec<(Kind, ComponentRef)>, Error> {
    refs.iter()
        .map(|r| {
            let mut r = r.clone();
            if r.namespace.is_empty() {
                r.namespace = namespace.to_string();
            } else if r.namespace != namespace {
                return Err(Error::WrongNamespace {
                    requested: r.namespace.clone(),
                    own: namespace.to_string(),
                });
            }
            match Kind::from_type(&r.api_version, &r.kind).filter(|kind| allowed(*kind)) {
                Some(kind) => Ok((kind, r)),
                None => Err(Error::invalid_component(
                    &r,
                    "this kind cannot be observed here",
                )),
            }
        })
        .collect()
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

    #[test]
    fn refs_outside_the_namespace_or_kinds_are_refused() {
        let mk = |kind: &str, namespace: &str| ComponentRef {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: "x".into(),
        };
        let refs = checked_refs("ns-a", &[mk("Secret", "")], |_| true).unwrap();
        assert_eq!(refs[0].1.namespace, "ns-a");
        assert!(matches!(
            checked_refs("ns-a", &[mk("Secret", "ns-b")], |_| true),
            Err(Error::WrongNamespace { .. })
        ));
        assert!(matches!(
            checked_refs("ns-a", &[mk("Pod", "")], |_| true),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            checked_refs("ns-a", &[mk("PersistentVolumeClaim", "")], |kind| kind
                .is_managed()),
            Err(Error::Invalid { .. })
        ));
    }
}
