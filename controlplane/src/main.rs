//! `k8sworker-controlplane`: parse the configuration, start telemetry, serve
//! until SIGTERM/SIGINT, then shut down within the grace period.

use anyhow::Context as _;
use clap::Parser as _;
use k8sworker_controlplane::{Config, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.validate().context("invalid configuration")?;
    let _telemetry = k8sworker_telemetry::init("k8sworker-controlplane")
        .context("telemetry could not be initialised")?;
    let grace = config.shutdown_grace;
    let server = Server::start(config)
        .await
        .context("control plane failed to start")?;
    if let Some(password) = &server.generated_admin_password {
        // Shown once, on first start only; never logged.
        println!("k8sworker-controlplane: first admin password: {password}");
    }
    println!(
        "k8sworker-controlplane listening on {}",
        server.local_addr()
    );
    k8sworker_telemetry::shutdown_signal().await;
    tracing::info!(?grace, "shutting down");
    match tokio::time::timeout(grace, server.shutdown()).await {
        Ok(result) => result.context("control plane stopped with an error"),
        Err(_) => {
            tracing::warn!("grace period over; exiting with requests in flight");
            Ok(())
        }
    }
}
