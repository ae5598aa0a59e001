//! The CRI image service as the plugin uses it, behind [`Runtime`].
//!
//! In the component the runtime is the host's `containerd` import ([`HostRuntime`]);
//! unit tests plug in an in-memory one. [`Node`] splits the calls in two: reads, and
//! mutations (pull, remove), which refuse to go out in a dry run. The host refuses them
//! too; this is the plugin's own line, so a dry run never even asks.

use hostplug_sdk::containerd::{self, AuthConfig};
use hostplug_sdk::{Error, Result};
use serde::Serialize;

/// An image as the plugin reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Image ID, `sha256:…`.
    pub id: String,
    /// Names (`repo:tag`).
    pub repo_tags: Vec<String>,
    /// Registry digests (`repo@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// Pinned by the runtime (e.g. the sandbox image): never pruned.
    pub pinned: bool,
}

impl From<containerd::Image> for Image {
    fn from(i: containerd::Image) -> Self {
        Self {
            id: i.id,
            repo_tags: i.repo_tags,
            repo_digests: i.repo_digests,
            size: i.size,
            pinned: i.pinned,
        }
    }
}

/// A container's use of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageUse {
    /// Container ID.
    pub container_id: String,
    /// Container name.
    pub container_name: String,
    /// What the container was created from (reference or ID).
    pub image: String,
    /// The image it runs (ID or digest reference).
    pub image_ref: String,
}

impl ImageUse {
    /// Whether this container uses `image`.
    pub fn uses(&self, image: &Image) -> bool {
        let names = |r: &str| {
            r == image.id
                || image.repo_tags.iter().any(|t| t == r)
                || image.repo_digests.iter().any(|d| d == r)
        };
        (!self.image_ref.is_empty() && names(&self.image_ref))
            || (!self.image.is_empty() && names(&self.image))
    }
}

/// Usage of an image file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemUsage {
    /// Where it is mounted.
    pub mountpoint: String,
    /// Bytes used by images (null when the runtime does not say).
    pub used_bytes: Option<u64>,
    /// Inodes used by images (null when the runtime does not say).
    pub inodes_used: Option<u64>,
}

/// The CRI image calls the plugin makes.
pub trait Runtime {
    /// Every image, or those `filter` names.
    fn list(&self, filter: Option<&str>) -> Result<Vec<Image>>;
    /// The image `image` names, or `None`.
    fn status(&self, image: &str) -> Result<Option<Image>>;
    /// Pulls `image`; returns the image reference the runtime reports.
    fn pull(&self, image: &str, auth: Option<&AuthConfig>) -> Result<String>;
    /// Removes the image `image` names.
    fn remove(&self, image: &str) -> Result<()>;
    /// Every container and the image it uses.
    fn in_use(&self) -> Result<Vec<ImageUse>>;
    /// The image file systems.
    fn filesystems(&self) -> Result<Vec<FilesystemUsage>>;
}

/// The host's `containerd` import.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostRuntime;

impl Runtime for HostRuntime {
    fn list(&self, filter: Option<&str>) -> Result<Vec<Image>> {
        Ok(containerd::list_images(filter)?
            .into_iter()
            .map(Image::from)
            .collect())
    }

    fn status(&self, image: &str) -> Result<Option<Image>> {
        Ok(containerd::image_status(image)?.map(Image::from))
    }

    fn pull(&self, image: &str, auth: Option<&AuthConfig>) -> Result<String> {
        containerd::pull_image(image, auth)
    }

    fn remove(&self, image: &str) -> Result<()> {
        containerd::remove_image(image)
    }

    fn in_use(&self) -> Result<Vec<ImageUse>> {
        Ok(containerd::images_in_use()?
            .into_iter()
            .map(|u| ImageUse {
                container_id: u.container_id,
                container_name: u.container_name,
                image: u.image,
                image_ref: u.image_ref,
            })
            .collect())
    }

    fn filesystems(&self) -> Result<Vec<FilesystemUsage>> {
        Ok(containerd::image_fs_info()?
            .into_iter()
            .map(|f| FilesystemUsage {
                mountpoint: f.mountpoint,
                used_bytes: f.used_bytes,
                inodes_used: f.inodes_used,
            })
            .collect())
    }
}

/// A runtime for one call: reads always, mutations only outside a dry run.
#[derive(Debug)]
pub struct Node<'a, R: Runtime> {
    runtime: &'a R,
    dry_run: bool,
}

impl<'a, R: Runtime> Node<'a, R> {
    /// The node's runtime for a call that is a dry run or not.
    pub fn new(runtime: &'a R, dry_run: bool) -> Self {
        Self { runtime, dry_run }
    }

    /// Whether this call is a dry run.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Every image, or those `filter` names.
    pub fn list(&self, filter: Option<&str>) -> Result<Vec<Image>> {
        self.runtime.list(filter)
    }

    /// The image `image` names, or `None`.
    pub fn status(&self, image: &str) -> Result<Option<Image>> {
        self.runtime.status(image)
    }

    /// Every container and the image it uses.
    pub fn in_use(&self) -> Result<Vec<ImageUse>> {
        self.runtime.in_use()
    }

    /// The image file systems.
    pub fn filesystems(&self) -> Result<Vec<FilesystemUsage>> {
        self.runtime.filesystems()
    }

    fn refuse_in_dry_run(&self, what: &str) -> Result<()> {
        if self.dry_run {
            Err(Error::failed(format!(
                "internal: {what} in a dry run (a method must plan, not act)"
            )))
        } else {
            Ok(())
        }
    }

    /// Pulls `image` (never in a dry run).
    pub fn pull(&self, image: &str, auth: Option<&AuthConfig>) -> Result<String> {
        self.refuse_in_dry_run("pull")?;
        self.runtime.pull(image, auth)
    }

    /// Removes `image` (never in a dry run).
    pub fn remove(&self, image: &str) -> Result<()> {
        self.refuse_in_dry_run("remove")?;
        self.runtime.remove(image)
    }
}
