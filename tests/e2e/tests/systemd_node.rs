//! A simulated node on a real systemd (`hostplug_testenv::systemd`), through the whole
//! system: the worker's hostPath `/etc` on that node is the systemd node's `/etc`, so a
//! HostTask's edit is the node's edit, and the node's test service only uses it once it
//! is restarted over the node's real system bus.
//!
//! The restart is made here from the host over the bus socket the worker would mount (a
//! stand-in for the systemd capability of issue 23 until it lands; its own e2e test will
//! make the worker do it). What is simulated: the Node object and the worker Pods (the
//! node simulator), not systemd, D-Bus or the service.

use std::time::{Duration, Instant};

use hostplug_api::crd::TaskState;
use hostplug_e2e::{Harness, state_of};
use hostplug_testenv::hostplug::start_node_systemd;
use hostplug_testenv::systemd::DEMO_SERVICE;

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
