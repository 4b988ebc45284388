//! The K8s operations a user requests (`deploy`, `undeploy`, `shutdown`,
//! `restart`, `fetchLogs`, and `verify` of one installation): checked,
//! charged and enqueued as a `REQUESTED` workitem in one transaction, then
//! answered at once.
//!
//! Deploy requests are read and validated by the planner's own
//! [`k8sworker_core::validate::parse_and_validate`], so the control plane
//! and the planner can never disagree on what a valid request is.

use std::sync::Arc;

use k8sworker_core::model::InstallationRequest;
use rusqlite::Transaction;
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::keyring::Keyring;
use crate::lifecycle::{self, Operation, Reference, Workitem};
use crate::query::json_kind;
use crate::quota::{self, QuotaError};
use crate::secret_config;
use crate::store::StoreError;
use crate::store::identity;
use crate::store::resources::{self, DocTable};
use crate::store::workitems::{self, NewWorkitem};

/// The name of the cluster Vantiq itself runs in.
pub const SELF_CLUSTER: &str = "self";

/// Operations on `k8sclusters/<name>/command`.
pub const CLUSTER_OPERATIONS: &str = "deploy, undeploy, shutdown, restart, fetchLogs";
/// Operations on `k8sinstallations/<name>/command`.
pub const INSTALLATION_OPERATIONS: &str = "undeploy, shutdown, restart, fetchLogs, verify";

/// The installation statuses a `verify` checks, on demand as periodically:
/// the installation is meant to be there as its record says.
pub const VERIFIABLE_STATUSES: [&str; 3] = ["RUNNING", "STOPPED", "DAMAGED"];

/// What a command is addressed to.
#[derive(Debug, Clone)]
pub enum Target {
    /// `k8sclusters/<name>/command`: the installation is named in `data.name`.
    Cluster(String),
    /// `k8sinstallations/<name>/command`: its cluster is the recorded one.
    Installation(String),
}

/// Why an operation was not enqueued.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// A field of the command is malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field (`data.name`, `data.configRef`, …).
        field: String,
        /// What is wrong, for a person.
        reason: String,
    },
    /// The operation is not one the target takes.
    #[error("{resource} has no operation {op} ({expected})")]
    UnknownOperation {
        /// `k8sclusters` or `k8sinstallations`.
        resource: &'static str,
        /// The operation asked for (at most 100 characters).
        op: String,
        /// The operations the target takes.
        expected: &'static str,
    },
    /// The planner's validation refused the deploy; one message per violation.
    #[error("the deploy request is not valid: {}", .0.join("; "))]
    ValidationFailed(Vec<String>),
    /// The cluster or installation does not exist.
    #[error("no {resource} named {name}")]
    NotFound {
        /// `k8sclusters` or `k8sinstallations`.
        resource: &'static str,
        /// The name looked for.
        name: String,
    },
    /// The installation exists on another cluster than the command names.
    #[error("installation {installation} is on cluster {actual}, not {requested}")]
    InstallationOnOtherCluster {
        /// The installation.
        installation: String,
        /// Its recorded cluster.
        actual: String,
        /// The cluster the command named.
        requested: String,
    },
    /// The installation lives in another Kubernetes namespace than the
    /// deploy names (its record, or its outstanding first deploy).
    #[error(
        "installation {installation} is in Kubernetes namespace {actual}, not {requested}; \
         undeploy it first to move it"
    )]
    InstallationInOtherNamespace {
        /// The installation.
        installation: String,
        /// Its Kubernetes namespace.
        actual: String,
        /// The Kubernetes namespace the deploy named.
        requested: String,
    },
    /// Only namespace administrators deploy to the `self` cluster.
    #[error("only admins deploy to the self cluster")]
    SelfClusterAdminOnly,
    /// A `self` deploy names another K8s namespace than the configured one.
    #[error("self deploys use K8s namespace {expected}, not {given}")]
    SelfClusterWrongNamespace {
        /// The configured namespace.
        expected: String,
        /// The request's namespace.
        given: String,
    },
    /// The `self` cluster's quota refused the deploy.
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// A secret or document the request refers to does not exist.
    #[error("the {kind} {name} does not exist")]
    MissingReference {
        /// `secret` or `document`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// Reading or writing the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The rules of the deployment the server was configured with.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The Kubernetes namespace every `self` deploy must use.
    pub self_k8s_namespace: String,
    /// The keys that seal a deploy's secret values before it is stored.
    pub keyring: Arc<Keyring>,
}

fn invalid(field: &str, reason: impl Into<String>) -> OperationError {
    OperationError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Validates a deploy's `data` with the planner; every violation is named.
pub fn validate_deploy(data: &Value) -> Result<InstallationRequest, OperationError> {
    k8sworker_core::validate::parse_and_validate(data).map_err(|errors| {
        OperationError::ValidationFailed(errors.errors.iter().map(ToString::to_string).collect())
    })
}

/// Checks, charges and enqueues one operation; returns the new workitem.
pub fn request(
    tx: &Transaction<'_>,
    caller: &Caller,
    target: &Target,
    op: &str,
    data: &Value,
    traceparent: String,
    rules: &Rules,
) -> Result<Workitem, OperationError> {
    let namespace = caller.namespace.as_str();
    let data = match data {
        Value::Object(object) => object.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(invalid(
                "data",
                format!("must be an object, got {}", json_kind(other)),
            ));
        }
    };
    let parsed = Operation::parse(op);
    if let (Target::Installation(name), Some(Operation::Verify)) = (target, parsed) {
        return verify(tx, caller, name, traceparent);
    }
    let (allowed, expected) = match target {
        Target::Cluster(_) => (
            parsed.filter(|op| *op != Operation::Verify),
            CLUSTER_OPERATIONS,
        ),
        Target::Installation(_) => (
            parsed.filter(|op| !matches!(op, Operation::Verify | Operation::Deploy)),
            INSTALLATION_OPERATIONS,
        ),
    };
    let Some(operation) = allowed else {
        return Err(OperationError::UnknownOperation {
            resource: match target {
                Target::Cluster(_) => "k8sclusters",
                Target::Installation(_) => "k8sinstallations",
            },
            op: op.chars().take(100).collect(),
            expected,
        });
    };

    // Which installation, on which cluster.
    let (cluster, installation_name) = match target {
        Target::Cluster(cluster) => {
            let name = match data.get("name") {
                Some(Value::String(name)) if !name.is_empty() => name.clone(),
                Some(other) => {
                    return Err(invalid(
                        "data.name",
                        format!("must be a non-empty string, got {}", json_kind(other)),
                    ));
                }
                None => return Err(invalid("data.name", "the installation name is required")),
            };
            (cluster.clone(), name)
        }
        Target::Installation(name) => {
            let installation = resources::get_doc(tx, DocTable::Installations, namespace, name)?
                .ok_or_else(|| OperationError::NotFound {
                    resource: "k8sinstallations",
                    name: name.clone(),
                })?;
            let cluster = installation
                .get("clusterName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (cluster, name.clone())
        }
    };
    let cluster_doc = resources::get_doc(tx, DocTable::Clusters, namespace, &cluster)?;
    if cluster_doc.is_none() {
        return Err(OperationError::NotFound {
            resource: "k8sclusters",
            name: cluster,
        });
    }
    let existing = resources::get_doc(tx, DocTable::Installations, namespace, &installation_name)?;
    if let Some(existing) = &existing {
        let actual = existing
            .get("clusterName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if actual != cluster {
            return Err(OperationError::InstallationOnOtherCluster {
                installation: installation_name,
                actual: actual.to_owned(),
                requested: cluster,
            });
        }
    }

    let request = if operation == Operation::Deploy {
        let request = deploy_request(tx, caller, &cluster, &data, rules)?;
        same_place(
            tx,
            namespace,
            &installation_name,
            existing.as_ref(),
            &cluster,
            &request,
        )?;
        request
    } else {
        let Some(existing) = &existing else {
            return Err(OperationError::NotFound {
                resource: "k8sinstallations",
                name: installation_name,
            });
        };
        let mut request = json!({
            "name": installation_name,
            "k8sNamespace": existing.get("k8sNamespace").cloned().unwrap_or(Value::Null),
        });
        if operation == Operation::FetchLogs {
            for field in ["podName", "documentGroup"] {
                match data.get(field) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(value)) => request[field] = json!(value),
                    Some(other) => {
                        return Err(invalid(
                            &format!("data.{field}"),
                            format!("must be a string, got {}", json_kind(other)),
                        ));
                    }
                }
            }
        }
        request
    };

    let item = workitems::insert(
        tx,
        &NewWorkitem {
            namespace: namespace.to_owned(),
            cluster: cluster.clone(),
            installation: installation_name.clone(),
            operation: operation.as_str().to_owned(),
            request,
            requested_by: caller.username.clone(),
            traceparent: Some(traceparent),
        },
    )?;
    resources::count_cluster_operation(tx, namespace, &cluster)?;
    if let (Some(status), Some(mut existing)) =
        (lifecycle::transitional_status(operation), existing)
    {
        existing["installationStatus"] = json!(status);
        resources::put_installation(tx, namespace, &installation_name, &cluster, &existing, None)?;
    }
    Ok(item)
}

/// `verify` of one installation, on demand: the workitem the periodic
/// verify enqueues (`docs/controlplane.md`), asked for by the caller. When a
/// verify of the installation is still to be done, that one is the answer
/// and nothing is written. Only installations in a
/// [verifiable status](VERIFIABLE_STATUSES) are verified.
fn verify(
    tx: &Transaction<'_>,
    caller: &Caller,
    name: &str,
    traceparent: String,
) -> Result<Workitem, OperationError> {
    let namespace = caller.namespace.as_str();
    let installation = resources::get_doc(tx, DocTable::Installations, namespace, name)?
        .ok_or_else(|| OperationError::NotFound {
            resource: "k8sinstallations",
            name: name.to_owned(),
        })?;
    let field = |key: &str| {
        installation
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let status = field("installationStatus");
    if !VERIFIABLE_STATUSES.contains(&status) {
        return Err(invalid(
            "installationStatus",
            format!(
                "installation {name} is {status}; verify checks {} installations (deploy it to fix it)",
                VERIFIABLE_STATUSES.join(", ")
            ),
        ));
    }
    if let Some(outstanding) = workitems::outstanding_verify(tx, namespace, name)? {
        return Ok(outstanding);
    }
    Ok(workitems::insert(
        tx,
        &workitems::verify_workitem(
            namespace,
            field("clusterName"),
            name,
            field("k8sNamespace"),
            &caller.username,
            Some(traceparent),
        ),
    )?)
}

/// An installation lives in one place, one Kubernetes namespace of one
/// cluster: a deploy that would move it, or a second first deploy elsewhere
/// while the first is still outstanding, is refused. Carried out, either
/// would leave the old place's objects running with no record naming them
/// (issue 12, case 9); to move an installation, undeploy it, then deploy it.
fn same_place(
    tx: &Transaction<'_>,
    namespace: &str,
    installation: &str,
    existing: Option<&Value>,
    cluster: &str,
    request: &Value,
) -> Result<(), OperationError> {
    let k8s_namespace = |doc: &Value| {
        doc.get("k8sNamespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (actual_cluster, actual_namespace) = match existing {
        Some(existing) => (cluster.to_owned(), k8s_namespace(existing)),
        None => match workitems::outstanding_deploy_target(tx, namespace, installation)? {
            Some(place) => place,
            None => return Ok(()),
        },
    };
    if actual_cluster != cluster {
        return Err(OperationError::InstallationOnOtherCluster {
            installation: installation.to_owned(),
            actual: actual_cluster,
            requested: cluster.to_owned(),
        });
    }
    let requested = k8s_namespace(request);
    if actual_namespace != requested {
        return Err(OperationError::InstallationInOtherNamespace {
            installation: installation.to_owned(),
            actual: actual_namespace,
            requested,
        });
    }
    Ok(())
}

/// Resolves `configRef`, validates, applies the `self` rules and checks the
/// references; returns the request to store.
fn deploy_request(
    tx: &Transaction<'_>,
    caller: &Caller,
    cluster: &str,
    data: &Map<String, Value>,
    rules: &Rules,
) -> Result<Value, OperationError> {
    let namespace = caller.namespace.as_str();
    let mut data = data.clone();
    if let Some(reference) = data.remove("configRef") {
        if data.contains_key("config") {
            return Err(invalid(
                "data.configRef",
                "give either config or configRef, not both",
            ));
        }
        data.insert(
            "config".into(),
            resolve_config_ref(tx, namespace, &reference)?,
        );
    }
    if let Some(given) = data.remove("clusterName")
        && given.as_str() != Some(cluster)
    {
        return Err(invalid(
            "data.clusterName",
            format!("names another cluster than {cluster}"),
        ));
    }
    let mut data = Value::Object(data);
    keep_stored_secrets(tx, namespace, &mut data, &rules.keyring)?;
    let parsed = validate_deploy(&data)?;

    if cluster == SELF_CLUSTER {
        if !caller.grants.admin {
            return Err(OperationError::SelfClusterAdminOnly);
        }
        if parsed.k8s_namespace != rules.self_k8s_namespace {
            return Err(OperationError::SelfClusterWrongNamespace {
                expected: rules.self_k8s_namespace.clone(),
                given: parsed.k8s_namespace.clone(),
            });
        }
        let charge = quota::charge(&parsed)?;
        let others: Vec<Value> = resources::charges(tx, namespace)?
            .into_iter()
            .filter(|(installation, _)| *installation != parsed.name)
            .map(|(_, charge)| charge)
            .collect();
        quota::check(&identity::limits(tx, namespace)?, &charge, &others)?;
        resources::set_charge(tx, namespace, &parsed.name, &charge)?;
    }

    for reference in lifecycle::references(&parsed) {
        let missing = match reference {
            Reference::Secret { name, .. } => resources::get_secret_meta(tx, namespace, name)?
                .is_none()
                .then_some(("secret", name)),
            Reference::Document { name, .. } => resources::get_document_meta(tx, namespace, name)?
                .is_none()
                .then_some(("document", name)),
        };
        if let Some((kind, name)) = missing {
            return Err(OperationError::MissingReference {
                kind,
                name: name.to_owned(),
            });
        }
    }
    if let Some(config) = data.get_mut("config") {
        secret_config::for_each_slot(config, |_, value| {
            *value = rules.keyring.seal(value);
            Ok::<_, OperationError>(())
        })?;
    }
    Ok(data)
}

/// Puts the stored value (opened) in place of every redaction marker among
/// the secret values of a deploy's `config`, from the installation's
/// recorded `configSpec` (same entry: variable name, or file path and
/// name), so a client can resubmit what it read. A marker with no stored
/// value to stand for is refused, and so is a marker in a value that is not
/// secret (it would be deployed as the literal text).
fn keep_stored_secrets(
    tx: &Transaction<'_>,
    namespace: &str,
    data: &mut Value,
    keyring: &Keyring,
) -> Result<(), OperationError> {
    let Some(config) = data.get_mut("config") else {
        return Ok(());
    };
    secret_config::refuse_marker_outside_slots(config).map_err(|error| {
        invalid(
            &format!("data.config[{}].{}", error.index, error.key),
            error.to_string(),
        )
    })?;
    let mut markers = false;
    secret_config::for_each_slot(config, |_, value| {
        markers |= value == secret_config::REDACTED;
        Ok::<_, OperationError>(())
    })?;
    if !markers {
        return Ok(());
    }
    let name = data.get("name").and_then(Value::as_str).unwrap_or_default();
    let recorded = resources::get_doc(tx, DocTable::Installations, namespace, name)?;
    let previous = recorded
        .as_ref()
        .and_then(|record| record.get("configSpec"));
    let config = data.get_mut("config").expect("checked above");
    let kept = secret_config::keep_redacted(config, previous)
        .map_err(|error| invalid(&format!("data.config[{}]", error.index), error.to_string()))?;
    secret_config::for_each_slot(config, |index, value| {
        if kept.contains(&index) {
            *value = keyring.reveal(value).map_err(StoreError::from)?;
        }
        Ok::<_, OperationError>(())
    })
}

/// A `configRef` names a document whose content is the `config` list (or an
/// object with a `config` list): `"docName"`, `{"name": ..}`,
/// `{"resourceName": ..}` or `"/documents/docName"`.
fn resolve_config_ref(
    tx: &Transaction<'_>,
    namespace: &str,
    reference: &Value,
) -> Result<Value, OperationError> {
    let name = match reference {
        Value::String(text) => text.trim_start_matches("/documents/").to_owned(),
        Value::Object(object) => object
            .get("resourceName")
            .or_else(|| object.get("name"))
            .or_else(|| object.get("resourceId"))
            .and_then(Value::as_str)
            .map(|text| text.trim_start_matches("/documents/").to_owned())
            .ok_or_else(|| invalid("data.configRef", "must name a document"))?,
        other => {
            return Err(invalid(
                "data.configRef",
                format!("must name a document, got {}", json_kind(other)),
            ));
        }
    };
    let (_, content) = resources::get_document_content(tx, namespace, &name)?.ok_or_else(|| {
        OperationError::MissingReference {
            kind: "document",
            name: name.clone(),
        }
    })?;
    let value: Value = serde_json::from_slice(&content).map_err(|error| {
        invalid(
            "data.configRef",
            format!("document {name} is not JSON: {error}"),
        )
    })?;
    match value {
        Value::Array(_) => Ok(value),
        Value::Object(mut object) => {
            object
                .remove("config")
                .filter(Value::is_array)
                .ok_or_else(|| {
                    invalid(
                        "data.configRef",
                        format!("document {name} has no config list"),
                    )
                })
        }
        _ => Err(invalid(
            "data.configRef",
            format!("document {name} holds no config list"),
        )),
    }
}

/// One problem of a deploy request, located in it: what the validation
/// endpoint answers, so a form shows each next to its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// A stable path into the request (the deploy's `data`): `name`,
    /// `k8sNamespace`, `config[2].host`, `config[0].values[1]`;
    /// [`k8sworker_core::invalid::ValidationError::path`].
    pub field: String,
    /// What is wrong: the message the deploy itself gives.
    pub message: String,
}

/// Checks a deploy's `data` as [`request`] would and lists every problem,
/// each located; empty when the deploy would be accepted. The caller must
/// roll the transaction back: with `clusterName` in `data` the deploy is
/// carried out in it ([`request`], so the rules of the cluster, the `self`
/// quota and the installation's place apply exactly as for the deploy).
///
/// Order: `configRef`, then every rule of the core's validation and every
/// redaction marker out of place, all at once; only a request that passes
/// those is checked further (without a cluster: each redaction marker has a
/// stored value to stand for, then references; with one: the deploy
/// itself), one problem at a time, as the deploy reports them.
///
/// # Errors
/// Only storage failures; every problem of the request is a [`FieldError`].
pub fn check_deploy(
    tx: &Transaction<'_>,
    caller: &Caller,
    data: &Map<String, Value>,
    rules: &Rules,
) -> Result<Vec<FieldError>, StoreError> {
    let namespace = caller.namespace.as_str();
    let mut draft = data.clone();
    let cluster = match draft.remove("clusterName") {
        None | Some(Value::Null) => None,
        Some(Value::String(cluster)) => Some(cluster),
        Some(other) => {
            return Ok(vec![FieldError {
                field: "clusterName".into(),
                message: format!("must be a string, got {}", json_kind(&other)),
            }]);
        }
    };
    if let Some(reference) = draft.remove("configRef") {
        if draft.contains_key("config") {
            return Ok(vec![FieldError {
                field: "configRef".into(),
                message: "give either config or configRef, not both".into(),
            }]);
        }
        match resolve_config_ref(tx, namespace, &reference) {
            Ok(config) => {
                draft.insert("config".into(), config);
            }
            Err(OperationError::Store(error)) => return Err(error),
            Err(error) => {
                return Ok(vec![FieldError {
                    field: "configRef".into(),
                    message: error.to_string(),
                }]);
            }
        }
    }
    let draft = Value::Object(draft);
    let mut errors = Vec::new();
    if let Some(config) = draft.get("config")
        && let Err(error) = secret_config::refuse_marker_outside_slots(config)
    {
        errors.push(FieldError {
            field: format!("config[{}].{}", error.index, error.key),
            message: error.to_string(),
        });
    }
    let parsed = match k8sworker_core::validate::parse_and_validate(&draft) {
        Ok(parsed) => parsed,
        Err(invalid) => {
            errors.extend(invalid.errors.iter().map(|error| FieldError {
                field: error.path(),
                message: error.to_string(),
            }));
            return Ok(errors);
        }
    };
    if !errors.is_empty() {
        return Ok(errors);
    }
    let Some(cluster) = cluster else {
        // The redaction markers stand for the values stored for the
        // installation, as the deploy reads them; one with none is refused.
        let mut kept = draft.clone();
        if let Err(error) = keep_stored_secrets(tx, namespace, &mut kept, &rules.keyring) {
            return located(&draft, error);
        }
        for reference in lifecycle::references(&parsed) {
            let missing = match reference {
                Reference::Secret { name, .. } => {
                    resources::get_secret_meta(tx, namespace, name)?.is_none()
                }
                Reference::Document { name, .. } => {
                    resources::get_document_meta(tx, namespace, name)?.is_none()
                }
            };
            if missing {
                errors.push(FieldError {
                    field: reference_path(&draft, &reference),
                    message: reference.missing(),
                });
            }
        }
        return Ok(errors);
    };
    match request(
        tx,
        caller,
        &Target::Cluster(cluster),
        Operation::Deploy.as_str(),
        &Value::Object(data.clone()),
        crate::trace_context::fresh(),
        rules,
    ) {
        Ok(_) => Ok(errors),
        Err(error) => located(&draft, error),
    }
}

/// A refusal of [`request`] as one [`FieldError`] at the field it concerns;
/// storage failures stay errors.
fn located(draft: &Value, error: OperationError) -> Result<Vec<FieldError>, StoreError> {
    let field = match &error {
        OperationError::Store(_) => {
            let OperationError::Store(error) = error else {
                unreachable!("matched above")
            };
            return Err(error);
        }
        OperationError::Invalid { field, .. } => {
            field.strip_prefix("data.").unwrap_or(field).to_owned()
        }
        OperationError::MissingReference { kind, name } => {
            let reference = match *kind {
                "secret" => Reference::Secret { name, variable: "" },
                _ => Reference::Document { name, path: "" },
            };
            reference_path(draft, &reference)
        }
        OperationError::NotFound { .. } | OperationError::SelfClusterAdminOnly => {
            "clusterName".into()
        }
        OperationError::InstallationOnOtherCluster { .. } => "name".into(),
        OperationError::InstallationInOtherNamespace { .. }
        | OperationError::SelfClusterWrongNamespace { .. } => "k8sNamespace".into(),
        OperationError::Quota(_)
        | OperationError::ValidationFailed(_)
        | OperationError::UnknownOperation { .. } => "config".into(),
    };
    Ok(vec![FieldError {
        field,
        message: error.to_string(),
    }])
}

/// Where in `draft` a reference to content of the control plane is made:
/// the `value` of the environment variable that names `@secrets(NAME)`, the
/// `resourceName` of the file entry that mounts the document; `config`
/// when no entry does.
fn reference_path(draft: &Value, reference: &Reference<'_>) -> String {
    let entries = draft
        .get("config")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let found = entries.iter().enumerate().find_map(|(index, entry)| {
        let text = |key: &str| entry.get(key).and_then(Value::as_str);
        match reference {
            Reference::Secret { name, .. } => (text("value")
                .is_some_and(|value| value.trim() == format!("@secrets({name})")))
            .then(|| format!("config[{index}].value")),
            Reference::Document { name, .. } => (text("resourceName") == Some(name))
                .then(|| format!("config[{index}].resourceName")),
        }
    });
    found.unwrap_or_else(|| "config".into())
}

/// What a preview renders: the deploy's request as it would be stored,
/// secret values opened, and its cluster's Ingress default host.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The request, read and validated.
    pub request: InstallationRequest,
    /// The cluster's `ingressDefaultNode`.
    pub ingress_default_node: String,
}

/// Carries out the deploy `data` on `cluster` as [`request`] does (every
/// rule of a deploy, the `self` cluster's included) and answers what it
/// would deploy. The caller must roll the transaction back.
///
/// # Errors
/// Whatever [`request`] refuses, as it refuses it.
pub fn draft_deploy(
    tx: &Transaction<'_>,
    caller: &Caller,
    cluster: &str,
    data: &Value,
    rules: &Rules,
) -> Result<Draft, OperationError> {
    let item = request(
        tx,
        caller,
        &Target::Cluster(cluster.to_owned()),
        Operation::Deploy.as_str(),
        data,
        crate::trace_context::fresh(),
        rules,
    )?;
    let mut stored = item.request;
    if let Some(config) = stored.get_mut("config") {
        secret_config::for_each_slot(config, |_, value| {
            *value = rules.keyring.reveal(value).map_err(StoreError::from)?;
            Ok::<_, OperationError>(())
        })?;
    }
    let request = validate_deploy(&stored)?;
    let ingress_default_node =
        resources::get_doc(tx, DocTable::Clusters, &caller.namespace, cluster)?
            .and_then(|doc| {
                doc.get("ingressDefaultNode")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
    Ok(Draft {
        request,
        ingress_default_node,
    })
}
