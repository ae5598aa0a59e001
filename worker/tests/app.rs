//! The routes without a socket (`oneshot`), over a small in-memory runtime, so auth,
//! limits, status codes and the busy path are checked without Wasm. The real host is
//! exercised over HTTPS in `https.rs`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hostplug_api::protocol::{
    ErrorBody, ErrorKind, InvocationState, InvocationStatus, InvokeOutcome, UploadResponse,
};
use hostplug_worker::node_lock::NodeLock;
use hostplug_worker::runtime::{Call, Digest, Loaded, PluginRuntime, RuntimeError};
use hostplug_worker::{AppState, BearerToken, Limits, app};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

const TOKEN: &str = "test-token-0123456789";

/// Holds digests in a set; "invoking" method `sleep` sleeps `params.ms`, method
/// `fail` fails with `invalid-params`, `boom` fails internally, anything else echoes.
#[derive(Default)]
struct FakeRuntime {
    held: Mutex<HashSet<Digest>>,
    loads: Mutex<usize>,
    /// Invocations run, and the most that ever ran at once.
    runs: AtomicUsize,
    inside: AtomicUsize,
    most_at_once: AtomicUsize,
}

impl PluginRuntime for FakeRuntime {
    fn holds(&self, digest: &Digest) -> bool {
        self.held.lock().is_ok_and(|h| h.contains(digest))
    }

    fn load(&self, digest: &Digest, bytes: &[u8]) -> Result<Loaded, RuntimeError> {
        if bytes.starts_with(b"bad") {
            return Err(RuntimeError::new(ErrorKind::BadModule, "not a component"));
        }
        if let Ok(mut n) = self.loads.lock() {
            *n += 1;
        }
        let mut held = self
            .held
            .lock()
            .map_err(|_| RuntimeError::new(ErrorKind::Internal, "poisoned"))?;
        Ok(if held.insert(*digest) {
            Loaded::Compiled
        } else {
            Loaded::AlreadyHeld
        })
    }

    fn invoke(&self, _digest: &Digest, call: &Call) -> Result<InvokeOutcome, RuntimeError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        let result = self.run(call);
        self.inside.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

impl FakeRuntime {
    fn run(&self, call: &Call) -> Result<InvokeOutcome, RuntimeError> {
        let params: serde_json::Value = serde_json::from_str(&call.params)
            .map_err(|e| RuntimeError::new(ErrorKind::InvalidParams, e.to_string()))?;
        match call.method.as_str() {
            "sleep" => {
                let ms = params["ms"].as_u64().unwrap_or(0);
                std::thread::sleep(Duration::from_millis(ms));
            }
            "fail" => {
                return Err(RuntimeError::new(
                    ErrorKind::InvalidParams,
                    "field `path` is required",
                ));
            }
            "boom" => {
                return Err(RuntimeError::new(
                    ErrorKind::Internal,
                    "secret /var/lib detail",
                ));
            }
            _ => {}
        }
        Ok(InvokeOutcome {
            changed: call.dry_run,
            output: params,
            diff: None,
            logs: Vec::new(),
            duration_ms: 0,
            on_change: Vec::new(),
            revert: None,
            reboot_required: None,
        })
    }
}

fn limits() -> Limits {
    Limits {
        max_module_bytes: 64 * 1024,
        max_request_bytes: 4 * 1024,
        max_concurrent_invocations: 2,
        queue_wait_ms: 200,
        ..Limits::default()
    }
}

fn state(runtime: Arc<FakeRuntime>) -> anyhow::Result<AppState> {
    let token = BearerToken::new(TOKEN).map_err(|len| anyhow::anyhow!("token too short: {len}"))?;
    Ok(AppState::new(runtime, token, limits()))
}

fn request(
    method: &str,
    uri: &str,
    body: impl Into<Body>,
    token: Option<&str>,
) -> anyhow::Result<Request<Body>> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if method == "POST" {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    Ok(builder.body(body.into())?)
}

async fn send(state: &AppState, req: Request<Body>) -> anyhow::Result<(StatusCode, Vec<u8>)> {
    let response = app(state.clone()).oneshot(req).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, body))
}

fn error_of(body: &[u8]) -> anyhow::Result<ErrorBody> {
    Ok(serde_json::from_slice(body)?)
}

async fn upload(state: &AppState, module: &[u8]) -> anyhow::Result<(StatusCode, Vec<u8>)> {
    let digest = Digest::of(module);
    send(
        state,
        request(
            "PUT",
            &format!("/v1/plugins/{}", digest.hex()),
            module.to_vec(),
            Some(TOKEN),
        )?,
    )
    .await
}

fn invoke_body(module: &[u8], method: &str, params: serde_json::Value) -> String {
    serde_json::json!({"digest": Digest::of(module).hex(), "method": method, "params": params})
        .to_string()
}

#[tokio::test]
async fn healthz_needs_no_token() -> anyhow::Result<()> {
    let state = state(Arc::default())?;
    let (status, body) = send(&state, request("GET", "/healthz", Body::empty(), None)?).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body)?["status"],
        "ok"
    );
    Ok(())
}

#[tokio::test]
async fn everything_else_needs_the_token() -> anyhow::Result<()> {
    let state = state(Arc::default())?;
    let hex = Digest::of(b"x").hex();
    for (method, uri) in [
        ("HEAD", format!("/v1/plugins/{hex}")),
        ("PUT", format!("/v1/plugins/{hex}")),
        ("POST", "/v1/invoke".to_string()),
        ("GET", "/v1/nothing-here".to_string()),
    ] {
        for token in [None, Some("wrong-token-0123456789")] {
            let response = app(state.clone())
                .oneshot(request(method, &uri, Body::empty(), token)?)
                .await?;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {token:?}"
            );
            assert_eq!(
                response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
            let body = response.into_body().collect().await?.to_bytes();
            if method != "HEAD" {
                assert_eq!(error_of(&body)?.error.kind, ErrorKind::Unauthorized);
            }
        }
    }
    let (status, body) = send(
        &state,
        request("GET", "/v1/nothing-here", Body::empty(), Some(TOKEN))?,
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&body)?.error.kind, ErrorKind::NoRoute);
    let (status, body) = send(
        &state,
        request("GET", "/v1/invoke", Body::empty(), Some(TOKEN))?,
    )
    .await?;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_of(&body)?.error.kind, ErrorKind::MethodNotAllowed);
    Ok(())
}

#[tokio::test]
async fn upload_checks_digest_and_compiles_once() -> anyhow::Result<()> {
    let runtime = Arc::new(FakeRuntime::default());
    let state = state(Arc::clone(&runtime))?;
    let module = b"a module".to_vec();
    let hex = Digest::of(&module).hex();

    let (status, _) = send(
        &state,
        request(
            "HEAD",
            &format!("/v1/plugins/{hex}"),
            Body::empty(),
            Some(TOKEN),
        )?,
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let other = Digest::of(b"something else").hex();
    let (status, body) = send(
        &state,
        request(
            "PUT",
            &format!("/v1/plugins/{other}"),
            module.clone(),
            Some(TOKEN),
        )?,
    )
    .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&body)?.error.kind, ErrorKind::DigestMismatch);

    let (status, body) = upload(&state, &module).await?;
    assert_eq!(status, StatusCode::CREATED);
    let up: UploadResponse = serde_json::from_slice(&body)?;
    assert!(up.compiled);
    assert_eq!(up.digest, format!("sha256:{hex}"));
    let (status, body) = upload(&state, &module).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(!serde_json::from_slice::<UploadResponse>(&body)?.compiled);
    assert_eq!(runtime.loads.lock().map(|n| *n).unwrap_or(0), 1);

    let (status, _) = send(
        &state,
        request(
            "HEAD",
            &format!("/v1/plugins/sha256:{hex}"),
            Body::empty(),
            Some(TOKEN),
        )?,
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(
        &state,
        request("PUT", "/v1/plugins/not-a-digest", module, Some(TOKEN))?,
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&body)?.error.kind, ErrorKind::BadRequest);
    Ok(())
}

#[tokio::test]
async fn bad_module_is_refused_and_others_keep_working() -> anyhow::Result<()> {
    let state = state(Arc::default())?;
    let good = b"good module".to_vec();
    assert_eq!(upload(&state, &good).await?.0, StatusCode::CREATED);
    let (status, body) = upload(&state, b"bad module").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&body)?.error.kind, ErrorKind::BadModule);
    let (status, _) = send(
        &state,
        request(
            "POST",
            "/v1/invoke",
            invoke_body(&good, "echo", serde_json::json!({})),
            Some(TOKEN),
        )?,
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn oversized_bodies_get_413_json() -> anyhow::Result<()> {
    let state = state(Arc::default())?;
    let big = vec![b'x'; 100 * 1024];
    let (status, body) = upload(&state, &big).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_of(&body)?.error.kind, ErrorKind::PayloadTooLarge);

    // A module-sized body is fine for uploads but too big for invoke.
    let module = vec![b'm'; 10 * 1024];
    assert_eq!(upload(&state, &module).await?.0, StatusCode::CREATED);
    let padded = invoke_body(
        &module,
        "echo",
        serde_json::json!({"pad": "p".repeat(10 * 1024)}),
    );
    let (status, body) = send(&state, request("POST", "/v1/invoke", padded, Some(TOKEN))?).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_of(&body)?.error.kind, ErrorKind::PayloadTooLarge);
    Ok(())
}

#[tokio::test]
async fn invoke_answers_and_maps_errors() -> anyhow::Result<()> {
    let state = state(Arc::default())?;
    let module = b"m".to_vec();

    let (status, body) = send(
        &state,
        request(
            "POST",
            "/v1/invoke",
            invoke_body(&module, "echo", serde_json::json!({})),
            Some(TOKEN),
        )?,
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let err = error_of(&body)?.error;
    assert_eq!(err.kind, ErrorKind::UnknownPlugin);
    assert!(err.message.contains("upload it first"), "{}", err.message);

    upload(&state, &module).await?;
    let body = serde_json::json!({"digest": format!("sha256:{}", Digest::of(&module).hex()), "method": "echo", "params": {"a": 1}, "dryRun": true, "timeoutMs": 5000}).to_string();
    let (status, body) = send(&state, request("POST", "/v1/invoke", body, Some(TOKEN))?).await?;
    assert_eq!(status, StatusCode::OK);
    let out: InvokeOutcome = serde_json::from_slice(&body)?;
    assert!(out.changed);
    assert_eq!(out.output, serde_json::json!({"a": 1}));

    let (status, body) = send(
        &state,
        request(
            "POST",
            "/v1/invoke",
            invoke_body(&module, "fail", serde_json::json!({})),
            Some(TOKEN),
        )?,
    )
    .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&body)?.error.kind, ErrorKind::InvalidParams);

    let (status, body) = send(
        &state,
        request(
            "POST",
            "/v1/invoke",
            invoke_body(&module, "boom", serde_json::json!({})),
            Some(TOKEN),
        )?,
    )
    .await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let err = error_of(&body)?.error;
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(
        !err.message.contains("/var/lib"),
        "internals leaked: {}",
        err.message
    );

    for bad in [
        "{not json",
        r#"{"method":"echo"}"#,
        r#"{"digest":"zz","method":"echo"}"#,
    ] {
        let (status, body) = send(&state, request("POST", "/v1/invoke", bad, Some(TOKEN))?).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_of(&body)?.error.kind, ErrorKind::BadRequest);
    }
    let zero =
        serde_json::json!({"digest": Digest::of(&module).hex(), "method": "echo", "timeoutMs": 0})
            .to_string();
    assert_eq!(
        send(&state, request("POST", "/v1/invoke", zero, Some(TOKEN))?)
            .await?
            .0,
        StatusCode::BAD_REQUEST
    );
    Ok(())
}

#[tokio::test]
async fn over_capacity_answers_busy() -> anyhow::Result<()> {
    let state = state(Arc::default())?;
    let module = b"m".to_vec();
    upload(&state, &module).await?;
    // Two slots, a 200 ms queue wait: four 1 s calls at once leave two of them busy.
    let calls = (0..4).map(|_| {
        let state = state.clone();
        let body = invoke_body(&module, "sleep", serde_json::json!({"ms": 1000}));
        tokio::spawn(async move {
            send(&state, request("POST", "/v1/invoke", body, Some(TOKEN))?).await
        })
    });
    let mut statuses = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        let (status, body) = call.await??;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(error_of(&body)?.error.kind, ErrorKind::Busy);
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE
        ]
    );
    Ok(())
}

fn named(
    module: &[u8],
    method: &str,
    params: serde_json::Value,
    id: &str,
    dry_run: bool,
) -> String {
    serde_json::json!({
        "digest": Digest::of(module).hex(),
        "method": method,
        "params": params,
        "invocationId": id,
        "dryRun": dry_run,
    })
    .to_string()
}

#[tokio::test]
async fn a_named_invocation_runs_once() -> anyhow::Result<()> {
    let runtime = Arc::new(FakeRuntime::default());
    let state = state(runtime.clone())?;
    let module = b"m".to_vec();
    upload(&state, &module).await?;

    let status_of = |id: &str| {
        request(
            "GET",
            &format!("/v1/invocations/{id}"),
            Body::empty(),
            Some(TOKEN),
        )
    };
    let (status, body) = send(&state, status_of("t1")?).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&body)?.error.kind, ErrorKind::UnknownInvocation);

    // Two requests with one id at once: one run, both get its outcome.
    let body = named(
        &module,
        "sleep",
        serde_json::json!({"ms": 300}),
        "t1",
        false,
    );
    let a = {
        let (state, body) = (state.clone(), body.clone());
        tokio::spawn(async move {
            send(&state, request("POST", "/v1/invoke", body, Some(TOKEN))?).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, seen) = send(&state, status_of("t1")?).await?;
    assert_eq!(status, StatusCode::OK);
    let seen: InvocationStatus = serde_json::from_slice(&seen)?;
    assert_eq!(seen.state, InvocationState::Running);
    let (status_b, body_b) = send(
        &state,
        request("POST", "/v1/invoke", body.clone(), Some(TOKEN))?,
    )
    .await?;
    let (status_a, body_a) = a.await??;
    assert_eq!((status_a, status_b), (StatusCode::OK, StatusCode::OK));
    assert_eq!(body_a, body_b);
    // Later, too: the stored outcome, no second run.
    let (status_c, body_c) =
        send(&state, request("POST", "/v1/invoke", body, Some(TOKEN))?).await?;
    assert_eq!((status_c, &body_c), (StatusCode::OK, &body_a));
    assert_eq!(runtime.runs.load(Ordering::SeqCst), 1);
    let (_, seen) = send(&state, status_of("t1")?).await?;
    let seen: InvocationStatus = serde_json::from_slice(&seen)?;
    assert_eq!(seen.state, InvocationState::Done);

    // A failure is an outcome too: repeated, it is answered, not run again.
    let fail = named(&module, "fail", serde_json::json!({}), "t2", false);
    for _ in 0..2 {
        let (status, body) = send(
            &state,
            request("POST", "/v1/invoke", fail.clone(), Some(TOKEN))?,
        )
        .await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_of(&body)?.error.kind, ErrorKind::InvalidParams);
    }
    assert_eq!(runtime.runs.load(Ordering::SeqCst), 2);

    // Another id runs; no id never deduplicates.
    let plain = invoke_body(&module, "echo", serde_json::json!({}));
    for _ in 0..2 {
        let (status, _) = send(
            &state,
            request("POST", "/v1/invoke", plain.clone(), Some(TOKEN))?,
        )
        .await?;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(runtime.runs.load(Ordering::SeqCst), 4);
    let (status, _) = send(
        &state,
        request(
            "POST",
            "/v1/invoke",
            named(&module, "echo", serde_json::json!({}), "", false),
            Some(TOKEN),
        )?,
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an empty id is refused");
    Ok(())
}

#[tokio::test]
async fn mutating_invocations_take_the_node_lock_and_reads_do_not() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lock = NodeLock::new(dir.path().join("mutate.lock"));
    let module = b"m".to_vec();
    // Two workers of one node (two states, one lock file), two slots each.
    let runtime = Arc::new(FakeRuntime::default());
    let workers = [
        state(runtime.clone())?.with_node_lock(lock.clone()),
        state(runtime.clone())?.with_node_lock(lock.clone()),
    ];
    for w in &workers {
        upload(w, &module).await?;
    }
    let burst = |dry_run: bool| {
        let calls: Vec<_> = (0..4)
            .map(|i| {
                let state = workers[i % 2].clone();
                let body = named(
                    &module,
                    "sleep",
                    serde_json::json!({"ms": 150}),
                    &format!("{dry_run}-{i}"),
                    dry_run,
                );
                tokio::spawn(async move {
                    send(&state, request("POST", "/v1/invoke", body, Some(TOKEN))?).await
                })
            })
            .collect();
        async move {
            for c in calls {
                let (status, body) = c.await??;
                assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            }
            anyhow::Ok(())
        }
    };
    burst(false).await?;
    assert_eq!(
        runtime.most_at_once.load(Ordering::SeqCst),
        1,
        "changes interleaved"
    );
    burst(true).await?;
    assert!(
        runtime.most_at_once.load(Ordering::SeqCst) > 1,
        "dry runs were serialised"
    );

    // A change that cannot get the lock before its deadline is not run, and not stored.
    let held = lock.acquire(Duration::from_secs(1))?;
    let body = serde_json::json!({
        "digest": Digest::of(&module).hex(), "method": "echo", "invocationId": "late", "timeoutMs": 100
    })
    .to_string();
    let (status, body_late) = send(
        &workers[0],
        request("POST", "/v1/invoke", body.clone(), Some(TOKEN))?,
    )
    .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&body_late)?.error.kind, ErrorKind::Timeout);
    drop(held);
    let runs = runtime.runs.load(Ordering::SeqCst);
    let (status, _) = send(
        &workers[0],
        request("POST", "/v1/invoke", body, Some(TOKEN))?,
    )
    .await?;
    assert_eq!(
        status,
        StatusCode::OK,
        "the id was free to run once the lock was"
    );
    assert_eq!(runtime.runs.load(Ordering::SeqCst), runs + 1);
    Ok(())
}

#[tokio::test]
async fn an_unsafe_node_lock_refuses_the_change_and_says_why() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    // A lock directory anyone may write (as if the node's /run/hostplug were 1777).
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))?;
    let runtime = Arc::new(FakeRuntime::default());
    let worker =
        state(runtime.clone())?.with_node_lock(NodeLock::new(dir.path().join("mutate.lock")));
    let module = b"m".to_vec();
    upload(&worker, &module).await?;

    let (status, body) = send(
        &worker,
        request(
            "POST",
            "/v1/invoke",
            named(&module, "echo", serde_json::json!({}), "change", false),
            Some(TOKEN),
        )?,
    )
    .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let e = error_of(&body)?.error;
    assert_eq!(e.kind, ErrorKind::Denied);
    assert!(
        e.message.contains("refusing the node lock")
            && e.message.contains("writable by group or others")
            && e.message.contains("chmod go-w"),
        "{}",
        e.message
    );
    assert_eq!(runtime.runs.load(Ordering::SeqCst), 0, "the change ran");
    assert!(!dir.path().join("mutate.lock").exists());

    // A dry run takes no lock: it still runs.
    let (status, body) = send(
        &worker,
        request(
            "POST",
            "/v1/invoke",
            named(&module, "echo", serde_json::json!({}), "dry", true),
            Some(TOKEN),
        )?,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    Ok(())
}
