//! Revert tasks (issue 26, item 3), checked on the nodes' files: three nodes (master,
//! node1, node2).
//!
//! - ensure-line, ensure-block, write (a new file), delete and replace, each a task on
//!   every node, then `kubectl hostplug revert` (the real binary) of each: every file's
//!   bytes, mode and owner as before the tasks (sha256 compared), the new file gone, the
//!   deleted one back. A file edited by hand after its task: that node is refused, its
//!   message naming the file with the diff, the other nodes reverted; `--force` then
//!   reverts it too. Each node reverted exactly once (the worker's log of the revert
//!   task's invocation ids), and the reverted task hears of it by an Event.
//! - A revert uses only the records of the task it names: a revert of A leaves B's
//!   change, and a task recreated under B's name cannot restore the earlier B's record.
//! - The operator SIGKILLed while a revert task's nodes wait for the node lock: the next
//!   operator finishes it, and each node is reverted exactly once.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::Output;
use std::time::Duration;

use hostplug_api::crd::{HostTask, NodePhase, TaskState};
use hostplug_e2e::{Harness, NAMESPACE, workspace_binary};
use kube::ResourceExt;
use kube::api::Api;

const NODES: [&str; 3] = ["master", "node1", "node2"];

/// A file as the revert must restore it: sha256 of the bytes, permission bits, owner
/// and group; `None`: it does not exist.
type Print = Option<(String, u32, u32, u32)>;

fn print(h: &Harness, node: &str, file: &str) -> anyhow::Result<Print> {
    use sha2::Digest as _;
    let path = h.etc(node)?.join(file);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bytes = std::fs::read(&path)?;
    Ok(Some((
        format!("{:x}", sha2::Sha256::digest(&bytes)),
        meta.permissions().mode() & 0o7777,
        meta.uid(),
        meta.gid(),
    )))
}

fn prints(h: &Harness, files: &[&str]) -> anyhow::Result<BTreeMap<(String, String), Print>> {
    let mut out = BTreeMap::new();
    for n in NODES {
        for f in files {
            out.insert((n.to_owned(), (*f).to_owned()), print(h, n, f)?);
        }
    }
    Ok(out)
}

fn task(name: &str, method: &str, parameter: &str) -> String {
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec:\n  targetType: All\n  http:\n    api: etc-file\n    method: {method}\n    parameter: {parameter}\n"
    )
}

/// `kubectl hostplug ARGS` as the administrator; the output whatever the exit code.
async fn cli(h: &Harness, args: &[&str]) -> anyhow::Result<Output> {
    Ok(
        tokio::process::Command::new(workspace_binary("kubectl-hostplug")?)
            .arg("--kubeconfig")
            .arg(h.env.kubeconfig_path())
            .args(["-n", NAMESPACE])
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .await?,
    )
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn node<'a>(t: &'a HostTask, name: &str) -> Option<&'a hostplug_api::crd::NodeResult> {
    t.status.as_ref()?.nodes.iter().find(|n| n.node == name)
}

/// How many times the worker restored for the revert task `t` on `node` (not answers
/// from its outcome store).
fn reverts_of(h: &Harness, t: &HostTask, node: &str) -> usize {
    let uid = t.uid().unwrap_or_default();
    let generation = t.metadata.generation.unwrap_or(1);
    h.worker_log_count("reverting", &format!("{uid}/{generation}/{node}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_edit_is_reverted_exactly_and_a_hand_edit_is_refused() -> anyhow::Result<()> {
    let h = Harness::start_with(Some(2), &[]).await?;
    let files = [
        "line.conf",
        "block.conf",
        "new.conf",
        "gone.conf",
        "swap.conf",
    ];
    for n in NODES {
        let etc = h.etc(n)?;
        let put = |f: &str, content: &str, mode: u32, owner: (u32, u32)| -> anyhow::Result<()> {
            let p = etc.join(f);
            std::fs::write(&p, content)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
            std::os::unix::fs::chown(&p, Some(owner.0), Some(owner.1))?;
            Ok(())
        };
        put("line.conf", "a = 1\n", 0o640, (0, 1000))?;
        put("block.conf", "# settings\nx = 1\n", 0o600, (0, 0))?;
        put("gone.conf", "goodbye\n", 0o604, (1001, 1001))?;
        put("swap.conf", "Port 22\nPermitRootLogin no\n", 0o644, (0, 0))?;
    }
    let before = prints(&h, &files)?;
    let tasks = [
        (
            "t-line",
            task(
                "t-line",
                "ensure-line",
                "{path: /etc/line.conf, line: \"b = 2\"}",
            ),
        ),
        (
            "t-block",
            task(
                "t-block",
                "ensure-block",
                "{path: /etc/block.conf, block: \"y = 2\\nz = 3\"}",
            ),
        ),
        (
            "t-write",
            task(
                "t-write",
                "write",
                "{path: /etc/new.conf, content: \"fresh\\n\", mode: 384}",
            ),
        ),
        (
            "t-delete",
            task("t-delete", "delete", "{path: /etc/gone.conf}"),
        ),
        (
            "t-replace",
            task(
                "t-replace",
                "replace",
                "{path: /etc/swap.conf, regexp: \"^Port 22$\", replacement: \"Port 2222\"}",
            ),
        ),
    ];
    for (_, yaml) in &tasks {
        h.apply(yaml).await?;
    }
    for (name, _) in &tasks {
        let t = h.wait_finished(name).await?;
        let st = t.status.clone().unwrap_or_default();
        assert_eq!(st.state, TaskState::Succeeded, "{name}: {st:?}");
        for n in NODES {
            let r = node(&t, n).cloned().unwrap_or_default();
            assert!(r.changed, "{name} on {n}: {r:?}");
            assert_eq!(
                r.revert.as_ref().map(|v| v.revertible),
                Some(true),
                "{name} on {n}: {r:?}"
            );
        }
    }
    let after = prints(&h, &files)?;
    for ((n, f), p) in &after {
        assert_ne!(
            p,
            &before[&(n.clone(), f.clone())],
            "{f} on {n} did not change"
        );
    }
    // Edited by hand after its task, on node2 only.
    let hand = h.etc("node2")?.join("line.conf");
    let mut edited = std::fs::read_to_string(&hand)?;
    edited.push_str("# edited by hand\n");
    std::fs::write(&hand, &edited)?;
    let hand_print = print(&h, "node2", "line.conf")?;

    // Revert each, newest first, with the real kubectl plugin.
    for (name, _) in tasks.iter().rev() {
        let undo = format!("undo-{name}");
        let out = cli(&h, &["revert", name, "--name", &undo]).await?;
        let t = h.tasks().get(&undo).await?;
        let st = t.status.clone().unwrap_or_default();
        if *name == "t-line" {
            assert_eq!(out.status.code(), Some(1), "{}", text(&out));
            assert_eq!(st.state, TaskState::Failed, "{st:?}");
            let refused = node(&t, "node2").cloned().unwrap_or_default();
            assert_eq!(refused.phase, NodePhase::Failed, "{refused:?}");
            let msg = refused.message.clone().unwrap_or_default();
            assert!(
                msg.contains("/etc/line.conf changed since the task ran")
                    && msg.contains("-# edited by hand"),
                "the node names the file with the diff: {msg}"
            );
            // The command's report shows it too.
            assert!(text(&out).contains("/etc/line.conf"), "{}", text(&out));
            for n in ["master", "node1"] {
                assert_eq!(
                    node(&t, n).map(|r| r.phase),
                    Some(NodePhase::Succeeded),
                    "{n}: {st:?}"
                );
            }
        } else {
            assert!(out.status.success(), "{}", text(&out));
            assert_eq!(st.state, TaskState::Succeeded, "{undo}: {st:?}");
        }
        assert_eq!(
            st.reverted_run.as_ref().map(|r| r.name.as_str()),
            Some(*name)
        );
        for n in NODES {
            assert_eq!(reverts_of(&h, &t, n), 1, "{undo} on {n}");
        }
    }
    let reverted = prints(&h, &files)?;
    for ((n, f), p) in &reverted {
        if n == "node2" && f == "line.conf" {
            assert_eq!(p, &hand_print, "the hand edit is kept");
        } else {
            assert_eq!(p, &before[&(n.clone(), f.clone())], "{f} on {n}");
        }
    }
    for n in NODES {
        assert!(!h.etc(n)?.join("new.conf").exists(), "new.conf on {n}");
        assert_eq!(
            std::fs::read_to_string(h.etc(n)?.join("gone.conf"))?,
            "goodbye\n"
        );
    }
    // The reverted tasks hear of it; their own status is theirs.
    let note = h.wait_task_event("t-block", "Reverted", |_| true).await?;
    assert!(
        note.contains("HostTask hostplug-system/undo-t-block reverted generation 1"),
        "{note}"
    );
    let note = h
        .wait_task_event("t-line", "RevertFailed", |_| true)
        .await?;
    assert!(note.contains("not on node2"), "{note}");
    let line = h.tasks().get("t-line").await?;
    assert_eq!(
        line.status.as_ref().map(|s| s.state),
        Some(TaskState::Succeeded)
    );

    // Forced, the hand-edited node is reverted too (only it: the others are named out).
    let out = cli(
        &h,
        &[
            "revert",
            "t-line",
            "--nodes",
            "node2",
            "--force",
            "--name",
            "undo-line-forced",
        ],
    )
    .await?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        print(&h, "node2", "line.conf")?,
        before[&("node2".to_owned(), "line.conf".to_owned())]
    );
    let forced = h.tasks().get("undo-line-forced").await?;
    assert_eq!(
        forced
            .status
            .as_ref()
            .map(|s| s.nodes.iter().map(|n| n.node.clone()).collect::<Vec<_>>()),
        Some(vec!["node2".to_owned()])
    );

    // Bad combinations are refused naming the field, before any node.
    let out = cli(&h, &["revert", "no-such-task"]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no HostTask \"no-such-task\""),
        "{}",
        text(&out)
    );
    h.apply(&format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: bad-node, namespace: {NAMESPACE}}}\nspec:\n  revert: {{task: t-block, nodes: [node7]}}\n"
    ))
    .await?;
    let t = h.wait_finished("bad-node").await?;
    let msg = t.status.and_then(|s| s.msg).unwrap_or_default();
    assert!(
        msg.starts_with("spec.revert.nodes[0]: task t-block did not run on node \"node7\""),
        "{msg}"
    );
    h.apply(&format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: undo-undo, namespace: {NAMESPACE}}}\nspec:\n  revert: {{task: undo-t-block}}\n"
    ))
    .await?;
    let t = h.wait_finished("undo-undo").await?;
    let msg = t.status.and_then(|s| s.msg).unwrap_or_default();
    assert!(
        msg.starts_with("spec.revert.task: undo-t-block is itself a revert task"),
        "{msg}"
    );
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revert_uses_only_the_records_of_the_task_it_names() -> anyhow::Result<()> {
    let h = Harness::start_with(Some(2), &[]).await?;
    for n in NODES {
        std::fs::write(h.etc(n)?.join("shared.conf"), "base\n")?;
    }
    let a = task(
        "task-a",
        "ensure-line",
        "{path: /etc/shared.conf, line: \"from a\"}",
    );
    let b = task(
        "task-b",
        "ensure-line",
        "{path: /etc/shared.conf, line: \"from b\", create: true}",
    );
    h.apply(&a).await?;
    h.wait_finished("task-a").await?;
    h.apply(&b).await?;
    h.wait_finished("task-b").await?;
    // Reverting B takes back B's line only.
    let out = cli(&h, &["revert", "task-b", "--name", "undo-b"]).await?;
    assert!(out.status.success(), "{}", text(&out));
    for n in NODES {
        assert_eq!(
            std::fs::read_to_string(h.etc(n)?.join("shared.conf"))?,
            "base\nfrom a\n",
            "{n}"
        );
    }
    // B again, then deleted and made again under the same name: the new B changed
    // nothing (its line is there), and a revert naming it on node1 restores the new B's
    // (empty) record, never the earlier B's: the line stays.
    let out = cli(&h, &["rerun", "task-b", "--wait"]).await?;
    assert!(out.status.success(), "{}", text(&out));
    let first_b = h.wait_finished("task-b").await?;
    assert_eq!(
        std::fs::read_to_string(h.etc("node1")?.join("shared.conf"))?,
        "base\nfrom a\nfrom b\n"
    );
    let api = h.tasks();
    api.delete("task-b", &Default::default()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api.get_opt("task-b").await?.is_some() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "task-b not gone");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.apply(&b).await?;
    let second_b = h.wait_finished("task-b").await?;
    assert_ne!(first_b.uid(), second_b.uid());
    assert_eq!(node(&second_b, "node1").map(|n| n.changed), Some(false));
    // Without nodes named: nothing it changed, so refused.
    let out = cli(&h, &["revert", "task-b", "--name", "undo-b2"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = api.get("undo-b2").await?;
    let msg = t.status.and_then(|s| s.msg).unwrap_or_default();
    assert!(
        msg.contains("spec.revert.task: task-b changed no node in its current run"),
        "{msg}"
    );
    let out = cli(
        &h,
        &["revert", "task-b", "--nodes", "node1", "--name", "undo-b3"],
    )
    .await?;
    assert!(out.status.success(), "{}", text(&out));
    let t = api.get("undo-b3").await?;
    assert_eq!(
        node(&t, "node1").map(|n| n.changed),
        Some(false),
        "the new task-b's record is empty: {:?}",
        t.status
    );
    assert_eq!(
        std::fs::read_to_string(h.etc("node1")?.join("shared.conf"))?,
        "base\nfrom a\nfrom b\n",
        "the earlier task-b's record was not used"
    );
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_revert_reverts_each_node_once() -> anyhow::Result<()> {
    let mut h = Harness::start_with(Some(2), &[]).await?;
    for n in NODES {
        std::fs::write(h.etc(n)?.join("demo.conf"), "a = 1\n")?;
    }
    let before = prints(&h, &["demo.conf"])?;
    h.apply(&task(
        "edit",
        "ensure-line",
        "{path: /etc/demo.conf, line: \"b = 2\"}",
    ))
    .await?;
    let t = h.wait_finished("edit").await?;
    assert_eq!(t.status.map(|s| s.state), Some(TaskState::Succeeded));
    // Hold master's node lock: its revert waits for it, in flight.
    let lock_path = h
        .env
        .node_root("master")
        .ok_or_else(|| anyhow::anyhow!("no node simulator"))?
        .join("run/hostplug/mutate.lock");
    let lock = std::fs::OpenOptions::new().write(true).open(&lock_path)?;
    lock.lock()?;
    let out = cli(&h, &["revert", "edit", "--name", "undo-edit", "--no-wait"]).await?;
    assert!(out.status.success(), "{}", text(&out));
    let t = h
        .wait_task("undo-edit", |t| {
            node(t, "master").is_some_and(|n| n.phase == NodePhase::Running)
                && ["node1", "node2"]
                    .iter()
                    .all(|n| node(t, n).is_some_and(|r| r.phase == NodePhase::Succeeded))
        })
        .await?;
    anyhow::ensure!(!t.status.as_ref().is_some_and(|s| s.state.is_finished()));
    // The revert is sent and waits for the lock.
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.kill_operator().await?;
    h.start_operator()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(lock);
    let t = h.wait_finished("undo-edit").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded, "{st:?}");
    assert_eq!(prints(&h, &["demo.conf"])?, before);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in NODES {
        assert_eq!(reverts_of(&h, &t, n), 1, "{n} reverted once");
    }
    h.shutdown().await
}

/// HostState (issue 26, item 5): a correction whose health check fails is reverted on
/// that node — the file's bytes and mode as before the correction — and the node is
/// Failed, naming the check; where the check holds, the correction stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_correction_whose_check_fails_is_reverted() -> anyhow::Result<()> {
    use hostplug_api::state::{HostState, NodeSync};
    let h = Harness::start_with(Some(2), &[]).await?;
    for n in NODES {
        std::fs::write(h.etc(n)?.join("svc.conf"), "a = 1\n")?;
        std::fs::write(h.etc(n)?.join("health.conf"), "ok\n")?;
    }
    // The check fails on node1 only. (`maxFailures: 3`: node1's failure must not stop
    // the round from correcting the others, whichever node's check returns first.)
    std::fs::write(h.etc("node1")?.join("health.conf"), "broken\n")?;
    let before = print(&h, "node1", "svc.conf")?;
    h.apply(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostState\nmetadata: {name: svc}\nspec:\n  targetType: All\n  mode: Enforce\n  intervalSeconds: 3600\n  rollout: {maxParallel: 3, maxFailures: 3}\n  steps:\n  - {api: etc-file, method: ensure-line, parameter: {path: /etc/svc.conf, line: \"b = 2\"}}\n  checks:\n  - api: etc-file\n    method: read\n    parameter: {path: /etc/health.conf}\n    expect: {path: /content, equals: \"ok\\n\"}\n",
    )
    .await?;
    let api: Api<HostState> = Api::all(h.admin.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let st = loop {
        let s = api.get("svc").await?;
        let st = s.status.clone().unwrap_or_default();
        let done = NODES.iter().all(|n| {
            st.nodes
                .iter()
                .any(|r| &r.node == n && matches!(r.sync, NodeSync::InSync | NodeSync::Failed))
        });
        if done {
            break st;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the state never settled: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let failed = st
        .nodes
        .iter()
        .find(|r| r.node == "node1")
        .cloned()
        .unwrap_or_default();
    assert_eq!(failed.sync, NodeSync::Failed, "{st:?}");
    let msg = failed.message.clone().unwrap_or_default();
    assert!(
        msg.contains("health check spec.checks[0] (etc-file/read) failed after the correction")
            && msg.contains(r#""/content" is "broken\n", expected "ok\n""#)
            && msg.contains("the correction was reverted: restored /etc/svc.conf"),
        "{msg}"
    );
    assert_eq!(print(&h, "node1", "svc.conf")?, before, "node1 reverted");
    for n in ["master", "node2"] {
        assert_eq!(
            st.nodes.iter().find(|r| r.node == n).map(|r| r.sync),
            Some(NodeSync::InSync),
            "{st:?}"
        );
        assert_eq!(
            std::fs::read_to_string(h.etc(n)?.join("svc.conf"))?,
            "a = 1\nb = 2\n"
        );
    }
    h.shutdown().await
}
