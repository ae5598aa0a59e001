//! A docker-registry on loopback on its own, for the OCI plugin source: plain HTTP, with
//! optional htpasswd authentication (the bcrypt file is written here, in Rust).
//!
//! Like [`crate::DockerEnv`], it must never talk to anything but the process it started.

use std::path::Path;
use std::process::Command;

use crate::{Error, Process, Result, err, free_port, http_get_tcp, wait_until};

/// bcrypt cost of the test password: 4, the minimum, so the registry checks it quickly.
/// The cost is irrelevant to what the tests show.
const BCRYPT_COST: u32 = 4;

/// A running docker-registry in a temporary directory; stopped and removed on drop.
#[derive(Debug)]
pub struct Registry {
    process: Process,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; with `credentials` (user, password) it requires them (htpasswd).
    pub fn start(credentials: Option<(&str, &str)>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hpr-")
            .tempdir()
            .map_err(err("creating the temporary directory"))?;
        let d = dir.path();
        let addr = format!("127.0.0.1:{}", free_port()?);
        std::fs::create_dir_all(d.join("data")).map_err(err("creating directories"))?;
        let auth = match credentials {
            Some((user, password)) => {
                write_htpasswd(&d.join("htpasswd"), user, password)?;
                format!(
                    "auth:\n  htpasswd:\n    realm: hostplug-test\n    path: {}\n",
                    d.join("htpasswd").display()
                )
            }
            None => String::new(),
        };
        let yml = format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n{auth}",
            d.join("data").display()
        );
        std::fs::write(d.join("registry.yml"), yml).map_err(err("writing registry.yml"))?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(d.join("registry.yml"));
        let mut process = Process::spawn("docker-registry", cmd, d.join("registry.log"), true)?;
        let a = addr.clone();
        wait_until("docker-registry", &mut process, || {
            http_get_tcp(&a, "/v2/").is_ok_and(|r| r.status == 200 || r.status == 401)
        })?;
        Ok(Self {
            process,
            addr,
            _dir: dir,
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stops the registry process (the address then refuses connections), keeping the
    /// directory until drop.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// Writes an htpasswd file with one bcrypt entry, the only hash docker-registry accepts.
pub fn write_htpasswd(path: &Path, user: &str, password: &str) -> Result<()> {
    let hash = bcrypt::hash(password, BCRYPT_COST)
        .map_err(|e| Error(format!("hashing the htpasswd password: {e}")))?;
    std::fs::write(path, format!("{user}:{hash}\n"))
        .map_err(err(format!("writing {}", path.display())))
}
