//! The Planner gRPC service over a real loopback connection.

use std::time::Duration;

use k8sworker_core::owner::Tenant;
use k8sworker_core::validate::parse_and_validate;
use k8sworker_planner::service::{ExecutorDirectory, PlannerService};
use k8sworker_proto::convert::installation_to_pb;
use k8sworker_proto::v1 as pb;
use k8sworker_proto::v1::planner_client::PlannerClient;
use k8sworker_proto::v1::planner_server::PlannerServer;
use k8sworker_tls::Identity;
use k8sworker_tls::generate::Pki;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

/// A planner on loopback with its certificate (from a fresh CA), and
/// whatever certificates its callers need.
struct Served {
    address: std::net::SocketAddr,
    pki: Pki,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start(directory: ExecutorDirectory) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path()).unwrap();
        let tls = pki.tls(&Identity::Planner).unwrap();
        let address = serve(directory, Some(tls)).await;
        Served {
            address,
            pki,
            _dir: dir,
        }
    }

    /// A client presenting `identity`'s certificate.
    fn client(&self, identity: Identity) -> PlannerClient<Channel> {
        let tls = self.pki.tls(&identity).unwrap();
        PlannerClient::new(k8sworker_tls::channel(
            self.endpoint(),
            Some(&tls),
            Identity::Planner,
        ))
    }

    /// A TLS client presenting no certificate.
    fn anonymous(&self) -> PlannerClient<Channel> {
        let tls = self.pki.tls(&Identity::Preview).unwrap();
        PlannerClient::new(
            self.endpoint()
                .connect_with_connector_lazy(tls.anonymous_connector(Identity::Planner)),
        )
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("https://{}", self.address)).unwrap()
    }
}

async fn serve(
    directory: ExecutorDirectory,
    tls: Option<k8sworker_tls::Tls>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(k8sworker_telemetry::ServerTraceLayer::grpc())
            .add_service(PlannerServer::new(PlannerService::new(
                directory,
                Duration::from_secs(5),
                tls.clone(),
            )))
            .serve_with_incoming(k8sworker_tls::incoming(listener, tls)),
    );
    address
}

/// The gateway of the tests' tenant (`acme`/`c`) calling a planner with TLS.
async fn start(directory: ExecutorDirectory) -> PlannerClient<Channel> {
    let served = Served::start(directory).await;
    let client = served.client(Identity::gateway(gateway_tenant()));
    // Certificates are held in memory once loaded: the files may go.
    drop(served);
    client
}

/// A planner without TLS (loopback, `--insecure-plaintext`): nobody is
/// checked and the tenant is the one the request names.
async fn start_plaintext(directory: ExecutorDirectory) -> PlannerClient<Channel> {
    let address = serve(directory, None).await;
    PlannerClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

fn gateway_tenant() -> Tenant {
    Tenant::new("acme", "c").unwrap()
}

fn no_executors() -> ExecutorDirectory {
    ExecutorDirectory {
        explicit: Default::default(),
        template: None,
    }
}

fn installation() -> pb::InstallationRequest {
    let request = parse_and_validate(&json!({"name": "app", "k8sNamespace": "team-a", "config": [
        {"type": "image", "name": "nginx", "replicaCount": 2},
        {"type": "file", "path": "/conf", "filename": "a", "content": "1"},
    ]}))
    .unwrap();
    installation_to_pb(&request)
}

fn cluster() -> Option<pb::ClusterContext> {
    Some(pb::ClusterContext {
        cluster_name: "c".into(),
        ingress_default_node: "node".into(),
    })
}

fn tenant() -> Option<pb::Tenant> {
    Some(pb::Tenant {
        vantiq_namespace: "acme".into(),
        cluster: "c".into(),
    })
}

#[tokio::test]
async fn render_returns_the_components_in_dependency_order() {
    let mut client = start(no_executors()).await;
    let response = client
        .render(pb::RenderRequest {
            installation: Some(installation()),
            cluster: cluster(),
            tenant: tenant(),
            ancillaries: None,
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<String> = response
        .components
        .iter()
        .map(|c| {
            format!(
                "{}/{}",
                c.r#ref.as_ref().unwrap().kind,
                c.r#ref.as_ref().unwrap().name
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap/vantiq-app-configmap-0",
            "Service/app",
            "StatefulSet/app"
        ]
    );
    let sts: serde_json::Value =
        serde_json::from_slice(&response.components[2].object_json).unwrap();
    assert_eq!(sts["spec"]["replicas"], 2);
    assert_eq!(
        sts["metadata"]["annotations"]["k8sworker.io/spec-hash"],
        response.components[2].spec_hash
    );
}

#[tokio::test]
async fn plan_previews_without_side_effects() {
    let mut client = start(no_executors()).await;
    let request = pb::PlanRequest {
        installation: Some(installation()),
        cluster: cluster(),
        tenant: tenant(),
        ancillaries: None,
        operation: pb::Operation::Deploy.into(),
        observed: Vec::new(),
        live: false,
    };
    let first = client
        .plan(request.clone())
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    let second = client
        .plan(request)
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    assert_eq!(first.id, second.id, "the same inputs give the same plan id");
    assert_eq!(first.steps.len(), 3);
    assert!(
        first
            .steps
            .iter()
            .all(|s| s.action == pb::Action::Create as i32)
    );
    assert!(matches!(
        first.steps[0].precondition.as_ref().unwrap().kind,
        Some(pb::precondition::Kind::MustNotExist(_))
    ));
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_naming_every_field() {
    let mut client = start(no_executors()).await;
    let mut bad = installation();
    bad.name = "Bad Name".into();
    bad.config.push(pb::ConfigEntry {
        entry: Some(pb::config_entry::Entry::InboundPort(pb::InboundPortEntry {
            port: 0,
            protocol: "TCP".into(),
            ..Default::default()
        })),
    });
    let status = client
        .render(pb::RenderRequest {
            installation: Some(bad.clone()),
            cluster: cluster(),
            tenant: tenant(),
            ancillaries: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("name: `Bad Name`"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("config[2] (inboundPort).port"),
        "{}",
        status.message()
    );

    let status = client
        .execute(pb::ExecuteRequest {
            workitem_id: "w1".into(),
            installation: Some(bad),
            cluster: cluster(),
            tenant: tenant(),
            ancillaries: None,
            operation: pb::Operation::Deploy.into(),
            pod_name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "validated before any executor is contacted"
    );

    let status = client
        .plan(pb::PlanRequest {
            installation: Some(installation()),
            operation: 42,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("unknown operation 42"));
}

/// A deploy that would run as the executor's service account, or put its
/// pods behind k8sworker's own Services, is INVALID before anything is
/// planned (no executor is even looked up), naming entry and field.
#[tokio::test]
async fn system_identities_and_reserved_labels_are_invalid_before_any_plan() {
    let mut client = start(no_executors()).await;
    let mut executor_account = installation();
    let Some(pb::config_entry::Entry::Image(image)) = &mut executor_account.config[0].entry else {
        panic!("the first entry is the image");
    };
    image.service_account = Some("k8sworker-executor".into());
    let mut reserved_label = installation();
    reserved_label.config.push(pb::ConfigEntry {
        entry: Some(pb::config_entry::Entry::Label(pb::LabelEntry {
            name: "k8sworker.io/component".into(),
            value: "executor".into(),
            target_resource: None,
            controls_routing: Some(true),
        })),
    });
    for (installation, field) in [
        (
            executor_account,
            "config[0] (image).serviceAccount: `k8sworker-executor`",
        ),
        (
            reserved_label,
            "config[2] (label).name: `k8sworker.io/component` is reserved",
        ),
    ] {
        let status = client
            .execute(pb::ExecuteRequest {
                workitem_id: "w1".into(),
                installation: Some(installation.clone()),
                cluster: cluster(),
                tenant: tenant(),
                ancillaries: None,
                operation: pb::Operation::Deploy.into(),
                pod_name: None,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{}", status.message());
        let status = client
            .plan(pb::PlanRequest {
                installation: Some(installation),
                operation: pb::Operation::Deploy.into(),
                cluster: cluster(),
                tenant: tenant(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{}", status.message());
    }
}

/// A live plan observes through the namespace's executor, as Execute does:
/// it takes no `observed` of the caller's, and without an executor for the
/// namespace it says how to install one (and reaches nothing).
#[tokio::test]
async fn a_live_plan_observes_through_the_executor_only() {
    let mut client = start(no_executors()).await;
    let request = pb::PlanRequest {
        installation: Some(installation()),
        cluster: cluster(),
        tenant: tenant(),
        ancillaries: None,
        operation: pb::Operation::Deploy.into(),
        observed: Vec::new(),
        live: true,
    };
    let status = client.plan(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("no executor is installed for namespace `team-a`"),
        "{}",
        status.message()
    );
    let mut with_observed = request;
    with_observed
        .observed
        .push(pb::ObservedComponent::default());
    let status = client.plan(with_observed).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("send no `observed`"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_namespace_without_an_executor_says_how_to_install_one() {
    let mut client = start(no_executors()).await;
    let status = client
        .execute(pb::ExecuteRequest {
            workitem_id: "w1".into(),
            installation: Some(installation()),
            cluster: cluster(),
            tenant: tenant(),
            ancillaries: None,
            operation: pb::Operation::Deploy.into(),
            pod_name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("no executor is installed for namespace `team-a`"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("--executor team-a=URL"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn an_unreachable_executor_is_unavailable() {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let directory = ExecutorDirectory {
        explicit: [("team-a".to_owned(), format!("http://127.0.0.1:{port}"))].into(),
        template: None,
    };
    let mut client = start(directory).await;
    let status = client
        .execute(pb::ExecuteRequest {
            workitem_id: "w1".into(),
            installation: Some(installation()),
            cluster: cluster(),
            tenant: tenant(),
            ancillaries: None,
            operation: pb::Operation::Deploy.into(),
            pod_name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn every_operation_needs_a_valid_tenant_before_any_executor_is_contacted() {
    // No executor is configured: any attempt to reach one would fail with
    // another status than the tenant's. Without TLS the tenant is the
    // request's (with TLS a gateway's is its certificate's).
    let mut client = start_plaintext(no_executors()).await;
    for (tenant, expected) in [
        (None, "names no tenant"),
        (
            Some(pb::Tenant {
                vantiq_namespace: "acme".into(),
                cluster: String::new(),
            }),
            "tenant: cluster",
        ),
    ] {
        for operation in [pb::Operation::Deploy, pb::Operation::Undeploy] {
            let status = client
                .execute(pb::ExecuteRequest {
                    workitem_id: "w1".into(),
                    installation: Some(installation()),
                    cluster: cluster(),
                    tenant: tenant.clone(),
                    operation: operation.into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains(expected), "{status:?}");
        }
    }
    // A preview plan needs one too; a render does not (it writes no record).
    let status = client
        .plan(pb::PlanRequest {
            installation: Some(installation()),
            cluster: cluster(),
            operation: pb::Operation::Deploy.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let rendered = client
        .render(pb::RenderRequest {
            installation: Some(installation()),
            cluster: cluster(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        rendered
            .components
            .iter()
            .all(|c| !String::from_utf8_lossy(&c.object_json).contains("k8sworker.io/owner"))
    );
}

fn execute_request(tenant: Option<pb::Tenant>) -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        workitem_id: "w1".into(),
        installation: Some(installation()),
        cluster: cluster(),
        tenant,
        operation: pb::Operation::Deploy.into(),
        ..Default::default()
    }
}

fn plan_request() -> pb::PlanRequest {
    pb::PlanRequest {
        installation: Some(installation()),
        cluster: cluster(),
        tenant: tenant(),
        operation: pb::Operation::Deploy.into(),
        ..Default::default()
    }
}

fn render_request(tenant: Option<pb::Tenant>) -> pb::RenderRequest {
    pb::RenderRequest {
        installation: Some(installation()),
        cluster: cluster(),
        tenant,
        ancillaries: None,
    }
}

// An executor is configured at a loopback port nobody listens on: a call
// that got past the caller's check would fail UNAVAILABLE, not with the
// refusal asserted.
fn unreachable_executor() -> ExecutorDirectory {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    ExecutorDirectory {
        explicit: [("team-a".to_owned(), format!("http://127.0.0.1:{port}"))].into(),
        template: None,
    }
}

#[tokio::test]
async fn a_preview_client_may_render_and_plan_but_never_execute() {
    let served = Served::start(unreachable_executor()).await;
    let mut preview = served.client(Identity::Preview);
    preview.render(render_request(tenant())).await.unwrap();
    preview.plan(plan_request()).await.unwrap();
    let refused = preview
        .execute(execute_request(tenant()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        refused.message(),
        "Planner.Execute refused: the caller is spiffe://k8sworker/preview; only \
         spiffe://k8sworker/gateway/<vantiq-namespace>/<cluster> may call it"
    );
}

#[tokio::test]
async fn only_gateways_and_preview_clients_may_call_the_planner() {
    let served = Served::start(unreachable_executor()).await;
    for (mut client, code, message) in [
        (
            served.anonymous(),
            tonic::Code::Unauthenticated,
            "needs a client certificate: the caller presented none",
        ),
        (
            served.client(Identity::executor("team-a")),
            tonic::Code::PermissionDenied,
            "the caller is spiffe://k8sworker/executor/team-a",
        ),
        (
            served.client(Identity::Planner),
            tonic::Code::PermissionDenied,
            "the caller is spiffe://k8sworker/planner",
        ),
    ] {
        let statuses = [
            client.execute(execute_request(tenant())).await.unwrap_err(),
            client.plan(plan_request()).await.unwrap_err(),
            client.render(render_request(tenant())).await.unwrap_err(),
        ];
        for status in statuses {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(status.message().contains(message), "{status:?}");
        }
    }
}

#[tokio::test]
async fn a_gateway_acts_only_for_the_tenant_its_certificate_names() {
    let served = Served::start(unreachable_executor()).await;
    let mut gateway = served.client(Identity::gateway(gateway_tenant()));
    let other = Some(pb::Tenant {
        vantiq_namespace: "beta-corp".into(),
        cluster: "c".into(),
    });
    let refused = gateway
        .execute(execute_request(other.clone()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        refused.message(),
        "Planner.Execute refused: the request names tenant `beta-corp/c`, but the caller's \
         certificate is the gateway of `acme/c`; a gateway acts only for its own tenant"
    );
    let refused = gateway.render(render_request(other)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // A request naming no tenant gets the certificate's: every object
    // records it as owner.
    let rendered = gateway
        .render(render_request(None))
        .await
        .unwrap()
        .into_inner();
    assert!(!rendered.components.is_empty());
    for component in &rendered.components {
        let object = String::from_utf8_lossy(&component.object_json);
        assert!(
            object.contains("\"k8sworker.io/owner\":\"acme/c/app/"),
            "{object}"
        );
    }
}

/// Issue 12, case 7: the Render and Plan previews carry no secret value.
#[tokio::test]
async fn render_and_plan_previews_mask_secret_values() {
    const VALUE: &str = "s3cr3t-t0ken";
    const BASE64: &str = "czNjcjN0LXQwa2Vu";
    let mut client = start(no_executors()).await;
    let request = parse_and_validate(&json!({"name": "app", "k8sNamespace": "team-a", "config": [
        {"type": "image", "name": "nginx", "replicaCount": 1},
        {"type": "environmentVariable", "name": "TOKEN", "value": VALUE, "asSecret": true},
    ]}))
    .unwrap();
    let installation = installation_to_pb(&request);
    let rendered = client
        .render(pb::RenderRequest {
            installation: Some(installation.clone()),
            cluster: cluster(),
            tenant: tenant(),
            ancillaries: None,
        })
        .await
        .unwrap()
        .into_inner();
    let planned = client
        .plan(pb::PlanRequest {
            installation: Some(installation),
            cluster: cluster(),
            tenant: tenant(),
            ancillaries: None,
            operation: pb::Operation::Deploy.into(),
            observed: Vec::new(),
            live: false,
        })
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    let objects = rendered
        .components
        .iter()
        .map(|c| {
            (
                c.r#ref.clone().unwrap().kind,
                &c.object_json,
                c.spec_hash.as_str(),
            )
        })
        .chain(
            planned
                .steps
                .iter()
                .map(|s| (s.component.clone().unwrap().kind, &s.object_json, "")),
        );
    let mut secrets = 0;
    for (kind, json, spec_hash) in objects {
        let text = String::from_utf8_lossy(json);
        assert!(!text.contains(VALUE) && !text.contains(BASE64), "{text}");
        if kind == "Secret" {
            secrets += 1;
            let object: serde_json::Value = serde_json::from_slice(json).unwrap();
            assert_eq!(object["data"]["TOKEN"], "<masked: 12 bytes>", "{object}");
            if !spec_hash.is_empty() {
                assert_eq!(spec_hash, "<masked>");
            }
        }
    }
    assert_eq!(secrets, 2, "the Secret in the rendering and in the plan");
}

/// What `grpcurl list` and `grpcurl describe k8sworker.v1.Planner` ask, over
/// the planner's own `serve` and the same mutual TLS as every caller: the
/// service names through server reflection, then the descriptor of the file
/// that defines the Planner; refused without a certificate.
#[tokio::test]
async fn reflection_lists_the_services_as_grpcurl_does() {
    use tokio_stream::StreamExt as _;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let planner = PlannerService::new(
        no_executors(),
        Duration::from_secs(5),
        Some(pki.tls(&Identity::Planner).unwrap()),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(k8sworker_planner::service::serve(
        listener,
        planner,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    let tls = pki.tls(&Identity::gateway(gateway_tenant())).unwrap();
    let channel = k8sworker_tls::channel(
        Endpoint::from_shared(format!("https://{address}")).unwrap(),
        Some(&tls),
        Identity::Planner,
    );
    let mut client = ServerReflectionClient::new(channel);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let answers: Vec<ServerReflectionResponse> = client
        .server_reflection_info(tokio_stream::iter([
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "k8sworker.v1.Planner".into(),
            )),
        ]))
        .await
        .expect("reflection answers a client with a certificate")
        .into_inner()
        .map(|answer| answer.expect("an answer, not an error"))
        .collect()
        .await;
    assert_eq!(answers.len(), 2, "{answers:?}");

    let Some(MessageResponse::ListServicesResponse(listed)) = &answers[0].message_response else {
        panic!("not a service list: {:?}", answers[0]);
    };
    let mut names: Vec<&str> = listed.service.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "k8sworker.v1.Planner",
        ]
    );

    let Some(MessageResponse::FileDescriptorResponse(files)) = &answers[1].message_response else {
        panic!("not a file descriptor: {:?}", answers[1]);
    };
    use prost::Message as _;
    let files: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .collect();
    let planner = files
        .iter()
        .find(|file| file.name() == "k8sworker/v1/planner.proto")
        .expect("the Planner's file, with its imports");
    let methods: Vec<&str> = planner.service[0].method.iter().map(|m| m.name()).collect();
    assert!(methods.contains(&"Execute"), "{methods:?}");

    // Like every other call, reflection needs a certificate of a caller.
    let anonymous = Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .connect_with_connector_lazy(tls.anonymous_connector(Identity::Planner));
    let refused = ServerReflectionClient::new(anonymous)
        .server_reflection_info(tokio_stream::iter([ask(MessageRequest::ListServices(
            String::new(),
        ))]))
        .await
        .expect_err("no certificate, no answer");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
}
