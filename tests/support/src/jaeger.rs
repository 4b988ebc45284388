//! Exporting spans to the test cluster's Jaeger, and reading traces back
//! from its query API.
//!
//! A plain HTTP/1.0 GET over loopback is all the API needs, so no HTTP client
//! library is pulled in for it.

use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::TestCluster;

/// A tracer provider exporting over OTLP (batched) to the test cluster's
/// Jaeger, its spans under the service name `service`.
pub async fn exporting_provider(service: &str) -> SdkTracerProvider {
    let cluster = TestCluster::get().await;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(cluster.otlp_endpoint())
        .build()
        .expect("OTLP exporter");
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build()
}

/// GETs `http://host:port/path`; returns the status code and body.
pub async fn get(url: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other(format!("{url}: only http:// is supported")))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    Ok((status, response[split + 4..].to_vec()))
}

/// The operation names of the spans Jaeger holds for `trace_id` (hex);
/// empty while it has none.
pub async fn span_names(query_url: &str, trace_id: &str) -> Vec<String> {
    let url = format!("{}/api/traces/{trace_id}", query_url.trim_end_matches('/'));
    let Ok((200, body)) = get(&url).await else {
        return Vec::new();
    };
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Vec::new();
    };
    answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|trace| trace["spans"].as_array().cloned().unwrap_or_default())
        .filter_map(|span| span["operationName"].as_str().map(String::from))
        .collect()
}

/// One span as Jaeger holds it: its operation name and its tags (attribute
/// values as text).
#[derive(Debug, Clone)]
pub struct Span {
    /// The operation (span) name.
    pub name: String,
    /// The attributes, `key → value` (numbers and booleans as text).
    pub tags: std::collections::BTreeMap<String, String>,
}

/// The spans Jaeger holds for `trace_id` (hex); empty while it has none.
pub async fn spans(query_url: &str, trace_id: &str) -> Vec<Span> {
    let url = format!("{}/api/traces/{trace_id}", query_url.trim_end_matches('/'));
    let Ok((200, body)) = get(&url).await else {
        return Vec::new();
    };
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Vec::new();
    };
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|trace| trace["spans"].as_array().cloned().unwrap_or_default())
        .map(|span| Span {
            name: span["operationName"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            tags: span["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|tag| Some((tag["key"].as_str()?.to_owned(), text(&tag["value"]))))
                .collect(),
        })
        .collect()
}

/// The span names of each recent trace of `service`, as Jaeger's
/// `/api/traces?service=` search returns them (up to 200). Jaeger's order
/// is not strictly newest first: with 50, a burst of short traces within
/// half a second (no-op applies) could hide the newest one.
pub async fn traces_of_service(query_url: &str, service: &str) -> Vec<Vec<String>> {
    let url = format!(
        "{}/api/traces?service={service}&limit=200&lookback=1h",
        query_url.trim_end_matches('/')
    );
    let Ok((200, body)) = get(&url).await else {
        return Vec::new();
    };
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Vec::new();
    };
    answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|trace| {
            trace["spans"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|span| span["operationName"].as_str().map(String::from))
                .collect()
        })
        .collect()
}
