//! The on-disk store of precompiled components.
//!
//! Layout: `<cache_dir>/<engine fingerprint>/<digest hex>.cwasm`. A precompiled artifact
//! is native code for one exact engine: it is only valid for an identical wasmtime
//! version and engine `Config` (compiler flags, target CPU features, tunables, enabled
//! Wasm features). The fingerprint is a hash of
//! `Engine::precompile_compatibility_hash` (which covers all of that, the wasmtime
//! version included), so artifacts of another engine are never even looked at; wasmtime
//! also re-checks compatibility when deserialising, and a refused or unreadable artifact
//! is simply recompiled.
//!
//! This module must never load an artifact that it did not write itself after the
//! module's digest was checked: loading one is loading native code. Writes are atomic
//! (temporary file + rename), so a crash never leaves half an artifact.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::{Digest, Error, Result};

/// Precompiled artifacts of one engine configuration.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactStore {
    dir: PathBuf,
}

/// A stable fingerprint of the engine's compilation settings, 16 hex digits.
pub(crate) fn engine_fingerprint(engine: &Engine) -> String {
    // The hash must be stable across processes of the same build, so no RandomState:
    // feed the compatibility hash into sha256 through a fixed-key hasher adapter.
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..8])
}

impl ArtifactStore {
    /// The store under `cache_dir` for `engine`, creating the directory.
    pub(crate) fn open(cache_dir: &Path, engine: &Engine) -> Result<Self> {
        let dir = cache_dir.join(engine_fingerprint(engine));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating cache dir {}", dir.display()), e))?;
        Ok(Self { dir })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.cwasm", digest.hex()))
    }

    /// The precompiled component for `digest`, if present and usable by `engine`.
    /// Unusable artifacts are removed and reported as absent.
    pub(crate) fn load(&self, engine: &Engine, digest: &Digest) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        match deserialize(engine, &path) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(%digest, path = %path.display(), error = %e,
                    "discarding an unusable precompiled component");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores the precompiled form of `component`. Failures are logged, not returned:
    /// the cache only saves time.
    pub(crate) fn store(&self, digest: &Digest, component: &Component) {
        let write = || -> std::io::Result<()> {
            let bytes = component.serialize().map_err(std::io::Error::other)?;
            let mut tmp = tempfile_in(&self.dir)?;
            tmp.1.write_all(&bytes)?;
            tmp.1.sync_all()?;
            std::fs::rename(&tmp.0, self.path(digest))
        };
        if let Err(e) = write() {
            tracing::warn!(%digest, error = %e, "could not store a precompiled component");
        }
    }
}

/// Creates a fresh file in `dir` only this process can read or write.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let path = dir.join(format!(".tmp-{}-{nonce}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    Ok((path, file))
}

/// Loads a precompiled component file.
///
/// The file is read into memory rather than mapped (`deserialize_file`): a mapped file
/// that someone truncates later would kill the whole process with SIGBUS, and reading a
/// few MiB costs about a millisecond.
#[allow(unsafe_code)] // the one place the host loads native code; see the SAFETY note
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    let bytes = std::fs::read(path)?;
    // SAFETY: the file lives in the host's private cache directory and was written by
    // `ArtifactStore::store` from a component this host compiled itself after checking
    // the module's digest; wasmtime validates the header and engine compatibility.
    unsafe { Component::deserialize(engine, &bytes) }
}
