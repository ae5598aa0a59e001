//! Host configuration: the cache directory, the per-invocation limits and the docker
//! policy, each limit a named constant with the reason for its default.
//!
//! Plain data only: this module must never touch the file system or the engine.

use std::path::PathBuf;
use std::time::Duration;

use crate::docker::DockerPolicy;

/// Default cap on a plugin's linear memory: 128 MiB. A file plugin holds a few copies of
/// a file under /etc (rarely over 1 MiB) and a docker plugin a response of at most
/// [`DEFAULT_DOCKER_MAX_RESPONSE_BYTES`] plus its parsed form; 128 MiB leaves room for
/// both while a worker running several invocations at once stays far below a Pod's
/// usual memory limit.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 128 << 20;

/// Default wall-clock deadline of one invocation: 30 s. Editing a file takes
/// milliseconds; pulling an image through the docker import is the slow case, and a
/// HostTask's per-node `timeoutSeconds` (default 60) must also cover starting the Pod.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Longest deadline a caller may ask for: 10 minutes. Beyond that a stuck plugin holds a
/// worker slot for longer than any real host action needs.
pub const MAX_DEADLINE: Duration = Duration::from_secs(600);

/// Deadline of `describe`: 5 s. It builds a few JSON schemas and touches nothing.
pub const DESCRIBE_DEADLINE: Duration = Duration::from_secs(5);

/// Default cap on an outcome's `output` plus `diff`: 256 KiB. Both end up in a
/// HostTask's status, once per node, and the API server refuses objects over 1.5 MiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 256 << 10;

/// Default cap on an invocation's logs (log import, stdout and stderr together):
/// 64 KiB. Logs are for diagnosing one run and travel with the result; anything beyond
/// is dropped and the drop is noted in a final `host` record.
pub const DEFAULT_MAX_LOG_BYTES: usize = 64 << 10;

/// Default cap on the elements of one Wasm table: 100 000. Rust plugins use a few
/// hundred entries; the cap stops a plugin from growing tables without bound.
pub const DEFAULT_MAX_TABLE_ELEMENTS: usize = 100_000;

/// Period of the epoch ticker that enforces deadlines: 10 ms. Deadlines are enforced
/// with this granularity; a shorter tick costs more wake-ups for no practical gain.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Default request body cap of the docker import: 1 MiB (image endpoints take JSON
/// parameters or nothing).
pub const DEFAULT_DOCKER_MAX_REQUEST_BYTES: usize = 1 << 20;

/// Default response body cap of the docker import: 16 MiB (an image list of a busy node
/// is a few MiB; a pull's progress stream is long but the plugin only needs its end).
pub const DEFAULT_DOCKER_MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Default time limit of one docker call: 120 s (pulling a large image). A call never
/// runs past the invocation's deadline either.
pub const DEFAULT_DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// Limits applied to every invocation. See the `DEFAULT_*` constants for the reasons
/// behind each default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Cap on the plugin's linear memory, in bytes.
    pub max_memory_bytes: usize,
    /// Cap on the elements of one table.
    pub max_table_elements: usize,
    /// Deadline when the invocation does not ask for one.
    pub default_deadline: Duration,
    /// Upper bound of any requested deadline.
    pub max_deadline: Duration,
    /// Deadline of `describe`.
    pub describe_deadline: Duration,
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
    /// Use wasmtime's pooling allocator for instances (at most 64 component instances
    /// at once). Off by default. On `make bench` (etc-file, 2 busy cores) it cut the
    /// median of an invocation from ~370–520 µs to ~240–290 µs for `ensure-line` and did
    /// little for `read`; a process that runs many invocations (the worker) may turn it
    /// on, a one-shot CLI gains nothing.
    pub pooling_allocator: bool,
}
