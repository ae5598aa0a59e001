//! Resident memory of an idle worker: starts the real `hostplug-worker` binary (release
//! build under `cargo bench`) on loopback with a throw-away certificate, and reads
//! `VmRSS` from /proc after start-up, after uploading etc-file, and after invoking its
//! `read` method (a few times). Prints one line per stage.
//!
//! Run: `cargo bench -p hostplug-worker --bench idle_rss` (after `make plugins`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hostplug_api::EtcAccess;
use hostplug_api::worker::{Limits, LogFormat, WorkerSettings};
use sha2::Digest as _;

const TOKEN: &str = "idle-rss-bench-token-0123456789";

fn plugin_dir() -> PathBuf {
    std::env::var_os("HOSTPLUG_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("malformed status line")?
            .parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let module_path = plugin_dir().join("etc-file.wasm");
    let module = std::fs::read(&module_path)
        .with_context(|| format!("{}: run `make plugins` first", module_path.display()))?;
    let digest = hex::encode(sha2::Sha256::digest(&module));

    let dir = tempfile::tempdir()?;
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc)?;
    std::fs::write(etc.join("hostname"), "bench-node\n")?;
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
    std::fs::write(dir.path().join("tls.crt"), cert.cert.pem())?;
    std::fs::write(dir.path().join("tls.key"), cert.key_pair.serialize_pem())?;
    std::fs::write(dir.path().join("token"), TOKEN)?;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };

    let settings = WorkerSettings {
        listen: format!("127.0.0.1:{port}"),
        tls_cert: dir.path().join("tls.crt"),
        tls_key: dir.path().join("tls.key"),
        token_file: dir.path().join("token"),
        etc_dir: etc.clone(),
        etc_access: EtcAccess::Read,
        etc_sensitive: false,
        docker_socket: None,
        containerd_socket: None,
        systemd_socket: None,
        systemd_access: hostplug_api::systemd::SystemdAccess::None,
        image_writes: true,
        cache_dir: dir.path().join("cache"),
        artifact_key: None,
        node_lock_file: None,
        log_format: LogFormat::Text,
        limits: Limits::default(),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_hostplug-worker"))
        .envs(settings.env())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting hostplug-worker")?;
    let worker = Guard(child);
    let pid = worker.0.id();

    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes())?)
        .build()?;
    let base = format!("https://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the worker did not become healthy in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle, _) = rss_kib(pid)?;

    let upload = client
        .put(format!("{base}/v1/plugins/{digest}"))
        .bearer_auth(TOKEN)
        .body(module.clone())
        .send()
        .await?;
    if !upload.status().is_success() {
        bail!(
            "upload failed: {} {}",
            upload.status(),
            upload.text().await?
        );
    }
    let (loaded, _) = rss_kib(pid)?;

    let body = serde_json::json!({"digest": digest, "method": "read", "params": {"path": "/etc/hostname"}});
    for _ in 0..10 {
        let r = client
            .post(format!("{base}/v1/invoke"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("invoke failed: {} {}", r.status(), r.text().await?);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (after, peak) = rss_kib(pid)?;

    println!("worker ready (healthz 200) after {} ms", ready.as_millis());
    println!(
        "idle worker RSS after start:            {:>7} KiB ({:.1} MiB)",
        idle,
        idle as f64 / 1024.0
    );
    println!(
        "after uploading etc-file ({} KiB):     {:>7} KiB ({:.1} MiB)",
        module.len() / 1024,
        loaded,
        loaded as f64 / 1024.0
    );
    println!(
        "after 10 `read` invocations:            {:>7} KiB ({:.1} MiB)",
        after,
        after as f64 / 1024.0
    );
    println!(
        "peak RSS (VmHWM):                       {:>7} KiB ({:.1} MiB)",
        peak,
        peak as f64 / 1024.0
    );
    drop(worker);
    Ok(())
}
