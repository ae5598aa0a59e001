//! Revert on the worker: storing what a mutating call changed ([`invoke_and_store`],
//! used by `POST /v1/invoke`) and `POST /v1/revert` ([`revert`]), which puts it back.
//!
//! A revert takes the same path as an invocation: the invocation slots, the node lock
//! (it changes the node) and the exactly-once outcome store (a repeated invocation id
//! gets the stored answer, never a second run). It uses only the record stored under
//! exactly the task identity it names, and restores through the host
//! (`hostplug_host::revert::restore`), which refuses a file that changed since unless
//! `force`. Repeating a revert is harmless: paths already back in their prior state are
//! left alone. This module must never restore from a record of another task, nor run a
//! revert without the node lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use hostplug_api::protocol::{
    ErrorKind, InvokeOutcome, RevertRequest, Revertibility, TaskIdentity,
};

use crate::error::ApiError;
use crate::node_lock::LockError;
use crate::outcomes::{self, Begin, MAX_INVOCATION_ID_BYTES};
use crate::records::{RECORD_TTL, RecordStore};
use crate::runtime::{Call, Digest, PluginRuntime, RevertError, RuntimeError};
use crate::server::{AppState, answer, body_rejection, run_blocking};

/// Longest message of a refused revert (the changed files' diffs): 8 KiB. It becomes
/// the node's message in the task status, which holds many nodes.
pub const MAX_REVERT_MESSAGE_BYTES: usize = 8 * 1024;

/// Runs `call` with its revert record, stores the record under `task` and says in the
/// outcome whether the call can be reverted. A record that cannot be stored makes the
/// call not revertible; the call's own result is never changed by that.
pub(crate) fn invoke_and_store(
    runtime: &dyn PluginRuntime,
    digest: &Digest,
    call: &Call,
    store: &RecordStore,
    task: &TaskIdentity,
) -> Result<InvokeOutcome, RuntimeError> {
    let (mut outcome, record) = runtime.invoke_recorded(digest, call);
    let revertibility = match &record {
        None => Revertibility::no("the call had no write access to /etc"),
        Some(record) => match store.save(task, record) {
            Err(e) => {
                tracing::warn!(task = %task, error = %e, "revert record not stored");
                Revertibility::no(format!("the record could not be stored on the node: {e}"))
            }
            Ok(()) => match &record.not_revertible {
                Some(why) => Revertibility::no(why.clone()),
                None => Revertibility::yes(),
            },
        },
    };
    if let Ok(o) = &mut outcome {
        o.revert = Some(revertibility);
    }
    outcome
}

/// `POST /v1/revert`: restore what the named task's call changed on this node.
pub(crate) async fn revert(
    State(state): State<AppState>,
    request: Result<Json<RevertRequest>, JsonRejection>,
) -> Result<Json<InvokeOutcome>, ApiError> {
    let started = Instant::now();
    let Json(request) = request
        .map_err(|r| body_rejection(r.status(), r.body_text(), state.limits().max_request_bytes))?;
    if request.timeout_ms == Some(0) {
        return Err(ApiError::bad_request("timeoutMs must be above 0"));
    }
    let t = &request.task;
    if t.namespace.is_empty() || t.name.is_empty() || t.uid.is_empty() {
        return Err(ApiError::bad_request(
            "task.namespace, task.name and task.uid must not be empty",
        ));
    }
    if let Some(id) = &request.invocation_id
        && (id.is_empty() || id.len() > MAX_INVOCATION_ID_BYTES)
    {
        return Err(ApiError::bad_request(format!(
            "invocationId must be 1 to {MAX_INVOCATION_ID_BYTES} bytes"
        )));
    }
    let (Some(store), Some(lock)) = (state.inner.records.clone(), state.inner.node_lock.clone())
    else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Denied,
            "this worker cannot change its node, so it keeps no revert records and cannot revert",
        ));
    };
    let ticket = match &request.invocation_id {
        None => None,
        Some(id) => match state.inner.outcomes.begin(id) {
            Begin::Run(ticket) => Some(ticket),
            Begin::Done(outcome) => return answer(&outcome),
            Begin::Wait(rx) => {
                return match outcomes::wait(rx).await {
                    Some(outcome) => answer(&outcome),
                    None => Err(ApiError::busy()),
                };
            }
        },
    };
    let timeout = state.limits().invoke_timeout(request.timeout_ms);
    let wait = state.limits().queue_wait().min(timeout);
    let slots = Arc::clone(&state.inner.invoke_slots);
    let permit = match tokio::time::timeout(wait, slots.acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(e)) => return Err(ApiError::internal("waiting for a slot", &e)),
        Err(_elapsed) => return Err(ApiError::busy()),
    };
    let left = timeout
        .checked_sub(started.elapsed())
        .unwrap_or(Duration::from_millis(1));
    let runtime = state.runtime();
    let result = run_blocking("reverting", move || {
        let _permit = permit;
        let guard = lock.acquire(left)?;
        let began = Instant::now();
        tracing::info!(task = %request.task, force = request.force, invocation_id = request.invocation_id.as_deref().unwrap_or_default(), "reverting");
        let outcome = restore(&*runtime, &store, &request.task, request.force, began);
        drop(guard);
        Ok::<_, LockError>(match ticket {
            Some(ticket) => ticket.finish(outcome),
            None => Arc::new(outcome),
        })
    })
    .await?;
    match result {
        Ok(outcome) => answer(&outcome),
        Err(LockError::Timeout { waited_ms }) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Timeout,
            format!(
                "other changes on this node held the node lock for {waited_ms} ms, until the deadline; not reverted"
            ),
        )),
        Err(e) => Err(ApiError::internal("taking the node lock", &e)),
    }
}

/// The revert itself, under the node lock: find exactly `task`'s record, restore it.
fn restore(
    runtime: &dyn PluginRuntime,
    store: &RecordStore,
    task: &TaskIdentity,
    force: bool,
    began: Instant,
) -> Result<InvokeOutcome, RuntimeError> {
    let stored = match store.load(task) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(RuntimeError::new(
                ErrorKind::NotFound,
                format!(
                    "no revert record of {task} on this node: the call did not run here, named no task, or its record expired (records are kept {} days)",
                    RECORD_TTL.as_secs() / 86_400
                ),
            ));
        }
        Err(e) => {
            return Err(RuntimeError::new(
                ErrorKind::Failed,
                format!("the revert record of {task} cannot be read: {e}"),
            ));
        }
    };
    match runtime.restore(&stored.record, force) {
        Ok(done) => Ok(InvokeOutcome {
            changed: !done.restored.is_empty(),
            output: serde_json::json!({ "restored": done.restored }),
            diff: done.diff,
            logs: Vec::new(),
            duration_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
            on_change: Vec::new(),
            revert: None,
            reboot_required: None,
        }),
        Err(e) => {
            let mut message = e.to_string();
            if message.len() > MAX_REVERT_MESSAGE_BYTES {
                let mut end = MAX_REVERT_MESSAGE_BYTES;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                message.truncate(end);
                message.push_str("\n… (diff cut)");
            }
            let kind = match e {
                RevertError::NotRevertible(_)
                | RevertError::ChangedSince(_)
                | RevertError::Failed(_) => ErrorKind::Failed,
            };
            Err(RuntimeError::new(kind, message))
        }
    }
}
