//! A worker Pod that cannot start: the operator runs with a worker image the node
//! simulator does not map, so every worker Pod ends in `ErrImagePull` /
//! `ImagePullBackOff`. Each node fails with that reason, the rollout goes on to the next
//! node (maxFailures allows it), the task ends Failed, no node's /etc changes, and the
//! Pods that could not start are deleted (a rerun after a fix gets new ones).
//!
//! The worker image is one setting of the operator, so this cannot make only one node's
//! Pod fail; it shows the failure is reported per node and does not stop the rollout.

use hostplug_api::crd::{NodePhase, TaskState};
use hostplug_e2e::{Harness, changed_files};

/// An image the node simulator's image map has no entry for (not even by repository).
const UNMAPPED_IMAGE: &str = "ghcr.io/hostplug/not-in-the-image-map:dev";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_pod_that_cannot_start_fails_its_node() -> anyhow::Result<()> {
    let h = Harness::start_with_operator_env(&[
        ("HOSTPLUG_WORKER_IMAGE", UNMAPPED_IMAGE),
        ("HOSTPLUG_POD_START_TIMEOUT_SECONDS", "10"),
    ])
    .await?;
    let before = h.snapshot()?;

    h.apply(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {name: pod-start, namespace: hostplug-system}\nspec:\n  workers: [node1, node2]\n  rollout: {maxParallel: 1, maxFailures: 2}\n  http: {api: etc-file, method: ensure-line, parameter: {path: /etc/pod-start.conf, line: never, create: true}}\n",
    )
    .await?;
    let started = tokio::time::Instant::now();
    let t = h.wait_finished("pod-start").await?;
    let st = t.status.unwrap_or_default();
    assert_eq!(st.state, TaskState::Failed, "{:?}", st.msg);
    assert_eq!(st.nodes.len(), 2, "{:?}", st.nodes);
    for n in &st.nodes {
        assert_eq!(n.phase, NodePhase::Failed, "{n:?}");
        // Only the reason is asserted: the waiting message after it was seen empty in
        // some runs ("worker Pod cannot start: ErrImagePull: ").
        let msg = n.message.as_deref().unwrap_or_default();
        assert!(
            msg.contains("worker Pod cannot start")
                && (msg.contains("ErrImagePull") || msg.contains("ImagePullBackOff")),
            "{n:?}"
        );
    }
    // The first failure did not stop the rollout: both nodes got a worker Pod (each
    // message above is its Pod's), and each Pod that could not start was discarded, so
    // a later run starts a new one instead of failing on it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let workers = h.worker_pods().await?;
        if workers.values().all(Vec::is_empty) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Pods that cannot start are kept: {workers:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    let changed = changed_files(&before, &h.snapshot()?);
    assert!(changed.is_empty(), "/etc changed: {changed:?}");
    h.shutdown().await
}
