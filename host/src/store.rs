//! The data of one store — WASI's context and resource table, the limiter, and each
//! capability's per-call state side by side — and the one place capabilities are
//! composed: [`StoreData::prepare`] (prepare phase) and [`link`] (link phase).
//!
//! Each capability's import is linked with a projection from [`StoreData`] to that
//! capability's own view, so an import sees its state and nothing else of the store. To
//! add a capability: a field, its `prepare` line and its `add_to_linker` line, here.
//!
//! This module must never grant anything itself: the WASI context starts empty (no
//! environment, arguments, sockets, network or stdio) and only capabilities add to it.

use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::capability::Call;
use crate::capability::containerd::{self, ContainerdState};
use crate::capability::docker::{self, DockerState};
use crate::capability::etc::{self, EtcState, EtcView};
use crate::capability::log::{self, LogSink};
use crate::capability::registry_auth::{self, RegistryAuthState};
use crate::capability::systemd::{self, SystemdState};
use crate::config::{MAX_INSTANCES, MAX_MEMORIES, MAX_TABLES};
use crate::{Error, Grants, HostConfig, InvokeError, Result};

/// The data of one store.
pub(crate) struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    // Each capability's state for this call.
    pub(crate) log: LogSink,
    pub(crate) etc: EtcState,
    docker: DockerState,
    containerd: ContainerdState,
    registry_auth: RegistryAuthState,
    systemd: SystemdState,
}

impl StoreData {
    /// Prepare phase: the data of a store for one call with `grants` (a dry run when
    /// `dry_run`), ending at `deadline`, with a memory cap of `max_memory_bytes` for the
    /// whole store.
    pub(crate) fn prepare(
        config: &HostConfig,
        grants: &Grants,
        dry_run: bool,
        deadline: Instant,
        max_memory_bytes: usize,
    ) -> std::result::Result<Self, InvokeError> {
        let call = Call {
            grants,
            config,
            dry_run,
            deadline,
        };
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_blocking_current_thread(true)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let log = LogSink::prepare(&call, &mut wasi);
        let etc = EtcState::prepare(&call, &mut wasi)?;
        Ok(Self {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: Limiter::new(max_memory_bytes, config.limits.max_table_elements),
            log,
            etc,
            docker: DockerState::prepare(&call),
            containerd: ContainerdState::prepare(&call),
            registry_auth: RegistryAuthState::prepare(&call),
            systemd: SystemdState::prepare(&call),
        })
    }

    /// The etc capability's view: WASI's filesystem, its state and the call's logs.
    fn etc_view(&mut self) -> EtcView<'_> {
        EtcView {
            inner: WasiFilesystemCtxView {
                ctx: self.wasi.filesystem(),
                table: &mut self.table,
            },
            state: &mut self.etc,
            logs: &mut self.log,
        }
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The `types` interface holds types only; it is linked so that components importing
/// it find it.
impl crate::bindings::hostplug::plugin::types::Host for StoreData {}

/// Link phase: WASI (which grants nothing by itself: no preopens, sockets, environment
/// or stdio unless a capability adds them), then every capability's imports on its view.
pub(crate) fn link(linker: &mut Linker<StoreData>) -> Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)
        .map_err(|e| Error::Engine(format!("linking WASI: {e:#}")))?;
    crate::bindings::hostplug::plugin::types::add_to_linker::<_, HasSelf<StoreData>>(linker, |s| s)
        .map_err(|e| Error::Engine(format!("linking the types interface: {e:#}")))?;
    log::add_to_linker(linker, |s| &mut s.log)?;
    etc::add_to_linker(linker, StoreData::etc_view)?;
    docker::add_to_linker(linker, |s| &mut s.docker)?;
    containerd::add_to_linker(linker, |s| &mut s.containerd)?;
    registry_auth::add_to_linker(linker, |s| &mut s.registry_auth)?;
    systemd::add_to_linker(linker, |s| &mut s.systemd)?;
    Ok(())
}

/// Caps the memory and table elements of the whole store (every linear memory and every
/// table of every core instance together) and the number of instances, memories and
/// tables, and remembers when the memory cap was hit so that the trap that usually
/// follows is reported as `resource-limit`.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub(crate) max_memory_bytes: usize,
    max_table_elements: usize,
    /// Bytes of all memories of the store so far.
    memory_bytes: usize,
    /// Elements of all tables of the store so far.
    table_elements: usize,
    pub(crate) memory_exhausted: bool,
}

impl Limiter {
    fn new(max_memory_bytes: usize, max_table_elements: usize) -> Self {
        Self {
            max_memory_bytes,
            max_table_elements,
            memory_bytes: 0,
            table_elements: 0,
            memory_exhausted: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A new memory arrives with `current` 0, a growing one with its size so far.
        let total = self
            .memory_bytes
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.max_memory_bytes {
            self.memory_exhausted = true;
            return Ok(false);
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .table_elements
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.max_table_elements {
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_counts_every_memory_of_the_store() {
        let mut l = Limiter::new(100, 10);
        assert!(l.memory_growing(0, 40, None).expect("ok"));
        assert!(l.memory_growing(0, 40, None).expect("ok"));
        assert!(
            !l.memory_growing(0, 40, None).expect("ok"),
            "a third memory"
        );
        assert!(l.memory_exhausted);
        assert!(
            l.memory_growing(40, 60, None).expect("ok"),
            "grow one to 60"
        );
        assert!(!l.memory_growing(60, 70, None).expect("ok"));
        assert!(l.table_growing(0, 6, None).expect("ok"));
        assert!(!l.table_growing(0, 6, None).expect("ok"));
    }
}
