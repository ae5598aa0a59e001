//! Task creation and deletion shared by the HTML pages and the JSON API, so both enforce
//! the same roles, checks and audit entries.

use rand::Rng;

use crate::{
    AppState,
    auth::AuthUser,
    cluster::{NewTask, Target, TaskView},
    db::{self, Role},
    error::{AppError, AppResult},
};

/// Longest task name accepted: worker Pods are named `<task>-<node>` and Kubernetes
/// names of Services must stay within 63 characters.
pub const MAX_TASK_NAME: usize = 50;

/// Whether `name` is a DNS-1123 label no longer than [`MAX_TASK_NAME`].
pub fn valid_task_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TASK_NAME
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(|b| *b != b'-')
        && bytes.last().is_some_and(|b| *b != b'-')
}

/// A generated name: `<plugin>-<method>-<5 random chars>`, shortened and cleaned to a
/// DNS-1123 label.
pub fn generate_task_name(plugin: &str, method: &str, dry_run: bool) -> String {
    let clean = |s: &str| -> String {
        s.to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    };
    let mut base = format!("{}-{}", clean(plugin), clean(method));
    base.truncate(32);
    let base = base.trim_matches('-').to_owned();
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5)
        .map(|_| {
            let n = rng.gen_range(0..36u8);
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect();
    let dry = if dry_run { "-dry" } else { "" };
    if base.is_empty() {
        format!("task{dry}-{suffix}")
    } else {
        format!("{base}{dry}-{suffix}")
    }
}

/// What a caller asks to create.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Name, or empty to generate one.
    pub name: String,
    /// Plugin.
    pub plugin: String,
    /// Method.
    pub method: String,
    /// Parameters.
    pub params: serde_json::Value,
    /// Target.
    pub target: Target,
    /// Dry run?
    pub dry_run: bool,
}

/// Checks and creates a task, and records it in the audit log.
pub async fn create_task(
    state: &AppState,
    user: &AuthUser,
    ip: &str,
    request: CreateRequest,
) -> AppResult<TaskView> {
    user.require(Role::Operator)?;
    let plugins = state.cluster.list_plugins().await?;
    let plugin = plugins
        .iter()
        .find(|p| p.name == request.plugin)
        .ok_or_else(|| AppError::BadRequest(format!("unknown plugin {:?}", request.plugin)))?;
    if plugin.method(&request.method).is_none() {
        return Err(AppError::BadRequest(format!(
            "plugin {:?} has no method {:?}",
            plugin.name, request.method
        )));
    }
    if let Target::Nodes(nodes) = &request.target
        && nodes.is_empty()
    {
        return Err(AppError::BadRequest(
            "choose at least one node, or target by role".to_owned(),
        ));
    }
    let name = if request.name.is_empty() {
        generate_task_name(&request.plugin, &request.method, request.dry_run)
    } else if valid_task_name(&request.name) {
        request.name.clone()
    } else {
        return Err(AppError::BadRequest(format!(
            "a task name is lowercase letters, digits and '-', at most {MAX_TASK_NAME} characters"
        )));
    };
    let target_text = match &request.target {
        Target::Nodes(nodes) => format!("nodes {}", nodes.join(",")),
        Target::Role(role) => format!("role {role:?}"),
    };
    let view = state
        .cluster
        .create_task(NewTask {
            name: name.clone(),
            plugin: request.plugin.clone(),
            method: request.method.clone(),
            params: request.params,
            target: request.target,
            dry_run: request.dry_run,
            requested_by: user.name.clone(),
        })
        .await?;
    let detail = format!(
        "{}/{} {}{}",
        request.plugin,
        request.method,
        target_text,
        if request.dry_run { " (dry run)" } else { "" }
    );
    record(state, &user.name, "task.create", &name, &detail, ip).await?;
    Ok(view)
}

/// Deletes a task and records it.
pub async fn delete_task(state: &AppState, user: &AuthUser, ip: &str, name: &str) -> AppResult<()> {
    user.require(Role::Operator)?;
    if !state.cluster.delete_task(name).await? {
        return Err(AppError::NotFound);
    }
    record(state, &user.name, "task.delete", name, "", ip).await
}

/// Appends an audit entry.
pub async fn record(
    state: &AppState,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    ip: &str,
) -> AppResult<()> {
    let (actor, action, target, detail, ip) = (
        actor.to_owned(),
        action.to_owned(),
        target.to_owned(),
        detail.to_owned(),
        ip.to_owned(),
    );
    state
        .db
        .call(move |conn| Ok(db::audit(conn, &actor, &action, &target, &detail, &ip)?))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid() {
        for (p, m) in [
            ("etc-file", "ensure-line"),
            ("Docker_Image", "pull"),
            ("", ""),
        ] {
            let name = generate_task_name(p, m, true);
            assert!(valid_task_name(&name), "{name}");
        }
        assert!(!valid_task_name("-x"));
        assert!(!valid_task_name("X"));
        assert!(!valid_task_name(&"a".repeat(51)));
    }
}
