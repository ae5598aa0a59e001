//! The seam between the HTTP layer and the Wasm host.
//!
//! [`PluginRuntime`] is what the routes need from a host: does it hold a digest, load a
//! module, run an invocation. [`HostRuntime`](crate::host_runtime::HostRuntime) implements
//! it over `hostplug-host`; tests of the HTTP layer alone may implement it too. Both
//! methods that do work are blocking and are only ever called from
//! `tokio::task::spawn_blocking`.

use std::time::Duration;

use crate::types::{ErrorKind, InvokeResponse, LogLine};

pub use hostplug_host::Digest;

/// One invocation as the runtime sees it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The plugin's operation.
    pub method: String,
    /// Parameters as a JSON document.
    pub params: String,
    /// Dry run: /etc read-only, report only.
    pub dry_run: bool,
    /// Time left for the plugin to run.
    pub timeout: Duration,
}

/// What loading a module did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// The module was compiled (or taken from the on-disk cache) by this call.
    Compiled,
    /// The runtime already held it.
    AlreadyHeld,
}

/// A failure from the runtime, with the kind the client sees.
///
/// For [`ErrorKind::Internal`] the message is for the worker's log only; the route
/// answers a generic text instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RuntimeError {
    /// The kind.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
    /// What the plugin logged before it failed, if it ran.
    pub logs: Vec<LogLine>,
}

impl RuntimeError {
    /// A new error without logs.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            logs: Vec::new(),
        }
    }
}

/// What the routes need from a Wasm host. Implementations are shared by all requests.
pub trait PluginRuntime: Send + Sync + 'static {
    /// True when the module with this digest is loaded and can be invoked. May read the
    /// on-disk cache, so it is called from `spawn_blocking` too.
    fn holds(&self, digest: &Digest) -> bool;

    /// Compiles (or loads from the on-disk cache) and keeps the module. `bytes` has
    /// already been checked to hash to `digest`. Blocking. A bad module is an
    /// [`ErrorKind::BadModule`] error and leaves every other module untouched.
    fn load(&self, digest: &Digest, bytes: &[u8]) -> Result<Loaded, RuntimeError>;

    /// Loads the module `digest` from an artifact the operator compiled with an engine of
    /// `fingerprint` (sent over the authenticated channel). Blocking. Refused
    /// ([`ErrorKind::BadModule`]) when this runtime cannot use it: the operator then
    /// uploads the module itself. The default refuses always.
    fn load_precompiled(
        &self,
        digest: &Digest,
        fingerprint: &str,
        artifact: &[u8],
    ) -> Result<Loaded, RuntimeError> {
        let _ = (fingerprint, artifact);
        Err(RuntimeError::new(
            ErrorKind::BadModule,
            format!(
                "this worker does not load precompiled artifacts ({digest}); upload the module"
            ),
        ))
    }

    /// Runs one invocation of a held module. Blocking, up to `call.timeout`.
    /// An unknown digest is [`ErrorKind::UnknownPlugin`].
    fn invoke(&self, digest: &Digest, call: &Call) -> Result<InvokeResponse, RuntimeError>;
}
