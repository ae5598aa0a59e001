//! Template structs (askama, compiled into the binary) and the small helpers that turn
//! views into what templates print. Every template autoescapes; nothing here marks
//! user-controlled text as safe.

use askama::Template;

pub use crate::fleet::{FilterChip, Pager};
use crate::{
    auth::AuthUser,
    cluster::{NodeView, PluginView, TaskView},
    db::{self, Role},
    schema::{FormItem, ParamRow},
};

/// What the layout needs: who is logged in, and which tab is active.
#[derive(Debug, Clone, Default)]
pub struct Nav {
    /// Display name, when logged in.
    pub user: Option<String>,
    /// Role name, when logged in.
    pub role: &'static str,
    /// Session CSRF token for the logout form and page forms.
    pub csrf: String,
    /// Active tab: `tasks`, `plugins`, `new`, `users`, `audit`, `account`.
    pub active: &'static str,
    /// Whether the user may create and delete tasks.
    pub can_write: bool,
    /// Whether the user is an admin.
    pub is_admin: bool,
}

impl Nav {
    /// The layout for a logged-in user.
    pub fn for_user(user: &AuthUser, active: &'static str) -> Self {
        Self {
            user: Some(user.name.clone()),
            role: user.role.as_str(),
            csrf: user.csrf.clone(),
            active,
            can_write: user.role >= Role::Operator,
            is_admin: user.role >= Role::Admin,
        }
    }
}

/// Formats Unix seconds as `2026-11-27 09:30:12 UTC`.
pub fn fmt_time(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Formats an age like `kubectl`: `45s`, `12m`, `3h`, `5d`.
pub fn age(created: Option<i64>) -> String {
    let Some(created) = created else {
        return "-".to_owned();
    };
    let secs = (db::now() - created).max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// CSS class for a task state or node phase.
pub fn state_class(state: &str) -> &'static str {
    match state {
        "Succeeded" => "ok",
        "Failed" => "bad",
        "Running" | "Starting" => "busy",
        "Skipped" => "muted",
        _ => "wait",
    }
}

/// One line of a rendered diff.
#[derive(Debug, Clone)]
pub struct DiffLine {
    /// `add`, `del`, `hunk`, `meta` or `ctx`.
    pub class: &'static str,
    /// The line as the plugin wrote it.
    pub text: String,
}

/// Splits a unified diff into classified lines.
pub fn diff_lines(diff: &str) -> Vec<DiffLine> {
    diff.lines()
        .map(|line| {
            let class = if line.starts_with("+++") || line.starts_with("---") {
                "meta"
            } else if line.starts_with("@@") {
                "hunk"
            } else if line.starts_with('+') {
                "add"
            } else if line.starts_with('-') {
                "del"
            } else {
                "ctx"
            };
            DiffLine {
                class,
                text: line.to_owned(),
            }
        })
        .collect()
}

/// The login page.
#[derive(Debug, Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub nav: Nav,
    pub csrf: String,
    pub username: String,
    pub next: String,
    pub error: Option<String>,
    pub notice: Option<String>,
}

/// The registration page.
#[derive(Debug, Template)]
#[template(path = "register.html")]
pub struct RegisterPage {
    pub nav: Nav,
    pub csrf: String,
    pub username: String,
    pub error: Option<String>,
    pub first: bool,
    pub open: bool,
}

/// A method of a plugin in the catalog.
#[derive(Debug, Clone)]
pub struct MethodCard {
    pub name: String,
    pub description: String,
    pub mutates: bool,
    pub rows: Vec<ParamRow>,
}

/// A plugin in the catalog.
#[derive(Debug, Clone)]
pub struct PluginCard {
    pub plugin: PluginView,
    pub methods: Vec<MethodCard>,
}

/// The plugin catalog.
#[derive(Debug, Template)]
#[template(path = "plugins.html")]
pub struct PluginsPage {
    pub nav: Nav,
    pub plugins: Vec<PluginCard>,
}

/// One row of the task list.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub name: String,
    pub state: String,
    pub state_class: &'static str,
    pub plugin: String,
    pub method: String,
    pub progress: String,
    pub age: String,
    pub dry_run: bool,
    pub requested_by: String,
}

impl TaskRow {
    /// The row for a task.
    pub fn from_view(task: &TaskView) -> Self {
        Self {
            name: task.name.clone(),
            state: task.state.clone(),
            state_class: state_class(&task.state),
            plugin: task.plugin.clone(),
            method: task.method.clone(),
            progress: format!("{}/{}", task.nodes_done, task.nodes_total),
            age: age(task.created),
            dry_run: task.dry_run,
            requested_by: task.requested_by.clone().unwrap_or_default(),
        }
    }
}

/// The task list.
#[derive(Debug, Template)]
#[template(path = "tasks.html")]
pub struct TasksPage {
    pub nav: Nav,
    pub rows: Vec<TaskRow>,
}

/// The task list's rows alone, for the self-refreshing table.
#[derive(Debug, Template)]
#[template(path = "task_rows.html")]
pub struct TaskRowsFragment {
    pub rows: Vec<TaskRow>,
}

/// One node of a task's detail page.
#[derive(Debug, Clone)]
pub struct NodeCard {
    pub node: String,
    pub pod: String,
    pub phase: String,
    pub phase_class: &'static str,
    /// The node's drain/reboot cycle step or what it waits for (empty: none).
    pub cycle: String,
    pub changed: bool,
    pub message: String,
    pub diff: Vec<DiffLine>,
    pub output: String,
}

/// A task's detail page.
#[derive(Debug, Template)]
#[template(path = "task.html")]
pub struct TaskPage {
    pub nav: Nav,
    pub task: TaskView,
    pub state_class: &'static str,
    pub age: String,
    pub target: String,
    /// The node selector, one requirement after another, or empty.
    pub selector: String,
    /// Rollout limits in words.
    pub rollout: String,
    pub params: String,
    pub nodes: Vec<NodeCard>,
    pub finished: bool,
    pub can_apply: bool,
    pub can_rerun: bool,
    /// Pause, resume (clear the pause, or approve the wave the rollout waits at),
    /// cancel: operators and admins, while the task has not ended.
    pub can_pause: bool,
    pub can_resume: bool,
    pub can_cancel: bool,
    /// Revert: operators and admins, for a task that changed nodes and has none in
    /// flight.
    pub can_revert: bool,
    /// The status describes an older generation than the spec (just edited).
    pub stale: bool,
    /// Nodes ended of nodes targeted, in percent (0 before the operator counted them).
    pub percent: i64,
    /// What is moving now, e.g. `1 starting, 2 running`; empty when nothing is.
    pub in_flight: String,
    /// Every node's name, phase and its class, for the strip above the cards — only for a
    /// task of one page of nodes (a larger one has the phase filter).
    pub strip: Vec<(String, String, &'static str)>,
    /// The phase filter: all, and each phase with its count.
    pub chips: Vec<FilterChip>,
    /// Where `nodes` are among the (filtered) nodes.
    pub pager: Pager,
    /// The phase filter in force, or empty.
    pub phase: String,
    /// The live stream of this page (the same filter and page).
    pub live_url: String,
}

/// The live part of a task's page alone (`task_detail.html`), as `/tasks/{name}/live`
/// sends it: the same data as [`TaskPage`], rendered without the page around it.
#[derive(Debug, Template)]
#[template(path = "task_detail.html")]
pub struct TaskDetailFragment(pub TaskPage);

impl std::ops::Deref for TaskDetailFragment {
    type Target = TaskPage;

    fn deref(&self) -> &TaskPage {
        &self.0
    }
}

/// A plugin and its methods in the new-task chooser.
#[derive(Debug, Clone)]
pub struct PluginChoice {
    pub name: String,
    pub ready: bool,
    pub methods: Vec<(String, String, bool)>,
}

/// The new-task page.
#[derive(Debug, Template)]
#[template(path = "task_new.html")]
pub struct NewTaskPage {
    pub nav: Nav,
    pub choices: Vec<PluginChoice>,
    pub plugin: String,
    pub method: String,
    pub method_description: String,
    pub mutates: bool,
    pub items: Vec<FormItem>,
    pub nodes: Vec<NodeView>,
    /// The live count's first text: the nodes the role and selector pick now.
    pub role_match: String,
    /// Whether `role_match` is an error (a selector that does not parse).
    pub role_match_failed: bool,
    pub selected_nodes: Vec<String>,
    pub target: String,
    pub role: String,
    pub name: String,
    pub settings: SpecFields,
    pub errors: Vec<String>,
    /// The task being edited (a new generation of it), if this is an edit.
    pub editing: Option<String>,
}

/// The HostTask spec fields of the new-task form besides target and parameters: values
/// as typed (or the CRD's defaults), help text from the CRD's schema.
#[derive(Debug, Clone)]
pub struct SpecFields {
    pub port: String,
    pub timeout_seconds: String,
    pub max_parallel: String,
    pub max_failures: String,
    pub ttl_seconds_after_finished: String,
    pub node_selector: String,
    /// `spec.onChange` as JSON (a list of `{api, method, parameter}`), as typed.
    pub on_change: String,
    pub help_port: String,
    pub help_timeout: String,
    pub help_max_parallel: String,
    pub help_max_failures: String,
    pub help_ttl: String,
    pub help_selector: String,
    pub help_on_change: String,
    pub default_max_parallel: i32,
    pub max_timeout: i32,
}

impl NewTaskPage {
    /// Whether the node is ticked.
    pub fn node_selected(&self, name: &str) -> bool {
        self.selected_nodes.iter().any(|n| n == name)
    }
}

/// A user row on the admin page.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub role: &'static str,
    pub status: String,
    pub created: String,
}

/// An API token row on the admin page.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: &'static str,
    pub created_by: String,
    pub created: String,
    pub expires: String,
    pub expired: bool,
    pub revoked: bool,
}

/// Accounts, registration settings and API tokens.
#[derive(Debug, Template)]
#[template(path = "users.html")]
pub struct UsersPage {
    pub nav: Nav,
    pub users: Vec<UserRow>,
    pub tokens: Vec<TokenRow>,
    pub registration_open: bool,
    pub require_approval: bool,
    pub new_token: Option<String>,
    pub notice: Option<String>,
}

/// The password change page.
#[derive(Debug, Template)]
#[template(path = "password.html")]
pub struct PasswordPage {
    pub nav: Nav,
    pub error: Option<String>,
}

/// An audit entry as shown.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub ip: String,
}

/// The audit log.
#[derive(Debug, Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub nav: Nav,
    pub entries: Vec<AuditRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lines_are_classified() {
        let lines = diff_lines("--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n same");
        let classes: Vec<_> = lines.iter().map(|l| l.class).collect();
        assert_eq!(classes, ["meta", "meta", "hunk", "del", "add", "ctx"]);
    }
}
