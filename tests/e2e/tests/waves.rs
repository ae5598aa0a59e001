//! Staged rollouts (issue 26, waves and gates), checked on the nodes' files: four nodes
//! (master, node1, node2, node3; the canary is the first by name), waves `[1, "100%"]`.
//!
//! - A health check (etc-file `read`, an expectation on its output) that fails on the
//!   canary halts the rollout after it: the reason in `status.rollout`, `status.msg` and
//!   an Event, and the other three nodes' files untouched; the file fixed by hand and
//!   `kubectl hostplug resume` lets the rest go, and no node runs twice.
//! - `kubectl hostplug pause|resume|cancel` mid-rollout (waves with an approval gate):
//!   pausing and resuming keep the run (no node runs again), approval moves one wave
//!   on, cancel skips the nodes not started and ends the task naming the cancel; the
//!   files show exactly which nodes ran.
//! - `rollout.onFailure: Revert`: the canary whose health check fails is halted and
//!   reverted (its file's bytes and mode as before the task, sha256 compared), the node's
//!   status says so, a `RolledBack` Event names it, and the other nodes stay untouched;
//!   with the operator SIGKILLed while the revert waits for the node lock, the restarted
//!   one finishes the revert, and the node is reverted exactly once.

use std::process::Output;

use hostplug_api::crd::{HostTask, NodePhase, RolloutPhase, TaskState};
use hostplug_e2e::{Harness, NAMESPACE, state_of, workspace_binary};
use kube::ResourceExt;

const NODES: [&str; 4] = ["master", "node1", "node2", "node3"];

fn task(name: &str, rollout: &str, line: &str) -> String {
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec:\n  targetType: All\n  http:\n    api: etc-file\n    method: ensure-line\n    parameter: {{path: /etc/demo.conf, line: {line:?}}}\n  rollout:\n{rollout}"
    )
}

fn demo(h: &Harness, node: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(h.etc(node)?.join("demo.conf"))?)
}

/// `kubectl hostplug ARGS` as the administrator.
async fn cli(h: &Harness, args: &[&str]) -> anyhow::Result<Output> {
    let out = tokio::process::Command::new(workspace_binary("kubectl-hostplug")?)
        .arg("--kubeconfig")
        .arg(h.env.kubeconfig_path())
        .args(["-n", NAMESPACE])
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl hostplug {args:?}: exit {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

fn rollout_phase(t: &HostTask) -> Option<(i32, RolloutPhase)> {
    t.status
        .as_ref()
        .filter(|s| s.observed_generation == t.metadata.generation)
        .and_then(|s| s.rollout.as_ref())
        .map(|r| (r.wave, r.phase))
}

fn phases(t: &HostTask) -> Vec<(String, NodePhase)> {
    t.status
        .as_ref()
        .map(|s| s.nodes.iter().map(|n| (n.node.clone(), n.phase)).collect())
        .unwrap_or_default()
}

/// The sha256 and the permission bits of a node's /etc/demo.conf.
fn fingerprint(h: &Harness, node: &str) -> anyhow::Result<(String, u32)> {
    use sha2::Digest as _;
    use std::os::unix::fs::PermissionsExt as _;
    let path = h.etc(node)?.join("demo.conf");
    let bytes = std::fs::read(&path)?;
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o7777;
    Ok((format!("{:x}", sha2::Sha256::digest(&bytes)), mode))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_health_check_fails_halts_the_rollout_until_resumed() -> anyhow::Result<()> {
    let h = Harness::start_with(Some(3), &[]).await?;
    for n in NODES {
        std::fs::write(h.etc(n)?.join("demo.conf"), "a = 1\n")?;
        std::fs::write(h.etc(n)?.join("health.conf"), "ok\n")?;
    }
    // The canary is unhealthy.
    std::fs::write(h.etc("master")?.join("health.conf"), "broken\n")?;
    h.apply(&task(
        "canary",
        "    waves: [1, \"100%\"]\n    gate:\n      checks:\n      - api: etc-file\n        method: read\n        parameter: {path: /etc/health.conf}\n        expect: {path: /content, equals: \"ok\\n\"}\n",
        "b = 2",
    ))
    .await?;
    let t = h
        .wait_task("canary", |t| {
            rollout_phase(t) == Some((1, RolloutPhase::Halted))
        })
        .await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(st.state, TaskState::Running, "halted, not ended: {st:?}");
    let r = st.rollout.clone().unwrap_or_default();
    assert_eq!(
        r.summary, "wave 1/2, halted: gate failed on master",
        "{r:?}"
    );
    let why = r.message.clone().unwrap_or_default();
    assert!(
        why.contains("spec.rollout.gate.checks[0] (etc-file/read)")
            && why.contains(r#""/content" is "broken\n", expected "ok\n""#),
        "{why}"
    );
    assert!(
        st.msg
            .as_deref()
            .unwrap_or("")
            .contains("gate failed on master")
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Progressing" && c.status == "False" && c.reason == "Halted"),
        "{:?}",
        st.conditions
    );
    // The canary ran; the other three were not touched.
    assert_eq!(demo(&h, "master")?, "a = 1\nb = 2\n");
    for n in ["node1", "node2", "node3"] {
        assert_eq!(demo(&h, n)?, "a = 1\n", "{n} was touched");
    }
    assert_eq!(
        phases(&t),
        vec![
            ("master".into(), NodePhase::Succeeded),
            ("node1".into(), NodePhase::Pending),
            ("node2".into(), NodePhase::Pending),
            ("node3".into(), NodePhase::Pending),
        ]
    );
    let master = st.nodes.iter().find(|n| n.node == "master");
    assert_eq!(
        master.map(|n| (n.wave, n.checks.iter().map(|c| c.phase).collect::<Vec<_>>())),
        Some((Some(1), vec![NodePhase::Failed]))
    );
    // Still halted a while later: nothing moved.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for n in ["node1", "node2", "node3"] {
        assert_eq!(demo(&h, n)?, "a = 1\n", "{n} was touched while halted");
    }
    h.wait_task_event("canary", "RolloutHalted", |_| true)
        .await?;

    // Fixed by hand, then resumed: the wave is approved, the rest runs, once each.
    std::fs::write(h.etc("master")?.join("health.conf"), "ok\n")?;
    let out = cli(&h, &["resume", "canary"]).await?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("resumed (wave 1 approved)"),
        "{out:?}"
    );
    let t = h.wait_finished("canary").await?;
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", t.status);
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(st.run_generation, Some(1), "resume started no new run");
    assert_eq!(t.spec.rollout.as_ref().map(|r| r.approved_wave), Some(1));
    for n in NODES {
        assert_eq!(demo(&h, n)?, "a = 1\nb = 2\n", "{n}");
        assert_eq!(
            h.runs_of(&format!("{}/1/{n}", t.uid().unwrap_or_default())),
            1,
            "{n}"
        );
    }
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_cancel_mid_rollout() -> anyhow::Result<()> {
    let h = Harness::start_with(Some(3), &[]).await?;
    for n in NODES {
        std::fs::write(h.etc(n)?.join("demo.conf"), "a = 1\n")?;
    }
    h.apply(&task(
        "staged",
        "    waves: [1, 2, 3, \"100%\"]\n    gate: {approval: true}\n",
        "c = 3",
    ))
    .await?;
    let t = h
        .wait_task("staged", |t| {
            rollout_phase(t) == Some((1, RolloutPhase::AwaitingApproval))
        })
        .await?;
    let uid = t.uid().unwrap_or_default();
    assert_eq!(demo(&h, "master")?, "a = 1\nc = 3\n");
    assert_eq!(demo(&h, "node1")?, "a = 1\n");

    // Paused: the gate shows Paused; resume only unpauses (the approval is a second
    // resume), and neither starts a new run.
    cli(&h, &["pause", "staged"]).await?;
    h.wait_task("staged", |t| {
        rollout_phase(t) == Some((1, RolloutPhase::Paused))
    })
    .await?;
    let out = cli(&h, &["resume", "staged"]).await?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("staged resumed\n"),
        "{out:?}"
    );
    h.wait_task("staged", |t| {
        rollout_phase(t) == Some((1, RolloutPhase::AwaitingApproval))
    })
    .await?;
    assert_eq!(demo(&h, "node1")?, "a = 1\n", "node1 ran without approval");

    // Approved: wave 2 (node1) runs, then waits again.
    cli(&h, &["resume", "staged"]).await?;
    let t = h
        .wait_task("staged", |t| {
            rollout_phase(t) == Some((2, RolloutPhase::AwaitingApproval))
        })
        .await?;
    assert_eq!(demo(&h, "node1")?, "a = 1\nc = 3\n");

    // Cancelled: node2 and node3 are skipped; the task fails naming the cancel.
    cli(&h, &["cancel", "staged"]).await?;
    let t2 = h.wait_finished("staged").await?;
    let st = t2.status.clone().unwrap_or_default();
    assert_eq!(st.state, TaskState::Failed, "{st:?}");
    assert!(
        st.msg
            .as_deref()
            .unwrap_or("")
            .starts_with("cancelled (spec.rollout.cancel)"),
        "{:?}",
        st.msg
    );
    assert!(st.conditions.iter().all(|c| c.reason == "Cancelled"));
    assert_eq!(
        phases(&t2),
        vec![
            ("master".into(), NodePhase::Succeeded),
            ("node1".into(), NodePhase::Succeeded),
            ("node2".into(), NodePhase::Skipped),
            ("node3".into(), NodePhase::Skipped),
        ]
    );
    assert_eq!(
        st.rollout.as_ref().map(|r| r.phase),
        Some(RolloutPhase::Cancelled)
    );
    for n in ["node2", "node3"] {
        assert_eq!(demo(&h, n)?, "a = 1\n", "{n} ran after the cancel");
    }
    for n in ["master", "node1"] {
        assert_eq!(h.runs_of(&format!("{uid}/1/{n}")), 1, "{n} ran twice");
    }
    assert!(
        t2.metadata.generation > t.metadata.generation,
        "each control was a spec change"
    );
    assert_eq!(st.run_generation, Some(1));
    // A finished task has no rollout left to control.
    let out = tokio::process::Command::new(workspace_binary("kubectl-hostplug")?)
        .arg("--kubeconfig")
        .arg(h.env.kubeconfig_path())
        .args(["-n", NAMESPACE, "pause", "staged"])
        .output()
        .await?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has ended"));
    for r in [
        "AwaitingApproval",
        "RolloutPaused",
        "WaveStarted",
        "RolloutCancelled",
    ] {
        h.wait_task_event("staged", r, |_| true).await?;
    }
    h.shutdown().await
}

/// Bad waves are refused before any node, naming the field, with a status and an
/// Event; a mutating health check too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_waves_and_mutating_checks_are_refused() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    for (name, rollout, field) in [
        (
            "zero",
            "    waves: [0, \"100%\"]\n",
            "spec.rollout.waves[0]",
        ),
        (
            "too-far",
            "    waves: [1, \"150%\"]\n",
            "spec.rollout.waves[1]",
        ),
        (
            "shrinking",
            "    waves: [\"50%\", \"25%\"]\n",
            "spec.rollout.waves[1]",
        ),
        (
            "lone-gate",
            "    gate: {approval: true}\n",
            "spec.rollout.gate",
        ),
        (
            "writer",
            "    waves: [1, \"100%\"]\n    gate:\n      checks:\n      - {api: etc-file, method: ensure-line, parameter: {path: /etc/x, line: y}}\n",
            "spec.rollout.gate.checks[0].method",
        ),
    ] {
        h.apply(&task(name, rollout, "d = 4")).await?;
        let t = h.wait_finished(name).await?;
        assert_eq!(state_of(&t), Some(TaskState::Failed), "{name}");
        let msg = t
            .status
            .as_ref()
            .and_then(|s| s.msg.clone())
            .unwrap_or_default();
        assert!(msg.starts_with(field), "{name}: {msg}");
        h.wait_task_event(name, "ValidationFailed", |_| true)
            .await?;
    }
    h.shutdown().await
}

/// Prepares the four nodes (demo.conf with mode 0640, a health file that fails on the
/// canary) and applies task `name` (`onFailure: Revert`); returns each node's
/// demo.conf fingerprint from before.
async fn revert_canary(h: &Harness, name: &str) -> anyhow::Result<Vec<(String, u32)>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut before = Vec::new();
    for n in NODES {
        let path = h.etc(n)?.join("demo.conf");
        std::fs::write(&path, "a = 1\n# kept as is\n")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))?;
        std::fs::write(h.etc(n)?.join("health.conf"), "ok\n")?;
        before.push(fingerprint(h, n)?);
    }
    std::fs::write(h.etc("master")?.join("health.conf"), "broken\n")?;
    h.apply(&task(
        name,
        "    waves: [1, \"100%\"]\n    onFailure: Revert\n    gate:\n      checks:\n      - api: etc-file\n        method: read\n        parameter: {path: /etc/health.conf}\n        expect: {path: /content, equals: \"ok\\n\"}\n",
        "b = 2",
    ))
    .await?;
    Ok(before)
}

/// The canary's `revert.reverted`.
fn reverted(t: &HostTask) -> Option<bool> {
    t.status
        .as_ref()
        .and_then(|s| s.nodes.iter().find(|n| n.node == "master"))
        .and_then(|n| n.revert.as_ref())
        .and_then(|r| r.reverted)
}

/// `onFailure: Revert`: the canary's health check fails, the rollout halts after it and
/// the canary is put back exactly as it was; the other nodes are never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_canary_is_reverted_with_on_failure_revert() -> anyhow::Result<()> {
    let h = Harness::start_with(Some(3), &[]).await?;
    let before = revert_canary(&h, "undo").await?;
    let t = h.wait_task("undo", |t| reverted(t).is_some()).await?;
    let st = t.status.clone().unwrap_or_default();
    let master = st
        .nodes
        .iter()
        .find(|n| n.node == "master")
        .cloned()
        .unwrap_or_default();
    assert_eq!(reverted(&t), Some(true), "{master:?}");
    assert!(
        master.changed,
        "the canary's call changed its file: {master:?}"
    );
    let message = master.message.clone().unwrap_or_default();
    assert!(
        message.contains("reverted (rollout.onFailure: Revert): restored /etc/demo.conf"),
        "{message}"
    );
    assert_eq!(rollout_phase(&t), Some((1, RolloutPhase::Halted)));
    // The canary is back byte for byte with its mode; the others were never touched.
    for (n, was) in NODES.iter().zip(&before) {
        assert_eq!(&fingerprint(&h, n)?, was, "{n}");
    }
    assert_eq!(demo(&h, "master")?, "a = 1\n# kept as is\n");
    assert_eq!(
        phases(&t),
        vec![
            ("master".into(), NodePhase::Succeeded),
            ("node1".into(), NodePhase::Pending),
            ("node2".into(), NodePhase::Pending),
            ("node3".into(), NodePhase::Pending),
        ]
    );
    h.wait_task_event("undo", "RolledBack", |_| true).await?;
    let events = h.task_events("undo").await?;
    assert!(
        !events.iter().any(|(r, _)| r == "RevertFailed"),
        "{events:?}"
    );
    // A while later nothing moved: no node ran again, none was reverted again.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for (n, was) in NODES.iter().zip(&before) {
        assert_eq!(&fingerprint(&h, n)?, was, "{n} changed while halted");
    }
    let t = h.wait_task("undo", |_| true).await?;
    assert_eq!(reverted(&t), Some(true));
    let uid = t.uid().unwrap_or_default();
    assert_eq!(h.runs_of(&format!("{uid}/1/master")), 1);
    assert_eq!(
        h.worker_log_count("reverting", &format!("revert/{uid}/1/master")),
        1
    );
    h.shutdown().await
}

/// The operator is SIGKILLed while the canary's revert waits for the node lock (the
/// test holds it from the moment the canary's call ended): the next operator sends the
/// revert again from the status, the worker runs it once the lock is free and answers
/// the repeat, and the node is reverted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_while_reverting_reverts_once() -> anyhow::Result<()> {
    let mut h = Harness::start_with(Some(3), &[]).await?;
    let lock_path = h
        .env
        .node_root("master")
        .ok_or_else(|| anyhow::anyhow!("no node simulator"))?
        .join("run/hostplug/mutate.lock");
    let before = revert_canary(&h, "undo-restart").await?;
    // The canary's call ends, then its health check runs (no lock), then the halt and
    // the revert (under the lock): take the lock in between.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let lock = loop {
        let t = h.tasks().get("undo-restart").await?;
        if phases(&t).first() == Some(&("master".into(), NodePhase::Succeeded)) {
            let f = std::fs::OpenOptions::new().write(true).open(&lock_path)?;
            f.lock()?;
            break f;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the canary never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let halted = h
        .wait_task("undo-restart", |t| {
            rollout_phase(t) == Some((1, RolloutPhase::Halted))
        })
        .await?;
    anyhow::ensure!(
        reverted(&halted).is_none(),
        "reverted before the lock was taken: the test missed its window"
    );
    // The revert is in flight, waiting for the lock.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    h.kill_operator().await?;
    let t = h.tasks().get("undo-restart").await?;
    assert_eq!(reverted(&t), None, "recorded while the node was locked");
    h.start_operator()?;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    drop(lock);
    let t = h
        .wait_task("undo-restart", |t| reverted(t).is_some())
        .await?;
    assert_eq!(reverted(&t), Some(true), "{:?}", t.status);
    for (n, was) in NODES.iter().zip(&before) {
        assert_eq!(&fingerprint(&h, n)?, was, "{n}");
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let uid = t.uid().unwrap_or_default();
    assert_eq!(
        h.worker_log_count("reverting", &format!("revert/{uid}/1/master")),
        1,
        "reverted once"
    );
    assert_eq!(h.runs_of(&format!("{uid}/1/master")), 1);
    h.shutdown().await
}
