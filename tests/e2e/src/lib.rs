//! End-to-end harness: every component of k8sworker in one test process,
//! against the real test cluster.
//!
//! ```text
//! Vantiq (REST client) ──▶ ControlPlane   in-process server, temporary SQLite file, 127.0.0.1:0
//!                               ▲ claim/renew/complete
//!                          RunningGateway  the gateway library, on the test runtime
//!                               │ Planner.Execute
//!                          RunningPlanner  PlannerService, every Execute recorded (and delayable)
//!                               │ Observe/Apply
//!                          RunningExecutor from k8sworker-testsupport: its own runtime, the real
//!                                          ServiceAccount token of deploy/rbac, one namespace
//! ```
//!
//! Each test builds its own stack in its own temporary namespace; only the
//! Kubernetes cluster (and Jaeger) is shared. The tests are `#[ignore]`d so
//! that `cargo test` stays offline: `cargo test -p k8sworker-e2e -- --ignored`.

#![warn(missing_docs)]

pub mod stack;
pub mod vantiq;

pub use stack::{CLUSTER, ControlPlane, ExecuteLog, RunningGateway, RunningPlanner, Stack};
pub use vantiq::Vantiq;

use serde_json::{Value, json};

/// A deploy `data` that produces one of each generated object: a ConfigMap
/// (file content), a Secret (`asSecret`), the headless Service, the
/// StatefulSet, a NodePort Service and an Ingress (inbound port).
pub fn sample_deploy(name: &str, namespace: &str, replicas: i64, greeting: &str) -> Value {
    json!({
        "name": name,
        "k8sNamespace": namespace,
        "config": [
            {"type": "image", "name": "registry.example.com/k8sworker/app:1.0", "replicaCount": replicas},
            {"type": "file", "path": "/app/conf", "filename": "app.properties", "content": format!("greeting={greeting}\n")},
            {"type": "environmentVariable", "name": "MODE", "value": "e2e"},
            {"type": "environmentVariable", "name": "API_KEY", "value": "not-a-real-key", "asSecret": true},
            {"type": "inboundPort", "port": 8080, "protocol": "TCP", "portName": "http"},
        ]
    })
}
