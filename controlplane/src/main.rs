//! `k8sworker-controlplane`: parse the configuration, start telemetry, serve
//! until SIGTERM/SIGINT, then shut down within the grace period; or run one
//! of the offline commands (`backup FILE`, `rotate-key`) and exit.

use anyhow::Context as _;
use clap::Parser as _;
use k8sworker_controlplane::config::Command;
use k8sworker_controlplane::{Config, Server, offline};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.validate().context("invalid configuration")?;
    let _telemetry = k8sworker_telemetry::init("k8sworker-controlplane")
        .context("telemetry could not be initialised")?;
    match &config.command {
        None => {}
        Some(Command::Backup { file }) => {
            let report = offline::backup(&config, file).context("backup failed")?;
            println!(
                "k8sworker-controlplane: backup written to {}; its secrets open only with the key file {} (key ids: {})",
                file.display(),
                config.key_file().display(),
                report.key_ids.join(", ")
            );
            return Ok(());
        }
        Some(Command::RotateKey) => {
            let rotation = offline::rotate_key(&config).context("key rotation failed")?;
            println!(
                "k8sworker-controlplane: key {} is current; {} rows re-encrypted; retired keys kept in {}: {}",
                rotation.new_key_id,
                rotation.resealed_rows,
                config.key_file().display(),
                rotation.retired_key_ids.join(", ")
            );
            return Ok(());
        }
    }
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
