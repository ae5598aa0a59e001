//! The containerd capability and the containerd-image plugin against a real containerd:
//! containerd v2.4.2 with its CRI plugin on a private socket (tests/podman's
//! `containerd` module, the binaries from `tests/nodes/build.sh`), pulling tiny images
//! from a docker-registry on loopback (pushed there with Podman, tests/podman).
//!
//! Two levels: the host's CRI client itself (`ContainerdClient`, what the import calls)
//! and the component through the `hostplug_host` API as the worker runs it (`cli/tests`
//! runs it through the `hostplug plugin run` CLI). Every test starts its own containerd
//! and registry, and
//! checks containerd's state with `ctr`, never through the code under test.
//!
//! Threats: a plugin without the capability gets `denied` and containerd is untouched; a
//! dry run sends no pull or remove (the host refuses them whatever the plugin does).

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hostplug_host::{
    CapabilityError, ContainerdClient, ContainerdPolicy, ErrorKind, Grants, Invocation,
    InvokeError, InvokeOutcome, Plugin,
};
use hostplug_podman::DockerEnv;
use hostplug_podman::containerd::{Containerd, ContainerdOptions};
use serde_json::{Value, json};

fn plugin() -> &'static Arc<Plugin> {
    static PLUGIN: OnceLock<Arc<Plugin>> = OnceLock::new();
    PLUGIN.get_or_init(|| common::load(common::host(), "containerd-image"))
}

/// A registry with images and a containerd that pulls from it.
struct Env {
    containerd: Containerd,
    docker: DockerEnv,
}

impl Env {
    fn start() -> Self {
        let docker = DockerEnv::start().unwrap_or_else(|e| {
            panic!("cannot start the registry and Podman: {e} (see tests/podman/README.md)")
        });
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

    fn call(
        &self,
        method: &str,
        params: Value,
        dry_run: bool,
    ) -> Result<InvokeOutcome, InvokeError> {
        let mut inv = Invocation::new(method, params.to_string());
        inv.dry_run = dry_run;
        plugin().invoke(
            &inv,
            &Grants::none().with_containerd(self.containerd.socket()),
        )
    }

    fn ok(&self, method: &str, params: Value) -> (bool, Value) {
        let out = self
            .call(method, params.clone(), false)
            .unwrap_or_else(|e| panic!("{method} {params}: {e}"));
        (out.changed, out.output)
    }

    fn dry(&self, method: &str, params: Value) -> (bool, Value) {
        let out = self
            .call(method, params.clone(), true)
            .unwrap_or_else(|e| panic!("dry {method} {params}: {e}"));
        (out.changed, out.output)
    }

    fn fails(&self, method: &str, params: Value) -> InvokeError {
        match self.call(method, params.clone(), false) {
            Ok(out) => panic!("{method} {params} should fail, got {:?}", out.output),
            Err(e) => e,
        }
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// The host's CRI client against containerd: every call the import offers, the dry-run
/// refusal, and an unreachable socket.
#[test]
fn the_capability_talks_cri_to_containerd() {
    let env = Env::start();
    let app = env.publish("team/app:1.0");
    let client = ContainerdClient::new(env.containerd.socket(), ContainerdPolicy::default(), false);

    assert_eq!(client.list_images(None, soon()).expect("list"), Vec::new());
    assert_eq!(client.image_status(&app, soon()).expect("status"), None);
    assert_eq!(
        client.images_in_use(soon()).expect("containers"),
        Vec::new()
    );
    let fs = client.image_fs_info(soon()).expect("image fs info");
    assert!(!fs.is_empty() && !fs[0].mountpoint.is_empty(), "{fs:?}");

    // A dry-run client refuses before sending: containerd still has nothing.
    let dry = ContainerdClient::new(env.containerd.socket(), ContainerdPolicy::default(), true);
    let e = dry.pull_image(&app, None, soon()).expect_err("dry pull");
    assert!(matches!(e, CapabilityError::Denied(_)), "{e}");
    assert_eq!(env.names(), Vec::<String>::new());

    let started = Instant::now();
    let image_ref = client.pull_image(&app, None, soon()).expect("pull");
    eprintln!("CRI pull of a tiny image: {:?}", started.elapsed());
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    assert_eq!(env.names(), vec![app.clone()]);
    let status = client
        .image_status(&app, soon())
        .expect("status")
        .expect("present");
    assert_eq!(status.id, image_ref);
    assert_eq!(status.repo_tags, vec![app.clone()]);
    assert!(
        !status.repo_digests.is_empty() && status.size > 0,
        "{status:?}"
    );
    assert!(!status.pinned);
    let listed = client.list_images(None, soon()).expect("list");
    assert_eq!(listed, vec![status.clone()]);
    let filtered = client
        .list_images(Some(&app), soon())
        .expect("list filtered");
    assert_eq!(filtered.len(), 1);
    // By ID as well as by name.
    assert!(
        client
            .image_status(&image_ref, soon())
            .expect("by id")
            .is_some()
    );

    client.remove_image(&app, soon()).expect("remove");
    assert_eq!(env.names(), Vec::<String>::new());
    client
        .remove_image(&app, soon())
        .expect("removing a missing image succeeds");
    let e = client
        .pull_image(
            &format!("{}/team/missing:1", env.docker.registry()),
            None,
            soon(),
        )
        .expect_err("missing in the registry");
    assert!(
        e.message().contains("not found") || matches!(e, CapabilityError::NotFound(_)),
        "{e}"
    );

    let nowhere = ContainerdClient::new(
        &env.containerd.dir().join("nowhere.sock"),
        ContainerdPolicy::default(),
        false,
    );
    let e = nowhere.list_images(None, soon()).expect_err("no socket");
    assert!(e.message().contains("containerd socket"), "{e}");
}

#[test]
fn describe_lists_every_method() {
    let info = plugin().describe().expect("describe");
    assert_eq!(info.name, "containerd-image");
    let names: Vec<&str> = info.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["list", "inspect", "usage", "pull", "remove", "prune"]
    );
    let mutating: Vec<&str> = info
        .methods
        .iter()
        .filter(|m| m.mutates)
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(mutating, ["pull", "remove", "prune"]);
}

/// pull → inspect → list → remove, idempotent, through the real host; containerd's
/// state read with ctr after each step.
#[test]
fn pull_inspect_remove_through_the_host() {
    let env = Env::start();
    let app = env.publish("team/app:1.0");
    let repo = app.trim_end_matches(":1.0").to_owned();

    // Dry run: would pull, pulls nothing.
    let (changed, out) = env.dry("pull", json!({"image": repo, "tag": "1.0"}));
    assert!(changed, "{out}");
    assert_eq!(out["pulled"], true);
    assert_eq!(env.names(), Vec::<String>::new());

    let (changed, out) = env.ok("pull", json!({"image": repo, "tag": "1.0"}));
    assert!(changed, "{out}");
    assert_eq!(out["image"], app.as_str());
    assert_eq!(out["previousId"], Value::Null);
    let id = out["id"].as_str().expect("an id").to_owned();
    assert!(id.starts_with("sha256:"), "{out}");
    assert_eq!(env.names(), vec![app.clone()]);

    // Again: present, nothing to do, the registry is not asked.
    let (changed, out) = env.ok("pull", json!({"image": app}));
    assert!(!changed, "{out}");
    assert_eq!(out["pulled"], false);
    // Always: asked, same image, unchanged.
    let (changed, out) = env.ok("pull", json!({"image": app, "policy": "always"}));
    assert!(!changed, "{out}");
    assert_eq!(
        (out["pulled"].clone(), out["id"].clone()),
        (json!(true), json!(id))
    );

    let (changed, out) = env.ok("inspect", json!({"image": app}));
    assert!(!changed);
    assert_eq!(out["id"], id.as_str());
    assert_eq!(out["repoTags"], json!([app]));
    assert_eq!(out["usedBy"], json!([]));
    let (_, out) = env.ok("list", json!({}));
    assert_eq!(out["count"], 1, "{out}");
    let (_, out) = env.ok("usage", json!({}));
    assert!(out["filesystems"][0]["mountpoint"].is_string(), "{out}");

    let e = env.fails("inspect", json!({"image": format!("{repo}:2.0")}));
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let e = env.fails(
        "pull",
        json!({"image": format!("{}/team/nope", env.docker.registry())}),
    );
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let e = env.fails("pull", json!({"image": "bad image"}));
    assert_eq!(e.kind, ErrorKind::InvalidParams, "{e}");
    assert!(e.message.contains("image"), "{e}");

    // Remove: dry run first (nothing goes), then for real, then nothing to do.
    let (changed, out) = env.dry("remove", json!({"image": app}));
    assert!(changed && out["removed"] == true, "{out}");
    assert_eq!(env.names(), vec![app.clone()]);
    let (changed, out) = env.ok("remove", json!({"image": app}));
    assert!(changed, "{out}");
    assert_eq!(out["id"], id.as_str());
    assert_eq!(env.names(), Vec::<String>::new());
    let (changed, _) = env.ok("remove", json!({"image": app}));
    assert!(!changed);
}

/// prune: a dry run names the unused images and removes none; the real one removes all
/// but those in `keep`; again, nothing to do.
#[test]
fn prune_through_the_host() {
    let env = Env::start();
    let a = env.publish("team/a:1");
    let b = env.publish("team/b:1");
    let keep = env.publish("base/tools:1");
    for r in [&a, &b, &keep] {
        env.ok("pull", json!({"image": r}));
    }
    let before = env.names();
    assert_eq!(before.len(), 3);
    let keep_prefix = format!("{}/base/*", env.docker.registry());

    let (changed, out) = env.dry("prune", json!({"keep": [keep_prefix]}));
    assert!(changed, "{out}");
    assert_eq!(out["deleted"].as_array().map(Vec::len), Some(2), "{out}");
    assert_eq!(out["kept"].as_array().map(Vec::len), Some(1), "{out}");
    let mut tags: Vec<String> = serde_json::from_value(out["deletedTags"].clone()).expect("tags");
    tags.sort();
    assert_eq!(tags, vec![a.clone(), b.clone()]);
    assert_eq!(env.names(), before, "a dry run removes nothing");

    let (changed, out) = env.ok("prune", json!({"keep": [keep_prefix]}));
    assert!(changed, "{out}");
    assert_eq!(out["deleted"].as_array().map(Vec::len), Some(2), "{out}");
    assert!(out["spaceReclaimed"].as_u64().unwrap_or(0) > 0, "{out}");
    assert_eq!(env.names(), vec![keep.clone()]);

    let (changed, out) = env.ok("prune", json!({"keep": [keep_prefix]}));
    assert!(!changed, "{out}");
    let e = env.fails("prune", json!({"keep": ["*"]}));
    assert_eq!(e.kind, ErrorKind::InvalidParams, "{e}");
    assert!(e.message.contains("keep[0]"), "{e}");
}

/// A plugin whose HostPlugin does not declare `containerd` runs with grants that hold no
/// containerd socket (the worker builds them from the Pod's settings, which follow the
/// declared capabilities): every call is denied by the host and containerd is untouched.
#[test]
fn without_the_capability_every_call_is_denied() {
    let env = Env::start();
    let app = env.publish("team/app:1.0");
    for (method, params) in [
        ("list", json!({})),
        ("pull", json!({"image": app})),
        ("prune", json!({})),
    ] {
        let e = plugin()
            .invoke(
                &Invocation::new(method, params.to_string()),
                &Grants::none(),
            )
            .expect_err("denied");
        assert_eq!(e.kind, ErrorKind::Denied, "{method}: {e}");
        assert!(e.message.contains("no containerd capability"), "{e}");
    }
    // Grants for docker do not open containerd either.
    let e = plugin()
        .invoke(
            &Invocation::new("list", "{}"),
            &Grants::none().with_docker(env.docker.socket()),
        )
        .expect_err("denied");
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert_eq!(env.names(), Vec::<String>::new());
}
