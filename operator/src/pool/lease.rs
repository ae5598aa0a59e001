//! Leases on pooled workers and the connections they carry.
//!
//! A [`WorkerLease`] is the right to call one worker: while it lives the pool neither
//! removes nor replaces that worker, and dropping it gives the worker back, so every
//! begin of a call has its end, on every path (errors and cancellation included).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{WorkerKey, WorkerPool, lock};
use crate::client::{CallError, WorkerClient};
use crate::rollout::WorkerState;

/// Pause before asking again for a worker whose creation failed (or for room on a full
/// node): 1 s, so an API server that refuses is not hammered while the caller's deadline
/// runs.
const RECREATE_PAUSE: Duration = Duration::from_secs(1);

/// A connection to one worker: its client and the modules it is known to hold.
#[derive(Debug)]
pub struct WorkerConn {
    /// The client.
    pub client: WorkerClient,
    held: Mutex<HashSet<String>>,
}

impl WorkerConn {
    pub(super) fn new(client: WorkerClient) -> Self {
        Self {
            client,
            held: Mutex::new(HashSet::new()),
        }
    }

    /// Whether this worker is known to hold the module `digest_hex`.
    pub fn holds(&self, digest_hex: &str) -> bool {
        lock(&self.held).contains(digest_hex)
    }

    /// Notes that this worker holds the module `digest_hex`.
    pub fn note_held(&self, digest_hex: &str) {
        lock(&self.held).insert(digest_hex.to_owned());
    }
}

/// The right to call one worker Pod; released on drop.
#[derive(Debug)]
pub struct WorkerLease {
    pool: Arc<WorkerPool>,
    pod: String,
    port: i32,
}

impl WorkerLease {
    /// The worker Pod's name.
    pub fn pod(&self) -> &str {
        &self.pod
    }

    /// Whether the worker is still Ready (a retry is worth it only then).
    pub fn is_ready(&self) -> bool {
        self.pool.worker_state(&self.pod) == WorkerState::Ready
    }

    /// The connection to the worker (its credentials are read from its Secret once).
    pub async fn conn(&self) -> Result<Arc<WorkerConn>, CallError> {
        self.pool.conn(&self.pod, self.port).await
    }
}

impl Drop for WorkerLease {
    fn drop(&mut self) {
        self.pool.end_call(&self.pod);
    }
}

impl WorkerPool {
    /// A lease on the worker Pod `pod` listening on `port`: the one a task's rollout
    /// found Ready, or the one a status names when a call is resumed after a restart.
    pub fn lease(self: &Arc<Self>, pod: &str, port: i32) -> WorkerLease {
        self.begin_call(pod);
        WorkerLease {
            pool: Arc::clone(self),
            pod: pod.to_owned(),
            port,
        }
    }

    /// A lease on the worker serving `key` once it is Ready: the worker is created when
    /// there is none (or it died), and this waits on its Pod's changes (never polling)
    /// for at most `timeout`. Fails when the worker cannot start (the reason named) or
    /// is not Ready in time. A call that `resumes` one of an earlier operator process
    /// goes to the worker that process used, if it still runs (a retiring one), since
    /// only it holds that call's outcome.
    pub async fn lease_ready(
        self: &Arc<Self>,
        key: &WorkerKey,
        timeout: Duration,
        resumes: bool,
    ) -> Result<WorkerLease, CallError> {
        if resumes && let Some(pod) = self.retiring_ready(key) {
            return Ok(self.lease(&pod, key.port));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let pod = match self.ensure(key, None) {
                Ok(pod) => pod,
                Err(full) => {
                    if tokio::time::timeout_at(deadline, tokio::time::sleep(RECREATE_PAUSE))
                        .await
                        .is_err()
                    {
                        return Err(CallError::Unreachable(full));
                    }
                    continue;
                }
            };
            // Subscribe before looking, so a change between the look and the wait
            // still wakes us.
            let changed = {
                let st = lock(&self.state);
                st.workers
                    .get(key)
                    .filter(|w| w.pod == pod)
                    .map(|w| w.changed.subscribe())
            };
            let waiting = match self.worker_state(&pod) {
                WorkerState::Ready => {
                    let lease = self.lease(&pod, key.port);
                    // Still the pool's worker for `key` (not replaced meanwhile)?
                    if self.worker_state(&pod) == WorkerState::Ready {
                        return Ok(lease);
                    }
                    continue;
                }
                WorkerState::Broken(why) => {
                    return Err(CallError::Worker(format!(
                        "worker Pod {pod} cannot start: {why}"
                    )));
                }
                WorkerState::Starting(what) => what,
                WorkerState::Gone => "the worker Pod is being created".to_owned(),
            };
            let timed_out = || {
                CallError::Unreachable(format!(
                    "worker Pod {pod} not Ready after {}s ({waiting})",
                    timeout.as_secs()
                ))
            };
            match changed {
                Some(mut rx) => match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Ok(Ok(())) => {}
                    // The worker left the pool (its creation failed, or it was removed):
                    // ask again after a pause.
                    Ok(Err(_)) => {
                        if tokio::time::timeout_at(deadline, tokio::time::sleep(RECREATE_PAUSE))
                            .await
                            .is_err()
                        {
                            return Err(timed_out());
                        }
                    }
                    Err(_) => return Err(timed_out()),
                },
                None => {
                    if tokio::time::timeout_at(deadline, tokio::time::sleep(RECREATE_PAUSE))
                        .await
                        .is_err()
                    {
                        return Err(timed_out());
                    }
                }
            }
        }
    }
}
