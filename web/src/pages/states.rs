//! The HostStates page: every state with its mode, per-node sync, corrections and the
//! drift diff of each drifted step; operators and admins switch a state between `Audit`
//! and `Enforce` (recorded in the audit log). Viewers only read.

use askama::Template;
use axum::{
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
};
use hostplug_api::state::{HostState, StateMode};
use kube::ResourceExt;

use super::render;
use crate::{
    actions,
    auth::{AuthUser, ClientIp},
    db::Role,
    error::{AppError, AppResult},
    state::AppState,
    templates::Nav,
};

/// One node of a state, as the page shows it.
#[derive(Debug)]
pub struct NodeRow {
    /// Node name.
    pub node: String,
    /// `InSync`, `Drifted`, …
    pub sync: String,
    /// Corrections so far.
    pub corrections: i64,
    /// Why it failed, or a conflict note.
    pub message: Option<String>,
    /// Drifted steps: index and diff.
    pub drift: Vec<(i32, String)>,
}

/// One state, as the page shows it.
#[derive(Debug)]
pub struct StateCard {
    /// HostState name.
    pub name: String,
    /// Its mode.
    pub mode: StateMode,
    /// The mode the switch sets.
    pub other_mode: StateMode,
    /// `in sync/selected`.
    pub sync: String,
    /// Summary or refusal.
    pub message: Option<String>,
    /// Conflicting states.
    pub conflicts: Vec<String>,
    /// Per node.
    pub nodes: Vec<NodeRow>,
}

/// `GET /states`.
#[derive(Debug, Template)]
#[template(path = "states.html")]
pub struct StatesPage {
    /// Layout.
    pub nav: Nav,
    /// The states.
    pub states: Vec<StateCard>,
}

fn card(s: &HostState) -> StateCard {
    let st = s.status.clone().unwrap_or_default();
    StateCard {
        name: s.name_any(),
        mode: s.spec.mode,
        other_mode: match s.spec.mode {
            StateMode::Audit => StateMode::Enforce,
            StateMode::Enforce => StateMode::Audit,
        },
        sync: st.sync.clone().unwrap_or_else(|| "0/0".into()),
        message: st.message.clone(),
        conflicts: st.conflicts.clone(),
        nodes: st
            .nodes
            .iter()
            .map(|n| NodeRow {
                node: n.node.clone(),
                sync: n.sync.to_string(),
                corrections: n.corrections,
                message: n.message.clone(),
                drift: n
                    .drift
                    .iter()
                    .map(|d| (d.step, d.diff.clone().unwrap_or_default()))
                    .collect(),
            })
            .collect(),
    }
}

/// `GET /states`.
pub async fn states(State(state): State<AppState>, user: AuthUser) -> AppResult<Response> {
    let states = state.cluster.list_states().await?;
    render(&StatesPage {
        nav: Nav::for_user(&user, "states"),
        states: states.iter().map(card).collect(),
    })
}

/// `POST /states/{name}/mode/{mode}`: operators and admins only.
pub async fn set_mode(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    Path((name, mode)): Path<(String, String)>,
) -> AppResult<Response> {
    user.require(Role::Operator)?;
    let mode: StateMode = mode
        .parse()
        .map_err(|e: hostplug_api::Error| AppError::BadRequest(e.to_string()))?;
    if !state.cluster.set_state_mode(&name, mode).await? {
        return Err(AppError::NotFound);
    }
    actions::record(&state, &user.name, "state.mode", &name, mode.as_str(), &ip).await?;
    Ok(Redirect::to("/states").into_response())
}
