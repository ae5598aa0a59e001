//! The sandbox, through the real host and the real `test-escape` and `test-noisy`
//! components: what /etc a plugin sees under each grant, that nothing outside it can be
//! read or written (`..`, absolute paths, symlinks), that dry runs and the read
//! capability cannot write, that there is no environment, and the docker import's
//! deny-by-default and allow-list.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;

use common::{HOSTS, SECRET, Tree, host, load};
use hostplug_host::{ErrorKind, EtcAccess, Grants, Invocation, InvokeError};
use serde_json::json;

fn call(
    plugin: &hostplug_host::Plugin,
    method: &str,
    params: serde_json::Value,
    dry_run: bool,
    grants: &Grants,
) -> Result<hostplug_host::InvokeOutcome, InvokeError> {
    let mut inv = Invocation::new(method, params.to_string());
    inv.dry_run = dry_run;
    plugin.invoke(&inv, grants)
}

fn escape_paths(tree: &Tree) -> Vec<String> {
    let etc = tree.etc();
    std::os::unix::fs::symlink("../outside", etc.join("link-dir")).expect("symlink");
    std::os::unix::fs::symlink(tree.outside().join("secret.txt"), etc.join("abs-link"))
        .expect("symlink");
    std::os::unix::fs::symlink("../outside/secret.txt", etc.join("rel-link")).expect("symlink");
    std::os::unix::fs::symlink(tree.outside(), etc.join("sub/abs-dir")).expect("symlink");
    vec![
        "/etc/../outside/secret.txt".into(),
        "/etc/sub/../../outside/secret.txt".into(),
        "/etc/./../outside/secret.txt".into(),
        "../outside/secret.txt".into(),
        "outside/secret.txt".into(),
        tree.outside().join("secret.txt").display().to_string(),
        "/etc/link-dir/secret.txt".into(),
        "/etc/abs-link".into(),
        "/etc/rel-link".into(),
        "/etc/sub/abs-dir/secret.txt".into(),
        "/outside/secret.txt".into(),
        "/secret.txt".into(),
    ]
}

#[test]
fn nothing_outside_etc_can_be_read_or_written() {
    let plugin = load(host(), "test-escape");
    let tree = Tree::new();
    let paths = escape_paths(&tree);
    let grants = Grants::etc(tree.etc(), EtcAccess::Write);
    let before = tree.outside_snapshot();
    for path in &paths {
        match call(&plugin, "read", json!({ "path": path }), false, &grants) {
            Ok(o) => panic!("read {path} succeeded: {}", o.output),
            Err(e) => {
                assert!(
                    matches!(e.kind, ErrorKind::Denied | ErrorKind::NotFound),
                    "read {path}: {e}"
                );
                assert!(!e.message.contains(SECRET.trim()), "{e}");
            }
        }
        let r = call(
            &plugin,
            "write",
            json!({ "path": path, "content": "pwned\n" }),
            false,
            &grants,
        );
        assert!(r.is_err(), "write {path} succeeded");
        // Escaping names for new files, next to the secret.
        let new_file = path.replace("secret.txt", "new.txt");
        let r = call(
            &plugin,
            "write",
            json!({ "path": new_file, "content": "pwned\n" }),
            false,
            &grants,
        );
        assert!(r.is_err(), "write {new_file} succeeded");
    }
    assert_eq!(
        tree.outside_snapshot(),
        before,
        "files outside /etc changed"
    );
    for dir in ["/etc/..", "/etc/link-dir", "/etc/sub/abs-dir", "/"] {
        let r = call(&plugin, "list", json!({ "path": dir }), false, &grants);
        assert!(
            r.is_err(),
            "listing {dir} succeeded: {:?}",
            r.map(|o| o.output)
        );
    }
    // The sandbox still works inside /etc.
    let o = call(
        &plugin,
        "write",
        json!({"path": "/etc/sub/ok.conf", "content": "fine\n"}),
        false,
        &grants,
    )
    .expect("write inside /etc");
    assert!(o.changed);
    assert_eq!(tree.read("etc/sub/ok.conf").as_deref(), Some("fine\n"));
}

#[test]
fn dry_run_leaves_files_untouched_even_when_the_plugin_writes() {
    let plugin = load(host(), "test-escape");
    let tree = Tree::new();
    let grants = Grants::etc(tree.etc(), EtcAccess::Write);
    let e = call(
        &plugin,
        "write",
        json!({"path": "/etc/hosts", "content": "changed\n"}),
        true,
        &grants,
    )
    .expect_err("a dry run wrote /etc/hosts");
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    for (method, path) in [
        ("write", "/etc/new.conf"),
        ("mkdir", "/etc/newdir"),
        ("remove", "/etc/hosts"),
    ] {
        let r = call(
            &plugin,
            method,
            json!({"path": path, "content": "x"}),
            true,
            &grants,
        );
        assert!(r.is_err(), "dry run {method} {path} succeeded");
    }
    assert_eq!(tree.read("etc/hosts").as_deref(), Some(HOSTS));
    assert!(tree.read("etc/new.conf").is_none());
    assert!(!tree.etc().join("newdir").exists());
    // Reading still works in a dry run.
    let o = call(
        &plugin,
        "read",
        json!({"path": "/etc/hosts"}),
        true,
        &grants,
    )
    .expect("read");
    assert_eq!(o.output["content"], HOSTS);
}

#[test]
fn the_read_capability_cannot_write() {
    let plugin = load(host(), "test-escape");
    let tree = Tree::new();
    let grants = Grants::etc(tree.etc(), EtcAccess::Read);
    let o = call(
        &plugin,
        "read",
        json!({"path": "/etc/hosts"}),
        false,
        &grants,
    )
    .expect("read");
    assert_eq!(o.output["content"], HOSTS);
    for (method, path) in [
        ("write", "/etc/hosts"),
        ("write", "/etc/sub/new.conf"),
        ("mkdir", "/etc/newdir"),
        ("remove", "/etc/hosts"),
    ] {
        let e = call(
            &plugin,
            method,
            json!({"path": path, "content": "x"}),
            false,
            &grants,
        )
        .expect_err("wrote under the read capability");
        assert_eq!(e.kind, ErrorKind::Denied, "{method} {path}: {e}");
    }
    assert_eq!(tree.read("etc/hosts").as_deref(), Some(HOSTS));
    assert!(tree.read("etc/sub/new.conf").is_none());
}

#[test]
fn without_the_etc_capability_etc_is_not_visible() {
    let plugin = load(host(), "test-escape");
    let tree = Tree::new();
    // Even with a directory configured, `none` preopens nothing.
    let mut grants = Grants::etc(tree.etc(), EtcAccess::None);
    for g in [Grants::none(), grants.clone()] {
        let e = call(&plugin, "read", json!({"path": "/etc/hosts"}), false, &g)
            .expect_err("read /etc/hosts without the capability");
        assert!(
            matches!(e.kind, ErrorKind::NotFound | ErrorKind::Denied),
            "{e}"
        );
        let o = call(&plugin, "exists", json!({"path": "/etc"}), false, &g).expect("exists");
        assert_eq!(o.output["exists"], false);
        let e = call(
            &plugin,
            "write",
            json!({"path": "/etc/x", "content": "x"}),
            false,
            &g,
        )
        .expect_err("write without the capability");
        assert!(
            matches!(e.kind, ErrorKind::NotFound | ErrorKind::Denied),
            "{e}"
        );
    }
    grants.etc = EtcAccess::Read;
    let o = call(&plugin, "exists", json!({"path": "/etc"}), false, &grants).expect("exists");
    assert_eq!(o.output["exists"], true);
}

#[test]
fn no_environment_arguments_or_root() {
    let plugin = load(host(), "test-escape");
    let tree = Tree::new();
    let o = call(
        &plugin,
        "env",
        json!({}),
        false,
        &Grants::etc(tree.etc(), EtcAccess::Write),
    )
    .expect("env");
    assert_eq!(o.output["env"], json!([]), "{}", o.output);
    assert_eq!(o.output["args"], json!([]), "{}", o.output);
    assert_eq!(o.output["rootReadable"], false, "{}", o.output);
}

#[test]
fn docker_without_the_capability_is_denied() {
    let plugin = load(host(), "test-noisy");
    let tree = Tree::new();
    for path in ["/_ping", "/images/json"] {
        let e = call(
            &plugin,
            "docker",
            json!({"method": "GET", "path": path}),
            false,
            &Grants::etc(tree.etc(), EtcAccess::Write),
        )
        .expect_err("docker without capability");
        assert_eq!(e.kind, ErrorKind::Denied, "{e}");
        assert!(e.message.contains("denied: "), "{e}");
    }
}

/// A one-connection fake Docker Engine API: records the request head, answers with a
/// chunked body.
fn fake_docker(socket: &std::path::Path) -> std::thread::JoinHandle<Vec<String>> {
    let listener = UnixListener::bind(socket).expect("bind");
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read");
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            head.push(line);
        }
        let len: usize = head
            .iter()
            .find_map(|h| {
                h.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).expect("body");
        head.push(String::from_utf8_lossy(&body).into_owned());
        let mut stream = reader.into_inner();
        let chunks = ["[{\"Id\":\"sha256:", "abc\",\"RepoTags\":[\"x:1\"]", "}]"];
        let mut resp = String::from(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for c in chunks {
            resp.push_str(&format!("{:x}\r\n{c}\r\n", c.len()));
        }
        resp.push_str("0\r\n\r\n");
        stream.write_all(resp.as_bytes()).expect("write");
        head
    })
}

#[test]
fn docker_allow_list_and_chunked_responses() {
    let plugin = load(host(), "test-noisy");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    let server = fake_docker(&socket);
    let grants = Grants::none().with_docker(&socket);

    // Not on the allow-list: refused before any connection.
    for (method, path) in [
        ("GET", "/containers/json"),
        ("POST", "/containers/create"),
        ("GET", "/images/../containers/json"),
        ("GET", "/images/json HTTP/1.1\r\nX-Evil: 1"),
    ] {
        let e = call(
            &plugin,
            "docker",
            json!({"method": method, "path": path}),
            false,
            &grants,
        )
        .expect_err("disallowed docker call");
        assert_eq!(e.kind, ErrorKind::Denied, "{method} {path}: {e}");
    }

    // A dry run may only read, even on allowed routes.
    for (method, path) in [
        ("POST", "/images/create?fromImage=nginx&tag=1"),
        ("DELETE", "/images/nginx:1"),
        ("POST", "/images/prune"),
    ] {
        let e = call(
            &plugin,
            "docker",
            json!({"method": method, "path": path}),
            true,
            &grants,
        )
        .expect_err("mutating docker call in a dry run");
        assert_eq!(e.kind, ErrorKind::Denied, "{method} {path}: {e}");
        assert!(e.message.contains("dry run"), "{e}");
    }

    let o = call(
        &plugin,
        "docker",
        json!({"method": "GET", "path": "/images/json?all=true"}),
        false,
        &grants,
    )
    .expect("allowed docker call");
    assert_eq!(o.output["status"], 200);
    assert_eq!(
        o.output["body"],
        r#"[{"Id":"sha256:abc","RepoTags":["x:1"]}]"#
    );
    let head = server.join().expect("server");
    assert_eq!(head[0], "GET /v1.41/images/json?all=true HTTP/1.1");
}
