//! The worker over real HTTPS, with the real Wasm host and the real built components:
//! a self-signed certificate made at test time, the server on 127.0.0.1:0, a client that
//! trusts only that certificate (as the operator pins it).
//!
//! Needs the components of `make plugins` (HOSTPLUG_PLUGIN_DIR, or ../target/plugins).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hostplug_api::protocol::{
    ARTIFACT_SIGNATURE_HEADER, ENGINE_HEADER, ErrorBody, ErrorKind, Health, InvokeOutcome,
    LogSource, UploadResponse, read_invoke_answer,
};
use hostplug_host::{ArtifactKey, ArtifactSigner, Digest, Host, HostConfig, SignedArtifact};
use hostplug_worker::{EtcAccess, Limits, LogFormat, WorkerSettings};
use reqwest::StatusCode;
use sha2::Digest as _;

const TOKEN: &str = "https-test-token-0123456789abcdef";

fn plugin_dir() -> PathBuf {
    std::env::var_os("HOSTPLUG_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

/// The bytes of a built plugin; panics with the fix when `make plugins` has not run.
fn plugin(name: &str) -> Vec<u8> {
    let path = plugin_dir().join(format!("{name}.wasm"));
    match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => panic!(
            "cannot read {}: {e}; run `make plugins` first (or set HOSTPLUG_PLUGIN_DIR)",
            path.display()
        ),
    }
}

fn hex_digest(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A running worker and a client pinned to its certificate.
struct Worker {
    addr: SocketAddr,
    client: reqwest::Client,
    etc: tempfile::TempDir,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<hostplug_worker::Result<()>>,
}

impl Worker {
    async fn start(etc_access: EtcAccess, limits: Limits) -> anyhow::Result<Self> {
        Self::start_with(etc_access, limits, None, None).await
    }

    /// A worker that loads precompiled artifacts signed with `artifact_key`'s private half.
    async fn start_trusting(
        etc_access: EtcAccess,
        limits: Limits,
        artifact_key: Option<ArtifactKey>,
    ) -> anyhow::Result<Self> {
        Self::start_with(etc_access, limits, None, artifact_key).await
    }

    /// A worker whose Pod would mount the docker socket `docker_socket`.
    async fn start_with_docker(
        etc_access: EtcAccess,
        limits: Limits,
        docker_socket: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        Self::start_with(etc_access, limits, docker_socket, None).await
    }

    /// A worker with the given docker socket and trusted artifact key.
    async fn start_with(
        etc_access: EtcAccess,
        limits: Limits,
        docker_socket: Option<PathBuf>,
        artifact_key: Option<ArtifactKey>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let etc = tempfile::tempdir()?;
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])?;
        let cert_pem = cert.cert.pem();
        std::fs::write(dir.path().join("tls.crt"), &cert_pem)?;
        std::fs::write(dir.path().join("tls.key"), cert.key_pair.serialize_pem())?;
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n"))?;
        let config = WorkerSettings {
            listen: "127.0.0.1:0".into(),
            tls_cert: dir.path().join("tls.crt"),
            tls_key: dir.path().join("tls.key"),
            token_file: dir.path().join("token"),
            etc_dir: etc.path().to_path_buf(),
            etc_access,
            etc_sensitive: false,
            docker_socket,
            containerd_socket: None,
            systemd_socket: None,
            systemd_access: hostplug_api::systemd::SystemdAccess::None,
            image_writes: true,
            cache_dir: dir.path().join("cache"),
            artifact_key,
            node_lock_file: None,
            log_format: LogFormat::Text,
            limits,
        };
        let server = hostplug_worker::bind(&config).await?;
        let addr = server.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes())?)
            .https_only(true)
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            addr,
            client,
            etc,
            _dir: dir,
            stop: Some(stop),
            task,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    async fn upload(&self, module: &[u8]) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .client
            .put(self.url(&format!("/v1/plugins/{}", hex_digest(module))))
            .bearer_auth(TOKEN)
            .body(module.to_vec())
            .send()
            .await?)
    }

    async fn invoke(
        &self,
        module: &[u8],
        method: &str,
        params: serde_json::Value,
    ) -> anyhow::Result<reqwest::Response> {
        let body = serde_json::json!({"digest": hex_digest(module), "method": method, "params": params, "timeoutMs": 10_000});
        Ok(self
            .client
            .post(self.url("/v1/invoke"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await?)
    }

    /// `PUT /v1/plugins/{digest}/precompiled` with `artifact`'s headers (the signature
    /// only when `signed`).
    async fn put_artifact(
        &self,
        digest: &str,
        artifact: &SignedArtifact,
        signed: bool,
    ) -> anyhow::Result<reqwest::Response> {
        let mut put = self
            .client
            .put(self.url(&format!("/v1/plugins/{digest}/precompiled")))
            .bearer_auth(TOKEN)
            .header(ENGINE_HEADER, &artifact.fingerprint)
            .body(artifact.bytes.clone());
        if signed {
            put = put.header(ARTIFACT_SIGNATURE_HEADER, artifact.signature.to_string());
        }
        Ok(put.send().await?)
    }

    async fn head(&self, digest: &str) -> anyhow::Result<StatusCode> {
        let url = self.url(&format!("/v1/plugins/{digest}"));
        Ok(self
            .client
            .head(url)
            .bearer_auth(TOKEN)
            .send()
            .await?
            .status())
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task).await???;
        Ok(())
    }
}

async fn error_kind(response: reqwest::Response) -> anyhow::Result<ErrorKind> {
    let body: ErrorBody = response.json().await.context("error body is not JSON")?;
    Ok(body.error.kind)
}

#[tokio::test]
async fn auth_health_and_upload_rules() -> anyhow::Result<()> {
    let worker = Worker::start(EtcAccess::None, Limits::default()).await?;

    let health = worker.client.get(worker.url("/healthz")).send().await?;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Health>().await?.status, "ok");

    let module = plugin("test-trap");
    let digest = hex_digest(&module);
    let head_url = worker.url(&format!("/v1/plugins/{digest}"));
    let response = worker.client.head(&head_url).send().await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = worker
        .client
        .head(&head_url)
        .bearer_auth("wrong-token-0123456789abcdef")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = worker
        .client
        .post(worker.url("/v1/invoke"))
        .body("{}")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_kind(response).await?, ErrorKind::Unauthorized);

    assert_eq!(
        worker
            .client
            .head(&head_url)
            .bearer_auth(TOKEN)
            .send()
            .await?
            .status(),
        StatusCode::NOT_FOUND
    );

    // The body must hash to the digest in the path.
    let wrong = worker
        .client
        .put(worker.url(&format!("/v1/plugins/{}", hex_digest(b"other"))))
        .bearer_auth(TOKEN)
        .body(module.clone())
        .send()
        .await?;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_kind(wrong).await?, ErrorKind::DigestMismatch);

    // Unknown digest: a clear 404 that says what to do.
    let response = worker.invoke(&module, "ok", serde_json::json!({})).await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let err: ErrorBody = response.json().await?;
    assert_eq!(err.error.kind, ErrorKind::UnknownPlugin);
    assert!(
        err.error.message.contains("upload it first"),
        "{}",
        err.error.message
    );

    let response = worker.upload(&module).await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    let up: UploadResponse = response.json().await?;
    assert!(up.compiled);
    assert_eq!(up.digest, format!("sha256:{digest}"));
    assert_eq!(
        worker
            .client
            .head(&head_url)
            .bearer_auth(TOKEN)
            .send()
            .await?
            .status(),
        StatusCode::OK
    );
    let again = worker.upload(&module).await?;
    assert_eq!(again.status(), StatusCode::OK);

    // A module that is not a component is refused; the good one keeps working.
    let junk = b"\0asm\x01\0\0\0 this is no component".to_vec();
    let response = worker.upload(&junk).await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_kind(response).await?, ErrorKind::BadModule);
    let response = worker.invoke(&module, "ok", serde_json::json!({})).await?;
    assert_eq!(response.status(), StatusCode::OK);

    worker.stop().await
}

/// A host with the worker's engine settings holding the component `name`, its digest,
/// and its artifact signed by `signer`.
fn signed_artifact(
    name: &str,
    signer: &ArtifactSigner,
) -> anyhow::Result<(Digest, SignedArtifact)> {
    let compiler = Host::new(HostConfig::default())?;
    let module = plugin(name);
    let digest = Digest::of(&module);
    compiler.load(&module, Some(&digest))?;
    let artifact = compiler
        .signed_artifact(&digest, signer)
        .context("held")??;
    Ok((digest, artifact))
}

/// A precompiled artifact is native code (issue 21, finding 1): a valid artifact of
/// another plugin, made by an engine identical to the worker's and sent under etc-file's
/// digest, must not be taken for etc-file — unsigned, signed by anyone but the operator
/// that made the worker, or even signed by that operator for its own digest. `HEAD`
/// stays 404, invoking that digest finds nothing to run, and the real module is still
/// uploaded, compiled and run.
#[tokio::test]
async fn an_artifact_of_another_plugin_under_a_wrong_digest_is_refused() -> anyhow::Result<()> {
    let operator = ArtifactSigner::generate()?;
    let worker = Worker::start_trusting(
        EtcAccess::Read,
        Limits::default(),
        Some(operator.public_key()),
    )
    .await?;
    std::fs::write(worker.etc.path().join("hostname"), "node-1\n")?;
    let etc_file = plugin("etc-file");
    let digest = hex_digest(&etc_file);

    // The implant: test-trap, compiled by a host with the worker's engine settings.
    let (_, genuine) = signed_artifact("test-trap", &operator)?;
    let stranger = ArtifactSigner::generate()?;
    let forged = SignedArtifact {
        signature: stranger.sign(&digest.parse()?, &genuine.fingerprint, &genuine.bytes),
        ..genuine.clone()
    };
    for (artifact, signed, status, why) in [
        (&genuine, false, StatusCode::BAD_REQUEST, "unsigned"),
        (
            &forged,
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "signed by a stranger",
        ),
        (
            &genuine,
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "the operator's, for test-trap",
        ),
    ] {
        let put = worker.put_artifact(&digest, artifact, signed).await?;
        assert_eq!(put.status(), status, "{why}");
        let e: ErrorBody = put.json().await?;
        if status == StatusCode::BAD_REQUEST {
            assert!(e.error.message.contains(ARTIFACT_SIGNATURE_HEADER), "{e:?}");
        } else {
            assert_eq!(e.error.kind, ErrorKind::BadModule, "{why}");
            assert!(e.error.message.contains("not signed as"), "{why}: {e:?}");
        }
        assert_eq!(
            worker.head(&digest).await?,
            StatusCode::NOT_FOUND,
            "HEAD stays 404: {why}"
        );
    }
    let response = worker
        .invoke(
            &etc_file,
            "read",
            serde_json::json!({"path": "/etc/hostname"}),
        )
        .await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_kind(response).await?, ErrorKind::UnknownPlugin);

    // The operator then sends the module itself: compiled here, and it is etc-file.
    let response = worker.upload(&etc_file).await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.json::<UploadResponse>().await?.compiled);
    let response = worker
        .invoke(
            &etc_file,
            "read",
            serde_json::json!({"path": "/etc/hostname"}),
        )
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let outcome: InvokeOutcome = response.json().await?;
    assert!(
        outcome.output.to_string().contains("node-1"),
        "{}",
        outcome.output
    );
    worker.stop().await
}

/// The operator's own artifact of a module loads and runs without compiling, on a worker
/// whose Pod carries that operator's key; a worker with another key (made by an earlier
/// operator process) or none refuses it, and takes the module instead.
#[tokio::test]
async fn a_signed_artifact_loads_only_where_its_key_is_trusted() -> anyhow::Result<()> {
    let operator = ArtifactSigner::generate()?;
    let (digest, artifact) = signed_artifact("test-trap", &operator)?;
    let hex = digest.hex();
    let module = plugin("test-trap");

    let trusting = Worker::start_trusting(
        EtcAccess::None,
        Limits::default(),
        Some(operator.public_key()),
    )
    .await?;
    let put = trusting.put_artifact(&hex, &artifact, true).await?;
    assert_eq!(put.status(), StatusCode::CREATED);
    assert!(put.json::<UploadResponse>().await?.compiled);
    assert_eq!(trusting.head(&hex).await?, StatusCode::OK);
    let response = trusting
        .invoke(&module, "ok", serde_json::json!({}))
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    // Held now: the module upload is answered "already held", not compiled again.
    assert_eq!(trusting.upload(&module).await?.status(), StatusCode::OK);
    trusting.stop().await?;

    let earlier = ArtifactSigner::generate()?;
    for key in [Some(earlier.public_key()), None] {
        let worker = Worker::start_trusting(EtcAccess::None, Limits::default(), key).await?;
        let put = worker.put_artifact(&hex, &artifact, true).await?;
        assert_eq!(put.status(), StatusCode::UNPROCESSABLE_ENTITY, "{key:?}");
        let e: ErrorBody = put.json().await?;
        assert_eq!(e.error.kind, ErrorKind::BadModule);
        if key.is_none() {
            assert!(e.error.message.contains("HOSTPLUG_ARTIFACT_KEY"), "{e:?}");
        }
        assert_eq!(worker.head(&hex).await?, StatusCode::NOT_FOUND);
        assert_eq!(worker.upload(&module).await?.status(), StatusCode::CREATED);
        let response = worker.invoke(&module, "ok", serde_json::json!({})).await?;
        assert_eq!(response.status(), StatusCode::OK);
        worker.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_json() -> anyhow::Result<()> {
    let limits = Limits {
        max_module_bytes: 64 * 1024,
        max_request_bytes: 4 * 1024,
        ..Limits::default()
    };
    let worker = Worker::start(EtcAccess::None, limits).await?;
    let big = vec![7u8; 200 * 1024];
    let response = worker.upload(&big).await?;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_kind(response).await?, ErrorKind::PayloadTooLarge);

    let params = serde_json::json!({"pad": "x".repeat(16 * 1024)});
    let response = worker.invoke(b"whatever", "ok", params).await?;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_kind(response).await?, ErrorKind::PayloadTooLarge);
    worker.stop().await
}

#[tokio::test]
async fn etc_file_read_and_concurrent_invocations() -> anyhow::Result<()> {
    let worker = Worker::start(EtcAccess::Read, Limits::default()).await?;
    std::fs::write(worker.etc.path().join("hostname"), "node-1\n")?;
    let module = plugin("etc-file");
    assert_eq!(worker.upload(&module).await?.status(), StatusCode::CREATED);

    let response = worker
        .invoke(
            &module,
            "read",
            serde_json::json!({"path": "/etc/hostname"}),
        )
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let out: InvokeOutcome = response.json().await?;
    assert!(!out.changed);
    assert!(out.output.to_string().contains("node-1"), "{}", out.output);

    // Read capability: a write is refused by the sandbox, nothing changes.
    let response = worker
        .invoke(
            &module,
            "write",
            serde_json::json!({"path": "/etc/hostname", "content": "evil\n"}),
        )
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_kind(response).await?, ErrorKind::Denied);
    assert_eq!(
        std::fs::read_to_string(worker.etc.path().join("hostname"))?,
        "node-1\n"
    );

    // Eight at once (more than the four slots): all served.
    let calls: Vec<_> = (0..8)
        .map(|_| {
            worker.invoke(
                &module,
                "read",
                serde_json::json!({"path": "/etc/hostname"}),
            )
        })
        .collect();
    for response in futures::future::join_all(calls).await {
        assert_eq!(response?.status(), StatusCode::OK);
    }
    worker.stop().await
}

#[tokio::test]
async fn failing_plugins_do_not_break_the_next_call() -> anyhow::Result<()> {
    let worker = Worker::start(EtcAccess::None, Limits::default()).await?;
    let trap = plugin("test-trap");
    let spin = plugin("test-spin");
    assert_eq!(worker.upload(&trap).await?.status(), StatusCode::CREATED);
    assert_eq!(worker.upload(&spin).await?.status(), StatusCode::CREATED);

    let response = worker.invoke(&trap, "panic", serde_json::json!({})).await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_kind(response).await?, ErrorKind::Trap);
    assert_eq!(
        worker
            .invoke(&trap, "ok", serde_json::json!({}))
            .await?
            .status(),
        StatusCode::OK
    );

    let body = serde_json::json!({"digest": hex_digest(&spin), "method": "spin", "timeoutMs": 500});
    let response = worker
        .client
        .post(worker.url("/v1/invoke"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_kind(response).await?, ErrorKind::Timeout);
    assert_eq!(
        worker
            .invoke(&spin, "ok", serde_json::json!({}))
            .await?
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        worker
            .invoke(&trap, "ok", serde_json::json!({}))
            .await?
            .status(),
        StatusCode::OK
    );
    worker.stop().await
}

#[tokio::test]
async fn write_access_dry_run_then_real_change() -> anyhow::Result<()> {
    let worker = Worker::start(EtcAccess::Write, Limits::default()).await?;
    let file = worker.etc.path().join("chrony.conf");
    std::fs::write(&file, "pool 2.debian.pool.ntp.org iburst\n")?;
    let module = plugin("etc-file");
    assert_eq!(worker.upload(&module).await?.status(), StatusCode::CREATED);
    let params =
        serde_json::json!({"path": "/etc/chrony.conf", "line": "server ntp.example.com iburst"});
    let invoke = |dry_run: bool| {
        let body = serde_json::json!({"digest": format!("sha256:{}", hex_digest(&module)), "method": "ensure-line", "params": params, "dryRun": dry_run});
        worker
            .client
            .post(worker.url("/v1/invoke"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };

    // A dry run reports the change and its diff, and leaves the file alone.
    let response = invoke(true).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let out: InvokeOutcome = response.json().await?;
    assert!(out.changed);
    let diff = out.diff.unwrap_or_default();
    assert!(diff.contains("+server ntp.example.com iburst"), "{diff}");
    assert_eq!(
        std::fs::read_to_string(&file)?,
        "pool 2.debian.pool.ntp.org iburst\n"
    );

    let out: InvokeOutcome = invoke(false).await?.json().await?;
    assert!(out.changed);
    assert!(std::fs::read_to_string(&file)?.contains("server ntp.example.com iburst\n"));
    let out: InvokeOutcome = invoke(false).await?.json().await?;
    assert!(!out.changed, "second identical call must report no change");
    worker.stop().await
}

#[tokio::test]
async fn memory_limit_and_plugin_logs_over_https() -> anyhow::Result<()> {
    let limits = Limits {
        memory_limit_bytes: 32 * 1024 * 1024,
        ..Limits::default()
    };
    let worker = Worker::start(EtcAccess::None, limits).await?;
    let hog = plugin("test-hog");
    let noisy = plugin("test-noisy");
    assert_eq!(worker.upload(&hog).await?.status(), StatusCode::CREATED);
    assert_eq!(worker.upload(&noisy).await?.status(), StatusCode::CREATED);

    let response = worker.invoke(&hog, "hog", serde_json::json!({})).await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_kind(response).await?, ErrorKind::ResourceLimit);
    assert_eq!(
        worker
            .invoke(&hog, "ok", serde_json::json!({}))
            .await?
            .status(),
        StatusCode::OK
    );

    // What a plugin logs travels with its result, in order, with level and source.
    let params = serde_json::json!({"stdout": 150, "stderr": 0, "logs": 2, "logSize": 5});
    let response = worker.invoke(&noisy, "chatter", params).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let out: InvokeOutcome = response.json().await?;
    assert_eq!(out.output, serde_json::json!({"done": true}));
    let from_log: Vec<_> = out
        .logs
        .iter()
        .filter(|l| l.source == LogSource::Log)
        .collect();
    assert_eq!(from_log.len(), 2, "{:?}", out.logs);
    assert_eq!(
        (from_log[0].level.as_str(), from_log[0].message.as_str()),
        ("debug", "lllll")
    );
    assert!(
        out.logs.iter().any(|l| l.source == LogSource::Stdout),
        "{:?}",
        out.logs
    );
    worker.stop().await
}

/// Whether the worker's serve task ended within `within`.
async fn ended_within(worker: &mut Worker, within: Duration) -> bool {
    tokio::time::timeout(within, &mut worker.task).await.is_ok()
}

#[tokio::test]
async fn an_idle_worker_exits_by_itself() -> anyhow::Result<()> {
    let idle = Duration::from_millis(1500);
    let mut worker = Worker::start(
        EtcAccess::None,
        Limits {
            idle_exit_ms: 1500,
            ..Limits::default()
        },
    )
    .await?;
    let head_url = worker.url(&format!("/v1/plugins/{}", "0".repeat(64)));
    // Authenticated requests keep it alive well past the idle time.
    let busy_until = tokio::time::Instant::now() + idle * 2;
    while tokio::time::Instant::now() < busy_until {
        let r = worker
            .client
            .head(&head_url)
            .bearer_auth(TOKEN)
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!worker.task.is_finished(), "exited while in use");
    // Health probes and requests without the token do not: it ends on its own.
    let probes = async {
        loop {
            let _ = worker.client.get(worker.url("/healthz")).send().await;
            let _ = worker.client.head(&head_url).send().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = probes => {}
        () = tokio::time::sleep(idle) => {}
    }
    assert!(
        ended_within(&mut worker, Duration::from_secs(5)).await,
        "an idle worker did not exit"
    );
    Ok(())
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let worker = Worker::start(EtcAccess::None, Limits::default()).await?;
    // Connections that never start their TLS handshake hold every slot…
    let mut held = Vec::new();
    for _ in 0..hostplug_worker::config::MAX_CONNECTIONS {
        held.push(tokio::net::TcpStream::connect(worker.addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // …so the next one is closed right away instead of waiting for its handshake.
    let mut extra = tokio::net::TcpStream::connect(worker.addr).await?;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(3), extra.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a connection over the cap was kept: {read:?}"
    );
    // Once they go, the worker serves again.
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match worker.client.get(worker.url("/healthz")).send().await {
            Ok(r) if r.status() == StatusCode::OK => break,
            other => anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the worker did not serve again: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().await
}

/// A docker route outside the host's allow-list, end to end: the host refuses it with
/// the typed `denied` of the WIT, the plugin passes it on by kind, and the worker's answer
/// is the node's result (a 422 read by `read_invoke_answer`, as the operator reads it)
/// with kind `denied`. The daemon stand-in never sees a connection.
#[tokio::test]
async fn a_refused_docker_route_is_the_nodes_denied_result() -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let sockets = tempfile::tempdir()?;
    let socket = sockets.path().join("docker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket)?;
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let worker =
        Worker::start_with_docker(EtcAccess::None, Limits::default(), Some(socket)).await?;
    let noisy = plugin("test-noisy");
    assert_eq!(worker.upload(&noisy).await?.status(), StatusCode::CREATED);
    let response = worker
        .invoke(
            &noisy,
            "docker",
            serde_json::json!({"method": "POST", "path": "/containers/create"}),
        )
        .await?;
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    let result = read_invoke_answer(status, &body)
        .map_err(|refused| anyhow::anyhow!("not a node's result: {refused}"))?;
    let error = result.expect_err("the route is outside the allow-list");
    assert_eq!(error.kind, ErrorKind::Denied, "{error}");
    assert!(
        error
            .message
            .contains("not allowed by the host's docker policy"),
        "{error}"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the daemon was reached"
    );
    worker.stop().await
}

/// A call with follow-ups (`onChange`): they run only when the main call changed the
/// node, in order, as dry runs in a dry run, each with only its own access (the worker
/// grants /etc write; a follow-up sent with read access cannot write), and the sequence
/// stops at the first that fails. Checked on the files, not only on the answer.
#[tokio::test]
async fn follow_ups_run_only_after_a_change_each_with_its_own_access() -> anyhow::Result<()> {
    let worker = Worker::start(EtcAccess::Write, Limits::default()).await?;
    let conf = worker.etc.path().join("demo.conf");
    let marker = worker.etc.path().join("restarted");
    std::fs::write(&conf, "a\n")?;
    let module = plugin("etc-file");
    assert_eq!(worker.upload(&module).await?.status(), StatusCode::CREATED);
    let digest = format!("sha256:{}", hex_digest(&module));
    let read = serde_json::json!({"etc": "read", "docker": false, "containerd": false});
    let write = serde_json::json!({"etc": "write", "docker": false, "containerd": false});
    // The "handler": appends a line to a marker file, once per run that changed.
    let handler = |n: u32, access: &serde_json::Value| {
        serde_json::json!({"digest": digest, "method": "ensure-line", "access": access,
            "params": {"path": "/etc/restarted", "line": format!("run {n}"), "create": true}})
    };
    let invoke = |line: &str, dry_run: bool, on_change: Vec<serde_json::Value>| {
        let body = serde_json::json!({"digest": digest, "method": "ensure-line",
            "params": {"path": "/etc/demo.conf", "line": line}, "dryRun": dry_run,
            "access": write, "onChange": on_change, "timeoutMs": 10_000});
        worker
            .client
            .post(worker.url("/v1/invoke"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };

    // A dry run that would change: the follow-up runs as a dry run and writes nothing.
    let out: InvokeOutcome = invoke("b", true, vec![handler(1, &write)])
        .await?
        .json()
        .await?;
    assert!(out.changed);
    assert_eq!(out.on_change.len(), 1, "{out:?}");
    let f = out.on_change[0]
        .outcome
        .as_ref()
        .context("dry-run follow-up outcome")?;
    assert!(
        f.changed,
        "a dry run reports what the follow-up would do: {f:?}"
    );
    assert!(!marker.exists(), "a dry run ran a follow-up for real");

    // A real change: the follow-up runs and changes its file.
    let out: InvokeOutcome = invoke("b", false, vec![handler(1, &write)])
        .await?
        .json()
        .await?;
    assert!(out.changed && out.on_change.len() == 1, "{out:?}");
    assert!(out.on_change[0].error.is_none(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&marker)?, "run 1\n");

    // The same call again changes nothing: no follow-up runs.
    let out: InvokeOutcome = invoke("b", false, vec![handler(2, &write)])
        .await?
        .json()
        .await?;
    assert!(!out.changed && out.on_change.is_empty(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&marker)?, "run 1\n");

    // A follow-up sent with read access cannot write although the worker could; the one
    // after it does not run.
    let out: InvokeOutcome = invoke("c", false, vec![handler(3, &read), handler(4, &write)])
        .await?
        .json()
        .await?;
    assert!(out.changed, "{out:?}");
    assert_eq!(
        out.on_change.len(),
        1,
        "the sequence stops at the failure: {out:?}"
    );
    let e = out.on_change[0]
        .error
        .as_ref()
        .context("the read-only follow-up's error")?;
    assert!(out.on_change[0].outcome.is_none());
    assert!(
        e.message.contains("read-only")
            || e.message.contains("denied")
            || e.kind == ErrorKind::Denied,
        "{e:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&marker)?,
        "run 1\n",
        "a narrowed or skipped follow-up wrote"
    );
    assert_eq!(std::fs::read_to_string(&conf)?, "a\nb\nc\n");

    // Bad follow-ups are refused before anything runs, naming the field.
    let response = invoke(
        "d",
        false,
        vec![serde_json::json!({"digest": "nope", "method": "x"})],
    )
    .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: ErrorBody = response.json().await?;
    assert!(
        body.error.message.contains("onChange[0].digest"),
        "{body:?}"
    );
    let too_many = (0..9).map(|n| handler(n, &write)).collect();
    assert_eq!(
        invoke("d", false, too_many).await?.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        std::fs::read_to_string(&conf)?,
        "a\nb\nc\n",
        "a refused request ran"
    );
    worker.stop().await
}
