//! `kubectl hostplug`: the administrator's command line for hostplug, a kubectl plugin
//! (kubectl runs any `kubectl-hostplug` on the PATH as `kubectl hostplug`).
//!
//! * `run PLUGIN METHOD` creates a HostTask (`--nodes`, `--target`, `--selector`,
//!   `--param k=v`, `--dry-run`), and with `--wait` follows its rollout with a live
//!   progress bar, prints each node's result and diff and exits non-zero when it failed;
//! * `status TASK`: the per-node table and every node's diff and output;
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
//! `get`, `list` and `watch` on `hosttasks` in the operator's namespace and `get`/`list`
//! on `hostplugins` — never more than a `kubectl apply` of the same task would. It never
//! reaches a node or a worker itself.

pub mod catalog;
pub mod complete;
pub mod follow;
pub mod params;
pub mod render;
pub mod terminal;

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use hostplug_api::crd::{
    HostPlugin, HostTask, HostTaskSpec, HttpSpec, RolloutSpec, TargetType, TaskState,
};
use kube::api::{ListParams, PostParams};
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
    Run(RunArgs),
    /// A task's state, its per-node table, and each node's diff and output.
    Status {
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
        Command::Complete { .. } => Ok(0),
    }
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
    let ended = follow::until_finished(
        &api,
        &name,
        Duration::from_secs(args.wait_timeout),
        out.format.is_some(),
    )
    .await?;
    out.print(&ended, || render::task(&ended, out.colour))?;
    let failed = ended
        .status
        .as_ref()
        .is_none_or(|s| s.state != TaskState::Succeeded);
    Ok(if failed { EXIT_TASK_FAILED } else { 0 })
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
        }
    });
    let has_params = parameter.as_object().is_none_or(|o| !o.is_empty());
    Ok(HostTaskSpec {
        targets: hostplug_api::NodeTargets {
            workers,
            target_type,
            node_selector,
        },
        http: HttpSpec {
            port: hostplug_api::crd::DEFAULT_WORKER_PORT,
            call: hostplug_api::PluginCall {
                api: args.plugin.clone(),
                method: args.method.clone(),
                parameter: has_params.then_some(parameter),
                vars: Vec::new(),
            },
        },
        dry_run: args.dry_run,
        timeout_seconds: args
            .timeout
            .unwrap_or(hostplug_api::crd::DEFAULT_TIMEOUT_SECONDS),
        rollout,
        ttl_seconds_after_finished: args.ttl,
        registry_auth: None,
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
            Ok(Command::Run(a)) => a,
            other => panic!("not a run: {other:?}"),
        }
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
        assert_eq!(spec.http.call.parameter, None);
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
