//! The JSON API under `/api/v1`, described by the OpenAPI 3 document served at
//! `/api/v1/openapi.json` (kept honest by a test that requests every path it lists).
//!
//! Authentication: the browser session cookie (state-changing requests then need the
//! `X-CSRF-Token` header) or `Authorization: Bearer <API token>` (created by an admin on
//! the Users page). Errors are `{"error": {"status", "code", "message"}}`.

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};

use hostplug_api::crd::{
    DEFAULT_TIMEOUT_SECONDS, DEFAULT_WORKER_PORT, HostTaskSpec, HttpSpec, RolloutSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::{
    actions::{self, visible_to},
    auth::{AuthUser, ClientIp},
    cluster::{NodeView, PluginView, TaskRequest, TaskView, parse_target_type},
    error::{AppError, AppResult},
    fleet::{self, NodeMatch},
    state::AppState,
};

/// The API routes, relative to `/api/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/me", get(me))
        .route("/plugins", get(list_plugins))
        .route("/plugins/{name}", get(get_plugin))
        .route("/tasks", get(list_tasks).post(create_task))
        .route("/tasks/{name}", get(get_task).delete(delete_task))
        .route("/nodes", get(list_nodes))
        .route("/nodes/match", get(match_nodes))
}

/// Who the caller is.
#[derive(Debug, Serialize)]
pub struct Me {
    /// Username or `token:<name>`.
    pub name: String,
    /// Role.
    pub role: &'static str,
}

async fn me(user: AuthUser) -> Json<Me> {
    Json(Me {
        name: user.name,
        role: user.role.as_str(),
    })
}

async fn list_plugins(
    State(state): State<AppState>,
    _user: AuthUser,
) -> AppResult<Json<Vec<PluginView>>> {
    Ok(Json(state.cluster.list_plugins().await?))
}

async fn get_plugin(
    State(state): State<AppState>,
    _user: AuthUser,
    Path(name): Path<String>,
) -> AppResult<Json<PluginView>> {
    state
        .cluster
        .list_plugins()
        .await?
        .into_iter()
        .find(|p| p.name == name)
        .map(Json)
        .ok_or(AppError::NotFound)
}

async fn list_tasks(
    State(state): State<AppState>,
    user: AuthUser,
) -> AppResult<Json<Vec<TaskView>>> {
    let tasks = state.cluster.list_tasks().await?;
    Ok(Json(
        tasks.into_iter().map(|t| visible_to(&user, t)).collect(),
    ))
}

async fn get_task(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> AppResult<Json<TaskView>> {
    state
        .cluster
        .get_task(&name)
        .await?
        .map(|t| Json(visible_to(&user, t)))
        .ok_or(AppError::NotFound)
}

/// Body of `POST /api/v1/tasks`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTaskBody {
    /// Task name; generated when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Plugin (HostPlugin name).
    pub plugin: String,
    /// Method.
    pub method: String,
    /// Parameters, checked against the method's schema before the task is created (400
    /// naming the field, e.g. `spec.http.parameter.state: must be one of …`).
    #[serde(default = "empty_object")]
    pub params: serde_json::Value,
    /// Node names; exactly one of `workers` and `targetType`.
    #[serde(default)]
    pub workers: Vec<String>,
    /// `Master`, `Node` or `All`.
    #[serde(default)]
    pub target_type: Option<String>,
    /// Narrows `targetType` by node labels (a Kubernetes label selector).
    #[serde(default)]
    pub node_selector: Option<LabelSelector>,
    /// Dry run (default false).
    #[serde(default)]
    pub dry_run: bool,
    /// Per-node deadline in seconds (default 60).
    #[serde(default)]
    pub timeout_seconds: Option<i32>,
    /// Parallelism and failure budget.
    #[serde(default)]
    pub rollout: Option<RolloutSpec>,
    /// Clean-up delay after the task ends, in seconds.
    #[serde(default)]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Worker port (default 8443).
    #[serde(default)]
    pub port: Option<i32>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

async fn create_task(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    body: Result<Json<CreateTaskBody>, JsonRejection>,
) -> AppResult<Response> {
    user.require(crate::db::Role::Operator)?;
    let Json(body) = body.map_err(|rejection| AppError::BadRequest(rejection.body_text()))?;
    let (workers, target_type) = match (body.workers.is_empty(), body.target_type.as_deref()) {
        (false, None) => (body.workers, None),
        (true, Some(role)) => (
            Vec::new(),
            Some(parse_target_type(role).ok_or_else(|| {
                AppError::BadRequest("targetType is one of Master, Node, All".to_owned())
            })?),
        ),
        _ => {
            return Err(AppError::BadRequest(
                "give exactly one of workers (node names) or targetType".to_owned(),
            ));
        }
    };
    let request = TaskRequest {
        name: body.name.unwrap_or_default(),
        spec: HostTaskSpec {
            disruption: None,
            targets: hostplug_api::NodeTargets {
                workers,
                target_type,
                node_selector: body.node_selector,
            },
            http: Some(HttpSpec {
                port: body.port.unwrap_or(DEFAULT_WORKER_PORT),
                call: hostplug_api::PluginCall {
                    api: body.plugin,
                    method: body.method,
                    parameter: Some(body.params),
                    vars: Vec::new(),
                },
            }),
            revert: None,
            dry_run: body.dry_run,
            timeout_seconds: body.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS),
            rollout: body.rollout,
            ttl_seconds_after_finished: body.ttl_seconds_after_finished,
            registry_auth: None,
            rerun: 0,
            on_change: Vec::new(),
        },
    };
    let task = actions::create_task(&state, &user, &ip, request).await?;
    Ok((StatusCode::CREATED, Json(task)).into_response())
}

async fn delete_task(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    Path(name): Path<String>,
) -> AppResult<StatusCode> {
    actions::delete_task(&state, &user, &ip, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_nodes(
    State(state): State<AppState>,
    _user: AuthUser,
) -> AppResult<Json<Vec<NodeView>>> {
    Ok(Json(state.cluster.list_nodes().await?))
}

/// Query of `GET /api/v1/nodes/match`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchQuery {
    /// `Master`, `Node` or `All`.
    #[serde(default)]
    pub target_type: String,
    /// A label selector as `kubectl -l` takes it (requirements separated by commas or
    /// lines); empty: every node of the role.
    #[serde(default)]
    pub selector: String,
}

/// The nodes a role and a selector pick now, by the operator's own rule: the new-task
/// form's live count.
async fn match_nodes(
    State(state): State<AppState>,
    _user: AuthUser,
    Query(query): Query<MatchQuery>,
) -> AppResult<Json<NodeMatch>> {
    let role = parse_target_type(&query.target_type)
        .ok_or_else(|| AppError::BadRequest("targetType is one of Master, Node, All".to_owned()))?;
    let nodes = state.cluster.list_nodes().await?;
    fleet::match_nodes(&nodes, role, &query.selector)
        .map(Json)
        .map_err(AppError::BadRequest)
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");
