//! Host capabilities as units, after Spin's factors: each capability keeps its policy,
//! its import implementation and its limits together, in three phases.
//!
//! | capability | policy (host config)   | imports                                   | granted by          |
//! |------------|------------------------|-------------------------------------------|---------------------|
//! | `etc`      | [`EtcPolicy`]          | `wasi:filesystem` (guarded), `files`      | [`Grants::etc`]     |
//! | `docker`   | [`DockerPolicy`]       | `docker`                                  | [`Grants::docker`]  |
//! | `containerd` | [`ContainerdPolicy`] | `containerd` (CRI image service)          | [`Grants::containerd`] |
//! | `log`      | `Limits::max_log_bytes`| `log`, stdout, stderr                     | always              |
//! | `registry-auth` | — (per call)      | `registry-auth`                           | [`Grants::registry_auth`] |
//!
//! 1. **link** once per [`Host`](crate::Host) ([`link`]): every import is in the linker
//!    whether or not a plugin is granted it; an ungranted call is refused at run time.
//! 2. **validate** once per host ([`validate`]): a policy that makes no sense is a
//!    configuration error before anything runs.
//! 3. **prepare** per store (`plugin.rs` builds each capability's per-call state from the
//!    call's [`Grants`]): only what that call was granted.
//!
//! This module must never grant anything by itself: every unit starts closed.
//!
//! [`EtcPolicy`]: etc::EtcPolicy
//! [`DockerPolicy`]: docker::DockerPolicy
//! [`ContainerdPolicy`]: containerd::ContainerdPolicy
//! [`Grants::containerd`]: crate::Grants::containerd
//! [`Grants`]: crate::Grants
//! [`Grants::etc`]: crate::Grants::etc
//! [`Grants::docker`]: crate::Grants::docker
//! [`Grants::registry_auth`]: crate::Grants::registry_auth

pub mod containerd;
pub mod docker;
pub mod etc;
pub(crate) mod log;
pub(crate) mod registry_auth;

mod error;

pub use error::CapabilityError;

use wasmtime::component::{HasSelf, Linker};

use crate::plugin::StoreState;
use crate::{Error, HostConfig, Result};

/// Links every capability's imports (and the rest of WASI, which grants nothing by
/// itself: no preopens, sockets, environment or stdio unless a capability adds them).
pub(crate) fn link(linker: &mut Linker<StoreState>) -> Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)
        .map_err(|e| Error::Engine(format!("linking WASI: {e:#}")))?;
    // The etc unit replaces wasmtime-wasi's `wasi:filesystem/types` with the guarded one.
    linker.allow_shadowing(true);
    let guarded = wasmtime_wasi::p2::bindings::filesystem::types::add_to_linker::<
        StoreState,
        etc::wasi_fs::GuardedFilesystem,
    >(linker, StoreState::guarded_fs);
    linker.allow_shadowing(false);
    guarded.map_err(|e| Error::Engine(format!("linking the guarded filesystem: {e:#}")))?;
    crate::bindings::HostAction::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
        .map_err(|e| Error::Engine(format!("linking host imports: {e:#}")))?;
    Ok(())
}

/// Checks every capability's policy in `config`.
pub(crate) fn validate(config: &HostConfig) -> Result<()> {
    config.etc.validate().map_err(Error::Config)?;
    config.docker.validate().map_err(Error::Config)?;
    config.containerd.validate().map_err(Error::Config)?;
    Ok(())
}
