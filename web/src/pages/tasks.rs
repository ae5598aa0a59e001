//! Task pages: the list (and its live rows), a task's page, the new-task form (generated
//! from the method's parameter schema, plus every field of the HostTask spec), apply
//! after a dry run, run again, delete.
//!
//! "Apply" and "run again" copy the stored spec whole ([`TaskRequest::rerun`]): only
//! `dryRun` may differ, so a dry run made for a selector and rollout limits is applied
//! with exactly those.
//!
//! At fleet size a task's page shows its nodes a page at a time
//! ([`fleet::NODES_PER_PAGE`]), filtered by phase (`?phase=Failed&page=2`), and the form
//! lists the nodes with their labels folded, a filter, and a live count of the nodes a
//! role and a selector pick ([`fleet::match_nodes`], the operator's rule).

use std::{collections::BTreeMap, sync::OnceLock, time::Duration};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::Response,
};
use hostplug_api::crd::{
    DEFAULT_MAX_PARALLEL, DEFAULT_TIMEOUT_SECONDS, DEFAULT_WORKER_PORT, HostTask, HostTaskSpec,
    HttpSpec, RolloutSpec,
};
use kube::CustomResourceExt;
use serde::Deserialize;

use super::{redirect_to_task, render};
use crate::{
    actions::{self, visible_to},
    auth::{self, AuthUser, ClientIp},
    cluster::{TaskRequest, parse_target_type},
    db::Role,
    error::{AppError, AppResult},
    fleet::{self, NODES_PER_PAGE},
    schema, selector,
    state::AppState,
    templates::{
        Nav, NewTaskPage, NodeCard, PluginChoice, SpecFields, TaskPage, TaskRow, TaskRowsFragment,
        TasksPage, age, diff_lines, state_class,
    },
};

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

/// How long a refused long poll is told to wait before it asks again.
const LONG_POLL_RETRY_SECONDS: u64 = 5;

/// `GET /tasks/rows`: the table body alone, optionally after waiting for a change. Long
/// polls are bounded per user and in all ([`crate::limits::LongPolls`]): past the bound,
/// 429 with `Retry-After`, and the page's script tries again later.
pub async fn task_rows(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<RowsQuery>,
) -> AppResult<Response> {
    if query.wait > 0 {
        let Some(_place) = state.long_polls.try_start(&user.name) else {
            return Err(AppError::RateLimited {
                retry_after: LONG_POLL_RETRY_SECONDS,
            });
        };
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

/// Which of a task's nodes its page shows: `?phase=Failed&page=2`. Values that do not
/// fit (an unknown phase, a page that is not a number) show everything from page 1.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodePageQuery {
    /// Page, from 1.
    #[serde(default)]
    pub page: String,
    /// Only nodes in this phase.
    #[serde(default)]
    pub phase: String,
}

/// The phases of a task's nodes, in the order of a rollout.
const PHASES: [&str; 6] = [
    "Pending",
    "Starting",
    "Running",
    "Succeeded",
    "Failed",
    "Skipped",
];

impl NodePageQuery {
    fn page(&self) -> usize {
        self.page.parse().unwrap_or(1)
    }

    fn phase(&self) -> &str {
        PHASES
            .iter()
            .find(|p| **p == self.phase)
            .copied()
            .unwrap_or_default()
    }
}

/// `GET /tasks/{name}`.
pub async fn task_detail(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
    Query(query): Query<NodePageQuery>,
) -> AppResult<Response> {
    render(&task_page(&state, &user, &name, &query).await?)
}

/// Nodes ended of nodes targeted, in percent, rounded down (100 only when all ended).
pub fn percent_done(done: i64, total: i64) -> i64 {
    if total <= 0 {
        0
    } else {
        (done.clamp(0, total) * 100) / total
    }
}

/// `1 starting, 2 running, 1 failed`: the nodes in motion (and failed ones, which a
/// rollout with a failure budget goes on past).
pub fn in_flight(nodes: &[crate::cluster::NodeResultView]) -> String {
    ["Starting", "Running", "Failed"]
        .iter()
        .filter_map(|phase| {
            let n = nodes.iter().filter(|r| r.phase == *phase).count();
            (n > 0).then(|| format!("{n} {}", phase.to_lowercase()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The address of a task's page showing `phase` (empty: all) and page `page`.
fn task_href(name: &str, phase: &str, page: usize) -> String {
    let mut href = format!("/tasks/{name}");
    let mut sep = '?';
    if !phase.is_empty() {
        href.push_str(&format!("{sep}phase={phase}"));
        sep = '&';
    }
    if page > 1 {
        href.push_str(&format!("{sep}page={page}"));
    }
    href
}

/// The data of a task's page (and of its live fragment) as `user` may see it: the
/// nodes of `query`'s phase and page.
pub async fn task_page(
    state: &AppState,
    user: &AuthUser,
    name: &str,
    query: &NodePageQuery,
) -> AppResult<TaskPage> {
    let task = state
        .cluster
        .get_task(name)
        .await?
        .ok_or(AppError::NotFound)?;
    let task = visible_to(user, task);
    let phase = query.phase();
    let phases: Vec<&str> = task.nodes.iter().map(|n| n.phase.as_str()).collect();
    let chips = fleet::chips(&phases, &PHASES, phase, state_class, |p| {
        task_href(&task.name, p, 1)
    });
    let shown: Vec<&crate::cluster::NodeResultView> = task
        .nodes
        .iter()
        .filter(|n| phase.is_empty() || n.phase == phase)
        .collect();
    let (rows, pager) = fleet::paginate(shown.len(), query.page(), |n| {
        task_href(&task.name, phase, n)
    });
    let nodes = shown[rows]
        .iter()
        .map(|n| NodeCard {
            node: n.node.clone(),
            pod: n.pod.clone(),
            phase: n.phase.clone(),
            phase_class: state_class(&n.phase),
            cycle: n.cycle.clone(),
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
    // Ended, and for the current generation (after an edit the old state is stale).
    let finished = matches!(task.state.as_str(), "Succeeded" | "Failed")
        && task
            .observed_generation
            .is_none_or(|observed| observed == task.generation);
    let target = if task.workers.is_empty() {
        format!("role {}", task.target_type.clone().unwrap_or_default())
    } else {
        task.workers.join(", ")
    };
    let selector = task
        .spec
        .targets
        .node_selector
        .as_ref()
        .map(selector::format)
        .unwrap_or_default()
        .replace('\n', ", ");
    let rollout = task.spec.rollout.as_ref().map_or_else(
        || format!("default (maxParallel {DEFAULT_MAX_PARALLEL}, maxFailures 0)"),
        |r| {
            format!(
                "maxParallel {}, maxFailures {}",
                r.max_parallel, r.max_failures
            )
        },
    );
    let can_write = user.role >= Role::Operator;
    let live_url = {
        let page = task_href(&task.name, phase, pager.page);
        let query = page.split_once('?').map(|(_, q)| q).unwrap_or_default();
        format!(
            "/tasks/{}/live{}{query}",
            task.name,
            if query.is_empty() { "" } else { "?" }
        )
    };
    Ok(TaskPage {
        nav: Nav::for_user(user, "tasks"),
        state_class: state_class(&task.state),
        age: age(task.created),
        target,
        selector,
        rollout,
        params: serde_json::to_string_pretty(&task.params).unwrap_or_default(),
        nodes,
        finished,
        can_apply: task.dry_run && task.state == "Succeeded" && can_write,
        can_rerun: finished && can_write && task.spec.revert.is_none(),
        can_pause: can_write && !finished && !task.spec.rollout.as_ref().is_some_and(|r| r.paused),
        can_resume: can_write
            && !finished
            && (task.spec.rollout.as_ref().is_some_and(|r| r.paused)
                || task.rollout.as_ref().is_some_and(|r| r.phase.waits())),
        can_cancel: can_write && !finished,
        can_revert: can_write
            && task.spec.http.is_some()
            && !task.dry_run
            && task.nodes.iter().any(|n| n.changed)
            && task
                .nodes
                .iter()
                .all(|n| !matches!(n.phase.as_str(), "Starting" | "Running")),
        stale: task.observed_generation != Some(task.generation),
        percent: if task.observed_generation == Some(task.generation) {
            percent_done(task.nodes_done, task.nodes_total)
        } else {
            0
        },
        in_flight: in_flight(&task.nodes),
        strip: if task.nodes.len() <= NODES_PER_PAGE {
            task.nodes
                .iter()
                .map(|n| (n.node.clone(), n.phase.clone(), state_class(&n.phase)))
                .collect()
        } else {
            Vec::new()
        },
        chips,
        pager,
        phase: phase.to_owned(),
        live_url,
        task,
    })
}

/// Query of the new-task page.
#[derive(Debug, Deserialize, Default)]
pub struct NewTaskQuery {
    #[serde(default)]
    plugin: String,
    #[serde(default)]
    method: String,
    /// A task whose spec fills the form ("edit as a new task").
    #[serde(default)]
    from: String,
    /// A task to edit in place (a new generation); its spec fills the form.
    #[serde(default)]
    edit: String,
}

struct NewTaskInput {
    plugin: String,
    method: String,
    pairs: Vec<(String, String)>,
    errors: Vec<String>,
    /// The task being edited, if this is an edit.
    editing: Option<String>,
}

/// Descriptions of the HostTask spec fields, from the CRD's own schema (the same text
/// `kubectl explain hosttask.spec` shows), keyed by dotted path.
fn spec_help() -> &'static BTreeMap<&'static str, String> {
    static HELP: OnceLock<BTreeMap<&'static str, String>> = OnceLock::new();
    HELP.get_or_init(|| {
        let crd = serde_json::to_value(HostTask::crd()).unwrap_or_default();
        let spec = crd
            .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec")
            .cloned()
            .unwrap_or_default();
        [
            ("http.port", "/properties/http/properties/port"),
            ("timeoutSeconds", "/properties/timeoutSeconds"),
            (
                "rollout.maxParallel",
                "/properties/rollout/properties/maxParallel",
            ),
            (
                "rollout.maxFailures",
                "/properties/rollout/properties/maxFailures",
            ),
            (
                "ttlSecondsAfterFinished",
                "/properties/ttlSecondsAfterFinished",
            ),
            ("nodeSelector", "/properties/nodeSelector"),
            ("dryRun", "/properties/dryRun"),
            ("onChange", "/properties/onChange"),
        ]
        .into_iter()
        .map(|(key, pointer)| {
            let text = spec
                .pointer(&format!("{pointer}/description"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (key, text)
        })
        .collect()
    })
}

fn get_pair(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim().to_owned())
}

/// The form pairs that show `spec` in the new-task form (parameters through the
/// method's schema).
fn pairs_from_spec(
    spec: &HostTaskSpec,
    params_schema: &serde_json::Value,
) -> Vec<(String, String)> {
    let (api, method) = spec
        .http
        .as_ref()
        .map(|h| (h.call.api.clone(), h.call.method.clone()))
        .unwrap_or_default();
    let mut pairs = vec![
        ("plugin".to_owned(), api),
        ("method".to_owned(), method),
        ("port".to_owned(), spec.port().to_string()),
        (
            "timeout_seconds".to_owned(),
            spec.timeout_seconds.to_string(),
        ),
    ];
    match spec.targets.target_type {
        Some(role) => {
            pairs.push(("target".to_owned(), "role".to_owned()));
            pairs.push(("role".to_owned(), format!("{role:?}")));
        }
        None => {
            pairs.push(("target".to_owned(), "nodes".to_owned()));
            pairs.extend(
                spec.targets
                    .workers
                    .iter()
                    .map(|n| ("nodes".to_owned(), n.clone())),
            );
        }
    }
    if let Some(selector) = &spec.targets.node_selector {
        pairs.push(("node_selector".to_owned(), selector::format(selector)));
    }
    if let Some(rollout) = &spec.rollout {
        pairs.push(("max_parallel".to_owned(), rollout.max_parallel.to_string()));
        pairs.push(("max_failures".to_owned(), rollout.max_failures.to_string()));
    }
    if let Some(ttl) = spec.ttl_seconds_after_finished {
        pairs.push(("ttl_seconds_after_finished".to_owned(), ttl.to_string()));
    }
    if !spec.on_change.is_empty() {
        pairs.push((
            "on_change".to_owned(),
            serde_json::to_string_pretty(&spec.on_change).unwrap_or_default(),
        ));
    }
    if let Some(params) = spec.http.as_ref().and_then(|h| h.call.parameter.as_ref()) {
        pairs.extend(schema::form_pairs(params_schema, params));
    }
    pairs
}

fn parse_number(
    pairs: &[(String, String)],
    key: &str,
    label: &str,
    range: std::ops::RangeInclusive<i32>,
    errors: &mut Vec<String>,
) -> Option<i32> {
    let text = get_pair(pairs, key).unwrap_or_default();
    if text.is_empty() {
        return None;
    }
    match text.parse::<i32>() {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            let upper = if *range.end() == i32::MAX {
                "up".to_owned()
            } else {
                format!("to {}", range.end())
            };
            errors.push(format!(
                "{label}: a whole number from {} {upper}",
                range.start()
            ));
            None
        }
    }
}

/// Reads the task fields of the new-task form (everything but the parameters) into a
/// spec. Every problem is reported, each naming its field.
pub fn spec_from_form(
    pairs: &[(String, String)],
    parameter: serde_json::Value,
) -> Result<HostTaskSpec, Vec<String>> {
    let mut errors = Vec::new();
    let get = |key: &str| get_pair(pairs, key).unwrap_or_default();
    let node_selector = match selector::parse(&get("node_selector")) {
        Ok(selector) => selector,
        Err(problem) => {
            errors.push(format!("nodeSelector: {problem}"));
            None
        }
    };
    let (workers, target_type) = if get("target") == "role" {
        match parse_target_type(&get("role")) {
            Some(role) => (Vec::new(), Some(role)),
            None => {
                errors.push("targetType: choose a role: Master, Node or All".to_owned());
                (Vec::new(), None)
            }
        }
    } else {
        let nodes: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| k == "nodes")
            .map(|(_, v)| v.clone())
            .collect();
        if nodes.is_empty() {
            errors.push("workers: choose at least one node, or target by role".to_owned());
        }
        if node_selector.is_some() {
            errors.push(
                "nodeSelector: narrows a role target; choose \"by role\" or clear it".to_owned(),
            );
        }
        (nodes, None)
    };
    let port = parse_number(pairs, "port", "http.port", 1..=65535, &mut errors)
        .unwrap_or(DEFAULT_WORKER_PORT);
    let timeout_seconds = parse_number(
        pairs,
        "timeout_seconds",
        "timeoutSeconds",
        1..=hostplug_api::crd::MAX_TIMEOUT_SECONDS,
        &mut errors,
    )
    .unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    let max_parallel = parse_number(
        pairs,
        "max_parallel",
        "rollout.maxParallel",
        1..=i32::MAX,
        &mut errors,
    );
    let max_failures = parse_number(
        pairs,
        "max_failures",
        "rollout.maxFailures",
        0..=i32::MAX,
        &mut errors,
    );
    let rollout = (max_parallel.is_some() || max_failures.is_some()).then(|| RolloutSpec {
        max_parallel: max_parallel.unwrap_or(DEFAULT_MAX_PARALLEL),
        max_failures: max_failures.unwrap_or(0),
        ..RolloutSpec::default()
    });
    let ttl_seconds_after_finished = parse_number(
        pairs,
        "ttl_seconds_after_finished",
        "ttlSecondsAfterFinished",
        0..=i32::MAX,
        &mut errors,
    );
    let on_change = parse_on_change(&get("on_change"), &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(HostTaskSpec {
        disruption: None,
        targets: hostplug_api::NodeTargets {
            workers,
            target_type,
            node_selector,
        },
        http: Some(HttpSpec {
            port,
            call: hostplug_api::PluginCall {
                api: get("plugin"),
                method: get("method"),
                parameter: Some(parameter),
                vars: Vec::new(),
            },
        }),
        revert: None,
        dry_run: get("mode") != "apply",
        timeout_seconds,
        rollout,
        ttl_seconds_after_finished,
        registry_auth: None,
        rerun: 0,
        on_change,
    })
}

/// The form's `onChange` field: empty, or a JSON list of calls (`{api, method,
/// parameter}`), at most [`MAX_FOLLOW_UPS`](hostplug_api::protocol::MAX_FOLLOW_UPS).
/// Problems are named by field (`onChange`, `onChange[i]`).
fn parse_on_change(text: &str, errors: &mut Vec<String>) -> Vec<hostplug_api::PluginCall> {
    let text = text.trim();
    if text.is_empty() {
        return Vec::new();
    }
    let calls: Vec<hostplug_api::PluginCall> = match serde_json::from_str(text) {
        Ok(calls) => calls,
        Err(e) => {
            errors.push(format!(
                "onChange: not a JSON list of {{\"api\", \"method\", \"parameter\"}} ({e})"
            ));
            return Vec::new();
        }
    };
    if calls.len() > hostplug_api::protocol::MAX_FOLLOW_UPS {
        errors.push(format!(
            "onChange: at most {} calls, not {}",
            hostplug_api::protocol::MAX_FOLLOW_UPS,
            calls.len()
        ));
    }
    for (i, call) in calls.iter().enumerate() {
        if call.api.is_empty() || call.method.is_empty() {
            errors.push(format!("onChange[{i}]: name an api and a method"));
        }
    }
    calls
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
    let get = |key: &str| get_pair(&input.pairs, key);
    if !input.pairs.is_empty() {
        // Re-show what was submitted, not the defaults.
        for item in items.iter_mut().filter(|i| i.kind == "field") {
            if item.field.input == "boolean" {
                item.field.checked = get(&item.field.key).is_some();
            } else {
                item.field.value = input
                    .pairs
                    .iter()
                    .find(|(k, _)| *k == item.field.key)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
            }
        }
    }
    let selected_nodes = input
        .pairs
        .iter()
        .filter(|(k, _)| k == "nodes")
        .map(|(_, v)| v.clone())
        .collect();
    let help = spec_help();
    let role = get("role").unwrap_or_else(|| "Node".to_owned());
    let selector_text = input
        .pairs
        .iter()
        .find(|(k, _)| k == "node_selector")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let role_match = match parse_target_type(&role) {
        Some(target) => fleet::match_nodes(&nodes, target, &selector_text),
        None => Err("targetType: choose a role: Master, Node or All".to_owned()),
    };
    let settings = SpecFields {
        port: get("port").unwrap_or_else(|| DEFAULT_WORKER_PORT.to_string()),
        timeout_seconds: get("timeout_seconds")
            .unwrap_or_else(|| DEFAULT_TIMEOUT_SECONDS.to_string()),
        max_parallel: get("max_parallel").unwrap_or_default(),
        max_failures: get("max_failures").unwrap_or_default(),
        ttl_seconds_after_finished: get("ttl_seconds_after_finished").unwrap_or_default(),
        node_selector: input
            .pairs
            .iter()
            .find(|(k, _)| k == "node_selector")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        help_port: help.get("http.port").cloned().unwrap_or_default(),
        help_timeout: help.get("timeoutSeconds").cloned().unwrap_or_default(),
        help_max_parallel: help.get("rollout.maxParallel").cloned().unwrap_or_default(),
        help_max_failures: help.get("rollout.maxFailures").cloned().unwrap_or_default(),
        help_ttl: help
            .get("ttlSecondsAfterFinished")
            .cloned()
            .unwrap_or_default(),
        help_selector: help.get("nodeSelector").cloned().unwrap_or_default(),
        on_change: get("on_change").unwrap_or_default(),
        help_on_change: help.get("onChange").cloned().unwrap_or_default(),
        default_max_parallel: DEFAULT_MAX_PARALLEL,
        max_timeout: hostplug_api::crd::MAX_TIMEOUT_SECONDS,
    };
    let page = NewTaskPage {
        nav: Nav::for_user(user, "new"),
        choices,
        plugin: input.plugin.clone(),
        method: method.map(|m| m.name.clone()).unwrap_or_default(),
        method_description: method.map(|m| m.description.clone()).unwrap_or_default(),
        mutates: method.is_some_and(|m| m.mutates),
        items,
        role_match: match &role_match {
            Ok(m) => m.summary.clone(),
            Err(e) => e.clone(),
        },
        role_match_failed: role_match.is_err(),
        nodes,
        selected_nodes,
        target: get("target").unwrap_or_else(|| "nodes".to_owned()),
        role,
        name: get("name").unwrap_or_default(),
        settings,
        errors: input.errors,
        editing: input.editing,
    };
    let mut response = render(&page)?;
    *response.status_mut() = status;
    Ok(response)
}

/// `GET /tasks/new` (with `?from=<task>`: the form filled with that task's spec).
pub async fn new_task(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<NewTaskQuery>,
) -> AppResult<Response> {
    user.require(Role::Operator)?;
    let source = if query.edit.is_empty() {
        &query.from
    } else {
        &query.edit
    };
    let input = if source.is_empty() {
        NewTaskInput {
            plugin: query.plugin,
            method: query.method,
            pairs: Vec::new(),
            errors: Vec::new(),
            editing: None,
        }
    } else {
        let task = state
            .cluster
            .get_task(source)
            .await?
            .ok_or(AppError::NotFound)?;
        let params_schema = state
            .cluster
            .list_plugins()
            .await?
            .iter()
            .find(|p| p.name == task.plugin)
            .and_then(|p| p.method(&task.method))
            .map(|m| m.params_schema.clone())
            .unwrap_or_default();
        let mut pairs = pairs_from_spec(&task.spec, &params_schema);
        let editing = (!query.edit.is_empty()).then(|| task.name.clone());
        if editing.is_some() {
            pairs.push(("name".to_owned(), task.name.clone()));
        }
        NewTaskInput {
            plugin: task.plugin.clone(),
            method: task.method.clone(),
            pairs,
            errors: Vec::new(),
            editing,
        }
    };
    new_task_page(&state, &user, input, StatusCode::OK).await
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
    let plugin_name = get_pair(&pairs, "plugin").unwrap_or_default();
    let method_name = get_pair(&pairs, "method").unwrap_or_default();
    let plugins = state.cluster.list_plugins().await?;
    let schema = plugins
        .iter()
        .find(|p| p.name == plugin_name)
        .and_then(|p| p.method(&method_name))
        .map(|m| m.params_schema.clone())
        .ok_or_else(|| AppError::BadRequest("choose a plugin and a method".to_owned()))?;
    let mut errors = Vec::new();
    let params = schema::params_from_form(&schema, &pairs).unwrap_or_else(|problems| {
        errors.extend(problems);
        serde_json::Value::Null
    });
    let spec = spec_from_form(&pairs, params).map_err(|problems| errors.extend(problems));
    let editing = get_pair(&pairs, "edit").filter(|name| !name.is_empty());
    let failed = |errors: Vec<String>| NewTaskInput {
        plugin: plugin_name.clone(),
        method: method_name.clone(),
        pairs: pairs.clone(),
        errors,
        editing: editing.clone(),
    };
    let spec = match spec {
        Ok(spec) if errors.is_empty() => spec,
        _ => {
            return new_task_page(&state, &user, failed(errors), StatusCode::BAD_REQUEST).await;
        }
    };
    let result = match &editing {
        Some(name) => actions::edit_task(&state, &user, &ip, name, spec).await,
        None => {
            let request = TaskRequest {
                name: get_pair(&pairs, "name").unwrap_or_default(),
                spec,
            };
            actions::create_task(&state, &user, &ip, request).await
        }
    };
    match result {
        Ok(task) => Ok(redirect_to_task(&task.name)),
        Err(AppError::BadRequest(message) | AppError::Conflict(message)) => {
            new_task_page(
                &state,
                &user,
                failed(vec![message]),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
        Err(other) => Err(other),
    }
}

/// `POST /tasks/{name}/apply`: runs a dry run for real: the same spec, `dryRun` off.
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
    if !task.spec.dry_run {
        return Err(AppError::Conflict("this task is not a dry run".to_owned()));
    }
    let created =
        actions::create_task(&state, &user, &ip, TaskRequest::rerun(&task.spec, false)).await?;
    Ok(redirect_to_task(&created.name))
}

/// `POST /tasks/{name}/rerun`: the same spec again as a new task (a dry run stays one).
pub async fn rerun_task(
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
    let request = TaskRequest::rerun(&task.spec, task.spec.dry_run);
    let created = actions::create_task(&state, &user, &ip, request).await?;
    Ok(redirect_to_task(&created.name))
}

/// `POST /tasks/{name}/pause`, `/resume`, `/cancel`: the rollout's controls.
pub async fn control_task(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    Path((name, control)): Path<(String, String)>,
) -> AppResult<Response> {
    use hostplug_api::rollout::Control;
    let control = match control.as_str() {
        "pause" => Control::Pause,
        "resume" => Control::Resume,
        "cancel" => Control::Cancel,
        _ => return Err(AppError::NotFound),
    };
    actions::control_task(&state, &user, &ip, &name, control).await?;
    Ok(redirect_to_task(&name))
}

/// `POST /tasks/{name}/revert`: a revert task of this task; shows it.
pub async fn revert_task(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    Path(name): Path<String>,
) -> AppResult<Response> {
    let created = actions::revert_task(&state, &user, &ip, &name).await?;
    Ok(redirect_to_task(&created.name))
}

/// `POST /tasks/{name}/delete`.
pub async fn delete_task(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    Path(name): Path<String>,
) -> AppResult<Response> {
    actions::delete_task(&state, &user, &ip, &name).await?;
    Ok(axum::response::IntoResponse::into_response(
        axum::response::Redirect::to("/tasks"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_done_of_total_and_100_only_at_the_end() {
        assert_eq!(percent_done(0, 0), 0);
        assert_eq!(percent_done(1, 3), 33);
        assert_eq!(percent_done(2, 3), 66);
        assert_eq!(percent_done(999, 1000), 99);
        assert_eq!(percent_done(3, 3), 100);
        assert_eq!(percent_done(5, 3), 100);
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_spec_field_comes_from_the_form() {
        let spec = spec_from_form(
            &pairs(&[
                ("plugin", "etc-file"),
                ("method", "ensure-line"),
                ("target", "role"),
                ("role", "All"),
                ("node_selector", "disk=ssd\nzone in (a, b)"),
                ("port", "9443"),
                ("timeout_seconds", "120"),
                ("max_parallel", "3"),
                ("max_failures", "1"),
                ("ttl_seconds_after_finished", "600"),
                ("mode", "dry-run"),
            ]),
            serde_json::json!({"path": "/etc/x"}),
        )
        .expect("valid");
        let selector = selector::parse("disk=ssd\nzone in (a, b)").expect("selector");
        assert_eq!(
            spec,
            HostTaskSpec {
                disruption: None,
                targets: hostplug_api::NodeTargets {
                    workers: Vec::new(),
                    target_type: Some(hostplug_api::crd::TargetType::All),
                    node_selector: selector,
                },
                http: Some(HttpSpec {
                    port: 9443,
                    call: hostplug_api::PluginCall {
                        api: "etc-file".to_owned(),
                        method: "ensure-line".to_owned(),
                        parameter: Some(serde_json::json!({"path": "/etc/x"})),
                        vars: Vec::new(),
                    },
                }),
                revert: None,
                dry_run: true,
                timeout_seconds: 120,
                rollout: Some(RolloutSpec {
                    max_parallel: 3,
                    max_failures: 1,
                    ..RolloutSpec::default()
                }),
                ttl_seconds_after_finished: Some(600),
                registry_auth: None,
                rerun: 0,
                on_change: Vec::new(),
            }
        );
        // And back: the pairs that fill the form read into the same spec.
        let mut again = pairs_from_spec(&spec, &serde_json::json!({}));
        again.push(("mode".to_owned(), "dry-run".to_owned()));
        let reread = spec_from_form(&again, serde_json::json!({"path": "/etc/x"}));
        assert_eq!(reread, Ok(spec));
    }

    #[test]
    fn empty_optional_fields_take_the_crd_defaults() {
        let spec = spec_from_form(
            &pairs(&[
                ("plugin", "p"),
                ("method", "m"),
                ("target", "nodes"),
                ("nodes", "node1"),
                ("mode", "apply"),
            ]),
            serde_json::json!({}),
        )
        .expect("valid");
        assert_eq!(spec.port(), DEFAULT_WORKER_PORT);
        assert_eq!(spec.timeout_seconds, DEFAULT_TIMEOUT_SECONDS);
        assert_eq!(spec.rollout, None);
        assert_eq!(spec.ttl_seconds_after_finished, None);
        assert!(!spec.dry_run);
    }

    #[test]
    fn bad_fields_are_each_named() {
        let errors = spec_from_form(
            &pairs(&[
                ("target", "nodes"),
                ("nodes", "node1"),
                ("node_selector", "disk=ssd"),
                ("port", "0"),
                ("timeout_seconds", "99999"),
                ("max_parallel", "0"),
                ("max_failures", "-1"),
                ("ttl_seconds_after_finished", "soon"),
            ]),
            serde_json::json!({}),
        )
        .expect_err("invalid");
        for field in [
            "nodeSelector",
            "http.port",
            "timeoutSeconds",
            "rollout.maxParallel",
            "rollout.maxFailures",
            "ttlSecondsAfterFinished",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(field)),
                "{field} not named in {errors:?}"
            );
        }
    }

    #[test]
    fn spec_help_comes_from_the_crd() {
        let help = spec_help();
        assert!(help["timeoutSeconds"].contains("Deadline"), "{help:?}");
        assert!(help.values().all(|h| !h.is_empty()), "{help:?}");
    }
}
