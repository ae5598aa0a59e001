//! "What happens when…" (docs/operations.md): faults in the middle of a rollout, each
//! checked on the nodes' files — the end state a user relies on — and on the message and
//! Event a user sees. One environment for all of them (each scenario leaves the nodes as
//! the next one expects), since a control plane per scenario costs more than the
//! scenarios:
//!
//! - **A task is edited mid-rollout**: the edit is a new generation; the node whose old
//!   call was in flight finishes it (a call in a worker cannot be taken back), then every
//!   node runs the new generation, nodes not reached before the edit only the new one.
//!   Every node ends with the edited content.
//! - **The API server and etcd crash and restart mid-rollout** (down 10 s, longer than
//!   the test's 4 s leader lease): the leader cannot renew its Lease and exits (as it
//!   must), is started again as its Deployment would, resumes the node in flight from
//!   its worker, and every node runs exactly once; the task ends Succeeded.
//! - **The node's disk is full during a write**: a small tmpfs is node2's `/etc`
//!   (`hostplug_testenv::faults::SmallDisk`, mounted before any worker starts), filled
//!   but for 8 KiB; a 64 KiB write fails on that node (the message names the file, the
//!   plugin's I/O error, and what the host saw: the temporary file and "No space left on
//!   device"), the old content is intact byte for byte, and no temporary file is left;
//!   once there is space, the same task edited runs through.
//! - **The operator is down for a minute** (killed while a node's call runs, started
//!   again 60 s later; a second task is applied while it is down): meanwhile the first
//!   task's status stays as last written (`Running`), the second has none, the call in
//!   flight ends in its worker and nothing else starts; once it is back, both tasks end
//!   Succeeded and every node ran each of them exactly once (the call in flight is taken
//!   from its worker, not run again).
//! - **A node is deleted mid-rollout** (a fourth node joins, then its Node object is
//!   deleted while the first node's call runs): that node ends Failed "node node3 no
//!   longer exists" with a `NodeFailed` Event and nothing written on it; the others run
//!   as usual.
//!
//! The other rows of the table are checked where they were written first (named in the
//! table).

use std::collections::BTreeMap;
use std::time::Duration;

use hostplug_api::crd::{HostTask, NodePhase, TaskState};
use hostplug_e2e::{Harness, NAMESPACE, NODES, Tree, changed_files, state_of};
use hostplug_testenv::faults::{FILLER, SmallDisk};
use hostplug_testenv::nodesim::NodeSpec;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};

/// The node whose `/etc` is a small disk.
const SMALL_NODE: &str = "node2";
/// Its size: 1 MiB, room for the simulated node's files and the scenarios before the
/// disk is filled.
const SMALL_DISK_BYTES: u64 = 1 << 20;
/// What the disk keeps free when filled: 8 KiB, less than the write that must fail.
const LEFT_FREE: u64 = 8 << 10;
/// How long the operator stays down: a minute, as the row of the table says, far more
/// than the in-flight call (3 s) and the test lease (4 s).
const OPERATOR_DOWN: Duration = Duration::from_secs(60);
/// How long the API server and etcd stay down: 10 s, more than the test lease (4 s), so
/// the leader cannot renew it meanwhile.
const API_DOWN: Duration = Duration::from_secs(10);

fn task(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec:\n{spec}"
    )
}

/// A slow write on every node, one node at a time: `ms` per node.
fn slow_write(name: &str, path: &str, content: &str, ms: u64) -> String {
    task(
        name,
        &format!(
            "  targetType: All\n  rollout: {{maxParallel: 1}}\n  http: {{api: test-slow-write, method: set, parameter: {{path: {path}, content: {content:?}, ms: {ms}}}}}\n"
        ),
    )
}

fn node_phase(t: &HostTask, phase: NodePhase) -> Option<String> {
    t.status
        .as_ref()?
        .nodes
        .iter()
        .find(|n| n.phase == phase)
        .map(|n| n.node.clone())
}

/// The nodes' files, without the small disk's filler.
fn snapshot(h: &Harness) -> anyhow::Result<BTreeMap<String, Tree>> {
    let mut s = h.snapshot()?;
    for tree in s.values_mut() {
        tree.remove(FILLER);
    }
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_happens_when() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // Before any worker Pod exists: node2's /etc becomes a 1 MiB disk of its own.
    let small_etc = h.etc(SMALL_NODE)?;
    let disk = tokio::task::block_in_place(|| SmallDisk::mount_over(&small_etc, SMALL_DISK_BYTES))?;
    h.publish_plugin("test-slow-write.wasm", "test-slow-write", "write")
        .await?;

    a_task_edited_mid_rollout(&h).await?;
    the_api_server_restarts_mid_rollout(&mut h).await?;
    the_operator_is_down_for_a_minute(&mut h).await?;
    the_disk_is_full_during_a_write(&h, &disk).await?;
    a_node_deleted_mid_rollout(&mut h).await?;

    h.shutdown().await?;
    drop(disk);
    Ok(())
}

async fn a_task_edited_mid_rollout(h: &Harness) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let name = "edited-mid-rollout";
    h.apply(&slow_write(name, "/etc/edited.conf", "v1\n", 3000))
        .await?;
    // One node done, the next one's call running in its worker.
    let mid = h
        .wait_task(name, |t| {
            node_phase(t, NodePhase::Succeeded).is_some()
                && node_phase(t, NodePhase::Running).is_some()
        })
        .await?;
    let done = node_phase(&mid, NodePhase::Succeeded).unwrap_or_default();
    let in_flight = node_phase(&mid, NodePhase::Running).unwrap_or_default();
    let uid = mid.metadata.uid.clone().unwrap_or_default();
    h.tasks()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"http": {"parameter": {"content": "v2\n"}}}}),
            ),
        )
        .await?;
    let t = h.wait_finished(name).await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", st.msg);
    assert_eq!(st.observed_generation, Some(2));
    assert_eq!(st.msg.as_deref(), Some("3/3 nodes succeeded, 3 changed"));
    for node in NODES {
        let file = std::fs::read_to_string(h.etc(node)?.join("edited.conf"))?;
        assert_eq!(file, "v2\n", "{node}");
        let writes = std::fs::read_to_string(h.etc(node)?.join("edited.conf.writes"))?;
        let old_generation = h.runs_of(&format!("{uid}/1/{node}"));
        if node == done || node == in_flight {
            // Its first-generation call ran (the one in flight to its end), then the
            // second generation's.
            assert_eq!(old_generation, 1, "{node}");
            assert_eq!(writes, "write\nwrite\n", "{node}");
        } else {
            assert_eq!(old_generation, 0, "{node}: reached by the old generation");
            assert_eq!(writes, "write\n", "{node}");
        }
        assert_eq!(h.runs_of(&format!("{uid}/2/{node}")), 1, "{node}");
    }
    eprintln!("edited mid-rollout: {:?}", started.elapsed());
    Ok(())
}

async fn the_api_server_restarts_mid_rollout(h: &mut Harness) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let name = "api-server-restart";
    h.apply(&slow_write(name, "/etc/api-restart.conf", "once\n", 3000))
        .await?;
    let mid = h
        .wait_task(name, |t| node_phase(t, NodePhase::Running).is_some())
        .await?;
    let uid = mid.metadata.uid.clone().unwrap_or_default();
    h.env.restart_api_server(API_DOWN).await?;
    eprintln!("API server back after {:?}", started.elapsed());
    // The leader could not renew its Lease while the API server was down, and exits on
    // purpose (a leader that lost its Lease must not act); the Deployment's kubelet
    // restarts the container, which this harness does here.
    let log = h.operator_log(h.operator_starts());
    assert!(
        log.contains("lost the leader lease hostplug-operator (not renewed within 4s)"),
        "the operator kept running without its Lease:\n{}",
        hostplug_e2e::tail(&log, 30)
    );
    h.kill_operator().await?;
    h.start_operator()?;
    let t = h.wait_finished(name).await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", st.msg);
    assert_eq!(st.msg.as_deref(), Some("3/3 nodes succeeded, 3 changed"));
    for node in NODES {
        assert_eq!(h.runs_of(&format!("{uid}/1/{node}")), 1, "{node} ran twice");
        let writes = std::fs::read_to_string(h.etc(node)?.join("api-restart.conf.writes"))?;
        assert_eq!(writes, "write\n", "{node}: written more than once");
        let file = std::fs::read_to_string(h.etc(node)?.join("api-restart.conf"))?;
        assert_eq!(file, "once\n", "{node}");
    }
    eprintln!("API server restart mid-rollout: {:?}", started.elapsed());
    Ok(())
}

async fn the_operator_is_down_for_a_minute(h: &mut Harness) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let in_flight_task = "operator-down-in-flight";
    h.apply(&slow_write(
        in_flight_task,
        "/etc/operator-down.conf",
        "in flight\n",
        3000,
    ))
    .await?;
    let mid = h
        .wait_task(in_flight_task, |t| {
            node_phase(t, NodePhase::Running).is_some()
        })
        .await?;
    let in_flight = node_phase(&mid, NodePhase::Running).unwrap_or_default();
    let uid = mid.metadata.uid.clone().unwrap_or_default();
    h.kill_operator().await?;
    let killed = std::time::Instant::now();
    // What a user sees while it is down: the status as the operator last wrote it.
    let seen = h.tasks().get(in_flight_task).await?;
    let seen_status = seen.status.clone().unwrap_or_default();
    assert_eq!(state_of(&seen), Some(TaskState::Running), "{seen_status:?}");
    assert_eq!(
        seen_status.msg.as_deref(),
        Some("0/3 nodes done, 1 in flight, 0 failed")
    );
    // A task applied while it is down is accepted by the API server, and nobody answers.
    let applied_task = "operator-down-applied";
    h.apply(&slow_write(
        applied_task,
        "/etc/operator-applied.conf",
        "applied\n",
        500,
    ))
    .await?;
    tokio::time::sleep(OPERATOR_DOWN.saturating_sub(killed.elapsed())).await;
    // A minute later: nothing moved. The task's status is as it was, the new task has
    // none; on the nodes, the call in flight ran to its end in its worker and nothing
    // else started.
    let still = h.tasks().get(in_flight_task).await?;
    assert_eq!(
        still.status, seen.status,
        "the status changed with no operator"
    );
    let applied = h.tasks().get(applied_task).await?;
    assert_eq!(applied.status, None, "{:?}", applied.status);
    for node in NODES {
        let etc = h.etc(node)?;
        let written = std::fs::read_to_string(etc.join("operator-down.conf.writes")).ok();
        if node == in_flight {
            assert_eq!(written.as_deref(), Some("write\n"), "{node}");
        } else {
            assert_eq!(written, None, "{node}: started with no operator");
        }
        assert!(!etc.join("operator-applied.conf").exists(), "{node}");
    }
    h.start_operator()?;
    let back = std::time::Instant::now();
    eprintln!("operator down for {:?}", killed.elapsed());

    let mut finished = Vec::new();
    for (name, file, content) in [
        (in_flight_task, "operator-down.conf", "in flight\n"),
        (applied_task, "operator-applied.conf", "applied\n"),
    ] {
        let t = h.wait_finished(name).await?;
        finished.push(back.elapsed());
        let st = t.status.clone().unwrap_or_default();
        assert_eq!(
            state_of(&t),
            Some(TaskState::Succeeded),
            "{name}: {:?}",
            st.msg
        );
        assert_eq!(
            st.msg.as_deref(),
            Some("3/3 nodes succeeded, 3 changed"),
            "{name}"
        );
        let task_uid = t.metadata.uid.clone().unwrap_or_default();
        for node in NODES {
            assert_eq!(
                h.runs_of(&format!("{task_uid}/1/{node}")),
                1,
                "{name}: {node} did not run exactly once"
            );
            let etc = h.etc(node)?;
            let writes = std::fs::read_to_string(etc.join(format!("{file}.writes")))?;
            assert_eq!(writes, "write\n", "{name}: {node} written more than once");
            assert_eq!(
                std::fs::read_to_string(etc.join(file))?,
                content,
                "{name}: {node}"
            );
        }
    }
    // The call in flight was not run again: the new operator took its outcome from the
    // worker.
    assert_eq!(h.runs_of(&format!("{uid}/1/{in_flight}")), 1);
    eprintln!(
        "operator down for a minute: in-flight task done {:?} and applied task done {:?} after the restart; {:?} in all",
        finished[0],
        finished[1],
        started.elapsed()
    );
    Ok(())
}

async fn the_disk_is_full_during_a_write(h: &Harness, disk: &SmallDisk) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let etc = h.etc(SMALL_NODE)?;
    let old: String = (0..100).map(|i| format!("old line {i}\n")).collect();
    std::fs::write(etc.join("big.conf"), &old)?;
    tokio::task::block_in_place(|| disk.fill(LEFT_FREE))?;
    let before = snapshot(h)?;

    let name = "disk-full";
    let content: String = (0..2048).map(|i| format!("new line {i:026}\n")).collect();
    assert!(content.len() as u64 > 4 * LEFT_FREE);
    h.apply(&task(
        name,
        &format!(
            "  workers: [{SMALL_NODE}]\n  http: {{api: etc-file, method: write, parameter: {{path: /etc/big.conf, content: {content:?}}}}}\n"
        ),
    ))
    .await?;
    let t = h.wait_finished(name).await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Failed), "{:?}", st.msg);
    let node = st.nodes.first().cloned().unwrap_or_default();
    assert_eq!(node.phase, NodePhase::Failed, "{node:?}");
    let message = node.message.clone().unwrap_or_default();
    // The plugin's words (its write went through a WASI output stream, whose failure
    // reaches it as a generic I/O error), then what the host saw: the temporary file it
    // was writing and the cause.
    let (plugin_said, host_saw) = message
        .split_once("; the host saw: ")
        .unwrap_or_else(|| panic!("no cause in the message: {message}"));
    assert_eq!(
        plugin_said, "plugin failed (failed): /etc/big.conf: I/O error (os error 29)",
        "{node:?}"
    );
    assert!(
        host_saw.starts_with("writing /etc/.big.conf.hostplug-")
            && host_saw.ends_with(".tmp failed: No space left on device (os error 28)"),
        "{message}"
    );
    // The old content byte for byte, and nothing else changed: no temporary file left.
    assert_eq!(std::fs::read_to_string(etc.join("big.conf"))?, old);
    assert_eq!(changed_files(&before, &snapshot(h)?), vec![]);
    let expected = format!("{SMALL_NODE}: {message}");
    h.wait_task_event(name, "NodeFailed", |note| note == expected)
        .await?;

    // Space again: the task edited (a new generation) writes the file whole.
    tokio::task::block_in_place(|| disk.unfill())?;
    let content2 = format!("{content}one more line\n");
    h.tasks()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"http": {"parameter": {"content": content2}}}}),
            ),
        )
        .await?;
    let t = h.wait_finished(name).await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", st.msg);
    assert_eq!(std::fs::read_to_string(etc.join("big.conf"))?, content2);
    eprintln!("disk full: {:?}", started.elapsed());
    Ok(())
}

async fn a_node_deleted_mid_rollout(h: &mut Harness) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    h.env.add_node(NodeSpec::worker("node3")).await?;
    let name = "node-deleted";
    h.apply(&task(
        name,
        "  targetType: All\n  rollout: {maxParallel: 1, maxFailures: 1}\n  http: {api: test-slow-write, method: set, parameter: {path: /etc/node-deleted.conf, content: \"x\\n\", ms: 3000}}\n",
    ))
    .await?;
    // master runs first (nodes go in name order); node3, the last, is deleted meanwhile.
    let mid = h
        .wait_task(name, |t| node_phase(t, NodePhase::Running).is_some())
        .await?;
    let first = node_phase(&mid, NodePhase::Running).unwrap_or_default();
    assert_ne!(first, "node3");
    Api::<Node>::all(h.admin.clone())
        .delete("node3", &DeleteParams::default())
        .await?;
    let t = h.wait_finished(name).await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Failed), "{:?}", st.msg);
    assert_eq!(
        st.msg.as_deref(),
        Some("3/4 nodes succeeded, 1 failed, 3 changed; node3: node node3 no longer exists")
    );
    for n in &st.nodes {
        let file = h.etc(&n.node)?.join("node-deleted.conf");
        if n.node == "node3" {
            assert_eq!(n.phase, NodePhase::Failed, "{n:?}");
            assert_eq!(n.message.as_deref(), Some("node node3 no longer exists"));
            assert!(!file.exists(), "written on the deleted node");
        } else {
            assert_eq!(n.phase, NodePhase::Succeeded, "{n:?}");
            assert_eq!(std::fs::read_to_string(file)?, "x\n", "{}", n.node);
        }
    }
    h.wait_task_event(name, "NodeFailed", |note| {
        note == "node3: node node3 no longer exists"
    })
    .await?;
    eprintln!("node deleted mid-rollout: {:?}", started.elapsed());
    Ok(())
}
