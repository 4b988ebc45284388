//! A namespace with the executor's identity and a running executor.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Pod, Secret, Service},
    networking::v1::Ingress,
};
use k8sworker_core::labels;
use k8sworker_core::plan::Operation;
use k8sworker_executor::calls::ApiCall;
use k8sworker_planner::execute::{ExecuteError, Executed};
use k8sworker_proto::convert;
use k8sworker_proto::v1::{self, Outcome, executor_client::ExecutorClient};
use k8sworker_testsupport::{
    ExecutorIdentity, RunningExecutor,
    plans::{self, Applied, GrpcExecutor},
};
use kube::{Api, Client, ResourceExt as _, api::ListParams};
use prost::Message as _;
use serde_json::Value;
use tonic::transport::Channel;

pub struct Fixture {
    pub admin: Client,
    pub namespace: String,
    pub identity: ExecutorIdentity,
    pub executor: RunningExecutor,
    pub grpc: ExecutorClient<Channel>,
    /// The executor as the planner reaches it.
    pub planner_side: GrpcExecutor,
}

impl Fixture {
    /// The executor's identity from deploy/rbac in `namespace`, and an
    /// executor running with its token.
    pub async fn new(admin: Client, namespace: String) -> Self {
        let identity = ExecutorIdentity::create(&admin, &namespace).await;
        let executor = RunningExecutor::for_identity(&identity).await;
        let grpc = executor.client().await;
        let planner_side = executor.executor().await;
        Fixture {
            admin,
            namespace,
            identity,
            executor,
            grpc,
            planner_side,
        }
    }

    /// Replaces the executor by a fresh one (same identity).
    pub async fn restart_executor(&mut self) {
        self.executor = RunningExecutor::for_identity(&self.identity).await;
        self.grpc = self.executor.client().await;
        self.planner_side = self.executor.executor().await;
    }

    /// Replaces the executor by one with this configuration (same identity).
    pub async fn restart_executor_with(&mut self, config: k8sworker_executor::ExecutorConfig) {
        self.executor = RunningExecutor::start(self.identity.config().await, config).await;
        self.grpc = self.executor.client().await;
        self.planner_side = self.executor.executor().await;
    }

    pub fn calls(&self) -> BTreeMap<ApiCall, u64> {
        self.executor.calls().snapshot()
    }

    pub async fn plan(&mut self, request: &Value, operation: Operation) -> v1::Plan {
        plans::plan(&mut self.planner_side, request, operation).await
    }

    pub async fn apply(&mut self, plan: &v1::Plan, wait: bool) -> Result<Applied, tonic::Status> {
        plans::apply(&mut self.planner_side, plan, wait).await
    }

    /// Plans and applies through the planner's own `execute`: a plan refused
    /// as stale (the StatefulSet controller writing status between the
    /// observe and the apply bumps the resourceVersion) is re-planned, at
    /// most `MAX_REPLANS` times. The plan is the one finally applied.
    pub async fn plan_and_apply(
        &mut self,
        request: &Value,
        operation: Operation,
        wait: bool,
    ) -> (v1::Plan, Result<Applied, tonic::Status>) {
        let mut executor = self.planner_side.clone().wait_for_health(wait);
        match plans::execute(&mut executor, request, operation).await {
            Ok(Executed::Applied { plan, ack, .. }) => (convert::plan_to_pb(&plan), Ok(ack)),
            Ok(other) => panic!("{operation} applied no plan: {other:?}"),
            Err(ExecuteError::Executor(status)) => (v1::Plan::default(), Err(status)),
            Err(error @ ExecuteError::Exhausted { .. }) => (
                v1::Plan::default(),
                Err(tonic::Status::aborted(error.to_string())),
            ),
            Err(error) => panic!("{operation} was refused: {error}"),
        }
    }

    /// Plans `operation`, applies it waiting for health, and asserts it
    /// succeeded; returns the Ack and the API calls it took.
    pub async fn run(&mut self, request: &Value, operation: Operation) -> (Applied, Calls) {
        let before = self.calls();
        let (plan, applied) = self.plan_and_apply(request, operation, true).await;
        let applied = applied.unwrap_or_else(|status| panic!("{operation} refused: {status:?}"));
        let calls = Calls::between(&before, &self.calls());
        assert_eq!(applied.ack.error, None, "{operation} failed");
        assert_eq!(applied.steps.len(), plan.steps.len(), "one event per step");
        (applied, calls)
    }

    /// Every object carrying the installation's labels: (kind, name) → uid.
    pub async fn owned(&self, installation: &str) -> BTreeMap<(String, String), String> {
        let params = ListParams::default().labels(&labels::selector(installation));
        let mut owned = BTreeMap::new();
        macro_rules! list {
            ($kind:ty, $name:expr) => {
                let items = Api::<$kind>::namespaced(self.admin.clone(), &self.namespace)
                    .list_metadata(&params)
                    .await
                    .expect("list")
                    .items;
                for item in items {
                    owned.insert(
                        ($name.to_string(), item.name_any()),
                        item.uid().unwrap_or_default(),
                    );
                }
            };
        }
        list!(ConfigMap, "ConfigMap");
        list!(Secret, "Secret");
        list!(Service, "Service");
        list!(StatefulSet, "StatefulSet");
        list!(Ingress, "Ingress");
        owned
    }

    pub async fn pods(&self, installation: &str) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.admin.clone(), &self.namespace)
            .list(
                &ListParams::default().labels(&format!("{}={installation}", labels::INSTALLATION)),
            )
            .await
            .expect("list pods")
            .items
    }

    pub async fn statefulset(&self, name: &str) -> Option<StatefulSet> {
        Api::<StatefulSet>::namespaced(self.admin.clone(), &self.namespace)
            .get_opt(name)
            .await
            .expect("get statefulset")
    }
}

/// API calls made between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calls(pub BTreeMap<ApiCall, u64>);

impl Calls {
    pub fn between(before: &BTreeMap<ApiCall, u64>, after: &BTreeMap<ApiCall, u64>) -> Self {
        Calls(
            after
                .iter()
                .map(|(call, n)| (call.clone(), n - before.get(call).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn writes(&self) -> u64 {
        self.count(ApiCall::is_write)
    }

    /// Writes sent as server-side dry runs: counted apart, never persisted.
    pub fn dry_runs(&self) -> u64 {
        self.count(ApiCall::is_dry_run)
    }

    fn count(&self, which: fn(&ApiCall) -> bool) -> u64 {
        self.0
            .iter()
            .filter(|(c, _)| which(c))
            .map(|(_, n)| n)
            .sum()
    }

    /// Prints the calls of `operation`, for the record.
    pub fn report(&self, operation: &str) {
        let list: Vec<String> = self.0.iter().map(|(c, n)| format!("{c}={n}")).collect();
        eprintln!(
            "API calls for {operation}: {} total, {} writes, {} dry runs: {}",
            self.total(),
            self.writes(),
            self.dry_runs(),
            list.join(", ")
        );
    }
}

/// The protocol error in a refusal's status details.
pub fn error_of(status: &tonic::Status) -> v1::Error {
    v1::Error::decode(status.details()).unwrap_or_else(|e| panic!("no Error in {status:?}: {e}"))
}

pub fn outcomes(applied: &Applied) -> BTreeSet<Outcome> {
    applied
        .ack
        .steps
        .iter()
        .map(|s| Outcome::try_from(s.outcome).unwrap())
        .collect()
}

pub fn actions(plan: &v1::Plan) -> Vec<(v1::Action, String)> {
    plan.steps
        .iter()
        .map(|s| {
            (
                v1::Action::try_from(s.action).unwrap(),
                s.component
                    .as_ref()
                    .map(|c| format!("{} {}", c.kind, c.name))
                    .unwrap_or_default(),
            )
        })
        .collect()
}

pub fn health_state(applied: &Applied) -> v1::HealthState {
    v1::HealthState::try_from(applied.ack.health.as_ref().expect("health").state).unwrap()
}
