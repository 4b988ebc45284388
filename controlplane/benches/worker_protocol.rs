//! Load driver for the worker protocol (not a timed test): starts the
//! control plane in-process on 127.0.0.1 and measures
//!
//! 1. enqueue throughput (deploy commands over HTTP),
//! 2. claim + complete throughput with 1, 4 and 8 concurrent claimers,
//! 3. long-poll pickup latency: a claimer waits on an empty cluster, a
//!    deploy is posted, and the time from sending it (and from its
//!    acknowledgement) to the claim's answer is recorded.
//!
//! `cargo bench -p k8sworker-controlplane --bench worker_protocol`;
//! `BENCH_ITEMS` (default 2000), `BENCH_SYNC` (`full`|`normal`, default full).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8sworker_client::protocol::{
    ClaimWorkitem, ClaimedWorkitem, CompleteWorkitem, InstallationReport,
};
use k8sworker_client::{AccessToken, Client};
use k8sworker_controlplane::config::Synchronous;
use k8sworker_controlplane::{Config, Server};
use serde_json::{Value, json};

#[derive(Clone)]
struct Api {
    client: Client,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> Value {
        self.client
            .post_json(path, &body)
            .await
            .unwrap_or_else(|error| panic!("POST {path}: {error}"))
    }

    async fn deploy(&self, cluster: &str, name: &str) -> Value {
        self.post(
            &format!("/api/v1/resources/k8sclusters/{cluster}/command"),
            json!({"op": "deploy", "data": {"name": name, "k8sNamespace": "bench",
                "config": [{"type": "image", "name": "nginx:1.27"}]}}),
        )
        .await
    }

    async fn claim(&self, cluster: &str, wait: f64) -> Option<ClaimedWorkitem> {
        let params = ClaimWorkitem {
            cluster_name: cluster.to_owned(),
            worker_id: None,
            lease_seconds: None,
            wait_seconds: Some(wait),
        };
        self.client.call(&params).await.expect("claim")
    }

    async fn complete(&self, claimed: &ClaimedWorkitem) {
        let params = CompleteWorkitem {
            request_id: claimed.workitem.request_id.clone(),
            lease_id: claimed.lease_id.clone(),
            installation: InstallationReport {
                replica_count: Some(1),
                ..InstallationReport::default()
            },
            steps: None,
            trace_id: None,
        };
        self.client.call(&params).await.expect("complete");
    }
}

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| {
        let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[index].as_secs_f64() * 1000.0
    };
    println!(
        "{label}: n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

async fn enqueue(api: &Api, cluster: &str, items: usize) -> Duration {
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..items {
        let api = api.clone();
        let cluster = cluster.to_owned();
        pending.push(tokio::spawn(async move {
            api.deploy(&cluster, &format!("{cluster}-app-{i}")).await
        }));
        if pending.len() == 8 {
            for task in pending.drain(..) {
                task.await.unwrap();
            }
        }
    }
    for task in pending {
        task.await.unwrap();
    }
    started.elapsed()
}

async fn drain(api: &Api, cluster: &str, claimers: usize) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..claimers {
        let api = api.clone();
        let cluster = cluster.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let begin = Instant::now();
                let Some(claimed) = api.claim(&cluster, 0.0).await else {
                    return latencies;
                };
                api.complete(&claimed).await;
                latencies.push(begin.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    (started.elapsed(), all)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let items: usize = std::env::var("BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let sync = match std::env::var("BENCH_SYNC").as_deref() {
        Ok("normal") => Synchronous::Normal,
        _ => Synchronous::Full,
    };
    let dir = std::env::temp_dir().join(format!("k8sworker-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = Config::for_tests(dir.join("bench.db"));
    config.sqlite_synchronous = sync;
    config.verify_interval = Duration::ZERO;
    let server = Server::start(config).await.expect("server");
    let base = format!("http://{}", server.local_addr());
    let anonymous = Client::builder(&base).build().expect("client");
    let admin = Api {
        client: anonymous
            .login("admin", "admin-password")
            .await
            .expect("admin login"),
    };
    // A worker token serves one cluster, as a gateway's does.
    let worker_for = |cluster: String| {
        let (admin, anonymous) = (admin.clone(), anonymous.clone());
        async move {
            let token = admin
                .post(
                    "/api/v1/resources/tokens",
                    json!({"name": format!("bench-{cluster}"), "profiles": ["k8sWorker__system"],
                        "k8sClusterName": cluster}),
                )
                .await;
            Api {
                client: anonymous
                    .with_token(&AccessToken::new(
                        token["accessToken"].as_str().expect("accessToken"),
                    ))
                    .expect("worker token"),
            }
        }
    };
    println!(
        "synchronous={sync:?} items={items} cores={}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    for claimers in [1, 4, 8] {
        let cluster = format!("bench-{claimers}");
        admin
            .post("/api/v1/resources/k8sclusters", json!({"name": cluster}))
            .await;
        let worker = worker_for(cluster.clone()).await;
        let took = enqueue(&admin, &cluster, items).await;
        println!(
            "enqueue ({cluster}): {items} deploys in {:.2}s = {:.0}/s",
            took.as_secs_f64(),
            items as f64 / took.as_secs_f64()
        );
        let (took, latencies) = drain(&worker, &cluster, claimers).await;
        assert_eq!(latencies.len(), items);
        println!(
            "claim+complete, {claimers} claimer(s): {items} in {:.2}s = {:.0}/s",
            took.as_secs_f64(),
            items as f64 / took.as_secs_f64()
        );
        percentiles(
            &format!("  claim+complete latency, {claimers} claimer(s)"),
            latencies,
        );
    }

    // Long-poll pickup.
    admin
        .post("/api/v1/resources/k8sclusters", json!({"name": "poll"}))
        .await;
    let worker = Arc::new(worker_for("poll".to_owned()).await);
    let mut pickups = Vec::new();
    let mut after_ack = Vec::new();
    for i in 0..200 {
        let claimer = {
            let worker = Arc::clone(&worker);
            tokio::spawn(async move {
                let claimed = worker.claim("poll", 10.0).await;
                (claimed, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let sent = Instant::now();
        admin.deploy("poll", &format!("poll-{i}")).await;
        let acknowledged = Instant::now();
        let (claimed, answered) = claimer.await.unwrap();
        let claimed = claimed.expect("the long-poll answered before it timed out");
        pickups.push(answered.saturating_duration_since(sent));
        after_ack.push(answered.saturating_duration_since(acknowledged));
        worker.complete(&claimed).await;
    }
    percentiles("long-poll pickup (deploy sent -> claim answered)", pickups);
    percentiles(
        "long-poll pickup (deploy acknowledged -> claim answered)",
        after_ack,
    );
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
