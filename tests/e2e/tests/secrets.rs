//! Secrets and tokens leave no trace: a deploy with a secret environment
//! value, a `@secrets(...)` value and secret file content runs to `RUNNING`
//! through every component, and then the bytes of the control plane's
//! database (with its WAL), every log line of every component and every span
//! exported to the test cluster's Jaeger are searched for those values and
//! for the access tokens used (one of them sent as `?token=`): none is found.
//!
//! Its own test binary: it installs the process-wide subscriber (debug
//! level, logs captured in memory, spans exported over OTLP).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8sworker_e2e::{CLUSTER, Stack};
use k8sworker_testsupport::{TestCluster, eventually, jaeger, with_temp_ns};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Captured log output of the whole process.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn capture(service: &str) -> (SdkTracerProvider, Logs) {
    let provider = jaeger::exporting_provider(service).await;
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("k8sworker-e2e"))
        .with_filter(EnvFilter::new("debug"));
    let logs = Logs::default();
    let sink = logs.clone();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .with_filter(EnvFilter::new("debug"));
    tracing_subscriber::registry()
        .with(otel)
        .with(fmt)
        .try_init()
        .expect("the only subscriber of this test binary");
    (provider, logs)
}

fn unique(what: &str) -> String {
    format!("{what}-{:016x}", fastrand::u64(..))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh) and its Jaeger"]
async fn secrets_and_tokens_are_not_in_the_database_logs_or_spans() {
    let service = unique("k8sworker-e2e-secrets");
    let (provider, logs) = capture(&service).await;
    let flusher = provider.clone();
    with_temp_ns("e2e-secrets", |admin, ns| async move {
        let env_secret = unique("env-secret");
        let file_secret = unique("file-secret");
        let vault_secret = unique("vault-secret");
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let vantiq = &stack.admin;
        let (status, body) = vantiq
            .post(
                "/api/v1/resources/secrets",
                json!({"name": "vault", "secret": vault_secret}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = vantiq
            .post(
                "/api/v1/resources/tokens",
                json!({"name": "reader", "profiles": ["user"]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let query_token = body["accessToken"].as_str().unwrap().to_owned();
        let worker_token = stack.worker_token.expose().to_owned();

        let gateway = stack.gateway();
        let item = vantiq
            .command(
                CLUSTER,
                "deploy",
                json!({
                    "name": "secretive",
                    "k8sNamespace": ns,
                    "config": [
                        {"type": "image", "name": "registry.example.com/k8sworker/app:1.0"},
                        {"type": "environmentVariable", "name": "API_KEY", "value": env_secret, "asSecret": true},
                        {"type": "environmentVariable", "name": "VAULT", "value": "@secrets(vault)"},
                        {"type": "file", "path": "/etc/app", "filename": "key.pem", "content": file_secret, "dataSource": "secret"},
                    ]
                }),
            )
            .await;
        let trace_id = item["traceparent"].as_str().unwrap().split('-').nth(1).unwrap().to_owned();
        let record = vantiq
            .wait_status("secretive", "RUNNING", Duration::from_secs(60))
            .await;
        assert_eq!(record["configSpec"][1]["value"], "<redacted>", "{record}");
        // `?token=` stays accepted (Vantiq documents it).
        let (status, _) = jaeger::get(&format!(
            "{}/api/v1/resources/k8sinstallations?token={query_token}",
            stack.control_plane.url()
        ))
        .await
        .unwrap();
        assert_eq!(status, 200);
        gateway.stop().await;
        flusher.force_flush().expect("spans flushed");

        let values = [
            ("the secret environment value", env_secret.as_str()),
            ("the secret file content", file_secret.as_str()),
            ("the @secrets value", vault_secret.as_str()),
            ("the ?token= token", query_token.as_str()),
            ("the worker's token", worker_token.as_str()),
        ];

        // The database file and its WAL.
        let database = stack.control_plane.database();
        let mut bytes = std::fs::read(&database).unwrap();
        bytes.extend(std::fs::read(format!("{}-wal", database.display())).unwrap_or_default());
        assert!(contains(&bytes, "k8sw-sealed:v1:"), "the values are stored, sealed");
        for (what, value) in values {
            assert!(!contains(&bytes, value), "the database holds {what}");
        }

        // Every log line of every component.
        let logs = logs.0.lock().unwrap().clone();
        assert!(
            contains(&logs, "k8sinstallations?token=<redacted>"),
            "the access log records the URI, redacted"
        );
        for (what, value) in values {
            assert!(!contains(&logs, value), "the logs hold {what}");
        }

        // Every span this process exported, the deploy's whole trace included.
        let query = TestCluster::get().await.jaeger_query_url();
        let search = format!(
            "{}/api/traces?service={service}&limit=1000&lookback=1h",
            query.trim_end_matches('/')
        );
        let spans = eventually("the deploy's trace and the ?token= request in Jaeger", Duration::from_secs(30), || {
            let (search, query, trace_id) = (search.clone(), query.clone(), trace_id.clone());
            async move {
                let names = jaeger::span_names(&query, &trace_id).await;
                let complete = names.iter().any(|n| n == "workitem.process")
                    && names.iter().any(|n| n == "apply");
                let (status, body) = jaeger::get(&search).await.ok()?;
                (complete && status == 200 && contains(&body, "k8sinstallations?token=")).then_some(body)
            }
        })
        .await;
        let (_, trace) = jaeger::get(&format!("{}/api/traces/{trace_id}", query.trim_end_matches('/')))
            .await
            .unwrap();
        for (what, value) in values {
            assert!(!contains(&spans, value), "the exported spans hold {what}");
            assert!(!contains(&trace, value), "the deploy's trace holds {what}");
        }
        eprintln!(
            "searched {} database bytes, {} log bytes, {} span bytes",
            bytes.len(),
            logs.len(),
            spans.len() + trace.len()
        );
    })
    .await;
    provider.shutdown().ok();
}
