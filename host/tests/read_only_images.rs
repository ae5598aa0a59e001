//! Read-only calls cannot change images: the `test-image-sneak` component's methods
//! declare themselves read-only and still pull and remove, through the real host against
//! Podman's Docker Engine API and a real containerd (tests/podman). With the grant's
//! `image_reads_only` (what the worker sets for a dry run or a method that does not
//! declare itself mutating, as the operator decided) the host refuses every such request
//! and the daemon is untouched; reads still work; without it the same request goes out
//! (so the refusal is the host's, not a broken request).
//!
//! Needs `podman`, `docker-registry`, `runc` and containerd (scripts/setup.sh,
//! tests/nodes/build.sh).

mod common;

use std::sync::{Arc, OnceLock};

use hostplug_host::{ErrorKind, Grants, Invocation, InvokeError, InvokeOutcome, Plugin};
use hostplug_podman::DockerEnv;
use hostplug_podman::containerd::{Containerd, ContainerdOptions};
use serde_json::{Value, json};

fn plugin() -> &'static Arc<Plugin> {
    static PLUGIN: OnceLock<Arc<Plugin>> = OnceLock::new();
    PLUGIN.get_or_init(|| common::load(common::host(), "test-image-sneak"))
}

fn call(method: &str, params: Value, grants: &Grants) -> Result<InvokeOutcome, InvokeError> {
    plugin().invoke(&Invocation::new(method, params.to_string()), grants)
}

fn docker_env() -> DockerEnv {
    DockerEnv::start().unwrap_or_else(|e| {
        panic!(
            "cannot start Podman's API service and the registry: {e} (see tests/podman/README.md)"
        )
    })
}

/// Pushes a tiny image to the env's registry as `remote`; its reference.
fn publish(env: &DockerEnv, remote: &str) -> String {
    let local = format!("localhost/{remote}");
    env.make_image(&local, &[]).expect("image");
    let r = env.push(&local, remote).expect("push");
    env.podman(&["rmi", &local]).expect("rmi");
    r
}

fn denied_read_only(e: &InvokeError) {
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(
        e.message.contains("read-only call"),
        "the refusal says why: {e}"
    );
}

#[test]
fn a_read_only_call_cannot_pull_or_remove_through_docker() {
    let env = docker_env();
    let app = publish(&env, "team/sneak:1.0");
    let read_only = Grants::none()
        .with_docker(env.socket())
        .with_image_reads_only();
    let before = env.image_ids().expect("images");

    let e = call("docker-pull", json!({"image": app}), &read_only).expect_err("pull");
    denied_read_only(&e);
    assert_eq!(env.image_ids().expect("images"), before, "nothing pulled");
    assert_eq!(env.image_id(&app).expect("inspect"), None);

    // Reads still work.
    let out = call("docker-list", json!({}), &read_only).expect("a read");
    assert!(out.output.to_string().contains("200"), "{}", out.output);

    // The same request from a call allowed to write goes out: the image arrives.
    let writes = Grants::none().with_docker(env.socket());
    call("docker-pull", json!({"image": app}), &writes).expect("pull allowed");
    assert!(env.image_id(&app).expect("inspect").is_some(), "pulled");

    // ... and a read-only call cannot remove it.
    let e = call("docker-remove", json!({"image": app}), &read_only).expect_err("remove");
    denied_read_only(&e);
    assert!(
        env.image_id(&app).expect("inspect").is_some(),
        "still there"
    );
}

#[test]
fn a_read_only_call_cannot_pull_or_remove_through_containerd() {
    let env = docker_env();
    let containerd = Containerd::start(&ContainerdOptions {
        registries: vec![env.registry().to_owned()],
        ..ContainerdOptions::default()
    })
    .unwrap_or_else(|e| panic!("cannot start containerd: {e}"));
    let app = publish(&env, "team/sneak-cri:1.0");
    let read_only = Grants::none()
        .with_containerd(containerd.socket())
        .with_image_reads_only();

    let e = call("containerd-pull", json!({"image": app}), &read_only).expect_err("pull");
    denied_read_only(&e);
    assert_eq!(
        containerd.image_names().expect("ctr"),
        Vec::<String>::new(),
        "nothing pulled"
    );

    let writes = Grants::none().with_containerd(containerd.socket());
    call("containerd-pull", json!({"image": app}), &writes).expect("pull allowed");
    assert_eq!(containerd.image_names().expect("ctr"), vec![app.clone()]);

    let e = call("containerd-remove", json!({"image": app}), &read_only).expect_err("remove");
    denied_read_only(&e);
    assert_eq!(
        containerd.image_names().expect("ctr"),
        vec![app.clone()],
        "kept"
    );
}
