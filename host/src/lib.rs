//! `hostplug-host`: the Wasm host of hostplug.
//!
//! It runs plugins — WebAssembly components of the `host-action` world in `../wit` — with
//! exactly the access their capabilities grant, under limits, and reports what they did.
//! The worker, the operator (for `describe`) and the `hostplug` CLI (crate `hostplug-cli`)
//! all run plugins through this crate, so the sandbox is the same everywhere. This crate is
//! only the sandbox: no registry client, no manifests, no command line.
//!
//! ```no_run
//! use hostplug_host::{EtcAccess, Grants, Host, HostConfig, Invocation};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host = Host::new(HostConfig::default())?;
//! let plugin = host.load(&std::fs::read("etc-file.wasm")?, None)?;
//! println!("{:?}", plugin.describe()?);
//! let outcome = plugin.invoke(
//!     &Invocation::new("read", r#"{"path":"/etc/hosts"}"#),
//!     &Grants::etc("/etc", EtcAccess::Read),
//! )?;
//! println!("{}", outcome.output);
//! # Ok(()) }
//! ```
//!
//! * One shared [`wasmtime::Engine`] per [`Host`]: component model, epoch interruption
//!   driven by a ticker thread, a memory limiter per store.
//! * Components are compiled once per [`Digest`], kept in memory and, with
//!   [`HostConfig::cache_dir`], precompiled on disk so that a restart does not recompile.
//! * Each call gets a fresh `Store` from an `InstancePre` made once per component, with
//!   its memory, tables and instances capped per store.
//! * Calls are blocking for the caller (async callers use `tokio::task::spawn_blocking`);
//!   inside, the store is async and the call runs under a timer, so the deadline also
//!   ends a plugin that waits in a host call (a WASI sleep or poll).
//! * Each host capability (`etc`, `docker`, `containerd`, `log`, `registry-auth`,
//!   `systemd`) is a
//!   unit in [`capability`] with its policy, its per-call state, its imports (implemented
//!   on its own view of the store) and its limits; the store composes them. A refusal is
//!   a typed [`CapabilityError`] all the way to the plugin. The sensitive paths under
//!   /etc are refused by the host unless the configuration allows them.
//!
//! This crate must never give a plugin access it was not granted: no ambient preopens,
//! environment, arguments, sockets or stdio, ever.

mod bindings;
mod cache;
pub mod capability;
mod config;
mod error;
mod grants;
mod host;
mod invocation;
mod plugin;
mod precompiled;
mod store;

pub use capability::CapabilityError;
pub use capability::containerd;
pub use capability::containerd::{
    ContainerdClient, ContainerdPolicy, DEFAULT_CONTAINERD_MAX_RESPONSE_BYTES,
    DEFAULT_CONTAINERD_TIMEOUT,
};
pub use capability::docker;
pub use capability::docker::{
    DEFAULT_DOCKER_MAX_REQUEST_BYTES, DEFAULT_DOCKER_MAX_RESPONSE_BYTES, DEFAULT_DOCKER_TIMEOUT,
    DockerPolicy, DockerRoute,
};
pub use capability::etc::record::{
    self as revert, ChangeRecord, MAX_RECORD_BYTES, MAX_RECORD_FILE_BYTES, MAX_RECORD_PATHS,
    PostState, PriorState, RecordedPath, Restored, RevertError,
};
pub use capability::etc::{DEFAULT_DENY, DEFAULT_DENY_WRITE, EtcPolicy};
pub use capability::systemd;
pub use capability::systemd::{
    DEFAULT_SYSTEMD_TIMEOUT, SystemdClient, SystemdPolicy, UnitAction, UnitStatus,
};
pub use config::*;
pub use error::{Error, Result};
pub use grants::{Grants, SystemdGrant};
pub use host::Host;
/// The shared contracts the host speaks, defined once in `hostplug-api`.
pub use hostplug_api::{
    Digest, ErrorKind, EtcAccess, InvokeError, InvokeOutcome, LogLevel, LogRecord, LogSource,
    MethodInfo, PluginInfo,
};
pub use invocation::Invocation;
pub use plugin::{LoadSource, Plugin};
pub use precompiled::{ArtifactKey, ArtifactSignature, ArtifactSigner, SignedArtifact};
