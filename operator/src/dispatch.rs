//! The one node-call path. Both controllers send every plugin call through [`send`]:
//! the caller holds a [`WorkerLease`] on a ready worker (from the pool); dispatch ships
//! the module unless the worker holds it (precompiled where the engines match), sends the
//! invocation, retries while the worker lives and nothing ran (the same invocation id
//! every time, so the worker runs the plugin at most once), and records the call's
//! metrics. What a call returned is a typed [`NodeOutcome`] until a status records it.
//!
//! [`Calls`] keeps this process's calls, in flight or returned, between the job that
//! makes a call and the reconcile that records its outcome.
//!
//! Nothing here decides which node is called when, or writes a status.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::Context;
use crate::client::CallError;
use crate::plugins::LoadedPlugin;
use crate::pool::WorkerLease;
use hostplug_api::protocol::{InvokeOutcome, InvokeRequest};

/// Attempts at one call while the worker lives but the connection failed or the worker
/// was busy: 4. Safe because a repeated invocation id is answered from the worker's
/// outcome store, never run twice.
const CALL_ATTEMPTS: u32 = 4;
/// Pause before the second attempt; doubled for each further one (250 ms, 500 ms, 1 s).
const CALL_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// What a call that returned produced: the node's result, kept typed until it is written.
pub type NodeOutcome = Result<Success, CallError>;

/// A call that succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    /// Whether the node changed (in a dry run: would have).
    pub changed: bool,
    /// Unified diff of file changes.
    pub diff: Option<String>,
    /// The operation's output.
    pub output: serde_json::Value,
    /// The tail of what the plugin logged, as `[level] source: text`.
    pub logs: Vec<String>,
}

impl From<InvokeOutcome> for Success {
    fn from(o: InvokeOutcome) -> Self {
        Self {
            changed: o.changed,
            diff: o.diff,
            output: o.output,
            logs: o.logs.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Sends one call (`req`, a call of `plugin`) to the worker `lease` holds, retried while
/// the worker lives and the failure says nothing ran to completion on our side
/// (connection lost, busy). Repeats carry the same invocation id, so the worker runs the
/// plugin at most once.
pub async fn send(
    ctx: &Context,
    lease: &WorkerLease,
    plugin: &LoadedPlugin,
    req: &InvokeRequest,
) -> NodeOutcome {
    let started = Instant::now();
    // What the plugin's HostPlugin declares per call (its systemd units and actions)
    // travels with every request: workers are shared by plugins of one access profile.
    let with_caps;
    let req = if plugin.capabilities.systemd.is_some() && req.systemd.is_none() {
        with_caps = req.clone().with_capabilities(&plugin.capabilities);
        &with_caps
    } else {
        req
    };
    let artifact = ctx.artifacts.get(ctx.plugins.host(), &plugin.digest).await;
    let mut pause = CALL_RETRY_PAUSE;
    let mut attempt = 1;
    let outcome = loop {
        let result = async {
            let conn = lease.conn().await?;
            let hex = plugin.digest.hex();
            if !conn.holds(&hex) {
                let how = conn
                    .client
                    .ensure_module(
                        &hex,
                        &plugin.bytes,
                        artifact.as_ref().map(|(f, a)| (f.as_str(), a.as_slice())),
                    )
                    .await?;
                if let Some(precompiled) = how {
                    tracing::debug!(digest = %hex, precompiled, pod = lease.pod(), "module sent to a worker");
                }
                conn.note_held(&hex);
            }
            conn.client.invoke(req).await
        }
        .await;
        match result {
            Ok(r) => break Ok(Success::from(r)),
            Err(e @ (CallError::Unreachable(_) | CallError::Busy(_)))
                if attempt < CALL_ATTEMPTS && lease.is_ready() =>
            {
                warn!(pod = lease.pod(), attempt, error = %e, "call failed; sending it again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => break Err(e),
        }
    };
    ctx.metrics.invocation(started.elapsed());
    outcome
}

/// The state of a call this process made.
#[derive(Debug, Clone, PartialEq)]
pub enum CallState<T = NodeOutcome> {
    /// Sent; no answer yet.
    InFlight,
    /// Returned with this result, at this time.
    Done(T, k8s_openapi::jiff::Timestamp),
}

/// This process's calls by key, shared by the reconciles that start them and the jobs
/// that make them. A call's outcome waits here until a status records it.
#[derive(Debug)]
pub struct Calls<K, T = NodeOutcome>(Mutex<HashMap<K, CallState<T>>>);

impl<K, T> Default for Calls<K, T> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Calls<K, T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, CallState<T>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
    /// Records a call as sent.
    pub fn start(&self, key: K) {
        self.lock().insert(key, CallState::InFlight);
    }
    /// Records a call's result, if the call is still recorded: one that was dropped
    /// meanwhile (a superseded generation, a deleted object) leaves nothing behind.
    pub fn complete(&self, key: &K, result: T) {
        if let Some(v) = self.lock().get_mut(key) {
            *v = CallState::Done(result, k8s_openapi::jiff::Timestamp::now());
        }
    }
    /// The calls whose key `pick` maps to something, by that.
    pub fn select<B: Ord>(
        &self,
        mut pick: impl FnMut(&K) -> Option<B>,
    ) -> std::collections::BTreeMap<B, CallState<T>> {
        self.lock()
            .iter()
            .filter_map(|(k, v)| pick(k).map(|b| (b, v.clone())))
            .collect()
    }
    /// Keeps only the calls `keep` says to.
    pub fn retain(&self, mut keep: impl FnMut(&K, &CallState<T>) -> bool) {
        self.lock().retain(|k, v| keep(k, v));
    }
    /// Drops one call.
    pub fn remove(&self, key: &K) {
        self.lock().remove(key);
    }
}

/// The operator's precompiled artifacts, by module digest, made once per plugin from the
/// component the operator compiled for `describe`.
#[derive(Default)]
pub struct Artifacts {
    made: Mutex<HashMap<hostplug_host::Digest, Option<Arc<Vec<u8>>>>>,
}

impl std::fmt::Debug for Artifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifacts").finish_non_exhaustive()
    }
}

impl Artifacts {
    /// The engine fingerprint and artifact of `digest`, serialized on first use (off
    /// the async threads); `None` when the host cannot serialize it (then workers
    /// compile the module themselves).
    pub async fn get(
        &self,
        host: &hostplug_host::Host,
        digest: &hostplug_host::Digest,
    ) -> Option<(String, Arc<Vec<u8>>)> {
        let fingerprint = host.engine_fingerprint();
        if let Some(made) = lock(&self.made).get(digest) {
            return made.clone().map(|a| (fingerprint, a));
        }
        let (h, d) = (host.clone(), *digest);
        let made = tokio::task::spawn_blocking(move || h.precompiled_artifact(&d))
            .await
            .ok()
            .flatten()
            .and_then(|r| match r {
                Ok(bytes) => Some(Arc::new(bytes)),
                Err(e) => {
                    warn!(%digest, error = %e, "cannot serialize a plugin; workers compile it");
                    None
                }
            });
        lock(&self.made).insert(*digest, made.clone());
        made.map(|a| (fingerprint, a))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
