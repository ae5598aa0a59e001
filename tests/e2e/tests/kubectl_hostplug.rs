//! `kubectl hostplug` as an administrator uses it, against the real control plane and
//! the simulated nodes, authenticated as a user holding only `deploy/rbac/task-runner.yaml`
//! (no extra privilege): the catalog and `explain`; `run --wait` changing exactly the
//! targeted nodes' files; a dry run changing nothing; exit codes (0 succeeded, 1 the task
//! failed, 2 the command could not run); `-o json|yaml` parsed; unknown plugins, methods
//! and parameters refused with what exists named, and no task created for them.
//!
//! Seeing what happened: `logs` shows each node's plugin log tail from the status, says
//! why the worker's own lines are missing where Pod logs cannot be read (a user without
//! `pods/log`; simulated nodes have no kubelet API), and on real nodes shows exactly the
//! worker's lines about the current generation's call; `rerun` makes a new generation
//! that runs on every node once more, and is refused while the task runs; `kubectl get
//! -o wide` shows every kind's message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use hostplug_api::crd::{HostPlugin, HostTask, NodePhase, TaskState};
use hostplug_api::state::HostState;
use hostplug_e2e::{Harness, NAMESPACE, changed_files, repo_root, workspace_binary};
use kube::Api;
use kube::api::ListParams;

/// The user the CLI runs as: a ServiceAccount bound to the documented task-runner roles.
const USER: &str = "alice";

struct Cli {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Cli {
    async fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(tokio::process::Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("HOSTPLUG_NAMESPACE")
            .output()
            .await?)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

async fn task_count(h: &Harness) -> anyhow::Result<usize> {
    Ok(h.tasks().list(&ListParams::default()).await?.items.len())
}

async fn user_kubeconfig(h: &Harness) -> anyhow::Result<PathBuf> {
    h.env
        .apply_yaml_file(repo_root().join("deploy/rbac/task-runner.yaml"))
        .await?;
    h.apply(&format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {USER}, namespace: {NAMESPACE}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {USER}-runs-tasks, namespace: {NAMESPACE}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: hostplug-task-runner}}
subjects: [{{kind: ServiceAccount, name: {USER}, namespace: {NAMESPACE}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {USER}-reads-plugins}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: hostplug-plugin-reader}}
subjects: [{{kind: ServiceAccount, name: {USER}, namespace: {NAMESPACE}}}]
"#
    ))
    .await?;
    Ok(h.env.service_account_kubeconfig(NAMESPACE, USER).await?)
}

fn read_conf(h: &Harness, node: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(
        h.etc(node)?.join(Path::new("chrony.conf")),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_hostplug_runs_follows_and_explains() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let cli = Cli {
        bin: workspace_binary("kubectl-hostplug")?,
        kubeconfig: user_kubeconfig(&h).await?,
    };

    // The catalog, as JSON: etc-file with its methods and their parameters.
    let o = cli.run(&["plugins", "-o", "json"]).await?;
    assert!(o.status.success(), "{}", show(&o));
    let catalog: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let etc_file = catalog
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "etc-file"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(etc_file["ready"], true, "{catalog}");
    let ensure = etc_file["methods"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "ensure-line"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ensure["mutates"], true, "{ensure}");
    let mut required: Vec<&str> = ensure["params"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["required"] == true)
        .filter_map(|p| p["name"].as_str())
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["line", "path"], "{ensure}");
    // … and as text.
    let o = cli.run(&["plugins"]).await?;
    println!("{}", show(&o));
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.contains("ensure-line (mutates)"), "{out}");
    assert!(
        out.contains("path* string")
            && out.contains("line* string")
            && out.contains("create boolean =false"),
        "{out}"
    );

    // explain: every parameter with its description.
    let o = cli.run(&["explain", "etc-file", "ensure-line"]).await?;
    println!("{}", show(&o));
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    let regexp = out
        .lines()
        .find(|l| l.trim_start().starts_with("regexp"))
        .unwrap_or_default();
    assert!(
        regexp.contains("optional") && regexp.contains("Regular expression"),
        "{out}"
    );
    assert!(out.contains("METHOD:  ensure-line (mutates"), "{out}");
    // In the plugin's own order (etc-file declares path, line, regexp, …), not by name.
    let order: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("NAME"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .take(3)
        .collect();
    assert_eq!(order, ["path", "line", "regexp"], "{out}");

    // Unknown names: exit 2, what exists named, no task created.
    let tasks_before = task_count(&h).await?;
    let o = cli
        .run(&["run", "nope", "read", "--nodes", "node1", "--wait"])
        .await?;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains("no plugin \"nope\"") && err.contains("etc-file"),
        "{err}"
    );
    let o = cli
        .run(&["run", "etc-file", "frobnicate", "--nodes", "node1"])
        .await?;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains("no method \"frobnicate\"")
            && err.contains("ensure-line")
            && err.contains("read"),
        "{err}"
    );
    let o = cli.run(&["explain", "etc-file", "frobnicate"]).await?;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = cli
        .run(&[
            "run",
            "etc-file",
            "read",
            "--nodes",
            "node1",
            "--param",
            "path=/etc/hosts",
            "--param",
            "colour=red",
        ])
        .await?;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains("parameter colour") && err.contains("path"),
        "{err}"
    );
    let o = cli
        .run(&[
            "run",
            "etc-file",
            "ensure-line",
            "--nodes",
            "node1",
            "--param",
            "path=/etc/x",
        ])
        .await?;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(text(&o.stderr).contains("line"), "{}", show(&o));
    assert_eq!(
        task_count(&h).await?,
        tasks_before,
        "a refused command created a task"
    );

    // run --wait on two named nodes, -o json: exactly their chrony.conf changes.
    let line = "server ntp.cli.example iburst";
    let before = h.snapshot()?;
    let o = cli
        .run(&[
            "run",
            "etc-file",
            "ensure-line",
            "--nodes",
            "node1,node2",
            "--param",
            "path=/etc/chrony.conf",
            "--param",
            &format!("line={line}"),
            "--max-parallel",
            "1",
            "--wait",
            "-o",
            "json",
        ])
        .await?;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let task: HostTask = serde_json::from_slice(&o.stdout)?;
    let st = task.status.clone().unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded, "{st:?}");
    assert_eq!(st.msg.as_deref(), Some("2/2 nodes succeeded, 2 changed"));
    assert!(
        st.nodes
            .iter()
            .all(|n| n.changed && n.diff.as_deref().is_some_and(|d| d.contains(line)))
    );
    assert_eq!(
        changed_files(&before, &h.snapshot()?),
        [
            ("node1".to_owned(), "chrony.conf".to_owned()),
            ("node2".to_owned(), "chrony.conf".to_owned())
        ]
    );
    for node in ["node1", "node2"] {
        assert!(
            read_conf(&h, node)?.contains(&format!("{line}\n")),
            "{node}"
        );
    }
    let name = task.metadata.name.clone().unwrap_or_default();
    assert!(name.starts_with("etc-file-ensure-line-"), "{name}");
    assert_eq!(task.spec.rollout.map(|r| r.max_parallel), Some(1));

    // status of it, as YAML and as text.
    let o = cli.run(&["status", &name, "-o", "yaml"]).await?;
    assert!(o.status.success(), "{}", show(&o));
    let again: HostTask = serde_yaml::from_slice(&o.stdout)?;
    assert_eq!(again.status, task.status);
    let o = cli.run(&["status", &name]).await?;
    println!("{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.contains("State:    Succeeded"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("node2 "))
        .unwrap_or_default();
    assert!(row.contains("Succeeded") && row.contains("yes"), "{out}");
    assert!(out.contains(&format!("+{line}")), "{out}");
    assert!(!out.contains('\x1b'), "colour off a terminal: {out:?}");

    // A dry run with a selector on every node, as text: diffs shown, nothing written,
    // one progress line per phase change on stderr (not a terminal).
    let before = h.snapshot()?;
    let o = cli
        .run(&[
            "run",
            "etc-file",
            "ensure-line",
            "--selector",
            "kubernetes.io/os=linux",
            "--param",
            "path=/etc/chrony.conf",
            "--param",
            "line=server dry.example",
            "--dry-run",
            "--wait",
            "--name",
            "cli-dry-run",
        ])
        .await?;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(
        out.contains("(dry run)") && out.contains("+server dry.example"),
        "{out}"
    );
    for node in ["master", "node1", "node2"] {
        assert!(out.contains(&format!("== {node} ==")), "{out}");
    }
    println!("{}", show(&o));
    let err = text(&o.stderr);
    assert!(err.contains("cli-dry-run: node1 Succeeded"), "{err}");
    assert_eq!(
        changed_files(&before, &h.snapshot()?),
        vec![],
        "a dry run wrote"
    );

    // On a terminal (a pty from util-linux `script`): the live progress bar is drawn
    // while the rollout runs, and the diff comes coloured.
    let command = format!(
        "'{}' --kubeconfig '{}' run etc-file ensure-line --nodes node1 \
         --param path=/etc/chrony.conf --param 'line=server tty.example' \
         --dry-run --wait --name cli-tty",
        cli.bin.display(),
        cli.kubeconfig.display()
    );
    let o = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("KUBECONFIG")
        .output()
        .await?;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let tty = text(&o.stdout);
    assert!(tty.contains("cli-tty ["), "no progress bar drawn: {tty:?}");
    assert!(tty.contains(" nodes "), "{tty:?}");
    assert!(
        tty.contains("\x1b[32m+server tty.example\x1b[0m"),
        "diff not coloured on a terminal: {tty:?}"
    );

    // A task that fails on its node: exit 1, the node's error printed.
    let o = cli
        .run(&[
            "run",
            "etc-file",
            "read",
            "--nodes",
            "node1",
            "--param",
            "path=/etc/no-such-file",
            "--wait",
        ])
        .await?;
    println!("{}", show(&o));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.contains("State:    Failed"), "{out}");
    assert!(out.contains("no such file"), "{out}");
    // Without --wait: created, exit 0, the task named.
    let o = cli
        .run(&[
            "run",
            "etc-file",
            "read",
            "--target",
            "master",
            "-p",
            "path=/etc/hostname",
            "-o",
            "json",
        ])
        .await?;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let created: HostTask = serde_json::from_slice(&o.stdout)?;
    let name = created.metadata.name.unwrap_or_default();
    let t = h.wait_finished(&name).await?;
    let st = t.status.unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded);
    assert_eq!(
        st.nodes
            .iter()
            .map(|n| (n.node.as_str(), n.phase))
            .collect::<Vec<_>>(),
        [("master", NodePhase::Succeeded)]
    );

    h.shutdown().await
}

/// `kubectl` of the test environment as the admin.
async fn kubectl(h: &Harness, args: &[&str]) -> anyhow::Result<String> {
    common::kubectl(&h.env, args).await
}

/// The line of a `kubectl get` table that starts with `name`.
fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_rerun_and_every_kinds_message_wide() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let cli = Cli {
        bin: workspace_binary("kubectl-hostplug")?,
        kubeconfig: user_kubeconfig(&h).await?,
    };
    let o = cli
        .run(&[
            "run",
            "etc-file",
            "ensure-line",
            "--nodes",
            "node1,node2",
            "-p",
            "path=/etc/chrony.conf",
            "-p",
            "line=server logs.example",
            "--name",
            "cli-logs",
            "--wait",
        ])
        .await?;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let uid = h
        .tasks()
        .get("cli-logs")
        .await?
        .metadata
        .uid
        .unwrap_or_default();

    // As the task runner (no pods/log): every node's plugin lines from the status, and
    // why the worker's own are not shown; still a success.
    let o = cli.run(&["logs", "cli-logs"]).await?;
    println!("{}", show(&o));
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    for node in ["node1", "node2"] {
        let part = out
            .split(&format!("== {node} · Succeeded ==\n"))
            .nth(1)
            .unwrap_or_default();
        let part = part.split("\n== ").next().unwrap_or_default();
        assert!(
            part.contains("ensure-line: /etc/chrony.conf"),
            "{node}'s plugin lines: {out}"
        );
        assert!(
            part.contains(&format!("(invocation {uid}/1/{node})")),
            "{node}: {out}"
        );
        assert!(
            part.contains(
                "not shown: you may not read Pod logs in namespace hostplug-system (`get` on `pods/log`)"
            ),
            "{node}: {out}"
        );
    }
    // One node, for scripts.
    let o = cli
        .run(&["logs", "cli-logs", "--node", "node2", "-o", "json"])
        .await?;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let nodes = shown.as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 1, "{shown}");
    assert_eq!(nodes[0]["node"], "node2");
    assert_eq!(nodes[0]["phase"], "Succeeded");
    assert_eq!(nodes[0]["invocationId"], format!("{uid}/1/node2"));
    assert!(
        nodes[0]["plugin"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l
                .as_str()
                .is_some_and(|l| l.contains("ensure-line: /etc/chrony.conf")))),
        "{shown}"
    );
    assert!(
        nodes[0]["worker"]["unavailable"]
            .as_str()
            .is_some_and(|w| w.contains("pods/log")),
        "{shown}"
    );
    // A node the task does not run on: exit 2, its nodes named.
    let o = cli.run(&["logs", "cli-logs", "--node", "node9"]).await?;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains("no node \"node9\"") && err.contains("node1, node2"),
        "{err}"
    );
    // As an admin, who may read Pod logs: simulated nodes have no kubelet API, so the API
    // server cannot read the worker's log; each node says so, and the plugin lines stay.
    let admin = Cli {
        bin: cli.bin.clone(),
        kubeconfig: h.env.kubeconfig_path().to_path_buf(),
    };
    let o = admin
        .run(&["logs", "cli-logs", "--node", "node1", "-o", "json"])
        .await?;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let why = shown[0]["worker"]["unavailable"]
        .as_str()
        .unwrap_or_default();
    let pod = shown[0]["pod"].as_str().unwrap_or_default();
    assert!(pod.starts_with("hpw-node1-"), "{shown}");
    assert!(
        why.starts_with(&format!("the API server could not read the log of {pod}")),
        "{shown}"
    );
    assert!(!shown[0]["plugin"].as_array().is_none_or(Vec::is_empty));

    // rerun: the same task, a new generation, run once more on each node (the worker's
    // log has one call of each generation per node).
    let o = cli
        .run(&["rerun", "cli-logs", "--wait", "-o", "json"])
        .await?;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let again: HostTask = serde_json::from_slice(&o.stdout)?;
    let st = again.status.clone().unwrap_or_default();
    assert_eq!(again.metadata.generation, Some(2));
    assert_eq!(again.spec.rerun, 1);
    assert_eq!(st.observed_generation, Some(2), "{st:?}");
    assert_eq!(st.state, TaskState::Succeeded, "{st:?}");
    assert_eq!(st.msg.as_deref(), Some("2/2 nodes succeeded, 0 changed"));
    for node in ["node1", "node2"] {
        assert_eq!(h.runs_of(&format!("{uid}/1/{node}")), 1, "{node}");
        assert_eq!(h.runs_of(&format!("{uid}/2/{node}")), 1, "{node}");
    }
    let o = cli
        .run(&["logs", "cli-logs", "--node", "node1", "-o", "json"])
        .await?;
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(shown[0]["invocationId"], format!("{uid}/2/node1"));
    // While a task runs, rerun is refused and changes nothing.
    h.publish_plugin("test-spin.wasm", "test-spin", "none")
        .await?;
    let o = cli
        .run(&[
            "run",
            "test-spin",
            "sleep",
            "--nodes",
            "node1",
            "-p",
            "ms=4000",
            "--name",
            "cli-spin",
        ])
        .await?;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let o = cli.run(&["rerun", "cli-spin"]).await?;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("task cli-spin is still"),
        "{}",
        show(&o)
    );
    let spun = h.wait_finished("cli-spin").await?;
    assert_eq!(spun.metadata.generation, Some(1));
    assert_eq!(spun.spec.rerun, 0);

    // Every kind's message, with -o wide only.
    let narrow = kubectl(&h, &["get", "hosttasks", "-n", NAMESPACE]).await?;
    assert!(!narrow.contains("MESSAGE"), "{narrow}");
    let wide = kubectl(&h, &["get", "hosttasks", "-n", NAMESPACE, "-o", "wide"]).await?;
    println!("{wide}");
    assert!(
        wide.lines().next().is_some_and(|l| l.contains("MESSAGE")),
        "{wide}"
    );
    assert!(
        row(&wide, "cli-logs").contains("2/2 nodes succeeded, 0 changed"),
        "{wide}"
    );
    h.apply(&format!(
        r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostPlugin
metadata: {{name: missing-module}}
spec:
  source: {{configMap: {{namespace: {NAMESPACE}, name: no-such-configmap}}}}
  sha256: "{}"
---
apiVersion: hostplug.dev/v1alpha1
kind: HostState
metadata: {{name: wide-state}}
spec:
  workers: [node1]
  steps:
    - {{api: etc-file, method: ensure-line, parameter: {{path: /etc/chrony.conf, line: "server logs.example"}}}}
---
apiVersion: hostplug.dev/v1alpha1
kind: HostTaskPolicy
metadata:
  name: team-a-reads
  annotations: {{kubernetes.io/description: "team-a reads /etc on workers"}}
spec: {{namespaces: [team-a], plugins: [etc-file], methods: [read]}}
"#,
        "0".repeat(64)
    ))
    .await?;
    let plugins: Api<HostPlugin> = Api::all(h.admin.clone());
    let states: Api<HostState> = Api::all(h.admin.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (plugin_msg, state_msg) = loop {
        let p = plugins
            .get("missing-module")
            .await?
            .status
            .and_then(|s| s.message);
        let s = states
            .get("wide-state")
            .await?
            .status
            .and_then(|s| s.message);
        if let (Some(p), Some(s)) = (p, s) {
            break (p, s);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no status message on the plugin or the state"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let first_words = |m: &str| m.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let wide = kubectl(&h, &["get", "hostplugins", "-o", "wide"]).await?;
    println!("{wide}");
    assert!(
        wide.lines().next().is_some_and(|l| l.contains("MESSAGE")),
        "{wide}"
    );
    assert!(
        row(&wide, "missing-module").contains(&first_words(&plugin_msg)),
        "{plugin_msg:?} in {wide}"
    );
    // The state's first round may still be writing its status: compare with a message
    // that did not change around the `kubectl get`.
    let mut state_msg = state_msg;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let wide = loop {
        let wide = kubectl(&h, &["get", "hoststates", "-o", "wide"]).await?;
        let after = states
            .get("wide-state")
            .await?
            .status
            .and_then(|s| s.message)
            .unwrap_or_default();
        if after == state_msg {
            break wide;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the state's message keeps changing: {state_msg:?} → {after:?}"
        );
        state_msg = after;
    };
    println!("{wide}");
    assert!(
        row(&wide, "wide-state").contains(&first_words(&state_msg)),
        "{state_msg:?} in {wide}"
    );
    let narrow = kubectl(&h, &["get", "hosttaskpolicies"]).await?;
    assert!(!narrow.contains("DESCRIPTION"), "{narrow}");
    let wide = kubectl(&h, &["get", "hosttaskpolicies", "-o", "wide"]).await?;
    println!("{wide}");
    let policy = row(&wide, "team-a-reads");
    assert!(
        policy.contains("team-a reads /etc on workers") && policy.contains(r#"["Node"]"#),
        "{wide}"
    );

    h.shutdown().await
}

/// On real nodes the API server reads Pod logs from the kubelet: `logs` shows the
/// worker's own lines about each node's call — one `invoking` line, of the current
/// generation only — next to the plugin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_read_the_workers_on_real_nodes() -> anyhow::Result<()> {
    let _one_at_a_time = common::REAL_NODE_TESTS.lock().await;
    let cluster = common::RealCluster::start().await?;
    cluster.install(common::Install::Kustomize).await?;
    let cli = Cli {
        bin: workspace_binary("kubectl-hostplug")?,
        kubeconfig: cluster.env.kubeconfig_path().to_path_buf(),
    };
    let nodes = cluster.nodes.join(",");
    let o = cli
        .run(&[
            "run",
            "etc-file",
            "ensure-line",
            "--nodes",
            &nodes,
            "-p",
            "path=/etc/chrony.conf",
            "-p",
            "line=server real-logs.example",
            "--name",
            "real-logs",
            "--wait",
        ])
        .await?;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let o = cli.run(&["rerun", "real-logs", "--wait"]).await?;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let uid = cluster
        .tasks()
        .get("real-logs")
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let o = cli.run(&["logs", "real-logs", "-o", "json"]).await?;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let shown = shown.as_array().cloned().unwrap_or_default();
    assert_eq!(shown.len(), cluster.nodes.len(), "{shown:?}");
    for n in &shown {
        let node = n["node"].as_str().unwrap_or_default();
        let id = format!("{uid}/2/{node}");
        assert_eq!(n["invocationId"], id.as_str());
        assert!(n["worker"]["unavailable"].is_null(), "{n}");
        let lines = n["worker"]["lines"].as_array().cloned().unwrap_or_default();
        let invoking: Vec<_> = lines
            .iter()
            .filter(|l| l["message"] == "invoking")
            .collect();
        assert_eq!(invoking.len(), 1, "{node}: {lines:?}");
        assert_eq!(invoking[0]["invocation_id"], id.as_str());
        assert_eq!(invoking[0]["method"], "ensure-line");
        assert!(
            lines.iter().all(|l| l["invocation_id"] == id.as_str()),
            "{lines:?}"
        );
    }
    let node = cluster.nodes[1].clone();
    let o = cli.run(&["logs", "real-logs", "--node", &node]).await?;
    println!("{}", show(&o));
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("(invocation {uid}/2/{node}):")) && out.contains(" INFO invoking "),
        "{out}"
    );
    assert!(!out.contains("not shown"), "{out}");
    Ok(())
}
