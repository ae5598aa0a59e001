//! HostTaskPolicy: a HostTask outside the operator's namespace runs only what a policy
//! allows, and is otherwise Failed with reason `PolicyDenied` and an Event, before any
//! worker is created and with every node's files unchanged.

use hostplug_api::crd::{HostTask, TaskState};
use hostplug_e2e::{Harness, changed_files};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;

/// The namespace of the tenant in these tests (not the operator's).
const TEAM: &str = "team-a";

fn task(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: {TEAM}}}\nspec:\n{spec}"
    )
}

const READ_ALL: &str =
    "  targetType: All\n  http: {api: etc-file, method: read, parameter: {path: /etc/hosts}}\n";
const READ_WORKERS: &str =
    "  targetType: Node\n  http: {api: etc-file, method: read, parameter: {path: /etc/hosts}}\n";
const ENSURE_WORKERS: &str = "  targetType: Node\n  http: {api: etc-file, method: ensure-line, parameter: {path: /etc/hosts, line: '10.9.9.9 policy-test'}}\n";

/// Asserts the task was denied for `rule` (Failed, both conditions `PolicyDenied`, the
/// message naming the rule), with a `PolicyDenied` Event in its namespace.
async fn assert_denied(h: &Harness, t: &HostTask, rule: &str) -> anyhow::Result<()> {
    let name = t.metadata.name.clone().unwrap_or_default();
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(st.state, TaskState::Failed, "{name}: {:?}", st.msg);
    let msg = st.msg.unwrap_or_default();
    assert!(
        msg.contains(&format!("no {rule} rule allows it")),
        "{name}: {msg}"
    );
    assert!(st.nodes.is_empty(), "{name}: {:?}", st.nodes);
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
    assert!(
        ready.is_some_and(|c| c.reason == "PolicyDenied" && c.status == "False"),
        "{name}: {:?}",
        st.conditions
    );
    let events: Api<Event> = Api::namespaced(h.admin.clone(), TEAM);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let found = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .any(|e| {
                e.reason.as_deref() == Some("PolicyDenied")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(&name)
                    && e.note.as_deref().is_some_and(|n| n.contains(rule))
            });
        if found {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{name}: no PolicyDenied event in {TEAM}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_outside_the_operator_namespace_need_a_policy() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {TEAM}}}\n"
    ))
    .await?;
    let before = h.snapshot()?;

    // No policy: a mutating task on every node is refused, nothing is created or changed.
    h.apply(&task(
        "no-policy",
        "  targetType: All\n  http: {api: etc-file, method: ensure-line, parameter: {path: /etc/hosts, line: '10.9.9.9 policy-test'}}\n",
    ))
    .await?;
    let t = h.wait_finished_in(TEAM, "no-policy").await?;
    assert_denied(&h, &t, "namespace").await?;
    assert!(h.worker_pods().await?.is_empty(), "a worker was created");
    assert_eq!(changed_files(&before, &h.snapshot()?), vec![]);

    // A read-only policy on worker nodes.
    h.apply(&format!(
        r#"apiVersion: hostplug.dev/v1alpha1
kind: HostTaskPolicy
metadata: {{name: team-a-read}}
spec:
  namespaces: [{TEAM}]
  plugins: [etc-file]
  methods: [read, ensure-line]
"#
    ))
    .await?;
    h.apply(&task("read", READ_WORKERS)).await?;
    let t = h.wait_finished_in(TEAM, "read").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded, "{:?}", st.msg);
    let nodes: Vec<&str> = st.nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(nodes, ["node1", "node2"]);

    // The mutating method is denied, a plugin not listed too, and so is the control plane.
    let denied = [
        ("ensure", ENSURE_WORKERS, "mutating"),
        (
            "docker",
            "  targetType: Node\n  http: {api: docker-image, method: list}\n",
            "plugin",
        ),
        ("read-all", READ_ALL, "nodes"),
        (
            "read-master",
            "  workers: [master]\n  http: {api: etc-file, method: read, parameter: {path: /etc/hosts}}\n",
            "nodes",
        ),
    ];
    let workers = h.worker_pods().await?;
    for (name, spec, rule) in denied {
        h.apply(&task(name, spec)).await?;
        let t = h.wait_finished_in(TEAM, name).await?;
        assert_denied(&h, &t, rule).await?;
    }
    assert_eq!(
        h.worker_pods().await?,
        workers,
        "a denied task started workers"
    );
    // A dry run of the mutating method changes nothing, so the read-only policy allows it.
    h.apply(&task(
        "ensure-dry-run",
        &format!("  dryRun: true\n{ENSURE_WORKERS}"),
    ))
    .await?;
    let t = h.wait_finished_in(TEAM, "ensure-dry-run").await?;
    let st = t.status.unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded, "{:?}", st.msg);

    // Narrowed to node1 by a selector: a selection reaching node2 is denied as a whole.
    h.apply(&format!(
        r#"apiVersion: hostplug.dev/v1alpha1
kind: HostTaskPolicy
metadata: {{name: team-a-read}}
spec:
  namespaces: [{TEAM}]
  plugins: [etc-file]
  methods: [read]
  nodes:
    targetTypes: [Node]
    nodeSelector: {{matchLabels: {{kubernetes.io/hostname: node1}}}}
"#
    ))
    .await?;
    h.apply(&task("read-pool", READ_WORKERS)).await?;
    let t = h.wait_finished_in(TEAM, "read-pool").await?;
    assert_denied(&h, &t, "nodes").await?;
    let msg = t.status.and_then(|s| s.msg).unwrap_or_default();
    assert!(msg.contains("\"node2\""), "{msg}");
    h.apply(&task(
        "read-node1",
        "  targetType: Node\n  nodeSelector: {matchLabels: {kubernetes.io/hostname: node1}}\n  http: {api: etc-file, method: read, parameter: {path: /etc/hosts}}\n",
    ))
    .await?;
    let t = h.wait_finished_in(TEAM, "read-node1").await?;
    let st = t.status.unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded, "{:?}", st.msg);

    // The operator's own namespace needs no policy.
    h.apply(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {name: own, namespace: hostplug-system}\nspec:\n  workers: [master]\n  http: {api: etc-file, method: read, parameter: {path: /etc/hosts}}\n",
    )
    .await?;
    let t = h.wait_finished("own").await?;
    let st = t.status.unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded, "{:?}", st.msg);

    assert_eq!(changed_files(&before, &h.snapshot()?), vec![]);
    h.shutdown().await
}

/// Issue 21 #4: a policy narrows the /etc paths a namespace reaches. With
/// `spec.etc.paths: [hosts, chrony.conf]`, `writePaths: [chrony.conf]` a read of
/// /etc/hosts runs, a read of /etc/resolv.conf fails the node naming the path, a write of
/// /etc/hosts fails and leaves it as it was. Bad paths are refused naming the field, in a
/// HostPlugin's status and in a policy's denial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_narrows_the_etc_paths_of_a_namespace() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {TEAM}}}\n"
    ))
    .await?;
    for node in ["node1", "node2"] {
        std::fs::write(h.etc(node)?.join("resolv.conf"), "nameserver 10.0.0.53\n")?;
    }
    h.apply(&format!(
        r#"apiVersion: hostplug.dev/v1alpha1
kind: HostTaskPolicy
metadata: {{name: team-a-chrony}}
spec:
  namespaces: [{TEAM}]
  plugins: [etc-file]
  allowMutating: true
  etc:
    paths: [hosts, chrony.conf]
    writePaths: [chrony.conf]
    excludeRootEquivalent: true
"#
    ))
    .await?;
    let before = h.snapshot()?;

    h.apply(&task("read-hosts", READ_WORKERS)).await?;
    let t = h.wait_finished_in(TEAM, "read-hosts").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded, "{:?}", st.msg);

    h.apply(&task(
        "read-resolv",
        "  targetType: Node\n  http: {api: etc-file, method: read, parameter: {path: /etc/resolv.conf}}\n",
    ))
    .await?;
    let t = h.wait_finished_in(TEAM, "read-resolv").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(st.state, TaskState::Failed, "{:?}", st.msg);
    for n in &st.nodes {
        let said = format!("{:?} {}", n.message, n.logs.join("\n"));
        assert!(
            said.contains("/etc/resolv.conf is outside the /etc paths this call may read"),
            "{}: the node names the path and why: {said}",
            n.node
        );
    }

    h.apply(&task("write-hosts", ENSURE_WORKERS)).await?;
    let t = h.wait_finished_in(TEAM, "write-hosts").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(st.state, TaskState::Failed, "{:?}", st.msg);
    let said = format!("{:?} {}", st.nodes[0].message, st.nodes[0].logs.join("\n"));
    assert!(
        said.contains("/etc/hosts") && said.contains("outside the /etc paths this call may"),
        "{said}"
    );
    assert_eq!(changed_files(&before, &h.snapshot()?), vec![]);

    // A HostPlugin whose paths are not relative to /etc: its status names the entry.
    h.apply(
        r#"apiVersion: hostplug.dev/v1alpha1
kind: HostPlugin
metadata: {name: etc-bad-paths}
spec:
  source: {builtin: etc-file}
  capabilities:
    etc: read
    etcPaths: [chrony.conf, /etc/hosts]
"#,
    )
    .await?;
    let hp = h.wait_plugin_status("etc-bad-paths").await?;
    let status = hp.status.unwrap_or_default();
    assert!(!status.ready);
    let msg = status.message.unwrap_or_default();
    assert!(
        msg.contains("spec.capabilities.etcPaths[1]") && msg.contains("relative to /etc"),
        "{msg}"
    );

    // A policy with a bad path grants nothing; the denial names the field.
    h.apply(&format!(
        r#"apiVersion: hostplug.dev/v1alpha1
kind: HostTaskPolicy
metadata: {{name: team-a-chrony}}
spec:
  namespaces: [{TEAM}]
  plugins: [etc-file]
  etc:
    paths: [../shadow]
"#
    ))
    .await?;
    h.apply(&task("read-hosts-again", READ_WORKERS)).await?;
    let t = h.wait_finished_in(TEAM, "read-hosts-again").await?;
    assert_denied(&h, &t, "etc").await?;
    let msg = t.status.and_then(|s| s.msg).unwrap_or_default();
    assert!(msg.contains("spec.etc.paths[0]"), "{msg}");
    h.shutdown().await
}
