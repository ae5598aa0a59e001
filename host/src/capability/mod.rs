//! Host capabilities as units, after Spin's factors and wasmtime-wasi's views: each
//! capability keeps its policy, its per-call state, its import implementation and its
//! limits together, and its import is implemented on its own view of a store — it sees
//! its state (and, for `etc`, WASI's filesystem and the call's logs), nothing else.
//!
//! | capability | policy (host config)   | imports                                   | per-call state | granted by          |
//! |------------|------------------------|-------------------------------------------|----------------|---------------------|
//! | `etc`      | [`EtcPolicy`]          | `wasi:filesystem` (guarded), `files`      | `EtcState` (view `EtcView`) | [`Grants::etc`]     |
//! | `docker`   | [`DockerPolicy`]       | `docker`                                  | `DockerState`  | [`Grants::docker`]  |
//! | `containerd` | [`ContainerdPolicy`] | `containerd` (CRI image service)          | `ContainerdState` | [`Grants::containerd`] |
//! | `log`      | `Limits::max_log_bytes`| `log`, stdout, stderr                     | `LogSink`      | always              |
//! | `registry-auth` | — (per call)      | `registry-auth`                           | `RegistryAuthState` | [`Grants::registry_auth`] |
//! | `systemd`  | [`SystemdPolicy`]      | `systemd` (D-Bus, a fixed list of calls)  | `SystemdState` | [`Grants::systemd`] |
//!
//! 1. **link** once per [`Host`](crate::Host): each capability's `add_to_linker` takes a
//!    projection from the store's data to its view; `store.rs` composes them. Every
//!    import is in the linker whether or not a plugin is granted it; an ungranted call
//!    is refused at run time.
//! 2. **validate** once per host ([`validate`]): a policy that makes no sense is a
//!    configuration error before anything runs.
//! 3. **prepare** per store: each capability's `prepare` builds its state from the
//!    call's [`Grants`] ([`Call`]) — only what that call was granted; `store.rs` holds
//!    the states side by side.
//!
//! Adding a capability is its own module here, a field and a `prepare` line in
//! `store.rs`'s `StoreData`, and its `add_to_linker` line there. A refusal or failure of
//! an import is a [`CapabilityError`], typed from where it is decided to the plugin.
//!
//! This module must never grant anything by itself: every unit starts closed. No
//! capability module knows the store's type.
//!
//! [`EtcPolicy`]: etc::EtcPolicy
//! [`DockerPolicy`]: docker::DockerPolicy
//! [`ContainerdPolicy`]: containerd::ContainerdPolicy
//! [`SystemdPolicy`]: systemd::SystemdPolicy
//! [`Grants::systemd`]: crate::Grants::systemd
//! [`Grants::containerd`]: crate::Grants::containerd
//! [`Grants`]: crate::Grants
//! [`Grants::etc`]: crate::Grants::etc
//! [`Grants::docker`]: crate::Grants::docker
//! [`Grants::registry_auth`]: crate::Grants::registry_auth

pub mod containerd;
pub mod docker;
mod error;
pub mod etc;
pub(crate) mod log;
pub(crate) mod registry_auth;
pub mod systemd;

use std::time::Instant;

pub use error::CapabilityError;

use crate::{Error, Grants, HostConfig, Result};

/// One call as the capabilities see it in the prepare phase: what it was granted, the
/// host's policies, whether it is a dry run and when it must end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    /// What the call may reach.
    pub(crate) grants: &'a Grants,
    /// The host's configuration: each capability's policy and the limits.
    pub(crate) config: &'a HostConfig,
    /// A dry run: no capability may change the node.
    pub(crate) dry_run: bool,
    /// When the call must end; no host call runs past it.
    pub(crate) deadline: Instant,
}

/// Validate phase: checks every capability's policy in `config`.
pub(crate) fn validate(config: &HostConfig) -> Result<()> {
    config.etc.validate().map_err(Error::Config)?;
    config.docker.validate().map_err(Error::Config)?;
    config.containerd.validate().map_err(Error::Config)?;
    config.systemd.validate().map_err(Error::Config)?;
    Ok(())
}
