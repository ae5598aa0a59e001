//! [`HostRuntime`]: the [`PluginRuntime`] over `hostplug-host`, with this worker's grants.
//!
//! Precompiled artifacts are loaded only with a signature that verifies with the
//! operator's key from the settings (`HOSTPLUG_ARTIFACT_KEY`); without one set, none.
//!
//! The grants are fixed at start-up from the settings (the Pod mounts what the calls of
//! its access profile may touch); no request can widen them. A request may narrow them:
//! each call carries its own access profile, and a call runs with the intersection (a
//! worker serving a call and its follow-ups has the union of their profiles, and each
//! call gets only its own plugin's). The one per-call addition is the task's registry
//! credentials, which the operator sends inside the invoke request only for plugins
//! that declare `registryAuth`.
//! The host speaks the protocol's types ([`InvokeOutcome`], [`InvokeError`]); this
//! module only cuts their logs to the tail an answer carries.

use std::sync::Arc;
use std::time::Duration;

use hostplug_api::call::AccessProfile;
use hostplug_api::protocol::log_tail;
use hostplug_api::{ErrorKind, EtcAccess, InvokeError, InvokeOutcome};
use hostplug_host::{ArtifactKey, Grants, Host, HostConfig, Invocation};

use crate::config::WorkerSettings;
use crate::error::{Error, Result};
use crate::runtime::{ArtifactSignature, Call, Digest, Loaded, PluginRuntime, RuntimeError};

/// The plugin runtime of a real worker: one [`Host`] (engine, in-memory and on-disk
/// component cache), the grants of this worker, and the operator's key that precompiled
/// artifacts must be signed with.
#[derive(Debug, Clone)]
pub struct HostRuntime {
    host: Host,
    grants: Arc<Grants>,
    artifact_key: Option<ArtifactKey>,
}

impl HostRuntime {
    /// A runtime for `config`: its cache dir, memory limit, deadlines and grants. Fails
    /// when /etc access is granted but the etc dir is not a directory, so a Pod with a
    /// wrong mount fails at start, not at the first invocation.
    pub fn new(config: &WorkerSettings) -> Result<Self> {
        let etc = config.etc_access;
        if etc != EtcAccess::None && !config.etc_dir.is_dir() {
            return Err(Error::Config(format!(
                "etc access is {etc} but {} is not a directory",
                config.etc_dir.display()
            )));
        }
        std::fs::create_dir_all(&config.cache_dir).map_err(|source| Error::ReadFile {
            what: "cache directory",
            path: config.cache_dir.clone(),
            source,
        })?;
        let limits = &config.limits;
        let host_config = HostConfig {
            cache_dir: Some(config.cache_dir.clone()),
            limits: hostplug_host::Limits {
                max_memory_bytes: limits.memory_limit_bytes,
                default_deadline: Duration::from_millis(limits.invoke_timeout_ms),
                max_deadline: Duration::from_millis(limits.max_invoke_timeout_ms),
                ..hostplug_host::Limits::default()
            },
            ..HostConfig::default()
        };
        let host = Host::new(host_config).map_err(Error::Host)?;
        let grants = Grants {
            etc,
            etc_dir: (etc != EtcAccess::None).then(|| config.etc_dir.clone()),
            docker: config.docker_socket.clone(),
            // The docker capability's image archive directory, when the Pod mounts it.
            image_archives: config
                .docker_socket
                .as_ref()
                .map(|_| {
                    std::path::PathBuf::from(hostplug_api::worker::paths::IMAGE_ARCHIVES_MOUNT)
                })
                .filter(|dir| dir.is_dir()),
            registry_auth: None,
            containerd: config.containerd_socket.clone(),
        };
        Ok(Self {
            host,
            grants: Arc::new(grants),
            artifact_key: config.artifact_key,
        })
    }

    /// The underlying host.
    pub fn host(&self) -> &Host {
        &self.host
    }
}

impl PluginRuntime for HostRuntime {
    fn holds(&self, digest: &Digest) -> bool {
        self.host.cached(digest).is_some()
    }

    fn load(&self, digest: &Digest, bytes: &[u8]) -> Result<Loaded, RuntimeError> {
        if self.host.cached(digest).is_some() {
            return Ok(Loaded::AlreadyHeld);
        }
        match self.host.load(bytes, Some(digest)) {
            Ok(plugin) => {
                tracing::debug!(%digest, source = ?plugin.source(), load_ms = plugin.load_duration().as_millis() as u64, "module ready");
                Ok(Loaded::Compiled)
            }
            Err(e) => Err(RuntimeError::new(e.kind(), e.to_string())),
        }
    }

    fn load_precompiled(
        &self,
        digest: &Digest,
        fingerprint: &str,
        signature: &ArtifactSignature,
        artifact: &[u8],
    ) -> Result<Loaded, RuntimeError> {
        if self.host.cached(digest).is_some() {
            return Ok(Loaded::AlreadyHeld);
        }
        let Some(trusted) = &self.artifact_key else {
            return Err(RuntimeError::new(
                ErrorKind::BadModule,
                format!(
                    "this worker trusts no artifact key ({} is unset), so it loads no \
                     precompiled code; upload the module {digest}",
                    hostplug_api::worker::env::ARTIFACT_KEY
                ),
            ));
        };
        match self
            .host
            .load_precompiled(digest, fingerprint, signature, artifact, trusted)
        {
            Ok(plugin) => {
                tracing::debug!(%digest, source = ?plugin.source(), load_ms = plugin.load_duration().as_millis() as u64, "precompiled module ready");
                Ok(Loaded::Compiled)
            }
            Err(e) => Err(RuntimeError::new(e.kind(), e.to_string())),
        }
    }

    fn invoke(&self, digest: &Digest, call: &Call) -> Result<InvokeOutcome, RuntimeError> {
        let Some(plugin) = self.host.cached(digest) else {
            return Err(RuntimeError::new(
                ErrorKind::UnknownPlugin,
                format!("this worker does not hold plugin {digest}; upload it first"),
            ));
        };
        let invocation = Invocation {
            method: call.method.clone(),
            params: call.params.clone(),
            dry_run: call.dry_run,
            deadline: Some(call.timeout),
        };
        // The worker's grants are fixed; a call narrows them to its own access, and its
        // registry credentials come with it.
        let per_call;
        let grants = match (&call.registry_auth, call.access) {
            (None, None) => &*self.grants,
            (creds, access) => {
                let mut g = match access {
                    Some(access) => narrowed(&self.grants, access),
                    None => (*self.grants).clone(),
                };
                g.registry_auth = creds.clone();
                per_call = g;
                &per_call
            }
        };
        plugin
            .invoke(&invocation, grants)
            .map(response)
            .map_err(invoke_error)
    }
}

/// The worker's `grants` as far as a call with `access` may use them: never more than
/// either.
pub fn narrowed(grants: &Grants, access: AccessProfile) -> Grants {
    let etc = grants.etc.min(access.etc);
    let docker = access.docker.then(|| grants.docker.clone()).flatten();
    Grants {
        etc,
        etc_dir: grants.etc_dir.clone().filter(|_| etc != EtcAccess::None),
        image_archives: grants.image_archives.clone().filter(|_| docker.is_some()),
        docker,
        registry_auth: grants.registry_auth.clone(),
        containerd: access
            .containerd
            .then(|| grants.containerd.clone())
            .flatten(),
    }
}

fn response(mut outcome: InvokeOutcome) -> InvokeOutcome {
    outcome.logs = log_tail(std::mem::take(&mut outcome.logs));
    outcome
}

fn invoke_error(mut e: InvokeError) -> RuntimeError {
    e.logs = log_tail(std::mem::take(&mut e.logs));
    e
}
