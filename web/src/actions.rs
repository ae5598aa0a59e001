//! Task creation and deletion shared by the HTML pages and the JSON API, so both enforce
//! the same roles, checks and audit entries.

use hostplug_api::crd::{HostTaskSpec, MAX_TIMEOUT_SECONDS};
use hostplug_api::schema;
use rand::Rng;

use crate::{
    auth::AuthUser,
    cluster::{TaskRequest, TaskView},
    db::{self, Role},
    error::{AppError, AppResult},
    state::AppState,
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

/// Checks a request before it reaches the cluster: plugin and method exist, the
/// parameters match the method's schema, the target is one of node names or a role, a
/// node selector only narrows a role, the numbers are in range. The API server and the
/// operator check the same (CRD schema and CEL rules; the parameter schema); checking
/// here gives the user a message that names the field, and creates nothing.
fn check_request(request: &TaskRequest, plugins: &[crate::cluster::PluginView]) -> AppResult<()> {
    let spec = &request.spec;
    // A revert task is made by the Revert action of a task's page, not by this form.
    let Some(http) = &spec.http else {
        return Err(AppError::BadRequest(
            "spec.http: choose a plugin and a method".to_owned(),
        ));
    };
    if spec.revert.is_some() {
        return Err(AppError::BadRequest(
            "spec.revert: use the Revert button of the task to revert".to_owned(),
        ));
    }
    let plugin = plugins
        .iter()
        .find(|p| p.name == http.call.api)
        .ok_or_else(|| AppError::BadRequest(format!("unknown plugin {:?}", http.call.api)))?;
    let Some(method) = plugin.method(&http.call.method) else {
        return Err(AppError::BadRequest(format!(
            "plugin {:?} has no method {:?}",
            plugin.name, http.call.method
        )));
    };
    // The operator's check, made here too, so that a task with bad parameters is never
    // created: the same reader, the same message naming the field.
    schema::check_params(
        Some(&method.params_schema),
        &method.name,
        &http.call.params(),
        schema::TASK_PARAMETER_FIELD,
    )
    .map_err(|e| AppError::BadRequest(e.to_string()))?;
    // Each follow-up call the same way, named by its place in the list.
    for (i, call) in spec.on_change.iter().enumerate() {
        let field = format!("spec.onChange[{i}]");
        let plugin = plugins.iter().find(|p| p.name == call.api).ok_or_else(|| {
            AppError::BadRequest(format!("{field}.api: unknown plugin {:?}", call.api))
        })?;
        let method = plugin.method(&call.method).ok_or_else(|| {
            AppError::BadRequest(format!(
                "{field}.method: plugin {:?} has no method {:?}",
                plugin.name, call.method
            ))
        })?;
        schema::check_params(
            Some(&method.params_schema),
            &method.name,
            &call.params(),
            &format!("{field}.parameter"),
        )
        .map_err(|e| AppError::BadRequest(e.to_string()))?;
    }
    match (
        spec.targets.workers.is_empty(),
        spec.targets.target_type.is_some(),
    ) {
        (true, false) => {
            return Err(AppError::BadRequest(
                "choose at least one node, or target by role".to_owned(),
            ));
        }
        (false, true) => {
            return Err(AppError::BadRequest(
                "give node names or a role, not both".to_owned(),
            ));
        }
        _ => {}
    }
    if spec.targets.node_selector.is_some() && spec.targets.target_type.is_none() {
        return Err(AppError::BadRequest(
            "nodeSelector narrows a role target; it cannot be combined with node names".to_owned(),
        ));
    }
    if !(1..=65535).contains(&http.port) {
        return Err(AppError::BadRequest("port: 1 to 65535".to_owned()));
    }
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&spec.timeout_seconds) {
        return Err(AppError::BadRequest(format!(
            "timeoutSeconds: 1 to {MAX_TIMEOUT_SECONDS}"
        )));
    }
    if let Some(rollout) = &spec.rollout {
        if rollout.max_parallel < 1 {
            return Err(AppError::BadRequest("maxParallel: at least 1".to_owned()));
        }
        if rollout.max_failures < 0 {
            return Err(AppError::BadRequest("maxFailures: at least 0".to_owned()));
        }
    }
    if spec.ttl_seconds_after_finished.is_some_and(|ttl| ttl < 0) {
        return Err(AppError::BadRequest(
            "ttlSecondsAfterFinished: at least 0".to_owned(),
        ));
    }
    Ok(())
}

/// Checks and creates a task, and records it in the audit log.
pub async fn create_task(
    state: &AppState,
    user: &AuthUser,
    ip: &str,
    request: TaskRequest,
) -> AppResult<TaskView> {
    user.require(Role::Operator)?;
    let plugins = state.cluster.list_plugins().await?;
    check_request(&request, &plugins)?;
    let spec = &request.spec;
    let (api, method) = spec
        .http
        .as_ref()
        .map(|h| (h.call.api.as_str(), h.call.method.as_str()))
        .unwrap_or_default();
    let name = if request.name.is_empty() {
        generate_task_name(api, method, spec.dry_run)
    } else if valid_task_name(&request.name) {
        request.name.clone()
    } else {
        return Err(AppError::BadRequest(format!(
            "a task name is lowercase letters, digits and '-', at most {MAX_TASK_NAME} characters"
        )));
    };
    let target_text = match &spec.targets.target_type {
        None => format!("nodes {}", spec.targets.workers.join(",")),
        Some(role) => format!("role {role:?}"),
    };
    let view = state.cluster.create_task(&name, spec, &user.name).await?;
    let detail = format!(
        "{}/{} {}{}",
        api,
        method,
        target_text,
        if spec.dry_run { " (dry run)" } else { "" }
    );
    record(state, &user.name, "task.create", &name, &detail, ip).await?;
    Ok(view)
}

/// Which role may see what may hold file contents read from /etc — what the nodes
/// returned (outputs, diffs), a task's parameters, a HostState's drift diffs: those who
/// may run tasks. Viewers see phases, states and messages.
pub const SEE_RESULTS: Role = Role::Operator;

/// Withholds node results and parameters from callers whose role may not see them.
pub fn visible_to(user: &AuthUser, mut task: TaskView) -> TaskView {
    if user.role < SEE_RESULTS {
        task.hide_results();
    }
    task
}

/// Replaces a finished task's spec (a new generation of the same task), after the same
/// checks as creation, and records it.
pub async fn edit_task(
    state: &AppState,
    user: &AuthUser,
    ip: &str,
    name: &str,
    spec: HostTaskSpec,
) -> AppResult<TaskView> {
    user.require(Role::Operator)?;
    let current = state
        .cluster
        .get_task(name)
        .await?
        .ok_or(AppError::NotFound)?;
    let finished = matches!(current.state.as_str(), "Succeeded" | "Failed")
        && current.observed_generation == Some(current.generation);
    if !finished {
        return Err(AppError::Conflict(
            "the task is still running; edit it when it has ended".to_owned(),
        ));
    }
    let plugins = state.cluster.list_plugins().await?;
    let spec = keep_what_the_form_does_not_show(&current.spec, spec);
    let request = TaskRequest {
        name: name.to_owned(),
        spec,
    };
    check_request(&request, &plugins)?;
    let view = state
        .cluster
        .update_task(name, &request.spec, &user.name)
        .await?;
    let detail = format!(
        "generation {} → {}{}",
        current.generation,
        view.generation,
        if request.spec.dry_run {
            " (dry run)"
        } else {
            ""
        }
    );
    record(state, &user.name, "task.edit", name, &detail, ip).await?;
    Ok(view)
}

/// The edited spec with every field the task form does not show taken from the current
/// one, so an edit changes only what was edited: `rerun` (a counter only `kubectl
/// hostplug rerun` raises), `registryAuth`, `disruption`, the rollout's
/// waves, gate, onFailure and controls (the form shows maxParallel and maxFailures
/// only), and the call's `vars` while the plugin and method stay the same (they name
/// that method's parameters).
pub fn keep_what_the_form_does_not_show(
    current: &HostTaskSpec,
    mut edited: HostTaskSpec,
) -> HostTaskSpec {
    edited.rerun = current.rerun;
    edited.registry_auth = current.registry_auth.clone();
    edited.disruption = current.disruption.clone();
    if let Some(kept) = &current.rollout {
        let shown = edited.rollout.take();
        edited.rollout = Some(hostplug_api::crd::RolloutSpec {
            max_parallel: shown.as_ref().map_or(kept.max_parallel, |r| r.max_parallel),
            max_failures: shown.as_ref().map_or(kept.max_failures, |r| r.max_failures),
            ..kept.clone()
        });
    }
    if let (Some(old), Some(new)) = (&current.http, edited.http.as_mut())
        && old.call.api == new.call.api
        && old.call.method == new.call.method
    {
        new.call.vars = old.call.vars.clone();
    }
    edited
}

/// A rollout control (pause, resume, cancel) of the task `name`, as `kubectl hostplug`
/// makes it ([`hostplug_api::rollout::Control`]): one change of `spec.rollout`, which
/// the operator applies to the run in progress (no new run starts), recorded in the
/// audit log. Refused for a task that has ended.
pub async fn control_task(
    state: &AppState,
    user: &AuthUser,
    ip: &str,
    name: &str,
    control: hostplug_api::rollout::Control,
) -> AppResult<TaskView> {
    user.require(Role::Operator)?;
    let task = state
        .cluster
        .get_task(name)
        .await?
        .ok_or(AppError::NotFound)?;
    if task.observed_generation == Some(task.generation)
        && matches!(task.state.as_str(), "Succeeded" | "Failed")
    {
        return Err(AppError::BadRequest(format!(
            "task {name} has ended ({}); there is no rollout left to control",
            task.state
        )));
    }
    let (change, did) = control.change(task.rollout.as_ref());
    let mut spec = task.spec.clone();
    change.apply(&mut spec.rollout);
    let view = state.cluster.update_task(name, &spec, &user.name).await?;
    record(state, &user.name, "task.control", name, &did, ip).await?;
    Ok(view)
}

/// Creates a revert task of the task `name` (`spec.revert`: every node it changed, no
/// force), named `revert-<name>-<5 random chars>`, and records it. The operator checks
/// the rest (the task exists, ran, changed something) and says so in its status.
pub async fn revert_task(
    state: &AppState,
    user: &AuthUser,
    ip: &str,
    name: &str,
) -> AppResult<TaskView> {
    user.require(Role::Operator)?;
    let task = state
        .cluster
        .get_task(name)
        .await?
        .ok_or(AppError::NotFound)?;
    if task.spec.revert.is_some() {
        return Err(AppError::BadRequest(
            "a revert task cannot be reverted".to_owned(),
        ));
    }
    let mut revert_name = generate_task_name("revert", name, false);
    revert_name.truncate(MAX_TASK_NAME);
    let revert_name = revert_name.trim_end_matches('-').to_owned();
    let spec = HostTaskSpec {
        targets: hostplug_api::NodeTargets::default(),
        http: None,
        revert: Some(hostplug_api::crd::RevertSpec {
            task: name.to_owned(),
            nodes: Vec::new(),
            force: false,
        }),
        dry_run: false,
        timeout_seconds: task.spec.timeout_seconds,
        rollout: None,
        ttl_seconds_after_finished: None,
        registry_auth: None,
        rerun: 0,
        on_change: Vec::new(),
        disruption: None,
    };
    let view = state
        .cluster
        .create_task(&revert_name, &spec, &user.name)
        .await?;
    record(state, &user.name, "task.revert", &revert_name, name, ip).await?;
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
