//! The hostplug Wasm host.
