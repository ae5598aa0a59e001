//! The HTML pages, by area: [`account`] (login, registration, password), [`tasks`] (list,
//! detail, new task, apply, run again, delete), [`catalog`] (plugins), [`states`]
//! (HostStates, Audit/Enforce switch) and [`admin`]
//! (users, settings, API tokens, audit log).
//!
//! Handlers are thin: they check the role, call the cluster or the database, and render a
//! template. CSRF is enforced for every POST by [`crate::auth::authenticate`] before a
//! handler runs. This module holds only what several areas share.

pub mod account;
pub mod admin;
pub mod catalog;
pub mod live;
pub mod states;
pub mod tasks;

use askama::Template;
use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::{auth, error::AppResult, state::AppState};

/// What a path segment may hold unescaped (RFC 3986 unreserved characters).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A redirect to `/tasks/<name>`, the name percent-encoded as a path segment.
pub fn redirect_to_task(name: &str) -> Response {
    Redirect::to(&format!(
        "/tasks/{}",
        utf8_percent_encode(name, PATH_SEGMENT)
    ))
    .into_response()
}

/// Renders a template as an HTML response.
pub fn render(template: &impl Template) -> AppResult<Response> {
    Ok(Html(template.render()?).into_response())
}

/// Adds a `Set-Cookie` header.
pub fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The pre-session CSRF token: reuses the cookie when it holds a plausible token.
fn pre_session_csrf(headers: &HeaderMap) -> (String, bool) {
    match auth::cookie(headers, auth::PRE_SESSION_CSRF_COOKIE) {
        Some(token) if token.len() == 43 => (token, false),
        _ => (auth::new_token(), true),
    }
}

/// Renders a page shown before login (login, registration) with its pre-session CSRF
/// token, and sets the token's cookie when the token is new.
pub fn render_pre_session<T: Template>(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    page: impl FnOnce(String) -> T,
) -> AppResult<Response> {
    let (csrf, fresh) = pre_session_csrf(headers);
    let mut response = render(&page(csrf.clone()))?;
    *response.status_mut() = status;
    if fresh {
        let cookie = auth::set_cookie(
            auth::PRE_SESSION_CSRF_COOKIE,
            &csrf,
            None,
            state.config.secure_cookies,
        );
        response = with_cookie(response, &cookie);
    }
    Ok(response)
}
