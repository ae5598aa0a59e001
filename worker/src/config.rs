//! The worker's configuration: flags, each with an environment variable, so the Pod spec
//! of the operator sets everything through `env` and mounted files.
//!
//! Every limit is a named constant with the reason for its value; the config fields only
//! let a deployment move them. Nothing here reads files: loading the token and the TLS
//! material happens in [`crate::server`], where errors become [`crate::Error`]s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

/// Port of the worker protocol (`HostTask.spec.http.port` defaults to it).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";

/// Largest module a `PUT /v1/plugins/{sha256}` accepts: 32 MiB. Release components built
/// with the SDK are 0.1–2 MiB; 32 MiB leaves room for plugins with big dependencies
/// while keeping a single upload from exhausting a Pod with a modest memory limit
/// (the body is held in memory while it is hashed and compiled).
pub const DEFAULT_MAX_MODULE_BYTES: usize = 32 * 1024 * 1024;

/// Largest body any other route accepts (an invoke request): 2 MiB. Parameters are small
/// JSON documents; the biggest realistic one is etc-file's `write` with a whole file,
/// and files under /etc are kilobytes.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// Invocations that run at once: 4. A worker serves one task on one node, so the
/// operator sends one invocation at a time; 4 leaves room for retries that overlap a
/// slow call, while bounding memory at 4 × the per-invocation memory limit.
pub const DEFAULT_MAX_CONCURRENT_INVOCATIONS: usize = 4;

/// How long an invocation waits for a free slot before the worker answers 503 `busy`:
/// 10 s. Long enough to ride out a burst of parallel calls (each typically takes
/// milliseconds), short enough that a client never hangs on a stuck worker. The wait
/// also never exceeds the invocation's own deadline.
pub const DEFAULT_QUEUE_WAIT_MS: u64 = 10_000;

/// Compilations running at once: 1. Compiling is CPU-bound (Cranelift uses the cores
/// it gets) and happens once per module per worker; one at a time keeps invocations
/// responsive and makes "compile each digest once" hold under concurrent uploads.
pub const MAX_CONCURRENT_COMPILES: usize = 1;

/// Pause after a failed `accept` (typically EMFILE) before trying again: 100 ms, so the
/// accept loop does not spin while connections close and free descriptors.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Deadline of an invocation that names none: 60 s, the default of
/// `HostTask.spec.timeoutSeconds`.
pub const DEFAULT_INVOKE_TIMEOUT_MS: u64 = 60_000;

/// Longest deadline a client may ask for: 10 min. Requests above it are capped, so a
/// plugin can never hold a slot for longer.
pub const DEFAULT_MAX_INVOKE_TIMEOUT_MS: u64 = 600_000;

/// Linear memory one invocation may grow to: 128 MiB. The built-in plugins need a few
/// MiB; 128 MiB fits a docker-image plugin holding an image list, and 4 slots × 128 MiB
/// stays inside a typical 1 GiB Pod limit.
pub const DEFAULT_MEMORY_LIMIT_BYTES: usize = 128 * 1024 * 1024;

/// How long a client has to complete the TLS handshake: 10 s. Keeps half-open
/// connections from piling up; a handshake on loopback or in-cluster takes milliseconds.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client has to send an HTTP/1 request head: 30 s, for the same reason.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a shutdown (SIGTERM) waits for requests in flight: 20 s, inside the 30 s
/// default `terminationGracePeriodSeconds` of a Pod.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Shortest bearer token the worker accepts: 16 bytes. The operator generates 32 random
/// bytes; a shorter token is a deployment mistake and the worker refuses to start.
pub const MIN_TOKEN_BYTES: usize = 16;

/// How the node's /etc is granted to plugins in this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EtcAccess {
    /// Not visible to plugins.
    None,
    /// Preopened read-only.
    Read,
    /// Preopened read-write (read-only in dry runs).
    Write,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for the cluster's log pipeline.
    Json,
}

/// The worker's configuration.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "hostplug-worker",
    version,
    about = "The hostplug worker: runs plugin invocations on this node over HTTPS."
)]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = "HOSTPLUG_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// PEM file with the server certificate (chain), leaf first.
    #[arg(long, env = "HOSTPLUG_TLS_CERT")]
    pub tls_cert: PathBuf,

    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "HOSTPLUG_TLS_KEY")]
    pub tls_key: PathBuf,

    /// File holding the bearer token clients must present; surrounding whitespace is
    /// ignored.
    #[arg(long, env = "HOSTPLUG_TOKEN_FILE")]
    pub token_file: PathBuf,

    /// The node's /etc as mounted into this Pod (hostPath).
    #[arg(long, env = "HOSTPLUG_ETC_DIR", default_value = "/host/etc")]
    pub etc_dir: PathBuf,

    /// How plugins may see the etc dir. Must match how the Pod mounts it: the mount is
    /// the outer fence, this setting the inner one.
    #[arg(long, env = "HOSTPLUG_ETC_ACCESS", value_enum, default_value_t = EtcAccess::None)]
    pub etc_access: EtcAccess,

    /// The node's Docker (or Podman) API socket; absent means plugins get no docker
    /// access.
    #[arg(long, env = "HOSTPLUG_DOCKER_SOCKET")]
    pub docker_socket: Option<PathBuf>,

    /// Directory for precompiled modules (an emptyDir), so a restarted worker process
    /// does not compile again.
    #[arg(
        long,
        env = "HOSTPLUG_CACHE_DIR",
        default_value = "/var/cache/hostplug"
    )]
    pub cache_dir: PathBuf,

    /// File on the node (a hostPath shared by every worker Pod of the node) that
    /// mutating invocations lock exclusively while they run, so changes on one node
    /// never interleave. Used only when this worker may change the node.
    #[arg(long, env = "HOSTPLUG_NODE_LOCK_FILE")]
    pub node_lock_file: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "HOSTPLUG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Limits.
    #[command(flatten)]
    pub limits: Limits,
}

/// Resource limits; see the `DEFAULT_*` constants for why each default is what it is.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest module upload, bytes.
    #[arg(long, env = "HOSTPLUG_MAX_MODULE_BYTES", default_value_t = DEFAULT_MAX_MODULE_BYTES)]
    pub max_module_bytes: usize,

    /// Largest request body of every other route, bytes.
    #[arg(long, env = "HOSTPLUG_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,

    /// Invocations running at once.
    #[arg(long, env = "HOSTPLUG_MAX_CONCURRENT_INVOCATIONS", default_value_t = DEFAULT_MAX_CONCURRENT_INVOCATIONS)]
    pub max_concurrent_invocations: usize,

    /// How long an invocation waits for a free slot before 503 `busy`, milliseconds.
    #[arg(long, env = "HOSTPLUG_QUEUE_WAIT_MS", default_value_t = DEFAULT_QUEUE_WAIT_MS)]
    pub queue_wait_ms: u64,

    /// Deadline of an invocation that names none, milliseconds.
    #[arg(long, env = "HOSTPLUG_INVOKE_TIMEOUT_MS", default_value_t = DEFAULT_INVOKE_TIMEOUT_MS)]
    pub invoke_timeout_ms: u64,

    /// Longest deadline a request may ask for, milliseconds; longer ones are capped.
    #[arg(long, env = "HOSTPLUG_MAX_INVOKE_TIMEOUT_MS", default_value_t = DEFAULT_MAX_INVOKE_TIMEOUT_MS)]
    pub max_invoke_timeout_ms: u64,

    /// Linear memory one invocation may use, bytes.
    #[arg(long, env = "HOSTPLUG_MEMORY_LIMIT_BYTES", default_value_t = DEFAULT_MEMORY_LIMIT_BYTES)]
    pub memory_limit_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_concurrent_invocations: DEFAULT_MAX_CONCURRENT_INVOCATIONS,
            queue_wait_ms: DEFAULT_QUEUE_WAIT_MS,
            invoke_timeout_ms: DEFAULT_INVOKE_TIMEOUT_MS,
            max_invoke_timeout_ms: DEFAULT_MAX_INVOKE_TIMEOUT_MS,
            memory_limit_bytes: DEFAULT_MEMORY_LIMIT_BYTES,
        }
    }
}

impl Limits {
    /// The deadline for a request that asked for `requested_ms` (None: the default),
    /// capped at the maximum. `Some(0)` is the caller's to refuse.
    pub fn invoke_timeout(&self, requested_ms: Option<u64>) -> Duration {
        let ms = requested_ms
            .unwrap_or(self.invoke_timeout_ms)
            .min(self.max_invoke_timeout_ms);
        Duration::from_millis(ms)
    }

    /// The queue wait as a duration.
    pub fn queue_wait(&self) -> Duration {
        Duration::from_millis(self.queue_wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_style_flags_and_defaults() {
        let cfg = Config::try_parse_from([
            "hostplug-worker",
            "--tls-cert",
            "/c.pem",
            "--tls-key",
            "/k.pem",
            "--token-file",
            "/t",
            "--etc-access",
            "write",
        ]);
        let cfg = match cfg {
            Ok(cfg) => cfg,
            Err(e) => panic!("parse failed: {e}"),
        };
        assert_eq!(cfg.listen.port(), 8443);
        assert_eq!(cfg.etc_access, EtcAccess::Write);
        assert_eq!(cfg.etc_dir, PathBuf::from("/host/etc"));
        assert!(cfg.docker_socket.is_none());
        assert_eq!(cfg.limits.max_module_bytes, DEFAULT_MAX_MODULE_BYTES);
    }

    #[test]
    fn timeouts_are_capped() {
        let limits = Limits::default();
        assert_eq!(limits.invoke_timeout(None), Duration::from_secs(60));
        assert_eq!(
            limits.invoke_timeout(Some(10 * DEFAULT_MAX_INVOKE_TIMEOUT_MS)),
            Duration::from_millis(DEFAULT_MAX_INVOKE_TIMEOUT_MS)
        );
    }
}
