//! Where the control-plane binaries are: the one place that knows.
//!
//! `tests/controlplane/build.sh` builds them into
//! `${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/controlplane/k8s-<version>/bin/`;
//! `HOSTPLUG_CONTROLPLANE_BIN` points elsewhere when set.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The Kubernetes release of the control plane. Keep in step with `K8S_VERSION` in
/// `tests/controlplane/build.sh` and the k8s-openapi feature in the root `Cargo.toml`
/// (a unit test checks the first).
pub const K8S_VERSION: &str = "1.36.3";

/// Overrides the directory holding the binaries.
pub const BIN_ENV: &str = "HOSTPLUG_CONTROLPLANE_BIN";

/// Overrides the cache root (`$HOME/.cache/hostplug`), as in build.sh.
pub const CACHE_ENV: &str = "HOSTPLUG_CACHE";

/// The binaries the environment needs, as build.sh names them.
pub const BINARIES: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
];

/// The resolved locations of the control-plane binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Finds the binaries (see the module docs) and checks that all are there.
    pub fn locate() -> Result<Self> {
        let dir = match std::env::var_os(BIN_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => default_bin_dir(),
        };
        Self::in_dir(dir)
    }

    /// The binaries in `dir`, if all are there.
    pub fn in_dir(dir: PathBuf) -> Result<Self> {
        let missing: Vec<&str> = BINARIES
            .iter()
            .copied()
            .filter(|b| !dir.join(b).is_file())
            .collect();
        if missing.is_empty() {
            Ok(Binaries { dir })
        } else {
            Err(Error::BinariesMissing {
                dir,
                missing: missing.join(", "),
            })
        }
    }

    /// The directory holding them.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// etcd.
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    /// kube-apiserver.
    pub fn kube_apiserver(&self) -> PathBuf {
        self.dir.join("kube-apiserver")
    }

    /// kube-controller-manager.
    pub fn kube_controller_manager(&self) -> PathBuf {
        self.dir.join("kube-controller-manager")
    }

    /// kube-scheduler.
    pub fn kube_scheduler(&self) -> PathBuf {
        self.dir.join("kube-scheduler")
    }

    /// kubectl of the same release (never the machine's own, which is older).
    pub fn kubectl(&self) -> PathBuf {
        self.dir.join("kubectl")
    }
}

/// Where the build scripts cache what they build: `${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}`
/// (`/root` when `HOME` is unset).
pub fn cache_root() -> PathBuf {
    match std::env::var_os(CACHE_ENV) {
        Some(c) => PathBuf::from(c),
        None => std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
            .join(".cache/hostplug"),
    }
}

/// `${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/controlplane/k8s-<version>/bin`.
pub fn default_bin_dir() -> PathBuf {
    cache_root()
        .join("controlplane")
        .join(format!("k8s-{K8S_VERSION}"))
        .join("bin")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_script_builds_this_version() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../controlplane/build.sh");
        let text = std::fs::read_to_string(&script).expect("read build.sh");
        assert!(
            text.contains(&format!("K8S_VERSION=\"{K8S_VERSION}\"")),
            "{} does not build Kubernetes {K8S_VERSION}",
            script.display()
        );
    }

    #[test]
    fn k8s_openapi_feature_matches() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let text = std::fs::read_to_string(&root).expect("read root Cargo.toml");
        let minor = K8S_VERSION.split('.').nth(1).expect("a minor version");
        assert!(
            text.contains(&format!("\"v1_{minor}\"")),
            "the root Cargo.toml does not select k8s-openapi's v1_{minor}"
        );
    }

    #[test]
    fn missing_binaries_say_how_to_build_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = Binaries::in_dir(dir.path().to_owned())
            .expect_err("an empty dir has no binaries")
            .to_string();
        assert!(err.contains("make setup"), "{err}");
        assert!(err.contains("kube-apiserver"), "{err}");
    }
}
