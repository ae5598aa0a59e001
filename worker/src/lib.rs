//! hostplug-worker: the HTTPS server inside each worker Pod.
//!
//! The operator uploads a plugin module (pinned by sha256) and invokes it; the worker
//! runs it through `hostplug-host` with exactly the access this Pod was given (the
//! node's /etc read-only, read-write or not at all; the docker socket or not). The wire
//! protocol is in [`types`], which is all this crate offers without its default
//! `server` feature.
//!
//! With `server`: [`Config`] (flags and environment), [`app`] (the routes, testable
//! without a socket), [`Server`] (TLS listener) and [`run`], which the binary calls.
//! The worker must never run a module whose digest it did not check, never let one
//! module's failure affect another, and never send its internals to a client.

pub mod types;

#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
mod error;
#[cfg(feature = "server")]
pub mod host_runtime;
#[cfg(feature = "server")]
pub mod node_lock;
#[cfg(feature = "server")]
pub mod outcomes;
#[cfg(feature = "server")]
pub mod runtime;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod tls;

#[cfg(feature = "server")]
pub use crate::{
    auth::BearerToken,
    config::{Config, EtcAccess, Limits, LogFormat},
    error::{ApiError, Error, Result},
    host_runtime::HostRuntime,
    server::{AppState, Server, app},
};

/// Installs the global tracing subscriber: `RUST_LOG`-style filter (default `info`),
/// text or JSON lines on stderr.
#[cfg(feature = "server")]
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Builds everything from `config` and serves until SIGTERM or Ctrl-C.
#[cfg(feature = "server")]
pub async fn run(config: Config) -> Result<()> {
    let server = bind(&config).await?;
    server.serve(server::shutdown_signal()).await
}

/// Builds everything from `config` and binds the listener, without serving yet.
#[cfg(feature = "server")]
pub async fn bind(config: &Config) -> Result<Server> {
    validate(&config.limits)?;
    let token = BearerToken::from_file(&config.token_file)?;
    let tls = tls::server_config(&config.tls_cert, &config.tls_key)?;
    let runtime = HostRuntime::new(config)?;
    tracing::info!(
        etc_dir = %config.etc_dir.display(),
        etc_access = ?config.etc_access,
        docker = config.docker_socket.is_some(),
        cache_dir = %config.cache_dir.display(),
        "plugin host ready"
    );
    let mut state = AppState::new(std::sync::Arc::new(runtime), token, config.limits.clone());
    let may_change_node = config.etc_access == EtcAccess::Write || config.docker_socket.is_some();
    match (&config.node_lock_file, may_change_node) {
        (Some(path), true) => {
            tracing::info!(node_lock = %path.display(), "mutating invocations take the node lock");
            state = state.with_node_lock(node_lock::NodeLock::new(path));
        }
        (None, true) => tracing::warn!(
            "this worker may change its node but has no --node-lock-file: its changes do not \
             exclude those of other workers on the node"
        ),
        (_, false) => {}
    }
    Server::bind(config.listen, tls, app(state)).await
}

#[cfg(feature = "server")]
fn validate(limits: &Limits) -> Result<()> {
    let zero = [
        ("max module bytes", limits.max_module_bytes == 0),
        ("max request bytes", limits.max_request_bytes == 0),
        (
            "max concurrent invocations",
            limits.max_concurrent_invocations == 0,
        ),
        ("invoke timeout", limits.invoke_timeout_ms == 0),
        ("max invoke timeout", limits.max_invoke_timeout_ms == 0),
        ("memory limit", limits.memory_limit_bytes == 0),
    ];
    match zero.iter().find(|(_, is_zero)| *is_zero) {
        Some((name, _)) => Err(Error::Config(format!("{name} must be above 0"))),
        None => Ok(()),
    }
}
