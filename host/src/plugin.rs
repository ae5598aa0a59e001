//! `Plugin`: one loaded component, and the running of its exports — a fresh `Store` per
//! call, WASI built from the call's grants, the host imports (`docker`, `files`, `log`), the
//! memory limiter, the epoch deadline and the mapping of every failure to an
//! [`ErrorKind`].
//!
//! This module must never grant more than the call's [`Grants`]: the WASI context starts
//! empty (no env, args, sockets or stdio) and only `/etc` may be preopened, read-only in
//! dry runs; docker calls in dry runs may only read. Nothing a plugin does may end anything but its own call.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{self, HostAction, HostActionPre, PluginError};
use crate::config::EPOCH_TICK;
use crate::docker::DockerClient;
use crate::files::EtcFiles;
use crate::stdio::CappedPipe;
use crate::{
    Digest, Error, ErrorKind, EtcAccess, Grants, HostConfig, Invocation, InvokeError,
    InvokeOutcome, LogLevel, LogRecord, LogSource, MethodInfo, PluginInfo, Result,
};

/// Longest message taken from a trap or from stderr into an error message.
const MAX_ERROR_MESSAGE_CHARS: usize = 2000;

/// Where a loaded plugin's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadSource {
    /// Compiled from the module's bytes by this host.
    Compiled,
    /// Loaded precompiled from the cache directory (no compilation).
    DiskCache,
    /// Loaded from an artifact a trusted peer compiled with an identical engine (the
    /// operator, over the worker's authenticated channel; see `Host::load_precompiled`).
    Shipped,
}

/// A loaded, pre-instantiated plugin. Obtain one from [`Host::load`](crate::Host::load)
/// or [`Host::cached`](crate::Host::cached); share it freely (`Arc`), every call gets
/// its own store.
pub struct Plugin {
    pub(crate) digest: Digest,
    pub(crate) source: LoadSource,
    pub(crate) load_duration: Duration,
    pub(crate) component: Component,
    pub(crate) pre: HostActionPre<StoreState>,
    pub(crate) engine: Engine,
    pub(crate) config: Arc<HostConfig>,
    pub(crate) info: OnceLock<PluginInfo>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("digest", &self.digest)
            .field("source", &self.source)
            .field("load_duration", &self.load_duration)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The module's sha256.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Whether this host compiled the module or found it precompiled on disk.
    pub fn source(&self) -> LoadSource {
        self.source
    }

    /// Time spent compiling (or loading the precompiled artifact) and pre-instantiating.
    pub fn load_duration(&self) -> Duration {
        self.load_duration
    }

    /// Calls the plugin's `describe` export without any host access (no /etc, no
    /// docker) under `Limits::describe_deadline`. The result is kept after the first
    /// success. A method whose `params-schema` is not JSON makes the module `BadModule`.
    pub fn describe(&self) -> Result<PluginInfo> {
        if let Some(info) = self.info.get() {
            return Ok(info.clone());
        }
        let deadline = self.config.limits.describe_deadline;
        let (result, _logs) = self.run(&Grants::none(), true, deadline, |bindings, store| {
            bindings.call_describe(store).map(Ok)
        });
        let raw = result?;
        let mut methods = Vec::with_capacity(raw.methods.len());
        for m in raw.methods {
            let params_schema =
                serde_json::from_str(&m.params_schema).map_err(|e| Error::BadModule {
                    digest: self.digest,
                    message: format!("method {:?}: params-schema is not JSON: {e}", m.name),
                })?;
            methods.push(MethodInfo {
                name: m.name,
                description: m.description,
                mutates: m.mutates,
                params_schema,
            });
        }
        let info = PluginInfo {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            methods,
        };
        Ok(self.info.get_or_init(|| info).clone())
    }

    /// Runs one operation with exactly `grants`. Blocking: from async code call it in
    /// `tokio::task::spawn_blocking`.
    ///
    /// A dry run gets /etc read-only whatever `grants.etc` says, and its docker calls
    /// are limited to `GET` (reads) whatever the policy allows. A trap, a timeout or an
    /// out-of-memory ends this call only (kinds `trap`, `timeout`, `resource-limit`);
    /// the plugin stays usable.
    pub fn invoke(
        &self,
        invocation: &Invocation,
        grants: &Grants,
    ) -> std::result::Result<InvokeOutcome, InvokeError> {
        let started = Instant::now();
        let limits = &self.config.limits;
        let deadline = invocation
            .deadline
            .unwrap_or(limits.default_deadline)
            .min(limits.max_deadline);
        let (result, mut logs) = self.run(grants, invocation.dry_run, deadline, |b, store| {
            b.call_invoke(
                store,
                &invocation.method,
                &invocation.params,
                invocation.dry_run,
            )
        });
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(mut e) => {
                e.logs = logs;
                return Err(e);
            }
        };
        let size = outcome.output.len() + outcome.diff.as_ref().map_or(0, String::len);
        if size > limits.max_output_bytes {
            let mut e = InvokeError::new(
                ErrorKind::ResourceLimit,
                format!(
                    "output too large: {size} bytes of output and diff exceed the limit of {} bytes",
                    limits.max_output_bytes
                ),
            );
            e.logs = logs;
            return Err(e);
        }
        let output = if outcome.output.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&outcome.output).unwrap_or_else(|_| {
                logs.push(LogRecord {
                    level: LogLevel::Warn,
                    source: LogSource::Host,
                    message: "the plugin's output is not JSON; it is returned as a string".into(),
                });
                serde_json::Value::String(outcome.output)
            })
        };
        Ok(InvokeOutcome {
            changed: outcome.changed,
            output,
            diff: outcome.diff,
            logs,
            duration: started.elapsed(),
        })
    }

    /// Runs `call` in a fresh store set up from `grants`, and maps every failure to an
    /// [`InvokeError`]. Returns the logs in either case.
    fn run<R>(
        &self,
        grants: &Grants,
        dry_run: bool,
        deadline: Duration,
        call: impl FnOnce(
            &HostAction,
            &mut Store<StoreState>,
        ) -> wasmtime::Result<std::result::Result<R, PluginError>>,
    ) -> (std::result::Result<R, InvokeError>, Vec<LogRecord>) {
        let limits = &self.config.limits;
        let stdout = CappedPipe::new(limits.max_log_bytes);
        let stderr = CappedPipe::new(limits.max_log_bytes);
        let state = match self.store_state(grants, dry_run, deadline, &stdout, &stderr) {
            Ok(s) => s,
            Err(e) => return (Err(e), Vec::new()),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(deadline_ticks(deadline));
        store.epoch_deadline_trap();

        let mut instantiated = false;
        let result = self.pre.instantiate(&mut store).and_then(|bindings| {
            instantiated = true;
            call(&bindings, &mut store)
        });
        let state = store.into_data();
        let (err_bytes, err_dropped) = stderr.take();
        let last_stderr = stderr_tail(&err_bytes);
        let result = match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(plugin_error)) => Err(from_plugin_error(plugin_error)),
            Err(e) => Err(classify(
                &e,
                &state,
                deadline,
                last_stderr.as_deref(),
                instantiated,
            )),
        };
        let logs = state.logs.finish(stdout.take(), (err_bytes, err_dropped));
        (result, logs)
    }

    fn store_state(
        &self,
        grants: &Grants,
        dry_run: bool,
        deadline: Duration,
        stdout: &CappedPipe,
        stderr: &CappedPipe,
    ) -> std::result::Result<StoreState, InvokeError> {
        let limits = &self.config.limits;
        let mut b = WasiCtxBuilder::new();
        b.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_blocking_current_thread(true)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let perms = match (grants.etc, dry_run) {
            (EtcAccess::None, _) => None,
            (EtcAccess::Read, _) | (EtcAccess::Write, true) => Some(FsPerms::ReadOnly),
            (EtcAccess::Write, false) => Some(FsPerms::ReadWrite),
        };
        if let Some(perms) = perms {
            let dir = grants.etc_dir.as_ref().ok_or_else(|| {
                InvokeError::new(
                    ErrorKind::Internal,
                    "the etc capability is granted but the host has no etc directory",
                )
            })?;
            b.preopened_dir(dir, "/etc", perms).map_err(|e| {
                InvokeError::new(
                    ErrorKind::Internal,
                    format!("cannot open the etc directory {}: {e}", dir.display()),
                )
            })?;
        }
        Ok(StoreState {
            wasi: b.build(),
            table: ResourceTable::new(),
            limiter: Limiter {
                max_memory_bytes: limits.max_memory_bytes,
                max_table_elements: limits.max_table_elements,
                memory_exhausted: false,
            },
            logs: LogSink::new(limits.max_log_bytes),
            docker: grants
                .docker
                .as_deref()
                .map(|socket| DockerClient::new(socket, self.config.docker.clone(), dry_run)),
            files: EtcFiles::new(grants.etc, grants.etc_dir.as_deref(), dry_run),
            deadline: Instant::now() + deadline,
        })
    }
}

/// The last two meaningful stderr lines: for a Rust panic, where and what.
fn stderr_tail(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let tail = lines[lines.len().saturating_sub(2)..].join(" ");
    (!tail.is_empty()).then_some(tail)
}

fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    // +1: the current tick may be about to end.
    u64::try_from(deadline.as_nanos().div_ceil(tick)).unwrap_or(u64::MAX / 2) + 1
}

fn from_plugin_error(e: PluginError) -> InvokeError {
    match e {
        PluginError::InvalidParams(m) => InvokeError::new(ErrorKind::InvalidParams, m),
        PluginError::NotFound(m) => InvokeError::new(ErrorKind::NotFound, m),
        PluginError::Denied(m) => InvokeError::new(ErrorKind::Denied, m),
        PluginError::Failed(m) => InvokeError::new(ErrorKind::Failed, m),
    }
}

/// Maps a wasmtime error from instantiating or calling a plugin to an error kind.
fn classify(
    e: &wasmtime::Error,
    state: &StoreState,
    deadline: Duration,
    last_stderr: Option<&str>,
    instantiated: bool,
) -> InvokeError {
    let trap = e.downcast_ref::<Trap>().copied();
    let (kind, message) = if trap == Some(Trap::Interrupt) {
        (
            ErrorKind::Timeout,
            format!("the plugin ran past its deadline of {deadline:?} and was stopped"),
        )
    } else if state.limiter.memory_exhausted {
        (
            ErrorKind::ResourceLimit,
            format!(
                "out of memory: the plugin reached its linear memory limit of {} bytes",
                state.limiter.max_memory_bytes
            ),
        )
    } else if trap == Some(Trap::StackOverflow) {
        (
            ErrorKind::Trap,
            "the plugin overflowed its stack".to_owned(),
        )
    } else if let Some(trap) = trap {
        (ErrorKind::Trap, format!("the plugin trapped: {trap}"))
    } else {
        let text = format!("{e:#}");
        let first = text.lines().next().unwrap_or_default();
        if instantiated {
            (ErrorKind::Trap, format!("the plugin failed: {first}"))
        } else {
            // Not the plugin's doing: e.g. the instance pool is exhausted.
            (
                ErrorKind::Internal,
                format!("could not instantiate the plugin: {first}"),
            )
        }
    };
    let mut message = match (kind, last_stderr) {
        (ErrorKind::Trap, Some(line)) => format!("{message} (stderr: {line})"),
        _ => message,
    };
    if message.chars().count() > MAX_ERROR_MESSAGE_CHARS {
        message = message
            .chars()
            .take(MAX_ERROR_MESSAGE_CHARS)
            .collect::<String>()
            + "…";
    }
    InvokeError::new(kind, message)
}

/// The data of one store.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    logs: LogSink,
    docker: Option<DockerClient>,
    files: EtcFiles,
    deadline: Instant,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::hostplug::plugin::types::Host for StoreState {}

impl bindings::hostplug::plugin::log::Host for StoreState {
    fn log(&mut self, level: bindings::Level, message: String) {
        let level = match level {
            bindings::Level::Debug => LogLevel::Debug,
            bindings::Level::Info => LogLevel::Info,
            bindings::Level::Warn => LogLevel::Warn,
            bindings::Level::Error => LogLevel::Error,
        };
        self.logs.push(level, LogSource::Log, message);
    }
}

impl bindings::hostplug::plugin::docker::Host for StoreState {
    fn request(
        &mut self,
        method: String,
        path: String,
        body: Option<Vec<u8>>,
    ) -> std::result::Result<bindings::DockerResponse, String> {
        let Some(client) = &self.docker else {
            return Err("denied: this plugin has no docker capability".to_owned());
        };
        client
            .request(&method, &path, body.as_deref(), self.deadline)
            .map(|r| bindings::DockerResponse {
                status: r.status,
                body: r.body,
            })
    }
}

impl bindings::hostplug::plugin::files::Host for StoreState {
    fn stat(&mut self, path: String) -> std::result::Result<bindings::FileAttributes, String> {
        self.files.stat(&path).map(|a| bindings::FileAttributes {
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
        })
    }

    fn set_attributes(
        &mut self,
        path: String,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> std::result::Result<(), String> {
        self.files.set_attributes(&path, mode, uid, gid)
    }
}

/// Caps linear memory and tables, and remembers when the cap was hit so that the trap
/// that usually follows is reported as `resource-limit`.
struct Limiter {
    max_memory_bytes: usize,
    max_table_elements: usize,
    memory_exhausted: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.memory_exhausted = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }
}

/// Log records of one call, capped in total bytes.
struct LogSink {
    records: Vec<LogRecord>,
    bytes: usize,
    cap: usize,
    dropped: usize,
}

impl LogSink {
    fn new(cap: usize) -> Self {
        Self {
            records: Vec::new(),
            bytes: 0,
            cap,
            dropped: 0,
        }
    }

    fn push(&mut self, level: LogLevel, source: LogSource, mut message: String) {
        let room = self.cap.saturating_sub(self.bytes);
        if message.len() > room {
            let mut cut = room;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            self.dropped += message.len() - cut;
            message.truncate(cut);
        }
        if message.is_empty() {
            return;
        }
        self.bytes += message.len();
        self.records.push(LogRecord {
            level,
            source,
            message,
        });
    }

    /// Appends stdout and stderr line by line, then notes what was dropped.
    fn finish(mut self, stdout: (Vec<u8>, usize), stderr: (Vec<u8>, usize)) -> Vec<LogRecord> {
        for ((bytes, dropped), source, level) in [
            (stdout, LogSource::Stdout, LogLevel::Info),
            (stderr, LogSource::Stderr, LogLevel::Warn),
        ] {
            self.dropped += dropped;
            for line in String::from_utf8_lossy(&bytes).lines() {
                if !line.is_empty() {
                    self.push(level, source, line.to_owned());
                }
            }
        }
        if self.dropped > 0 {
            self.records.push(LogRecord {
                level: LogLevel::Warn,
                source: LogSource::Host,
                message: format!(
                    "logs truncated: {} bytes dropped beyond the limit of {} bytes",
                    self.dropped, self.cap
                ),
            });
        }
        self.records
    }
}
