//! The `hostplug-worker` binary: parse the configuration, log, run.

use anyhow::Context as _;
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = hostplug_worker::Config::parse();
    hostplug_worker::init_tracing(config.log_format);
    hostplug_worker::run(config)
        .await
        .context("hostplug-worker failed")
}
