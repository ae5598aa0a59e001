//! `hostplug-operator`: parses its flags and runs the operator (see the library).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let config = hostplug_operator::Config::parse();
    hostplug_operator::run(config).await?;
    Ok(())
}
