//! The crate's errors: `Error` for loading and configuring, and the invocation error
//! model (`ErrorKind`, `InvokeError`) that the worker returns as `{error: {kind, message}}`.
//!
//! Kinds are part of the public protocol (kebab-case strings); never rename one. Messages
//! are for people; this module must never put host paths or secrets into them beyond what
//! the caller handed in.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Digest, LogRecord};

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as a stable machine-readable kind. Serialises as kebab-case
/// (`"invalid-params"`, `"resource-limit"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Plugin: the parameters do not fit the method.
    InvalidParams,
    /// Plugin: something the operation needs does not exist (file, image, method).
    NotFound,
    /// Plugin or host: the sandbox or the host refused (read-only /etc, a docker path
    /// not allowed, a capability not granted).
    Denied,
    /// Plugin: anything else that went wrong inside the plugin.
    Failed,
    /// Host: the module is not a valid `host-action` component.
    BadModule,
    /// Host: the module's sha256 is not the expected one.
    DigestMismatch,
    /// Host: the plugin trapped (panic, `unreachable`, stack overflow, …).
    Trap,
    /// Host: the invocation ran past its deadline and was interrupted.
    Timeout,
    /// Host: the plugin hit a resource limit (memory, output size).
    ResourceLimit,
    /// Host: a failure of the host itself.
    Internal,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 10] = [
        Self::InvalidParams,
        Self::NotFound,
        Self::Denied,
        Self::Failed,
        Self::BadModule,
        Self::DigestMismatch,
        Self::Trap,
        Self::Timeout,
        Self::ResourceLimit,
        Self::Internal,
    ];

    /// The kebab-case name, as serialised.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidParams => "invalid-params",
            Self::NotFound => "not-found",
            Self::Denied => "denied",
            Self::Failed => "failed",
            Self::BadModule => "bad-module",
            Self::DigestMismatch => "digest-mismatch",
            Self::Trap => "trap",
            Self::Timeout => "timeout",
            Self::ResourceLimit => "resource-limit",
            Self::Internal => "internal",
        }
    }

    /// True for the kinds a plugin reports itself (its `plugin-error` variant).
    pub const fn is_plugin_error(self) -> bool {
        matches!(
            self,
            Self::InvalidParams | Self::NotFound | Self::Denied | Self::Failed
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one invocation (or `describe`) did not produce an outcome.
///
/// Serialises as `{"kind": "...", "message": "..."}` plus, when there are any, the
/// `logs` the plugin wrote before it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct InvokeError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// A readable explanation.
    pub message: String,
    /// What the plugin logged (log import, stdout, stderr) before the failure.
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

/// Errors of the host library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A string that should have been a sha256 digest was not.
    #[error("invalid digest {input:?}: expected 64 hex digits, optionally prefixed by `sha256:`")]
    InvalidDigest {
        /// The offending input (cut to 80 characters).
        input: String,
    },
    /// The module's bytes do not hash to the expected digest; nothing was loaded.
    #[error("digest mismatch: expected {expected}, the module is {actual}")]
    DigestMismatch {
        /// What the caller pinned.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The module is not a valid `host-action` component (does not parse, does not
    /// compile, imports something the host does not offer, lacks an export, or describes
    /// itself wrongly). Only this module is affected.
    #[error("bad module {digest}: {message}")]
    BadModule {
        /// The module's digest.
        digest: Digest,
        /// Why it was refused.
        message: String,
    },
    /// The engine could not be set up or failed internally.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// A [`HostConfig`](crate::HostConfig) value makes no sense; the message names the
    /// field.
    #[error("invalid host configuration: {0}")]
    Config(String),
    /// A file-system operation of the host failed.
    #[error("{context}: {source}")]
    Io {
        /// What the host was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Running the plugin failed (describe trapped, timed out, …).
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    /// A value could not be encoded (JSON or YAML output).
    #[error("encoding {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        message: String,
    },
}

impl Error {
    /// The invocation error kind this error is reported as.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidDigest { .. } => ErrorKind::InvalidParams,
            Self::DigestMismatch { .. } => ErrorKind::DigestMismatch,
            Self::BadModule { .. } => ErrorKind::BadModule,
            Self::Engine(_) | Self::Config(_) | Self::Io { .. } | Self::Encode { .. } => {
                ErrorKind::Internal
            }
            Self::Invoke(e) => e.kind,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<Error> for InvokeError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invoke(inner) => inner,
            other => InvokeError::new(other.kind(), other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialise_kebab_case() -> Result<(), serde_json::Error> {
        for kind in ErrorKind::ALL {
            assert_eq!(
                serde_json::to_string(&kind)?,
                format!("\"{}\"", kind.as_str())
            );
        }
        let e = InvokeError::new(ErrorKind::ResourceLimit, "too big");
        assert_eq!(
            serde_json::to_string(&e)?,
            r#"{"kind":"resource-limit","message":"too big"}"#
        );
        Ok(())
    }
}
