//! Fields the Kubernetes API server never lets an update change, so that a
//! plan changing one is refused before its first write instead of half-way.
//!
//! [`fields`] reads an object's immutable fields as canonical JSON strings,
//! keyed by field path; an executor reports them for each object it observes
//! ([`crate::observed::Observed::immutable`]) and [`changes`] compares them
//! with a desired object. The list is the API server's update validation
//! (`k8s.io/kubernetes`, `pkg/apis/apps/validation/validation.go`
//! `ValidateStatefulSetUpdate` and `pkg/apis/core/validation/validation.go`
//! `ValidateServiceUpdate`):
//!
//! - StatefulSet: every field of `spec` but `replicas`, `ordinals`,
//!   `template`, `updateStrategy`, `revisionHistoryLimit`,
//!   `persistentVolumeClaimRetentionPolicy` and `minReadySeconds` ("updates to
//!   statefulset spec for fields other than … are forbidden"): of the fields
//!   a StatefulSet can carry, `selector`, `serviceName`,
//!   `volumeClaimTemplates` and `podManagementPolicy`.
//! - Service: `clusterIP` once allocated ("field is immutable"), when the
//!   desired object names one (`None` for a headless Service). Changes of
//!   `type` among ClusterIP, NodePort and LoadBalancer are allowed.
//!
//! ConfigMaps and Secrets are immutable only once `immutable: true` is set
//! (and a Secret's `type` never changes); k8sworker renders neither a
//! different `type` nor `immutable`, and observes them by metadata only, so
//! they are not compared here.
//!
//! Values are compared after the API server's defaults are applied to the
//! desired side (`podManagementPolicy: OrderedReady`, a claim template's
//! `volumeMode: Filesystem`), and the fields the server adds to the observed
//! side (a claim template's `status`) are left out, so an unchanged object
//! never shows a change.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use serde_json::{Value, json};

use crate::component::{ComponentId, Object};

/// The immutable fields of one object: field path (`spec.selector`) →
/// canonical JSON of its value.
pub type Fields = BTreeMap<String, String>;

/// The immutable fields of `object` ([module docs](self) for which).
/// Kinds without any are an empty map.
pub fn fields(object: &Object) -> Fields {
    match object {
        Object::StatefulSet(statefulset) => statefulset_fields(statefulset),
        Object::Service(service) => service_fields(service),
        Object::ConfigMap(_) | Object::Secret(_) | Object::Ingress(_) => Fields::new(),
    }
}

fn statefulset_fields(statefulset: &StatefulSet) -> Fields {
    let spec = statefulset.spec.clone().unwrap_or_default();
    let selector = json!({
        "matchLabels": spec.selector.match_labels.unwrap_or_default(),
        "matchExpressions": spec.selector.match_expressions.unwrap_or_default(),
    });
    let templates: Vec<Value> = spec
        .volume_claim_templates
        .unwrap_or_default()
        .iter()
        .map(claim_template)
        .collect();
    [
        ("spec.selector", selector),
        (
            "spec.serviceName",
            Value::from(spec.service_name.unwrap_or_default()),
        ),
        ("spec.volumeClaimTemplates", Value::from(templates)),
        (
            "spec.podManagementPolicy",
            Value::from(
                spec.pod_management_policy
                    .unwrap_or_else(|| "OrderedReady".to_owned()),
            ),
        ),
    ]
    .into_iter()
    .map(|(field, value)| (field.to_owned(), value.to_string()))
    .collect()
}

/// A claim template as the API server compares it: name, labels,
/// annotations and spec, with the default `volumeMode` filled in; the
/// `status` the server adds is left out.
fn claim_template(claim: &PersistentVolumeClaim) -> Value {
    let mut spec = claim.spec.clone().unwrap_or_default();
    spec.volume_mode
        .get_or_insert_with(|| "Filesystem".to_owned());
    json!({
        "name": claim.metadata.name,
        "labels": claim.metadata.labels.clone().unwrap_or_default(),
        "annotations": claim.metadata.annotations.clone().unwrap_or_default(),
        "spec": spec,
    })
}

fn service_fields(service: &Service) -> Fields {
    let cluster_ip = service
        .spec
        .as_ref()
        .and_then(|spec| spec.cluster_ip.clone())
        .filter(|ip| !ip.is_empty());
    cluster_ip
        .map(|ip| ("spec.clusterIP".to_owned(), Value::from(ip).to_string()))
        .into_iter()
        .collect()
}

/// A desired value of an immutable field that differs from the object's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The object.
    pub id: ComponentId,
    /// The field's path, e.g. `spec.selector`.
    pub field: String,
    /// The value the object has (canonical JSON).
    pub observed: String,
    /// The value the plan would write (canonical JSON).
    pub desired: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} field `{}` would change from {} to {}",
            self.id, self.field, self.observed, self.desired
        )
    }
}

/// The immutable fields `desired` would change on an object whose fields
/// are `observed` ([`fields`] of it). A field `desired` leaves unset, or
/// that `observed` lacks (an executor that does not report it), is no
/// change: the API server keeps or judges it.
pub fn changes(id: &ComponentId, desired: &Object, observed: &Fields) -> Vec<Change> {
    fields(desired)
        .into_iter()
        .filter_map(|(field, desired)| {
            let observed = observed.get(&field)?;
            (*observed != desired).then(|| Change {
                id: id.clone(),
                field,
                observed: observed.clone(),
                desired,
            })
        })
        .collect()
}

/// What to do about changes of immutable fields, for a person.
pub const ADVICE: &str = "the API server refuses to change these fields of an existing object; undeploy the installation, then deploy it again (its objects are recreated, pods restart)";

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    use crate::component::Kind;

    fn mk_sts(selector: &[(&str, &str)], policy: Option<&str>) -> Object {
        Object::StatefulSet(Box::new(StatefulSet {
            spec: Some(StatefulSetSpec {
                service_name: Some("redis".into()),
                selector: LabelSelector {
                    match_labels: Some(
                        selector
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    ),
                    match_expressions: None,
                },
                pod_management_policy: policy.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    fn id() -> ComponentId {
        ComponentId::new(Kind::StatefulSet, "redis")
    }

    #[test]
    fn a_new_selector_is_a_change_and_defaults_are_not() {
        let running = fields(&mk_sts(
            &[("k8sworker.io/installation", "redis")],
            Some("OrderedReady"),
        ));
        let same = mk_sts(&[("k8sworker.io/installation", "redis")], None);
        assert_eq!(changes(&id(), &same, &running), []);
        let relabelled = mk_sts(&[("app", "redis")], None);
        let found = changes(&id(), &relabelled, &running);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "spec.selector");
        assert!(
            found[0].to_string().contains("\"app\":\"redis\""),
            "{}",
            found[0]
        );
    }

    #[test]
    fn claim_templates_compare_without_server_defaults() {
        let claim = |mode: Option<&str>| PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                volume_mode: mode.map(String::from),
                ..Default::default()
            }),
            status: None,
        };
        let with = |claim: PersistentVolumeClaim| {
            let Object::StatefulSet(mut sts) = mk_sts(&[("a", "b")], None) else {
                unreachable!()
            };
            sts.spec.as_mut().unwrap().volume_claim_templates = Some(vec![claim]);
            Object::StatefulSet(sts)
        };
        let running = fields(&with(claim(Some("Filesystem"))));
        assert_eq!(changes(&id(), &with(claim(None)), &running), []);
        let found = changes(&id(), &mk_sts(&[("a", "b")], None), &running);
        assert_eq!(found[0].field, "spec.volumeClaimTemplates");
    }

    #[test]
    fn a_service_cluster_ip_is_compared_only_when_desired() {
        let service = |ip: Option<&str>| {
            Object::Service(Service {
                spec: Some(ServiceSpec {
                    cluster_ip: ip.map(String::from),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let svc = ComponentId::new(Kind::Service, "redis");
        let allocated = fields(&service(Some("10.0.0.7")));
        assert_eq!(changes(&svc, &service(None), &allocated), []);
        let found = changes(&svc, &service(Some("None")), &allocated);
        assert_eq!(found[0].field, "spec.clusterIP");
        // An executor that reports nothing leaves the judgement to the API.
        assert_eq!(changes(&svc, &service(Some("None")), &Fields::new()), []);
    }
}
