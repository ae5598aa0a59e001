//! `hostplug-operator`: parses its flags and runs the operator (see the library).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = hostplug_operator::Config::parse();
    hostplug_process::init_tracing(config.log_format, hostplug_process::DEFAULT_FILTER);
    hostplug_operator::run(config).await?;
    Ok(())
}
