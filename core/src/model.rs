//! The installation model: Vantiq's deploy `data` (`name`, `k8sNamespace`,
//! `config`) read with Vantiq's exact field names.
//!
//! Reading is lenient in one way only: every entry is read on its own, so that
//! one malformed entry does not hide the errors of the others
//! ([`InstallationRequest::from_json`] reports them all). Unknown fields are
//! refused, naming the fields the entry type accepts, so that a typo such as
//! `replicas` for `replicaCount` is an error instead of a silent default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::invalid::{ValidationError, ValidationErrors};

/// A K8s Installation request: Vantiq's deploy `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallationRequest {
    /// Installation name; also the StatefulSet's name.
    pub name: String,
    /// Kubernetes namespace of the installation's objects.
    pub k8s_namespace: String,
    /// The `config` entries in request order.
    pub config: Vec<ConfigEntry>,
}

/// One `config` entry; the variant is the entry's `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ConfigEntry {
    /// `type: image`: the container; a request has exactly one.
    Image(ImageEntry),
    /// `type: file`: a file mounted into the container.
    File(FileEntry),
    /// `type: inboundPort`: a port the container serves, exposed by a Service
    /// (and, for TCP, an Ingress).
    InboundPort(InboundPortEntry),
    /// `type: environmentVariable` (or `environmentVariables`): a container
    /// environment variable.
    EnvironmentVariable(EnvironmentVariableEntry),
    /// `type: persistentVolumeRef`: an existing PersistentVolumeClaim to mount.
    PersistentVolumeRef(PersistentVolumeRefEntry),
    /// `type: annotation`: an annotation on generated objects.
    Annotation(AnnotationEntry),
    /// `type: label`: a label on generated objects.
    Label(LabelEntry),
    /// `type: hostAlias`: an `/etc/hosts` entry of the pods.
    HostAlias(HostAliasEntry),
    /// `type: probe`: a startup, readiness or liveness probe.
    Probe(ProbeEntry),
    /// `type: resourceRequest`: the container's resource requests; at most one.
    ResourceRequest(Resources),
    /// `type: resourceLimit`: the container's resource limits; at most one.
    ResourceLimit(Resources),
    /// `type: hardAffinity`: a required node-affinity expression.
    HardAffinity(HardAffinityEntry),
}

impl ConfigEntry {
    /// The entry's Vantiq `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ConfigEntry::Image(_) => "image",
            ConfigEntry::File(_) => "file",
            ConfigEntry::InboundPort(_) => "inboundPort",
            ConfigEntry::EnvironmentVariable(_) => "environmentVariable",
            ConfigEntry::PersistentVolumeRef(_) => "persistentVolumeRef",
            ConfigEntry::Annotation(_) => "annotation",
            ConfigEntry::Label(_) => "label",
            ConfigEntry::HostAlias(_) => "hostAlias",
            ConfigEntry::Probe(_) => "probe",
            ConfigEntry::ResourceRequest(_) => "resourceRequest",
            ConfigEntry::ResourceLimit(_) => "resourceLimit",
            ConfigEntry::HardAffinity(_) => "hardAffinity",
        }
    }
}

/// `type: image`.
///
/// Vantiq: K8s Installation config `image`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageEntry {
    /// Image reference, `[host[:port]/]path[:tag][@digest]` (the distribution
    /// reference grammar): the container's `image`.
    pub name: String,
    /// `imagePullSecret`: an existing Secret (DNS-1123 subdomain) for pulling
    /// the image; the pod's `imagePullSecrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// `serviceAccount`: the pod's `serviceAccountName` (DNS-1123 subdomain),
    /// never one of k8sworker's own ([`SYSTEM_ACCOUNTS`](crate::policy::SYSTEM_ACCOUNTS)).
    /// Without it the pods run as the namespace's `default` account and get
    /// no API token (`automountServiceAccountToken: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// `replicaCount`: the StatefulSet's `replicas`, 0 to
    /// [`MAX_REPLICAS`](crate::validate::MAX_REPLICAS); Vantiq's default is 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_count: Option<i64>,
    /// `pullPolicy`: the container's `imagePullPolicy`: `Always`, `IfNotPresent`
    /// or `Never` (Kubernetes: Container `imagePullPolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<String>,
}

/// `type: file`: one of `content`, `name`+`key`, or `resourceType`+`resourceName`.
///
/// Vantiq: K8s Installation config `file`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileEntry {
    /// Absolute directory the file is mounted in; the files of one `path` share
    /// one projected volume.
    pub path: String,
    /// Name of the file within `path` (letters, digits, '-', '_' or '.'); for a
    /// document, defaults to the last segment of `resourceName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// `dataSource`: `configMap` (the default) or `secret`; read it with
    /// [`FileEntry::data_source`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source: Option<String>,
    /// Inline text content, put into a generated ConfigMap or Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// An existing ConfigMap or Secret (DNS-1123 subdomain) holding the file,
    /// with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The key of the file within the existing object `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `resourceType`: `documents`, with `resourceName`: the file is a Vantiq
    /// document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// `resourceName`: the document's name; the control plane resolves its
    /// content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// `treatAsText`: documents only; mount the document as text (ConfigMap
    /// `data`), which it must then be, instead of as `binaryData`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub treat_as_text: Option<bool>,
    /// Documented only in Vantiq's sources example; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_name: Option<String>,
}

/// Whether a file is served from a ConfigMap or a Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DataSource {
    /// `configMap`: a ConfigMap.
    ConfigMap,
    /// `secret`: a Secret.
    Secret,
}

impl FileEntry {
    /// `dataSource`, defaulting to `configMap`; `None` when it is neither.
    pub fn data_source(&self) -> Option<DataSource> {
        match self.data_source.as_deref() {
            None | Some("configMap") | Some("configmap") => Some(DataSource::ConfigMap),
            Some("secret") => Some(DataSource::Secret),
            Some(_) => None,
        }
    }

    /// The file name: `filename`, or for a document the last segment of its name.
    pub fn effective_filename(&self) -> Option<&str> {
        self.filename.as_deref().or_else(|| {
            self.resource_name
                .as_deref()
                .and_then(|name| name.rsplit('/').next())
                .filter(|name| !name.is_empty())
        })
    }
}

/// `type: inboundPort`.
///
/// Vantiq: K8s Installation config `inboundPort`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundPortEntry {
    /// Ingress host (TCP ports only): a DNS-1123 subdomain, optionally
    /// `*.`-prefixed; without it, the cluster's `ingressDefaultNode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port number, 1 to 65535: the container port and the Service's `port` and
    /// `targetPort`; one entry per port and protocol.
    pub port: i64,
    /// `TCP` or `UDP`, in any case; only TCP ports get an Ingress.
    pub protocol: String,
    /// `portName`: the container and Service port name (Kubernetes:
    /// IANA_SVC_NAME, at most 15 characters); probes may refer to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// `serviceType`: `NodePort` (the default), `ClusterIP` or `LoadBalancer`
    /// (Kubernetes: ServiceSpec `type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    /// `serviceName`: the port's Service (DNS-1035 label, neither the
    /// installation name nor a Service of k8sworker itself); without it,
    /// `vantiq-<name>-service-<i>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// `clusterIP`: the Service's cluster IP address, or `None` (headless,
    /// `serviceType: ClusterIP` only).
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
}

/// `type: environmentVariable` (or `environmentVariables`).
///
/// Vantiq: K8s Installation config `environmentVariable`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentVariableEntry {
    /// Variable name: letters, digits, '_', '-' or '.', not starting with a
    /// digit (Kubernetes: EnvVar `name`); unique within the request.
    pub name: String,
    /// A literal, `@secrets(NAME)` for a control-plane secret, or
    /// `\@secrets(...)` for that literal text; excludes `secretName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `secretName`: an existing Secret (DNS-1123 subdomain) holding the
    /// value, with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The key of the value within the Secret `secretName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `asSecret`: put `value` into the generated Secret
    /// `vantiq-<name>-secret-<n>` instead of the pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_secret: Option<bool>,
}

/// What an environment variable's `value` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue<'a> {
    /// A literal (with `\@secrets(` unescaped).
    Literal(std::borrow::Cow<'a, str>),
    /// `@secrets(NAME)`: a control-plane secret.
    SecretRef(&'a str),
}

impl EnvironmentVariableEntry {
    /// Reads `value`: `@secrets(NAME)` refers to a control-plane secret, and a
    /// leading `\@secrets` is the escaped literal.
    pub fn parsed_value(&self) -> Option<EnvValue<'_>> {
        let value = self.value.as_deref()?;
        if let Some(rest) = value.strip_prefix("@secrets(")
            && let Some(name) = rest.strip_suffix(')')
        {
            return Some(EnvValue::SecretRef(name));
        }
        if let Some(rest) = value.strip_prefix("\\@secrets") {
            return Some(EnvValue::Literal(format!("@secrets{rest}").into()));
        }
        Some(EnvValue::Literal(value.into()))
    }

    /// Whether the value goes into a generated Secret: `asSecret`, or a
    /// `@secrets(...)` value, and not a reference to an existing Secret.
    pub fn in_generated_secret(&self) -> bool {
        self.secret_name.is_none()
            && (self.as_secret == Some(true)
                || matches!(self.parsed_value(), Some(EnvValue::SecretRef(_))))
    }
}

/// `type: persistentVolumeRef`: an existing PersistentVolumeClaim.
///
/// Vantiq: K8s Installation config `persistentVolumeRef`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolumeRefEntry {
    /// The claim's name (DNS-1123 subdomain); never created or deleted.
    pub name: String,
    /// Absolute path the volume is mounted at.
    pub path: String,
}

/// `type: annotation`.
///
/// Vantiq: K8s Installation config `annotation`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnnotationEntry {
    /// Annotation key: an optional DNS prefix and '/', then a name of at most 63
    /// characters (Kubernetes: annotations, syntax); keys in the
    /// `k8sworker.io` domain (and its subdomains) and
    /// `app.kubernetes.io/managed-by` are reserved; an AppArmor annotation
    /// names `runtime/default` or `localhost/<profile>` only.
    pub name: String,
    /// Annotation value; a request's annotations (keys and values) total at
    /// most [`crate::validate::MAX_ANNOTATION_BYTES`] (Kubernetes: 256 KiB
    /// per object, less room for k8sworker's own annotations).
    pub value: String,
    /// `targetResource`: the kind of object to annotate (see
    /// [`TargetResource`]); every generated object and the pod template when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_resource: Option<String>,
}

/// `type: label`.
///
/// Vantiq: K8s Installation config `label`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelEntry {
    /// Label key: an optional DNS prefix and '/', then a name of at most 63
    /// characters (Kubernetes: labels, syntax); keys in the `k8sworker.io`
    /// domain (and its subdomains) and `app.kubernetes.io/managed-by` are
    /// reserved; every other key, `app.kubernetes.io/*` included, is the
    /// user's.
    pub name: String,
    /// Label value: at most 63 letters, digits, '-', '_' or '.', starting and
    /// ending with a letter or digit (Kubernetes: labels, syntax).
    pub value: String,
    /// `targetResource`: the kind of object to label (see [`TargetResource`]);
    /// every generated object and the pod template when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_resource: Option<String>,
    /// `controlsRouting`: the label selects the installation's pods (the
    /// StatefulSet's and every Service's selector); a boolean or `"true"` /
    /// `"false"`; its `targetResource` must be `pod` or absent.
    #[serde(
        default,
        deserialize_with = "flexible_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub controls_routing: Option<bool>,
}

/// The kinds of objects `targetResource` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetResource {
    /// `configmap`: the generated ConfigMaps.
    ConfigMap,
    /// `ingress`: the Ingresses.
    Ingress,
    /// `pod`: the StatefulSet's pod template.
    Pod,
    /// `secret`: the generated Secrets.
    Secret,
    /// `service`: the headless and port Services.
    Service,
    /// `statefulset`: the StatefulSet.
    StatefulSet,
}

impl TargetResource {
    /// Reads `targetResource` (case-insensitive).
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value.to_ascii_lowercase().as_str() {
            "configmap" => Self::ConfigMap,
            "ingress" => Self::Ingress,
            "pod" => Self::Pod,
            "secret" => Self::Secret,
            "service" => Self::Service,
            "statefulset" => Self::StatefulSet,
            _ => return None,
        })
    }
}

/// `type: hostAlias`.
///
/// Vantiq: K8s Installation config `hostAlias`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostAliasEntry {
    /// Host name (DNS-1123 subdomain).
    pub name: String,
    /// `hostIP`: the IPv4 or IPv6 address the name resolves to; aliases of one
    /// address are grouped.
    #[serde(rename = "hostIP")]
    pub host_ip: String,
}

/// `type: probe`.
///
/// Vantiq: K8s Installation config `probe`; Kubernetes: Probe.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeEntry {
    /// `probeType`: `startup`, `readiness` or `liveness`; at most one of each.
    pub probe_type: String,
    /// `requestType`: `command` (`exec`), `tcp` (`tcpSocket`) or `http`
    /// (`httpGet`).
    pub request_type: String,
    /// Seconds after the container starts before the first probe; at least 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i64>,
    /// Seconds between probes; at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i64>,
    /// Seconds after which a probe times out; at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Consecutive successes that make the probe succeed; at least 1, and
    /// exactly 1 except for readiness (Kubernetes: Probe `successThreshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i64>,
    /// Consecutive failures that make the probe fail; at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i64>,
    /// `command` probes: the command and its arguments, run without a shell;
    /// at least one element.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// `tcp` and `http` probes: the port to probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    /// `http` probes: the request path, starting with '/'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `http` probes: request headers, by header name (an HTTP token).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// A probe's port: a number, or the `portName` of an inbound port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    /// A port number, 1 to 65535.
    Number(i64),
    /// An inbound port's `portName`, or a number written as text.
    Name(String),
}

/// `type: resourceRequest` / `type: resourceLimit`: Kubernetes quantities.
///
/// Vantiq: K8s Installation config `resourceRequest` and `resourceLimit`;
/// Kubernetes: resource units, quantity syntax.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// `cpu`, in cores: e.g. `500m` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// `memory`, in bytes: e.g. `512Mi` or `1G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// `nvidia.com/gpu`: a whole number of GPUs; a request needs an equal
    /// limit.
    #[serde(
        default,
        rename = "nvidia.com/gpu",
        skip_serializing_if = "Option::is_none"
    )]
    pub nvidia_gpu: Option<String>,
    /// `amd.com/gpu`: a whole number of GPUs; a request needs an equal limit.
    #[serde(
        default,
        rename = "amd.com/gpu",
        skip_serializing_if = "Option::is_none"
    )]
    pub amd_gpu: Option<String>,
}

impl Resources {
    /// The quantities that are set, by Kubernetes resource name.
    pub fn quantities(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("cpu", &self.cpu),
            ("memory", &self.memory),
            ("nvidia.com/gpu", &self.nvidia_gpu),
            ("amd.com/gpu", &self.amd_gpu),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|value| (name, value)))
    }
}

/// `type: hardAffinity`.
///
/// Vantiq: K8s Installation config `hardAffinity`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HardAffinityEntry {
    /// Node label key: an optional DNS prefix and '/', then a name of at most
    /// 63 characters (Kubernetes: labels, syntax).
    pub key: String,
    /// Label values; a node qualifies when its label `key` has one of them
    /// (`key In values`); at least one.
    pub values: Vec<String>,
}

fn flexible_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flexible {
        Bool(bool),
        Text(String),
    }
    match Option::<Flexible>::deserialize(d)? {
        None => Ok(None),
        Some(Flexible::Bool(value)) => Ok(Some(value)),
        Some(Flexible::Text(text)) => match text.to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!(
                "expected true or false, got `{text}`"
            ))),
        },
    }
}

/// What [`InstallationRequest::read`] could make of a request.
pub(crate) struct Reading {
    /// The request with the entries that parsed; `None` when `data` is not an object.
    pub request: Option<InstallationRequest>,
    /// Why the rest did not parse.
    pub errors: Vec<ValidationError>,
    /// For each entry of `request.config`, its index in the original `config`.
    pub indices: Vec<usize>,
    /// The `type`s of entries that did not parse.
    pub unread_types: Vec<String>,
}

/// Every `config` entry `type` a deploy may hold (error messages name
/// them; the web console offers each).
pub const ENTRY_TYPES: &[&str] = &[
    "image",
    "file",
    "inboundPort",
    "environmentVariable",
    "persistentVolumeRef",
    "annotation",
    "label",
    "hostAlias",
    "probe",
    "resourceRequest",
    "resourceLimit",
    "hardAffinity",
];

impl InstallationRequest {
    /// Reads Vantiq's deploy `data`, reporting every malformed part at once.
    /// The result still needs [`crate::validate::validate`].
    ///
    /// # Errors
    /// [`ValidationErrors`] with every malformed part: `data` not an object,
    /// `name` or `k8sNamespace` missing or not a string, unknown fields, and
    /// each entry that cannot be read.
    pub fn from_json(data: &serde_json::Value) -> Result<Self, ValidationErrors> {
        let reading = Self::read(data);
        match (reading.request, reading.errors.is_empty()) {
            (Some(request), true) => Ok(request),
            _ => Err(ValidationErrors::new(reading.errors)),
        }
    }

    /// Reads what can be read: the request with the entries that parsed (and
    /// where each came from), and the errors of those that did not.
    pub(crate) fn read(data: &serde_json::Value) -> Reading {
        let mut errors = Vec::new();
        let Some(object) = data.as_object() else {
            errors.push(ValidationError::request(
                "data",
                "must be a JSON object with `name`, `k8sNamespace` and `config`",
            ));
            return Reading {
                request: None,
                errors,
                indices: Vec::new(),
                unread_types: Vec::new(),
            };
        };
        let text = |field: &str, errors: &mut Vec<ValidationError>| match object.get(field) {
            Some(serde_json::Value::String(value)) => value.clone(),
            Some(other) => {
                errors.push(ValidationError::request(
                    field,
                    format!("must be a string, got {}", json_type(other)),
                ));
                String::new()
            }
            None => {
                errors.push(ValidationError::request(field, "is required"));
                String::new()
            }
        };
        let name = text("name", &mut errors);
        let k8s_namespace = text("k8sNamespace", &mut errors);
        for key in object.keys() {
            if !matches!(
                key.as_str(),
                "name" | "k8sNamespace" | "config" | "clusterName"
            ) {
                errors.push(ValidationError::request(
                    key,
                    "is not a field of a deploy request (expected `name`, `k8sNamespace`, `config`)",
                ));
            }
        }
        let mut config = Vec::new();
        let mut indices = Vec::new();
        let mut unread_types = Vec::new();
        match object.get("config") {
            Some(serde_json::Value::Array(entries)) => {
                for (index, entry) in entries.iter().enumerate() {
                    match ConfigEntry::from_json(index, entry) {
                        Ok(entry) => {
                            config.push(entry);
                            indices.push(index);
                        }
                        Err(error) => {
                            if let Some(kind) =
                                entry.get("type").and_then(serde_json::Value::as_str)
                            {
                                unread_types.push(kind.to_owned());
                            }
                            errors.push(error);
                        }
                    }
                }
            }
            Some(other) => errors.push(ValidationError::request(
                "config",
                format!("must be a list of entries, got {}", json_type(other)),
            )),
            None => errors.push(ValidationError::request(
                "config",
                "is required: a list of entries with exactly one `image`",
            )),
        }
        Reading {
            request: Some(Self {
                name,
                k8s_namespace,
                config,
            }),
            errors,
            indices,
            unread_types,
        }
    }

    /// The one `image` entry, when there is exactly one.
    pub fn image(&self) -> Option<&ImageEntry> {
        let mut images = self.config.iter().filter_map(|entry| match entry {
            ConfigEntry::Image(image) => Some(image),
            _ => None,
        });
        let first = images.next();
        if images.next().is_some() { None } else { first }
    }

    /// `replicaCount` of the image entry (Vantiq's default: 1).
    pub fn replica_count(&self) -> i32 {
        self.image()
            .and_then(|image| image.replica_count)
            .and_then(|count| i32::try_from(count).ok())
            .unwrap_or(1)
    }
}

impl ConfigEntry {
    /// Reads entry `index` of `config`.
    ///
    /// # Errors
    /// A [`ValidationError`] naming the entry when it is not an object, has
    /// no or an unknown `type`, or its fields do not fit the type (unknown
    /// fields included).
    pub fn from_json(index: usize, value: &serde_json::Value) -> Result<Self, ValidationError> {
        let Some(object) = value.as_object() else {
            return Err(ValidationError::entry(
                index,
                None,
                "",
                format!("must be an object with a `type`, got {}", json_type(value)),
            ));
        };
        let Some(kind) = object.get("type").and_then(serde_json::Value::as_str) else {
            return Err(ValidationError::entry(
                index,
                None,
                "type",
                format!("is required: one of {}", ENTRY_TYPES.join(", ")),
            ));
        };
        let mut fields = object.clone();
        fields.remove("type");
        let fields = serde_json::Value::Object(fields);
        fn read<T: serde::de::DeserializeOwned>(
            index: usize,
            kind: &str,
            fields: serde_json::Value,
        ) -> Result<T, ValidationError> {
            serde_path_to_error::deserialize(fields).map_err(|error| {
                let message = serde_message(&error.inner().to_string());
                let subpath = read_error_path(&error.path().to_string(), &message);
                ValidationError::entry(index, Some(kind), "", message).at(subpath)
            })
        }
        Ok(match kind {
            "image" => ConfigEntry::Image(read(index, kind, fields)?),
            "file" => ConfigEntry::File(read(index, kind, fields)?),
            "inboundPort" => ConfigEntry::InboundPort(read(index, kind, fields)?),
            "environmentVariable" | "environmentVariables" => {
                ConfigEntry::EnvironmentVariable(read(index, kind, fields)?)
            }
            "persistentVolumeRef" => ConfigEntry::PersistentVolumeRef(read(index, kind, fields)?),
            "annotation" => ConfigEntry::Annotation(read(index, kind, fields)?),
            "label" => ConfigEntry::Label(read(index, kind, fields)?),
            "hostAlias" => ConfigEntry::HostAlias(read(index, kind, fields)?),
            "probe" => ConfigEntry::Probe(read(index, kind, fields)?),
            "resourceRequest" => ConfigEntry::ResourceRequest(read(index, kind, fields)?),
            "resourceLimit" => ConfigEntry::ResourceLimit(read(index, kind, fields)?),
            "hardAffinity" => ConfigEntry::HardAffinity(read(index, kind, fields)?),
            other => {
                return Err(ValidationError::entry(
                    index,
                    None,
                    "type",
                    format!(
                        "`{other}` is not an entry type; expected one of {}",
                        ENTRY_TYPES.join(", ")
                    ),
                ));
            }
        })
    }
}

/// Where inside an entry a read error is: the path serde was at (`.` for
/// the entry itself), then the field a "missing field" or "unknown field"
/// message names, since serde reports those at the object that lacks or
/// has it. Empty for the entry itself.
fn read_error_path(at: &str, message: &str) -> String {
    let at = if at == "." { "" } else { at };
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|start| message.strip_prefix(start))
        .and_then(|rest| rest.split('`').next());
    match named {
        Some(field) if at.is_empty() => field.to_owned(),
        Some(field) if !at.ends_with(&format!(".{field}")) && at != field => {
            format!("{at}.{field}")
        }
        _ => at.to_owned(),
    }
}

/// serde's messages end with " at line L column C", which means nothing for a
/// value that was already parsed.
fn serde_message(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}
