//! [`Executor`] over gRPC: a namespace's executor as the `k8sworker.v1`
//! `Executor` service, with the current span's trace context on every call.
//! Conversions go through `k8sworker_proto::convert`; deciding is left to
//! [`crate::execute`].

use std::time::Duration;

use k8sworker_core::component::ComponentId;
use k8sworker_core::plan::Plan;
use k8sworker_proto::convert;
use k8sworker_proto::v1 as pb;
use k8sworker_proto::v1::executor_client::ExecutorClient;
use tonic::Status;
use tonic::transport::Channel;

use crate::execute::{Applied, Executor, Observation};

/// One Apply as the executor streamed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Acknowledged {
    /// One event per step, as each finished.
    pub steps: Vec<pb::StepOutcome>,
    /// The final acknowledgement.
    pub ack: pb::Ack,
}

/// A namespace's executor reached over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcExecutor {
    client: ExecutorClient<k8sworker_telemetry::GrpcClientChannel>,
    wait_for_health: bool,
}

impl GrpcExecutor {
    /// An executor on `channel`; applies wait for health.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: ExecutorClient::new(k8sworker_telemetry::grpc_client_channel(channel)),
            wait_for_health: true,
        }
    }

    /// Connects to the executor at `endpoint` (`http://host:port`).
    ///
    /// # Errors
    /// An invalid endpoint or a failed connection.
    pub async fn connect(
        endpoint: String,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self::new(Channel::from_shared(endpoint)?.connect().await?))
    }

    /// Whether an Apply waits for the installation to become healthy
    /// (default `true`).
    pub fn wait_for_health(mut self, wait: bool) -> Self {
        self.wait_for_health = wait;
        self
    }

    /// Applies a wire plan as it is (tests use this to send plans the
    /// planner would never compute). A refusal before any write is the
    /// executor's gRPC status.
    ///
    /// # Errors
    /// The executor's status, or `ABORTED` when the stream ends without an Ack.
    pub async fn apply_wire(
        &mut self,
        plan: pb::Plan,
        health_timeout: Duration,
    ) -> Result<Acknowledged, Status> {
        self.stream(plan, health_timeout)
            .await?
            .ok_or_else(|| Status::aborted("the executor ended the apply stream without an Ack"))
    }

    /// Sends one Apply and reads its stream; `None` when it ends without an Ack.
    async fn stream(
        &mut self,
        plan: pb::Plan,
        health_timeout: Duration,
    ) -> Result<Option<Acknowledged>, Status> {
        let mut stream = self
            .client
            .apply(pb::ApplyRequest {
                plan: Some(plan),
                wait_for_health: self.wait_for_health,
                health_timeout_seconds: u32::try_from(health_timeout.as_secs()).unwrap_or(u32::MAX),
            })
            .await?
            .into_inner();
        let mut steps = Vec::new();
        while let Some(pb::ApplyEvent { event }) = stream.message().await? {
            match event {
                Some(pb::apply_event::Event::Step(step)) => steps.push(step),
                Some(pb::apply_event::Event::Ack(ack)) => {
                    return Ok(Some(Acknowledged { steps, ack }));
                }
                None => {}
            }
        }
        Ok(None)
    }
}

impl Executor for GrpcExecutor {
    type Ack = Acknowledged;
    type Logs = Vec<pb::PodLog>;
    type Error = Status;

    async fn observe(
        &mut self,
        namespace: &str,
        installation: &str,
        names: &[ComponentId],
        references: &[ComponentId],
    ) -> Result<Observation, Status> {
        let refs = |ids: &[ComponentId]| -> Vec<pb::ComponentRef> {
            ids.iter()
                .map(|id| convert::component_ref(id, namespace))
                .collect()
        };
        let observed = self
            .client
            .observe(pb::ObserveRequest {
                namespace: namespace.to_owned(),
                installation: installation.to_owned(),
                names: refs(names),
                references: refs(references),
            })
            .await?
            .into_inner();
        let nonsense = |e: convert::ConvertError| {
            Status::internal(format!("the executor answered nonsense: {e}"))
        };
        Ok(Observation {
            components: observed
                .components
                .into_iter()
                .map(convert::observed_from_pb)
                .collect::<Result<_, _>>()
                .map_err(nonsense)?,
            // Only references that were asked about count; anything else the
            // executor names is ignored.
            existing_references: references
                .iter()
                .filter(|id| {
                    observed
                        .existing_references
                        .iter()
                        .any(|r| r.kind == id.kind.as_str() && r.name == id.name)
                })
                .cloned()
                .collect(),
        })
    }

    async fn apply(
        &mut self,
        plan: &Plan,
        health_timeout: Duration,
    ) -> Result<Applied<Acknowledged>, Status> {
        match self.stream(convert::plan_to_pb(plan), health_timeout).await {
            Ok(Some(acknowledged)) => match acknowledged.ack.error.as_ref() {
                Some(error) if error.code == pb::ErrorCode::StalePlan as i32 => {
                    Ok(Applied::Stale(error.message.clone()))
                }
                _ => Ok(Applied::Acked(acknowledged)),
            },
            Ok(None) => Ok(Applied::NoAck),
            // Staleness is the protocol's error code in the status details,
            // not the gRPC code: FAILED_PRECONDITION also carries refusals a
            // person must act on (an object not ours), which are not re-planned.
            Err(status) => match stale_refusal(&status) {
                Some(message) => Ok(Applied::Stale(message)),
                None => Err(status),
            },
        }
    }

    async fn fetch_logs(
        &mut self,
        namespace: &str,
        installation: &str,
        pod: Option<&str>,
    ) -> Result<Vec<pb::PodLog>, Status> {
        Ok(self
            .client
            .fetch_logs(pb::FetchLogsRequest {
                namespace: namespace.to_owned(),
                installation: installation.to_owned(),
                pod_name: pod.map(str::to_owned),
                limit_bytes: 0,
            })
            .await?
            .into_inner()
            .logs)
    }
}

/// The message of a refusal whose details carry the protocol's
/// `ERROR_CODE_STALE_PLAN`; `None` for any other status.
fn stale_refusal(status: &Status) -> Option<String> {
    use prost::Message as _;
    let error = pb::Error::decode(status.details()).ok()?;
    (error.code == pb::ErrorCode::StalePlan as i32).then_some(error.message)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use tonic::Code;

    use super::*;

    fn mk_refusal(code: pb::ErrorCode) -> Status {
        let error = pb::Error {
            code: code as i32,
            message: "why".to_owned(),
            components: Vec::new(),
        };
        Status::with_details(
            Code::FailedPrecondition,
            "refused",
            error.encode_to_vec().into(),
        )
    }

    #[test]
    fn only_the_stale_plan_code_is_a_stale_refusal() {
        assert_eq!(
            stale_refusal(&mk_refusal(pb::ErrorCode::StalePlan)),
            Some("why".to_owned())
        );
        assert_eq!(stale_refusal(&mk_refusal(pb::ErrorCode::NotOwned)), None);
        assert_eq!(
            stale_refusal(&Status::failed_precondition("no details")),
            None
        );
    }
}
