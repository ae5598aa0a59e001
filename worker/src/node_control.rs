//! The operator's node routes: `GET /v1/node` (the node's boot ID) and
//! `POST /v1/node/reboot` (reboot the node through its systemd, for the disruption
//! cycle of a HostTask with `spec.disruption`).
//!
//! The reboot is the operator's action, never a plugin's: it is a route of the worker,
//! authenticated with the same bearer token as every other, and it calls
//! `hostplug_host::systemd::power::reboot` — which no WIT import reaches. Only a worker
//! that has the system bus socket can do it (the operator asks the pooled worker of the
//! `systemd: manage` profile and nothing else). The reboot takes the node lock first, so
//! no mutating invocation of any worker on the node is cut in half by it.
//!
//! A repeat of one request id within one boot is answered without a second reboot: the
//! accepted id and the boot ID are written next to the node lock (in the node's `/run`,
//! which a reboot empties) before systemd is asked. This module must never reboot for a
//! request that fails authentication or for an id already accepted in this boot.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use hostplug_api::ErrorKind;
use hostplug_api::disruption::{MAX_REBOOT_FIELD_BYTES, NodeInfo, RebootAnswer, RebootRequest};

use crate::auth::{self, BearerToken};
use crate::error::ApiError;
use crate::node_lock::NodeLock;

/// The kernel's boot ID of this node (a container's /proc shows the node's kernel).
pub const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// The file beside the node lock that holds the reboot request accepted in this boot.
pub const REBOOT_RECORD_FILE: &str = "reboot-request";

/// How long a reboot waits for the node lock: 120 s, longer than a typical mutating
/// invocation (the default plugin deadline is 30 s) so one in flight finishes first.
pub const REBOOT_LOCK_WAIT: Duration = Duration::from_secs(120);

/// Asks the node's systemd to reboot over a bus socket; a seam for tests (the real one
/// is [`systemd_reboot`]).
pub type Reboot = Arc<dyn Fn(PathBuf) -> RebootFuture + Send + Sync>;

/// What a [`Reboot`] returns.
pub type RebootFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// The real reboot: systemd's `Reboot` over the socket.
pub fn systemd_reboot() -> Reboot {
    Arc::new(|socket: PathBuf| {
        Box::pin(async move {
            hostplug_host::systemd::power::reboot(&socket)
                .await
                .map_err(|e| e.to_string())
        })
    })
}

/// What the node routes need.
#[derive(Clone)]
pub struct NodeControl {
    /// The boot ID file ([`BOOT_ID_FILE`]; tests give another).
    pub boot_id_file: PathBuf,
    /// The system bus socket; `None`: this worker cannot reboot its node.
    pub bus_socket: Option<PathBuf>,
    /// The node lock; `None`: this worker cannot reboot its node.
    pub node_lock: Option<NodeLock>,
    /// The reboot itself.
    pub reboot: Reboot,
}

impl std::fmt::Debug for NodeControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeControl")
            .field("boot_id_file", &self.boot_id_file)
            .field("bus_socket", &self.bus_socket)
            .field("node_lock", &self.node_lock)
            .finish_non_exhaustive()
    }
}

/// The node routes, behind the bearer token.
pub fn routes(control: NodeControl, token: BearerToken) -> Router {
    Router::new()
        .route("/v1/node", get(node_info))
        .route("/v1/node/reboot", post(reboot))
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ))
        .with_state(Arc::new(control))
}

fn read_boot_id(file: &Path) -> Result<String, ApiError> {
    std::fs::read_to_string(file)
        .map(|s| s.trim().to_owned())
        .map_err(|e| ApiError::internal("reading the boot ID", &e))
}

async fn node_info(State(control): State<Arc<NodeControl>>) -> Result<Json<NodeInfo>, ApiError> {
    Ok(Json(NodeInfo {
        boot_id: read_boot_id(&control.boot_id_file)?,
    }))
}

async fn reboot(
    State(control): State<Arc<NodeControl>>,
    body: Result<Json<RebootRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<RebootAnswer>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if req.id.is_empty() || req.id.len() > MAX_REBOOT_FIELD_BYTES {
        return Err(ApiError::bad_request(format!(
            "id: 1 to {MAX_REBOOT_FIELD_BYTES} bytes"
        )));
    }
    if req.reason.len() > MAX_REBOOT_FIELD_BYTES || req.id.contains('\n') {
        return Err(ApiError::bad_request(format!(
            "reason: at most {MAX_REBOOT_FIELD_BYTES} bytes; id: one line"
        )));
    }
    let (Some(socket), Some(lock)) = (control.bus_socket.clone(), control.node_lock.clone()) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::Denied,
            "this worker cannot reboot its node: it has no system bus socket or no node lock \
             (only the operator's systemd-manage worker can)",
        ));
    };
    let boot_id = read_boot_id(&control.boot_id_file)?;
    let record = lock
        .path()
        .parent()
        .unwrap_or(Path::new("/"))
        .join(REBOOT_RECORD_FILE);
    let line = format!("{boot_id} {}", req.id);
    if std::fs::read_to_string(&record).is_ok_and(|s| s.trim() == line) {
        tracing::info!(id = %req.id, %boot_id, "reboot request repeated in the same boot; not asked again");
        return Ok((
            StatusCode::ACCEPTED,
            Json(RebootAnswer {
                boot_id,
                repeated: true,
            }),
        ));
    }
    // The node lock: no mutating invocation on this node is cut in half. It is held
    // until systemd took the request (the node then goes down with it held).
    let guard = tokio::task::spawn_blocking(move || lock.acquire(REBOOT_LOCK_WAIT))
        .await
        .map_err(|e| ApiError::internal("waiting for the node lock", &e))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Busy,
                e.to_string(),
            )
        })?;
    std::fs::write(&record, format!("{line}\n"))
        .map_err(|e| ApiError::internal("recording the reboot request", &e))?;
    tracing::warn!(id = %req.id, reason = %req.reason, %boot_id, "rebooting the node for the operator");
    let result = (control.reboot)(socket).await;
    drop(guard);
    match result {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(RebootAnswer {
                boot_id,
                repeated: false,
            }),
        )),
        Err(e) => {
            // Not accepted: a later request may try again.
            let _ = std::fs::remove_file(&record);
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Failed,
                format!("systemd refused the reboot: {e}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    fn control(dir: &Path, with_bus: bool, count: Arc<AtomicUsize>) -> NodeControl {
        std::fs::write(dir.join("boot_id"), "b-1\n").expect("test setup");
        NodeControl {
            boot_id_file: dir.join("boot_id"),
            bus_socket: with_bus.then(|| dir.join("bus")),
            node_lock: Some(NodeLock::new(dir.join("mutate.lock"))),
            reboot: Arc::new(move |_| {
                let count = Arc::clone(&count);
                Box::pin(async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
            }),
        }
    }

    async fn send(
        app: &Router,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> (u16, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .expect("test setup");
        let resp = app.clone().oneshot(req).await.expect("test setup");
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("test setup");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn one_reboot_per_request_id_and_boot_and_only_with_the_token_and_the_bus() {
        let dir = tempfile::tempdir().expect("test setup");
        let count = Arc::new(AtomicUsize::new(0));
        let secret = "s".repeat(32);
        let token = BearerToken::new(&secret).expect("test setup");
        let app = routes(control(dir.path(), true, Arc::clone(&count)), token.clone());
        let req = r#"{"id":"uid/1","reason":"kernel"}"#;

        let (s, _) = send(&app, "POST", "/v1/node/reboot", "wrong", req).await;
        assert_eq!(s, 401);
        assert_eq!(count.load(Ordering::SeqCst), 0);

        let (s, body) = send(&app, "GET", "/v1/node", &secret, "").await;
        assert_eq!((s, body.as_str()), (200, r#"{"bootId":"b-1"}"#));

        let (s, body) = send(&app, "POST", "/v1/node/reboot", &secret, req).await;
        assert_eq!(s, 202, "{body}");
        assert!(body.contains(r#""repeated":false"#), "{body}");
        let (s, body) = send(&app, "POST", "/v1/node/reboot", &secret, req).await;
        assert_eq!(s, 202);
        assert!(body.contains(r#""repeated":true"#), "{body}");
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "one reboot for one id in one boot"
        );

        // A new boot: the same id reboots again only if asked again in it (the operator
        // does not ask: it sees the new boot ID).
        std::fs::write(dir.path().join("boot_id"), "b-2\n").expect("test setup");
        let (s, _) = send(&app, "POST", "/v1/node/reboot", &secret, req).await;
        assert_eq!(s, 202);
        assert_eq!(count.load(Ordering::SeqCst), 2);

        let (s, _) = send(
            &app,
            "POST",
            "/v1/node/reboot",
            &secret,
            r#"{"id":"","reason":""}"#,
        )
        .await;
        assert_eq!(s, 400);

        let no_bus = routes(control(dir.path(), false, Arc::clone(&count)), token);
        let (s, body) = send(
            &no_bus,
            "POST",
            "/v1/node/reboot",
            &secret,
            r#"{"id":"x","reason":""}"#,
        )
        .await;
        assert_eq!(s, 403, "{body}");
        assert!(body.contains("system bus"), "{body}");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }
}
