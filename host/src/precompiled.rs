//! Shipping precompiled components between hosts with an identical engine, so a plugin
//! is compiled once per cluster instead of once per worker.
//!
//! The operator compiles every plugin anyway (to call `describe`); it sends the
//! serialized artifact to its workers over their authenticated channel (TLS with a
//! pinned certificate and a bearer token), with the engine fingerprint it was made for.
//! A worker loads it only when the fingerprint is its own; wasmtime checks the header and
//! the engine compatibility again when deserializing. Anything else falls back to
//! compiling the module's bytes.
//!
//! This module must never load an artifact from anywhere but its caller (who vouches for
//! its origin): never from a path, never found on disk.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::Component;

use crate::cache::engine_fingerprint;
use crate::plugin::{LoadSource, Plugin};
use crate::{Digest, Error, Host, Result};

impl Host {
    /// The fingerprint of this host's engine settings (16 hex digits): an artifact is
    /// only usable by a host with the same fingerprint.
    pub fn engine_fingerprint(&self) -> String {
        engine_fingerprint(&self.inner.engine)
    }

    /// The serialized (precompiled) form of a plugin this host holds, for
    /// [`Host::load_precompiled`] on another host with the same fingerprint.
    pub fn precompiled_artifact(&self, digest: &Digest) -> Option<Result<Vec<u8>>> {
        let plugin = self.cached(digest)?;
        Some(
            plugin
                .component
                .serialize()
                .map_err(|e| Error::Engine(format!("serializing {digest}: {e:#}"))),
        )
    }

    /// Loads the plugin `digest` from an artifact serialized by a host with
    /// `fingerprint`. The caller vouches that the artifact came from a trusted host
    /// (in hostplug: the operator, over the worker's authenticated channel) and is the
    /// compiled form of the module with `digest`. A foreign fingerprint, a damaged
    /// artifact or one that does not link is a `BadModule` error: compile the module
    /// instead.
    #[allow(unsafe_code)] // loading native code; see the SAFETY note
    pub fn load_precompiled(
        &self,
        digest: &Digest,
        fingerprint: &str,
        artifact: &[u8],
    ) -> Result<Arc<Plugin>> {
        if let Some(p) = self.cached(digest) {
            return Ok(p);
        }
        let bad = |message: String| Error::BadModule {
            digest: *digest,
            message,
        };
        let own = self.engine_fingerprint();
        if fingerprint != own {
            return Err(bad(format!(
                "the artifact was compiled for engine {fingerprint}, this host is {own}"
            )));
        }
        if wasmtime::Engine::detect_precompiled(artifact) != Some(wasmtime::Precompiled::Component)
        {
            return Err(bad("not a precompiled component".into()));
        }
        let started = Instant::now();
        // SAFETY: the caller vouches for the artifact's origin (a host with the same
        // engine settings that compiled the module itself after checking its digest);
        // wasmtime validates the header and the engine compatibility before use.
        let component = unsafe { Component::deserialize(&self.inner.engine, artifact) }
            .map_err(|e| bad(format!("{e:#}")))?;
        let plugin = self.prepare(*digest, component, LoadSource::Shipped, started)?;
        if let Some(disk) = &self.inner.disk {
            disk.store(digest, &plugin.component);
        }
        Ok(self.remember(plugin))
    }
}
