//! `hostplug-web`: the console binary. Parses the configuration and calls
//! [`hostplug_web::run`].

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hostplug_process::init_tracing(
        hostplug_process::LogFormat::Text,
        hostplug_process::DEFAULT_FILTER,
    );
    hostplug_web::run(hostplug_web::WebConfig::parse()).await
}
