//! `hostplug`: the plugin author's command line. Thin: parsing and printing only; the
//! commands live in the `hostplug_cli` library.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use hostplug_cli::{Cli, run};

fn main() -> anyhow::Result<ExitCode> {
    let out = run(Cli::parse());
    std::io::stdout().write_all(out.stdout.as_bytes())?;
    std::io::stderr().write_all(out.stderr.as_bytes())?;
    Ok(ExitCode::from(out.code))
}
