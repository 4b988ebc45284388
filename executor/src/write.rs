//! One step's API write, persisted or sent as a server-side dry run.
//!
//! [`send`] is the only place a plan's step becomes an API request: the
//! apply ([`crate::apply`]) sends each step once with [`Mode::Persist`], the
//! all-or-nothing check ([`crate::dry_run`]) sends every step first with
//! [`Mode::DryRun`], so both go out exactly alike, preconditions included.

use k8s_openapi::{
    api::apps::v1::StatefulSet, apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry,
};
use k8sworker_core::labels;
use k8sworker_core::managed::Handover;
use k8sworker_proto::v1::{Action, Outcome, StepOutcome};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy},
};
use serde_json::{Value, json};

use crate::{
    Error,
    cache::Cache,
    error::{api_status, describe},
    kinds::{self, Kind},
    plan::{CheckedStep, Expectation},
};

/// Writes `entries` as the object's `managedFields` (a merge patch bound to
/// the expected resourceVersion: a changed object is a 409, a stale plan),
/// so that the apply that follows owns, and removes, the fields other
/// managers held inside subtrees it no longer renders. Returns the new
/// resourceVersion, which the apply then expects.
async fn hand_over(
    api: &Api<DynamicObject>,
    step: &CheckedStep,
    entries: &[ManagedFieldsEntry],
    mode: Mode,
) -> Result<String, Error> {
    let Expectation::Version {
        resource_version, ..
    } = &step.expectation
    else {
        return Err(Error::invalid_component(
            &step.component,
            "UPDATE without expected version",
        ));
    };
    let patch = json!({"metadata": {
        "resourceVersion": resource_version,
        "managedFields": entries,
    }});
    let params = PatchParams {
        field_manager: Some(labels::MANAGER.to_owned()),
        dry_run: mode == Mode::DryRun,
        ..Default::default()
    };
    let patched = api
        .patch(&step.component.name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::kube("take over fields of", describe(&step.component), source))?;
    Ok(patched.metadata.resource_version.unwrap_or_default())
}

/// Whether a write is persisted or only checked by the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The write is carried out.
    Persist,
    /// The write is sent as a server-side dry run (`dryRun=All`): validated
    /// and admitted as the real one would be, nothing persisted.
    DryRun,
}

/// Sends `step`'s write: persisted, or as a dry run. A dry run of an UPDATE
/// with a hand-over sends only the hand-over patch: the apply after it is
/// bound to the version that patch produces, which a dry run never makes.
///
/// A persisted write's result goes into `cache` (when given) before this
/// returns, so the cache never answers older than the executor's own write.
pub(crate) async fn send(
    client: &Client,
    step: &CheckedStep,
    mode: Mode,
    cache: Option<&Cache>,
) -> Result<StepOutcome, Error> {
    let cache = cache.filter(|_| mode == Mode::Persist);
    let component = &step.component;
    let done =
        |outcome: Outcome, message: String, uid: Option<String>, rv: Option<String>| StepOutcome {
            index: step.index,
            component: Some(component.clone()),
            action: step.action as i32,
            outcome: outcome as i32,
            message,
            resource_version: rv.unwrap_or_default(),
            uid: uid.unwrap_or_default(),
        };
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &component.namespace,
        &kinds::api_resource(step.kind),
    );
    match step.action {
        Action::Noop | Action::Unspecified => {
            let (uid, rv) = match &step.expectation {
                Expectation::Version {
                    uid,
                    resource_version,
                } => (Some(uid.clone()), Some(resource_version.clone())),
                _ => (None, None),
            };
            Ok(done(Outcome::Unchanged, "unchanged".into(), uid, rv))
        }
        Action::Create | Action::Update => {
            let object = step
                .object
                .as_ref()
                .ok_or_else(|| Error::invalid_component(component, "no object to apply"))?;
            let handed = match &step.handover {
                Some(handover) => Some(hand_over(&api, step, &handover.entries, mode).await?),
                None => None,
            };
            if mode == Mode::DryRun && handed.is_some() {
                return Ok(done(
                    Outcome::Unchanged,
                    "hand-over checked".into(),
                    None,
                    None,
                ));
            }
            let object = match &handed {
                Some(resource_version) => {
                    let mut object = object.clone();
                    object["metadata"]["resourceVersion"] = Value::from(resource_version.clone());
                    std::borrow::Cow::Owned(object)
                }
                None => std::borrow::Cow::Borrowed(object),
            };
            let mut params = PatchParams::apply(labels::MANAGER).force();
            params.dry_run = mode == Mode::DryRun;
            let applied = api
                .patch(&component.name, &params, &Patch::Apply(object.as_ref()))
                .await
                .map_err(|source| {
                    let verb = if step.action == Action::Create {
                        "create"
                    } else {
                        "update"
                    };
                    Error::kube(verb, describe(component), source)
                })?;
            if let Some(cache) = cache {
                cache.written(step.kind, &applied);
            }
            let verb = match (&step.handover, step.action) {
                (_, Action::Create) => "created".to_owned(),
                (Some(Handover { moved, .. }), _) => format!(
                    "updated; took over {} to remove {}",
                    moved
                        .iter()
                        .map(|(field, manager)| format!("`{field}` from {manager}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if moved.len() == 1 { "it" } else { "them" }
                ),
                _ => "updated".to_owned(),
            };
            Ok(done(
                Outcome::Applied,
                verb,
                applied.metadata.uid,
                applied.metadata.resource_version,
            ))
        }
        Action::Delete => {
            let Expectation::Version {
                uid,
                resource_version,
            } = &step.expectation
            else {
                return Err(Error::invalid_component(
                    component,
                    "DELETE without expected version",
                ));
            };
            // Foreground for a StatefulSet: it disappears only after its
            // pods. Other kinds have no dependents worth waiting for, and in
            // the background they are gone when the call returns.
            let propagation = if step.kind == Kind::StatefulSet {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            };
            let params = DeleteParams {
                dry_run: mode == Mode::DryRun,
                propagation_policy: Some(propagation),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: Some(resource_version.clone()),
                }),
                ..DeleteParams::default()
            };
            let deleted = match mode {
                Mode::Persist => api.delete(&component.name, &params).await.map(|deleted| {
                    if let Some(cache) = cache {
                        match deleted.left() {
                            // Foreground: still there, terminating.
                            Some(object) if object.metadata.deletion_timestamp.is_some() => {
                                cache.written(step.kind, &object)
                            }
                            _ => cache.deleted(step.kind, &component.name, uid),
                        }
                    }
                }),
                Mode::DryRun => delete_dry_run(client, step, &params).await,
            };
            match deleted {
                Ok(()) => Ok(done(
                    Outcome::Applied,
                    "deleted".into(),
                    Some(uid.clone()),
                    None,
                )),
                Err(source) if api_status(&source) == Some(404) => Ok(done(
                    Outcome::Unchanged,
                    "already gone".into(),
                    Some(uid.clone()),
                    None,
                )),
                Err(source) => Err(Error::kube("delete", describe(component), source)),
            }
        }
        Action::Scale => {
            let (
                Some(replicas),
                Expectation::Version {
                    resource_version, ..
                },
            ) = (step.replicas, &step.expectation)
            else {
                return Err(Error::invalid_component(
                    component,
                    "SCALE without replicas or expected version",
                ));
            };
            let statefulsets: Api<StatefulSet> =
                Api::namespaced(client.clone(), &component.namespace);
            let params = PatchParams {
                field_manager: Some(labels::MANAGER.to_string()),
                dry_run: mode == Mode::DryRun,
                ..PatchParams::default()
            };
            let patch = json!({
                "metadata": {"resourceVersion": resource_version},
                "spec": {"replicas": replicas},
            });
            let scale = statefulsets
                .patch_scale(&component.name, &params, &Patch::Merge(&patch))
                .await
                .map_err(|source| Error::kube("scale", describe(component), source))?;
            if let (Some(cache), Some(rv)) = (cache, scale.metadata.resource_version.as_deref()) {
                cache.scaled(&component.name, rv, replicas);
            }
            Ok(done(
                Outcome::Applied,
                format!("scaled to {replicas}"),
                scale.metadata.uid,
                scale.metadata.resource_version,
            ))
        }
    }
}

/// A DELETE as a dry run. kube sends the delete options (`dryRun: [All]`
/// among them) in the body, where the API server reads them; `dryRun=All`
/// is added to the query as well, with the same meaning, so that the call
/// counter, which sees only method and URI, counts it as a dry run and not
/// as a persisted write.
async fn delete_dry_run(
    client: &Client,
    step: &CheckedStep,
    params: &DeleteParams,
) -> Result<(), kube::Error> {
    let resource = kinds::api_resource(step.kind);
    let path = <DynamicObject as kube::Resource>::url_path(
        &resource,
        Some(step.component.namespace.as_str()),
    );
    let request = kube::core::Request::new(path)
        .delete(&step.component.name, params)
        .map_err(kube::Error::BuildRequest)?;
    let (mut parts, body) = request.into_parts();
    let uri = parts.uri.to_string();
    let uri = match uri.split_once('?') {
        Some((_, "")) => format!("{uri}dryRun=All"),
        Some(_) => format!("{uri}&dryRun=All"),
        None => format!("{uri}?dryRun=All"),
    };
    parts.uri = uri.parse().map_err(|e: http::uri::InvalidUri| {
        kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e.into()))
    })?;
    client
        .request_text(http::Request::from_parts(parts, body))
        .await
        .map(drop)
}
