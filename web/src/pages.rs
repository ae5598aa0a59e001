//! The HTML pages: login, registration, catalog, tasks, new task, users, audit.
//!
//! Handlers are thin: they check the role, call the cluster or the database, and render a
//! template. Forms are read as raw pairs where fields are dynamic (task parameters) and
//! with typed structs elsewhere. CSRF is enforced for every POST by
//! [`crate::auth::authenticate`] before a handler runs.

use std::time::Duration;

use askama::Template;
use axum::{
    Form,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use crate::{
    AppState, actions,
    auth::{self, AuthUser, ClientIp, MaybeUser},
    cluster::{Target, parse_target_type},
    db::{self, Registered, Role},
    error::{AppError, AppResult},
    schema,
    templates::*,
};

/// Percent-encodes a string for a query parameter.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn render(template: &impl Template) -> AppResult<Response> {
    Ok(Html(template.render()?).into_response())
}

/// Only local paths are accepted as a post-login target (no open redirect).
fn safe_next(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next.to_owned()
    } else {
        "/tasks".to_owned()
    }
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
fn render_pre_session<T: Template>(
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

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
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

/// Why a login did not start a session (kept apart so only one message is shown for
/// unknown names and wrong passwords).
enum LoginOutcome {
    Ok(db::User),
    Invalid,
    Pending,
    Disabled,
}

/// `POST /login`.
pub async fn login_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> AppResult<Response> {
    let username = form.username.trim().to_owned();
    if let Err(retry_after) = state.limiter.check(&username, &ip) {
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
    let password = form.password;
    let lookup = username.clone();
    let outcome = state
        .db
        .call(move |conn| {
            let user = db::user_by_name(conn, &lookup)?;
            let too_long = password.len() > auth::MAX_PASSWORD_LEN;
            let stored = user.as_ref().map_or_else(
                || auth::dummy_hash().to_owned(),
                |u| u.password_hash.clone(),
            );
            // Always run one verification, so unknown names take as long as known ones.
            let verified =
                auth::verify_password(&stored, if too_long { "" } else { &password }) && !too_long;
            Ok(match user {
                Some(user) if verified => match user.status.as_str() {
                    "active" => LoginOutcome::Ok(user),
                    "pending" => LoginOutcome::Pending,
                    _ => LoginOutcome::Disabled,
                },
                _ => LoginOutcome::Invalid,
            })
        })
        .await?;
    let next = safe_next(&form.next);
    let user = match outcome {
        LoginOutcome::Ok(user) => user,
        LoginOutcome::Invalid => {
            state.limiter.record_failure(&username, &ip);
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
        LoginOutcome::Pending | LoginOutcome::Disabled => {
            // The password was right, so saying why is no enumeration.
            let message = if matches!(outcome, LoginOutcome::Pending) {
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
    };
    state.limiter.record_success(&user.username);
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
    let response = with_cookie(
        response,
        &auth::set_cookie(
            auth::SESSION_COOKIE,
            &token,
            Some(ttl),
            state.config.secure_cookies,
        ),
    );
    Ok(response)
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

async fn registration_state(state: &AppState) -> AppResult<(bool, bool)> {
    state
        .db
        .call(|conn| {
            let first = db::list_users(conn)?.is_empty();
            let open = db::setting_bool(conn, db::SETTING_REGISTRATION_OPEN, true)?;
            Ok((first, open))
        })
        .await
}

fn register_page(
    state: &AppState,
    headers: &HeaderMap,
    username: String,
    error: Option<String>,
    first: bool,
    open: bool,
    status: StatusCode,
) -> AppResult<Response> {
    render_pre_session(state, headers, status, |csrf| RegisterPage {
        nav: Nav::default(),
        csrf,
        username,
        error,
        first,
        open,
    })
}

/// `GET /register`.
pub async fn register_form(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let (first, open) = registration_state(&state).await?;
    register_page(
        &state,
        &headers,
        String::new(),
        None,
        first,
        open,
        StatusCode::OK,
    )
}

/// The registration form.
#[derive(Debug, Deserialize)]
pub struct RegisterForm {
    username: String,
    password: String,
    password2: String,
}

/// Checks a username: 3–64 characters, no control characters, no surrounding spaces.
/// Anything else is allowed (and shown escaped).
fn valid_username(name: &str) -> bool {
    let count = name.chars().count();
    (3..=64).contains(&count) && !name.chars().any(char::is_control) && name.trim() == name
}

/// `POST /register`.
pub async fn register_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<RegisterForm>,
) -> AppResult<Response> {
    let (first, open) = registration_state(&state).await?;
    let username = form.username.trim().to_owned();
    let problem = if !valid_username(&username) {
        Some("A username has 3 to 64 characters and no control characters.")
    } else if form.password.chars().count() < auth::MIN_PASSWORD_LEN
        || form.password.len() > auth::MAX_PASSWORD_LEN
    {
        Some("A password has 8 to 256 characters.")
    } else if form.password != form.password2 {
        Some("The two passwords differ.")
    } else {
        None
    };
    if let Some(problem) = problem {
        return register_page(
            &state,
            &headers,
            username,
            Some(problem.to_owned()),
            first,
            open,
            StatusCode::BAD_REQUEST,
        );
    }
    let password = form.password;
    let name = username.clone();
    let result = state
        .db
        .call(move |conn| {
            let hash = auth::hash_password(&password)?;
            Ok(db::register_user(conn, &name, &hash)?)
        })
        .await?;
    let target = match result {
        Registered::FirstAdmin(_) => {
            actions::record(
                &state,
                &username,
                "register",
                &username,
                "first account: admin",
                &ip,
            )
            .await?;
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
            if approval {
                // Same answer as a real registration: whether a name exists stays private.
                "/login?registered=pending"
            } else {
                return register_page(
                    &state,
                    &headers,
                    String::new(),
                    Some("That username cannot be used.".to_owned()),
                    first,
                    open,
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
                false,
                false,
                StatusCode::FORBIDDEN,
            );
        }
    };
    Ok(Redirect::to(target).into_response())
}

/// `GET /plugins`.
pub async fn plugins(State(state): State<AppState>, user: AuthUser) -> AppResult<Response> {
    let plugins = state.cluster.list_plugins().await?;
    let cards = plugins
        .into_iter()
        .map(|plugin| PluginCard {
            methods: plugin
                .methods
                .iter()
                .map(|m| MethodCard {
                    name: m.name.clone(),
                    description: m.description.clone(),
                    mutates: m.mutates,
                    rows: schema::param_rows(&m.params_schema),
                })
                .collect(),
            plugin,
        })
        .collect();
    render(&PluginsPage {
        nav: Nav::for_user(&user, "plugins"),
        plugins: cards,
    })
}

/// `GET /tasks`.
pub async fn tasks(State(state): State<AppState>, user: AuthUser) -> AppResult<Response> {
    let rows = state
        .cluster
        .list_tasks()
        .await?
        .iter()
        .map(TaskRow::from_view)
        .collect();
    render(&TasksPage {
        nav: Nav::for_user(&user, "tasks"),
        rows,
    })
}

/// Query of the rows fragment.
#[derive(Debug, Deserialize)]
pub struct RowsQuery {
    /// Seconds to wait for a change before answering (long poll); 0 answers at once.
    #[serde(default)]
    wait: u64,
}

/// Longest long-poll wait for the task list; below common proxy idle timeouts.
pub const MAX_ROWS_WAIT: Duration = Duration::from_secs(25);

/// `GET /tasks/rows`: the table body alone, optionally after waiting for a change.
pub async fn task_rows(
    State(state): State<AppState>,
    _user: AuthUser,
    Query(query): Query<RowsQuery>,
) -> AppResult<Response> {
    if query.wait > 0 {
        let wait = Duration::from_secs(query.wait).min(MAX_ROWS_WAIT);
        state.cluster.wait_for_task_change(wait).await?;
    }
    let rows = state
        .cluster
        .list_tasks()
        .await?
        .iter()
        .map(TaskRow::from_view)
        .collect();
    render(&TaskRowsFragment { rows })
}

/// `GET /tasks/{name}`.
pub async fn task_detail(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> AppResult<Response> {
    let task = state
        .cluster
        .get_task(&name)
        .await?
        .ok_or(AppError::NotFound)?;
    let nodes = task
        .nodes
        .iter()
        .map(|n| NodeCard {
            node: n.node.clone(),
            pod: n.pod.clone(),
            phase: n.phase.clone(),
            phase_class: state_class(&n.phase),
            changed: n.changed,
            message: n.message.clone(),
            diff: n.diff.as_deref().map(diff_lines).unwrap_or_default(),
            output: n
                .output
                .as_ref()
                .filter(|o| !o.is_null())
                .and_then(|o| serde_json::to_string_pretty(o).ok())
                .unwrap_or_default(),
        })
        .collect();
    let finished = matches!(task.state.as_str(), "Succeeded" | "Failed");
    let target = if task.workers.is_empty() {
        format!("role {}", task.target_type.clone().unwrap_or_default())
    } else {
        task.workers.join(", ")
    };
    let page = TaskPage {
        nav: Nav::for_user(&user, "tasks"),
        state_class: state_class(&task.state),
        age: age(task.created),
        target,
        params: serde_json::to_string_pretty(&task.params).unwrap_or_default(),
        nodes,
        finished,
        can_apply: task.dry_run && task.state == "Succeeded" && user.role >= Role::Operator,
        task,
    };
    render(&page)
}

/// Query of the new-task page.
#[derive(Debug, Deserialize, Default)]
pub struct NewTaskQuery {
    #[serde(default)]
    plugin: String,
    #[serde(default)]
    method: String,
}

struct NewTaskInput {
    plugin: String,
    method: String,
    pairs: Vec<(String, String)>,
    errors: Vec<String>,
}

async fn new_task_page(
    state: &AppState,
    user: &AuthUser,
    input: NewTaskInput,
    status: StatusCode,
) -> AppResult<Response> {
    let plugins = state.cluster.list_plugins().await?;
    let nodes = state.cluster.list_nodes().await?;
    let choices = plugins
        .iter()
        .map(|p| PluginChoice {
            name: p.name.clone(),
            ready: p.ready,
            methods: p
                .methods
                .iter()
                .map(|m| (m.name.clone(), m.description.clone(), m.mutates))
                .collect(),
        })
        .collect();
    let method = plugins
        .iter()
        .find(|p| p.name == input.plugin)
        .and_then(|p| p.method(&input.method));
    let mut items = method
        .map(|m| schema::form_items(&m.params_schema))
        .unwrap_or_default();
    let get = |key: &str| {
        input
            .pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    if !input.pairs.is_empty() {
        // Re-show what was submitted, not the defaults.
        for item in items.iter_mut().filter(|i| i.kind == "field") {
            if item.field.input == "boolean" {
                item.field.checked = get(&item.field.key).is_some();
            } else {
                item.field.value = get(&item.field.key).unwrap_or_default();
            }
        }
    }
    let selected_nodes = input
        .pairs
        .iter()
        .filter(|(k, _)| k == "nodes")
        .map(|(_, v)| v.clone())
        .collect();
    let page = NewTaskPage {
        nav: Nav::for_user(user, "new"),
        choices,
        plugin: input.plugin.clone(),
        method: method.map(|m| m.name.clone()).unwrap_or_default(),
        method_description: method.map(|m| m.description.clone()).unwrap_or_default(),
        mutates: method.is_some_and(|m| m.mutates),
        items,
        nodes,
        selected_nodes,
        target: get("target").unwrap_or_else(|| "nodes".to_owned()),
        role: get("role").unwrap_or_else(|| "Node".to_owned()),
        name: get("name").unwrap_or_default(),
        errors: input.errors,
    };
    let mut response = render(&page)?;
    *response.status_mut() = status;
    Ok(response)
}

/// `GET /tasks/new`.
pub async fn new_task(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<NewTaskQuery>,
) -> AppResult<Response> {
    user.require(Role::Operator)?;
    new_task_page(
        &state,
        &user,
        NewTaskInput {
            plugin: query.plugin,
            method: query.method,
            pairs: Vec::new(),
            errors: Vec::new(),
        },
        StatusCode::OK,
    )
    .await
}

/// `POST /tasks`: create from the generated form.
pub async fn create_task(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    body: Bytes,
) -> AppResult<Response> {
    user.require(Role::Operator)?;
    let pairs = auth::serde_urlencoded_pairs(&body);
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let plugin_name = get("plugin");
    let method_name = get("method");
    let plugins = state.cluster.list_plugins().await?;
    let schema = plugins
        .iter()
        .find(|p| p.name == plugin_name)
        .and_then(|p| p.method(&method_name))
        .map(|m| m.params_schema.clone())
        .ok_or_else(|| AppError::BadRequest("choose a plugin and a method".to_owned()))?;
    let mut errors = Vec::new();
    let params = match schema::params_from_form(&schema, &pairs) {
        Ok(params) => params,
        Err(problems) => {
            errors.extend(problems);
            serde_json::Value::Null
        }
    };
    let target = if get("target") == "role" {
        match parse_target_type(&get("role")) {
            Some(role) => Target::Role(role),
            None => {
                errors.push("choose a role: Master, Node or All".to_owned());
                Target::Nodes(Vec::new())
            }
        }
    } else {
        let nodes: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| k == "nodes")
            .map(|(_, v)| v.clone())
            .collect();
        if nodes.is_empty() {
            errors.push("choose at least one node, or target by role".to_owned());
        }
        Target::Nodes(nodes)
    };
    let dry_run = get("mode") != "apply";
    let name = get("name");
    if !errors.is_empty() {
        return new_task_page(
            &state,
            &user,
            NewTaskInput {
                plugin: plugin_name,
                method: method_name,
                pairs,
                errors,
            },
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let request = actions::CreateRequest {
        name,
        plugin: plugin_name.clone(),
        method: method_name.clone(),
        params,
        target,
        dry_run,
    };
    match actions::create_task(&state, &user, &ip, request).await {
        Ok(task) => Ok(Redirect::to(&format!("/tasks/{}", url_encode(&task.name))).into_response()),
        Err(AppError::BadRequest(message) | AppError::Conflict(message)) => {
            new_task_page(
                &state,
                &user,
                NewTaskInput {
                    plugin: plugin_name,
                    method: method_name,
                    pairs,
                    errors: vec![message],
                },
                StatusCode::BAD_REQUEST,
            )
            .await
        }
        Err(other) => Err(other),
    }
}

/// `POST /tasks/{name}/apply`: runs a finished dry run for real, same spec.
pub async fn apply_dry_run(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    Path(name): Path<String>,
) -> AppResult<Response> {
    user.require(Role::Operator)?;
    let task = state
        .cluster
        .get_task(&name)
        .await?
        .ok_or(AppError::NotFound)?;
    if !task.dry_run {
        return Err(AppError::Conflict("this task is not a dry run".to_owned()));
    }
    let target = if task.workers.is_empty() {
        let role = task
            .target_type
            .as_deref()
            .and_then(parse_target_type)
            .ok_or_else(|| AppError::Conflict("the dry run has no target".to_owned()))?;
        Target::Role(role)
    } else {
        Target::Nodes(task.workers.clone())
    };
    let request = actions::CreateRequest {
        name: String::new(),
        plugin: task.plugin.clone(),
        method: task.method.clone(),
        params: task.params.clone(),
        target,
        dry_run: false,
    };
    let created = actions::create_task(&state, &user, &ip, request).await?;
    Ok(Redirect::to(&format!("/tasks/{}", url_encode(&created.name))).into_response())
}

/// `POST /tasks/{name}/delete`.
pub async fn delete_task(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    Path(name): Path<String>,
) -> AppResult<Response> {
    actions::delete_task(&state, &user, &ip, &name).await?;
    Ok(Redirect::to("/tasks").into_response())
}

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
    let token = auth::new_token();
    let hash = auth::token_hash(&token);
    let (n, by) = (name.clone(), user.name.clone());
    state
        .db
        .call(move |conn| Ok(db::create_token(conn, &n, &hash, role, &by)?))
        .await?;
    actions::record(
        &state,
        &user.name,
        "token.create",
        &name,
        role.as_str(),
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
