//! The `k8sworker` binary against a real control plane (in-process, on
//! loopback), and — `#[ignore]`, with the test cluster — the demo's scenario
//! end to end: deploy, watch, get, logs, verify, undeploy.

use std::path::Path;

use k8sworker_e2e::stack::{ADMIN_PASSWORD, ControlPlane};
use k8sworker_e2e::{CLUSTER, Stack, sample_deploy};
use k8sworker_testsupport::with_temp_ns;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `k8sworker args…` with its session in `config`, `stdin` as input and
/// no K8SWORKER_* variable from the environment.
async fn k8sworker(config: &Path, args: &[&str], stdin: &str) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_k8sworker"));
    for (name, _) in std::env::vars() {
        if name.starts_with("K8SWORKER_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .arg("--config-dir")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("k8sworker runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!(
        "$ k8sworker {}\n{}{}",
        args.join(" "),
        run.stdout,
        run.stderr
    );
    run
}

/// Logs in as the admin of the control plane at `url`.
async fn login(config: &Path, url: &str, user: &str) -> Run {
    k8sworker(
        config,
        &[
            "login",
            "--server",
            url,
            "--username",
            user,
            "--password-stdin",
        ],
        &format!("{ADMIN_PASSWORD}\n"),
    )
    .await
}

fn write_request(dir: &Path, request: &Value) -> String {
    let name = request["name"].as_str().unwrap_or("request");
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, request.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_clusters_preview_deploy_and_refusals_against_the_control_plane() {
    let control_plane = ControlPlane::start(|_| {}).await;
    let url = control_plane.url();
    let admin = control_plane.config.admin_username.clone();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config");

    // Not logged in: exit 1, saying what to do.
    let run = k8sworker(&config, &["clusters", "list"], "").await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("log in"), "{}", run.stderr);
    // A wrong password stores nothing.
    let run = k8sworker(
        &config,
        &[
            "login",
            "--server",
            &url,
            "--username",
            &admin,
            "--password-stdin",
        ],
        "wrong-password\n",
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(!config.join("credentials.json").exists());

    let run = login(&config, &url, &admin).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let stored = std::fs::read_to_string(config.join("credentials.json")).unwrap();
    let token = serde_json::from_str::<Value>(&stored).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!run.stdout.contains(&token) && !run.stderr.contains(&token));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(config.join("credentials.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Clusters.
    let run = k8sworker(&config, &["clusters", "create", "c1"], "").await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("NAME"), "{}", run.stdout);
    assert!(run.stdout.contains("vantiq-c1-node"), "{}", run.stdout);
    let run = k8sworker(&config, &["clusters", "list", "-o", "json"], "").await;
    let list = run.json();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["name"], "c1");
    let run = k8sworker(&config, &["clusters", "list", "-o", "yaml"], "").await;
    assert!(run.stdout.contains("name: c1"), "{}", run.stdout);

    // The preview: the planner's render, Secret values masked, nothing sent.
    let request = sample_deploy("web", "apps", 1, "hello");
    let file = write_request(home.path(), &request);
    let run = k8sworker(
        &config,
        &[
            "deploy",
            "-f",
            &file,
            "--cluster",
            "c1",
            "--dry-run",
            "-o",
            "yaml",
        ],
        "",
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("vantiq-web-secret-0"), "{}", run.stdout);
    assert!(run.stdout.contains("<masked>"), "{}", run.stdout);
    assert!(!run.stdout.contains("not-a-real-key"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("bm90LWEtcmVhbC1rZXk"),
        "the value in base64"
    );
    let run = k8sworker(
        &config,
        &["deploy", "-f", &file, "--cluster", "c1", "--dry-run"],
        "",
    )
    .await;
    assert!(run.stdout.contains("StatefulSet   web"), "{}", run.stdout);
    let run = k8sworker(&config, &["installations", "get", "-o", "json"], "").await;
    assert_eq!(run.json()["items"], json!([]), "a preview sends nothing");
    // An invalid request is refused locally, naming the problem.
    let bad = write_request(
        home.path(),
        &json!({"name": "Web", "k8sNamespace": "apps", "config": []}),
    );
    let run = k8sworker(
        &config,
        &["deploy", "-f", &bad, "--cluster", "c1", "--dry-run"],
        "",
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not valid"), "{}", run.stderr);

    // The deploy itself: a REQUESTED workitem; no worker, so a watch times out.
    let run = k8sworker(
        &config,
        &["deploy", "-f", &file, "--cluster", "c1", "-o", "json"],
        "",
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let item = run.json();
    assert_eq!(item["status"], "REQUESTED");
    let request_id = item["requestId"].as_str().unwrap();
    let run = k8sworker(
        &config,
        &["workitems", "watch", request_id, "--timeout", "1s"],
        "",
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("still REQUESTED"), "{}", run.stderr);
    // A worker fails it: the watch ends with exit 1 and the message.
    let worker_token = control_plane.admin().await.worker_token("w").await;
    let worker = k8sworker_client::Client::builder(&url)
        .token(worker_token)
        .build()
        .unwrap();
    let procedure = |name: &str| format!("/api/v1/resources/procedures/K8sManager.{name}");
    let claimed = worker
        .post(
            &procedure("claimWorkitem"),
            &json!({"clusterName": "c1", "waitSeconds": 0}),
        )
        .await
        .unwrap()
        .body;
    assert_eq!(claimed["requestId"], request_id, "{claimed}");
    let failed = worker
        .post(
            &procedure("failWorkitem"),
            &json!({"requestId": request_id, "leaseId": claimed["leaseId"], "status": "FAILED", "message": "image pull failed"}),
        )
        .await
        .unwrap();
    assert_eq!(failed.status, 200, "{failed:?}");
    let run = k8sworker(&config, &["workitems", "watch", request_id], "").await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("FAILED: image pull failed"),
        "{}",
        run.stderr
    );
    let run = k8sworker(&config, &["installations", "get", "web"], "").await;
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);

    // Refusals: the server's message and exit 1.
    let run = k8sworker(&config, &["verify", "ghost"], "").await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("404"), "{}", run.stderr);
    let run = k8sworker(&config, &["clusters", "delete", "c1"], "").await;
    assert_eq!(run.code, 1, "a cluster with work is not deleted");
    let run = k8sworker(&config, &["clusters", "list", "--token", "not-a-token"], "").await;
    assert_eq!(run.code, 1);
    let run = k8sworker(&config, &["no-such-command"], "").await;
    assert_eq!(run.code, 1);
    let run = k8sworker(&config, &["--help"], "").await;
    assert_eq!(run.code, 0);
}

/// The demo's scenario (`scripts/demo.sh`) through the command line: deploy
/// the sample installation and watch it complete, read it, fetch its logs,
/// verify it, undeploy it; a FAILED workitem exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn the_demo_scenario_through_the_command_line() {
    with_temp_ns("cli-demo", |_admin, ns| async move {
        let stack = Stack::start(&_admin, &ns, |_| {}).await;
        let _gateway = stack.gateway();
        let url = stack.control_plane.url();
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join("config");
        let run = login(&config, &url, &stack.control_plane.config.admin_username).await;
        assert_eq!(run.code, 0, "{}", run.stderr);

        let file = write_request(home.path(), &sample_deploy("web", &ns, 1, "hello"));
        let run = k8sworker(
            &config,
            &["deploy", "-f", &file, "--cluster", CLUSTER, "-o", "json"],
            "",
        )
        .await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let request_id = run.json()["requestId"].as_str().unwrap().to_owned();
        let run = k8sworker(&config, &["workitems", "watch", &request_id], "").await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stdout.contains("completed"), "{}", run.stdout);

        let run = k8sworker(&config, &["installations", "get", "web"], "").await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stdout.contains("RUNNING"), "{}", run.stdout);
        let run = k8sworker(&config, &["installations", "get", "web", "-o", "json"], "").await;
        let record = run.json();
        assert_eq!(record["installationStatus"], "RUNNING");
        assert_eq!(
            record["k8sAssociatedSecrets"],
            json!(["vantiq-web-secret-0"])
        );

        // The live plan from the planner, as a preview client, applying
        // nothing. Secret values are planned from stand-ins (a NOOP would
        // tell a right guess): for the deployed request only the Secret
        // and the StatefulSet (which carries its hash) are UPDATEs, the
        // same whatever API_KEY the caller guesses; another greeting also
        // updates the ConfigMap.
        let tenant = k8sworker_testsupport::plans::tenant().to_string();
        let preview = k8sworker_testsupport::pki::dir(&k8sworker_tls::Identity::Preview);
        let planner = stack.planner.url();
        let plan = |file: String, tls_dir: std::path::PathBuf| {
            let (tenant, planner) = (tenant.clone(), planner.clone());
            let config = config.clone();
            async move {
                let args = [
                    "plan",
                    "-f",
                    &file,
                    "--tenant",
                    &tenant,
                    "--planner",
                    &planner,
                    "--tls-dir",
                    tls_dir.to_str().unwrap(),
                    "-o",
                    "json",
                ];
                k8sworker(&config, &args, "").await
            }
        };
        let run = plan(file.clone(), preview.clone()).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let actions = |run: &Run| -> Vec<(String, String, String)> {
            let steps = run.json()["items"].as_array().unwrap().clone();
            steps
                .iter()
                .map(|s| {
                    let text = |key: &str| s[key].as_str().unwrap().to_owned();
                    (text("action"), text("kind"), text("name"))
                })
                .collect()
        };
        let deployed = actions(&run);
        let updates: Vec<_> = deployed.iter().filter(|(a, ..)| a != "NOOP").collect();
        assert_eq!(
            updates,
            [
                &(
                    "UPDATE".into(),
                    "Secret".into(),
                    "vantiq-web-secret-0".into()
                ),
                &("UPDATE".into(), "StatefulSet".into(), "web".into()),
            ],
            "{deployed:?}"
        );
        let mut guessed = sample_deploy("web", &ns, 1, "hello");
        guessed["config"][3]["value"] = json!("a-wrong-guess");
        let guess_dir = tempfile::tempdir().unwrap();
        let run = plan(write_request(guess_dir.path(), &guessed), preview.clone()).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(
            actions(&run),
            deployed,
            "a guess changes nothing in the answer"
        );
        let elsewhere = tempfile::tempdir().unwrap();
        let changed = write_request(elsewhere.path(), &sample_deploy("web", &ns, 1, "bonjour"));
        let run = plan(changed, preview).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let steps = run.json()["items"].as_array().unwrap().clone();
        let updated: Vec<(&str, &str)> = steps
            .iter()
            .filter(|s| s["action"] == "UPDATE")
            .map(|s| (s["kind"].as_str().unwrap(), s["name"].as_str().unwrap()))
            .collect();
        assert!(updated.contains(&("StatefulSet", "web")), "{steps:?}");
        assert!(
            updated.iter().any(|(kind, _)| *kind == "ConfigMap"),
            "{steps:?}"
        );
        let run = k8sworker(&config, &["installations", "get", "web", "-o", "json"], "").await;
        assert_eq!(
            run.json()["installationStatus"],
            "RUNNING",
            "nothing applied"
        );
        // Without a preview client's certificate: refused, nothing planned.
        let planner_certificate =
            k8sworker_testsupport::pki::dir(&k8sworker_tls::Identity::Planner);
        let run = plan(file.clone(), planner_certificate).await;
        assert_eq!(run.code, 1, "{}", run.stdout);
        assert!(run.stderr.contains("preview"), "{}", run.stderr);

        let run = k8sworker(&config, &["logs", "web"], "").await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(!run.stdout.is_empty(), "the pod's log");

        let run = k8sworker(&config, &["verify", "web", "--wait", "-o", "json"], "").await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stdout.contains("\"lastVerifiedAt\""), "{}", run.stdout);

        let run = k8sworker(&config, &["undeploy", "web", "--wait"], "").await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let run = k8sworker(&config, &["installations", "get", "web"], "").await;
        assert_eq!(run.code, 1, "undeployed: {}", run.stdout);
    })
    .await;
}
