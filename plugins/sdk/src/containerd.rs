//! A thin wrapper over the host's `containerd` import: the CRI image service of the
//! node's containerd (the images the kubelet uses, namespace `k8s.io`).
//!
//! The import only works for plugins whose HostPlugin grants the `containerd`
//! capability; otherwise every call fails with [`Error::Denied`](crate::Error::Denied).
//! It offers image operations only (list, status, pull, remove, file-system usage) and a
//! read of which images containers use; in a dry run the host refuses pull and remove.
//! The host's typed errors map by kind ([`Error::from_capability`]), each message led by
//! `containerd:`.

use crate::{Error, Result};

/// An image as the runtime describes it.
pub use crate::bindings::hostplug::plugin::containerd::Image;

/// Registry credentials of one pull (CRI's `AuthConfig`).
pub use crate::bindings::hostplug::plugin::containerd::AuthConfig;

/// Usage of a file system that holds images.
pub use crate::bindings::hostplug::plugin::containerd::FilesystemUsage;

/// A container's use of an image.
pub use crate::bindings::hostplug::plugin::containerd::ImageUse;

/// The service a containerd error names.
const SERVICE: &str = "containerd";

/// A host refusal or failure as the SDK's error, by its kind (see
/// [`Error::from_capability`]).
fn import_error(err: crate::CapabilityError) -> Error {
    Error::from_capability(SERVICE, err)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::*;
    use crate::bindings::hostplug::plugin::containerd as host;

    pub fn list_images(filter: Option<&str>) -> Result<Vec<Image>> {
        host::list_images(filter).map_err(import_error)
    }
    pub fn image_status(image: &str) -> Result<Option<Image>> {
        host::image_status(image).map_err(import_error)
    }
    pub fn pull_image(image: &str, auth: Option<&AuthConfig>) -> Result<String> {
        host::pull_image(image, auth).map_err(import_error)
    }
    pub fn remove_image(image: &str) -> Result<()> {
        host::remove_image(image).map_err(import_error)
    }
    pub fn image_fs_info() -> Result<Vec<FilesystemUsage>> {
        host::image_fs_info().map_err(import_error)
    }
    pub fn images_in_use() -> Result<Vec<ImageUse>> {
        host::images_in_use().map_err(import_error)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::*;

    fn outside() -> Error {
        import_error(crate::CapabilityError::Denied(
            "the containerd import exists only inside the hostplug host".into(),
        ))
    }
    pub fn list_images(_: Option<&str>) -> Result<Vec<Image>> {
        Err(outside())
    }
    pub fn image_status(_: &str) -> Result<Option<Image>> {
        Err(outside())
    }
    pub fn pull_image(_: &str, _: Option<&AuthConfig>) -> Result<String> {
        Err(outside())
    }
    pub fn remove_image(_: &str) -> Result<()> {
        Err(outside())
    }
    pub fn image_fs_info() -> Result<Vec<FilesystemUsage>> {
        Err(outside())
    }
    pub fn images_in_use() -> Result<Vec<ImageUse>> {
        Err(outside())
    }
}

/// Every image, or those `filter` (a reference) names.
pub fn list_images(filter: Option<&str>) -> Result<Vec<Image>> {
    imp::list_images(filter)
}

/// The image `image` (a reference or an ID) names, or `None`.
pub fn image_status(image: &str) -> Result<Option<Image>> {
    imp::image_status(image)
}

/// Pulls `image`, with `auth` when the registry needs credentials; returns the runtime's
/// image reference (the image ID). Refused by the host in a dry run.
pub fn pull_image(image: &str, auth: Option<&AuthConfig>) -> Result<String> {
    imp::pull_image(image, auth)
}

/// Removes the image `image` names; a missing image is not an error. Refused by the host
/// in a dry run.
pub fn remove_image(image: &str) -> Result<()> {
    imp::remove_image(image)
}

/// The file systems images are stored on.
pub fn image_fs_info() -> Result<Vec<FilesystemUsage>> {
    imp::image_fs_info()
}

/// Every container (any state) and the image it uses.
pub fn images_in_use() -> Result<Vec<ImageUse>> {
    imp::images_in_use()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outside the host every call is refused, as `denied`, naming the service.
    #[test]
    fn outside_the_host_calls_are_denied() {
        let e = list_images(None).expect_err("outside the host");
        assert_eq!(e.kind(), "denied");
        assert!(e.message().starts_with("containerd: "), "{e}");
    }
}
