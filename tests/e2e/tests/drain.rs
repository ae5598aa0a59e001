//! `spec.disruption.drain` through the whole system: a real kube-apiserver and
//! kube-controller-manager (the Deployment, DaemonSet and PodDisruptionBudget
//! controllers, the Eviction API), the operator as a process, worker Pods and workload
//! Pods run by the node simulator.
//!
//! What is simulated: the kubelet (the node simulator: it runs each container as a host
//! process, `hostplug.test/sleep` stands for `/usr/bin/sleep`), so a Pod's end is a
//! process's end. Eviction, the PodDisruptionBudget's arithmetic, cordoning and
//! scheduling are the real control plane's. No reboot happens here: the node
//! simulator's boot ID never changes (see docs/operations.md, "Disruption").
//!
//! - A PodDisruptionBudget that can never be satisfied (minAvailable 1 of 1 replica):
//!   the node is cordoned while the drain tries, fails after `drainTimeoutSeconds` naming
//!   the Pod and the budget, is uncordoned, and the call never runs.
//! - A node an administrator cordoned stays cordoned; a Deployment's Pod is evicted, a
//!   DaemonSet's Pod and the worker stay, the call runs once.
//! - The operator SIGKILLed while the node is draining: the next leader continues from
//!   the node's mark; the node ends uncordoned and the call runs exactly once.

use std::time::Duration;

use anyhow::{Context, ensure};
use hostplug_api::crd::TaskState;
use hostplug_api::disruption::MAINTENANCE_ANNOTATION;
use hostplug_e2e::{Harness, NAMESPACE, state_of};
use hostplug_testenv::EnvConfig;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

/// The workload image: the node simulator runs `/usr/bin/sleep` for it.
const SLEEP_IMAGE: &str = "hostplug.test/sleep";

/// How long a workload may take to run (scheduled, started, Ready).
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(90);

async fn harness() -> anyhow::Result<Harness> {
    Harness::start_with_config(EnvConfig::default().with_image(SLEEP_IMAGE, "/usr/bin/sleep")).await
}

/// A Deployment `name` of one replica pinned to `node`, and optionally a PDB
/// `<name>-pdb` with minAvailable 1.
fn deployment(name: &str, node: &str, pdb: bool) -> String {
    let mut y = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      terminationGracePeriodSeconds: 1
      containers:
        - {{name: main, image: {SLEEP_IMAGE}, args: ["3600"]}}
"#
    );
    if pdb {
        y.push_str(&format!(
            r#"---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: {name}-pdb, namespace: default}}
spec:
  minAvailable: 1
  selector: {{matchLabels: {{app: {name}}}}}
"#
        ));
    }
    y
}

fn task(name: &str, node: &str, path: &str, drain_timeout: u32) -> String {
    format!(
        r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  workers: [{node}]
  http:
    api: etc-file
    method: ensure-line
    parameter: {{path: {path}, line: "drained=yes", create: true}}
  disruption:
    drain: true
    reboot: Never
    drainTimeoutSeconds: {drain_timeout}
"#
    )
}

/// The Running, Ready Pods of `app` in `default`, with their nodes.
async fn ready_pods(h: &Harness, app: &str) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(h.admin.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
        })
        .collect())
}

async fn wait_ready(h: &Harness, app: &str, n: usize) -> anyhow::Result<Vec<Pod>> {
    let deadline = tokio::time::Instant::now() + WORKLOAD_TIMEOUT;
    loop {
        let pods = ready_pods(h, app).await?;
        if pods.len() >= n {
            return Ok(pods);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{app}: {} of {n} Pods Ready after {WORKLOAD_TIMEOUT:?}",
            pods.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the PDB's controller has counted its Pods (`disruptionsAllowed` 0 with
/// one healthy): before that the Eviction API has nothing to go by.
async fn wait_pdb_counted(h: &Harness, name: &str) -> anyhow::Result<()> {
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(h.admin.clone(), "default");
    let deadline = tokio::time::Instant::now() + WORKLOAD_TIMEOUT;
    loop {
        let st = pdbs.get(name).await?.status.unwrap_or_default();
        if st.current_healthy == Some(1) && st.observed_generation.is_some() {
            ensure!(st.disruptions_allowed == Some(0), "{st:?}");
            return Ok(());
        }
        ensure!(tokio::time::Instant::now() < deadline, "PDB {name}: {st:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn node(h: &Harness, name: &str) -> anyhow::Result<Node> {
    Ok(Api::<Node>::all(h.admin.clone()).get(name).await?)
}

fn unschedulable(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn mark(n: &Node) -> Option<String> {
    n.annotations().get(MAINTENANCE_ANNOTATION).cloned()
}

async fn set_unschedulable(h: &Harness, name: &str, on: bool) -> anyhow::Result<()> {
    Api::<Node>::all(h.admin.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"unschedulable": on}})),
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdb_that_cannot_be_satisfied_fails_the_node_naming_it_and_uncordons_it()
-> anyhow::Result<()> {
    let h = harness().await?;
    h.apply(&deployment("web", "node1", true)).await?;
    let pods = wait_ready(&h, "web", 1).await?;
    let pod = pods[0].name_any();
    wait_pdb_counted(&h, "web-pdb").await?;

    h.apply(&task(
        "drain-blocked",
        "node1",
        "/etc/hostplug-drain.conf",
        8,
    ))
    .await?;
    // Watch the node while the task runs: cordoned and marked at some point.
    let mut saw_cordon = false;
    let mut saw_mark = false;
    let tasks = h.tasks();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let t = loop {
        let n = node(&h, "node1").await?;
        saw_cordon |= unschedulable(&n);
        saw_mark |= mark(&n).is_some();
        let t = tasks.get("drain-blocked").await?;
        if t.status.as_ref().is_some_and(|s| s.state.is_finished()) {
            break t;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "task still running: {:?}\noperator log:\n{}",
            t.status,
            hostplug_e2e::tail(&h.operator_log(h.operator_starts()), 60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let st = t.status.clone().unwrap_or_default();
    ensure!(state_of(&t) == Some(TaskState::Failed), "{st:?}");
    let msg = st.nodes[0].message.clone().unwrap_or_default();
    ensure!(
        msg.contains("drainTimeoutSeconds")
            && msg.contains(&format!("default/{pod}"))
            && msg.contains("PodDisruptionBudget default/web-pdb"),
        "the failure names the Pod and the budget: {msg}"
    );
    ensure!(
        saw_cordon && saw_mark,
        "cordoned {saw_cordon}, marked {saw_mark}"
    );
    let n = node(&h, "node1").await?;
    ensure!(!unschedulable(&n), "uncordoned after the failed drain");
    ensure!(mark(&n).is_none(), "the mark is cleared: {:?}", mark(&n));
    ensure!(
        !h.etc("node1")?.join("hostplug-drain.conf").exists(),
        "the call never ran"
    );
    // The budget held: the workload's Pod is still the same one, Ready.
    let after = ready_pods(&h, "web").await?;
    ensure!(after.len() == 1 && after[0].name_any() == pod, "{after:?}");
    eprintln!("blocked drain failed as expected: {msg}");
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_cordon_stays_and_the_drain_evicts_only_what_it_should() -> anyhow::Result<()> {
    let h = harness().await?;
    h.apply(&deployment("api", "node2", false)).await?;
    h.apply(&format!(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent, namespace: default}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - {{name: main, image: {SLEEP_IMAGE}, args: ["3600"]}}
"#
    ))
    .await?;
    let api_pod = wait_ready(&h, "api", 1).await?[0].uid().context("uid")?;
    let agents = wait_ready(&h, "agent", 2).await?;
    let agent_on_node2 = agents
        .iter()
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("node2"))
        .and_then(ResourceExt::uid)
        .context("no agent Pod on node2")?;
    // The administrator cordons node2 before the task.
    set_unschedulable(&h, "node2", true).await?;

    h.apply(&task(
        "drain-admin",
        "node2",
        "/etc/hostplug-drain.conf",
        60,
    ))
    .await?;
    let t = h.wait_finished("drain-admin").await?;
    let st = t.status.clone().unwrap_or_default();
    ensure!(state_of(&t) == Some(TaskState::Succeeded), "{st:?}");
    let n = node(&h, "node2").await?;
    ensure!(unschedulable(&n), "an administrator's cordon stays");
    ensure!(mark(&n).is_none(), "the mark is cleared");
    let text = std::fs::read_to_string(h.etc("node2")?.join("hostplug-drain.conf"))?;
    ensure!(text.lines().any(|l| l == "drained=yes"), "{text}");
    ensure!(
        st.nodes[0].logs.iter().any(|l| l.contains("disruption:")),
        "{:?}",
        st.nodes[0].logs
    );
    // The Deployment's Pod was evicted; the DaemonSet's stayed.
    let pods: Api<Pod> = Api::namespaced(h.admin.clone(), "default");
    let all = pods.list(&ListParams::default()).await?;
    ensure!(
        !all.items
            .iter()
            .any(|p| p.uid().as_deref() == Some(api_pod.as_str())
                && p.metadata.deletion_timestamp.is_none()),
        "the Deployment's Pod on node2 was evicted"
    );
    ensure!(
        all.items
            .iter()
            .any(|p| p.uid().as_deref() == Some(agent_on_node2.as_str())
                && p.metadata.deletion_timestamp.is_none()),
        "the DaemonSet's Pod stayed"
    );
    let uid = t.uid().context("uid")?;
    ensure!(
        h.runs_of(&format!("{uid}/1/node2")) == 1,
        "the call ran once"
    );
    set_unschedulable(&h, "node2", false).await?;
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_killed_during_a_drain_continues_from_the_nodes_mark() -> anyhow::Result<()> {
    let mut h = harness().await?;
    h.apply(&deployment("db", "node1", true)).await?;
    wait_ready(&h, "db", 1).await?;
    wait_pdb_counted(&h, "db-pdb").await?;
    h.apply(&task(
        "drain-restart",
        "node1",
        "/etc/hostplug-drain.conf",
        120,
    ))
    .await?;
    // Wait until node1 is marked Draining and cordoned, then SIGKILL the operator.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = node(&h, "node1").await?;
        if mark(&n).is_some_and(|m| m.contains("Draining")) && unschedulable(&n) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "never draining: {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.kill_operator().await?;
    // The budget now allows the eviction (an administrator relaxes it): the drain can
    // end, but only a new leader can finish it.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(h.admin.clone(), "default");
    pdbs.patch(
        "db-pdb",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"minAvailable": 0}})),
    )
    .await?;
    let n = node(&h, "node1").await?;
    ensure!(
        mark(&n).is_some() && unschedulable(&n),
        "the dead leader left the node marked and cordoned"
    );
    h.start_operator()?;
    let t = h.wait_finished("drain-restart").await?;
    let st = t.status.clone().unwrap_or_default();
    ensure!(state_of(&t) == Some(TaskState::Succeeded), "{st:?}");
    let n = node(&h, "node1").await?;
    ensure!(!unschedulable(&n), "uncordoned by the new leader");
    ensure!(mark(&n).is_none(), "mark cleared");
    let uid = t.uid().context("uid")?;
    ensure!(
        h.runs_of(&format!("{uid}/1/node1")) == 1,
        "the call ran exactly once across the restart"
    );
    h.shutdown().await
}
