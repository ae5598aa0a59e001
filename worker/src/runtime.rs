//! The seam between the HTTP layer and the Wasm host.
//!
//! [`PluginRuntime`] is what the routes need from a host: does it hold a digest, load a
//! module, run an invocation. [`HostRuntime`](crate::host_runtime::HostRuntime) implements
//! it over `hostplug-host`; tests of the HTTP layer alone may implement it too. Both
//! methods that do work are blocking and are only ever called from
//! `tokio::task::spawn_blocking`.

use std::time::Duration;

use hostplug_api::{ErrorKind, InvokeError, InvokeOutcome};
pub use hostplug_host::{ChangeRecord, Restored, RevertError};

pub use hostplug_api::Digest;
pub use hostplug_api::protocol::ArtifactSignature;

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
    /// The task's registry credentials for the plugin's `registry-auth` import, from
    /// the request (never from the worker's settings). `Debug` shows registries only.
    pub registry_auth: Option<std::sync::Arc<hostplug_api::registry_auth::RegistryCredentials>>,
    /// The units and actions of the plugin's systemd capability, from the request (the
    /// worker's bus socket is shared by the plugins of its profile). Granted only when
    /// this worker has the bus socket.
    pub systemd: Option<hostplug_api::systemd::SystemdCapability>,
    /// What this call may touch, from the request: the runtime grants the intersection
    /// of this and the worker's own grants. `None`: the worker's grants.
    pub access: Option<hostplug_api::call::AccessProfile>,
    /// The /etc paths this call may reach and the sensitive paths its plugin is allowed,
    /// from the request: the runtime narrows the call's /etc to it, and honours the
    /// allowances only when this worker's Pod was made for them. `None`: no narrowing.
    pub etc_scope: Option<hostplug_api::plugin::EtcScope>,
}

/// What loading a module did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// The module was compiled (or taken from the on-disk cache) by this call.
    Compiled,
    /// The runtime already held it.
    AlreadyHeld,
}

/// A failure from the runtime: the protocol's [`InvokeError`], whose kind decides the
/// answer's status.
///
/// For [`hostplug_api::ErrorKind::Internal`] the message is for the worker's log only; the route
/// answers a generic text instead.
pub type RuntimeError = InvokeError;

/// What the routes need from a Wasm host. Implementations are shared by all requests.
pub trait PluginRuntime: Send + Sync + 'static {
    /// True when the module with this digest is loaded and can be invoked. May read the
    /// on-disk cache, so it is called from `spawn_blocking` too.
    fn holds(&self, digest: &Digest) -> bool;

    /// Compiles (or loads from the on-disk cache) and keeps the module. `bytes` has
    /// already been checked to hash to `digest`. Blocking. A bad module is an
    /// [`hostplug_api::ErrorKind::BadModule`] error and leaves every other module untouched.
    fn load(&self, digest: &Digest, bytes: &[u8]) -> Result<Loaded, RuntimeError>;

    /// Loads the module `digest` from an artifact the operator compiled with an engine of
    /// `fingerprint` and signed (`signature`). Blocking. Refused
    /// ([`ErrorKind::BadModule`]) unless the signature verifies with the operator's key
    /// from this worker's settings, over this digest, this fingerprint and these bytes,
    /// and this runtime can use it: the operator then uploads the module itself. The
    /// default refuses always.
    fn load_precompiled(
        &self,
        digest: &Digest,
        fingerprint: &str,
        signature: &ArtifactSignature,
        artifact: &[u8],
    ) -> Result<Loaded, RuntimeError> {
        let _ = (fingerprint, signature, artifact);
        Err(RuntimeError::new(
            ErrorKind::BadModule,
            format!(
                "this worker does not load precompiled artifacts ({digest}); upload the module"
            ),
        ))
    }

    /// Runs one invocation of a held module. Blocking, up to `call.timeout`.
    /// An unknown digest is [`hostplug_api::ErrorKind::UnknownPlugin`]. The logs of the outcome and of
    /// an invocation's error are the tail the answer carries
    /// ([`hostplug_api::protocol::log_tail`]).
    fn invoke(&self, digest: &Digest, call: &Call) -> Result<InvokeOutcome, RuntimeError>;

    /// [`invoke`](Self::invoke), with the revert record the host kept of the call (what
    /// it changed under /etc); `None` when the call could change nothing there. The
    /// default keeps none.
    fn invoke_recorded(
        &self,
        digest: &Digest,
        call: &Call,
    ) -> (Result<InvokeOutcome, RuntimeError>, Option<ChangeRecord>) {
        (self.invoke(digest, call), None)
    }

    /// Puts back what `record` says, under this worker's /etc (see
    /// `hostplug_host::revert::restore`). Blocking. The default refuses: only a worker
    /// with write access to /etc can revert.
    fn restore(&self, record: &ChangeRecord, force: bool) -> Result<Restored, RevertError> {
        let _ = (record, force);
        Err(RevertError::NotRevertible(
            "this worker has no write access to /etc".into(),
        ))
    }
}
