//! The etc-file plugin through the real host: every test runs the built component
//! (`target/plugins/etc-file.wasm`, from `make plugins`) with the `hostplug plugin run`
//! CLI, on its own scratch directory standing in for the node's /etc, exactly as a plugin
//! author would try it locally.
//!
//! Each scratch tree is `<tmp>/etc` (the guest's /etc) next to `<tmp>/outside`, which no
//! call may read or write.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// Directory of the built components: `$HOSTPLUG_PLUGIN_DIR` or `../target/plugins`.
fn plugin_dir() -> PathBuf {
    std::env::var_os("HOSTPLUG_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

fn component() -> PathBuf {
    let path = plugin_dir().join("etc-file.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run `make plugins` in the repository root first (or set HOSTPLUG_PLUGIN_DIR)",
        path.display()
    );
    path
}

/// One precompiled-component cache for all tests of this binary, so the component is
/// compiled once, not once per CLI call.
fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("etc-file-plugin-cache")
}

/// A plugin error as the CLI reports it.
#[derive(Debug)]
struct Failure {
    kind: String,
    message: String,
}

/// A scratch node: `etc/` is the guest's /etc, `outside/` must stay untouched.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc/ssh")).expect("mkdir etc");
        std::fs::create_dir_all(dir.path().join("outside")).expect("mkdir outside");
        std::fs::write(dir.path().join("outside/secret.txt"), "secret\n").expect("write");
        Self { dir }
    }

    fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// Host path of a guest path under /etc.
    fn host_path(&self, guest: &str) -> PathBuf {
        let rel = guest
            .strip_prefix("/etc/")
            .expect("a guest path under /etc");
        self.etc().join(rel)
    }

    fn put(&self, guest: &str, content: &str) {
        std::fs::write(self.host_path(guest), content).expect("write fixture");
    }

    fn get(&self, guest: &str) -> Option<String> {
        std::fs::read_to_string(self.host_path(guest)).ok()
    }

    /// Names in a directory under /etc, sorted (to spot stray temporary files).
    fn names(&self, guest_dir: &str) -> Vec<String> {
        let dir = if guest_dir == "/etc" {
            self.etc()
        } else {
            self.host_path(guest_dir)
        };
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn outside_untouched(&self) {
        let outside = self.dir.path().join("outside");
        let names: Vec<_> = std::fs::read_dir(&outside)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["secret.txt"], "something was written outside /etc");
        assert_eq!(
            std::fs::read_to_string(outside.join("secret.txt")).expect("read"),
            "secret\n"
        );
    }

    /// `hostplug plugin run etc-file.wasm --etc <etc> [--write] [--dry-run] …`.
    fn run_with(
        &self,
        write: bool,
        dry_run: bool,
        method: &str,
        params: Value,
    ) -> Result<Value, Failure> {
        self.run_component(&component(), write, dry_run, method, params)
    }

    /// `hostplug plugin run <wasm> --etc <etc> [--write] [--dry-run] …`.
    fn run_component(
        &self,
        wasm: &Path,
        write: bool,
        dry_run: bool,
        method: &str,
        params: Value,
    ) -> Result<Value, Failure> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hostplug"));
        cmd.args(["plugin", "run"])
            .arg(wasm)
            .arg("--etc")
            .arg(self.etc())
            .arg("--cache-dir")
            .arg(cache_dir())
            .args(["--method", method, "--params", &params.to_string()]);
        if write {
            cmd.arg("--write");
        }
        if dry_run {
            cmd.arg("--dry-run");
        }
        let out = cmd.output().expect("running the hostplug CLI");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            let v: Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}\nstderr: {stderr}"));
            assert!(v["changed"].is_boolean(), "no `changed` in {v}");
            Ok(v)
        } else {
            // On error the CLI prints `{"error":{"kind","message"}}` on stdout and
            // `error [kind]: message` on stderr.
            let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
                panic!("error output is not JSON ({e}): {stdout}\nstderr: {stderr}")
            });
            Err(Failure {
                kind: v["error"]["kind"].as_str().unwrap_or_default().to_string(),
                message: v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            })
        }
    }

    /// A writable, non-dry-run call that must succeed.
    fn ok(&self, method: &str, params: Value) -> Value {
        self.run_with(true, false, method, params.clone())
            .unwrap_or_else(|f| panic!("{method} {params} failed: {f:?}"))
    }

    /// A writable call that must fail with `kind`; returns the message.
    fn fails(&self, method: &str, params: Value, kind: &str) -> String {
        match self.run_with(true, false, method, params.clone()) {
            Ok(v) => panic!("{method} {params} succeeded: {v}"),
            Err(f) => {
                assert_eq!(f.kind, kind, "{method} {params}: {}", f.message);
                f.message
            }
        }
    }

    /// Calls `method` twice: the first call must change the file, the second must not.
    fn idempotent(&self, method: &str, params: Value) -> Value {
        let first = self.ok(method, params.clone());
        assert_eq!(first["changed"], true, "{method}: first call: {first}");
        assert!(first["diff"].is_string(), "{method}: no diff: {first}");
        let second = self.ok(method, params);
        assert_eq!(second["changed"], false, "{method}: second call: {second}");
        assert!(second["diff"].is_null(), "{method}: diff without change");
        first
    }
}

#[test]
fn describe_lists_every_method_with_schema() {
    let out = Command::new(env!("CARGO_BIN_EXE_hostplug"))
        .args(["plugin", "describe"])
        .arg(component())
        .arg("--cache-dir")
        .arg(cache_dir())
        .output()
        .expect("running the hostplug CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(info["name"], "etc-file");
    assert_eq!(info["version"], "0.1.0");
    let methods = info["methods"].as_array().expect("methods");
    let names: Vec<&str> = methods.iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "read",
            "write",
            "ensure-line",
            "remove-line",
            "replace",
            "ensure-block",
            "delete"
        ]
    );
    for m in methods {
        assert_eq!(m["mutates"], m["name"] != "read", "{m}");
        // The host parses each schema; the operator validates task parameters against it.
        let schema = &m["paramsSchema"];
        assert_eq!(schema["type"], "object", "{m}");
        assert!(
            schema["properties"]["path"]["description"].is_string(),
            "{m}"
        );
    }
}

#[test]
fn read_returns_content_and_size() {
    let node = Node::new();
    node.put("/etc/hosts", "127.0.0.1 localhost\n");
    let v = node.ok("read", json!({"path": "/etc/hosts"}));
    assert_eq!(v["changed"], false);
    assert_eq!(v["output"]["content"], "127.0.0.1 localhost\n");
    assert_eq!(v["output"]["size"], 20);
    assert_eq!(v["output"]["path"], "/etc/hosts");
    node.fails("read", json!({"path": "/etc/missing"}), "not-found");
}

#[test]
fn write_creates_replaces_and_backs_up() {
    let node = Node::new();
    let first = node.idempotent("write", json!({"path": "/etc/motd", "content": "hello\n"}));
    assert_eq!(first["output"]["created"], true);
    let diff = first["diff"].as_str().expect("diff");
    assert!(
        diff.starts_with("--- /dev/null\n+++ b/etc/motd\n"),
        "{diff}"
    );
    assert_eq!(node.get("/etc/motd").as_deref(), Some("hello\n"));

    let v = node.ok(
        "write",
        json!({"path": "/etc/motd", "content": "bye\n", "backup": true}),
    );
    assert_eq!(v["changed"], true);
    let diff = v["diff"].as_str().expect("diff");
    assert!(
        diff.starts_with("--- a/etc/motd\n+++ b/etc/motd\n"),
        "{diff}"
    );
    assert!(diff.contains("-hello\n+bye\n"), "{diff}");
    let backup = v["output"]["backup"].as_str().expect("backup path");
    assert!(
        backup.starts_with("/etc/motd.") && backup.ends_with(".bak"),
        "{backup}"
    );
    assert_eq!(node.get(backup).as_deref(), Some("hello\n"));
    assert_eq!(node.get("/etc/motd").as_deref(), Some("bye\n"));
    // The atomic write leaves no temporary file behind.
    let names = node.names("/etc");
    assert_eq!(names.len(), 3, "{names:?}");

    node.fails(
        "write",
        json!({"path": "/etc/absent", "content": "x", "create": false}),
        "not-found",
    );
    assert!(node.get("/etc/absent").is_none());
    node.fails(
        "write",
        json!({"path": "/etc/ssh", "content": "x"}),
        "invalid-params",
    );
}

#[test]
fn write_in_place_keeps_the_inode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let node = Node::new();
    node.put("/etc/subgid", "root:*:1::::::\n");
    let host = node.host_path("/etc/subgid");
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let before = std::fs::metadata(&host).expect("stat");
    node.idempotent(
        "write",
        json!({"path": "/etc/subgid", "content": "root:!:1::::::\n", "atomic": false}),
    );
    let after = std::fs::metadata(&host).expect("stat");
    assert_eq!(after.ino(), before.ino());
    assert_eq!(after.mode() & 0o7777, 0o640);
    assert_eq!(node.get("/etc/subgid").as_deref(), Some("root:!:1::::::\n"));
}

/// Mode, owner and group of a host file.
fn attributes(path: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).expect("stat");
    (m.mode() & 0o7777, m.uid(), m.gid())
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn atomic_edits_keep_mode_and_owner() {
    use std::os::unix::fs::MetadataExt;
    let node = Node::new();
    node.put("/etc/subgid", "root:*:1::::::\n");
    let host = node.host_path("/etc/subgid");
    chmod(&host, 0o640);
    // The tests run as root: give the file an owner the worker is not.
    std::os::unix::fs::chown(&host, Some(1234), Some(1234)).expect("chown");
    let inode = std::fs::metadata(&host).expect("stat").ino();

    // The default (atomic) write, with a backup: a new inode, the same attributes.
    let v = node.ok(
        "write",
        json!({"path": "/etc/subgid", "content": "root:!:1::::::\n", "backup": true}),
    );
    assert_eq!(v["changed"], true, "{v}");
    assert_eq!(v["output"]["mode"], "0640", "{v}");
    assert_ne!(
        std::fs::metadata(&host).expect("stat").ino(),
        inode,
        "not atomic"
    );
    assert_eq!(attributes(&host), (0o640, 1234, 1234));
    let backup = v["output"]["backup"].as_str().expect("backup");
    assert_eq!(attributes(&node.host_path(backup)), (0o640, 1234, 1234));
    // Every other editing method writes atomically by default too.
    node.idempotent(
        "ensure-line",
        json!({"path": "/etc/subgid", "line": "daemon:*:1::::::"}),
    );
    node.idempotent(
        "replace",
        json!({"path": "/etc/subgid", "regexp": "^daemon:\\*", "replacement": "daemon:!"}),
    );
    node.idempotent(
        "ensure-block",
        json!({"path": "/etc/subgid", "block": "bin:*:1::::::"}),
    );
    node.idempotent(
        "ensure-block",
        json!({"path": "/etc/subgid", "state": "absent"}),
    );
    node.idempotent(
        "remove-line",
        json!({"path": "/etc/subgid", "regexp": "^daemon:"}),
    );
    assert_eq!(attributes(&host), (0o640, 1234, 1234));
    assert_eq!(node.get("/etc/subgid").as_deref(), Some("root:!:1::::::\n"));
    // `read` reports them.
    let v = node.ok("read", json!({"path": "/etc/subgid"}));
    assert_eq!(v["output"]["mode"], "0640");
    assert_eq!(v["output"]["uid"], 1234);
    assert_eq!(v["output"]["gid"], 1234);
    // No temporary file left: the file and its backup only.
    assert_eq!(node.names("/etc").len(), 3, "{:?}", node.names("/etc"));

    // A new file: 0644, whatever the process umask made of the temporary file.
    node.ok("write", json!({"path": "/etc/motd", "content": "hi\n"}));
    assert_eq!(attributes(&node.host_path("/etc/motd")).0, 0o644);
}

#[test]
fn write_sets_the_mode_asked_for() {
    let node = Node::new();
    // A new file.
    let v = node.idempotent(
        "write",
        json!({"path": "/etc/secret", "content": "s\n", "mode": "0600"}),
    );
    assert_eq!(v["output"]["mode"], "0600", "{v}");
    let host = node.host_path("/etc/secret");
    assert_eq!(attributes(&host).0, 0o600);

    // Same content, another mode: a change, with git-style mode lines as the diff; a dry
    // run only reports it.
    let params = json!({"path": "/etc/secret", "content": "s\n", "mode": 416});
    let dry = node
        .run_with(true, true, "write", params.clone())
        .expect("dry run");
    assert_eq!(dry["changed"], true, "{dry}");
    assert_eq!(dry["diff"], "old mode 0600\nnew mode 0640\n", "{dry}");
    assert_eq!(attributes(&host).0, 0o600);
    let v = node.idempotent("write", params);
    assert_eq!(v["output"]["mode"], "0640", "{v}");
    assert_eq!(attributes(&host).0, 0o640);

    // New content and a mode, in place: the inode stays, the mode changes.
    let v = node.idempotent(
        "write",
        json!({"path": "/etc/secret", "content": "t\n", "mode": "0o400", "atomic": false}),
    );
    assert!(
        v["diff"]
            .as_str()
            .is_some_and(|d| d.starts_with("old mode 0640\nnew mode 0400\n--- a/etc/secret")),
        "{v}"
    );
    assert_eq!(attributes(&host).0, 0o400);
    assert_eq!(node.get("/etc/secret").as_deref(), Some("t\n"));

    // Bad modes are refused before anything is written, naming the field.
    for mode in [
        json!("0999"),
        json!("4755"),
        json!("02644"),
        json!(644),
        json!(true),
    ] {
        let msg = node.fails(
            "write",
            json!({"path": "/etc/other", "content": "x", "mode": mode}),
            "invalid-params",
        );
        assert!(msg.contains("mode"), "{mode}: {msg}");
    }
    assert!(node.get("/etc/other").is_none());
}

fn test_escape() -> PathBuf {
    let path = plugin_dir().join("test-escape.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run `make plugins`",
        path.display()
    );
    path
}

#[test]
fn read_only_grants_and_dry_runs_cannot_set_attributes() {
    let node = Node::new();
    node.put("/etc/hosts", "x\n");
    let host = node.host_path("/etc/hosts");
    chmod(&host, 0o644);
    let wasm = test_escape();
    let chmod_params = json!({"path": "/etc/hosts", "mode": 0o600, "uid": 1234});
    for (write, dry_run) in [(false, false), (true, true), (false, true)] {
        let f = node
            .run_component(&wasm, write, dry_run, "chmod", chmod_params.clone())
            .expect_err("set-attributes must be refused");
        assert_eq!(f.kind, "denied", "write {write} dry {dry_run}: {f:?}");
        assert_eq!(attributes(&host).0, 0o644);
        assert_eq!(attributes(&host).1, 0);
        // stat is allowed with a read grant and in dry runs.
        let v = node
            .run_component(&wasm, write, dry_run, "stat", json!({"path": "/etc/hosts"}))
            .expect("stat");
        assert_eq!(v["output"]["mode"], 0o644);
    }
    // And etc-file's mode with a read-only grant fails as denied.
    let f = node
        .run_with(
            false,
            false,
            "write",
            json!({"path": "/etc/hosts", "content": "x\n", "mode": "0600"}),
        )
        .expect_err("read-only chmod");
    assert_eq!(f.kind, "denied", "{f:?}");
    assert_eq!(attributes(&host).0, 0o644);
    // With the write grant the same call works, and setuid is refused by the host.
    node.run_component(&wasm, true, false, "chmod", chmod_params)
        .expect("chmod with a write grant");
    assert_eq!(attributes(&host), (0o600, 1234, 0));
    let f = node
        .run_component(
            &wasm,
            true,
            false,
            "chmod",
            json!({"path": "/etc/hosts", "mode": 0o4755}),
        )
        .expect_err("setuid");
    assert_eq!(f.kind, "denied", "{f:?}");
    assert_eq!(attributes(&host).0, 0o600);
}

#[test]
fn symlinks_out_of_etc_cannot_be_chmodded() {
    let node = Node::new();
    let outside = node.dir.path().join("outside");
    let secret = outside.join("secret.txt");
    chmod(&secret, 0o600);
    std::os::unix::fs::symlink("../outside/secret.txt", node.etc().join("rel-link"))
        .expect("symlink");
    std::os::unix::fs::symlink(&secret, node.etc().join("abs-link")).expect("symlink");
    std::os::unix::fs::symlink("../outside", node.etc().join("dir-link")).expect("symlink");
    std::os::unix::fs::symlink("..", node.etc().join("ssh/up")).expect("symlink");
    let wasm = test_escape();
    for path in [
        "/etc/rel-link",
        "/etc/abs-link",
        "/etc/dir-link/secret.txt",
        "/etc/dir-link",
        "/etc/ssh/up/rel-link",
        "/etc/../outside/secret.txt",
        "../outside/secret.txt",
        secret.to_str().expect("utf-8"),
    ] {
        let f = node
            .run_component(
                &wasm,
                true,
                false,
                "chmod",
                json!({"path": path, "mode": 0o666, "uid": 1234, "gid": 1234}),
            )
            .expect_err("escape");
        assert_eq!(f.kind, "denied", "{path}: {f:?}");
        let f = node
            .run_component(&wasm, true, false, "stat", json!({"path": path}))
            .expect_err("escape");
        assert_eq!(f.kind, "denied", "{path}: {f:?}");
        assert_eq!(attributes(&secret), (0o600, 0, 0), "{path}");
        assert_eq!(attributes(&outside).1, 0, "{path}");
        node.outside_untouched();
    }
    // etc-file refuses to give a link out of /etc a mode, too.
    for path in ["/etc/rel-link", "/etc/abs-link", "/etc/dir-link/secret.txt"] {
        node.run_with(
            true,
            false,
            "write",
            json!({"path": path, "content": "secret\n", "mode": "0666"}),
        )
        .expect_err("escape through etc-file");
        assert_eq!(attributes(&secret), (0o600, 0, 0), "{path}");
        node.outside_untouched();
    }
}

#[test]
fn ensure_line_inserts_replaces_and_is_idempotent() {
    let node = Node::new();
    node.put(
        "/etc/chrony.conf",
        "# ntp\nserver old.example.com\nserver older.example.com\ndriftfile /var/lib/chrony/drift\n",
    );
    let params = json!({
        "path": "/etc/chrony.conf",
        "line": "server ntp.example.com iburst",
        "regexp": "^server ",
    });
    let v = node.idempotent("ensure-line", params);
    assert!(
        v["diff"]
            .as_str()
            .expect("diff")
            .contains("-server older.example.com\n+server ntp.example.com iburst\n"),
        "{v}"
    );
    assert_eq!(
        node.get("/etc/chrony.conf").as_deref(),
        Some(
            "# ntp\nserver old.example.com\nserver ntp.example.com iburst\ndriftfile /var/lib/chrony/drift\n"
        )
    );

    // Without regexp, after a given line.
    node.idempotent(
        "ensure-line",
        json!({"path": "/etc/chrony.conf", "line": "makestep 1 3", "insertafter": "^driftfile"}),
    );
    // Before the first match; "^" puts it at the top.
    node.idempotent(
        "ensure-line",
        json!({"path": "/etc/chrony.conf", "line": "# managed by hostplug", "insertbefore": "^"}),
    );
    assert_eq!(
        node.get("/etc/chrony.conf").as_deref(),
        Some(
            "# managed by hostplug\n# ntp\nserver old.example.com\nserver ntp.example.com iburst\n\
             driftfile /var/lib/chrony/drift\nmakestep 1 3\n"
        )
    );

    // A missing file is created only when asked.
    node.fails(
        "ensure-line",
        json!({"path": "/etc/new.conf", "line": "a=1"}),
        "not-found",
    );
    let v = node.idempotent(
        "ensure-line",
        json!({"path": "/etc/new.conf", "line": "a=1", "create": true}),
    );
    assert_eq!(v["output"]["created"], true);
    assert_eq!(node.get("/etc/new.conf").as_deref(), Some("a=1\n"));
}

#[test]
fn remove_line_removes_every_match() {
    let node = Node::new();
    node.put(
        "/etc/ssh/sshd_config",
        "PermitRootLogin yes\nPort 22\n#PermitRootLogin no\n",
    );
    node.idempotent(
        "remove-line",
        json!({"path": "/etc/ssh/sshd_config", "regexp": "^#?PermitRootLogin"}),
    );
    assert_eq!(
        node.get("/etc/ssh/sshd_config").as_deref(),
        Some("Port 22\n")
    );
    // Nothing to remove from a missing file.
    let v = node.ok("remove-line", json!({"path": "/etc/none", "regexp": "x"}));
    assert_eq!(v["changed"], false);
    assert!(node.get("/etc/none").is_none());
}

#[test]
fn replace_rewrites_every_match() {
    let node = Node::new();
    node.put(
        "/etc/ssh/sshd_config",
        "PasswordAuthentication yes\nMatch User x\n  PasswordAuthentication yes\n",
    );
    node.idempotent(
        "replace",
        json!({
            "path": "/etc/ssh/sshd_config",
            "regexp": r"^(\s*)PasswordAuthentication\s+yes$",
            "replacement": "${1}PasswordAuthentication no",
        }),
    );
    assert_eq!(
        node.get("/etc/ssh/sshd_config").as_deref(),
        Some("PasswordAuthentication no\nMatch User x\n  PasswordAuthentication no\n")
    );
    node.fails(
        "replace",
        json!({"path": "/etc/none", "regexp": "x", "replacement": "y"}),
        "not-found",
    );
}

#[test]
fn ensure_block_inserts_updates_and_removes() {
    let node = Node::new();
    node.put("/etc/hosts", "127.0.0.1 localhost\n");
    let block = json!({
        "path": "/etc/hosts",
        "block": "10.0.0.1 node1\n10.0.0.2 node2\n",
        "marker": "# {mark} cluster nodes",
    });
    node.idempotent("ensure-block", block);
    assert_eq!(
        node.get("/etc/hosts").as_deref(),
        Some(
            "127.0.0.1 localhost\n# BEGIN cluster nodes\n10.0.0.1 node1\n10.0.0.2 node2\n# END cluster nodes\n"
        )
    );
    node.idempotent(
        "ensure-block",
        json!({"path": "/etc/hosts", "block": "10.0.0.3 node3", "marker": "# {mark} cluster nodes"}),
    );
    assert_eq!(
        node.get("/etc/hosts").as_deref(),
        Some("127.0.0.1 localhost\n# BEGIN cluster nodes\n10.0.0.3 node3\n# END cluster nodes\n")
    );
    node.idempotent(
        "ensure-block",
        json!({"path": "/etc/hosts", "state": "absent", "marker": "# {mark} cluster nodes"}),
    );
    assert_eq!(
        node.get("/etc/hosts").as_deref(),
        Some("127.0.0.1 localhost\n")
    );
}

#[test]
fn delete_removes_with_backup() {
    let node = Node::new();
    node.put("/etc/old.conf", "x=1\n");
    let v = node.idempotent("delete", json!({"path": "/etc/old.conf", "backup": true}));
    assert_eq!(v["output"]["deleted"], true);
    assert!(
        v["diff"]
            .as_str()
            .expect("diff")
            .starts_with("--- a/etc/old.conf\n+++ /dev/null\n"),
        "{v}"
    );
    assert!(node.get("/etc/old.conf").is_none());
    let backup = v["output"]["backup"].as_str().expect("backup");
    assert_eq!(node.get(backup).as_deref(), Some("x=1\n"));
    node.fails("delete", json!({"path": "/etc/ssh"}), "invalid-params");
}

#[test]
fn dry_run_reports_the_diff_and_changes_nothing() {
    let node = Node::new();
    node.put("/etc/hosts", "127.0.0.1 localhost\n");
    let before = node.names("/etc");
    let calls = [
        (
            "write",
            json!({"path": "/etc/hosts", "content": "x\n", "backup": true}),
        ),
        ("write", json!({"path": "/etc/new", "content": "x\n"})),
        (
            "ensure-line",
            json!({"path": "/etc/hosts", "line": "10.0.0.1 a"}),
        ),
        (
            "remove-line",
            json!({"path": "/etc/hosts", "regexp": "localhost"}),
        ),
        (
            "replace",
            json!({"path": "/etc/hosts", "regexp": "localhost", "replacement": "lh"}),
        ),
        ("ensure-block", json!({"path": "/etc/hosts", "block": "x"})),
        ("delete", json!({"path": "/etc/hosts"})),
    ];
    for (method, params) in calls {
        // Even with a writable grant: a dry run must not write.
        let v = node
            .run_with(true, true, method, params.clone())
            .unwrap_or_else(|f| panic!("dry run of {method} {params}: {f:?}"));
        assert_eq!(v["changed"], true, "{method}: {v}");
        assert!(
            v["diff"].as_str().is_some_and(|d| d.contains("@@")),
            "{method}: {v}"
        );
        assert!(v["output"]["backup"].is_null(), "{method}: {v}");
        assert_eq!(
            node.get("/etc/hosts").as_deref(),
            Some("127.0.0.1 localhost\n")
        );
        assert_eq!(node.names("/etc"), before, "{method} left files behind");
    }
}

#[test]
fn paths_outside_etc_are_refused_and_nothing_is_written() {
    let node = Node::new();
    let outside = node.dir.path().join("outside");
    std::os::unix::fs::symlink("../outside/secret.txt", node.etc().join("rel-link"))
        .expect("symlink");
    std::os::unix::fs::symlink(outside.join("secret.txt"), node.etc().join("abs-link"))
        .expect("symlink");
    std::os::unix::fs::symlink("../outside", node.etc().join("dir-link")).expect("symlink");
    let outside_abs = outside.join("new.txt").to_string_lossy().into_owned();
    let paths = [
        "/etc/../outside/new.txt",
        "/etc/../outside/secret.txt",
        "/tmp/hostplug-etc-file-test",
        "../outside/secret.txt",
        "outside/secret.txt",
        outside_abs.as_str(),
        "/etc/rel-link",
        "/etc/abs-link",
        "/etc/dir-link/secret.txt",
        "/etc/dir-link/new.txt",
        "/etc",
    ];
    for path in paths {
        for (method, params) in [
            ("write", json!({"path": path, "content": "pwned\n"})),
            (
                "ensure-line",
                json!({"path": path, "line": "pwned", "create": true}),
            ),
            ("delete", json!({"path": path})),
        ] {
            let result = node.run_with(true, false, method, params);
            if method == "delete" && (path == "/etc/rel-link" || path == "/etc/abs-link") {
                // The link itself lives in /etc: deleting it is allowed and must remove
                // the link only, never what it points to (checked below).
                let v = result.unwrap_or_else(|f| panic!("delete of the link {path}: {f:?}"));
                assert_eq!(v["output"]["deleted"], true, "{v}");
                assert!(!node.etc().join(&path[5..]).exists());
                node.outside_untouched();
                continue;
            }
            match result {
                Ok(v) => panic!("{method} on {path} succeeded: {v}"),
                Err(f) => assert!(
                    f.kind == "denied" || f.kind == "not-found" || f.kind == "invalid-params",
                    "{method} on {path}: {f:?}"
                ),
            }
            node.outside_untouched();
        }
        // Reads are refused too.
        if let Ok(v) = node.run_with(false, false, "read", json!({ "path": path })) {
            panic!("read of {path} succeeded: {v}");
        }
    }
    assert!(!Path::new("/tmp/hostplug-etc-file-test").exists());
}

/// What `read` says of a link out of /etc, as real nodes have it (`/etc/os-release` →
/// `../usr/lib/os-release` on Debian, Ubuntu and Fedora): refused, naming the link and where
/// it leads; a link that stays under /etc is followed.
#[test]
fn read_names_a_link_that_leads_out_of_etc() {
    let node = Node::new();
    std::fs::create_dir_all(node.dir.path().join("usr/lib")).expect("mkdir usr/lib");
    std::fs::write(node.dir.path().join("usr/lib/os-release"), "ID=debian\n").expect("write");
    std::os::unix::fs::symlink("../usr/lib/os-release", node.etc().join("os-release"))
        .expect("symlink");
    node.put("/etc/hostname", "node1\n");
    std::os::unix::fs::symlink("hostname", node.etc().join("name-link")).expect("symlink");
    let f = node
        .run_with(false, false, "read", json!({"path": "/etc/os-release"}))
        .expect_err("a read through a link out of /etc");
    assert_eq!(f.kind, "denied", "{f:?}");
    assert!(
        f.message.contains("/etc/os-release: a symbolic link to")
            && f.message
                .contains("usr/lib/os-release, which is outside /etc"),
        "{f:?}"
    );
    let v = node
        .run_with(false, false, "read", json!({"path": "/etc/name-link"}))
        .expect("a link under /etc is followed");
    assert_eq!(v["output"]["content"], "node1\n", "{v}");
    assert_eq!(v["output"]["path"], "/etc/name-link", "{v}");
}

#[test]
fn read_only_grant_denies_writes() {
    let node = Node::new();
    node.put("/etc/hosts", "127.0.0.1 localhost\n");
    let before = node.names("/etc");
    for (method, params) in [
        ("write", json!({"path": "/etc/hosts", "content": "x\n"})),
        (
            "ensure-line",
            json!({"path": "/etc/hosts", "line": "10.0.0.1 a", "backup": true}),
        ),
        ("delete", json!({"path": "/etc/hosts"})),
        ("write", json!({"path": "/etc/new", "content": "x\n"})),
    ] {
        match node.run_with(false, false, method, params.clone()) {
            Ok(v) => panic!("{method} {params} with read-only /etc succeeded: {v}"),
            Err(f) => assert_eq!(f.kind, "denied", "{method}: {}", f.message),
        }
        assert_eq!(
            node.get("/etc/hosts").as_deref(),
            Some("127.0.0.1 localhost\n")
        );
        assert_eq!(node.names("/etc"), before, "{method} left files behind");
    }
    // Reading still works, and a call that would change nothing succeeds.
    node.run_with(false, false, "read", json!({"path": "/etc/hosts"}))
        .expect("read with read-only /etc");
    let v = node
        .run_with(
            false,
            false,
            "ensure-line",
            json!({"path": "/etc/hosts", "line": "127.0.0.1 localhost"}),
        )
        .expect("no-op with read-only /etc");
    assert_eq!(v["changed"], false);
}

#[test]
fn invalid_params_name_the_field() {
    let node = Node::new();
    node.put("/etc/hosts", "a\n");
    let msg = node.fails(
        "ensure-line",
        json!({"path": "/etc/hosts", "line": 3}),
        "invalid-params",
    );
    assert!(msg.contains("line"), "{msg}");
    let msg = node.fails(
        "ensure-line",
        json!({"path": "/etc/hosts", "line": "x", "regex": "x"}),
        "invalid-params",
    );
    assert!(msg.contains("regex"), "{msg}");
    let msg = node.fails(
        "replace",
        json!({"path": "/etc/hosts", "regexp": "(", "replacement": ""}),
        "invalid-params",
    );
    assert!(msg.starts_with("regexp"), "{msg}");
    node.fails("no-such-method", json!({}), "not-found");
    assert_eq!(node.get("/etc/hosts").as_deref(), Some("a\n"));
}

/// A control-plane node's sensitive files, with links to them planted in /etc.
fn sensitive_node() -> Node {
    let node = Node::new();
    for dir in ["kubernetes/pki", "kubernetes/manifests", "sub"] {
        std::fs::create_dir_all(node.etc().join(dir)).expect("mkdir");
    }
    for (guest, content) in [
        ("/etc/shadow", "root:$6$hash:19000::::::\n"),
        ("/etc/gshadow", "root:::\n"),
        (
            "/etc/kubernetes/admin.conf",
            "apiVersion: v1\nkind: Config\n",
        ),
        ("/etc/kubernetes/pki/ca.key", "KEY\n"),
        (
            "/etc/kubernetes/manifests/etcd.yaml",
            "kind: Pod\nuser: root\n",
        ),
        ("/etc/ssh/ssh_host_ed25519_key", "KEY\n"),
    ] {
        node.put(guest, content);
    }
    for (link, target) in [
        ("innocent", "shadow"),
        ("sub/up", "../kubernetes/admin.conf"),
        ("k8s", "kubernetes"),
        ("static", "kubernetes/manifests"),
    ] {
        std::os::unix::fs::symlink(target, node.etc().join(link)).expect("symlink");
    }
    node
}

/// Every etc-file method on every sensitive path, directly and through links planted in
/// /etc: refused by the host (not by the plugin) with `denied`, a message that says
/// why, and nothing on the node changed.
#[test]
fn sensitive_paths_are_refused_through_every_method() {
    let node = sensitive_node();
    let snapshot = |node: &Node| {
        [
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/kubernetes/admin.conf",
            "/etc/kubernetes/pki/ca.key",
            "/etc/kubernetes/manifests/etcd.yaml",
            "/etc/ssh/ssh_host_ed25519_key",
        ]
        .map(|g| node.get(g))
    };
    let before = snapshot(&node);
    let secrets = [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/pki/ca.key",
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/innocent",
        "/etc/sub/up",
        "/etc/k8s/admin.conf",
        "/etc/k8s/pki/ca.key",
        "/etc/sub/../kubernetes/admin.conf",
    ];
    let calls = |path: &str| {
        [
            ("read", json!({"path": path})),
            ("write", json!({"path": path, "content": "x\n"})),
            (
                "write",
                json!({"path": path, "content": "x\n", "atomic": false}),
            ),
            ("ensure-line", json!({"path": path, "line": "x"})),
            ("remove-line", json!({"path": path, "regexp": "root"})),
            (
                "replace",
                json!({"path": path, "regexp": "root", "replacement": "toor"}),
            ),
            ("ensure-block", json!({"path": path, "block": "x"})),
            ("delete", json!({"path": path})),
        ]
    };
    for path in secrets {
        for (method, params) in calls(path) {
            if method == "delete" && ["/etc/innocent", "/etc/sub/up"].contains(&path) {
                // Deleting a planted link removes the link, never what it points to.
                continue;
            }
            let message = node.fails(method, params, "denied");
            assert!(
                message.contains("sensitive path"),
                "{method} {path}: the message should say why: {message}"
            );
        }
    }
    // Static Pod manifests: readable, never changed, created or removed.
    for path in [
        "/etc/kubernetes/manifests/etcd.yaml",
        "/etc/static/etcd.yaml",
        "/etc/k8s/manifests/etcd.yaml",
    ] {
        for (method, params) in calls(path).into_iter().skip(1) {
            let message = node.fails(method, params, "denied");
            assert!(
                message.contains("sensitive path"),
                "{method} {path}: {message}"
            );
        }
    }
    for path in [
        "/etc/kubernetes/manifests/x.yaml",
        "/etc/static/x.yaml",
        "/etc/k8s/manifests/x.yaml",
    ] {
        for params in [
            json!({"path": path, "content": "kind: Pod\n"}),
            json!({"path": path, "content": "kind: Pod\n", "atomic": false}),
        ] {
            let message = node.fails("write", params, "denied");
            assert!(message.contains("sensitive path"), "{path}: {message}");
        }
        let message = node.fails(
            "ensure-line",
            json!({"path": path, "line": "kind: Pod", "create": true}),
            "denied",
        );
        assert!(message.contains("sensitive path"), "{path}: {message}");
    }
    for link in ["/etc/innocent", "/etc/sub/up"] {
        let v = node.ok("delete", json!({"path": link}));
        assert_eq!(v["output"]["deleted"], true, "{v}");
        assert!(
            v["diff"].as_str().is_some_and(|d| !d.contains("root")),
            "{v}"
        );
    }
    let v = node.ok(
        "read",
        json!({"path": "/etc/kubernetes/manifests/etcd.yaml"}),
    );
    assert_eq!(v["output"]["content"], "kind: Pod\nuser: root\n", "{v}");
    assert_eq!(snapshot(&node), before, "a sensitive file changed");
    assert!(node.get("/etc/kubernetes/manifests/x.yaml").is_none());
    node.outside_untouched();
    // Everything else under /etc works as before.
    node.ok("write", json!({"path": "/etc/motd", "content": "hi\n"}));
    node.ok("read", json!({"path": "/etc/motd"}));
}

/// An administrator's explicit allow opens exactly what it names.
#[test]
fn an_explicit_allow_opens_a_sensitive_path() {
    let node = sensitive_node();
    let run = |allow: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hostplug"));
        cmd.args(["plugin", "run"])
            .arg(component())
            .arg("--etc")
            .arg(node.etc())
            .arg("--write")
            .arg("--cache-dir")
            .arg(cache_dir())
            .args(["--method", "write", "--params"])
            .arg(
                json!({"path": "/etc/kubernetes/manifests/x.yaml", "content": "kind: Pod\n"})
                    .to_string(),
            );
        for a in allow {
            cmd.args(["--allow-sensitive", a]);
        }
        cmd.output().expect("hostplug")
    };
    assert!(!run(&[]).status.success());
    // (An atomic write also creates a temporary file in the directory.)
    let out = run(&["/etc/kubernetes/manifests/**"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        node.get("/etc/kubernetes/manifests/x.yaml").as_deref(),
        Some("kind: Pod\n")
    );
    assert_eq!(
        node.get("/etc/shadow").as_deref(),
        Some("root:$6$hash:19000::::::\n")
    );
}
