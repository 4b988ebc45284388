//! Mutual TLS on the planner's gRPC port, attacked against the real test
//! cluster: Planner.Execute from a caller without a certificate, with the
//! certificates of the other components, and from one tenant's gateway for
//! another tenant. Each is refused with a clear status, the executor makes
//! no Kubernetes API call, and nothing appears in the namespace; the same
//! request from the tenant's own gateway then deploys.
//!
//! Run with `cargo test -p k8sworker-e2e -- --ignored`.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8sworker_core::owner::Tenant;
use k8sworker_core::validate::parse_and_validate;
use k8sworker_e2e::{CLUSTER, Stack, sample_deploy};
use k8sworker_proto::convert::installation_to_pb;
use k8sworker_proto::v1 as pb;
use k8sworker_proto::v1::planner_client::PlannerClient;
use k8sworker_testsupport::{pki, plans, with_temp_ns};
use k8sworker_tls::Identity;
use kube::Api;
use tonic::Code;

fn execute(ns: &str, tenant: &Tenant) -> pb::ExecuteRequest {
    let request = parse_and_validate(&sample_deploy("app", ns, 1, "tls")).expect("valid");
    pb::ExecuteRequest {
        workitem_id: "w-tls".into(),
        installation: Some(installation_to_pb(&request)),
        cluster: Some(pb::ClusterContext {
            cluster_name: CLUSTER.into(),
            ingress_default_node: "node".into(),
        }),
        tenant: Some(pb::Tenant {
            vantiq_namespace: tenant.vantiq_namespace.clone(),
            cluster: tenant.cluster.clone(),
        }),
        operation: pb::Operation::Deploy.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn only_a_tenants_own_gateway_may_execute_for_it() {
    with_temp_ns("e2e-mtls", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let tenant = plans::tenant();
        let planner = |caller: Option<&Identity>| {
            PlannerClient::new(pki::channel(&stack.planner.url(), caller, Identity::Planner))
        };
        let other_tenant = Tenant::new("intruder", CLUSTER).unwrap();
        let attacks = [
            (None, Code::Unauthenticated, "Planner.Execute needs a client certificate: the caller presented none".to_owned()),
            (
                Some(Identity::Preview),
                Code::PermissionDenied,
                "the caller is spiffe://k8sworker/preview".to_owned(),
            ),
            (
                Some(Identity::executor(ns.clone())),
                Code::PermissionDenied,
                format!("the caller is spiffe://k8sworker/executor/{ns}"),
            ),
            (
                Some(Identity::Planner),
                Code::PermissionDenied,
                "the caller is spiffe://k8sworker/planner".to_owned(),
            ),
            // Tenant B's gateway asking for tenant A.
            (
                Some(Identity::gateway(other_tenant.clone())),
                Code::PermissionDenied,
                format!(
                    "the request names tenant `{tenant}`, but the caller's certificate is the gateway of `{other_tenant}`"
                ),
            ),
        ];
        // The executor's own calls so far: its cache's list and watch of
        // each kind, made once it started.
        let before = stack.executor.calls().snapshot();
        for (caller, code, message) in attacks {
            let who = caller.as_ref().map_or("no certificate".to_owned(), ToString::to_string);
            let status = planner(caller.as_ref())
                .execute(execute(&ns, &tenant))
                .await
                .expect_err("refused");
            eprintln!("{who} → Planner.Execute: {:?} {}", status.code(), status.message());
            assert_eq!(status.code(), code, "{who}: {status:?}");
            assert!(status.message().contains(&message), "{who}: {status:?}");
        }
        assert!(stack.planner.log.calls().len() == 5, "every attack reached the planner's door");
        assert_eq!(
            stack.executor.calls().snapshot(),
            before,
            "the executor was never called: it made no API call after the attacks began"
        );
        let statefulsets = Api::<StatefulSet>::namespaced(admin.clone(), &ns);
        assert!(statefulsets.get_opt("app").await.unwrap().is_none(), "nothing written");

        // The tenant's own gateway: deployed.
        let answer = planner(Some(&Identity::gateway(tenant.clone())))
            .execute(execute(&ns, &tenant))
            .await
            .expect("the tenant's gateway executes")
            .into_inner();
        assert_eq!(answer.ack.and_then(|ack| ack.error), None);
        assert!(statefulsets.get_opt("app").await.unwrap().is_some());
    })
    .await;
}
