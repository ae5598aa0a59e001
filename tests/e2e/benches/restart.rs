//! `make bench`: an edit that takes effect — a value in a service's config file and a
//! restart of that service only where the file changed — hostplug against Ansible on the
//! same real systemd nodes in the same run. Prints numbers, asserts nothing about time.
//!
//! The nodes: `HOSTPLUG_BENCH_RESTART_NODES` (default 3) simulated nodes, each on a real
//! systemd ([`hostplug_testenv::systemd::SystemdNode`]: systemd as PID 1 in a Podman
//! container, its system bus, and the test service `hostplug-demo.service`, which reads
//! `value=` from `/etc/hostplug-demo.conf` once, at start).
//!
//! hostplug: one HostTask over every node, `etc-file ensure-line` with `onChange:
//! systemd-unit restart` (the release operator and worker binaries, the built-in plugins);
//! cold (no worker Pods yet), warm (the pool's workers), and again with the same value
//! (nothing changes, nothing restarts).
//!
//! Ansible: ansible-core's `lineinfile` with `notify:` a handler using the `systemd_service`
//! module, forks 10, `connection: local` with each node's `/etc` directory and the node's
//! system bus (`DBUS_SYSTEM_BUS_ADDRESS`). `systemctl` only talks to a bus when the machine
//! it runs on looks booted with systemd, which this one is not: `ansible-playbook` runs in
//! a mount namespace of its own with an empty `/run` holding `/run/systemd/system`, so its
//! `systemctl` goes to the node's bus (this machine's `/run` is untouched). Without SSH
//! this favours Ansible: a real inventory pays a connection per host.
//!
//! Both are checked on the nodes before a figure is printed: every service runs with the
//! new value under a new PID (and, for the unchanged run, the same PID).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hostplug_api::crd::TaskState;
use hostplug_e2e::Harness;
use hostplug_testenv::hostplug::start_node_systemd;
use hostplug_testenv::systemd::{DEMO_SERVICE, DemoState, SystemdNode};

/// Ansible's forks, as in the rollout bench.
const ANSIBLE_FORKS: usize = 10;
/// How long the services may take to show a restart after a run ended.
const SETTLE: Duration = Duration::from_secs(30);

fn task(name: &str, nodes: usize, value: &str) -> String {
    let workers: Vec<String> = (1..=nodes).map(|i| format!("node{i}")).collect();
    format!(
        r#"apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata: {{name: {name}, namespace: hostplug-system}}
spec:
  workers: [{}]
  rollout: {{maxParallel: {nodes}}}
  http:
    api: etc-file
    method: ensure-line
    parameter: {{path: /etc/hostplug-demo.conf, line: "value={value}", regexp: "^value="}}
  onChange:
  - api: systemd-unit
    method: restart
    parameter: {{unit: {DEMO_SERVICE}}}
"#,
        workers.join(", ")
    )
}

async fn run_task(h: &Harness, name: &str, nodes: usize, value: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    h.apply(&task(name, nodes, value)).await?;
    let t = h.wait_finished(name).await?;
    let took = started.elapsed();
    if t.status.as_ref().map(|s| s.state) != Some(TaskState::Succeeded) {
        bail!("{name} did not succeed: {:?}", t.status.map(|s| s.msg));
    }
    Ok(took)
}

/// Waits until every node's service runs `value`, under a new PID when `restarted`, or
/// still under its old PID otherwise; fails naming the node that does not.
async fn check_nodes(
    nodes: &[SystemdNode],
    before: &[DemoState],
    value: &str,
    restarted: bool,
) -> anyhow::Result<Vec<DemoState>> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let now: Vec<DemoState> = nodes
            .iter()
            .map(SystemdNode::demo_state)
            .collect::<Result<_, _>>()?;
        let bad = now
            .iter()
            .zip(before)
            .zip(nodes)
            .find(|((n, b), _)| n.value != value || (n.pid != b.pid) != restarted);
        match bad {
            None => return Ok(now),
            Some(((n, b), node)) if Instant::now() > deadline => bail!(
                "{}: value {:?} (want {value:?}), PID {} → {} (restart expected: {restarted})",
                node.name(),
                n.value,
                b.pid,
                n.pid
            ),
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Ansible's lineinfile + handler over `nodes`, as described in the module docs.
fn ansible_run(
    playbook: &Path,
    dir: &Path,
    nodes: &[SystemdNode],
    value: &str,
) -> anyhow::Result<Duration> {
    let mut inv = String::from("all:\n  hosts:\n");
    for node in nodes {
        inv.push_str(&format!(
            "    {}:\n      ansible_connection: local\n      ansible_python_interpreter: {}\n      etc_dir: {}\n      bus: \"{}\"\n",
            node.name(),
            hostplug_e2e::ansible::python_of(playbook).display(),
            node.etc_dir().display(),
            node.bus_address(),
        ));
    }
    let inv_path = dir.join("inventory.yaml");
    std::fs::write(&inv_path, inv)?;
    let play = dir.join("play.yaml");
    std::fs::write(
        &play,
        format!(
            r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.lineinfile:
        path: "{{{{ etc_dir }}}}/hostplug-demo.conf"
        regexp: "^value="
        line: "value={value}"
      notify: restart demo
  handlers:
    - name: restart demo
      ansible.builtin.systemd_service:
        name: {DEMO_SERVICE}
        state: restarted
      environment:
        DBUS_SYSTEM_BUS_ADDRESS: "{{{{ bus }}}}"
"#
        ),
    )?;
    let started = Instant::now();
    // A mount namespace with an empty /run that says "booted with systemd" (see the
    // module docs); everything else is this machine's.
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount -t tmpfs hostplug-bench /run && mkdir -p /run/systemd/system && exec "$0" "$@""#)
        .arg(playbook)
        .arg("-i")
        .arg(&inv_path)
        .arg("-f")
        .arg(ANSIBLE_FORKS.to_string())
        .arg(&play)
        .env("ANSIBLE_LOCAL_TEMP", dir.join("tmp"))
        .env("ANSIBLE_HOME", dir.join("home"))
        .output()
        .context("running ansible-playbook")?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "ansible-playbook failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("HOSTPLUG_BENCH_RESTART_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let playbook = hostplug_e2e::ansible::ansible_playbook()?;
    let scratch = tempfile::tempdir()?;

    eprintln!("starting a control plane with {n} simulated nodes, each on a real systemd …");
    let h = Harness::start_with(Some(n), &[("RUST_LOG", "warn")]).await?;
    let nodes = tokio::task::block_in_place(|| {
        (1..=n)
            .map(|i| start_node_systemd(&h.env, &format!("node{i}")))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    h.wait_plugin_ready("systemd-unit").await?;
    let states = |nodes: &[SystemdNode]| -> anyhow::Result<Vec<DemoState>> {
        Ok(nodes
            .iter()
            .map(SystemdNode::demo_state)
            .collect::<Result<_, _>>()?)
    };

    let s0 = states(&nodes)?;
    let cold = run_task(&h, "restart-cold", n, "hostplug-1").await?;
    let s1 = check_nodes(&nodes, &s0, "hostplug-1", true).await?;
    let warm = run_task(&h, "restart-warm", n, "hostplug-2").await?;
    let s2 = check_nodes(&nodes, &s1, "hostplug-2", true).await?;
    let same = run_task(&h, "restart-same", n, "hostplug-2").await?;
    let s3 = check_nodes(&nodes, &s2, "hostplug-2", false).await?;

    let dir = scratch.path().join("ansible");
    std::fs::create_dir_all(&dir)?;
    let a1 = tokio::task::block_in_place(|| ansible_run(&playbook, &dir, &nodes, "ansible-1"))?;
    let s4 = check_nodes(&nodes, &s3, "ansible-1", true).await?;
    let a2 = tokio::task::block_in_place(|| ansible_run(&playbook, &dir, &nodes, "ansible-1"))?;
    check_nodes(&nodes, &s4, "ansible-1", false).await?;

    println!(
        "\n| edit + restart where changed, {n} systemd nodes | hostplug cold | hostplug warm | Ansible lineinfile + systemd handler | Ansible ÷ hostplug warm |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| value changed: edit, restart | {:.2} s | {:.2} s | {:.2} s | {:.1}× |",
        cold.as_secs_f64(),
        warm.as_secs_f64(),
        a1.as_secs_f64(),
        a1.as_secs_f64() / warm.as_secs_f64()
    );
    println!(
        "| value unchanged: nothing restarted | | {:.2} s | {:.2} s | {:.1}× |",
        same.as_secs_f64(),
        a2.as_secs_f64(),
        a2.as_secs_f64() / same.as_secs_f64()
    );

    tokio::task::block_in_place(|| {
        for node in nodes {
            node.stop()?;
        }
        anyhow::Ok(())
    })?;
    h.shutdown().await
}
