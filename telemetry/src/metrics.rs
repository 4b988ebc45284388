//! The process's Prometheus metrics: one registry, OpenMetrics text at
//! `GET /metrics`.
//!
//! Each component registers its metric families once, at start-up, through
//! [`register`] (names without the `k8sworker_` prefix, which the registry
//! adds; counters without `_total` and units without `_seconds`, which the
//! OpenMetrics encoder appends), and keeps the handles it gets back: updating
//! a counter is an atomic add, no lock. A scrape ([`encode`]) reads every
//! family. The registry is process-wide, as Prometheus client libraries'
//! default registries are, so code anywhere in a binary (a cache, a client
//! layer) can reach its metrics without threading a handle through every
//! call.
//!
//! The control plane serves [`router`] on its HTTP port; the gateway, the
//! planner and the executor serve it on a separate plain-HTTP listener
//! ([`serve`]) when `--metrics-addr` is given. Labels carry metadata only
//! (operations, verbs, resource kinds, status codes), never a tenant's
//! object names or values.

use std::sync::{LazyLock, Mutex};

use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::registry::Registry;

/// The prefix of every metric name.
pub const PREFIX: &str = "k8sworker";

/// The media type of [`encode`]'s text (OpenMetrics 1.0.0).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

static REGISTRY: LazyLock<Mutex<Registry>> =
    LazyLock::new(|| Mutex::new(Registry::with_prefix(PREFIX)));

/// Registers metric families in the process's registry: `describe` gets the
/// registry and returns the handles to keep.
///
/// Call it once per family (e.g. from a `LazyLock`): registering a name twice
/// makes the scrape show it twice.
pub fn register<M>(describe: impl FnOnce(&mut Registry) -> M) -> M {
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    describe(&mut registry)
}

/// Every registered metric as OpenMetrics text, ending in `# EOF`.
pub fn encode() -> String {
    let registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String does not fail");
    text
}

/// Buckets for latencies in seconds: 5 ms to about 82 s, doubling (15
/// buckets), wide enough for an API call and for a deploy that waits for its
/// pods.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 15)
}

/// A handler answering [`encode`] as [`CONTENT_TYPE`].
pub async fn scrape() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], encode())
}

/// A router with `GET /metrics` only.
pub fn router() -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(scrape))
}

/// Serves [`router`] over plain HTTP on `listener` until `shutdown`
/// completes.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` and serves the metrics there in a task until `shutdown`
/// completes; `None` serves nothing. The binaries' `--metrics-addr`.
///
/// # Errors
/// `addr` could not be bound.
pub async fn spawn(
    addr: Option<std::net::SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Option<std::net::SocketAddr>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = serve(listener, shutdown).await {
            tracing::error!(%error, "the metrics listener failed");
        }
    });
    tracing::info!(address = %bound, "metrics served at /metrics");
    Ok(Some(bound))
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn registered_counters_are_encoded_with_prefix_and_total() {
        let counter: Counter = register(|registry| {
            let counter = Counter::default();
            registry.register("telemetry_test_things", "Things", counter.clone());
            counter
        });
        counter.inc_by(3);
        let text = encode();
        assert!(
            text.contains("# TYPE k8sworker_telemetry_test_things counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\nk8sworker_telemetry_test_things_total 3\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
