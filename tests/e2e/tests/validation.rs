//! Bad input: every validation failure ends the task Failed with the field named, no Pod
//! created and no node's files changed; what the CRD schema rejects is refused by the
//! API server with a clear message. Also: plugins published from a ConfigMap are pinned
//! by sha256.

use hostplug_api::crd::{HostPlugin, TaskState};
use hostplug_e2e::{Harness, changed_files};
use kube::Api;
use kube::api::{Patch, PatchParams};

fn task(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: hostplug-system}}\nspec:\n{spec}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tasks_fail_before_any_node_is_touched() -> anyhow::Result<()> {
    let h = Harness::start().await?;

    // A read-only copy of etc-file, published as an author would.
    let ro = h
        .publish_plugin("etc-file.wasm", "etc-file-ro", "read")
        .await?;
    assert!(
        ro.status.as_ref().is_some_and(|s| s.ready),
        "{:?}",
        ro.status
    );
    // A module whose digest does not match its HostPlugin is refused.
    let hps: Api<HostPlugin> = Api::all(h.admin.clone());
    h.publish_plugin("test-spin.wasm", "tampered", "none")
        .await?;
    hps.patch(
        "tampered",
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(serde_json::json!({
            "apiVersion": "hostplug.dev/v1alpha1", "kind": "HostPlugin",
            "metadata": {"name": "tampered"},
            "spec": {"sha256": "0".repeat(64),
                     "source": {"configMap": {"namespace": "hostplug-system", "name": "plugin-tampered", "key": "plugin.wasm"}}}
        })),
    )
    .await?;
    let tampered = h.wait_plugin_status("tampered").await?;
    let st = tampered.status.unwrap_or_default();
    assert!(!st.ready);
    assert!(st.message.unwrap_or_default().contains("sha256 mismatch"));

    let cases = [
        (
            "unknown-plugin",
            "  targetType: All\n  http: {api: nope, method: read, parameter: {path: /etc/hosts}}\n",
            "spec.http.api",
        ),
        (
            "unknown-method",
            "  targetType: All\n  http: {api: etc-file, method: frobnicate}\n",
            "spec.http.method",
        ),
        (
            "bad-params",
            "  targetType: All\n  http: {api: etc-file, method: ensure-line, parameter: {path: /etc/hosts}}\n",
            "spec.http.parameter",
        ),
        (
            "wrong-type-param",
            "  targetType: All\n  http: {api: etc-file, method: read, parameter: {path: 42}}\n",
            "spec.http.parameter.path",
        ),
        (
            "lacks-capability",
            "  targetType: All\n  http: {api: etc-file-ro, method: ensure-line, parameter: {path: /etc/hosts, line: x}}\n",
            "spec.http.method",
        ),
        (
            "unready-plugin",
            "  targetType: All\n  http: {api: tampered, method: ok}\n",
            "spec.http.api",
        ),
        (
            "no-matching-node",
            "  targetType: Node\n  nodeSelector: {matchLabels: {disk: nvme}}\n  http: {api: etc-file, method: read, parameter: {path: /etc/hosts}}\n",
            "spec.nodeSelector",
        ),
        (
            "unknown-node",
            "  workers: [node1, node9]\n  http: {api: etc-file, method: read, parameter: {path: /etc/hosts}}\n",
            "spec.workers[1]",
        ),
    ];
    let before = h.snapshot()?;
    for (name, spec, field) in cases {
        let workers = h.worker_pods().await?;
        h.apply(&task(name, spec)).await?;
        let t = h.wait_finished(name).await?;
        let st = t.status.unwrap_or_default();
        assert_eq!(st.state, TaskState::Failed, "{name}: {:?}", st.msg);
        let msg = st.msg.unwrap_or_default();
        assert!(msg.starts_with(&format!("{field}: ")), "{name}: {msg}");
        assert_eq!(h.worker_pods().await?, workers, "{name} started workers");
    }
    // The same read-only plugin in a dry run is fine.
    h.apply(&task(
        "ro-dry-run",
        "  workers: [node1]\n  dryRun: true\n  http: {api: etc-file-ro, method: ensure-line, parameter: {path: /etc/hosts, line: x}}\n",
    ))
    .await?;
    let t = h.wait_finished("ro-dry-run").await?;
    let st = t.status.unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded, "{:?}", st.msg);
    assert!(st.nodes[0].changed);
    assert_eq!(changed_files(&before, &h.snapshot()?), vec![]);

    // What the schema forbids never reaches the operator.
    let refused = [
        (
            "both-targets",
            "  workers: [node1]\n  targetType: All\n  http: {api: etc-file, method: read}\n",
            "exactly one of spec.workers",
        ),
        (
            "no-target",
            "  http: {api: etc-file, method: read}\n",
            "exactly one of spec.workers",
        ),
        (
            "bad-role",
            "  targetType: Workers\n  http: {api: etc-file, method: read}\n",
            "Unsupported value",
        ),
        (
            "zero-timeout",
            "  targetType: All\n  timeoutSeconds: 0\n  http: {api: etc-file, method: read}\n",
            "timeoutSeconds",
        ),
        (
            "zero-parallel",
            "  targetType: All\n  rollout: {maxParallel: 0}\n  http: {api: etc-file, method: read}\n",
            "maxParallel",
        ),
        (
            "no-method",
            "  targetType: All\n  http: {api: etc-file}\n",
            "method",
        ),
    ];
    for (name, spec, expected) in refused {
        let err = h
            .apply(&task(name, spec))
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains(expected), "{name}: accepted or unclear: {err}");
    }
    assert_eq!(changed_files(&before, &h.snapshot()?), vec![]);
    h.shutdown().await
}
