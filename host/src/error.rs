//! The crate's errors: `Error` for loading and configuring. The invocation error model
//! (`ErrorKind`, `InvokeError`) is the worker protocol's, defined in `hostplug-api`.
//!
//! Messages are for people; this module must never put host paths or secrets into them
//! beyond what the caller handed in.

use crate::{Digest, ErrorKind, InvokeError};

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the host library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A string that should have been a sha256 digest (or another value of the API) was
    /// not.
    #[error(transparent)]
    InvalidDigest(#[from] hostplug_api::Error),
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
}

impl Error {
    /// The invocation error kind this error is reported as.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidDigest(_) => ErrorKind::InvalidParams,
            Self::DigestMismatch { .. } => ErrorKind::DigestMismatch,
            Self::BadModule { .. } => ErrorKind::BadModule,
            Self::Engine(_) | Self::Config(_) | Self::Io { .. } => ErrorKind::Internal,
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
