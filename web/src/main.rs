//! `hostplug-web`: the console binary. Parses the configuration and calls
//! [`hostplug_web::run`].

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        // Colour codes only on a terminal: Pod logs and log files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    hostplug_web::run(hostplug_web::WebConfig::parse()).await
}
