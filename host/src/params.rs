//! Parameter validation against a method's JSON Schema — the one check the operator
//! (before a HostTask touches any node), the console (before it creates one) and
//! `hostplug plugin run` (before the plugin runs) apply, so an author sees locally exactly
//! the refusal the cluster would give.
//!
//! The check itself lives with the schema reader in [`hostplug_api::schema`]; this module
//! only keeps the host's old paths working (`hostplug_host::params::check_params`,
//! `field_of_pointer`). New code calls `hostplug_api::schema` directly.

pub use hostplug_api::schema::{
    MAX_REPORTED_PARAM_ERRORS, ParamsError, check_params, field_of_pointer,
};
