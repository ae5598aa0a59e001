//! `Host`: the shared engine, the linker with the host imports, the epoch ticker and the
//! component cache (in memory, and on disk when a cache directory is configured).
//!
//! Loading checks the digest first and compiles at most once per digest; a module that
//! fails to compile or link is an error for that module only. This module must never run
//! guest code (that is `plugin.rs`) nor keep a module whose digest was not checked.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::HostActionPre;
use crate::cache::ArtifactStore;
use crate::config::EPOCH_TICK;
use crate::plugin::{LoadSource, Plugin};
use crate::store::StoreData;
use crate::{Digest, Error, HostConfig, Result};

/// The hostplug Wasm host: one engine, one linker, one component cache.
///
/// Cheap to clone (all clones share the engine and the cache). The epoch ticker thread
/// stops when the host and all plugins it loaded are dropped.
#[derive(Debug, Clone)]
pub struct Host {
    pub(crate) inner: Arc<HostInner>,
}

pub(crate) struct HostInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<StoreData>,
    pub(crate) config: Arc<HostConfig>,
    pub(crate) disk: Option<ArtifactStore>,
    plugins: Mutex<HashMap<Digest, Arc<Plugin>>>,
    /// Held while compiling, so that concurrent loads of one module compile it once
    /// (compilation is parallel inside wasmtime already).
    compiling: Mutex<()>,
}

impl std::fmt::Debug for HostInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostInner")
            .field("config", &self.config)
            .field("disk", &self.disk)
            .finish_non_exhaustive()
    }
}

/// The engine configuration every artifact in the cache depends on.
fn engine_config(config: &HostConfig) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    // Calls run as futures (`*_async`) so that a timer can end one stuck in a host call;
    // wasmtime 48 supports async calls on every engine.
    // Plugins are compiled once and run many times: optimise for speed.
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if config.pooling_allocator {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(64)
            .total_core_instances(256)
            .total_memories(256)
            .total_tables(256)
            .max_memory_size(config.limits.max_memory_bytes);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

impl Host {
    /// A host with `config`: builds the engine and the linker and starts the epoch
    /// ticker.
    /// Errors: `Config` when a capability's policy makes no sense, `Engine`, `Io`.
    pub fn new(config: HostConfig) -> Result<Self> {
        crate::capability::validate(&config)?;
        let engine =
            Engine::new(&engine_config(&config)).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        crate::store::link(&mut linker)?;
        let disk = match &config.cache_dir {
            Some(dir) => Some(ArtifactStore::open(dir, &engine)?),
            None => None,
        };
        spawn_ticker(&engine)?;
        Ok(Self {
            inner: Arc::new(HostInner {
                engine,
                linker,
                config: Arc::new(config),
                disk,
                plugins: Mutex::default(),
                compiling: Mutex::default(),
            }),
        })
    }

    /// The configuration this host was built with.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Loads a module: checks `expected` (when given) against the sha256 of `bytes`,
    /// then returns the cached plugin, or the on-disk precompiled one, or compiles it
    /// (and stores the precompiled form on disk). Errors: `DigestMismatch` (nothing is
    /// compiled), `BadModule` (only this module is affected).
    pub fn load(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Arc<Plugin>> {
        let digest = Digest::of(bytes);
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(Error::DigestMismatch {
                expected: *expected,
                actual: digest,
            });
        }
        if let Some(p) = self.cached(&digest) {
            return Ok(p);
        }
        let _compiling = self
            .inner
            .compiling
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(p) = self.cached(&digest) {
            return Ok(p);
        }
        let started = Instant::now();
        let component =
            Component::new(&self.inner.engine, bytes).map_err(|e| Error::BadModule {
                digest,
                message: format!("{e:#}"),
            })?;
        let plugin = self.prepare(digest, component, LoadSource::Compiled, started)?;
        if let Some(disk) = &self.inner.disk {
            disk.store(&digest, &plugin.component);
        }
        Ok(self.remember(plugin))
    }

    /// Reads `path` and [`load`](Self::load)s it.
    pub fn load_file(&self, path: &Path, expected: Option<&Digest>) -> Result<Arc<Plugin>> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        self.load(&bytes, expected)
    }

    /// The plugin with `digest` if this host holds it: in memory, or precompiled in the
    /// cache directory (a restarted host finds its earlier modules there).
    pub fn cached(&self, digest: &Digest) -> Option<Arc<Plugin>> {
        if let Some(p) = self.lock().get(digest) {
            return Some(p.clone());
        }
        let disk = self.inner.disk.as_ref()?;
        let started = Instant::now();
        let component = disk.load(&self.inner.engine, digest)?;
        match self.prepare(*digest, component, LoadSource::DiskCache, started) {
            Ok(p) => Some(self.remember(p)),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "precompiled component does not link");
                None
            }
        }
    }

    /// Drops the plugin with `digest` from the in-memory cache (the on-disk artifact
    /// stays). Invocations already running keep their `Arc<Plugin>`.
    pub fn forget(&self, digest: &Digest) {
        self.lock().remove(digest);
    }

    /// Digests of the plugins held in memory.
    pub fn digests(&self) -> Vec<Digest> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Plugin>>> {
        self.inner.plugins.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn remember(&self, plugin: Plugin) -> Arc<Plugin> {
        self.lock()
            .entry(plugin.digest)
            .or_insert_with(|| Arc::new(plugin))
            .clone()
    }

    /// Pre-instantiates `component` against the linker and checks its exports.
    pub(crate) fn prepare(
        &self,
        digest: Digest,
        component: Component,
        source: LoadSource,
        started: Instant,
    ) -> Result<Plugin> {
        let bad = |e: wasmtime::Error| Error::BadModule {
            digest,
            message: format!("{e:#}"),
        };
        let instance_pre = self.inner.linker.instantiate_pre(&component).map_err(bad)?;
        let pre = HostActionPre::new(instance_pre).map_err(bad)?;
        Ok(Plugin {
            digest,
            source,
            load_duration: started.elapsed(),
            component,
            pre,
            engine: self.inner.engine.clone(),
            config: self.inner.config.clone(),
            info: std::sync::OnceLock::new(),
        })
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is gone (the host
/// and every plugin it loaded were dropped).
fn spawn_ticker(engine: &Engine) -> Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("hostplug-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| Error::io("starting the epoch ticker thread", e))
}
