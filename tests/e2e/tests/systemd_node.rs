//! A simulated node on a real systemd (`hostplug_testenv::systemd`), through the whole
//! system: the worker's hostPath `/etc` on that node is the systemd node's `/etc`, so a
//! HostTask's edit is the node's edit, and the node's test service only uses it once it
//! is restarted over the node's real system bus.
//!
//! The first test restarts from the host over the bus socket the worker would mount;
//! the second makes the worker do it, through the systemd-unit plugin in the task's
//! `onChange`, and checks it only happens where the edit changed the node. What is
//! simulated: the Node object and the worker Pods (the
//! node simulator), not systemd, D-Bus or the service.

use std::time::{Duration, Instant};

use hostplug_api::crd::{HostPlugin, TaskState};
use hostplug_e2e::{Harness, state_of};
use hostplug_testenv::hostplug::start_node_systemd;
use hostplug_testenv::systemd::DEMO_SERVICE;
use kube::Api;
use kube::api::{Patch, PatchParams};

/// How long a restart of the test service may take to show.
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);

/// An etc-file ensure-line on node1's /etc/hostplug-demo.conf.
const TASK: &str = r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata:
  name: demo-value
  namespace: hostplug-system
spec:
  workers: [node1]
  http:
    api: etc-file
    method: ensure-line
    parameter:
      path: /etc/hostplug-demo.conf
      line: "value=set-by-a-hosttask"
      regexp: "^value="
  timeoutSeconds: 60
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosttask_edits_the_systemd_nodes_etc_and_a_restart_over_its_bus_takes_effect()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    let node = tokio::task::block_in_place(|| start_node_systemd(&h.env, "node1"))?;
    // The harness's view of node1's /etc is the systemd node's.
    assert_eq!(h.etc("node1")?, node.etc_dir());
    assert!(
        h.etc("node1")?.join("hostplug-demo.conf").is_file(),
        "the image's /etc is the node's"
    );
    let before = node.demo_state()?;
    assert_eq!(before.value, "initial");

    h.apply(TASK).await?;
    let task = h.wait_finished("demo-value").await?;
    assert_eq!(state_of(&task), Some(TaskState::Succeeded), "{task:?}");
    // The worker's edit is inside the node …
    let inside = tokio::task::block_in_place(|| node.exec_ok(&["cat", "/etc/hostplug-demo.conf"]))?;
    assert!(
        inside.lines().any(|l| l == "value=set-by-a-hosttask"),
        "{inside}"
    );
    assert!(!inside.lines().any(|l| l == "value=initial"), "{inside}");
    // … and, without a restart, the running service still uses the old value.
    assert_eq!(node.demo_state()?, before);

    // RestartUnit on the node's bus, from the host path a worker would mount.
    let bus = h
        .env
        .node_root("node1")
        .expect("node1's root")
        .join("run/dbus/system_bus_socket");
    assert_eq!(bus, node.bus_socket());
    let out = tokio::process::Command::new("busctl")
        .arg(format!("--address=unix:path={}", bus.display()))
        .args([
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "RestartUnit",
            "ss",
            DEMO_SERVICE,
            "replace",
        ])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "RestartUnit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    let after = loop {
        if let Ok(s) = node.demo_state()
            && s.pid != before.pid
        {
            break s;
        }
        anyhow::ensure!(started.elapsed() < RESTART_TIMEOUT, "no restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after.value, "set-by-a-hosttask");

    tokio::task::block_in_place(|| node.stop())?;
    h.shutdown().await
}

/// The built-in systemd-unit plugin narrowed, as docs/operations.md shows an administrator
/// doing it, to restarting the test service only; waits until the operator has loaded the
/// narrowed spec.
async fn narrow_systemd_unit(h: &Harness) -> anyhow::Result<()> {
    h.wait_plugin_ready("systemd-unit").await?;
    let api: Api<HostPlugin> = Api::all(h.admin.clone());
    let patched = api
        .patch(
            "systemd-unit",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"capabilities": {"systemd": {
                "units": ["hostplug-*.service"],
                "actions": ["status", "restart"],
            }}}})),
        )
        .await?;
    let generation = patched.metadata.generation;
    let started = Instant::now();
    loop {
        let hp = api.get("systemd-unit").await?;
        if hp
            .status
            .as_ref()
            .is_some_and(|s| s.ready && s.observed_generation == generation)
        {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < RESTART_TIMEOUT,
            "the narrowed systemd-unit was not loaded: {:?}",
            hp.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A task that sets the demo value and restarts the demo service where that changed the
/// node (`spec.onChange`), as a dry run or for real.
fn restart_on_change(name: &str, value: &str, dry_run: bool) -> String {
    format!(
        r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata: {{name: {name}, namespace: hostplug-system}}
spec:
  workers: [node1]
  dryRun: {dry_run}
  http:
    api: etc-file
    method: ensure-line
    parameter: {{path: /etc/hostplug-demo.conf, line: "value={value}", regexp: "^value="}}
  onChange:
  - api: systemd-unit
    method: restart
    parameter: {{unit: {DEMO_SERVICE}}}
"#
    )
}

/// Issue 23's "must show", on a real systemd: ensure-line plus a restart on change — the
/// service's MainPID changes and it uses the new value; the same task again changes
/// nothing and restarts nothing; a dry run restarts nothing and says it would; a unit
/// outside the HostPlugin's patterns fails the node naming them, after the edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_restarts_the_service_that_reads_it_and_only_then() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let node = tokio::task::block_in_place(|| start_node_systemd(&h.env, "node1"))?;
    narrow_systemd_unit(&h).await?;
    let before = node.demo_state()?;

    // A dry run: nothing written, nothing restarted; the follow-up says it would.
    h.apply(&restart_on_change("dry", "first", true)).await?;
    let t = h.wait_finished("dry").await?;
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", t.status);
    let n = &t
        .status
        .as_ref()
        .map(|s| s.nodes.clone())
        .unwrap_or_default()[0];
    assert!(n.changed && n.on_change.len() == 1, "{n:?}");
    let out = serde_json::to_string(&n.on_change[0].output)?;
    assert!(out.contains("would"), "{out}");
    assert_eq!(
        node.demo_state()?,
        before,
        "a dry run restarted the service"
    );

    // For real: the service restarts and uses the new value.
    h.apply(&restart_on_change("real", "first", false)).await?;
    let t = h.wait_finished("real").await?;
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", t.status);
    let started = Instant::now();
    let after = loop {
        if let Ok(s) = node.demo_state()
            && s.pid != before.pid
        {
            break s;
        }
        anyhow::ensure!(
            started.elapsed() < RESTART_TIMEOUT,
            "the service was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after.value, "first");

    // The same again: no change, no restart.
    h.apply(&restart_on_change("again", "first", false)).await?;
    let t = h.wait_finished("again").await?;
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", t.status);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        node.demo_state()?.pid,
        after.pid,
        "restarted without a change"
    );

    // A unit outside the HostPlugin's patterns: the edit is made, the node fails naming
    // the patterns, the service is not restarted.
    h.apply(&restart_on_change("other", "second", false).replace(DEMO_SERVICE, "ssh.service"))
        .await?;
    let t = h.wait_finished("other").await?;
    assert_eq!(state_of(&t), Some(TaskState::Failed), "{:?}", t.status);
    let msg = t
        .status
        .as_ref()
        .and_then(|s| s.nodes.first())
        .and_then(|n| n.message.clone())
        .unwrap_or_default();
    assert!(
        msg.contains("onChange[0]") && msg.contains("hostplug-*.service"),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(node.demo_state()?.pid, after.pid);

    tokio::task::block_in_place(|| node.stop())?;
    h.shutdown().await
}
