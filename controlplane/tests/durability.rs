//! Durability: the real binary is killed with SIGKILL in the middle of a
//! stream of writes; after a restart on the same database every write it
//! acknowledged is there.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, TempDir};
use serde_json::json;

/// Starts the binary on an ephemeral port; returns it and its base URL.
fn spawn(dir: &TempDir) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_k8sworker-controlplane"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--password-hash-iterations",
            "1000",
        ])
        .arg("--database")
        .arg(dir.0.join("durable.db"))
        .env("K8SWORKER_ADMIN_PASSWORD", "durable-password")
        .env("K8SWORKER_SQLITE_SYNCHRONOUS", "full")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the binary prints its address")
            .unwrap();
        if let Some(addr) = line.strip_prefix("k8sworker-controlplane listening on ") {
            break format!("http://{addr}");
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = TempDir::new();
    let (mut child, base) = spawn(&dir);
    let admin = Client::login(&base, "admin", "durable-password").await;
    admin.create_cluster("c1").await;

    // Four writers stream cluster inserts and deploy commands; each records
    // only what the server acknowledged with 200.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let admin = admin.clone();
        let acked = Arc::clone(&acked);
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                let request = if i % 2 == 0 {
                    admin
                        .request(reqwest::Method::POST, "/api/v1/resources/k8sclusters")
                        .json(&json!({"name": name}))
                } else {
                    admin
                        .request(
                            reqwest::Method::POST,
                            "/api/v1/resources/k8sclusters/c1/command",
                        )
                        .json(&json!({"op": "deploy", "data": common::deploy_data(&name)}))
                };
                match request.send().await {
                    Ok(response) if response.status() == 200 => {
                        let kind = if i % 2 == 0 { "cluster" } else { "workitem" };
                        let body: serde_json::Value = match response.json().await {
                            Ok(body) => body,
                            Err(_) => return,
                        };
                        let id = if kind == "cluster" {
                            body["name"].as_str().unwrap().to_owned()
                        } else {
                            body["requestId"].as_str().unwrap().to_owned()
                        };
                        acked.lock().unwrap().push((kind.to_owned(), id));
                    }
                    Ok(response) => panic!("unexpected status {}", response.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Kill in the middle of the stream.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "the stream was running: {} writes",
        acked.len()
    );
    eprintln!("{} writes acknowledged before SIGKILL", acked.len());

    let (mut child, base) = spawn(&dir);
    let admin = Client::login(&base, "admin", "durable-password").await;
    let (_, clusters) = admin.get("/api/v1/resources/k8sclusters").await;
    let (_, items) = admin.get("/api/v1/resources/k8sworkitems").await;
    let cluster_names: Vec<&str> = clusters
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let request_ids: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["requestId"].as_str().unwrap())
        .collect();
    for (kind, id) in &acked {
        let present = match kind.as_str() {
            "cluster" => cluster_names.contains(&id.as_str()),
            _ => request_ids.contains(&id.as_str()),
        };
        assert!(present, "acknowledged {kind} {id} was lost");
    }
    // The restarted server is fully usable.
    admin.create_cluster("after-restart").await;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let dir = TempDir::new();
    let (mut child, base) = spawn(&dir);
    let admin = Client::login(&base, "admin", "durable-password").await;
    admin.create_cluster("c1").await;
    let worker = Client::new(
        &base,
        admin
            .post(
                "/api/v1/resources/tokens",
                json!({"name": "gw", "profiles": ["k8sWorker__system"]}),
            )
            .await
            .1["accessToken"]
            .as_str()
            .unwrap(),
    );
    // A long-poll in flight is answered `null` at shutdown, not cut off.
    let poll = tokio::spawn(async move { worker.claim("c1", 20.0).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(poll.await.unwrap(), serde_json::Value::Null);
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
