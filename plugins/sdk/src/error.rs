//! The one error type of a plugin operation, mapped one-to-one onto the WIT `plugin-error`.
//!
//! Handlers return [`Error`]; the SDK turns it into the variant the host reports to the
//! operator (`invalid-params`, `not-found`, `denied`, `failed`). A host import's typed
//! `capability-error` becomes the variant of the same kind (`invalid` as
//! [`Error::InvalidParams`]) without reading its message. Messages travel to the task's
//! status, so they should say what was wrong in words an administrator understands.

use std::io;
use std::path::Path;

/// What went wrong in an operation. Each variant is one variant of the WIT `plugin-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The parameters do not fit the method; the message names the field.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// Something the operation needs does not exist (a file, an image, a method).
    #[error("not found: {0}")]
    NotFound(String),
    /// The sandbox or the host refused (read-only /etc, a path outside /etc, a docker path
    /// that is not allowed).
    #[error("denied: {0}")]
    Denied(String),
    /// Anything else that went wrong.
    #[error("failed: {0}")]
    Failed(String),
}

/// The result type of the SDK and of plugin handlers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The parameters do not fit the method; say which field and why.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::InvalidParams(message.into())
    }

    /// Something the operation needs does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    /// The operation is not allowed.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::Denied(message.into())
    }

    /// Anything else.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// Maps an I/O error on `path` to the matching variant, keeping the path in the
    /// message: `PermissionDenied` and `ReadOnlyFilesystem` become [`Error::Denied`]
    /// (that is how the sandbox refuses a write to a read-only /etc, or a symlink that
    /// leads out of it), `NotFound` becomes [`Error::NotFound`], anything else
    /// [`Error::Failed`].
    pub fn io(path: impl AsRef<Path>, err: &io::Error) -> Self {
        let path = path.as_ref();
        let message = if path.as_os_str().is_empty() {
            err.to_string()
        } else {
            format!("{}: {err}", path.display())
        };
        match err.kind() {
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                Self::Denied(message)
            }
            io::ErrorKind::NotFound => Self::NotFound(message),
            _ => Self::Failed(message),
        }
    }

    /// The message without the kind prefix.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidParams(m) | Self::NotFound(m) | Self::Denied(m) | Self::Failed(m) => m,
        }
    }

    /// The kind as the WIT spells it: `invalid-params`, `not-found`, `denied` or `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidParams(_) => "invalid-params",
            Self::NotFound(_) => "not-found",
            Self::Denied(_) => "denied",
            Self::Failed(_) => "failed",
        }
    }
}

impl From<io::Error> for Error {
    /// Without a path at hand; prefer [`Error::io`], whose message names the file.
    fn from(err: io::Error) -> Self {
        Self::io("", &err)
    }
}

/// The typed error of a host import (`docker`, `containerd`, `files`).
pub use crate::bindings::hostplug::plugin::types::CapabilityError;

impl From<CapabilityError> for Error {
    /// The variant of the same kind, the host's message as it is: `denied` →
    /// [`Error::Denied`], `not-found` → [`Error::NotFound`], `invalid` →
    /// [`Error::InvalidParams`], `failed` → [`Error::Failed`].
    fn from(err: CapabilityError) -> Self {
        match err {
            CapabilityError::Denied(m) => Self::Denied(m),
            CapabilityError::NotFound(m) => Self::NotFound(m),
            CapabilityError::Invalid(m) => Self::InvalidParams(m),
            CapabilityError::Failed(m) => Self::Failed(m),
        }
    }
}

impl Error {
    /// A host import's error as [`From`] maps it, the message led by the service that
    /// answered (`docker: …`, `containerd: …`) unless it already says so, so an
    /// administrator sees which one it was.
    pub fn from_capability(service: &str, err: CapabilityError) -> Self {
        let lead = format!("{service}: ");
        let with_service = |m: String| {
            if m.starts_with(&lead) {
                m
            } else {
                format!("{lead}{m}")
            }
        };
        match Self::from(err) {
            Self::InvalidParams(m) => Self::InvalidParams(with_service(m)),
            Self::NotFound(m) => Self::NotFound(with_service(m)),
            Self::Denied(m) => Self::Denied(with_service(m)),
            Self::Failed(m) => Self::Failed(with_service(m)),
        }
    }
}

impl From<Error> for crate::bindings::PluginError {
    fn from(err: Error) -> Self {
        use crate::bindings::PluginError as E;
        match err {
            Error::InvalidParams(m) => E::InvalidParams(m),
            Error::NotFound(m) => E::NotFound(m),
            Error::Denied(m) => E::Denied(m),
            Error::Failed(m) => E::Failed(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind of a host import's error becomes the variant of that kind; the message
    /// is never read to decide it (a message that looks like another kind changes
    /// nothing).
    #[test]
    fn capability_errors_map_by_kind_not_by_message() {
        for (err, kind) in [
            (CapabilityError::Denied("not-found: x".into()), "denied"),
            (CapabilityError::NotFound("denied: x".into()), "not-found"),
            (CapabilityError::Invalid("x".into()), "invalid-params"),
            (CapabilityError::Failed("denied: x".into()), "failed"),
        ] {
            assert_eq!(Error::from(err.clone()).kind(), kind, "{err:?}");
            assert_eq!(Error::from_capability("docker", err).kind(), kind);
        }
        assert_eq!(
            Error::from_capability(
                "containerd",
                CapabilityError::Denied("this plugin has no containerd capability".into())
            ),
            Error::denied("containerd: this plugin has no containerd capability")
        );
        assert_eq!(
            Error::from_capability(
                "containerd",
                CapabilityError::Failed("containerd: Unavailable: connection refused".into())
            ),
            Error::failed("containerd: Unavailable: connection refused")
        );
    }

    #[test]
    fn io_kinds_map_to_plugin_errors() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(
            matches!(Error::io("/etc/x", &denied), Error::Denied(m) if m.starts_with("/etc/x: "))
        );
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(Error::io("/etc/x", &missing).kind(), "not-found");
        let other = io::Error::other("disk on fire");
        assert_eq!(Error::io("/etc/x", &other).kind(), "failed");
    }
}
