//! The parameters of each systemd-unit method. Doc comments here become the descriptions
//! in the methods' JSON Schemas, which the operator validates tasks against and the
//! console shows, so they are written for administrators.

use schemars::JsonSchema;
use serde::Deserialize;

/// A unit name: letters, digits and `: _ . @ \ -`, ending in a unit type.
pub const UNIT_NAME_PATTERN: &str =
    r"^[A-Za-z0-9:_.@\\-]+\.(service|socket|timer|path|mount|automount|swap|target)$";

/// A drop-in's name: letters, digits and `_ . @ -`, without `/`.
pub const DROP_IN_NAME_PATTERN: &str = r"^[A-Za-z0-9_@-][A-Za-z0-9_.@-]{0,99}$";

/// Parameters of `status`, `start`, `stop`, `restart` and `reload`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    /// The unit, e.g. `chrony.service`; it must match one of the HostPlugin's
    /// `spec.capabilities.systemd.units` patterns.
    #[schemars(regex(pattern = UNIT_NAME_PATTERN), length(max = 255))]
    pub unit: String,
}

/// What to do with the unit after its drop-in or unit file changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnChange {
    /// Restart it (start it when it is not running). The default.
    #[default]
    Restart,
    /// Reload it when it supports reloading, else restart it; only when it is running.
    TryReloadOrRestart,
    /// Reload it (it must support reloading).
    Reload,
    /// Only `daemon-reload`; the unit keeps running with its old settings until it is
    /// restarted.
    None,
}

/// Parameters of `ensure-drop-in`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct EnsureDropIn {
    /// The unit the drop-in is for, e.g. `chrony.service`.
    #[schemars(regex(pattern = UNIT_NAME_PATTERN), length(max = 255))]
    pub unit: String,
    /// The drop-in's name: the file is `/etc/systemd/system/<unit>.d/<name>.conf`
    /// (a trailing `.conf` in the name is accepted).
    #[schemars(regex(pattern = DROP_IN_NAME_PATTERN))]
    pub name: String,
    /// The drop-in's complete content, e.g. "[Service]\nEnvironment=FOO=1\n".
    pub content: String,
    /// What happens to the unit when the file changed (default `restart`); nothing
    /// happens when it did not.
    #[serde(default)]
    pub on_change: OnChange,
}

/// Parameters of `ensure-unit-file`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct EnsureUnitFile {
    /// The unit, e.g. `hostplug-agent.service`: the file is
    /// `/etc/systemd/system/<unit>`.
    #[schemars(regex(pattern = UNIT_NAME_PATTERN), length(max = 255))]
    pub unit: String,
    /// The unit file's complete content.
    pub content: String,
    /// What happens to the unit when the file changed (default `restart`, which also
    /// starts a new unit); nothing happens when it did not.
    #[serde(default)]
    pub on_change: OnChange,
}

/// Parameters of `remove-drop-in`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct RemoveDropIn {
    /// The unit the drop-in is for.
    #[schemars(regex(pattern = UNIT_NAME_PATTERN), length(max = 255))]
    pub unit: String,
    /// The drop-in's name (`/etc/systemd/system/<unit>.d/<name>.conf`).
    #[schemars(regex(pattern = DROP_IN_NAME_PATTERN))]
    pub name: String,
    /// What happens to the unit when a file was removed (default `restart`).
    #[serde(default)]
    pub on_change: OnChange,
}
