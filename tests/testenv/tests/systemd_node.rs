//! The systemd node ([`hostplug_testenv::systemd`]): a real systemd as PID 1 with a real
//! system bus, reached from the host as a worker would reach it — the bus socket under the
//! node's host directory and its `/etc` as a host directory — and reboots whose power
//! cycle the environment simulates with a new boot ID.
//!
//! The bus is driven from the host with `busctl --address=unix:path=…` (systemd's own
//! client, not the node's): what works here works for any D-Bus client on the host.
//! Needs root and Podman; the image is made on first use (tests/images/systemd-node.sh).

use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use hostplug_testenv::systemd::{
    DEMO_SERVICE, POWER_CYCLE_TIMEOUT, PowerState, RUNNING_TIMEOUT, SystemdNode,
};

/// How long a restart of the test service may take to show.
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);

/// The D-Bus object path of the test service's unit.
const DEMO_UNIT_PATH: &str = "/org/freedesktop/systemd1/unit/hostplug_2ddemo_2eservice";

/// `busctl --address=<the node's bus> ARGS` from the host; its standard output.
fn busctl(node: &SystemdNode, args: &[&str]) -> String {
    let out = Command::new("busctl")
        .arg(format!("--address={}", node.bus_address()))
        .args(args)
        .output()
        .expect("busctl runs");
    assert!(
        out.status.success(),
        "busctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A property of the test service's unit, read over the bus (`busctl get-property`
/// prints `TYPE VALUE`).
fn demo_property(node: &SystemdNode, interface: &str, property: &str) -> String {
    let out = busctl(
        node,
        &[
            "get-property",
            "org.freedesktop.systemd1",
            DEMO_UNIT_PATH,
            interface,
            property,
        ],
    );
    out.split_once(' ')
        .map(|(_, v)| v.to_owned())
        .unwrap_or(out)
}

fn main_pid(node: &SystemdNode) -> u32 {
    demo_property(node, "org.freedesktop.systemd1.Service", "MainPID")
        .parse()
        .expect("MainPID is a number")
}

fn container_exists(container: &str) -> bool {
    let store = hostplug_images::ImageStore::open().expect("image store");
    let out = store
        .podman()
        .args(["container", "exists", container])
        .status()
        .expect("podman runs");
    out.success()
}

fn temp_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hostplug-sd-")
        .tempdir()
        .expect("temporary directory")
}

#[test]
fn a_bad_node_name_is_refused_naming_the_rule() {
    let root = temp_root();
    let err = SystemdNode::start("Node_1", root.path()).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("Node_1") && text.contains("a-z, 0-9 and '-'"),
        "{text}"
    );
}

#[test]
fn the_bus_reaches_the_nodes_systemd_and_a_restart_through_it_takes_effect() {
    let image = hostplug_images::ImageStore::open()
        .expect("image store")
        .systemd_node()
        .expect("the systemd node image");
    eprintln!(
        "image {} (key {}): made {} imported {} in {:?}",
        image.name, image.key, image.made, image.imported, image.took
    );
    let root = temp_root();
    let started = Instant::now();
    let node = SystemdNode::start("sd-restart", root.path()).expect("node starts");
    eprintln!("start to running: {:?}", started.elapsed());
    let container = node.container().to_owned();

    // PID 1 is systemd, and it says running.
    assert_eq!(
        node.exec_ok(&["cat", "/proc/1/comm"]).expect("exec").trim(),
        "systemd"
    );
    assert_eq!(
        node.exec_ok(&["systemctl", "is-system-running"])
            .expect("exec")
            .trim(),
        "running"
    );

    // The bus from the host: the node's systemd, whose view of the service is the one
    // the service itself reports.
    assert_eq!(
        busctl(
            &node,
            &[
                "get-property",
                "org.freedesktop.systemd1",
                "/org/freedesktop/systemd1",
                "org.freedesktop.systemd1.Manager",
                "SystemState",
            ],
        ),
        "s \"running\""
    );
    let before = node.demo_state().expect("the service reported");
    assert_eq!(before.value, "initial");
    assert_eq!(before.boot_id, node.boot_id());
    assert_eq!(main_pid(&node), before.pid);
    let entered_before = demo_property(
        &node,
        "org.freedesktop.systemd1.Unit",
        "ActiveEnterTimestamp",
    );

    // An edit of the node's /etc from the host is the node's edit, and alone changes
    // nothing the service uses.
    let conf = node.etc_dir().join("hostplug-demo.conf");
    std::fs::write(&conf, "value=changed-from-the-host\n").expect("edit /etc on the host");
    assert_eq!(
        node.exec_ok(&["cat", "/etc/hostplug-demo.conf"])
            .expect("exec"),
        "value=changed-from-the-host\n"
    );
    sleep(Duration::from_millis(500));
    assert_eq!(
        node.demo_state().expect("state"),
        before,
        "no restart, no change"
    );

    // RestartUnit over the bus, as the systemd capability will call it.
    let restarted = Instant::now();
    let job = busctl(
        &node,
        &[
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "RestartUnit",
            "ss",
            DEMO_SERVICE,
            "replace",
        ],
    );
    assert!(
        job.starts_with("o \"/org/freedesktop/systemd1/job/"),
        "{job}"
    );
    let after = loop {
        if let Ok(state) = node.demo_state()
            && state.pid != before.pid
        {
            break state;
        }
        assert!(
            restarted.elapsed() < RESTART_TIMEOUT,
            "the service did not restart"
        );
        sleep(Duration::from_millis(50));
    };
    eprintln!(
        "restart over the bus until the new value is used: {:?}",
        restarted.elapsed()
    );
    assert_eq!(after.value, "changed-from-the-host");
    assert_eq!(main_pid(&node), after.pid);
    assert_ne!(
        demo_property(
            &node,
            "org.freedesktop.systemd1.Unit",
            "ActiveEnterTimestamp"
        ),
        entered_before
    );
    assert_eq!(
        demo_property(&node, "org.freedesktop.systemd1.Unit", "ActiveState"),
        "\"active\""
    );

    // Drop removes the container; the host directories stay with their owner.
    drop(node);
    assert!(!container_exists(&container), "{container} was left behind");
    assert!(conf.exists());
}

#[test]
fn a_reboot_ends_the_container_and_the_power_cycle_brings_it_back_with_a_new_boot_id() {
    let root = temp_root();
    let node = SystemdNode::start("sd-reboot", root.path()).expect("node starts");
    let container = node.container().to_owned();
    let first = node.boot_id();
    let machine_boot_id =
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("the machine's boot ID");
    assert_ne!(
        first,
        machine_boot_id.trim(),
        "the node has a boot ID of its own"
    );
    assert_eq!(
        node.exec_ok(&["cat", "/proc/sys/kernel/random/boot_id"])
            .expect("exec")
            .trim(),
        first
    );
    // Something only this boot has (/run is a tmpfs per start), and an /etc edit that
    // must survive, as on a disk.
    node.exec_ok(&["touch", "/run/this-boot"]).expect("exec");
    std::fs::write(node.etc_dir().join("hostplug-demo.conf"), "value=kept\n").expect("edit");

    // Reboot() over the bus from the host: the node's systemd shuts down for real.
    let rebooted = Instant::now();
    busctl(
        &node,
        &[
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "Reboot",
        ],
    );
    let second = node
        .wait_rebooted(&first, POWER_CYCLE_TIMEOUT)
        .expect("the node comes back");
    eprintln!("reboot request to running again: {:?}", rebooted.elapsed());
    assert_ne!(second, first);
    assert_eq!(node.boot_ids(), [first.clone(), second.clone()]);
    assert_eq!(
        node.exec_ok(&["cat", "/proc/sys/kernel/random/boot_id"])
            .expect("exec")
            .trim(),
        second
    );
    let gone = node.exec(&["test", "-e", "/run/this-boot"]).expect("exec");
    assert!(
        !gone.status.success(),
        "/run of the previous boot survived: no real restart"
    );
    let state = node.demo_state().expect("the service started again");
    assert_eq!(state.boot_id, second);
    assert_eq!(
        state.value, "kept",
        "the service read the /etc the reboot kept"
    );
    assert_eq!(main_pid(&node), state.pid);

    // `systemctl reboot` inside, as an administrator would: a third boot.
    let third = node.reboot().expect("reboot");
    assert_eq!(
        node.boot_ids(),
        [first.clone(), second.clone(), third.clone()]
    );
    assert_eq!(node.demo_state().expect("state").boot_id, third);

    // A power-off stays off: nothing is started again.
    node.exec(&["systemctl", "poweroff"]).expect("exec");
    let off = node.wait_off(RUNNING_TIMEOUT).expect("the node powers off");
    assert_eq!(
        off,
        PowerState::Off {
            reason: "poweroff".into()
        }
    );
    sleep(Duration::from_secs(1));
    assert_eq!(node.boot_ids().len(), 3, "a power-off is not power-cycled");
    assert!(node.wait_running(Duration::from_secs(1)).is_err());

    node.stop().expect("stop");
    assert!(!container_exists(&container), "{container} was left behind");
    assert!(
        Path::new(root.path())
            .join("etc/hostplug-demo.conf")
            .exists()
    );
}
