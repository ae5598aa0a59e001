//! Adversarial HostTasks through the whole chain (operator, worker Pod, Wasm host, the
//! simulated node's /etc), so the fixes of issue 11 do not come back: path escapes
//! through every etc-file method (`..`, absolute paths, symbolic links planted in the
//! node's /etc pointing outside it or at /etc/shadow), sensitive paths, absurd sizes,
//! odd encodings, and a worker reached without its token.
//!
//! The host-level rules are unit-tested in `host/tests` (sandbox.rs, etc_file_plugin.rs);
//! here each case is a real task on a real node, and the end state is checked on the
//! node's files. A worker asked without its token for an invocation is in examples.rs.

use std::collections::BTreeMap;
use std::path::Path;

use hostplug_api::crd::{HostTask, NodePhase, TaskState};
use hostplug_api::worker::secret_keys;
use hostplug_e2e::{Harness, NAMESPACE, plugin_dir};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use serde_json::{Value, json};

/// What the planted secret file outside the node's /etc holds.
const SECRET: &str = "outside-secret-7f3a\n";
/// What the node's /etc/shadow holds.
const SHADOW: &str = "root:$6$adversarial$hash:19000:0:99999:7:::\n";
/// Tasks applied at once: 8, so the pooled workers' slots (4 each) and their queues are
/// never the reason a task fails.
const BATCH: usize = 8;

fn task(name: &str, method: &str, params: &Value, dry_run: bool) -> anyhow::Result<String> {
    Ok(serde_yaml::to_string(&json!({
        "apiVersion": "hostplug.dev/v1alpha1",
        "kind": "HostTask",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "workers": ["node1"],
            "dryRun": dry_run,
            "http": {"api": "etc-file", "method": method, "parameter": params}
        }
    }))?)
}

/// Applies the tasks in batches and returns each one ended.
async fn run_all(
    h: &Harness,
    tasks: &[(String, String, Value, bool)],
) -> anyhow::Result<Vec<HostTask>> {
    let mut out = Vec::new();
    for chunk in tasks.chunks(BATCH) {
        for (name, method, params, dry_run) in chunk {
            h.apply(&task(name, method, params, *dry_run)?).await?;
        }
        for (name, ..) in chunk {
            out.push(h.wait_finished(name).await?);
        }
    }
    Ok(out)
}

/// The node's message of a task's only node.
fn node_message(t: &HostTask) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.nodes.first())
        .and_then(|n| n.message.clone())
        .unwrap_or_default()
}

/// Everything a task's status says, as text (to look for leaked content).
fn status_text(t: &HostTask) -> String {
    serde_json::to_string(&t.status).unwrap_or_default()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_and_sensitive_paths_fail_through_every_method() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let etc = h.etc("node1")?;
    let root = etc.parent().map(Path::to_path_buf).unwrap_or_default();
    let outside = root.join("outside");
    std::fs::create_dir_all(&outside)?;
    let secret = outside.join("secret.txt");
    std::fs::write(&secret, SECRET)?;
    std::fs::write(etc.join("shadow"), SHADOW)?;
    use std::os::unix::fs::symlink;
    symlink(&secret, etc.join("adv-abs-link"))?;
    symlink("../outside/secret.txt", etc.join("adv-rel-link"))?;
    symlink("../outside", etc.join("adv-dir-link"))?;
    symlink("shadow", etc.join("adv-shadow-link"))?;
    let links = [
        "/etc/adv-abs-link",
        "/etc/adv-rel-link",
        "/etc/adv-shadow-link",
    ];
    let paths = [
        "/etc/../outside/secret.txt".to_owned(),
        "/etc/sub/../../outside/secret.txt".to_owned(),
        "../outside/secret.txt".to_owned(),
        secret.display().to_string(),
        "/outside/secret.txt".to_owned(),
        "/etc/adv-abs-link".to_owned(),
        "/etc/adv-rel-link".to_owned(),
        "/etc/adv-dir-link/secret.txt".to_owned(),
        "/etc/shadow".to_owned(),
        "/etc/adv-shadow-link".to_owned(),
    ];
    let calls = |path: &str| {
        vec![
            ("read", json!({"path": path})),
            ("write", json!({"path": path, "content": "pwned\n"})),
            ("ensure-line", json!({"path": path, "line": "pwned"})),
            ("remove-line", json!({"path": path, "regexp": "."})),
            (
                "replace",
                json!({"path": path, "regexp": "root", "replacement": "pwned"}),
            ),
            ("ensure-block", json!({"path": path, "block": "pwned"})),
            ("delete", json!({"path": path})),
        ]
    };
    let mut tasks = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        for (method, params) in calls(path) {
            // Deleting a planted link removes the link, never what it points to; the
            // files below show that.
            if method == "delete" && links.contains(&path.as_str()) {
                continue;
            }
            tasks.push((
                format!("adv-{i}-{method}"),
                method.to_owned(),
                params,
                false,
            ));
        }
    }
    let ended = run_all(&h, &tasks).await?;
    for (t, (_, method, params, _)) in ended.iter().zip(&tasks) {
        let st = t.status.clone().unwrap_or_default();
        assert_eq!(
            st.state,
            TaskState::Failed,
            "{method} {params}: {:?}",
            st.msg
        );
        let node = st.nodes.first().map(|n| n.phase);
        assert_eq!(node, Some(NodePhase::Failed), "{method} {params}");
        let msg = node_message(t);
        // The plugin ran and was refused (not a worker or operator failure).
        assert!(
            msg.starts_with("plugin failed ("),
            "{method} {params}: {msg}"
        );
        let text = status_text(t);
        assert!(
            !text.contains(SECRET.trim()),
            "{method} {params} leaked: {text}"
        );
        assert!(
            !text.contains("adversarial$hash"),
            "{method} {params} leaked: {text}"
        );
    }
    // Sensitive paths say so.
    for t in &ended {
        let name = t.metadata.name.clone().unwrap_or_default();
        if name.starts_with("adv-8-") || name.starts_with("adv-9-") {
            let msg = node_message(t);
            assert!(msg.contains("sensitive path"), "{name}: {msg}");
        }
    }
    assert_eq!(read(&secret), SECRET.as_bytes());
    assert_eq!(read(&etc.join("shadow")), SHADOW.as_bytes());
    assert_eq!(
        std::fs::read_dir(&outside)?.count(),
        1,
        "a file appeared outside /etc"
    );
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_sizes_and_odd_encodings_end_clearly() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let etc = h.etc("node1")?;
    // Not UTF-8, with a NUL: a read must end (as content or as a clear error).
    std::fs::write(etc.join("adv-binary"), [0xff, 0xfe, 0x00, 0x80, b'\n'])?;
    // A file name that is not UTF-8 next to a normal file does not break edits there.
    std::fs::create_dir_all(etc.join("adv-dir"))?;
    std::fs::write(etc.join("adv-dir/ok.conf"), "a\n")?;
    std::fs::write(
        etc.join("adv-dir").join(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"bad-\xff\xfe-name"),
        ),
        "x\n",
    )?;
    let before = h.snapshot()?;
    let long_path = format!("/etc/{}", "a".repeat(5000));
    let deep_path = format!("/etc/{}x", "d/".repeat(2000));
    let huge_line = "x".repeat(1 << 20);
    let failing = [
        ("nul-path", "read", json!({"path": "/etc/hosts\u{0}x"})),
        (
            "nul-write",
            "write",
            json!({"path": "/etc/adv-nul\u{0}", "content": "x"}),
        ),
        (
            "long-path",
            "ensure-line",
            json!({"path": long_path, "line": "x"}),
        ),
        (
            "deep-path",
            "write",
            json!({"path": deep_path, "content": "x"}),
        ),
        (
            "bad-regexp",
            "remove-line",
            json!({"path": "/etc/hosts", "regexp": "(["}),
        ),
        (
            "not-a-file",
            "write",
            json!({"path": "/etc", "content": "x"}),
        ),
    ];
    let tasks: Vec<(String, String, Value, bool)> = failing
        .iter()
        .map(|(n, m, p)| (format!("odd-{n}"), (*m).to_owned(), p.clone(), false))
        .collect();
    for (t, (name, ..)) in run_all(&h, &tasks).await?.iter().zip(&tasks) {
        let st = t.status.clone().unwrap_or_default();
        assert_eq!(st.state, TaskState::Failed, "{name}: {:?}", st.msg);
        let msg = node_message(t);
        assert!(
            msg.starts_with("plugin failed (")
                || st.msg.as_deref().is_some_and(|m| m.starts_with("spec.")),
            "{name}: {msg} / {:?}",
            st.msg
        );
    }
    assert_eq!(hostplug_e2e::changed_files(&before, &h.snapshot()?), vec![]);

    // These end either way, with the node's files as they were (a dry run) or changed
    // only as asked.
    let ending = [
        ("binary", "read", json!({"path": "/etc/adv-binary"}), false),
        (
            "huge-line",
            "ensure-line",
            json!({"path": "/etc/adv-big", "line": huge_line}),
            true,
        ),
        (
            "odd-dir",
            "ensure-line",
            json!({"path": "/etc/adv-dir/ok.conf", "line": "b"}),
            false,
        ),
    ];
    let tasks: Vec<(String, String, Value, bool)> = ending
        .iter()
        .map(|(n, m, p, d)| (format!("odd-{n}"), (*m).to_owned(), p.clone(), *d))
        .collect();
    let ended = run_all(&h, &tasks).await?;
    let by_name: BTreeMap<String, &HostTask> = ended
        .iter()
        .map(|t| (t.metadata.name.clone().unwrap_or_default(), t))
        .collect();
    let state = |n: &str| {
        by_name
            .get(n)
            .and_then(|t| t.status.as_ref())
            .map(|s| s.state)
    };
    assert!(
        state("odd-binary").is_some_and(TaskState::is_finished),
        "{:?}",
        by_name.get("odd-binary").map(|t| status_text(t))
    );
    assert!(state("odd-huge-line").is_some_and(TaskState::is_finished));
    assert_eq!(
        state("odd-odd-dir"),
        Some(TaskState::Succeeded),
        "{:?}",
        by_name.get("odd-odd-dir").map(|t| status_text(t))
    );
    // The status stays small whatever the plugin saw.
    for t in &ended {
        assert!(status_text(t).len() < 600 << 10, "{:?}", t.metadata.name);
    }
    assert_eq!(read(&etc.join("adv-dir/ok.conf")), b"a\nb\n");
    assert!(!etc.join("adv-big").exists(), "a dry run wrote a file");

    // A task too large for the API server is refused before the operator sees it.
    let too_big = "y".repeat(3 << 20);
    let err = h
        .apply(&task(
            "odd-too-big",
            "ensure-line",
            &json!({"path": "/etc/x", "line": too_big}),
            false,
        )?)
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(!err.is_empty(), "a 3 MiB task was accepted");
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stores_nothing_for_a_caller_without_its_token() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.apply(&task(
        "warm",
        "read",
        &json!({"path": "/etc/hosts"}),
        false,
    )?)
    .await?;
    let t = h.wait_finished("warm").await?;
    let st = t.status.unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded, "{:?}", st.msg);
    let pod_name = st
        .nodes
        .first()
        .and_then(|n| n.pod.clone())
        .unwrap_or_default();
    let pod = Api::<Pod>::namespaced(h.admin.clone(), NAMESPACE)
        .get(&pod_name)
        .await?;
    let ip = pod.status.and_then(|s| s.pod_ip).unwrap_or_default();
    let token = Api::<Secret>::namespaced(h.admin.clone(), NAMESPACE)
        .get(&pod_name)
        .await?
        .data
        .and_then(|d| d.get(secret_keys::TOKEN).cloned())
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
        .unwrap_or_default();
    assert!(!token.is_empty());
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .build()?;
    let module = std::fs::read(plugin_dir()?.join("test-spin.wasm"))?;
    let digest = hostplug_api::Digest::of(&module).hex();
    let url = format!("https://{ip}:8443/v1/plugins/{digest}");
    // The worker answers 401 before it reads a body and then closes the connection; a
    // body larger than the socket buffers would still be in flight then, and the client
    // would see the connection closed instead of the answer. The refusal happens before
    // the body matters, so the unauthenticated uploads send the module's first 4 KiB.
    let head = module[..module.len().min(4096)].to_vec();
    for auth in [None, Some("not-the-token-not-the-token-0000"), Some("")] {
        let mut put = http.put(&url).body(head.clone());
        let mut pre = http
            .put(format!("{url}/precompiled"))
            .header(hostplug_api::protocol::ENGINE_HEADER, "x")
            .body(head.clone());
        if let Some(a) = auth {
            put = put.bearer_auth(a);
            pre = pre.bearer_auth(a);
        }
        assert_eq!(put.send().await?.status().as_u16(), 401, "{auth:?}");
        assert_eq!(pre.send().await?.status().as_u16(), 401, "{auth:?}");
    }
    // Nothing was stored: the worker, asked with its token, does not hold the module.
    let held = http.head(&url).bearer_auth(&token).send().await?;
    assert_eq!(held.status().as_u16(), 404);
    // The token is the boundary: with it, the same upload is taken (what the operator does).
    let put = http
        .put(&url)
        .bearer_auth(&token)
        .body(module)
        .send()
        .await?;
    assert!(put.status().is_success(), "{}", put.status());
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_results_never_reach_the_status() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let etc = h.etc("node1")?;
    std::fs::write(etc.join("adv-cred"), "password=hunter2-adversarial\n")?;
    let mut doc: Value = serde_yaml::from_str(&task(
        "sensitive-read",
        "read",
        &json!({"path": "/etc/adv-cred"}),
        false,
    )?)?;
    doc["metadata"]["annotations"] =
        json!({hostplug_api::crd::annotations::SENSITIVE_OUTPUT: "true"});
    h.apply(&serde_yaml::to_string(&doc)?).await?;
    // And a change whose diff would show the secret.
    doc["metadata"]["name"] = json!("sensitive-edit");
    doc["spec"]["http"] = json!({"api": "etc-file", "method": "ensure-line",
        "parameter": {"path": "/etc/adv-cred", "line": "token=hunter3-adversarial"}});
    h.apply(&serde_yaml::to_string(&doc)?).await?;
    for name in ["sensitive-read", "sensitive-edit"] {
        let t = h.wait_finished(name).await?;
        let st = t.status.clone().unwrap_or_default();
        assert_eq!(st.state, TaskState::Succeeded, "{name}: {:?}", st.msg);
        let text = status_text(&t);
        assert!(!text.contains("hunter"), "{name} stored the secret: {text}");
        let out = st.nodes.first().and_then(|n| n.output.clone());
        assert_eq!(
            out.map(|o| o["redacted"].clone()),
            Some(json!(true)),
            "{text}"
        );
    }
    // The edit itself happened.
    let now = std::fs::read_to_string(etc.join("adv-cred"))?;
    assert!(now.contains("token=hunter3-adversarial"), "{now}");
    h.shutdown().await
}
