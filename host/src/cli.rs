//! The `hostplug` command line — `hostplug plugin describe|run|manifest` — as a library
//! module, so that tests drive the same code as the binary (`src/bin/hostplug.rs` only
//! parses arguments and prints).
//!
//! It must never bypass [`Host`]: `plugin run` runs a plugin exactly as the worker does,
//! with only the access its flags grant.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::manifest::{self, ManifestRequest};
use crate::{
    Digest, Error, EtcAccess, EtcPolicy, Grants, Host, HostConfig, Invocation, InvokeError,
    InvokeOutcome,
};

/// hostplug — the plugin author's tool.
#[derive(Debug, Parser)]
#[command(name = "hostplug", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with plugin modules.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

/// `hostplug plugin …`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Print the plugin's info (name, version, methods with their parameter schemas) as JSON.
    Describe(DescribeArgs),
    /// Run one method, exactly as the worker would, and print the outcome as JSON.
    Run(RunArgs),
    /// Print a ConfigMap + HostPlugin for the module, ready for `kubectl apply -f -`.
    Manifest(ManifestArgs),
}

/// Options shared by the commands that load a module.
#[derive(Debug, Args)]
pub struct ModuleArgs {
    /// The plugin component (`.wasm`).
    pub file: PathBuf,
    /// Refuse the module unless its sha256 is this (hex, optionally `sha256:`-prefixed).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Keep precompiled components here between runs.
    #[arg(long, env = "HOSTPLUG_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// `hostplug plugin describe`
#[derive(Debug, Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub module: ModuleArgs,
}

/// `hostplug plugin run`
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub module: ModuleArgs,
    /// Directory shown to the plugin as /etc (read-only unless --write). Without it the
    /// plugin has no /etc at all.
    #[arg(long)]
    pub etc: Option<PathBuf>,
    /// Make /etc writable (ignored in dry runs, which always get it read-only).
    #[arg(long, requires = "etc")]
    pub write: bool,
    /// Docker Engine API socket for the docker import. Without it docker calls are denied.
    #[arg(long)]
    pub docker_socket: Option<PathBuf>,
    /// Report what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The method to run.
    #[arg(long)]
    pub method: String,
    /// Parameters, a JSON document.
    #[arg(long, default_value = "{}")]
    pub params: String,
    /// Deadline in seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Allow a sensitive path under /etc that the host refuses by default (a glob such as
    /// `/etc/kubernetes/manifests/**`); repeatable. See SECURITY.md.
    #[arg(long = "allow-sensitive", value_name = "GLOB")]
    pub allow_sensitive: Vec<String>,
}

/// `hostplug plugin manifest`
#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// The plugin component (`.wasm`).
    pub file: PathBuf,
    /// The HostPlugin's name.
    #[arg(long)]
    pub name: String,
    /// Namespace of the ConfigMap.
    #[arg(long, default_value = manifest::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// The etc capability: none, read or write.
    #[arg(long, default_value = "none")]
    pub etc: EtcAccess,
    /// Grant the docker capability.
    #[arg(long)]
    pub docker: bool,
}

/// What a command produced: text for stdout and the process exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Printed on stdout.
    pub stdout: String,
    /// Printed on stderr.
    pub stderr: String,
    /// Process exit code.
    pub code: u8,
}

impl Output {
    fn ok(stdout: String) -> Self {
        Self {
            stdout,
            stderr: String::new(),
            code: 0,
        }
    }

    /// An error as the CLI reports it: `{"error":{"kind","message"}}` on stdout and
    /// `error [kind]: message` on stderr, exit code 1.
    pub fn error(e: InvokeError) -> Self {
        let stderr = format!("error [{}]: {}\n", e.kind, e.message);
        let stdout = serde_json::json!({ "error": e }).to_string() + "\n";
        Self {
            stdout,
            stderr,
            code: 1,
        }
    }
}

/// Runs a parsed command line. Every failure is reported in the [`Output`] (kind and
/// message), never as a panic.
pub fn run(cli: Cli) -> Output {
    let result = match cli.command {
        Command::Plugin(PluginCommand::Describe(a)) => describe(a),
        Command::Plugin(PluginCommand::Run(a)) => run_method(a),
        Command::Plugin(PluginCommand::Manifest(a)) => render_manifest(a),
    };
    result.unwrap_or_else(Output::error)
}

fn host_and_plugin(
    m: &ModuleArgs,
    allow_sensitive: &[String],
) -> Result<std::sync::Arc<crate::Plugin>, Error> {
    let expected = m.sha256.as_deref().map(str::parse::<Digest>).transpose()?;
    let host = Host::new(HostConfig {
        cache_dir: m.cache_dir.clone(),
        etc: EtcPolicy {
            sensitive_allow: allow_sensitive.to_vec(),
            ..EtcPolicy::default()
        },
        ..HostConfig::default()
    })?;
    host.load_file(&m.file, expected.as_ref())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, Error> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| Error::Encode {
            what: "JSON",
            message: e.to_string(),
        })
}

fn describe(a: DescribeArgs) -> Result<Output, InvokeError> {
    let plugin = host_and_plugin(&a.module, &[])?;
    let info = plugin.describe()?;
    Ok(Output::ok(to_json(&info)?))
}

fn run_method(a: RunArgs) -> Result<Output, InvokeError> {
    let plugin = host_and_plugin(&a.module, &a.allow_sensitive)?;
    let mut grants = match &a.etc {
        Some(dir) => Grants::etc(
            dir,
            if a.write {
                EtcAccess::Write
            } else {
                EtcAccess::Read
            },
        ),
        None => Grants::none(),
    };
    grants.docker = a.docker_socket.clone();
    let invocation = Invocation {
        method: a.method,
        params: a.params,
        dry_run: a.dry_run,
        deadline: a.timeout.map(Duration::from_secs),
    };
    let outcome: InvokeOutcome = plugin.invoke(&invocation, &grants)?;
    Ok(Output::ok(to_json(&outcome)?))
}

fn render_manifest(a: ManifestArgs) -> Result<Output, InvokeError> {
    let bytes = std::fs::read(&a.file)
        .map_err(|e| Error::io(format!("reading {}", a.file.display()), e))?;
    // Refuse modules that would not load or describe in the operator either.
    let host = Host::new(HostConfig::default())?;
    host.load(&bytes, None)?.describe()?;
    let yaml = manifest::render(
        &bytes,
        &ManifestRequest {
            name: &a.name,
            namespace: &a.namespace,
            etc: a.etc,
            docker: a.docker,
        },
    )?;
    Ok(Output::ok(yaml))
}
