//! The worker Pod's contract: every setting of `hostplug-worker` as one struct
//! ([`WorkerSettings`]) that the operator renders into the Pod's environment
//! ([`WorkerSettings::env`]) and the worker reads back ([`WorkerSettings::from_env`]),
//! with the variable names ([`env`]), the Secret's keys ([`secret_keys`]), the mount
//! paths ([`paths`]) and the limits ([`Limits`]), the container's memory limit included
//! ([`Limits::container_memory_bytes`]).
//!
//! Both sides use these names and values and nothing else, so the Pod the operator makes
//! and the worker that runs in it cannot disagree. Pure data: nothing here reads files,
//! touches the process environment or talks to a cluster.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::Error;
use crate::call::AccessProfile;
use crate::plugin::EtcAccess;
use crate::systemd::SystemdAccess;

/// Port of the worker protocol (`HostTask.spec.http.port` defaults to it).
pub const DEFAULT_PORT: u16 = 8443;

/// Largest module a `PUT /v1/plugins/{sha256}` accepts, and the largest the operator
/// reads: 32 MiB. Release components built with the SDK are 0.1–2 MiB; 32 MiB leaves
/// room for plugins with big dependencies while keeping a single upload from exhausting
/// a Pod with a modest memory limit (the body is held in memory while it is hashed and
/// compiled).
pub const DEFAULT_MAX_MODULE_BYTES: usize = 32 * 1024 * 1024;

/// Largest body any other route accepts (an invoke request): 2 MiB. Parameters are small
/// JSON documents; the biggest realistic one is etc-file's `write` with a whole file,
/// and files under /etc are kilobytes.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// Invocations that run at once: 4. The operator sends one invocation at a time per
/// worker; 4 leaves room for retries that overlap a slow call, while bounding memory at
/// 4 × the per-invocation memory limit.
pub const DEFAULT_MAX_CONCURRENT_INVOCATIONS: usize = 4;

/// How long an invocation waits for a free slot before the worker answers 503 `busy`:
/// 10 s. Long enough to ride out a burst of parallel calls (each typically takes
/// milliseconds), short enough that a client never hangs on a stuck worker. The wait
/// also never exceeds the invocation's own deadline.
pub const DEFAULT_QUEUE_WAIT_MS: u64 = 10_000;

/// Deadline of an invocation that names none: 60 s, the default of
/// `HostTask.spec.timeoutSeconds`.
pub const DEFAULT_INVOKE_TIMEOUT_MS: u64 = 60_000;

/// Longest deadline a client may ask for: 10 min. Requests above it are capped, so a
/// plugin can never hold a slot for longer. The operator sets it to the task's timeout.
pub const DEFAULT_MAX_INVOKE_TIMEOUT_MS: u64 = 600_000;

/// Linear memory one invocation may grow to: 128 MiB. The built-in plugins need a few
/// MiB; 128 MiB fits a docker-image plugin holding an image list.
pub const DEFAULT_MEMORY_LIMIT_BYTES: usize = 128 * 1024 * 1024;

/// Memory of a worker beyond its invocations' linear memories: 128 MiB for the runtime,
/// the compiled code of a few modules, an upload being hashed and compiled
/// ([`DEFAULT_MAX_MODULE_BYTES`]) and request buffers. An idle worker measures about
/// 12 MiB, one with a compiled module about 40 MiB.
pub const RUNTIME_MEMORY_BYTES: u64 = 128 * 1024 * 1024;

/// Shortest bearer token the worker accepts: 16 bytes. The operator generates 32 random
/// bytes; a shorter token is a deployment mistake and the worker refuses to start.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The environment variables of the worker, one per setting.
pub mod env {
    /// Address and port to listen on, e.g. `$(POD_IP):8443` in the Pod.
    pub const LISTEN: &str = "HOSTPLUG_LISTEN";
    /// PEM file with the server certificate (chain), leaf first.
    pub const TLS_CERT: &str = "HOSTPLUG_TLS_CERT";
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub const TLS_KEY: &str = "HOSTPLUG_TLS_KEY";
    /// File holding the bearer token clients must present.
    pub const TOKEN_FILE: &str = "HOSTPLUG_TOKEN_FILE";
    /// The node's /etc as mounted into the Pod.
    pub const ETC_DIR: &str = "HOSTPLUG_ETC_DIR";
    /// How plugins may see the etc dir: `none`, `read` or `write`.
    pub const ETC_ACCESS: &str = "HOSTPLUG_ETC_ACCESS";
    /// `allow`: the sensitive paths a request allows its plugin (its HostPlugin's
    /// `etcAllowSensitive`) are honoured; unset: never.
    pub const ETC_SENSITIVE: &str = "HOSTPLUG_ETC_SENSITIVE";
    /// The node's Docker API socket as mounted into the Pod; unset: no docker access.
    pub const DOCKER_SOCKET: &str = "HOSTPLUG_DOCKER_SOCKET";
    /// The node's containerd socket as mounted into the Pod; unset: no containerd access.
    pub const CONTAINERD_SOCKET: &str = "HOSTPLUG_CONTAINERD_SOCKET";
    /// The node's D-Bus system bus socket as mounted into the Pod; unset: no systemd
    /// access.
    pub const SYSTEMD_SOCKET: &str = "HOSTPLUG_SYSTEMD_SOCKET";
    /// What plugins may do through systemd: `read` (status only) or `manage` (the
    /// actions each call's HostPlugin declares).
    pub const SYSTEMD_ACCESS: &str = "HOSTPLUG_SYSTEMD_ACCESS";
    /// What plugins may do through the docker and containerd sockets: `read` (list,
    /// inspect) or `write` (pull, tag, remove, load, ... as the allow-lists permit).
    pub const IMAGE_ACCESS: &str = "HOSTPLUG_IMAGE_ACCESS";
    /// Directory for precompiled modules.
    pub const CACHE_DIR: &str = "HOSTPLUG_CACHE_DIR";
    /// The operator's public key for precompiled artifacts ([`super::ArtifactKey`]);
    /// unset: the worker takes no precompiled artifact and compiles every module itself.
    pub const ARTIFACT_KEY: &str = "HOSTPLUG_ARTIFACT_KEY";
    /// File on the node that mutating invocations lock exclusively; unset: no node lock.
    pub const NODE_LOCK_FILE: &str = "HOSTPLUG_NODE_LOCK_FILE";
    /// Log format: `text` or `json`.
    pub const LOG_FORMAT: &str = "HOSTPLUG_LOG_FORMAT";
    /// Largest module upload, bytes.
    pub const MAX_MODULE_BYTES: &str = "HOSTPLUG_MAX_MODULE_BYTES";
    /// Largest request body of every other route, bytes.
    pub const MAX_REQUEST_BYTES: &str = "HOSTPLUG_MAX_REQUEST_BYTES";
    /// Invocations running at once.
    pub const MAX_CONCURRENT_INVOCATIONS: &str = "HOSTPLUG_MAX_CONCURRENT_INVOCATIONS";
    /// How long an invocation waits for a free slot, milliseconds.
    pub const QUEUE_WAIT_MS: &str = "HOSTPLUG_QUEUE_WAIT_MS";
    /// Deadline of an invocation that names none, milliseconds.
    pub const INVOKE_TIMEOUT_MS: &str = "HOSTPLUG_INVOKE_TIMEOUT_MS";
    /// Longest deadline a request may ask for, milliseconds.
    pub const MAX_INVOKE_TIMEOUT_MS: &str = "HOSTPLUG_MAX_INVOKE_TIMEOUT_MS";
    /// Linear memory one invocation may use, bytes.
    pub const MEMORY_LIMIT_BYTES: &str = "HOSTPLUG_MEMORY_LIMIT_BYTES";
    /// The worker exits after this long without an authenticated request, milliseconds;
    /// 0: never.
    pub const IDLE_EXIT_MS: &str = "HOSTPLUG_IDLE_EXIT_MS";

    /// Every variable with its meaning, for `hostplug-worker --help` and the docs.
    pub const ALL: [(&str, &str); 24] = [
        (
            LISTEN,
            "address and port to listen on (default 0.0.0.0:8443)",
        ),
        (
            TLS_CERT,
            "PEM file with the server certificate chain (required)",
        ),
        (TLS_KEY, "PEM file with the server's private key (required)"),
        (
            TOKEN_FILE,
            "file with the bearer token clients must present (required)",
        ),
        (
            ETC_DIR,
            "the node's /etc as mounted into the Pod (default /host/etc)",
        ),
        (ETC_ACCESS, "none, read or write (default none)"),
        (
            ETC_SENSITIVE,
            "allow: honour the sensitive paths a request allows its plugin; unset: never",
        ),
        (
            DOCKER_SOCKET,
            "the node's Docker API socket; unset: no docker access",
        ),
        (
            CONTAINERD_SOCKET,
            "the node's containerd socket (CRI image service); unset: no containerd access",
        ),
        (
            SYSTEMD_SOCKET,
            "the node's D-Bus system bus socket (systemd); unset: no systemd access",
        ),
        (
            SYSTEMD_ACCESS,
            "read (unit status only) or manage (the declared actions); default read",
        ),
        (
            IMAGE_ACCESS,
            "read (list and inspect images only) or write (pull, tag, remove, load, ...) \
             through the docker and containerd sockets; default read",
        ),
        (
            CACHE_DIR,
            "directory for precompiled modules (default /var/cache/hostplug)",
        ),
        (
            ARTIFACT_KEY,
            "the operator's Ed25519 public key (64 hex digits) that precompiled artifacts \
             must be signed with; unset: every module is compiled here",
        ),
        (
            NODE_LOCK_FILE,
            "node-wide lock file of mutating invocations; unset: no node lock",
        ),
        (LOG_FORMAT, "text or json (default text)"),
        (
            MAX_MODULE_BYTES,
            "largest module upload in bytes (default 32 MiB)",
        ),
        (
            MAX_REQUEST_BYTES,
            "largest other request body in bytes (default 2 MiB)",
        ),
        (
            MAX_CONCURRENT_INVOCATIONS,
            "invocations running at once (default 4)",
        ),
        (
            QUEUE_WAIT_MS,
            "wait for a free invocation slot, ms (default 10000)",
        ),
        (
            INVOKE_TIMEOUT_MS,
            "deadline of an invocation naming none, ms (default 60000)",
        ),
        (
            MAX_INVOKE_TIMEOUT_MS,
            "longest deadline a request may ask for, ms (default 600000)",
        ),
        (
            MEMORY_LIMIT_BYTES,
            "linear memory of one invocation in bytes (default 128 MiB)",
        ),
        (
            IDLE_EXIT_MS,
            "exit after this long without an authenticated request, ms (default 0: never)",
        ),
    ];
}

/// The keys of the task Secret the worker's credentials live in.
pub mod secret_keys {
    /// The bearer token.
    pub const TOKEN: &str = "token";
    /// The worker's certificate (PEM).
    pub const CERT: &str = "tls.crt";
    /// The worker's private key (PEM).
    pub const KEY: &str = "tls.key";
}

/// Where things are, on the node and inside the worker container.
pub mod paths {
    /// Where the Secret with token and key pair is mounted in the worker.
    pub const SECRET_MOUNT: &str = "/run/hostplug/secret";
    /// The node's /etc (the hostPath source).
    pub const NODE_ETC: &str = "/etc";
    /// Where the node's /etc is mounted in the worker (the default etc dir).
    pub const ETC_MOUNT: &str = "/host/etc";
    /// The Docker socket on a node (the hostPath source).
    pub const NODE_DOCKER_SOCKET: &str = "/var/run/docker.sock";
    /// Where the Docker socket is mounted in the worker.
    pub const DOCKER_MOUNT: &str = "/host/run/docker.sock";
    /// The containerd socket on a node (the hostPath source): containerd's default
    /// `grpc.address`, which the kubelet's `--container-runtime-endpoint` names.
    pub const NODE_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
    /// Where the containerd socket is mounted in the worker.
    pub const CONTAINERD_MOUNT: &str = "/host/run/containerd/containerd.sock";
    /// The directory of the D-Bus system bus socket on a node (the hostPath source): the
    /// directory rather than the socket, so that a restarted dbus daemon's new socket is
    /// seen by a running worker.
    pub const NODE_SYSTEM_BUS_DIR: &str = "/run/dbus";
    /// The D-Bus system bus socket on a node, the default of the D-Bus specification.
    pub const NODE_SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";
    /// Where the system bus socket's directory is mounted in the worker.
    pub const SYSTEM_BUS_MOUNT: &str = "/host/run/dbus";
    /// The system bus socket inside the worker.
    pub const SYSTEM_BUS_SOCKET: &str = "/host/run/dbus/system_bus_socket";
    /// The worker's module cache (an emptyDir: the root filesystem is read-only).
    pub const CACHE_MOUNT: &str = "/var/cache/hostplug";
    /// The node directory holding the node lock, shared by every worker Pod that may
    /// change the node (under /run: a tmpfs on most nodes, so the lock file never outlives
    /// a boot).
    pub const NODE_LOCK_DIR: &str = "/run/hostplug";
    /// Where the node lock directory is mounted in the worker.
    pub const NODE_LOCK_MOUNT: &str = "/run/hostplug/node";
    /// The lock file mutating invocations `flock`, inside [`NODE_LOCK_MOUNT`].
    pub const NODE_LOCK_FILE: &str = "/run/hostplug/node/mutate.lock";

    /// The node's image archive directory (the hostPath source, created when missing):
    /// where docker-image's `save` writes and `load` reads tar files. Mounted into every
    /// worker Pod that has the docker socket, as part of that capability.
    pub const NODE_IMAGE_ARCHIVES: &str = "/var/lib/hostplug/image-archives";
    /// Where the image archive directory is mounted in the worker.
    pub const IMAGE_ARCHIVES_MOUNT: &str = "/host/image-archives";
}

/// The public half of the operator's artifact key: an Ed25519 public key (32 bytes; the
/// text form is 64 lowercase hex digits).
///
/// A precompiled artifact is native code that runs with the worker's mounts, outside
/// the Wasm sandbox. The operator makes the key pair when it starts and keeps the
/// private half in its memory only; it renders the public half into each worker Pod it
/// creates ([`env::ARTIFACT_KEY`]) and signs every artifact it ships. The worker loads an
/// artifact only when that signature verifies with this key, so whoever holds the
/// worker's bearer token (anyone who can read Secrets in the operator's namespace) can
/// upload Wasm modules, which the sandbox confines, but no native code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArtifactKey([u8; 32]);

impl ArtifactKey {
    /// The key with these bytes (an Ed25519 public key).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArtifactKey({self})")
    }
}

impl FromStr for ArtifactKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        crate::protocol::fixed_hex(s, "artifact key", "64 hex digits (an Ed25519 public key)")
            .map(Self)
    }
}

/// Log output format of a binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for the cluster's log pipeline.
    Json,
}

impl LogFormat {
    /// Every format.
    pub const ALL: [LogFormat; 2] = [Self::Text, Self::Json];

    /// The lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

text_form!(LogFormat, "log format", "text or json");

/// The worker's resource limits; see the `DEFAULT_*` constants for why each default is
/// what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest module upload, bytes.
    pub max_module_bytes: usize,
    /// Largest request body of every other route, bytes.
    pub max_request_bytes: usize,
    /// Invocations running at once.
    pub max_concurrent_invocations: usize,
    /// How long an invocation waits for a free slot before 503 `busy`, milliseconds.
    pub queue_wait_ms: u64,
    /// Deadline of an invocation that names none, milliseconds.
    pub invoke_timeout_ms: u64,
    /// Longest deadline a request may ask for, milliseconds; longer ones are capped.
    pub max_invoke_timeout_ms: u64,
    /// Linear memory one invocation may use, bytes.
    pub memory_limit_bytes: usize,
    /// The worker exits after this long without an authenticated request and with no
    /// invocation running, milliseconds; 0: never. The operator sets it above its own
    /// idle removal, so a worker it can no longer remove (operator down) still ends.
    pub idle_exit_ms: u64,
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
            idle_exit_ms: 0,
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

    /// The memory limit of the worker container: every invocation slot at its full
    /// linear memory plus [`RUNTIME_MEMORY_BYTES`]. With the defaults, 4 × 128 MiB +
    /// 128 MiB = 640 MiB.
    pub fn container_memory_bytes(&self) -> u64 {
        let slots = u64::try_from(self.max_concurrent_invocations).unwrap_or(u64::MAX);
        let per = u64::try_from(self.memory_limit_bytes).unwrap_or(u64::MAX);
        slots
            .saturating_mul(per)
            .saturating_add(RUNTIME_MEMORY_BYTES)
    }

    /// Refuses a zero limit, naming its variable.
    pub fn check(&self) -> Result<(), Error> {
        let zero = [
            (env::MAX_MODULE_BYTES, self.max_module_bytes == 0),
            (env::MAX_REQUEST_BYTES, self.max_request_bytes == 0),
            (
                env::MAX_CONCURRENT_INVOCATIONS,
                self.max_concurrent_invocations == 0,
            ),
            (env::INVOKE_TIMEOUT_MS, self.invoke_timeout_ms == 0),
            (env::MAX_INVOKE_TIMEOUT_MS, self.max_invoke_timeout_ms == 0),
            (env::MEMORY_LIMIT_BYTES, self.memory_limit_bytes == 0),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((name, _)) => Err(Error::Setting {
                name,
                problem: "must be above 0".into(),
            }),
            None => Ok(()),
        }
    }
}

/// Every setting of a worker. The operator builds it with [`WorkerSettings::in_pod`] and
/// renders [`WorkerSettings::env`] into the Pod; the worker reads it with
/// [`WorkerSettings::from_env`]; tests build it directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Address and port to listen on. In a Pod `$(POD_IP):<port>`, which the kubelet
    /// expands; the worker parses what it gets as a socket address.
    pub listen: String,
    /// PEM file with the server certificate (chain), leaf first.
    pub tls_cert: PathBuf,
    /// PEM file with the server's private key.
    pub tls_key: PathBuf,
    /// File holding the bearer token clients must present; surrounding whitespace is
    /// ignored.
    pub token_file: PathBuf,
    /// The node's /etc as mounted into this Pod (hostPath).
    pub etc_dir: PathBuf,
    /// How plugins may see the etc dir. Must match how the Pod mounts it: the mount is the
    /// outer fence, this setting the inner one.
    pub etc_access: EtcAccess,
    /// Whether the sensitive paths a request allows its plugin are honoured (a Pod made
    /// for plugins whose HostPlugin names some); false: the host's list holds for every
    /// call.
    pub etc_sensitive: bool,
    /// The node's Docker (or Podman) API socket; `None`: plugins get no docker access.
    pub docker_socket: Option<PathBuf>,
    /// The node's containerd socket (CRI); `None`: plugins get no containerd access.
    pub containerd_socket: Option<PathBuf>,
    /// The node's D-Bus system bus socket; `None`: plugins get no systemd access.
    pub systemd_socket: Option<PathBuf>,
    /// What plugins may do through systemd when the socket is set: `read` (a dry run,
    /// a method that does not change the node) or `manage`.
    pub systemd_access: SystemdAccess,
    /// Whether plugins may change images through the docker or containerd socket (pull,
    /// tag, remove, load); false: reads only, whatever a request says. Only meaningful
    /// with one of the sockets.
    pub image_writes: bool,
    /// Directory for precompiled modules (an emptyDir), so a restarted worker process
    /// does not compile again.
    pub cache_dir: PathBuf,
    /// The operator's public key that precompiled artifacts must be signed with (see
    /// [`ArtifactKey`]); `None`: the worker refuses every artifact and compiles each
    /// module it is sent. [`WorkerSettings::in_pod`] leaves it `None`: the operator sets
    /// the key of its own process.
    pub artifact_key: Option<ArtifactKey>,
    /// File on the node (a hostPath shared by every worker Pod of the node) that
    /// mutating invocations lock exclusively while they run, so changes on one node never
    /// interleave. Used only when this worker may change the node; `None`: no node lock.
    pub node_lock_file: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// Limits.
    pub limits: Limits,
}

impl WorkerSettings {
    /// The settings of a worker Pod listening on `port` with `profile`'s access:
    /// credentials from the Secret mount, /etc and the sockets at their mount paths when
    /// the profile has them, JSON logs, and invocation deadlines up to
    /// `max_invoke_timeout_ms`.
    pub fn in_pod(port: i32, profile: AccessProfile, max_invoke_timeout_ms: u64) -> Self {
        let secret = |key: &str| PathBuf::from(format!("{}/{key}", paths::SECRET_MOUNT));
        Self {
            listen: format!("$(POD_IP):{port}"),
            tls_cert: secret(secret_keys::CERT),
            tls_key: secret(secret_keys::KEY),
            token_file: secret(secret_keys::TOKEN),
            etc_dir: PathBuf::from(paths::ETC_MOUNT),
            etc_access: profile.etc,
            etc_sensitive: profile.etc_sensitive && profile.etc != EtcAccess::None,
            docker_socket: profile.docker.then(|| PathBuf::from(paths::DOCKER_MOUNT)),
            containerd_socket: profile
                .containerd
                .then(|| PathBuf::from(paths::CONTAINERD_MOUNT)),
            systemd_socket: (profile.systemd != SystemdAccess::None)
                .then(|| PathBuf::from(paths::SYSTEM_BUS_SOCKET)),
            systemd_access: profile.systemd,
            image_writes: profile.image_writes,
            cache_dir: PathBuf::from(paths::CACHE_MOUNT),
            artifact_key: None,
            node_lock_file: profile
                .may_change_node()
                .then(|| PathBuf::from(paths::NODE_LOCK_FILE)),
            log_format: LogFormat::Json,
            limits: Limits {
                max_invoke_timeout_ms,
                ..Limits::default()
            },
        }
    }

    /// The access profile these settings grant.
    pub fn profile(&self) -> AccessProfile {
        AccessProfile {
            etc: self.etc_access,
            docker: self.docker_socket.is_some(),
            containerd: self.containerd_socket.is_some(),
            systemd: match self.systemd_socket {
                Some(_) => self.systemd_access,
                None => SystemdAccess::None,
            },
            image_writes: self.image_writes
                && (self.docker_socket.is_some() || self.containerd_socket.is_some()),
            etc_sensitive: self.etc_sensitive && self.etc_access != EtcAccess::None,
        }
    }

    /// True when plugins in this worker may change the node (/etc writable or a socket
    /// mounted): such a worker takes the node lock for mutating invocations.
    pub fn may_change_node(&self) -> bool {
        self.profile().may_change_node()
    }

    /// Every setting as an environment variable, in [`env::ALL`] order; an unset docker
    /// or containerd socket, artifact key or node lock file is left out.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let path = |p: &PathBuf| p.display().to_string();
        let l = &self.limits;
        let mut vars = vec![
            (env::LISTEN, self.listen.clone()),
            (env::TLS_CERT, path(&self.tls_cert)),
            (env::TLS_KEY, path(&self.tls_key)),
            (env::TOKEN_FILE, path(&self.token_file)),
            (env::ETC_DIR, path(&self.etc_dir)),
            (env::ETC_ACCESS, self.etc_access.to_string()),
        ];
        if self.etc_sensitive {
            vars.push((env::ETC_SENSITIVE, "allow".to_owned()));
        }
        if let Some(socket) = &self.docker_socket {
            vars.push((env::DOCKER_SOCKET, path(socket)));
        }
        if let Some(socket) = &self.containerd_socket {
            vars.push((env::CONTAINERD_SOCKET, path(socket)));
        }
        if let Some(socket) = &self.systemd_socket {
            vars.push((env::SYSTEMD_SOCKET, path(socket)));
            vars.push((env::SYSTEMD_ACCESS, self.systemd_access.to_string()));
        }
        if self.docker_socket.is_some() || self.containerd_socket.is_some() {
            let access = if self.image_writes { "write" } else { "read" };
            vars.push((env::IMAGE_ACCESS, access.to_owned()));
        }
        vars.extend([(env::CACHE_DIR, path(&self.cache_dir))]);
        if let Some(key) = &self.artifact_key {
            vars.push((env::ARTIFACT_KEY, key.to_string()));
        }
        if let Some(lock) = &self.node_lock_file {
            vars.push((env::NODE_LOCK_FILE, path(lock)));
        }
        vars.extend([
            (env::LOG_FORMAT, self.log_format.to_string()),
            (env::MAX_MODULE_BYTES, l.max_module_bytes.to_string()),
            (env::MAX_REQUEST_BYTES, l.max_request_bytes.to_string()),
            (
                env::MAX_CONCURRENT_INVOCATIONS,
                l.max_concurrent_invocations.to_string(),
            ),
            (env::QUEUE_WAIT_MS, l.queue_wait_ms.to_string()),
            (env::INVOKE_TIMEOUT_MS, l.invoke_timeout_ms.to_string()),
            (
                env::MAX_INVOKE_TIMEOUT_MS,
                l.max_invoke_timeout_ms.to_string(),
            ),
            (env::MEMORY_LIMIT_BYTES, l.memory_limit_bytes.to_string()),
            (env::IDLE_EXIT_MS, l.idle_exit_ms.to_string()),
        ]);
        vars
    }

    /// Reads the settings from environment variables through `lookup` (the worker passes
    /// `std::env::var`); unset variables take their defaults, the three credential files
    /// are required. An empty value counts as unset. Errors name the variable.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let required = |name: &'static str| {
            get(name).map(PathBuf::from).ok_or(Error::Setting {
                name,
                problem: "is required".into(),
            })
        };
        fn parsed<T: FromStr>(
            name: &'static str,
            value: Option<String>,
            default: T,
        ) -> Result<T, Error>
        where
            T::Err: fmt::Display,
        {
            match value {
                None => Ok(default),
                Some(v) => v.parse().map_err(|e| Error::Setting {
                    name,
                    problem: format!("{v:?} is not valid: {e}"),
                }),
            }
        }
        let d = Limits::default();
        let limits = Limits {
            max_module_bytes: parsed(
                env::MAX_MODULE_BYTES,
                get(env::MAX_MODULE_BYTES),
                d.max_module_bytes,
            )?,
            max_request_bytes: parsed(
                env::MAX_REQUEST_BYTES,
                get(env::MAX_REQUEST_BYTES),
                d.max_request_bytes,
            )?,
            max_concurrent_invocations: parsed(
                env::MAX_CONCURRENT_INVOCATIONS,
                get(env::MAX_CONCURRENT_INVOCATIONS),
                d.max_concurrent_invocations,
            )?,
            queue_wait_ms: parsed(env::QUEUE_WAIT_MS, get(env::QUEUE_WAIT_MS), d.queue_wait_ms)?,
            invoke_timeout_ms: parsed(
                env::INVOKE_TIMEOUT_MS,
                get(env::INVOKE_TIMEOUT_MS),
                d.invoke_timeout_ms,
            )?,
            max_invoke_timeout_ms: parsed(
                env::MAX_INVOKE_TIMEOUT_MS,
                get(env::MAX_INVOKE_TIMEOUT_MS),
                d.max_invoke_timeout_ms,
            )?,
            memory_limit_bytes: parsed(
                env::MEMORY_LIMIT_BYTES,
                get(env::MEMORY_LIMIT_BYTES),
                d.memory_limit_bytes,
            )?,
            idle_exit_ms: parsed(env::IDLE_EXIT_MS, get(env::IDLE_EXIT_MS), d.idle_exit_ms)?,
        };
        Ok(Self {
            listen: get(env::LISTEN).unwrap_or_else(|| format!("0.0.0.0:{DEFAULT_PORT}")),
            tls_cert: required(env::TLS_CERT)?,
            tls_key: required(env::TLS_KEY)?,
            token_file: required(env::TOKEN_FILE)?,
            etc_dir: get(env::ETC_DIR)
                .map_or_else(|| PathBuf::from(paths::ETC_MOUNT), PathBuf::from),
            etc_access: parsed(env::ETC_ACCESS, get(env::ETC_ACCESS), EtcAccess::None)?,
            etc_sensitive: match get(env::ETC_SENSITIVE).as_deref() {
                None => false,
                Some("allow") => true,
                Some(other) => {
                    return Err(Error::Setting {
                        name: env::ETC_SENSITIVE,
                        problem: format!("is {other:?}; use allow or leave it unset"),
                    });
                }
            },
            docker_socket: get(env::DOCKER_SOCKET).map(PathBuf::from),
            containerd_socket: get(env::CONTAINERD_SOCKET).map(PathBuf::from),
            systemd_socket: get(env::SYSTEMD_SOCKET).map(PathBuf::from),
            systemd_access: match get(env::SYSTEMD_SOCKET) {
                None => SystemdAccess::None,
                Some(_) => parsed(
                    env::SYSTEMD_ACCESS,
                    get(env::SYSTEMD_ACCESS),
                    SystemdAccess::Read,
                )?,
            },
            image_writes: match get(env::IMAGE_ACCESS).as_deref() {
                None | Some("read") => false,
                Some("write") => true,
                Some(other) => {
                    return Err(Error::Setting {
                        name: env::IMAGE_ACCESS,
                        problem: format!("is {other:?}; use read or write"),
                    });
                }
            },
            cache_dir: get(env::CACHE_DIR)
                .map_or_else(|| PathBuf::from(paths::CACHE_MOUNT), PathBuf::from),
            artifact_key: get(env::ARTIFACT_KEY)
                .map(|v| {
                    v.parse().map_err(|e| Error::Setting {
                        name: env::ARTIFACT_KEY,
                        problem: format!("is not valid: {e}"),
                    })
                })
                .transpose()?,
            node_lock_file: get(env::NODE_LOCK_FILE).map(PathBuf::from),
            log_format: parsed(env::LOG_FORMAT, get(env::LOG_FORMAT), LogFormat::Text)?,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn pod_settings_round_trip_through_the_environment() -> Result<(), Error> {
        for etc in EtcAccess::ALL {
            for (docker, containerd) in [(false, false), (true, false), (false, true)] {
                for (systemd, image_writes) in SystemdAccess::ALL
                    .into_iter()
                    .flat_map(|s| [(s, false), (s, docker || containerd)])
                {
                    let profile = AccessProfile {
                        etc,
                        docker,
                        containerd,
                        systemd,
                        image_writes,
                        etc_sensitive: etc != EtcAccess::None && image_writes,
                    };
                    let mut settings = WorkerSettings::in_pod(9443, profile, 30_000);
                    assert_eq!(settings.artifact_key, None);
                    let back = WorkerSettings::from_env(lookup(settings.env()))?;
                    assert_eq!(back, settings, "{profile}, no artifact key");
                    settings.artifact_key = Some(ArtifactKey::from_bytes([7; 32]));
                    let back = WorkerSettings::from_env(lookup(settings.env()))?;
                    assert_eq!(back, settings, "{profile}");
                    assert_eq!(back.profile(), profile);
                }
            }
        }
        let custom = WorkerSettings {
            listen: "127.0.0.1:0".into(),
            tls_cert: "/c".into(),
            tls_key: "/k".into(),
            token_file: "/t".into(),
            etc_dir: "/x/etc".into(),
            etc_access: EtcAccess::Read,
            etc_sensitive: true,
            docker_socket: Some("/d.sock".into()),
            containerd_socket: Some("/c.sock".into()),
            systemd_socket: Some("/b.sock".into()),
            systemd_access: SystemdAccess::Manage,
            image_writes: true,
            cache_dir: "/cache".into(),
            artifact_key: Some(ArtifactKey::from_bytes([0xab; 32])),
            node_lock_file: Some("/run/lock".into()),
            log_format: LogFormat::Text,
            limits: Limits {
                max_module_bytes: 1,
                max_request_bytes: 2,
                max_concurrent_invocations: 3,
                queue_wait_ms: 4,
                invoke_timeout_ms: 5,
                max_invoke_timeout_ms: 6,
                memory_limit_bytes: 7,
                idle_exit_ms: 8,
            },
        };
        assert_eq!(WorkerSettings::from_env(lookup(custom.env()))?, custom);
        Ok(())
    }

    #[test]
    fn every_variable_is_documented_and_rendered() {
        let profile = AccessProfile {
            etc: EtcAccess::Write,
            docker: true,
            containerd: true,
            systemd: SystemdAccess::Manage,
            image_writes: true,
            etc_sensitive: true,
        };
        let mut settings = WorkerSettings::in_pod(8443, profile, 1);
        settings.artifact_key = Some(ArtifactKey::from_bytes([1; 32]));
        let names: Vec<_> = settings.env().into_iter().map(|(n, _)| n).collect();
        let documented: Vec<_> = env::ALL.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, documented);
    }

    #[test]
    fn pod_settings_follow_the_profile() {
        let caps = crate::plugin::Capabilities {
            etc: EtcAccess::Write,
            ..Default::default()
        };
        let s = WorkerSettings::in_pod(8443, AccessProfile::for_call(&caps, true, true), 1000);
        assert_eq!(s.etc_access, EtcAccess::Read, "dry runs never write");
        assert_eq!(s.docker_socket, None);
        assert_eq!(
            s.systemd_socket, None,
            "no bus socket without the capability"
        );
        assert_eq!(s.listen, "$(POD_IP):8443");
        assert_eq!(s.token_file, PathBuf::from("/run/hostplug/secret/token"));
        assert_eq!(s.limits.max_invoke_timeout_ms, 1000);
        assert_eq!(
            s.node_lock_file, None,
            "a read-only worker takes no node lock"
        );
        let s = WorkerSettings::in_pod(8443, AccessProfile::for_call(&caps, false, true), 1000);
        assert_eq!(
            s.node_lock_file,
            Some(PathBuf::from(paths::NODE_LOCK_FILE)),
            "a worker that may change the node takes the node lock"
        );
    }

    /// The bus socket only in a worker whose profile has the systemd capability; its
    /// actions only when the call may change the node.
    #[test]
    fn only_systemd_profiles_get_the_bus_socket() {
        let systemd = crate::plugin::Capabilities {
            systemd: Some(crate::systemd::SystemdCapability {
                units: vec!["chrony.service".into()],
                actions: vec![crate::systemd::SystemdAction::Restart],
            }),
            ..Default::default()
        };
        let s = WorkerSettings::in_pod(8443, AccessProfile::for_call(&systemd, false, true), 1);
        assert_eq!(
            s.systemd_socket,
            Some(PathBuf::from(paths::SYSTEM_BUS_SOCKET))
        );
        assert_eq!(s.systemd_access, SystemdAccess::Manage);
        assert!(
            s.node_lock_file.is_some(),
            "systemd actions take the node lock"
        );
        let dry = WorkerSettings::in_pod(8443, AccessProfile::for_call(&systemd, true, true), 1);
        assert_eq!(dry.systemd_access, SystemdAccess::Read);
        assert!(dry.node_lock_file.is_none());
        for caps in [
            crate::plugin::Capabilities::default(),
            crate::plugin::Capabilities {
                etc: EtcAccess::Write,
                docker: true,
                containerd: true,
                ..Default::default()
            },
        ] {
            let s = WorkerSettings::in_pod(8443, AccessProfile::for_call(&caps, false, true), 1);
            assert_eq!(s.systemd_socket, None, "{caps}");
            assert!(
                !s.env()
                    .iter()
                    .any(|(n, _)| n.starts_with("HOSTPLUG_SYSTEMD")),
                "{caps}"
            );
        }
    }

    #[test]
    fn defaults_and_errors_name_the_variable() -> Result<(), Error> {
        let minimal = vec![
            (env::TLS_CERT, "/c.pem".to_owned()),
            (env::TLS_KEY, "/k.pem".to_owned()),
            (env::TOKEN_FILE, "/t".to_owned()),
            (env::ETC_ACCESS, "write".to_owned()),
        ];
        let s = WorkerSettings::from_env(lookup(minimal.clone()))?;
        assert_eq!(s.listen, "0.0.0.0:8443");
        assert_eq!(s.etc_access, EtcAccess::Write);
        assert_eq!(s.etc_dir, PathBuf::from("/host/etc"));
        assert!(s.docker_socket.is_none());
        assert_eq!(s.limits, Limits::default());

        let missing = WorkerSettings::from_env(lookup(minimal[1..].to_vec()));
        assert_eq!(
            missing.err().map(|e| e.to_string()).as_deref(),
            Some("HOSTPLUG_TLS_CERT is required")
        );
        let mut bad = minimal.clone();
        bad.push((env::MAX_CONCURRENT_INVOCATIONS, "four".into()));
        let err = WorkerSettings::from_env(lookup(bad))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.starts_with("HOSTPLUG_MAX_CONCURRENT_INVOCATIONS")),
            "{err:?}"
        );
        let mut bad = minimal;
        bad[3] = (env::ETC_ACCESS, "rw".into());
        let err = WorkerSettings::from_env(lookup(bad))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("HOSTPLUG_ETC_ACCESS")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn the_artifact_key_is_64_hex_digits_and_errors_name_its_variable() -> Result<(), Error> {
        let key = ArtifactKey::from_bytes([0x5a; 32]);
        assert_eq!(key.to_string(), "5a".repeat(32));
        assert_eq!(key.to_string().parse::<ArtifactKey>()?, key);
        assert_eq!("5A".repeat(32).parse::<ArtifactKey>()?, key, "either case");
        for bad in ["", "5a", &"5a".repeat(33), &"zz".repeat(32)] {
            let e = bad.parse::<ArtifactKey>().err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains("64 hex digits")),
                "{bad:?}: {e:?}"
            );
        }
        let mut vars = vec![
            (env::TLS_CERT, "/c.pem".to_owned()),
            (env::TLS_KEY, "/k.pem".to_owned()),
            (env::TOKEN_FILE, "/t".to_owned()),
        ];
        assert_eq!(
            WorkerSettings::from_env(lookup(vars.clone()))?.artifact_key,
            None
        );
        vars.push((env::ARTIFACT_KEY, "not-a-key".to_owned()));
        let e = WorkerSettings::from_env(lookup(vars))
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.starts_with("HOSTPLUG_ARTIFACT_KEY is not valid")),
            "{e:?}"
        );
        Ok(())
    }

    #[test]
    fn limits_derive_the_container_memory_and_cap_timeouts() {
        let limits = Limits::default();
        assert_eq!(limits.container_memory_bytes(), 640 * 1024 * 1024);
        assert_eq!(limits.invoke_timeout(None), Duration::from_secs(60));
        assert_eq!(
            limits.invoke_timeout(Some(10 * DEFAULT_MAX_INVOKE_TIMEOUT_MS)),
            Duration::from_millis(DEFAULT_MAX_INVOKE_TIMEOUT_MS)
        );
        assert!(limits.check().is_ok());
        let zero = Limits {
            memory_limit_bytes: 0,
            ..Limits::default()
        };
        assert_eq!(
            zero.check().err().map(|e| e.to_string()).as_deref(),
            Some("HOSTPLUG_MEMORY_LIMIT_BYTES must be above 0")
        );
    }
}
