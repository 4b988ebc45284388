//! The planner's shutdown: in-flight Execute calls may finish within the
//! grace period; past it the planner stops anyway. The executor here is a
//! gRPC server whose Observe answers only when the test lets it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use k8sworker_core::owner::Tenant;
use k8sworker_core::validate::parse_and_validate;
use k8sworker_planner::service::{self, ExecutorDirectory, PlannerService, Stopped};
use k8sworker_proto::convert::installation_to_pb;
use k8sworker_proto::v1 as pb;
use k8sworker_proto::v1::executor_server::{Executor, ExecutorServer};
use k8sworker_proto::v1::planner_client::PlannerClient;
use k8sworker_tls::Identity;
use k8sworker_tls::generate::Pki;
use serde_json::json;
use tokio::sync::{Notify, oneshot};
use tonic::{Request, Response, Status};

/// An executor whose Observe waits for `release`, and says when it started.
struct HeldExecutor {
    started: Arc<Notify>,
    release: Arc<Notify>,
}

#[tonic::async_trait]
impl Executor for HeldExecutor {
    async fn observe(
        &self,
        _request: Request<pb::ObserveRequest>,
    ) -> Result<Response<pb::ObserveResponse>, Status> {
        self.started.notify_one();
        self.release.notified().await;
        Ok(Response::new(pb::ObserveResponse::default()))
    }

    type ApplyStream = Pin<Box<dyn Stream<Item = Result<pb::ApplyEvent, Status>> + Send>>;

    async fn apply(
        &self,
        _request: Request<pb::ApplyRequest>,
    ) -> Result<Response<Self::ApplyStream>, Status> {
        Err(Status::unimplemented("not needed"))
    }

    async fn fetch_logs(
        &self,
        _request: Request<pb::FetchLogsRequest>,
    ) -> Result<Response<pb::FetchLogsResponse>, Status> {
        Err(Status::unimplemented("not needed"))
    }
}

struct Running {
    _certs: tempfile::TempDir,
    started: Arc<Notify>,
    release: Arc<Notify>,
    stop: oneshot::Sender<()>,
    planner: PlannerClient<tonic::transport::Channel>,
    served: tokio::task::JoinHandle<Result<Stopped, tonic::transport::Error>>,
}

async fn start(grace: Duration) -> Running {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path()).unwrap();
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let executor = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let executor_address = executor.local_addr().unwrap();
    let executor_tls = pki.tls(&Identity::executor("team-a")).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ExecutorServer::new(HeldExecutor {
                started: started.clone(),
                release: release.clone(),
            }))
            .serve_with_incoming(k8sworker_tls::incoming(executor, Some(executor_tls))),
    );
    let directory = ExecutorDirectory {
        explicit: [("team-a".to_owned(), format!("http://{executor_address}"))].into(),
        template: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(service::serve(
        listener,
        PlannerService::new(
            directory,
            Duration::from_secs(5),
            Some(pki.tls(&Identity::Planner).unwrap()),
        ),
        async {
            let _ = stopped.await;
        },
        grace,
    ));
    let gateway = pki
        .tls(&Identity::gateway(Tenant::new("acme", "c1").unwrap()))
        .unwrap();
    let planner = PlannerClient::new(k8sworker_tls::channel(
        tonic::transport::Endpoint::from_shared(format!("https://{address}")).unwrap(),
        Some(&gateway),
        Identity::Planner,
    ));
    Running {
        _certs: certs,
        started,
        release,
        stop,
        planner,
        served,
    }
}

fn verify_request() -> pb::ExecuteRequest {
    let request = parse_and_validate(&json!({"name": "app", "k8sNamespace": "team-a", "config": [
        {"type": "image", "name": "nginx"},
    ]}))
    .unwrap();
    pb::ExecuteRequest {
        workitem_id: "w1".into(),
        installation: Some(installation_to_pb(&request)),
        operation: pb::Operation::Verify.into(),
        tenant: Some(pb::Tenant {
            vantiq_namespace: "acme".into(),
            cluster: "c1".into(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_execute_in_flight_finishes_within_the_grace_period() {
    let running = start(Duration::from_secs(30)).await;
    let mut planner = running.planner.clone();
    let call = tokio::spawn(async move { planner.execute(verify_request()).await });
    running.started.notified().await;

    running.stop.send(()).unwrap();
    // The planner no longer accepts calls, but the one in flight goes on.
    tokio::task::yield_now().await;
    running.release.notify_one();

    let answer = call.await.unwrap().expect("the call in flight is answered");
    assert!(
        !answer.into_inner().drift.is_empty(),
        "verify of an installation that does not exist reports it missing"
    );
    let stopped = running.served.await.unwrap().expect("served");
    assert_eq!(stopped, Stopped::Drained);
    drop(running.planner);
}

#[tokio::test]
async fn past_the_grace_period_the_planner_stops_anyway() {
    let running = start(Duration::from_millis(300)).await;
    let mut planner = running.planner.clone();
    let call = tokio::spawn(async move { planner.execute(verify_request()).await });
    running.started.notified().await;

    running.stop.send(()).unwrap();
    let stopped = running.served.await.unwrap().expect("served");
    assert_eq!(stopped, Stopped::GraceExpired);
    let status = call.await.unwrap().expect_err("cut off");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("shutdown grace ran out"),
        "{status:?}"
    );
    // The executor is never released: nothing waits for it.
    drop(running.release);
}
