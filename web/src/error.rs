//! The console's one error type and how it becomes a response.
//!
//! Handlers return [`AppError`]; its [`IntoResponse`] writes a JSON body and attaches an
//! [`ErrorInfo`] extension. The [`render_errors`] middleware, which sees the request, turns
//! that into an HTML page for browser routes (or a redirect to the login page for 401) and
//! leaves the JSON for `/api/`. Internal errors are logged here with their detail; clients
//! only ever see a short generic message. This module must never put an internal error's
//! text into a response.
//!
//! It depends on no other module of the crate (its error page is its own template), so
//! every module can use it without an import cycle.

use askama::Template;
use axum::{
    Json,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Serialize;

/// What a query value may hold unescaped: RFC 3986 unreserved characters and `/`
/// (allowed in a query, and it keeps `next=/tasks/x` readable).
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The resource or route does not exist.
    #[error("not found")]
    NotFound,
    /// No route matches; distinguished from [`AppError::NotFound`] so tests can tell a
    /// missing route from a missing object.
    #[error("no such route")]
    NoRoute,
    /// Not logged in (or the session expired).
    #[error("login required")]
    Unauthorized,
    /// Logged in, but the role does not allow this.
    #[error("not allowed for your role")]
    Forbidden,
    /// A state-changing request without the right CSRF token.
    #[error("invalid or missing CSRF token; reload the page and try again")]
    Csrf,
    /// The input was wrong; the message is shown to the user and must not contain secrets.
    #[error("{0}")]
    BadRequest(String),
    /// The object already exists or the state does not allow the action.
    #[error("{0}")]
    Conflict(String),
    /// Too many failed logins.
    #[error("too many attempts; try again in {retry_after} seconds")]
    RateLimited {
        /// Seconds until the next attempt may succeed.
        retry_after: u64,
    },
    /// The Kubernetes API could not be reached or refused us.
    #[error("the cluster is not reachable right now")]
    ClusterUnavailable(#[source] anyhow::Error),
    /// Anything else. Logged with detail, shown as a generic message.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// A shorthand for results in handlers.
pub type AppResult<T> = std::result::Result<T, AppError>;

impl AppError {
    /// Wraps any error as an internal one.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::NoRoute => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::Csrf => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ClusterUnavailable(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::NoRoute => "no_route",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Csrf => "csrf",
            Self::BadRequest(_) => "bad_request",
            Self::Conflict(_) => "conflict",
            Self::RateLimited { .. } => "rate_limited",
            Self::ClusterUnavailable(_) => "cluster_unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(err: rusqlite::Error) -> Self {
        Self::internal(err)
    }
}

impl From<askama::Error> for AppError {
    fn from(err: askama::Error) -> Self {
        Self::internal(err)
    }
}

/// What the client is told about an error: attached to the response so that
/// [`render_errors`] can re-render it as HTML.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorInfo {
    /// HTTP status code.
    pub status: u16,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable message, safe to show.
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a ErrorInfo,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(err) => tracing::error!(error = ?err, "internal error"),
            Self::ClusterUnavailable(err) => tracing::warn!(error = ?err, "cluster error"),
            _ => {}
        }
        let status = self.status();
        let info = ErrorInfo {
            status: status.as_u16(),
            code: self.code(),
            message: self.to_string(),
        };
        let mut response = (status, Json(ErrorBody { error: &info })).into_response();
        if let Self::RateLimited { retry_after } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response.extensions_mut().insert(info);
        response
    }
}

/// Re-renders errors from browser routes as HTML pages; `/api/` keeps its JSON.
pub async fn render_errors(request: Request, next: Next) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if is_api {
        return response;
    }
    let Some(info) = response.extensions().get::<ErrorInfo>().cloned() else {
        return response;
    };
    if info.status == StatusCode::UNAUTHORIZED.as_u16() {
        // Only the path goes into `next`; the login page checks it again before use.
        let next = if path.starts_with('/') && !path.starts_with("//") {
            path
        } else {
            "/".to_owned()
        };
        let next = percent_encoding::utf8_percent_encode(&next, QUERY_VALUE);
        return Redirect::to(&format!("/login?next={next}")).into_response();
    }
    let status = StatusCode::from_u16(info.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let page = ErrorPage {
        status: info.status,
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        message: info.message.clone(),
    };
    match page.render() {
        Ok(body) => {
            let mut html = (status, Html(body)).into_response();
            if let Some(retry) = response.headers().get(header::RETRY_AFTER) {
                html.headers_mut()
                    .insert(header::RETRY_AFTER, retry.clone());
            }
            html
        }
        Err(err) => {
            tracing::error!(error = %err, "rendering the error page failed");
            (status, info.message).into_response()
        }
    }
}

/// A standalone error page (it does not extend the layout: it needs no user or CSRF token).
#[derive(Debug, Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    title: String,
    message: String,
}
