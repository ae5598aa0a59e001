//! The systemd capability and the systemd-unit plugin against a real systemd: a node
//! whose PID 1 is systemd with a real D-Bus system bus (`hostplug_testenv::systemd`, a
//! Debian bookworm root file system in a Podman container), reached through its bus
//! socket and its /etc on host paths, with its test service `hostplug-demo.service`
//! (it reads `value=` from /etc/hostplug-demo.conf at start and reports its PID and that
//! value).
//!
//! Two levels, as for containerd: the host's client itself (`SystemdClient`, what the
//! import calls) and the component through the `hostplug_host` API as the worker runs
//! it. Each test starts its own node and checks the node's state through the node
//! (`systemctl` inside it, the service's own report), never through the code under test.
//!
//! Threats: a unit outside the declared patterns, an undeclared action, a mutation in a
//! dry run or a read-only method, and every forbidden D-Bus call (power actions,
//! transient units, property changes, signals) are refused by the host and change
//! nothing on the node.

mod common;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hostplug_api::systemd::{SystemdAction, SystemdCapability};
use hostplug_host::systemd::{ReadOnly, check_method};
use hostplug_host::{
    CapabilityError, ErrorKind, EtcAccess, Grants, Invocation, Plugin, SystemdClient,
    SystemdPolicy, UnitAction,
};
use hostplug_testenv::systemd::{DEMO_CONF, DEMO_SERVICE, PowerState, SystemdNode};
use serde_json::{Value, json};

fn plugin() -> &'static Arc<Plugin> {
    static PLUGIN: OnceLock<Arc<Plugin>> = OnceLock::new();
    PLUGIN.get_or_init(|| common::load(common::host(), "systemd-unit"))
}

/// A node of its own for one test, removed when the test ends.
struct Node {
    node: SystemdNode,
    _root: tempfile::TempDir,
}

impl Node {
    fn start(name: &str) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let node = SystemdNode::start(name, root.path())
            .unwrap_or_else(|e| panic!("cannot start the systemd node: {e}"));
        Self { node, _root: root }
    }

    /// `systemctl show -p <prop> --value <unit>` inside the node.
    fn show(&self, unit: &str, prop: &str) -> String {
        self.node
            .exec_ok(&["systemctl", "show", "-p", prop, "--value", unit])
            .unwrap_or_else(|e| panic!("systemctl show: {e}"))
            .trim()
            .to_owned()
    }

    fn main_pid(&self) -> u32 {
        self.show(DEMO_SERVICE, "MainPID").parse().expect("a pid")
    }

    fn socket(&self) -> std::path::PathBuf {
        self.node.bus_socket()
    }

    /// Waits until the demo service's process `pid` has reported itself (its script
    /// is done and it sleeps). A restart while its shell script still runs can leave a
    /// child in the unit's cgroup that this node's systemd (in a container on cgroup
    /// v1) is not told has gone, and the stop then waits its TimeoutStopSec.
    fn settled(&self, pid: u32) {
        let until = Instant::now() + Duration::from_secs(10);
        while self.node.demo_state().map(|d| d.pid).ok() != Some(pid) {
            assert!(
                Instant::now() < until,
                "the demo service {pid} never reported"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn capability(units: &[&str], actions: &[SystemdAction]) -> SystemdCapability {
    SystemdCapability {
        units: units.iter().map(|s| (*s).to_owned()).collect(),
        actions: actions.to_vec(),
    }
}

fn demo_capability() -> SystemdCapability {
    capability(
        &["hostplug-*.service"],
        &[
            SystemdAction::Status,
            SystemdAction::Restart,
            SystemdAction::DaemonReload,
        ],
    )
}

fn client(socket: &Path, cap: SystemdCapability, read_only: ReadOnly) -> SystemdClient {
    SystemdClient::new(socket, cap, SystemdPolicy::default(), read_only)
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// The capability on a real systemd: a restart takes effect (new MainPID, a later
/// ActiveEnterTimestamp, the service uses the file's new value); every refusal leaves
/// the service as it was.
#[test]
fn restart_takes_effect_and_refusals_change_nothing() {
    let node = Node::start("sd-cap");
    let socket = node.socket();
    let manage = client(&socket, demo_capability(), ReadOnly::No);

    let before = manage.status(DEMO_SERVICE, soon()).expect("status");
    assert_eq!(before.active_state, "active", "{before:?}");
    assert_eq!(
        before.main_pid,
        node.main_pid(),
        "the host reads systemd's MainPID"
    );
    assert!(before.active_enter_timestamp > 0);

    // The service reads its file only at start.
    let conf = node
        .node
        .etc_dir()
        .join(DEMO_CONF.trim_start_matches("/etc/"));
    std::fs::write(&conf, "value=after-restart\n").expect("write the demo conf");
    assert_ne!(
        node.node.demo_state().expect("demo state").value,
        "after-restart",
        "no restart yet"
    );
    let after = manage
        .run(DEMO_SERVICE, UnitAction::Restart, soon())
        .expect("restart");
    assert_eq!(after.active_state, "active");
    assert_ne!(after.main_pid, before.main_pid, "a new main process");
    assert!(after.active_enter_timestamp > before.active_enter_timestamp);
    assert_eq!(node.main_pid(), after.main_pid, "systemd agrees");
    node.settled(after.main_pid);
    let demo = node.node.demo_state().expect("demo state");
    assert_eq!(demo.pid, after.main_pid);
    assert_eq!(
        demo.value, "after-restart",
        "the service uses the new value"
    );

    // What a call costs here (one connection per call, a job waited for), printed for
    // the record: three of each, median (more restarts within 10 s hit systemd's
    // default start limit of 5).
    let times = |f: &dyn Fn() -> Duration| {
        let mut t: Vec<Duration> = (0..3).map(|_| f()).collect();
        t.sort();
        t[1]
    };
    let status_time = times(&|| {
        let started = Instant::now();
        manage.status(DEMO_SERVICE, soon()).expect("status");
        started.elapsed()
    });
    let restart_time = times(&|| {
        let started = Instant::now();
        let s = manage
            .run(DEMO_SERVICE, UnitAction::Restart, soon())
            .expect("restart");
        let took = started.elapsed();
        node.settled(s.main_pid);
        took
    });
    eprintln!(
        "systemd status median {status_time:?}, restart (job waited for) median {restart_time:?}"
    );
    let after = manage.status(DEMO_SERVICE, soon()).expect("status");

    let unchanged = |why: &str| {
        assert_eq!(
            node.main_pid(),
            after.main_pid,
            "{why}: the service was not touched"
        );
    };

    // A unit outside the patterns: refused naming them.
    let e = manage
        .run("dbus.service", UnitAction::Restart, soon())
        .expect_err("outside the patterns");
    assert!(
        matches!(&e, CapabilityError::Denied(m) if m.contains("hostplug-*.service")),
        "{e}"
    );
    assert_eq!(node.show("dbus.service", "ActiveState"), "active");
    // An action not declared.
    let e = manage
        .run(DEMO_SERVICE, UnitAction::Stop, soon())
        .expect_err("stop is not declared");
    assert!(
        matches!(&e, CapabilityError::Denied(m) if m.contains("stop")),
        "{e}"
    );
    unchanged("undeclared stop");
    // A read-only method and a dry run.
    for (mode, needle) in [
        (ReadOnly::ReadOnlyMethod, "does not declare itself mutating"),
        (ReadOnly::DryRun, "dry run"),
    ] {
        let ro = client(&socket, demo_capability(), mode);
        let e = ro
            .run(DEMO_SERVICE, UnitAction::Restart, soon())
            .expect_err("read-only");
        assert!(
            matches!(&e, CapabilityError::Denied(m) if m.contains(needle)),
            "{e}"
        );
        let e = ro.daemon_reload(soon()).expect_err("read-only");
        assert!(matches!(e, CapabilityError::Denied(_)), "{e}");
        assert_eq!(
            ro.status(DEMO_SERVICE, soon()).expect("status").main_pid,
            after.main_pid,
            "status still reads"
        );
        unchanged(needle);
    }

    // Unknown unit: not-found naming it.
    let e = manage
        .status("hostplug-nosuch.service", soon())
        .expect_err("unknown");
    assert!(
        matches!(&e, CapabilityError::NotFound(m) if m.contains("hostplug-nosuch.service")),
        "{e}"
    );

    // Every forbidden call, through the same client, the whole table open to it.
    let all = client(
        &socket,
        capability(&["*.service", "*.target"], &SystemdAction::ALL),
        ReadOnly::No,
    );
    for member in [
        "Reboot",
        "PowerOff",
        "Halt",
        "KExec",
        "SoftReboot",
        "Exit",
        "StartTransientUnit",
        "SetUnitProperties",
        "KillUnit",
        "QueueSignalUnit",
        "MaskUnitFiles",
        "SetEnvironment",
    ] {
        let e = all
            .call_manager("org.freedesktop.systemd1.Manager", member, soon())
            .expect_err(member);
        assert!(
            matches!(&e, CapabilityError::Denied(m) if m.contains(member)),
            "{e}"
        );
        assert!(check_method("org.freedesktop.systemd1.Manager", member).is_err());
    }
    for unit in [
        "reboot.target",
        "poweroff.target",
        "halt.target",
        "rescue.target",
    ] {
        let e = all
            .run(unit, UnitAction::Start, soon())
            .expect_err("a power unit");
        assert!(matches!(e, CapabilityError::Denied(_)), "{unit}: {e}");
    }
    // The node is still on, in its first boot, and the service untouched.
    assert_eq!(node.node.power_state(), PowerState::On);
    assert_eq!(node.node.boot_ids().len(), 1, "no reboot happened");
    assert_eq!(
        node.node
            .exec_ok(&["systemctl", "is-system-running"])
            .map(|s| s.trim().to_owned())
            .ok()
            .as_deref(),
        Some("running")
    );
    unchanged("forbidden calls");

    // enable and disable: only unit files under /etc, and they report a change.
    let files = client(
        &socket,
        capability(
            &["hostplug-*.service", "systemd-journald.service"],
            &[
                SystemdAction::Status,
                SystemdAction::Enable,
                SystemdAction::Disable,
            ],
        ),
        ReadOnly::No,
    );
    assert_eq!(node.show(DEMO_SERVICE, "UnitFileState"), "enabled");
    assert_eq!(files.disable(DEMO_SERVICE, soon()), Ok(true));
    assert_eq!(node.show(DEMO_SERVICE, "UnitFileState"), "disabled");
    assert_eq!(
        files.disable(DEMO_SERVICE, soon()),
        Ok(false),
        "already disabled"
    );
    assert_eq!(files.enable(DEMO_SERVICE, soon()), Ok(true));
    assert_eq!(node.show(DEMO_SERVICE, "UnitFileState"), "enabled");
    let e = files
        .disable("systemd-journald.service", soon())
        .expect_err("a unit file of the node's packages");
    assert!(
        matches!(&e, CapabilityError::Denied(m) if m.contains("under /etc") && m.contains("/lib/systemd/system")),
        "{e}"
    );
    unchanged("enable and disable");
}

/// Without the bus socket: a clear `failed` naming the socket.
#[test]
fn no_bus_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("system_bus_socket");
    let e = client(&socket, demo_capability(), ReadOnly::No)
        .status(DEMO_SERVICE, soon())
        .expect_err("no socket");
    assert!(
        matches!(&e, CapabilityError::Failed(m) if m.contains("system bus socket") && m.contains(&socket.display().to_string())),
        "{e}"
    );
    // Through the plugin: the task fails with the same words.
    let tree = common::Tree::new();
    let grants =
        Grants::etc(tree.etc(), EtcAccess::Write).with_systemd(&socket, demo_capability(), false);
    let e = plugin()
        .invoke(
            &Invocation::new("status", json!({"unit": DEMO_SERVICE}).to_string()),
            &grants,
        )
        .expect_err("no socket");
    assert!(e.message.contains("system bus socket"), "{e:?}");
}

/// The grants a systemd-unit call gets on `node`: its /etc (write) and the bus socket
/// with the demo declaration; `read_only` as the worker's profile says.
fn plugin_grants(node: &Node, read_only: bool) -> Grants {
    Grants::etc(node.node.etc_dir(), EtcAccess::Write).with_systemd(
        node.socket(),
        demo_capability(),
        read_only,
    )
}

fn call(
    method: &str,
    params: Value,
    dry_run: bool,
    grants: &Grants,
) -> (bool, Value, Option<String>) {
    let mut inv = Invocation::new(method, params.to_string());
    inv.dry_run = dry_run;
    let out = plugin()
        .invoke(&inv, grants)
        .unwrap_or_else(|e| panic!("{method}: {e:?}"));
    (out.changed, out.output, out.diff)
}

/// ensure-drop-in restarts only when the file changed; a dry run shows the diff and
/// "would restart" and restarts nothing; a plugin without the capability is refused.
#[test]
fn ensure_drop_in_restarts_only_when_changed() {
    let node = Node::start("sd-plugin");
    let grants = plugin_grants(&node, false);
    let drop_in = node
        .node
        .etc_dir()
        .join("systemd/system/hostplug-demo.service.d/10-hostplug.conf");
    let params = json!({
        "unit": DEMO_SERVICE,
        "name": "10-hostplug",
        "content": "[Service]\nEnvironment=HOSTPLUG_TEST=1\n",
    });
    let pid0 = node.main_pid();

    // Dry run: the diff and "would restart", nothing written, nothing restarted.
    let (changed, out, diff) = call("ensure-drop-in", params.clone(), true, &grants);
    assert!(changed);
    assert!(
        diff.as_deref()
            .is_some_and(|d| d.contains("+Environment=HOSTPLUG_TEST=1")),
        "{diff:?}"
    );
    assert!(
        out["message"]
            .as_str()
            .is_some_and(|m| m.contains("would") && m.contains("restart")),
        "{out}"
    );
    assert!(!drop_in.exists(), "a dry run writes nothing");
    assert_eq!(node.main_pid(), pid0, "a dry run restarts nothing");

    // The change: written, daemon-reload, restart.
    let (changed, out, _) = call("ensure-drop-in", params.clone(), false, &grants);
    assert!(changed, "{out}");
    assert!(drop_in.exists());
    let pid1 = node.main_pid();
    node.settled(pid1);
    assert_ne!(pid1, pid0, "restarted: {out}");
    assert_eq!(out["after"]["mainPid"], json!(pid1));
    assert_eq!(
        node.show(DEMO_SERVICE, "Environment"),
        "HOSTPLUG_TEST=1",
        "systemd read the drop-in"
    );
    assert_eq!(node.show(DEMO_SERVICE, "NeedDaemonReload"), "no");

    // The same again: unchanged, no restart.
    let (changed, out, diff) = call("ensure-drop-in", params.clone(), false, &grants);
    assert!(!changed, "{out}");
    assert_eq!(diff, None);
    assert_eq!(
        node.main_pid(),
        pid1,
        "an unchanged drop-in restarts nothing"
    );

    // A read-only worker profile: the host refuses the restart the plugin asks for.
    let ro = plugin_grants(&node, true);
    let e = plugin()
        .invoke(
            &Invocation::new("restart", json!({"unit": DEMO_SERVICE}).to_string()),
            &ro,
        )
        .expect_err("read-only profile");
    assert!(
        e.message.contains("does not declare itself mutating"),
        "{e:?}"
    );
    assert_eq!(node.main_pid(), pid1);

    // Outside the patterns: refused naming them, nothing written.
    let e = plugin()
        .invoke(
            &Invocation::new(
                "ensure-drop-in",
                json!({"unit": "dbus.service", "name": "x", "content": "[Service]\n"}).to_string(),
            ),
            &grants,
        )
        .expect_err("outside the patterns");
    assert!(e.message.contains("hostplug-*.service"), "{e:?}");
    assert!(
        !node
            .node
            .etc_dir()
            .join("systemd/system/dbus.service.d")
            .exists()
    );

    // Unknown unit: not-found naming it.
    let e = plugin()
        .invoke(
            &Invocation::new(
                "status",
                json!({"unit": "hostplug-nosuch.service"}).to_string(),
            ),
            &grants,
        )
        .expect_err("unknown unit");
    assert!(e.message.contains("hostplug-nosuch.service"), "{e:?}");
    assert_eq!(e.kind, ErrorKind::NotFound, "{e:?}");

    // Without the capability: denied, nothing touched.
    let none = Grants::etc(node.node.etc_dir(), EtcAccess::Write);
    let e = plugin()
        .invoke(
            &Invocation::new("restart", json!({"unit": DEMO_SERVICE}).to_string()),
            &none,
        )
        .expect_err("no capability");
    assert!(e.message.contains("no systemd capability"), "{e:?}");

    // remove-drop-in: removed, restarted; again: nothing.
    let params = json!({"unit": DEMO_SERVICE, "name": "10-hostplug"});
    let (changed, out, _) = call("remove-drop-in", params.clone(), false, &grants);
    assert!(changed, "{out}");
    assert!(!drop_in.exists());
    let pid2 = node.main_pid();
    assert_ne!(pid2, pid1);
    assert_eq!(node.show(DEMO_SERVICE, "Environment"), "");
    let (changed, _, _) = call("remove-drop-in", params, false, &grants);
    assert!(!changed);
    assert_eq!(node.main_pid(), pid2);
}

/// ensure-unit-file makes a new unit and starts it, and only acts when the file changed;
/// start and stop do nothing when the unit is already where they would take it.
#[test]
fn unit_files_and_idempotent_start_stop() {
    let node = Node::start("sd-unit-file");
    let grants = Grants::etc(node.node.etc_dir(), EtcAccess::Write).with_systemd(
        node.socket(),
        capability(&["hostplug-*.service"], &SystemdAction::ALL),
        false,
    );
    let unit = "hostplug-extra.service";
    let file = node.node.etc_dir().join("systemd/system").join(unit);
    let content = "[Service]\nExecStart=/bin/sleep infinity\n";
    let params = json!({"unit": unit, "content": content});

    // A dry run of a new unit: the diff, "would", nothing on the node.
    let (changed, out, diff) = call("ensure-unit-file", params.clone(), true, &grants);
    assert!(changed && diff.is_some(), "{out}");
    assert!(
        out["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("would")),
        "{out}"
    );
    assert!(!file.exists());

    let (changed, out, _) = call("ensure-unit-file", params.clone(), false, &grants);
    assert!(changed, "{out}");
    assert_eq!(node.show(unit, "ActiveState"), "active", "{out}");
    let pid = node.show(unit, "MainPID");
    assert_ne!(pid, "0");
    let (changed, _, _) = call("ensure-unit-file", params, false, &grants);
    assert!(!changed);
    assert_eq!(node.show(unit, "MainPID"), pid, "unchanged: not restarted");

    // start of an active unit, stop twice: only the first stop acts.
    let u = json!({"unit": unit});
    let (changed, _, _) = call("start", u.clone(), false, &grants);
    assert!(!changed, "already active");
    let (changed, out, _) = call("stop", u.clone(), false, &grants);
    assert!(changed, "{out}");
    assert_eq!(node.show(unit, "ActiveState"), "inactive");
    let (changed, _, _) = call("stop", u.clone(), false, &grants);
    assert!(!changed, "already inactive");
    // A dry run of start says so and starts nothing.
    let (changed, out, _) = call("start", u.clone(), true, &grants);
    assert!(changed);
    assert_eq!(out["message"], json!(format!("would start {unit}")));
    assert_eq!(node.show(unit, "ActiveState"), "inactive");
    let (changed, out, _) = call("start", u, false, &grants);
    assert!(changed);
    assert_eq!(out["after"]["activeState"], json!("active"));

    // A unit whose process fails: the restart is a failure naming the states; a oneshot
    // service that runs and exits is a success.
    let e = plugin()
        .invoke(
            &Invocation::new(
                "ensure-unit-file",
                json!({"unit": "hostplug-broken.service",
                       "content": "[Service]\nType=oneshot\nExecStart=/bin/false\n"})
                .to_string(),
            ),
            &grants,
        )
        .expect_err("a unit that fails");
    assert_eq!(e.kind, ErrorKind::Failed, "{e:?}");
    assert!(e.message.contains("ActiveState=failed"), "{e:?}");
    let (changed, out, _) = call(
        "ensure-unit-file",
        json!({"unit": "hostplug-once.service",
               "content": "[Service]\nType=oneshot\nExecStart=/bin/true\n"}),
        false,
        &grants,
    );
    assert!(changed, "{out}");
    assert_eq!(node.show("hostplug-once.service", "Result"), "success");
}
