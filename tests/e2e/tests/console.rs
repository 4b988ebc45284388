//! The web console in a real browser: headless Chromium (Debian's
//! `chromium` and `chromium-driver`, which `scripts/test.sh` installs)
//! driven over WebDriver, against the real control plane, gateway, planner,
//! executor and test cluster. It walks the guide's example: sign in, create
//! the cluster `minikube`, deploy `jdbc` with two host aliases and a file
//! from the Secret `jdbc-server-config` key `data`, see it reach RUNNING,
//! shut it down, restart it, fetch its logs, undeploy it; on the way, a bad
//! entry shows its error next to its field and submits nothing, a `user`
//! sees no action its profile does not allow (and the server refuses one
//! forced over REST), and the history shows each step with who and when.
//!
//! The installation goes into the test's temporary namespace rather than
//! `default`: the executor's identity is a Role in that one namespace.
//! Screenshots of each screen are saved under `target/console-screenshots/`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use k8s_openapi::api::core::v1::Secret;
use k8sworker_core::owner::Tenant;
use k8sworker_e2e::stack::{ADMIN_PASSWORD, gateway_config};
use k8sworker_e2e::{ControlPlane, RunningGateway, RunningPlanner};
use k8sworker_testsupport::{ExecutorIdentity, RunningExecutor, plans, with_temp_ns};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);
const CLUSTER: &str = "minikube";
const USER_PASSWORD: &str = "user-password";

/// chromedriver on a loopback port, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "chromedriver cannot start ({error}): install Debian's `chromium` and \
                     `chromium-driver` (scripts/test.sh does)"
                )
            });
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session.
async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,1000", "--no-first-run", "--no-proxy-server",
        ]}),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await;
        match attempt {
            Ok(client) => return client,
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "chromedriver not ready yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("no browser session: {error}"),
        }
    }
}

/// Where the screenshots go (printed once).
fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    println!("screenshot: {}", path.display());
}

/// An element by id (ids hold `[`, `]` and `.`, which CSS would need escaped).
fn id(id: &str) -> String {
    format!("//*[@id='{id}']")
}

/// The element at `xpath`, once the page has it.
async fn element(client: &Client, xpath: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(xpath))
        .await
        .unwrap_or_else(|e| panic!("{xpath}: {e}"))
}

async fn click(client: &Client, xpath: &str) {
    element(client, xpath)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {xpath}: {e}"));
}

async fn fill(client: &Client, xpath: &str, text: &str) {
    let element = element(client, xpath).await;
    element.clear().await.expect("clear");
    element.send_keys(text).await.expect("type");
}

async fn choose(client: &Client, xpath: &str, value: &str) {
    element(client, xpath)
        .await
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("select {value} in {xpath}: {e}"));
}

/// The text of the element at `xpath`, or empty when there is none.
async fn text_of(client: &Client, xpath: &str) -> String {
    match client.find(Locator::XPath(xpath)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn exists(client: &Client, xpath: &str) -> bool {
    client.find(Locator::XPath(xpath)).await.is_ok()
}

/// Waits, without reloading the page, until the text at `xpath` satisfies
/// `done`; the page's own script must bring the change.
async fn wait_text(client: &Client, xpath: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = text_of(client, xpath).await;
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{xpath} still shows {text:?}; page:\n{}",
            client.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn sign_in(client: &Client, base: &str, username: &str, password: &str) {
    client
        .goto(&format!("{base}/ui/login"))
        .await
        .expect("login page");
    fill(client, &id("username"), username).await;
    fill(client, &id("password"), password).await;
    click(client, &id("sign-in")).await;
    wait_text(client, &id("whoami"), |text| text.starts_with(username)).await;
}

async fn sign_out(client: &Client) {
    click(client, "//form[@action='/ui/logout']/button").await;
    wait_text(client, &id("notice"), |text| text.contains("signed out")).await;
}

/// Clicks an installation action and waits for the page to show its status.
async fn act(client: &Client, op: &str, status: &str) {
    click(client, &id(&format!("op-{op}"))).await;
    wait_text(client, &id("flash"), |text| text.contains(op)).await;
    wait_text(client, &id("installation-status"), |text| text == status).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh) and chromium"]
async fn the_guides_example_in_a_browser() {
    with_temp_ns("e2e-console", |kube_admin, ns| async move {
        // The stack's parts, with an executor serving the tenant of `minikube`.
        let identity = ExecutorIdentity::create(&kube_admin, &ns).await;
        let tenant = Tenant::new(plans::tenant().vantiq_namespace, CLUSTER).expect("a tenant");
        let executor = RunningExecutor::allowing(&identity, &[tenant]).await;
        let control_plane = ControlPlane::start(|config| {
            config.trace_ui_url = Some("http://127.0.0.1:16686/trace/{traceId}".into());
        })
        .await;
        let planner = RunningPlanner::start(&[(ns.as_str(), executor.endpoint())]).await;
        let base = control_plane.url();
        let admin = control_plane.admin().await;
        let rest = &admin;
        let worker_token = rest.worker_token("gateway").await;
        let admin_name = control_plane.config.admin_username.clone();
        // The Secret the guide's file entry reads.
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "jdbc-server-config"},
            "stringData": {"data": "jdbc.url=jdbc:postgresql://dbnode:5432/vantiq\n"},
        }))
        .expect("a Secret");
        Api::<Secret>::namespaced(kube_admin.clone(), &ns)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create jdbc-server-config");
        // A user of the same namespace.
        let (status, body) = rest
            .post(
                "/api/v1/resources/users",
                json!({"username": "viewer", "password": USER_PASSWORD, "profiles": ["user"]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (preview_status, _) = rest
            .post("/api/v1/resources/k8sinstallations/preview", json!({}))
            .await;
        let has_preview = !matches!(preview_status, 404 | 405);
        let (history_status, _) = rest.get("/api/v1/resources/k8soperations").await;
        let has_history = !matches!(history_status, 404 | 405);

        let driver = Driver::start();
        let client = browser(&driver).await;

        // Sign in; a wrong password is refused on the page.
        client
            .goto(&format!("{base}/ui/clusters"))
            .await
            .expect("console");
        wait_text(&client, "//h1", |text| text.contains("sign in")).await;
        screenshot(&client, "01-login").await;
        fill(&client, &id("username"), &admin_name).await;
        fill(&client, &id("password"), "wrong-password").await;
        click(&client, &id("sign-in")).await;
        wait_text(&client, &id("login-error"), |text| text.contains("Wrong")).await;
        sign_in(&client, &base, &admin_name, ADMIN_PASSWORD).await;

        // New cluster `minikube`.
        fill(&client, &id("cluster-name"), CLUSTER).await;
        click(&client, &id("create-cluster")).await;
        wait_text(&client, "//h1", |text| text == "Cluster minikube").await;
        client
            .goto(&format!("{base}/ui/clusters"))
            .await
            .expect("clusters");
        wait_text(&client, "//tr[@data-cluster='minikube']/td[2]", |text| {
            text == "vantiq-minikube-node"
        })
        .await;
        screenshot(&client, "02-clusters").await;
        let gateway = RunningGateway::start(gateway_config(
            CLUSTER,
            &base,
            &worker_token,
            &planner.url(),
        ));

        // The deploy dialog: a bad host alias shows its error next to its
        // field as you type, and Deploy submits nothing.
        client
            .goto(&format!("{base}/ui/clusters/{CLUSTER}"))
            .await
            .expect("cluster panel");
        click(&client, &id("deploy")).await;
        fill(&client, &id("f-name"), "jdbc").await;
        fill(&client, &id("f-k8sNamespace"), &ns).await;
        fill(
            &client,
            &id("f-config[0].name"),
            "registry.example.com/vantiq/jdbc-source:1.0",
        )
        .await;
        choose(&client, &id("add-type"), "hostAlias").await;
        click(&client, &id("add-entry")).await;
        fill(&client, &id("f-config[1].name"), "dbnode").await;
        fill(&client, &id("f-config[1].hostIP"), "not-an-ip").await;
        let error = wait_text(&client, &id("e-config[1].hostIP"), |text| !text.is_empty()).await;
        assert!(error.contains("not-an-ip"), "{error}");
        click(&client, &id("submit-deploy")).await;
        let error = wait_text(&client, &id("e-config[1].hostIP"), |text| !text.is_empty()).await;
        assert!(error.contains("not-an-ip"), "{error}");
        assert_eq!(
            client
                .find(Locator::XPath(&id("f-config[1].hostIP")))
                .await
                .expect("field")
                .attr("aria-invalid")
                .await
                .expect("attribute"),
            Some("true".into())
        );
        screenshot(&client, "03-deploy-error").await;
        assert!(rest.workitems().await.is_empty(), "nothing was submitted");
        assert!(rest.installation("jdbc").await.is_none());

        // Corrected, with the second alias and the file from the Secret.
        fill(&client, &id("f-config[1].hostIP"), "10.20.0.5").await;
        choose(&client, &id("add-type"), "hostAlias").await;
        click(&client, &id("add-entry")).await;
        fill(&client, &id("f-config[2].name"), "vantiqhost").await;
        fill(&client, &id("f-config[2].hostIP"), "10.20.0.6").await;
        choose(&client, &id("add-type"), "file").await;
        click(&client, &id("add-entry")).await;
        fill(&client, &id("f-config[3].path"), "/opt/jdbc/config").await;
        fill(&client, &id("f-config[3].filename"), "jdbc.properties").await;
        choose(&client, &id("f-config[3].dataSource"), "secret").await;
        fill(&client, &id("f-config[3].name"), "jdbc-server-config").await;
        fill(&client, &id("f-config[3].key"), "data").await;
        click(&client, &id("preview")).await;
        if has_preview {
            let objects = wait_text(&client, &id("preview-objects"), |text| {
                text.contains("StatefulSet/jdbc")
            })
            .await;
            assert!(!objects.contains("jdbc.url"), "secret values are masked");
        } else {
            wait_text(&client, &id("preview-missing"), |text| !text.is_empty()).await;
        }
        client
            .execute(
                "document.getElementById('preview-objects').scrollIntoView()",
                Vec::new(),
            )
            .await
            .expect("scroll to the preview");
        screenshot(&client, "04-deploy-preview").await;
        click(&client, &id("submit-deploy")).await;
        wait_text(&client, &id("flash"), |text| {
            text.contains("deploy of jdbc")
        })
        .await;

        // The cluster panel follows the deploy without a reload.
        let status_cell = "//tr[@data-installation='jdbc']/td[4]";
        wait_text(&client, status_cell, |text| text == "RUNNING").await;
        screenshot(&client, "05-cluster-panel").await;
        let record = rest.installation("jdbc").await.expect("installation");
        assert_eq!(record["k8sNamespace"], ns.as_str());
        let spec = &record["configSpec"];
        assert_eq!(
            spec[1],
            json!({"type": "hostAlias", "name": "dbnode", "hostIP": "10.20.0.5"})
        );
        assert_eq!(
            spec[2],
            json!({"type": "hostAlias", "name": "vantiqhost", "hostIP": "10.20.0.6"})
        );
        assert_eq!(
            spec[3],
            json!({"type": "file", "path": "/opt/jdbc/config", "filename": "jdbc.properties",
                   "dataSource": "secret", "name": "jdbc-server-config", "key": "data"})
        );

        // The installation page; shut down and restart.
        click(&client, "//tr[@data-installation='jdbc']/td[1]/a").await;
        wait_text(&client, &id("installation-status"), |text| {
            text == "RUNNING"
        })
        .await;
        assert!(
            text_of(&client, &id("installation-props"))
                .await
                .contains("k8sAssociatedServices"),
        );
        screenshot(&client, "06-installation").await;
        act(&client, "shutdown", "STOPPED").await;
        act(&client, "restart", "RUNNING").await;
        // Redeploy opens the dialog filled from the configSpec.
        click(&client, &id("redeploy")).await;
        let alias = element(&client, &id("f-config[2].hostIP")).await;
        assert_eq!(
            alias.prop("value").await.expect("value"),
            Some("10.20.0.6".into())
        );
        let source = element(&client, &id("f-config[3].dataSource")).await;
        assert_eq!(
            source.prop("value").await.expect("value"),
            Some("secret".into())
        );
        assert_eq!(
            element(&client, &id("f-name"))
                .await
                .prop("value")
                .await
                .expect("value"),
            Some("jdbc".into())
        );
        client.back().await.expect("back");

        // A user sees the installation and may only verify it.
        sign_out(&client).await;
        sign_in(&client, &base, "viewer", USER_PASSWORD).await;
        assert!(!exists(&client, "//nav/a[@href='/ui/clusters']").await);
        client
            .goto(&format!("{base}/ui/installations/jdbc"))
            .await
            .expect("installation page");
        wait_text(&client, &id("installation-status"), |text| {
            text == "RUNNING"
        })
        .await;
        assert!(exists(&client, &id("op-verify")).await);
        for hidden in [
            "op-shutdown",
            "op-restart",
            "op-undeploy",
            "op-fetchLogs",
            "redeploy",
        ] {
            assert!(
                !exists(&client, &id(hidden)).await,
                "{hidden} shown to a user"
            );
        }
        screenshot(&client, "07-installation-as-user").await;
        client
            .goto(&format!("{base}/ui/clusters"))
            .await
            .expect("clusters");
        wait_text(&client, "//h1", |text| text == "K8s installations").await;
        // Forced over REST, the server refuses, and nothing is queued.
        let viewer = k8sworker_e2e::Vantiq::login(&base, "viewer", USER_PASSWORD).await;
        let before = rest.workitems().await.len();
        let (status, body) = viewer
            .post(
                "/api/v1/resources/k8sinstallations/jdbc/command",
                json!({"op": "shutdown", "data": {"name": "jdbc"}}),
            )
            .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(rest.workitems().await.len(), before);
        sign_out(&client).await;

        // Back as the admin: fetch the logs and read them.
        sign_in(&client, &base, &admin_name, ADMIN_PASSWORD).await;
        client
            .goto(&format!("{base}/ui/installations/jdbc"))
            .await
            .expect("installation page");
        click(&client, &id("op-fetchLogs")).await;
        wait_text(&client, "//ul[@id='logs']/li[1]/a", |text| {
            text.starts_with("minikube/jdbc/")
        })
        .await;
        click(&client, "//ul[@id='logs']/li[1]/a").await;
        wait_text(&client, "//h1", |text| text.starts_with("minikube/jdbc/")).await;
        assert!(exists(&client, &id("document")).await);
        screenshot(&client, "08-fetched-log").await;
        client.back().await.expect("back");

        // Undeploy: the installation leaves the cluster panel.
        wait_text(&client, &id("installation-status"), |text| {
            text == "RUNNING"
        })
        .await;
        click(&client, &id("op-undeploy")).await;
        wait_text(&client, &id("flash"), |text| text.contains("undeploy")).await;
        let deadline = Instant::now() + WAIT;
        while rest.installation("jdbc").await.is_some() {
            assert!(Instant::now() < deadline, "jdbc is still installed");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        client
            .goto(&format!("{base}/ui/clusters/{CLUSTER}"))
            .await
            .expect("cluster panel");
        wait_text(&client, "//h1", |text| text == "Cluster minikube").await;
        assert!(!exists(&client, "//tr[@data-installation='jdbc']").await);

        // The history: each step with who and when.
        if has_history {
            let rows = wait_text(&client, &id("history"), |text| text.contains("undeploy")).await;
            let mut seen = BTreeMap::new();
            for row in client
                .find_all(Locator::XPath("//table[@id='history']/tbody/tr"))
                .await
                .expect("history rows")
            {
                let cells = row.find_all(Locator::XPath("./td")).await.expect("cells");
                let mut texts = Vec::new();
                for cell in cells {
                    texts.push(cell.text().await.expect("cell text"));
                }
                if texts[1] != "jdbc" || texts[0] == "verify" {
                    continue;
                }
                assert_eq!(texts[2], admin_name, "who: {rows}");
                assert!(!texts[3].is_empty(), "when: {rows}");
                seen.insert(texts[0].clone(), texts[6].clone());
            }
            for op in ["deploy", "shutdown", "restart", "fetchLogs", "undeploy"] {
                assert_eq!(
                    seen.get(op).map(String::as_str),
                    Some("SUCCEEDED"),
                    "{op}: {seen:?}"
                );
            }
        } else {
            wait_text(&client, &id("history-missing"), |text| !text.is_empty()).await;
        }
        // A narrow window: one column.
        client
            .set_window_size(400, 900)
            .await
            .expect("narrow window");
        screenshot(&client, "09-cluster-panel-narrow").await;

        // The session ends with the token: revoked, the console asks to sign in again.
        let (status, _) = rest.get("/api/v1/resources/k8sworkitems").await;
        assert_eq!(status, 200);
        client.set_window_size(1280, 1000).await.expect("window");
        sign_out(&client).await;
        client
            .goto(&format!("{base}/ui/clusters"))
            .await
            .expect("clusters");
        wait_text(&client, "//h1", |text| text.contains("sign in")).await;

        client.close().await.expect("browser closes");
        let _summary = gateway.stop().await;
    })
    .await;
}
