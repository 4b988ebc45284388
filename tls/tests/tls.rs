//! Mutual TLS over real loopback connections: who may connect, who may
//! call, and a rotated certificate served without a restart.

use std::sync::Arc;
use std::time::Duration;

use k8sworker_core::owner::Tenant;
use k8sworker_tls::generate::{CERT_VALIDITY, Ca};
use k8sworker_tls::{Authentication, Identity, PeerInfo, Role, Tls, authorize};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn issue(ca: &Ca, dir: &tempfile::TempDir, name: &str, identity: Identity) -> Tls {
    let files = ca
        .issue(&identity, CERT_VALIDITY)
        .unwrap()
        .write(&dir.path().join(name))
        .unwrap();
    Tls::load(files).unwrap()
}

fn tenant() -> Tenant {
    Tenant::new("acme", "prod").unwrap()
}

/// A health service on loopback with `tls`; its address.
async fn serve(tls: Tls) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(k8sworker_tls::incoming(listener, Some(tls))),
    );
    address
}

async fn check(
    address: std::net::SocketAddr,
    tls: Option<&Tls>,
    expected: Identity,
) -> Result<(), tonic::Status> {
    let endpoint = Endpoint::from_shared(format!("https://{address}")).unwrap();
    let channel = k8sworker_tls::channel(endpoint, tls, expected);
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_client_reaches_only_the_identity_it_expects() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("test CA").unwrap();
    let planner = issue(&ca, &dir, "planner", Identity::Planner);
    let gateway = issue(&ca, &dir, "gateway", Identity::gateway(tenant()));
    assert_eq!(gateway.identity(), Identity::gateway(tenant()));
    let address = serve(planner).await;

    check(address, Some(&gateway), Identity::Planner)
        .await
        .unwrap();
    let wrong = check(address, Some(&gateway), Identity::executor("team-a"))
        .await
        .unwrap_err();
    assert!(
        format!("{wrong:?}").contains(
            "the server is spiffe://k8sworker/planner, not spiffe://k8sworker/executor/team-a"
        ),
        "{wrong:?}"
    );

    // A certificate of another CA does not get through the handshake.
    let other = Ca::generate("someone else's CA").unwrap();
    let stranger = issue(&other, &dir, "stranger", Identity::Planner);
    assert!(
        check(address, Some(&stranger), Identity::Planner)
            .await
            .is_err()
    );
    // Nor does plaintext.
    assert!(check(address, None, Identity::Planner).await.is_err());
}

fn request_from(certs: Option<Vec<CertificateDer<'static>>>) -> tonic::Request<()> {
    let mut request = tonic::Request::new(());
    request.extensions_mut().insert(PeerInfo {
        remote: None,
        certs: certs.map(Arc::new),
    });
    request
}

#[test]
fn each_call_admits_only_its_roles() {
    let ca = Ca::generate("test CA").unwrap();
    let cert = |identity: Identity| {
        let issued = ca.issue(&identity, CERT_VALIDITY).unwrap();
        vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()]
    };
    let required = Authentication::Required;

    let none = authorize(
        &request_from(None),
        required,
        "Executor.Apply",
        &[Role::Planner],
    )
    .unwrap_err();
    assert_eq!(none.code(), tonic::Code::Unauthenticated);
    assert!(
        none.message()
            .contains("Executor.Apply needs a client certificate"),
        "{none:?}"
    );

    let gateway = authorize(
        &request_from(Some(cert(Identity::gateway(tenant())))),
        required,
        "Executor.Apply",
        &[Role::Planner],
    )
    .unwrap_err();
    assert_eq!(gateway.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        gateway.message(),
        "Executor.Apply refused: the caller is spiffe://k8sworker/gateway/acme/prod; only spiffe://k8sworker/planner may call it"
    );

    let planner = authorize(
        &request_from(Some(cert(Identity::Planner))),
        required,
        "Executor.Apply",
        &[Role::Planner],
    )
    .unwrap();
    assert_eq!(planner, Some(Identity::Planner));

    assert_eq!(
        authorize(
            &request_from(None),
            Authentication::Off,
            "Executor.Apply",
            &[Role::Planner]
        )
        .unwrap(),
        None
    );
}

/// The certificate a fresh connection to `address` is served.
async fn served_cert(address: std::net::SocketAddr, client: &Tls) -> CertificateDer<'static> {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(client.client_config(Identity::Planner).unwrap());
    let stream = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("test CA").unwrap();
    let planner = issue(&ca, &dir, "planner", Identity::Planner);
    let gateway = issue(&ca, &dir, "gateway", Identity::gateway(tenant()));
    let _watch = planner.watch(Duration::from_millis(50));
    let address = serve(planner.clone()).await;
    let first = served_cert(address, &gateway).await;

    // The files change in place, as a Secret volume's do.
    let rotated = ca.issue(&Identity::Planner, CERT_VALIDITY).unwrap();
    rotated.write(&dir.path().join("planner")).unwrap();
    let expected = CertificateDer::from_pem_slice(rotated.cert_pem.as_bytes()).unwrap();
    assert_ne!(first, expected);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if served_cert(address, &gateway).await == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check(address, Some(&gateway), Identity::Planner)
        .await
        .unwrap();

    // A broken file is not taken: the last good certificate stays.
    std::fs::write(dir.path().join("planner/tls.crt"), "not a certificate").unwrap();
    assert!(planner.reload().is_err());
    assert_eq!(served_cert(address, &gateway).await, expected);

    // Nor is a valid certificate of another component: the planner stays
    // the planner.
    ca.issue(&Identity::gateway(tenant()), CERT_VALIDITY)
        .unwrap()
        .write(&dir.path().join("planner"))
        .unwrap();
    let refused = planner.reload().unwrap_err();
    assert!(
        refused.to_string().contains(
            "now names spiffe://k8sworker/gateway/acme/prod, but this component is spiffe://k8sworker/planner"
        ),
        "{refused}"
    );
    assert_eq!(planner.identity(), Identity::Planner);
    assert_eq!(served_cert(address, &gateway).await, expected);
    check(address, Some(&gateway), Identity::Planner)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_health_port_serves_health_in_plaintext_and_nothing_else() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(k8sworker_tls::serve_health(
        listener,
        &["k8sworker.v1.Executor"],
        std::future::pending(),
    ));
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    let serving = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "k8sworker.v1.Executor".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, tonic_health::ServingStatus::Serving as i32);
    let refused = k8sworker_proto::v1::executor_client::ExecutorClient::new(channel)
        .fetch_logs(k8sworker_proto::v1::FetchLogsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
}

/// A missing directory is reported once: the message holds the OS error,
/// and no error further down the chain repeats it.
#[test]
fn a_missing_file_reports_its_os_error_once() {
    let missing = std::path::Path::new("/nonexistent-k8sworker-tls-dir");
    let error = Tls::load(k8sworker_tls::TlsFiles::in_dir(missing)).unwrap_err();
    let mut chain = vec![error.to_string()];
    let mut source = std::error::Error::source(&error);
    while let Some(next) = source {
        chain.push(next.to_string());
        source = next.source();
    }
    let report = chain.join(": ");
    assert!(
        report.contains("/nonexistent-k8sworker-tls-dir/tls.crt"),
        "{report}"
    );
    assert_eq!(
        report.matches("No such file or directory").count(),
        1,
        "{report}"
    );
}
