//! The `hostplug-worker` binary: read the settings from the environment, log, run.

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("--help" | "-h") => {
            print!("{}", hostplug_worker::config::help());
            return Ok(());
        }
        Some("--version" | "-V") => {
            println!("hostplug-worker {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Some(other) => anyhow::bail!(
            "unexpected argument {other:?}: the worker is configured through HOSTPLUG_* \
             variables (see --help)"
        ),
        None => {}
    }
    let settings = hostplug_worker::config::from_process_env()?;
    hostplug_process::init_tracing(settings.log_format, "info");
    hostplug_worker::run(settings)
        .await
        .context("hostplug-worker failed")
}
