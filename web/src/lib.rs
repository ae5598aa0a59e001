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
pub mod pages;
pub mod schema;
pub mod templates;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use crate::{auth::LoginLimiter, cluster::Cluster, db::Db, error::AppError};

/// Default session lifetime: a working day. Sessions end at this age even when in use,
/// so a stolen cookie is worth at most this long.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// How the console is started.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "hostplug-web", about = "The hostplug web console and JSON API")]
pub struct WebConfig {
    /// Address to listen on.
    #[arg(long, env = "HOSTPLUG_WEB_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// SQLite database file; created (with its directory) on first start.
    #[arg(
        long,
        env = "HOSTPLUG_WEB_DB",
        default_value = "/var/lib/hostplug-web/console.db"
    )]
    pub db_path: PathBuf,
    /// Kubeconfig file; without it the in-cluster ServiceAccount (or the usual
    /// KUBECONFIG/~/.kube/config inference) is used.
    #[arg(long, env = "HOSTPLUG_WEB_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the HostTasks the console lists and creates.
    #[arg(
        long,
        env = "HOSTPLUG_WEB_NAMESPACE",
        default_value = "hostplug-system"
    )]
    pub namespace: String,
    /// Mark cookies `Secure`. Turn off only for plain-HTTP development on loopback.
    #[arg(long, env = "HOSTPLUG_WEB_SECURE_COOKIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub secure_cookies: bool,
    /// Session lifetime in seconds.
    #[arg(long, env = "HOSTPLUG_WEB_SESSION_TTL", default_value_t = DEFAULT_SESSION_TTL.as_secs(), value_parser = clap::value_parser!(u64))]
    pub session_ttl_secs: u64,
    /// Set from `session_ttl_secs`; kept as a Duration for the code.
    #[arg(skip = DEFAULT_SESSION_TTL)]
    pub session_ttl: Duration,
}

impl WebConfig {
    /// A configuration for tests and embedding: loopback, given db path and namespace.
    pub fn for_tests(db_path: PathBuf, namespace: &str) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            db_path,
            kubeconfig: None,
            namespace: namespace.to_owned(),
            secure_cookies: false,
            session_ttl_secs: DEFAULT_SESSION_TTL.as_secs(),
            session_ttl: DEFAULT_SESSION_TTL,
        }
    }
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The accounts database.
    pub db: Db,
    /// The cluster.
    pub cluster: Arc<dyn Cluster>,
    /// Configuration.
    pub config: Arc<WebConfig>,
    /// Failed-login limits.
    pub limiter: Arc<LoginLimiter>,
}

impl AppState {
    /// Assembles the state.
    pub fn new(db: Db, cluster: Arc<dyn Cluster>, config: WebConfig) -> Self {
        Self {
            db,
            cluster,
            config: Arc::new(config),
            limiter: Arc::new(LoginLimiter::default()),
        }
    }
}

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
        .route("/", get(pages::index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/login", get(pages::login_form).post(pages::login_submit))
        .route("/logout", post(pages::logout))
        .route(
            "/register",
            get(pages::register_form).post(pages::register_submit),
        )
        .route("/plugins", get(pages::plugins))
        .route("/tasks", get(pages::tasks).post(pages::create_task))
        .route("/tasks/rows", get(pages::task_rows))
        .route("/tasks/new", get(pages::new_task))
        .route("/tasks/{name}", get(pages::task_detail))
        .route("/tasks/{name}/apply", post(pages::apply_dry_run))
        .route("/tasks/{name}/delete", post(pages::delete_task))
        .route("/admin/users", get(pages::users))
        .route("/admin/users/{id}", post(pages::user_action))
        .route("/admin/settings", post(pages::settings))
        .route("/admin/tokens", post(pages::create_token))
        .route("/admin/tokens/{id}/revoke", post(pages::revoke_token))
        .route("/admin/audit", get(pages::audit))
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

/// Serves `state` on an already bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}

/// Runs the console: opens (and migrates) the database, connects to the cluster, serves
/// until SIGINT or SIGTERM.
pub async fn run(mut config: WebConfig) -> anyhow::Result<()> {
    config.session_ttl = Duration::from_secs(config.session_ttl_secs);
    let db = Db::open(&config.db_path)
        .with_context(|| format!("opening database {}", config.db_path.display()))?;
    let client = kube_client(&config).await?;
    let cluster = Arc::new(cluster::KubeCluster::new(client, config.namespace.clone()));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, namespace = %config.namespace, "console listening");
    let state = AppState::new(db, cluster, config);
    serve(listener, state, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
