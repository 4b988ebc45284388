//! The `k8sworker-planner` command line, as a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn planner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_k8sworker-planner"))
        .args(args)
        .output()
        .expect("the planner binary runs")
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn render_prints_yaml_documents_and_json() {
    let yaml = planner(&[
        "render",
        "--file",
        &fixture("camel.json"),
        "--ingress-default-node",
        "node",
    ]);
    assert!(yaml.status.success(), "{}", text(&yaml.stderr));
    let out = text(&yaml.stdout);
    assert_eq!(out.matches("---\n").count(), 6, "{out}");
    assert!(out.contains("kind: StatefulSet"));

    let json = planner(&[
        "render",
        "--file",
        &fixture("camel.json"),
        "--output",
        "json",
    ]);
    assert!(json.status.success());
    let objects: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(objects.len(), 6);
    assert_eq!(objects[3]["kind"], "StatefulSet");
}

#[test]
fn an_invalid_request_prints_every_error_and_no_objects() {
    let dir = std::env::temp_dir().join(format!("k8sworker-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.json");
    std::fs::write(
        &file,
        r#"{"name":"Bad","k8sNamespace":"ns","config":[{"type":"inboundPort","port":0,"protocol":"TCP"}]}"#,
    )
    .unwrap();
    let out = planner(&["render", "--file", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "no objects on stdout: {}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    for expected in [
        "3 errors",
        "name: `Bad`",
        "needs exactly one `image`",
        "config[0] (inboundPort).port",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    std::fs::write(&file, "not json").unwrap();
    let out = planner(&["render", "--file", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is not JSON"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plan_prints_a_change_table_and_json() {
    let out = planner(&[
        "plan",
        "--file",
        &fixture("jdbc.json"),
        "--op",
        "deploy",
        "--tenant",
        "acme/prod",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("OP      KIND         NAME        REASON"),
        "{table}"
    );
    assert!(
        table.contains("CREATE  StatefulSet  jdbcsource  does not exist"),
        "{table}"
    );
    assert!(table.contains("2 step(s), 2 write(s)"), "{table}");

    let out = planner(&[
        "plan",
        "--file",
        &fixture("jdbc.json"),
        "--op",
        "deploy",
        "--tenant",
        "acme/prod",
        "--output",
        "json",
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["steps"][0]["precondition"]["mustNotExist"], true);
    assert!(plan["id"].as_str().unwrap().starts_with("plan-"));
}

#[test]
fn plan_against_observed_objects() {
    // Render, then feed the objects back as "observed" with uids: re-deploying is all noop.
    let json = planner(&[
        "render",
        "--file",
        &fixture("jdbc.json"),
        "--tenant",
        "acme/prod",
        "--output",
        "json",
    ]);
    let mut objects: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    for (i, object) in objects.iter_mut().enumerate() {
        object["metadata"]["uid"] = format!("uid-{i}").into();
        object["metadata"]["resourceVersion"] = "7".into();
    }
    let dir = std::env::temp_dir().join(format!("k8sworker-cli-observed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let observed = dir.join("observed.json");
    std::fs::write(
        &observed,
        serde_json::json!({"kind": "List", "items": objects}).to_string(),
    )
    .unwrap();
    let out = planner(&[
        "plan",
        "--file",
        &fixture("jdbc.json"),
        "--op",
        "deploy",
        "--tenant",
        "acme/prod",
        "--observed",
        observed.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 step(s), 0 write(s)"),
        "{}",
        text(&out.stdout)
    );

    let out = planner(&[
        "plan",
        "--file",
        &fixture("jdbc.json"),
        "--op",
        "undeploy",
        "--tenant",
        "acme/prod",
        "--observed",
        observed.to_str().unwrap(),
    ]);
    assert!(
        text(&out.stdout).contains("DELETE  Service"),
        "{}",
        text(&out.stdout)
    );

    // Another tenant's undeploy of the same name deletes nothing: it fails,
    // naming the objects and their owner.
    let out = planner(&[
        "plan",
        "--file",
        &fixture("jdbc.json"),
        "--op",
        "undeploy",
        "--tenant",
        "other/prod",
        "--observed",
        observed.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("owned by tenant `acme/prod`, installation `jdbcsource`"),
        "{}",
        text(&out.stderr)
    );

    let out = planner(&[
        "plan",
        "--file",
        &fixture("jdbc.json"),
        "--op",
        "explode",
        "--tenant",
        "acme/prod",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--op must be deploy"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `serve` with the environment of a pod cleared of the planner's variables.
fn serve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_k8sworker-planner"))
        .arg("serve")
        .args(args)
        .env_remove("K8SWORKER_TLS_DIR")
        .env_remove("K8SWORKER_INSECURE_PLAINTEXT")
        .env_remove("K8SWORKER_EXECUTORS")
        .output()
        .expect("the planner binary runs")
}

#[test]
fn serve_refuses_to_start_without_tls_or_with_plaintext_off_loopback() {
    let none = serve(&["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"]);
    assert!(!none.status.success());
    assert!(
        text(&none.stderr).contains("no TLS: give --tls-dir"),
        "{}",
        text(&none.stderr)
    );

    for (args, refused) in [
        (
            ["--listen", "0.0.0.0:0", "--health-listen", "127.0.0.1:0"],
            "--listen: --insecure-plaintext is allowed only on loopback, but 0.0.0.0:0 is not a loopback address",
        ),
        (
            ["--listen", "127.0.0.1:0", "--health-listen", "0.0.0.0:0"],
            "--health-listen: --insecure-plaintext is allowed only on loopback, but 0.0.0.0:0 is not a loopback address",
        ),
        (
            [
                "--listen",
                "127.0.0.1:0",
                "--executor",
                "team-a=http://k8sworker-executor.team-a.svc:50052",
            ],
            "--executor team-a=http://k8sworker-executor.team-a.svc:50052: --insecure-plaintext is allowed only on loopback, but http://k8sworker-executor.team-a.svc:50052 is not a loopback address",
        ),
    ] {
        let mut args = args.to_vec();
        args.extend(["--insecure-plaintext", "--executor-template", "none"]);
        let out = serve(&args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("--insecure-plaintext is allowed only on loopback")
                && stderr.contains(refused),
            "{args:?}: {stderr}"
        );
    }

    // The default template names in-cluster addresses: refused in plaintext.
    let out = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--health-listen",
        "127.0.0.1:0",
        "--insecure-plaintext",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--executor-template"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn serve_refuses_a_certificate_of_another_component() {
    let dir = tempfile::tempdir().unwrap();
    let pki = k8sworker_tls::generate::Pki::new(dir.path()).unwrap();
    let gateway =
        k8sworker_tls::Identity::gateway(k8sworker_core::owner::Tenant::new("acme", "c").unwrap());
    pki.tls(&gateway).unwrap();
    let out = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--health-listen",
        "127.0.0.1:0",
        "--tls-dir",
        pki.dir_of(&gateway).to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "names spiffe://k8sworker/gateway/acme/c, but this component is spiffe://k8sworker/planner"
        ),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 12, case 7: a preview prints no secret. `camel.json` puts the
/// token `s3cr3t-t0ken` into a generated Secret.
#[test]
fn previews_mask_secret_values_and_only_render_reveals_them_on_request() {
    const PLAIN: &str = "s3cr3t-t0ken";
    const BASE64: &str = "czNjcjN0LXQwa2Vu";
    let camel = fixture("camel.json");
    let render_json: &[&str] = &["render", "--file", &camel, "--output", "json"];
    let plan_table: &[&str] = &[
        "plan",
        "--file",
        &camel,
        "--op",
        "deploy",
        "--tenant",
        "acme/prod",
    ];
    let plan_json = [plan_table, &["--output", "json"]].concat();
    let previews = [
        &["render", "--file", &camel],
        render_json,
        plan_table,
        &plan_json,
    ];
    for args in previews {
        let out = planner(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
        let printed = text(&all);
        for secret in [PLAIN, BASE64] {
            assert!(
                !printed.contains(secret),
                "{args:?} printed {secret}: {printed}"
            );
        }
    }

    // The Secret is still there, its value replaced by its size.
    let objects: Vec<serde_json::Value> =
        serde_json::from_slice(&planner(render_json).stdout).unwrap();
    let secret = objects
        .iter()
        .find(|o| o["kind"] == "Secret")
        .expect("a generated Secret");
    assert_eq!(
        secret["data"]["CONNECTOR_AUTH_TOKEN"], "<masked: 12 bytes>",
        "{secret}"
    );
    assert_eq!(
        secret["metadata"]["annotations"]["k8sworker.io/spec-hash"],
        "<masked>"
    );
    let plan: serde_json::Value = serde_json::from_slice(&planner(&plan_json).stdout).unwrap();
    let step = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "Secret")
        .expect("a Secret step");
    assert_eq!(
        step["object"]["data"]["CONNECTOR_AUTH_TOKEN"],
        "<masked: 12 bytes>"
    );

    // Asked for, render prints the value as it would be applied.
    for output in ["yaml", "json"] {
        let out = planner(&[
            "render",
            "--file",
            &camel,
            "--output",
            output,
            "--show-secrets",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains(BASE64), "{}", text(&out.stdout));
        assert!(!text(&out.stdout).contains("<masked"));
    }
    // Only render has the flag.
    let out = planner(&[plan_table, &["--show-secrets"]].concat());
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

/// `serve --metrics-addr` serves the planner's metrics as OpenMetrics text
/// over plain HTTP.
#[test]
fn serve_with_metrics_addr_answers_get_metrics() {
    use std::io::{Read as _, Write as _};

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap();
    drop(free);
    let mut child = Command::new(env!("CARGO_BIN_EXE_k8sworker-planner"))
        .args([
            "serve",
            "--insecure-plaintext",
            "--executor-template",
            "none",
        ])
        .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
        .args(["--metrics-addr", &address.to_string()])
        .env_remove("K8SWORKER_TLS_DIR")
        .env_remove("K8SWORKER_EXECUTORS")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the planner binary runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let answer = loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(address) {
            stream
                .write_all(b"GET /metrics HTTP/1.0\r\nHost: planner\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no metrics listener at {address}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(
        answer
            .to_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{answer}"
    );
    // Labelled families show once a label set is used; before any call
    // the gauge is all there is.
    let body = answer.split_once("\r\n\r\n").expect("a body").1;
    assert_eq!(
        body,
        "# HELP k8sworker_planner_executions_in_flight Execute calls being served.\n\
         # TYPE k8sworker_planner_executions_in_flight gauge\n\
         k8sworker_planner_executions_in_flight 0\n\
         # EOF\n"
    );
}
