//! The control plane's metrics (see `k8sworker_telemetry::metrics`): the
//! workitems it hands out and closes through the claim protocol, by
//! operation. Served at `GET /metrics` on the API port.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// A workitem's operation (`deploy`, `undeploy`, `verify`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The operation.
    pub operation: String,
}

/// A failed workitem's operation and status (`FAILED` or `INVALID`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The operation.
    pub operation: String,
    /// `FAILED` or `INVALID`.
    pub status: String,
}

/// The control plane's metric families.
#[derive(Debug)]
pub struct Metrics {
    /// `k8sworker_controlplane_workitems_claimed_total{operation}`.
    pub claimed: Family<OperationLabels, Counter>,
    /// `k8sworker_controlplane_workitems_completed_total{operation}`.
    pub completed: Family<OperationLabels, Counter>,
    /// `k8sworker_controlplane_workitems_failed_total{operation,status}`.
    pub failed: Family<FailureLabels, Counter>,
}

/// The families, registered on first use ([`register`] at start-up).
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    k8sworker_telemetry::metrics::register(|registry| {
        let registry = registry.sub_registry_with_prefix("controlplane");
        let metrics = Metrics {
            claimed: Family::default(),
            completed: Family::default(),
            failed: Family::default(),
        };
        registry.register(
            "workitems_claimed",
            "Workitems handed to a gateway by claimWorkitem",
            metrics.claimed.clone(),
        );
        registry.register(
            "workitems_completed",
            "Workitems closed by completeWorkitem",
            metrics.completed.clone(),
        );
        registry.register(
            "workitems_failed",
            "Workitems closed by failWorkitem, by status (FAILED or INVALID)",
            metrics.failed.clone(),
        );
        metrics
    })
});

/// Registers the families so that a scrape shows them before any workitem.
pub fn register() {
    LazyLock::force(&METRICS);
}

/// Counts a claimed workitem.
pub fn claimed(operation: &str) {
    METRICS
        .claimed
        .get_or_create(&OperationLabels {
            operation: operation.to_owned(),
        })
        .inc();
}

/// Counts a completed workitem.
pub fn completed(operation: &str) {
    METRICS
        .completed
        .get_or_create(&OperationLabels {
            operation: operation.to_owned(),
        })
        .inc();
}

/// Counts a failed workitem; `status` is `FAILED` or `INVALID`.
pub fn failed(operation: &str, status: &str) {
    METRICS
        .failed
        .get_or_create(&FailureLabels {
            operation: operation.to_owned(),
            status: status.to_owned(),
        })
        .inc();
}
