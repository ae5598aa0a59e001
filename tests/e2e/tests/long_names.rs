//! HostTask names of every valid length (up to 253 characters) run and get their
//! status and Events, with pooled workers and with per-task workers (whose label holds
//! a hash of long names). Issue 11, medium 6: a name over 63 characters used to go into
//! a label value; a name over 236 characters made every Event's name invalid.

use hostplug_api::crd::TaskState;
use hostplug_e2e::{Harness, NAMESPACE};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;

fn task(name: &str) -> String {
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec:\n  workers: [node1]\n  http: {{api: etc-file, method: read, parameter: {{path: /etc/hosts}}}}\n"
    )
}

/// A valid HostTask name (a DNS subdomain) of exactly `len` characters.
fn name_of(prefix: &str, len: usize) -> String {
    let mut s = format!("{prefix}-");
    while s.len() < len {
        // Dots are allowed in a subdomain, every label at most 63 characters.
        s.push(if s.len() % 60 == 0 { '.' } else { 'x' });
    }
    s.truncate(len);
    if s.ends_with('.') {
        s.pop();
        s.push('y');
    }
    s
}

/// Runs tasks named with 64 and 253 characters; each must succeed and get its
/// `Started` and `Succeeded` Events.
async fn long_names_run(h: &Harness, prefix: &str) -> anyhow::Result<()> {
    for len in [64, 253] {
        let name = name_of(prefix, len);
        assert_eq!(name.len(), len);
        h.apply(&task(&name)).await?;
        let t = h.wait_finished(&name).await?;
        let st = t.status.unwrap_or_default();
        assert_eq!(st.state, TaskState::Succeeded, "{len}: {:?}", st.msg);
        let events: Api<Event> = Api::namespaced(h.admin.clone(), NAMESPACE);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let reasons: Vec<String> = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
                })
                .filter_map(|e| e.reason)
                .collect();
            if reasons.iter().any(|r| r == "Started") && reasons.iter().any(|r| r == "Succeeded") {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "task with a {len}-character name: events {reasons:?}; operator log:\n{}",
                hostplug_e2e::tail(&h.operator_log(h.operator_starts()), 30)
            );
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_task_names_run_with_pooled_workers() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    long_names_run(&h, "pooled").await?;
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_task_names_run_with_per_task_workers() -> anyhow::Result<()> {
    let h = Harness::start_with_operator_env(&[("HOSTPLUG_WORKER_IDLE_SECONDS", "0")]).await?;
    long_names_run(&h, "per-task").await?;
    // Their workers (labelled with a hash of the long name) go when the tasks end.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !h.worker_pods().await?.is_empty() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "per-task workers of finished tasks stay: {:?}",
            h.worker_pods().await?
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    h.shutdown().await
}
