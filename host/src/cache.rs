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
//!
//! Trust in the directory is checked, not assumed: the fingerprint directory is created
//! `0700` and must be owned by this process's user and writable by nobody else; the
//! cache directory above it must belong to this user or root (a Kubernetes emptyDir is
//! root-owned and `0777`, but only its own Pod can reach it); and each artifact is opened
//! without following links and loaded only when it is a regular file of this user that
//! nobody else may write. Anything else is refused (the directory) or skipped and
//! recompiled (an artifact).

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
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
    /// The store under `cache_dir` for `engine`, creating the directory. Errors:
    /// `Config` when the directory is not private to this user (see the module docs).
    pub(crate) fn open(cache_dir: &Path, engine: &Engine) -> Result<Self> {
        std::fs::create_dir_all(cache_dir)
            .map_err(|e| Error::io(format!("creating cache dir {}", cache_dir.display()), e))?;
        let euid = rustix::process::geteuid().as_raw();
        let meta = std::fs::metadata(cache_dir)
            .map_err(|e| Error::io(format!("reading cache dir {}", cache_dir.display()), e))?;
        if meta.uid() != euid && meta.uid() != 0 {
            return Err(Error::Config(format!(
                "cache_dir {}: owned by uid {}, not by this user ({euid}) or root; precompiled code in it would be trusted",
                cache_dir.display(),
                meta.uid()
            )));
        }
        let dir = cache_dir.join(engine_fingerprint(engine));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::io(
                    format!("creating cache dir {}", dir.display()),
                    e,
                ));
            }
        }
        let meta = std::fs::symlink_metadata(&dir)
            .map_err(|e| Error::io(format!("reading cache dir {}", dir.display()), e))?;
        private(&meta, euid).map_err(|why| {
            Error::Config(format!(
                "cache_dir {}: {why}; it holds native code, so only this user may write it",
                dir.display()
            ))
        })?;
        if !meta.is_dir() {
            return Err(Error::Config(format!(
                "cache_dir {}: not a directory",
                dir.display()
            )));
        }
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
        let bytes = match read_private(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(%digest, path = %path.display(), error = %e,
                    "refusing a precompiled component that this user does not own alone");
                return None;
            }
        };
        match deserialize(engine, &bytes) {
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

/// Why `meta` is not private to `euid`: another owner, or write access for the group or
/// others.
fn private(meta: &std::fs::Metadata, euid: u32) -> std::result::Result<(), String> {
    if meta.uid() != euid {
        return Err(format!(
            "owned by uid {}, not by this user ({euid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "writable by its group or by everyone (mode {:#o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Reads an artifact that is a regular file of this user that nobody else may write;
/// links are not followed. The checks are made on the opened file, so a swap between
/// the check and the read is impossible.
fn read_private(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    private(&meta, rustix::process::geteuid().as_raw()).map_err(std::io::Error::other)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Loads a precompiled component from its bytes.
///
/// The file is read into memory rather than mapped (`deserialize_file`): a mapped file
/// that someone truncates later would kill the whole process with SIGBUS, and reading a
/// few MiB costs about a millisecond.
#[allow(unsafe_code)] // the one place the host loads native code; see the SAFETY note
fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: the bytes come from a regular file of this user that nobody else may write,
    // in a directory private to this user, written by `ArtifactStore::store` from a
    // component this host compiled itself after checking the module's digest; wasmtime
    // validates the header and engine compatibility.
    unsafe { Component::deserialize(engine, bytes) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn engine() -> Engine {
        Engine::default()
    }

    #[test]
    fn the_cache_directory_must_be_private() {
        let tmp = tempfile::tempdir().expect("ok");
        let cache = tmp.path().join("cache");
        let store = ArtifactStore::open(&cache, &engine()).expect("a fresh directory");
        let mode = std::fs::metadata(&store.dir).expect("ok").mode() & 0o777;
        assert_eq!(mode, 0o700);

        // Group- or world-writable: refused, with the path and the mode.
        std::fs::set_permissions(&store.dir, std::fs::Permissions::from_mode(0o777)).expect("ok");
        let e = ArtifactStore::open(&cache, &engine()).expect_err("world-writable");
        assert!(matches!(e, Error::Config(_)), "{e}");
        assert!(e.to_string().contains("0o777"), "{e}");
        std::fs::set_permissions(&store.dir, std::fs::Permissions::from_mode(0o770)).expect("ok");
        assert!(
            ArtifactStore::open(&cache, &engine()).is_err(),
            "group-writable"
        );
        std::fs::set_permissions(&store.dir, std::fs::Permissions::from_mode(0o755)).expect("ok");
        ArtifactStore::open(&cache, &engine()).expect("readable by others is fine");

        // Owned by someone else (the tests run as root, which may chown).
        std::os::unix::fs::chown(&store.dir, Some(65534), None).expect("chown");
        let e = ArtifactStore::open(&cache, &engine()).expect_err("foreign-owned");
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        std::os::unix::fs::chown(&store.dir, Some(0), None).expect("chown");

        let other = tmp.path().join("other");
        std::fs::create_dir(&other).expect("ok");
        std::os::unix::fs::chown(&other, Some(65534), None).expect("chown");
        let e = ArtifactStore::open(&other, &engine()).expect_err("foreign parent");
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
    }

    #[test]
    fn only_private_artifacts_are_read() {
        let tmp = tempfile::tempdir().expect("ok");
        let file = tmp.path().join("a.cwasm");
        std::fs::write(&file, b"native").expect("ok");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("ok");
        assert_eq!(read_private(&file).expect("private"), b"native");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("ok");
        assert!(read_private(&file).is_err(), "world-writable");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("ok");
        std::os::unix::fs::chown(&file, Some(65534), None).expect("chown");
        assert!(read_private(&file).is_err(), "foreign-owned");
        let link = tmp.path().join("link.cwasm");
        std::os::unix::fs::symlink(&file, &link).expect("ok");
        assert!(read_private(&link).is_err(), "a link");
    }
}
