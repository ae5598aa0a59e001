//! Text output for people: the per-node table of a task with each node's diff and
//! output, the plugin catalog and one method's parameters. Colour (diff lines, phases)
//! only when the caller says so — on a terminal, and not under `NO_COLOR`. Pure
//! functions returning strings, so tests read exactly what people see.
//!
//! Every text that comes from the cluster (a plugin, a node, the API server) passes
//! through [`plain`] before it is printed, so no control sequence of theirs reaches the
//! terminal; the colour codes added here are the only ones in the output.

use std::fmt::Write as _;

use hostplug_api::crd::{HostTask, NodePhase, NodeResult, TaskState};

use crate::catalog::{MethodSummary, PluginSummary};
use crate::terminal::plain;

/// Longest message shown in a table cell; the full text is in `-o yaml`.
const MAX_CELL_CHARS: usize = 80;

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

fn paint(on: bool, code: &str, text: &str) -> String {
    if on {
        format!("{code}{text}{RESET}")
    } else {
        text.to_owned()
    }
}

/// Columns padded to their widest cell (colour codes are added after padding).
fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    (*c).to_owned()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("   ")
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out
}

fn cell(text: &str) -> String {
    let text = &plain(text);
    let one_line = text.lines().next().unwrap_or_default();
    let mut s: String = one_line.chars().take(MAX_CELL_CHARS).collect();
    if one_line.chars().count() > MAX_CELL_CHARS || text.lines().count() > 1 {
        s.push('…');
    }
    s
}

fn phase_colour(phase: NodePhase) -> &'static str {
    match phase {
        NodePhase::Succeeded => GREEN,
        NodePhase::Failed => RED,
        NodePhase::Skipped => YELLOW,
        _ => CYAN,
    }
}

/// The wall time a node took, when it ended: `3s`, or `<1s` (the API's timestamps have
/// whole seconds).
fn took(n: &NodeResult) -> String {
    match (&n.started_at, &n.finished_at) {
        (Some(s), Some(f)) => match f.0.as_second().saturating_sub(s.0.as_second()) {
            0 => "<1s".to_owned(),
            secs => format!("{secs}s"),
        },
        _ => "-".to_owned(),
    }
}

/// A unified diff with `+` green, `-` red and hunk headers cyan when `colour`.
pub fn diff(text: &str, colour: bool) -> String {
    let mut out = String::new();
    for l in plain(text).lines() {
        let code = if l.starts_with("+++") || l.starts_with("---") {
            BOLD
        } else if l.starts_with('+') {
            GREEN
        } else if l.starts_with('-') {
            RED
        } else if l.starts_with("@@") {
            CYAN
        } else {
            ""
        };
        if code.is_empty() {
            out.push_str(l);
        } else {
            out.push_str(&paint(colour, code, l));
        }
        out.push('\n');
    }
    out
}

/// The whole report of a task: a summary line, the per-node table, then each node's
/// diff, output and failure in full.
/// A node's PHASE cell: its phase, and where it is in a drain/reboot cycle or what it
/// waits for (`Running/Draining`, `Pending/WaitingForWindow`; the reason is in MESSAGE).
fn phase_cell(n: &NodeResult) -> String {
    match &n.disruption {
        Some(d) => format!("{:?}/{}", n.phase, d.phase.as_str()),
        None => format!("{:?}", n.phase),
    }
}

pub fn task(t: &HostTask, colour: bool) -> String {
    let name = plain(t.metadata.name.as_deref().unwrap_or_default());
    let status = t.status.clone().unwrap_or_default();
    let generation = t.metadata.generation.unwrap_or_default();
    let mut out = String::new();
    let state = status.state;
    let state_code = match state {
        TaskState::Succeeded => GREEN,
        TaskState::Failed => RED,
        _ => CYAN,
    };
    let stale = status.observed_generation.is_some_and(|g| g != generation);
    let _ = writeln!(
        out,
        "Task:     {name} (generation {generation}{})",
        if stale { ", not observed yet" } else { "" }
    );
    match (&t.spec.http, &t.spec.revert) {
        (Some(http), _) => {
            let _ = writeln!(
                out,
                "Plugin:   {} {}{}",
                plain(&http.call.api),
                plain(&http.call.method),
                if t.spec.dry_run { " (dry run)" } else { "" }
            );
        }
        (None, Some(rv)) => {
            let run = status
                .reverted_run
                .as_ref()
                .map(|r| format!(" (generation {})", r.generation))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "Reverts:  {}{run}{}",
                plain(&rv.task),
                if rv.force { ", forced" } else { "" }
            );
        }
        (None, None) => {}
    }
    let _ = writeln!(
        out,
        "State:    {}{}",
        paint(colour, state_code, &format!("{state:?}")),
        status
            .msg
            .as_deref()
            .map(|m| format!(" — {}", plain(m)))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "Progress: {}/{} nodes",
        status.nodes_done, status.nodes_total
    );
    if let Some(r) = &status.rollout {
        let _ = writeln!(out, "Rollout:  {}", plain(&r.summary));
    }
    if status.nodes.is_empty() {
        return out;
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = status
        .nodes
        .iter()
        .map(|n| {
            vec![
                plain(&n.node),
                phase_cell(n),
                if n.changed { "yes" } else { "no" }.to_owned(),
                took(n),
                cell(n.message.as_deref().unwrap_or_default()),
            ]
        })
        .collect();
    let lines = table(&["NODE", "PHASE", "CHANGED", "TOOK", "MESSAGE"], &rows);
    for (i, line) in lines.iter().enumerate() {
        // Colour the phase word after padding so columns stay aligned.
        let line = match i.checked_sub(1).and_then(|r| status.nodes.get(r)) {
            Some(n) if colour => {
                let phase = format!("{:?}", n.phase);
                line.replacen(&phase, &paint(true, phase_colour(n.phase), &phase), 1)
            }
            _ => line.clone(),
        };
        let _ = writeln!(out, "{line}");
    }
    for n in &status.nodes {
        let has_detail = n.diff.is_some()
            || n.output.is_some()
            || (n.phase == NodePhase::Failed && n.message.is_some());
        if !has_detail {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{}",
            paint(colour, BOLD, &format!("== {} ==", plain(&n.node)))
        );
        if n.phase == NodePhase::Failed
            && let Some(m) = &n.message
        {
            let _ = writeln!(
                out,
                "{}",
                paint(colour, RED, &format!("error: {}", plain(m)))
            );
        }
        if let Some(d) = &n.diff {
            out.push_str(&diff(d, colour));
        }
        if let Some(o) = &n.output {
            let _ = writeln!(
                out,
                "output: {}",
                plain(&serde_json::to_string_pretty(o).unwrap_or_default())
            );
        }
    }
    out
}

/// The catalog: each plugin, then its methods with a one-line parameter summary
/// (`name*` required, `name=default`). All of it but the layout is the plugins' text,
/// and none of it is coloured: the whole is passed through [`plain`].
pub fn plugins(list: &[PluginSummary]) -> String {
    plain(&catalog_text(list))
}

fn catalog_text(list: &[PluginSummary]) -> String {
    if list.is_empty() {
        return "No HostPlugins.\n".to_owned();
    }
    let mut out = String::new();
    for p in list {
        let _ = writeln!(
            out,
            "{} {}  {}  {}",
            p.name,
            p.version.as_deref().unwrap_or("-"),
            if p.ready { "ready" } else { "NOT READY" },
            p.capabilities
        );
        if !p.description.is_empty() {
            let _ = writeln!(out, "  {}", p.description);
        }
        if !p.ready
            && let Some(m) = &p.message
        {
            let _ = writeln!(out, "  {m}");
        }
        for m in &p.methods {
            let _ = writeln!(
                out,
                "  {}{}  {}",
                m.name,
                if m.mutates { " (mutates)" } else { "" },
                m.description
            );
            let _ = writeln!(out, "      params: {}", param_line(m));
        }
        out.push('\n');
    }
    out
}

fn param_line(m: &MethodSummary) -> String {
    if m.params.is_empty() {
        return "none".to_owned();
    }
    m.params
        .iter()
        .map(|p| {
            let mut s = format!("{}{}", p.name, if p.required { "*" } else { "" });
            let _ = write!(s, " {}", p.kind);
            if let Some(d) = &p.default {
                let _ = write!(s, " ={d}");
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One method: what it does and every parameter with its description. Not coloured:
/// the whole is passed through [`plain`].
pub fn explain(p: &PluginSummary, m: &MethodSummary) -> String {
    plain(&explain_text(p, m))
}

fn explain_text(p: &PluginSummary, m: &MethodSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "PLUGIN:  {} {}  ({})",
        p.name,
        p.version.as_deref().unwrap_or("-"),
        p.capabilities
    );
    let _ = writeln!(
        out,
        "METHOD:  {}{}",
        m.name,
        if m.mutates {
            " (mutates: changes the node unless dry-run)"
        } else {
            " (read-only)"
        }
    );
    if !m.description.is_empty() {
        let _ = writeln!(out, "\n{}", m.description);
    }
    let _ = writeln!(out, "\nPARAMETERS:");
    if m.params.is_empty() {
        let _ = writeln!(out, "  none");
        return out;
    }
    let rows: Vec<Vec<String>> = m
        .params
        .iter()
        .map(|a| {
            let mut kind = a.kind.clone();
            if !a.values.is_empty() {
                let vals: Vec<String> = a.values.iter().map(|v| v.to_string()).collect();
                kind = format!("{kind} ({})", vals.join(" | "));
            }
            let mut desc = a.description.clone();
            if !a.value_descriptions.is_empty() {
                let meanings: Vec<String> = a
                    .values
                    .iter()
                    .zip(&a.value_descriptions)
                    .filter(|(_, d)| !d.is_empty())
                    .map(|(v, d)| format!("{v}: {d}"))
                    .collect();
                let _ = write!(
                    desc,
                    "{}{}",
                    if desc.is_empty() { "" } else { " — " },
                    meanings.join("; ")
                );
            }
            if let Some(d) = &a.default {
                let _ = write!(
                    desc,
                    "{}default: {d}",
                    if desc.is_empty() { "" } else { " — " }
                );
            }
            vec![
                format!("  {}", a.name),
                kind,
                if a.required { "required" } else { "optional" }.to_owned(),
                desc,
            ]
        })
        .collect();
    for line in table(&["  NAME", "TYPE", "", "DESCRIPTION"], &rows) {
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(
        out,
        "\nGive them as --param NAME=VALUE (typed by the schema) or --param NAME:=JSON."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::crd::{HostTaskSpec, HostTaskStatus, HttpSpec};

    fn task() -> HostTask {
        let mut t = HostTask::new(
            "t1",
            HostTaskSpec {
                disruption: None,
                targets: hostplug_api::NodeTargets {
                    workers: vec!["node1".into(), "node2".into()],
                    target_type: None,
                    node_selector: None,
                },
                http: Some(HttpSpec {
                    port: 8443,
                    call: hostplug_api::PluginCall {
                        api: "etc-file".into(),
                        method: "ensure-line".into(),
                        parameter: None,
                        vars: Vec::new(),
                    },
                }),
                revert: None,
                dry_run: false,
                timeout_seconds: 60,
                rollout: None,
                ttl_seconds_after_finished: None,
                registry_auth: None,
                rerun: 0,
                on_change: Vec::new(),
            },
        );
        t.metadata.generation = Some(1);
        t.status = Some(HostTaskStatus {
            observed_generation: Some(1),
            state: TaskState::Failed,
            msg: Some("1/2 nodes succeeded".into()),
            nodes_done: 2,
            nodes_total: 2,
            nodes: vec![
                NodeResult {
                    node: "node1".into(),
                    phase: NodePhase::Succeeded,
                    changed: true,
                    diff: Some("--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n".into()),
                    ..Default::default()
                },
                NodeResult {
                    node: "node2".into(),
                    phase: NodePhase::Failed,
                    message: Some("permission denied".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        t
    }

    #[test]
    fn a_node_in_a_drain_or_reboot_cycle_shows_where_it_is() {
        use hostplug_api::disruption::{DisruptionPhase, NodeDisruption};
        let mut t = task();
        if let Some(s) = t.status.as_mut() {
            s.nodes[1].phase = NodePhase::Pending;
            s.nodes[1].message = Some("waiting for a maintenance window (opens 02:00 UTC)".into());
            s.nodes[1].disruption = Some(NodeDisruption {
                phase: DisruptionPhase::WaitingForWindow,
                message: None,
            });
        }
        let text = super::task(&t, false);
        let row = text
            .lines()
            .find(|l| l.starts_with("node2"))
            .unwrap_or_default();
        assert!(
            row.contains("Pending/WaitingForWindow") && row.contains("opens 02:00 UTC"),
            "{text}"
        );
        let row1 = text
            .lines()
            .find(|l| l.starts_with("node1"))
            .unwrap_or_default();
        assert!(row1.contains("Succeeded ") && !row1.contains('/'), "{text}");
    }

    #[test]
    fn report_has_a_row_per_node_and_each_diff() {
        let text = task_text(false);
        assert!(
            text.contains("State:    Failed — 1/2 nodes succeeded"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("node2"))
            .unwrap_or_default();
        assert!(
            row.contains("Failed") && row.contains("permission denied"),
            "{text}"
        );
        assert!(
            text.contains("== node1 ==\n--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n"),
            "{text}"
        );
        assert!(text.contains("error: permission denied"), "{text}");
        assert!(!text.contains('\x1b'), "no colour asked for: {text:?}");
    }

    #[test]
    fn colour_only_when_asked() {
        let text = task_text(true);
        assert!(text.contains(&format!("{GREEN}+new{RESET}")), "{text:?}");
        assert!(text.contains(&format!("{RED}-old{RESET}")), "{text:?}");
    }

    fn task_text(colour: bool) -> String {
        super::task(&task(), colour)
    }

    /// What a hostile plugin or node could put into text that kubectl prints: OSC 52
    /// (write the clipboard), CSI (erase the screen, move the cursor), 8-bit CSI and OSC.
    const HOSTILE: &str = "\u{1b}]52;c;cm0gLXJmIH4K\u{7}\u{1b}[2J\u{9b}1;1H\u{9d}0;title\u{9c}";

    /// No control character but line feed and tab, once the renderer's own colour
    /// codes are taken out.
    fn clean_of_controls(text: &str) -> bool {
        let mut ours = text.to_owned();
        for code in [RED, GREEN, YELLOW, CYAN, BOLD, RESET] {
            ours = ours.replace(code, "");
        }
        !ours
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    }

    #[test]
    fn text_from_plugins_and_nodes_reaches_the_terminal_without_control_sequences() {
        let mut t = task();
        t.metadata.name = Some(format!("t{HOSTILE}"));
        if let Some(http) = t.spec.http.as_mut() {
            http.call.api = format!("p{HOSTILE}");
            http.call.method = format!("m{HOSTILE}");
        }
        if let Some(st) = t.status.as_mut() {
            st.msg = Some(format!("msg{HOSTILE}"));
            for n in &mut st.nodes {
                n.node = format!("{}{HOSTILE}", n.node);
                n.message = Some(format!("failed{HOSTILE}"));
                n.diff = Some(format!("--- a\n+++ b\n-old{HOSTILE}\n+new{HOSTILE}\n"));
                n.output = Some(serde_json::json!({"text": HOSTILE}));
                n.phase = NodePhase::Failed;
            }
        }
        for colour in [false, true] {
            let text = super::task(&t, colour);
            assert!(clean_of_controls(&text), "{text:?}");
            assert!(text.contains("+new") && text.contains("failed"), "{text}");
        }

        let param = crate::catalog::ParamSummary {
            name: format!("p{HOSTILE}"),
            kind: "enum".into(),
            required: false,
            default: Some(serde_json::json!(HOSTILE)),
            values: vec![serde_json::json!(HOSTILE)],
            value_descriptions: vec![HOSTILE.to_owned()],
            description: HOSTILE.to_owned(),
        };
        let method = MethodSummary {
            name: format!("m{HOSTILE}"),
            description: HOSTILE.to_owned(),
            mutates: true,
            params: vec![param],
        };
        let plugin = PluginSummary {
            name: format!("p{HOSTILE}"),
            ready: false,
            version: Some(HOSTILE.to_owned()),
            description: HOSTILE.to_owned(),
            capabilities: "etc=write".into(),
            message: Some(HOSTILE.to_owned()),
            methods: vec![method.clone()],
        };
        let catalog = plugins(std::slice::from_ref(&plugin));
        assert!(clean_of_controls(&catalog), "{catalog:?}");
        let explained = explain(&plugin, &method);
        assert!(clean_of_controls(&explained), "{explained:?}");
    }
}
