//! Plugins from an OCI registry, end to end: the author pushes with the `hostplug` CLI to
//! a real docker-registry on loopback (htpasswd), applies the HostPlugin `plugin manifest
//! --oci` prints, and a HostTask runs it on the nodes. With a required signature:
//! unsigned → not ready with the reason and a task using it fails before any node is
//! touched; signed by a stranger → still refused; signed → runs; a module swapped under
//! the tag with the signature copied over → refused. Registry failures (wrong digest,
//! missing tag, registry down, bad or missing credentials) each give a clear status. A
//! plain username/password pull Secret is used only for the registry its `registry` key
//! names: one without the key, or used for an image elsewhere, is refused.
//! Second test: the operator's cluster-wide `--signature-keys` policy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hostplug_api::crd::{HostPlugin, TaskState};
use hostplug_e2e::{Harness, TASK_TIMEOUT, plugin_dir, workspace_binary};
use hostplug_podman::registry::Registry;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const USER: &str = "e2e-author";
const PASSWORD: &str = "e2e-pw-7310";

/// Runs `hostplug ARGS` with the registry password in its environment; its stdout.
fn cli(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(workspace_binary("hostplug")?)
        .args(args)
        .env("HOSTPLUG_REGISTRY_PASSWORD", PASSWORD)
        .output()
        .context("running hostplug")?;
    if !out.status.success() {
        bail!(
            "hostplug {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn module(name: &str) -> anyhow::Result<PathBuf> {
    Ok(plugin_dir()?.join(format!("{name}.wasm")))
}

fn task(name: &str, api: &str) -> String {
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: hostplug-system}}\n\
         spec:\n  workers: [node1]\n  http: {{api: {api}, method: read, parameter: {{path: /etc/os-release}}}}\n"
    )
}

/// A HostPlugin with an OCI source, as JSON (which is YAML).
fn oci_plugin(
    name: &str,
    image: &str,
    sha256: Option<String>,
    secret: Option<&str>,
    keys: &[String],
) -> String {
    let mut spec = json!({
        "source": {"oci": {"image": image, "insecure": true}},
        "capabilities": {"etc": "read"},
    });
    if let Some(s) = sha256 {
        spec["sha256"] = json!(s);
    }
    if let Some(s) = secret {
        spec["source"]["oci"]["pullSecret"] = json!(s);
    }
    if !keys.is_empty() {
        spec["signature"] = json!({"publicKeys": keys});
    }
    json!({"apiVersion": "hostplug.dev/v1alpha1", "kind": "HostPlugin",
           "metadata": {"name": name}, "spec": spec})
    .to_string()
}

fn sha256_of(file: &Path) -> anyhow::Result<String> {
    use sha2::Digest as _;
    Ok(hex::encode(sha2::Sha256::digest(std::fs::read(file)?)))
}

/// Makes the operator look at `name` again now (a metadata change is a watch event),
/// instead of after its retry interval.
async fn nudge(h: &Harness, name: &str, n: u32) -> anyhow::Result<()> {
    let api: Api<HostPlugin> = Api::all(h.admin.clone());
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"e2e.hostplug.dev/nudge": n.to_string()}}}),
        ),
    )
    .await?;
    Ok(())
}

/// Waits until HostPlugin `name` has a status whose message satisfies `cond`.
async fn wait_message(
    h: &Harness,
    name: &str,
    cond: impl Fn(bool, &str) -> bool,
) -> anyhow::Result<(bool, String)> {
    let api: Api<HostPlugin> = Api::all(h.admin.clone());
    let deadline = tokio::time::Instant::now() + TASK_TIMEOUT;
    loop {
        if let Some(st) = api.get_opt(name).await?.and_then(|hp| hp.status) {
            let msg = st.message.clone().unwrap_or_default();
            if cond(st.ready, &msg) {
                return Ok((st.ready, msg));
            }
            if tokio::time::Instant::now() > deadline {
                bail!("HostPlugin {name}: last status ready={} {msg}", st.ready);
            }
        } else if tokio::time::Instant::now() > deadline {
            bail!("HostPlugin {name} got no status");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Runs a read task with plugin `api` on node1 and returns its final state and message.
async fn run_task(
    h: &Harness,
    name: &str,
    api: &str,
) -> anyhow::Result<(TaskState, String, String)> {
    h.apply(&task(name, api)).await?;
    let t = h.wait_finished(name).await?;
    let st = t.status.unwrap_or_default();
    let output = st
        .nodes
        .first()
        .and_then(|n| n.output.clone())
        .map(|o| o.to_string())
        .unwrap_or_default();
    Ok((st.state, st.msg.unwrap_or_default(), output))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_plugins_run_only_when_pulled_intact_and_signed() -> anyhow::Result<()> {
    let registry = Registry::start(Some((USER, PASSWORD)))?;
    let reg = registry.addr().to_owned();
    let keys = tempfile::tempdir()?;
    let author = keys.path().join("author");
    let stranger = keys.path().join("stranger");
    cli(&["plugin", "keygen", "--out", path(&author)])?;
    cli(&["plugin", "keygen", "--out", path(&stranger)])?;
    let etc_file = module("etc-file")?;
    let auth = ["--insecure", "--username", USER];

    let tag1 = format!("{reg}/plugins/etc-file:1");
    let pinned = cli(&[&["plugin", "push", path(&etc_file), &tag1][..], &auth].concat())?
        .trim()
        .to_owned();
    assert!(pinned.starts_with(&format!("{tag1}@sha256:")), "{pinned}");

    let h = Harness::start().await?;
    let dockercfg = json!({"auths": {&reg: {"username": USER, "password": PASSWORD}}}).to_string();
    let bad = json!({"auths": {&reg: {"username": USER, "password": "not-it"}}}).to_string();
    h.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: regcred, namespace: hostplug-system}}\n\
         type: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: {}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: badcred, namespace: hostplug-system}}\n\
         type: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: {}\n",
        serde_json::to_string(&dockercfg)?,
        serde_json::to_string(&bad)?
    ))
    .await?;

    // The author's path: manifest --oci, applied as printed; a task runs it.
    let yaml = cli(&[
        "plugin",
        "manifest",
        path(&etc_file),
        "--name",
        "etc-oci",
        "--etc",
        "read",
        "--oci",
        &pinned,
        "--insecure",
        "--pull-secret",
        "regcred",
    ])?;
    h.apply(&yaml).await?;
    let hp = h.wait_plugin_ready("etc-oci").await?;
    assert_eq!(
        hp.status.and_then(|s| s.digest),
        Some(format!("sha256:{}", sha256_of(&etc_file)?))
    );
    let (state, msg, output) = run_task(&h, "read-oci", "etc-oci").await?;
    assert_eq!(state, TaskState::Succeeded, "{msg}");
    assert!(output.contains("ID="), "{output}");

    // A plain username/password Secret is used only for the registry it names.
    h.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: plain-bound, namespace: hostplug-system}}\n\
         stringData: {{registry: {reg:?}, username: {USER:?}, password: {PASSWORD:?}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: plain-unbound, namespace: hostplug-system}}\n\
         stringData: {{username: {USER:?}, password: {PASSWORD:?}}}\n"
    ))
    .await?;
    h.apply(&oci_plugin(
        "etc-oci-plain",
        &pinned,
        None,
        Some("plain-bound"),
        &[],
    ))
    .await?;
    h.wait_plugin_ready("etc-oci-plain").await?;

    // A required signature: unsigned → not ready, and a task using it touches no node.
    let author_pub = std::fs::read_to_string(author.with_extension("pub"))?;
    let yaml = cli(&[
        "plugin",
        "manifest",
        path(&etc_file),
        "--name",
        "etc-signed",
        "--etc",
        "read",
        "--oci",
        &pinned,
        "--insecure",
        "--pull-secret",
        "regcred",
        "--public-key",
        path(&author.with_extension("pub")),
    ])?;
    h.apply(&yaml).await?;
    let (ready, msg) = wait_message(&h, "etc-signed", |_, m| !m.is_empty()).await?;
    assert!(!ready, "{msg}");
    assert!(
        msg.starts_with("spec.signature: ") && msg.contains("is not signed"),
        "{msg}"
    );
    let workers = h.worker_pods().await?;
    let (state, msg, _) = run_task(&h, "read-unsigned", "etc-signed").await?;
    assert_eq!(state, TaskState::Failed, "{msg}");
    assert!(msg.starts_with("spec.http.api: "), "{msg}");
    assert_eq!(h.worker_pods().await?, workers);

    // Signed by a key the HostPlugin does not trust: still refused.
    cli(&[
        &[
            "plugin",
            "sign",
            &pinned,
            "--key",
            path(&stranger.with_extension("key")),
        ][..],
        &auth,
    ]
    .concat())?;
    nudge(&h, "etc-signed", 1).await?;
    let (ready, msg) = wait_message(&h, "etc-signed", |_, m| {
        m.contains("none of the trusted keys")
    })
    .await?;
    assert!(!ready, "{msg}");

    // Signed by the author: ready, and it runs.
    cli(&[
        &[
            "plugin",
            "sign",
            &pinned,
            "--key",
            path(&author.with_extension("key")),
        ][..],
        &auth,
    ]
    .concat())?;
    nudge(&h, "etc-signed", 2).await?;
    h.wait_plugin_ready("etc-signed").await?;
    let (state, msg, _) = run_task(&h, "read-signed", "etc-signed").await?;
    assert_eq!(state, TaskState::Succeeded, "{msg}");

    // Tampered: another module pushed under tag 2 with the signatures of the signed one
    // copied next to it. The signatures are genuine, but for another artifact: refused.
    let spin = module("test-spin")?;
    let tag2 = format!("{reg}/plugins/etc-file:2");
    let swapped = cli(&[&["plugin", "push", path(&spin), &tag2][..], &auth].concat())?
        .trim()
        .to_owned();
    let client = hostplug_oci::RegistryClient::new(
        &reg,
        true,
        Some(hostplug_oci::Credentials {
            username: USER.into(),
            password: PASSWORD.into(),
        }),
    )?;
    let signed_digest = pinned
        .rsplit_once('@')
        .map(|(_, d)| d.to_owned())
        .unwrap_or_default();
    let swapped_digest = swapped
        .rsplit_once('@')
        .map(|(_, d)| d.to_owned())
        .unwrap_or_default();
    let repo: hostplug_oci::Reference = tag1.parse()?;
    let sigs = client
        .manifest(
            &format!(
                "{reg}/plugins/etc-file:{}",
                hostplug_oci::cosign::signature_tag(&signed_digest)
            )
            .parse()?,
        )
        .await?;
    client
        .push_manifest(
            &repo,
            Some(&hostplug_oci::cosign::signature_tag(&swapped_digest)),
            &sigs.manifest,
        )
        .await?;
    h.apply(&oci_plugin(
        "etc-tampered",
        &tag2,
        Some(sha256_of(&spin)?),
        Some("regcred"),
        std::slice::from_ref(&author_pub),
    ))
    .await?;
    let (ready, msg) = wait_message(&h, "etc-tampered", |_, m| !m.is_empty()).await?;
    assert!(!ready, "{msg}");
    assert!(msg.contains("valid signature of another artifact"), "{msg}");

    // Registry failures, each with its own status.
    let down = format!("127.0.0.1:{}/plugins/etc-file:1", {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    });
    let digest = Some(sha256_of(&etc_file)?);
    let cases = [
        (
            "oci-wrong-sha",
            oci_plugin(
                "oci-wrong-sha",
                &tag1,
                Some("0".repeat(64)),
                Some("regcred"),
                &[],
            ),
            "sha256 mismatch",
        ),
        (
            "oci-missing-tag",
            oci_plugin(
                "oci-missing-tag",
                &format!("{reg}/plugins/etc-file:nope"),
                digest.clone(),
                Some("regcred"),
                &[],
            ),
            "not found in registry",
        ),
        (
            "oci-unknown-digest",
            oci_plugin(
                "oci-unknown-digest",
                &format!("{tag1}@sha256:{}", "1".repeat(64)),
                None,
                Some("regcred"),
                &[],
            ),
            "not found in registry",
        ),
        (
            "oci-down",
            oci_plugin("oci-down", &down, digest.clone(), None, &[]),
            "is unreachable",
        ),
        (
            "oci-bad-creds",
            oci_plugin("oci-bad-creds", &tag1, digest.clone(), Some("badcred"), &[]),
            "credentials were rejected",
        ),
        (
            "oci-no-creds",
            oci_plugin("oci-no-creds", &tag1, digest.clone(), None, &[]),
            "none were given",
        ),
        (
            "oci-plain-unbound",
            oci_plugin(
                "oci-plain-unbound",
                &tag1,
                digest.clone(),
                Some("plain-unbound"),
                &[],
            ),
            "but no \"registry\" key",
        ),
        (
            "oci-plain-elsewhere",
            oci_plugin(
                "oci-plain-elsewhere",
                &down,
                digest.clone(),
                Some("plain-bound"),
                &[],
            ),
            "holds credentials for registry",
        ),
        (
            "oci-no-secret",
            oci_plugin("oci-no-secret", &tag1, digest.clone(), Some("absent"), &[]),
            "Secret hostplug-system/absent does not exist",
        ),
    ];
    for (_, yaml, _) in &cases {
        h.apply(yaml).await?;
    }
    for (name, _, expected) in cases {
        let (ready, msg) = wait_message(&h, name, |_, m| !m.is_empty()).await?;
        assert!(!ready, "{name}: {msg}");
        assert!(msg.contains(expected), "{name}: {msg}");
        assert!(
            !msg.contains(PASSWORD) && !msg.contains("not-it"),
            "{name}: {msg}"
        );
    }

    // What cannot be pinned or verified never reaches the operator: the API server refuses it.
    let refused = [
        (
            oci_plugin("oci-unpinned", &tag1, None, None, &[]),
            "spec.sha256 is required",
        ),
        (
            json!({"apiVersion": "hostplug.dev/v1alpha1", "kind": "HostPlugin",
                   "metadata": {"name": "cm-signed"},
                   "spec": {"source": {"configMap": {"namespace": "hostplug-system", "name": "x"}},
                            "sha256": "0".repeat(64),
                            "signature": {"publicKeys": [author_pub.clone()]}}})
            .to_string(),
            "spec.signature needs spec.source.oci",
        ),
        (
            json!({"apiVersion": "hostplug.dev/v1alpha1", "kind": "HostPlugin",
                   "metadata": {"name": "two-sources"},
                   "spec": {"source": {"builtin": "etc-file", "oci": {"image": pinned}}}})
            .to_string(),
            "exactly one of spec.source.builtin, spec.source.configMap or spec.source.oci",
        ),
    ];
    for (yaml, expected) in refused {
        let e = h.apply(&yaml).await.expect_err(expected);
        assert!(format!("{e:#}").contains(expected), "{e:#}");
    }
    drop(registry);
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_signature_keys_refuse_unsigned_and_config_map_plugins() -> anyhow::Result<()>
{
    let registry = Registry::start(None)?;
    let reg = registry.addr().to_owned();
    let keys = tempfile::tempdir()?;
    let cluster = keys.path().join("cluster");
    cli(&["plugin", "keygen", "--out", path(&cluster)])?;
    let etc_file = module("etc-file")?;
    let pinned = cli(&[
        "plugin",
        "push",
        path(&etc_file),
        &format!("{reg}/p/etc-file:1"),
        "--insecure",
    ])?
    .trim()
    .to_owned();

    let h = Harness::start_with_operator_env(&[(
        "HOSTPLUG_SIGNATURE_KEYS",
        path(&cluster.with_extension("pub")),
    )])
    .await?;
    // Built-ins ship in the operator image and stay usable.
    h.wait_plugin_ready("etc-file").await?;

    let cm = h.publish_plugin("etc-file.wasm", "etc-cm", "read").await?;
    let st = cm.status.unwrap_or_default();
    assert!(!st.ready);
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.contains("--signature-keys") && msg.contains("push it to a registry"),
        "{msg}"
    );

    h.apply(&oci_plugin("etc-cluster", &pinned, None, None, &[]))
        .await?;
    let (ready, msg) = wait_message(&h, "etc-cluster", |_, m| !m.is_empty()).await?;
    assert!(!ready, "{msg}");
    assert!(
        msg.contains("--signature-keys") && msg.contains("is not signed"),
        "{msg}"
    );

    cli(&[
        "plugin",
        "sign",
        &pinned,
        "--key",
        path(&cluster.with_extension("key")),
        "--insecure",
    ])?;
    nudge(&h, "etc-cluster", 1).await?;
    h.wait_plugin_ready("etc-cluster").await?;
    let log = h.operator_log(h.operator_starts());
    assert!(log.contains("module signature verified"), "{log}");
    let (state, msg, _) = run_task(&h, "read-cluster-signed", "etc-cluster").await?;
    assert_eq!(state, TaskState::Succeeded, "{msg}");
    drop(registry);
    h.shutdown().await
}

/// The second third-party-style plugin, `plugins/examples/sysctl`, published the way an
/// outsider would (push, manifest --oci) and run by HostTasks: `set` writes
/// /etc/sysctl.d/99-hostplug.conf on the node, again changes nothing, `list` reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysctl_plugin_from_a_registry_sets_kernel_parameters_on_a_node() -> anyhow::Result<()> {
    let registry = Registry::start(None)?;
    let reg = registry.addr().to_owned();
    let wasm = module("sysctl-conf")?;
    let pinned = cli(&[
        "plugin",
        "push",
        path(&wasm),
        &format!("{reg}/examples/sysctl-conf:0.1.0"),
        "--insecure",
    ])?
    .trim()
    .to_owned();
    let h = Harness::start().await?;
    let yaml = cli(&[
        "plugin",
        "manifest",
        path(&wasm),
        "--name",
        "sysctl",
        "--etc",
        "write",
        "--oci",
        &pinned,
        "--insecure",
    ])?;
    h.apply(&yaml).await?;
    let hp = h.wait_plugin_ready("sysctl").await?;
    let methods: Vec<String> = hp
        .status
        .and_then(|s| s.info)
        .map(|i| i.methods.into_iter().map(|m| m.name).collect())
        .unwrap_or_default();
    assert_eq!(methods, ["list", "set", "unset"]);

    let set = |name: &str| {
        format!(
            "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: hostplug-system}}\n\
             spec:\n  workers: [node1]\n  http: {{api: sysctl, method: set, parameter: {{key: net.ipv4.ip_forward, value: \"1\"}}}}\n"
        )
    };
    let conf = h.etc("node1")?.join("sysctl.d/99-hostplug.conf");
    for (name, changed) in [("sysctl-set", true), ("sysctl-set-again", false)] {
        h.apply(&set(name)).await?;
        let t = h.wait_finished(name).await?;
        let st = t.status.unwrap_or_default();
        assert_eq!(st.state, TaskState::Succeeded, "{name}: {:?}", st.msg);
        assert_eq!(st.nodes[0].changed, changed, "{name}");
    }
    assert_eq!(std::fs::read_to_string(&conf)?, "net.ipv4.ip_forward = 1\n");

    h.apply(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {name: sysctl-list, namespace: hostplug-system}\n\
         spec:\n  workers: [node1]\n  http: {api: sysctl, method: list, parameter: {key: net/ipv4/ip_forward}}\n",
    )
    .await?;
    let t = h.wait_finished("sysctl-list").await?;
    let st = t.status.unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded, "{:?}", st.msg);
    let out = st.nodes[0].output.clone().unwrap_or_default();
    assert_eq!(out[0]["key"], "net.ipv4.ip_forward", "{out}");
    assert_eq!(out[0]["value"], "1", "{out}");

    // The schema's pattern is enforced before any node is touched.
    h.apply(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {name: sysctl-bad, namespace: hostplug-system}\n\
         spec:\n  workers: [node1]\n  http: {api: sysctl, method: set, parameter: {key: net.ipv4.ip_forward, value: \"1\", file: ../passwd}}\n",
    )
    .await?;
    let t = h.wait_finished("sysctl-bad").await?;
    let st = t.status.unwrap_or_default();
    assert_eq!(st.state, TaskState::Failed);
    assert!(
        st.msg
            .unwrap_or_default()
            .starts_with("spec.http.parameter.file: ")
    );
    drop(registry);
    h.shutdown().await
}
