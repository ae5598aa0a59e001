//! The node's reboot: the one D-Bus power call the host makes, `Reboot` of systemd's
//! manager, for the **operator's** node cycle (`POST /v1/node/reboot` of the worker) —
//! never for a plugin.
//!
//! It is kept apart from [`super::bus`], whose table refuses `Reboot` (and every other
//! power action) to every plugin import, and it is not reachable from the `systemd`
//! import or any other WIT import: no plugin can call it, whatever its HostPlugin
//! declares. This module must never offer anything but this one call, and never be
//! linked into a plugin's store.

use std::path::Path;

use super::bus::{DESTINATION, MANAGER, MANAGER_PATH};
use crate::capability::CapabilityError;

/// The member of systemd's manager this module calls, and no other.
pub const REBOOT_MEMBER: &str = "Reboot";

/// Asks the node's systemd (over the system bus socket `socket`) to reboot the node, as
/// `systemctl reboot` does: systemd queues `reboot.target`, stops the units in order and
/// reboots. Returns once systemd accepted the request; the node goes down after.
pub async fn reboot(socket: &Path) -> Result<(), CapabilityError> {
    let conn = super::bus::open(socket).await?;
    conn.call_method(
        Some(DESTINATION),
        MANAGER_PATH,
        Some(MANAGER),
        REBOOT_MEMBER,
        &(),
    )
    .await
    .map_err(|e| CapabilityError::failed(format!("systemd {REBOOT_MEMBER}: {e}")))?;
    Ok(())
}
