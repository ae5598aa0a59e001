//! hostplug-worker: the HTTPS server inside each worker Pod.
//!
//! The operator uploads a plugin module (pinned by sha256) and invokes it; the worker
//! runs it through `hostplug-host` with exactly the access this Pod was given (the
//! node's /etc read-only, read-write or not at all; the docker socket or not). The wire
//! protocol is `hostplug_api::protocol`; the Pod's settings are
//! `hostplug_api::worker::WorkerSettings`, read by [`config`].
//!
//! [`app`] (the routes, testable without a socket), [`Server`] (TLS listener) and
//! [`run`], which the binary calls. The worker must never run a module whose digest it
//! did not check itself, nor native code the operator did not sign (a precompiled
//! artifact loads only with the operator's signature over its digest, engine and bytes,
//! checked with the key from the Pod spec); never let one module's failure affect
//! another, and never send its internals to a client.

pub mod auth;
pub mod config;
mod error;
pub mod host_runtime;
pub mod node_control;
pub mod node_lock;
pub mod outcomes;
pub mod records;
mod revert;
pub mod runtime;
pub mod server;
pub mod tls;

pub use crate::{
    auth::BearerToken,
    config::{Limits, LogFormat, WorkerSettings},
    error::{ApiError, Error, Result},
    host_runtime::HostRuntime,
    server::{AppState, Server, app},
};
pub use hostplug_api::EtcAccess;

/// Builds everything from `settings` and serves until SIGTERM or Ctrl-C.
pub async fn run(settings: WorkerSettings) -> Result<()> {
    let server = bind(&settings).await?;
    server.serve(hostplug_process::shutdown_signal()).await
}

/// Builds everything from `settings` and binds the listener, without serving yet.
pub async fn bind(settings: &WorkerSettings) -> Result<Server> {
    settings
        .limits
        .check()
        .map_err(|e| Error::Config(e.to_string()))?;
    let listen = settings.listen.parse().map_err(|e| {
        Error::Config(format!(
            "{}: {:?} is not an address and port: {e}",
            hostplug_api::worker::env::LISTEN,
            settings.listen
        ))
    })?;
    let token = BearerToken::from_file(&settings.token_file)?;
    let token_again = token.clone();
    let tls = tls::server_config(&settings.tls_cert, &settings.tls_key)?;
    let runtime = HostRuntime::new(settings)?;
    tracing::info!(
        etc_dir = %settings.etc_dir.display(),
        etc_access = %settings.etc_access,
        docker = settings.docker_socket.is_some(),
        containerd = settings.containerd_socket.is_some(),
        cache_dir = %settings.cache_dir.display(),
        artifact_key = ?settings.artifact_key,
        "plugin host ready"
    );
    let mut state = AppState::new(std::sync::Arc::new(runtime), token, settings.limits.clone());
    let idle_exit = std::time::Duration::from_millis(settings.limits.idle_exit_ms);
    match (&settings.node_lock_file, settings.may_change_node()) {
        (Some(path), true) => {
            tracing::info!(node_lock = %path.display(), "mutating invocations take the node lock");
            state = state.with_node_lock(node_lock::NodeLock::new(path));
            // Revert records live beside the node lock: on the node, shared by every
            // worker that may change it, outside anything a plugin can reach.
            let dir = path
                .parent()
                .unwrap_or_else(|| std::path::Path::new("/"))
                .join(records::RECORDS_SUBDIR);
            match records::RecordStore::open(&dir) {
                Ok(store) => state = state.with_records(store),
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e,
                    "cannot open the revert record directory; calls on this worker are not revertible"),
            }
        }
        (None, true) => tracing::warn!(
            "this worker may change its node but has no {}: its changes do not exclude those \
             of other workers on the node",
            hostplug_api::worker::env::NODE_LOCK_FILE
        ),
        (_, false) => {}
    }
    // The operator's node routes (boot ID, reboot): `node_control`.
    let control = node_control::NodeControl {
        boot_id_file: node_control::BOOT_ID_FILE.into(),
        // Only a worker whose plugins may manage systemd has a bus it may reboot over.
        bus_socket: (settings.systemd_access == hostplug_api::systemd::SystemdAccess::Manage)
            .then(|| settings.systemd_socket.clone())
            .flatten(),
        node_lock: settings
            .node_lock_file
            .clone()
            .map(node_lock::NodeLock::new),
        reboot: node_control::systemd_reboot(),
    };
    let routes = app(state.clone()).merge(node_control::routes(control, token_again));
    Ok(Server::bind(listen, tls, routes)
        .await?
        .exit_when_idle(state, idle_exit))
}
