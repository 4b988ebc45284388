//! Conversions between the planner's core types and the `k8sworker.v1`
//! protocol. Nothing here decides anything: a gRPC handler converts, calls the
//! core and converts back.

use crate::v1 as pb;

use k8sworker_core::component::{Component, ComponentId, Kind};
use k8sworker_core::diff::{Drift, Observed};
use k8sworker_core::managed::ForeignField;
use k8sworker_core::model::{
    AnnotationEntry, ConfigEntry, EnvironmentVariableEntry, FileEntry, HardAffinityEntry,
    HostAliasEntry, ImageEntry, InboundPortEntry, InstallationRequest, LabelEntry,
    PersistentVolumeRefEntry, PortRef, ProbeEntry, Resources,
};
use k8sworker_core::operation::Verdict;
use k8sworker_core::owner::Tenant;
use k8sworker_core::plan::{Action, Operation, Plan, Precondition, Step};
use k8sworker_core::render::{Ancillaries, ClusterContext};

/// A protocol message that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A required message or field was absent.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A config entry had none of its `oneof` variants set.
    #[error("config[{0}] has no entry type set")]
    EmptyEntry(usize),
    /// An operation value this protocol version does not define.
    #[error("unknown operation {0}")]
    Operation(i32),
    /// A component kind an installation never has.
    #[error("unknown component kind `{0}`")]
    Kind(String),
    /// A tenant whose Vantiq namespace or cluster is empty or malformed.
    #[error("tenant: {0}")]
    Tenant(String),
}

/// Reads a tenant; absent means none.
///
/// # Errors
/// [`ConvertError::Tenant`] when a part is empty or malformed
/// ([`Tenant::new`]).
pub fn tenant_from_pb(tenant: Option<pb::Tenant>) -> Result<Option<Tenant>, ConvertError> {
    tenant
        .map(|t| {
            Tenant::new(t.vantiq_namespace, t.cluster)
                .map_err(|error| ConvertError::Tenant(error.to_string()))
        })
        .transpose()
}

/// The wire form of a tenant.
pub fn tenant_to_pb(tenant: &Tenant) -> pb::Tenant {
    pb::Tenant {
        vantiq_namespace: tenant.vantiq_namespace.clone(),
        cluster: tenant.cluster.clone(),
    }
}

/// Reads a wire `Operation`.
///
/// # Errors
/// [`ConvertError::Operation`] for `OPERATION_UNSPECIFIED` or an unknown value.
pub fn operation_from_pb(value: i32) -> Result<Operation, ConvertError> {
    Ok(match pb::Operation::try_from(value) {
        Ok(pb::Operation::Deploy) => Operation::Deploy,
        Ok(pb::Operation::Undeploy) => Operation::Undeploy,
        Ok(pb::Operation::Shutdown) => Operation::Shutdown,
        Ok(pb::Operation::Restart) => Operation::Restart,
        Ok(pb::Operation::Verify) => Operation::Verify,
        Ok(pb::Operation::FetchLogs) => Operation::FetchLogs,
        _ => return Err(ConvertError::Operation(value)),
    })
}

/// The wire form of `operation`.
pub fn operation_to_pb(operation: Operation) -> pb::Operation {
    match operation {
        Operation::Deploy => pb::Operation::Deploy,
        Operation::Undeploy => pb::Operation::Undeploy,
        Operation::Shutdown => pb::Operation::Shutdown,
        Operation::Restart => pb::Operation::Restart,
        Operation::Verify => pb::Operation::Verify,
        Operation::FetchLogs => pb::Operation::FetchLogs,
    }
}

/// Reads the cluster context; absent means the default (no ingress host).
/// The tenant travels beside it: set `tenant` from [`tenant_from_pb`].
pub fn cluster_from_pb(cluster: Option<pb::ClusterContext>) -> ClusterContext {
    let cluster = cluster.unwrap_or_default();
    ClusterContext {
        cluster_name: cluster.cluster_name,
        ingress_default_node: cluster.ingress_default_node,
        tenant: None,
    }
}

/// The wire form of a cluster context.
pub fn cluster_to_pb(cluster: &ClusterContext) -> pb::ClusterContext {
    pb::ClusterContext {
        cluster_name: cluster.cluster_name.clone(),
        ingress_default_node: cluster.ingress_default_node.clone(),
    }
}

/// Reads the resolved secrets and documents; absent means none.
pub fn ancillaries_from_pb(ancillaries: Option<pb::Ancillaries>) -> Ancillaries {
    let ancillaries = ancillaries.unwrap_or_default();
    Ancillaries {
        secrets: ancillaries.secrets.into_iter().collect(),
        documents: ancillaries.documents.into_iter().collect(),
    }
}

/// The wire form of the resolved secrets and documents.
pub fn ancillaries_to_pb(ancillaries: &Ancillaries) -> pb::Ancillaries {
    pb::Ancillaries {
        secrets: ancillaries.secrets.clone().into_iter().collect(),
        documents: ancillaries.documents.clone().into_iter().collect(),
    }
}

fn resources_from_pb(r: pb::ResourceQuantities) -> Resources {
    Resources {
        cpu: r.cpu,
        memory: r.memory,
        nvidia_gpu: r.nvidia_gpu,
        amd_gpu: r.amd_gpu,
    }
}

fn resources_to_pb(r: &Resources) -> pb::ResourceQuantities {
    pb::ResourceQuantities {
        cpu: r.cpu.clone(),
        memory: r.memory.clone(),
        nvidia_gpu: r.nvidia_gpu.clone(),
        amd_gpu: r.amd_gpu.clone(),
    }
}

/// Reads an installation request from its typed wire form.
///
/// # Errors
/// [`ConvertError`] when the request or an entry is missing or has no type.
pub fn installation_from_pb(
    request: Option<pb::InstallationRequest>,
) -> Result<InstallationRequest, ConvertError> {
    use pb::config_entry::Entry;
    let request = request.ok_or(ConvertError::Missing("installation"))?;
    let mut config = Vec::with_capacity(request.config.len());
    for (index, entry) in request.config.into_iter().enumerate() {
        config.push(match entry.entry.ok_or(ConvertError::EmptyEntry(index))? {
            Entry::Image(e) => ConfigEntry::Image(ImageEntry {
                name: e.name,
                image_pull_secret: e.image_pull_secret,
                service_account: e.service_account,
                replica_count: e.replica_count.map(i64::from),
                pull_policy: e.pull_policy,
            }),
            Entry::File(e) => ConfigEntry::File(FileEntry {
                path: e.path,
                filename: e.filename,
                data_source: e.data_source,
                content: e.content,
                name: e.name,
                key: e.key,
                resource_type: e.resource_type,
                resource_name: e.resource_name,
                treat_as_text: e.treat_as_text,
                content_name: None,
            }),
            Entry::InboundPort(e) => ConfigEntry::InboundPort(InboundPortEntry {
                host: e.host,
                port: i64::from(e.port),
                protocol: e.protocol,
                port_name: e.port_name,
                service_type: e.service_type,
                service_name: e.service_name,
                cluster_ip: e.cluster_ip,
            }),
            Entry::EnvironmentVariable(e) => {
                ConfigEntry::EnvironmentVariable(EnvironmentVariableEntry {
                    name: e.name,
                    value: e.value,
                    secret_name: e.secret_name,
                    key: e.key,
                    as_secret: e.as_secret,
                })
            }
            Entry::PersistentVolumeRef(e) => {
                ConfigEntry::PersistentVolumeRef(PersistentVolumeRefEntry {
                    name: e.name,
                    path: e.path,
                })
            }
            Entry::Annotation(e) => ConfigEntry::Annotation(AnnotationEntry {
                name: e.name,
                value: e.value,
                target_resource: e.target_resource,
            }),
            Entry::Label(e) => ConfigEntry::Label(LabelEntry {
                name: e.name,
                value: e.value,
                target_resource: e.target_resource,
                controls_routing: e.controls_routing,
            }),
            Entry::HostAlias(e) => ConfigEntry::HostAlias(HostAliasEntry {
                name: e.name,
                host_ip: e.host_ip,
            }),
            Entry::Probe(e) => ConfigEntry::Probe(ProbeEntry {
                probe_type: e.probe_type,
                request_type: e.request_type,
                initial_delay_seconds: e.initial_delay_seconds.map(i64::from),
                period_seconds: e.period_seconds.map(i64::from),
                timeout_seconds: e.timeout_seconds.map(i64::from),
                success_threshold: e.success_threshold.map(i64::from),
                failure_threshold: e.failure_threshold.map(i64::from),
                commands: e.commands,
                port: e.port.map(|port| match port.parse::<i64>() {
                    Ok(number) => PortRef::Number(number),
                    Err(_) => PortRef::Name(port),
                }),
                path: e.path,
                headers: e.headers.into_iter().collect(),
            }),
            Entry::ResourceRequest(e) => ConfigEntry::ResourceRequest(resources_from_pb(e)),
            Entry::ResourceLimit(e) => ConfigEntry::ResourceLimit(resources_from_pb(e)),
            Entry::HardAffinity(e) => ConfigEntry::HardAffinity(HardAffinityEntry {
                key: e.key,
                values: e.values,
            }),
        });
    }
    Ok(InstallationRequest {
        name: request.name,
        k8s_namespace: request.k8s_namespace,
        config,
    })
}

/// Clamps a JSON integer into a protobuf `int32` (validation rejects the
/// out-of-range values before they matter; clamping keeps them out of range).
fn int32(value: i64) -> i32 {
    value.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// The typed wire form of an installation request.
pub fn installation_to_pb(request: &InstallationRequest) -> pb::InstallationRequest {
    use pb::config_entry::Entry;
    let config = request
        .config
        .iter()
        .map(|entry| {
            let entry = match entry.clone() {
                ConfigEntry::Image(e) => Entry::Image(pb::ImageEntry {
                    name: e.name,
                    image_pull_secret: e.image_pull_secret,
                    service_account: e.service_account,
                    replica_count: e.replica_count.map(int32),
                    pull_policy: e.pull_policy,
                }),
                ConfigEntry::File(e) => Entry::File(pb::FileEntry {
                    path: e.path,
                    filename: e.filename,
                    data_source: e.data_source,
                    content: e.content,
                    name: e.name,
                    key: e.key,
                    resource_type: e.resource_type,
                    resource_name: e.resource_name,
                    treat_as_text: e.treat_as_text,
                }),
                ConfigEntry::InboundPort(e) => Entry::InboundPort(pb::InboundPortEntry {
                    host: e.host,
                    port: int32(e.port),
                    protocol: e.protocol,
                    port_name: e.port_name,
                    service_type: e.service_type,
                    service_name: e.service_name,
                    cluster_ip: e.cluster_ip,
                }),
                ConfigEntry::EnvironmentVariable(e) => {
                    Entry::EnvironmentVariable(pb::EnvironmentVariableEntry {
                        name: e.name,
                        value: e.value,
                        secret_name: e.secret_name,
                        key: e.key,
                        as_secret: e.as_secret,
                    })
                }
                ConfigEntry::PersistentVolumeRef(e) => {
                    Entry::PersistentVolumeRef(pb::PersistentVolumeRefEntry {
                        name: e.name,
                        path: e.path,
                    })
                }
                ConfigEntry::Annotation(e) => Entry::Annotation(pb::AnnotationEntry {
                    name: e.name,
                    value: e.value,
                    target_resource: e.target_resource,
                }),
                ConfigEntry::Label(e) => Entry::Label(pb::LabelEntry {
                    name: e.name,
                    value: e.value,
                    target_resource: e.target_resource,
                    controls_routing: e.controls_routing,
                }),
                ConfigEntry::HostAlias(e) => Entry::HostAlias(pb::HostAliasEntry {
                    name: e.name,
                    host_ip: e.host_ip,
                }),
                ConfigEntry::Probe(e) => Entry::Probe(pb::ProbeEntry {
                    probe_type: e.probe_type,
                    request_type: e.request_type,
                    initial_delay_seconds: e.initial_delay_seconds.map(int32),
                    period_seconds: e.period_seconds.map(int32),
                    timeout_seconds: e.timeout_seconds.map(int32),
                    success_threshold: e.success_threshold.map(int32),
                    failure_threshold: e.failure_threshold.map(int32),
                    commands: e.commands,
                    port: e.port.map(|port| match port {
                        PortRef::Number(number) => number.to_string(),
                        PortRef::Name(name) => name,
                    }),
                    path: e.path,
                    headers: e.headers.into_iter().collect(),
                }),
                ConfigEntry::ResourceRequest(e) => Entry::ResourceRequest(resources_to_pb(&e)),
                ConfigEntry::ResourceLimit(e) => Entry::ResourceLimit(resources_to_pb(&e)),
                ConfigEntry::HardAffinity(e) => Entry::HardAffinity(pb::HardAffinityEntry {
                    key: e.key,
                    values: e.values,
                }),
            };
            pb::ConfigEntry { entry: Some(entry) }
        })
        .collect();
    pb::InstallationRequest {
        name: request.name.clone(),
        k8s_namespace: request.k8s_namespace.clone(),
        config,
    }
}

/// The wire reference to `id` in `namespace`.
pub fn component_ref(id: &ComponentId, namespace: &str) -> pb::ComponentRef {
    pb::ComponentRef {
        api_version: id.kind.api_version().to_owned(),
        kind: id.kind.as_str().to_owned(),
        namespace: namespace.to_owned(),
        name: id.name.clone(),
    }
}

/// Reads a reference to a managed kind.
///
/// # Errors
/// [`ConvertError::Kind`] for a kind an installation never has.
pub fn component_id(reference: &pb::ComponentRef) -> Result<ComponentId, ConvertError> {
    let kind =
        Kind::parse(&reference.kind).ok_or_else(|| ConvertError::Kind(reference.kind.clone()))?;
    Ok(ComponentId::new(kind, reference.name.clone()))
}

/// The wire form of a rendered component: its reference, JSON and spec hash.
pub fn desired_to_pb(component: &Component, namespace: &str) -> pb::DesiredComponent {
    pb::DesiredComponent {
        r#ref: Some(component_ref(&component.id(), namespace)),
        object_json: component.object.to_json_bytes(),
        spec_hash: component.spec_hash.clone(),
    }
}

/// Reads what an executor observed of one object; empty strings mean absent.
///
/// # Errors
/// [`ConvertError`] when the reference is missing or names an unmanaged kind.
pub fn observed_from_pb(observed: pb::ObservedComponent) -> Result<Observed, ConvertError> {
    let reference = observed
        .r#ref
        .ok_or(ConvertError::Missing("observed.ref"))?;
    Ok(Observed {
        id: component_id(&reference)?,
        uid: observed.uid,
        resource_version: observed.resource_version,
        spec_hash: Some(observed.spec_hash).filter(|hash| !hash.is_empty()),
        owner: Some(observed.owner).filter(|owner| !owner.is_empty()),
        owner_record: observed.owner_record,
        replicas: observed.replicas,
        ready_replicas: observed.ready_replicas,
        foreign_managers: observed.foreign_managers,
        immutable: observed.immutable_fields.into_iter().collect(),
        foreign_fields: observed
            .foreign_fields
            .into_iter()
            .map(|field| ForeignField {
                manager: field.manager,
                path: field.path,
                value: field.value_json,
            })
            .collect(),
    })
}

/// The wire form of a step action.
pub fn action_to_pb(action: Action) -> pb::Action {
    match action {
        Action::Create => pb::Action::Create,
        Action::Update => pb::Action::Update,
        Action::Delete => pb::Action::Delete,
        Action::Scale => pb::Action::Scale,
        Action::Noop => pb::Action::Noop,
    }
}

fn step_to_pb(step: &Step, namespace: &str) -> pb::Step {
    let precondition = match &step.precondition {
        Precondition::MustNotExist => pb::precondition::Kind::MustNotExist(pb::MustNotExist {}),
        Precondition::Expected {
            uid,
            resource_version,
        } => pb::precondition::Kind::Expected(pb::ExpectedVersion {
            uid: uid.clone(),
            resource_version: resource_version.clone(),
        }),
    };
    pb::Step {
        action: action_to_pb(step.action).into(),
        component: Some(component_ref(&step.component, namespace)),
        precondition: Some(pb::Precondition {
            kind: Some(precondition),
        }),
        object_json: step
            .object
            .as_ref()
            .map(|o| o.to_json_bytes())
            .unwrap_or_default(),
        replicas: step.replicas,
        reason: step.reason.clone(),
    }
}

/// The wire form of a plan, every step bound to its precondition.
pub fn plan_to_pb(plan: &Plan) -> pb::Plan {
    pb::Plan {
        id: plan.id.clone(),
        digest: plan.digest.clone(),
        installation: plan.installation.clone(),
        namespace: plan.namespace.clone(),
        operation: operation_to_pb(plan.operation).into(),
        steps: plan
            .steps
            .iter()
            .map(|step| step_to_pb(step, &plan.namespace))
            .collect(),
        desired_replicas: plan.desired_replicas,
        tenant: plan.tenant.as_ref().map(tenant_to_pb),
    }
}

/// The wire form of one drift finding.
pub fn drift_to_pb(drift: &Drift, namespace: &str) -> pb::Drift {
    pb::Drift {
        component: Some(component_ref(&drift.component, namespace)),
        kind: drift.kind.as_str().to_owned(),
        message: drift.message.clone(),
    }
}

/// The wire form of what an executor observed of one object in `namespace`
/// (the inverse of [`observed_from_pb`]).
pub fn observed_to_pb(observed: &Observed, namespace: &str) -> pb::ObservedComponent {
    pb::ObservedComponent {
        r#ref: Some(component_ref(&observed.id, namespace)),
        uid: observed.uid.clone(),
        resource_version: observed.resource_version.clone(),
        spec_hash: observed.spec_hash.clone().unwrap_or_default(),
        owner: observed.owner.clone().unwrap_or_default(),
        owner_record: observed.owner_record.clone(),
        replicas: observed.replicas,
        ready_replicas: observed.ready_replicas,
        foreign_managers: observed.foreign_managers.clone(),
        immutable_fields: observed.immutable.clone().into_iter().collect(),
        foreign_fields: observed
            .foreign_fields
            .iter()
            .map(|field| pb::ForeignField {
                manager: field.manager.clone(),
                path: field.path.clone(),
                value_json: field.value.clone(),
            })
            .collect(),
    }
}

/// The wire form of a verify verdict: one `Drift` per finding, then one of
/// kind `missing` (without a component) per missing referenced object.
pub fn verdict_to_pb(verdict: &Verdict, namespace: &str) -> Vec<pb::Drift> {
    verdict
        .drift
        .iter()
        .map(|d| drift_to_pb(d, namespace))
        .chain(verdict.missing_references.iter().map(|m| pb::Drift {
            component: None,
            kind: "missing".to_owned(),
            message: format!("referenced {m} does not exist"),
        }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_and_owner_records_cross_the_wire() {
        assert_eq!(tenant_from_pb(None), Ok(None));
        let tenant = Tenant::new("acme", "prod").unwrap();
        assert_eq!(
            tenant_from_pb(Some(tenant_to_pb(&tenant))),
            Ok(Some(tenant))
        );
        let bad = pb::Tenant {
            vantiq_namespace: String::new(),
            cluster: "prod".into(),
        };
        assert!(matches!(
            tenant_from_pb(Some(bad)),
            Err(ConvertError::Tenant(_))
        ));
        let observed = Observed {
            id: ComponentId::new(Kind::ConfigMap, "cm"),
            uid: "u".into(),
            resource_version: "1".into(),
            spec_hash: None,
            owner: Some("web".into()),
            owner_record: Some("acme/prod/web/ConfigMap/cm".into()),
            replicas: None,
            ready_replicas: None,
            foreign_managers: vec!["kubectl-label".into()],
            immutable: [("spec.serviceName".to_owned(), "\"cm\"".to_owned())].into(),
            foreign_fields: vec![ForeignField {
                manager: "kubectl-label".into(),
                path: vec!["f:metadata".into(), "f:labels".into(), "f:team".into()],
                value: Some("\"a\"".into()),
            }],
        };
        assert_eq!(
            observed_from_pb(observed_to_pb(&observed, "ns")),
            Ok(observed)
        );
    }
}
