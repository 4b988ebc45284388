//! One operation carried out through a namespace's executor: observe →
//! plan → apply, re-planning a bounded number of times when the executor
//! finds the plan stale. Written once, here; the gRPC service, the test
//! support and the cluster tests all call [`execute`].
//!
//! ```text
//! observe(names, references) ─▶ verify? ─▶ Verified(verdict)
//!        │                       deploy: missing references? ─▶ refused
//!        ▼
//!   Work::plan ─▶ apply ─▶ Ack ─▶ observe again ─▶ Applied
//!        ▲           │ stale (FAILED_PRECONDITION, a stale Ack, no Ack)
//!        └───────────┘ at most MAX_REPLANS times
//! ```
//!
//! What the loop needs from an executor is the [`Executor`] trait, in domain
//! types; [`crate::grpc_executor`] implements it over gRPC, and the unit
//! tests below with a fake.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use k8sworker_core::component::ComponentId;
use k8sworker_core::diff::{Observed, PlanError};
use k8sworker_core::operation::{MissingReferences, Verdict, Work, missing_references};
use k8sworker_core::plan::{Operation, Plan};
use tracing::{info, warn};

/// How many times [`execute`] re-observes and re-plans after a stale plan:
/// at most `MAX_REPLANS + 1` attempts in all.
pub const MAX_REPLANS: usize = 3;

/// What an executor observed of one installation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// The objects named, and every object carrying the installation's labels.
    pub components: Vec<Observed>,
    /// Which of the references asked about exist.
    pub existing_references: Vec<ComponentId>,
}

/// How an executor answered one Apply.
#[derive(Debug)]
pub enum Applied<A> {
    /// The executor acknowledged the plan, successfully or with an error
    /// other than staleness (which the caller reports).
    Acked(A),
    /// The plan was stale: a precondition no longer held, found before any
    /// write or by a write the API server refused as a conflict (so earlier
    /// steps of the plan may have been applied). The message says what.
    Stale(String),
    /// The executor ended the apply without an acknowledgement.
    NoAck,
}

/// What the planner needs from a namespace's executor. Implementations
/// carry their own transport; `Ack` and `Logs` are handed back to the
/// caller untouched.
pub trait Executor {
    /// An executor's acknowledgement of an applied plan.
    type Ack;
    /// Fetched pod logs.
    type Logs;
    /// Why a call failed.
    type Error;

    /// Observes `installation` in `namespace`: the objects `names` and every
    /// object carrying its labels, and which of `references` exist.
    fn observe(
        &mut self,
        namespace: &str,
        installation: &str,
        names: &[ComponentId],
        references: &[ComponentId],
    ) -> impl Future<Output = Result<Observation, Self::Error>> + Send;

    /// Applies `plan`, waiting at most `health_timeout` for the installation
    /// to become healthy.
    fn apply(
        &mut self,
        plan: &Plan,
        health_timeout: Duration,
    ) -> impl Future<Output = Result<Applied<Self::Ack>, Self::Error>> + Send;

    /// Fetches the logs of the installation's pods (or of `pod` alone).
    fn fetch_logs(
        &mut self,
        namespace: &str,
        installation: &str,
        pod: Option<&str>,
    ) -> impl Future<Output = Result<Self::Logs, Self::Error>> + Send;
}

/// What an operation came to.
#[derive(Debug)]
pub enum Executed<A, L> {
    /// A plan was applied (deploy, undeploy, shutdown, restart).
    Applied {
        /// The plan the executor acknowledged.
        plan: Plan,
        /// Its acknowledgement (which may carry an error, e.g. unhealthy).
        ack: A,
        /// What the executor observed after the apply.
        after: Vec<Observed>,
    },
    /// The installation was verified.
    Verified {
        /// Drift and missing references.
        verdict: Verdict,
        /// What the executor observed.
        observed: Vec<Observed>,
    },
    /// Logs were fetched.
    Logs(L),
}

/// Why an operation was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E> {
    /// A deploy refers to objects that do not exist; nothing more was
    /// applied (an earlier attempt that went stale may have applied part of
    /// its plan).
    #[error(transparent)]
    MissingReferences(MissingReferences),
    /// No plan could be computed (objects not ours in the way, …); nothing
    /// more was applied (as above).
    #[error(transparent)]
    Plan(PlanError),
    /// The executor failed.
    #[error("{0}")]
    Executor(E),
    /// No attempt was acknowledged: every plan went stale (something kept
    /// changing the installation's objects between observe and apply, or an
    /// object is being deleted) or its apply ended without an Ack.
    #[error(
        "gave up after {attempts} attempts: the plan went stale {stale} times and the apply ended without an acknowledgement {unacknowledged} times; the last: {last}"
    )]
    Exhausted {
        /// How many plans were computed and sent.
        attempts: usize,
        /// How many of them went stale.
        stale: usize,
        /// How many applies ended without an Ack.
        unacknowledged: usize,
        /// What the last attempt came to.
        last: String,
    },
}

/// The pause before re-plan `n` (1, 2, 3): `REPLAN_BACKOFF × n`, so that a
/// writer racing the apply (the StatefulSet controller updating status) or
/// an object finishing its deletion has time to settle.
pub const REPLAN_BACKOFF: Duration = Duration::from_millis(100);

/// Observes `work`'s installation through `executor`, as [`execute`] does
/// before it plans: the input of a live plan preview (nothing is applied).
///
/// # Errors
/// The executor's error, or a deploy whose referenced objects are missing
/// ([`ExecuteError::MissingReferences`]).
pub async fn observe<X>(
    work: &Work,
    executor: &mut X,
) -> Result<Vec<Observed>, ExecuteError<X::Error>>
where
    X: Executor,
{
    let observed = executor
        .observe(
            work.namespace(),
            work.name(),
            &work.names(),
            &work.references,
        )
        .await
        .map_err(ExecuteError::Executor)?;
    let missing = missing_references(&work.references, &observed.existing_references);
    work.check_references(&missing)
        .map_err(ExecuteError::MissingReferences)?;
    Ok(observed.components)
}

/// Carries out `work` through `executor`; see the module docs for the flow.
/// `work` was validated when it was made, so a bad request never reaches
/// this function.
///
/// # Errors
/// [`ExecuteError`]: a refusal before any apply (missing references, no
/// plan), the executor's error, or no acknowledged apply in the
/// `MAX_REPLANS + 1` attempts.
pub async fn execute<X>(
    work: &Work,
    executor: &mut X,
    health_timeout: Duration,
    pod: Option<&str>,
) -> Result<Executed<X::Ack, X::Logs>, ExecuteError<X::Error>>
where
    X: Executor,
    X::Error: fmt::Display,
{
    let (namespace, name) = (work.namespace(), work.name());
    if work.operation == Operation::FetchLogs {
        let logs = executor
            .fetch_logs(namespace, name, pod)
            .await
            .map_err(ExecuteError::Executor)?;
        return Ok(Executed::Logs(logs));
    }

    let names = work.names();
    let (mut stale, mut unacknowledged) = (0, 0);
    for attempt in 1..=MAX_REPLANS + 1 {
        if attempt > 1 {
            tokio::time::sleep(REPLAN_BACKOFF * (attempt as u32 - 1)).await;
        }
        let observed = executor
            .observe(namespace, name, &names, &work.references)
            .await
            .map_err(ExecuteError::Executor)?;
        let missing = missing_references(&work.references, &observed.existing_references);
        if work.operation == Operation::Verify {
            let verdict = work.verify(&observed.components, missing);
            info!(
                drift = verdict.drift.len() + verdict.missing_references.len(),
                "verified"
            );
            return Ok(Executed::Verified {
                verdict,
                observed: observed.components,
            });
        }
        work.check_references(&missing)
            .map_err(ExecuteError::MissingReferences)?;

        let plan = work
            .plan(&observed.components)
            .map_err(ExecuteError::Plan)?;
        info!(plan = %plan.id, steps = plan.steps.len(), writes = plan.writes().count(), attempt, "planned");
        crate::metrics::planned(&plan);
        let last = match executor
            .apply(&plan, health_timeout)
            .await
            .map_err(ExecuteError::Executor)?
        {
            Applied::Acked(ack) => {
                // A failed observe here loses the Ack: the caller retries,
                // and the retry's plan is all no-ops.
                let after = executor
                    .observe(namespace, name, &[], &[])
                    .await
                    .map_err(ExecuteError::Executor)?;
                return Ok(Executed::Applied {
                    plan,
                    ack,
                    after: after.components,
                });
            }
            Applied::Stale(message) => {
                stale += 1;
                warn!(plan = %plan.id, %message, attempt, "stale plan");
                format!("stale: {message}")
            }
            Applied::NoAck => {
                unacknowledged += 1;
                warn!(plan = %plan.id, attempt, "the apply ended without an acknowledgement");
                "the apply ended without an acknowledgement".to_owned()
            }
        };
        if attempt == MAX_REPLANS + 1 {
            return Err(ExecuteError::Exhausted {
                attempts: attempt,
                stale,
                unacknowledged,
                last,
            });
        }
    }
    unreachable!("the loop returns on its last attempt")
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use k8sworker_core::component::Kind;
    use k8sworker_core::model::InstallationRequest;
    use k8sworker_core::owner::Tenant;
    use k8sworker_core::render::{Ancillaries, ClusterContext};
    use serde_json::json;

    use super::*;

    /// A fake executor: answers observes with `observed`, applies with the
    /// scripted answers in order, and records every call.
    #[derive(Default)]
    struct Fake {
        observed: Observation,
        answers: VecDeque<Applied<&'static str>>,
        observes: usize,
        applied: Vec<Plan>,
        logs_fetched: usize,
    }

    impl Executor for Fake {
        type Ack = &'static str;
        type Logs = &'static str;
        type Error = String;

        async fn observe(
            &mut self,
            _namespace: &str,
            _installation: &str,
            _names: &[ComponentId],
            _references: &[ComponentId],
        ) -> Result<Observation, String> {
            self.observes += 1;
            Ok(self.observed.clone())
        }

        async fn apply(
            &mut self,
            plan: &Plan,
            _health_timeout: Duration,
        ) -> Result<Applied<&'static str>, String> {
            self.applied.push(plan.clone());
            Ok(self.answers.pop_front().expect("an answer is scripted"))
        }

        async fn fetch_logs(
            &mut self,
            _namespace: &str,
            _installation: &str,
            _pod: Option<&str>,
        ) -> Result<&'static str, String> {
            self.logs_fetched += 1;
            Ok("logs")
        }
    }

    fn mk_work(operation: Operation, extra: &[serde_json::Value]) -> Work {
        let mut config = vec![json!({"type": "image", "name": "registry.example.com/app:1"})];
        config.extend(extra.iter().cloned());
        let request = InstallationRequest::from_json(
            &json!({"name": "app", "k8sNamespace": "ns", "config": config}),
        )
        .expect("valid request");
        Work::new(
            operation,
            request,
            &ClusterContext {
                tenant: Some(Tenant::new("acme", "prod").unwrap()),
                ..ClusterContext::default()
            },
            &Ancillaries::default(),
        )
        .expect("valid work")
    }

    fn mk_stale() -> Applied<&'static str> {
        Applied::Stale("precondition failed".to_owned())
    }

    /// Runs `execute` on a paused clock, so the backoff between attempts
    /// takes no real time.
    fn run(
        work: &Work,
        fake: &mut Fake,
    ) -> Result<Executed<&'static str, &'static str>, ExecuteError<String>> {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a test runtime")
            .block_on(execute(work, fake, Duration::from_secs(1), None))
    }

    #[test]
    fn a_fresh_deploy_is_planned_applied_and_observed_again() {
        let work = mk_work(Operation::Deploy, &[]);
        let mut fake = Fake {
            answers: [Applied::Acked("ack")].into(),
            ..Fake::default()
        };
        let Executed::Applied { plan, ack, .. } = run(&work, &mut fake).expect("applied") else {
            panic!("not applied");
        };
        assert_eq!(ack, "ack");
        assert_eq!(plan.steps.len(), work.desired.len());
        assert_eq!(fake.applied.len(), 1);
        assert_eq!(fake.observes, 2, "before the plan and after the apply");
    }

    #[test]
    fn stale_or_unacknowledged_then_success_re_plans() {
        let work = mk_work(Operation::Deploy, &[]);
        let mut fake = Fake {
            answers: [
                mk_stale(),
                Applied::NoAck,
                mk_stale(),
                Applied::Acked("ack"),
            ]
            .into(),
            ..Fake::default()
        };
        let Executed::Applied { ack, .. } = run(&work, &mut fake).expect("applied") else {
            panic!("not applied");
        };
        assert_eq!(ack, "ack");
        assert_eq!(fake.applied.len(), MAX_REPLANS + 1);
        assert_eq!(
            fake.observes,
            MAX_REPLANS + 2,
            "one observe per attempt, one after"
        );
    }

    #[test]
    fn stale_on_every_attempt_is_a_clear_error() {
        let work = mk_work(Operation::Deploy, &[]);
        let mut fake = Fake {
            answers: std::iter::repeat_with(mk_stale)
                .take(MAX_REPLANS + 1)
                .collect(),
            ..Fake::default()
        };
        let error = run(&work, &mut fake).expect_err("stale every time");
        assert!(
            matches!(
                error,
                ExecuteError::Exhausted {
                    attempts: 4,
                    stale: 4,
                    unacknowledged: 0,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "gave up after 4 attempts: the plan went stale 4 times and the apply ended without \
             an acknowledgement 0 times; the last: stale: precondition failed"
        );
        assert_eq!(fake.applied.len(), MAX_REPLANS + 1, "never a fifth apply");
    }

    #[test]
    fn mixed_failures_are_counted_each_by_its_kind() {
        let work = mk_work(Operation::Deploy, &[]);
        let mut fake = Fake {
            answers: [Applied::NoAck, Applied::NoAck, Applied::NoAck, mk_stale()].into(),
            ..Fake::default()
        };
        let error = run(&work, &mut fake).expect_err("no success");
        assert_eq!(
            error.to_string(),
            "gave up after 4 attempts: the plan went stale 1 times and the apply ended without \
             an acknowledgement 3 times; the last: stale: precondition failed"
        );
    }

    #[test]
    fn attempts_are_spaced_by_a_growing_backoff() {
        let work = mk_work(Operation::Deploy, &[]);
        let mut fake = Fake {
            answers: std::iter::repeat_with(|| Applied::NoAck)
                .take(MAX_REPLANS + 1)
                .collect(),
            ..Fake::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let waited = runtime.block_on(async {
            let started = tokio::time::Instant::now();
            let _ = execute(&work, &mut fake, Duration::from_secs(1), None).await;
            started.elapsed()
        });
        // 100 + 200 + 300 ms of (paused, virtual) time between the 4 attempts.
        assert_eq!(waited, REPLAN_BACKOFF * 6);
    }

    #[test]
    fn an_object_in_the_way_is_refused_without_an_apply() {
        let work = mk_work(Operation::Deploy, &[]);
        let mut fake = Fake {
            observed: Observation {
                components: vec![Observed {
                    id: ComponentId::new(Kind::StatefulSet, "app"),
                    uid: "u".to_owned(),
                    resource_version: "1".to_owned(),
                    spec_hash: None,
                    owner: None,
                    owner_record: None,
                    replicas: Some(1),
                    ready_replicas: Some(1),
                    foreign_managers: Vec::new(),
                    immutable: Default::default(),
                    foreign_fields: Vec::new(),
                }],
                existing_references: Vec::new(),
            },
            ..Fake::default()
        };
        let error = run(&work, &mut fake).expect_err("refused");
        assert!(
            matches!(error, ExecuteError::Plan(PlanError::NotOwned(_))),
            "{error:?}"
        );
        assert!(fake.applied.is_empty(), "nothing applied");
    }

    #[test]
    fn a_deploy_with_a_missing_reference_is_refused_without_an_apply() {
        let work = mk_work(
            Operation::Deploy,
            &[
                json!({"type": "environmentVariable", "name": "PASSWORD", "secretName": "db", "key": "password"}),
            ],
        );
        let mut fake = Fake::default();
        let error = run(&work, &mut fake).expect_err("refused");
        let ExecuteError::MissingReferences(missing) = error else {
            panic!("{error:?}");
        };
        assert_eq!(missing.missing, [ComponentId::new(Kind::Secret, "db")]);
        assert!(fake.applied.is_empty(), "nothing applied");
    }

    #[test]
    fn verify_reports_missing_components_and_references_without_an_apply() {
        let work = mk_work(
            Operation::Verify,
            &[
                json!({"type": "environmentVariable", "name": "PASSWORD", "secretName": "db", "key": "password"}),
            ],
        );
        let mut fake = Fake::default();
        let Executed::Verified { verdict, .. } = run(&work, &mut fake).expect("verified") else {
            panic!("not verified");
        };
        assert_eq!(
            verdict.drift.len(),
            work.desired.len(),
            "every component missing"
        );
        assert_eq!(
            verdict.missing_references,
            [ComponentId::new(Kind::Secret, "db")]
        );
        assert!(fake.applied.is_empty());
    }

    #[test]
    fn fetch_logs_only_fetches() {
        let work = mk_work(Operation::FetchLogs, &[]);
        let mut fake = Fake::default();
        let Executed::Logs(logs) = run(&work, &mut fake).expect("logs") else {
            panic!("no logs");
        };
        assert_eq!(logs, "logs");
        assert_eq!(
            (fake.observes, fake.applied.len(), fake.logs_fetched),
            (0, 0, 1)
        );
    }
}
