//! What decides *when* a node's disruption cycle may begin, and what a plugin's reboot
//! request becomes, through the whole system: a real kube-apiserver, the operator as a
//! process, worker Pods and the real host running the plugins, the node simulator as
//! kubelet (no reboot happens here: its boot ID never changes, so every task here has
//! `reboot: Never` or no `spec.disruption`).
//!
//! - A maintenance window that opens about a minute from now: until it opens the node is
//!   never cordoned nor marked and the file is untouched, the node's status says
//!   `WaitingForWindow` with the opening time and an Event says so; after it opens the
//!   cycle runs (cordon, call, uncordon) and the file holds the line. A HostState in
//!   `Enforce` with the same window on another node: its drift is reported (`Drifted`,
//!   `WaitingForWindow`, a `DisruptionWaiting` Event) and not corrected before the
//!   opening; after it the correction goes through the node's cycle and the node is in
//!   sync, handed back. The task and the correction share the fleet budget (1): never
//!   two nodes marked at once.
//! - The fleet-wide budget (default 1): two tasks with a drain on two nodes, each call
//!   slow (the node stays cordoned for seconds): never two nodes cordoned or marked at
//!   once, checked from the Node objects throughout; the waiting node says
//!   `WaitingForBudget`; both end Succeeded and uncordoned.
//! - A plugin's reboot request (the example `sysctl-conf`, `reboot: true`) with
//!   `reboot: Never` and without `spec.disruption`: nothing is rebooted, and each node's
//!   message says that a reboot was requested and why it was not done.

use std::time::Duration;

use anyhow::{Context, ensure};
use hostplug_api::crd::{HostTask, TaskState};
use hostplug_api::disruption::{DisruptionPhase, MAINTENANCE_ANNOTATION};
use hostplug_api::state::{HostState, NodeSync};
use hostplug_e2e::{Harness, NAMESPACE, state_of, tail};
use hostplug_operator::disruption::{LAST_CYCLE_ANNOTATION, LastCycle};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::{Timestamp, ToSpan};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

/// How long a task here may take once it may start.
const TASK_TIMEOUT: Duration = Duration::from_secs(120);

fn unschedulable(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn marked(n: &Node) -> bool {
    n.annotations().contains_key(MAINTENANCE_ANNOTATION)
}

async fn nodes(h: &Harness) -> anyhow::Result<Vec<Node>> {
    Ok(Api::<Node>::all(h.admin.clone())
        .list(&ListParams::default())
        .await?
        .items)
}

fn phase_of(t: &HostTask, node: &str) -> Option<DisruptionPhase> {
    t.status
        .as_ref()?
        .nodes
        .iter()
        .find(|n| n.node == node)?
        .disruption
        .as_ref()
        .map(|d| d.phase)
}

fn message_of(t: &HostTask, node: &str) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.nodes.iter().find(|n| n.node == node))
        .and_then(|n| n.message.clone())
        .unwrap_or_default()
}

fn finished(t: &HostTask) -> bool {
    t.status.as_ref().is_some_and(|s| s.state.is_finished())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_opens_in_a_minute_holds_tasks_and_state_corrections_until_then()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    // The next whole minute at least 50 s from now: the window opens then, for 10 minutes.
    let now = Timestamp::now();
    let opens = Timestamp::from_second((now.as_second() + 50 + 59) / 60 * 60)?;
    let at = opens.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC);
    h.apply(&format!(
        r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata: {{name: windowed, namespace: {NAMESPACE}}}
spec:
  workers: [node1]
  http:
    api: etc-file
    method: ensure-line
    parameter: {{path: /etc/hostplug-window.conf, line: "window=yes", create: true}}
  disruption:
    drain: true
    reboot: Never
    maintenanceWindows:
      - {{schedule: "{} {} * * *", duration: 10m, timeZone: UTC}}
"#,
        at.minute(),
        at.hour()
    ))
    .await?;
    h.apply(&format!(
        r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostState
metadata: {{name: windowed-state}}
spec:
  workers: [node2]
  mode: Enforce
  intervalSeconds: 10
  steps:
    - {{api: etc-file, method: ensure-line, parameter: {{path: /etc/hostplug-window-state.conf, line: "state=yes", create: true}}}}
  disruption:
    drain: true
    reboot: Never
    maintenanceWindows:
      - {{schedule: "{} {} * * *", duration: 10m, timeZone: UTC}}
"#,
        at.minute(),
        at.hour()
    ))
    .await?;
    let file = h.etc("node1")?.join("hostplug-window.conf");
    let state_file = h.etc("node2")?.join("hostplug-window-state.conf");
    let tasks = h.tasks();
    let states: Api<HostState> = Api::all(h.admin.clone());
    let mut saw_waiting = false;
    let mut saw_state_waiting = false;
    // Until 3 s before the opening: nothing on the node side, and the status says why.
    while Timestamp::now() < opens - 3.seconds() {
        for n in nodes(&h).await? {
            ensure!(
                !unschedulable(&n) && !marked(&n),
                "{} cordoned or marked before the window opened at {opens}",
                n.name_any()
            );
        }
        ensure!(!file.exists(), "the call ran before the window opened");
        ensure!(
            !state_file.exists(),
            "the state corrected node2 before the window opened"
        );
        let t = tasks.get("windowed").await?;
        ensure!(!finished(&t), "finished before the window: {:?}", t.status);
        if phase_of(&t, "node1") == Some(DisruptionPhase::WaitingForWindow) {
            let msg = message_of(&t, "node1");
            ensure!(msg.contains(&opens.to_string()), "{msg}");
            saw_waiting = true;
        }
        let st = states
            .get("windowed-state")
            .await?
            .status
            .unwrap_or_default();
        if let Some(n) = st.nodes.iter().find(|n| n.node == "node2")
            && let Some(d) = &n.disruption
        {
            ensure!(n.sync == NodeSync::Drifted, "{n:?}");
            ensure!(d.phase == DisruptionPhase::WaitingForWindow, "{n:?}");
            let msg = d.message.clone().unwrap_or_default();
            ensure!(msg.contains(&opens.to_string()), "{msg}");
            ensure!(!n.drift.is_empty(), "the drift is not reported: {n:?}");
            saw_state_waiting = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(saw_waiting, "the status never said WaitingForWindow");
    ensure!(
        saw_state_waiting,
        "the HostState's node2 never said WaitingForWindow"
    );
    let state_events: Api<Event> = Api::namespaced(h.admin.clone(), "default");
    let said = state_events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("DisruptionWaiting"))
        .filter_map(|e| e.note)
        .find(|n| n.contains("node2") && n.contains(&opens.to_string()));
    ensure!(
        said.is_some(),
        "no DisruptionWaiting Event on the HostState naming the opening"
    );
    let events: Api<Event> = Api::namespaced(h.admin.clone(), NAMESPACE);
    let said = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("DisruptionWaiting"))
        .filter_map(|e| e.note)
        .find(|n| n.contains("node1") && n.contains(&opens.to_string()));
    ensure!(
        said.is_some(),
        "no DisruptionWaiting Event naming the opening"
    );
    // After the opening: the cycles run, one node at a time (the budget is 1).
    let deadline = tokio::time::Instant::now() + TASK_TIMEOUT;
    let mut saw_cordon = false;
    let mut saw_state_cordon = false;
    let t = loop {
        let all = nodes(&h).await?;
        let in_cycle: Vec<String> = all
            .iter()
            .filter(|n| marked(n))
            .map(ResourceExt::name_any)
            .collect();
        ensure!(
            in_cycle.len() <= 1,
            "two nodes in a cycle at once: {in_cycle:?}"
        );
        for n in &all {
            match n.name_any().as_str() {
                "node1" => saw_cordon |= unschedulable(n),
                "node2" => saw_state_cordon |= unschedulable(n),
                _ => {}
            }
        }
        let t = tasks.get("windowed").await?;
        let st = states
            .get("windowed-state")
            .await?
            .status
            .unwrap_or_default();
        let in_sync = st
            .nodes
            .iter()
            .any(|n| n.node == "node2" && n.sync == NodeSync::InSync);
        if finished(&t) && in_sync {
            break t;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "not finished after the window opened: {:?}\n{}",
            t.status,
            tail(&h.operator_log(h.operator_starts()), 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(state_of(&t) == Some(TaskState::Succeeded), "{:?}", t.status);
    let st = t.status.clone().unwrap_or_default();
    let started = st.nodes[0].started_at.clone().context("started_at")?;
    ensure!(
        started.0 >= opens,
        "node1 started at {} before the window opened at {opens}",
        started.0
    );
    ensure!(saw_cordon || st.nodes[0].logs.iter().any(|l| l.contains("cordoned")));
    let n = Api::<Node>::all(h.admin.clone()).get("node1").await?;
    ensure!(!unschedulable(&n) && !marked(&n), "handed back");
    ensure!(st.nodes[0].disruption.is_none(), "{:?}", st.nodes[0]);
    let text = std::fs::read_to_string(&file)?;
    ensure!(text.lines().any(|l| l == "window=yes"), "{text}");
    // The state's correction: through node2's cycle, after the opening, handed back.
    let text = std::fs::read_to_string(&state_file)?;
    ensure!(text.lines().any(|l| l == "state=yes"), "{text}");
    let n2 = Api::<Node>::all(h.admin.clone()).get("node2").await?;
    ensure!(!unschedulable(&n2) && !marked(&n2), "node2 handed back");
    let state_status = states
        .get("windowed-state")
        .await?
        .status
        .unwrap_or_default();
    let node2 = state_status
        .nodes
        .iter()
        .find(|n| n.node == "node2")
        .context("node2")?;
    ensure!(
        node2.disruption.is_none() && node2.corrections == 1,
        "{node2:?}"
    );
    let corrected_at = node2.last_correction_time.clone().context("corrected")?;
    ensure!(
        corrected_at.0 >= opens,
        "corrected at {} before {opens}",
        corrected_at.0
    );
    // The node's own record of its last cycle: this state's correction, cordoned and
    // uncordoned (a cordon of a node with nothing to evict may be too short to see).
    let last = n2
        .annotations()
        .get(LAST_CYCLE_ANNOTATION)
        .and_then(|v| serde_json::from_str::<LastCycle>(v).ok())
        .context("node2 has no record of a finished cycle")?;
    let state_uid = states
        .get("windowed-state")
        .await?
        .uid()
        .context("state uid")?;
    ensure!(
        last.uid.starts_with(&format!("{state_uid}/")) && last.failure.is_none(),
        "node2's last cycle is not this state's correction: {last:?}"
    );
    ensure!(
        saw_state_cordon || last.summary.contains("cordoned, drained and uncordoned"),
        "node2 was not cordoned for the correction: {last:?}"
    );
    eprintln!(
        "window opened at {opens}; node1 started at {}, finished at {:?}",
        started.0,
        st.nodes[0].finished_at.as_ref().map(|t| t.0)
    );
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_budget_keeps_one_node_in_a_cycle_at_a_time() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.publish_plugin("test-slow-write.wasm", "test-slow-write", "write")
        .await?;
    let task = |name: &str, node: &str| {
        format!(
            r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  workers: [{node}]
  http:
    api: test-slow-write
    method: set
    parameter: {{path: /etc/hostplug-budget.conf, content: "{name}\n", ms: 4000}}
  disruption: {{drain: true, reboot: Never}}
"#
        )
    };
    h.apply(&task("budget-a", "node1")).await?;
    h.apply(&task("budget-b", "node2")).await?;
    let tasks = h.tasks();
    let deadline = tokio::time::Instant::now() + TASK_TIMEOUT * 2;
    let mut cordoned_ever = std::collections::BTreeSet::new();
    let mut most_at_once = 0;
    let mut waited = false;
    let (a, b) = loop {
        let ns = nodes(&h).await?;
        let cordoned: Vec<String> = ns
            .iter()
            .filter(|n| unschedulable(n))
            .map(ResourceExt::name_any)
            .collect();
        let marks = ns.iter().filter(|n| marked(n)).count();
        ensure!(
            cordoned.len() <= 1 && marks <= 1,
            "two nodes in a cycle at once: cordoned {cordoned:?}, {marks} marks"
        );
        most_at_once = most_at_once.max(cordoned.len());
        cordoned_ever.extend(cordoned);
        let a = tasks.get("budget-a").await?;
        let b = tasks.get("budget-b").await?;
        waited |= phase_of(&a, "node1") == Some(DisruptionPhase::WaitingForBudget)
            || phase_of(&b, "node2") == Some(DisruptionPhase::WaitingForBudget);
        if finished(&a) && finished(&b) {
            break (a, b);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "not finished: {:?} {:?}\n{}",
            a.status,
            b.status,
            tail(&h.operator_log(h.operator_starts()), 40)
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    for t in [&a, &b] {
        ensure!(state_of(t) == Some(TaskState::Succeeded), "{:?}", t.status);
    }
    ensure!(
        cordoned_ever.contains("node1") && cordoned_ever.contains("node2"),
        "both nodes were cordoned in turn: {cordoned_ever:?}"
    );
    ensure!(waited, "neither node ever said WaitingForBudget");
    for n in nodes(&h).await? {
        ensure!(
            !unschedulable(&n) && !marked(&n),
            "{} handed back",
            n.name_any()
        );
    }
    eprintln!("budget 1: both nodes cordoned in turn, most cordoned at once {most_at_once}");
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_the_plugin_requests_is_reported_when_the_task_does_not_allow_it()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.publish_plugin("sysctl-conf.wasm", "sysctl-conf", "write")
        .await?;
    let task = |name: &str, node: &str, disruption: &str| {
        format!(
            r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  workers: [{node}]
  http:
    api: sysctl-conf
    method: set
    parameter: {{key: net.core.somaxconn, value: "4096", reboot: true}}
{disruption}"#
        )
    };
    h.apply(&task(
        "sysctl-never",
        "node1",
        "  disruption: {drain: true, reboot: Never}\n",
    ))
    .await?;
    h.apply(&task("sysctl-plain", "node2", "")).await?;
    for (name, node, why_not) in [
        (
            "sysctl-never",
            "node1",
            "not rebooted: spec.disruption.reboot is Never",
        ),
        (
            "sysctl-plain",
            "node2",
            "not rebooted: the task has no spec.disruption",
        ),
    ] {
        let t = h.wait_finished(name).await?;
        ensure!(state_of(&t) == Some(TaskState::Succeeded), "{:?}", t.status);
        let msg = message_of(&t, node);
        ensure!(
            msg.starts_with("reboot requested by the plugin: net.core.somaxconn = 4096")
                && msg.contains(why_not),
            "{name}: {msg}"
        );
        let text = std::fs::read_to_string(h.etc(node)?.join("sysctl.d/99-hostplug.conf"))?;
        ensure!(text.contains("net.core.somaxconn = 4096"), "{text}");
        eprintln!("{name}: {msg}");
    }
    // Again: nothing changes, so nothing needs a reboot and there is no message.
    h.apply(&task(
        "sysctl-again",
        "node1",
        "  disruption: {drain: true, reboot: Never}\n",
    ))
    .await?;
    let t = h.wait_finished("sysctl-again").await?;
    ensure!(state_of(&t) == Some(TaskState::Succeeded), "{:?}", t.status);
    let st = t.status.clone().unwrap_or_default();
    ensure!(
        !st.nodes[0].changed && st.nodes[0].message.is_none(),
        "{st:?}"
    );
    h.shutdown().await
}
