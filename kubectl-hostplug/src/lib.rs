//! `kubectl hostplug`: the administrator's command line for hostplug, a kubectl plugin
//! (kubectl runs any `kubectl-hostplug` on the PATH as `kubectl hostplug`).
//!
//! * `run PLUGIN METHOD` creates a HostTask (`--nodes`, `--target`, `--selector`,
//!   `--param k=v`, `--dry-run`), and with `--wait` follows its rollout with a live
//!   progress bar, prints each node's result and diff and exits non-zero when it failed;
//! * `status TASK`: the per-node table and every node's diff and output;
//! * `logs TASK [--node N]`: each node's plugin log tail from the task's status and,
//!   when the user may read Pod logs in the operator's namespace, the worker's own lines
//!   about that node's call ([`logs`]);
//! * `rerun TASK`: the task again, unchanged, as a new generation (it raises
//!   `spec.rerun`; the operator runs every new generation), and with `--wait` follows it;
//! * `revert TASK [--nodes …] [--force]`: creates a revert HostTask (`spec.revert`)
//!   that restores exactly what TASK's current run changed under /etc on its nodes (or
//!   those named), from the records the nodes keep, and follows it as `run --wait` does
//!   (`--no-wait`: just create it);
//! * `pause TASK`, `resume TASK`, `cancel TASK`: the rollout's controls, one patch each
//!   (`spec.rollout.paused`; `paused` cleared and, when the rollout waits at a gate,
//!   `spec.rollout.approvedWave`; `spec.rollout.cancel`), which go on with the run in
//!   progress instead of starting a new one;
//! * `plugins`: the catalog, each method with a parameter summary from its schema;
//! * `explain PLUGIN METHOD`: the method's parameters with their descriptions;
//! * `__complete WORDS…` (hidden): shell completion for kubectl's
//!   `kubectl_complete-hostplug` protocol ([`complete`]).
//!
//! Nothing it prints that came from the cluster (plugin, node and API-server text) keeps
//! its terminal control sequences ([`terminal`]).
//!
//! It talks to the API server as the user, with the user's kubeconfig (`--kubeconfig`,
//! `KUBECONFIG`, `~/.kube/config`, `--context`) and RBAC: it needs exactly `create`,
//! `get`, `list`, `watch` and (for `rerun`, `pause`, `resume`, `cancel`) `patch` on `hosttasks` in the operator's
//! namespace and `get`/`list` on `hostplugins` — never more than a `kubectl apply` of the
//! same task would; `logs` reads `pods/log` in the operator's namespace when it may, and
//! does without otherwise. It never reaches a node or a worker itself.

pub mod catalog;
pub mod complete;
pub mod follow;
pub mod logs;
pub mod params;
pub mod render;
pub mod terminal;

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use hostplug_api::crd::{
    HostPlugin, HostTask, HostTaskSpec, HttpSpec, RevertSpec, RolloutSpec, TargetType, TaskState,
};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::Serialize;

use crate::catalog::{MethodSummary, PluginSummary};

/// Exit code of `run --wait` when the task ran and failed (a node failed, or the operator
/// refused the task): distinct from [`EXIT_ERROR`], so a script can tell "the change
/// failed" from "the command could not do its job".
pub const EXIT_TASK_FAILED: u8 = 1;
/// Exit code when the command itself failed: an unknown plugin or method, a bad
/// parameter, an API error, a `--wait` timeout. Usage errors (clap) exit 2 as well.
pub const EXIT_ERROR: u8 = 2;
/// Namespace of tasks when neither `-n` nor `HOSTPLUG_NAMESPACE` is given: the
/// operator's own, the only one it watches by default (not the kubeconfig's namespace,
/// where a task would wait forever).
pub const DEFAULT_NAMESPACE: &str = "hostplug-system";
/// How long `run --wait` waits by default: ten minutes, beyond a default rollout of
/// hundreds of nodes at `timeoutSeconds` 60 and `maxParallel` 10, short of forever.
pub const DEFAULT_WAIT_SECONDS: u64 = 600;
/// Longest generated task name prefix (`PLUGIN-METHOD-`): the API server appends five
/// characters to a `generateName`, and names must fit 63 to serve as label values.
const MAX_GENERATE_PREFIX: usize = 52;

/// What goes wrong in a way the user can fix, said in their terms.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No HostPlugin of that name.
    #[error("no plugin {name:?}; the cluster has: {known} (see `kubectl hostplug plugins`)")]
    UnknownPlugin {
        /// The name asked for.
        name: String,
        /// The plugins that exist, comma-separated.
        known: String,
    },
    /// The plugin has no such method.
    #[error("plugin {plugin:?} has no method {method:?}; it has: {known}")]
    UnknownMethod {
        /// The plugin.
        plugin: String,
        /// The method asked for.
        method: String,
        /// The methods it has, comma-separated.
        known: String,
    },
    /// The plugin has not described itself (yet).
    #[error("plugin {name:?} is not ready: {message}")]
    PluginNotReady {
        /// The plugin.
        name: String,
        /// The operator's note.
        message: String,
    },
    /// A `--param` that is wrong.
    #[error("parameter {name}: {reason}")]
    BadParam {
        /// The parameter's name (dotted).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Bad targeting flags.
    #[error("{0}")]
    BadTarget(String),
    /// A `--var`, `--var-from-secret` or `--var-from-configmap` that is wrong.
    #[error("{flag} {arg:?}: {reason}")]
    BadVar {
        /// The flag.
        flag: &'static str,
        /// The flag's value.
        arg: String,
        /// What is wrong.
        reason: String,
    },
    /// A `--on-change` that is wrong.
    #[error("--on-change {arg:?}: {reason}")]
    BadFollowUp {
        /// The flag's value.
        arg: String,
        /// What is wrong.
        reason: String,
    },
    /// `--wait` ran out of time.
    #[error(
        "task {name} did not end within {seconds} s (it goes on; see `kubectl hostplug status {name}`)"
    )]
    WaitTimeout {
        /// The task.
        name: String,
        /// The wait.
        seconds: u64,
    },
    /// The watch of a task kept failing.
    #[error("watching task {name}")]
    Watch {
        /// The task.
        name: String,
        /// The last failure.
        #[source]
        source: kube::runtime::watcher::Error,
    },
    /// `logs --node` names a node the task does not run on.
    #[error("task {task} has no node {node:?}; its nodes: {known}")]
    UnknownNode {
        /// The node asked for.
        node: String,
        /// The task.
        task: String,
        /// The task's nodes, comma-separated.
        known: String,
    },
    /// `rerun` of a task whose current generation has not ended.
    #[error(
        "task {name} is still {state} (generation {generation}); rerun it when it has ended \
         (`kubectl hostplug status {name}`)"
    )]
    StillRunning {
        /// The task.
        name: String,
        /// Its state.
        state: String,
        /// Its generation.
        generation: i64,
    },
    /// Something that should not happen.
    #[error("{0}")]
    Internal(String),
}

/// `kubectl hostplug`: run host actions as HostTasks and read the plugin catalog.
#[derive(Debug, Parser)]
#[command(name = "kubectl-hostplug", bin_name = "kubectl hostplug", version)]
pub struct Cli {
    /// Kubeconfig file (default: the files in KUBECONFIG, then ~/.kube/config, then
    /// in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Kubeconfig context (default: the current one).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace of the tasks: the operator's.
    #[arg(short, long, global = true, env = "HOSTPLUG_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Output for scripts instead of text.
    #[arg(short, long, global = true, value_enum)]
    pub output: Option<Output>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Machine-readable output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// JSON, one document.
    Json,
    /// YAML, one document.
    Yaml,
}

/// Node roles for `--target` (`spec.targetType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Control-plane nodes.
    Master,
    /// Nodes that are not control-plane nodes.
    Node,
    /// Every node.
    All,
}

impl From<Target> for TargetType {
    fn from(t: Target) -> Self {
        match t {
            Target::Master => Self::Master,
            Target::Node => Self::Node,
            Target::All => Self::All,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a HostTask running PLUGIN's METHOD on nodes; with --wait, follow it.
    Run(Box<RunArgs>),
    /// A task's state, its per-node table, and each node's diff and output.
    Status {
        /// The HostTask's name.
        task: String,
    },
    /// What happened on each node: the plugin's log tail the task's status keeps, and
    /// the worker's own log lines about that node's call (its invocation
    /// `<task uid>/<generation>/<node>`) when you may read Pod logs in the operator's
    /// namespace — otherwise a note says why they are not shown.
    Logs(LogsArgs),
    /// Run a task again, unchanged, as a new generation of the same task (no YAML to
    /// edit): raises its `spec.rerun` counter. Only once its current generation ended.
    Rerun {
        /// The HostTask's name.
        task: String,
        /// Follow the new generation until it ends; exit 1 if it failed.
        #[arg(short, long)]
        wait: bool,
        /// Give up waiting after this many seconds (the task goes on).
        #[arg(long, default_value_t = DEFAULT_WAIT_SECONDS, value_name = "SECONDS")]
        wait_timeout: u64,
    },
    /// Undo a task's change: create a revert task (`spec.revert`) that restores exactly
    /// what TASK's current run changed under /etc on its nodes (bytes, mode, owner; files
    /// it created go, files it removed come back), from the records the nodes keep, and
    /// follow it until it ends; exit 1 if a node was not reverted. A node whose file
    /// changed since the task is not reverted (its message names the file, with the
    /// diff) unless --force.
    Revert(RevertArgs),
    /// Pause a task's rollout, as `kubectl rollout pause` does a Deployment's: nodes in
    /// flight finish, no node or health check starts (sets `spec.rollout.paused`).
    Pause {
        /// The HostTask's name.
        task: String,
    },
    /// Resume a task's rollout: clears `spec.rollout.paused` and, when the rollout waits
    /// at the gate after a wave (a failed gate, too many failed nodes, or an approval
    /// asked for), approves that wave (`spec.rollout.approvedWave`) so the next starts.
    Resume {
        /// The HostTask's name.
        task: String,
    },
    /// Cancel a task's rollout: nodes in flight finish, nodes not started end Skipped,
    /// and the task fails naming the cancel (sets `spec.rollout.cancel`).
    Cancel {
        /// The HostTask's name.
        task: String,
    },
    /// The plugins, their methods and a summary of each method's parameters.
    Plugins,
    /// One method of a plugin: what it does and each parameter with its description.
    Explain {
        /// The HostPlugin's name.
        plugin: String,
        /// The method.
        method: String,
    },
    /// Shell completion: the candidates for the last of WORDS (kubectl runs this
    /// through a `kubectl_complete-hostplug` script).
    #[command(name = "__complete", hide = true)]
    Complete {
        /// The words after `hostplug`; the last one is being typed.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
}

/// `logs`' arguments.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The HostTask's name.
    pub task: String,
    /// Only this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Namespace of the worker Pods: the operator's (its `--namespace`).
    #[arg(long, default_value = DEFAULT_NAMESPACE, value_name = "NAMESPACE")]
    pub operator_namespace: String,
    /// Only the plugin's lines from the task's status; do not read the worker Pods' logs.
    #[arg(long)]
    pub no_worker: bool,
}

/// `revert`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RevertArgs {
    /// The HostTask whose change to undo (`spec.revert.task`).
    pub task: String,
    /// Only these nodes, comma-separated or repeated (`spec.revert.nodes`; default: every
    /// node the task changed).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Restore files that changed since the task ran, too (`spec.revert.force`).
    #[arg(long)]
    pub force: bool,
    /// Name of the revert task (default: generated, revert-TASK-xxxxx).
    #[arg(long)]
    pub name: Option<String>,
    /// Nodes reverted at once (`spec.rollout.maxParallel`).
    #[arg(long)]
    pub max_parallel: Option<i32>,
    /// Create the revert task and return; do not follow it.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up following after this many seconds (the revert goes on).
    #[arg(long, default_value_t = DEFAULT_WAIT_SECONDS, value_name = "SECONDS")]
    pub wait_timeout: u64,
}

/// The revert task `revert` describes (`spec.revert`; no call of its own).
pub fn revert_spec_of(args: &RevertArgs) -> HostTaskSpec {
    HostTaskSpec {
        targets: hostplug_api::NodeTargets::default(),
        http: None,
        revert: Some(RevertSpec {
            task: args.task.clone(),
            nodes: args
                .nodes
                .iter()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
            force: args.force,
        }),
        dry_run: false,
        timeout_seconds: hostplug_api::crd::DEFAULT_TIMEOUT_SECONDS,
        rollout: args.max_parallel.map(|max_parallel| RolloutSpec {
            max_parallel,
            ..RolloutSpec::default()
        }),
        ttl_seconds_after_finished: None,
        registry_auth: None,
        rerun: 0,
        on_change: Vec::new(),
        disruption: None,
    }
}

/// Follows task `name` until it ends, prints it (or its object in `-o json|yaml`) and
/// answers the exit code: 0 when it succeeded, [`EXIT_TASK_FAILED`] otherwise — what
/// `run --wait`, `rerun --wait` and `revert` all end with.
async fn follow_and_report(
    api: &Api<HostTask>,
    name: &str,
    timeout: Duration,
    out: &Printer,
) -> anyhow::Result<u8> {
    let ended = follow::until_finished(api, name, timeout, out.format.is_some()).await?;
    out.print(&ended, || render::task(&ended, out.colour))?;
    let failed = ended
        .status
        .as_ref()
        .is_none_or(|s| s.state != TaskState::Succeeded);
    Ok(if failed { EXIT_TASK_FAILED } else { 0 })
}

/// `revert`: checks the task exists (a clear error before anything is created), creates
/// the revert task and, unless `--no-wait`, follows it until it ends.
async fn revert_task(
    client: &Client,
    namespace: &str,
    args: &RevertArgs,
    out: &Printer,
) -> anyhow::Result<u8> {
    let api: Api<HostTask> = Api::namespaced(client.clone(), namespace);
    if api
        .get_opt(&args.task)
        .await
        .with_context(|| format!("reading HostTask {namespace}/{}", args.task))?
        .is_none()
    {
        anyhow::bail!(
            "no HostTask {:?} in namespace {namespace} (see `kubectl get hosttasks -n {namespace}`)",
            args.task
        );
    }
    let mut task = HostTask::new("", revert_spec_of(args));
    task.metadata.name = args.name.clone();
    if args.name.is_none() {
        let mut prefix = format!("revert-{}", args.task).to_lowercase();
        prefix.truncate(MAX_GENERATE_PREFIX);
        task.metadata.generate_name = Some(format!("{}-", prefix.trim_end_matches('-')));
    }
    task.metadata.namespace = Some(namespace.to_owned());
    let created = api
        .create(&PostParams::default(), &task)
        .await
        .with_context(|| format!("creating a revert HostTask in namespace {namespace}"))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    if args.no_wait {
        out.print(&created, || {
            format!("hosttask.hostplug.dev/{} created\n", terminal::plain(&name))
        })?;
        return Ok(0);
    }
    if out.format.is_none() {
        eprintln!(
            "hosttask.hostplug.dev/{name} created; following the revert of {} …",
            args.task
        );
    }
    follow_and_report(&api, &name, Duration::from_secs(args.wait_timeout), out).await
}

/// `run`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The HostPlugin's name (`spec.http.api`).
    pub plugin: String,
    /// The method (`spec.http.method`).
    pub method: String,
    /// Node names, comma-separated or repeated (`spec.workers`).
    #[arg(long, value_delimiter = ',', conflicts_with = "target")]
    pub nodes: Vec<String>,
    /// Nodes by role (`spec.targetType`).
    #[arg(long, value_enum)]
    pub target: Option<Target>,
    /// Label selector narrowing --target (`spec.nodeSelector`, kubectl -l syntax); without
    /// --target it selects among all nodes.
    #[arg(short = 'l', long, conflicts_with = "nodes")]
    pub selector: Option<String>,
    /// A parameter: NAME=VALUE (typed by the method's schema) or NAME:=JSON; repeat.
    #[arg(short, long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Report what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Follow the rollout until it ends; exit 1 if the task failed.
    #[arg(short, long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (the task goes on).
    #[arg(long, default_value_t = DEFAULT_WAIT_SECONDS, value_name = "SECONDS")]
    pub wait_timeout: u64,
    /// Task name (default: generated, PLUGIN-METHOD-xxxxx).
    #[arg(long)]
    pub name: Option<String>,
    /// Per-node deadline in seconds (`spec.timeoutSeconds`).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<i32>,
    /// Nodes in flight at once (`spec.rollout.maxParallel`).
    #[arg(long)]
    pub max_parallel: Option<i32>,
    /// Failed nodes tolerated before the rollout stops (`spec.rollout.maxFailures`).
    #[arg(long)]
    pub max_failures: Option<i32>,
    /// Remove the task's worker objects this long after it ends (`spec.ttlSecondsAfterFinished`).
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<i32>,
    /// A value for `$(NAME)` in the parameters' strings (`spec.http.vars[].value`):
    /// NAME=VALUE; repeat.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// A value for `$(NAME)` read from a key of a Secret in the task's namespace, masked
    /// in every status, Event and log (`vars[].valueFrom.secretKeyRef`): NAME=SECRET/KEY.
    #[arg(long = "var-from-secret", value_name = "NAME=SECRET/KEY")]
    pub vars_from_secret: Vec<String>,
    /// A value for `$(NAME)` read from a key of a ConfigMap in the task's namespace
    /// (`vars[].valueFrom.configMapKeyRef`): NAME=CONFIGMAP/KEY.
    #[arg(long = "var-from-configmap", value_name = "NAME=CONFIGMAP/KEY")]
    pub vars_from_configmap: Vec<String>,
    /// A follow-up call on each node whose main call changed it (`spec.onChange`), e.g.
    /// `systemd-unit/restart={"unit":"chrony.service"}`: PLUGIN/METHOD, then optionally
    /// `=` and the parameters as a JSON object; repeat, run in order.
    #[arg(long = "on-change", value_name = "PLUGIN/METHOD[=JSON]")]
    pub on_change: Vec<String>,
}

/// Runs the command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Command::Run(args) = &cli.command {
        // Flag mistakes first: they need no cluster to be told.
        spec_of(args, catalog::empty_object())?;
    }
    if let Command::Complete { words } = &cli.command {
        // Quiet whatever happens: the shell shows every line printed.
        let plugins = match client(&cli).await {
            Ok(c) => list_plugins(&c).await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        print!("{}", complete::complete(&plugins, words).render());
        return Ok(0);
    }
    let client = client(&cli).await?;
    let out = Printer::new(cli.output);
    match &cli.command {
        Command::Plugins => {
            let plugins = list_plugins(&client).await?;
            let list: Vec<PluginSummary> = plugins.iter().map(PluginSummary::of).collect();
            out.print(&list, || render::plugins(&list))?;
            Ok(0)
        }
        Command::Explain { plugin, method } => {
            let plugins = list_plugins(&client).await?;
            let hp = catalog::find_plugin(&plugins, plugin)?;
            let info = catalog::info_of(hp)?;
            let m = MethodSummary::of(catalog::find_method(info, plugin, method)?);
            let p = PluginSummary::of(hp);
            out.print(&m, || render::explain(&p, &m))?;
            Ok(0)
        }
        Command::Status { task } => {
            let api: Api<HostTask> = Api::namespaced(client, &cli.namespace);
            let t = api
                .get(task)
                .await
                .with_context(|| format!("reading HostTask {}/{task}", cli.namespace))?;
            out.print(&t, || render::task(&t, out.colour))?;
            Ok(0)
        }
        Command::Run(args) => run_task(&client, &cli.namespace, args, &out).await,
        Command::Logs(args) => {
            let api: Api<HostTask> = Api::namespaced(client.clone(), &cli.namespace);
            let t = api
                .get(&args.task)
                .await
                .with_context(|| format!("reading HostTask {}/{}", cli.namespace, args.task))?;
            let nodes = logs::select(&t, args.node.as_deref())?;
            let pods = Api::namespaced(client, &args.operator_namespace);
            let shown =
                logs::collect(&t, &nodes, &pods, &args.operator_namespace, !args.no_worker).await;
            out.print(&shown, || logs::render(&t, &shown))?;
            Ok(0)
        }
        Command::Rerun {
            task,
            wait,
            wait_timeout,
        } => rerun_task(&client, &cli.namespace, task, *wait, *wait_timeout, &out).await,
        Command::Revert(args) => revert_task(&client, &cli.namespace, args, &out).await,
        Command::Pause { task } => {
            control(&client, &cli.namespace, task, Control::Pause, &out).await
        }
        Command::Resume { task } => {
            control(&client, &cli.namespace, task, Control::Resume, &out).await
        }
        Command::Cancel { task } => {
            control(&client, &cli.namespace, task, Control::Cancel, &out).await
        }
        Command::Complete { .. } => Ok(0),
    }
}

pub use hostplug_api::rollout::Control;

/// The merge patch `control` makes to `t`, and what it did (for the message): pause
/// sets `paused`; resume clears it and approves the wave the rollout waits at, if it
/// waits at a gate; cancel sets `cancel`. The patch carries the resourceVersion read, so
/// a concurrent change fails it (409) instead of being raced.
pub fn control_patch(t: &HostTask, control: Control) -> (serde_json::Value, String) {
    let rv = &t.metadata.resource_version;
    let rollout = t.status.as_ref().and_then(|s| s.rollout.as_ref());
    let (change, did) = control.change(rollout);
    // A merge patch: `false` is the field's default, written as its absence (null).
    let mut fields = serde_json::Map::new();
    if let Some(p) = change.paused {
        fields.insert(
            "paused".into(),
            if p {
                true.into()
            } else {
                serde_json::Value::Null
            },
        );
    }
    if let Some(w) = change.approved_wave {
        fields.insert("approvedWave".into(), w.into());
    }
    if let Some(c) = change.cancel {
        fields.insert(
            "cancel".into(),
            if c {
                true.into()
            } else {
                serde_json::Value::Null
            },
        );
    }
    (
        serde_json::json!({"metadata": {"resourceVersion": rv}, "spec": {"rollout": fields}}),
        did,
    )
}

/// `pause`, `resume`, `cancel`: one patch of the task's `spec.rollout` controls, which
/// the operator applies to the run in progress (no new run starts).
async fn control(
    client: &Client,
    namespace: &str,
    name: &str,
    control: Control,
    out: &Printer,
) -> anyhow::Result<u8> {
    let api: Api<HostTask> = Api::namespaced(client.clone(), namespace);
    let t = api
        .get(name)
        .await
        .with_context(|| format!("reading HostTask {namespace}/{name}"))?;
    if follow::finished(&t) {
        anyhow::bail!(
            "task {name} has ended ({:?}); there is no rollout left to {}",
            t.status.as_ref().map(|s| s.state).unwrap_or_default(),
            format!("{control:?}").to_lowercase()
        );
    }
    let (patch, did) = control_patch(&t, control);
    let patched = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patching spec.rollout of HostTask {namespace}/{name}"))?;
    out.print(&patched, || {
        format!("hosttask.hostplug.dev/{} {did}\n", terminal::plain(name))
    })?;
    Ok(0)
}

async fn run_task(
    client: &Client,
    namespace: &str,
    args: &RunArgs,
    out: &Printer,
) -> anyhow::Result<u8> {
    let plugins = list_plugins(client).await?;
    let hp = catalog::find_plugin(&plugins, &args.plugin)?;
    let info = catalog::info_of(hp)?;
    let method = catalog::find_method(info, &args.plugin, &args.method)?;
    let parameter = params::build(&args.params, method.params_schema.as_ref())?;
    let spec = spec_of(args, parameter)?;
    let mut task = HostTask::new("", spec);
    task.metadata.name = args.name.clone();
    if args.name.is_none() {
        let mut prefix = format!("{}-{}", args.plugin, args.method).to_lowercase();
        prefix.truncate(MAX_GENERATE_PREFIX);
        task.metadata.generate_name = Some(format!("{}-", prefix.trim_end_matches('-')));
    }
    task.metadata.namespace = Some(namespace.to_owned());
    let api: Api<HostTask> = Api::namespaced(client.clone(), namespace);
    let created = api
        .create(&PostParams::default(), &task)
        .await
        .with_context(|| format!("creating a HostTask in namespace {namespace}"))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    if !args.wait {
        out.print(&created, || {
            format!("hosttask.hostplug.dev/{} created\n", terminal::plain(&name))
        })?;
        return Ok(0);
    }
    if out.format.is_none() {
        eprintln!(
            "hosttask.hostplug.dev/{name} created; following {} {} …",
            args.plugin, args.method
        );
    }
    follow_and_report(&api, &name, Duration::from_secs(args.wait_timeout), out).await
}

/// `rerun`: raises `spec.rerun` of a task whose current generation ended, so the API
/// server makes a new generation and the operator runs it; the patch carries the
/// resourceVersion read, so a concurrent change fails it (409) instead of being raced.
async fn rerun_task(
    client: &Client,
    namespace: &str,
    name: &str,
    wait: bool,
    wait_timeout: u64,
    out: &Printer,
) -> anyhow::Result<u8> {
    let api: Api<HostTask> = Api::namespaced(client.clone(), namespace);
    let t = api
        .get(name)
        .await
        .with_context(|| format!("reading HostTask {namespace}/{name}"))?;
    if !follow::finished(&t) {
        return Err(Error::StillRunning {
            name: name.to_owned(),
            state: format!(
                "{:?}",
                t.status.as_ref().map(|s| s.state).unwrap_or_default()
            ),
            generation: t.metadata.generation.unwrap_or_default(),
        }
        .into());
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": t.metadata.resource_version},
        "spec": {"rerun": t.spec.rerun.saturating_add(1)},
    });
    let patched = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("raising spec.rerun of HostTask {namespace}/{name}"))?;
    let generation = patched.metadata.generation.unwrap_or_default();
    if !wait {
        out.print(&patched, || {
            format!(
                "hosttask.hostplug.dev/{} rerun (generation {generation})\n",
                terminal::plain(name)
            )
        })?;
        return Ok(0);
    }
    if out.format.is_none() {
        eprintln!("hosttask.hostplug.dev/{name} rerun (generation {generation}); following …");
    }
    follow_and_report(&api, name, Duration::from_secs(wait_timeout), out).await
}

/// The task spec the flags describe.
pub fn spec_of(args: &RunArgs, parameter: serde_json::Value) -> Result<HostTaskSpec, Error> {
    let node_selector = match &args.selector {
        Some(text) => hostplug_api::selector::parse(text)
            .map_err(|e| Error::BadTarget(format!("--selector: {e}")))?,
        None => None,
    };
    let workers: Vec<String> = args
        .nodes
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    let target_type = match (args.target, &node_selector) {
        (Some(t), _) => Some(t.into()),
        (None, Some(_)) => Some(TargetType::All),
        (None, None) => None,
    };
    if workers.is_empty() && target_type.is_none() {
        return Err(Error::BadTarget(
            "say which nodes: --nodes NAME,…, --target master|node|all, or --selector LABELS"
                .to_owned(),
        ));
    }
    let rollout = (args.max_parallel.is_some() || args.max_failures.is_some()).then(|| {
        let d = RolloutSpec::default();
        RolloutSpec {
            max_parallel: args.max_parallel.unwrap_or(d.max_parallel),
            max_failures: args.max_failures.unwrap_or(d.max_failures),
            ..d
        }
    });
    let has_params = parameter.as_object().is_none_or(|o| !o.is_empty());
    Ok(HostTaskSpec {
        disruption: None,
        targets: hostplug_api::NodeTargets {
            workers,
            target_type,
            node_selector,
        },
        http: Some(HttpSpec {
            port: hostplug_api::crd::DEFAULT_WORKER_PORT,
            call: hostplug_api::PluginCall {
                api: args.plugin.clone(),
                method: args.method.clone(),
                parameter: has_params.then_some(parameter),
                vars: vars_of(args)?,
            },
        }),
        revert: None,
        dry_run: args.dry_run,
        timeout_seconds: args
            .timeout
            .unwrap_or(hostplug_api::crd::DEFAULT_TIMEOUT_SECONDS),
        rollout,
        ttl_seconds_after_finished: args.ttl,
        registry_auth: None,
        on_change: args
            .on_change
            .iter()
            .map(|c| follow_up(c))
            .collect::<Result<_, _>>()?,
        rerun: 0,
    })
}

/// The `--var*` flags as the call's `vars`, in the order given per flag.
fn vars_of(args: &RunArgs) -> Result<Vec<hostplug_api::call::CallVar>, Error> {
    use hostplug_api::call::{CallVar, KeyRef, VarSource};
    let split = |flag: &'static str, arg: &str| {
        arg.split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .ok_or_else(|| Error::BadVar {
                flag,
                arg: arg.to_owned(),
                reason: "expected NAME=…".into(),
            })
    };
    let key_ref = |flag: &'static str, arg: &str, from: &str| {
        from.split_once('/')
            .filter(|(o, k)| !o.is_empty() && !k.is_empty())
            .map(|(o, k)| KeyRef {
                namespace: None,
                name: o.to_owned(),
                key: k.to_owned(),
            })
            .ok_or_else(|| Error::BadVar {
                flag,
                arg: arg.to_owned(),
                reason: "expected NAME=OBJECT/KEY".into(),
            })
    };
    let mut vars = Vec::new();
    for arg in &args.vars {
        let (name, value) = split("--var", arg)?;
        vars.push(CallVar {
            name,
            value: Some(value),
            value_from: None,
        });
    }
    for (flag, list, secret) in [
        ("--var-from-secret", &args.vars_from_secret, true),
        ("--var-from-configmap", &args.vars_from_configmap, false),
    ] {
        for arg in list {
            let (name, from) = split(flag, arg)?;
            let r = key_ref(flag, arg, &from)?;
            vars.push(CallVar {
                name,
                value: None,
                value_from: Some(VarSource {
                    config_map_key_ref: (!secret).then(|| r.clone()),
                    secret_key_ref: secret.then_some(r),
                }),
            });
        }
    }
    Ok(vars)
}

/// A `--on-change PLUGIN/METHOD[=JSON]` value as a call.
fn follow_up(arg: &str) -> Result<hostplug_api::PluginCall, Error> {
    let bad = |reason: &str| Error::BadFollowUp {
        arg: arg.to_owned(),
        reason: reason.to_owned(),
    };
    let (name, params) = match arg.split_once('=') {
        Some((name, json)) => {
            let params: serde_json::Value = serde_json::from_str(json)
                .map_err(|e| bad(&format!("the parameters are not JSON: {e}")))?;
            if !params.is_object() {
                return Err(bad("the parameters must be a JSON object"));
            }
            (name, Some(params))
        }
        None => (arg, None),
    };
    let Some((api, method)) = name
        .split_once('/')
        .filter(|(a, m)| !a.is_empty() && !m.is_empty())
    else {
        return Err(bad("expected PLUGIN/METHOD, then optionally =JSON"));
    };
    Ok(hostplug_api::PluginCall {
        api: api.to_owned(),
        method: method.to_owned(),
        parameter: params,
        vars: Vec::new(),
    })
}

async fn list_plugins(client: &Client) -> anyhow::Result<Vec<HostPlugin>> {
    let api: Api<HostPlugin> = Api::all(client.clone());
    let mut list = api
        .list(&ListParams::default())
        .await
        .context("listing HostPlugins")?
        .items;
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(list)
}

/// A client as the user: the kubeconfig (and context) asked for, else the usual search.
async fn client(cli: &Cli) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None if cli.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .context("reading the kubeconfig")?,
        None => Config::infer()
            .await
            .context("finding a kubeconfig (set KUBECONFIG or --kubeconfig)")?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}

/// Where results go: stdout, as text (coloured on a terminal unless `NO_COLOR`) or as
/// one JSON/YAML document.
#[derive(Debug)]
struct Printer {
    format: Option<Output>,
    colour: bool,
}

impl Printer {
    fn new(format: Option<Output>) -> Self {
        let colour = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Self { format, colour }
    }

    fn print<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
        let s = match self.format {
            Some(format) => document(format, value)?,
            None => text(),
        };
        print!("{s}");
        Ok(())
    }
}

/// `value` as one JSON or YAML document. Control characters in its strings are escaped
/// (JSON: C0 by serde_json, C1 by [`terminal::escape_c1`]; YAML: every non-printable
/// one by the emitter), so a script gets the exact data and a terminal no sequence.
pub fn document<T: Serialize>(format: Output, value: &T) -> anyhow::Result<String> {
    Ok(match format {
        Output::Json => {
            let mut s = serde_json::to_string_pretty(value).context("writing JSON")?;
            s.push('\n');
            terminal::escape_c1(&s)
        }
        Output::Yaml => serde_yaml::to_string(value).context("writing YAML")?,
    })
}

/// An error as printed on stderr: with its causes, and without the control sequences of
/// any text in it that came from the cluster.
pub fn error_text(e: &anyhow::Error) -> String {
    terminal::plain(&format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["kubectl-hostplug", "run", "etc-file", "read"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Run(a)) => *a,
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn vars_and_follow_ups_become_the_spec() -> Result<(), Error> {
        let spec = spec_of(
            &args(&[
                "--nodes",
                "node1",
                "--var",
                "zone=a=b",
                "--var-from-secret",
                "pw=registry-creds/password",
                "--var-from-configmap",
                "srv=ntp/server",
                "--on-change",
                r#"systemd-unit/restart={"unit":"chrony.service"}"#,
                "--on-change",
                "systemd-unit/daemon-reload",
            ]),
            serde_json::json!({"path": "/etc/x", "line": "$(srv) $(pw)"}),
        )?;
        let vars = serde_json::to_value(spec.http.as_ref().map(|h| &h.call.vars))
            .map_err(|e| Error::BadTarget(e.to_string()))?;
        assert_eq!(
            vars,
            serde_json::json!([
                {"name": "zone", "value": "a=b"},
                {"name": "pw", "valueFrom": {"secretKeyRef": {"name": "registry-creds", "key": "password"}}},
                {"name": "srv", "valueFrom": {"configMapKeyRef": {"name": "ntp", "key": "server"}}},
            ])
        );
        assert_eq!(spec.on_change.len(), 2);
        assert_eq!(spec.on_change[0].api, "systemd-unit");
        assert_eq!(spec.on_change[0].method, "restart");
        assert_eq!(
            spec.on_change[0].parameter,
            Some(serde_json::json!({"unit": "chrony.service"}))
        );
        assert_eq!(spec.on_change[1].parameter, None);
        for (flag, bad, names) in [
            ("--var-from-secret", "pw=nokey", "OBJECT/KEY"),
            ("--var", "novalue", "NAME="),
            ("--on-change", "restart", "PLUGIN/METHOD"),
            ("--on-change", "a/b=[1]", "JSON object"),
        ] {
            let e = spec_of(&args(&["--nodes", "n", flag, bad]), serde_json::json!({}));
            let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                msg.contains(flag) && msg.contains(names),
                "{flag} {bad}: {msg}"
            );
        }
        Ok(())
    }

    /// Each control is one merge patch of `spec.rollout`, fenced by the resourceVersion;
    /// resume approves the wave only when the rollout waits at its gate.
    #[test]
    fn pause_resume_and_cancel_patch_the_rollout_controls() -> anyhow::Result<()> {
        use hostplug_api::crd::{HostTaskStatus, RolloutPhase, RolloutStatus};
        let spec = spec_of(&args(&["--nodes", "n1"]), catalog::empty_object())?;
        let mut t = HostTask::new("t", spec);
        t.metadata.resource_version = Some("42".into());
        let (p, did) = control_patch(&t, Control::Pause);
        assert_eq!(p["spec"]["rollout"], serde_json::json!({"paused": true}));
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        assert_eq!(did, "paused");
        let (p, _) = control_patch(&t, Control::Cancel);
        assert_eq!(p["spec"]["rollout"], serde_json::json!({"cancel": true}));
        let (p, did) = control_patch(&t, Control::Resume);
        assert_eq!(p["spec"]["rollout"], serde_json::json!({"paused": null}));
        assert_eq!(did, "resumed");
        t.status = Some(HostTaskStatus {
            rollout: Some(RolloutStatus {
                wave: 1,
                waves: 2,
                phase: RolloutPhase::Halted,
                ..RolloutStatus::default()
            }),
            ..HostTaskStatus::default()
        });
        let (p, did) = control_patch(&t, Control::Resume);
        assert_eq!(
            p["spec"]["rollout"],
            serde_json::json!({"paused": null, "approvedWave": 1})
        );
        assert_eq!(did, "resumed (wave 1 approved)");
        Ok(())
    }

    #[test]
    fn flags_become_the_spec() -> Result<(), Error> {
        let spec = spec_of(
            &args(&[
                "--nodes",
                "node1,node2",
                "--dry-run",
                "--max-parallel",
                "1",
                "--ttl",
                "30",
            ]),
            serde_json::json!({"path": "/etc/hostname"}),
        )?;
        assert_eq!(spec.targets.workers, ["node1", "node2"]);
        assert_eq!(spec.targets.target_type, None);
        assert!(spec.dry_run);
        assert_eq!(
            spec.rollout.map(|r| (r.max_parallel, r.max_failures)),
            Some((1, 0))
        );
        assert_eq!(spec.ttl_seconds_after_finished, Some(30));
        let spec = spec_of(&args(&["-l", "disk=ssd"]), catalog::empty_object())?;
        assert_eq!(spec.targets.target_type, Some(TargetType::All));
        assert!(spec.targets.node_selector.is_some());
        assert_eq!(spec.http.and_then(|h| h.call.parameter), None);
        let spec = spec_of(&args(&["--target", "master"]), catalog::empty_object())?;
        assert_eq!(spec.targets.target_type, Some(TargetType::Master));
        Ok(())
    }

    #[test]
    fn errors_and_documents_carry_no_control_sequences() -> anyhow::Result<()> {
        let hostile = "\u{1b}]52;c;cm0gLXJmIH4K\u{7}\u{1b}[2J\u{9b}1;1H\u{9d}0;t\u{9c}";
        let controls = |s: &str| s.chars().any(|c| c.is_control() && c != '\n');
        let e = anyhow::Error::new(Error::PluginNotReady {
            name: "p".into(),
            message: format!("not loaded{hostile}"),
        })
        .context(format!("listing{hostile}"));
        let text = error_text(&e);
        assert!(!controls(&text), "{text:?}");
        assert!(text.contains("not loaded"), "{text}");
        let value = serde_json::json!({"msg": format!("a{hostile}b")});
        for format in [Output::Json, Output::Yaml] {
            let doc = document(format, &value)?;
            assert!(!controls(&doc), "{format:?}: {doc:?}");
            let back: serde_json::Value = match format {
                Output::Json => serde_json::from_str(&doc)?,
                Output::Yaml => serde_yaml::from_str(&doc)?,
            };
            assert_eq!(back, value, "{format:?} changed the data");
        }
        Ok(())
    }

    #[test]
    fn targeting_mistakes_are_told() {
        let e = spec_of(&args(&[]), catalog::empty_object())
            .expect_err("no nodes")
            .to_string();
        assert!(e.contains("--nodes") && e.contains("--target"), "{e}");
        let e = spec_of(&args(&["-l", "zone in a"]), catalog::empty_object())
            .expect_err("bad selector")
            .to_string();
        assert!(e.contains("--selector") && e.contains("zone in a"), "{e}");
        assert!(
            Cli::try_parse_from(["k", "run", "p", "m", "--nodes", "a", "--target", "all"]).is_err()
        );
    }
}
