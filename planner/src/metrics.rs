//! The planner's metrics (see `k8sworker_telemetry::metrics`): plan steps by
//! action, Execute calls in flight and their duration. Served on
//! `--metrics-addr`.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

/// A plan step's action (`create`, `update`, `delete`, `scale`, `noop`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The action.
    pub action: &'static str,
}

/// An operation (`deploy`, `undeploy`, `verify`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The operation.
    pub operation: String,
}

/// The planner's metric families.
#[derive(Debug)]
pub struct Metrics {
    /// `k8sworker_planner_plan_steps_total{action}`.
    pub steps: Family<ActionLabels, Counter>,
    /// `k8sworker_planner_executions_in_flight`.
    pub in_flight: Gauge,
    /// `k8sworker_planner_execute_duration_seconds{operation}`.
    pub duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
}

/// The families, registered on first use ([`register`] at start-up).
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    k8sworker_telemetry::metrics::register(|registry| {
        let registry = registry.sub_registry_with_prefix("planner");
        let metrics = Metrics {
            steps: Family::default(),
            in_flight: Gauge::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(k8sworker_telemetry::metrics::latency_buckets())
            }),
        };
        registry.register(
            "plan_steps",
            "Steps of the plans made for Execute, by action (noop steps cost no write)",
            metrics.steps.clone(),
        );
        registry.register(
            "executions_in_flight",
            "Execute calls being served",
            metrics.in_flight.clone(),
        );
        registry.register_with_unit(
            "execute_duration",
            "Execute calls from request to answer (observe, plan, apply, health), whatever the outcome",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        metrics
    })
});

/// Registers the families so that a scrape shows them before any call.
pub fn register() {
    LazyLock::force(&METRICS);
}

/// Counts the steps of a plan.
pub fn planned(plan: &k8sworker_core::plan::Plan) {
    for step in &plan.steps {
        METRICS
            .steps
            .get_or_create(&ActionLabels {
                action: step.action.as_str(),
            })
            .inc();
    }
}

/// One Execute call in flight; dropping it records its duration.
#[derive(Debug)]
pub struct Execution {
    operation: String,
    started: Instant,
}

impl Execution {
    /// An Execute call of `operation` starts.
    pub fn start(operation: &str) -> Execution {
        METRICS.in_flight.inc();
        Execution {
            operation: operation.to_owned(),
            started: Instant::now(),
        }
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        METRICS.in_flight.dec();
        METRICS
            .duration
            .get_or_create(&OperationLabels {
                operation: std::mem::take(&mut self.operation),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}
