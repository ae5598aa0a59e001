//! Where a worker Pod is ([`WorkerState`]), read from its status as the Pod cache holds
//! it. Pure; the pool and the rollout decide what to do about it.

use k8s_openapi::api::core::v1::Pod;

use crate::rollout::WorkerState;

/// Container waiting reasons that mean the worker will never start.
const FATAL_WAITING_REASONS: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
];

/// Where a worker Pod is, from its status.
pub fn pod_state(pod: &Pod) -> WorkerState {
    // A Pod being deleted (evicted by a NoExecute taint, drained, reaped) will never
    // serve again, but nothing is wrong with starting another: as good as gone, so the
    // pool replaces it instead of a node failing on it.
    if pod.metadata.deletion_timestamp.is_some() {
        return WorkerState::Gone;
    }
    let Some(st) = &pod.status else {
        return WorkerState::Starting("no status yet".into());
    };
    let phase = st.phase.clone().unwrap_or_else(|| "Pending".into());
    if phase == "Failed" || phase == "Succeeded" {
        let reason = st
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
            .map(|t| {
                format!(
                    "exited with code {}{}",
                    t.exit_code,
                    t.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )
            })
            .next()
            .or_else(|| st.message.clone())
            .unwrap_or_default();
        return WorkerState::Broken(
            format!("the worker Pod ended ({phase}) {reason}")
                .trim_end()
                .to_owned(),
        );
    }
    for c in st.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            if FATAL_WAITING_REASONS.contains(&reason.as_str()) {
                return WorkerState::Broken(format!(
                    "{reason}: {}",
                    w.message.clone().unwrap_or_default()
                ));
            }
        }
    }
    let ready = st
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    match (ready, &st.pod_ip) {
        (true, Some(ip)) if !ip.is_empty() => WorkerState::Ready,
        _ => WorkerState::Starting(format!("phase {phase}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
    };

    fn pod(ready: bool, waiting: Option<&str>) -> Pod {
        Pod {
            metadata: Default::default(),
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("127.0.1.2".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                container_statuses: waiting.map(|r| {
                    vec![ContainerStatus {
                        name: "worker".into(),
                        state: Some(ContainerState {
                            waiting: Some(ContainerStateWaiting {
                                reason: Some(r.into()),
                                message: Some("no such image".into()),
                            }),
                            ..ContainerState::default()
                        }),
                        ..ContainerStatus::default()
                    }]
                }),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn pod_states() {
        assert_eq!(pod_state(&pod(true, None)), WorkerState::Ready);
        assert!(matches!(
            pod_state(&pod(false, None)),
            WorkerState::Starting(_)
        ));
        assert!(
            matches!(pod_state(&pod(false, Some("ErrImagePull"))), WorkerState::Broken(m) if m.contains("ErrImagePull"))
        );
        // Being deleted (evicted, drained): replaced, never a reason to fail a node.
        let mut evicted = pod(true, None);
        evicted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert_eq!(pod_state(&evicted), WorkerState::Gone);
    }
}
