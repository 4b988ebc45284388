//! Replacing the pods that block a deploy's rollout.
//!
//! The StatefulSet controller never replaces a pod of a previous revision
//! that fails to start, so a bad image followed by the fix never rolls out
//! (kubernetes/kubernetes#67250). During a deploy's health wait the executor
//! does what the controller will not: it deletes each pod
//! `k8sworker_core::rollout::stuck` names, and the controller re-creates it
//! from the update revision.
//!
//! ```text
//! health::wait ──(StatefulSet, pods)──▶ rollout::stuck (pure: which pods)
//!              ◀──PodReplacement────── replace: DELETE pod, Preconditions{uid, resourceVersion}
//! ```
//!
//! Bounded three ways: only for a deploy ([`owner`]), only pods of the
//! StatefulSet whose uid the plan checked or wrote, and only pods exactly as
//! judged (the delete's preconditions: a pod that changed since is judged
//! again on its next event; one that is gone was replaced by someone else).

use std::collections::HashSet;

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use k8sworker_core::rollout::Stuck;
use k8sworker_proto::v1::{Action, Operation, Outcome, Plan, PodReplacement, StepOutcome};
use kube::{
    Api,
    api::{DeleteParams, Preconditions, PropagationPolicy},
};

use tracing::Instrument as _;

use crate::error::api_status;

/// The uid of the StatefulSet whose stuck pods the plan may replace: a
/// deploy's StatefulSet, as its step left it (created, updated, or found
/// unchanged: a deploy of an unchanged request still rolls a rollout on that
/// an earlier deploy started). `None` for every other operation (shutdown
/// and restart only scale, undeploy deletes), and for a deploy whose
/// StatefulSet step did not succeed.
pub(crate) fn owner(plan: &Plan, outcomes: &[StepOutcome]) -> Option<String> {
    if plan.operation != Operation::Deploy as i32 {
        return None;
    }
    outcomes
        .iter()
        .find(|outcome| {
            outcome
                .component
                .as_ref()
                .is_some_and(|c| c.kind == "StatefulSet")
        })
        .filter(|outcome| outcome.action != Action::Delete as i32)
        .filter(|outcome| {
            outcome.outcome == Outcome::Applied as i32
                || outcome.outcome == Outcome::Unchanged as i32
        })
        .map(|outcome| outcome.uid.clone())
        .filter(|uid| !uid.is_empty())
}

/// The replacements of one health wait: what was replaced, and which pods
/// are not to be tried again.
#[derive(Debug)]
pub(crate) struct RollForward {
    /// The uid of the StatefulSet whose pods may be replaced ([`owner`]).
    statefulset_uid: String,
    /// Deleted so far, in order.
    replaced: Vec<PodReplacement>,
    /// Pods deleted or found gone: out of the assessment.
    done: HashSet<String>,
    /// Pods whose delete the API server refused: not tried again, and
    /// judged as the failing pods they are.
    refused: HashSet<String>,
}

impl RollForward {
    /// Replacing the stuck pods of the StatefulSet with this uid.
    pub(crate) fn new(statefulset_uid: String) -> Self {
        RollForward {
            statefulset_uid,
            replaced: Vec::new(),
            done: HashSet::new(),
            refused: HashSet::new(),
        }
    }

    /// Replaces the stuck pods among `pods` (the StatefulSet's, as the
    /// watch shows them) and returns the pods left to judge: without those
    /// replaced, and without those still to be replaced (a pod that changed
    /// since it was judged is tried again on its next event). A StatefulSet
    /// with another uid than the plan's (re-created meanwhile) is not ours
    /// to act on: nothing is replaced.
    pub(crate) async fn step(
        &mut self,
        api: &Api<Pod>,
        statefulset: &StatefulSet,
        mut pods: Vec<Pod>,
    ) -> Vec<Pod> {
        if statefulset.metadata.uid.as_deref() != Some(self.statefulset_uid.as_str()) {
            return pods;
        }
        let mut pending = HashSet::new();
        for stuck in k8sworker_core::rollout::stuck(statefulset, &pods) {
            if self.done.contains(&stuck.uid) || self.refused.contains(&stuck.uid) {
                continue;
            }
            match replace(api, &stuck).await {
                Replaced::Deleted(replacement) => {
                    self.done.insert(stuck.uid);
                    self.replaced.push(replacement);
                }
                Replaced::Gone => {
                    self.done.insert(stuck.uid);
                }
                Replaced::Changed => {
                    pending.insert(stuck.uid);
                }
                Replaced::Refused => {
                    self.refused.insert(stuck.uid);
                }
            }
        }
        pods.retain(|pod| {
            pod.metadata
                .uid
                .as_ref()
                .is_none_or(|uid| !self.done.contains(uid) && !pending.contains(uid))
        });
        pods
    }

    /// The pods replaced so far.
    pub(crate) fn replaced(&self) -> &[PodReplacement] {
        &self.replaced
    }
}

/// What became of one attempt to replace a stuck pod.
#[derive(Debug)]
enum Replaced {
    /// Deleted; the controller re-creates it from the update revision.
    Deleted(PodReplacement),
    /// It changed since it was judged (409): judge it again.
    Changed,
    /// Already gone (404): nothing to do.
    Gone,
    /// The API server refused (e.g. a Role without `delete` on pods): it is
    /// not tried again, and the health wait reports it as failing.
    Refused,
}

/// Deletes the stuck pod, bound to the uid and resourceVersion it was
/// judged at; one span per pod names it, its revision and the reason.
async fn replace(pods: &Api<Pod>, stuck: &Stuck) -> Replaced {
    let span = tracing::info_span!(
        "replace pod",
        k8s.pod = %stuck.pod,
        k8s.revision = %stuck.revision,
        k8s.update_revision = %stuck.update_revision,
        reason = %stuck.failure.reason,
    );
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: Some(stuck.uid.clone()),
            resource_version: Some(stuck.resource_version.clone()),
        }),
        ..DeleteParams::default()
    };
    let result = pods
        .delete(&stuck.pod, &params)
        .instrument(span.clone())
        .await;
    let _entered = span.enter();
    match result {
        Ok(_) => {
            tracing::info!(
                pod = %stuck.pod,
                reason = %stuck.failure.reason,
                "replaced a pod of a previous revision that failed to start"
            );
            Replaced::Deleted(PodReplacement {
                pod: stuck.pod.clone(),
                uid: stuck.uid.clone(),
                revision: stuck.revision.clone(),
                update_revision: stuck.update_revision.clone(),
                reason: stuck.failure.reason.clone(),
                message: stuck.failure.message.clone(),
            })
        }
        Err(error) if api_status(&error) == Some(409) => Replaced::Changed,
        Err(error) if api_status(&error) == Some(404) => Replaced::Gone,
        Err(error) => {
            tracing::warn!(%error, pod = %stuck.pod, "could not replace a stuck pod");
            Replaced::Refused
        }
    }
}

/// One line for people: `replaced pod orders-2 (ImagePullBackOff at
/// revision orders-7d9 while rolling out orders-5c4)`, joined by `; `.
pub(crate) fn describe(replaced: &[PodReplacement]) -> String {
    replaced
        .iter()
        .map(|r| {
            format!(
                "replaced pod {} ({} at revision {} while rolling out {})",
                r.pod, r.reason, r.revision, r.update_revision
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8sworker_proto::v1::ComponentRef;

    fn mk_outcome(kind: &str, action: Action, outcome: Outcome, uid: &str) -> StepOutcome {
        StepOutcome {
            component: Some(ComponentRef {
                kind: kind.into(),
                name: "orders".into(),
                ..Default::default()
            }),
            action: action as i32,
            outcome: outcome as i32,
            uid: uid.into(),
            ..Default::default()
        }
    }

    fn mk_plan(operation: Operation) -> Plan {
        Plan {
            operation: operation as i32,
            ..Default::default()
        }
    }

    #[test]
    fn only_a_deploy_with_its_statefulset_in_place_replaces() {
        let updated = [
            mk_outcome("ConfigMap", Action::Update, Outcome::Applied, "cm"),
            mk_outcome("StatefulSet", Action::Update, Outcome::Applied, "sts"),
        ];
        let deploy = mk_plan(Operation::Deploy);
        assert_eq!(owner(&deploy, &updated).as_deref(), Some("sts"));
        let unchanged = [mk_outcome(
            "StatefulSet",
            Action::Noop,
            Outcome::Unchanged,
            "sts",
        )];
        assert_eq!(owner(&deploy, &unchanged).as_deref(), Some("sts"));
        for operation in [
            Operation::Restart,
            Operation::Shutdown,
            Operation::Undeploy,
            Operation::Verify,
        ] {
            assert_eq!(owner(&mk_plan(operation), &updated), None, "{operation:?}");
        }
        for outcome in [
            mk_outcome("StatefulSet", Action::Update, Outcome::Failed, "sts"),
            mk_outcome("StatefulSet", Action::Update, Outcome::Skipped, ""),
            mk_outcome("StatefulSet", Action::Delete, Outcome::Applied, "sts"),
            mk_outcome("StatefulSet", Action::Create, Outcome::Applied, ""),
        ] {
            assert_eq!(
                owner(&deploy, std::slice::from_ref(&outcome)),
                None,
                "{outcome:?}"
            );
        }
        assert_eq!(owner(&deploy, &[]), None);
    }

    #[test]
    fn the_description_names_pod_reason_and_revisions() {
        let replaced = PodReplacement {
            pod: "orders-2".into(),
            uid: "u".into(),
            revision: "orders-r2".into(),
            update_revision: "orders-r3".into(),
            reason: "ImagePullBackOff".into(),
            message: String::new(),
        };
        assert_eq!(
            describe(&[replaced.clone(), replaced]),
            "replaced pod orders-2 (ImagePullBackOff at revision orders-r2 while rolling out \
             orders-r3); replaced pod orders-2 (ImagePullBackOff at revision orders-r2 while \
             rolling out orders-r3)"
        );
    }
}
