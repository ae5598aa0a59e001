//! hostplug's images, built from the Dockerfiles with Podman and run with runc: each
//! builds and is saved as a docker archive under its name, the cache gives the same image
//! for the same inputs, each binary starts in its image as uid 65532 (the worker until
//! its idle exit, the operator and the console while they wait for an unreachable API
//! server), there is no shell in any of them, and the operator image carries exactly the
//! built-in plugins.
//!
//! Needs what `make test` provides: the binaries (`cargo build --workspace --bins`), the
//! plugins (`make plugins`) and the base image's root filesystem (`make setup`).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use hostplug_images::{
    Binaries, BuiltImage, Image, ImageStore, NONROOT_UID, builtin_plugins, repo_root,
};

/// How long a started container gets to be up and listening: 60 s on a loaded 2-core
/// machine (it takes well under a second when idle).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The worker's idle exit in the test: 2 s without a request, then exit 0.
const WORKER_IDLE_EXIT_MS: u64 = 2000;

struct Built {
    store: ImageStore,
    images: BTreeMap<&'static str, BuiltImage>,
}

/// The three images, built once per test process.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let store = ImageStore::open().expect("opening the image store");
        let binaries = Binaries::of_this_build().expect("locating the binaries");
        let images = store
            .build_all(&binaries)
            .unwrap_or_else(|e| panic!("building the images: {e}"))
            .into_iter()
            .map(|b| {
                eprintln!(
                    "{}: {} in {:?} ({})",
                    b.name,
                    if b.cached { "cached" } else { "built" },
                    b.took,
                    b.archive.display()
                );
                (b.name, b)
            })
            .collect();
        Built { store, images }
    })
}

fn podman(args: &[&str]) -> Output {
    built()
        .store
        .podman()
        .args(args)
        .output()
        .expect("running podman")
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The image's file system, mounted read-only for the closure.
fn with_mounted<T>(image: &str, f: impl FnOnce(&Path) -> T) -> T {
    let root = PathBuf::from(podman_ok(&["image", "mount", image]));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&root)));
    podman_ok(&["image", "unmount", image]);
    result.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

#[test]
fn each_image_builds_and_is_saved_under_its_name() {
    let built = built();
    for image in Image::ALL {
        let b = &built.images[image.name()];
        let manifest = Command::new("tar")
            .arg("-xOf")
            .arg(&b.archive)
            .arg("manifest.json")
            .output()
            .expect("tar");
        assert!(manifest.status.success(), "{}", b.archive.display());
        let manifest: serde_json::Value =
            serde_json::from_slice(&manifest.stdout).expect("manifest.json");
        assert_eq!(
            manifest[0]["RepoTags"],
            serde_json::json!([image.name()]),
            "{}",
            b.archive.display()
        );
        let config = podman_ok(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Entrypoint}} {{.Config.User}}",
            image.name(),
        ]);
        assert_eq!(
            config,
            format!("[\"/usr/local/bin/{}\"] 65532:65532", image.binary())
        );
    }
}

#[test]
fn the_same_inputs_come_from_the_cache() {
    let built = built();
    let binaries = Binaries::of_this_build().expect("binaries");
    let again = built
        .store
        .build(Image::Worker, &binaries)
        .expect("second build");
    assert!(again.cached, "an unchanged worker image was built again");
    assert_eq!(again.key, built.images[Image::Worker.name()].key);
    assert_eq!(again.archive, built.images[Image::Worker.name()].archive);
}

#[test]
fn the_binaries_start_in_their_images() {
    built();
    for (image, arg, expect) in [
        (Image::Operator, "--version", "hostplug-operator 0."),
        (Image::Worker, "--version", "hostplug-worker 0."),
        (Image::Web, "--help", "hostplug web console"),
    ] {
        let out = podman_ok(&["run", "--rm", "--network=none", image.name(), arg]);
        assert!(
            out.to_lowercase().contains(&expect.to_lowercase()),
            "{} {arg}: {out}",
            image.name()
        );
    }
}

#[test]
fn there_is_no_shell_in_any_image() {
    built();
    for image in Image::ALL {
        with_mounted(image.name(), |root| {
            for shell in [
                "bin/sh",
                "bin/bash",
                "bin/dash",
                "bin/busybox",
                "usr/bin/sh",
                "usr/bin/bash",
                "usr/bin/dash",
                "usr/bin/busybox",
                "usr/bin/perl",
                "usr/bin/python3",
            ] {
                assert!(!root.join(shell).exists(), "{} has /{shell}", image.name());
            }
            // And nothing else executable besides the entrypoint and shared libraries.
            let mut executables = Vec::new();
            collect_executables(root, root, &mut executables);
            executables.retain(|p| {
                !p.contains(".so") && !p.starts_with("usr/share/") && !p.starts_with("etc/")
            });
            executables.sort();
            let mut expected = vec![
                format!("usr/local/bin/{}", image.binary()),
                // ca-certificates' script (needs a shell and openssl, neither is there).
                "usr/sbin/update-ca-certificates".to_owned(),
            ];
            expected.sort();
            assert_eq!(executables, expected, "{}", image.name());
        });
        let out = podman(&[
            "run",
            "--rm",
            "--network=none",
            "--entrypoint=/bin/sh",
            image.name(),
            "-c",
            "true",
        ]);
        assert!(!out.status.success(), "{} ran /bin/sh", image.name());
    }
}

fn collect_executables(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let meta = entry.path().symlink_metadata().expect("metadata");
        if meta.is_dir() {
            collect_executables(root, &entry.path(), out);
        } else if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            let rel = entry
                .path()
                .strip_prefix(root)
                .expect("under root")
                .to_owned();
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

#[test]
fn the_operator_image_carries_only_the_builtin_plugins() {
    built();
    let dockerfile = repo_root().join(Image::Operator.dockerfile());
    let names = builtin_plugins(
        &dockerfile,
        &fs::read_to_string(&dockerfile).expect("Dockerfile"),
    )
    .expect("BUILTIN_PLUGINS");
    assert_eq!(
        names,
        [
            "etc-file",
            "docker-image",
            "containerd-image",
            "systemd-unit"
        ]
    );
    let plugin_dir = Binaries::of_this_build().expect("binaries").plugin_dir;
    // The plugin directory the images are built from also holds test plugins and
    // examples: the image must not.
    let available: Vec<String> = fs::read_dir(&plugin_dir)
        .expect("plugin dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wasm"))
        .collect();
    assert!(
        available.iter().any(|n| n.starts_with("test-")),
        "expected test plugins in {}: {available:?}",
        plugin_dir.display()
    );
    with_mounted(Image::Operator.name(), |root| {
        let dir = root.join("usr/lib/hostplug/plugins");
        let mut shipped: Vec<String> = fs::read_dir(&dir)
            .expect("plugin dir in the image")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        shipped.sort();
        let mut expected: Vec<String> = names
            .iter()
            .flat_map(|n| [format!("{n}.wasm"), format!("{n}.capabilities.json")])
            .collect();
        expected.sort();
        assert_eq!(shipped, expected);
        for file in &shipped {
            assert_eq!(
                fs::read(dir.join(file)).expect("read"),
                fs::read(plugin_dir.join(file)).expect("read"),
                "{file} differs from {}",
                plugin_dir.display()
            );
        }
    });
}

#[test]
fn the_console_image_has_its_data_directory_for_the_nonroot_user() {
    built();
    with_mounted(Image::Web.name(), |root| {
        let meta = fs::metadata(root.join("var/lib/hostplug-web")).expect("data directory");
        assert!(meta.is_dir());
        assert_eq!((meta.uid(), meta.gid()), (NONROOT_UID, NONROOT_UID));
    });
    let volumes = podman_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Volumes}}",
        Image::Web.name(),
    ]);
    assert_eq!(volumes, r#"{"/var/lib/hostplug-web":{}}"#);
}

/// A container started with `podman run -d`, removed when dropped.
struct Container(String);

impl Container {
    fn start(args: &[&str]) -> Self {
        let mut all = vec!["run", "-d", "--network=none"];
        all.extend_from_slice(args);
        Container(podman_ok(&all))
    }

    fn pid(&self) -> u32 {
        let pid = podman_ok(&["inspect", "--format", "{{.State.Pid}}", &self.0]);
        pid.parse().unwrap_or_else(|_| panic!("pid {pid:?}"))
    }

    fn logs(&self) -> String {
        let out = podman(&["logs", &self.0]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits until the container's process listens on `port` (read from
    /// /proc/<pid>/net/tcp, which is the container's own network namespace).
    fn wait_listening(&self, port: u16) -> u32 {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let pid = self.pid();
            if pid != 0 && listens(pid, port) {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "not listening on {port} after {START_TIMEOUT:?}; logs:\n{}",
                self.logs()
            );
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--volumes", "--time=1", &self.0]);
    }
}

/// Whether the process's network namespace has a TCP socket listening on `port`.
fn listens(pid: u32, port: u16) -> bool {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/tcp")) else {
        return false;
    };
    let port = format!(":{port:04X}");
    text.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // local_address, …, st (0A = LISTEN)
        f.len() > 3 && f[1].ends_with(&port) && f[3] == "0A"
    })
}

/// The `Uid:` and `Gid:` lines of /proc/<pid>/status: real, effective, saved, fs.
fn ids(pid: u32) -> (String, String) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .expect("field")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    (field("Uid:"), field("Gid:"))
}

/// A directory to bind-mount read-only into a container: readable by the container's
/// uid 65532 (a temporary directory is 0700 and would not be).
fn shared_dir(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    for (name, content) in files {
        let path = dir.path().join(name);
        fs::write(&path, content).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    dir
}

const NONROOT_IDS: &str = "65532 65532 65532 65532";

#[test]
fn the_worker_runs_as_nonroot_until_its_idle_exit() {
    built();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let dir = shared_dir(&[
        ("tls.crt", cert.cert.pem().as_bytes()),
        ("tls.key", cert.key_pair.serialize_pem().as_bytes()),
        ("token", b"0123456789abcdef0123456789abcdef"),
    ]);
    let mount = format!("{}:/run/secrets/hostplug:ro", dir.path().display());
    let idle = format!("HOSTPLUG_IDLE_EXIT_MS={WORKER_IDLE_EXIT_MS}");
    // What the operator's Pod gives it: read-only root, no capabilities, no privilege
    // escalation, an emptyDir for the module cache.
    let c = Container::start(&[
        "--read-only",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        "--tmpfs=/var/cache/hostplug",
        "--volume",
        &mount,
        "--env=HOSTPLUG_TLS_CERT=/run/secrets/hostplug/tls.crt",
        "--env=HOSTPLUG_TLS_KEY=/run/secrets/hostplug/tls.key",
        "--env=HOSTPLUG_TOKEN_FILE=/run/secrets/hostplug/token",
        "--env=HOSTPLUG_ETC_ACCESS=none",
        "--env",
        &idle,
        Image::Worker.name(),
    ]);
    let pid = c.wait_listening(8443);
    assert_eq!(ids(pid), (NONROOT_IDS.into(), NONROOT_IDS.into()));
    // Idle: it exits by itself, successfully.
    let code = podman_ok(&["wait", &c.0]);
    assert_eq!(code, "0", "worker logs:\n{}", c.logs());
}

/// A kubeconfig whose API server cannot be reached (the container has no network): the
/// operator and the console start and keep trying.
fn unreachable_kubeconfig() -> tempfile::TempDir {
    shared_dir(&[(
        "kubeconfig",
        b"apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
    )])
}

#[test]
fn the_operator_runs_as_nonroot() {
    built();
    let dir = unreachable_kubeconfig();
    let mount = format!("{}:/config:ro", dir.path().display());
    let c = Container::start(&[
        "--read-only",
        "--cap-drop=all",
        "--volume",
        &mount,
        "--env=KUBECONFIG=/config/kubeconfig",
        Image::Operator.name(),
    ]);
    let pid = c.wait_listening(8080);
    assert_eq!(ids(pid), (NONROOT_IDS.into(), NONROOT_IDS.into()));
}

#[test]
fn the_console_runs_as_nonroot() {
    built();
    let dir = unreachable_kubeconfig();
    let mount = format!("{}:/config:ro", dir.path().display());
    let c = Container::start(&[
        "--read-only",
        "--cap-drop=all",
        "--volume",
        &mount,
        "--env=KUBECONFIG=/config/kubeconfig",
        Image::Web.name(),
        "--listen=0.0.0.0:8443",
    ]);
    let pid = c.wait_listening(8443);
    assert_eq!(ids(pid), (NONROOT_IDS.into(), NONROOT_IDS.into()));
}
