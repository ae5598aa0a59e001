//! The docker-image plugin through the whole system: a HostTask from `deploy/examples`
//! on a simulated node whose `/var/run/docker.sock` is Podman's Docker API service
//! (tests/podman), pulling from a registry on loopback. The task must end Succeeded with
//! the image ID in its status, the daemon must hold that image, a second run must
//! change nothing, and a dry-run prune must report IDs and remove none.

use hostplug_api::crd::{NodePhase, TaskState};
use hostplug_e2e::{Harness, state_of};
use hostplug_podman::{DockerEnv, Options};

/// The registry address the docker examples use; the test puts its own in its place.
const EXAMPLE_REGISTRY: &str = "registry.example:5000";

fn example(file: &str, registry: &str) -> anyhow::Result<String> {
    let path = hostplug_e2e::repo_root().join("deploy/examples").join(file);
    let text = std::fs::read_to_string(&path)?;
    anyhow::ensure!(
        text.contains(EXAMPLE_REGISTRY) || !file.starts_with("pull"),
        "{file} no longer names {EXAMPLE_REGISTRY}"
    );
    Ok(text.replace(EXAMPLE_REGISTRY, registry))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_image_task_pulls_on_a_node() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.wait_plugin_ready("docker-image").await?;

    // node1's Docker socket: Podman's API service, with an image in the registry.
    let node_root = h
        .env
        .node_root("node1")
        .ok_or_else(|| anyhow::anyhow!("no node simulator"))?;
    let docker = tokio::task::block_in_place(|| {
        DockerEnv::start_with(&Options {
            socket: Some(node_root.join("var/run/docker.sock")),
            ..Options::default()
        })
    })?;
    let id = tokio::task::block_in_place(|| -> anyhow::Result<String> {
        let id = docker.make_image("localhost/app:1.0", &[("team", "a")])?;
        docker.push("localhost/app:1.0", "team/app:1.0")?;
        docker.podman(&["rmi", "localhost/app:1.0"])?;
        Ok(id)
    })?;
    assert!(docker.image_ids()?.is_empty());
    let remote = format!("{}/team/app:1.0", docker.registry());

    // Pull: Succeeded, changed, the image ID in the node's output.
    h.apply(&example("pull-image-docker.yaml", docker.registry())?)
        .await?;
    let t = h.wait_finished("pull-app-image").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    assert_eq!(st.nodes.len(), 1, "{st:?}");
    let n = &st.nodes[0];
    assert_eq!((n.node.as_str(), n.phase), ("node1", NodePhase::Succeeded));
    assert!(n.changed, "{n:?}");
    let output = n.output.clone().unwrap_or_default();
    assert_eq!(output["id"], id, "{output}");
    assert_eq!(output["image"], remote, "{output}");
    assert_eq!(docker.image_id(&remote)?, Some(id.clone()));

    // The same task again, under another name: present, nothing changes.
    let again = example("pull-image-docker.yaml", docker.registry())?
        .replace("name: pull-app-image", "name: pull-app-image-again");
    h.apply(&again).await?;
    let t = h.wait_finished("pull-app-image-again").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    assert!(!st.nodes[0].changed, "{st:?}");
    assert_eq!(
        st.nodes[0].output.as_ref().map(|o| o["pulled"].clone()),
        Some(serde_json::json!(false))
    );

    // A dry-run prune of every unused image names it and removes nothing.
    h.apply_example("prune-images-docker-dry-run.yaml").await?;
    let t = h.wait_finished("prune-unused-images-dry-run").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    let n = &st.nodes[0];
    assert!(n.changed, "{n:?}");
    assert_eq!(
        n.output.as_ref().map(|o| o["deleted"].clone()),
        Some(serde_json::json!([id]))
    );
    assert_eq!(docker.image_ids()?, vec![id]);

    tokio::task::block_in_place(|| docker.stop())?;
    h.shutdown().await?;
    Ok(())
}

/// The htpasswd user of the registry that requires credentials, and the password the
/// example Secret holds (`deploy/examples/registry-auth-docker.yaml`).
const PUSH_USER: &str = "pusher";
const PUSH_PASSWORD: &str = "example-password-change-me";
/// A wrong password, in a second Secret; it must not leak either.
const WRONG_PASSWORD: &str = "wrong-password-for-the-test";

/// Every log the operator and the workers wrote so far: the operator's log files and
/// each worker container's `worker.log` under the environment's directory.
fn all_logs(h: &Harness) -> String {
    fn walk(dir: &std::path::Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() && name != "etcd" && name != "data" {
                walk(&path, out);
            } else if name == "worker.log" || name.starts_with("hostplug-operator") {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut out = String::new();
    walk(h.env.dir(), &mut out);
    out
}

/// A HostTask of docker-image on node1 with `registryAuth`.
fn auth_task(name: &str, secret: &str, method: &str, parameter: serde_json::Value) -> String {
    serde_json::json!({
        "apiVersion": "hostplug.dev/v1alpha1",
        "kind": "HostTask",
        "metadata": {"name": name, "namespace": "hostplug-system"},
        "spec": {
            "workers": ["node1"],
            "registryAuth": {"secretName": secret},
            "http": {"api": "docker-image", "method": method, "parameter": parameter},
        }
    })
    .to_string()
}

/// Push, pull and login with credentials from a real Secret, against a registry that
/// requires them (htpasswd), through the whole system; the credentials never show in
/// the status, the Events or the operator's and workers' logs; a plugin that does not
/// declare `registryAuth` cannot be given them; a missing Secret fails the task naming
/// the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_from_a_secret() -> anyhow::Result<()> {
    use hostplug_podman::registry::Registry;
    use k8s_openapi::api::events::v1::Event;

    let h = Harness::start().await?;
    h.wait_plugin_ready("docker-image").await?;
    let node_root = h
        .env
        .node_root("node1")
        .ok_or_else(|| anyhow::anyhow!("no node simulator"))?;
    let (docker, registry) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let docker = DockerEnv::start_with(&Options {
            socket: Some(node_root.join("var/run/docker.sock")),
            ..Options::default()
        })?;
        let registry = Registry::start(Some((PUSH_USER, PUSH_PASSWORD)))?;
        Ok((docker, registry))
    })?;
    // Podman's /auth speaks plain HTTP only to registries named localhost…
    let name = format!("localhost:{}", registry.port());
    docker.trust_registry(&name)?;
    let target = format!("{name}/team/app:1.0");
    let id = tokio::task::block_in_place(|| -> anyhow::Result<String> {
        let id = docker.make_image("localhost/app:1.0", &[])?;
        docker.podman(&["tag", "localhost/app:1.0", &target])?;
        Ok(id)
    })?;

    // The example, pointed at this registry, its Secret as it is; the login for real.
    let example = example("registry-auth-docker.yaml", &name)?.replace("  dryRun: true\n", "");
    h.apply(&example).await?;
    let t = h.wait_finished("login-registry-example").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    let out = st.nodes[0].output.clone().unwrap_or_default();
    assert_eq!(out["checked"], true, "{out}");
    assert_eq!(out["status"], "Login Succeeded", "{out}");

    // A second Secret with the wrong password: login and push fail, nothing is pushed.
    let wrong = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "wrong-credentials", "namespace": "hostplug-system"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": serde_json::json!({"auths": {&name: {
            "username": PUSH_USER, "password": WRONG_PASSWORD}}}).to_string()},
    });
    h.apply(&wrong.to_string()).await?;
    h.apply(&auth_task(
        "login-wrong",
        "wrong-credentials",
        "login",
        serde_json::json!({"registry": name}),
    ))
    .await?;
    h.apply(&auth_task(
        "push-wrong",
        "wrong-credentials",
        "push",
        serde_json::json!({"image": target}),
    ))
    .await?;
    for task in ["login-wrong", "push-wrong"] {
        let t = h.wait_finished(task).await?;
        let st = t.status.clone().unwrap_or_default();
        assert_eq!(state_of(&t), Some(TaskState::Failed), "{task}: {st:?}");
        let msg = st.nodes[0].message.clone().unwrap_or_default();
        assert!(msg.contains("denied"), "{task}: {msg}");
    }
    let tags = |r: &Registry| r.tags("team/app", Some((PUSH_USER, PUSH_PASSWORD)));
    assert_eq!(
        tags(&registry)?,
        None,
        "a push with wrong credentials reached the registry"
    );

    // The right Secret: pushed, and the registry has it.
    h.apply(&auth_task(
        "push-app",
        "registry-example-credentials",
        "push",
        serde_json::json!({"image": target}),
    ))
    .await?;
    let t = h.wait_finished("push-app").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    let out = st.nodes[0].output.clone().unwrap_or_default();
    assert_eq!(
        (out["id"].clone(), out["authenticated"].clone()),
        (serde_json::json!(id), serde_json::json!(true)),
        "{out}"
    );
    assert_eq!(tags(&registry)?, Some(vec!["1.0".to_owned()]));

    // Pulled back into an empty daemon with the same Secret.
    tokio::task::block_in_place(|| docker.podman(&["rmi", "-f", &id]))?;
    h.apply(&auth_task(
        "pull-app",
        "registry-example-credentials",
        "pull",
        serde_json::json!({"image": target}),
    ))
    .await?;
    let t = h.wait_finished("pull-app").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    assert_eq!(docker.image_id(&target)?, Some(id.clone()));

    // Save to node1's image archive directory and load back (no credentials needed).
    let task = |name: &str, method: &str, parameter: serde_json::Value| {
        serde_json::json!({
            "apiVersion": "hostplug.dev/v1alpha1",
            "kind": "HostTask",
            "metadata": {"name": name, "namespace": "hostplug-system"},
            "spec": {"workers": ["node1"], "http": {"api": "docker-image", "method": method, "parameter": parameter}},
        })
        .to_string()
    };
    h.apply(&task(
        "save-app",
        "save",
        serde_json::json!({"image": target, "file": "app-1.0.tar"}),
    ))
    .await?;
    let t = h.wait_finished("save-app").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    let archive = node_root.join("var/lib/hostplug/image-archives/app-1.0.tar");
    let size = std::fs::metadata(&archive)?.len();
    assert_eq!(
        st.nodes[0].output.as_ref().map(|o| o["bytes"].clone()),
        Some(serde_json::json!(size))
    );
    tokio::task::block_in_place(|| docker.podman(&["rmi", "-f", &id]))?;
    h.apply(&task(
        "load-app",
        "load",
        serde_json::json!({"file": "app-1.0.tar"}),
    ))
    .await?;
    let t = h.wait_finished("load-app").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    assert!(st.nodes[0].changed, "{st:?}");
    assert_eq!(docker.image_id(&target)?, Some(id.clone()));

    // A missing Secret: Failed before any node, naming the field.
    h.apply(&auth_task(
        "push-no-secret",
        "no-such-secret",
        "push",
        serde_json::json!({"image": target}),
    ))
    .await?;
    let t = h.wait_finished("push-no-secret").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Failed), "{st:?}");
    let msg = st.msg.clone().unwrap_or_default();
    assert!(
        msg.contains("spec.registryAuth.secretName")
            && msg.contains("no-such-secret")
            && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(st.nodes.is_empty(), "{st:?}");

    // The threat: the same module as a HostPlugin without the registryAuth declaration.
    h.apply(
        r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostPlugin
metadata: {name: docker-image-undeclared}
spec:
  source: {builtin: docker-image}
  capabilities: {docker: true}
"#,
    )
    .await?;
    h.wait_plugin_ready("docker-image-undeclared").await?;
    let undeclared = auth_task(
        "login-undeclared",
        "registry-example-credentials",
        "login",
        serde_json::json!({"registry": name}),
    )
    .replace(
        "\"api\":\"docker-image\"",
        "\"api\":\"docker-image-undeclared\"",
    );
    h.apply(&undeclared).await?;
    let t = h.wait_finished("login-undeclared").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Failed), "{st:?}");
    let msg = st.msg.clone().unwrap_or_default();
    assert!(
        msg.contains("spec.registryAuth")
            && msg.contains("does not declare the registryAuth capability"),
        "{msg}"
    );

    // Nowhere: not in any status, Event, operator or worker log.
    let statuses = serde_json::to_string(&h.tasks().list(&Default::default()).await?.items)?;
    let events = serde_json::to_string(
        &kube::Api::<Event>::namespaced(h.env.admin_client(), "hostplug-system")
            .list(&Default::default())
            .await?
            .items,
    )?;
    let logs = all_logs(&h);
    assert!(logs.contains("invoking"), "no worker log was read");
    for secret in [PUSH_PASSWORD, WRONG_PASSWORD] {
        for (what, text) in [("status", &statuses), ("Events", &events), ("logs", &logs)] {
            assert!(!text.contains(secret), "a password is in the {what}");
        }
    }

    tokio::task::block_in_place(|| docker.stop())?;
    drop(registry);
    h.shutdown().await?;
    Ok(())
}

/// Outside the operator's namespace: the operator reads a registry Secret only where a
/// Role lets it (`deploy/examples/registry-auth-rbac.yaml`, by name), and a task runs
/// only when a HostTaskPolicy lists the Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_in_a_team_namespace_need_rbac_and_policy() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.wait_plugin_ready("docker-image").await?;
    // node1's Docker socket (the worker Pod mounts it; the dry runs never use it).
    let node_root = h
        .env
        .node_root("node1")
        .ok_or_else(|| anyhow::anyhow!("no node simulator"))?;
    let docker = tokio::task::block_in_place(|| {
        DockerEnv::start_with(&Options {
            socket: Some(node_root.join("var/run/docker.sock")),
            ..Options::default()
        })
    })?;
    h.apply_example("registry-auth-rbac.yaml").await?;
    let secret = |ns: &str, name: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": r#"{"auths": {"localhost:5000": {"username": "u", "password": "team-password-0"}}}"#},
        })
        .to_string()
    };
    let login = |ns: &str, name: &str, secret: &str| {
        serde_json::json!({
            "apiVersion": "hostplug.dev/v1alpha1", "kind": "HostTask",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "workers": ["node1"], "dryRun": true,
                "registryAuth": {"secretName": secret},
                "http": {"api": "docker-image", "method": "login", "parameter": {"registry": "localhost:5000"}},
            }
        })
        .to_string()
    };
    h.apply(&secret("team-a", "team-a-registry")).await?;
    h.apply(&secret("team-a", "other")).await?;

    // The Role and the policy name this Secret: the dry-run login sees the credential.
    h.apply(&login("team-a", "login-ok", "team-a-registry"))
        .await?;
    let t = h.wait_finished_in("team-a", "login-ok").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    let out = st.nodes[0].output.clone().unwrap_or_default();
    assert_eq!(out["username"], "u", "{out}");

    // Another Secret of the namespace: the policy does not list it.
    h.apply(&login("team-a", "login-other", "other")).await?;
    let t = h.wait_finished_in("team-a", "login-other").await?;
    let msg = t.status.clone().unwrap_or_default().msg.unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Failed));
    assert!(
        msg.contains("no registryAuth rule") && msg.contains("\"other\""),
        "{msg}"
    );

    // A namespace whose policy allows any Secret but where no Role lets the operator
    // read one: forbidden, with the hint.
    h.apply(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: hostplug.dev/v1alpha1
kind: HostTaskPolicy
metadata: {name: team-b-login}
spec:
  namespaces: [team-b]
  plugins: [docker-image]
  registryAuthSecrets: ["*"]
"#,
    )
    .await?;
    h.apply(&secret("team-b", "team-b-registry")).await?;
    h.apply(&login("team-b", "login-unreadable", "team-b-registry"))
        .await?;
    let t = h.wait_finished_in("team-b", "login-unreadable").await?;
    let msg = t.status.clone().unwrap_or_default().msg.unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Failed));
    assert!(
        msg.contains("spec.registryAuth.secretName") && msg.contains("registry-auth-rbac.yaml"),
        "{msg}"
    );
    assert!(!msg.contains("team-password-0"), "{msg}");
    tokio::task::block_in_place(|| docker.stop())?;
    h.shutdown().await?;
    Ok(())
}

/// A HostTask running `method` of the test-image-sneak plugin on node1 with `image`.
fn sneak_task(name: &str, method: &str, image: &str) -> String {
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: hostplug-system}}\nspec:\n  workers: [node1]\n  http: {{api: test-image-sneak, method: {method}, parameter: {{image: '{image}'}}}}\n"
    )
}

/// Issue 21 #2: a method that declares itself read-only gets docker for reads only,
/// through the operator's path. The test-image-sneak plugin's `docker-pull` says
/// `mutates: false` and sends `POST /images/create` anyway: the node fails with the
/// host's refusal and the daemon holds no new image; the same request from its method
/// declared mutating goes out. (Before the fix the read-only method pulled.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_method_cannot_pull_through_docker() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let node_root = h
        .env
        .node_root("node1")
        .ok_or_else(|| anyhow::anyhow!("no node simulator"))?;
    let docker = tokio::task::block_in_place(|| {
        DockerEnv::start_with(&Options {
            socket: Some(node_root.join("var/run/docker.sock")),
            ..Options::default()
        })
    })?;
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        docker.make_image("localhost/sneak:1.0", &[])?;
        docker.push("localhost/sneak:1.0", "team/sneak:1.0")?;
        docker.podman(&["rmi", "localhost/sneak:1.0"])?;
        Ok(())
    })?;
    let remote = format!("{}/team/sneak:1.0", docker.registry());
    let hp = h
        .publish_plugin_with(
            "test-image-sneak.wasm",
            "test-image-sneak",
            "    docker: true\n",
        )
        .await?;
    let ready = hp.status.as_ref().is_some_and(|s| s.ready);
    anyhow::ensure!(ready, "test-image-sneak not ready: {:?}", hp.status);

    // The read-only method's pull: the node fails with the host's refusal.
    h.apply(&sneak_task("sneak-pull", "docker-pull", &remote))
        .await?;
    let t = h.wait_finished("sneak-pull").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Failed), "{st:?}");
    let n = &st.nodes[0];
    assert_eq!(n.phase, NodePhase::Failed, "{n:?}");
    let msg = n.message.clone().unwrap_or_default();
    assert!(
        msg.contains("POST is not allowed in a read-only call"),
        "the node names the refusal: {msg}"
    );
    assert_eq!(docker.image_id(&remote)?, None, "nothing was pulled");
    assert!(docker.image_ids()?.is_empty());

    // The same request from the method declared mutating: pulled.
    h.apply(&sneak_task(
        "sneak-pull-declared",
        "docker-pull-declared",
        &remote,
    ))
    .await?;
    let t = h.wait_finished("sneak-pull-declared").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    assert!(docker.image_id(&remote)?.is_some(), "pulled");

    // And a read-only method cannot remove it.
    h.apply(&sneak_task("sneak-remove", "docker-remove", &remote))
        .await?;
    let t = h.wait_finished("sneak-remove").await?;
    assert_eq!(state_of(&t), Some(TaskState::Failed), "{:?}", t.status);
    assert!(docker.image_id(&remote)?.is_some(), "still there");

    tokio::task::block_in_place(|| docker.stop())?;
    h.shutdown().await
}
