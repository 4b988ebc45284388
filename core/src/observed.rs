//! What an executor reports of one object it found: identity, version, the
//! marks of ownership, the fields an update may not change, and for
//! StatefulSets the replicas.

use crate::component::ComponentId;
use crate::immutable::Fields;
use crate::managed::ForeignField;

/// An object as an executor found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The object's kind and name.
    pub id: ComponentId,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// The spec-hash annotation, when present.
    pub spec_hash: Option<String>,
    /// The installation the object belongs to by its labels
    /// (`app.kubernetes.io/managed-by: k8sworker` and
    /// `k8sworker.io/installation`), when it carries both.
    pub owner: Option<String>,
    /// The owner annotation ([`crate::labels::OWNER`]) as found, when
    /// present; [`crate::owner::ownership`] reads it.
    pub owner_record: Option<String>,
    /// StatefulSets: `spec.replicas`.
    pub replicas: Option<i32>,
    /// StatefulSets: `status.readyReplicas`.
    pub ready_replicas: Option<i32>,
    /// Field managers other than k8sworker that changed the object.
    pub foreign_managers: Vec<String>,
    /// The object's immutable fields as found ([`crate::immutable::fields`]);
    /// empty when the executor does not report them (ConfigMaps, Secrets,
    /// Ingresses, or an older executor).
    pub immutable: Fields,
    /// Each field another field manager owns, with the value found
    /// ([`crate::managed`]); empty from an executor that does not report
    /// them, whose `foreign_managers` are then judged whole.
    pub foreign_fields: Vec<ForeignField>,
}
