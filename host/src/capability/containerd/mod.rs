//! The `containerd` capability: the `containerd` import, the CRI image service
//! (`runtime.v1.ImageService`) of the node's containerd over its Unix socket, with its
//! policy and limits.
//!
//! What a plugin can do through it is image management only: `ListImages`,
//! `ImageStatus`, `PullImage`, `RemoveImage`, `ImageFsInfo`, and `ListContainers` read for
//! which images are in use. The CRI messages of exactly those calls are written out in
//! [`cri`] (field numbers from the `runtime.v1` proto); the host holds no client code for
//! any other CRI call — no sandbox, container, exec, attach or port-forward — so no
//! plugin input can reach one.
//!
//! * `cri.rs`: the CRI messages of those calls.
//! * `client.rs`: [`ContainerdClient`], one gRPC call per import call, checked first.
//! * here: the policy, the image types and the import itself.
//!
//! It must never reach anything but the configured socket, never send a mutating call
//! (pull, remove) in a dry run, and never log or return registry credentials.

pub mod cri;

mod client;

use std::time::{Duration, Instant};

pub use client::ContainerdClient;
use wasmtime::component::{HasSelf, Linker};

use super::{Call, CapabilityError};
use crate::bindings::hostplug::plugin::containerd as wit;
use crate::{Error, Result};

/// Default time limit of one containerd call: 120 s (pulling a large image over a slow
/// link). A call never runs past the invocation's deadline either.
pub const DEFAULT_CONTAINERD_TIMEOUT: Duration = Duration::from_secs(120);

/// Default cap on one decoded gRPC response: 16 MiB. An image list of a busy node (a few
/// hundred images with their names and digests) is well under 1 MiB.
pub const DEFAULT_CONTAINERD_MAX_RESPONSE_BYTES: usize = 16 << 20;

/// The containerd namespace CRI works in. The kubelet's images live there; CRI offers no
/// way to choose another, so a plugin never sees `ctr`'s `default` namespace or others.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// What the containerd import may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdPolicy {
    /// Time limit of one call (also bounded by the invocation's deadline).
    pub timeout: Duration,
    /// Cap on a decoded response, in bytes.
    pub max_response_bytes: usize,
}

impl Default for ContainerdPolicy {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_CONTAINERD_TIMEOUT,
            max_response_bytes: DEFAULT_CONTAINERD_MAX_RESPONSE_BYTES,
        }
    }
}

impl ContainerdPolicy {
    /// Checks the policy itself; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err("containerd policy timeout: must be more than zero".to_owned());
        }
        if self.max_response_bytes < 4096 {
            return Err(format!(
                "containerd policy max_response_bytes {}: at least 4096",
                self.max_response_bytes
            ));
        }
        Ok(())
    }
}

/// An image as the runtime describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    /// Image ID, `sha256:…`.
    pub id: String,
    /// Names (`repo:tag`).
    pub repo_tags: Vec<String>,
    /// Registry digests (`repo@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// Pinned by the runtime (e.g. the sandbox image).
    pub pinned: bool,
    /// User name the image runs as, when it names one.
    pub username: String,
    /// Uid the image runs as, when it gives a number.
    pub uid: Option<i64>,
}

/// Registry credentials of one pull (CRI's `AuthConfig`). `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AuthConfig {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// base64 of `username:password`.
    pub auth: String,
    /// The registry these are for.
    pub server_address: String,
    /// An OAuth identity token.
    pub identity_token: String,
    /// A bearer token for the registry.
    pub registry_token: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

/// Usage of a file system that holds images.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilesystemUsage {
    /// Where it is mounted.
    pub mountpoint: String,
    /// Bytes used by images, when the runtime knows.
    pub used_bytes: Option<u64>,
    /// Inodes used by images, when the runtime knows.
    pub inodes_used: Option<u64>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A container's use of an image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageUse {
    /// Container ID.
    pub container_id: String,
    /// Container name (from its metadata).
    pub container_name: String,
    /// The image the container was created from.
    pub image: String,
    /// The image the container runs (an ID or a digest reference).
    pub image_ref: String,
}

impl From<cri::Image> for Image {
    fn from(i: cri::Image) -> Self {
        Self {
            id: i.id,
            repo_tags: i.repo_tags,
            repo_digests: i.repo_digests,
            size: i.size,
            pinned: i.pinned,
            username: i.username,
            uid: i.uid.map(|u| u.value),
        }
    }
}

/// The containerd capability's state for one call: the client when the call was granted
/// the socket, and when the call must end.
#[derive(Debug)]
pub(crate) struct ContainerdState {
    client: Option<ContainerdClient>,
    deadline: Instant,
}

impl ContainerdState {
    /// Prepare phase: a client of the granted socket under the host's policy (no pull or
    /// remove in a dry run or when the grant says reads only); none without a grant.
    pub(crate) fn prepare(call: &Call<'_>) -> Self {
        let read_only = call.dry_run || call.grants.image_reads_only;
        let client =
            call.grants.containerd.as_deref().map(|socket| {
                ContainerdClient::new(socket, call.config.containerd.clone(), read_only)
            });
        Self {
            client,
            deadline: call.deadline,
        }
    }

    fn client(&self) -> Result<&ContainerdClient, CapabilityError> {
        self.client
            .as_ref()
            .ok_or_else(|| CapabilityError::denied("this plugin has no containerd capability"))
    }
}

impl From<Image> for wit::Image {
    fn from(i: Image) -> Self {
        Self {
            id: i.id,
            repo_tags: i.repo_tags,
            repo_digests: i.repo_digests,
            size: i.size,
            pinned: i.pinned,
            username: i.username,
            uid: i.uid,
        }
    }
}

impl From<wit::AuthConfig> for AuthConfig {
    fn from(a: wit::AuthConfig) -> Self {
        Self {
            username: a.username,
            password: a.password,
            auth: a.auth,
            server_address: a.server_address,
            identity_token: a.identity_token,
            registry_token: a.registry_token,
        }
    }
}

/// The `containerd` import: refused without the capability, otherwise the client of
/// this call (policy, dry-run rule, deadline).
impl wit::Host for ContainerdState {
    fn list_images(
        &mut self,
        filter: Option<String>,
    ) -> Result<Vec<wit::Image>, wit::CapabilityError> {
        self.client()
            .and_then(|c| c.list_images(filter.as_deref(), self.deadline))
            .map(|v| v.into_iter().map(Into::into).collect())
            .map_err(Into::into)
    }

    fn image_status(&mut self, image: String) -> Result<Option<wit::Image>, wit::CapabilityError> {
        self.client()
            .and_then(|c| c.image_status(&image, self.deadline))
            .map(|i| i.map(Into::into))
            .map_err(Into::into)
    }

    fn pull_image(
        &mut self,
        image: String,
        auth: Option<wit::AuthConfig>,
    ) -> Result<String, wit::CapabilityError> {
        let auth = auth.map(AuthConfig::from);
        self.client()
            .and_then(|c| c.pull_image(&image, auth.as_ref(), self.deadline))
            .map_err(Into::into)
    }

    fn remove_image(&mut self, image: String) -> Result<(), wit::CapabilityError> {
        self.client()
            .and_then(|c| c.remove_image(&image, self.deadline))
            .map_err(Into::into)
    }

    fn image_fs_info(&mut self) -> Result<Vec<wit::FilesystemUsage>, wit::CapabilityError> {
        self.client()
            .and_then(|c| c.image_fs_info(self.deadline))
            .map(|v| {
                v.into_iter()
                    .map(|f| wit::FilesystemUsage {
                        mountpoint: f.mountpoint,
                        used_bytes: f.used_bytes,
                        inodes_used: f.inodes_used,
                        timestamp: f.timestamp,
                    })
                    .collect()
            })
            .map_err(Into::into)
    }

    fn images_in_use(&mut self) -> Result<Vec<wit::ImageUse>, wit::CapabilityError> {
        self.client()
            .and_then(|c| c.images_in_use(self.deadline))
            .map(|v| {
                v.into_iter()
                    .map(|u| wit::ImageUse {
                        container_id: u.container_id,
                        container_name: u.container_name,
                        image: u.image,
                        image_ref: u.image_ref,
                    })
                    .collect()
            })
            .map_err(Into::into)
    }
}

/// Link phase: the `containerd` import, on the state `state` projects out of the
/// store's data.
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    state: fn(&mut T) -> &mut ContainerdState,
) -> Result<()> {
    wit::add_to_linker::<T, HasSelf<ContainerdState>>(linker, state)
        .map_err(|e| Error::Engine(format!("linking the containerd import: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_validation_names_the_field() {
        let p = ContainerdPolicy {
            timeout: Duration::ZERO,
            ..ContainerdPolicy::default()
        };
        assert!(p.validate().expect_err("zero").contains("timeout"));
        assert_eq!(ContainerdPolicy::default().validate(), Ok(()));
    }
}
