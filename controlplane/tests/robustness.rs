//! No request can stop the server: the requests that once panicked inside a
//! storage transaction (and so poisoned storage for every later request) are
//! refused with a clear Vantiq 400, nothing is written, and storage and
//! readiness keep answering.

mod common;

use common::{TestServer, assert_error};
use serde_json::json;

const TOKENS: &str = "/api/v1/resources/tokens";
const CLUSTERS: &str = "/api/v1/resources/k8sclusters";

/// Storage still serves: readiness, authentication, a write and a read.
async fn storage_works(t: &TestServer) {
    let http = common::http();
    for probe in ["/healthz", "/readyz"] {
        let response = http.get(format!("{}{probe}", t.base)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{probe}");
    }
    let admin = common::Client::login(&t.base, "admin", common::ADMIN_PASSWORD).await;
    let name = format!("ok{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    admin.create_cluster(&name).await;
    let (status, body) = admin.get(&format!("{CLUSTERS}/{name}")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_token_expiry_past_year_9999_is_refused_and_storage_keeps_working() {
    let t = TestServer::start().await;
    // The request of the report: 10000-01-01T00:00:00Z in epoch ms.
    for expires_at in [
        json!(253_402_300_800_000_i64),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(-1),
        json!(1.5),
        json!(1e300),
    ] {
        let (status, body) = t
            .admin
            .post(
                TOKENS,
                json!({"name": "t", "profiles": ["admin"], "expiresAt": expires_at}),
            )
            .await;
        assert_error(status, &body, 400, "io.vantiq.argument.invalid");
        assert_eq!(body[0]["params"], json!(["expiresAt"]), "{body}");
        assert!(
            body[0]["message"]
                .as_str()
                .unwrap()
                .contains("9999-12-31T23:59:59.999Z"),
            "{body}"
        );
    }
    // Nothing was written.
    let (status, body) = t.admin.get(TOKENS).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body
            .as_array()
            .unwrap()
            .iter()
            .any(|token| token["name"] == "t"),
        "{body}"
    );
    // The last instant the format can write is accepted and read back.
    let (status, body) = t
        .admin
        .post(
            TOKENS,
            json!({"name": "t", "profiles": ["admin"], "expiresAt": 253_402_300_799_999_i64}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expiresAt"], "9999-12-31T23:59:59.999Z");
    let late = common::Client::new(&t.base, body["accessToken"].as_str().unwrap());
    assert_eq!(late.get(CLUSTERS).await.0, 200);
    storage_works(&t).await;
    t.stop().await;
}

#[tokio::test]
async fn a_huge_operation_count_is_refused_and_counting_never_overflows() {
    let t = TestServer::start().await;
    t.admin.create_cluster("c1").await;
    for count in [
        json!(i64::MAX),
        json!(i64::MAX - 1),
        json!(1_u64 << 53),
        json!(-1),
        json!(0.5),
    ] {
        let (status, body) = t
            .admin
            .put(
                &format!("{CLUSTERS}/c1"),
                json!({"lifecycleOperationCount": count}),
            )
            .await;
        assert_error(status, &body, 400, "io.vantiq.argument.invalid");
        assert_eq!(
            body[0]["params"],
            json!(["lifecycleOperationCount"]),
            "{body}"
        );
    }
    let (_, cluster) = t.admin.get(&format!("{CLUSTERS}/c1")).await;
    assert_eq!(cluster["lifecycleOperationCount"], 0, "nothing was written");

    // The largest accepted count, then a command: the counter stays at
    // its ceiling instead of overflowing.
    let max = (1_i64 << 53) - 1;
    let (status, body) = t
        .admin
        .put(
            &format!("{CLUSTERS}/c1"),
            json!({"lifecycleOperationCount": max}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    t.admin.deploy("c1", "app").await;
    let (_, cluster) = t.admin.get(&format!("{CLUSTERS}/c1")).await;
    assert_eq!(cluster["lifecycleOperationCount"], max);
    storage_works(&t).await;
    t.stop().await;
}

#[tokio::test]
async fn a_quantity_near_the_arithmetic_limit_is_read_without_overflow() {
    let t = TestServer::start().await;
    t.admin.create_cluster("c1").await;
    // (2^67 - 1) Ei / 10^22: rounding it up to milli-units overflowed.
    let mut data = common::deploy_data("app");
    data["config"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "resourceRequest", "cpu": "0.0147573952589676412927Ei"}));
    let (status, body) = t.admin.command("c1", "deploy", data).await;
    assert_eq!(status, 200, "{body}");
    storage_works(&t).await;
    t.stop().await;
}

#[tokio::test]
async fn readiness_reports_storage_that_cannot_serve() {
    let t = TestServer::start().await;
    let http = common::http();
    let probe = |path: &'static str| {
        let http = http.clone();
        let base = t.base.clone();
        async move {
            let response = http.get(format!("{base}{path}")).send().await.unwrap();
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body)
        }
    };
    for path in ["/healthz", "/readyz"] {
        let (status, body) = probe(path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"status": "ok"}));
    }
    // Break the database under the running server.
    let database = t.dir.0.join("controlplane.db");
    let connection = rusqlite::Connection::open(&database).unwrap();
    connection
        .execute_batch("PRAGMA foreign_keys = OFF; DROP TABLE namespaces;")
        .unwrap();
    drop(connection);
    for path in ["/healthz", "/readyz"] {
        let (status, body) = probe(path).await;
        assert_error(status, &body, 503, "io.vantiq.storage.unavailable");
    }
    t.stop().await;
}
