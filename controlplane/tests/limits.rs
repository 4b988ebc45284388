//! The limits no caller may exceed, each answered with a clear Vantiq
//! error and nothing written: login rate and concurrency, `where` size,
//! depth and `$regex` count, documents per namespace, `inboundPort`
//! entries, the worker token's cluster, documents mounted by deploys,
//! cancellation of a leased workitem and the `self` quota's dimensions.

mod common;

use std::time::Duration;

use common::{Client, TestServer, assert_error, http};
use reqwest::StatusCode;
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
