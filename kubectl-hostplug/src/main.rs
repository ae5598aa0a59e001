//! The `kubectl-hostplug` binary: parses the command line and hands over to
//! [`kubectl_hostplug::run`]; errors are printed with their causes (without terminal
//! control sequences) and exit 2.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = kubectl_hostplug::Cli::parse();
    match kubectl_hostplug::run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", kubectl_hostplug::error_text(&e));
            ExitCode::from(kubectl_hostplug::EXIT_ERROR)
        }
    }
}
