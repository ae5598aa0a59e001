//! The `hostplug` binary as a plugin author uses it, on the real components:
//! `plugin describe`, `run` (with /etc read-only, writable and in a dry run) and
//! `manifest`, and `plugin run` of the docker-image and containerd-image plugins against a
//! real Docker Engine API (Podman) and a real containerd (`tests/podman`). The same
//! components through the host's API are tested in `host/tests`.

// The host's test helpers (where the components are, the scratch tree): one copy.
#[path = "../../host/tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::{Tree, module};
use hostplug_host::Digest;
use hostplug_podman::DockerEnv;
use hostplug_podman::containerd::{Containerd, ContainerdOptions};
use serde_json::{Value, json};

fn start_docker() -> DockerEnv {
    DockerEnv::start().unwrap_or_else(|e| {
        panic!(
            "cannot start Podman's API service and the registry: {e} (see tests/podman/README.md)"
        )
    })
}

/// A registry with images and a containerd that pulls from it.
struct ContainerdEnv {
    containerd: Containerd,
    docker: DockerEnv,
}

impl ContainerdEnv {
    fn start() -> Self {
        let docker = start_docker();
        let containerd = Containerd::start(&ContainerdOptions {
            registries: vec![docker.registry().to_owned()],
            ..ContainerdOptions::default()
        })
        .unwrap_or_else(|e| panic!("cannot start containerd: {e}"));
        Self { containerd, docker }
    }

    /// Makes a tiny image and pushes it as `<registry>/<remote>`; returns that reference.
    fn publish(&self, remote: &str) -> String {
        let local = format!("localhost/{remote}");
        self.docker.make_image(&local, &[]).expect("image");
        let r = self.docker.push(&local, remote).expect("push");
        self.docker.podman(&["rmi", &local]).expect("rmi");
        r
    }

    fn names(&self) -> Vec<String> {
        self.containerd.image_names().expect("ctr images list")
    }
}

fn hostplug(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hostplug"))
        .args(args)
        .output()
        .expect("run hostplug");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::String(stdout));
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_describes_runs_and_renders_manifests() {
    let dir = common::plugin_dir();
    let escape = dir.join("test-escape.wasm");
    let escape = escape.to_str().expect("utf-8 path");
    let tree = Tree::new();
    let etc = tree.etc();
    let etc = etc.to_str().expect("utf-8 path");

    let (code, json, _) = hostplug(&["plugin", "describe", escape]);
    assert_eq!(code, 0);
    assert_eq!(json["name"], "test-escape");

    let (code, json, _) = hostplug(&[
        "plugin",
        "run",
        escape,
        "--etc",
        etc,
        "--method",
        "read",
        "--params",
        r#"{"path":"/etc/hosts"}"#,
    ]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["output"]["content"], common::HOSTS);
    assert_eq!(json["changed"], false);
    assert!(json["logs"].is_array());

    // Without --write, /etc is read-only.
    let (code, json, stderr) = hostplug(&[
        "plugin",
        "run",
        escape,
        "--etc",
        etc,
        "--method",
        "write",
        "--params",
        r#"{"path":"/etc/hosts","content":"x"}"#,
    ]);
    assert_eq!(code, 1);
    assert_eq!(json["error"]["kind"], "denied", "{json}");
    assert!(stderr.contains("denied"), "{stderr}");
    assert_eq!(tree.read("etc/hosts").as_deref(), Some(common::HOSTS));

    // With --write it writes; with --dry-run it does not.
    let (code, json, _) = hostplug(&[
        "plugin",
        "run",
        escape,
        "--etc",
        etc,
        "--write",
        "--dry-run",
        "--method",
        "write",
        "--params",
        r#"{"path":"/etc/hosts","content":"x"}"#,
    ]);
    assert_eq!(
        (code, &json["error"]["kind"]),
        (1, &"denied".into()),
        "{json}"
    );
    let (code, json, _) = hostplug(&[
        "plugin",
        "run",
        escape,
        "--etc",
        etc,
        "--write",
        "--method",
        "write",
        "--params",
        r#"{"path":"/etc/hosts","content":"x"}"#,
    ]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(tree.read("etc/hosts").as_deref(), Some("x"));

    // A wrong pin.
    let (code, json, _) = hostplug(&["plugin", "describe", escape, "--sha256", &"0".repeat(64)]);
    assert_eq!(code, 1);
    assert_eq!(json["error"]["kind"], "digest-mismatch");

    let (code, yaml, _) = hostplug(&[
        "plugin", "manifest", escape, "--name", "escape", "--etc", "read", "--docker",
    ]);
    assert_eq!(code, 0);
    let yaml = yaml.as_str().expect("yaml text");
    assert!(yaml.contains("kind: HostPlugin"), "{yaml}");
    assert!(
        yaml.contains(&Digest::of(&module("test-escape")).hex()),
        "{yaml}"
    );
    assert!(yaml.contains("plugin.wasm:"), "{yaml}");
}

/// The CLI, as a plugin author runs it: JSON on stdout, exit 0; an error exits 1 with
/// its kind.
#[test]
fn run_runs_docker_image_against_the_docker_socket() {
    let env = start_docker();
    let id = env.make_image("localhost/cli:1", &[]).expect("image");
    let wasm = common::plugin_dir().join("docker-image.wasm");
    let run = |method: &str, params: Value| {
        Command::new(env!("CARGO_BIN_EXE_hostplug"))
            .args(["plugin", "run"])
            .arg(&wasm)
            .arg("--docker-socket")
            .arg(env.socket())
            .args(["--method", method, "--params", &params.to_string()])
            .output()
            .expect("run hostplug")
    };
    let out = run("inspect", json!({"image": "localhost/cli:1"}));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["output"]["id"], id, "{v}");
    assert_eq!(v["changed"], false);

    let out = run("inspect", json!({"image": "localhost/missing:1"}));
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["error"]["kind"], "not-found", "{v}");
}

/// The CLI, as a plugin author runs it against a node's socket.
#[test]
fn run_runs_containerd_image_against_the_containerd_socket() {
    let env = ContainerdEnv::start();
    let app = env.publish("team/cli:1");
    let wasm = common::plugin_dir().join("containerd-image.wasm");
    let run = |method: &str, params: Value| {
        Command::new(env!("CARGO_BIN_EXE_hostplug"))
            .args(["plugin", "run"])
            .arg(&wasm)
            .arg("--containerd-socket")
            .arg(env.containerd.socket())
            .args(["--method", method, "--params", &params.to_string()])
            .output()
            .expect("run hostplug")
    };
    let out = run("pull", json!({"image": app}));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["changed"], true, "{v}");
    assert_eq!(env.names(), vec![app.clone()]);

    let out = run("inspect", json!({"image": "localhost/missing:1"}));
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["error"]["kind"], "not-found", "{v}");
}
