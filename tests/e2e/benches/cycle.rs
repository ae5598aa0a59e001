//! `make bench`: the time per node of the whole disruption cycle — cordon and drain,
//! the call, the reboot through the node's systemd, the node Ready again with its worker
//! back, uncordon — on real nodes booted by a real systemd (kubelet and containerd as
//! systemd units; the power cycle is the test environment's stand-in, see
//! `hostplug_testenv::realnode::systemd_node`). hostplug is installed with Helm from
//! images of this build: `cargo bench` runs this from `target/release`, so the images
//! hold the release binaries `make bench` builds first.
//!
//! Two nodes, one HostTask with `maxParallel: 1`, `drain: true`, `reboot: Always`; the
//! drain evicts what runs there (hostplug's own operator replica and console, as
//! `kubectl drain` would). The phases are read
//! from the Node objects every 200 ms (the operator's mark, the kubelet's boot ID), so
//! each figure is ±0.2 s. Checked before a figure is printed: every node rebooted
//! exactly once (its boot IDs) and ended uncordoned. Prints numbers, asserts nothing about
//! time.
//!
//! Beside it, on the same nodes in the same run, the same cycle as an administrator (or
//! a kured-style script) does it by hand: `kubectl drain --ignore-daemonsets --force`, the same
//! edit of the file, `systemctl reboot` in the node, `kubectl wait` until Ready from the
//! new boot, `kubectl uncordon` — one node after the other. (kured itself needs a
//! registry image this machine cannot pull.)

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/systemd_cluster/mod.rs"]
mod systemd_cluster;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hostplug_api::crd::{HostTask, TaskState};
use hostplug_api::disruption::{CycleStep, MAINTENANCE_ANNOTATION, MaintenanceMark};
use hostplug_e2e::{NAMESPACE, state_of};
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

/// Nodes: two, one cycle after the other.
const NODES: usize = 2;
/// How long the rollout may take.
const TIMEOUT: Duration = Duration::from_secs(600);
/// How often the Nodes are read.
const POLL: Duration = Duration::from_millis(200);

const TASK: &str = r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata: {name: bench-cycle, namespace: hostplug-system}
spec:
  workers: [sdreal1, sdreal2]
  http:
    api: etc-file
    method: ensure-line
    parameter: {path: /etc/hostplug-bench.conf, line: "cycle=1", create: true}
  rollout: {maxParallel: 1, maxFailures: 0}
  disruption: {drain: true, reboot: Always, rebootTimeoutSeconds: 300}
"#;

/// When each phase of a node's cycle was first seen.
#[derive(Debug, Default, Clone)]
struct Seen {
    marked: Option<Instant>,
    applying: Option<Instant>,
    rebooting: Option<Instant>,
    new_boot: Option<Instant>,
    restoring: Option<Instant>,
    unmarked: Option<Instant>,
    boot_before: Option<String>,
}

fn secs(a: Option<Instant>, b: Option<Instant>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}", b.saturating_duration_since(a).as_secs_f64()),
        _ => "-".into(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let env = systemd_cluster::start(NODES).await?;
    let admin = env.admin_client();
    let before: BTreeMap<String, usize> = env
        .systemd_real_nodes()
        .iter()
        .map(|n| (n.name().to_owned(), n.boot_ids().len()))
        .collect();
    let tasks: Api<HostTask> = Api::namespaced(admin.clone(), NAMESPACE);
    let nodes: Api<Node> = Api::all(admin.clone());
    common::kubectl_stdin(&env, &["apply", "-f", "-"], TASK).await?;
    let started = Instant::now();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let t = loop {
        let now = Instant::now();
        for n in nodes.list(&ListParams::default()).await?.items {
            let s = seen.entry(n.name_any()).or_default();
            let boot = n
                .status
                .as_ref()
                .and_then(|st| st.node_info.as_ref())
                .map(|i| i.boot_id.clone());
            match n
                .annotations()
                .get(MAINTENANCE_ANNOTATION)
                .and_then(|v| MaintenanceMark::from_annotation(v).ok())
            {
                Some(m) => {
                    s.marked.get_or_insert(now);
                    match m.step {
                        CycleStep::Draining => {}
                        CycleStep::Applying => {
                            s.applying.get_or_insert(now);
                        }
                        CycleStep::Rebooting => {
                            s.rebooting.get_or_insert(now);
                            if s.boot_before.is_none() {
                                s.boot_before.clone_from(&m.boot_id);
                            }
                            if boot.is_some() && boot != m.boot_id {
                                s.new_boot.get_or_insert(now);
                            }
                        }
                        CycleStep::Restoring => {
                            s.restoring.get_or_insert(now);
                        }
                    }
                }
                None if s.marked.is_some() => {
                    s.unmarked.get_or_insert(now);
                }
                None => {}
            }
        }
        let t = tasks.get("bench-cycle").await?;
        if t.status.as_ref().is_some_and(|s| s.state.is_finished()) {
            break t;
        }
        if started.elapsed() > TIMEOUT {
            bail!("not finished after {TIMEOUT:?}: {:?}", t.status);
        }
        tokio::time::sleep(POLL).await;
    };
    let took = started.elapsed();
    ensure!(state_of(&t) == Some(TaskState::Succeeded), "{:?}", t.status);
    for node in env.systemd_real_nodes() {
        let name = node.name();
        let reboots = node.boot_ids().len() - before[name];
        ensure!(reboots == 1, "{name} rebooted {reboots} times");
        let n = nodes.get(name).await?;
        ensure!(
            n.spec.as_ref().and_then(|s| s.unschedulable) != Some(true),
            "{name} still cordoned"
        );
    }
    println!(
        "disruption cycle on {NODES} systemd real nodes (maxParallel 1, drain, reboot: Always), \
         seconds, ±{:.1}:",
        POLL.as_secs_f64()
    );
    println!("node      drain+cordon  call  reboot→new boot  →Ready+worker  uncordon  whole cycle");
    let mut total = Duration::ZERO;
    for s in seen.values_mut() {
        // A step shorter than one look was not seen: it ended when the next one was.
        s.restoring = s.restoring.or(s.unmarked);
        s.new_boot = s.new_boot.or(s.restoring);
        s.rebooting = s.rebooting.or(s.new_boot);
        s.applying = s.applying.or(s.rebooting);
    }
    for (name, s) in seen.iter().filter(|(_, s)| s.marked.is_some()) {
        let whole = s
            .unmarked
            .zip(s.marked)
            .map(|(b, a)| b.saturating_duration_since(a))
            .context("a cycle without an end")?;
        total += whole;
        println!(
            "{name:<9} {:>12}  {:>4}  {:>15}  {:>13}  {:>8}  {:>11.1}",
            secs(s.marked, s.applying),
            secs(s.applying, s.rebooting),
            secs(s.rebooting, s.new_boot),
            secs(s.new_boot, s.restoring),
            secs(s.restoring, s.unmarked),
            whole.as_secs_f64()
        );
    }
    println!(
        "per node: {:.1} s (whole rollout {:.1} s)",
        total.as_secs_f64() / NODES as f64,
        took.as_secs_f64()
    );

    // The anchor: the same cycle by hand, node after node.
    println!(
        "the same by hand (kubectl drain --ignore-daemonsets --force, edit, systemctl reboot, \
         Ready from the new boot, kubectl uncordon), seconds:"
    );
    println!("node      drain+cordon  edit  reboot→new boot  →Ready  uncordon  whole cycle");
    let mut by_hand = Duration::ZERO;
    for node in env.systemd_real_nodes() {
        let name = node.name().to_owned();
        let boots = node.boot_ids().len();
        let t0 = Instant::now();
        common::kubectl(
            &env,
            &[
                "drain",
                &name,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                // hostplug's worker Pods have no controller: an administrator's drain
                // deletes them (the pool starts new ones when needed).
                "--force",
                "--timeout=300s",
            ],
        )
        .await?;
        let drained = Instant::now();
        {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(node.etc_dir().join("hostplug-bench.conf"))?;
            f.write_all(b"cycle=2\n")?;
            f.sync_all()?;
        }
        let edited = Instant::now();
        tokio::task::block_in_place(|| node.reboot())?;
        let booted = Instant::now();
        node.wait_ready(&admin, TIMEOUT).await?;
        let ready = Instant::now();
        common::kubectl(&env, &["uncordon", &name]).await?;
        let done = Instant::now();
        ensure!(
            node.boot_ids().len() == boots + 1,
            "{name} not rebooted once by hand"
        );
        let whole = done.saturating_duration_since(t0);
        by_hand += whole;
        println!(
            "{name:<9} {:>12}  {:>4}  {:>15}  {:>6}  {:>8}  {:>11.1}",
            secs(Some(t0), Some(drained)),
            secs(Some(drained), Some(edited)),
            secs(Some(edited), Some(booted)),
            secs(Some(booted), Some(ready)),
            secs(Some(ready), Some(done)),
            whole.as_secs_f64()
        );
    }
    println!(
        "per node by hand: {:.1} s; hostplug: {:.1} s (hostplug also waits for its worker \
         and records every step on the Node first)",
        by_hand.as_secs_f64() / NODES as f64,
        total.as_secs_f64() / NODES as f64
    );
    Ok(())
}
