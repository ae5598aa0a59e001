//! A docker-registry on loopback on its own, for the OCI plugin source: plain HTTP, with
//! optional htpasswd authentication (the bcrypt file is written here, in Rust).
//!
//! Like [`crate::DockerEnv`], it must never talk to anything but the process it started.

use std::path::Path;
use std::process::Command;

use std::io::{Read, Write};
use std::net::TcpStream;

use base64::Engine as _;

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

    /// The port, for naming the registry `localhost:<port>` (Podman's `/auth` speaks
    /// plain HTTP only to registries named `localhost…`, whatever registries.conf says).
    pub fn port(&self) -> &str {
        self.addr.rsplit(':').next().unwrap_or_default()
    }

    /// The tags the registry holds for `repository` (`GET /v2/<repository>/tags/list`,
    /// with basic authentication when `credentials` are given): `Ok(None)` when the
    /// repository is unknown (404), an error for any other failure (401 included, with
    /// the status in the message).
    pub fn tags(
        &self,
        repository: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<Option<Vec<String>>> {
        let mut s = TcpStream::connect(&self.addr).map_err(err("connecting to the registry"))?;
        let timeout = Some(std::time::Duration::from_secs(10));
        s.set_read_timeout(timeout)
            .and_then(|()| s.set_write_timeout(timeout))
            .map_err(err("setting timeouts"))?;
        let auth = credentials
            .map(|(u, p)| {
                format!(
                    "Authorization: Basic {}\r\n",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                )
            })
            .unwrap_or_default();
        write!(
            s,
            "GET /v2/{repository}/tags/list HTTP/1.0\r\nHost: {}\r\n{auth}\r\n",
            self.addr
        )
        .map_err(err("asking the registry"))?;
        let mut raw = String::new();
        s.take(1 << 20)
            .read_to_string(&mut raw)
            .map_err(err("reading the registry's answer"))?;
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        match status {
            200 => {
                let start = body
                    .find("\"tags\"")
                    .ok_or_else(|| Error(format!("no tags in {body}")))?;
                let list = &body[start..];
                let open = list.find('[').unwrap_or(0);
                let close = list.find(']').unwrap_or(list.len());
                Ok(Some(
                    list[open + 1..close]
                        .split(',')
                        .map(|t| t.trim().trim_matches('"').to_owned())
                        .filter(|t| !t.is_empty())
                        .collect(),
                ))
            }
            404 => Ok(None),
            other => Err(Error(format!(
                "GET /v2/{repository}/tags/list answered {other}: {}",
                body.trim()
            ))),
        }
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
