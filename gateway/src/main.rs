//! `k8sworker-gateway`: parse the configuration (invalid values exit before
//! any I/O), start telemetry, run until SIGTERM/SIGINT (or, with `--once`,
//! until the queue is empty).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use k8sworker_gateway::{Config, Gateway};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("k8sworker-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let config = Config::parse();
    config.validate().context("invalid configuration")?;
    let _telemetry = k8sworker_telemetry::init("k8sworker-gateway")
        .context("telemetry could not be initialised")?;
    k8sworker_gateway::metrics::register();
    k8sworker_telemetry::metrics::spawn(config.metrics_addr, std::future::pending())
        .await
        .context("--metrics-addr")?;
    let gateway = Gateway::new(config)?;
    gateway.run(k8sworker_telemetry::shutdown_signal()).await?;
    Ok(())
}
