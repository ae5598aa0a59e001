//! The wire types of the worker protocol (operator → worker), the one contract between
//! `hostplug-worker` and its client in `hostplug-operator`.
//!
//! This module is always compiled, also without the crate's `server` feature, so a client
//! depends on it with `hostplug-worker = { default-features = false }` and pulls in only
//! serde. It must never grow a dependency on the server side (axum, wasmtime).
//!
//! All JSON field names are camelCase. Every route but `GET /healthz` needs
//! `Authorization: Bearer <token>`. `POST /v1/invoke` needs
//! `Content-Type: application/json`; an upload's body is the raw module
//! (`application/wasm` or `application/octet-stream`, the type is not checked). The
//! worker speaks HTTP/1.1 and HTTP/2 (ALPN) over TLS only.
//!
//! | route | request body | success | errors |
//! |---|---|---|---|
//! | `GET /healthz` | — | 200 [`Health`] | — |
//! | `HEAD /v1/plugins/{sha256}` | — | 200 (held) / 404 (not held), no body | 400, 401 |
//! | `PUT /v1/plugins/{sha256}` | the component's bytes | 201 [`UploadResponse`] (compiled now) / 200 (already held) | 400, 401, 413, 422, 500 |
//! | `PUT /v1/plugins/{sha256}/precompiled` | the operator's precompiled artifact, header [`ENGINE_HEADER`] | 201 [`UploadResponse`] / 200 (already held) | 400, 401, 413, 422 (`bad-module`: not usable here; upload the module instead) |
//! | `POST /v1/invoke` | [`InvokeRequest`] | 200 [`InvokeResponse`] | 400, 401, 404, 413, 422, 500, 503 |
//! | `GET /v1/invocations/{id}` | — | 200 [`InvocationStatus`] / 404 `unknown-invocation` | 401 |
//!
//! `{sha256}` is the module's SHA-256 as 64 hex digits, optionally prefixed with
//! `sha256:` (URL-encoded or not); the invoke request's `digest` likewise. Answers spell
//! digests `sha256:<64 lowercase hex>`.
//!
//! Every error is an [`ErrorBody`] `{"error": {"kind": …, "message": …}}`, plus `logs`
//! when a plugin logged something before it failed. How a client
//! should read the status codes:
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

use serde::{Deserialize, Serialize};

/// Header of `PUT /v1/plugins/{sha256}/precompiled`: the engine fingerprint the
/// artifact was compiled for (`hostplug_host::Host::engine_fingerprint`).
pub const ENGINE_HEADER: &str = "x-hostplug-engine";

/// `POST /v1/invoke` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeRequest {
    /// SHA-256 of a module uploaded before: 64 hex digits, optionally `sha256:`-prefixed.
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

/// `POST /v1/invoke` success body: what the operation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeResponse {
    /// True when the node was changed (in a dry run: would have been).
    pub changed: bool,
    /// The operation's result. Plugins return a JSON document; should one return text
    /// that is not JSON, it arrives here as a JSON string.
    pub output: serde_json::Value,
    /// Unified diff of file changes, when the operation edits files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// What the plugin logged (its `log` import and its captured stdout/stderr), in order.
    #[serde(default)]
    pub logs: Vec<LogLine>,
    /// Time spent running the plugin, in milliseconds.
    pub duration_ms: u64,
}

/// One line a plugin logged (the host's `LogRecord`, on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// Where it came from: `log` (the log import), `stdout`, `stderr`, or `host` (a note
    /// by the host, e.g. that logs were truncated).
    pub source: String,
    /// The logged text.
    pub message: String,
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

/// Every error response's body: `{"error": {"kind": …, "message": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What kind of failure; see the module docs for the status that goes with each.
    pub kind: ErrorKind,
    /// A readable sentence for people. Never carries the worker's internals.
    pub message: String,
    /// For invocation outcomes (422): what the plugin logged before it failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
}

/// The kinds of error the worker answers with, kebab-case on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
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
    /// 422: the uploaded bytes do not hash to the digest in the path.
    DigestMismatch,
    /// 422: the uploaded bytes are not a valid `host-action` component.
    BadModule,
    /// 422: the plugin refused the parameters.
    InvalidParams,
    /// 422: something the operation needs does not exist (file, image, method).
    NotFound,
    /// 422: the sandbox or the host refused an access.
    Denied,
    /// 422: the operation failed for another reason.
    Failed,
    /// 422: the plugin trapped.
    Trap,
    /// 422: the invocation ran past its deadline and was stopped.
    Timeout,
    /// 422: the plugin exceeded a resource limit (memory, output size).
    ResourceLimit,
    /// 503: every invocation slot stayed taken; retry later.
    Busy,
    /// 500: the worker itself failed.
    Internal,
    /// 404: `GET /v1/invocations/{id}` for an id this worker never ran or forgot.
    UnknownInvocation,
    /// A kind this version of the types does not know (sent by a newer worker).
    #[serde(other)]
    Unknown,
}

impl ErrorKind {
    /// The kebab-case wire name.
    pub fn as_str(self) -> &'static str {
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

    /// True for the kinds that are the outcome of an invocation that ran (status 422):
    /// the node's result, not a transport or worker problem.
    pub fn is_invocation_outcome(self) -> bool {
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

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let future: ErrorDetail = serde_json::from_str(r#"{"kind":"brand-new","message":""}"#)?;
        assert_eq!(future.kind, ErrorKind::Unknown);
        assert_eq!(
            serde_json::to_value(ErrorKind::ResourceLimit)?,
            serde_json::json!("resource-limit")
        );
        Ok(())
    }

    #[test]
    fn as_str_matches_serde() -> serde_json::Result<()> {
        for kind in [
            ErrorKind::BadRequest,
            ErrorKind::PayloadTooLarge,
            ErrorKind::MethodNotAllowed,
            ErrorKind::Busy,
            ErrorKind::Internal,
        ] {
            assert_eq!(
                serde_json::to_value(kind)?,
                serde_json::json!(kind.as_str())
            );
        }
        Ok(())
    }
}
