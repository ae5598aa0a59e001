//! HostState end to end: the examples of `deploy/examples` applied as people would.
//! Enforce converges on the selected nodes, puts back a hand edit within one interval
//! (with an Event), brings a node that joins later in sync, stops checking a node whose
//! labels move it out of the selector, and stops altogether when the state is deleted.
//! Audit reports drift with the diff and writes nothing; a bad step is refused naming the
//! field. Two states on one file are reported as a conflict on both and the file is not
//! rewritten back and forth, also when they reach it through different plugins
//! (flip-flop). An operator killed mid-correction neither loses nor repeats it.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use hostplug_api::state::{HostState, NodeSync};
use hostplug_e2e::{Harness, NODES, changed_files, tail};
use hostplug_testenv::nodesim::NodeSpec;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

/// The check interval the tests set: 10 s, the smallest the API allows.
const INTERVAL: Duration = Duration::from_secs(10);
/// How long a state may take to reach what a test expects: a round, worker start-up
/// on a loaded 2-core machine, and a second round.
const STATE_TIMEOUT: Duration = Duration::from_secs(120);
/// The label the tests select nodes by.
const LABEL: &str = "hostplug.dev/ntp";

fn states(h: &Harness) -> Api<HostState> {
    Api::all(h.admin.clone())
}

async fn wait_state(
    h: &Harness,
    name: &str,
    what: &str,
    cond: impl Fn(&HostState) -> bool,
) -> anyhow::Result<HostState> {
    let deadline = tokio::time::Instant::now() + STATE_TIMEOUT;
    loop {
        if let Some(s) = states(h).get_opt(name).await?
            && s.status
                .as_ref()
                .is_some_and(|st| st.observed_generation == s.metadata.generation)
            && cond(&s)
        {
            return Ok(s);
        }
        if tokio::time::Instant::now() > deadline {
            let s = states(h).get_opt(name).await?;
            anyhow::bail!(
                "HostState {name}: never {what}; last status: {}\noperator log:\n{}",
                serde_json::to_string_pretty(&s.and_then(|s| s.status)).unwrap_or_default(),
                tail(&h.operator_log(h.operator_starts()), 80)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The sync state of each node in a state's status.
fn syncs(s: &HostState) -> Vec<(String, NodeSync)> {
    s.status
        .as_ref()
        .map(|st| st.nodes.iter().map(|n| (n.node.clone(), n.sync)).collect())
        .unwrap_or_default()
}

fn all_in_sync(s: &HostState, nodes: &[&str]) -> bool {
    let got = syncs(s);
    got.len() == nodes.len()
        && nodes
            .iter()
            .all(|n| got.contains(&(n.to_string(), NodeSync::InSync)))
}

/// One Event about a HostState as the tests look at it.
#[derive(Debug)]
struct Seen {
    reason: String,
    /// The related Node, for per-node Events.
    node: Option<String>,
    note: String,
    /// How often it happened (the recorder counts repeats as a series).
    count: i32,
}

/// Events about the HostState `name` (recorded in `default`, as for any cluster-scoped
/// object).
async fn events(h: &Harness, name: &str) -> anyhow::Result<Vec<Seen>> {
    let api: Api<Event> = Api::namespaced(h.admin.clone(), "default");
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("HostState")
        })
        .map(|e| Seen {
            reason: e.reason.unwrap_or_default(),
            node: e.related.and_then(|r| r.name),
            note: e.note.unwrap_or_default(),
            count: e.series.map_or(1, |s| s.count),
        })
        .collect())
}

/// Waits (`timeout` at most) until the Events about the HostState `name` satisfy `cond`;
/// returns them. Events are recorded after the status is written.
async fn wait_events(
    h: &Harness,
    name: &str,
    timeout: Duration,
    cond: impl Fn(&[Seen]) -> bool,
) -> anyhow::Result<Vec<Seen>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let evs = events(h, name).await?;
        if cond(&evs) {
            return Ok(evs);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the Events about HostState {name} are not as expected: {evs:?}\n{}",
            tail(&h.operator_log(h.operator_starts()), 40)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn label_node(h: &Harness, node: &str, value: Option<&str>) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(h.admin.clone());
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {LABEL: value}}})),
        )
        .await?;
    Ok(())
}

/// The file the HostState example (hoststate-chrony-enforce.yaml) owns.
fn chrony(h: &Harness, node: &str) -> anyhow::Result<PathBuf> {
    Ok(h.etc(node)?.join("hostplug-example.conf"))
}

const NTP_LINE: &str = "server ntp.example.com iburst";

fn has_ntp_line(h: &Harness, node: &str) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(chrony(h, node)?).unwrap_or_default();
    Ok(text.lines().any(|l| l == NTP_LINE))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_holds_the_state_on_every_selected_node() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let name = "chrony-ntp-server";

    // The example as it stands: every worker node (not master) converges.
    h.apply_example("hoststate-chrony-enforce.yaml").await?;
    let s = wait_state(&h, name, "in sync on node1 and node2", |s| {
        all_in_sync(s, &["node1", "node2"])
    })
    .await?;
    let st = s.status.clone().unwrap_or_default();
    assert_eq!(st.sync.as_deref(), Some("2/2"), "{st:?}");
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "InSync" && c.status == "True"),
        "{st:?}"
    );
    for node in ["node1", "node2"] {
        assert!(has_ntp_line(&h, node)?, "{node} has no ntp line");
    }
    assert!(!has_ntp_line(&h, "master")?, "master is not selected");

    // Narrow it to labelled nodes and check every 10 s: a spec change starts a round.
    label_node(&h, "node1", Some("yes")).await?;
    label_node(&h, "node2", Some("yes")).await?;
    states(&h)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "intervalSeconds": INTERVAL.as_secs(),
                "nodeSelector": {"matchLabels": {LABEL: "yes"}},
            }})),
        )
        .await?;
    let s = wait_state(&h, name, "in sync after the spec change", |s| {
        all_in_sync(s, &["node1", "node2"])
    })
    .await?;
    let corrections = |s: &HostState| {
        s.status
            .as_ref()
            .and_then(|st| st.nodes.iter().find(|n| n.node == "node1"))
            .map_or(0, |n| n.corrections)
    };
    let before_edit = corrections(&s);
    assert_eq!(before_edit, 1, "node1 was corrected once to converge");

    // A hand edit on node1 is corrected within one interval, and an Event says so.
    let edited_at = tokio::time::Instant::now();
    std::fs::write(chrony(&h, "node1")?, "server other.example.org\n")?;
    let deadline = edited_at + INTERVAL + Duration::from_secs(20);
    while !has_ntp_line(&h, "node1")? {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "node1 not corrected within one interval; operator log:\n{}",
            tail(&h.operator_log(h.operator_starts()), 60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = edited_at.elapsed();
    let text = std::fs::read_to_string(chrony(&h, "node1")?)?;
    assert_eq!(
        text.matches("ntp.example.com").count(),
        1,
        "the line is there once:\n{text}"
    );
    wait_state(&h, name, "recording the correction", |s| {
        all_in_sync(s, &["node1", "node2"]) && corrections(s) == before_edit + 1
    })
    .await?;
    // Per-node Events: node1's drift and correction happened twice now (converging, and
    // this edit).
    wait_events(&h, name, Duration::from_secs(30), |evs| {
        ["DriftDetected", "Corrected"].iter().all(|reason| {
            evs.iter().any(|e| {
                e.reason == *reason
                    && e.node.as_deref() == Some("node1")
                    && e.count >= 2
                    && e.note.starts_with("node1: ")
            })
        })
    })
    .await?;
    eprintln!("hand edit corrected after {took:?}");

    // A node that joins later, labelled, is brought in sync.
    let mut node3 = NodeSpec::worker("node3");
    node3.labels.insert(LABEL.into(), "yes".into());
    h.env.add_node(node3).await?;
    wait_state(&h, name, "in sync on the new node3", |s| {
        all_in_sync(s, &["node1", "node2", "node3"])
    })
    .await?;
    assert!(has_ntp_line(&h, "node3")?, "node3 has no ntp line");

    // node2 labelled out of the selector: no longer checked, its edits stay.
    label_node(&h, "node2", None).await?;
    let s = wait_state(&h, name, "without node2", |s| {
        all_in_sync(s, &["node1", "node3"])
    })
    .await?;
    assert_eq!(
        corrections(&s),
        before_edit + 1,
        "one hand edit, one correction"
    );
    std::fs::write(chrony(&h, "node2")?, "# edited by hand\n")?;

    // Deleted: nothing is checked any more, the nodes stay as they are.
    states(&h).delete(name, &DeleteParams::default()).await?;
    std::fs::write(chrony(&h, "node1")?, "# edited after the delete\n")?;
    tokio::time::sleep(INTERVAL * 2 + Duration::from_secs(3)).await;
    assert_eq!(
        std::fs::read_to_string(chrony(&h, "node2")?)?,
        "# edited by hand\n",
        "node2 was changed after it left the selector"
    );
    assert_eq!(
        std::fs::read_to_string(chrony(&h, "node1")?)?,
        "# edited after the delete\n",
        "node1 was changed after the state was deleted"
    );
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_reports_drift_and_writes_nothing() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let before = h.snapshot()?;
    h.apply_example("hoststate-registry-mirror-audit.yaml")
        .await?;
    let s = wait_state(&h, "registry-mirror", "drifted on every node", |s| {
        let got = syncs(s);
        got.len() == NODES.len() && got.iter().all(|(_, sync)| *sync == NodeSync::Drifted)
    })
    .await?;
    let st = s.status.clone().unwrap_or_default();
    assert_eq!(st.nodes_drifted, 3, "{st:?}");
    assert_eq!(st.sync.as_deref(), Some("0/3"));
    for n in &st.nodes {
        let diff = n
            .drift
            .first()
            .and_then(|d| d.diff.clone())
            .unwrap_or_default();
        assert!(
            diff.contains("+++ b/etc/containerd/certs.d/docker.io/hosts.toml")
                && diff.contains("+  capabilities = [\"pull\", \"resolve\"]"),
            "{}: {diff}",
            n.node
        );
        assert_eq!(n.corrections, 0);
    }
    wait_events(&h, "registry-mirror", Duration::from_secs(30), |evs| {
        evs.iter()
            .any(|e| e.reason == "DriftDetected" && e.note.contains("Audit"))
    })
    .await?;
    // Annotated sensitive, the same drift keeps only its size and hash in the status.
    states(&h)
        .patch(
            "registry-mirror",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"hostplug.dev/sensitive-output": "true"}}}),
            ),
        )
        .await?;
    let s = wait_state(&h, "registry-mirror", "keeping no diff", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.nodes.len() == NODES.len()
                && st.nodes.iter().flat_map(|n| &n.drift).all(|d| {
                    d.diff
                        .as_deref()
                        .is_some_and(|d| d.starts_with("(redacted: "))
                })
        })
    })
    .await?;
    assert!(
        !serde_json::to_string(&s.status)?.contains("capabilities"),
        "a sensitive state's status shows the file"
    );
    assert_eq!(
        changed_files(&before, &h.snapshot()?),
        vec![],
        "Audit changed files"
    );

    // A bad step is refused before any node is touched, naming the step and the field.
    let bad = |name: &str, step: &str| {
        format!(
            "apiVersion: hostplug.dev/v1alpha1\nkind: HostState\nmetadata: {{name: {name}}}\nspec:\n  targetType: All\n  mode: Enforce\n  steps:\n  - {{api: etc-file, method: ensure-line, parameter: {{path: /etc/ok.conf, line: ok, create: true}}}}\n  - {step}\n"
        )
    };
    h.apply(&bad(
        "reads",
        "{api: etc-file, method: read, parameter: {path: /etc/hostname}}",
    ))
    .await?;
    h.apply(&bad(
        "bad-param",
        "{api: etc-file, method: ensure-line, parameter: {path: /etc/x.conf, line: 5}}",
    ))
    .await?;
    for (name, field) in [
        ("reads", "spec.steps[1].method"),
        ("bad-param", "spec.steps[1].parameter.line"),
    ] {
        let s = wait_state(&h, name, "refused", |s| {
            s.status
                .as_ref()
                .and_then(|st| st.message.as_deref())
                .is_some_and(|m| m.starts_with(field))
        })
        .await?;
        let st = s.status.unwrap_or_default();
        assert!(st.nodes.is_empty(), "{name}: {st:?}");
        assert!(
            st.conditions
                .iter()
                .any(|c| c.type_ == "InSync" && c.reason == "Invalid"),
            "{name}: {st:?}"
        );
        wait_events(&h, name, Duration::from_secs(30), |evs| {
            evs.iter()
                .any(|e| e.reason == "ValidationFailed" && e.note.contains(field))
        })
        .await?;
    }
    // Step 0 of the refused states was valid, and still nothing ran.
    assert_eq!(changed_files(&before, &h.snapshot()?), vec![]);
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_states_on_one_file_conflict_and_never_fight() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let state = |name: &str, value: &str| {
        format!(
            "apiVersion: hostplug.dev/v1alpha1\nkind: HostState\nmetadata: {{name: {name}}}\nspec:\n  targetType: All\n  mode: Enforce\n  intervalSeconds: 10\n  steps:\n  - {{api: etc-file, method: ensure-line, parameter: {{path: /etc/limits.conf, line: \"max={value}\", regexp: \"^max=\", create: true}}}}\n"
        )
    };
    h.apply(&state("limits-a", "10")).await?;
    wait_state(&h, "limits-a", "in sync", |s| all_in_sync(s, &NODES)).await?;
    let identity = |h: &Harness| -> anyhow::Result<Vec<(u64, i64, String)>> {
        NODES
            .iter()
            .map(|n| {
                let p = h.etc(n)?.join("limits.conf");
                let m = std::fs::metadata(&p)?;
                Ok((m.ino(), m.mtime_nsec(), std::fs::read_to_string(&p)?))
            })
            .collect()
    };
    let first = identity(&h)?;
    assert!(first.iter().all(|(_, _, t)| t == "max=10\n"), "{first:?}");

    h.apply(&state("limits-b", "20")).await?;
    for (me, other) in [("limits-b", "limits-a"), ("limits-a", "limits-b")] {
        let s = wait_state(&h, me, "reporting the conflict", |s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.conflicts.iter().any(|c| c == other))
        })
        .await?;
        let st = s.status.unwrap_or_default();
        assert!(
            st.conditions
                .iter()
                .any(|c| c.type_ == "InSync" && c.status == "False" && c.reason == "Conflict"),
            "{me}: {st:?}"
        );
        assert!(
            st.nodes
                .iter()
                .all(|n| n.message.as_deref().is_some_and(|m| m.contains(other))),
            "{me}: {st:?}"
        );
    }
    // Two more rounds of each: the file is never rewritten (same inode, same mtime).
    tokio::time::sleep(INTERVAL * 2 + Duration::from_secs(3)).await;
    assert_eq!(identity(&h)?, first, "a conflicting state rewrote the file");
    let b = states(&h).get("limits-b").await?;
    assert!(
        b.status
            .unwrap_or_default()
            .nodes
            .iter()
            .all(|n| n.sync == NodeSync::Drifted && n.corrections == 0),
        "limits-b corrected a node"
    );
    // Resolved by deleting one: the other enforces again.
    states(&h)
        .delete("limits-a", &DeleteParams::default())
        .await?;
    wait_state(&h, "limits-b", "in sync once alone", |s| {
        all_in_sync(s, &NODES) && s.status.as_ref().is_some_and(|st| st.conflicts.is_empty())
    })
    .await?;
    for n in NODES {
        assert_eq!(
            std::fs::read_to_string(h.etc(n)?.join("limits.conf"))?,
            "max=20\n"
        );
    }
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_correction_neither_loses_nor_repeats_it() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    h.publish_plugin("test-slow-write.wasm", "test-slow-write", "write")
        .await?;
    // Each correction takes 6 s inside the worker: long enough to kill the operator
    // while all three are in flight.
    h.apply(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostState\nmetadata: {name: slow}\nspec:\n  targetType: All\n  mode: Enforce\n  intervalSeconds: 10\n  rollout: {maxParallel: 3}\n  steps:\n  - {api: test-slow-write, method: set, parameter: {path: /etc/slow.conf, content: \"wanted\\n\", ms: 6000}}\n",
    )
    .await?;
    // Usually all three nodes are corrected in one batch; on a loaded machine a node
    // whose worker was slow to start is corrected in a later round. The nodes caught
    // Correcting are the ones the kill interrupts.
    let s = wait_state(&h, "slow", "correcting a node", |s| {
        syncs(s)
            .iter()
            .any(|(_, sync)| *sync == NodeSync::Correcting)
    })
    .await?;
    let ids: Vec<(String, String)> = s
        .status
        .unwrap_or_default()
        .nodes
        .into_iter()
        .filter_map(|n| Some((n.node, format!("{}/s0", n.pending_correction?))))
        .collect();
    anyhow::ensure!(!ids.is_empty(), "no correction recorded");
    // Kill it once every correction runs in its worker.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ids.iter().all(|(_, id)| h.runs_of(id) == 1) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the corrections never started: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (node, _) in &ids {
        assert!(
            !h.etc(node)?.join("slow.conf.writes").exists(),
            "{node} finished before the kill; the test needs a longer sleep"
        );
    }
    let workers = h.worker_pods().await?;
    h.kill_operator().await?;
    h.start_operator()?;
    let s = wait_state(&h, "slow", "in sync after the restart", |s| {
        all_in_sync(s, &NODES)
    })
    .await?;
    assert_eq!(
        h.worker_pods().await?,
        workers,
        "the new operator adopted the warm workers instead of starting others"
    );
    for n in s.status.unwrap_or_default().nodes {
        assert_eq!(n.corrections, 1, "{n:?}");
        assert_eq!(n.pending_correction, None, "{n:?}");
    }
    for (node, id) in &ids {
        assert_eq!(h.runs_of(id), 1, "{node}: the correction ran again");
        assert_eq!(
            std::fs::read_to_string(h.etc(node)?.join("slow.conf"))?,
            "wanted\n"
        );
        assert_eq!(
            std::fs::read_to_string(h.etc(node)?.join("slow.conf.writes"))?,
            "write\n",
            "{node}: written more than once"
        );
    }
    assert!(
        h.operator_log(2)
            .contains("resuming a correction of an earlier operator process"),
        "the second operator did not resume"
    );
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_states_undoing_each_other_are_stopped_after_one_round_each() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.publish_plugin("test-slow-write.wasm", "test-slow-write", "write")
        .await?;
    // Two plugins on one file: the path rule (same plugin and path) cannot see it; the
    // flip-flop rule does once each state has corrected the other's change once.
    let yaml = |name: &str, step: &str| {
        format!(
            "apiVersion: hostplug.dev/v1alpha1\nkind: HostState\nmetadata: {{name: {name}}}\nspec:\n  workers: [node1]\n  mode: Enforce\n  intervalSeconds: 10\n  steps:\n  - {step}\n"
        )
    };
    h.apply(&yaml(
        "flip",
        "{api: test-slow-write, method: set, parameter: {path: /etc/flip.conf, content: \"a\\n\"}}",
    ))
    .await?;
    wait_state(&h, "flip", "in sync", |s| all_in_sync(s, &["node1"])).await?;
    h.apply(&yaml(
        "flop",
        "{api: etc-file, method: write, parameter: {path: /etc/flip.conf, content: \"b\\n\"}}",
    ))
    .await?;
    for (me, other) in [("flip", "flop"), ("flop", "flip")] {
        wait_state(&h, me, "reporting the flip-flop", |s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.conflicts.iter().any(|c| c == other))
        })
        .await?;
    }
    let file = h.etc("node1")?.join("flip.conf");
    let meta = std::fs::metadata(&file)?;
    let writes = std::fs::read_to_string(h.etc("node1")?.join("flip.conf.writes"))?;
    tokio::time::sleep(INTERVAL * 2 + Duration::from_secs(3)).await;
    let later = std::fs::metadata(&file)?;
    assert_eq!(
        (later.ino(), later.mtime_nsec()),
        (meta.ino(), meta.mtime_nsec()),
        "the file is still rewritten back and forth"
    );
    // flip wrote twice at most: its first correction and the one undoing flop's once.
    let count = writes.lines().count();
    assert!((1..=2).contains(&count), "flip wrote {count} times");
    assert_eq!(
        std::fs::read_to_string(h.etc("node1")?.join("flip.conf.writes"))?,
        writes
    );
    h.shutdown().await
}

/// A valid object name (a DNS subdomain) of exactly `len` characters.
fn long_name(prefix: &str, len: usize) -> String {
    let mut s = format!("{prefix}-");
    while s.len() < len {
        s.push(if s.len() % 60 == 0 { '.' } else { 'x' });
    }
    s.truncate(len);
    if s.ends_with('.') {
        s.pop();
        s.push('y');
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_with_a_253_character_name_gets_its_status_and_events() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let name = long_name("audit", 253);
    assert_eq!(name.len(), 253);
    h.apply(&format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostState\nmetadata: {{name: {name}}}\nspec:\n  workers: [node1]\n  intervalSeconds: 10\n  steps:\n  - {{api: etc-file, method: ensure-line, parameter: {{path: /etc/long-name.conf, line: wanted, create: true}}}}\n"
    ))
    .await?;
    wait_state(&h, &name, "reporting node1 drifted", |s| {
        syncs(s) == [("node1".to_owned(), NodeSync::Drifted)]
    })
    .await?;
    wait_events(&h, &name, STATE_TIMEOUT, |evs| {
        evs.iter().any(|e| {
            e.reason == "DriftDetected"
                && e.node.as_deref() == Some("node1")
                && e.note.starts_with("node1: ")
        })
    })
    .await?;
    assert!(
        !h.etc("node1")?.join("long-name.conf").exists(),
        "Audit wrote the file"
    );
    h.shutdown().await
}

/// How long each write of the parallelism test sleeps before writing: 4 s, long beside
/// a warm check (milliseconds), so writes that overlap are plain to see.
const PARALLEL_WRITE_MS: u64 = 4000;

/// The most writes in flight at once on `nodes`, seen from the nodes: each write of
/// test-slow-write ends with the file's mtime and began `PARALLEL_WRITE_MS` before.
fn most_at_once(h: &Harness, file: &str) -> anyhow::Result<usize> {
    let mut spans = Vec::new();
    for n in NODES {
        let end = std::fs::metadata(h.etc(n)?.join(file))?.modified()?;
        let start = end - Duration::from_millis(PARALLEL_WRITE_MS);
        // A little margin on both sides: a write that starts as another ends is not
        // "at once".
        spans.push((
            start + Duration::from_millis(200),
            end - Duration::from_millis(200),
        ));
    }
    Ok(spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_bounds_a_state_round_as_it_bounds_a_task() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.publish_plugin("test-slow-write.wasm", "test-slow-write", "write")
        .await?;
    let step = |file: &str| {
        format!(
            "{{api: test-slow-write, method: set, parameter: {{path: /etc/{file}, content: \"wanted\\n\", ms: {PARALLEL_WRITE_MS}}}}}"
        )
    };
    // Warm the write workers on every node, so the writes below start together.
    h.apply(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {name: warm, namespace: hostplug-system}\nspec:\n  targetType: All\n  http: {api: test-slow-write, method: set, parameter: {path: /etc/warm.conf, content: \"x\\n\"}}\n"
    ).await?;
    h.wait_finished("warm").await?;

    h.apply(&format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: two-at-once, namespace: hostplug-system}}\nspec:\n  targetType: All\n  rollout: {{maxParallel: 2}}\n  http: {}\n",
        step("task.conf")
    ))
    .await?;
    let t = h.wait_finished("two-at-once").await?;
    assert_eq!(
        hostplug_e2e::state_of(&t),
        Some(hostplug_api::crd::TaskState::Succeeded)
    );
    let task_most = most_at_once(&h, "task.conf")?;

    h.apply(&format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostState\nmetadata: {{name: two-at-once}}\nspec:\n  targetType: All\n  mode: Enforce\n  intervalSeconds: 600\n  rollout: {{maxParallel: 2}}\n  steps:\n  - {}\n",
        step("state.conf")
    ))
    .await?;
    wait_state(&h, "two-at-once", "in sync", |s| all_in_sync(s, &NODES)).await?;
    let state_most = most_at_once(&h, "state.conf")?;
    assert_eq!(
        (task_most, state_most),
        (2, 2),
        "maxParallel 2 on three nodes: two writes at once, then the third, for a task and a state alike"
    );
    for n in NODES {
        assert_eq!(
            std::fs::read_to_string(h.etc(n)?.join("state.conf.writes"))?,
            "write\n",
            "{n}: written once"
        );
    }
    h.shutdown().await
}
