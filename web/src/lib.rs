//! The hostplug web console and JSON API.
//!
//! A server-rendered admin console (axum + askama templates compiled into the binary, one
//! CSS file, a little progressive JavaScript) over the cluster's HostPlugins, HostTasks and
//! Nodes, with accounts in SQLite. [`app`] builds the router (tests drive it with
//! `oneshot`); [`run`] is what the binary calls.
//!
//! What it must never do: talk to nodes (only the Kubernetes API, with its own narrow
//! ServiceAccount), store a password or token in the clear, render user input unescaped,
//! or tell a client what an internal error was.

pub mod actions;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod db;
pub mod error;
pub mod fleet;
pub mod limits;
pub mod pages;
pub mod schema;
pub mod secret;
pub mod selector;
pub mod state;
pub mod templates;
pub mod tls;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};

pub use crate::state::{AppState, DEFAULT_SESSION_TTL, WebConfig};
use crate::{
    db::Db,
    error::AppError,
    pages::{account, admin, catalog, live, states, tasks},
};

const APP_CSS: &str = include_str!("../static/app.css");
const APP_JS: &str = include_str!("../static/app.js");

/// Content-Security-Policy: everything from this origin only, no inline script or style.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    response
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The whole console: pages, API, static files, with authentication, CSRF, error pages
/// and security headers applied.
pub fn app(state: AppState) -> Router {
    let pages = Router::new()
        .route("/", get(account::index))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/login",
            get(account::login_form).post(account::login_submit),
        )
        .route("/logout", post(account::logout))
        .route(
            "/register",
            get(account::register_form).post(account::register_submit),
        )
        .route(
            "/account/password",
            get(account::password_form).post(account::password_submit),
        )
        .route("/plugins", get(catalog::plugins))
        .route("/states", get(states::states))
        .route("/states/{name}", get(states::state_detail))
        .route("/states/{name}/mode/{mode}", post(states::set_mode))
        .route("/tasks", get(tasks::tasks).post(tasks::create_task))
        .route("/tasks/rows", get(tasks::task_rows))
        .route("/tasks/new", get(tasks::new_task))
        .route("/tasks/{name}", get(tasks::task_detail))
        .route("/tasks/{name}/live", get(live::task_live))
        .route("/tasks/{name}/apply", post(tasks::apply_dry_run))
        .route("/tasks/{name}/rerun", post(tasks::rerun_task))
        .route("/tasks/{name}/delete", post(tasks::delete_task))
        .route("/tasks/{name}/revert", post(tasks::revert_task))
        .route("/tasks/{name}/rollout/{control}", post(tasks::control_task))
        .route("/admin/users", get(admin::users))
        .route("/admin/users/{id}", post(admin::user_action))
        .route("/admin/settings", post(admin::settings))
        .route("/admin/tokens", post(admin::create_token))
        .route("/admin/tokens/{id}/revoke", post(admin::revoke_token))
        .route("/admin/audit", get(admin::audit))
        .route(
            "/static/app.css",
            get(|| async { static_file("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/static/app.js",
            get(|| async { static_file("text/javascript; charset=utf-8", APP_JS) }),
        );
    Router::new()
        .merge(pages)
        .nest("/api/v1", api::routes())
        .fallback(|| async { AppError::NoRoute })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn(error::render_errors))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Connects to the cluster as configured.
pub async fn kube_client(config: &WebConfig) -> anyhow::Result<kube::Client> {
    // kube is built without choosing a TLS crypto provider; pick ring once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(kube_config)?)
}

/// How the console is served.
#[derive(Debug)]
pub enum Transport {
    /// HTTPS with this server configuration.
    Https(Arc<rustls::ServerConfig>),
    /// Plain HTTP (behind a TLS-terminating proxy, or loopback development).
    Http,
}

/// Serves `state` on an already bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    transport: Transport,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match transport {
        Transport::Https(tls) => tls::serve(listener, tls, app(state), shutdown).await,
        Transport::Http => {
            axum::serve(
                listener,
                app(state).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await?;
            Ok(())
        }
    }
}

/// Arms the bootstrap token when no active admin exists: the token from
/// `--bootstrap-token-file`, or a fresh one printed in the log.
pub async fn arm_bootstrap(state: &AppState) -> anyhow::Result<()> {
    let admins = state
        .db
        .call(|conn| Ok(db::active_admins(conn)?))
        .await
        .map_err(|err| anyhow::anyhow!("counting admins: {err}"))?;
    if admins > 0 {
        return Ok(());
    }
    let from_file = match &state.config.bootstrap_token_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", path.display()));
            }
        },
        None => None,
    };
    match from_file {
        Some(token) if token.len() >= state::MIN_BOOTSTRAP_TOKEN_LEN => {
            state.bootstrap.arm(&token);
            tracing::warn!(
                "no administrator yet: register at /register with the setup token from the bootstrap Secret"
            );
        }
        Some(_) => anyhow::bail!(
            "the bootstrap token file holds fewer than {} characters",
            state::MIN_BOOTSTRAP_TOKEN_LEN
        ),
        None => {
            let token = secret::new_token();
            state.bootstrap.arm(&token);
            // Printed once, on purpose: whoever can read the console's log may become
            // its first admin (the same people who could read the Secret).
            tracing::warn!(
                setup_token = %token,
                "no administrator yet: register at /register with this one-time setup token"
            );
        }
    }
    Ok(())
}

/// Runs the console: opens (and migrates) the database, connects to the cluster, arms
/// the bootstrap token if there is no admin, serves HTTPS (or plain HTTP when asked)
/// until SIGINT or SIGTERM.
pub async fn run(mut config: WebConfig) -> anyhow::Result<()> {
    config.session_ttl = Duration::from_secs(config.session_ttl_secs);
    let db = Db::open(&config.db_path)
        .with_context(|| format!("opening database {}", config.db_path.display()))?;
    let client = kube_client(&config).await?;
    let cluster = Arc::new(cluster::KubeCluster::new(client, config.namespace.clone()));
    let transport = if config.insecure_http {
        tracing::warn!(
            "serving plain HTTP (--insecure-http): put a TLS-terminating proxy in front"
        );
        Transport::Http
    } else {
        let from_dir = config.tls_dir.as_ref().and_then(|dir| {
            let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
            (cert.exists() && key.exists()).then_some((cert, key))
        });
        let material = match (&config.tls_cert, &config.tls_key, from_dir) {
            (Some(cert), Some(key), _) => tls::from_files(cert, key)?,
            (_, _, Some((cert, key))) => tls::from_files(&cert, &key)?,
            _ => {
                let namespace = &config.namespace;
                let material = tls::self_signed(vec![
                    "hostplug-web".to_owned(),
                    format!("hostplug-web.{namespace}"),
                    format!("hostplug-web.{namespace}.svc"),
                    "localhost".to_owned(),
                    "127.0.0.1".to_owned(),
                ])?;
                tracing::warn!(
                    fingerprint = %material.fingerprint,
                    "no --tls-cert given: serving a self-signed certificate (check this SHA-256 fingerprint in the browser)"
                );
                material
            }
        };
        Transport::Https(material.config)
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, namespace = %config.namespace, https = !config.insecure_http, "console listening");
    let state = AppState::new(db, cluster, config);
    arm_bootstrap(&state).await?;
    serve(
        listener,
        transport,
        state,
        hostplug_process::shutdown_signal(),
    )
    .await
}
