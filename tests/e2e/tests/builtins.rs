//! Built-in HostPlugins: created at start-up when absent, and an administrator's later
//! change (here: etc-file narrowed to read-only) survives an operator restart. Also: a
//! ConfigMap plugin that is not Wasm is reported as such in its HostPlugin's status.

use hostplug_api::crd::{EtcAccess, HostPlugin};
use hostplug_e2e::Harness;
use kube::Api;
use kube::api::{Patch, PatchParams};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_edit_of_a_builtin_survives_a_restart() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let api: Api<HostPlugin> = Api::all(h.admin.clone());
    let before = api.get("etc-file").await?;
    assert_eq!(before.spec.capabilities.etc, EtcAccess::Write);

    api.patch(
        "etc-file",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"capabilities": {"etc": "read"}}})),
    )
    .await?;

    h.kill_operator().await?;
    h.start_operator()?;
    let n = h.operator_starts();
    // The restarted operator has gone through its built-ins once it reports running.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !h.operator_log(n).contains("operator running") {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "operator did not install built-ins; log:\n{}",
            h.operator_log(n)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let after = api.get("etc-file").await?;
    assert_eq!(
        after.spec.capabilities.etc,
        EtcAccess::Read,
        "{:?}",
        after.spec
    );
    assert_eq!(after.spec.sha256, before.spec.sha256);
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_map_that_is_not_wasm_is_named_as_such() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let text = "#!/bin/sh\necho this is not a plugin\n";
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().map(|mut i| i.write_all(text.as_bytes()));
            c.wait_with_output()
        })?;
    let digest = String::from_utf8(out.stdout)?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    h.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: not-wasm, namespace: hostplug-system}}\ndata:\n  plugin.wasm: {}\n---\napiVersion: hostplug.dev/v1alpha1\nkind: HostPlugin\nmetadata: {{name: not-wasm}}\nspec:\n  source: {{configMap: {{namespace: hostplug-system, name: not-wasm, key: plugin.wasm}}}}\n  sha256: \"{digest}\"\n",
        serde_json::to_string(text)?
    ))
    .await?;
    let hp = h.wait_plugin_status("not-wasm").await?;
    let st = hp.status.unwrap_or_default();
    assert!(!st.ready);
    let msg = st.message.unwrap_or_default();
    assert!(msg.contains("not a WebAssembly component"), "{msg}");
    assert!(!msg.contains("expected `(`"), "{msg}");
    h.shutdown().await
}
