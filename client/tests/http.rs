//! The client against a scripted HTTP server on 127.0.0.1: what goes on the
//! wire (path, token, trace context, multipart), how answers and refusals
//! are read, timeouts, and TLS on ring with the test CA of `fixtures/`.
//! The exchange with the real control plane is proven by the control
//! plane's own tests (`controlplane/tests/client.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8sworker_client::protocol::{
    ClaimWorkitem, CompleteWorkitem, InstallationReport, InstallationStatus, ReleaseWorkitem,
};
use k8sworker_client::{AccessToken, BuildError, Client, Error};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;

const TOKEN: &str = "t0ps3cret-w0rker-t0ken";

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }
}

/// What the scripted server answers, after `delay`.
#[derive(Debug, Clone)]
struct Script {
    status: u16,
    body: String,
    delay: Duration,
}

fn answer(status: u16, body: serde_json::Value) -> Script {
    Script {
        status,
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

/// A server answering every request with `script`, recording the requests.
struct Scripted {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Scripted {
    async fn start(script: Script) -> Scripted {
        Scripted::start_with(script, None).await
    }

    async fn start_with(script: Script, tls: Option<tokio_rustls::TlsAcceptor>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (script, log, tls) = (script.clone(), Arc::clone(&log), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, &script, &log).await;
                            }
                        }
                        None => serve(stream, &script, &log).await,
                    }
                });
            }
        });
        Scripted { url, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Reads one request (Content-Length or chunked body) and answers it.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    script: &Script,
    log: &Mutex<Vec<Received>>,
) {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buffer[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let request = Received {
        head: head.clone(),
        body: Vec::new(),
    };
    let length: Option<usize> = request
        .header("content-length")
        .and_then(|v| v.parse().ok());
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"));
    let complete = |data: &[u8]| -> Option<Vec<u8>> {
        let rest = &data[head_end..];
        if chunked {
            let mut body = Vec::new();
            let mut at = 0;
            loop {
                let line_end = rest[at..].windows(2).position(|w| w == b"\r\n")? + at;
                let size =
                    usize::from_str_radix(String::from_utf8_lossy(&rest[at..line_end]).trim(), 16)
                        .ok()?;
                let start = line_end + 2;
                if size == 0 {
                    return Some(body);
                }
                if rest.len() < start + size + 2 {
                    return None;
                }
                body.extend_from_slice(&rest[start..start + size]);
                at = start + size + 2;
            }
        } else {
            let length = length.unwrap_or(0);
            (rest.len() >= length).then(|| rest[..length].to_vec())
        }
    };
    let body = loop {
        if let Some(body) = complete(&data) {
            break body;
        }
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buffer[..n]),
        }
    };
    log.lock().unwrap().push(Received { head, body });
    tokio::time::sleep(script.delay).await;
    let response = format!(
        "HTTP/1.1 {} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        script.status,
        script.body.len(),
        script.body
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn client(url: &str) -> Client {
    Client::builder(url)
        .token(AccessToken::new(TOKEN))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn claimed() -> serde_json::Value {
    json!({
        "_id": "r-1", "requestId": "r-1", "clusterName": "c1", "operation": "deploy",
        "status": "PENDING", "request": {"name": "web"}, "attempts": 1, "delayed": false,
        "leaseId": "l-1", "leaseSeconds": 60,
        "cluster": {"name": "c1", "ingressDefaultNode": null}, "installation": null,
        "ancillaries": {"secrets": {}, "documents": {}},
    })
}

#[tokio::test]
async fn a_procedure_is_posted_with_the_token_and_its_answer_typed() {
    let server = Scripted::start(answer(200, claimed())).await;
    let claim = ClaimWorkitem {
        cluster_name: "c1".into(),
        worker_id: Some("gw-1".into()),
        lease_seconds: Some(60.0),
        wait_seconds: Some(0.0),
    };
    let claimed = client(&server.url).call(&claim).await.unwrap().unwrap();
    assert_eq!(claimed.workitem.request_id, "r-1");
    assert_eq!(claimed.lease_id, "l-1");

    let request = &server.received()[0];
    assert_eq!(
        request.request_line(),
        "POST /api/v1/resources/procedures/K8sManager.claimWorkitem HTTP/1.1"
    );
    assert_eq!(
        request.header("authorization").as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        request.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(
        request
            .header("user-agent")
            .is_some_and(|agent| agent.starts_with("k8sworker-client/"))
    );
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({"clusterName": "c1", "workerId": "gw-1", "leaseSeconds": 60, "waitSeconds": 0})
    );
}

#[tokio::test]
async fn an_empty_claim_is_none() {
    let server = Scripted::start(answer(200, json!(null))).await;
    let claim = ClaimWorkitem {
        cluster_name: "c1".into(),
        worker_id: None,
        lease_seconds: None,
        wait_seconds: None,
    };
    assert_eq!(client(&server.url).call(&claim).await.unwrap(), None);
}

#[tokio::test]
async fn a_lost_lease_names_the_workitem_and_the_token_appears_in_no_error() {
    let server = Scripted::start(answer(
        409,
        json!([{"code": "io.vantiq.resources.k8s.workitem.lease.lost", "message": "Workitem r-1 is not leased under lease l-1", "params": ["r-1", "l-1"]}]),
    ))
    .await;
    let complete = CompleteWorkitem {
        request_id: "r-1".into(),
        lease_id: "l-1".into(),
        installation: InstallationReport {
            installation_status: Some(InstallationStatus::Running),
            ..InstallationReport::default()
        },
        steps: None,
        trace_id: None,
    };
    let error = client(&server.url).call(&complete).await.unwrap_err();
    match &error {
        Error::LeaseLost { request_id, .. } => assert_eq!(request_id, "r-1"),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    assert!(!error.is_transient());
    let body: serde_json::Value = serde_json::from_slice(&server.received()[0].body).unwrap();
    assert_eq!(
        body,
        json!({"requestId": "r-1", "leaseId": "l-1", "installation": {"installationStatus": "RUNNING"}})
    );

    // Refused, unreachable, or badly configured: the token is never shown.
    let refused = Scripted::start(answer(
        401,
        json!([{"code": "io.vantiq.authentication.token.invalid", "message": "The access token is not valid or has expired.", "params": []}]),
    ))
    .await;
    let release = ReleaseWorkitem {
        request_id: "r-1".into(),
        lease_id: "l-1".into(),
    };
    let unauthorized = client(&refused.url).call(&release).await.unwrap_err();
    assert!(matches!(
        unauthorized,
        Error::Unauthorized { status: 401, .. }
    ));
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = client(&url).call(&release).await.unwrap_err();
    assert!(
        matches!(unreachable, Error::Unreachable { .. }),
        "{unreachable:?}"
    );
    assert!(unreachable.is_transient());
    let built = Client::builder("http://127.0.0.1:9")
        .token(AccessToken::new(format!("{TOKEN}\n")))
        .build()
        .unwrap_err();
    assert!(matches!(built, BuildError::Token));
    for shown in [
        error.to_string(),
        format!("{error:?}"),
        unauthorized.to_string(),
        format!("{unreachable:?}"),
        unreachable.to_string(),
        built.to_string(),
        format!("{:?}", client(&url)),
    ] {
        assert!(!shown.contains(TOKEN), "{shown}");
    }
}

#[tokio::test]
async fn a_claim_may_wait_longer_than_the_timeout_and_nothing_else_may() {
    let slow = Script {
        delay: Duration::from_millis(1200),
        ..answer(200, json!(null))
    };
    let server = Scripted::start(slow).await;
    let client = Client::builder(&server.url)
        .token(AccessToken::new(TOKEN))
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let claim = ClaimWorkitem {
        cluster_name: "c1".into(),
        worker_id: None,
        lease_seconds: None,
        wait_seconds: Some(1.0),
    };
    assert_eq!(
        client.call(&claim).await.unwrap(),
        None,
        "0.5 s + the 1 s wait"
    );
    let started = Instant::now();
    let error = client.version().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1100),
        "{:?}",
        started.elapsed()
    );
    match error {
        Error::Unreachable { reason, .. } => assert_eq!(reason, "no answer within the timeout"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_document_is_one_path_field_and_one_text_file_part() {
    let metadata = json!({"name": "c1/web/web-0-t.txt", "fileType": "text/plain", "contentSize": 14, "content": "/docs/c1/web/web-0-t.txt"});
    let server = Scripted::start(answer(200, metadata)).await;
    let document = client(&server.url)
        .upload_document(
            "c1/web/web-0-t.txt",
            b"line 1\nline 2\n".to_vec(),
            "text/plain",
        )
        .await
        .unwrap();
    assert_eq!(document.content_size, Some(14));
    let request = &server.received()[0];
    assert_eq!(
        request.request_line(),
        "POST /api/v1/resources/documents HTTP/1.1"
    );
    let content_type = request.header("content-type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap_or_else(|| panic!("{content_type}"));
    assert_eq!(
        String::from_utf8(request.body.clone()).unwrap(),
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"documentPath\"\r\n\r\nc1/web/web-0-t.txt\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"web-0-t.txt\"\r\n\
             Content-Type: text/plain\r\n\r\nline 1\nline 2\n\r\n--{boundary}--\r\n"
        )
    );
}

#[test]
fn every_request_carries_the_current_trace_context() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let server = Scripted::start(answer(200, json!({"version": "1"}))).await;
            let span = tracing::info_span!("workitem.process");
            k8sworker_telemetry::set_parent(
                &span,
                k8sworker_telemetry::context_from_traceparent(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            );
            let _entered = span.enter();
            client(&server.url).version().await.unwrap();
            let traceparent = server.received()[0].header("traceparent");
            assert!(
                traceparent
                    .as_deref()
                    .is_some_and(|t| t.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")),
                "{traceparent:?}"
            );
        });
    });
}

/// A TLS acceptor on ring with the fixture server certificate.
fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certificates = CertificateDer::pem_slice_iter(include_bytes!("fixtures/server.pem"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("fixtures/server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(k8sworker_client::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn https_uses_ring_and_trusts_a_given_ca_besides_the_platform() {
    let server =
        Scripted::start_with(answer(200, json!({"longPoll": true})), Some(tls_acceptor())).await;
    assert!(server.url.starts_with("https://127.0.0.1:"));
    let trusting = Client::builder(&server.url)
        .token(AccessToken::new(TOKEN))
        .root_certificates_pem(include_bytes!("fixtures/ca.pem"))
        .build()
        .unwrap();
    assert_eq!(trusting.version().await.unwrap().long_poll, Some(true));
    assert_eq!(server.received().len(), 1);

    // The test CA is no platform root: without it the handshake fails and
    // nothing is sent.
    let error = client(&server.url).version().await.unwrap_err();
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    assert_eq!(server.received().len(), 1);

    assert!(matches!(
        Client::builder("https://127.0.0.1:1")
            .root_certificates_pem(
                b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
            )
            .build(),
        Err(BuildError::Certificate(_))
    ));
    assert!(matches!(
        Client::builder("vantiq.example.com").build(),
        Err(BuildError::Url(_))
    ));
}
