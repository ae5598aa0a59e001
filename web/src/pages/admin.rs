//! Administration: accounts (approve, disable, roles), registration settings, API tokens,
//! the audit log. Every handler here requires the admin role.

use axum::{
    Form,
    extract::{Path, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::render;
use crate::{
    actions,
    auth::{self, AuthUser, ClientIp},
    db::{self, Role},
    error::{AppError, AppResult},
    state::AppState,
    templates::{AuditPage, AuditRow, Nav, TokenRow, UserRow, UsersPage, fmt_time},
};

async fn users_page(
    state: &AppState,
    user: &AuthUser,
    new_token: Option<String>,
    notice: Option<String>,
) -> AppResult<Response> {
    let (users, tokens, open, approval) = state
        .db
        .call(|conn| {
            Ok((
                db::list_users(conn)?,
                db::list_tokens(conn)?,
                db::setting_bool(conn, db::SETTING_REGISTRATION_OPEN, true)?,
                db::setting_bool(conn, db::SETTING_REQUIRE_APPROVAL, true)?,
            ))
        })
        .await?;
    render(&UsersPage {
        nav: Nav::for_user(user, "users"),
        users: users
            .into_iter()
            .map(|u| UserRow {
                id: u.id,
                username: u.username,
                role: u.role.as_str(),
                status: u.status,
                created: fmt_time(u.created_at),
            })
            .collect(),
        tokens: tokens
            .into_iter()
            .map(|t| TokenRow {
                id: t.id,
                name: t.name,
                role: t.role.as_str(),
                created_by: t.created_by,
                created: fmt_time(t.created_at),
                expires: fmt_time(t.expires_at),
                expired: t.expires_at <= db::now(),
                revoked: t.revoked,
            })
            .collect(),
        registration_open: open,
        require_approval: approval,
        new_token,
        notice,
    })
}

/// `GET /admin/users`.
pub async fn users(State(state): State<AppState>, user: AuthUser) -> AppResult<Response> {
    user.require(Role::Admin)?;
    users_page(&state, &user, None, None).await
}

/// The per-user action form.
#[derive(Debug, Deserialize)]
pub struct UserAction {
    action: String,
    #[serde(default)]
    role: String,
}

/// `POST /admin/users/{id}`: approve, disable, enable, or set the role.
pub async fn user_action(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    Path(id): Path<i64>,
    Form(form): Form<UserAction>,
) -> AppResult<Response> {
    user.require(Role::Admin)?;
    let role = Role::parse(&form.role);
    let action = form.action.clone();
    let (target_name, detail) = state
        .db
        .call(move |conn| {
            let tx = conn.transaction()?;
            let target = db::user_by_id(&tx, id)?.ok_or(AppError::NotFound)?;
            let is_last_admin = target.role == Role::Admin
                && target.status == "active"
                && db::active_admins(&tx)? <= 1;
            let detail = match action.as_str() {
                "approve" | "enable" => {
                    db::set_status(&tx, id, "active")?;
                    format!("{} → active", target.status)
                }
                "disable" => {
                    if is_last_admin {
                        return Err(AppError::Conflict(
                            "the last active admin cannot be disabled".to_owned(),
                        ));
                    }
                    db::set_status(&tx, id, "disabled")?;
                    format!("{} → disabled", target.status)
                }
                "role" => {
                    let role =
                        role.ok_or_else(|| AppError::BadRequest("unknown role".to_owned()))?;
                    if is_last_admin && role != Role::Admin {
                        return Err(AppError::Conflict(
                            "the last active admin cannot lose the admin role".to_owned(),
                        ));
                    }
                    db::set_role(&tx, id, role)?;
                    format!("{} → {}", target.role.as_str(), role.as_str())
                }
                _ => return Err(AppError::BadRequest("unknown action".to_owned())),
            };
            tx.commit()?;
            Ok((target.username, detail))
        })
        .await?;
    let kind = match form.action.as_str() {
        "role" => "user.role",
        "approve" => "user.approve",
        "disable" => "user.disable",
        _ => "user.enable",
    };
    actions::record(&state, &user.name, kind, &target_name, &detail, &ip).await?;
    Ok(Redirect::to("/admin/users").into_response())
}

/// The registration settings form (unticked checkboxes are absent).
#[derive(Debug, Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    registration_open: Option<String>,
    #[serde(default)]
    require_approval: Option<String>,
}

/// `POST /admin/settings`.
pub async fn settings(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    Form(form): Form<SettingsForm>,
) -> AppResult<Response> {
    user.require(Role::Admin)?;
    let open = form.registration_open.is_some();
    let approval = form.require_approval.is_some();
    state
        .db
        .call(move |conn| {
            db::set_setting_bool(conn, db::SETTING_REGISTRATION_OPEN, open)?;
            db::set_setting_bool(conn, db::SETTING_REQUIRE_APPROVAL, approval)?;
            Ok(())
        })
        .await?;
    let detail = format!("registration_open={open} require_approval={approval}");
    actions::record(&state, &user.name, "settings", "registration", &detail, &ip).await?;
    Ok(Redirect::to("/admin/users").into_response())
}

/// The new-token form.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    name: String,
    role: String,
    /// Lifetime in days; [`db::DEFAULT_TOKEN_DAYS`] when empty.
    #[serde(default)]
    days: String,
}

/// `POST /admin/tokens`: creates a token and shows it once.
pub async fn create_token(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    Form(form): Form<TokenForm>,
) -> AppResult<Response> {
    user.require(Role::Admin)?;
    let name = form.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(AppError::BadRequest(
            "a token name has 1 to 64 characters".to_owned(),
        ));
    }
    let role =
        Role::parse(&form.role).ok_or_else(|| AppError::BadRequest("unknown role".to_owned()))?;
    let days = match form.days.trim() {
        "" => db::DEFAULT_TOKEN_DAYS,
        text => text
            .parse::<i64>()
            .ok()
            .filter(|d| (1..=db::MAX_TOKEN_DAYS).contains(d))
            .ok_or_else(|| {
                AppError::BadRequest(format!(
                    "days: a token lives 1 to {} days",
                    db::MAX_TOKEN_DAYS
                ))
            })?,
    };
    // A token acts for the account that made it; API tokens cannot make tokens.
    let owner = user.user_id.ok_or(AppError::Forbidden)?;
    let token = auth::new_token();
    let hash = auth::token_hash(&token);
    let (n, by) = (name.clone(), user.name.clone());
    let expires = db::now().saturating_add(days.saturating_mul(86_400));
    state
        .db
        .call(move |conn| {
            Ok(db::create_token(
                conn, &n, &hash, role, owner, &by, expires,
            )?)
        })
        .await?;
    actions::record(
        &state,
        &user.name,
        "token.create",
        &name,
        &format!("{} for {days} days", role.as_str()),
        &ip,
    )
    .await?;
    let mut response = users_page(&state, &user, Some(token), None).await?;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /admin/tokens/{id}/revoke`.
pub async fn revoke_token(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    user.require(Role::Admin)?;
    let n = state
        .db
        .call(move |conn| Ok(db::revoke_token(conn, id)?))
        .await?;
    if n == 0 {
        return Err(AppError::NotFound);
    }
    actions::record(&state, &user.name, "token.revoke", &id.to_string(), "", &ip).await?;
    Ok(Redirect::to("/admin/users").into_response())
}

/// Audit entries shown on the page.
pub const AUDIT_PAGE_LIMIT: i64 = 500;

/// `GET /admin/audit`.
pub async fn audit(State(state): State<AppState>, user: AuthUser) -> AppResult<Response> {
    user.require(Role::Admin)?;
    let entries = state
        .db
        .call(|conn| Ok(db::recent_audit(conn, AUDIT_PAGE_LIMIT)?))
        .await?;
    render(&AuditPage {
        nav: Nav::for_user(&user, "audit"),
        entries: entries
            .into_iter()
            .map(|e| AuditRow {
                at: fmt_time(e.at),
                actor: e.actor,
                action: e.action,
                target: e.target,
                detail: e.detail,
                ip: e.ip,
            })
            .collect(),
    })
}
