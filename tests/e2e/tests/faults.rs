//! Faults: maxFailures stops a rollout; a worker killed mid-call fails its node with the
//! reason while the operator goes on; an operator restarted mid-rollout resumes the
//! calls in flight, never running a node twice for one generation.

use std::time::Duration;

use hostplug_api::crd::{NodePhase, TaskState};
use hostplug_e2e::Harness;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DeleteParams;

fn task(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: hostplug-system}}\nspec:\n{spec}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_contained() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;

    // maxFailures 0, one node at a time: the first failure stops the rollout.
    h.apply(&task(
        "max-failures",
        "  targetType: All\n  rollout: {maxParallel: 1, maxFailures: 0}\n  http: {api: etc-file, method: read, parameter: {path: /etc/does-not-exist}}\n",
    ))
    .await?;
    let t = h.wait_finished("max-failures").await?;
    let st = t.status.unwrap_or_default();
    assert_eq!(st.state, TaskState::Failed);
    let phases: Vec<NodePhase> = st.nodes.iter().map(|n| n.phase).collect();
    assert_eq!(
        phases,
        vec![NodePhase::Failed, NodePhase::Skipped, NodePhase::Skipped],
        "{:?}",
        st.msg
    );
    assert!(
        st.nodes[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("not-found"),
        "{:?}",
        st.nodes[0]
    );
    // Workers warm up on every target node at once, but a skipped node is never called.
    let uid = t.metadata.uid.clone().unwrap_or_default();
    for n in &st.nodes[1..] {
        assert_eq!(
            h.runs_of(&format!("{uid}/1/{}", n.node)),
            0,
            "skipped {} ran",
            n.node
        );
    }

    // A worker killed while its plugin runs: that node fails with the reason.
    h.publish_plugin("test-spin.wasm", "test-spin", "none")
        .await?;
    h.apply(&task(
        "killed-worker",
        "  workers: [node1, node2]\n  timeoutSeconds: 15\n  rollout: {maxParallel: 2, maxFailures: 2}\n  http: {api: test-spin, method: spin}\n",
    ))
    .await?;
    h.wait_task("killed-worker", |t| {
        t.status.as_ref().is_some_and(|s| {
            s.nodes
                .iter()
                .any(|n| n.node == "node1" && n.phase == NodePhase::Running)
        })
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let running = h.tasks().get("killed-worker").await?;
    let node1_pod = running
        .status
        .unwrap_or_default()
        .nodes
        .into_iter()
        .find(|n| n.node == "node1")
        .and_then(|n| n.pod)
        .unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(h.admin.clone(), hostplug_e2e::NAMESPACE);
    pods.delete(&node1_pod, &DeleteParams::default().grace_period(0))
        .await?;
    let t = h.wait_finished("killed-worker").await?;
    let st = t.status.unwrap_or_default();
    let node1 = st
        .nodes
        .iter()
        .find(|n| n.node == "node1")
        .cloned()
        .unwrap_or_default();
    let node2 = st
        .nodes
        .iter()
        .find(|n| n.node == "node2")
        .cloned()
        .unwrap_or_default();
    assert_eq!(node1.phase, NodePhase::Failed);
    assert!(
        node1
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("unreachable"),
        "{node1:?}"
    );
    assert_eq!(node2.phase, NodePhase::Failed);
    assert!(
        node2
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("timeout"),
        "{node2:?}"
    );

    // The operator killed mid-rollout and started again: the node in flight is resumed
    // (its worker answers the stored outcome), no node runs twice, all succeed. (Before
    // the worker kept outcomes, the node in flight ended "outcome unknown".)
    h.apply(&task(
        "restart",
        "  targetType: All\n  rollout: {maxParallel: 1}\n  http: {api: etc-file, method: ensure-line, parameter: {path: /etc/restart-test.conf, line: once, create: true}}\n",
    ))
    .await?;
    let mid = h
        .wait_task("restart", |t| {
            t.status.as_ref().is_some_and(|s| s.nodes_done >= 1)
        })
        .await?;
    h.kill_operator().await?;
    h.start_operator()?;
    let t = h.wait_finished("restart").await?;
    let st = t.status.unwrap_or_default();
    let done_before: Vec<_> = mid
        .status
        .unwrap_or_default()
        .nodes
        .into_iter()
        .filter(|n| n.phase.is_finished())
        .collect();
    for before in &done_before {
        let after = st.nodes.iter().find(|n| n.node == before.node);
        assert_eq!(
            after.and_then(|n| n.finished_at.clone()),
            before.finished_at.clone(),
            "{} ran again",
            before.node
        );
    }
    assert_eq!(st.state, TaskState::Succeeded, "{:?}", st.msg);
    let uid = t.metadata.uid.clone().unwrap_or_default();
    for n in &st.nodes {
        let invocations = h.runs_of(&format!("{uid}/1/{}", n.node));
        assert_eq!(invocations, 1, "{} invoked {invocations} times", n.node);
        assert_eq!(n.phase, NodePhase::Succeeded, "{n:?}");
        let file = std::fs::read_to_string(h.etc(&n.node)?.join("restart-test.conf"))?;
        assert_eq!(file, "once\n", "{}", n.node);
    }

    // A second replica next to the leader: it waits on the Lease, the task runs once.
    // The restarted operator leads only once the killed one's Lease has run out; the
    // task above may have finished before that (the kill can land after the last node),
    // so wait for it to lead before the replica starts, or both would race for the Lease.
    let leader_log = h.operator_starts();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !h.operator_log(leader_log).contains("became leader") {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted operator never became leader:\n{}",
            h.operator_log(leader_log)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let _replica = h.start_replica()?;
    let replica_log = h.operator_starts();
    h.apply(&task(
        "two-replicas",
        "  targetType: All\n  http: {api: etc-file, method: ensure-line, parameter: {path: /etc/replicas.conf, line: once, create: true}}\n",
    ))
    .await?;
    let t = h.wait_finished("two-replicas").await?;
    let st = t.status.unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded, "{:?}", st.msg);
    let uid = t.metadata.uid.clone().unwrap_or_default();
    for n in &st.nodes {
        assert_eq!(h.runs_of(&format!("{uid}/1/{}", n.node)), 1, "{}", n.node);
    }
    let log = h.operator_log(replica_log);
    assert!(!log.contains("became leader"), "the replica acted:\n{log}");
    let leases: Api<Lease> = Api::namespaced(h.admin.clone(), hostplug_e2e::NAMESPACE);
    let holder = leases
        .get("hostplug-operator")
        .await?
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("operator-2"));
    h.shutdown().await
}
