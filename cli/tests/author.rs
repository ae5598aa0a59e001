//! The plugin author's path through the real `hostplug` binary: `plugin new` → build for
//! wasm32-wasip2 → `plugin run`; `plugin push` to a real docker-registry on loopback with
//! htpasswd, `keygen`, `sign`, `verify` and `manifest --oci`; and `plugin run` refusing
//! parameters that break the method's schema, with the field named.

// The host's test helpers (where the components are): one copy.
#[path = "../../host/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hostplug_podman::registry::Registry;

fn hostplug(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hostplug"));
    c.args(args).env_remove("HOSTPLUG_REGISTRY_PASSWORD");
    c
}

fn run(mut c: impl std::borrow::BorrowMut<Command>) -> Output {
    c.borrow_mut().output().expect("running hostplug")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn etc_file() -> PathBuf {
    common::plugin_dir().join("etc-file.wasm")
}

#[test]
fn run_refuses_parameters_that_break_the_schema_naming_the_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let module = etc_file();
    let m = module.to_str().expect("utf-8 path");
    let etc = tmp.path().to_str().expect("utf-8");
    let o = run(hostplug(&[
        "plugin",
        "run",
        m,
        "--etc",
        etc,
        "--method",
        "read",
        "--params",
        r#"{"path": 7}"#,
    ])
    .arg("--timeout")
    .arg("30"));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("invalid-params") || out.contains("invalid-params"),
        "{out}{err}"
    );
    assert!(err.contains("params.path:"), "{err}");
    assert!(err.contains("not of type \"string\""), "{err}");
    // An unknown field is named too (the schema forbids additional properties).
    let o = run(hostplug(&[
        "plugin",
        "run",
        m,
        "--etc",
        etc,
        "--method",
        "read",
        "--params",
        r#"{"pth": "/etc/x"}"#,
    ]));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("pth"), "{err}");
    // Valid parameters still run (and fail only on the missing file).
    std::fs::write(tmp.path().join("hosts"), "127.0.0.1 localhost\n").expect("write");
    let o = run(hostplug(&[
        "plugin",
        "run",
        m,
        "--etc",
        etc,
        "--method",
        "read",
        "--params",
        r#"{"path": "/etc/hosts"}"#,
    ]));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("localhost"), "{out}");
}

#[test]
fn push_sign_verify_and_manifest_against_a_registry_with_htpasswd() {
    let registry = Registry::start(Some(("author", "pw-1234"))).expect("registry");
    let tmp = tempfile::tempdir().expect("tempdir");
    let module = etc_file();
    let m = module.to_str().expect("utf-8 path");
    let target = format!("{}/plugins/etc-file:0.1.0", registry.addr());

    // Without the password: refused, with the reason.
    let o = run(hostplug(&[
        "plugin",
        "push",
        m,
        &target,
        "--insecure",
        "--username",
        "author",
    ]));
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("HOSTPLUG_REGISTRY_PASSWORD"), "{err}");
    let o = run(hostplug(&[
        "plugin",
        "push",
        m,
        &target,
        "--insecure",
        "--username",
        "author",
    ])
    .env("HOSTPLUG_REGISTRY_PASSWORD", "wrong"));
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("unauthorized") && err.contains("rejected"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "{err}");

    let push = |extra: &[&str]| {
        let o = run(
            hostplug(&["plugin", "push", m, &target, "--username", "author"])
                .args(extra)
                .env("HOSTPLUG_REGISTRY_PASSWORD", "pw-1234"),
        );
        (o.status.code(), text(&o))
    };
    // Not marked insecure: no plain HTTP.
    let (code, (_, err)) = push(&[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unreachable"), "{err}");
    let (code, (out, err)) = push(&["--insecure"]);
    assert_eq!(code, Some(0), "{err}");
    let pinned = out.trim().to_owned();
    assert!(pinned.starts_with(&format!("{target}@sha256:")), "{pinned}");

    // keygen writes a private key only its owner can read.
    let prefix = tmp.path().join("signer");
    let o = run(hostplug(&[
        "plugin",
        "keygen",
        "--out",
        prefix.to_str().expect("utf-8"),
    ]));
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let key = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let other = tmp.path().join("other");
    let o = run(hostplug(&[
        "plugin",
        "keygen",
        "--out",
        other.to_str().expect("utf-8"),
    ]));
    assert_eq!(o.status.code(), Some(0));
    // keygen never overwrites a private key.
    let o = run(hostplug(&[
        "plugin",
        "keygen",
        "--out",
        prefix.to_str().expect("utf-8"),
    ]));
    assert_eq!(o.status.code(), Some(1));

    let with_auth = |c: &mut Command| -> Output {
        run(c
            .args(["--insecure", "--username", "author"])
            .env("HOSTPLUG_REGISTRY_PASSWORD", "pw-1234"))
    };
    let verify = |key: &Path| {
        with_auth(&mut hostplug(&[
            "plugin",
            "verify",
            &pinned,
            "--key",
            key.to_str().expect("utf-8"),
        ]))
    };
    let o = verify(&public);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("not signed"), "{err}");

    let o = with_auth(&mut hostplug(&[
        "plugin",
        "sign",
        &pinned,
        "--key",
        key.to_str().expect("utf-8"),
    ]));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        out.trim().starts_with("sha256-") && out.trim().ends_with(".sig"),
        "{out}"
    );

    let o = verify(&public);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("is signed by sha256:"), "{out}");
    // By tag too: the tag resolves to the signed digest.
    let o = with_auth(&mut hostplug(&[
        "plugin",
        "verify",
        &target,
        "--key",
        public.to_str().expect("utf-8"),
    ]));
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let o = verify(&other.with_extension("pub"));
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("denied") && err.contains("none of the trusted keys"),
        "{err}"
    );

    // The HostPlugin for the cluster.
    let o = run(hostplug(&[
        "plugin",
        "manifest",
        m,
        "--name",
        "etc-file-oci",
        "--etc",
        "read",
        "--oci",
        &pinned,
        "--insecure",
        "--pull-secret",
        "regcred",
        "--public-key",
        public.to_str().expect("utf-8"),
    ]));
    let (yaml, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let hp: hostplug_api::crd::HostPlugin =
        serde_yaml::from_str(yaml.trim_start_matches("---\n")).expect("HostPlugin YAML");
    let oci = hp.spec.source.oci.expect("oci source");
    assert_eq!(oci.image, pinned);
    assert!(oci.insecure);
    assert_eq!(hp.spec.sha256, None, "pinned by manifest digest");
    assert_eq!(hp.spec.signature.expect("signature").public_keys.len(), 1);
    assert!(!yaml.contains("kind: ConfigMap"), "{yaml}");
}

/// `plugin new` gives a crate that builds for wasm32-wasip2 as it stands and runs through
/// `plugin run`. Builds with the plugins' lock file and, when CARGO_TARGET_DIR is set,
/// in its `plugins` directory (where `make plugins` left the dependencies compiled).
#[test]
fn scaffold_builds_and_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("my-check");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
    let o = run(hostplug(&["plugin", "new", "my-check", "--dir"])
        .arg(&dir)
        .arg("--sdk-path")
        .arg(&sdk));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("Cargo.toml"), "{out}");
    // Same dependency versions as the in-tree plugins: builds offline and reuses them.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .expect("lock file");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| PathBuf::from(t).join("plugins"))
        .unwrap_or_else(|| tmp.path().join("target"));
    let build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--offline",
        ])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(&dir)
        .output()
        .expect("cargo");
    let wasm = target.join("wasm32-wasip2/release/my_check.wasm");
    // `make plugins` copies every component of that directory: never leave this one.
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = RemoveOnDrop(wasm.clone());
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let o = run(hostplug(&["plugin", "run"]).arg(&wasm).args([
        "--method",
        "hello",
        "--params",
        r#"{"name": "node1"}"#,
    ]));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("hello, node1!"), "{out}");
    // The schema the scaffold declares is enforced before the plugin runs.
    let o = run(hostplug(&["plugin", "run"]).arg(&wasm).args([
        "--method",
        "hello",
        "--params",
        r#"{"name": ""}"#,
    ]));
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("params.name:"), "{err}");
}
