//! Follow-up calls (`spec.onChange`, issue 23 part 3), checked on the nodes' files: a
//! follow-up runs on exactly the nodes whose main call changed something, once; the same
//! task again runs none; a dry run runs them as dry runs (nothing written, "would"
//! reported); a follow-up that fails fails its node naming it, after the main change;
//! a follow-up naming a plugin or parameter that does not exist refuses the task before
//! any node, naming `spec.onChange[i]`.
//!
//! The handler here is etc-file itself (it appends a line to a file, which shows on the
//! node whether and how often it ran); the systemd restart on a real systemd is in
//! `systemd_node.rs`.

use hostplug_api::crd::{HostTask, NodePhase, TaskState};
use hostplug_e2e::{Harness, NAMESPACE, NODES, state_of};

fn task(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec:\n{spec}"
    )
}

/// A task that ensures `line` in /etc/demo.conf on every node, then, where that changed
/// the file, appends `mark` to /etc/handler.log.
fn with_handler(name: &str, line: &str, mark: &str, dry_run: bool) -> String {
    task(
        name,
        &format!(
            "  targetType: All\n  dryRun: {dry_run}\n  http:\n    api: etc-file\n    method: ensure-line\n    parameter: {{path: /etc/demo.conf, line: {line:?}}}\n  onChange:\n  - api: etc-file\n    method: ensure-line\n    parameter: {{path: /etc/handler.log, line: {mark:?}, create: true}}\n"
        ),
    )
}

fn node<'a>(t: &'a HostTask, name: &str) -> anyhow::Result<&'a hostplug_api::crd::NodeResult> {
    t.status
        .as_ref()
        .and_then(|s| s.nodes.iter().find(|n| n.node == name))
        .ok_or_else(|| anyhow::anyhow!("no node {name} in {:?}", t.status))
}

fn handler_log(h: &Harness, n: &str) -> anyhow::Result<String> {
    let path = h.etc(n)?.join("handler.log");
    Ok(std::fs::read_to_string(path).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_run_once_where_the_main_call_changed_the_node() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    for n in NODES {
        std::fs::write(h.etc(n)?.join("demo.conf"), "a = 1\n")?;
    }
    // node1 already has the line: its main call changes nothing.
    std::fs::write(h.etc("node1")?.join("demo.conf"), "a = 1\nb = 2\n")?;

    // 1. A dry run: nothing is written anywhere; the follow-up reports what it would do.
    h.apply(&with_handler("dry", "b = 2", "restarted by dry", true))
        .await?;
    let t = h.wait_finished("dry").await?;
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", t.status);
    for n in ["master", "node2"] {
        let r = node(&t, n)?;
        assert!(r.changed, "{n}: {r:?}");
        assert_eq!(r.on_change.len(), 1, "{n}: {r:?}");
        assert_eq!(r.on_change[0].phase, NodePhase::Succeeded, "{n}: {r:?}");
        assert!(
            r.on_change[0].changed,
            "{n}: the dry run says it would change"
        );
    }
    for n in NODES {
        assert_eq!(handler_log(&h, n)?, "", "{n}: a dry run ran a follow-up");
    }
    for n in ["master", "node2"] {
        assert_eq!(
            std::fs::read_to_string(h.etc(n)?.join("demo.conf"))?,
            "a = 1\n",
            "{n}"
        );
    }

    // 2. For real: the follow-up runs on master and node2, not on node1.
    h.apply(&with_handler("real", "b = 2", "restarted by real", false))
        .await?;
    let t = h.wait_finished("real").await?;
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", t.status);
    for n in ["master", "node2"] {
        assert_eq!(handler_log(&h, n)?, "restarted by real\n", "{n}");
        assert_eq!(node(&t, n)?.on_change[0].phase, NodePhase::Succeeded);
    }
    assert_eq!(handler_log(&h, "node1")?, "", "node1 changed nothing");
    let skipped = &node(&t, "node1")?.on_change[0];
    assert_eq!(skipped.phase, NodePhase::Skipped, "{skipped:?}");
    assert!(
        skipped
            .message
            .as_deref()
            .unwrap_or("")
            .contains("changed nothing"),
        "{skipped:?}"
    );

    // 3. The same change again: nothing changes, no follow-up runs anywhere.
    h.apply(&with_handler("again", "b = 2", "restarted by again", false))
        .await?;
    let t = h.wait_finished("again").await?;
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", t.status);
    for n in NODES {
        assert!(!handler_log(&h, n)?.contains("again"), "{n}");
        assert_eq!(node(&t, n)?.on_change[0].phase, NodePhase::Skipped);
    }

    // 4. A follow-up that fails (reads a file that is not there): the main change is
    // made, the node fails naming the follow-up.
    h.apply(&task(
        "failing",
        "  targetType: All\n  http:\n    api: etc-file\n    method: ensure-line\n    parameter: {path: /etc/demo.conf, line: c = 3}\n  onChange:\n  - api: etc-file\n    method: read\n    parameter: {path: /etc/no-such-file.conf}\n  - api: etc-file\n    method: ensure-line\n    parameter: {path: /etc/handler.log, line: never, create: true}\n",
    ))
    .await?;
    let t = h.wait_finished("failing").await?;
    assert_eq!(state_of(&t), Some(TaskState::Failed), "{:?}", t.status);
    for n in NODES {
        let r = node(&t, n)?;
        assert_eq!(r.phase, NodePhase::Failed, "{n}: {r:?}");
        let msg = r.message.clone().unwrap_or_default();
        assert!(
            msg.contains("onChange[0] (etc-file/read) failed"),
            "{n}: {msg}"
        );
        assert!(r.changed, "{n}: the main change is on record");
        assert_eq!(
            r.on_change.iter().map(|f| f.phase).collect::<Vec<_>>(),
            vec![NodePhase::Failed, NodePhase::Skipped]
        );
        assert!(std::fs::read_to_string(h.etc(n)?.join("demo.conf"))?.contains("c = 3\n"));
        assert!(
            !handler_log(&h, n)?.contains("never"),
            "{n}: ran after a failure"
        );
    }

    // 5. Follow-ups that cannot run are refused before any node, naming the field.
    for (name, follow_up, field) in [
        (
            "no-plugin",
            "api: no-such-plugin\n    method: restart",
            "spec.onChange[0].api",
        ),
        (
            "bad-param",
            "api: etc-file\n    method: ensure-line\n    parameter: {path: /etc/x, lines: typo}",
            "spec.onChange[0].parameter",
        ),
    ] {
        h.apply(&task(
            name,
            &format!(
                "  targetType: All\n  http:\n    api: etc-file\n    method: ensure-line\n    parameter: {{path: /etc/demo.conf, line: d = 4}}\n  onChange:\n  - {follow_up}\n"
            ),
        ))
        .await?;
        let t = h.wait_finished(name).await?;
        assert_eq!(
            state_of(&t),
            Some(TaskState::Failed),
            "{name}: {:?}",
            t.status
        );
        let msg = t
            .status
            .as_ref()
            .and_then(|s| s.msg.clone())
            .unwrap_or_default();
        assert!(msg.contains(field), "{name}: {msg}");
        assert!(
            t.status.as_ref().is_some_and(|s| s.nodes.is_empty()),
            "{name}"
        );
    }
    for n in NODES {
        assert!(
            !std::fs::read_to_string(h.etc(n)?.join("demo.conf"))?.contains("d = 4"),
            "{n}"
        );
    }
    h.shutdown().await
}
