//! [`HostRuntime`]: the [`PluginRuntime`] over `hostplug-host`, with this worker's grants.
//!
//! Precompiled artifacts are loaded only with a signature that verifies with the
//! operator's key from the settings (`HOSTPLUG_ARTIFACT_KEY`); without one set, none.
//!
//! The grants are fixed at start-up from the settings (the Pod mounts what the calls of
//! its access profile may touch); no request can widen them. A request may narrow them:
//! each call carries its own access profile, and a call runs with the intersection (a
//! worker serving a call and its follow-ups has the union of their profiles, and each
//! call gets only its own plugin's). The per-call additions are the task's registry
//! credentials, which the operator sends inside the invoke request only for plugins
//! that declare `registryAuth`, and the plugin's systemd declaration (units, actions),
//! granted only when this worker's Pod has the system bus socket, for reads only when
//! its profile (or the call's) says `read`. Docker and containerd are for reads only
//! unless both the Pod's profile and the call's access allow image writes. A call's
//! /etc scope (paths) only narrows; the sensitive paths it allows are honoured only by
//! a Pod made for them (`HOSTPLUG_ETC_SENSITIVE`).
//! The host speaks the protocol's types ([`InvokeOutcome`], [`InvokeError`]); this
//! module only cuts their logs to the tail an answer carries.

use std::sync::Arc;
use std::time::Duration;

use hostplug_api::call::AccessProfile;
use hostplug_api::protocol::log_tail;
use hostplug_api::systemd::SystemdAccess;
use hostplug_api::{ErrorKind, EtcAccess, InvokeError, InvokeOutcome};
use hostplug_host::{ArtifactKey, Grants, Host, HostConfig, Invocation, SystemdGrant};

use crate::config::WorkerSettings;
use crate::error::{Error, Result};
use crate::runtime::{
    ArtifactSignature, Call, ChangeRecord, Digest, Loaded, PluginRuntime, Restored, RevertError,
    RuntimeError,
};

/// The plugin runtime of a real worker: one [`Host`] (engine, in-memory and on-disk
/// component cache), the grants of this worker, and the operator's key that precompiled
/// artifacts must be signed with.
#[derive(Debug, Clone)]
pub struct HostRuntime {
    host: Host,
    grants: Arc<Grants>,
    artifact_key: Option<ArtifactKey>,
    /// The system bus socket as mounted; `None`: no systemd for any call.
    systemd_socket: Option<std::path::PathBuf>,
    /// What this worker's profile allows through systemd (`read`: a dry run or a method
    /// that does not declare itself mutating).
    systemd_access: SystemdAccess,
    /// Whether this worker's Pod was made for calls allowed sensitive /etc paths.
    etc_sensitive: bool,
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
            // The Pod's profile: image writes only in a Pod made for them.
            image_reads_only: !config.image_writes,
            // Per call: the units and actions come with each request.
            systemd: None,
            // Per call: the paths come with each request.
            etc_scope: None,
        };
        Ok(Self {
            host,
            grants: Arc::new(grants),
            artifact_key: config.artifact_key,
            systemd_socket: config.systemd_socket.clone(),
            systemd_access: config.systemd_access,
            etc_sensitive: config.etc_sensitive,
        })
    }

    /// The underlying host.
    pub fn host(&self) -> &Host {
        &self.host
    }
}

impl HostRuntime {
    /// The grants of `call` when they differ from the worker's fixed ones (`None`:
    /// those alone). A call narrows them to its own access; its registry credentials
    /// and its plugin's systemd declaration come with it — systemd only where the Pod
    /// has the bus socket, for reads only when the worker's profile or the call's says
    /// `read`.
    fn call_grants(&self, call: &Call) -> Option<Grants> {
        let systemd_access = match call.access {
            Some(access) => self.systemd_access.min(access.systemd),
            None => self.systemd_access,
        };
        let systemd = match (&self.systemd_socket, &call.systemd, systemd_access) {
            (_, _, SystemdAccess::None) | (None, _, _) | (_, None, _) => None,
            (Some(socket), Some(capability), access) => Some(SystemdGrant {
                socket: socket.clone(),
                capability: capability.clone(),
                read_only: access != SystemdAccess::Manage,
            }),
        };
        // Narrowing only: sensitive allowances need a Pod made for them.
        let etc_scope = call.etc_scope.clone().map(|mut scope| {
            if !self.etc_sensitive {
                scope.allow_sensitive.clear();
            }
            scope
        });
        if call.registry_auth.is_none()
            && call.access.is_none()
            && systemd.is_none()
            && etc_scope.is_none()
        {
            return None;
        }
        let mut g = match call.access {
            Some(access) => narrowed(&self.grants, access),
            None => (*self.grants).clone(),
        };
        g.registry_auth = call.registry_auth.clone();
        g.systemd = systemd;
        g.etc_scope = etc_scope.filter(|_| g.etc != EtcAccess::None);
        Some(g)
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
        self.invoke_recorded(digest, call).0
    }

    fn restore(&self, record: &ChangeRecord, force: bool) -> Result<Restored, RevertError> {
        match (&self.grants.etc, &self.grants.etc_dir) {
            (EtcAccess::Write, Some(dir)) => hostplug_host::revert::restore(dir, record, force),
            _ => Err(RevertError::NotRevertible(
                "this worker has no write access to /etc".into(),
            )),
        }
    }

    fn invoke_recorded(
        &self,
        digest: &Digest,
        call: &Call,
    ) -> (Result<InvokeOutcome, RuntimeError>, Option<ChangeRecord>) {
        let Some(plugin) = self.host.cached(digest) else {
            return (
                Err(RuntimeError::new(
                    ErrorKind::UnknownPlugin,
                    format!("this worker does not hold plugin {digest}; upload it first"),
                )),
                None,
            );
        };
        let invocation = Invocation {
            method: call.method.clone(),
            params: call.params.clone(),
            dry_run: call.dry_run,
            deadline: Some(call.timeout),
        };
        let per_call;
        let grants = match self.call_grants(call) {
            None => &*self.grants,
            Some(g) => {
                per_call = g;
                &per_call
            }
        };
        let (result, record) = plugin.invoke_recorded(&invocation, grants);
        (result.map(response).map_err(invoke_error), record)
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
        // Reads only when either says so.
        image_reads_only: grants.image_reads_only || !access.image_writes,
        // Per call, from the request (`HostRuntime::call_grants`).
        systemd: None,
        etc_scope: grants.etc_scope.clone(),
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

#[cfg(test)]
mod systemd_tests {
    use std::path::{Path, PathBuf};

    use hostplug_api::systemd::{SystemdAction, SystemdCapability};

    use super::*;

    fn settings(cache: &Path, socket: Option<PathBuf>, access: SystemdAccess) -> WorkerSettings {
        WorkerSettings {
            listen: "127.0.0.1:0".into(),
            tls_cert: "/c".into(),
            tls_key: "/k".into(),
            token_file: "/t".into(),
            etc_dir: "/nonexistent".into(),
            etc_access: EtcAccess::None,
            etc_sensitive: false,
            docker_socket: None,
            containerd_socket: None,
            systemd_socket: socket,
            systemd_access: access,
            image_writes: false,
            cache_dir: cache.to_path_buf(),
            artifact_key: None,
            node_lock_file: None,
            log_format: hostplug_api::LogFormat::Text,
            limits: hostplug_api::worker::Limits::default(),
        }
    }

    fn call(method: &str, systemd: Option<SystemdCapability>) -> Call {
        Call {
            method: method.into(),
            params: r#"{"unit":"hostplug-demo.service"}"#.into(),
            dry_run: false,
            timeout: Duration::from_secs(10),
            registry_auth: None,
            systemd,
            access: None,
            etc_scope: None,
        }
    }

    /// The systemd declaration of a request is granted only by a worker whose Pod has
    /// the bus socket, and for reads only when its profile says `read`: the request
    /// cannot widen what the Pod was made with.
    #[test]
    fn the_request_declares_units_the_pod_decides_the_socket() {
        let module = std::env::var_os("HOSTPLUG_PLUGIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
            .join("systemd-unit.wasm");
        let Ok(bytes) = std::fs::read(&module) else {
            panic!("{} is missing: run `make plugins` first", module.display());
        };
        let digest = Digest::of(&bytes);
        let cache = tempfile::tempdir().expect("tempdir");
        let declared = Some(SystemdCapability {
            units: vec!["hostplug-*.service".into()],
            actions: vec![SystemdAction::Status, SystemdAction::Restart],
        });
        let socket = cache.path().join("no-bus/system_bus_socket");

        // No socket in the Pod: whatever the request says, no systemd.
        let rt =
            HostRuntime::new(&settings(cache.path(), None, SystemdAccess::None)).expect("runtime");
        rt.load(&digest, &bytes).expect("load");
        let e = rt
            .invoke(&digest, &call("status", declared.clone()))
            .expect_err("no socket");
        assert!(e.message.contains("no systemd capability"), "{e:?}");

        // A socket but no declaration in the request: no systemd either.
        let rt = HostRuntime::new(&settings(
            cache.path(),
            Some(socket.clone()),
            SystemdAccess::Manage,
        ))
        .expect("runtime");
        rt.load(&digest, &bytes).expect("load");
        let e = rt
            .invoke(&digest, &call("status", None))
            .expect_err("undeclared");
        assert!(e.message.contains("no systemd capability"), "{e:?}");
        // The profile decides reads only or the declared actions.
        for (access, read_only) in [(SystemdAccess::Read, true), (SystemdAccess::Manage, false)] {
            let rt = HostRuntime::new(&settings(cache.path(), Some(socket.clone()), access))
                .expect("runtime");
            let grant = rt
                .call_grants(&call("restart", declared.clone()))
                .and_then(|g| g.systemd)
                .expect("a systemd grant");
            assert_eq!(grant.read_only, read_only, "{access}");
            assert_eq!(grant.socket, socket);
            assert_eq!(Some(grant.capability), declared);
            assert_eq!(rt.call_grants(&call("restart", None)), None, "{access}");
        }
        // A call narrows the worker's systemd access to its own (a follow-up of another
        // plugin on a worker with the union profile): `read` or none, never more.
        let rt = HostRuntime::new(&settings(
            cache.path(),
            Some(socket.clone()),
            SystemdAccess::Manage,
        ))
        .expect("runtime");
        for (own, expected) in [
            (SystemdAccess::Manage, Some(false)),
            (SystemdAccess::Read, Some(true)),
            (SystemdAccess::None, None),
        ] {
            let mut c = call("restart", declared.clone());
            c.access = Some(hostplug_api::call::AccessProfile {
                systemd: own,
                ..Default::default()
            });
            let grant = rt.call_grants(&c).and_then(|g| g.systemd);
            assert_eq!(grant.map(|g| g.read_only), expected, "{own}");
        }
        // Both: the grant reaches the host, which looks for the socket.
        let e = rt
            .invoke(&digest, &call("status", declared.clone()))
            .expect_err("the socket does not exist");
        assert!(e.message.contains("system bus socket"), "{e:?}");
    }

    /// Issue 21: the request narrows, never widens. Image writes need both the Pod's
    /// profile and the call's access; sensitive allowances need a Pod made for them;
    /// the path scope is passed on where the call has /etc.
    #[test]
    fn a_request_narrows_image_writes_and_sensitive_allowances_need_the_pod() {
        let cache = tempfile::tempdir().expect("tempdir");
        let etc = tempfile::tempdir().expect("tempdir");
        let pod = |image_writes: bool, etc_sensitive: bool| {
            let mut s = settings(cache.path(), None, SystemdAccess::None);
            s.docker_socket = Some(cache.path().join("docker.sock"));
            s.image_writes = image_writes;
            s.etc_access = EtcAccess::Read;
            s.etc_dir = etc.path().to_path_buf();
            s.etc_sensitive = etc_sensitive;
            HostRuntime::new(&s).expect("runtime")
        };
        let access = |image_writes: bool| AccessProfile {
            etc: EtcAccess::Read,
            docker: true,
            image_writes,
            ..AccessProfile::default()
        };
        let grants =
            |rt: &HostRuntime, c: &Call| rt.call_grants(c).unwrap_or_else(|| (*rt.grants).clone());
        let mut c = call("list", None);
        // A Pod made for reads only: reads only, whatever the request says.
        c.access = Some(access(true));
        assert!(grants(&pod(false, false), &c).image_reads_only);
        c.access = None;
        assert!(grants(&pod(false, false), &c).image_reads_only);
        // A Pod made for writes: the call's own access decides.
        c.access = Some(access(false));
        assert!(grants(&pod(true, false), &c).image_reads_only);
        c.access = Some(access(true));
        assert!(!grants(&pod(true, false), &c).image_reads_only);

        let scope = hostplug_api::plugin::EtcScope {
            read: vec![vec!["chrony.conf".into()]],
            allow_sensitive: vec!["rancher/k3s/k3s.yaml".into()],
            ..Default::default()
        };
        c.etc_scope = Some(scope.clone());
        let g = grants(&pod(true, false), &c);
        assert_eq!(
            g.etc_scope.as_ref().map(|s| s.read.clone()),
            Some(scope.read.clone()),
            "the narrowing holds"
        );
        assert_eq!(
            g.etc_scope.map(|s| s.allow_sensitive),
            Some(vec![]),
            "an ordinary Pod drops the allowance"
        );
        let g = grants(&pod(true, true), &c);
        assert_eq!(g.etc_scope, Some(scope), "a Pod made for it honours it");
    }
}
