//! Built-in HostPlugins: created at start-up when absent, and an administrator's later
//! change (here: etc-file narrowed to read-only) survives an operator restart.

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
