//! A thin wrapper over the host's `systemd` import: the node's systemd over D-Bus.
//!
//! The import only works for plugins whose HostPlugin declares the `systemd` capability
//! (`units`: name patterns, `actions`); otherwise every call fails with
//! [`Error::Denied`](crate::Error::Denied). The host refuses a unit no pattern allows
//! (naming the patterns), an action not declared, and every action but [`status`] in a
//! dry run or in a method that does not declare itself mutating — so a plugin reports
//! "would restart" in a dry run instead of calling [`run`]. An unknown unit is
//! [`Error::NotFound`](crate::Error::NotFound) naming it. The host's typed errors map by
//! kind ([`Error::from_capability`]), each message led by `systemd:`.

use crate::{Error, Result};

/// A unit's state as systemd reports it (ActiveState, SubState, MainPID, timestamps in
/// µs since the Unix epoch, the unit file state, the drop-ins in effect).
pub use crate::bindings::hostplug::plugin::systemd::UnitStatus;

/// A job [`run`] queues on a unit: start, stop, restart, reload, try-reload-or-restart.
pub use crate::bindings::hostplug::plugin::systemd::Action;

/// The service a systemd error names.
const SERVICE: &str = "systemd";

/// A host refusal or failure as the SDK's error, by its kind (see
/// [`Error::from_capability`]).
fn import_error(err: crate::CapabilityError) -> Error {
    Error::from_capability(SERVICE, err)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::*;
    use crate::bindings::hostplug::plugin::systemd as host;

    pub fn status(unit: &str) -> Result<UnitStatus> {
        host::status(unit).map_err(import_error)
    }
    pub fn run(unit: &str, action: Action) -> Result<UnitStatus> {
        host::run(unit, action).map_err(import_error)
    }
    pub fn daemon_reload() -> Result<()> {
        host::daemon_reload().map_err(import_error)
    }
    pub fn enable(unit: &str) -> Result<bool> {
        host::enable(unit).map_err(import_error)
    }
    pub fn disable(unit: &str) -> Result<bool> {
        host::disable(unit).map_err(import_error)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::*;

    fn outside() -> Error {
        import_error(crate::CapabilityError::Denied(
            "the systemd import exists only inside the hostplug host".into(),
        ))
    }
    pub fn status(_: &str) -> Result<UnitStatus> {
        Err(outside())
    }
    pub fn run(_: &str, _: Action) -> Result<UnitStatus> {
        Err(outside())
    }
    pub fn daemon_reload() -> Result<()> {
        Err(outside())
    }
    pub fn enable(_: &str) -> Result<bool> {
        Err(outside())
    }
    pub fn disable(_: &str) -> Result<bool> {
        Err(outside())
    }
}

/// The state of `unit` (needs the `status` action).
pub fn status(unit: &str) -> Result<UnitStatus> {
    imp::status(unit)
}

/// Queues `action` on `unit`, waits for the job and returns the unit's state after it
/// (a job that leaves the unit failed is an error naming the states).
pub fn run(unit: &str, action: Action) -> Result<UnitStatus> {
    imp::run(unit, action)
}

/// `systemctl daemon-reload`: systemd reads its unit files and drop-ins again.
pub fn daemon_reload() -> Result<()> {
    imp::daemon_reload()
}

/// Enables `unit` (its unit file must be under /etc); true when a symlink was made.
pub fn enable(unit: &str) -> Result<bool> {
    imp::enable(unit)
}

/// Disables `unit` (its unit file must be under /etc); true when a symlink was removed.
pub fn disable(unit: &str) -> Result<bool> {
    imp::disable(unit)
}
