//! The HostStates page: every state with its mode, per-node sync, corrections and the
//! drift diff of each drifted step; operators and admins switch a state between `Audit`
//! and `Enforce` (recorded in the audit log). Viewers only read, and see no diffs: a
//! drift diff is /etc content ([`actions::SEE_RESULTS`]). A state annotated
//! `hostplug.dev/sensitive-output: "true"` shows its diffs to nobody.
//!
//! At fleet size each state shows its nodes a page at a time ([`fleet::NODES_PER_PAGE`]): the
//! list (`/states`) the first page of each, a state's own page
//! (`/states/{name}?sync=Drifted&page=2`) every page, filtered by sync state.

use askama::Template;
use axum::{
    extract::{Path, Query, State},
    response::{IntoResponse, Redirect, Response},
};
use hostplug_api::state::{HostState, StateMode};
use kube::ResourceExt;
use serde::Deserialize;

use super::render;
use crate::{
    actions,
    auth::{AuthUser, ClientIp},
    db::Role,
    error::{AppError, AppResult},
    fleet::{self, FilterChip, Pager},
    state::AppState,
    templates::{Nav, state_class},
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
    /// The nodes of this page (of the sync filter in force).
    pub nodes: Vec<NodeRow>,
    /// Selected nodes in all.
    pub total_nodes: usize,
    /// Where `nodes` are among the (filtered) nodes.
    pub pager: Pager,
    /// The sync filter: all, and each sync state with its count.
    pub chips: Vec<FilterChip>,
    /// Whether its results are sensitive (the annotation): diffs withheld from everyone.
    pub sensitive: bool,
}

/// Which of a state's nodes its page shows: `?sync=Drifted&page=2`. Values that do not
/// fit show everything from page 1.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StateQuery {
    /// Page, from 1.
    #[serde(default)]
    pub page: String,
    /// Only nodes in this sync state.
    #[serde(default)]
    pub sync: String,
}

/// Sync states in the order a node goes through them.
const SYNC_STATES: [&str; 5] = ["Pending", "InSync", "Drifted", "Correcting", "Failed"];

impl StateQuery {
    fn page(&self) -> usize {
        self.page.parse().unwrap_or(1)
    }

    fn sync(&self) -> &str {
        SYNC_STATES
            .iter()
            .find(|p| **p == self.sync)
            .copied()
            .unwrap_or_default()
    }
}

/// The address of a state's page showing `sync` (empty: all) and page `page`.
fn state_href(name: &str, sync: &str, page: usize) -> String {
    let mut href = format!("/states/{name}");
    let mut sep = '?';
    if !sync.is_empty() {
        href.push_str(&format!("{sep}sync={sync}"));
        sep = '&';
    }
    if page > 1 {
        href.push_str(&format!("{sep}page={page}"));
    }
    href
}

/// CSS class of a node's sync state.
fn sync_class(sync: &str) -> &'static str {
    match sync {
        "InSync" => "ok",
        "Drifted" => "warn",
        "Correcting" => "busy",
        "Failed" => "bad",
        _ => state_class(sync),
    }
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

/// `GET /states/{name}`: one state, all of its nodes page by page.
#[derive(Debug, Template)]
#[template(path = "state.html")]
pub struct StatePage {
    /// Layout.
    pub nav: Nav,
    /// The state.
    pub state: StateCard,
    /// Whether drift diffs were withheld because of the user's role.
    pub drift_hidden: bool,
}

/// A state as `show_diffs` allows (the user's role may see /etc contents), with the
/// nodes of `query`'s sync state and page.
fn card(s: &HostState, show_diffs: bool, query: &StateQuery) -> StateCard {
    let st = s.status.clone().unwrap_or_default();
    let sensitive = s
        .annotations()
        .get(hostplug_api::crd::annotations::SENSITIVE_OUTPUT)
        .is_some_and(|v| v == "true");
    let show_diffs = show_diffs && !sensitive;
    let name = s.name_any();
    let sync = query.sync();
    let states: Vec<String> = st.nodes.iter().map(|n| n.sync.to_string()).collect();
    let state_refs: Vec<&str> = states.iter().map(String::as_str).collect();
    let chips = fleet::chips(&state_refs, &SYNC_STATES, sync, sync_class, |x| {
        state_href(&name, x, 1)
    });
    let shown: Vec<_> = st
        .nodes
        .iter()
        .filter(|n| sync.is_empty() || n.sync.as_str() == sync)
        .collect();
    let (rows, pager) = fleet::paginate(shown.len(), query.page(), |n| state_href(&name, sync, n));
    StateCard {
        total_nodes: st.nodes.len(),
        pager,
        chips,
        name: name.clone(),
        mode: s.spec.mode,
        other_mode: match s.spec.mode {
            StateMode::Audit => StateMode::Enforce,
            StateMode::Enforce => StateMode::Audit,
        },
        sync: st.sync.clone().unwrap_or_else(|| "0/0".into()),
        message: st.message.clone(),
        conflicts: st.conflicts.clone(),
        nodes: shown[rows]
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

/// `GET /states`: every state with the first page of its nodes.
pub async fn states(State(state): State<AppState>, user: AuthUser) -> AppResult<Response> {
    let states = state.cluster.list_states().await?;
    let show_diffs = user.role >= actions::SEE_RESULTS;
    let first = StateQuery::default();
    render(&StatesPage {
        nav: Nav::for_user(&user, "states"),
        states: states.iter().map(|s| card(s, show_diffs, &first)).collect(),
        drift_hidden: !show_diffs,
    })
}

/// `GET /states/{name}`: one state, its nodes filtered by sync state, page by page.
pub async fn state_detail(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
    Query(query): Query<StateQuery>,
) -> AppResult<Response> {
    let states = state.cluster.list_states().await?;
    let found = states
        .iter()
        .find(|s| s.name_any() == name)
        .ok_or(AppError::NotFound)?;
    let show_diffs = user.role >= actions::SEE_RESULTS;
    render(&StatePage {
        nav: Nav::for_user(&user, "states"),
        state: card(found, show_diffs, &query),
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
