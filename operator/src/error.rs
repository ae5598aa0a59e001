//! The controller's errors. One enum for the crate; each variant says what failed and
//! keeps the cause as its `#[source]`. Validation problems of a task are not errors: they
//! end the task as Failed (see [`crate::validate`]); these are the failures that make
//! the controller retry.

use std::time::Duration;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while reconciling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {context}")]
    Kube {
        /// What the call was for.
        context: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// An object lacks a field the API server always sets.
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    /// Serialising a status or object failed.
    #[error("serialising {context} failed")]
    Serialize {
        /// What was serialised.
        context: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The Wasm host refused a module or failed to describe it.
    #[error("plugin {plugin}: {source}")]
    Plugin {
        /// HostPlugin name.
        plugin: String,
        /// The host's error.
        #[source]
        source: hostplug_host::Error,
    },
    /// Reading a built-in plugin from the plugin directory failed.
    #[error("reading {path}")]
    Io {
        /// The file or directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Making a task's TLS certificate failed.
    #[error("generating the worker certificate failed")]
    Certificate(#[source] rcgen::Error),
    /// Building the pinned TLS client failed.
    #[error("building the worker client failed: {0}")]
    Tls(String),
    /// A blocking job (loading a plugin) panicked or was cancelled.
    #[error("background job failed")]
    Join(#[source] tokio::task::JoinError),
    /// The operator's configuration cannot be used (e.g. a key file that does not parse).
    #[error("configuration: {0}")]
    Config(String),
    /// A status write lost to a newer write of the object (resourceVersion conflict): the
    /// next reconcile reads the newer object and decides again.
    #[error("{kind} {name} changed since it was read; not written")]
    Conflict {
        /// The object's kind, e.g. `HostState`.
        kind: String,
        /// Its name.
        name: String,
    },
    /// The leader Lease was lost or could not be renewed in time.
    #[error("lost the leader lease {lease} (not renewed within {within:?})")]
    LostLease {
        /// Lease name.
        lease: String,
        /// The renewal deadline that passed.
        within: Duration,
    },
}

impl Error {
    /// Wraps a kube error with what the call was for.
    pub fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let context = context.into();
        move |source| Self::Kube { context, source }
    }
}
