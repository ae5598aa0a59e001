//! `Plugin`: one loaded component, and the running of its exports — a fresh `Store` per
//! call whose data (`store.rs`) holds each capability's state prepared from the call's
//! grants, the per-store limiter, the deadline and the mapping of every failure to an
//! [`ErrorKind`]. This module knows no capability's internals.
//!
//! The deadline is enforced twice: the epoch deadline interrupts guest code, and the call
//! itself runs as a future under a timer, so a plugin waiting inside a host call (a WASI
//! `poll` on a monotonic-clock sleep) is stopped too: dropping the future abandons the
//! store, which is never used again.
//!
//! This module must never grant more than the call's [`Grants`]: it hands them to the
//! capabilities unchanged, with the dry-run flag that makes each of them read-only.
//! Nothing a plugin does may end anything but its own call.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmtime::component::Component;
use wasmtime::{Engine, Store, Trap};

use crate::bindings::{self, HostActionPre, PluginError};
use crate::capability::etc::record::ChangeRecord;
use crate::config::EPOCH_TICK;
use crate::store::StoreData;
use crate::{
    Digest, Error, ErrorKind, Grants, HostConfig, Invocation, InvokeError, InvokeOutcome, LogLevel,
    LogRecord, LogSource, MethodInfo, PluginInfo, Result,
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
    pub(crate) pre: HostActionPre<StoreData>,
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
        let limits = &self.config.limits;
        let (result, _logs, _record) = self.run(
            &Grants::none(),
            true,
            limits.describe_deadline,
            limits.describe_max_memory_bytes,
            Export::Describe,
        );
        let Returned::Info(raw) = result? else {
            return Err(Error::Engine("describe returned an outcome".into()));
        };
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
                params_schema: Some(params_schema),
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
        self.invoke_recorded(invocation, grants).0
    }

    /// [`invoke`](Self::invoke), and the revert record the host kept of it: what every
    /// path the call changed under /etc was before (see [`ChangeRecord`]). `None` when
    /// the call could change nothing there (a dry run, no write access to /etc). A call
    /// that failed part-way has a record too: what it changed before it failed.
    pub fn invoke_recorded(
        &self,
        invocation: &Invocation,
        grants: &Grants,
    ) -> (
        std::result::Result<InvokeOutcome, InvokeError>,
        Option<ChangeRecord>,
    ) {
        let started = Instant::now();
        let limits = &self.config.limits;
        let deadline = invocation
            .deadline
            .unwrap_or(limits.default_deadline)
            .min(limits.max_deadline);
        let (result, mut logs, record) = self.run(
            grants,
            invocation.dry_run,
            deadline,
            limits.max_memory_bytes,
            Export::Invoke(invocation),
        );
        let outcome = match result {
            Ok(Returned::Outcome(outcome)) => outcome,
            Ok(Returned::Info(_)) => {
                return (
                    Err(InvokeError::new(
                        ErrorKind::Internal,
                        "invoke returned a description",
                    )),
                    record,
                );
            }
            Err(mut e) => {
                e.logs = logs;
                return (Err(e), record);
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
            return (Err(e), record);
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
        let reboot_required = outcome
            .reboot_required
            .map(|why| reboot_reason(why, &mut logs));
        let outcome = InvokeOutcome {
            changed: outcome.changed,
            output,
            diff: outcome.diff,
            logs,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            on_change: Vec::new(),
            revert: None,
            reboot_required,
        };
        (Ok(outcome), record)
    }

    /// Runs `export` in a fresh store set up from `grants`, under `deadline` and a
    /// memory cap of `max_memory_bytes` for the whole store, and maps every failure to an
    /// [`InvokeError`]. Returns the logs in either case.
    fn run(
        &self,
        grants: &Grants,
        dry_run: bool,
        deadline: Duration,
        max_memory_bytes: usize,
        export: Export<'_>,
    ) -> (
        std::result::Result<Returned, InvokeError>,
        Vec<LogRecord>,
        Option<ChangeRecord>,
    ) {
        let data = match StoreData::prepare(
            &self.config,
            grants,
            dry_run,
            Instant::now() + deadline,
            max_memory_bytes,
        ) {
            Ok(d) => d,
            Err(e) => return (Err(e), Vec::new(), None),
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(deadline_ticks(deadline));
        store.epoch_deadline_trap();

        let mut instantiated = false;
        let call = async {
            let bindings = self.pre.instantiate_async(&mut store).await?;
            instantiated = true;
            match export {
                Export::Describe => bindings
                    .call_describe(&mut store)
                    .await
                    .map(|info| Ok(Returned::Info(info))),
                Export::Invoke(inv) => bindings
                    .call_invoke(&mut store, &inv.method, &inv.params, inv.dry_run)
                    .await
                    .map(|r| r.map(Returned::Outcome)),
            }
        };
        // The timer ends a call that is stuck in a host function, where the epoch
        // deadline cannot reach it; dropping the future abandons the store.
        // (The timer is made inside the runtime: it needs its time driver.)
        let timed =
            wasmtime_wasi::runtime::in_tokio(
                async move { tokio::time::timeout(deadline, call).await },
            );
        let mut data = store.into_data();
        // A write under /etc that failed where the plugin heard only "I/O error" (see
        // `capability/etc/streams.rs`): a host warning, and added to its error below.
        let failed_write = data.etc.failed_write();
        if let Some(seen) = &failed_write {
            data.log.push(LogLevel::Warn, LogSource::Host, seen.clone());
        }
        let first_refusal = data.log.first_refusal().map(str::to_owned);
        let (logs, last_stderr) = data.log.finish();
        let record = data.etc.finish();
        let result = match timed {
            Err(_elapsed) => Err(InvokeError::new(
                ErrorKind::Timeout,
                format!(
                    "the plugin ran past its deadline of {deadline:?} and was stopped (it was waiting in a host call)"
                ),
            )),
            Ok(Ok(Ok(r))) => Ok(r),
            Ok(Ok(Err(plugin_error))) => Err(from_plugin_error(plugin_error)),
            Ok(Err(e)) => Err(classify(
                &e,
                &data.limiter,
                deadline,
                last_stderr.as_deref(),
                instantiated,
            )),
        };
        // A plugin reports a refused path as its own `denied` error, with the OS's
        // words; add the host's reason. A plugin's error (or trap) after a failed write
        // gets what the host saw of that write.
        let result = result.map_err(|mut e| {
            if let Some(refusal) = &first_refusal
                && e.kind == ErrorKind::Denied
                && !e.message.contains(refusal.as_str())
            {
                e.message = format!("{} (the host refused: {refusal})", e.message);
            }
            if let Some(seen) = &failed_write
                && matches!(
                    e.kind,
                    ErrorKind::InvalidParams
                        | ErrorKind::NotFound
                        | ErrorKind::Denied
                        | ErrorKind::Failed
                        | ErrorKind::Trap
                )
                && !e.message.contains(seen.as_str())
            {
                e.message = format!("{}; the host saw: {seen}", e.message);
            }
            e
        });
        (result, logs, record)
    }
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
    limiter: &crate::store::Limiter,
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
    } else if limiter.memory_exhausted {
        (
            ErrorKind::ResourceLimit,
            format!(
                "out of memory: the plugin reached its memory limit of {} bytes (all its linear memories together)",
                limiter.max_memory_bytes
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

/// Which export a store runs.
#[derive(Clone, Copy)]
enum Export<'a> {
    Describe,
    Invoke(&'a Invocation),
}

/// What an export returned.
enum Returned {
    Info(bindings::hostplug::plugin::types::PluginInfo),
    Outcome(bindings::hostplug::plugin::types::Outcome),
}

/// The plugin's reboot request (`outcome.reboot-required`) as it travels on: one line of
/// at most [`MAX_REBOOT_FIELD_BYTES`](hostplug_api::disruption::MAX_REBOOT_FIELD_BYTES)
/// (it becomes the reason of the operator's reboot request, an Event and a node's status
/// message). A longer or multi-line reason is cut, not refused: the call already changed
/// the node, and the request must not be lost; the host says so in the logs.
fn reboot_reason(why: String, logs: &mut Vec<LogRecord>) -> String {
    use hostplug_api::disruption::MAX_REBOOT_FIELD_BYTES;
    let line = why
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut cut = line.to_owned();
    if cut.len() > MAX_REBOOT_FIELD_BYTES {
        let mut end = MAX_REBOOT_FIELD_BYTES;
        while !cut.is_char_boundary(end) {
            end -= 1;
        }
        cut.truncate(end);
    }
    if cut != why {
        logs.push(LogRecord {
            level: LogLevel::Warn,
            source: LogSource::Host,
            message: format!(
                "the plugin's reboot reason was cut to its first line and at most \
                 {MAX_REBOOT_FIELD_BYTES} bytes"
            ),
        });
    }
    if cut.is_empty() {
        "the plugin gave no reason".to_owned()
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reboot_reason_travels_as_one_bounded_line() {
        let mut logs = Vec::new();
        assert_eq!(
            reboot_reason("kernel arguments changed".into(), &mut logs),
            "kernel arguments changed"
        );
        assert!(logs.is_empty());
        let long = format!("{}\nsecond line", "é".repeat(400));
        let cut = reboot_reason(long, &mut logs);
        assert!(cut.len() <= hostplug_api::disruption::MAX_REBOOT_FIELD_BYTES);
        assert!(cut.starts_with('é') && !cut.contains('\n'), "{cut}");
        assert_eq!(logs.len(), 1, "the host says it cut the reason");
        assert_eq!(
            reboot_reason("  \n ".into(), &mut logs),
            "the plugin gave no reason"
        );
    }
}
