//! Applying a plan whose preconditions hold: the writes, the health wait,
//! and the Ack.
//!
//! Steps run strictly in the plan's order, one API write each (none for a
//! NOOP, two for an UPDATE that takes fields over, below), and each finished step is streamed at once. Every write repeats
//! its precondition on the server, so a change that slipped in after the
//! check fails that step with a conflict instead of being overwritten:
//!
//! - CREATE and UPDATE are server-side apply (field manager `k8sworker`,
//!   forced); an UPDATE carries the expected `resourceVersion`. An UPDATE
//!   that removes a subtree in which another manager owns a field (a probe
//!   whose `timeoutSeconds` someone patched) is the one step with two
//!   writes: first a merge patch of `managedFields`, bound to the expected
//!   `resourceVersion`, moves those fields to `k8sworker`; then the apply,
//!   bound to the version that patch produced, removes the subtree whole.
//!   Server-side apply removes only fields the applier alone owns, and an
//!   apply may not set `managedFields`, so no single write can do both.
//! - DELETE carries `Preconditions{uid, resourceVersion}`. A StatefulSet is
//!   deleted with foreground propagation: it stays (with a deletion
//!   timestamp) until its pods are gone, so an absent StatefulSet in the
//!   health wait means nothing of it is left running, and a redeploy under
//!   the same name cannot meet the old pods. Other kinds have no dependents
//!   worth waiting for and are deleted in the background: gone at once.
//! - SCALE patches the StatefulSet's scale subresource with the expected
//!   `resourceVersion`.
//!
//! The first failed step ends the writes; the rest are reported SKIPPED.
//! One Kubernetes Event on the StatefulSet records a plan that wrote (pods
//! replaced during a deploy's health wait included) or failed.

use std::time::Duration;

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{Event, EventSource, ObjectReference},
    },
    apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time},
};
use k8sworker_core::labels;
use k8sworker_core::managed::Handover;
use k8sworker_proto::v1::{
    Ack, Action, ApplyEvent, Health, HealthState, Outcome, Plan, StepOutcome, apply_event,
};
use kube::{
    Api, Client,
    api::{
        DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
        PropagationPolicy,
    },
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::{
    Error,
    error::{api_status, describe},
    health::{self, Assessment, Target},
    kinds::{self, Kind},
    plan::{CheckedStep, Expectation},
    rollout,
};

/// Where step events go; a gone receiver (the caller hung up) does not stop
/// the plan, because stopping half-way would leave more to repair.
pub(crate) type Events = mpsc::Sender<Result<ApplyEvent, tonic::Status>>;

/// Applies `steps` (checked, preconditions held), waits for health when
/// `health_timeout` is set, and returns the Ack.
pub(crate) async fn execute(
    client: &Client,
    plan: &Plan,
    steps: &[CheckedStep],
    health_timeout: Option<Duration>,
    events: &Events,
) -> Ack {
    let mut outcomes = Vec::with_capacity(steps.len());
    let mut error = None;
    for step in steps {
        let outcome = if error.is_some() {
            skipped(step)
        } else {
            match write_step(client, step).await {
                Ok(outcome) => outcome,
                Err(failure) => {
                    let outcome = StepOutcome {
                        outcome: Outcome::Failed as i32,
                        message: failure.to_string(),
                        ..skipped(step)
                    };
                    error = Some(failure);
                    outcome
                }
            }
        };
        let _ = events
            .send(Ok(ApplyEvent {
                event: Some(apply_event::Event::Step(outcome.clone())),
            }))
            .await;
        outcomes.push(outcome);
    }

    let mut target = health_target(plan, steps);
    target.roll_forward = rollout::owner(plan, &outcomes);
    let health = match (&error, health_timeout) {
        (None, Some(timeout)) => {
            let assessment = health::wait(client.clone(), &plan.namespace, &target, timeout)
                .instrument(tracing::info_span!("health", statefulset = %target.statefulset, desired = target.desired_replicas))
                .await;
            match assessment {
                Assessment::Settled(health) => health,
                Assessment::Failed(health, summary) => {
                    error = Some(Error::Unhealthy {
                        installation: plan.installation.clone(),
                        summary,
                    });
                    health
                }
                Assessment::Waiting(health, progress) => {
                    error = Some(Error::Timeout {
                        installation: plan.installation.clone(),
                        seconds: timeout.as_secs(),
                        progress,
                    });
                    health
                }
            }
        }
        _ => Health {
            state: HealthState::Unspecified as i32,
            desired_replicas: plan.desired_replicas,
            ..Default::default()
        },
    };

    let ack = Ack {
        plan_id: plan.id.clone(),
        steps: outcomes,
        health: Some(health),
        error: error.as_ref().map(Error::to_proto),
    };
    let wrote = ack
        .steps
        .iter()
        .any(|s| s.outcome == Outcome::Applied as i32)
        || ack.health.as_ref().is_some_and(|h| !h.replaced.is_empty());
    if wrote || error.is_some() {
        record_event(client, plan, &target, &ack).await;
    }
    ack
}

fn skipped(step: &CheckedStep) -> StepOutcome {
    StepOutcome {
        index: step.index,
        component: Some(step.component.clone()),
        action: step.action as i32,
        outcome: Outcome::Skipped as i32,
        message: String::new(),
        resource_version: String::new(),
        uid: String::new(),
    }
}

/// The StatefulSet the plan is about: its own StatefulSet step, else the
/// installation's name (the StatefulSet is always named after it).
fn health_target(plan: &Plan, steps: &[CheckedStep]) -> Target {
    let statefulset = steps.iter().find(|s| s.kind == Kind::StatefulSet);
    Target {
        installation: plan.installation.clone(),
        statefulset: statefulset
            .map(|s| s.component.name.clone())
            .unwrap_or_else(|| plan.installation.clone()),
        desired_replicas: plan.desired_replicas,
        expect_absent: statefulset.is_some_and(|s| s.action == Action::Delete),
        roll_forward: None,
    }
}

async fn write_step(client: &Client, step: &CheckedStep) -> Result<StepOutcome, Error> {
    let span = tracing::info_span!(
        "step",
        otel.name = %format!("{} {}", step.action.as_str_name().trim_start_matches("ACTION_"), describe(&step.component)),
        k8s.step = step.index,
        k8s.action = step.action.as_str_name(),
        k8s.kind = %step.component.kind,
        k8s.name = %step.component.name,
        outcome = tracing::field::Empty,
    );
    let result = write(client, step).instrument(span.clone()).await;
    let outcome = match &result {
        Ok(outcome) => Outcome::try_from(outcome.outcome)
            .map(|o| o.as_str_name())
            .unwrap_or("?"),
        Err(_) => "OUTCOME_FAILED",
    };
    span.record("outcome", outcome);
    if let Err(error) = &result {
        span.in_scope(|| tracing::warn!(%error, "step failed"));
    }
    result
}

/// Writes `entries` as the object's `managedFields` (a merge patch bound to
/// the expected resourceVersion: a changed object is a 409, a stale plan),
/// so that the apply that follows owns, and removes, the fields other
/// managers held inside subtrees it no longer renders. Returns the new
/// resourceVersion, which the apply then expects.
async fn hand_over(
    api: &Api<DynamicObject>,
    step: &CheckedStep,
    entries: &[ManagedFieldsEntry],
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
        ..Default::default()
    };
    let patched = api
        .patch(&step.component.name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::kube("take over fields of", describe(&step.component), source))?;
    Ok(patched.metadata.resource_version.unwrap_or_default())
}

async fn write(client: &Client, step: &CheckedStep) -> Result<StepOutcome, Error> {
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
                Some(handover) => Some(hand_over(&api, step, &handover.entries).await?),
                None => None,
            };
            let object = match &handed {
                Some(resource_version) => {
                    let mut object = object.clone();
                    object["metadata"]["resourceVersion"] = Value::from(resource_version.clone());
                    std::borrow::Cow::Owned(object)
                }
                None => std::borrow::Cow::Borrowed(object),
            };
            let params = PatchParams::apply(labels::MANAGER).force();
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
                propagation_policy: Some(propagation),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: Some(resource_version.clone()),
                }),
                ..DeleteParams::default()
            };
            match api.delete(&component.name, &params).await {
                Ok(_) => Ok(done(
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
            Ok(done(
                Outcome::Applied,
                format!("scaled to {replicas}"),
                scale.metadata.uid,
                scale.metadata.resource_version,
            ))
        }
    }
}

/// One Event on the StatefulSet so `kubectl describe` shows what k8sworker
/// did; failing to record it only costs a log line.
async fn record_event(client: &Client, plan: &Plan, target: &Target, ack: &Ack) {
    let count = |outcome: Outcome| {
        ack.steps
            .iter()
            .filter(|s| s.outcome == outcome as i32)
            .count()
    };
    let mut message = format!(
        "plan {} ({} steps): {} applied, {} unchanged, {} failed, {} skipped",
        plan.id,
        ack.steps.len(),
        count(Outcome::Applied),
        count(Outcome::Unchanged),
        count(Outcome::Failed),
        count(Outcome::Skipped),
    );
    if let Some(traceparent) = k8sworker_telemetry::current_traceparent() {
        message.push_str(&format!(" [traceparent {traceparent}]"));
    }
    if let Some(health) = &ack.health
        && !health.replaced.is_empty()
    {
        message.push_str("; ");
        message.push_str(&rollout::describe(&health.replaced));
    }
    if let Some(error) = &ack.error {
        message.push_str(": ");
        message.push_str(&error.message);
    }
    if message.len() > 1000 {
        let mut end = 1000;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    let uid = ack
        .steps
        .iter()
        .find(|s| {
            s.component
                .as_ref()
                .is_some_and(|c| c.kind == "StatefulSet" && c.name == target.statefulset)
        })
        .map(|s| s.uid.clone())
        .filter(|uid| !uid.is_empty());
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", target.statefulset)),
            namespace: Some(plan.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("StatefulSet".into()),
            name: Some(target.statefulset.clone()),
            namespace: Some(plan.namespace.clone()),
            uid,
            ..ObjectReference::default()
        },
        reason: Some(
            if ack.error.is_some() {
                "PlanFailed"
            } else {
                "PlanApplied"
            }
            .into(),
        ),
        message: Some(message),
        type_: Some(
            if ack.error.is_some() {
                "Warning"
            } else {
                "Normal"
            }
            .into(),
        ),
        source: Some(EventSource {
            component: Some("k8sworker-executor".into()),
            host: None,
        }),
        reporting_component: Some("k8sworker.io/executor".into()),
        reporting_instance: Some(
            std::env::var("HOSTNAME").unwrap_or_else(|_| "k8sworker-executor".into()),
        ),
        action: Some("Apply".into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &plan.namespace);
    if let Err(error) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(%error, "could not record the plan's Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{tests::*, validate};
    use k8sworker_core::policy::Policy;
    use k8sworker_proto::v1::Step;

    fn mk_delete_sts(name: &str) -> Step {
        Step {
            action: Action::Delete as i32,
            component: Some(mk_ref("apps/v1", "StatefulSet", name)),
            precondition: Some(k8sworker_proto::v1::Precondition {
                kind: Some(k8sworker_proto::v1::precondition::Kind::Expected(
                    k8sworker_proto::v1::ExpectedVersion {
                        uid: "u".into(),
                        resource_version: "1".into(),
                    },
                )),
            }),
            object_json: Vec::new(),
            replicas: None,
            reason: "undeploy".into(),
        }
    }

    use http::{Method, Request, Response, StatusCode};
    use k8sworker_proto::v1::{ErrorCode, ExpectedVersion, Precondition, precondition};
    use kube::client::Body;
    use serde_json::Value;
    use tower_test::mock;

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    fn mk_expected(uid: &str, rv: &str) -> Option<Precondition> {
        Some(Precondition {
            kind: Some(precondition::Kind::Expected(ExpectedVersion {
                uid: uid.into(),
                resource_version: rv.into(),
            })),
        })
    }

    /// The next request the mock API server receives, with its JSON body.
    async fn next(
        handle: &mut Handle,
    ) -> (Method, String, Value, mock::SendResponse<Response<Body>>) {
        let (request, respond) = handle.next_request().await.expect("a request");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (parts.method, parts.uri.to_string(), json, respond)
    }

    fn json_response(status: StatusCode, body: Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    fn conflict() -> Response<Body> {
        json_response(
            StatusCode::CONFLICT,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                   "message": "Precondition failed: UID in precondition: u2, UID in object meta: u3"}),
        )
    }

    /// Every write repeats its precondition on the server: the update carries
    /// the expected resourceVersion, the delete its uid and resourceVersion.
    /// A conflict the server reports (a change between check and write)
    /// fails that step as stale and skips the rest.
    #[tokio::test]
    async fn writes_carry_their_preconditions_and_a_conflict_stops_the_plan() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "ns-a");
        let delete = Step {
            action: Action::Delete as i32,
            component: Some(mk_ref("v1", "Service", "svc")),
            precondition: mk_expected("u2", "7"),
            object_json: Vec::new(),
            replicas: None,
            reason: "removed".into(),
        };
        let scale = Step {
            action: Action::Scale as i32,
            component: Some(mk_ref("apps/v1", "StatefulSet", "inst")),
            precondition: mk_expected("u9", "9"),
            object_json: Vec::new(),
            replicas: Some(0),
            reason: "shutdown".into(),
        };
        let mut update = mk_create(&mk_config_map("c", "inst"));
        update.action = Action::Update as i32;
        update.precondition = mk_expected("u1", "5");
        let plan = mk_plan(vec![update, delete, scale]);
        let steps = validate(&plan, "ns-a", &Policy::default()).unwrap();
        let (events, mut stream) = mpsc::channel(8);
        let run = tokio::spawn(async move { execute(&client, &plan, &steps, None, &events).await });

        let (method, uri, body, respond) = next(&mut handle).await;
        assert_eq!(method, Method::PATCH);
        assert!(
            uri.starts_with("/api/v1/namespaces/ns-a/configmaps/c?"),
            "{uri}"
        );
        assert!(
            uri.contains("fieldManager=k8sworker") && uri.contains("force=true"),
            "{uri}"
        );
        assert_eq!(body["metadata"]["resourceVersion"], json!("5"));
        assert_eq!(body["metadata"]["namespace"], json!("ns-a"));
        let mut applied = body.clone();
        applied["metadata"]["uid"] = json!("u1");
        applied["metadata"]["resourceVersion"] = json!("6");
        respond.send_response(json_response(StatusCode::OK, applied));

        let (method, uri, body, respond) = next(&mut handle).await;
        assert_eq!(method, Method::DELETE);
        assert_eq!(uri, "/api/v1/namespaces/ns-a/services/svc?");
        assert_eq!(body["propagationPolicy"], json!("Background"));
        assert_eq!(
            body["preconditions"],
            json!({"uid": "u2", "resourceVersion": "7"})
        );
        respond.send_response(conflict());

        // No scale: the next request is the plan's Event.
        let (method, uri, body, respond) = next(&mut handle).await;
        assert_eq!(
            (method, uri.as_str()),
            (Method::POST, "/api/v1/namespaces/ns-a/events?")
        );
        assert_eq!(body["reason"], json!("PlanFailed"));
        respond.send_response(json_response(StatusCode::CREATED, body));

        let ack = run.await.unwrap();
        let outcomes: Vec<_> = ack
            .steps
            .iter()
            .map(|s| Outcome::try_from(s.outcome).unwrap())
            .collect();
        assert_eq!(
            outcomes,
            [Outcome::Applied, Outcome::Failed, Outcome::Skipped]
        );
        assert_eq!(ack.steps[0].resource_version, "6");
        let error = ack.error.unwrap();
        assert_eq!(error.code, ErrorCode::StalePlan as i32, "{error:?}");
        assert!(
            error.message.contains("Service ns-a/svc"),
            "{}",
            error.message
        );
        let mut streamed = 0;
        while let Ok(Ok(_)) = stream.try_recv() {
            streamed += 1;
        }
        assert_eq!(streamed, 3, "one event per step");
    }

    #[tokio::test]
    async fn scale_goes_through_the_subresource_with_the_expected_version() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "ns-a");
        let plan = mk_plan(vec![Step {
            action: Action::Scale as i32,
            component: Some(mk_ref("apps/v1", "StatefulSet", "inst")),
            precondition: mk_expected("u9", "9"),
            object_json: Vec::new(),
            replicas: Some(0),
            reason: "shutdown".into(),
        }]);
        let steps = validate(&plan, "ns-a", &Policy::default()).unwrap();
        let (events, _stream) = mpsc::channel(8);
        let run = tokio::spawn(async move { execute(&client, &plan, &steps, None, &events).await });

        let (method, uri, body, respond) = next(&mut handle).await;
        assert_eq!(method, Method::PATCH);
        assert!(
            uri.starts_with("/apis/apps/v1/namespaces/ns-a/statefulsets/inst/scale?"),
            "{uri}"
        );
        assert!(uri.contains("fieldManager=k8sworker"), "{uri}");
        assert_eq!(
            body,
            json!({"metadata": {"resourceVersion": "9"}, "spec": {"replicas": 0}})
        );
        respond.send_response(json_response(
            StatusCode::OK,
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                   "metadata": {"name": "inst", "namespace": "ns-a", "uid": "u9", "resourceVersion": "10"},
                   "spec": {"replicas": 0}}),
        ));
        let (_, uri, _, respond) = next(&mut handle).await;
        assert!(uri.starts_with("/api/v1/namespaces/ns-a/events"), "{uri}");
        respond.send_response(json_response(StatusCode::CREATED, json!({})));

        let ack = run.await.unwrap();
        assert_eq!(ack.error, None);
        assert_eq!(ack.steps[0].outcome, Outcome::Applied as i32);
        assert_eq!(ack.steps[0].resource_version, "10");
    }

    #[test]
    fn health_target_follows_the_statefulset_step() {
        let plan = mk_plan(vec![
            mk_create(&mk_config_map("c", "inst")),
            mk_delete_sts("custom-name"),
        ]);
        let steps = validate(&plan, "ns-a", &Policy::default()).unwrap();
        let target = health_target(&plan, &steps);
        assert_eq!(target.statefulset, "custom-name");
        assert!(target.expect_absent);

        let plan = mk_plan(vec![mk_create(&mk_config_map("c", "inst"))]);
        let steps = validate(&plan, "ns-a", &Policy::default()).unwrap();
        let target = health_target(&plan, &steps);
        assert_eq!(target.statefulset, "inst");
        assert!(!target.expect_absent);
        assert_eq!(target.desired_replicas, 1);
    }
}
