//! A reboot through the whole system on real nodes booted by a real systemd
//! (`EnvConfig::with_systemd_real_nodes`): kubelet and containerd are systemd units, the
//! worker asks the node's systemd to reboot over the node's system bus, and the node comes
//! back with a new boot ID (the power cycle is the test environment's stand-in; see
//! `hostplug_testenv::realnode::systemd_node`). hostplug is installed with Helm from
//! images of this build imported into both nodes' containerd, so its operator replicas
//! run on the very nodes that reboot.
//!
//! Two nodes, `maxParallel: 1`, `drain: true`, `reboot: Always`, and a workload that
//! must keep running: a Deployment of two replicas, one per node (required
//! anti-affinity), with a PodDisruptionBudget `minAvailable: 1` — so the second node's
//! drain is blocked until the first node's replica runs again after its reboot. The
//! operator's leader process is SIGKILLed (`kill -9` of its process, found by its Pod's
//! cgroup) while a node is rebooting. Checked from the node side: never two nodes cordoned
//! at once and never fewer than one replica Ready (the Node and Pod objects, throughout),
//! every node rebooted exactly once (its boot IDs as systemd and the kubelet saw them),
//! uncordoned and unmarked at the end, the change in its /etc, both replicas Ready.
//!
//! Then `reboot: IfRequested` with the example `sysctl-conf` asking for a reboot when it
//! changed the file: each node reboots once more; run again, nothing changes and nothing
//! reboots.

mod common;
mod systemd_cluster;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::REAL_NODE_TESTS;
use hostplug_api::crd::{HostTask, TaskState};
use hostplug_api::disruption::{MAINTENANCE_ANNOTATION, MaintenanceMark};
use hostplug_e2e::{NAMESPACE, state_of};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

/// How long the whole rollout may take: two drains, two reboots (each ~3–15 s to Ready
/// here, the worker Pods restarted after), an operator failover: 10 minutes on a loaded
/// 2-core machine.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(600);

const TASK: &str = r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata: {name: reboot-real, namespace: hostplug-system}
spec:
  workers: [sdreal1, sdreal2]
  http:
    api: etc-file
    method: ensure-line
    parameter: {path: /etc/hostplug-reboot.conf, line: "rebooted=yes", create: true}
  rollout: {maxParallel: 1, maxFailures: 0}
  timeoutSeconds: 120
  disruption:
    drain: true
    reboot: Always
    drainTimeoutSeconds: 300
    rebootTimeoutSeconds: 300
"#;

/// The workload the drains must respect: one replica per node, at least one available.
const WORKLOAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: guarded, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: guarded}}
  template:
    metadata: {labels: {app: guarded}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - labelSelector: {matchLabels: {app: guarded}}
              topologyKey: kubernetes.io/hostname
      containers:
        - name: pause
          image: hostplug.test/pause:1
          imagePullPolicy: Never
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: guarded, namespace: default}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: guarded}}
"#;

/// Ready replicas of the guarded workload, by node.
async fn guarded_ready(pods: &Api<Pod>) -> anyhow::Result<Vec<String>> {
    Ok(pods
        .list(&ListParams::default().labels("app=guarded"))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| p.spec.and_then(|s| s.node_name))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_systemd_nodes_reboot_once_each_one_at_a_time_across_a_killed_leader()
-> anyhow::Result<()> {
    let _one_at_a_time = REAL_NODE_TESTS.lock().await;
    let env = systemd_cluster::start(2).await?;
    let admin = env.admin_client();
    let before: BTreeMap<String, usize> = env
        .systemd_real_nodes()
        .iter()
        .map(|n| (n.name().to_owned(), n.boot_ids().len()))
        .collect();

    let tasks: Api<HostTask> = Api::namespaced(admin.clone(), NAMESPACE);
    let nodes: Api<Node> = Api::all(admin.clone());
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NAMESPACE);
    let operator_pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    let workload: Api<Pod> = Api::namespaced(admin.clone(), "default");
    common::kubectl_stdin(&env, &["apply", "-f", "-"], WORKLOAD).await?;
    common::wait_until(
        "both guarded replicas Ready",
        common::INSTALL_TIMEOUT,
        || async { Ok(guarded_ready(&workload).await?.len() == 2) },
    )
    .await?;
    common::kubectl_stdin(&env, &["apply", "-f", "-"], TASK).await?;
    let started = Instant::now();
    let mut killed: Option<String> = None;
    let mut cordoned_ever = std::collections::BTreeSet::new();
    let mut fewest_ready = usize::MAX;
    let t = loop {
        let ready = guarded_ready(&workload).await?;
        fewest_ready = fewest_ready.min(ready.len());
        ensure!(
            !ready.is_empty(),
            "the PodDisruptionBudget was violated: no guarded replica Ready at {:.1?}",
            started.elapsed()
        );
        let list = nodes.list(&ListParams::default()).await?.items;
        let cordoned: Vec<String> = list
            .iter()
            .filter(|n| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true))
            .map(ResourceExt::name_any)
            .collect();
        ensure!(
            cordoned.len() <= 1,
            "two nodes cordoned at once: {cordoned:?}"
        );
        cordoned_ever.extend(cordoned);
        let rebooting = list.iter().find(|n| {
            n.annotations()
                .get(MAINTENANCE_ANNOTATION)
                .and_then(|v| MaintenanceMark::from_annotation(v).ok())
                .is_some_and(|m| m.step == hostplug_api::disruption::CycleStep::Rebooting)
        });
        if killed.is_none()
            && let Some(n) = rebooting
        {
            let holder = leases
                .get("hostplug-operator")
                .await?
                .spec
                .and_then(|s| s.holder_identity)
                .context("no leader")?;
            let uid = operator_pods
                .get(&holder)
                .await?
                .uid()
                .context("the leader's Pod has no uid")?;
            let pid = common::pod_processes(&uid, "hostplug-operat")?
                .into_iter()
                .next()
                .context("no operator process in the leader's Pod")?;
            common::signal(pid, "KILL")?;
            eprintln!(
                "kill -9 of the leader {holder} (pid {pid}) while {} reboots, at {:.1?}",
                n.name_any(),
                started.elapsed()
            );
            killed = Some(holder);
        }
        let t = tasks.get("reboot-real").await?;
        if t.status.as_ref().is_some_and(|s| s.state.is_finished()) {
            break t;
        }
        ensure!(
            started.elapsed() < ROLLOUT_TIMEOUT,
            "not finished after {ROLLOUT_TIMEOUT:?}: {:?}",
            t.status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let took = started.elapsed();
    ensure!(state_of(&t) == Some(TaskState::Succeeded), "{:?}", t.status);
    ensure!(killed.is_some(), "no node was seen rebooting");
    ensure!(
        cordoned_ever.len() == 2,
        "cordoned in turn: {cordoned_ever:?}"
    );
    // The drains evicted the workload (down to one replica at some point) and it came
    // back on both nodes.
    ensure!(
        fewest_ready == 1,
        "the drains never evicted a guarded replica (fewest Ready: {fewest_ready})"
    );
    common::wait_until(
        "both guarded replicas Ready again",
        common::INSTALL_TIMEOUT,
        || async { Ok(guarded_ready(&workload).await?.len() == 2) },
    )
    .await?;
    for node in env.systemd_real_nodes() {
        let name = node.name().to_owned();
        let boots = node.boot_ids();
        ensure!(
            boots.len() == before[&name] + 1,
            "{name} rebooted {} times: {boots:?}",
            boots.len() - before[&name]
        );
        let n = nodes.get(&name).await?;
        ensure!(
            n.spec.as_ref().and_then(|s| s.unschedulable) != Some(true),
            "{name} uncordoned"
        );
        ensure!(
            !n.annotations().contains_key(MAINTENANCE_ANNOTATION),
            "{name} unmarked"
        );
        let text = std::fs::read_to_string(node.etc_dir().join("hostplug-reboot.conf"))?;
        ensure!(text.lines().any(|l| l == "rebooted=yes"), "{name}: {text}");
    }
    eprintln!(
        "two systemd real nodes drained and rebooted one at a time in {took:.1?} \
         ({:.1?} per node), the leader SIGKILLed mid-reboot, the PDB kept",
        took / 2
    );

    // --- a reboot the plugin asks for: `reboot: IfRequested` ------------------------------
    // The example sysctl-conf, published as its author would (`hostplug plugin manifest`),
    // asks for a reboot when `set` changed the file: each node reboots once more. Run
    // again it changes nothing, asks for nothing, and nothing reboots.
    common::publish_plugin(&env, "sysctl-conf.wasm", "sysctl-conf", "write").await?;
    for (name, reboots) in [("sysctl-reboot", 1), ("sysctl-again", 0)] {
        let before: BTreeMap<String, usize> = env
            .systemd_real_nodes()
            .iter()
            .map(|n| (n.name().to_owned(), n.boot_ids().len()))
            .collect();
        common::kubectl_stdin(&env, &["apply", "-f", "-"], &requested(name)).await?;
        let started = Instant::now();
        let t = loop {
            let t = tasks.get(name).await?;
            if t.status.as_ref().is_some_and(|s| s.state.is_finished()) {
                break t;
            }
            ensure!(
                started.elapsed() < ROLLOUT_TIMEOUT,
                "{name} not finished: {:?}",
                t.status
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        ensure!(state_of(&t) == Some(TaskState::Succeeded), "{:?}", t.status);
        for node in env.systemd_real_nodes() {
            let n = node.name().to_owned();
            let did = node.boot_ids().len() - before[&n];
            ensure!(
                did == reboots,
                "{name}: {n} rebooted {did} times, not {reboots}"
            );
            let text = std::fs::read_to_string(node.etc_dir().join("sysctl.d/99-hostplug.conf"))?;
            ensure!(text.contains("net.core.somaxconn = 4096"), "{n}: {text}");
        }
        eprintln!(
            "{name}: every node rebooted {reboots} time(s) in {:.1?}",
            started.elapsed()
        );
    }
    Ok(())
}

/// A task whose plugin asks for a reboot when it changes the node.
fn requested(name: &str) -> String {
    format!(
        r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata: {{name: {name}, namespace: hostplug-system}}
spec:
  workers: [sdreal1, sdreal2]
  http:
    api: sysctl-conf
    method: set
    parameter: {{key: net.core.somaxconn, value: "4096", reboot: true}}
  rollout: {{maxParallel: 1, maxFailures: 0}}
  disruption: {{drain: true, reboot: IfRequested, rebootTimeoutSeconds: 300}}
"#
    )
}
