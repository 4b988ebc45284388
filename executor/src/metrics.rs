//! The executor's metrics (see `k8sworker_telemetry::metrics`): Kubernetes
//! API requests by verb, resource and status code, the duration of a plan's
//! writes, plans in flight, and the size of the object cache. Served on
//! `--metrics-addr`.
//!
//! [`METRICS`] is reachable from any module: the API-call layer
//! ([`crate::calls`]) counts into it, and whatever keeps the cache sets
//! [`Metrics::cache_objects`].

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

/// One kind of Kubernetes API request and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, `patch`, …).
    pub verb: &'static str,
    /// The resource as RBAC names it (`statefulsets`,
    /// `statefulsets/scale`).
    pub resource: String,
    /// `true` for a server-side dry run (nothing persisted).
    pub dry_run: bool,
    /// The HTTP status code; `error` when the request failed unanswered,
    /// `cancelled` when it was dropped unanswered.
    pub code: String,
}

/// Whether a plan's writes all succeeded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// The executor's metric families.
#[derive(Debug)]
pub struct Metrics {
    /// `k8sworker_executor_api_requests_total{verb,resource,dry_run,code}`.
    pub api_requests: Family<ApiRequestLabels, Counter>,
    /// `k8sworker_executor_apply_duration_seconds{outcome}`.
    pub apply_duration: Family<ApplyLabels, Histogram, fn() -> Histogram>,
    /// `k8sworker_executor_applies_in_flight`.
    pub applies_in_flight: Gauge,
    /// `k8sworker_executor_cache_objects`: objects held in the executor's
    /// cache of the namespace's managed objects; set by the cache.
    pub cache_objects: Gauge,
}

/// The families, registered on first use ([`register`] at start-up).
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    k8sworker_telemetry::metrics::register(|registry| {
        let registry = registry.sub_registry_with_prefix("executor");
        let metrics = Metrics {
            api_requests: Family::default(),
            apply_duration: Family::new_with_constructor(|| {
                Histogram::new(k8sworker_telemetry::metrics::latency_buckets())
            }),
            applies_in_flight: Gauge::default(),
            cache_objects: Gauge::default(),
        };
        registry.register(
            "api_requests",
            "Kubernetes API requests, by verb, resource, dry run and HTTP status code (error: failed unanswered; cancelled: dropped unanswered)",
            metrics.api_requests.clone(),
        );
        registry.register_with_unit(
            "apply_duration",
            "A plan's writes, from the first to the last (the health wait excluded), by outcome",
            Unit::Seconds,
            metrics.apply_duration.clone(),
        );
        registry.register(
            "applies_in_flight",
            "Plans being applied (writes and health wait)",
            metrics.applies_in_flight.clone(),
        );
        registry.register(
            "cache_objects",
            "Objects held in the executor's cache of the namespace's managed objects",
            metrics.cache_objects.clone(),
        );
        metrics
    })
});

/// Registers the families so that a scrape shows them before any request.
pub fn register() {
    LazyLock::force(&METRICS);
}

/// One Kubernetes API request, counted once when it ends: with its HTTP
/// status, as `error` when no answer came, or as `cancelled` when it was
/// dropped before either.
#[derive(Debug)]
pub struct ApiRequest {
    labels: Option<ApiRequestLabels>,
}

impl ApiRequest {
    /// A request was sent: `verb`, `resource` and `dry_run` as
    /// `crate::calls::classify` names them.
    pub fn start(verb: &'static str, resource: String, dry_run: bool) -> ApiRequest {
        ApiRequest {
            labels: Some(ApiRequestLabels {
                verb,
                resource,
                dry_run,
                code: String::new(),
            }),
        }
    }

    /// Its answer arrived with HTTP `status`.
    pub fn answered(&mut self, status: u16) {
        self.count(&status.to_string());
    }

    /// It failed without an answer (connection, timeout).
    pub fn failed(&mut self) {
        self.count("error");
    }

    fn count(&mut self, code: &str) {
        if let Some(mut labels) = self.labels.take() {
            labels.code = code.to_owned();
            METRICS.api_requests.get_or_create(&labels).inc();
        }
    }
}

impl Drop for ApiRequest {
    fn drop(&mut self) {
        self.count("cancelled");
    }
}

/// Records how long a plan's writes took.
pub fn applied(took: Duration, ok: bool) {
    METRICS
        .apply_duration
        .get_or_create(&ApplyLabels {
            outcome: if ok { "ok" } else { "error" },
        })
        .observe(took.as_secs_f64());
}

/// One plan being applied until the guard is dropped.
#[derive(Debug)]
pub struct Applying(());

impl Applying {
    /// One more plan in flight.
    pub fn start() -> Applying {
        METRICS.applies_in_flight.inc();
        Applying(())
    }
}

impl Drop for Applying {
    fn drop(&mut self) {
        METRICS.applies_in_flight.dec();
    }
}
