//! The HTTP routes ([`app`]) and the HTTPS listener ([`Server`]).
//!
//! Handlers never block: hashing, compiling and running plugins go to
//! `spawn_blocking`, with the request's tracing span carried over. A semaphore bounds the
//! invocations running at once; a request that cannot get a slot within the queue wait
//! (or its own deadline, if shorter) is answered 503 `busy` instead of piling up.
//! Compiles are bounded by a second semaphore ([`MAX_CONCURRENT_COMPILES`]), which also
//! makes "compile each digest once" hold under concurrent uploads of the same module.
//!
//! A named invocation (one with an `invocationId`) runs at most once: its outcome is kept
//! in the [`OutcomeStore`] by the blocking task that ran it, so even a client that hung
//! up mid-call finds it there when it asks again. A mutating invocation (this worker may
//! change the node and the request is no dry run) holds the node-wide [`NodeLock`] while
//! it runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_http::trace::TraceLayer;
use tracing::Instrument as _;

use crate::auth::{self, BearerToken};
use crate::config::{
    ACCEPT_ERROR_BACKOFF, H2_KEEP_ALIVE_INTERVAL, H2_KEEP_ALIVE_TIMEOUT, H2_MAX_CONCURRENT_STREAMS,
    H2_MAX_HEADER_LIST_BYTES, HEADER_READ_TIMEOUT, Limits, MAX_CONCURRENT_COMPILES,
    MAX_CONNECTIONS, MAX_IDLE_CHECK_INTERVAL, SHUTDOWN_GRACE, TLS_HANDSHAKE_TIMEOUT,
};
use crate::error::{ApiError, Error, Result};
use crate::node_lock::{LockError, NodeLock};
use crate::outcomes::{self, Begin, MAX_INVOCATION_ID_BYTES, Outcome, OutcomeStore};
use crate::records::RecordStore;
use crate::runtime::{Call, Digest, Loaded, PluginRuntime, RuntimeError};
use hostplug_api::protocol::{
    ErrorKind, FollowUpOutcome, FollowUpRequest, Health, InvocationStatus, InvokeOutcome,
    InvokeRequest, MAX_FOLLOW_UPS, UploadResponse,
};

/// Everything the routes share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    runtime: Arc<dyn PluginRuntime>,
    token: BearerToken,
    limits: Limits,
    // Both semaphores hand out owned permits that move into the blocking task, so a
    // client that hangs up does not free a slot while its plugin still runs.
    pub(crate) invoke_slots: Arc<Semaphore>,
    compile_slot: Arc<Semaphore>,
    pub(crate) outcomes: OutcomeStore,
    /// Taken by mutating invocations; `None` when this worker cannot change its node.
    pub(crate) node_lock: Option<NodeLock>,
    /// The node's revert records; `None`: this worker keeps none and cannot revert.
    pub(crate) records: Option<RecordStore>,
    /// When the last authenticated request ended, and how many are in flight.
    activity: Arc<Activity>,
}

/// Authenticated requests in flight and the time the last one ended, for the idle exit
/// (health probes and refused requests do not count: they keep no worker alive).
#[derive(Debug)]
struct Activity {
    since: Instant,
    last_ms: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms
            .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Counts an authenticated request as activity while it runs and when it ends.
async fn track_activity(
    State(activity): State<Arc<Activity>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use std::sync::atomic::Ordering;
    activity.in_flight.fetch_add(1, Ordering::SeqCst);
    activity.touch();
    let resp = next.run(req).await;
    activity.touch();
    activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    resp
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a runtime, with the token clients must present and the limits.
    pub fn new(runtime: Arc<dyn PluginRuntime>, token: BearerToken, limits: Limits) -> Self {
        let slots = limits.max_concurrent_invocations;
        Self {
            inner: Arc::new(Inner {
                runtime,
                token,
                invoke_slots: Arc::new(Semaphore::new(slots)),
                compile_slot: Arc::new(Semaphore::new(MAX_CONCURRENT_COMPILES)),
                limits,
                outcomes: OutcomeStore::default(),
                node_lock: None,
                records: None,
                activity: Arc::new(Activity::default()),
            }),
        }
    }

    /// The same state, with mutating invocations (those that are no dry run) holding
    /// `lock` while they run. Give it to a worker that may change its node.
    #[must_use]
    pub fn with_node_lock(self, lock: NodeLock) -> Self {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.node_lock = Some(lock);
                inner
            }
            Err(shared) => Inner {
                runtime: Arc::clone(&shared.runtime),
                token: shared.token.clone(),
                limits: shared.limits.clone(),
                invoke_slots: Arc::clone(&shared.invoke_slots),
                compile_slot: Arc::clone(&shared.compile_slot),
                outcomes: shared.outcomes.clone(),
                node_lock: Some(lock),
                records: shared.records.clone(),
                activity: Arc::clone(&shared.activity),
            },
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The same state, with the node's revert records in `store`: mutating calls that
    /// name their task store what they changed there, and `POST /v1/revert` restores it.
    #[must_use]
    pub fn with_records(self, store: RecordStore) -> Self {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.records = Some(store);
                inner
            }
            Err(shared) => Inner {
                runtime: Arc::clone(&shared.runtime),
                token: shared.token.clone(),
                limits: shared.limits.clone(),
                invoke_slots: Arc::clone(&shared.invoke_slots),
                compile_slot: Arc::clone(&shared.compile_slot),
                outcomes: shared.outcomes.clone(),
                node_lock: shared.node_lock.clone(),
                records: Some(store),
                activity: Arc::clone(&shared.activity),
            },
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// How long the worker has been idle: no authenticated request in flight, no plugin
    /// running or compiling (a client may have hung up on one), for this long since the
    /// last request ended. `None` while busy.
    pub fn idle_for(&self) -> Option<Duration> {
        use std::sync::atomic::Ordering;
        let a = &self.inner.activity;
        let busy = a.in_flight.load(Ordering::SeqCst) > 0
            || self.inner.invoke_slots.available_permits()
                < self.inner.limits.max_concurrent_invocations
            || self.inner.compile_slot.available_permits() < MAX_CONCURRENT_COMPILES;
        if busy {
            return None;
        }
        let last = Duration::from_millis(a.last_ms.load(Ordering::Relaxed));
        Some(a.since.elapsed().saturating_sub(last))
    }

    pub(crate) fn token(&self) -> &BearerToken {
        &self.inner.token
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub(crate) fn runtime(&self) -> Arc<dyn PluginRuntime> {
        Arc::clone(&self.inner.runtime)
    }
}

/// The worker's routes; see [`hostplug_api::protocol`] for the protocol. No socket, no TLS: tests
/// drive it with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState) -> Router {
    let limits = state.limits().clone();
    let protected = Router::new()
        .route(
            "/v1/plugins/{sha256}",
            put(upload_plugin)
                .head(has_plugin)
                .layer(DefaultBodyLimit::max(limits.max_module_bytes)),
        )
        .route(
            "/v1/plugins/{sha256}/precompiled",
            put(upload_precompiled).layer(DefaultBodyLimit::max(
                limits
                    .max_module_bytes
                    .saturating_mul(PRECOMPILED_SIZE_FACTOR),
            )),
        )
        .route("/v1/invoke", post(invoke))
        .route("/v1/invocations/{id}", get(invocation_status))
        .route("/v1/revert", post(crate::revert::revert))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Inside the token check: only authenticated requests keep the worker alive.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.inner.activity),
            track_activity,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.token().clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .layer(DefaultBodyLimit::max(limits.max_request_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorKind::NoRoute, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::MethodNotAllowed,
        "this route does not answer that method",
    )
}

fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(
            "a digest is 64 hex digits of SHA-256, optionally prefixed with `sha256:`",
        )
    })
}

/// Whether the runtime holds `digest`, asked off the async threads (it may read the
/// on-disk cache).
async fn holds(state: &AppState, digest: Digest) -> Result<bool, ApiError> {
    let runtime = state.runtime();
    run_blocking("looking up a plugin", move || runtime.holds(&digest)).await
}

/// `HEAD /v1/plugins/{sha256}`: 200 when held, 404 when not.
async fn has_plugin(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
) -> Result<StatusCode, ApiError> {
    let digest = parse_digest(&sha256)?;
    Ok(if holds(&state, digest).await? {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    })
}

/// `PUT /v1/plugins/{sha256}`: check the digest, compile once, keep the module.
async fn upload_plugin(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let digest = parse_digest(&sha256)?;
    let body = body
        .map_err(|r| body_rejection(r.status(), r.body_text(), state.limits().max_module_bytes))?;
    let size = body.len() as u64;

    let hashed = {
        let body = body.clone();
        run_blocking("hashing a module", move || Digest::of(&body)).await?
    };
    if hashed != digest {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::DigestMismatch,
            format!("the uploaded module is {hashed}, not {digest} as the path says"),
        ));
    }

    let answer = |status: StatusCode, compiled: bool| {
        let body = UploadResponse {
            digest: digest.to_string(),
            size,
            compiled,
        };
        (status, Json(body)).into_response()
    };
    if holds(&state, digest).await? {
        return Ok(answer(StatusCode::OK, false));
    }

    let permit = Arc::clone(&state.inner.compile_slot)
        .acquire_owned()
        .await
        .map_err(|e| ApiError::internal("waiting to compile", &e))?;
    let runtime = state.runtime();
    let loaded = run_blocking("compiling a module", move || {
        let _permit = permit;
        runtime.load(&digest, &body)
    })
    .await?
    .map_err(runtime_error)?;
    tracing::info!(%digest, size, ?loaded, "plugin module loaded");
    Ok(match loaded {
        Loaded::Compiled => answer(StatusCode::CREATED, true),
        Loaded::AlreadyHeld => answer(StatusCode::OK, false),
    })
}

/// `GET /v1/invocations/{id}`: whether a named invocation runs or ran here.
async fn invocation_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<InvocationStatus>, ApiError> {
    match state.inner.outcomes.state(&id) {
        Some(s) => Ok(Json(InvocationStatus {
            invocation_id: id,
            state: s,
        })),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorKind::UnknownInvocation,
            "this worker has not run that invocation, or has forgotten it",
        )),
    }
}

/// The answer for an outcome, stored or fresh.
pub(crate) fn answer(outcome: &Outcome) -> Result<Json<InvokeOutcome>, ApiError> {
    match outcome {
        Ok(response) => Ok(Json(response.clone())),
        Err(e) => Err(runtime_error(e.clone())),
    }
}

/// How much larger than the module limit a precompiled artifact may be: 8×. Native
/// code and its metadata are a few times the size of the Wasm they came from.
const PRECOMPILED_SIZE_FACTOR: usize = 8;

/// A header of the precompiled route, parsed; missing or malformed is 400 naming it.
fn precompiled_header<T: std::str::FromStr>(
    headers: &axum::http::HeaderMap,
    name: &str,
    what: &str,
) -> Result<T, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::bad_request(format!("the {name} header must carry {what}")))
}

/// `PUT /v1/plugins/{sha256}/precompiled`: load the operator's precompiled artifact of
/// module `sha256`, if the operator signed it (header
/// [`ARTIFACT_SIGNATURE_HEADER`](hostplug_api::protocol::ARTIFACT_SIGNATURE_HEADER))
/// with the key in this worker's settings. An artifact is native code: the token lets a
/// client upload Wasm, which the sandbox confines; only the operator's signature lets it
/// ship code. So only this route with a verified signature and the worker's own compiler
/// (after checking the module's digest) ever produce code the worker runs, and a refused
/// artifact leaves nothing behind: `HEAD` stays 404 and the module is still wanted.
async fn upload_precompiled(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    headers: axum::http::HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    use hostplug_api::protocol::{ARTIFACT_SIGNATURE_HEADER, ArtifactSignature, ENGINE_HEADER};
    let digest = parse_digest(&sha256)?;
    let fingerprint: String =
        precompiled_header(&headers, ENGINE_HEADER, "the engine fingerprint")?;
    let signature: ArtifactSignature = precompiled_header(
        &headers,
        ARTIFACT_SIGNATURE_HEADER,
        "the operator's signature of the artifact (128 hex digits)",
    )?;
    let limit = state
        .limits()
        .max_module_bytes
        .saturating_mul(PRECOMPILED_SIZE_FACTOR);
    let body = body.map_err(|r| body_rejection(r.status(), r.body_text(), limit))?;
    let size = body.len() as u64;
    if holds(&state, digest).await? {
        let body = UploadResponse {
            digest: digest.to_string(),
            size,
            compiled: false,
        };
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let permit = Arc::clone(&state.inner.compile_slot)
        .acquire_owned()
        .await
        .map_err(|e| ApiError::internal("waiting to load", &e))?;
    let runtime = state.runtime();
    let loaded = run_blocking("loading a precompiled module", move || {
        let _permit = permit;
        runtime.load_precompiled(&digest, &fingerprint, &signature, &body)
    })
    .await?
    .map_err(|e| {
        tracing::warn!(%digest, size, error = %e.message, "precompiled artifact refused");
        runtime_error(e)
    })?;
    tracing::info!(%digest, size, ?loaded, "precompiled plugin loaded");
    let status = match loaded {
        Loaded::Compiled => StatusCode::CREATED,
        Loaded::AlreadyHeld => StatusCode::OK,
    };
    let body = UploadResponse {
        digest: digest.to_string(),
        size,
        compiled: loaded == Loaded::Compiled,
    };
    Ok((status, Json(body)).into_response())
}

/// `POST /v1/invoke`: run one operation of a held module (a named one at most once).
async fn invoke(
    State(state): State<AppState>,
    request: std::result::Result<Json<InvokeRequest>, JsonRejection>,
) -> Result<Json<InvokeOutcome>, ApiError> {
    let started = Instant::now();
    let Json(request) = request
        .map_err(|r| body_rejection(r.status(), r.body_text(), state.limits().max_request_bytes))?;
    let digest = parse_digest(&request.digest)?;
    if request.timeout_ms == Some(0) {
        return Err(ApiError::bad_request("timeoutMs must be above 0"));
    }
    if request.method.is_empty() {
        return Err(ApiError::bad_request("method must not be empty"));
    }
    if let Some(id) = &request.invocation_id
        && (id.is_empty() || id.len() > MAX_INVOCATION_ID_BYTES)
    {
        return Err(ApiError::bad_request(format!(
            "invocationId must be 1 to {MAX_INVOCATION_ID_BYTES} bytes"
        )));
    }
    let params = serde_json::to_string(&request.params)
        .map_err(|e| ApiError::internal("encoding parameters", &e))?;
    if !holds(&state, digest).await? {
        return Err(unknown_plugin(&digest));
    }
    let follow_ups = follow_ups(&state, &request.on_change).await?;

    let invocation_id = request.invocation_id.clone().unwrap_or_default();
    let ticket = match &request.invocation_id {
        None => None,
        Some(id) => match state.inner.outcomes.begin(id) {
            Begin::Run(ticket) => Some(ticket),
            Begin::Done(outcome) => {
                tracing::info!(%digest, invocation_id = %id, "repeated invocation: answering its stored outcome");
                return answer(&outcome);
            }
            Begin::Wait(rx) => {
                tracing::info!(%digest, invocation_id = %id, "repeated invocation: waiting for the run in flight");
                return match outcomes::wait(rx).await {
                    Some(outcome) => answer(&outcome),
                    // The first request ended before its plugin ran: nothing ran, so the
                    // client may send it again.
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
        Err(_elapsed) => {
            tracing::warn!(%digest, waited_ms = wait.as_millis() as u64, "no invocation slot free");
            return Err(ApiError::busy());
        }
    };
    let Some(left) = timeout
        .checked_sub(started.elapsed())
        .filter(|d| !d.is_zero())
    else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Timeout,
            "the deadline passed while waiting for a free invocation slot",
        ));
    };

    let lock = state.inner.node_lock.clone().filter(|_| !request.dry_run);
    let mut call = Call {
        method: request.method,
        params,
        dry_run: request.dry_run,
        timeout: left,
        // Only for this call; never logged (the log line below names the method only).
        registry_auth: request.registry_auth.map(Arc::new),
        systemd: request.systemd,
        access: request.access,
        etc_scope: request.etc_scope,
    };
    let runtime = state.runtime();
    let records = state
        .inner
        .records
        .clone()
        .filter(|_| !request.dry_run)
        .zip(request.task.clone());
    // Everything from here runs in the blocking task, the ticket included: a client that
    // hangs up does not stop the plugin, and its outcome is still recorded.
    let result = run_blocking("running a plugin", move || {
        let _permit = permit;
        let guard = match &lock {
            Some(lock) => Some(lock.acquire(call.timeout)?),
            None => None,
        };
        if let Some(g) = &guard {
            call.timeout = call.timeout.saturating_sub(g.waited).max(Duration::from_millis(1));
        }
        tracing::info!(%digest, method = %call.method, dry_run = call.dry_run, invocation_id = %invocation_id, node_lock = guard.is_some(), timeout_ms = call.timeout.as_millis() as u64, follow_ups = follow_ups.len(), "invoking");
        let began = Instant::now();
        let mut outcome = match &records {
            Some((store, task)) => crate::revert::invoke_and_store(&*runtime, &digest, &call, store, task),
            None => runtime.invoke(&digest, &call),
        };
        if let Ok(main) = &mut outcome
            && main.changed
        {
            main.on_change = run_follow_ups(&*runtime, follow_ups, &call, began);
        }
        drop(guard);
        Ok::<_, LockError>(match ticket {
            Some(ticket) => ticket.finish(outcome),
            None => Arc::new(outcome),
        })
    })
    .await?;
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(LockError::Timeout { waited_ms }) => {
            tracing::warn!(%digest, waited_ms, "node lock not free before the deadline");
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::Timeout,
                format!(
                    "other changes on this node held the node lock for {waited_ms} ms, until the deadline; not run"
                ),
            ));
        }
        Err(e @ LockError::Unsafe { .. }) => {
            // The node's setup, not an internal fault: the message says what to fix.
            tracing::error!(%digest, error = %e, "node lock refused");
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::Denied,
                format!("{e}; not run"),
            ));
        }
        Err(e) => return Err(ApiError::internal("taking the node lock", &e)),
    };
    match outcome.as_ref() {
        Ok(response) => {
            tracing::info!(%digest, changed = response.changed, duration_ms = response.duration_ms, "invocation succeeded");
        }
        Err(e) => {
            tracing::info!(%digest, kind = %e.kind, "invocation failed");
        }
    }
    answer(&outcome)
}

/// The follow-up calls of a request, checked before anything runs: at most
/// [`MAX_FOLLOW_UPS`], each a well-formed digest of a module this worker holds and a
/// method; a wrong one is a 400 (404 for a module not held) naming `onChange[i]`.
async fn follow_ups(
    state: &AppState,
    requested: &[FollowUpRequest],
) -> Result<Vec<(Digest, FollowUpRequest, String)>, ApiError> {
    if requested.len() > MAX_FOLLOW_UPS {
        return Err(ApiError::bad_request(format!(
            "onChange has {} follow-up calls; at most {MAX_FOLLOW_UPS}",
            requested.len()
        )));
    }
    let mut checked = Vec::with_capacity(requested.len());
    for (i, f) in requested.iter().enumerate() {
        let digest = parse_digest(&f.digest)
            .map_err(|e| ApiError::bad_request(format!("onChange[{i}].digest: {}", e.message())))?;
        if f.method.is_empty() {
            return Err(ApiError::bad_request(format!(
                "onChange[{i}].method must not be empty"
            )));
        }
        if !holds(state, digest).await? {
            return Err(unknown_plugin(&digest));
        }
        let params = serde_json::to_string(&f.params)
            .map_err(|e| ApiError::internal("encoding parameters", &e))?;
        checked.push((digest, f.clone(), params));
    }
    Ok(checked)
}

/// Runs the follow-up calls of a main `call` that changed the node, in order, within
/// what is left of its deadline (counted from `began`); stops at the first that fails.
/// Runs inside the main call's hold of the node lock.
fn run_follow_ups(
    runtime: &dyn PluginRuntime,
    follow_ups: Vec<(Digest, FollowUpRequest, String)>,
    call: &Call,
    began: Instant,
) -> Vec<FollowUpOutcome> {
    let mut results = Vec::with_capacity(follow_ups.len());
    for (digest, f, params) in follow_ups {
        let left = call.timeout.saturating_sub(began.elapsed());
        let result = if left.is_zero() {
            Err(RuntimeError::new(
                ErrorKind::Timeout,
                "the deadline passed before this follow-up call could start; not run",
            ))
        } else {
            tracing::info!(%digest, method = %f.method, dry_run = call.dry_run, "invoking a follow-up call");
            runtime.invoke(
                &digest,
                &Call {
                    method: f.method.clone(),
                    params,
                    dry_run: call.dry_run,
                    timeout: left,
                    registry_auth: None,
                    // Its own plugin's systemd declaration, never the main call's.
                    systemd: f.systemd.clone(),
                    access: f.access,
                    // Its own plugin's and policies' /etc paths.
                    etc_scope: f.etc_scope.clone(),
                },
            )
        };
        let failed = result.is_err();
        let (outcome, error) = match result {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        results.push(FollowUpOutcome {
            method: f.method,
            outcome,
            error,
        });
        if failed {
            break;
        }
    }
    results
}

fn unknown_plugin(digest: &Digest) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorKind::UnknownPlugin,
        format!(
            "this worker does not hold plugin {digest}; upload it first with PUT /v1/plugins/{}",
            digest.hex()
        ),
    )
}

/// Maps a body extractor's rejection: 413 becomes `payload-too-large`, everything else
/// `bad-request` with the extractor's (internals-free) explanation.
pub(crate) fn body_rejection(status: StatusCode, text: String, limit: usize) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(limit)
    } else {
        ApiError::bad_request(text)
    }
}

/// The answer for a runtime failure: its kind decides the status (see [`hostplug_api::protocol`]).
fn runtime_error(e: RuntimeError) -> ApiError {
    let status = match e.kind {
        ErrorKind::UnknownPlugin => StatusCode::NOT_FOUND,
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::DigestMismatch | ErrorKind::BadModule => StatusCode::UNPROCESSABLE_ENTITY,
        kind if kind.is_invocation_outcome() => StatusCode::UNPROCESSABLE_ENTITY,
        _ => return ApiError::internal("running the plugin host", &e),
    };
    ApiError::new(status, e.kind, e.message).with_logs(e.logs)
}

/// Runs blocking work off the async threads, inside the caller's tracing span.
pub(crate) async fn run_blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|e| ApiError::internal(what, &e))
}

/// The HTTPS listener: bound, not yet serving. Splitting bind from serve lets tests use
/// port 0 and learn the address.
pub struct Server {
    listener: TcpListener,
    tls: TlsAcceptor,
    app: Router,
    /// Exit once the state has been idle this long ([`Server::exit_when_idle`]).
    idle_exit: Option<(AppState, Duration)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `addr` and prepares to serve `app` over TLS.
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        app: Router,
    ) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        Ok(Self {
            listener,
            tls: TlsAcceptor::from(tls),
            app,
            idle_exit: None,
        })
    }

    /// Makes [`Server::serve`] end by itself once `state` (the app's) has been idle for
    /// `after` (see [`AppState::idle_for`]); `after` zero: never.
    #[must_use]
    pub fn exit_when_idle(mut self, state: AppState, after: Duration) -> Self {
        self.idle_exit = (!after.is_zero()).then_some((state, after));
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|source| Error::Config(format!("no local address: {source}")))
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish for up to
    /// [`SHUTDOWN_GRACE`].
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send) -> Result<()> {
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(H2_MAX_HEADER_LIST_BYTES);
        let builder = Arc::new(builder);
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tracing::info!(addr = ?self.listener.local_addr().ok(), "worker listening (https)");
        let idle_check = self
            .idle_exit
            .as_ref()
            .map_or(MAX_IDLE_CHECK_INTERVAL, |(_, after)| {
                (*after / 4).clamp(Duration::from_millis(50), MAX_IDLE_CHECK_INTERVAL)
            });
        let mut idle_ticks = tokio::time::interval(idle_check);
        idle_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = idle_ticks.tick(), if self.idle_exit.is_some() => {
                    if let Some((state, after)) = &self.idle_exit
                        && state.idle_for().is_some_and(|idle| idle >= *after)
                    {
                        tracing::info!(
                            idle_seconds = after.as_secs(),
                            "no request for the idle time; exiting (the operator did not remove this worker)"
                        );
                        break;
                    }
                    continue;
                }
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Typically EMFILE; back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                tracing::warn!(%peer, max = MAX_CONNECTIONS, "too many connections; closing this one");
                drop(tcp);
                continue;
            };
            let tls = self.tls.clone();
            let builder = Arc::clone(&builder);
            let service = TowerToHyperService::new(self.app.clone());
            let watcher = graceful.watcher();
            let span = tracing::debug_span!("connection", %peer);
            tokio::spawn(
                async move {
                    let _permit = permit;
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake timed out");
                                return;
                            }
                        };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                .instrument(span),
            );
        }

        drop(self.listener);
        tracing::info!("shutting down; waiting for requests in flight");
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still running after the grace period; stopping anyway");
        }
        Ok(())
    }
}
