//! The web console over HTTP, as a browser speaks to it: the session
//! cookie's attributes, CSRF on every form post, expiry and logout, and
//! what each profile is offered and allowed (the browser tests in
//! `tests/e2e/tests/console.rs` walk the screens against a real cluster).

mod common;

use common::{TestServer, deploy_data};
use reqwest::{StatusCode, header};
use serde_json::json;

/// A form body (`application/x-www-form-urlencoded`).
fn encode(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

fn client() -> reqwest::Client {
    k8sworker_client::tls::install_default_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of the first hidden `csrf` input of a page.
fn csrf_of(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf input") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// `name=value` of a `Set-Cookie` header for `name`, and the whole header.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let pair = v.split(';').next().unwrap().to_owned();
            (pair, v.to_owned())
        })
}

/// Posts the login form as a browser does (the form's token and its
/// cookie from a fresh login page), with `https` saying whether a TLS proxy
/// forwarded it.
async fn login_attempt(base: &str, user: &str, password: &str, https: bool) -> reqwest::Response {
    let http = client();
    let page = http.get(format!("{base}/ui/login")).send().await.unwrap();
    let (login_cookie, _) = set_cookie(&page, "k8sworker_login").expect("login cookie");
    let nonce = csrf_of(&page.text().await.unwrap());
    let mut request = http
        .post(format!("{base}/ui/login"))
        .header(header::COOKIE, login_cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(encode(&[
            ("csrf", nonce.as_str()),
            ("username", user),
            ("password", password),
        ]));
    if https {
        request = request.header("x-forwarded-proto", "https");
    }
    request.send().await.unwrap()
}

/// Signs in through the login form; the session cookie (`name=value`).
async fn sign_in(base: &str, user: &str, password: &str) -> String {
    let response = login_attempt(base, user, password, false).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    set_cookie(&response, "k8sworker_session")
        .expect("session")
        .0
}

async fn get(base: &str, cookie: &str, path: &str) -> reqwest::Response {
    client()
        .get(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

async fn post(base: &str, cookie: &str, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(encode(form))
        .send()
        .await
        .unwrap()
}

/// The CSRF token of a signed-in session (from its clusters page).
async fn session_csrf(base: &str, cookie: &str) -> String {
    csrf_of(
        &get(base, cookie, "/ui/clusters")
            .await
            .text()
            .await
            .unwrap(),
    )
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_session_cookie_is_httponly_strict_and_secure_behind_tls() {
    let t = TestServer::start().await;
    let response = login_attempt(&t.base, "admin", common::ADMIN_PASSWORD, true).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/ui/clusters");
    let (_, header) = set_cookie(&response, "k8sworker_session").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Secure"] {
        assert!(header.contains(attribute), "{attribute} in {header}");
    }
    // Over plain HTTP, no `Secure` (the browser would drop the cookie).
    let cookie = sign_in(&t.base, "admin", common::ADMIN_PASSWORD).await;
    let page = get(&t.base, &cookie, "/ui/clusters").await;
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    t.stop().await;
}

#[tokio::test]
async fn a_login_without_its_form_token_or_with_a_wrong_password_signs_nobody_in() {
    let t = TestServer::start().await;
    let http = client();
    let response = http
        .post(format!("{}/ui/login", t.base))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(encode(&[
            ("csrf", "guess"),
            ("username", "admin"),
            ("password", common::ADMIN_PASSWORD),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&response, "k8sworker_session").is_none());
    let response = login_attempt(&t.base, "admin", "wrong", false).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&response, "k8sworker_session").is_none());
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Wrong user name or password")
    );
    t.stop().await;
}

#[tokio::test]
async fn a_form_post_without_the_session_csrf_token_changes_nothing() {
    let t = TestServer::start().await;
    let cookie = sign_in(&t.base, "admin", common::ADMIN_PASSWORD).await;
    for csrf in ["", "0000"] {
        let response = post(
            &t.base,
            &cookie,
            "/ui/clusters",
            &[("csrf", csrf), ("name", "c1")],
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    let (_, clusters) = t.admin.get("/api/v1/resources/k8sclusters").await;
    assert_eq!(clusters, json!([]));
    // With the page's token, the same post creates it.
    let page = get(&t.base, &cookie, "/ui/clusters")
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    let response = post(
        &t.base,
        &cookie,
        "/ui/clusters",
        &[("csrf", &csrf), ("name", "c1")],
    )
    .await;
    assert_eq!(location(&response), "/ui/clusters/c1");
    let (_, clusters) = t.admin.get("/api/v1/resources/k8sclusters").await;
    assert_eq!(clusters[0]["name"], "c1");
    t.stop().await;
}

#[tokio::test]
async fn an_unknown_or_revoked_token_sends_the_browser_to_sign_in_again() {
    let t = TestServer::start().await;
    let response = get(&t.base, "k8sworker_session=not-a-token", "/ui/clusters").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/ui/login?expired=1");
    let (_, cleared) = set_cookie(&response, "k8sworker_session").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // Logout revokes the token itself, not only the cookie.
    let cookie = sign_in(&t.base, "admin", common::ADMIN_PASSWORD).await;
    let csrf = session_csrf(&t.base, &cookie).await;
    let response = post(&t.base, &cookie, "/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(location(&response), "/ui/login?out=1");
    let response = get(&t.base, &cookie, "/ui/clusters").await;
    assert_eq!(location(&response), "/ui/login?expired=1");
    let token = cookie.split_once('=').unwrap().1;
    let (status, _) = common::Client::new(&t.base, token)
        .get("/api/v1/resources/k8sclusters")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    t.stop().await;
}

#[tokio::test]
async fn a_worker_token_gets_no_console() {
    let t = TestServer::start().await;
    let worker = t.worker().await;
    let response = get(
        &t.base,
        &format!("k8sworker_session={}", worker.token),
        "/ui/clusters",
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.text().await.unwrap().contains("no console"));
    t.stop().await;
}

#[tokio::test]
async fn a_user_is_offered_no_admin_action_and_refused_one_forced() {
    let t = TestServer::start().await;
    t.admin.create_cluster("c1").await;
    let user = t.user().await;
    let cookie = format!("k8sworker_session={}", user.token);
    let response = get(&t.base, &cookie, "/ui/clusters").await;
    assert_eq!(location(&response), "/ui/installations");
    let page = get(&t.base, &cookie, "/ui/installations")
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains("href=\"/ui/clusters\""), "no Clusters link");
    let response = get(&t.base, &cookie, "/ui/clusters/c1/deploy").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Forced: the server refuses, and nothing is queued or created.
    let csrf = csrf_of(&page);
    let data = deploy_data("web");
    let response = post(
        &t.base,
        &cookie,
        "/ui/clusters/c1/deploy",
        &[
            ("csrf", &csrf),
            ("name", "web"),
            ("k8sNamespace", data["k8sNamespace"].as_str().unwrap()),
            ("config[0].type", "image"),
            ("config[0].name", "registry.example.com/app:1"),
            ("action", "deploy"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = post(
        &t.base,
        &cookie,
        "/ui/clusters",
        &[("csrf", &csrf), ("name", "c2")],
    )
    .await;
    assert_eq!(location(&response), "/ui/clusters");
    assert_eq!(t.rows("k8sworkitems"), 0);
    let (_, clusters) = t.admin.get("/api/v1/resources/k8sclusters").await;
    assert_eq!(clusters.as_array().unwrap().len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn a_bad_entry_is_shown_next_to_its_field_and_nothing_is_queued() {
    let t = TestServer::start().await;
    t.admin.create_cluster("c1").await;
    let cookie = sign_in(&t.base, "admin", common::ADMIN_PASSWORD).await;
    let page = get(&t.base, &cookie, "/ui/clusters/c1/deploy")
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    let form = [
        ("csrf", csrf.as_str()),
        ("name", "jdbc"),
        ("k8sNamespace", "default"),
        ("config[0].type", "image"),
        ("config[0].name", "registry.example.com/jdbc:1"),
        ("config[1].type", "hostAlias"),
        ("config[1].name", "dbnode"),
        ("config[1].hostIP", "not-an-ip"),
    ];
    let answer: serde_json::Value =
        post(&t.base, &cookie, "/ui/clusters/c1/deploy/validate", &form)
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(answer["valid"], false);
    assert_eq!(answer["errors"][0]["field"], "config[1].hostIP");
    let mut submit = form.to_vec();
    submit.push(("action", "deploy"));
    let response = post(&t.base, &cookie, "/ui/clusters/c1/deploy", &submit).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = response.text().await.unwrap();
    let slot = page
        .split(r#"id="e-config[1].hostIP""#)
        .nth(1)
        .expect("the field's error slot");
    let shown = &slot[slot.find('>').unwrap() + 1..slot.find("</p>").unwrap()];
    assert!(shown.contains("not-an-ip"), "{shown}");
    assert_eq!(t.rows("k8sworkitems"), 0);
    t.stop().await;
}

#[tokio::test]
async fn the_worker_templates_download_passes_the_servers_zip_through() {
    let t = TestServer::start().await;
    t.admin.create_cluster("c1").await;
    let cookie = sign_in(&t.base, "admin", common::ADMIN_PASSWORD).await;
    let response = get(&t.base, &cookie, "/ui/clusters/c1/templates").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/zip");
    let zip = response.bytes().await.unwrap();
    assert!(zip.starts_with(b"PK"), "a zip archive");
    // An unknown cluster: the server's refusal, shown as a page.
    let response = get(&t.base, &cookie, "/ui/clusters/nope/templates").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    t.stop().await;
}

/// A name in a console path is one segment of the API path it calls: a
/// space, `?`, `#` or `/` in it is a name the API does not know, never a
/// crash of the request, another query or another resource.
#[tokio::test]
async fn a_name_in_a_console_path_stays_one_segment_of_the_api_path() {
    let t = TestServer::start().await;
    t.admin.create_cluster("c1").await;
    let cookie = sign_in(&t.base, "admin", common::ADMIN_PASSWORD).await;
    let csrf = session_csrf(&t.base, &cookie).await;
    for (post, path) in [
        (false, "/ui/clusters/a%20b"),
        (false, "/ui/clusters/c1%3Fx=1"),
        (false, "/ui/clusters/c1%2F..%2Fc1"),
        (false, "/ui/installations/a%20b"),
        (false, "/ui/documents/a%20b"),
        (true, "/ui/clusters/a%20b/delete"),
        (true, "/ui/clusters/c1%3Fx=1/delete"),
        (true, "/ui/clusters/c1%2F..%2Fc1/delete"),
    ] {
        let url = format!("{}{path}", t.base);
        let request = if post {
            client()
                .post(url)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(encode(&[("csrf", csrf.as_str())]))
        } else {
            client().get(url)
        };
        let response = request
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .unwrap_or_else(|error| panic!("{path}: no answer: {error}"));
        if post {
            assert!(!response.status().is_server_error(), "{path}");
        } else {
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }
    let (_, clusters) = t.admin.get("/api/v1/resources/k8sclusters").await;
    assert_eq!(clusters.as_array().map(Vec::len), Some(1), "{clusters}");
    assert_eq!(clusters[0]["name"], "c1");
    t.stop().await;
}

/// A fetched log's link on its installation's page names that document
/// even when its name holds `?`, `#` or `%`, and the link opens it.
#[tokio::test]
async fn a_document_link_opens_that_document_whatever_its_name() {
    let t = TestServer::start().await;
    t.admin.create_cluster("c1").await;
    t.admin.deploy("c1", "jdbc").await;
    let worker = t.worker().await;
    let claimed = worker.claim("c1", 1.0).await;
    assert_eq!(worker.complete(&claimed, json!({})).await.0, StatusCode::OK);
    let name = "c1/jdbc/pod a?b#c%41.log";
    let (status, _) = t.admin.upload(name, "text/plain", b"the log").await;
    assert!(status.is_success());
    let cookie = sign_in(&t.base, "admin", common::ADMIN_PASSWORD).await;
    let page = get(&t.base, &cookie, "/ui/installations/jdbc")
        .await
        .text()
        .await
        .unwrap();
    let href = r#"href="/ui/documents/c1/jdbc/pod%20a%3Fb%23c%2541.log""#;
    assert!(page.contains(href), "{page}");
    let document = get(
        &t.base,
        &cookie,
        "/ui/documents/c1/jdbc/pod%20a%3Fb%23c%2541.log",
    )
    .await;
    assert_eq!(document.status(), StatusCode::OK);
    assert!(document.text().await.unwrap().contains("the log"));
    t.stop().await;
}
