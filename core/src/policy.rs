//! What may be written into a namespace: the policy every object of a plan
//! passes before an executor makes a single API call, and that render never
//! breaks.
//!
//! ```text
//! plan step's JSON ──decode──▶ Object ──Policy::check──▶ [] (allowed) | [Violation, …]
//!                   (refused when a field would be lost: the policy must see everything applied)
//! ```
//!
//! The rules, each a [`Control`]:
//! - a pod template meets the **Pod Security Standards, baseline level**
//!   (Kubernetes documentation, "Pod Security Standards", Baseline, as of
//!   v1.34 — <https://kubernetes.io/docs/concepts/security/pod-security-standards/>;
//!   the field lists and allowed values are those of its reference
//!   implementation, `k8s.io/pod-security-admission` v0.34, `policy/check_*.go`):
//!   HostProcess, host namespaces, privileged containers, capabilities beyond
//!   the baseline set, hostPath volumes, host ports, host probes and
//!   lifecycle hooks, AppArmor, SELinux, `/proc` mount type, seccomp and
//!   sysctls, for init, regular and ephemeral containers alike;
//! - a Service has no `externalIPs` (CVE-2020-8554: an `externalIPs` entry
//!   intercepts traffic to that address from every pod of the cluster);
//! - a Secret is `Opaque` (the token controller fills a
//!   `kubernetes.io/service-account-token` Secret with a token of the
//!   account it names, the executor's included);
//! - a pod does not run as one of the system's own service accounts
//!   ([`SYSTEM_ACCOUNTS`]) nor one the operator denies, and gets no API token
//!   (`automountServiceAccountToken: false`) unless it names its own account;
//! - no `k8sworker.io/` label or annotation other than the ones render writes
//!   ([`labels::RENDERED_LABELS`], [`labels::RENDERED_ANNOTATIONS`]), and
//!   `k8sworker.io/installation` in a selector or on a pod template only with
//!   the object's own installation: no pod can join the system's Services or
//!   another installation's;
//! - an Ingress routes to none of the system's Services.
//!
//! Pure: the executor runs [`Policy::check`] on every object of a plan (with
//! its operator's deny list), `validate` refuses the requests that would
//! render a violation, and tests hold render to it.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    AppArmorProfile, ContainerPort, Lifecycle, LifecycleHandler, PodSpec, Probe, SELinuxOptions,
    SeccompProfile, Secret, SecurityContext, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::component::{ComponentId, Object};
use crate::kind::Kind;
use crate::labels;

/// The names `deploy/` gives the system's own ServiceAccounts and Services.
/// No installation's pod may run as one of these accounts (it would hold
/// that component's token), and no Ingress may route to one of these
/// Services.
pub const SYSTEM_ACCOUNTS: [&str; 3] = [
    "k8sworker-executor",
    "k8sworker-planner",
    "k8sworker-gateway",
];

/// Capabilities a container may add at the baseline level (Pod Security
/// Standards, Baseline, "Capabilities": the container runtime's default set).
pub const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls a pod may set at the baseline level (Pod Security Standards,
/// Baseline, "Sysctls": the safe set as of v1.32).
pub const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// SELinux types a pod or container may set at the baseline level (Pod
/// Security Standards, Baseline, "SELinux", as of v1.31); `user` and `role`
/// may not be set at all.
pub const SELINUX_TYPES: [&str; 5] = [
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// Prefix of the (deprecated, still honoured) per-container AppArmor
/// annotations on a pod.
pub const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Whether the value of an AppArmor annotation is allowed at the baseline
/// level: empty, `runtime/default` or `localhost/<profile>`.
pub fn apparmor_annotation_allowed(value: &str) -> bool {
    value.is_empty() || value == "runtime/default" || value.starts_with("localhost/")
}

/// One rule of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Control {
    /// Baseline: no Windows HostProcess containers.
    HostProcess,
    /// Baseline: no `hostNetwork`, `hostPID`, `hostIPC`.
    HostNamespaces,
    /// Baseline: no privileged container.
    Privileged,
    /// Baseline: no capability beyond [`BASELINE_CAPABILITIES`].
    Capabilities,
    /// Baseline: no `hostPath` volume.
    HostPath,
    /// Baseline: no `hostPort` other than 0.
    HostPorts,
    /// Baseline (v1.34): no `host` in a probe or lifecycle hook.
    HostProbes,
    /// Baseline: AppArmor only `RuntimeDefault` or `Localhost`.
    AppArmor,
    /// Baseline: SELinux type from [`SELINUX_TYPES`], no user or role.
    SeLinux,
    /// Baseline: `/proc` mount type `Default`.
    ProcMount,
    /// Baseline: seccomp not `Unconfined`.
    Seccomp,
    /// Baseline: only [`SAFE_SYSCTLS`].
    Sysctls,
    /// k8sworker: no Service `externalIPs`.
    ExternalIps,
    /// k8sworker: Secrets of type `Opaque` only.
    SecretType,
    /// k8sworker: no system or denied service account.
    ServiceAccount,
    /// k8sworker: no API token unless the installation names its account.
    ServiceAccountToken,
    /// k8sworker: `k8sworker.io/` keys only as render writes them.
    ReservedKey,
    /// k8sworker: no Ingress to a system Service.
    SystemService,
    /// k8sworker: no field the executor cannot check.
    UnknownField,
}

impl Control {
    /// The control's name, as its source names it.
    pub fn name(self) -> &'static str {
        match self {
            Control::HostProcess => "HostProcess",
            Control::HostNamespaces => "Host Namespaces",
            Control::Privileged => "Privileged Containers",
            Control::Capabilities => "Capabilities",
            Control::HostPath => "HostPath Volumes",
            Control::HostPorts => "Host Ports",
            Control::HostProbes => "Host Probes / Lifecycle Hooks",
            Control::AppArmor => "AppArmor",
            Control::SeLinux => "SELinux",
            Control::ProcMount => "/proc Mount Type",
            Control::Seccomp => "Seccomp",
            Control::Sysctls => "Sysctls",
            Control::ExternalIps => "no externalIPs",
            Control::SecretType => "Opaque Secrets only",
            Control::ServiceAccount => "no system or denied service account",
            Control::ServiceAccountToken => "no API token by default",
            Control::ReservedKey => "reserved k8sworker.io/ keys",
            Control::SystemService => "no route to system Services",
            Control::UnknownField => "every field checked",
        }
    }

    /// Where the rule comes from: `Pod Security Standards, baseline` or
    /// `k8sworker`.
    pub fn source(self) -> &'static str {
        match self {
            Control::ExternalIps
            | Control::SecretType
            | Control::ServiceAccount
            | Control::ServiceAccountToken
            | Control::ReservedKey
            | Control::SystemService
            | Control::UnknownField => "k8sworker policy",
            _ => "Pod Security Standards, baseline",
        }
    }
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source(), self.name())
    }
}

/// One field of one object that breaks the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The object, by kind and name.
    pub object: ComponentId,
    /// The field, as a path from the object's root, e.g.
    /// `spec.template.spec.containers[0].securityContext.privileged` or
    /// `metadata.labels["k8sworker.io/component"]`.
    pub field: String,
    /// The rule it breaks.
    pub control: Control,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {} ({})",
            self.object, self.field, self.message, self.control
        )
    }
}

/// Every violation of a set of objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} refused by policy: {}", .0.len(), join(.0))]
pub struct Violations(pub Vec<Violation>);

fn join(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The policy of one executor: the fixed rules and the service accounts its
/// operator denies on top of [`SYSTEM_ACCOUNTS`]. `Policy::default()` denies
/// only the system's accounts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    denied_service_accounts: BTreeSet<String>,
}

impl Policy {
    /// The policy that also denies `accounts` (the operator's list).
    pub fn deny_service_accounts<S: Into<String>>(
        mut self,
        accounts: impl IntoIterator<Item = S>,
    ) -> Self {
        self.denied_service_accounts
            .extend(accounts.into_iter().map(Into::into));
        self
    }

    /// Whether a pod may not run as `account`: one of the system's own or
    /// the operator's.
    pub fn denies_service_account(&self, account: &str) -> bool {
        SYSTEM_ACCOUNTS.contains(&account) || self.denied_service_accounts.contains(account)
    }

    /// The operator's deny list (without [`SYSTEM_ACCOUNTS`]).
    pub fn denied_service_accounts(&self) -> impl Iterator<Item = &str> {
        self.denied_service_accounts.iter().map(String::as_str)
    }

    /// Every violation of `object`, in field order; empty when it may be
    /// written.
    pub fn check(&self, object: &Object) -> Vec<Violation> {
        let mut check = Check {
            policy: self,
            object: object.id(),
            own_installation: object
                .metadata()
                .labels
                .as_ref()
                .and_then(|labels| labels.get(labels::INSTALLATION))
                .map(String::as_str),
            found: Vec::new(),
        };
        check.metadata("metadata", object.metadata());
        match object {
            Object::StatefulSet(statefulset) => check.statefulset(statefulset),
            Object::Service(service) => check.service(service),
            Object::Ingress(ingress) => check.ingress(ingress),
            Object::Secret(secret) => check.secret(secret),
            Object::ConfigMap(_) => {}
        }
        check.found
    }

    /// Checks every object.
    ///
    /// # Errors
    /// [`Violations`] with every violation of every object.
    pub fn check_all<'a>(
        &self,
        objects: impl IntoIterator<Item = &'a Object>,
    ) -> Result<(), Violations> {
        let found: Vec<Violation> = objects
            .into_iter()
            .flat_map(|object| self.check(object))
            .collect();
        if found.is_empty() {
            Ok(())
        } else {
            Err(Violations(found))
        }
    }
}

/// Reads an object of `kind` from the JSON a plan carries, refusing any
/// field the typed object would drop: what is applied is then exactly what
/// [`Policy::check`] saw, also for fields this version does not know (a
/// newer API server would honour them). `null` counts as absent.
///
/// # Errors
/// A [`Control::UnknownField`] violation naming the first such field, or
/// the field that does not read as `kind`.
pub fn decode(kind: Kind, json: &Value) -> Result<Object, Violation> {
    let name = json
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let id = ComponentId::new(kind, name);
    let refuse = |field: String, message: String| Violation {
        object: id.clone(),
        field,
        control: Control::UnknownField,
        message,
    };
    let bytes = serde_json::to_vec(json).expect("a JSON value always serializes");
    let object = Object::from_json(kind, &bytes).map_err(|error| {
        refuse(
            String::new(),
            format!(
                "does not read as a {kind} (line {}, column {})",
                error.line(),
                error.column()
            ),
        )
    })?;
    match lost(json, &object.to_json(), String::new()) {
        None => Ok(object),
        Some(field) => Err(refuse(
            field,
            format!(
                "is not a field of {kind} {} that the executor checks; it applies only what its policy has seen",
                kind.api_version()
            ),
        )),
    }
}

/// The first path of `original` that `read_back` does not hold as it is.
fn lost(original: &Value, read_back: &Value, path: String) -> Option<String> {
    match (original, read_back) {
        (Value::Object(fields), Value::Object(back)) => fields.iter().find_map(|(key, value)| {
            let path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match back.get(key) {
                None if value.is_null() => None,
                None => Some(path),
                Some(back) => lost(value, back, path),
            }
        }),
        (Value::Array(items), Value::Array(back)) if items.len() == back.len() => items
            .iter()
            .zip(back)
            .enumerate()
            .find_map(|(index, (item, back))| lost(item, back, format!("{path}[{index}]"))),
        (original, back) => (original != back).then_some(path),
    }
}

/// One object being checked.
struct Check<'a> {
    policy: &'a Policy,
    object: ComponentId,
    own_installation: Option<&'a str>,
    found: Vec<Violation>,
}

/// The parts of a container, an init container or an ephemeral container
/// the policy reads.
struct ContainerView<'a> {
    security_context: Option<&'a SecurityContext>,
    ports: Option<&'a Vec<ContainerPort>>,
    probes: [(&'static str, Option<&'a Probe>); 3],
    lifecycle: Option<&'a Lifecycle>,
}

impl<'a> Check<'a> {
    fn deny(&mut self, control: Control, field: String, message: impl Into<String>) {
        self.found.push(Violation {
            object: self.object.clone(),
            field,
            control,
            message: message.into(),
        });
    }

    /// Reserved keys of an object's or a pod template's metadata.
    fn metadata(&mut self, path: &str, metadata: &ObjectMeta) {
        if let Some(labels) = &metadata.labels {
            self.label_map(&format!("{path}.labels"), labels.iter());
        }
        for key in metadata.annotations.iter().flat_map(|a| a.keys()) {
            if labels::is_reserved(key) && !labels::RENDERED_ANNOTATIONS.contains(&key.as_str()) {
                self.deny(
                    Control::ReservedKey,
                    format!("{path}.annotations[\"{key}\"]"),
                    format!("`{key}` is reserved: only k8sworker sets k8sworker.io/ annotations, and not this one"),
                );
            }
        }
    }

    /// Labels, or a selector's labels: reserved keys only as render writes
    /// them, the installation only the object's own.
    fn label_map<'k>(&mut self, path: &str, pairs: impl Iterator<Item = (&'k String, &'k String)>) {
        for (key, value) in pairs {
            self.label(
                &format!("{path}[\"{key}\"]"),
                key,
                std::slice::from_ref(value),
            );
        }
    }

    fn label(&mut self, field: &str, key: &str, values: &[String]) {
        if !labels::is_reserved(key) {
            return;
        }
        if !labels::RENDERED_LABELS.contains(&key) {
            self.deny(
                Control::ReservedKey,
                field.to_owned(),
                format!(
                    "`{key}` is reserved: only k8sworker's own pods, Services and NetworkPolicies use k8sworker.io/ labels other than {}",
                    labels::INSTALLATION
                ),
            );
        } else if values
            .iter()
            .any(|value| Some(value.as_str()) != self.own_installation)
        {
            self.deny(
                Control::ReservedKey,
                field.to_owned(),
                format!(
                    "must be the object's own installation `{}`: an object may not select or join another installation's pods",
                    self.own_installation.unwrap_or_default()
                ),
            );
        }
    }

    fn statefulset(&mut self, statefulset: &StatefulSet) {
        let Some(spec) = &statefulset.spec else {
            return;
        };
        if let Some(match_labels) = &spec.selector.match_labels {
            self.label_map("spec.selector.matchLabels", match_labels.iter());
        }
        for (index, expression) in spec.selector.match_expressions.iter().flatten().enumerate() {
            let field = format!("spec.selector.matchExpressions[{index}]");
            let values = expression.values.as_deref().unwrap_or_default();
            if labels::is_reserved(&expression.key)
                && (expression.operator != "In" || values.is_empty())
            {
                self.deny(
                    Control::ReservedKey,
                    format!("{field}.operator"),
                    format!(
                        "`{}` on `{}` is not allowed: a reserved key is selected only with `In` and the object's own values",
                        expression.operator, expression.key
                    ),
                );
            } else {
                self.label(&format!("{field}.key"), &expression.key, values);
            }
        }
        if let Some(metadata) = &spec.template.metadata {
            self.metadata("spec.template.metadata", metadata);
            for (key, value) in metadata.annotations.iter().flatten() {
                if key.starts_with(APPARMOR_ANNOTATION_PREFIX)
                    && !apparmor_annotation_allowed(value)
                {
                    self.deny(
                        Control::AppArmor,
                        format!("spec.template.metadata.annotations[\"{key}\"]"),
                        format!(
                            "`{value}` is not allowed: runtime/default or localhost/<profile> only"
                        ),
                    );
                }
            }
        }
        if let Some(pod) = &spec.template.spec {
            self.pod("spec.template.spec", pod);
        }
    }

    fn pod(&mut self, path: &str, pod: &PodSpec) {
        for (field, set) in [
            ("hostNetwork", pod.host_network),
            ("hostPID", pod.host_pid),
            ("hostIPC", pod.host_ipc),
        ] {
            if set == Some(true) {
                self.deny(
                    Control::HostNamespaces,
                    format!("{path}.{field}"),
                    "must be false or unset: sharing the node's namespaces is not allowed",
                );
            }
        }
        if let Some(context) = &pod.security_context {
            let at = format!("{path}.securityContext");
            if context
                .windows_options
                .as_ref()
                .and_then(|w| w.host_process)
                == Some(true)
            {
                self.deny(
                    Control::HostProcess,
                    format!("{at}.windowsOptions.hostProcess"),
                    "must be false or unset",
                );
            }
            self.se_linux(&at, context.se_linux_options.as_ref());
            self.seccomp(&at, context.seccomp_profile.as_ref());
            self.app_armor(&at, context.app_armor_profile.as_ref());
            for (index, sysctl) in context.sysctls.iter().flatten().enumerate() {
                if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
                    self.deny(
                        Control::Sysctls,
                        format!("{at}.sysctls[{index}].name"),
                        format!(
                            "`{}` is not one of the safe sysctls ({})",
                            sysctl.name,
                            SAFE_SYSCTLS.join(", ")
                        ),
                    );
                }
            }
        }
        for (index, volume) in pod.volumes.iter().flatten().enumerate() {
            if volume.host_path.is_some() {
                self.deny(
                    Control::HostPath,
                    format!("{path}.volumes[{index}].hostPath"),
                    "hostPath volumes are not allowed",
                );
            }
        }
        for (index, container) in pod.init_containers.iter().flatten().enumerate() {
            self.container(
                &format!("{path}.initContainers[{index}]"),
                ContainerView {
                    security_context: container.security_context.as_ref(),
                    ports: container.ports.as_ref(),
                    probes: [
                        ("livenessProbe", container.liveness_probe.as_ref()),
                        ("readinessProbe", container.readiness_probe.as_ref()),
                        ("startupProbe", container.startup_probe.as_ref()),
                    ],
                    lifecycle: container.lifecycle.as_ref(),
                },
            );
        }
        for (index, container) in pod.containers.iter().enumerate() {
            self.container(
                &format!("{path}.containers[{index}]"),
                ContainerView {
                    security_context: container.security_context.as_ref(),
                    ports: container.ports.as_ref(),
                    probes: [
                        ("livenessProbe", container.liveness_probe.as_ref()),
                        ("readinessProbe", container.readiness_probe.as_ref()),
                        ("startupProbe", container.startup_probe.as_ref()),
                    ],
                    lifecycle: container.lifecycle.as_ref(),
                },
            );
        }
        for (index, container) in pod.ephemeral_containers.iter().flatten().enumerate() {
            self.container(
                &format!("{path}.ephemeralContainers[{index}]"),
                ContainerView {
                    security_context: container.security_context.as_ref(),
                    ports: container.ports.as_ref(),
                    probes: [
                        ("livenessProbe", container.liveness_probe.as_ref()),
                        ("readinessProbe", container.readiness_probe.as_ref()),
                        ("startupProbe", container.startup_probe.as_ref()),
                    ],
                    lifecycle: container.lifecycle.as_ref(),
                },
            );
        }
        self.service_account(path, pod);
    }

    fn service_account(&mut self, path: &str, pod: &PodSpec) {
        let mut named = false;
        for (field, account) in [
            ("serviceAccountName", &pod.service_account_name),
            // The deprecated alias: the API server fills one from the other.
            ("serviceAccount", &pod.service_account),
        ] {
            let Some(account) = account.as_deref().filter(|a| !a.is_empty()) else {
                continue;
            };
            named = true;
            if self.policy.denies_service_account(account) {
                let whose = if SYSTEM_ACCOUNTS.contains(&account) {
                    "is k8sworker's own service account"
                } else {
                    "is denied by this executor's operator"
                };
                self.deny(
                    Control::ServiceAccount,
                    format!("{path}.{field}"),
                    format!("`{account}` {whose}; a pod running as it would hold its token"),
                );
            }
        }
        if !named && pod.automount_service_account_token != Some(false) {
            self.deny(
                Control::ServiceAccountToken,
                format!("{path}.automountServiceAccountToken"),
                "must be false: the installation names no service account, so its pods get no Kubernetes API token",
            );
        }
    }

    fn container(&mut self, path: &str, container: ContainerView<'_>) {
        if let Some(context) = container.security_context {
            let at = format!("{path}.securityContext");
            if context.privileged == Some(true) {
                self.deny(
                    Control::Privileged,
                    format!("{at}.privileged"),
                    "must be false or unset: privileged containers are not allowed",
                );
            }
            if let Some(added) = context.capabilities.as_ref().and_then(|c| c.add.as_ref()) {
                for (index, capability) in added.iter().enumerate() {
                    if !BASELINE_CAPABILITIES.contains(&capability.as_str()) {
                        self.deny(
                            Control::Capabilities,
                            format!("{at}.capabilities.add[{index}]"),
                            format!(
                                "`{capability}` is beyond the baseline set ({})",
                                BASELINE_CAPABILITIES.join(", ")
                            ),
                        );
                    }
                }
            }
            if context
                .windows_options
                .as_ref()
                .and_then(|w| w.host_process)
                == Some(true)
            {
                self.deny(
                    Control::HostProcess,
                    format!("{at}.windowsOptions.hostProcess"),
                    "must be false or unset",
                );
            }
            if let Some(mount) = context.proc_mount.as_deref()
                && mount != "Default"
            {
                self.deny(
                    Control::ProcMount,
                    format!("{at}.procMount"),
                    format!("`{mount}` is not allowed: Default or unset only"),
                );
            }
            self.se_linux(&at, context.se_linux_options.as_ref());
            self.seccomp(&at, context.seccomp_profile.as_ref());
            self.app_armor(&at, context.app_armor_profile.as_ref());
        }
        for (index, port) in container.ports.into_iter().flatten().enumerate() {
            if let Some(host_port) = port.host_port
                && host_port != 0
            {
                self.deny(
                    Control::HostPorts,
                    format!("{path}.ports[{index}].hostPort"),
                    format!("{host_port} is not allowed: host ports must be 0 or unset"),
                );
            }
        }
        for (name, probe) in container.probes {
            if let Some(probe) = probe {
                let (http, tcp) = (
                    probe.http_get.as_ref().and_then(|h| h.host.as_deref()),
                    probe.tcp_socket.as_ref().and_then(|t| t.host.as_deref()),
                );
                self.probe_hosts(&format!("{path}.{name}"), http, tcp);
            }
        }
        if let Some(lifecycle) = container.lifecycle {
            for (name, handler) in [
                ("postStart", &lifecycle.post_start),
                ("preStop", &lifecycle.pre_stop),
            ] {
                if let Some(LifecycleHandler {
                    http_get,
                    tcp_socket,
                    ..
                }) = handler
                {
                    self.probe_hosts(
                        &format!("{path}.lifecycle.{name}"),
                        http_get.as_ref().and_then(|h| h.host.as_deref()),
                        tcp_socket.as_ref().and_then(|t| t.host.as_deref()),
                    );
                }
            }
        }
    }

    fn probe_hosts(&mut self, path: &str, http: Option<&str>, tcp: Option<&str>) {
        for (field, host) in [("httpGet.host", http), ("tcpSocket.host", tcp)] {
            if let Some(host) = host.filter(|h| !h.is_empty()) {
                self.deny(
                    Control::HostProbes,
                    format!("{path}.{field}"),
                    format!("`{host}` is not allowed: a probe or hook reaches its own pod only"),
                );
            }
        }
    }

    fn se_linux(&mut self, at: &str, options: Option<&SELinuxOptions>) {
        let Some(options) = options else {
            return;
        };
        let kind = options.type_.as_deref().unwrap_or_default();
        if !SELINUX_TYPES.contains(&kind) {
            self.deny(
                Control::SeLinux,
                format!("{at}.seLinuxOptions.type"),
                format!("`{kind}` is not one of {}", SELINUX_TYPES[1..].join(", ")),
            );
        }
        for (field, value) in [("user", &options.user), ("role", &options.role)] {
            if value.as_deref().is_some_and(|v| !v.is_empty()) {
                self.deny(
                    Control::SeLinux,
                    format!("{at}.seLinuxOptions.{field}"),
                    "may not be set",
                );
            }
        }
    }

    fn seccomp(&mut self, at: &str, profile: Option<&SeccompProfile>) {
        if let Some(profile) = profile
            && profile.type_ == "Unconfined"
        {
            self.deny(
                Control::Seccomp,
                format!("{at}.seccompProfile.type"),
                "Unconfined is not allowed: RuntimeDefault, Localhost or unset",
            );
        }
    }

    fn app_armor(&mut self, at: &str, profile: Option<&AppArmorProfile>) {
        if let Some(profile) = profile
            && !matches!(profile.type_.as_str(), "RuntimeDefault" | "Localhost")
        {
            self.deny(
                Control::AppArmor,
                format!("{at}.appArmorProfile.type"),
                format!(
                    "`{}` is not allowed: RuntimeDefault, Localhost or unset",
                    profile.type_
                ),
            );
        }
    }

    fn service(&mut self, service: &Service) {
        let Some(spec) = &service.spec else {
            return;
        };
        if let Some(ips) = spec.external_ips.as_ref().filter(|ips| !ips.is_empty()) {
            self.deny(
                Control::ExternalIps,
                "spec.externalIPs".to_owned(),
                format!(
                    "{} is not allowed: externalIPs intercept traffic to those addresses from every pod of the cluster",
                    ips.join(", ")
                ),
            );
        }
        if let Some(selector) = &spec.selector {
            self.label_map("spec.selector", selector.iter());
        }
    }

    fn secret(&mut self, secret: &Secret) {
        if let Some(kind) = secret.type_.as_deref()
            && kind != "Opaque"
        {
            self.deny(
                Control::SecretType,
                "type".to_owned(),
                format!(
                    "`{kind}` is not allowed: Opaque only (a kubernetes.io/service-account-token \
                     Secret is filled with a token of the account it names)"
                ),
            );
        }
    }

    fn ingress(&mut self, ingress: &Ingress) {
        let Some(spec) = &ingress.spec else {
            return;
        };
        if let Some(backend) = &spec.default_backend {
            self.backend("spec.defaultBackend", backend);
        }
        for (rule_index, rule) in spec.rules.iter().flatten().enumerate() {
            for (path_index, path) in rule.http.iter().flat_map(|h| &h.paths).enumerate() {
                self.backend(
                    &format!("spec.rules[{rule_index}].http.paths[{path_index}].backend"),
                    &path.backend,
                );
            }
        }
    }

    fn backend(&mut self, path: &str, backend: &IngressBackend) {
        if let Some(service) = &backend.service
            && SYSTEM_ACCOUNTS.contains(&service.name.as_str())
        {
            self.deny(
                Control::SystemService,
                format!("{path}.service.name"),
                format!(
                    "`{}` is a Service of k8sworker itself; an installation may not route to it",
                    service.name
                ),
            );
        }
    }
}
