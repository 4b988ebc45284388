//! Render: a validated installation → the Kubernetes objects it consists of.
//!
//! The rules (from Vantiq's documentation of its worker, see
//! `docs/components.md`):
//! - a StatefulSet `<name>` and its headless Service `<name>`, always;
//! - one ConfigMap `vantiq-<name>-configmap-<n>` per distinct `path` of files
//!   with `content` or document content (a Secret `vantiq-<name>-secret-<n>`
//!   when those files say `dataSource: secret`); files from existing
//!   ConfigMaps or Secrets generate nothing but a reference;
//! - every file `path` is one projected volume mounting all its sources;
//! - one Secret `vantiq-<name>-secret-<n>` for `asSecret` and `@secrets(…)`
//!   variables: their values never appear in the StatefulSet; generated
//!   Secrets, file and variable ones alike, are numbered in order of their
//!   first config entry;
//! - per `inboundPort`, a Service (NodePort by default) and, for TCP, an
//!   Ingress whose host is the entry's `host` or the cluster's
//!   `ingressDefaultNode`;
//! - the pods get no Kubernetes API token (`automountServiceAccountToken:
//!   false`) unless the `image` entry names a `serviceAccount`;
//! - every object carries the ownership labels and its spec-hash annotation;
//!   the pod template carries the hash of the generated ConfigMap and Secret
//!   content, so a content change rolls the pods.
//!
//! Rendering is a pure function of the request, the cluster context and the
//! ancillaries (secret values and document content resolved by the control
//! plane): the same inputs always give byte-identical objects.

use std::collections::BTreeMap;

use crate::labels;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapProjection, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, HTTPGetAction, HTTPHeader, HostAlias, KeyToPath, LocalObjectReference,
    NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, Secret, SecretKeySelector, SecretProjection, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::component::{Component, Object};
use crate::model::{
    ConfigEntry, DataSource, EnvValue, FileEntry, InstallationRequest, PortRef, ProbeEntry,
    Resources, TargetResource,
};
use crate::names;
use crate::owner::{OwnerRecord, Tenant};
use crate::validate::{MAX_OBJECT_DATA, ValidationErrors, normalize_path, validate};

/// The cluster an installation is rendered for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterContext {
    /// The control plane's K8sCluster name.
    pub cluster_name: String,
    /// Ingress host for inbound ports without `host`; no host rule when empty.
    pub ingress_default_node: String,
    /// Whom the installation is rendered for: every object then carries its
    /// owner record ([`labels::OWNER`]). `None` renders no record (a preview);
    /// no plan is made without a tenant.
    pub tenant: Option<Tenant>,
}

/// Content the control plane resolved for a request. Its values are secret:
/// never logged, never traced, never in an error message.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Ancillaries {
    /// `@secrets(NAME)` values by NAME.
    pub secrets: BTreeMap<String, String>,
    /// Document content by document name.
    pub documents: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Ancillaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ancillaries")
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("documents", &self.documents.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a request could not be rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    /// The request breaks the rules of [`crate::validate`].
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// An `@secrets(NAME)` value whose secret the control plane did not
    /// resolve.
    #[error(
        "config[{entry}] (environmentVariable).value: the secret `{name}` was not resolved by the control plane; create it there or correct the name"
    )]
    MissingSecret {
        /// Index of the `environmentVariable` entry in `config`.
        entry: usize,
        /// The secret's name.
        name: String,
    },
    /// A document the control plane did not resolve.
    #[error(
        "config[{entry}] (file).resourceName: the document `{name}` was not resolved by the control plane; upload it or correct the name"
    )]
    MissingDocument {
        /// Index of the `file` entry in `config`.
        entry: usize,
        /// The document's name.
        name: String,
    },
    /// A `treatAsText` document that is not UTF-8.
    #[error(
        "config[{entry}] (file).treatAsText: the document `{name}` is not UTF-8 text; drop treatAsText to mount it as binary"
    )]
    DocumentNotText {
        /// Index of the `file` entry in `config`.
        entry: usize,
        /// The document's name.
        name: String,
    },
    /// The generated files of one `path` exceed [`MAX_OBJECT_DATA`] bytes
    /// (Kubernetes: a ConfigMap or Secret holds at most 1 MiB).
    #[error(
        "the files mounted at `{path}` hold {bytes} bytes; a ConfigMap or Secret holds at most {MAX_OBJECT_DATA} (1 MiB)"
    )]
    TooLarge {
        /// The mount path, normalized.
        path: String,
        /// File names plus contents, in bytes.
        bytes: usize,
    },
    /// The cluster's `ingressDefaultNode` is not a valid Ingress host
    /// ([`names::is_ingress_host`]: a DNS-1123 subdomain, never an IP
    /// address), e.g. a record stored before the control plane checked it.
    #[error(
        "the cluster's ingressDefaultNode `{0}` is not a valid Ingress host (a lower-case DNS name, not an IP address); correct the k8sclusters record"
    )]
    IngressDefaultNode(String),
    /// An operation was asked for without a tenant (Vantiq namespace and
    /// cluster): no object could record its owner, none could be found ours.
    #[error(
        "the request names no tenant (Vantiq namespace and cluster); k8sworker plans only for a tenant: upgrade the gateway"
    )]
    NoTenant,
}

/// The desired objects of `request`, in dependency order: ConfigMaps and
/// Secrets, the headless Service, the StatefulSet, port Services, Ingresses.
///
/// # Errors
/// [`RenderError::Invalid`] with every violation of the request;
/// [`RenderError::IngressDefaultNode`] for a bad cluster context; a
/// missing secret or document, a document that is not text, or generated
/// files over 1 MiB at one path.
pub fn render(
    request: &InstallationRequest,
    cluster: &ClusterContext,
    ancillaries: &Ancillaries,
) -> Result<Vec<Component>, RenderError> {
    validate(request)?;
    if !cluster.ingress_default_node.is_empty()
        && !names::is_ingress_host(&cluster.ingress_default_node)
    {
        return Err(RenderError::IngressDefaultNode(
            cluster.ingress_default_node.clone(),
        ));
    }
    Renderer::new(request, cluster.tenant.as_ref()).render(cluster, ancillaries)
}

/// The objects [`render`] would make of `request` if validation let it
/// through: no rule of [`crate::validate`] is checked, nor the cluster's
/// `ingressDefaultNode`. Such objects may be refused by the API server; this
/// exists for the differential test that sends them there (server-side dry
/// run) to find what validation must refuse. Never used for a plan.
///
/// # Errors
/// As [`render`], except [`RenderError::Invalid`] and
/// [`RenderError::IngressDefaultNode`]: a missing secret or document, a
/// document that is not text, generated files over 1 MiB at one path.
#[doc(hidden)]
pub fn render_unvalidated(
    request: &InstallationRequest,
    cluster: &ClusterContext,
    ancillaries: &Ancillaries,
) -> Result<Vec<Component>, RenderError> {
    Renderer::new(request, cluster.tenant.as_ref()).render(cluster, ancillaries)
}

struct Renderer<'a> {
    request: &'a InstallationRequest,
    tenant: Option<&'a Tenant>,
    name: &'a str,
    namespace: &'a str,
}

/// A Secret's data: values by key.
type SecretData = BTreeMap<String, ByteString>;

/// Files sharing one mount path.
struct PathGroup<'a> {
    path: String,
    /// Generated-content files (inline content or documents), by filename.
    generated: BTreeMap<String, Vec<u8>>,
    /// Whether all generated files are text (ConfigMap `data`), by filename.
    text: BTreeMap<String, bool>,
    data_source: DataSource,
    /// Files from existing ConfigMaps/Secrets.
    references: Vec<&'a FileEntry>,
    /// The index of the group's first config entry.
    first_entry: usize,
}

impl<'a> Renderer<'a> {
    fn new(request: &'a InstallationRequest, tenant: Option<&'a Tenant>) -> Self {
        Self {
            request,
            tenant,
            name: &request.name,
            namespace: &request.k8s_namespace,
        }
    }

    fn render(
        &self,
        cluster: &ClusterContext,
        ancillaries: &Ancillaries,
    ) -> Result<Vec<Component>, RenderError> {
        let groups = self.path_groups(ancillaries)?;
        let env_secret = self.env_secret_data(ancillaries)?;
        // The variables' Secret takes its number where its first entry stands.
        let mut env_secret_name = None;
        let mut generated = Vec::new();
        let mut volumes = Vec::new();
        let mut mounts = Vec::new();
        let (mut configmaps, mut secrets) = (0, 0);
        for (volume_index, group) in groups.iter().enumerate() {
            let volume = format!("files-{volume_index}");
            let mut sources = Vec::new();
            if !group.generated.is_empty() {
                let bytes: usize = group.generated.iter().map(|(k, v)| k.len() + v.len()).sum();
                if bytes > MAX_OBJECT_DATA {
                    return Err(RenderError::TooLarge {
                        path: group.path.clone(),
                        bytes,
                    });
                }
                let items = Some(
                    group
                        .generated
                        .keys()
                        .map(|key| KeyToPath {
                            key: key.clone(),
                            path: key.clone(),
                            mode: None,
                        })
                        .collect(),
                );
                match group.data_source {
                    DataSource::ConfigMap => {
                        let name = names::configmap(self.name, configmaps);
                        configmaps += 1;
                        generated.push(self.configmap(&name, group));
                        sources.push(VolumeProjection {
                            config_map: Some(ConfigMapProjection {
                                name,
                                items,
                                optional: None,
                            }),
                            ..Default::default()
                        });
                    }
                    DataSource::Secret => {
                        if let Some((first, _)) = &env_secret
                            && *first < group.first_entry
                            && env_secret_name.is_none()
                        {
                            env_secret_name = Some(names::secret(self.name, secrets));
                            secrets += 1;
                        }
                        let name = names::secret(self.name, secrets);
                        secrets += 1;
                        let data = group
                            .generated
                            .iter()
                            .map(|(key, value)| (key.clone(), ByteString(value.clone())))
                            .collect();
                        generated.push(self.secret(&name, data));
                        sources.push(VolumeProjection {
                            secret: Some(SecretProjection {
                                name,
                                items,
                                optional: None,
                            }),
                            ..Default::default()
                        });
                    }
                }
            }
            for file in &group.references {
                let (Some(name), Some(key), Some(filename)) =
                    (&file.name, &file.key, file.effective_filename())
                else {
                    continue;
                };
                let items = Some(vec![KeyToPath {
                    key: key.clone(),
                    path: filename.to_owned(),
                    mode: None,
                }]);
                sources.push(match file.data_source() {
                    Some(DataSource::Secret) => VolumeProjection {
                        secret: Some(SecretProjection {
                            name: name.clone(),
                            items,
                            optional: None,
                        }),
                        ..Default::default()
                    },
                    _ => VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: name.clone(),
                            items,
                            optional: None,
                        }),
                        ..Default::default()
                    },
                });
            }
            volumes.push(Volume {
                name: volume.clone(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(sources),
                    default_mode: None,
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: volume,
                mount_path: group.path.clone(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        if let Some((_, data)) = env_secret {
            let name = env_secret_name.get_or_insert_with(|| names::secret(self.name, secrets));
            generated.push(self.secret(name, data));
        }
        let mut components: Vec<Component> = generated
            .into_iter()
            .map(|object| self.finish(object))
            .collect();
        // The generated content's hash is the hash of their spec hashes.
        let config_hash = {
            let mut hasher = Sha256::new();
            for component in &components {
                hasher.update(component.spec_hash.as_bytes());
            }
            hex::encode(hasher.finalize())
        };

        components.push(self.finish(Object::Service(self.headless_service())));
        components.push(self.finish(Object::StatefulSet(Box::new(self.statefulset(
            volumes,
            mounts,
            &config_hash,
            env_secret_name.as_deref(),
        )))));
        for (index, port) in self.inbound_ports().enumerate() {
            components.push(self.finish(Object::Service(self.port_service(index, port))));
        }
        for (index, port) in self.inbound_ports().enumerate() {
            if port.protocol.eq_ignore_ascii_case("TCP") {
                components.push(self.finish(Object::Ingress(self.ingress(index, port, cluster))));
            }
        }
        Ok(components)
    }

    /// Stamps the owner record (when rendering for a tenant), then the spec
    /// hash: SHA-256 of the object as rendered so far, the record included.
    fn finish(&self, mut object: Object) -> Component {
        if let Some(tenant) = self.tenant {
            let record = OwnerRecord::new(tenant, self.name, object.id());
            object
                .metadata_mut()
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(labels::OWNER.to_owned(), record.to_string());
        }
        // sha2's hasher is an `io::Write`: the JSON goes straight into it.
        let mut hasher = Sha256::new();
        object.write_json(&mut hasher);
        let spec_hash = hex::encode(hasher.finalize());
        object
            .metadata_mut()
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(labels::SPEC_HASH.to_owned(), spec_hash.clone());
        Component { object, spec_hash }
    }

    fn entries(&self) -> impl Iterator<Item = (usize, &'a ConfigEntry)> {
        self.request.config.iter().enumerate()
    }

    fn inbound_ports(&self) -> impl Iterator<Item = &'a crate::model::InboundPortEntry> {
        self.request.config.iter().filter_map(|entry| match entry {
            ConfigEntry::InboundPort(port) => Some(port),
            _ => None,
        })
    }

    fn path_groups(&self, ancillaries: &Ancillaries) -> Result<Vec<PathGroup<'a>>, RenderError> {
        let mut groups: Vec<PathGroup<'a>> = Vec::new();
        for (index, entry) in self.entries() {
            let ConfigEntry::File(file) = entry else {
                continue;
            };
            let path = normalize_path(&file.path);
            let position = match groups.iter().position(|group| group.path == path) {
                Some(position) => position,
                None => {
                    groups.push(PathGroup {
                        path: path.clone(),
                        generated: BTreeMap::new(),
                        text: BTreeMap::new(),
                        data_source: DataSource::ConfigMap,
                        references: Vec::new(),
                        first_entry: index,
                    });
                    groups.len() - 1
                }
            };
            let group = &mut groups[position];
            let filename = file.effective_filename().unwrap_or_default().to_owned();
            if let Some(content) = &file.content {
                group.data_source = file.data_source().unwrap_or(DataSource::ConfigMap);
                group
                    .generated
                    .insert(filename.clone(), content.as_bytes().to_vec());
                group.text.insert(filename, true);
            } else if let Some(document) = &file.resource_name {
                let Some(bytes) = ancillaries.documents.get(document) else {
                    return Err(RenderError::MissingDocument {
                        entry: index,
                        name: document.clone(),
                    });
                };
                let as_text = file.treat_as_text == Some(true);
                if as_text && std::str::from_utf8(bytes).is_err() {
                    return Err(RenderError::DocumentNotText {
                        entry: index,
                        name: document.clone(),
                    });
                }
                if group.generated.is_empty() {
                    group.data_source = file.data_source().unwrap_or(DataSource::ConfigMap);
                }
                group.generated.insert(filename.clone(), bytes.clone());
                group.text.insert(filename, as_text);
            } else {
                group.references.push(file);
            }
        }
        Ok(groups)
    }

    /// The `asSecret` variables' Secret data and the index of its first
    /// entry, or `None` when no variable goes into it.
    fn env_secret_data(
        &self,
        ancillaries: &Ancillaries,
    ) -> Result<Option<(usize, SecretData)>, RenderError> {
        let mut first = None;
        let mut data = BTreeMap::new();
        for (index, entry) in self.entries() {
            let ConfigEntry::EnvironmentVariable(env) = entry else {
                continue;
            };
            if !env.in_generated_secret() {
                continue;
            }
            let value = match env.parsed_value() {
                Some(EnvValue::SecretRef(name)) => ancillaries
                    .secrets
                    .get(name)
                    .ok_or_else(|| RenderError::MissingSecret {
                        entry: index,
                        name: name.to_owned(),
                    })?
                    .clone(),
                Some(EnvValue::Literal(value)) => value.into_owned(),
                None => continue,
            };
            first.get_or_insert(index);
            data.insert(env.name.clone(), ByteString(value.into_bytes()));
        }
        Ok(first.map(|first| (first, data)))
    }

    /// Metadata for an object of `target` kind: ownership labels, the
    /// request's labels and annotations aimed at it.
    fn metadata(&self, name: &str, target: TargetResource) -> ObjectMeta {
        let (labels, annotations) = self.user_metadata(target);
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        }
    }

    fn ownership(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::MANAGED_BY.to_owned(), labels::MANAGER.to_owned()),
            (labels::INSTALLATION.to_owned(), self.name.to_owned()),
        ])
    }

    fn user_metadata(
        &self,
        target: TargetResource,
    ) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let aimed = |wanted: &Option<String>| {
            wanted
                .as_deref()
                .is_none_or(|t| TargetResource::parse(t) == Some(target))
        };
        let mut labels = self.ownership();
        let mut annotations = BTreeMap::new();
        for entry in &self.request.config {
            match entry {
                ConfigEntry::Label(label)
                    if aimed(&label.target_resource)
                        || (target == TargetResource::Pod
                            && label.controls_routing == Some(true)) =>
                {
                    labels.insert(label.name.clone(), label.value.clone());
                }
                ConfigEntry::Annotation(annotation) if aimed(&annotation.target_resource) => {
                    annotations.insert(annotation.name.clone(), annotation.value.clone());
                }
                _ => {}
            }
        }
        (labels, annotations)
    }

    /// The labels that select the installation's pods: the request's
    /// `controlsRouting` labels, else the installation label.
    fn selector(&self) -> BTreeMap<String, String> {
        let routing: BTreeMap<String, String> = self
            .request
            .config
            .iter()
            .filter_map(|entry| match entry {
                ConfigEntry::Label(label) if label.controls_routing == Some(true) => {
                    Some((label.name.clone(), label.value.clone()))
                }
                _ => None,
            })
            .collect();
        if routing.is_empty() {
            BTreeMap::from([(labels::INSTALLATION.to_owned(), self.name.to_owned())])
        } else {
            routing
        }
    }

    fn configmap(&self, name: &str, group: &PathGroup<'_>) -> Object {
        let mut data = BTreeMap::new();
        let mut binary = BTreeMap::new();
        for (key, value) in &group.generated {
            if group.text.get(key).copied().unwrap_or(true)
                && let Ok(text) = std::str::from_utf8(value)
            {
                data.insert(key.clone(), text.to_owned());
            } else {
                binary.insert(key.clone(), ByteString(value.clone()));
            }
        }
        Object::ConfigMap(ConfigMap {
            metadata: self.metadata(name, TargetResource::ConfigMap),
            data: (!data.is_empty()).then_some(data),
            binary_data: (!binary.is_empty()).then_some(binary),
            immutable: None,
        })
    }

    fn secret(&self, name: &str, data: BTreeMap<String, ByteString>) -> Object {
        Object::Secret(Secret {
            metadata: self.metadata(name, TargetResource::Secret),
            data: Some(data),
            type_: Some("Opaque".to_owned()),
            ..Default::default()
        })
    }

    /// The headless Service's ports; a Service with several ports needs every
    /// port named, so unnamed ones are called `<protocol>-<port>`.
    fn service_ports(&self) -> Vec<ServicePort> {
        let mut ports: Vec<ServicePort> = self.inbound_ports().map(service_port).collect();
        if ports.len() > 1 {
            for port in &mut ports {
                if port.name.is_none() {
                    let protocol = port
                        .protocol
                        .as_deref()
                        .unwrap_or("TCP")
                        .to_ascii_lowercase();
                    port.name = Some(format!("{protocol}-{}", port.port));
                }
            }
        }
        ports
    }

    fn headless_service(&self) -> Service {
        let ports = self.service_ports();
        Service {
            metadata: self.metadata(self.name, TargetResource::Service),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".to_owned()),
                selector: Some(self.selector()),
                ports: (!ports.is_empty()).then_some(ports),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn port_service(&self, index: usize, port: &crate::model::InboundPortEntry) -> Service {
        let name = port
            .service_name
            .clone()
            .unwrap_or_else(|| names::port_service(self.name, index));
        Service {
            metadata: self.metadata(&name, TargetResource::Service),
            spec: Some(ServiceSpec {
                type_: Some(
                    port.service_type
                        .clone()
                        .unwrap_or_else(|| "NodePort".to_owned()),
                ),
                cluster_ip: port.cluster_ip.clone(),
                selector: Some(self.selector()),
                ports: Some(vec![service_port(port)]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn ingress(
        &self,
        index: usize,
        port: &crate::model::InboundPortEntry,
        cluster: &ClusterContext,
    ) -> Ingress {
        let service = port
            .service_name
            .clone()
            .unwrap_or_else(|| names::port_service(self.name, index));
        let host = port
            .host
            .clone()
            .or_else(|| Some(cluster.ingress_default_node.clone()))
            .filter(|host| !host.is_empty());
        Ingress {
            metadata: self.metadata(&names::ingress(self.name, index), TargetResource::Ingress),
            spec: Some(IngressSpec {
                rules: Some(vec![IngressRule {
                    host,
                    http: Some(HTTPIngressRuleValue {
                        paths: vec![HTTPIngressPath {
                            path: Some("/".to_owned()),
                            path_type: "Prefix".to_owned(),
                            backend: IngressBackend {
                                service: Some(IngressServiceBackend {
                                    name: service,
                                    port: Some(ServiceBackendPort {
                                        number: Some(port.port as i32),
                                        name: None,
                                    }),
                                }),
                                resource: None,
                            },
                        }],
                    }),
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn statefulset(
        &self,
        volumes: Vec<Volume>,
        mut mounts: Vec<VolumeMount>,
        config_hash: &str,
        env_secret: Option<&str>,
    ) -> StatefulSet {
        let image = self.request.image().cloned().unwrap_or_default();
        let mut volumes = volumes;
        for (index, entry) in self.entries() {
            if let ConfigEntry::PersistentVolumeRef(claim) = entry {
                let name = format!("volume-{index}");
                volumes.push(Volume {
                    name: name.clone(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.name.clone(),
                        read_only: None,
                    }),
                    ..Default::default()
                });
                mounts.push(VolumeMount {
                    name,
                    mount_path: claim.path.clone(),
                    ..Default::default()
                });
            }
        }

        let mut pod_metadata = self.metadata(self.name, TargetResource::Pod);
        pod_metadata.name = None;
        pod_metadata.namespace = None;
        pod_metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .extend(self.selector());
        pod_metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(labels::CONFIG_HASH.to_owned(), config_hash.to_owned());

        let container = Container {
            name: self.name.to_owned(),
            image: Some(image.name.clone()),
            image_pull_policy: image.pull_policy.clone(),
            ports: Some(
                self.inbound_ports()
                    .map(|port| ContainerPort {
                        container_port: port.port as i32,
                        protocol: Some(port.protocol.to_ascii_uppercase()),
                        name: port.port_name.clone(),
                        ..Default::default()
                    })
                    .collect::<Vec<_>>(),
            )
            .filter(|ports| !ports.is_empty()),
            env: Some(self.env(env_secret)).filter(|env| !env.is_empty()),
            volume_mounts: (!mounts.is_empty()).then_some(mounts),
            resources: self.resources(),
            startup_probe: self.probe("startup"),
            readiness_probe: self.probe("readiness"),
            liveness_probe: self.probe("liveness"),
            ..Default::default()
        };

        let pod = PodSpec {
            containers: vec![container],
            volumes: (!volumes.is_empty()).then_some(volumes),
            image_pull_secrets: image
                .image_pull_secret
                .as_ref()
                .map(|name| vec![LocalObjectReference { name: name.clone() }]),
            service_account_name: image.service_account.clone(),
            // No Kubernetes API token unless the installation names the
            // account it runs as (k8sworker policy).
            automount_service_account_token: image.service_account.is_none().then_some(false),
            host_aliases: self.host_aliases(),
            affinity: self.affinity(),
            ..Default::default()
        };

        StatefulSet {
            metadata: self.metadata(self.name, TargetResource::StatefulSet),
            spec: Some(StatefulSetSpec {
                replicas: Some(self.request.replica_count()),
                service_name: Some(self.name.to_owned()),
                selector: LabelSelector {
                    match_labels: Some(self.selector()),
                    match_expressions: None,
                },
                template: PodTemplateSpec {
                    metadata: Some(pod_metadata),
                    spec: Some(pod),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    /// The container's variables; `env_secret` names the generated Secret
    /// holding the `asSecret` ones.
    fn env(&self, env_secret: Option<&str>) -> Vec<EnvVar> {
        let mut env = Vec::new();
        for entry in &self.request.config {
            let ConfigEntry::EnvironmentVariable(var) = entry else {
                continue;
            };
            let secret_ref = |name: String, key: String| {
                Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        key,
                        name,
                        optional: None,
                    }),
                    ..Default::default()
                })
            };
            env.push(
                if let (Some(secret), Some(key)) = (&var.secret_name, &var.key) {
                    EnvVar {
                        name: var.name.clone(),
                        value_from: secret_ref(secret.clone(), key.clone()),
                        value: None,
                    }
                } else if let (true, Some(env_secret)) = (var.in_generated_secret(), env_secret) {
                    EnvVar {
                        name: var.name.clone(),
                        value_from: secret_ref(env_secret.to_owned(), var.name.clone()),
                        value: None,
                    }
                } else {
                    let value = match var.parsed_value() {
                        Some(EnvValue::Literal(value)) => Some(value.into_owned()),
                        _ => None,
                    };
                    EnvVar {
                        name: var.name.clone(),
                        value,
                        value_from: None,
                    }
                },
            );
        }
        env
    }

    fn resources(&self) -> Option<ResourceRequirements> {
        let to_map = |resources: &Resources| -> BTreeMap<String, K8sQuantity> {
            resources
                .quantities()
                .map(|(name, value)| (name.to_owned(), K8sQuantity(value.to_owned())))
                .collect()
        };
        let mut requests = None;
        let mut limits = None;
        for entry in &self.request.config {
            match entry {
                ConfigEntry::ResourceRequest(resources) => requests = Some(to_map(resources)),
                ConfigEntry::ResourceLimit(resources) => limits = Some(to_map(resources)),
                _ => {}
            }
        }
        (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
            requests,
            limits,
            ..Default::default()
        })
    }

    fn probe(&self, probe_type: &str) -> Option<Probe> {
        let probe: &ProbeEntry = self.request.config.iter().find_map(|entry| match entry {
            ConfigEntry::Probe(probe) if probe.probe_type == probe_type => Some(probe),
            _ => None,
        })?;
        let port = || match &probe.port {
            Some(PortRef::Number(number)) => IntOrString::Int(*number as i32),
            Some(PortRef::Name(name)) => match name.parse::<i32>() {
                Ok(number) => IntOrString::Int(number),
                Err(_) => IntOrString::String(name.clone()),
            },
            None => IntOrString::Int(0),
        };
        let seconds = |value: Option<i64>| value.map(|v| v as i32);
        let mut result = Probe {
            initial_delay_seconds: seconds(probe.initial_delay_seconds),
            period_seconds: seconds(probe.period_seconds),
            timeout_seconds: seconds(probe.timeout_seconds),
            success_threshold: seconds(probe.success_threshold),
            failure_threshold: seconds(probe.failure_threshold),
            ..Default::default()
        };
        match probe.request_type.as_str() {
            "command" => {
                result.exec = Some(ExecAction {
                    command: Some(probe.commands.clone()),
                })
            }
            "tcp" => {
                result.tcp_socket = Some(TCPSocketAction {
                    port: port(),
                    host: None,
                })
            }
            _ => {
                result.http_get = Some(HTTPGetAction {
                    path: probe.path.clone(),
                    port: port(),
                    http_headers: (!probe.headers.is_empty()).then(|| {
                        probe
                            .headers
                            .iter()
                            .map(|(name, value)| HTTPHeader {
                                name: name.clone(),
                                value: value.clone(),
                            })
                            .collect()
                    }),
                    ..Default::default()
                });
            }
        }
        Some(result)
    }

    fn host_aliases(&self) -> Option<Vec<HostAlias>> {
        let mut aliases: Vec<HostAlias> = Vec::new();
        for entry in &self.request.config {
            let ConfigEntry::HostAlias(alias) = entry else {
                continue;
            };
            match aliases.iter_mut().find(|a| a.ip == alias.host_ip) {
                Some(existing) => {
                    existing
                        .hostnames
                        .get_or_insert_with(Vec::new)
                        .push(alias.name.clone());
                }
                None => aliases.push(HostAlias {
                    ip: alias.host_ip.clone(),
                    hostnames: Some(vec![alias.name.clone()]),
                }),
            }
        }
        (!aliases.is_empty()).then_some(aliases)
    }

    fn affinity(&self) -> Option<Affinity> {
        let expressions: Vec<NodeSelectorRequirement> = self
            .request
            .config
            .iter()
            .filter_map(|entry| match entry {
                ConfigEntry::HardAffinity(affinity) => Some(NodeSelectorRequirement {
                    key: affinity.key.clone(),
                    operator: "In".to_owned(),
                    values: Some(affinity.values.clone()),
                }),
                _ => None,
            })
            .collect();
        (!expressions.is_empty()).then(|| Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(expressions),
                        match_fields: None,
                    }],
                }),
                preferred_during_scheduling_ignored_during_execution: None,
            }),
            ..Default::default()
        })
    }
}

fn service_port(port: &crate::model::InboundPortEntry) -> ServicePort {
    ServicePort {
        name: port.port_name.clone(),
        port: port.port as i32,
        target_port: Some(IntOrString::Int(port.port as i32)),
        protocol: Some(port.protocol.to_ascii_uppercase()),
        ..Default::default()
    }
}
