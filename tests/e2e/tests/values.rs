//! Per-node values and secrets in parameters (issue 24), on the nodes' end state:
//! a registry certs.d file whose password comes from a Secret holds it on every node, and
//! the password is in no status, Event, operator log or worker log; a line with
//! `$(node.name)` and a zone label holds each node's own values; a missing key, a missing
//! Secret and a label a node lacks fail the task (or that node) naming what is missing
//! and write nothing there; a namespace whose policy grants no Secret is refused before
//! any node; a ConfigMap edited under an Enforce HostState is followed within one
//! interval.

use std::time::Duration;

use hostplug_api::crd::{NodePhase, TaskState};
use hostplug_api::state::HostState;
use hostplug_e2e::{Harness, NAMESPACE, NODES, state_of, tail};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// The password the tests look for everywhere it must not be.
const PASSWORD: &str = "s3cr3t-Pa55w0rd-9f1c7e";
/// The zone label the tests set.
const ZONE: &str = "topology.kubernetes.io/zone";

async fn apply_json(h: &Harness, ns: &str, secret: Secret) -> anyhow::Result<()> {
    Api::<Secret>::namespaced(h.admin.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

async fn label(h: &Harness, node: &str, key: &str, value: &str) -> anyhow::Result<()> {
    Api::<Node>::all(h.admin.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
        )
        .await?;
    Ok(())
}

fn task(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    )
}

/// Every text a user (or a log pipeline) could see: the task's status, every Event, the
/// operator's log and every worker's log.
async fn everything_reported(h: &Harness, tasks: &[&str]) -> anyhow::Result<String> {
    let mut all = String::new();
    for t in tasks {
        let task = h.tasks().get(t).await?;
        all.push_str(&serde_json::to_string(&task)?);
    }
    for ns in [NAMESPACE, "default"] {
        for e in Api::<Event>::namespaced(h.admin.clone(), ns)
            .list(&ListParams::default())
            .await?
            .items
        {
            all.push_str(&serde_json::to_string(&e)?);
        }
    }
    for n in 1..=h.operator_starts() {
        all.push_str(&h.operator_log(n));
    }
    for pods in h.worker_pods().await?.values() {
        for p in pods {
            all.push_str(&h.worker_log(p));
        }
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_come_from_secrets_configmaps_and_the_node_and_secrets_stay_secret()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    for (n, zone) in NODES.iter().zip(["zone-c", "zone-a", "zone-b"]) {
        label(&h, n, ZONE, zone).await?;
        std::fs::create_dir_all(h.etc(n)?.join("containerd/certs.d/registry.example"))?;
    }
    label(&h, "node1", "hostplug.dev/rack", "r7").await?;
    apply_json(
        &h,
        NAMESPACE,
        serde_json::from_value(json!({
            "metadata": {"name": "registry-creds"},
            "stringData": {"password": PASSWORD},
        }))?,
    )
    .await?;

    // 1. A certs.d file whose password comes from a Secret, on three nodes.
    let hosts = "server = \"https://registry.example\"\n[host.\"https://registry.example\"]\n  capabilities = [\"pull\"]\n  [host.\"https://registry.example\".header]\n    authorization = \"Basic $(password)\"\n";
    // Under `http`, beside `parameter`.
    let vars = "    vars:\n    - name: password\n      valueFrom: {secretKeyRef: {name: registry-creds, key: password}}\n";
    h.apply(&task(
        "certs",
        NAMESPACE,
        &format!(
            "  targetType: All\n  http:\n    api: etc-file\n    method: write\n    parameter: {{path: /etc/containerd/certs.d/registry.example/hosts.toml, content: {}}}\n{vars}",
            serde_json::to_string(hosts)?,
        ),
    ))
    .await?;
    let t = h.wait_finished("certs").await?;
    assert_eq!(
        state_of(&t),
        Some(TaskState::Succeeded),
        "{:?}",
        t.status.as_ref().and_then(|s| s.msg.clone())
    );
    for n in NODES {
        let file = std::fs::read_to_string(
            h.etc(n)?
                .join("containerd/certs.d/registry.example/hosts.toml"),
        )?;
        assert_eq!(file, hosts.replace("$(password)", PASSWORD), "{n}");
    }
    // A dry run of another content: its diff shows the password masked.
    h.apply(&task(
        "certs-dry",
        NAMESPACE,
        &format!(
            "  targetType: All\n  dryRun: true\n  http:\n    api: etc-file\n    method: write\n    parameter: {{path: /etc/containerd/certs.d/registry.example/hosts.toml, content: \"# $(password) rotated\\n\"}}\n{vars}"
        ),
    ))
    .await?;
    let dry = h.wait_finished("certs-dry").await?;
    let diff = dry
        .status
        .as_ref()
        .and_then(|s| s.nodes.first())
        .and_then(|n| n.diff.clone())
        .unwrap_or_default();
    assert!(diff.contains(hostplug_api::expand::MASK), "{diff}");

    // 2. A line with the node's name and zone label: each node holds its own.
    h.apply(&task(
        "node-id",
        NAMESPACE,
        &format!(
            "  targetType: All\n  http: {{api: etc-file, method: ensure-line, parameter: {{path: /etc/node-id.conf, create: true, line: \"node=$(node.name) zone=$(node.labels['{ZONE}'])\"}}}}\n"
        ),
    ))
    .await?;
    assert_eq!(
        state_of(&h.wait_finished("node-id").await?),
        Some(TaskState::Succeeded)
    );
    for (n, zone) in NODES.iter().zip(["zone-c", "zone-a", "zone-b"]) {
        assert_eq!(
            std::fs::read_to_string(h.etc(n)?.join("node-id.conf"))?,
            format!("node={n} zone={zone}\n")
        );
    }

    // 3. A label only node1 has: node1 runs, the others fail naming the label, and
    //    nothing is written there.
    h.apply(&task(
        "rack",
        NAMESPACE,
        "  targetType: All\n  rollout: {maxFailures: 2}\n  http: {api: etc-file, method: ensure-line, parameter: {path: /etc/rack.conf, create: true, line: \"rack=$(node.labels['hostplug.dev/rack'])\"}}\n",
    ))
    .await?;
    let rack = h.wait_finished("rack").await?;
    for n in rack.status.clone().unwrap_or_default().nodes {
        if n.node == "node1" {
            assert_eq!(n.phase, NodePhase::Succeeded, "{n:?}");
        } else {
            assert_eq!(n.phase, NodePhase::Failed, "{n:?}");
            assert!(
                n.message
                    .as_deref()
                    .is_some_and(|m| m.contains("spec.http.parameter.line")
                        && m.contains("has no label \"hostplug.dev/rack\"")),
                "{n:?}"
            );
            assert!(!h.etc(&n.node)?.join("rack.conf").exists(), "{}", n.node);
        }
    }
    assert_eq!(
        std::fs::read_to_string(h.etc("node1")?.join("rack.conf"))?,
        "rack=r7\n"
    );

    // 4. A missing key and a missing Secret: the task fails before any node.
    for (name, secret, key, what) in [
        ("no-key", "registry-creds", "nope", "has no key \"nope\""),
        (
            "no-secret",
            "gone",
            "password",
            "Secret hostplug-system/gone does not exist",
        ),
    ] {
        h.apply(&task(
            name,
            NAMESPACE,
            &format!(
                "  targetType: All\n  http:\n    api: etc-file\n    method: ensure-line\n    parameter: {{path: /etc/{name}.conf, create: true, line: \"$(v)\"}}\n    vars:\n    - name: v\n      valueFrom: {{secretKeyRef: {{name: {secret}, key: {key}}}}}\n"
            ),
        ))
        .await?;
        let t = h.wait_finished(name).await?;
        let st = t.status.unwrap_or_default();
        assert_eq!(st.state, TaskState::Failed, "{name}");
        assert!(st.nodes.is_empty(), "{name}: a node was started: {st:?}");
        let msg = st.msg.unwrap_or_default();
        assert!(
            msg.contains("spec.http.vars[0].valueFrom.secretKeyRef") && msg.contains(what),
            "{name}: {msg}"
        );
        for n in NODES {
            assert!(!h.etc(n)?.join(format!("{name}.conf")).exists());
        }
    }

    // 5. A namespace whose policy grants no Secret: refused before any node, and the
    //    operator never reads the Secret (it does not even exist there).
    Api::<Namespace>::all(h.admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-a"}}))?,
        )
        .await?;
    h.apply(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTaskPolicy\nmetadata: {name: team-a}\nspec:\n  namespaces: [team-a]\n  plugins: [etc-file]\n  allowMutating: true\n  nodes: {targetTypes: [All]}\n",
    )
    .await?;
    h.apply(&task(
        "wants-secret",
        "team-a",
        &format!(
            "  targetType: All\n  http:\n    api: etc-file\n    method: ensure-line\n    parameter: {{path: /etc/team-a.conf, create: true, line: \"$(password)\"}}\n{vars}"
        ),
    ))
    .await?;
    let t = h.wait_finished_in("team-a", "wants-secret").await?;
    let st = t.status.unwrap_or_default();
    assert_eq!(st.state, TaskState::Failed);
    assert!(st.nodes.is_empty(), "{st:?}");
    assert!(
        st.msg
            .as_deref()
            .is_some_and(|m| m.contains("no secrets rule") && m.contains("registry-creds")),
        "{:?}",
        st.msg
    );

    let reported = everything_reported(&h, &["certs", "certs-dry"]).await?;
    assert!(
        !reported.contains(PASSWORD),
        "the password appears in a status, an Event or a log"
    );
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enforced_state_follows_its_config_map_within_one_interval() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(h.admin.clone(), NAMESPACE);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "ntp"}, "data": {"server": "ntp1.example.com"}}),
        )?,
    )
    .await?;
    h.apply(&format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostState\nmetadata: {{name: ntp}}\nspec:\n  targetType: All\n  mode: Enforce\n  intervalSeconds: 10\n  steps:\n  - api: etc-file\n    method: ensure-line\n    parameter: {{path: /etc/ntp.conf, create: true, regexp: \"^server \", line: \"server $(server) iburst\"}}\n    vars:\n    - name: server\n      valueFrom: {{configMapKeyRef: {{namespace: {NAMESPACE}, name: ntp, key: server}}}}\n"
    ))
    .await?;
    let has = |h: &Harness, server: &str| -> anyhow::Result<bool> {
        Ok(NODES.iter().all(|n| {
            std::fs::read_to_string(h.etc(n).unwrap_or_default().join("ntp.conf"))
                .is_ok_and(|t| t == format!("server {server} iburst\n"))
        }))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !has(&h, "ntp1.example.com")? {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "never in sync; operator log:\n{}",
            tail(&h.operator_log(h.operator_starts()), 60)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cms.patch(
        "ntp",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"server": "ntp2.example.com"}})),
    )
    .await?;
    let edited = tokio::time::Instant::now();
    // One interval, plus a round's time on a loaded 2-core machine.
    let deadline = edited + Duration::from_secs(10 + 20);
    while !has(&h, "ntp2.example.com")? {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the nodes did not follow the ConfigMap within one interval; operator log:\n{}",
            tail(&h.operator_log(h.operator_starts()), 60)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("nodes followed the ConfigMap after {:?}", edited.elapsed());
    let s = Api::<HostState>::all(h.admin.clone()).get("ntp").await?;
    assert!(
        s.status
            .unwrap_or_default()
            .nodes
            .iter()
            .all(|n| n.corrections == 2),
        "each node corrected twice: once to converge, once to follow"
    );
    h.shutdown().await
}
