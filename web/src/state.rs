//! The console's configuration and the state every handler shares.
//!
//! Nothing here does I/O on its own except reading the bootstrap token file when asked.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, sync::Mutex, time::Duration};

use crate::{
    cluster::Cluster,
    db::Db,
    limits::{LoginLimiter, LongPolls, RegistrationLimiter},
    secret,
};

/// Default session lifetime: a working day. Sessions end at this age even when in use,
/// so a stolen cookie is worth at most this long.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// How the console is started.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "hostplug-web", about = "The hostplug web console and JSON API")]
pub struct WebConfig {
    /// Address to listen on.
    #[arg(long, env = "HOSTPLUG_WEB_LISTEN", default_value = "0.0.0.0:8443")]
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
    /// PEM certificate chain to serve HTTPS with (e.g. `tls.crt` of a Secret). Without
    /// it (and without `--insecure-http`) the console makes a self-signed certificate at
    /// start and logs its SHA-256 fingerprint.
    #[arg(long, env = "HOSTPLUG_WEB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert` (e.g. `tls.key` of a Secret).
    #[arg(long, env = "HOSTPLUG_WEB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Directory of a mounted `kubernetes.io/tls` Secret: its `tls.crt` and `tls.key` are
    /// used when both exist (an optional Secret may be absent: then as without it).
    #[arg(long, env = "HOSTPLUG_WEB_TLS_DIR", conflicts_with = "tls_cert")]
    pub tls_dir: Option<PathBuf>,
    /// Serve plain HTTP. Only behind a TLS-terminating proxy or on loopback for
    /// development; cookies stay `Secure` unless `--secure-cookies false` too.
    #[arg(long, env = "HOSTPLUG_WEB_INSECURE_HTTP", default_value_t = false, action = clap::ArgAction::Set)]
    pub insecure_http: bool,
    /// Mark cookies `Secure`. Turn off only for plain-HTTP development on loopback.
    #[arg(long, env = "HOSTPLUG_WEB_SECURE_COOKIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub secure_cookies: bool,
    /// Session lifetime in seconds.
    #[arg(long, env = "HOSTPLUG_WEB_SESSION_TTL", default_value_t = DEFAULT_SESSION_TTL.as_secs(), value_parser = clap::value_parser!(u64))]
    pub session_ttl_secs: u64,
    /// File holding the bootstrap token (e.g. the `token` key of the Secret
    /// `hostplug-web-bootstrap`). While no active admin exists, registering with this
    /// token makes the first admin. Without the file, a one-time token is generated at
    /// start and printed in the log.
    #[arg(long, env = "HOSTPLUG_WEB_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
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
            tls_cert: None,
            tls_key: None,
            tls_dir: None,
            insecure_http: true,
            secure_cookies: false,
            session_ttl_secs: DEFAULT_SESSION_TTL.as_secs(),
            bootstrap_token_file: None,
            session_ttl: DEFAULT_SESSION_TTL,
        }
    }
}

/// Shortest bootstrap token accepted from a file: anything shorter could be guessed.
pub const MIN_BOOTSTRAP_TOKEN_LEN: usize = 16;

/// The bootstrap token while no admin exists: only its hash is kept, and it is used up by
/// the registration that makes the first admin.
#[derive(Debug, Default)]
pub struct Bootstrap {
    hash: Mutex<Option<String>>,
}

impl Bootstrap {
    /// Accepts `token` for the first admin.
    pub fn arm(&self, token: &str) {
        *self.hash.lock().unwrap_or_else(|p| p.into_inner()) = Some(secret::token_hash(token));
    }

    /// Whether a bootstrap token is waiting to be used.
    pub fn armed(&self) -> bool {
        self.hash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Takes the token if `token` is it; a wrong or absent token leaves it in place. A
    /// taken token that did not make an admin is given back with [`Bootstrap::restore`].
    pub fn take_if(&self, token: &str) -> Option<String> {
        let mut hash = self.hash.lock().unwrap_or_else(|p| p.into_inner());
        let given = secret::token_hash(token);
        if hash
            .as_deref()
            .is_some_and(|expected| secret::secrets_equal(expected, &given))
        {
            hash.take()
        } else {
            None
        }
    }

    /// Puts back a hash taken by [`Bootstrap::take_if`] (the registration failed).
    pub fn restore(&self, taken: String) {
        let mut hash = self.hash.lock().unwrap_or_else(|p| p.into_inner());
        if hash.is_none() {
            *hash = Some(taken);
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
    /// Registration limits.
    pub registrations: Arc<RegistrationLimiter>,
    /// The first admin's token, while there is no admin.
    pub bootstrap: Arc<Bootstrap>,
    /// Task-list long polls waiting now.
    pub long_polls: Arc<LongPolls>,
}

impl AppState {
    /// Assembles the state (no bootstrap token armed).
    pub fn new(db: Db, cluster: Arc<dyn Cluster>, config: WebConfig) -> Self {
        Self {
            db,
            cluster,
            config: Arc::new(config),
            limiter: Arc::new(LoginLimiter::default()),
            registrations: Arc::new(RegistrationLimiter::default()),
            bootstrap: Arc::new(Bootstrap::default()),
            long_polls: Arc::new(LongPolls::default()),
        }
    }
}
