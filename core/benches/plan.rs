//! Render + diff of a 6-component installation: the planner's hot path.
//! Run with `cargo bench -p k8sworker-core --bench plan`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use k8sworker_core::diff::{Observed, diff};
use k8sworker_core::labels;
use k8sworker_core::operation::Work;
use k8sworker_core::owner::Tenant;
use k8sworker_core::plan::Operation;
use k8sworker_core::render::{Ancillaries, ClusterContext, render};
use k8sworker_core::validate::parse_and_validate;

fn request() -> serde_json::Value {
    serde_json::json!({
        "name": "camelconn",
        "k8sNamespace": "connectors",
        "config": [
            {"type": "image", "name": "quay.io/vantiq/camelconnector-source:1.4.0", "replicaCount": 2},
            {"type": "file", "path": "/app/serverConfig", "filename": "server.config", "content": "targetServer=https://vantiq.example.com\nsources=camelSource\n"},
            {"type": "environmentVariable", "name": "CONNECTOR_AUTH_TOKEN", "value": "s3cr3t", "asSecret": true},
            {"type": "resourceLimit", "cpu": "1", "memory": "1Gi"},
            {"type": "inboundPort", "port": 8080, "protocol": "TCP", "portName": "http"},
            {"type": "probe", "probeType": "readiness", "requestType": "http", "port": "http", "path": "/health"}
        ]
    })
}

fn bench(c: &mut Criterion) {
    let request = parse_and_validate(&request()).unwrap();
    let cluster = ClusterContext {
        cluster_name: "prod".into(),
        ingress_default_node: "node".into(),
        tenant: Some(Tenant::new("acme", "prod").unwrap()),
    };
    let tenant = cluster.tenant.clone().unwrap();
    let ancillaries = Ancillaries::default();
    let desired = render(&request, &cluster, &ancillaries).unwrap();
    assert_eq!(desired.len(), 6);
    // Everything exists as rendered: the common re-deploy, all noop.
    let observed: Vec<Observed> = desired
        .iter()
        .enumerate()
        .map(|(i, c)| Observed {
            id: c.id(),
            uid: format!("uid-{i}"),
            resource_version: "42".into(),
            spec_hash: Some(c.spec_hash.clone()),
            owner: Some(request.name.clone()),
            owner_record: c
                .object
                .metadata()
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::OWNER))
                .cloned(),
            replicas: None,
            ready_replicas: None,
            foreign_managers: Vec::new(),
            immutable: Default::default(),
            foreign_fields: Vec::new(),
        })
        .collect();

    let mut group = c.benchmark_group("planner");
    group.throughput(Throughput::Elements(1));
    group.bench_function("render", |b| {
        b.iter(|| render(&request, &cluster, &ancillaries).unwrap())
    });
    let plan = |observed: &[Observed]| {
        let desired = render(&request, &cluster, &ancillaries).unwrap();
        diff(
            Operation::Deploy,
            &tenant,
            &request.name,
            &request.k8s_namespace,
            &desired,
            observed,
            2,
        )
        .unwrap()
    };
    group.bench_function("render+diff/fresh", |b| b.iter(|| plan(&[])));
    group.bench_function("render+diff/unchanged", |b| b.iter(|| plan(&observed)));
    // What the planner's Execute does per attempt: read and validate the
    // request, render (Work::new) and diff (Work::plan).
    group.bench_function("validate+render+diff/from-json", |b| {
        let data = self::request();
        b.iter(|| {
            let request = parse_and_validate(&data).unwrap();
            let work = Work::new(Operation::Deploy, request, &cluster, &ancillaries).unwrap();
            work.plan(&observed).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
