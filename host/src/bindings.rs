//! Rust bindings of the `host-action` world, generated from `../wit` by
//! `wasmtime::component::bindgen!`.
//!
//! Generated code only: hand-written logic never goes here (the host imports are
//! implemented in `plugin.rs`, the `files` logic in `files.rs`).

#![allow(missing_debug_implementations)] // generated types; the macro does not derive Debug on all

wasmtime::component::bindgen!({
    path: "../wit",
    world: "host-action",
});

pub use hostplug::plugin::docker::Response as DockerResponse;
pub use hostplug::plugin::files::Attributes as FileAttributes;
pub use hostplug::plugin::log::Level;
