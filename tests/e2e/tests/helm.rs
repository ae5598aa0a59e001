//! The Helm chart (`deploy/helm/hostplug`) against `deploy/`:
//!
//! - with default values it renders, in substance, exactly what `kubectl kustomize deploy/`
//!   renders: the same objects (kind, namespace, name) with the same content once the
//!   labels only Helm adds are taken away ([`HELM_LABELS`]). Any drift between the two —
//!   someone changing deploy/ and not the chart, or the other way round — fails with a
//!   list of the differing fields;
//! - its CRDs are byte for byte the generated ones in `deploy/crds/`;
//! - `helm lint --strict` passes, with default values and with every option on;
//! - the values do what values.yaml says, and wrong combinations fail with a message;
//! - `helm install` into the test cluster creates every object, and the operator,
//!   running as the chart's ServiceAccount with the chart's RBAC, runs an example task to
//!   the end; the console's ServiceAccount has the access the console needs; the rendering
//!   with every option on is accepted by the API server (server-side dry run);
//! - non-default node socket paths (`worker.containerdSocket` as on k3s,
//!   `worker.dockerSocket`) go from the values into the installed operator Deployment's
//!   environment, and from there — the operator started with exactly that environment —
//!   into the worker Pods' hostPath volumes.
//!
//! Needs `helm` from `tests/helm/build.sh` and `kubectl` from `tests/controlplane/build.sh`
//! (both run by `make setup`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use hostplug_api::crd::TaskState;
use hostplug_e2e::{Harness, NAMESPACE, NODES, repo_root, state_of};
use hostplug_testenv::controlplane::Binaries;
use hostplug_testenv::helm::HelmChart;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::Value;

/// Labels the chart adds to every object's metadata and `kubectl kustomize deploy/` does
/// not: Helm's conventional labels. `app.kubernetes.io/managed-by` is only taken away
/// when its value is `Helm` (worker Pods carry `hostplug-operator` there).
const HELM_LABELS: [&str; 4] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

/// Annotation prefixes only Helm sets.
const HELM_ANNOTATION_PREFIXES: [&str; 2] = ["meta.helm.sh/", "helm.sh/"];

/// Values turning every option of the chart on (or away from its default), for lint, the
/// rendering checks and the server-side dry run.
const ALL_OPTIONS: [(&str, &str); 27] = [
    ("images.operator.tag", "1.2.3"),
    (
        "images.worker.repository",
        "registry.example:5000/hostplug/worker",
    ),
    ("images.worker.tag", "1.2.3"),
    ("images.console.pullPolicy", "Always"),
    ("imagePullSecrets[0].name", "pull-secret"),
    ("operator.replicas", "3"),
    ("operator.logFormat", "json"),
    ("operator.trustOwnNamespace", "false"),
    ("operator.leaseSeconds", "30"),
    (
        "operator.signatureKeys.secretName",
        "hostplug-signature-keys",
    ),
    ("operator.nodeSelector.kubernetes\\.io/os", "linux"),
    (
        "operator.tolerations[0].key",
        "node-role.kubernetes.io/control-plane",
    ),
    ("operator.tolerations[0].effect", "NoSchedule"),
    ("worker.podStartTimeoutSeconds", "60"),
    ("worker.idleSeconds", "0"),
    ("worker.startParallel", "10"),
    (
        "worker.containerdSocket",
        "/var/snap/microk8s/common/run/containerd.sock",
    ),
    ("worker.dockerSocket", "/run/user/1000/docker.sock"),
    ("userRoles.enabled", "true"),
    ("console.tls.secretName", ""),
    ("console.persistence.enabled", "false"),
    ("console.service.type", "NodePort"),
    ("console.service.nodePort", "30444"),
    ("console.nodePortService.enabled", "true"),
    ("console.ingress.enabled", "true"),
    ("console.ingress.className", "nginx"),
    ("console.ingress.tlsSecretName", "hostplug-ingress-tls"),
];

fn chart() -> anyhow::Result<(HelmChart, tempfile::TempDir)> {
    let home = tempfile::tempdir().context("creating Helm's directory")?;
    let chart = HelmChart::new(&repo_root(), home.path())?;
    Ok((chart, home))
}

/// The objects of a multi-document YAML stream, by "Kind namespace/name".
fn objects(yaml: &str, source: &str) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let v = Value::deserialize(doc).with_context(|| format!("{source}: document {i}"))?;
        if v.is_null() {
            continue;
        }
        let kind = v["kind"].as_str().unwrap_or("?");
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("");
        let name = v["metadata"]["name"].as_str().unwrap_or("?");
        let key = format!("{kind} {ns}/{name}");
        if out.insert(key.clone(), v).is_some() {
            bail!("{source}: {key} appears twice");
        }
    }
    Ok(out)
}

/// Takes Helm's own labels and annotations off an object's metadata; drops the maps when
/// nothing is left in them.
fn without_helm_metadata(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.retain(|k, val| match k.as_str() {
                "app.kubernetes.io/managed-by" => *val != "Helm",
                k => !HELM_LABELS.contains(&k),
            });
            if labels.is_empty() {
                meta.remove("labels");
            }
        }
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            ann.retain(|k, _| !HELM_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p)));
            if ann.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    v
}

/// The fields where `a` and `b` differ, one line each: `path: a ≠ b`.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => differences(&p, va, vb, out),
                    (Some(va), None) => out.push(format!("{p}: only in kustomize: {va}")),
                    (None, Some(vb)) => out.push(format!("{p}: only in helm: {vb}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        // kustomize re-serialises numbers (`10.0` in a CRD file becomes `10`); Helm copies
        // crds/ as written: a number is the same number either way.
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => {}
        _ if a != b => out.push(format!("{path}: kustomize {a} ≠ helm {b}")),
        _ => {}
    }
}

/// Compares two renderings in substance; the error lists every difference.
fn compare(kustomize: &BTreeMap<String, Value>, helm: &BTreeMap<String, Value>) -> Vec<String> {
    let mut problems = Vec::new();
    for key in kustomize.keys().filter(|k| !helm.contains_key(*k)) {
        problems.push(format!(
            "{key}: rendered by kustomize, missing from the chart"
        ));
    }
    for key in helm.keys().filter(|k| !kustomize.contains_key(*k)) {
        problems.push(format!("{key}: rendered by the chart, not by kustomize"));
    }
    for (key, k) in kustomize {
        if let Some(h) = helm.get(key) {
            let mut diffs = Vec::new();
            differences("", k, &without_helm_metadata(h.clone()), &mut diffs);
            problems.extend(diffs.into_iter().map(|d| format!("{key}: {d}")));
        }
    }
    problems
}

fn kustomize_deploy() -> anyhow::Result<String> {
    let kubectl = Binaries::locate()?.kubectl();
    let out = std::process::Command::new(&kubectl)
        .arg("kustomize")
        .arg(repo_root().join("deploy"))
        .output()
        .with_context(|| format!("running {}", kubectl.display()))?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize deploy/ failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The environment variables of the first container of a Deployment, as name → value.
fn env_of(deploy: &Value) -> BTreeMap<String, Value> {
    deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = e["name"].as_str().unwrap_or_default().to_owned();
            let value = e.get("value").cloned().unwrap_or(Value::Null);
            (name, value)
        })
        .collect()
}

#[tokio::test]
async fn default_values_render_what_kustomize_renders() -> anyhow::Result<()> {
    let (chart, _home) = chart()?;
    let helm = objects(&chart.template(NAMESPACE, &[]).await?, "helm template")?;
    let kustomize = objects(&kustomize_deploy()?, "kubectl kustomize deploy/")?;
    assert!(
        kustomize.len() > 20,
        "kustomize rendered only {:?}",
        kustomize.keys()
    );
    let problems = compare(&kustomize, &helm);
    assert!(
        problems.is_empty(),
        "the chart (deploy/helm/hostplug, default values) and `kubectl kustomize deploy/` \
         differ — change both together:\n  {}",
        problems.join("\n  ")
    );
    // The comparison is able to fail: a changed field and a missing object are reported.
    let mut changed = helm.clone();
    let key = "Deployment hostplug-system/hostplug-operator";
    changed.get_mut(key).context("no operator Deployment")?["spec"]["replicas"] = 3.into();
    changed.remove("NetworkPolicy hostplug-system/hostplug-workers");
    let problems = compare(&kustomize, &changed);
    assert_eq!(
        problems,
        vec![
            "NetworkPolicy hostplug-system/hostplug-workers: rendered by kustomize, missing from the chart".to_owned(),
            format!("{key}: .spec.replicas: kustomize 2 ≠ helm 3"),
        ]
    );
    Ok(())
}

#[test]
fn chart_crds_are_the_generated_crds() -> anyhow::Result<()> {
    let root = repo_root();
    let names = |dir: &Path| -> anyhow::Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        v.sort();
        Ok(v)
    };
    let generated = root.join("deploy/crds");
    let chart = root.join("deploy/helm/hostplug/crds");
    assert_eq!(
        names(&generated)?,
        names(&chart)?,
        "the chart's crds/ has other files"
    );
    for file in names(&generated)? {
        let a = std::fs::read(generated.join(&file))?;
        let b = std::fs::read(chart.join(&file))?;
        assert!(
            a == b,
            "deploy/helm/hostplug/crds/{file} differs from deploy/crds/{file}; regenerate both \
             with `cargo run -p hostplug-api --bin crdgen -- deploy/crds deploy/helm/hostplug/crds`"
        );
    }
    Ok(())
}

#[tokio::test]
async fn helm_lint_passes() -> anyhow::Result<()> {
    let (chart, _home) = chart()?;
    let out = chart.lint(&[]).await?;
    assert!(out.contains("0 chart(s) failed"), "{out}");
    let out = chart.lint(&ALL_OPTIONS).await?;
    assert!(out.contains("0 chart(s) failed"), "{out}");
    Ok(())
}

#[tokio::test]
async fn values_do_what_values_yaml_says() -> anyhow::Result<()> {
    let (chart, _home) = chart()?;
    let objs = objects(&chart.template("ops", &ALL_OPTIONS).await?, "helm template")?;

    // Everything goes into the release namespace.
    assert!(objs.contains_key("Namespace /ops"), "{:?}", objs.keys());
    let op = &objs["Deployment ops/hostplug-operator"];
    assert_eq!(op["spec"]["replicas"], 3);
    let c = &op["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/hostplug/operator:1.2.3");
    let env = env_of(op);
    for (name, value) in [
        (
            "HOSTPLUG_WORKER_IMAGE",
            "registry.example:5000/hostplug/worker:1.2.3",
        ),
        ("HOSTPLUG_LOG_FORMAT", "json"),
        ("HOSTPLUG_TRUST_OWN_NAMESPACE", "false"),
        ("HOSTPLUG_LEASE_SECONDS", "30"),
        ("HOSTPLUG_POD_START_TIMEOUT_SECONDS", "60"),
        ("HOSTPLUG_WORKER_IDLE_SECONDS", "0"),
        ("HOSTPLUG_WORKER_START_PARALLEL", "10"),
        (
            "HOSTPLUG_NODE_CONTAINERD_SOCKET",
            "/var/snap/microk8s/common/run/containerd.sock",
        ),
        ("HOSTPLUG_NODE_DOCKER_SOCKET", "/run/user/1000/docker.sock"),
        (
            "HOSTPLUG_SIGNATURE_KEYS",
            "/etc/hostplug/signature-keys/keys.pem",
        ),
    ] {
        assert_eq!(
            env.get(name),
            Some(&Value::from(value)),
            "{name} in {env:?}"
        );
    }
    let pod = &op["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        "hostplug-signature-keys"
    );
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["tolerations"][0]["effect"], "NoSchedule");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "pull-secret");
    // The Role and bindings follow the namespace.
    assert_eq!(
        objs["ClusterRoleBinding /hostplug-operator"]["subjects"][0]["namespace"],
        "ops"
    );
    assert!(objs.contains_key("ClusterRole /hostplug-task-runner"));
    assert!(objs.contains_key("ClusterRole /hostplug-plugin-reader"));

    // The console: no TLS Secret mounted (self-signed), an emptyDir, NodePort and Ingress.
    let web = &objs["Deployment ops/hostplug-web"];
    let args = web["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(!args.contains("--tls-dir"), "{args}");
    assert_eq!(
        web["spec"]["template"]["spec"]["volumes"][0]["emptyDir"],
        serde_json::json!({})
    );
    assert!(!objs.contains_key("PersistentVolumeClaim ops/hostplug-web-data"));
    let svc = &objs["Service ops/hostplug-web"];
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30444);
    assert_eq!(
        objs["Service ops/hostplug-web-nodeport"]["spec"]["ports"][0]["nodePort"],
        30443
    );
    let ing = &objs["Ingress ops/hostplug-web"];
    assert_eq!(ing["spec"]["ingressClassName"], "nginx");
    assert_eq!(ing["spec"]["tls"][0]["secretName"], "hostplug-ingress-tls");

    // Switched off: no console, no NetworkPolicy, no metrics Service, no Namespace.
    let objs = objects(
        &chart
            .template(
                NAMESPACE,
                &[
                    ("console.enabled", "false"),
                    ("networkPolicy.enabled", "false"),
                    ("operator.metricsService.enabled", "false"),
                    ("namespace.create", "false"),
                ],
            )
            .await?,
        "helm template",
    )?;
    let left: Vec<&String> = objs
        .keys()
        .filter(|k| {
            k.contains("hostplug-web")
                || k.starts_with("NetworkPolicy ")
                || k.contains("-metrics")
                || k.starts_with("Namespace ")
        })
        .collect();
    assert!(left.is_empty(), "still rendered: {left:?}");
    assert!(objs.contains_key("Deployment hostplug-system/hostplug-operator"));

    // Wrong combinations fail with a message naming the value.
    for (values, message) in [
        (
            vec![
                ("operator.signatureKeys.secretName", "a"),
                ("operator.signatureKeys.configMapName", "b"),
            ],
            "operator.signatureKeys: set secretName or configMapName, not both",
        ),
        (
            vec![("console.service.type", "LoadBalancer")],
            "console.service.type must be ClusterIP or NodePort",
        ),
        (
            vec![("images.operator.repository", "")],
            "images.*.repository must not be empty",
        ),
    ] {
        let err = chart
            .template(NAMESPACE, &values)
            .await
            .expect_err("a wrong combination rendered");
        assert!(format!("{err:#}").contains(message), "{values:?}: {err:#}");
    }
    Ok(())
}

/// Gets the object `v` (apiVersion, kind, namespace, name) from the cluster.
async fn get_object(client: &Client, v: &Value) -> anyhow::Result<DynamicObject> {
    let api_version = v["apiVersion"].as_str().context("no apiVersion")?;
    let kind = v["kind"].as_str().context("no kind")?;
    let name = v["metadata"]["name"].as_str().context("no name")?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let ns = v["metadata"]["namespace"]
                .as_str()
                .context("no namespace")?;
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    Ok(api.get(name).await?)
}

/// The node socket paths the install test sets (k3s's containerd, a rootless Docker).
const SOCKET_VALUES: [(&str, &str); 2] = [
    (
        "worker.containerdSocket",
        "/run/k3s/containerd/containerd.sock",
    ),
    ("worker.dockerSocket", "/run/user/1000/docker.sock"),
];

/// The hostPath source of a worker Pod's volume `name`, if it has one.
fn host_path_of(p: &Pod, name: &str) -> Option<String> {
    p.spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find(|v| v.name == name)?
        .host_path
        .as_ref()
        .map(|h| h.path.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_hostplug() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // helm install (default values but the node sockets), then the operator as the
    // chart's ServiceAccount.
    let mut h = Harness::start_helm(&SOCKET_VALUES).await?;
    eprintln!("install + operator ready: {:?}", started.elapsed());
    let (chart, _home) = chart()?;

    // Every object of the release exists, and the CRDs (not tracked by Helm) too.
    let manifest = objects(
        &chart.installed_manifest(&h.env, NAMESPACE).await?,
        "helm get manifest",
    )?;
    let rendered = objects(
        &chart.template(NAMESPACE, &SOCKET_VALUES).await?,
        "helm template",
    )?;
    let tracked: Vec<&String> = manifest.keys().collect();
    let untracked: Vec<&String> = rendered
        .keys()
        .filter(|k| !manifest.contains_key(*k))
        .collect();
    assert!(
        untracked
            .iter()
            .all(|k| k.starts_with("CustomResourceDefinition ")),
        "rendered but not in the release: {untracked:?}"
    );
    assert_eq!(untracked.len(), 4, "{untracked:?}");
    for (key, v) in &rendered {
        let got = get_object(&h.admin, v)
            .await
            .with_context(|| format!("{key} was not installed"))?;
        if tracked.contains(&key) {
            let labels = got.metadata.labels.unwrap_or_default();
            assert_eq!(
                labels
                    .get("app.kubernetes.io/managed-by")
                    .map(String::as_str),
                Some("Helm"),
                "{key}"
            );
        }
    }
    // The namespace Helm created carries the chart's Pod Security labels.
    let ns = Api::<Namespace>::all(h.admin.clone())
        .get(NAMESPACE)
        .await?;
    let labels = ns.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("privileged"),
        "{labels:?}"
    );

    // The operator's RBAC works: it registered the built-ins (Harness waited for etc-file)
    // and runs an example on every node.
    h.apply_example("ensure-line-all-nodes.yaml").await?;
    let t = h.wait_finished("ensure-ntp-server").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", st.msg);
    for node in NODES {
        let conf = std::fs::read_to_string(h.etc(node)?.join("hostplug-example.conf"))?;
        assert!(
            conf.contains("server ntp.example.com iburst\n"),
            "{node}: {conf}"
        );
    }

    // The console's ServiceAccount reads what the console reads.
    let web = h
        .env
        .service_account_client(NAMESPACE, "hostplug-web")
        .await?;
    let tasks = h.tasks_in(NAMESPACE);
    let web_tasks: Api<hostplug_api::crd::HostTask> = Api::namespaced(web.clone(), NAMESPACE);
    assert_eq!(
        web_tasks.list(&ListParams::default()).await?.items.len(),
        tasks.list(&ListParams::default()).await?.items.len()
    );
    Api::<hostplug_api::crd::HostPlugin>::all(web.clone())
        .list(&ListParams::default())
        .await?;
    Api::<Node>::all(web.clone())
        .list(&ListParams::default())
        .await?;
    // … and not more: it may not read Secrets.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(web, NAMESPACE);
    assert!(
        secrets.list(&ListParams::default()).await.is_err(),
        "the console may read Secrets"
    );

    // Every option on is valid for the API server (server-side dry run, nothing changes).
    let all = chart.template(NAMESPACE, &ALL_OPTIONS).await?;
    let mut kubectl = tokio::process::Command::new(h.env.kubectl());
    kubectl
        .env("KUBECONFIG", h.env.kubeconfig_path())
        .args(["apply", "--dry-run=server", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = kubectl.spawn().context("running kubectl")?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().context("kubectl stdin")?;
        stdin.write_all(all.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    assert!(
        out.status.success(),
        "the API server refused the rendering with every option on:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The socket values: in the installed Deployment's environment …
    let deployment = Api::<Deployment>::namespaced(h.admin.clone(), NAMESPACE)
        .get("hostplug-operator")
        .await?;
    let env: BTreeMap<String, String> = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.env)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    let sockets = [
        ("HOSTPLUG_NODE_CONTAINERD_SOCKET", SOCKET_VALUES[0].1),
        ("HOSTPLUG_NODE_DOCKER_SOCKET", SOCKET_VALUES[1].1),
    ];
    for (name, value) in sockets {
        assert_eq!(env.get(name).map(String::as_str), Some(value), "{env:?}");
    }
    // … and the operator started with exactly those puts them into the worker Pods.
    h.kill_operator().await?;
    for (name, _) in sockets {
        h.set_operator_env(name, &env[name]);
    }
    h.start_operator()?;
    h.wait_plugin_ready("containerd-image").await?;
    h.wait_plugin_ready("docker-image").await?;
    h.apply(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {name: sockets-containerd, namespace: hostplug-system}\nspec:\n  workers: [node1]\n  dryRun: true\n  http: {api: containerd-image, method: list}\n---\napiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {name: sockets-docker, namespace: hostplug-system}\nspec:\n  workers: [node1]\n  dryRun: true\n  http: {api: docker-image, method: list}\n",
    )
    .await?;
    // The worker Pods are made at once; on these simulated nodes they never start (no
    // socket there), which does not matter: the Pod spec is what the operator made.
    let pods: Api<Pod> = Api::namespaced(h.admin.clone(), NAMESPACE);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let (containerd, docker) = loop {
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/component=worker"))
            .await?;
        let found = |volume: &str| list.items.iter().find_map(|p| host_path_of(p, volume));
        if let (Some(c), Some(d)) = (found("containerd"), found("docker")) {
            break (c, d);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no containerd and docker workers: {:?}",
            list.items
                .iter()
                .map(|p| p.metadata.name.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert_eq!(containerd, SOCKET_VALUES[0].1);
    assert_eq!(docker, SOCKET_VALUES[1].1);

    h.shutdown().await?;
    eprintln!("helm e2e total: {:?}", started.elapsed());
    Ok(())
}
