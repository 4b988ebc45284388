//! A plan is all or nothing: before its first persisted write, the API
//! server sees every write of it.
//!
//! [`check`] runs after the preconditions held and before the first write:
//!
//! 1. **Quota.** When the plan creates, updates or scales the StatefulSet,
//!    the namespace's ResourceQuotas (as the executor's watch-fed cache
//!    holds them: no call) are, when there are any, compared with the pods
//!    the StatefulSet would run ([`k8sworker_core::resource_quota::check`]; an update or a scale
//!    reads the current StatefulSet too, for what its pods already use). A
//!    quota on pod resources is charged when the pods are created, which
//!    the StatefulSet's dry run cannot see.
//! 2. **Dry run.** Every write of the plan is sent as a server-side dry run
//!    (`dryRun=All`), all at once (at most [`CONCURRENCY`] in flight): the
//!    API server decodes, validates, runs admission (webhooks, object-count
//!    quotas, policies) and checks the preconditions exactly as for the real
//!    write, and persists nothing. Every refusal is collected, and any one
//!    fails the plan with nothing written ([`Error::DryRunRefused`]), each
//!    refused object named with the server's reason.
//!
//! What the dry run cannot see, and what happens then:
//! - An admission webhook that declares side effects refuses every dry run
//!   (HTTP 400 "admission webhook … does not support dry run"). That write
//!   is left unchecked and written as before; its step says so.
//! - An UPDATE with a hand-over of co-owned fields is two writes, the second
//!   bound to the version the first produces; its dry run is the hand-over
//!   patch, and the apply after it is checked when it is written.
//! - A change between the dry run and the write (another writer, a quota
//!   used up meanwhile), or a limit on the plan's writes together (a count
//!   quota with room for one of two new ConfigMaps): each dry run passes
//!   alone and the real write fails. The Ack then names what was written
//!   before it ([`Error::PartlyWritten`]), and the next plan, computed from
//!   what is observed, continues from there.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8sworker_core::resource_quota::{self, Pods};
use k8sworker_proto::v1::Action;
use kube::{Api, Client, api::ResourceExt as _};
use tracing::Instrument as _;

use crate::{
    Error,
    cache::Cache,
    error::{Problem, api_reason, api_status, describe},
    kinds::Kind,
    plan::CheckedStep,
    write::{self, Mode},
};

/// Dry runs in flight at once; the shared client-side rate limit paces them
/// further.
pub const CONCURRENCY: usize = 8;

/// Runs the quota check, then the dry-run wave, for `steps`.
///
/// Returns a note per step index whose write goes out unchecked (an
/// admission webhook that does not support dry runs), for its outcome.
///
/// The dry run of a CREATE is its must-not-exist check too (the cache may
/// not have seen an object created an instant ago): the API server answers
/// it with a resourceVersion only when the object exists.
///
/// # Errors
/// [`Error::Stale`] when an object a CREATE expects absent exists;
/// [`Error::QuotaExceeded`] or [`Error::DryRunRefused`], nothing written;
/// [`Error::Kube`] when the quotas or the StatefulSet could not be read.
pub(crate) async fn check(
    client: &Client,
    cache: &Cache,
    steps: &[CheckedStep],
) -> Result<BTreeMap<u32, String>, Error> {
    quota(client, cache, steps)
        .instrument(tracing::info_span!("quota check"))
        .await?;
    let writes: Vec<&CheckedStep> = steps
        .iter()
        .filter(|step| !matches!(step.action, Action::Noop | Action::Unspecified))
        .collect();
    let span = tracing::info_span!(
        "dry run",
        k8s.dry_runs = writes.len(),
        refused = tracing::field::Empty,
        unchecked = tracing::field::Empty,
    );
    // Owned futures: a stream of futures borrowing from a closure's argument
    // is not `Send` for every lifetime, which the spawned apply needs.
    let dry_runs: Vec<_> = writes
        .into_iter()
        .map(|step| {
            let (client, step) = (client.clone(), step.clone());
            async move {
                let result = write::send(&client, &step, Mode::DryRun, None).await;
                (step, result)
            }
        })
        .collect();
    let results: Vec<(CheckedStep, Result<_, Error>)> = futures::stream::iter(dry_runs)
        .buffered(CONCURRENCY)
        .collect()
        .instrument(span.clone())
        .await;

    let mut refused = Vec::new();
    let mut existing = Vec::new();
    let mut conflict = false;
    let mut notes = BTreeMap::new();
    for (step, result) in results {
        let error = match result {
            // The dry run of a create answers with a resourceVersion only
            // when the object exists: it appeared after the plan's observe.
            Ok(outcome)
                if step.action == Action::Create && !outcome.resource_version.is_empty() =>
            {
                existing.push(Problem {
                    component: step.component.clone(),
                    detail: format!("exists (uid {}), the plan expected it absent", outcome.uid),
                });
                continue;
            }
            Ok(_) => continue,
            Err(error) => error,
        };
        let source = match &error {
            Error::Kube { source, .. } => Some(source),
            _ => None,
        };
        if let Some(reason) = source.and_then(dry_run_unsupported) {
            tracing::warn!(object = %describe(&step.component), %reason, "not checked by a dry run");
            notes.insert(
                step.index,
                format!("not checked by a dry run first: {reason}"),
            );
            continue;
        }
        conflict |= source.and_then(api_status) == Some(409);
        refused.push(Problem {
            component: step.component.clone(),
            detail: match (source, &error) {
                (Some(source), Error::Kube { action, .. }) => {
                    format!("{action}: {}", api_reason(source))
                }
                _ => error.to_string(),
            },
        });
    }
    span.record("refused", refused.len() + existing.len());
    span.record("unchecked", notes.len());
    if !existing.is_empty() {
        Err(Error::Stale(existing))
    } else if refused.is_empty() {
        Ok(notes)
    } else {
        Err(Error::DryRunRefused { refused, conflict })
    }
}

/// The API server's reason when `error` says a dry run cannot be done at
/// all (an admission webhook with side effects): HTTP 400 whose message
/// says "does not support dry run". Any other refusal is a verdict on the
/// write.
pub(crate) fn dry_run_unsupported(error: &kube::Error) -> Option<String> {
    match error {
        kube::Error::Api(status)
            if status.code == 400 && status.message.contains("does not support dry run") =>
        {
            Some(api_reason(error))
        }
        _ => None,
    }
}

/// Refuses a plan whose StatefulSet's pods would not fit the namespace's
/// ResourceQuotas (as the cache holds them: no call). An update or scale
/// reads the current StatefulSet when there is a quota, for what its pods
/// already use (the cache does not keep pod templates).
async fn quota(client: &Client, cache: &Cache, steps: &[CheckedStep]) -> Result<(), Error> {
    let Some(step) = steps.iter().find(|step| {
        step.kind == Kind::StatefulSet
            && matches!(step.action, Action::Create | Action::Update | Action::Scale)
    }) else {
        return Ok(());
    };
    let namespace = &step.component.namespace;
    // An executor deployed with a Role from before this check cannot list
    // them: the quota is left to the API server, as it was then.
    let Some(quotas) = cache.quotas() else {
        return Ok(());
    };
    if quotas.is_empty() {
        return Ok(());
    }
    let current = match step.action {
        Action::Update | Action::Scale => {
            let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            statefulsets
                .get_opt(&step.component.name)
                .await
                .map_err(|source| Error::kube("read", describe(&step.component), source))?
        }
        _ => None,
    };
    let desired: Option<StatefulSet> = match step.action {
        Action::Scale => current.clone().map(|mut sts| {
            if let Some(spec) = sts.spec.as_mut() {
                spec.replicas = step.replicas;
            }
            sts
        }),
        _ => step
            .object
            .as_ref()
            .and_then(|object| serde_json::from_value(object.clone()).ok()),
    };
    let pods = |sts: &StatefulSet| {
        let spec = sts.spec.as_ref()?;
        Some((spec.template.spec.clone()?, spec.replicas.unwrap_or(1)))
    };
    let Some((desired_spec, desired_replicas)) = desired.as_ref().and_then(pods) else {
        return Ok(());
    };
    let current = current.as_ref().and_then(pods);
    let exceeded = resource_quota::check(
        &quotas,
        current.as_ref().map(|(spec, replicas)| Pods {
            spec,
            replicas: *replicas,
        }),
        Pods {
            spec: &desired_spec,
            replicas: desired_replicas,
        },
    );
    if exceeded.is_empty() {
        tracing::debug!(quotas = quotas.len(), "pods fit the ResourceQuotas");
        return Ok(());
    }
    tracing::info!(quota = %quotas.iter().map(|q| q.name_any()).collect::<Vec<_>>().join(","), "pods would exceed a ResourceQuota");
    Err(Error::QuotaExceeded(
        exceeded
            .into_iter()
            .map(|exceeded| Problem {
                component: step.component.clone(),
                detail: exceeded.to_string(),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_status(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.into(),
            message: message.into(),
            ..Default::default()
        }))
    }

    /// The API server's answer to a dry run that meets a webhook with side
    /// effects (`k8s.io/apiserver` `webhookerrors.NewDryRunUnsupportedErr`)
    /// is the one refusal that means "cannot check", not "refused".
    #[test]
    fn only_a_webhook_without_dry_run_support_falls_back() {
        let unsupported = mk_status(
            400,
            "BadRequest",
            "admission webhook \"audit.example.com\" does not support dry run",
        );
        assert_eq!(
            dry_run_unsupported(&unsupported).as_deref(),
            Some(
                "admission webhook \"audit.example.com\" does not support dry run (HTTP 400 BadRequest)"
            )
        );
        for refusal in [
            mk_status(400, "BadRequest", "the dryRun parameter must be All"),
            mk_status(
                403,
                "Forbidden",
                "admission webhook \"deny.example.com\" denied the request: no",
            ),
            mk_status(
                422,
                "Invalid",
                "Ingress.networking.k8s.io \"app\" is invalid: spec.rules[0].host: Invalid value: \"192.0.2.10\": must be a DNS name",
            ),
            mk_status(
                500,
                "InternalError",
                "Internal error occurred: failed calling webhook \"x\": does not support dry run",
            ),
        ] {
            assert_eq!(dry_run_unsupported(&refusal), None, "{refusal}");
        }
    }
}
