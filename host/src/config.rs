//! Host configuration: the cache directory, the per-invocation limits and each
//! capability's policy, each limit a named constant with the reason for its default.
//! The capabilities' own limits live with them (e.g. `capability/docker/policy.rs`).
//!
//! Plain data only: this module must never touch the file system or the engine.

use std::path::PathBuf;
use std::time::Duration;

use crate::capability::containerd::ContainerdPolicy;
use crate::capability::docker::DockerPolicy;
use crate::capability::etc::EtcPolicy;
use crate::capability::systemd::SystemdPolicy;

/// Default cap on all memory of one invocation's store: 128 MiB, the linear memories of
/// every core instance of the component together (a component may define several, and
/// each would otherwise get the whole cap). A file plugin holds a few copies of a file
/// under /etc (rarely over 1 MiB) and a docker plugin a response of at most
/// [`DEFAULT_DOCKER_MAX_RESPONSE_BYTES`](crate::DEFAULT_DOCKER_MAX_RESPONSE_BYTES) plus its parsed form; 128 MiB leaves room for
/// both while a worker running several invocations at once stays far below a Pod's
/// usual memory limit.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 128 << 20;

/// Cap on the core instances of one store: 64. A Rust plugin built by `wit-bindgen` and
/// `wasm-tools component new` has under ten (the main module, the WASI adapter, shims);
/// the cap stops a component from instantiating without bound.
pub const MAX_INSTANCES: usize = 64;

/// Cap on the linear memories of one store: 8. A plugin has one or two (the adapter's);
/// the total size is capped by [`DEFAULT_MAX_MEMORY_BYTES`] anyway, the count bounds the
/// bookkeeping.
pub const MAX_MEMORIES: usize = 8;

/// Cap on the tables of one store: 32. A plugin has a few (indirect calls, the
/// adapter's and the shims' tables).
pub const MAX_TABLES: usize = 32;

/// Default wall-clock deadline of one invocation: 30 s. Editing a file takes
/// milliseconds; pulling an image through the docker import is the slow case, and a
/// HostTask's per-node `timeoutSeconds` (default 60) must also cover starting the Pod.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Longest deadline a caller may ask for: 10 minutes. Beyond that a stuck plugin holds a
/// worker slot for longer than any real host action needs.
pub const MAX_DEADLINE: Duration = Duration::from_secs(600);

/// Deadline of `describe`: 5 s. It builds a few JSON schemas and touches nothing.
pub const DESCRIBE_DEADLINE: Duration = Duration::from_secs(5);

/// Memory cap of `describe`: 32 MiB for the whole store. A description is a few
/// kilobytes of JSON schemas; a Rust plugin starts with about 1–2 MiB (stack and data).
/// The operator describes every HostPlugin in its own process, so a bad module must not
/// be able to take the usual 128 MiB of an invocation there.
pub const DESCRIBE_MAX_MEMORY_BYTES: usize = 32 << 20;

/// Default cap on an outcome's `output` plus `diff`: 256 KiB. Both end up in a
/// HostTask's status, once per node, and the API server refuses objects over 1.5 MiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 256 << 10;

/// Default cap on an invocation's logs (log import, stdout and stderr together):
/// 64 KiB. Logs are for diagnosing one run and travel with the result; anything beyond
/// is dropped and the drop is noted in a final `host` record.
pub const DEFAULT_MAX_LOG_BYTES: usize = 64 << 10;

/// Default cap on the elements of all tables of one store together: 100 000. Rust
/// plugins use a few hundred entries; the cap stops a plugin from growing tables
/// without bound.
pub const DEFAULT_MAX_TABLE_ELEMENTS: usize = 100_000;

/// Period of the epoch ticker that enforces deadlines: 10 ms. Deadlines are enforced
/// with this granularity; a shorter tick costs more wake-ups for no practical gain.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits applied to every invocation. See the `DEFAULT_*` constants for the reasons
/// behind each default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Cap on all linear memories of one invocation together, in bytes.
    pub max_memory_bytes: usize,
    /// Cap on the elements of all tables of one invocation together.
    pub max_table_elements: usize,
    /// Deadline when the invocation does not ask for one.
    pub default_deadline: Duration,
    /// Upper bound of any requested deadline.
    pub max_deadline: Duration,
    /// Deadline of `describe`.
    pub describe_deadline: Duration,
    /// Cap on all memory of a `describe` call, in bytes.
    pub describe_max_memory_bytes: usize,
    /// Cap on `output` plus `diff`, in bytes; beyond it the invocation fails with
    /// `resource-limit`.
    pub max_output_bytes: usize,
    /// Cap on all logs of one invocation, in bytes; beyond it logs are dropped.
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            max_table_elements: DEFAULT_MAX_TABLE_ELEMENTS,
            default_deadline: DEFAULT_DEADLINE,
            max_deadline: MAX_DEADLINE,
            describe_deadline: DESCRIBE_DEADLINE,
            describe_max_memory_bytes: DESCRIBE_MAX_MEMORY_BYTES,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
        }
    }
}

/// Configuration of a [`Host`](crate::Host).
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    /// Where precompiled components are kept between restarts. `None` keeps them in
    /// memory only. The directory must be writable by this process only: artifacts in it
    /// are loaded as native code.
    pub cache_dir: Option<PathBuf>,
    /// Per-invocation limits.
    pub limits: Limits,
    /// What the docker import may do when the capability is granted.
    pub docker: DockerPolicy,
    /// What the containerd import may do when the capability is granted.
    pub containerd: ContainerdPolicy,
    /// The systemd import's time limit (which units and actions come with each grant).
    pub systemd: SystemdPolicy,
    /// The sensitive paths under /etc that stay out of reach when the etc capability is
    /// granted (WASI and the `files` import alike), and an administrator's explicit
    /// allows. A worker runs one HostPlugin's invocations, so its host carries that
    /// plugin's allows.
    pub etc: EtcPolicy,
    /// Use wasmtime's pooling allocator for instances (at most 64 component instances
    /// at once). Off by default. On `make bench` (etc-file, 2 busy cores) it cut the
    /// median of an invocation from ~370–520 µs to ~240–290 µs for `ensure-line` and did
    /// little for `read`; a process that runs many invocations (the worker) may turn it
    /// on, a one-shot CLI gains nothing.
    pub pooling_allocator: bool,
    /// Keep no revert record of calls (`Plugin::invoke_recorded` answers `None`). Off
    /// by default: every call that may write /etc is recorded. Only `make bench` turns
    /// it on, to measure what recording costs a write-heavy call.
    pub skip_change_records: bool,
}
