//! Where the real nodes' binaries and images are: the one place that knows.
//!
//! `tests/nodes/build.sh` builds kubelet, containerd, ctr, the runc shim, the CNI plugins
//! and the pause image into
//! `${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/nodes/k8s-<v>-containerd-<v>-cni-<v>/bin/`,
//! and the busybox test image into `…/nodes/images/busybox.tar`. `HOSTPLUG_NODES_BIN`
//! points at another bin directory when set. runc is the machine's (Debian's package).

use std::path::{Path, PathBuf};

use crate::controlplane::K8S_VERSION;
use crate::controlplane::binaries::cache_root;
use crate::{Error, Result};

/// The containerd release; keep in step with `tests/nodes/build.sh` (a unit test checks).
pub const CONTAINERD_VERSION: &str = "2.4.2";

/// The CNI plugins release; keep in step with `tests/nodes/build.sh`.
pub const CNI_VERSION: &str = "1.10.0";

/// Overrides the directory holding the node binaries.
pub const BIN_ENV: &str = "HOSTPLUG_NODES_BIN";

/// The image every Pod sandbox runs (built by build.sh, imported into each node).
pub const PAUSE_IMAGE: &str = "hostplug.test/pause:1";

/// A tiny image with Debian's static busybox (`/bin/sh` and the applets), for tests.
/// Imported into every real node at start; use it with `imagePullPolicy: Never`.
pub const TEST_IMAGE: &str = "hostplug.test/busybox:1";

/// What must be in the bin directory.
const REQUIRED: [&str; 10] = [
    "kubelet",
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
    "pause.tar",
    "cni/bridge",
    "cni/host-local",
    "cni/loopback",
    "cni/portmap",
    ".build-complete",
];

/// The located binaries of a real node.
#[derive(Debug, Clone)]
pub struct NodeBinaries {
    dir: PathBuf,
    test_image: PathBuf,
    runc: PathBuf,
}

impl NodeBinaries {
    /// Finds the binaries (see the module docs) and checks that all are there.
    pub fn locate() -> Result<Self> {
        let dir = match std::env::var_os(BIN_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => default_bin_dir(),
        };
        let mut missing: Vec<String> = REQUIRED
            .iter()
            .filter(|b| !dir.join(b).exists())
            .map(|b| (*b).to_owned())
            .collect();
        let test_image = cache_root().join("nodes/images/busybox.tar");
        if !test_image.exists() {
            missing.push(test_image.display().to_string());
        }
        let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file());
        let Some(runc) = runc else {
            missing.push("runc (the Debian package)".into());
            return Err(binaries_missing(dir, &missing));
        };
        for tool in ["/usr/bin/nsenter", "/usr/bin/unshare"] {
            if !Path::new(tool).is_file() {
                missing.push(tool.into());
            }
        }
        if ip_command().is_none() {
            missing.push("ip (iproute2)".into());
        }
        if missing.is_empty() {
            Ok(NodeBinaries {
                dir,
                test_image,
                runc,
            })
        } else {
            Err(binaries_missing(dir, &missing))
        }
    }

    /// The bin directory (kubelet, containerd, ctr, the shim; `cni/` holds the plugins).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// kubelet.
    pub fn kubelet(&self) -> PathBuf {
        self.dir.join("kubelet")
    }

    /// containerd.
    pub fn containerd(&self) -> PathBuf {
        self.dir.join("containerd")
    }

    /// ctr, containerd's client.
    pub fn ctr(&self) -> PathBuf {
        self.dir.join("ctr")
    }

    /// The directory of the CNI plugins.
    pub fn cni_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }

    /// The pause image ([`PAUSE_IMAGE`]) as a docker archive.
    pub fn pause_image(&self) -> PathBuf {
        self.dir.join("pause.tar")
    }

    /// The test image ([`TEST_IMAGE`]) as a docker archive.
    pub fn test_image(&self) -> &Path {
        &self.test_image
    }

    /// The machine's runc.
    pub fn runc(&self) -> &Path {
        &self.runc
    }
}

fn binaries_missing(dir: PathBuf, missing: &[String]) -> Error {
    Error::RealNode {
        node: "-".into(),
        message: format!(
            "node binaries missing in {}: {} — run `make setup` (it runs tests/nodes/build.sh), \
             or point {BIN_ENV} at them",
            dir.display(),
            missing.join(", ")
        ),
    }
}

/// iproute2's `ip`.
pub(crate) fn ip_command() -> Option<PathBuf> {
    ["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip", "/bin/ip"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// `${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/nodes/k8s-<v>-containerd-<v>-cni-<v>/bin`.
pub fn default_bin_dir() -> PathBuf {
    cache_root()
        .join("nodes")
        .join(format!(
            "k8s-{K8S_VERSION}-containerd-{CONTAINERD_VERSION}-cni-{CNI_VERSION}"
        ))
        .join("bin")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_script_builds_these_versions() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nodes/build.sh");
        let text = std::fs::read_to_string(&script).expect("read build.sh");
        for needle in [
            format!("K8S_VERSION=\"{K8S_VERSION}\""),
            format!("CONTAINERD_VERSION=\"{CONTAINERD_VERSION}\""),
            format!("CNI_VERSION=\"{CNI_VERSION}\""),
            format!("PAUSE_IMAGE=\"{PAUSE_IMAGE}\""),
            format!("TEST_IMAGE=\"{TEST_IMAGE}\""),
        ] {
            assert!(
                text.contains(&needle),
                "{} lacks {needle}",
                script.display()
            );
        }
    }
}
