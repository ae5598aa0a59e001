//! The HTTP routes ([`app`]) and the HTTPS listener ([`Server`]).
//!
//! Handlers never block: hashing, compiling and running plugins go to
//! `spawn_blocking`, with the request's tracing span carried over. A semaphore bounds the
//! invocations running at once; a request that cannot get a slot within the queue wait
//! (or its own deadline, if shorter) is answered 503 `busy` instead of piling up.
//! Compiles are bounded by a second semaphore ([`MAX_CONCURRENT_COMPILES`]), which also
//! makes "compile each digest once" hold under concurrent uploads of the same module.

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
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_http::trace::TraceLayer;
use tracing::Instrument as _;

use crate::auth::{self, BearerToken};
use crate::config::{
    ACCEPT_ERROR_BACKOFF, HEADER_READ_TIMEOUT, Limits, MAX_CONCURRENT_COMPILES, SHUTDOWN_GRACE,
    TLS_HANDSHAKE_TIMEOUT,
};
use crate::error::{ApiError, Error, Result};
use crate::runtime::{Call, Digest, Loaded, PluginRuntime, RuntimeError};
use hostplug_api::protocol::{ErrorKind, Health, InvokeOutcome, InvokeRequest, UploadResponse};

/// Everything the routes share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<dyn PluginRuntime>,
    token: BearerToken,
    limits: Limits,
    // Both semaphores hand out owned permits that move into the blocking task, so a
    // client that hangs up does not free a slot while its plugin still runs.
    invoke_slots: Arc<Semaphore>,
    compile_slot: Arc<Semaphore>,
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
            }),
        }
    }

    pub(crate) fn token(&self) -> &BearerToken {
        &self.inner.token
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn runtime(&self) -> Arc<dyn PluginRuntime> {
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
        .route("/v1/invoke", post(invoke))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
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

/// `POST /v1/invoke`: run one operation of a held module.
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
    let params = serde_json::to_string(&request.params)
        .map_err(|e| ApiError::internal("encoding parameters", &e))?;
    if !holds(&state, digest).await? {
        return Err(unknown_plugin(&digest));
    }

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

    let call = Call {
        method: request.method,
        params,
        dry_run: request.dry_run,
        timeout: left,
    };
    tracing::info!(%digest, method = %call.method, dry_run = call.dry_run, timeout_ms = left.as_millis() as u64, "invoking");
    let runtime = state.runtime();
    let result = run_blocking("running a plugin", move || {
        let _permit = permit;
        runtime.invoke(&digest, &call)
    })
    .await?;
    match result {
        Ok(response) => {
            tracing::info!(%digest, changed = response.changed, duration_ms = response.duration_ms, "invocation succeeded");
            Ok(Json(response))
        }
        Err(e) => {
            tracing::info!(%digest, kind = %e.kind, "invocation failed");
            Err(runtime_error(e))
        }
    }
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
fn body_rejection(status: StatusCode, text: String, limit: usize) -> ApiError {
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
async fn run_blocking<T: Send + 'static>(
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
        })
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
        let builder = Arc::new(builder);
        tracing::info!(addr = ?self.listener.local_addr().ok(), "worker listening (https)");

        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
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
            let tls = self.tls.clone();
            let builder = Arc::clone(&builder);
            let service = TowerToHyperService::new(self.app.clone());
            let watcher = graceful.watcher();
            let span = tracing::debug_span!("connection", %peer);
            tokio::spawn(
                async move {
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
