//! The one node-call path. Both controllers send every plugin call through [`send`]:
//! the caller holds a [`WorkerLease`] on a ready worker (from the pool); dispatch ships
//! the module unless the worker holds it (as this process's signed precompiled artifact
//! where the worker trusts this process's key — [`Artifacts`]), sends the invocation,
//! retries while the worker lives and nothing ran (the same invocation id every time, so
//! the worker runs the plugin at most once), and records the call's metrics. What a call
//! returned is a typed [`NodeOutcome`] until a status records it.
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
use hostplug_api::crd::{FollowUpResult, NodePhase, PluginCall};
use hostplug_api::plugin::EtcScope;
use hostplug_api::protocol::{FollowUpOutcome, InvokeOutcome, InvokeRequest};
use hostplug_api::{AccessProfile, EtcAccess};
use hostplug_host::{ArtifactKey, ArtifactSigner, SignedArtifact};

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
    /// What the follow-up calls that ran returned, in order, as the worker answered
    /// (the rollout names them after the spec's calls, [`follow_up_results`]).
    pub follow_ups: Vec<FollowUpOutcome>,
    /// Whether the call's change to /etc can be reverted, as the worker said.
    pub revert: Option<hostplug_api::protocol::Revertibility>,
    /// Why the change needs a reboot, when the plugin (or a follow-up that ran) asked
    /// for one; the disruption cycle decides (`crate::disruption`).
    pub reboot_required: Option<String>,
}

impl From<InvokeOutcome> for Success {
    fn from(o: InvokeOutcome) -> Self {
        let reboot_required = o.reboot_required.clone().or_else(|| {
            o.on_change
                .iter()
                .find_map(|f| f.outcome.as_ref()?.reboot_required.clone())
        });
        Self {
            reboot_required,
            changed: o.changed,
            diff: o.diff,
            output: o.output,
            logs: o.logs.iter().map(ToString::to_string).collect(),
            follow_ups: o.on_change,
            revert: o.revert,
        }
    }
}

/// A follow-up call (`onChange`) as resolved for dispatch: the call, its plugin and the
/// access it gets (the worker narrows its grants to it).
#[derive(Debug, Clone)]
pub struct FollowUp {
    /// The call as written.
    pub call: PluginCall,
    /// Its plugin.
    pub loaded: Arc<LoadedPlugin>,
    /// What it may touch.
    pub access: AccessProfile,
}

/// The profile of the worker that runs a call with `main` access and `follow_ups`: the
/// union of all of them (each call still gets only its own).
pub fn sequence_profile(main: AccessProfile, follow_ups: &[FollowUp]) -> AccessProfile {
    follow_ups.iter().fold(main, |p, f| p.union(f.access))
}

/// The node's record of each follow-up in `calls`, from what the worker `answered`:
/// those that ran with their result; the rest `Skipped`, saying why (nothing changed, or
/// an earlier one failed).
pub fn follow_up_results(
    calls: &[PluginCall],
    main_changed: bool,
    answered: &[FollowUpOutcome],
) -> Vec<FollowUpResult> {
    let mut answered = answered.iter();
    let mut stopped = false;
    calls
        .iter()
        .map(|call| {
            let mut r = FollowUpResult {
                api: call.api.clone(),
                method: call.method.clone(),
                phase: NodePhase::Skipped,
                ..FollowUpResult::default()
            };
            match answered.next() {
                _ if stopped => r.message = Some("not run: an earlier follow-up failed".into()),
                None if !main_changed => {
                    r.message = Some("not run: the main call changed nothing".into());
                }
                None => r.message = Some("not run: the worker did not run it".into()),
                Some(FollowUpOutcome {
                    outcome: Some(o), ..
                }) => {
                    r.phase = NodePhase::Succeeded;
                    r.changed = o.changed;
                    r.output = Some(o.output.clone());
                    r.logs = o.logs.iter().map(ToString::to_string).collect();
                }
                Some(FollowUpOutcome { error, .. }) => {
                    stopped = true;
                    r.phase = NodePhase::Failed;
                    if let Some(e) = error {
                        r.logs = e.logs.iter().map(ToString::to_string).collect();
                        r.message = Some(format!("{}: {}", e.kind, e.message));
                    }
                }
            }
            r
        })
        .collect()
}

/// The first follow-up in `results` that failed, as `onChange[i] (api/method) failed:
/// why`: the node's message.
pub fn failed_follow_up(results: &[FollowUpResult]) -> Option<String> {
    results
        .iter()
        .enumerate()
        .find(|(_, f)| f.phase == NodePhase::Failed)
        .map(|(i, f)| {
            format!(
                "onChange[{i}] ({}/{}) failed: {}",
                f.api,
                f.method,
                f.message.as_deref().unwrap_or("no reason given")
            )
        })
}

/// Sends one call (`req`, a call of `plugins[0]`, with follow-ups of the others) to the
/// worker `lease` holds, retried while the worker lives and the failure says nothing ran
/// to completion on our side (connection lost, busy). Repeats carry the same invocation
/// id, so the worker runs the plugins at most once.
pub async fn send(
    ctx: &Context,
    lease: &WorkerLease,
    plugins: &[&LoadedPlugin],
    req: &InvokeRequest,
) -> NodeOutcome {
    let started = Instant::now();
    // What each plugin's HostPlugin declares per call (its systemd units and actions,
    // its /etc paths narrowed by the task's policies) travels with the request: workers
    // are shared by the plugins of one access profile.
    let scopes = match etc_scopes(ctx, plugins, req).await {
        Ok(scopes) => scopes,
        Err(e) => {
            return Err(CallError::NotSent(format!(
                "the /etc paths of the call could not be worked out: {e}"
            )));
        }
    };
    let with_caps;
    let req = if plugins.iter().any(|p| p.capabilities.systemd.is_some())
        || scopes.iter().any(Option::is_some)
    {
        let mut r = req.clone();
        r.systemd = plugins.first().and_then(|p| p.capabilities.systemd.clone());
        r.etc_scope = scopes.first().cloned().flatten();
        for ((f, p), scope) in r
            .on_change
            .iter_mut()
            .zip(plugins.iter().skip(1))
            .zip(scopes.iter().skip(1))
        {
            f.systemd = p.capabilities.systemd.clone();
            f.etc_scope = scope.clone();
        }
        with_caps = r;
        &with_caps
    } else {
        req
    };
    let trusts = worker_trusts(ctx, lease.pod());
    let mut artifacts = Vec::with_capacity(plugins.len());
    for plugin in plugins {
        artifacts.push(if trusts {
            ctx.artifacts.get(ctx.plugins.host(), &plugin.digest).await
        } else {
            None
        });
    }
    let mut pause = CALL_RETRY_PAUSE;
    let mut attempt = 1;
    let outcome = loop {
        let result = async {
            let conn = lease.conn().await?;
            for (plugin, artifact) in plugins.iter().zip(&artifacts) {
                let hex = plugin.digest.hex();
                if conn.holds(&hex) {
                    continue;
                }
                let how = conn
                    .client
                    .ensure_module(&hex, &plugin.bytes, artifact.as_deref())
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

/// The /etc scope of each call of `req` (the main call of `plugins[0]`, then each
/// follow-up of the next ones): the one place that combines a plugin's declared paths
/// and allowances with what the HostTaskPolicies allow the task on its node
/// ([`EtcScope::for_call`]). `None` for a call that is not narrowed. The task comes from
/// `req.task` and the node from its invocation id; a request without a task (a
/// HostState, the operator's own calls) is narrowed by its plugins' declarations only.
async fn etc_scopes(
    ctx: &Context,
    plugins: &[&LoadedPlugin],
    req: &InvokeRequest,
) -> crate::Result<Vec<Option<EtcScope>>> {
    let methods =
        std::iter::once(req.method.as_str()).chain(req.on_change.iter().map(|f| f.method.as_str()));
    let calls: Vec<(&str, &str, bool)> = plugins
        .iter()
        .zip(methods)
        .map(|(p, m)| {
            (
                p.name.as_str(),
                m,
                p.info.method(m).is_none_or(|method| method.mutates),
            )
        })
        .collect();
    let uses_etc = plugins
        .iter()
        .any(|p| p.capabilities.etc != EtcAccess::None);
    let grants = match (&req.task, uses_etc) {
        // A HostState correction carries an identity for its revert record, but it is
        // no task: no namespace's policy narrows it.
        (Some(task), true) if !crate::state::is_correction(task) => {
            let node = req
                .invocation_id
                .as_deref()
                .and_then(|id| id.rsplit('/').next())
                .unwrap_or_default();
            crate::policy::etc_grants(ctx, &task.namespace, node, req.dry_run, &calls).await?
        }
        _ => vec![None; calls.len()],
    };
    Ok(plugins
        .iter()
        .zip(grants)
        .map(|(p, grant)| {
            let scope = EtcScope::for_call(&p.capabilities, grant.as_ref());
            (p.capabilities.etc != EtcAccess::None && !scope.is_unrestricted()).then_some(scope)
        })
        .collect())
}

/// Whether the worker Pod `pod` trusts this process's artifact key (its Pod spec carries
/// it). One adopted from an earlier operator process carries that process's key and
/// would refuse this one's artifacts: it gets the module instead, without the detour.
fn worker_trusts(ctx: &Context, pod: &str) -> bool {
    let pod = ctx
        .pods
        .get(&kube::runtime::reflector::ObjectRef::new(pod).within(&ctx.config.namespace));
    let trusts =
        pod.as_deref().and_then(crate::resources::artifact_key) == Some(ctx.artifacts.public_key());
    if !trusts {
        tracing::debug!(
            pod = pod.as_deref().and_then(|p| p.metadata.name.as_deref()),
            "the worker does not carry this process's artifact key; sending modules only"
        );
    }
    trusts
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
/// component the operator compiled for `describe`, and signed with this process's
/// artifact key.
///
/// A precompiled artifact is native code that a worker runs outside the Wasm sandbox;
/// the worker loads one only with a signature that verifies with the public key in its
/// Pod spec (`hostplug_host::ArtifactSigner`). The key pair is made here when the
/// process starts and its private half never leaves this process's memory: not a file,
/// a Secret, an environment variable or a log. So no one else — not whoever can read
/// the workers' tokens in the operator's namespace — can make an artifact a worker takes.
/// A new process makes a new key: workers an earlier process made (and this one adopted)
/// refuse its artifacts, and get modules instead.
pub struct Artifacts {
    signer: Arc<ArtifactSigner>,
    made: Mutex<HashMap<hostplug_host::Digest, Option<Arc<SignedArtifact>>>>,
}

impl std::fmt::Debug for Artifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifacts")
            .field("public_key", &self.signer.public_key())
            .finish_non_exhaustive()
    }
}

impl Artifacts {
    /// Artifacts signed with a key pair made now. Errors when the system's random source
    /// fails.
    pub fn new() -> crate::Result<Self> {
        let signer = ArtifactSigner::generate().map_err(|e| crate::Error::Config(e.to_string()))?;
        Ok(Self {
            signer: Arc::new(signer),
            made: Mutex::default(),
        })
    }

    /// The public half of this process's key, which every worker Pod it makes carries.
    pub fn public_key(&self) -> ArtifactKey {
        self.signer.public_key()
    }

    /// The signed artifact of `digest` (with its engine fingerprint), serialized and
    /// signed on first use (off the async threads); `None` when the host cannot serialize
    /// it (then workers compile the module themselves).
    pub async fn get(
        &self,
        host: &hostplug_host::Host,
        digest: &hostplug_host::Digest,
    ) -> Option<Arc<SignedArtifact>> {
        if let Some(made) = lock(&self.made).get(digest) {
            return made.clone();
        }
        let (h, d, signer) = (host.clone(), *digest, Arc::clone(&self.signer));
        let made = tokio::task::spawn_blocking(move || h.signed_artifact(&d, &signer))
            .await
            .ok()
            .flatten()
            .and_then(|r| match r {
                Ok(artifact) => Some(Arc::new(artifact)),
                Err(e) => {
                    warn!(%digest, error = %e, "cannot serialize a plugin; workers compile it");
                    None
                }
            });
        lock(&self.made).insert(*digest, made.clone());
        made
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resolves one follow-up call (`onChange`) at `site` for dispatch, the same way for a
/// HostTask and a HostState: its HostPlugin and loaded module, validated as every call
/// is ([`crate::validate::check_call`], `dry_run` for a task's dry run or a state's
/// Audit), the values of its vars read (`namespace`: a task's; `None` for a state), and
/// the access it gets. `Ok(Err(_))` names the field and the problem; `Err(_)` is an API
/// failure.
pub async fn resolve_follow_up(
    ctx: &Context,
    call: &PluginCall,
    site: crate::validate::CallSite,
    dry_run: bool,
    namespace: Option<&str>,
) -> crate::Result<Result<(FollowUp, crate::values::CallValues), crate::validate::Invalid>> {
    use crate::validate::{Invalid, PluginView};
    let hp = kube::Api::<hostplug_api::crd::HostPlugin>::all(ctx.client.clone())
        .get_opt(&call.api)
        .await
        .map_err(crate::Error::kube(format!(
            "reading HostPlugin {}",
            call.api
        )))?;
    let loaded = match &hp {
        Some(hp) => ctx.plugins.resolve(&ctx.client, hp).await,
        None => Err("no HostPlugin".into()),
    };
    let view = PluginView {
        spec: hp.as_ref().map(|h| &h.spec),
        loaded: match &loaded {
            Ok(l) => Ok(&l.info),
            Err(e) => Err(e.as_str()),
        },
    };
    let mutates = match crate::validate::check_call(call, site, view, dry_run) {
        Ok(m) => m.mutates,
        Err(e) => return Ok(Err(e)),
    };
    let (Some(hp), Ok(loaded)) = (hp, loaded) else {
        return Ok(Err(Invalid::new(
            site.field("api"),
            format!("plugin {:?} is not ready", call.api),
        )));
    };
    let values = match crate::values::read(&ctx.client, call, site, namespace).await? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok((
        FollowUp {
            call: call.clone(),
            access: AccessProfile::for_call(&hp.spec.capabilities, dry_run, mutates),
            loaded,
        },
        values,
    )))
}

/// The follow-up requests of one node's call: each follow-up with its parameters for
/// `node` (from its values) and its own access; `site(i)` names the i-th in errors.
pub fn follow_up_requests<'a>(
    follow_ups: impl IntoIterator<Item = (&'a FollowUp, &'a crate::values::CallValues)>,
    site: impl Fn(usize) -> crate::validate::CallSite,
    node: &crate::validate::NodeView,
) -> Result<Vec<hostplug_api::protocol::FollowUpRequest>, CallError> {
    follow_ups
        .into_iter()
        .enumerate()
        .map(|(i, (f, values))| {
            let site = site(i);
            let method = f.loaded.info.method(&f.call.method).ok_or_else(|| {
                CallError::NotSent(format!(
                    "{}: the plugin lost its method",
                    site.field("method")
                ))
            })?;
            Ok(hostplug_api::protocol::FollowUpRequest {
                digest: f.loaded.digest.to_string(),
                method: f.call.method.clone(),
                params: values
                    .params_for(&f.call, site, method, node)
                    .map_err(|invalid| CallError::NotSent(invalid.to_string()))?,
                access: Some(f.access),
                // From the plugin's capabilities (and the policies' /etc paths), in
                // `send`.
                systemd: None,
                etc_scope: None,
            })
        })
        .collect()
}
