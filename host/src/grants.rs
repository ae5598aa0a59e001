//! Capabilities granted to one invocation: `/etc` access, the docker socket, the
//! containerd (CRI) socket, the task's registry credentials and the system bus socket
//! with the plugin's systemd declaration.
//!
//! Deny by default: `Grants::default()` gives nothing. This module only describes grants;
//! each capability builds its per-call state from them (`capability/`, prepare phase),
//! and nothing here may widen one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hostplug_api::plugin::EtcScope;
use hostplug_api::registry_auth::RegistryCredentials;
use hostplug_api::systemd::SystemdCapability;

use crate::EtcAccess;

/// What one invocation may reach on the node. Everything not granted here is denied:
/// there are no other preopens, no environment, no arguments, no sockets and no
/// inherited stdio.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Access to `/etc`.
    pub etc: EtcAccess,
    /// The host directory shown as `/etc` when `etc` is not `None` (the worker's
    /// hostPath mount of the node's /etc).
    pub etc_dir: Option<PathBuf>,
    /// The /etc paths this call may reach (the HostPlugin's `etcPaths`, the policies'
    /// `spec.etc`) and the sensitive paths its HostPlugin allows; `None`: all of /etc
    /// outside the host's sensitive paths. Enforced with the sensitive-path list on
    /// every path the plugin uses.
    pub etc_scope: Option<EtcScope>,
    /// The docker socket the docker import talks to; `None` denies every docker call.
    pub docker: Option<PathBuf>,
    /// Docker and containerd for reads only (list, inspect; no pull, tag, remove, push,
    /// load or save): the call is a dry run or its method does not declare itself
    /// mutating, as the operator decided (the worker's profile or the call's access
    /// says so). A dry run is read-only anyway.
    pub image_reads_only: bool,
    /// The node's image archive directory (as mounted) for the docker import's
    /// `save-archive` and `load-archive`; only used with `docker`. `None` refuses both.
    pub image_archives: Option<PathBuf>,
    /// The task's registry credentials for the `registry-auth` import; `None` answers
    /// `none` for every registry. Set per call (the worker's are fixed at start, these
    /// come with each request). `Debug` shows registries only.
    pub registry_auth: Option<Arc<RegistryCredentials>>,
    /// The containerd socket the containerd import (CRI image service) talks to; `None`
    /// denies every containerd call.
    pub containerd: Option<PathBuf>,
    /// The system bus socket and what the plugin's HostPlugin declares for systemd;
    /// `None` denies every systemd call.
    pub systemd: Option<SystemdGrant>,
}

/// The systemd capability of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdGrant {
    /// The D-Bus system bus socket (the worker's mount of the node's).
    pub socket: PathBuf,
    /// The unit patterns and actions the plugin's HostPlugin declares.
    pub capability: SystemdCapability,
    /// Only `status` reaches systemd: the call's method does not declare itself
    /// mutating (its worker's profile says `read`). A dry run is read-only anyway.
    pub read_only: bool,
}

impl Grants {
    /// No access at all (what `describe` always gets).
    pub fn none() -> Self {
        Self::default()
    }

    /// Access to `dir` as `/etc` with `access`.
    pub fn etc(dir: impl AsRef<Path>, access: EtcAccess) -> Self {
        Self {
            etc: access,
            etc_dir: Some(dir.as_ref().to_path_buf()),
            ..Self::default()
        }
    }

    /// These grants plus the docker socket at `socket`.
    pub fn with_docker(mut self, socket: impl AsRef<Path>) -> Self {
        self.docker = Some(socket.as_ref().to_path_buf());
        self
    }

    /// These grants plus the image archive directory `dir` (with `docker`).
    pub fn with_image_archives(mut self, dir: impl AsRef<Path>) -> Self {
        self.image_archives = Some(dir.as_ref().to_path_buf());
        self
    }

    /// These grants plus registry credentials for the `registry-auth` import.
    pub fn with_registry_auth(mut self, credentials: Arc<RegistryCredentials>) -> Self {
        self.registry_auth = Some(credentials);
        self
    }

    /// These grants plus the system bus socket at `socket` for `capability`'s units and
    /// actions (`read_only`: only `status`).
    pub fn with_systemd(
        mut self,
        socket: impl AsRef<Path>,
        capability: SystemdCapability,
        read_only: bool,
    ) -> Self {
        self.systemd = Some(SystemdGrant {
            socket: socket.as_ref().to_path_buf(),
            capability,
            read_only,
        });
        self
    }

    /// These grants with docker and containerd for reads only.
    pub fn with_image_reads_only(mut self) -> Self {
        self.image_reads_only = true;
        self
    }

    /// These grants with /etc narrowed (and sensitive paths allowed) by `scope`.
    pub fn with_etc_scope(mut self, scope: EtcScope) -> Self {
        self.etc_scope = Some(scope);
        self
    }

    /// These grants plus the containerd socket at `socket`.
    pub fn with_containerd(mut self, socket: impl AsRef<Path>) -> Self {
        self.containerd = Some(socket.as_ref().to_path_buf());
        self
    }
}
