//! `hostplug-host`: the Wasm host of hostplug.
//!
//! It runs plugins — WebAssembly components of the `host-action` world in `../wit` — with
//! exactly the access their capabilities grant, under limits, and reports what they did.
//! The worker, the operator (for `describe`) and the `hostplug` CLI all run plugins
//! through this crate, so the sandbox is the same everywhere.
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
//! * Each call gets a fresh `Store` from an `InstancePre` made once per component.
//! * Calls are blocking (a synchronous store); async callers use
//!   `tokio::task::spawn_blocking`.
//!
//! This crate must never give a plugin access it was not granted: no ambient preopens,
//! environment, arguments, sockets or stdio, ever.

mod bindings;
mod cache;
pub mod cli;
mod config;
mod digest;
pub mod docker;
mod error;
mod files;
mod grants;
mod host;
mod invocation;
pub mod manifest;
mod plugin;
mod precompiled;
mod stdio;

pub use config::*;
pub use digest::Digest;
pub use docker::{DockerPolicy, DockerRoute};
pub use error::{Error, ErrorKind, InvokeError, Result};
pub use grants::{EtcAccess, Grants};
pub use host::Host;
pub use invocation::{
    Invocation, InvokeOutcome, LogLevel, LogRecord, LogSource, MethodInfo, PluginInfo,
};
pub use plugin::{LoadSource, Plugin};
