//! Account pages: login, logout, registration (and the first admin's bootstrap), password
//! change.
//!
//! Password hashing and verification run on blocking threads *outside* the database
//! lock; login and registration attempts are counted before any of that work starts
//! (see [`crate::limits`]).

use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{render, render_pre_session, with_cookie};
use crate::{
    actions,
    auth::{self, AuthUser, ClientIp, MaybeUser},
    db::{self, Registered, Registration},
    error::{AppError, AppResult},
    state::AppState,
    templates::{LoginPage, Nav, PasswordPage, RegisterPage},
};

/// Where to go after login when no (acceptable) target was given.
const DEFAULT_NEXT: &str = "/tasks";

/// Only local paths are accepted as a post-login target (no open redirect). The check
/// runs on the percent-decoded text too, because browsers drop tabs and newlines from
/// URLs and read `\` as `/`: `/%09/evil.example` and `/\evil` both mean `//evil…`.
pub fn safe_next(next: &str) -> String {
    let decoded: String = percent_encoding::percent_decode_str(next)
        .decode_utf8_lossy()
        .into_owned();
    let acceptable = |s: &str| {
        s.starts_with('/')
            && !s.starts_with("//")
            && !s.contains('\\')
            && !s.chars().any(char::is_control)
    };
    if acceptable(next) && acceptable(&decoded) && !next.chars().any(char::is_whitespace) {
        next.to_owned()
    } else {
        DEFAULT_NEXT.to_owned()
    }
}

/// `GET /`.
pub async fn index(MaybeUser(user): MaybeUser) -> Redirect {
    if user.is_some() {
        Redirect::to("/tasks")
    } else {
        Redirect::to("/login")
    }
}

/// Query of the login page.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    registered: Option<String>,
}

fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    username: String,
    next: String,
    error: Option<String>,
    notice: Option<String>,
    status: StatusCode,
) -> AppResult<Response> {
    render_pre_session(state, headers, status, |csrf| LoginPage {
        nav: Nav::default(),
        csrf,
        username,
        next,
        error,
        notice,
    })
}

/// `GET /login`.
pub async fn login_form(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> AppResult<Response> {
    if user.is_some() {
        return Ok(Redirect::to(&safe_next(&query.next)).into_response());
    }
    let notice = match query.registered.as_deref() {
        Some("admin") => Some("Account created. You are the administrator: log in.".to_owned()),
        Some("active") => Some("Account created: log in.".to_owned()),
        Some("password") => Some("Password changed: log in with the new one.".to_owned()),
        Some(_) => Some(
            "Registration received. An administrator must approve the account before you can log in."
                .to_owned(),
        ),
        None => None,
    };
    login_page(
        &state,
        &headers,
        String::new(),
        query.next,
        None,
        notice,
        StatusCode::OK,
    )
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`.
pub async fn login_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> AppResult<Response> {
    let username = form.username.trim().to_owned();
    // Counted before the password is looked at: concurrent attempts cannot all pass.
    let attempt = match state.limiter.reserve(&username, &ip) {
        Ok(attempt) => attempt,
        Err(retry_after) => {
            actions::record(
                &state,
                &username,
                "login.blocked",
                &username,
                "rate limited",
                &ip,
            )
            .await?;
            return Err(AppError::RateLimited { retry_after });
        }
    };
    let lookup = username.clone();
    let user = state
        .db
        .call(move |conn| Ok(db::user_by_name(conn, &lookup)?))
        .await?;
    // Always one verification, so unknown names take as long as known ones.
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let verified = auth::verify_password_blocking(stored, form.password).await?;
    let next = safe_next(&form.next);
    let user = match user {
        Some(user) if verified => user,
        _ => {
            // The reservation stays: it was a failed login.
            actions::record(&state, "anonymous", "login.failed", &username, "", &ip).await?;
            return login_page(
                &state,
                &headers,
                username,
                next,
                Some("Invalid username or password.".to_owned()),
                None,
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    if user.status != "active" {
        state.limiter.not_a_failure(attempt);
        // The password was right, so saying why is no enumeration.
        let message = if user.status == "pending" {
            "Your account is waiting for an administrator's approval."
        } else {
            "Your account is disabled."
        };
        return login_page(
            &state,
            &headers,
            username,
            next,
            Some(message.to_owned()),
            None,
            StatusCode::FORBIDDEN,
        );
    }
    state.limiter.succeeded(attempt);
    let token = auth::new_token();
    let csrf = auth::new_token();
    let hash = auth::token_hash(&token);
    let ttl = i64::try_from(state.config.session_ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let expires = db::now().saturating_add(ttl);
    let user_id = user.id;
    state
        .db
        .call(move |conn| Ok(db::create_session(conn, &hash, user_id, &csrf, expires)?))
        .await?;
    actions::record(&state, &user.username, "login", &user.username, "", &ip).await?;
    let response = Redirect::to(&next).into_response();
    Ok(with_cookie(
        response,
        &auth::set_cookie(
            auth::SESSION_COOKIE,
            &token,
            Some(ttl),
            state.config.secure_cookies,
        ),
    ))
}

/// `POST /logout`.
pub async fn logout(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
) -> AppResult<Response> {
    if let Some(hash) = user.and_then(|u| u.session_hash) {
        state
            .db
            .call(move |conn| Ok(db::delete_session(conn, &hash)?))
            .await?;
    }
    Ok(with_cookie(
        Redirect::to("/login").into_response(),
        &auth::set_cookie(
            auth::SESSION_COOKIE,
            "",
            Some(0),
            state.config.secure_cookies,
        ),
    ))
}

/// Whether registration is open (the bootstrap registration works even when closed).
async fn registration_open(state: &AppState) -> AppResult<bool> {
    state
        .db
        .call(|conn| Ok(db::setting_bool(conn, db::SETTING_REGISTRATION_OPEN, true)?))
        .await
}

/// What the registration page shows besides the form values.
struct RegisterContext {
    bootstrap: bool,
    open: bool,
}

fn register_page(
    state: &AppState,
    headers: &HeaderMap,
    username: String,
    error: Option<String>,
    context: &RegisterContext,
    status: StatusCode,
) -> AppResult<Response> {
    render_pre_session(state, headers, status, |csrf| RegisterPage {
        nav: Nav::default(),
        csrf,
        username,
        error,
        first: context.bootstrap,
        open: context.open,
    })
}

/// `GET /register`.
pub async fn register_form(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let context = RegisterContext {
        bootstrap: state.bootstrap.armed(),
        open: registration_open(&state).await?,
    };
    register_page(
        &state,
        &headers,
        String::new(),
        None,
        &context,
        StatusCode::OK,
    )
}

/// The registration form.
#[derive(Debug, Deserialize)]
pub struct RegisterForm {
    username: String,
    password: String,
    password2: String,
    /// The bootstrap token, for the first admin.
    #[serde(default)]
    setup_token: String,
}

/// Checks a username: 3–64 characters, no control characters, no surrounding spaces.
/// Anything else is allowed (and shown escaped).
fn valid_username(name: &str) -> bool {
    let count = name.chars().count();
    (3..=64).contains(&count) && !name.chars().any(char::is_control) && name.trim() == name
}

/// The problem with a new password, if any.
fn password_problem(password: &str, repeated: &str) -> Option<&'static str> {
    if password.chars().count() < auth::MIN_PASSWORD_LEN || password.len() > auth::MAX_PASSWORD_LEN
    {
        Some("A password has 8 to 256 characters.")
    } else if password != repeated {
        Some("The two passwords differ.")
    } else {
        None
    }
}

/// `POST /register`.
pub async fn register_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<RegisterForm>,
) -> AppResult<Response> {
    let username = form.username.trim().to_owned();
    // Counted before anything else: every attempt may cost an argon2 hash.
    if let Err(retry_after) = state.registrations.reserve(&ip) {
        actions::record(
            &state,
            "anonymous",
            "register.blocked",
            &username,
            "rate limited",
            &ip,
        )
        .await?;
        return Err(AppError::RateLimited { retry_after });
    }
    let context = RegisterContext {
        bootstrap: state.bootstrap.armed(),
        open: registration_open(&state).await?,
    };
    let problem = if !valid_username(&username) {
        Some("A username has 3 to 64 characters and no control characters.")
    } else {
        password_problem(&form.password, &form.password2)
    };
    if let Some(problem) = problem {
        return register_page(
            &state,
            &headers,
            username,
            Some(problem.to_owned()),
            &context,
            StatusCode::BAD_REQUEST,
        );
    }
    let setup_token = form.setup_token.trim();
    let taken = if setup_token.is_empty() {
        None
    } else {
        match state.bootstrap.take_if(setup_token) {
            Some(taken) => Some(taken),
            None => {
                actions::record(
                    &state,
                    "anonymous",
                    "register.refused",
                    &username,
                    "wrong setup token",
                    &ip,
                )
                .await?;
                return register_page(
                    &state,
                    &headers,
                    username,
                    Some("That setup token is not valid (any more).".to_owned()),
                    &context,
                    StatusCode::FORBIDDEN,
                );
            }
        }
    };
    let kind = if taken.is_some() {
        Registration::Bootstrap
    } else {
        Registration::Ordinary
    };
    let hash = match auth::hash_password_blocking(form.password).await {
        Ok(hash) => hash,
        Err(err) => {
            if let Some(taken) = taken {
                state.bootstrap.restore(taken);
            }
            return Err(err);
        }
    };
    let name = username.clone();
    let result = state
        .db
        .call(move |conn| Ok(db::register_user(conn, &name, &hash, kind)?))
        .await;
    if let Some(taken) = taken
        && !matches!(result, Ok(Registered::FirstAdmin(_)))
    {
        state.bootstrap.restore(taken);
    }
    let target = match result? {
        Registered::FirstAdmin(_) => {
            actions::record(
                &state,
                &username,
                "register",
                &username,
                "bootstrap token: admin",
                &ip,
            )
            .await?;
            tracing::info!(user = %username, "first admin registered; the bootstrap token is used up");
            "/login?registered=admin"
        }
        Registered::Account { status, .. } => {
            actions::record(&state, &username, "register", &username, status, &ip).await?;
            if status == "active" {
                "/login?registered=active"
            } else {
                "/login?registered=pending"
            }
        }
        Registered::NameTaken => {
            actions::record(
                &state,
                "anonymous",
                "register.refused",
                &username,
                "name taken",
                &ip,
            )
            .await?;
            let approval = state
                .db
                .call(|conn| Ok(db::setting_bool(conn, db::SETTING_REQUIRE_APPROVAL, true)?))
                .await?;
            if approval && kind == Registration::Ordinary {
                // Same answer as a real registration: whether a name exists stays private.
                "/login?registered=pending"
            } else {
                return register_page(
                    &state,
                    &headers,
                    String::new(),
                    Some("That username cannot be used.".to_owned()),
                    &context,
                    StatusCode::BAD_REQUEST,
                );
            }
        }
        Registered::Closed => {
            return register_page(
                &state,
                &headers,
                username,
                Some("Registration is closed.".to_owned()),
                &RegisterContext {
                    bootstrap: false,
                    open: false,
                },
                StatusCode::FORBIDDEN,
            );
        }
    };
    Ok(Redirect::to(target).into_response())
}

/// `GET /account/password`.
pub async fn password_form(user: AuthUser) -> AppResult<Response> {
    render(&PasswordPage {
        nav: Nav::for_user(&user, "account"),
        error: None,
    })
}

/// The password change form.
#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    current: String,
    password: String,
    password2: String,
}

/// `POST /account/password`: needs the current password; ends every session of the
/// account, this one included, so a stolen session does not outlive the change.
pub async fn password_submit(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    Form(form): Form<PasswordForm>,
) -> AppResult<Response> {
    let Some(user_id) = user.user_id else {
        return Err(AppError::Forbidden);
    };
    let page = |status: StatusCode, message: &str| -> AppResult<Response> {
        let mut response = render(&PasswordPage {
            nav: Nav::for_user(&user, "account"),
            error: Some(message.to_owned()),
        })?;
        *response.status_mut() = status;
        Ok(response)
    };
    // The current password is a login in disguise: the same limits apply.
    let attempt = state
        .limiter
        .reserve(&user.name, &ip)
        .map_err(|retry_after| AppError::RateLimited { retry_after })?;
    let stored = state
        .db
        .call(move |conn| Ok(db::user_by_id(conn, user_id)?))
        .await?
        .ok_or(AppError::Unauthorized)?
        .password_hash;
    let stored = Some(stored);
    if !auth::verify_password_blocking(stored, form.current).await? {
        actions::record(&state, &user.name, "password.failed", &user.name, "", &ip).await?;
        return page(
            StatusCode::BAD_REQUEST,
            "The current password is not right.",
        );
    }
    state.limiter.succeeded(attempt);
    if let Some(problem) = password_problem(&form.password, &form.password2) {
        return page(StatusCode::BAD_REQUEST, problem);
    }
    let hash = auth::hash_password_blocking(form.password).await?;
    state
        .db
        .call(move |conn| Ok(db::set_password(conn, user_id, &hash, None)?))
        .await?;
    actions::record(&state, &user.name, "password.change", &user.name, "", &ip).await?;
    Ok(with_cookie(
        Redirect::to("/login?registered=password").into_response(),
        &auth::set_cookie(
            auth::SESSION_COOKIE,
            "",
            Some(0),
            state.config.secure_cookies,
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_next_keeps_local_paths_only() {
        for good in ["/tasks", "/tasks/x?y=1", "/plugins#a", "/tasks/a%20b"] {
            assert_eq!(safe_next(good), good);
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/%09/evil.example",
            "/%0a/evil.example",
            "/%5Cevil.example",
            "/%2F/evil.example",
            "https://evil.example",
            "evil.example",
            "/\t/evil.example",
            "",
        ] {
            assert_eq!(safe_next(bad), DEFAULT_NEXT, "{bad:?}");
        }
    }
}
