//! Revert through the worker's routes with the real Wasm host and the real built-in
//! etc-file plugin: each method changes files in a temporary /etc, `POST /v1/revert`
//! puts back exactly what was there (sha256 of the bytes, mode, owner), a hand edit is
//! refused with a diff unless forced, a record of another task is never used, and a
//! call over the record's bounds runs but is not revertible.
//!
//! Needs the components of `make plugins` (HOSTPLUG_PLUGIN_DIR, or ../target/plugins).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hostplug_api::protocol::{ErrorBody, ErrorKind, InvokeOutcome, TaskIdentity};
use hostplug_worker::node_lock::NodeLock;
use hostplug_worker::records::RecordStore;
use hostplug_worker::{
    AppState, BearerToken, EtcAccess, HostRuntime, Limits, LogFormat, WorkerSettings, app,
};
use http_body_util::BodyExt as _;
use sha2::Digest as _;
use tower::ServiceExt as _;

const TOKEN: &str = "revert-test-token-0123456789";

fn plugin(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("HOSTPLUG_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run `make plugins` first",
            path.display()
        )
    })
}

/// A worker with write access to a temporary /etc, a node lock and a record store.
struct Node {
    state: AppState,
    etc: tempfile::TempDir,
    state_dir: tempfile::TempDir,
    _cache: tempfile::TempDir,
    digest: String,
}

impl Node {
    async fn start() -> anyhow::Result<Self> {
        let etc = tempfile::tempdir()?;
        let cache = tempfile::tempdir()?;
        let state_dir = tempfile::tempdir()?;
        let settings = WorkerSettings {
            listen: "127.0.0.1:0".into(),
            tls_cert: "/unused".into(),
            tls_key: "/unused".into(),
            token_file: "/unused".into(),
            etc_dir: etc.path().to_path_buf(),
            etc_access: EtcAccess::Write,
            etc_sensitive: false,
            docker_socket: None,
            containerd_socket: None,
            systemd_socket: None,
            systemd_access: hostplug_api::systemd::SystemdAccess::None,
            image_writes: true,
            cache_dir: cache.path().to_path_buf(),
            artifact_key: None,
            node_lock_file: Some(state_dir.path().join("mutate.lock")),
            log_format: LogFormat::Text,
            limits: Limits::default(),
        };
        let runtime = HostRuntime::new(&settings)?;
        let token = BearerToken::new(TOKEN).map_err(|n| anyhow::anyhow!("token {n}"))?;
        let state = AppState::new(Arc::new(runtime), token, Limits::default())
            .with_node_lock(NodeLock::new(state_dir.path().join("mutate.lock")))
            .with_records(RecordStore::open(&state_dir.path().join("revert"))?);
        let module = plugin("etc-file");
        let digest = hex::encode(sha2::Sha256::digest(&module));
        let node = Self {
            state,
            etc,
            state_dir,
            _cache: cache,
            digest,
        };
        let (status, body) = node
            .send(
                "PUT",
                &format!("/v1/plugins/{}", node.digest),
                Body::from(module),
                "application/wasm",
            )
            .await?;
        anyhow::ensure!(status == StatusCode::CREATED, "upload: {status} {body}");
        Ok(node)
    }

    async fn send(
        &self,
        method: &str,
        uri: &str,
        body: Body,
        content_type: &str,
    ) -> anyhow::Result<(StatusCode, String)> {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(body)?;
        let response = app(self.state.clone()).oneshot(req).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    async fn post(
        &self,
        uri: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<(StatusCode, String)> {
        self.send(
            "POST",
            uri,
            Body::from(serde_json::to_vec(&body)?),
            "application/json",
        )
        .await
    }

    /// Runs `method` of etc-file for `task`.
    async fn call(
        &self,
        task: &TaskIdentity,
        method: &str,
        params: serde_json::Value,
    ) -> anyhow::Result<InvokeOutcome> {
        let (status, body) = self
            .post(
                "/v1/invoke",
                serde_json::json!({"digest": self.digest, "method": method, "params": params, "task": task}),
            )
            .await?;
        anyhow::ensure!(status == StatusCode::OK, "{method}: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    async fn revert(
        &self,
        task: &TaskIdentity,
        force: bool,
        id: &str,
    ) -> anyhow::Result<(StatusCode, String)> {
        self.post(
            "/v1/revert",
            serde_json::json!({"task": task, "force": force, "invocationId": id}),
        )
        .await
    }

    /// Every file under /etc: sha256 of the bytes (or a link's target), mode, owner.
    fn snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        walk(self.etc.path(), self.etc.path(), &mut out);
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let rel = path
            .strip_prefix(root)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let what = if m.file_type().is_symlink() {
            format!("link {:?}", std::fs::read_link(&path).ok())
        } else if m.is_dir() {
            walk(root, &path, out);
            "dir".to_owned()
        } else {
            hex::encode(sha2::Sha256::digest(
                std::fs::read(&path).unwrap_or_default(),
            ))
        };
        out.insert(
            rel,
            format!("{what} {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid()),
        );
    }
}

fn task(name: &str, uid: &str) -> TaskIdentity {
    TaskIdentity {
        namespace: "default".into(),
        name: name.into(),
        uid: uid.into(),
        generation: 1,
    }
}

fn error(body: &str) -> ErrorBody {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not an error body ({e}): {body}"))
}

#[tokio::test]
async fn every_etc_file_method_is_reverted_exactly() -> anyhow::Result<()> {
    let node = Node::start().await?;
    let etc = node.etc.path();
    std::fs::write(etc.join("chrony.conf"), "pool a iburst\n")?;
    std::fs::write(etc.join("sshd_config"), "PermitRootLogin yes\nPort 22\n")?;
    std::fs::write(etc.join("motd"), "welcome\n")?;
    std::fs::write(etc.join("old.conf"), "going away\n")?;
    std::fs::set_permissions(etc.join("old.conf"), std::fs::Permissions::from_mode(0o640))?;
    std::os::unix::fs::chown(etc.join("old.conf"), Some(65534), Some(65534))?;
    std::fs::set_permissions(
        etc.join("chrony.conf"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    let before = node.snapshot();

    let t = task("edit", "uid-1");
    let calls = [
        (
            "ensure-line",
            serde_json::json!({"path": "/etc/chrony.conf", "line": "server ntp.example.com iburst"}),
        ),
        (
            "ensure-block",
            serde_json::json!({"path": "/etc/motd", "block": "managed by hostplug"}),
        ),
        (
            "write",
            serde_json::json!({"path": "/etc/new.conf", "content": "fresh\n", "mode": "0644"}),
        ),
        ("delete", serde_json::json!({"path": "/etc/old.conf"})),
        (
            "replace",
            serde_json::json!({"path": "/etc/sshd_config", "regexp": "^PermitRootLogin .*", "replacement": "PermitRootLogin no"}),
        ),
    ];
    // One task whose generations each make one change: each is reverted on its own, the
    // newest first.
    let mut tasks = Vec::new();
    for (i, (method, params)) in calls.iter().enumerate() {
        let mut ti = t.clone();
        ti.generation = i64::try_from(i)? + 1;
        let out = node.call(&ti, method, params.clone()).await?;
        assert!(out.changed, "{method}");
        let revert = out
            .revert
            .as_ref()
            .expect("the outcome says whether revertible");
        assert!(revert.revertible, "{method}: {revert:?}");
        tasks.push(ti);
    }
    assert_ne!(node.snapshot(), before);
    assert!(etc.join("new.conf").exists() && !etc.join("old.conf").exists());

    for (i, ti) in tasks.iter().enumerate().rev() {
        let (status, body) = node.revert(ti, false, &format!("revert/{i}")).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        let out: InvokeOutcome = serde_json::from_str(&body)?;
        assert!(out.changed, "{body}");
    }
    assert_eq!(node.snapshot(), before, "bytes, mode and owner as before");

    // Exactly once: the same invocation id answers the stored outcome; a new id finds
    // nothing left to restore.
    let (status, body) = node.revert(&tasks[0], false, "revert/0").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(serde_json::from_str::<InvokeOutcome>(&body)?.changed);
    let (status, body) = node.revert(&tasks[0], false, "revert/0-again").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(!serde_json::from_str::<InvokeOutcome>(&body)?.changed);
    assert_eq!(node.snapshot(), before);
    Ok(())
}

#[tokio::test]
async fn a_hand_edit_is_refused_with_a_diff_unless_forced() -> anyhow::Result<()> {
    let node = Node::start().await?;
    let etc = node.etc.path();
    std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n")?;
    let before = node.snapshot();
    let t = task("hosts", "uid-2");
    node.call(
        &t,
        "ensure-line",
        serde_json::json!({"path": "/etc/hosts", "line": "10.0.0.1 db"}),
    )
    .await?;
    std::fs::write(
        etc.join("hosts"),
        "127.0.0.1 localhost\n10.0.0.1 db\n10.9.9.9 hand\n",
    )?;

    let (status, body) = node.revert(&t, false, "r1").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let e = error(&body).error;
    assert_eq!(e.kind, ErrorKind::Failed);
    assert!(
        e.message.contains("/etc/hosts changed since"),
        "{}",
        e.message
    );
    assert!(e.message.contains("-10.9.9.9 hand"), "{}", e.message);
    assert!(std::fs::read_to_string(etc.join("hosts"))?.contains("hand"));

    let (status, body) = node.revert(&t, true, "r2").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(node.snapshot(), before);
    Ok(())
}

#[tokio::test]
async fn a_record_of_another_task_is_never_used() -> anyhow::Result<()> {
    let node = Node::start().await?;
    std::fs::write(node.etc.path().join("motd"), "hi\n")?;
    let a = task("a", "uid-a");
    node.call(
        &a,
        "write",
        serde_json::json!({"path": "/etc/motd", "content": "changed\n"}),
    )
    .await?;
    // Same name, another uid (recreated); another name; another generation.
    let mut other_gen = a.clone();
    other_gen.generation = 2;
    for (i, b) in [task("a", "uid-b"), task("b", "uid-a"), other_gen]
        .iter()
        .enumerate()
    {
        let (status, body) = node.revert(b, true, &format!("b{i}")).await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(error(&body).error.kind, ErrorKind::NotFound, "{body}");
    }
    assert_eq!(
        std::fs::read_to_string(node.etc.path().join("motd"))?,
        "changed\n"
    );
    // The records are outside /etc: a plugin cannot reach them (paths outside /etc are
    // refused by the sandbox).
    let record_dir = node.state_dir.path().join("revert");
    assert!(std::fs::read_dir(&record_dir)?.count() > 0);
    let (status, body) = node
        .post(
            "/v1/invoke",
            serde_json::json!({"digest": node.digest, "method": "write", "params": {"path": format!("{}/x", record_dir.display()), "content": "x"}, "task": a}),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = node
        .post(
            "/v1/invoke",
            serde_json::json!({"digest": node.digest, "method": "write", "params": {"path": "/etc/../revert/x", "content": "x"}, "task": a}),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    Ok(())
}

#[tokio::test]
async fn a_call_over_the_bounds_runs_and_is_not_revertible() -> anyhow::Result<()> {
    let node = Node::start().await?;
    // Many short lines: the diff (three lines of context) stays small.
    let big = "x\n".repeat(usize::try_from(hostplug_host::MAX_RECORD_FILE_BYTES)? / 2 + 10);
    std::fs::write(node.etc.path().join("big.conf"), &big)?;
    let out = node
        .call(
            &task("big", "uid-big"),
            "ensure-line",
            serde_json::json!({"path": "/etc/big.conf", "line": "more"}),
        )
        .await?;
    assert!(out.changed, "the call still runs");
    let r = out.revert.expect("revertibility");
    assert!(!r.revertible);
    assert!(
        r.reason.as_deref().is_some_and(|m| m.contains("big.conf")),
        "{r:?}"
    );
    let (status, body) = node.revert(&task("big", "uid-big"), true, "x").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        error(&body).error.message.contains("not revertible"),
        "{body}"
    );
    Ok(())
}
