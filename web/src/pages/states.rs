//! The HostStates page: every state with its mode, per-node sync, corrections and the
//! drift diff of each drifted step; operators and admins switch a state between `Audit`
//! and `Enforce` (recorded in the audit log). Viewers only read, and see no diffs: a
//! drift diff is /etc content ([`actions::SEE_RESULTS`]). A state annotated
//! `hostplug.dev/sensitive-output: "true"` shows its diffs to nobody.

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
    /// Drifted steps: index and diff (empty when withheld).
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
    /// Whether its results are sensitive (the annotation): diffs withheld from everyone.
    pub sensitive: bool,
}

/// `GET /states`.
#[derive(Debug, Template)]
#[template(path = "states.html")]
pub struct StatesPage {
    /// Layout.
    pub nav: Nav,
    /// The states.
    pub states: Vec<StateCard>,
    /// Whether drift diffs were withheld because of the user's role.
    pub drift_hidden: bool,
}

/// A state as `show_diffs` allows (the user's role may see /etc contents).
fn card(s: &HostState, show_diffs: bool) -> StateCard {
    let st = s.status.clone().unwrap_or_default();
    let sensitive = s
        .annotations()
        .get(hostplug_api::crd::annotations::SENSITIVE_OUTPUT)
        .is_some_and(|v| v == "true");
    let show_diffs = show_diffs && !sensitive;
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
                    .map(|d| {
                        let diff = if show_diffs {
                            d.diff.clone().unwrap_or_default()
                        } else {
                            String::new()
                        };
                        (d.step, diff)
                    })
                    .collect(),
            })
            .collect(),
        sensitive,
    }
}

/// `GET /states`.
pub async fn states(State(state): State<AppState>, user: AuthUser) -> AppResult<Response> {
    let states = state.cluster.list_states().await?;
    let show_diffs = user.role >= actions::SEE_RESULTS;
    render(&StatesPage {
        nav: Nav::for_user(&user, "states"),
        states: states.iter().map(|s| card(s, show_diffs)).collect(),
        drift_hidden: !show_diffs,
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
