//! The limits no caller may exceed, each answered with a clear Vantiq
//! error and nothing written: login rate and concurrency, `where` size,
//! depth and `$regex` count, documents per namespace, `inboundPort`
//! entries, the worker token's cluster, documents mounted by deploys,
//! cancellation of a leased workitem and the `self` quota's dimensions.

mod common;

use common::{Client, TestServer, assert_error, http};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `SELECT count(*) FROM <table>` on the server's database file.
fn rows(t: &TestServer, table: &str) -> i64 {
    let connection = rusqlite::Connection::open_with_flags(
        t.dir.0.join("controlplane.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    connection
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .unwrap()
}

async fn login(
    t: &TestServer,
    user: &str,
    password: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = http()
        .get(format!("{}/authenticate", t.base))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

#[tokio::test]
async fn logins_beyond_the_rate_are_refused_without_verifying_or_issuing() {
    let t = TestServer::start_with(|config| config.auth_attempts_per_minute = 3).await;
    // The admin session of TestServer::start took one attempt.
    let sessions = rows(&t, "tokens");
    let (status, _, _) = login(&t, "admin", "wrong-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = login(&t, "nobody", "wrong-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The fourth attempt within the minute: refused even with the right password.
    let (status, headers, body) = login(&t, "admin", common::ADMIN_PASSWORD).await;
    assert_error(status, &body, 429, "io.vantiq.authentication.rate.limited");
    assert_eq!(body[0]["params"][0], 3);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(body[0]["params"][1], retry);
    assert_eq!(rows(&t, "tokens"), sessions, "no session was issued");
    // Bearer tokens are not logins: the admin's session still works.
    let (status, _) = t.admin.get("/api/v1/resources/k8sclusters").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn logins_beyond_the_concurrency_are_refused_at_once() {
    // One verification at a time, each slow enough to overlap the others.
    let t = TestServer::start_with(|config| {
        config.auth_concurrency = 1;
        config.password_hash_iterations = 100_000;
    })
    .await;
    let sessions = rows(&t, "tokens");
    let attempts = (0..4).map(|_| {
        let base = t.base.clone();
        tokio::spawn(async move {
            let response = http()
                .get(format!("{base}/authenticate"))
                .basic_auth("nobody", Some("wrong-password"))
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        })
    });
    let answers: Vec<(StatusCode, Value)> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let busy: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .map(|(_, body)| body)
        .collect();
    assert!(!busy.is_empty(), "{answers:?}");
    for body in busy {
        assert_error(
            StatusCode::TOO_MANY_REQUESTS,
            body,
            429,
            "io.vantiq.authentication.busy",
        );
        assert_eq!(body[0]["params"], json!([1]));
    }
    assert!(
        answers
            .iter()
            .any(|(status, _)| *status == StatusCode::UNAUTHORIZED),
        "{answers:?}"
    );
    assert_eq!(rows(&t, "tokens"), sessions);
    // Once the slot is free, logins work again.
    let _ = Client::login(&t.base, "admin", common::ADMIN_PASSWORD).await;
}

#[tokio::test]
async fn where_clauses_beyond_their_limits_are_refused_naming_the_limit() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    let regexes: Vec<Value> = (0..9)
        .map(|n| json!({"name": {"$regex": format!("^c{n}")}}))
        .collect();
    let clause = json!({"$or": regexes});
    let path = "/api/v1/resources/k8sclusters";
    let text = clause.to_string();
    let (status, _, body) = a
        .send(a.request(Method::GET, path).query(&[("where", &text)]))
        .await;
    assert_error(status, &body, 400, "io.vantiq.query.invalid");
    assert_eq!(body[0]["params"], json!(["$regex terms", 8, 9]));
    // The same through POST …/select and DELETE …?where=: nothing deleted.
    let (status, body) = a
        .post("/api/v1/resources/k8sclusters/select", clause.clone())
        .await;
    assert_error(status, &body, 400, "io.vantiq.query.invalid");
    let (status, _, body) = a
        .send(a.request(Method::DELETE, path).query(&[("where", &text)]))
        .await;
    assert_error(status, &body, 400, "io.vantiq.query.invalid");
    assert_eq!(rows(&t, "k8sclusters"), 1);
    let mut deep = json!({"name": "c1"});
    for _ in 0..20 {
        deep = json!({"$and": [deep]});
    }
    let (status, body) = a.post("/api/v1/resources/k8sclusters/select", deep).await;
    assert_error(status, &body, 400, "io.vantiq.query.invalid");
    assert_eq!(body[0]["params"][0], "levels of nesting");
    // Within the limits, selects answer as before.
    let (status, body) = a
        .post(
            "/api/v1/resources/k8sclusters/select",
            json!({"$or": regexes[..8].to_vec()}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 1);
}
