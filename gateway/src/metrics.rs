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

use crate::gateway::Report;
use crate::workitem::Workitem;

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
            "Workitems this gateway claimed.",
            metrics.claimed.clone(),
        );
        registry.register(
            "workitems_completed",
            "Workitems reported complete.",
            metrics.completed.clone(),
        );
        registry.register(
            "workitems_failed",
            "Workitems reported failed; outcome is FAILED or INVALID.",
            metrics.failed.clone(),
        );
        registry.register(
            "workitems_returned",
            "Workitems given back to the queue; outcome is released, abandoned (lease lost, report undeliverable) or cancelled.",
            metrics.returned.clone(),
        );
        registry.register_with_unit(
            "workitem_pickup",
            "From a workitem's creation (the control plane's clock) to its claim.",
            Unit::Seconds,
            metrics.pickup.clone(),
        );
        registry.register_with_unit(
            "workitem_end_to_end",
            "From a workitem's creation (the control plane's clock) to its outcome reported.",
            Unit::Seconds,
            metrics.end_to_end.clone(),
        );
        registry.register(
            "workitems_in_flight",
            "Workitems claimed and not yet reported.",
            metrics.in_flight.clone(),
        );
        metrics
    })
});

/// Registers the families so that a scrape shows them before any workitem.
pub fn register() {
    LazyLock::force(&METRICS);
}

fn operation(item: &Workitem) -> OperationLabels {
    OperationLabels {
        operation: item.operation.clone(),
    }
}

/// Seconds from `since` to now; zero when the clocks disagree.
fn seconds_since(since: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(since)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Counts a claim and its pickup latency.
pub fn claimed(item: &Workitem) {
    let labels = operation(item);
    METRICS.claimed.get_or_create(&labels).inc();
    if let Some(created) = item.created_at {
        METRICS
            .pickup
            .get_or_create(&labels)
            .observe(seconds_since(created));
    }
}

/// Counts how a workitem ended and its end-to-end latency.
pub fn reported(item: &Workitem, report: &Report) {
    let labels = operation(item);
    let outcome = |outcome: &str| OutcomeLabels {
        operation: item.operation.clone(),
        outcome: outcome.to_owned(),
    };
    match report {
        Report::Completed => METRICS.completed.get_or_create(&labels).inc(),
        Report::Failed { status, .. } => METRICS.failed.get_or_create(&outcome(status)).inc(),
        Report::Released { .. } => METRICS.returned.get_or_create(&outcome("released")).inc(),
        Report::Abandoned { .. } => METRICS.returned.get_or_create(&outcome("abandoned")).inc(),
        Report::Cancelled { .. } => METRICS.returned.get_or_create(&outcome("cancelled")).inc(),
    };
    if let Some(created) = item.created_at {
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
