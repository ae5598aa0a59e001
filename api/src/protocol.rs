//! The worker protocol (operator → worker over HTTPS): the one contract between
//! `hostplug-worker` and its client in `hostplug-operator`, and the shapes the Wasm host
//! produces ([`InvokeOutcome`], [`InvokeError`], [`LogRecord`], [`ErrorKind`]). The host,
//! the worker and the operator use these same types; nothing translates between them.
//!
//! All JSON field names are camelCase, error kinds kebab-case. Every route but
//! `GET /healthz` needs `Authorization: Bearer <token>`. `POST /v1/invoke` needs
//! `Content-Type: application/json`; an upload's body is the raw module
//! (`application/wasm` or `application/octet-stream`, the type is not checked). The
//! worker speaks HTTP/1.1 and HTTP/2 (ALPN) over TLS only.
//!
//! | route | request body | success | errors |
//! |---|---|---|---|
//! | `GET /healthz` | — | 200 [`Health`] | — |
//! | `POST /v1/revert` | [`RevertRequest`] | 200 [`InvokeOutcome`] (what was restored) | 400, 401, 422 (`not-found`: no record of that task; `failed`: not revertible, or changed since), 503 |
//! | `HEAD /v1/plugins/{sha256}` | — | 200 (held) / 404 (not held), no body | 400, 401 |
//! | `PUT /v1/plugins/{sha256}` | the component's bytes | 201 [`UploadResponse`] (compiled now) / 200 (already held) | 400, 401, 413, 422, 500 |
//! | `PUT /v1/plugins/{sha256}/precompiled` | the operator's precompiled artifact, headers [`ENGINE_HEADER`] and [`ARTIFACT_SIGNATURE_HEADER`] | 201 [`UploadResponse`] / 200 (already held) | 400 (a header missing or malformed), 401, 413, 422 (`bad-module`: not usable here — another engine, or not signed by the key this worker trusts; upload the module instead) |
//! | `POST /v1/invoke` | [`InvokeRequest`] | 200 [`InvokeOutcome`] | 400, 401, 404, 413, 422 [`InvokeError`], 500, 503 |
//! | `GET /v1/invocations/{id}` | — | 200 [`InvocationStatus`] / 404 `unknown-invocation` | 401 |
//! | `GET /v1/node` | — | 200 [`crate::disruption::NodeInfo`] (the node's boot ID) | 401, 500 |
//! | `POST /v1/node/reboot` | [`crate::disruption::RebootRequest`] (the operator's only; no plugin reaches it) | 202 [`crate::disruption::RebootAnswer`] (`repeated`: this id was accepted in this boot already) | 400, 401, 403 `denied` (no system bus on this worker), 502 `failed` (systemd refused), 503 `busy` (node lock) |
//!
//! `{sha256}` is the module's SHA-256 as 64 hex digits, optionally prefixed with
//! `sha256:` (URL-encoded or not); the invoke request's `digest` likewise. Answers spell
//! digests `sha256:<64 lowercase hex>`.
//!
//! An invocation's answer is a `Result`: 200 with an [`InvokeOutcome`] when the plugin
//! succeeded, 422 with an [`ErrorBody`] whose kind
//! [is an invocation outcome](ErrorKind::is_invocation_outcome) when it ran and failed —
//! both are the node's result, and both carry the tail of what the plugin logged
//! ([`MAX_LOG_TAIL_LINES`], [`MAX_LOG_TAIL_BYTES`]). [`read_invoke_answer`] turns an answer
//! into that `Result`. Every other status means the call did not produce a result:
//!
//! | status | kinds | meaning for the client |
//! |---|---|---|
//! | 400 | `bad-request` | the request is malformed; do not retry unchanged |
//! | 401 | `unauthorized` | missing or wrong bearer token |
//! | 404 | `unknown-plugin` | the worker does not hold that digest: upload it, then retry |
//! | 404 | `unknown-invocation` | (`GET /v1/invocations/{id}`) never ran here, or forgotten |
//! | 404 / 405 | `no-route`, `method-not-allowed` | no such route |
//! | 413 | `payload-too-large` | body above the worker's limit for that route |
//! | 422 | `digest-mismatch`, `bad-module` | the uploaded module was refused |
//! | 422 | `invalid-params`, `not-found`, `denied`, `failed`, `trap`, `timeout`, `resource-limit` | the invocation ran and failed; this is the node's result, retrying will not help |
//! | 500 | `internal` | the worker failed; the message is deliberately short, the worker's log has details |
//! | 503 | `busy` | all invocation slots stayed taken for the worker's queue wait; retry later |

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most log lines an invocation's answer carries: the last 20. Enough to see why a
/// plugin failed; the node's result in the task status keeps them, so they must stay
/// small (a task may run on hundreds of nodes).
pub const MAX_LOG_TAIL_LINES: usize = 20;
/// Most bytes of log text an invocation's answer carries: 4 KiB, for the same reason.
/// Longer single lines are cut.
pub const MAX_LOG_TAIL_BYTES: usize = 4 * 1024;

/// Header of `PUT /v1/plugins/{sha256}/precompiled`: the engine fingerprint the
/// artifact was compiled for (`hostplug_host::Host::engine_fingerprint`).
pub const ENGINE_HEADER: &str = "x-hostplug-engine";

/// Header of `PUT /v1/plugins/{sha256}/precompiled`: the operator's
/// [`ArtifactSignature`] of the artifact, in its text form. A precompiled artifact is
/// native code; the worker loads one only when this signature verifies with the
/// operator's public key from its Pod spec
/// ([`crate::worker::WorkerSettings::artifact_key`]), over the module digest in the
/// path, the engine fingerprint and the artifact's sha256 (`hostplug_host`'s
/// `precompiled` module makes and checks it).
pub const ARTIFACT_SIGNATURE_HEADER: &str = "x-hostplug-artifact-signature";

/// An Ed25519 signature of a precompiled artifact by the operator (64 bytes); the text
/// form is 128 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArtifactSignature([u8; 64]);

impl ArtifactSignature {
    /// The signature with these bytes.
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// The raw 64 bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Display for ArtifactSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ArtifactSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArtifactSignature({self})")
    }
}

impl std::str::FromStr for ArtifactSignature {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, crate::Error> {
        fixed_hex(
            s,
            "artifact signature",
            "128 hex digits (an Ed25519 signature)",
        )
        .map(Self)
    }
}

/// `N` bytes from exactly `2 × N` hex digits, or an error naming `what` and `expected`.
pub(crate) fn fixed_hex<const N: usize>(
    s: &str,
    what: &'static str,
    expected: &'static str,
) -> Result<[u8; N], crate::Error> {
    let mut out = [0u8; N];
    match hex::decode_to_slice(s, &mut out) {
        Ok(()) => Ok(out),
        Err(_) => Err(crate::Error::InvalidValue {
            what,
            input: s.chars().take(80).collect(),
            expected,
        }),
    }
}

/// `POST /v1/invoke` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeRequest {
    /// SHA-256 of a module uploaded before: 64 hex digits, optionally `sha256:`-prefixed.
    /// Kept as text so that a malformed digest is answered with a clear 400.
    pub digest: String,
    /// The plugin's operation, e.g. `ensure-line`.
    pub method: String,
    /// The operation's parameters; handed to the plugin as a JSON document. Absent means
    /// `{}`.
    #[serde(default = "empty_object")]
    pub params: serde_json::Value,
    /// Report what would change and change nothing (the sandbox makes /etc read-only).
    #[serde(default)]
    pub dry_run: bool,
    /// Wall-clock budget of this invocation in milliseconds, waiting for a free slot
    /// included. Absent means the worker's default; values above the worker's maximum are
    /// capped to it; 0 is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Names this invocation for exactly-once delivery (the operator sends
    /// `<task uid>/<generation>/<node>`). The worker remembers the outcome of every named
    /// invocation that ran (bounded, with a TTL): a request repeating a name gets the
    /// stored outcome instead of a second run, and one repeating the name of an
    /// invocation still running waits for it. Absent: no deduplication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// Registry credentials for the plugin's `registry-auth` import, from the task's
    /// `spec.registryAuth` Secret; sent only when the plugin's HostPlugin declares
    /// `registryAuth`. Not part of `params`, which are shown in status and console; the
    /// worker never logs them and forgets them when the call ends. Absent: the import
    /// answers `none` for every registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<crate::registry_auth::RegistryCredentials>,
    /// The plugin's HostPlugin `spec.capabilities.systemd` (unit patterns and actions),
    /// sent with every call of a plugin that declares it: workers are shared by plugins
    /// with the same access profile, so the units a call may touch come with the call.
    /// The worker grants systemd only with both this and its bus socket. Absent: every
    /// `systemd` call is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd: Option<crate::systemd::SystemdCapability>,
    /// What this call may touch. The worker grants it the intersection of this and its
    /// own Pod's grants, so a worker shared by the calls of a sequence (see `onChange`)
    /// gives each only its own plugin's access. Absent: the worker's grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<crate::call::AccessProfile>,
    /// The /etc paths this call may reach beyond its `access` (the HostPlugin's
    /// `etcPaths` and the allowing HostTaskPolicies' `spec.etc`, and the plugin's
    /// allowed sensitive paths), as the operator computed them
    /// ([`crate::plugin::EtcScope::for_call`]). The worker narrows the call's /etc to it;
    /// it honours an allowed sensitive path only when its Pod was made for one
    /// (`HOSTPLUG_ETC_SENSITIVE`). Absent: no narrowing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etc_scope: Option<crate::plugin::EtcScope>,
    /// Follow-up calls, at most [`MAX_FOLLOW_UPS`]: run after this one, in order, under
    /// the same hold of the node lock, only when this one succeeded and reported a change;
    /// the sequence stops at the first that fails. Their modules must be held (uploaded)
    /// like the main one's. They share this request's deadline, dry run and invocation
    /// id: a repeated request gets the whole sequence's stored outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_change: Vec<FollowUpRequest>,
    /// The HostTask this call belongs to. A mutating call that names its task has its
    /// revert record (what it changed under /etc, kept by the host) stored on the node
    /// under this identity, for `POST /v1/revert`; one that names none keeps no record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskIdentity>,
}

/// The identity of one generation of a HostTask: what a revert record is stored under
/// on the node, and what a revert must name exactly to use it (a record of one task can
/// never revert another: a task recreated under the same name has another uid).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskIdentity {
    /// The task's namespace.
    pub namespace: String,
    /// The task's name.
    pub name: String,
    /// The task's `metadata.uid`.
    pub uid: String,
    /// The generation whose call made the change.
    pub generation: i64,
}

impl fmt::Display for TaskIdentity {
    /// `namespace/name (uid, generation N)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} ({}, generation {})",
            self.namespace, self.name, self.uid, self.generation
        )
    }
}

/// Whether what a call changed can be reverted, as its outcome says (the record stays
/// on the node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revertibility {
    /// True when the worker stored a record a revert can restore.
    pub revertible: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set by the operator once it asked the node to revert (`rollout.onFailure:
    /// Revert`): true when the node restored the record, false when the revert failed
    /// (`message` says why). Absent until then; a worker never sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<bool>,
    /// What the revert did (the files restored) or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Revertibility {
    /// Revertible.
    pub fn yes() -> Self {
        Self {
            revertible: true,
            reason: None,
            reverted: None,
            message: None,
        }
    }

    /// Not revertible, because of `reason`.
    pub fn no(reason: impl Into<String>) -> Self {
        Self {
            revertible: false,
            reason: Some(reason.into()),
            reverted: None,
            message: None,
        }
    }
}

/// `POST /v1/revert` request body: put back what the call of `task` changed under /etc
/// on this node, from the record the host kept. The answer is read like an invoke
/// answer ([`read_invoke_answer`]): 200 with an [`InvokeOutcome`] (`changed`: something
/// was restored; `output.restored`: the paths; `diff`: what the revert did), or 422 with
/// `not-found` (no record of exactly this task here, or it expired) or `failed` (not
/// revertible, or a file changed since the task ran: the message names it and carries a
/// diff; `force` restores anyway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevertRequest {
    /// The task (and generation) whose change to revert.
    pub task: TaskIdentity,
    /// Restore files that changed since the task ran too.
    #[serde(default)]
    pub force: bool,
    /// As [`InvokeRequest::invocation_id`]: a revert runs at most once per id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// As [`InvokeRequest::timeout_ms`]: the budget, waiting for the node lock included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Most follow-up calls of one invocation: 8. A handler list (restart a service,
/// reload another) is one or two calls; eight bounds the time one request may hold the
/// node lock beyond its main call.
pub const MAX_FOLLOW_UPS: usize = 8;

/// One follow-up call of an invoke request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowUpRequest {
    /// SHA-256 of its module (uploaded before), as in [`InvokeRequest::digest`].
    pub digest: String,
    /// Its method.
    pub method: String,
    /// Its parameters. Absent means `{}`.
    #[serde(default = "empty_object")]
    pub params: serde_json::Value,
    /// What it may touch (intersected with the worker's grants). Absent: the worker's
    /// grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<crate::call::AccessProfile>,
    /// Its plugin's systemd declaration, as in [`InvokeRequest::systemd`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd: Option<crate::systemd::SystemdCapability>,
    /// Its /etc paths, as in [`InvokeRequest::etc_scope`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etc_scope: Option<crate::plugin::EtcScope>,
}

/// What one follow-up call returned: exactly one of `outcome` and `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowUpOutcome {
    /// The follow-up's method, as requested.
    pub method: String,
    /// What it did, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<InvokeOutcome>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<InvokeError>,
}

impl InvokeRequest {
    /// The request for `call` of the module `digest`, with a deadline of
    /// `timeout_seconds` (at least one second) and, for exactly-once delivery, its
    /// `invocation_id`. No registry credentials: the caller adds them when the plugin
    /// declares them; no systemd declaration: the operator's one send path adds each
    /// plugin's (`dispatch::send`).
    pub fn for_call(
        digest: &crate::Digest,
        call: &crate::call::PluginCall,
        dry_run: bool,
        timeout_seconds: i32,
        invocation_id: Option<String>,
    ) -> Self {
        Self {
            digest: digest.to_string(),
            method: call.method.clone(),
            params: call.params(),
            dry_run,
            timeout_ms: Some(u64::from(timeout_seconds.max(1).unsigned_abs()) * 1000),
            invocation_id,
            registry_auth: None,
            systemd: None,
            access: None,
            etc_scope: None,
            on_change: Vec::new(),
            task: None,
        }
    }
}

/// The invocation id of a HostTask's call on one node: `<task uid>/<generation>/<node>`,
/// the same for every attempt and every operator process, so a worker recognises a
/// repeat. The worker logs it with the call (`invocation_id`), which is how
/// `kubectl hostplug logs` finds a node's lines in its worker's log.
pub fn task_invocation_id(uid: &str, generation: i64, node: &str) -> String {
    format!("{uid}/{generation}/{node}")
}

/// `GET /v1/invocations/{id}` success body: what the worker knows of a named invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationStatus {
    /// The invocation id asked about.
    pub invocation_id: String,
    /// Where it is.
    pub state: InvocationState,
}

/// Where a named invocation is, as far as this worker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InvocationState {
    /// It is running now; repeating the invoke request waits for its outcome.
    Running,
    /// It ran; repeating the invoke request answers its stored outcome.
    Done,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// What a successful invocation did: the host's result and the `POST /v1/invoke` 200 body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeOutcome {
    /// True when the node was changed (in a dry run: would have been).
    pub changed: bool,
    /// The operation's result. Plugins return a JSON document; should one return text
    /// that is not JSON, it arrives here as a JSON string.
    pub output: serde_json::Value,
    /// Unified diff of file changes, when the operation edits files (`null` otherwise).
    #[serde(default)]
    pub diff: Option<String>,
    /// What the plugin logged (its `log` import, then its captured stdout and stderr
    /// lines), in order. On the wire: the tail ([`log_tail`]).
    #[serde(default)]
    pub logs: Vec<LogRecord>,
    /// Wall-clock time of the invocation in milliseconds, store creation included.
    pub duration_ms: u64,
    /// The follow-up calls' results (see [`InvokeRequest::on_change`]), in order: one per
    /// follow-up that ran; none when this call changed nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_change: Vec<FollowUpOutcome>,
    /// Whether this call's change to /etc can be reverted (`POST /v1/revert`): set by
    /// the worker for a mutating call that named its task; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<Revertibility>,
    /// The plugin's request for a reboot (WIT `outcome.reboot-required`): why the
    /// change takes effect only after the node reboots. A request only: the operator's
    /// disruption cycle decides (`spec.disruption.reboot`). Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_required: Option<String>,
}

impl InvokeOutcome {
    /// [`Self::duration_ms`] as a duration.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }
}

/// Why an invocation (or an upload, or `describe`) did not produce an outcome: a kind
/// for programs, a message for people and, when a plugin ran, what it logged before it
/// failed. The host returns it, the worker answers it inside an [`ErrorBody`], the
/// operator's client reads it back; the same type all the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct InvokeError {
    /// What kind of failure; see the module docs for the status that goes with each.
    pub kind: ErrorKind,
    /// A readable sentence for people. Never carries the worker's internals.
    pub message: String,
    /// For invocations that ran: what the plugin logged before it failed (on the wire:
    /// the tail, [`log_tail`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogRecord>,
}

impl InvokeError {
    /// An error of `kind` with `message` and no logs.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            logs: Vec::new(),
        }
    }
}

/// The node's result of one invocation that ran: what it did, or why it failed.
pub type InvokeResult = Result<InvokeOutcome, InvokeError>;

/// Severity of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Detail for plugin authors.
    Debug,
    /// Normal progress.
    Info,
    /// Something odd, the operation went on.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// Every level, least severe first.
    pub const ALL: [LogLevel; 4] = [Self::Debug, Self::Info, Self::Warn, Self::Error];

    /// The lowercase name, as serialised.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

text_form!(LogLevel, "log level", "debug, info, warn or error");

/// Where a log record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The `log` import.
    Log,
    /// The guest's stdout (one record per line).
    Stdout,
    /// The guest's stderr (one record per line).
    Stderr,
    /// The host itself (e.g. that logs were truncated).
    Host,
}

impl LogSource {
    /// Every source.
    pub const ALL: [LogSource; 4] = [Self::Log, Self::Stdout, Self::Stderr, Self::Host];

    /// The lowercase name, as serialised.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Host => "host",
        }
    }
}

/// One line a plugin logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
    /// Origin.
    pub source: LogSource,
    /// The text.
    pub message: String,
}

text_form!(LogSource, "log source", "log, stdout, stderr or host");

impl fmt::Display for LogRecord {
    /// `[level] source: text`, the form a task's node result shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.level, self.source, self.message)
    }
}

/// The tail of `records` an answer carries: the last records within
/// [`MAX_LOG_TAIL_LINES`] and [`MAX_LOG_TAIL_BYTES`] (a longer last line is cut), preceded
/// by a `host` note saying how many earlier ones were left out.
pub fn log_tail(mut records: Vec<LogRecord>) -> Vec<LogRecord> {
    let mut bytes = 0usize;
    let mut keep = 0usize;
    for record in records.iter_mut().rev() {
        if keep == MAX_LOG_TAIL_LINES || bytes >= MAX_LOG_TAIL_BYTES {
            break;
        }
        let room = MAX_LOG_TAIL_BYTES - bytes;
        if record.message.len() > room {
            let mut end = room;
            while !record.message.is_char_boundary(end) {
                end -= 1;
            }
            record.message.truncate(end);
        }
        bytes += record.message.len();
        keep += 1;
    }
    let dropped = records.len() - keep;
    let mut tail = records.split_off(dropped);
    if dropped > 0 {
        tail.insert(
            0,
            LogRecord {
                level: LogLevel::Info,
                source: LogSource::Host,
                message: format!("{dropped} earlier log lines not sent"),
            },
        );
    }
    tail
}

/// `PUT /v1/plugins/{sha256}` success body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadResponse {
    /// The module's digest, `sha256:<64 lowercase hex>`.
    pub digest: String,
    /// Size of the uploaded module in bytes.
    pub size: u64,
    /// False when the worker already held this module (status 200) and nothing was
    /// compiled; true when it was compiled by this request (status 201).
    pub compiled: bool,
}

/// `GET /healthz` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Always `ok` when the worker answers.
    pub status: String,
    /// The worker's crate version.
    pub version: String,
}

/// Every error response's body: `{"error": {"kind": …, "message": …, "logs": […]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: InvokeError,
}

/// The kinds of failure, kebab-case on the wire. The host reports the plugin's and its
/// own; the worker adds those of the HTTP layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// 400: malformed request (JSON, digest syntax, parameters of the request itself).
    BadRequest,
    /// 401: missing or wrong bearer token.
    Unauthorized,
    /// 404: no such route.
    NoRoute,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 413: the body exceeds the route's limit.
    PayloadTooLarge,
    /// 404: the invoked digest was never uploaded to this worker.
    UnknownPlugin,
    /// 422: the uploaded bytes do not hash to the expected digest; nothing was loaded.
    DigestMismatch,
    /// 422: the bytes are not a valid `host-action` component.
    BadModule,
    /// 422, plugin: the parameters do not fit the method.
    InvalidParams,
    /// 422, plugin: something the operation needs does not exist (file, image, method).
    NotFound,
    /// 422, plugin or host: the sandbox or the host refused an access (read-only /etc, a
    /// docker path not allowed, a capability not granted).
    Denied,
    /// 422, plugin: the operation failed for another reason.
    Failed,
    /// 422, host: the plugin trapped (panic, `unreachable`, stack overflow, …).
    Trap,
    /// 422, host: the invocation ran past its deadline and was stopped.
    Timeout,
    /// 422, host: the plugin exceeded a resource limit (memory, output size).
    ResourceLimit,
    /// 503: every invocation slot stayed taken; retry later.
    Busy,
    /// 500: the host or the worker itself failed.
    Internal,
    /// 404: `GET /v1/invocations/{id}` for an id this worker never ran or forgot.
    UnknownInvocation,
    /// A kind this version of the types does not know (sent by a newer worker).
    #[serde(other)]
    Unknown,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 19] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::NoRoute,
        Self::MethodNotAllowed,
        Self::PayloadTooLarge,
        Self::UnknownPlugin,
        Self::DigestMismatch,
        Self::BadModule,
        Self::InvalidParams,
        Self::NotFound,
        Self::Denied,
        Self::Failed,
        Self::Trap,
        Self::Timeout,
        Self::ResourceLimit,
        Self::Busy,
        Self::Internal,
        Self::UnknownInvocation,
        Self::Unknown,
    ];

    /// The kebab-case wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::NoRoute => "no-route",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnknownPlugin => "unknown-plugin",
            Self::DigestMismatch => "digest-mismatch",
            Self::BadModule => "bad-module",
            Self::InvalidParams => "invalid-params",
            Self::NotFound => "not-found",
            Self::Denied => "denied",
            Self::Failed => "failed",
            Self::Trap => "trap",
            Self::Timeout => "timeout",
            Self::ResourceLimit => "resource-limit",
            Self::Busy => "busy",
            Self::Internal => "internal",
            Self::UnknownInvocation => "unknown-invocation",
            Self::Unknown => "unknown",
        }
    }

    /// True for the kinds a plugin reports itself (its `plugin-error` variant).
    pub const fn is_plugin_error(self) -> bool {
        matches!(
            self,
            Self::InvalidParams | Self::NotFound | Self::Denied | Self::Failed
        )
    }

    /// True for the kinds that are the outcome of an invocation that ran (status 422):
    /// the node's result, not a transport or worker problem.
    pub const fn is_invocation_outcome(self) -> bool {
        matches!(
            self,
            Self::InvalidParams
                | Self::NotFound
                | Self::Denied
                | Self::Failed
                | Self::Trap
                | Self::Timeout
                | Self::ResourceLimit
        )
    }
}

// The wire name; `unknown` parses, other unknown names are refused (serde, unlike
// `FromStr`, maps them to `ErrorKind::Unknown`).
text_form!(
    ErrorKind,
    "error kind",
    "a kebab-case kind of the worker protocol"
);

/// Why a `POST /v1/invoke` answer is not a node's result: the call was refused or the
/// worker failed ([`read_invoke_answer`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}{}: {message}", kind.map(|k| format!(" {k}")).unwrap_or_default())]
pub struct RefusedCall {
    /// The HTTP status.
    pub status: u16,
    /// The error kind, when the body was an [`ErrorBody`].
    pub kind: Option<ErrorKind>,
    /// The worker's message, or the start of an unreadable body.
    pub message: String,
}

/// Longest unreadable body quoted in a [`RefusedCall`]: 512 bytes, enough to recognise a
/// proxy's error page without carrying it.
const MAX_QUOTED_BODY: usize = 512;

/// Reads a `POST /v1/invoke` answer: `Ok(Ok(outcome))` for 200, `Ok(Err(error))` for a 422
/// whose kind is an invocation outcome (the plugin ran and failed), and `Err` for every
/// answer that is not a node's result.
pub fn read_invoke_answer(status: u16, body: &[u8]) -> Result<InvokeResult, RefusedCall> {
    if status == 200 {
        return serde_json::from_slice::<InvokeOutcome>(body)
            .map(Ok)
            .map_err(|e| RefusedCall {
                status,
                kind: None,
                message: format!("unreadable answer: {e}"),
            });
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) if status == 422 && b.error.kind.is_invocation_outcome() => Ok(Err(b.error)),
        Ok(b) => Err(RefusedCall {
            status,
            kind: Some(b.error.kind),
            message: b.error.message,
        }),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let mut end = text.len().min(MAX_QUOTED_BODY);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            Err(RefusedCall {
                status,
                kind: None,
                message: text[..end].to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(source: LogSource, message: &str) -> LogRecord {
        LogRecord {
            level: LogLevel::Info,
            source,
            message: message.into(),
        }
    }

    #[test]
    fn invoke_request_defaults_and_camel_case() -> serde_json::Result<()> {
        let req: InvokeRequest =
            serde_json::from_str(r#"{"digest":"abc","method":"read","dryRun":true}"#)?;
        assert_eq!(req.params, serde_json::json!({}));
        assert!(req.dry_run);
        assert_eq!(req.timeout_ms, None);
        let back = serde_json::to_value(&req)?;
        assert_eq!(
            back,
            serde_json::json!({"digest":"abc","method":"read","params":{},"dryRun":true})
        );
        Ok(())
    }

    #[test]
    fn error_kinds_are_kebab_case_and_unknown_tolerated() -> serde_json::Result<()> {
        let body: ErrorBody = serde_json::from_str(
            r#"{"error":{"kind":"unknown-plugin","message":"upload it first"}}"#,
        )?;
        assert_eq!(body.error.kind, ErrorKind::UnknownPlugin);
        let future: InvokeError = serde_json::from_str(r#"{"kind":"brand-new","message":""}"#)?;
        assert_eq!(future.kind, ErrorKind::Unknown);
        assert_eq!(
            serde_json::to_value(ErrorKind::ResourceLimit)?,
            serde_json::json!("resource-limit")
        );
        let e = InvokeError::new(ErrorKind::ResourceLimit, "too big");
        assert_eq!(
            serde_json::to_string(&e)?,
            r#"{"kind":"resource-limit","message":"too big"}"#
        );
        Ok(())
    }

    #[test]
    fn every_kind_has_one_text_form() -> Result<(), Box<dyn std::error::Error>> {
        for kind in ErrorKind::ALL {
            assert_eq!(
                serde_json::to_value(kind)?,
                serde_json::json!(kind.as_str())
            );
            assert_eq!(kind.to_string().parse::<ErrorKind>()?, kind);
        }
        assert!("brand-new".parse::<ErrorKind>().is_err());
        for level in LogLevel::ALL {
            assert_eq!(level.to_string().parse::<LogLevel>()?, level);
            assert_eq!(
                serde_json::to_value(level)?,
                serde_json::json!(level.as_str())
            );
        }
        for source in LogSource::ALL {
            assert_eq!(source.to_string().parse::<LogSource>()?, source);
            assert_eq!(
                serde_json::to_value(source)?,
                serde_json::json!(source.as_str())
            );
        }
        Ok(())
    }

    #[test]
    fn outcome_serialises_camel_case_with_duration_ms() -> serde_json::Result<()> {
        let outcome = InvokeOutcome {
            changed: true,
            output: serde_json::json!({"ok": 1}),
            diff: None,
            logs: vec![LogRecord {
                level: LogLevel::Warn,
                source: LogSource::Stderr,
                message: "careful".into(),
            }],
            duration_ms: 7,
            on_change: Vec::new(),
            revert: None,
            reboot_required: None,
        };
        let value = serde_json::to_value(&outcome)?;
        assert_eq!(
            value,
            serde_json::json!({"changed": true, "output": {"ok": 1}, "diff": null, "durationMs": 7,
                "logs": [{"level": "warn", "source": "stderr", "message": "careful"}]})
        );
        assert_eq!(outcome.logs[0].to_string(), "[warn] stderr: careful");
        assert_eq!(outcome.duration(), Duration::from_millis(7));
        Ok(())
    }

    #[test]
    fn log_tail_keeps_the_last_lines_and_says_what_it_dropped() {
        let few: Vec<_> = (0..3)
            .map(|i| record(LogSource::Log, &format!("{i}")))
            .collect();
        assert_eq!(log_tail(few.clone()), few);

        let many: Vec<_> = (0..100)
            .map(|i| record(LogSource::Stdout, &format!("line {i}")))
            .collect();
        let tail = log_tail(many);
        assert_eq!(tail.len(), MAX_LOG_TAIL_LINES + 1);
        assert_eq!(tail[0].source, LogSource::Host);
        assert_eq!(tail[0].message, "80 earlier log lines not sent");
        assert_eq!(tail[MAX_LOG_TAIL_LINES].message, "line 99");

        let big = vec![
            record(LogSource::Stdout, &"a".repeat(MAX_LOG_TAIL_BYTES)),
            record(LogSource::Stdout, &"é".repeat(MAX_LOG_TAIL_BYTES)),
        ];
        let tail = log_tail(big);
        let bytes: usize = tail
            .iter()
            .filter(|r| r.source != LogSource::Host)
            .map(|r| r.message.len())
            .sum();
        assert!(bytes <= MAX_LOG_TAIL_BYTES, "{bytes}");
        assert_eq!(tail[0].message, "1 earlier log lines not sent");
    }

    #[test]
    fn invoke_answers_read_as_results() -> Result<(), Box<dyn std::error::Error>> {
        let ok = br#"{"changed":false,"output":{},"durationMs":3}"#;
        assert!(matches!(read_invoke_answer(200, ok)?, Ok(o) if o.duration_ms == 3));

        let failed = br#"{"error":{"kind":"denied","message":"read-only","logs":[{"level":"error","source":"log","message":"no"}]}}"#;
        let Err(e) = read_invoke_answer(422, failed)? else {
            return Err("a 422 denied is the node's failure".into());
        };
        assert_eq!(e.kind, ErrorKind::Denied);
        assert_eq!(e.logs.len(), 1);

        let refused = br#"{"error":{"kind":"digest-mismatch","message":"m"}}"#;
        let err = read_invoke_answer(422, refused).err();
        assert_eq!(err.and_then(|e| e.kind), Some(ErrorKind::DigestMismatch));

        let busy = read_invoke_answer(503, br#"{"error":{"kind":"busy","message":"later"}}"#);
        assert_eq!(
            busy.err().map(|e| e.to_string()).as_deref(),
            Some("503 busy: later")
        );

        let html = read_invoke_answer(502, "<html>é</html>".repeat(100).as_bytes());
        let err = html.err().ok_or("a 502 page is refused")?;
        assert!(err.kind.is_none() && err.message.len() <= MAX_QUOTED_BODY);
        Ok(())
    }
}
