//! Shared helpers of the host's integration tests: where the real test components are,
//! and shared hosts so each component is compiled once per test binary.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hostplug_host::{Host, HostConfig, Plugin};

/// Directory of the built components: `$HOSTPLUG_PLUGIN_DIR` or `../target/plugins`.
pub fn plugin_dir() -> PathBuf {
    std::env::var_os("HOSTPLUG_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

/// The bytes of component `name` (e.g. `test-trap`).
pub fn module(name: &str) -> Vec<u8> {
    let path = plugin_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the test component {}: {e}. Build the plugins first: run `make plugins` \
             in the repository root (or set HOSTPLUG_PLUGIN_DIR)",
            path.display()
        )
    })
}

/// A process-wide host with default limits.
pub fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| Host::new(HostConfig::default()).expect("host"))
}

/// Loads component `name` into `host`.
pub fn load(host: &Host, name: &str) -> Arc<Plugin> {
    host.load(&module(name), None)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// A scratch tree: `<root>/etc` (the guest's /etc, with `hosts` and `sub/`) and
/// `<root>/outside` (with `secret.txt`) that no plugin may reach.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

pub const HOSTS: &str = "127.0.0.1 localhost\n";
pub const SECRET: &str = "top secret\n";

impl Tree {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc/sub")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("outside")).expect("mkdir");
        std::fs::write(dir.path().join("etc/hosts"), HOSTS).expect("write");
        std::fs::write(dir.path().join("outside/secret.txt"), SECRET).expect("write");
        Self { dir }
    }

    pub fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    pub fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(rel)).ok()
    }

    /// Every file under the tree's outside directory, with its content.
    pub fn outside_snapshot(&self) -> Vec<(String, String)> {
        let mut out: Vec<_> = std::fs::read_dir(self.outside())
            .expect("read_dir")
            .map(|e| {
                let e = e.expect("entry");
                let content = std::fs::read_to_string(e.path()).unwrap_or_default();
                (e.file_name().to_string_lossy().into_owned(), content)
            })
            .collect();
        out.sort();
        out
    }
}
