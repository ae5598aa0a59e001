//! Errors: [`Error`] for starting and running the server, [`ApiError`] for what a request
//! answers.
//!
//! An [`ApiError`] always becomes a JSON [`ErrorBody`] with a kind and a readable
//! message. Internal failures are logged here with their details and answered with a
//! short generic message: the worker's internals (paths, host errors) never reach the
//! client.

use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use hostplug_api::protocol::{ErrorBody, ErrorKind, InvokeError, LogRecord};

/// Failures of starting or running the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configured file could not be read.
    #[error("cannot read {what} from {path}")]
    ReadFile {
        /// Which file (for example "token").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token file holds a token that is too short.
    #[error("the token in {path} is {len} bytes; at least {min} are required")]
    TokenTooShort {
        /// The token file.
        path: PathBuf,
        /// Its length after trimming.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// The PEM files do not hold a usable certificate and key.
    #[error("invalid TLS material: {0}")]
    TlsMaterial(String),
    /// rustls refused the configuration.
    #[error("TLS configuration refused")]
    Tls(#[from] rustls::Error),
    /// The Wasm host could not start (engine, cache dir).
    #[error("cannot start the plugin host")]
    Host(#[source] hostplug_host::Error),
    /// Binding or accepting on the listen address failed.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value makes no sense (for example a zero limit).
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error answer of a route: status, kind and a message safe to show the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    kind: ErrorKind,
    message: String,
    logs: Vec<LogRecord>,
}

impl ApiError {
    /// An error with an explicit status.
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            logs: Vec::new(),
        }
    }

    /// The same error carrying what the plugin logged before it failed.
    pub fn with_logs(mut self, logs: Vec<LogRecord>) -> Self {
        self.logs = logs;
        self
    }

    /// 400 `bad-request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadRequest, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Unauthorized,
            "a valid bearer token is required",
        )
    }

    /// 413 `payload-too-large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::PayloadTooLarge,
            format!("the request body exceeds this route's limit of {limit} bytes"),
        )
    }

    /// 503 `busy`.
    pub fn busy() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Busy,
            "all invocation slots are taken; retry later",
        )
    }

    /// 500 `internal`: logs `detail` (never sent) and answers a generic message.
    pub fn internal(context: &str, detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Internal,
            format!("internal error while {context}; see the worker's log"),
        )
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The client-facing message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: InvokeError {
                kind: self.kind,
                message: self.message,
                logs: self.logs,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
