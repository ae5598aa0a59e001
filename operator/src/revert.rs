//! Revert of a HostTask's change, node by node, from the records the nodes keep.
//!
//! Every mutating call the task controller sends names its task ([`identity`]); the
//! worker stores what the call changed under /etc on the node under that identity (the
//! host records it, the plugin has no say). A revert sends `POST /v1/revert` naming the
//! same identity to a worker with write access to /etc on that node ([`revert_on`]);
//! the worker restores the record under the node lock, refuses (naming the files, with
//! a diff) when a file changed since unless `force`, and runs each revert invocation id
//! at most once, so a repeat after an operator restart is answered, not run again.
//!
//! For `rollout.onFailure: Revert`: revert the nodes of a wave with [`revert_on`] over
//! each node's worker lease, with [`revert_invocation_id`] naming the revert (the
//! task's uid and generation, the node) so that it runs once per node.
//!
//! This module decides nothing about which nodes are reverted when, and writes no
//! status; it must never send a revert naming another task than the one reverted.

use std::time::Duration;

use kube::ResourceExt as _;

use crate::client::CallError;
use crate::dispatch::{NodeOutcome, Success};
use crate::pool::WorkerLease;
use hostplug_api::crd::HostTask;
use hostplug_api::protocol::{RevertRequest, TaskIdentity};

/// Attempts at one revert while the worker lives but the connection failed or it was
/// busy: 4, as for calls. Safe: the invocation id makes repeats answers, not runs.
const REVERT_ATTEMPTS: u32 = 4;
/// Pause before the second attempt, doubled after (250 ms, 500 ms, 1 s).
const REVERT_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The identity the node keeps `task`'s generation `generation` change under.
pub fn identity(task: &HostTask, generation: i64) -> TaskIdentity {
    TaskIdentity {
        namespace: task.namespace().unwrap_or_default(),
        name: task.name_any(),
        uid: task.uid().unwrap_or_default(),
        generation,
    }
}

/// The invocation id of the revert of `target` on `node`: `revert/<uid>/<generation>/<node>`,
/// the same for every attempt and every operator process.
pub fn revert_invocation_id(target: &TaskIdentity, node: &str) -> String {
    format!("revert/{}/{}/{node}", target.uid, target.generation)
}

/// Sends the revert of `target` to the worker `lease` holds (on the node to revert),
/// retried while the worker lives and nothing was answered. `force` restores files that
/// changed since the task ran.
pub async fn revert_on(
    lease: &WorkerLease,
    target: &TaskIdentity,
    node: &str,
    force: bool,
    timeout: Duration,
) -> NodeOutcome {
    let req = RevertRequest {
        task: target.clone(),
        force,
        invocation_id: Some(revert_invocation_id(target, node)),
        timeout_ms: Some(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        ),
    };
    let mut pause = REVERT_RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        let result = async { lease.conn().await?.client.revert(&req).await }.await;
        match result {
            Ok(outcome) => return Ok(Success::from(outcome)),
            Err(e @ (CallError::Unreachable(_) | CallError::Busy(_)))
                if attempt < REVERT_ATTEMPTS && lease.is_ready() =>
            {
                tracing::warn!(pod = lease.pod(), attempt, error = %e, "revert failed; sending it again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revert_is_named_after_its_target_and_node() {
        let t = TaskIdentity {
            namespace: "ns".into(),
            name: "edit".into(),
            uid: "u1".into(),
            generation: 3,
        };
        assert_eq!(revert_invocation_id(&t, "node-a"), "revert/u1/3/node-a");
        assert_ne!(
            revert_invocation_id(&t, "node-a"),
            crate::task::invocation_id("u1", 3, "node-a")
        );
    }
}
