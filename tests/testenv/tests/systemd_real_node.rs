//! A real node booted by a real systemd (`hostplug_testenv::realnode::systemd_node`):
//! kubelet and containerd run as systemd units, the node registers and runs Pods, a
//! reboot asked of its systemd over its D-Bus system bus stops them, the (simulated)
//! power cycle gives a new boot ID, and the kubelet registers again and restarts the Pods
//! — while the machine's own kernel tunables, hostname and cgroups stay as they were.
//! Prints the boot-to-Ready and reboot-to-Ready times. Needs root, Podman and `make setup`.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use hostplug_testenv::realnode::systemd_node::{CONTAINERD_UNIT, KUBELET_UNIT, READY_TIMEOUT};
use hostplug_testenv::realnode::{
    REAL_NODE_LABEL, SYSTEMD_NODE_LABEL, SystemdRealNode, TEST_IMAGE,
};
use hostplug_testenv::systemd::POWER_CYCLE_TIMEOUT;
use hostplug_testenv::{EnvConfig, Environment};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{LogParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const POD_TIMEOUT: Duration = Duration::from_secs(60);

/// What of the machine a node must leave alone: the kernel tunables the kubelet writes,
/// the hostname, and the top level of every cgroup hierarchy but the node's own.
fn machine_state() -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for key in [
        "vm/overcommit_memory",
        "vm/panic_on_oom",
        "kernel/panic",
        "kernel/panic_on_oops",
        "kernel/keys/root_maxkeys",
        "kernel/keys/root_maxbytes",
        "net/ipv4/ip_forward",
        "kernel/hostname",
    ] {
        let value = fs::read_to_string(format!("/proc/sys/{key}")).unwrap_or_default();
        state.insert(key.to_owned(), value.trim().to_owned());
    }
    for h in fs::read_dir("/sys/fs/cgroup")
        .expect("cgroup mount")
        .flatten()
    {
        let mut names: Vec<String> = fs::read_dir(h.path())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with("hostplug-rn-"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        state.insert(
            format!("cgroup {}", h.file_name().to_string_lossy()),
            names.join(" "),
        );
    }
    state
}

/// The running container of Pod `name` (its ID) once the Pod runs, with its IP.
async fn wait_pod_running(
    node: &SystemdRealNode,
    api: &Api<Pod>,
    name: &str,
    not: Option<&str>,
) -> (String, String) {
    let deadline = Instant::now() + POD_TIMEOUT;
    loop {
        let pod = api.get(name).await.expect("get the Pod");
        let status = pod.status.clone().unwrap_or_default();
        let running = status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()) && c.ready);
        if let Some(c) = running {
            let id = c.container_id.unwrap_or_default();
            if !id.is_empty() && Some(id.as_str()) != not {
                return (id, status.pod_ip.unwrap_or_default());
            }
        }
        assert!(
            Instant::now() < deadline,
            "Pod {name} not running (a new container) within {POD_TIMEOUT:?}: {:?}\n\
             kubelet's journal:\n{}\ncontainerd's journal:\n{}",
            pod.status,
            node.journal(KUBELET_UNIT, 40),
            node.journal(CONTAINERD_UNIT, 40)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_booted_by_systemd_runs_pods_and_comes_back_after_a_reboot_over_its_bus() {
    let before = machine_state();
    let env = Environment::start(EnvConfig::control_plane_only().with_systemd_real_nodes(1))
        .await
        .expect("start the control plane and a systemd real node");
    let [node] = env.systemd_real_nodes() else {
        panic!("one node, not {}", env.systemd_real_nodes().len());
    };
    let boot_to_ready = node.started_at().elapsed();
    println!(
        "systemd real node {}: boot to Ready {:.1} s",
        node.name(),
        boot_to_ready.as_secs_f64()
    );
    let first_boot = node.boot_id();

    // kubelet and containerd are systemd units, started at boot by systemd.
    for unit in [CONTAINERD_UNIT, KUBELET_UNIT] {
        let out = node
            .exec(&["systemctl", "is-active", unit])
            .expect("systemctl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "active",
            "{unit}: {}",
            node.journal(unit, 30)
        );
    }

    // The Node: Ready, labelled, its boot ID this boot's, its fabric address.
    let nodes: Api<Node> = Api::all(env.admin_client());
    let n = nodes.get(node.name()).await.expect("the Node");
    for label in [REAL_NODE_LABEL, SYSTEMD_NODE_LABEL] {
        assert_eq!(
            n.labels().get(label).map(String::as_str),
            Some("true"),
            "{label}"
        );
    }
    let status = n.status.clone().expect("a status");
    assert_eq!(
        status.node_info.as_ref().map(|i| i.boot_id.as_str()),
        Some(first_boot.as_str())
    );
    let ip = node.ip().to_string();
    assert!(
        status
            .addresses
            .unwrap_or_default()
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == ip),
        "InternalIP {ip}"
    );

    // A Pod on it: Pod networking from its CNI bridge, logs through the egress proxy.
    let pods: Api<Pod> = Api::namespaced(env.admin_client(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "survivor" },
        "spec": {
            "nodeName": node.name(),
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": TEST_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "echo started on $(hostname); exec sleep 3600"],
            }],
        },
    }))
    .expect("a Pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create the Pod");
    let (first_container, first_ip) = wait_pod_running(node, &pods, "survivor", None).await;
    assert!(
        first_ip.starts_with(node.pod_cidr().trim_end_matches("0/24")),
        "Pod IP {first_ip} not in {}",
        node.pod_cidr()
    );
    let logs = pods
        .logs("survivor", &LogParams::default())
        .await
        .expect("the Pod's logs (API server → egress proxy → kubelet)");
    assert!(logs.contains("started on survivor"), "{logs}");

    // Reboot through systemd's D-Bus API, as an operator's worker would ask for it.
    let asked = Instant::now();
    let out = Command::new("busctl")
        .arg(format!("--address={}", node.bus_address()))
        .args([
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "Reboot",
        ])
        .output()
        .expect("busctl runs");
    assert!(
        out.status.success(),
        "Reboot() over the bus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second_boot =
        tokio::task::block_in_place(|| node.wait_rebooted(&first_boot, POWER_CYCLE_TIMEOUT))
            .expect("the node reboots");
    assert_ne!(second_boot, first_boot);
    assert_eq!(
        node.boot_ids(),
        vec![first_boot.clone(), second_boot.clone()]
    );
    node.wait_ready(&env.admin_client(), READY_TIMEOUT)
        .await
        .expect("Ready again with the new boot ID");
    let reboot_to_ready = asked.elapsed();
    println!(
        "systemd real node {}: reboot (Reboot() on the bus) to Ready {:.1} s",
        node.name(),
        reboot_to_ready.as_secs_f64()
    );
    let n = nodes.get(node.name()).await.expect("the Node");
    assert_eq!(
        n.status
            .and_then(|s| s.node_info)
            .map(|i| i.boot_id)
            .as_deref(),
        Some(second_boot.as_str()),
        "the kubelet reports the new boot"
    );

    // The Pod runs again: a new container (a new sandbox too: the old one died with the
    // boot), its restart counted.
    let (second_container, second_ip) =
        wait_pod_running(node, &pods, "survivor", Some(&first_container)).await;
    assert_ne!(second_container, first_container);
    assert!(
        second_ip.starts_with(node.pod_cidr().trim_end_matches("0/24")),
        "Pod IP {second_ip} not in {}",
        node.pod_cidr()
    );
    let pod = pods.get("survivor").await.expect("the Pod");
    let restarts = pod
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .first()
        .map_or(0, |c| c.restart_count);
    assert!(restarts >= 1, "restart count {restarts}");
    for unit in [CONTAINERD_UNIT, KUBELET_UNIT] {
        let out = node
            .exec(&["systemctl", "is-active", unit])
            .expect("systemctl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "active",
            "{unit}"
        );
    }

    let during = machine_state();
    env.shutdown().await.expect("shutdown");
    let after = machine_state();
    assert_eq!(
        before, during,
        "the machine's state changed while the node ran"
    );
    assert_eq!(before, after, "the machine's state changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_booted_by_systemd_reach_each_others_pods_also_after_a_reboot() {
    // With a real node started directly (real1) on the same fabric.
    let env = Environment::start(
        EnvConfig::control_plane_only()
            .with_real_nodes(1)
            .with_systemd_real_nodes(2),
    )
    .await
    .expect("start the control plane, a real node and two systemd real nodes");
    let real1 = env.real_node("real1").expect("real1");
    let [one, two] = env.systemd_real_nodes() else {
        panic!("two nodes, not {}", env.systemd_real_nodes().len());
    };
    assert_ne!(
        one.boot_id(),
        two.boot_id(),
        "each node boots with its own ID"
    );
    let pods: Api<Pod> = Api::namespaced(env.admin_client(), "default");
    let pod = |name: &str, node: &str, restart: &str, script: &str| -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": name },
            "spec": {
                "nodeName": node,
                "restartPolicy": restart,
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "main",
                    "image": TEST_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", script],
                }],
            },
        }))
        .expect("a Pod")
    };
    pods.create(
        &PostParams::default(),
        &pod("target", one.name(), "Always", "exec sleep 3600"),
    )
    .await
    .expect("create the target Pod");
    let (first, target_ip) = wait_pod_running(one, &pods, "target", None).await;

    // sdreal2's Pod pings sdreal1's Pod by Pod IP (the fabric routes, no NAT).
    let ping =
        |name: &str, ip: &str| pod(name, two.name(), "Never", &format!("ping -c 1 -W 5 {ip}"));
    pods.create(&PostParams::default(), &ping("pinger", &target_ip))
        .await
        .expect("create the pinger");
    wait_succeeded(two, &pods, "pinger").await;

    // sdreal1 reboots; its Pod comes back (maybe with another IP) and is reachable again.
    // hostplug's worker image, as the e2e tests build it, loads into the node's
    // containerd and stays there across the reboot (the node's disk).
    let worker = tokio::task::spawn_blocking(|| {
        let store = hostplug_images::ImageStore::open()?;
        store.build(
            hostplug_images::Image::Worker,
            &hostplug_images::Binaries::of_this_build()?,
        )
    })
    .await
    .expect("the image build thread")
    .expect("the worker image");
    one.import_image(&worker.archive)
        .await
        .expect("import the worker image");
    let listed = |node: &SystemdRealNode| {
        node.ctr(&["images", "ls", "-q"])
            .expect("ctr images ls")
            .contains(worker.name)
    };
    assert!(listed(one), "{} not in sdreal1's containerd", worker.name);

    let previous = one.boot_id();
    let asked = Instant::now();
    tokio::task::block_in_place(|| one.reboot()).expect("reboot sdreal1");
    println!(
        "{}: `systemctl reboot` to systemd running again {:.1} s",
        one.name(),
        asked.elapsed().as_secs_f64()
    );
    assert_ne!(one.boot_id(), previous);
    one.wait_ready(&env.admin_client(), READY_TIMEOUT)
        .await
        .expect("sdreal1 Ready again");
    println!(
        "{}: `systemctl reboot` to Ready {:.1} s",
        one.name(),
        asked.elapsed().as_secs_f64()
    );
    let (_, target_ip) = wait_pod_running(one, &pods, "target", Some(&first)).await;
    pods.create(&PostParams::default(), &ping("pinger2", &target_ip))
        .await
        .expect("create the second pinger");
    wait_succeeded(two, &pods, "pinger2").await;
    // And from the node started directly.
    let mut from_real1 = ping("pinger3", &target_ip);
    if let Some(spec) = from_real1.spec.as_mut() {
        spec.node_name = Some(real1.name().to_owned());
    }
    pods.create(&PostParams::default(), &from_real1)
        .await
        .expect("create the pinger on real1");
    wait_succeeded(two, &pods, "pinger3").await;
    assert!(
        listed(one),
        "{} gone from sdreal1's containerd after the reboot",
        worker.name
    );
    assert_eq!(two.boot_ids().len(), 1, "sdreal2 did not reboot");
    env.shutdown().await.expect("shutdown");
}

/// Waits until Pod `name` (on `node`) has succeeded; says why not otherwise.
async fn wait_succeeded(node: &SystemdRealNode, api: &Api<Pod>, name: &str) {
    let deadline = Instant::now() + POD_TIMEOUT;
    loop {
        let pod = api.get(name).await.expect("get the Pod");
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" {
            return;
        }
        if phase == "Failed" || Instant::now() > deadline {
            let logs = api
                .logs(name, &LogParams::default())
                .await
                .unwrap_or_else(|e| format!("(no logs: {e})"));
            panic!(
                "Pod {name} did not succeed ({phase}): {:?}\nlogs:\n{logs}\nkubelet's journal:\n{}",
                pod.status,
                node.journal(KUBELET_UNIT, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
