//! Applying a plan whose preconditions hold: the writes, the health wait,
//! and the Ack. Each step's request is made by [`crate::write`].
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
//! Before the first write, the all-or-nothing check ([`dry_run::check`]:
//! the pods against the namespace's ResourceQuotas, then every write as a
//! server-side dry run, in one wave) refuses a plan the API server would
//! refuse part-way: the refused steps are reported FAILED with the server's
//! reason, the others SKIPPED, and nothing is written. A write that still
//! fails after its dry run passed (a race) ends the writes; the rest are
//! reported SKIPPED, and the Ack's error names what was written before it.
//! One Kubernetes Event on the StatefulSet records a plan that wrote (pods
//! replaced during a deploy's health wait included) or failed after writing
//! began.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::Time,
};
use k8sworker_proto::v1::{
    Ack, Action, ApplyEvent, Health, HealthState, Outcome, Plan, StepOutcome, apply_event,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use futures::StreamExt as _;

use crate::{
    Error,
    cache::Cache,
    error::{Problem, describe},
    health::{self, Assessment, Target},
    kinds::Kind,
    plan::CheckedStep,
    rollout,
    write::{self, Mode},
};

/// Where step events go; a gone receiver (the caller hung up) does not stop
/// the plan, because stopping half-way would leave more to repair.
pub(crate) type Events = mpsc::Sender<Result<ApplyEvent, tonic::Status>>;

/// The all-or-nothing check ([`dry_run::check`]) before the first write.
#[derive(Debug)]
pub(crate) enum Check {
    /// No check (`--dry-run-wave=false`).
    Skip,
    /// Run it here, first (the apply's own tests).
    #[cfg(test)]
    Run,
    /// Already run; its result.
    Done(Result<BTreeMap<u32, String>, Error>),
}

/// Applies `steps` (checked, preconditions held) in [`waves`], waits for
/// health when `health_timeout` is set, and returns the Ack. After the
/// all-or-nothing `check`, a refusal ends the plan with nothing written (not
/// even its Event). Every persisted write's result goes into `cache`.
pub(crate) async fn execute(
    client: &Client,
    cache: &Cache,
    plan: &Plan,
    steps: &[CheckedStep],
    health_timeout: Option<Duration>,
    check: Check,
    events: &Events,
) -> Ack {
    let writing = std::time::Instant::now();
    let checked = match check {
        Check::Skip => Ok(BTreeMap::new()),
        #[cfg(test)]
        Check::Run => crate::dry_run::check(client, cache, steps).await,
        Check::Done(result) => result,
    };
    let notes = match checked {
        Ok(notes) => notes,
        Err(refusal) => return refused(plan, steps, refusal, events).await,
    };
    // Step events go out in the plan's order, each as soon as it and every
    // step before it finished.
    let mut done: Vec<Option<StepOutcome>> = vec![None; steps.len()];
    let mut sent = 0;
    let mut failures: Vec<(usize, Error)> = Vec::new();
    for wave in waves(steps) {
        if !failures.is_empty() {
            break;
        }
        let writes = wave.into_iter().map(|at| {
            let step = &steps[at];
            async move { (at, write_step(client, cache, step).await) }
        });
        let mut finished = futures::stream::iter(writes).buffer_unordered(WAVE_CONCURRENCY);
        while let Some((at, result)) = finished.next().await {
            let step = &steps[at];
            let outcome = match result {
                Ok(mut outcome) => {
                    if let Some(note) = notes.get(&step.index) {
                        outcome.message = format!("{}; {note}", outcome.message);
                    }
                    outcome
                }
                Err(failure) => {
                    let outcome = StepOutcome {
                        outcome: Outcome::Failed as i32,
                        message: failure.to_string(),
                        ..skipped(step)
                    };
                    failures.push((at, failure));
                    outcome
                }
            };
            done[at] = Some(outcome);
            sent = stream_finished(&done, sent, events).await;
        }
    }
    let outcomes: Vec<StepOutcome> = steps
        .iter()
        .zip(done)
        .map(|(step, outcome)| outcome.unwrap_or_else(|| skipped(step)))
        .collect();
    for outcome in &outcomes[sent..] {
        let _ = events
            .send(Ok(ApplyEvent {
                event: Some(apply_event::Event::Step(outcome.clone())),
            }))
            .await;
    }
    crate::metrics::applied(writing.elapsed(), failures.is_empty());
    failures.sort_by_key(|(at, _)| *at);
    let mut error = failures
        .into_iter()
        .next()
        .map(|(_, failure)| partly_written(failure, &outcomes));

    let mut target = health_target(plan, steps);
    target.roll_forward = rollout::owner(plan, &outcomes);
    let wrote_nothing = outcomes
        .iter()
        .all(|o| o.outcome == Outcome::Unchanged as i32);
    let known = match (&error, health_timeout) {
        (None, Some(_)) if wrote_nothing => known_in_cache(cache, &target),
        _ => None,
    };
    let health = match (&error, health_timeout) {
        (None, Some(timeout)) => {
            let assessment = match known {
                Some(known) => known,
                None => {
                    health::wait(client.clone(), &plan.namespace, &target, timeout)
                        .instrument(tracing::info_span!("health", statefulset = %target.statefulset, desired = target.desired_replicas))
                        .await
                }
            };
            match assessment {
                Assessment::Settled(health) => {
                    // The wait saw the deleted StatefulSet gone; the cache
                    // must not answer older than that.
                    if target.expect_absent
                        && let Some(uid) = deleted_statefulset(&outcomes, &target)
                    {
                        cache.deleted(Kind::StatefulSet, &target.statefulset, uid);
                    }
                    health
                }
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

/// The uid of the StatefulSet the plan deleted, when it did.
fn deleted_statefulset<'a>(outcomes: &'a [StepOutcome], target: &Target) -> Option<&'a str> {
    outcomes
        .iter()
        .find(|o| {
            o.action == Action::Delete as i32
                && o.component
                    .as_ref()
                    .is_some_and(|c| c.kind == "StatefulSet" && c.name == target.statefulset)
        })
        .map(|o| o.uid.as_str())
        .filter(|uid| !uid.is_empty())
}

/// Sends the events of the finished steps from `sent` on, up to the first
/// unfinished one; returns how many are sent now.
async fn stream_finished(done: &[Option<StepOutcome>], mut sent: usize, events: &Events) -> usize {
    while let Some(Some(outcome)) = done.get(sent) {
        let _ = events
            .send(Ok(ApplyEvent {
                event: Some(apply_event::Event::Step(outcome.clone())),
            }))
            .await;
        sent += 1;
    }
    sent
}

/// A write failure, with what the plan wrote before it when it wrote
/// anything: the objects are there, and the next plan starts from them.
fn partly_written(failure: Error, outcomes: &[StepOutcome]) -> Error {
    let written: Vec<String> = outcomes
        .iter()
        .filter(|o| o.outcome == Outcome::Applied as i32)
        .filter_map(|o| {
            let component = o.component.as_ref()?;
            let done = o.message.split(';').next().unwrap_or_default();
            Some(format!("{} ({done})", describe(component)))
        })
        .collect();
    if written.is_empty() {
        failure
    } else {
        Error::PartlyWritten {
            written,
            source: Box::new(failure),
        }
    }
}

/// The Ack of a plan the all-or-nothing check refused: every step reported
/// (the refused ones FAILED with the server's reason, the others SKIPPED),
/// nothing written, no Event (there is nothing to describe).
async fn refused(plan: &Plan, steps: &[CheckedStep], refusal: Error, events: &Events) -> Ack {
    let problems: Vec<Problem> = match &refusal {
        Error::DryRunRefused { refused, .. } => refused.clone(),
        Error::QuotaExceeded(problems) => problems.clone(),
        _ => Vec::new(),
    };
    let mut outcomes = Vec::with_capacity(steps.len());
    for step in steps {
        let problem = problems.iter().find(|p| {
            p.component.kind == step.component.kind && p.component.name == step.component.name
        });
        let outcome = match problem {
            Some(problem) => StepOutcome {
                outcome: Outcome::Failed as i32,
                message: problem.detail.clone(),
                ..skipped(step)
            },
            None => StepOutcome {
                message: "not written: the plan was refused before its first write".into(),
                ..skipped(step)
            },
        };
        let _ = events
            .send(Ok(ApplyEvent {
                event: Some(apply_event::Event::Step(outcome.clone())),
            }))
            .await;
        outcomes.push(outcome);
    }
    Ack {
        plan_id: plan.id.clone(),
        steps: outcomes,
        health: Some(Health {
            state: HealthState::Unspecified as i32,
            desired_replicas: plan.desired_replicas,
            ..Default::default()
        }),
        error: Some(refusal.to_proto()),
    }
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

/// Writes in flight at once within a wave; the shared client-side rate
/// limit paces them further.
pub const WAVE_CONCURRENCY: usize = 8;

/// The plan's steps (positions in `steps`) in dependency waves, each in
/// the plan's order: what a wave writes does not depend on anything in the
/// same wave, and everything it depends on is in an earlier one.
///
/// Creates and updates: ConfigMaps, Secrets and the headless Service
/// (`clusterIP: None`; the StatefulSet names it), then the StatefulSet
/// (its pods mount those), then the port Services and Ingresses (which
/// route to the pods). Deletes go the other way round: what routes to the
/// pods first, then the StatefulSet, then what its pods mount. A NOOP is
/// placed like a write of its kind; it sends nothing.
pub fn waves(steps: &[CheckedStep]) -> Vec<Vec<usize>> {
    let rank = |step: &CheckedStep| -> usize {
        let headless = step
            .object
            .as_ref()
            .and_then(|object| object.pointer("/spec/clusterIP"))
            .and_then(serde_json::Value::as_str)
            == Some("None");
        let rank = match step.kind {
            Kind::ConfigMap | Kind::Secret | Kind::PersistentVolumeClaim => 0,
            Kind::Service if headless => 0,
            Kind::StatefulSet => 1,
            Kind::Service | Kind::Ingress => 2,
        };
        if step.action == Action::Delete {
            2 - rank
        } else {
            rank
        }
    };
    let mut waves = vec![Vec::new(); 3];
    for (at, step) in steps.iter().enumerate() {
        waves[rank(step)].push(at);
    }
    waves.retain(|wave| !wave.is_empty());
    waves
}

/// The health of a plan that wrote nothing, from the cache's StatefulSet
/// and pods, when that settles it: ready at the desired replicas and
/// current, or absent when absence is the aim, or failing (a pod that will
/// not start), unless the wait would replace failing pods of a previous
/// revision. `None` (the health wait decides, with its own watches) for
/// anything else, a stopped StatefulSet included.
fn known_in_cache(cache: &Cache, target: &Target) -> Option<Assessment> {
    let entry = cache.get(Kind::StatefulSet, &target.statefulset);
    let statefulset = entry.as_ref().and_then(|e| e.statefulset.as_ref());
    let pods = match statefulset {
        Some(_) if target.desired_replicas == 0 => return None,
        Some(statefulset) => {
            cache.pods(&health::pod_selector(statefulset, &target.installation))?
        }
        None => Vec::new(),
    };
    match health::assess(target, statefulset, &pods) {
        Assessment::Waiting(..) => None,
        Assessment::Failed(..) if target.roll_forward.is_some() => None,
        known => Some(known),
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

async fn write_step(
    client: &Client,
    cache: &Cache,
    step: &CheckedStep,
) -> Result<StepOutcome, Error> {
    let span = tracing::info_span!(
        "step",
        otel.name = %format!("{} {}", step.action.as_str_name().trim_start_matches("ACTION_"), describe(&step.component)),
        k8s.step = step.index,
        k8s.action = step.action.as_str_name(),
        k8s.kind = %step.component.kind,
        k8s.name = %step.component.name,
        outcome = tracing::field::Empty,
    );
    let result = write::send(client, step, Mode::Persist, Some(cache))
        .instrument(span.clone())
        .await;
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
    use serde_json::json;

    /// Runs `execute` in a task with an empty cache and no health wait.
    fn spawn_execute(
        client: Client,
        plan: Plan,
        steps: Vec<CheckedStep>,
        check: Check,
        events: Events,
    ) -> tokio::task::JoinHandle<Ack> {
        tokio::spawn(async move {
            execute(
                &client,
                &Cache::empty(),
                &plan,
                &steps,
                None,
                check,
                &events,
            )
            .await
        })
    }

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

    /// Each step's outcome, in order.
    fn outcomes(ack: &Ack) -> Vec<Outcome> {
        ack.steps
            .iter()
            .map(|s| Outcome::try_from(s.outcome).unwrap())
            .collect()
    }

    /// The events streamed so far.
    fn streamed(stream: &mut mpsc::Receiver<Result<ApplyEvent, tonic::Status>>) -> usize {
        let mut streamed = 0;
        while let Ok(Ok(_)) = stream.try_recv() {
            streamed += 1;
        }
        streamed
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
        let run = spawn_execute(client, plan, steps, Check::Skip, events);

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
        assert_eq!(
            outcomes(&ack),
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
        assert_eq!(streamed(&mut stream), 3, "one event per step");
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
        let run = spawn_execute(client, plan, steps, Check::Skip, events);

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

    /// The all-or-nothing check: every write goes out as a dry run first,
    /// at once; one refusal fails the plan, names the object and the
    /// server's reason once, and nothing is written, not even the Event.
    #[tokio::test]
    async fn a_dry_run_refusal_fails_the_plan_with_nothing_written() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "ns-a");
        let plan = mk_plan(vec![
            mk_create(&mk_config_map("a", "inst")),
            mk_create(&mk_config_map("b", "inst")),
        ]);
        let steps = validate(&plan, "ns-a", &Policy::default()).unwrap();
        let (events, mut stream) = mpsc::channel(8);
        let run = spawn_execute(client, plan, steps, Check::Run, events);

        // Both dry runs are in flight before either is answered: one wave.
        let first = next(&mut handle).await;
        let second = next(&mut handle).await;
        for (method, uri, body, respond) in [first, second] {
            assert_eq!(method, Method::PATCH);
            assert!(uri.contains("dryRun=All"), "{uri}");
            let name = body["metadata"]["name"].as_str().unwrap().to_owned();
            respond.send_response(if name == "b" {
                json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                           "message": "ConfigMap \"b\" is invalid: data: Too long"}),
                )
            } else {
                json_response(StatusCode::OK, body)
            });
        }

        let ack = run.await.unwrap();
        assert!(
            handle.next_request().await.is_none(),
            "no persisted write and no Event follow a refused dry run"
        );
        let error = ack.error.clone().unwrap();
        assert_eq!(error.code, ErrorCode::KubernetesApi as i32);
        assert_eq!(
            error.message,
            "plan refused by the API server's dry run, nothing written: ConfigMap ns-a/b \
             (create: ConfigMap \"b\" is invalid: data: Too long (HTTP 422 Invalid))"
        );
        assert_eq!(error.components.len(), 1);
        assert_eq!(error.components[0].name, "b");
        assert_eq!(outcomes(&ack), [Outcome::Skipped, Outcome::Failed]);
        assert_eq!(streamed(&mut stream), 2, "one event per step");
    }

    /// An admission webhook with side effects refuses every dry run; that
    /// write is not refused for it but written unchecked, and its step
    /// says so.
    #[tokio::test]
    async fn a_webhook_that_cannot_dry_run_leaves_its_write_unchecked_and_says_so() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "ns-a");
        let plan = mk_plan(vec![mk_create(&mk_config_map("a", "inst"))]);
        let steps = validate(&plan, "ns-a", &Policy::default()).unwrap();
        let (events, _stream) = mpsc::channel(8);
        let run = spawn_execute(client, plan, steps, Check::Run, events);

        let (_, uri, _, respond) = next(&mut handle).await;
        assert!(uri.contains("dryRun=All"), "{uri}");
        respond.send_response(json_response(
            StatusCode::BAD_REQUEST,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "BadRequest", "code": 400,
                   "message": "admission webhook \"audit.example.com\" does not support dry run"}),
        ));
        let (method, uri, body, respond) = next(&mut handle).await;
        assert_eq!(method, Method::PATCH);
        assert!(!uri.contains("dryRun"), "the real write: {uri}");
        let mut applied = body.clone();
        applied["metadata"]["uid"] = json!("u1");
        applied["metadata"]["resourceVersion"] = json!("1");
        respond.send_response(json_response(StatusCode::OK, applied));
        let (_, uri, _, respond) = next(&mut handle).await;
        assert!(uri.starts_with("/api/v1/namespaces/ns-a/events"), "{uri}");
        respond.send_response(json_response(StatusCode::CREATED, json!({})));

        let ack = run.await.unwrap();
        assert_eq!(ack.error, None);
        assert_eq!(ack.steps[0].outcome, Outcome::Applied as i32);
        assert_eq!(
            ack.steps[0].message,
            "created; not checked by a dry run first: admission webhook \"audit.example.com\" \
             does not support dry run (HTTP 400 BadRequest)"
        );
    }

    /// A DELETE's dry run carries `dryRun` where the API server reads it
    /// (the body's delete options) and where the call counter sees it (the
    /// query), with the step's preconditions; then the real delete follows.
    #[tokio::test]
    async fn a_delete_is_dry_run_with_its_preconditions_and_counted_apart() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let calls = crate::calls::ApiCalls::default();
        let service = tower::ServiceBuilder::new()
            .layer(crate::calls::CountLayer::new(vec![calls.clone()]))
            .service(service);
        let client = Client::new(service, "ns-a");
        let plan = mk_plan(vec![Step {
            action: Action::Delete as i32,
            component: Some(mk_ref("v1", "Service", "svc")),
            precondition: mk_expected("u2", "7"),
            object_json: Vec::new(),
            replicas: None,
            reason: "removed".into(),
        }]);
        let steps = validate(&plan, "ns-a", &Policy::default()).unwrap();
        let (events, _stream) = mpsc::channel(8);
        let run = spawn_execute(client, plan, steps, Check::Run, events);

        let gone = || {
            json_response(
                StatusCode::OK,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            )
        };
        let (method, uri, body, respond) = next(&mut handle).await;
        assert_eq!(
            (method, uri.as_str()),
            (
                Method::DELETE,
                "/api/v1/namespaces/ns-a/services/svc?dryRun=All"
            )
        );
        assert_eq!(body["dryRun"], json!(["All"]));
        assert_eq!(
            body["preconditions"],
            json!({"uid": "u2", "resourceVersion": "7"})
        );
        respond.send_response(gone());
        let (method, uri, body, respond) = next(&mut handle).await;
        assert_eq!(
            (method, uri.as_str()),
            (Method::DELETE, "/api/v1/namespaces/ns-a/services/svc?")
        );
        assert_eq!(body.get("dryRun"), None);
        respond.send_response(gone());
        let (_, uri, _, respond) = next(&mut handle).await;
        assert!(uri.starts_with("/api/v1/namespaces/ns-a/events"), "{uri}");
        respond.send_response(json_response(StatusCode::CREATED, json!({})));

        let ack = run.await.unwrap();
        assert_eq!(ack.error, None);
        assert_eq!(
            (calls.dry_runs(), calls.writes()),
            (1, 2),
            "{}",
            calls.summary()
        );
    }

    /// A write refused after earlier writes succeeded (the dry run passed,
    /// then something changed) names what was written.
    #[test]
    fn a_failure_after_writes_names_what_was_written() {
        let plan = mk_plan(vec![
            mk_create(&mk_config_map("a", "inst")),
            mk_create(&mk_config_map("b", "inst")),
        ]);
        let steps = validate(&plan, "ns-a", &Policy::default()).unwrap();
        let written = StepOutcome {
            outcome: Outcome::Applied as i32,
            message: "created; not checked by a dry run first: x".into(),
            ..skipped(&steps[0])
        };
        let refusal = kube::Error::Api(Box::new(kube::core::Status {
            code: 403,
            reason: "Forbidden".into(),
            message: "configmaps \"b\" is forbidden: exceeded quota: q".into(),
            ..Default::default()
        }));
        let failure = Error::kube("create", "ConfigMap ns-a/b", refusal);
        let error = partly_written(failure, &[written, skipped(&steps[1])]);
        assert_eq!(
            error.to_string(),
            "Kubernetes API call to create ConfigMap ns-a/b failed: configmaps \"b\" is forbidden: \
             exceeded quota: q (HTTP 403 Forbidden); written before it: ConfigMap ns-a/a (created); \
             deploy again to continue from there"
        );
        assert_eq!(error.code(), ErrorCode::KubernetesApi);
        let nothing = Error::invalid("x");
        assert!(matches!(
            partly_written(nothing, &[skipped(&steps[0])]),
            Error::Invalid { .. }
        ));
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
