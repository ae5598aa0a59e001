//! Rust bindings of the `host-action` world, generated from `../wit` by
//! `wasmtime::component::bindgen!`.
//!
//! Generated code only: hand-written logic never goes here (each host import is
//! implemented on its capability's view in `capability/`).

#![allow(missing_debug_implementations)] // generated types; the macro does not derive Debug on all

wasmtime::component::bindgen!({
    path: "../wit",
    world: "host-action",
    // Exports are called on an async store so that a timer can end a call that waits
    // in a host function; the host's own imports stay synchronous.
    exports: { default: async },
});
