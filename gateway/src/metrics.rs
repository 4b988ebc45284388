//! The gateway's metrics (see `k8sworker_telemetry::metrics`): workitems
//! claimed and how they ended, by operation; how long they waited to be
//! picked up and took end to end; how many are in flight. Served on
//! `--metrics-addr`.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

/// A workitem's operation (`deploy`, `undeploy`, `verify`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The operation.
    pub operation: String,
}

/// A workitem's operation and a second, bounded label: a failure's status
/// (`FAILED`, `INVALID`) or why it went back to the queue (`released`,
/// `abandoned`, `cancelled`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The operation.
    pub operation: String,
    /// The status or reason.
    pub outcome: String,
}

type Latency = Family<OperationLabels, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    Histogram::new(k8sworker_telemetry::metrics::latency_buckets())
}

/// The gateway's metric families.
#[derive(Debug)]
pub struct Metrics {
    /// `k8sworker_gateway_workitems_claimed_total{operation}`.
    pub claimed: Family<OperationLabels, Counter>,
    /// `k8sworker_gateway_workitems_completed_total{operation}`.
    pub completed: Family<OperationLabels, Counter>,
    /// `k8sworker_gateway_workitems_failed_total{operation,outcome}`.
    pub failed: Family<OutcomeLabels, Counter>,
    /// `k8sworker_gateway_workitems_returned_total{operation,outcome}`.
    pub returned: Family<OutcomeLabels, Counter>,
    /// `k8sworker_gateway_workitem_pickup_seconds{operation}`.
    pub pickup: Latency,
    /// `k8sworker_gateway_workitem_end_to_end_seconds{operation}`.
    pub end_to_end: Latency,
    /// `k8sworker_gateway_workitems_in_flight`.
    pub in_flight: Gauge,
}

/// The families, registered on first use ([`register`] at start-up).
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    k8sworker_telemetry::metrics::register(|registry| {
        let registry = registry.sub_registry_with_prefix("gateway");
        let metrics = Metrics {
            claimed: Family::default(),
            completed: Family::default(),
            failed: Family::default(),
            returned: Family::default(),
            pickup: Family::new_with_constructor(latency),
            end_to_end: Family::new_with_constructor(latency),
            in_flight: Gauge::default(),
        };
        registry.register(
            "workitems_claimed",
            "Workitems this gateway claimed",
            metrics.claimed.clone(),
        );
        registry.register(
            "workitems_completed",
            "Workitems reported complete",
            metrics.completed.clone(),
        );
        registry.register(
            "workitems_failed",
            "Workitems reported failed; outcome is FAILED or INVALID",
            metrics.failed.clone(),
        );
        registry.register(
            "workitems_returned",
            "Workitems given back to the queue; outcome is released, abandoned (lease lost, report undeliverable) or cancelled",
            metrics.returned.clone(),
        );
        registry.register_with_unit(
            "workitem_pickup",
            "From a workitem's creation (the control plane's clock) to its claim",
            Unit::Seconds,
            metrics.pickup.clone(),
        );
        registry.register_with_unit(
            "workitem_end_to_end",
            "From a workitem's creation (the control plane's clock) to its outcome reported",
            Unit::Seconds,
            metrics.end_to_end.clone(),
        );
        registry.register(
            "workitems_in_flight",
            "Workitems claimed and not yet reported",
            metrics.in_flight.clone(),
        );
        metrics
    })
});

/// Registers the families so that a scrape shows them before any workitem.
pub fn register() {
    LazyLock::force(&METRICS);
}

/// How a workitem ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended<'a> {
    /// Reported complete.
    Completed,
    /// Reported failed with this status (`FAILED`, `INVALID`).
    Failed(&'a str),
    /// Given back to the queue: `released`, `abandoned` or `cancelled`.
    Returned(&'static str),
}

/// Seconds from `since` to now; zero when the clocks disagree.
fn seconds_since(since: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(since)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Counts a claim of an `operation` workitem created at `created` (the
/// server's clock) and its pickup latency.
pub fn claimed(operation: &str, created: Option<SystemTime>) {
    let labels = OperationLabels {
        operation: operation.to_owned(),
    };
    METRICS.claimed.get_or_create(&labels).inc();
    if let Some(created) = created {
        METRICS
            .pickup
            .get_or_create(&labels)
            .observe(seconds_since(created));
    }
}

/// Counts how an `operation` workitem created at `created` ended, and its
/// end-to-end latency.
pub fn reported(operation: &str, created: Option<SystemTime>, ended: Ended<'_>) {
    let labels = OperationLabels {
        operation: operation.to_owned(),
    };
    let outcome = |outcome: &str| OutcomeLabels {
        operation: operation.to_owned(),
        outcome: outcome.to_owned(),
    };
    match ended {
        Ended::Completed => METRICS.completed.get_or_create(&labels).inc(),
        Ended::Failed(status) => METRICS.failed.get_or_create(&outcome(status)).inc(),
        Ended::Returned(why) => METRICS.returned.get_or_create(&outcome(why)).inc(),
    };
    if let Some(created) = created {
        METRICS
            .end_to_end
            .get_or_create(&labels)
            .observe(seconds_since(created));
    }
}

/// Counts a workitem in flight until the guard is dropped.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    /// One more workitem in flight.
    pub fn start() -> InFlight {
        METRICS.in_flight.inc();
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight.dec();
    }
}
