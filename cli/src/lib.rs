//! `hostplug-cli`: the plugin author's command line — `hostplug plugin
//! describe|run|manifest|new|push|keygen|sign|verify` — as a library, so that tests drive
//! the same code as the binary (`src/main.rs` only parses arguments and prints).
//!
//! A crate of its own so that the host crate is only the sandbox: the registry client,
//! the manifests and the scaffolding live here, on the author's side.
//!
//! It must never bypass [`Host`]: `plugin run` runs a plugin exactly as the worker does,
//! with only the access its flags grant.

pub mod author;
pub mod manifest;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use hostplug_host::{
    Digest, Error, EtcAccess, EtcPolicy, Grants, Host, HostConfig, Invocation, InvokeError,
    InvokeOutcome, Plugin,
};

use crate::manifest::ManifestRequest;

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
    /// Print a ConfigMap + HostPlugin for the module (or, with --oci, a HostPlugin pulling
    /// it from a registry), ready for `kubectl apply -f -`.
    Manifest(ManifestArgs),
    /// Create a new plugin crate that builds as it stands.
    New(NewArgs),
    /// Push the module to an OCI registry as a Wasm artifact; prints the reference pinned
    /// by digest.
    Push(PushArgs),
    /// Write a new signing key pair: PREFIX.key (private, mode 0600) and PREFIX.pub.
    Keygen(KeygenArgs),
    /// Sign a pushed module (cosign format, stored next to it in the registry).
    Sign(SignArgs),
    /// Check that a pushed module is signed by one of the given public keys.
    Verify(VerifyArgs),
}

/// How to reach a registry.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Talk plain HTTP to the registry (no TLS).
    #[arg(long)]
    pub insecure: bool,
    /// User name for the registry; the password is read from HOSTPLUG_REGISTRY_PASSWORD.
    #[arg(long)]
    pub username: Option<String>,
}

/// `hostplug plugin new`
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name (lowercase letters, digits, '-').
    pub name: String,
    /// Directory to create (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The SDK crate (plugins/sdk of a hostplug checkout) the new crate depends on by path
    /// until hostplug-sdk is published (default: the checkout this binary was built from).
    #[arg(long, env = "HOSTPLUG_SDK_PATH")]
    pub sdk_path: Option<PathBuf>,
}

/// `hostplug plugin push`
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The plugin component (`.wasm`).
    pub file: PathBuf,
    /// Where to push: registry[:port]/repository:tag.
    pub reference: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub registry: RegistryArgs,
}

/// `hostplug plugin keygen`
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Path prefix of the two files.
    #[arg(long, default_value = "hostplug")]
    pub out: PathBuf,
}

/// `hostplug plugin sign`
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The pushed module, pinned by digest (what `plugin push` printed).
    pub reference: String,
    /// The private key (PKCS#8 PEM, from `plugin keygen`).
    #[arg(long)]
    pub key: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub registry: RegistryArgs,
}

/// `hostplug plugin verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The pushed module (a tag or pinned by digest).
    pub reference: String,
    /// A public key file (PEM); repeatable: one of them must have signed.
    #[arg(long = "key", required = true)]
    pub keys: Vec<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub registry: RegistryArgs,
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
    /// containerd socket for the containerd import (CRI image service). Without it
    /// containerd calls are denied.
    #[arg(long)]
    pub containerd_socket: Option<PathBuf>,
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
    /// Grant the containerd capability (the node's CRI image service).
    #[arg(long)]
    pub containerd: bool,
    /// Emit a HostPlugin pulling the module from this registry reference (as `plugin
    /// push` printed it) instead of a ConfigMap; a tag without a digest is pinned with the
    /// module's sha256.
    #[arg(long, value_name = "REFERENCE")]
    pub oci: Option<String>,
    /// With --oci: the registry is plain HTTP.
    #[arg(long, requires = "oci")]
    pub insecure: bool,
    /// With --oci: name of the pull secret in the operator's namespace.
    #[arg(long, requires = "oci")]
    pub pull_secret: Option<String>,
    /// With --oci: require a signature by this public key (PEM file); repeatable.
    #[arg(long = "public-key", requires = "oci")]
    pub public_keys: Vec<PathBuf>,
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
        Command::Plugin(PluginCommand::New(a)) => new_plugin(a),
        Command::Plugin(PluginCommand::Push(a)) => push(a),
        Command::Plugin(PluginCommand::Keygen(a)) => keygen(a),
        Command::Plugin(PluginCommand::Sign(a)) => sign(a),
        Command::Plugin(PluginCommand::Verify(a)) => verify(a),
    };
    result.unwrap_or_else(Output::error)
}

fn host_and_plugin(
    m: &ModuleArgs,
    allow_sensitive: &[String],
) -> Result<std::sync::Arc<Plugin>, Error> {
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

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, InvokeError> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| manifest::encode_error("JSON", &e))
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
    grants.containerd = a.containerd_socket.clone();
    check_params_like_the_operator(&plugin, &a.method, &a.params)?;
    let invocation = Invocation {
        method: a.method,
        params: a.params,
        dry_run: a.dry_run,
        deadline: a.timeout.map(Duration::from_secs),
    };
    let outcome: InvokeOutcome = plugin.invoke(&invocation, &grants)?;
    Ok(Output::ok(to_json(&outcome)?))
}

/// Refuses parameters that break the method's schema, exactly as the operator refuses
/// such a HostTask (see [`hostplug_api::schema`]), naming the field under `params`. An unknown
/// method or parameters that are not JSON are left to the plugin's own error.
fn check_params_like_the_operator(
    plugin: &Plugin,
    method: &str,
    params: &str,
) -> Result<(), InvokeError> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(params) else {
        return Ok(());
    };
    let info = plugin.describe()?;
    let Some(m) = info.methods.iter().find(|m| m.name == method) else {
        return Ok(());
    };
    hostplug_api::schema::check_params(m.params_schema.as_ref(), &m.name, &value, "params").map_err(
        |e| {
            InvokeError::new(
                hostplug_api::protocol::ErrorKind::InvalidParams,
                e.to_string(),
            )
        },
    )
}

/// Reads `file` and checks that it loads and describes, as the operator will.
fn read_checked_module(file: &std::path::Path) -> Result<Vec<u8>, InvokeError> {
    let bytes = std::fs::read(file).map_err(|source| Error::Io {
        context: format!("reading {}", file.display()),
        source,
    })?;
    let host = Host::new(HostConfig::default())?;
    host.load(&bytes, None)?.describe()?;
    Ok(bytes)
}

fn render_manifest(a: ManifestArgs) -> Result<Output, InvokeError> {
    // Refuse modules that would not load or describe in the operator either.
    let bytes = read_checked_module(&a.file)?;
    if let Some(image) = &a.oci {
        let yaml = author::render_oci_manifest(
            &bytes,
            &author::OciManifestRequest {
                name: &a.name,
                image,
                insecure: a.insecure,
                pull_secret: a.pull_secret.as_deref(),
                public_keys: author::read_public_keys(&a.public_keys)?,
                etc: a.etc,
                docker: a.docker,
                containerd: a.containerd,
            },
        )?;
        return Ok(Output::ok(yaml));
    }
    let yaml = manifest::render(
        &bytes,
        &ManifestRequest {
            name: &a.name,
            namespace: &a.namespace,
            etc: a.etc,
            docker: a.docker,
            containerd: a.containerd,
        },
    )?;
    Ok(Output::ok(yaml))
}

fn new_plugin(a: NewArgs) -> Result<Output, InvokeError> {
    let sdk = a
        .sdk_path
        .or_else(author::default_sdk_path)
        .ok_or_else(|| {
            InvokeError::new(
                hostplug_api::protocol::ErrorKind::BadRequest,
                "no SDK found: pass --sdk-path (plugins/sdk of a hostplug checkout) or set \
             HOSTPLUG_SDK_PATH",
            )
        })?;
    let dir = a.dir.unwrap_or_else(|| PathBuf::from(&a.name));
    let written = author::scaffold(&a.name, &dir, &sdk)?;
    let mut out = String::new();
    for p in written {
        out.push_str(&format!("created {}\n", p.display()));
    }
    out.push_str(&format!(
        "build it: cd {} && cargo build --release --target wasm32-wasip2\n",
        dir.display()
    ));
    Ok(Output::ok(out))
}

fn push(a: PushArgs) -> Result<Output, InvokeError> {
    let bytes = read_checked_module(&a.file)?;
    let creds = author::credentials(a.registry.username.as_deref())?;
    let pinned = author::push(&bytes, &a.reference, a.registry.insecure, creds)?;
    Ok(Output::ok(format!("{pinned}\n")))
}

fn keygen(a: KeygenArgs) -> Result<Output, InvokeError> {
    let (private, public) = author::keygen(&a.out)?;
    Ok(Output {
        stdout: format!("{}\n", public.display()),
        stderr: format!(
            "wrote {} (keep it secret) and {}\n",
            private.display(),
            public.display()
        ),
        code: 0,
    })
}

fn sign(a: SignArgs) -> Result<Output, InvokeError> {
    let creds = author::credentials(a.registry.username.as_deref())?;
    let tag = author::sign(&a.reference, &a.key, a.registry.insecure, creds)?;
    Ok(Output::ok(format!("{tag}\n")))
}

fn verify(a: VerifyArgs) -> Result<Output, InvokeError> {
    let keys = author::read_public_keys(&a.keys)?;
    let creds = author::credentials(a.registry.username.as_deref())?;
    let (pinned, key) = author::verify(&a.reference, &keys, a.registry.insecure, creds)?;
    Ok(Output::ok(format!(
        "{pinned} is signed by {}\n",
        key.fingerprint()
    )))
}
