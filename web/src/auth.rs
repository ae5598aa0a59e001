//! Passwords, sessions, API tokens, CSRF and login rate limiting.
//!
//! - Passwords: argon2id with the crate's default parameters (RFC 9106's second
//!   recommendation: 19 MiB, 2 passes, 1 lane), hashed and verified on blocking threads.
//!   Logins for unknown names verify against a fixed dummy hash so that the answer takes
//!   as long as for a known name.
//! - Sessions and API tokens: 32 random bytes, base64url; only their SHA-256 is stored.
//! - CSRF: a synchroniser token per session, required (as the `csrf` form field or the
//!   `X-CSRF-Token` header) on every non-GET request made with the session cookie; forms
//!   shown before login (login, register) use a double-submit cookie instead. Requests
//!   authenticated with an API bearer token need no CSRF token: browsers never attach it
//!   by themselves.
//! - Rate limiting: see [`crate::limits`].
//!
//! This module must never log a password or an unhashed token.

use std::{net::SocketAddr, sync::OnceLock};

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use axum::{
    body::{Body, to_bytes},
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, Method, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    db::{self, Role},
    error::AppError,
    state::AppState,
};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "hp_session";
/// Name of the double-submit CSRF cookie used by the forms shown before login.
pub const PRE_SESSION_CSRF_COOKIE: &str = "hp_csrf";
/// Largest form body the CSRF guard reads; forms here are small, task parameters included.
pub const MAX_FORM_BYTES: usize = 256 * 1024;
/// Shortest accepted password. NIST SP 800-63B asks for at least 8.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest accepted password: bounds the work one login request can cause.
pub const MAX_PASSWORD_LEN: usize = 256;

/// Refuses slow password work on a thread that holds the database connection: every
/// other request would wait for it (see [`db::in_db_call`]).
fn not_in_db_call() -> Result<(), AppError> {
    if db::in_db_call() {
        return Err(AppError::internal(anyhow::anyhow!(
            "argon2 called while holding the database connection"
        )));
    }
    Ok(())
}

/// Hashes a password with argon2id. CPU- and memory-heavy: call from a blocking thread
/// that does not hold the database (or use [`hash_password_blocking`]).
pub fn hash_password(password: &str) -> Result<String, AppError> {
    not_in_db_call()?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| AppError::internal(anyhow::anyhow!("hashing a password: {err}")))
}

/// Verifies a password against a stored PHC string. Blocking, like [`hash_password`];
/// never true on a thread that holds the database.
pub fn verify_password(stored: &str, password: &str) -> bool {
    if not_in_db_call().is_err() {
        tracing::error!("argon2 verification refused: the database connection is held");
        return false;
    }
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// [`hash_password`] on a blocking thread, in the caller's tracing span.
pub async fn hash_password_blocking(password: String) -> Result<String, AppError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| hash_password(&password)))
        .await
        .map_err(AppError::internal)?
}

/// [`verify_password`] on a blocking thread, in the caller's tracing span. Without a
/// stored hash (unknown account) the [`dummy_hash`] is verified, so the answer takes as
/// long. A password longer than [`MAX_PASSWORD_LEN`] never verifies, but costs the same.
pub async fn verify_password_blocking(
    stored: Option<String>,
    password: String,
) -> Result<bool, AppError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            let too_long = password.len() > MAX_PASSWORD_LEN;
            let checked = if too_long { "" } else { password.as_str() };
            let verified = verify_password(stored.as_deref().unwrap_or(dummy_hash()), checked);
            verified && !too_long && stored.is_some()
        })
    })
    .await
    .map_err(AppError::internal)
}

/// A hash of a random password, verified against when the account does not exist so
/// that unknown names cost the same time as wrong passwords.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password(&new_token()).unwrap_or_else(|_| {
            // Never reached in practice; a fixed valid PHC string keeps the timing similar.
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0pVKMAeo9vjpTZBXn6HIDsGrLI8OQXfQ9QNBuRFBdw4".to_owned()
        })
    })
}

pub use crate::secret::{new_token, secrets_equal, token_hash};

/// Reads one cookie from the request headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// Builds a `Set-Cookie` value. Always HttpOnly and SameSite=Lax (Lax, not Strict, so
/// that following a link to the console from elsewhere still shows the user logged in;
/// every state change needs a CSRF token anyway).
pub fn set_cookie(name: &str, value: &str, max_age: Option<i64>, secure: bool) -> String {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// Who is making the request.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// Account id, or `None` for an API token.
    pub user_id: Option<i64>,
    /// Display name: the username, or `token:<name>`.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// The session's CSRF token (empty for API tokens).
    pub csrf: String,
    /// The session token's hash, to end it on logout.
    pub session_hash: Option<String>,
}

impl AuthUser {
    /// Fails with 403 unless the role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), AppError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }
}

/// The authentication found for this request, stored in the request extensions by
/// [`authenticate`].
#[derive(Debug, Clone, Default)]
pub struct MaybeUser(pub Option<AuthUser>);

/// The client's address as seen by the console.
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for MaybeUser {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        Ok(parts
            .extensions
            .get::<MaybeUser>()
            .cloned()
            .unwrap_or_default())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        parts
            .extensions
            .get::<MaybeUser>()
            .and_then(|user| user.0.clone())
            .ok_or(AppError::Unauthorized)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        Ok(client_ip(parts))
    }
}

fn client_ip(parts: &Parts) -> ClientIp {
    // X-Forwarded-For is not trusted: behind a NodePort there is no proxy that sets it,
    // and trusting it would let anyone pick their own rate-limit bucket.
    ClientIp(
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip().to_string())
            .unwrap_or_else(|| "unknown".to_owned()),
    )
}

/// Middleware: resolves the session cookie or bearer token into a [`MaybeUser`], then
/// enforces CSRF on every state-changing request.
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match authenticate_inner(state, request).await {
        Ok(request) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

async fn authenticate_inner(state: AppState, request: Request) -> Result<Request, AppError> {
    let (mut parts, body) = request.into_parts();
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned());
    let user = if let Some(token) = bearer {
        let hash = token_hash(&token);
        let found = state
            .db
            .call(move |conn| Ok(db::token_by_hash(conn, &hash)?))
            .await?;
        // A wrong bearer token is an error, not an anonymous request: scripts should
        // learn at once that their token is bad.
        let found = found.ok_or(AppError::Unauthorized)?;
        Some(AuthUser {
            user_id: None,
            name: format!("token:{}", found.name),
            role: found.role,
            csrf: String::new(),
            session_hash: None,
        })
    } else if let Some(token) = cookie(&parts.headers, SESSION_COOKIE) {
        let hash = token_hash(&token);
        let lookup = hash.clone();
        let session = state
            .db
            .call(move |conn| Ok(db::session_by_hash(conn, &lookup)?))
            .await?;
        session.map(|session| AuthUser {
            user_id: Some(session.user.id),
            name: session.user.username,
            role: session.user.role,
            csrf: session.csrf_token,
            session_hash: Some(hash),
        })
    } else {
        None
    };

    let state_changing = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let is_bearer = user.as_ref().is_some_and(|u| u.session_hash.is_none());
    let body = if state_changing && !is_bearer {
        let expected = match &user {
            Some(user) => Some(user.csrf.clone()),
            None => cookie(&parts.headers, PRE_SESSION_CSRF_COOKIE),
        };
        let bytes = to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| AppError::BadRequest("request body too large".to_owned()))?;
        let provided = parts
            .headers
            .get("x-csrf-token")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .or_else(|| form_field(&parts.headers, &bytes, "csrf"));
        match (expected, provided) {
            (Some(expected), Some(provided))
                if !expected.is_empty() && secrets_equal(&expected, &provided) => {}
            _ => return Err(AppError::Csrf),
        }
        Body::from(bytes)
    } else {
        body
    };
    parts.extensions.insert(MaybeUser(user));
    let ip = client_ip(&parts);
    parts.extensions.insert(ip);
    Ok(Request::from_parts(parts, body))
}

fn form_field(headers: &HeaderMap, body: &[u8], name: &str) -> Option<String> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return None;
    }
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(body);
    pairs
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// Parses an `application/x-www-form-urlencoded` body into pairs, keeping repeats and
/// order (checkbox groups send one pair per ticked box). Malformed bodies give no pairs.
pub fn serde_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "wrong horse"));
        assert!(!verify_password("not a hash", "x"));
    }
}
