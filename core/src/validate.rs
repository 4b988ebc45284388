//! Validation of an [`InstallationRequest`] before anything is rendered.
//!
//! Every rule is checked and every violation reported, each naming the entry
//! (index and type) and the field, so that a person can fix a request in one
//! round. A request that passes renders without error (given its ancillaries)
//! and every generated object is acceptable to the Kubernetes API server.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub use crate::invalid::{ValidationError, ValidationErrors};
use crate::model::{
    ConfigEntry, DataSource, EnvValue, FileEntry, InboundPortEntry, InstallationRequest, PortRef,
    ProbeEntry, Resources, TargetResource,
};
use crate::names;
use crate::quantity::Quantity;
use crate::{labels, policy};

/// Most bytes a ConfigMap or Secret may hold (the API server's limit).
pub const MAX_OBJECT_DATA: usize = 1024 * 1024;

/// Most replicas a request may ask for.
pub const MAX_REPLICAS: i64 = 1000;

/// Bytes reserved, out of the API server's 256 KiB of annotations per
/// object, for the annotations k8sworker writes itself (spec hash, owner
/// record, config hash; at most about 1 KiB with the longest names).
pub const OWN_ANNOTATIONS_RESERVE: usize = 4 * 1024;

/// Most bytes (keys plus values) a request's `annotation` entries may hold
/// together: Kubernetes' limit of 256 KiB of annotations per object, less
/// [`OWN_ANNOTATIONS_RESERVE`].
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024 - OWN_ANNOTATIONS_RESERVE;

/// Most `inboundPort` entries one installation may have. Each becomes a
/// port of the installation's NodePort Service, and NodePorts come from one
/// range the whole cluster shares (30000-32767 by default, 2768 ports), so
/// one installation must not be able to take a large part of it.
pub const MAX_INBOUND_PORTS: usize = 16;

/// Reads and validates Vantiq's deploy `data` in one step: the entry point for
/// anything that receives a request as JSON.
///
/// Entries that cannot be read are reported, and the rest of the request is
/// still checked, so that one round shows every problem.
///
/// # Errors
/// [`ValidationErrors`] with every problem found: parts that cannot be read
/// and rules the rest breaks, each naming its entry (index in the original
/// `config`) and field.
pub fn parse_and_validate(
    data: &serde_json::Value,
) -> Result<InstallationRequest, ValidationErrors> {
    let reading = InstallationRequest::read(data);
    let Some(request) = reading.request else {
        return Err(ValidationErrors::new(reading.errors));
    };
    let checked = validate(&request);
    if reading.errors.is_empty() {
        return checked.map(|()| request);
    }
    let mut errors = reading.errors;
    let read_errors = errors.clone();
    for mut error in checked.err().map(|e| e.errors).unwrap_or_default() {
        match error.entry {
            Some(position) => error.entry = reading.indices.get(position).copied(),
            // A field that could not be read is not also reported as invalid,
            // nor is a missing image whose entry could not be read.
            None if read_errors
                .iter()
                .any(|e| e.entry.is_none() && e.field == error.field) =>
            {
                continue;
            }
            None if error.message.contains("exactly one `image`")
                && reading.unread_types.iter().any(|t| t == "image") =>
            {
                continue;
            }
            None => {}
        }
        errors.push(error);
    }
    errors.sort_by_key(|e| e.entry.map_or(0, |index| index + 1));
    Err(ValidationErrors::new(errors))
}

/// Checks every rule; all violations are reported together.
///
/// # Errors
/// [`ValidationErrors`] with every violation, each naming its entry and
/// field.
pub fn validate(request: &InstallationRequest) -> Result<(), ValidationErrors> {
    let mut check = Checker { errors: Vec::new() };
    check.request(request);
    if check.errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors::new(check.errors))
    }
}

/// Checks only the installation's identity — its name (DNS-1035 label of at
/// most [`names::MAX_INSTALLATION_NAME`] characters, so that every generated
/// name fits) and its namespace (DNS-1123 label) — with the same rules and
/// messages as [`validate`]. Operations on an existing installation
/// (undeploy, shutdown, restart, fetchLogs) need nothing more.
///
/// # Errors
/// [`ValidationErrors`] naming `name`, `k8sNamespace` or both.
pub fn validate_identity(request: &InstallationRequest) -> Result<(), ValidationErrors> {
    let mut check = Checker { errors: Vec::new() };
    check.identity(request);
    if check.errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors::new(check.errors))
    }
}

struct Checker {
    errors: Vec<ValidationError>,
}

/// Where an error is: entry index and type.
#[derive(Clone, Copy)]
struct At<'a> {
    index: usize,
    kind: &'a str,
}

impl Checker {
    fn fail(&mut self, at: At<'_>, field: &str, message: impl Into<String>) {
        self.errors.push(ValidationError::entry(
            at.index,
            Some(at.kind),
            field,
            message,
        ));
    }

    /// [`Self::fail`] with the finer path `subpath` inside the entry
    /// ([`ValidationError::at`]).
    fn fail_at(&mut self, at: At<'_>, field: &str, subpath: String, message: impl Into<String>) {
        self.errors
            .push(ValidationError::entry(at.index, Some(at.kind), field, message).at(subpath));
    }

    fn fail_request(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(ValidationError::request(field, message));
    }

    fn identity(&mut self, request: &InstallationRequest) {
        self.installation_name(&request.name);
        if !names::is_dns1123_label(&request.k8s_namespace) {
            self.fail_request(
                "k8sNamespace",
                format!(
                    "`{}` is not a valid Kubernetes namespace: at most 63 lower-case letters, \
                     digits or '-', starting and ending with a letter or digit",
                    request.k8s_namespace
                ),
            );
        }
    }

    fn request(&mut self, request: &InstallationRequest) {
        self.identity(request);

        let images: Vec<usize> = request
            .config
            .iter()
            .enumerate()
            .filter(|(_, entry)| matches!(entry, ConfigEntry::Image(_)))
            .map(|(index, _)| index)
            .collect();
        match images.as_slice() {
            [] => self.fail_request("config", "needs exactly one `image` entry, found none"),
            [_] => {}
            many => self.fail_request(
                "config",
                format!(
                    "needs exactly one `image` entry, found {} (entries {})",
                    many.len(),
                    many.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }

        let port_names: BTreeSet<&str> = request
            .config
            .iter()
            .filter_map(|entry| match entry {
                ConfigEntry::InboundPort(port) => port.port_name.as_deref(),
                _ => None,
            })
            .collect();

        let mut seen = Seen::default();
        for (index, entry) in request.config.iter().enumerate() {
            let at = At {
                index,
                kind: entry.type_name(),
            };
            match entry {
                ConfigEntry::Image(image) => {
                    if let Err(why) = check_image_reference(&image.name) {
                        self.fail(
                            at,
                            "name",
                            format!("`{}` is not an image reference: {why}", image.name),
                        );
                    }
                    for (field, value) in [
                        ("imagePullSecret", &image.image_pull_secret),
                        ("serviceAccount", &image.service_account),
                    ] {
                        if let Some(value) = value
                            && !names::is_dns1123_subdomain(value)
                        {
                            self.fail(
                                at,
                                field,
                                format!("`{value}` is not a valid Kubernetes object name"),
                            );
                        }
                    }
                    if let Some(account) = &image.service_account
                        && policy::SYSTEM_ACCOUNTS.contains(&account.as_str())
                    {
                        self.fail(
                            at,
                            "serviceAccount",
                            format!(
                                "`{account}` is k8sworker's own service account: a pod running as it \
                                 would hold its token; name the installation's own account, or none"
                            ),
                        );
                    }
                    if let Some(count) = image.replica_count
                        && !(0..=MAX_REPLICAS).contains(&count)
                    {
                        self.fail(
                            at,
                            "replicaCount",
                            format!("must be between 0 and {MAX_REPLICAS}, got {count}"),
                        );
                    }
                    if let Some(policy) = &image.pull_policy
                        && !matches!(policy.as_str(), "Always" | "IfNotPresent" | "Never")
                    {
                        self.fail(
                            at,
                            "pullPolicy",
                            format!("must be Always, IfNotPresent or Never, got `{policy}`"),
                        );
                    }
                }
                ConfigEntry::File(file) => self.file(at, file, &mut seen),
                ConfigEntry::InboundPort(port) => {
                    self.inbound_port(at, port, &request.name, &mut seen)
                }
                ConfigEntry::EnvironmentVariable(env) => {
                    if !names::is_env_name(&env.name) {
                        self.fail(at, "name", format!(
                            "`{}` is not a valid environment variable name: at most 253 letters, digits, '_', '-' or '.', not starting with a digit or '..' (it also keys the generated Secret)",
                            env.name
                        ));
                    } else if !seen.env_names.insert(env.name.clone()) {
                        self.fail(
                            at,
                            "name",
                            format!("`{}` is set by an earlier entry", env.name),
                        );
                    }
                    match (&env.value, &env.secret_name, &env.key) {
                        (Some(_), Some(_), _) => self.fail(
                            at,
                            "secretName",
                            "`value` and `secretName` are mutually exclusive: give one",
                        ),
                        (None, None, _) => self.fail(
                            at,
                            "value",
                            "is required unless `secretName` and `key` name an existing Secret",
                        ),
                        (None, Some(secret), key) => {
                            if !names::is_dns1123_subdomain(secret) {
                                self.fail(
                                    at,
                                    "secretName",
                                    format!("`{secret}` is not a valid Secret name"),
                                );
                            }
                            match key {
                                None => self.fail(at, "key", "is required with `secretName`"),
                                Some(key) if !names::is_config_key(key) => self.fail(at, "key",
                                    format!("`{key}` is not a valid Secret key: at most 253 letters, digits, '-', '_' or '.', not starting with '..'")),
                                Some(_) => {}
                            }
                        }
                        (Some(_), None, Some(_)) => {
                            self.fail(at, "key", "is only used with `secretName`")
                        }
                        (Some(_), None, None) => {}
                    }
                    if let Some(EnvValue::SecretRef(name)) = env.parsed_value()
                        && (name.is_empty() || name.contains(['(', ')', '@']))
                    {
                        self.fail(at, "value", format!(
                            "`@secrets({name})` does not name a secret; write `@secrets(NAME)`, or `\\@secrets(...)` for the literal text"
                        ));
                    }
                }
                ConfigEntry::PersistentVolumeRef(volume) => {
                    if !names::is_dns1123_subdomain(&volume.name) {
                        self.fail(
                            at,
                            "name",
                            format!(
                                "`{}` is not a valid PersistentVolumeClaim name",
                                volume.name
                            ),
                        );
                    }
                    self.mount_path(at, "path", &volume.path, &mut seen, MountKind::Volume);
                }
                ConfigEntry::Annotation(annotation) => {
                    self.metadata_key(at, &annotation.name, KeyCase::Insensitive);
                    if annotation
                        .name
                        .starts_with(policy::APPARMOR_ANNOTATION_PREFIX)
                        && !policy::apparmor_annotation_allowed(&annotation.value)
                    {
                        self.fail(at, "value", format!(
                            "`{}` is not an allowed AppArmor profile: runtime/default or localhost/<profile> (Pod Security Standards, baseline)",
                            annotation.value
                        ));
                    }
                    self.target(at, annotation.target_resource.as_deref());
                    let before = seen.annotation_bytes;
                    seen.annotation_bytes += annotation.name.len() + annotation.value.len();
                    // Named once, on the entry that crosses the limit.
                    if before <= MAX_ANNOTATION_BYTES
                        && seen.annotation_bytes > MAX_ANNOTATION_BYTES
                    {
                        self.fail(at, "value", format!(
                            "the annotations reach {} bytes with this entry; at most {MAX_ANNOTATION_BYTES} fit (Kubernetes allows 256 KiB per object, {OWN_ANNOTATIONS_RESERVE} of them k8sworker's own)",
                            seen.annotation_bytes
                        ));
                    }
                }
                ConfigEntry::Label(label) => {
                    self.metadata_key(at, &label.name, KeyCase::Sensitive);
                    if !names::is_label_value(&label.value) {
                        self.fail(at, "value", format!(
                            "`{}` is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
                            label.value
                        ));
                    }
                    self.target(at, label.target_resource.as_deref());
                    if label.controls_routing == Some(true)
                        && let Some(target) = label
                            .target_resource
                            .as_deref()
                            .and_then(TargetResource::parse)
                        && target != TargetResource::Pod
                    {
                        self.fail(at, "targetResource",
                            "a label that controls routing selects pods; its targetResource must be `pod` or unset");
                    }
                }
                ConfigEntry::HostAlias(alias) => {
                    if !names::is_dns1123_subdomain(&alias.name) {
                        self.fail(
                            at,
                            "name",
                            format!("`{}` is not a valid host name", alias.name),
                        );
                    }
                    if alias.host_ip.parse::<IpAddr>().is_err() {
                        self.fail(
                            at,
                            "hostIP",
                            format!("`{}` is not an IP address", alias.host_ip),
                        );
                    }
                }
                ConfigEntry::Probe(probe) => self.probe(at, probe, &port_names, &mut seen),
                ConfigEntry::ResourceRequest(resources) => {
                    self.resources(at, resources);
                    if seen.request.replace(index).is_some() {
                        self.fail(
                            at,
                            "",
                            "only one `resourceRequest` entry is allowed; merge them",
                        );
                    }
                }
                ConfigEntry::ResourceLimit(resources) => {
                    self.resources(at, resources);
                    if seen.limit.replace(index).is_some() {
                        self.fail(
                            at,
                            "",
                            "only one `resourceLimit` entry is allowed; merge them",
                        );
                    }
                }
                ConfigEntry::HardAffinity(affinity) => {
                    if !names::is_qualified_name(&affinity.key) {
                        self.fail(
                            at,
                            "key",
                            format!("`{}` is not a valid node label key", affinity.key),
                        );
                    }
                    if affinity.values.is_empty() {
                        self.fail(at, "values", "needs at least one value");
                    }
                    for (position, value) in affinity.values.iter().enumerate() {
                        if !names::is_label_value(value) {
                            self.fail_at(
                                at,
                                "values",
                                format!("values[{position}]"),
                                format!("`{value}` is not a valid label value"),
                            );
                        }
                    }
                }
            }
        }
        self.requests_within_limits(request, &seen);
        if seen.ports > MAX_INBOUND_PORTS {
            self.fail_request("config", format!(
                "has {} inboundPort entries; an installation may have at most {MAX_INBOUND_PORTS}: each takes a NodePort from the range the whole cluster shares",
                seen.ports
            ));
        }
        for (path, size) in &seen.content_bytes {
            if *size > MAX_OBJECT_DATA {
                self.fail_request("config", format!(
                    "the files mounted at `{path}` hold {size} bytes; a ConfigMap or Secret holds at most {MAX_OBJECT_DATA} (1 MiB)"
                ));
            }
        }
        // The generated names must fit their kinds' rules (Services are the tightest).
        if names::is_dns1035_label(&request.name)
            && request.name.len() <= names::MAX_INSTALLATION_NAME
        {
            let longest = names::port_service(&request.name, seen.ports.max(1) - 1);
            if !names::is_dns1035_label(&longest) && seen.ports > 0 {
                self.fail_request("name", format!(
                    "`{}` is too long: the generated Service `{longest}` would exceed 63 characters",
                    request.name
                ));
            }
        }
    }

    fn installation_name(&mut self, name: &str) {
        if !names::is_dns1035_label(name) {
            let hint = name
                .to_ascii_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-");
            self.fail_request("name", format!(
                "`{name}` is not a valid Kubernetes name: lower-case letters, digits and '-', starting with a letter and ending with a letter or digit (e.g. `{hint}`)"
            ));
        } else if name.len() > names::MAX_INSTALLATION_NAME {
            self.fail_request(
                "name",
                format!(
                    "`{name}` has {} characters; at most {} fit the StatefulSet's pod labels",
                    name.len(),
                    names::MAX_INSTALLATION_NAME
                ),
            );
        }
    }

    fn file(&mut self, at: At<'_>, file: &FileEntry, seen: &mut Seen) {
        let data_source = file.data_source();
        if data_source.is_none() {
            self.fail(
                at,
                "dataSource",
                format!(
                    "must be `configMap` or `secret`, got `{}`",
                    file.data_source.as_deref().unwrap_or_default()
                ),
            );
        }
        let sources = [
            file.content.is_some(),
            file.name.is_some() || file.key.is_some(),
            file.resource_type.is_some() || file.resource_name.is_some(),
        ];
        match sources.iter().filter(|&&s| s).count() {
            0 => self.fail(at, "content",
                "needs a source: `content`, or `name` and `key` of an existing ConfigMap or Secret, or `resourceType: documents` and `resourceName`"),
            1 => {}
            _ => self.fail(at, "content",
                "`content`, `name`/`key` and `resourceType`/`resourceName` are mutually exclusive: give one source"),
        }
        if sources[1] {
            match (&file.name, &file.key) {
                (Some(name), Some(key)) => {
                    if !names::is_dns1123_subdomain(name) {
                        self.fail(
                            at,
                            "name",
                            format!("`{name}` is not a valid ConfigMap or Secret name"),
                        );
                    }
                    if !names::is_config_key(key) {
                        self.fail(
                            at,
                            "key",
                            format!("`{key}` is not a valid key: at most 253 letters, digits, '-', '_' or '.', not starting with '..'"),
                        );
                    }
                }
                (None, _) => self.fail(
                    at,
                    "name",
                    "is required with `key`: the existing ConfigMap or Secret",
                ),
                (_, None) => self.fail(
                    at,
                    "key",
                    "is required with `name`: the key within the existing object",
                ),
            }
        }
        if sources[2] {
            match file.resource_type.as_deref() {
                Some("documents") => {}
                Some(other) => self.fail(
                    at,
                    "resourceType",
                    format!("must be `documents`, got `{other}`"),
                ),
                None => self.fail(
                    at,
                    "resourceType",
                    "is required with `resourceName`: `documents`",
                ),
            }
            if file.resource_name.as_deref().is_none_or(str::is_empty) {
                self.fail(at, "resourceName", "is required: the document's name");
            }
        } else if file.treat_as_text.is_some() {
            self.fail(
                at,
                "treatAsText",
                "only applies to documents (`resourceType: documents`)",
            );
        }
        match file.effective_filename() {
            None => self.fail(at, "filename", "is required"),
            Some(filename) if !names::is_config_key(filename) => self.fail(at, "filename", format!(
                "`{filename}` is not a valid file name: at most 253 letters, digits, '-', '_' or '.', not starting with '..', no '/'"
            )),
            Some(filename) => {
                let path = normalize_path(&file.path);
                if !seen.files.insert((path.clone(), filename.to_owned())) {
                    self.fail(at, "filename", format!("`{}/{filename}` is mounted by an earlier entry", path.trim_end_matches('/')));
                }
            }
        }
        if self.mount_path(at, "path", &file.path, seen, MountKind::Files) {
            if let Some(source) = data_source
                && file.content.is_some()
            {
                let previous = seen
                    .content_sources
                    .entry(normalize_path(&file.path))
                    .or_insert(source);
                if *previous != source {
                    self.fail(
                        at,
                        "dataSource",
                        format!(
                            "files with `content` at `{}` must all use the same dataSource",
                            file.path
                        ),
                    );
                }
            }
            if let Some(content) = &file.content {
                *seen
                    .content_bytes
                    .entry(normalize_path(&file.path))
                    .or_default() += content.len() + file.effective_filename().map_or(0, str::len);
            }
        }
    }

    /// Checks an absolute mount path; returns whether it is well-formed.
    fn mount_path(
        &mut self,
        at: At<'_>,
        field: &str,
        path: &str,
        seen: &mut Seen,
        kind: MountKind,
    ) -> bool {
        let ok = path.starts_with('/')
            && !path
                .split('/')
                .any(|segment| segment == ".." || segment == ".")
            && !path.contains(['\0', ':'])
            && path.len() <= 4096;
        if !ok {
            self.fail(
                at,
                field,
                format!("`{path}` must be an absolute path without `.` or `..` segments or ':'"),
            );
            return false;
        }
        let normalized = normalize_path(path);
        match seen.mounts.get(&normalized) {
            Some(MountKind::Files) if kind == MountKind::Files => {}
            Some(_) => self.fail(
                at,
                field,
                format!("`{path}` is already a mount point of an earlier entry"),
            ),
            None => {
                seen.mounts.insert(normalized, kind);
            }
        }
        true
    }

    fn inbound_port(
        &mut self,
        at: At<'_>,
        port: &InboundPortEntry,
        installation: &str,
        seen: &mut Seen,
    ) {
        seen.ports += 1;
        if !(1..=65535).contains(&port.port) {
            self.fail(
                at,
                "port",
                format!("must be between 1 and 65535, got {}", port.port),
            );
        }
        let protocol = port.protocol.to_ascii_uppercase();
        if !matches!(protocol.as_str(), "TCP" | "UDP") {
            self.fail(
                at,
                "protocol",
                format!("must be TCP or UDP, got `{}`", port.protocol),
            );
        } else if !seen.port_protocols.insert((port.port, protocol)) {
            self.fail(
                at,
                "port",
                format!(
                    "{}/{} is exposed by an earlier entry",
                    port.port, port.protocol
                ),
            );
        }
        if let Some(name) = &port.port_name {
            if !names::is_port_name(name) {
                self.fail(at, "portName", format!(
                    "`{name}` is not a valid port name: at most 15 lower-case letters, digits or '-', with at least one letter"
                ));
            } else if !seen.port_names.insert(name.clone()) {
                self.fail(
                    at,
                    "portName",
                    format!("`{name}` is used by an earlier entry"),
                );
            }
        }
        if let Some(kind) = &port.service_type
            && !matches!(kind.as_str(), "NodePort" | "ClusterIP" | "LoadBalancer")
        {
            self.fail(
                at,
                "serviceType",
                format!("must be NodePort, ClusterIP or LoadBalancer, got `{kind}`"),
            );
        }
        if let Some(name) = &port.service_name {
            if !names::is_dns1035_label(name) {
                self.fail(at, "serviceName", format!(
                    "`{name}` is not a valid Service name: at most 63 lower-case letters, digits or '-', starting with a letter"
                ));
            } else if name == installation {
                self.fail(
                    at,
                    "serviceName",
                    format!("`{name}` is the installation's headless Service; choose another name"),
                );
            } else if policy::SYSTEM_ACCOUNTS.contains(&name.as_str()) {
                self.fail(
                    at,
                    "serviceName",
                    format!("`{name}` is a Service of k8sworker itself; choose another name"),
                );
            } else if !seen.service_names.insert(name.clone()) {
                self.fail(
                    at,
                    "serviceName",
                    format!("`{name}` is used by an earlier entry"),
                );
            }
        }
        if let Some(ip) = &port.cluster_ip {
            if ip != "None" && ip.parse::<IpAddr>().is_err() {
                self.fail(
                    at,
                    "clusterIP",
                    format!("`{ip}` is not an IP address or `None`"),
                );
            } else if ip == "None"
                && port.service_type.as_deref().unwrap_or("NodePort") != "ClusterIP"
            {
                self.fail(
                    at,
                    "clusterIP",
                    "`None` (headless) needs serviceType ClusterIP",
                );
            }
        }
        if let Some(host) = &port.host {
            if names::is_ip_literal(host) {
                self.fail(at, "host", format!(
                    "`{host}` is an IP address; an Ingress host must be a DNS name (Kubernetes refuses IP addresses): give the node's DNS name"
                ));
            } else if !names::is_ingress_host(host) {
                self.fail(at, "host", format!("`{host}` is not a valid host name (lower-case DNS name of at most 253 characters, optionally `*.`-prefixed)"));
            }
        }
    }

    fn probe(
        &mut self,
        at: At<'_>,
        probe: &ProbeEntry,
        port_names: &BTreeSet<&str>,
        seen: &mut Seen,
    ) {
        match probe.probe_type.as_str() {
            "startup" | "readiness" | "liveness" => {
                if !seen.probe_types.insert(probe.probe_type.clone()) {
                    self.fail(
                        at,
                        "probeType",
                        format!(
                            "a `{}` probe is defined by an earlier entry",
                            probe.probe_type
                        ),
                    );
                }
            }
            other => self.fail(
                at,
                "probeType",
                format!("must be startup, readiness or liveness, got `{other}`"),
            ),
        }
        for (field, value, min) in [
            ("initialDelaySeconds", probe.initial_delay_seconds, 0),
            ("periodSeconds", probe.period_seconds, 1),
            ("timeoutSeconds", probe.timeout_seconds, 1),
            ("successThreshold", probe.success_threshold, 1),
            ("failureThreshold", probe.failure_threshold, 1),
        ] {
            if let Some(value) = value
                && !(min..=i64::from(i32::MAX)).contains(&value)
            {
                self.fail(at, field, format!("must be at least {min}, got {value}"));
            }
        }
        if probe.probe_type != "readiness"
            && let Some(threshold) = probe.success_threshold
            && threshold != 1
        {
            self.fail(
                at,
                "successThreshold",
                format!(
                    "must be 1 for a {} probe, got {threshold}",
                    probe.probe_type
                ),
            );
        }
        let check_port = |checker: &mut Self| match &probe.port {
            None => checker.fail(
                at,
                "port",
                format!("is required for a `{}` probe", probe.request_type),
            ),
            Some(PortRef::Number(port)) if !(1..=65535).contains(port) => {
                checker.fail(
                    at,
                    "port",
                    format!("must be between 1 and 65535, got {port}"),
                );
            }
            Some(PortRef::Name(name))
                if name.parse::<u16>().is_err() && !port_names.contains(name.as_str()) =>
            {
                checker.fail(
                    at,
                    "port",
                    format!(
                        "`{name}` is neither a port number nor the portName of an inboundPort entry"
                    ),
                );
            }
            Some(PortRef::Name(name)) if name.parse::<u16>().is_ok_and(|port| port == 0) => {
                checker.fail(at, "port", "must be between 1 and 65535, got 0");
            }
            Some(_) => {}
        };
        match probe.request_type.as_str() {
            "command" => {
                if probe.commands.is_empty() {
                    self.fail(
                        at,
                        "commands",
                        "needs at least one element for a `command` probe",
                    );
                }
            }
            "tcp" => check_port(self),
            "http" => {
                check_port(self);
                match probe.path.as_deref() {
                    Some(path) if path.starts_with('/') => {}
                    Some(path) => self.fail(at, "path", format!("`{path}` must start with '/'")),
                    None => self.fail(at, "path", "is required for an `http` probe"),
                }
                for name in probe.headers.keys() {
                    if http_header_name_invalid(name) {
                        self.fail_at(
                            at,
                            "headers",
                            format!("headers.{name}"),
                            format!("`{name}` is not a valid HTTP header name: letters, digits and '-' (Kubernetes' rule for probe headers)"),
                        );
                    }
                }
            }
            other => self.fail(
                at,
                "requestType",
                format!("must be command, tcp or http, got `{other}`"),
            ),
        }
    }

    fn resources(&mut self, at: At<'_>, resources: &Resources) {
        if resources.quantities().next().is_none() {
            self.fail(
                at,
                "",
                "needs at least one of cpu, memory, nvidia.com/gpu, amd.com/gpu",
            );
        }
        for (name, value) in resources.quantities() {
            match Quantity::parse(value) {
                None if Quantity::is_out_of_range(value) => self.fail(
                    at,
                    name,
                    format!(
                        "`{value}` is too large or too precise: at most 30 digits and an exponent between -30 and 30"
                    ),
                ),
                None => self.fail(
                    at,
                    name,
                    format!("`{value}` is not a Kubernetes quantity (e.g. `500m`, `2`, `1Gi`)"),
                ),
                Some(q) if q < Quantity::ZERO => {
                    self.fail(at, name, format!("`{value}` must not be negative"))
                }
                Some(q) if name.contains("gpu") && !q.is_whole() => {
                    self.fail(
                        at,
                        name,
                        format!("`{value}` must be a whole number of GPUs"),
                    );
                }
                Some(_) => {}
            }
        }
    }

    fn requests_within_limits(&mut self, request: &InstallationRequest, seen: &Seen) {
        let (Some(req_index), Some(lim_index)) = (seen.request, seen.limit) else {
            if let Some(req_index) = seen.request
                && let ConfigEntry::ResourceRequest(req) = &request.config[req_index]
            {
                for (name, _) in req.quantities().filter(|(name, _)| name.contains("gpu")) {
                    self.fail(At { index: req_index, kind: "resourceRequest" }, name,
                        "GPUs cannot be overcommitted: give the same amount in a `resourceLimit` entry");
                }
            }
            return;
        };
        let (ConfigEntry::ResourceRequest(req), ConfigEntry::ResourceLimit(lim)) =
            (&request.config[req_index], &request.config[lim_index])
        else {
            return;
        };
        let limits: BTreeMap<&str, &str> = lim.quantities().collect();
        for (name, value) in req.quantities() {
            let at = At {
                index: req_index,
                kind: "resourceRequest",
            };
            let request_q = Quantity::parse(value);
            match limits.get(name).map(|limit| (limit, Quantity::parse(limit))) {
                Some((limit, Some(limit_q))) => {
                    if let Some(request_q) = request_q {
                        if name.contains("gpu") && request_q != limit_q {
                            self.fail(at, name, format!("GPUs cannot be overcommitted: request `{value}` must equal limit `{limit}`"));
                        } else if request_q > limit_q {
                            self.fail(at, name, format!("request `{value}` exceeds limit `{limit}`"));
                        }
                    }
                }
                Some((_, None)) => {}
                None if name.contains("gpu") => self.fail(at, name,
                    "GPUs cannot be overcommitted: give the same amount in the `resourceLimit` entry"),
                None => {}
            }
        }
    }

    fn metadata_key(&mut self, at: At<'_>, key: &str, case: KeyCase) {
        // Kubernetes checks annotation keys lower-cased (`ValidateAnnotations`),
        // label keys as they are.
        let checked = match case {
            KeyCase::Insensitive => key.to_lowercase(),
            KeyCase::Sensitive => key.to_owned(),
        };
        if !names::is_qualified_name(&checked) {
            self.fail(at, "name", format!(
                "`{key}` is not a valid key: an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.'"
            ));
        } else if labels::is_reserved(key) {
            self.fail(
                at,
                "name",
                format!(
                    "`{key}` is reserved: keys in the {} domain are k8sworker's own (ownership \
                     marks, and the selectors of its own Services)",
                    labels::RESERVED_DOMAIN
                ),
            );
        } else if key.eq_ignore_ascii_case(labels::MANAGED_BY) {
            self.fail(
                at,
                "name",
                format!("`{key}` is reserved for k8sworker's ownership marks"),
            );
        }
    }

    fn target(&mut self, at: At<'_>, target: Option<&str>) {
        if let Some(target) = target
            && TargetResource::parse(target).is_none()
        {
            self.fail(at, "targetResource", format!(
                "must be one of configmap, ingress, pod, secret, service, statefulset, got `{target}`"
            ));
        }
    }
}

/// Whether a label or annotation key is checked as written or lower-cased.
#[derive(Debug, Clone, Copy)]
enum KeyCase {
    Sensitive,
    Insensitive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MountKind {
    Files,
    Volume,
}

#[derive(Default)]
struct Seen {
    env_names: BTreeSet<String>,
    files: BTreeSet<(String, String)>,
    mounts: BTreeMap<String, MountKind>,
    content_sources: BTreeMap<String, DataSource>,
    content_bytes: BTreeMap<String, usize>,
    port_protocols: BTreeSet<(i64, String)>,
    port_names: BTreeSet<String>,
    service_names: BTreeSet<String>,
    probe_types: BTreeSet<String>,
    request: Option<usize>,
    limit: Option<usize>,
    ports: usize,
    annotation_bytes: usize,
}

/// `/a/b/` and `/a//b` are the same mount point as `/a/b`.
pub(crate) fn normalize_path(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segments.join("/"))
}

/// Kubernetes' rule for a probe's header names (`IsHTTPHeaderName`:
/// `[-A-Za-z0-9]+`), narrower than HTTP's token.
fn http_header_name_invalid(name: &str) -> bool {
    name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Checks the distribution reference grammar: `[host[:port]/]path[:tag][@digest]`.
fn check_image_reference(reference: &str) -> Result<(), &'static str> {
    if reference.is_empty() {
        return Err("it is empty");
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let (algorithm, hex) = digest
            .split_once(':')
            .ok_or("the digest needs `algorithm:hex`")?;
        if algorithm.is_empty()
            || !algorithm
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+.-_".contains(&b))
            || hex.len() < 32
            || !hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err("the digest is malformed");
        }
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(colon) => (
            &rest[..last_slash + colon],
            Some(&rest[last_slash + colon + 1..]),
        ),
        None => (rest, None),
    };
    if let Some(tag) = tag
        && (tag.is_empty()
            || tag.len() > 128
            || tag.starts_with(['.', '-'])
            || !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)))
    {
        return Err(
            "the tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        );
    }
    if name.is_empty() || name.len() > 255 {
        return Err("the name must be 1-255 characters");
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    if components.len() > 1 && (first.contains(['.', ':']) || first == "localhost") {
        let (host, port) = first
            .split_once(':')
            .map_or((first, None), |(h, p)| (h, Some(p)));
        if host.is_empty()
            || !host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
            || port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err("the registry host is malformed");
        }
        components.remove(0);
    }
    for component in components {
        let ok = !component.is_empty()
            && component
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && component.as_bytes()[0].is_ascii_alphanumeric()
            && component.as_bytes()[component.len() - 1].is_ascii_alphanumeric()
            && !component.contains("..")
            && !component.contains("___");
        if !ok {
            return Err(
                "path components must be lower-case letters and digits separated by '.', '_', '__' or '-'",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        for good in [
            "nginx",
            "nginx:1.27",
            "quay.io/vantiq/camelconnector-source:1.0.2",
            "localhost:5000/a/b_c__d:tag",
            "registry.example.com:443/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "myRepo/connectorImage".to_ascii_lowercase().leak(),
        ] {
            assert_eq!(check_image_reference(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "quay.io/vantiq/x:${CONN_VERSION}",
            "a//b",
            "a@sha256:xyz",
            "-a",
            "a b",
        ] {
            assert!(check_image_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_normalize() {
        assert_eq!(normalize_path("/a//b/"), "/a/b");
        assert_eq!(normalize_path("/"), "/");
    }
}
