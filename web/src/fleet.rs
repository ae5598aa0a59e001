//! The console at fleet size: which nodes a role and a label selector pick — through the
//! operator's own rule, [`hostplug_api::NodeTargets::select`], never a second one — and
//! pages of per-node rows, so a page of a 200-node task or state stays a page.
//!
//! Pure functions over what the handlers already read; nothing here talks to the cluster.

use hostplug_api::{NodeTargets, TargetType};

use crate::cluster::NodeView;

/// Node rows on one page of a task or a state: 50. A page of 50 cards with their diffs
/// renders at once and scrolls comfortably; a 200-node rollout is four pages, and the
/// phase filter finds the few failed nodes without paging.
pub const NODES_PER_PAGE: usize = 50;

/// The nodes a role and a selector pick, as the operator would pick them now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeMatch {
    /// Nodes in the cluster.
    pub total: usize,
    /// Nodes picked.
    pub matched: usize,
    /// Their names, sorted.
    pub nodes: Vec<String>,
    /// The count in words, as the new-task form shows it ([`NodeMatch::summary`] with
    /// [`MATCH_NAMES`] names).
    pub summary: String,
}

/// Node names a match's summary names: 8, a line's worth; the count says how many more.
pub const MATCH_NAMES: usize = 8;

impl NodeMatch {
    /// "37 of 200 nodes match: node1, node3, node4, …" — at most `names` names.
    pub fn summary(&self, names: usize) -> String {
        let mut s = format!(
            "{} of {} node{} match{}",
            self.matched,
            self.total,
            if self.total == 1 { "" } else { "s" },
            if self.matched == 0 { "" } else { ":" }
        );
        if self.matched > 0 {
            s.push(' ');
            s.push_str(
                &self
                    .nodes
                    .iter()
                    .take(names)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            if self.matched > names {
                s.push_str(", …");
            }
        }
        s
    }
}

/// The nodes among `nodes` that role `role`, narrowed by the selector typed as
/// `selector_text` (`kubectl -l` requirements, one per line or comma-separated), picks.
/// The error names the field and the problem, as the form shows it.
pub fn match_nodes(
    nodes: &[NodeView],
    role: TargetType,
    selector_text: &str,
) -> Result<NodeMatch, String> {
    let node_selector =
        crate::selector::parse(selector_text).map_err(|e| format!("nodeSelector: {e}"))?;
    let targets = NodeTargets {
        target_type: Some(role),
        node_selector,
        ..NodeTargets::default()
    };
    let views: Vec<hostplug_api::NodeView> = nodes
        .iter()
        .map(|n| hostplug_api::NodeView {
            name: n.name.clone(),
            labels: n.labels.clone(),
            ..hostplug_api::NodeView::default()
        })
        .collect();
    let selection = targets.select(&views).map_err(|e| e.to_string())?;
    let mut m = NodeMatch {
        total: nodes.len(),
        matched: selection.nodes.len(),
        nodes: selection.nodes,
        summary: String::new(),
    };
    m.summary = m.summary(MATCH_NAMES);
    Ok(m)
}

/// Where a page of rows is, for the pager under a list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pager {
    /// This page, from 1.
    pub page: usize,
    /// Pages in all (at least 1).
    pub pages: usize,
    /// Position of the first row shown, from 1 (0 when there are none).
    pub first: usize,
    /// Position of the last row shown.
    pub last: usize,
    /// Rows in all (after the filter).
    pub total: usize,
    /// The link to the previous page, if any.
    pub prev: Option<String>,
    /// The link to the next page, if any.
    pub next: Option<String>,
}

impl Pager {
    /// Whether there is more than one page.
    pub fn needed(&self) -> bool {
        self.pages > 1
    }
}

/// The rows of page `page` (from 1; out of range is clamped) of `total` rows, and its
/// pager; `link(n)` is the address of page `n`.
pub fn paginate(
    total: usize,
    page: usize,
    link: impl Fn(usize) -> String,
) -> (std::ops::Range<usize>, Pager) {
    let pages = total.div_ceil(NODES_PER_PAGE).max(1);
    let page = page.clamp(1, pages);
    let start = (page - 1) * NODES_PER_PAGE;
    let end = (start + NODES_PER_PAGE).min(total);
    let pager = Pager {
        page,
        pages,
        first: if total == 0 { 0 } else { start + 1 },
        last: end,
        total,
        prev: (page > 1).then(|| link(page - 1)),
        next: (page < pages).then(|| link(page + 1)),
    };
    (start..end, pager)
}

/// One choice of a per-node filter (a phase of a task's nodes, a sync state of a
/// state's): its count and the link that applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterChip {
    /// `All`, or the phase or sync state.
    pub label: String,
    /// Rows with it.
    pub count: usize,
    /// The page that shows only them.
    pub href: String,
    /// Whether it is the filter in force.
    pub active: bool,
    /// CSS class of its colour.
    pub class: &'static str,
}

/// The filter chips for rows whose states are `states` (in row order), with `chosen` the
/// filter in force (empty: all); `link(state)` is the page of one state ("" for all).
/// States come in the order of `order`; those with no row are left out.
pub fn chips(
    states: &[&str],
    order: &[&str],
    chosen: &str,
    class: impl Fn(&str) -> &'static str,
    link: impl Fn(&str) -> String,
) -> Vec<FilterChip> {
    let mut out = vec![FilterChip {
        label: "All".to_owned(),
        count: states.len(),
        href: link(""),
        active: chosen.is_empty(),
        class: "wait",
    }];
    for state in order {
        let count = states.iter().filter(|s| *s == state).count();
        if count > 0 {
            out.push(FilterChip {
                label: (*state).to_owned(),
                count,
                href: link(state),
                active: chosen == *state,
                class: class(state),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: &[(&str, &str)]) -> NodeView {
        NodeView {
            name: name.to_owned(),
            control_plane: false,
            ready: true,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn roles_and_selectors_pick_as_the_operator_does() {
        let nodes = vec![
            node("master", &[("node-role.kubernetes.io/control-plane", "")]),
            node("node2", &[("disk", "ssd"), ("zone", "b")]),
            node("node1", &[("disk", "ssd"), ("zone", "a")]),
            node("node3", &[("disk", "hdd"), ("zone", "a")]),
        ];
        let m = match_nodes(&nodes, TargetType::Node, "disk=ssd\nzone in (a, b)");
        assert_eq!(
            m.map(|m| (m.total, m.matched, m.nodes, m.summary)),
            Ok((
                4,
                2,
                vec!["node1".into(), "node2".into()],
                "2 of 4 nodes match: node1, node2".to_owned()
            ))
        );
        assert_eq!(
            match_nodes(&nodes, TargetType::Master, "").map(|m| m.nodes),
            Ok(vec!["master".to_owned()])
        );
        assert_eq!(
            match_nodes(&nodes, TargetType::All, "").map(|m| m.matched),
            Ok(4)
        );
        let e = match_nodes(&nodes, TargetType::All, "zone in a").err();
        assert!(e.is_some_and(|e| e.starts_with("nodeSelector:")));
        let m = match_nodes(&nodes, TargetType::Node, "disk").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.summary(2), "3 of 4 nodes match: node1, node2, …");
        let none = match_nodes(&nodes, TargetType::Node, "disk=nvme");
        assert_eq!(
            none.map(|m| m.summary(2)),
            Ok("0 of 4 nodes match".to_owned())
        );
    }

    #[test]
    fn pages_cover_every_row_once_and_clamp() {
        let link = |n: usize| format!("?page={n}");
        let (rows, p) = paginate(200, 1, link);
        assert_eq!((rows, p.pages, p.first, p.last), (0..50, 4, 1, 50));
        assert_eq!((p.prev, p.next.as_deref()), (None, Some("?page=2")));
        let (rows, p) = paginate(200, 4, link);
        assert_eq!((rows, p.first, p.last, p.next), (150..200, 151, 200, None));
        let (rows, p) = paginate(201, 99, link);
        assert_eq!((rows, p.page, p.pages), (200..201, 5, 5));
        let (rows, p) = paginate(0, 0, link);
        assert_eq!(
            (rows, p.page, p.pages, p.first, p.needed()),
            (0..0, 1, 1, 0, false)
        );
        let covered: usize = (1..=5).map(|n| paginate(201, n, link).0.len()).sum();
        assert_eq!(covered, 201);
    }

    #[test]
    fn chips_count_each_state_in_its_order() {
        let states = ["Failed", "Succeeded", "Succeeded", "Running"];
        let c = chips(
            &states,
            &["Pending", "Running", "Succeeded", "Failed"],
            "Failed",
            |_| "wait",
            |s| format!("?phase={s}"),
        );
        let got: Vec<(&str, usize, bool)> = c
            .iter()
            .map(|c| (c.label.as_str(), c.count, c.active))
            .collect();
        assert_eq!(
            got,
            [
                ("All", 4, false),
                ("Running", 1, false),
                ("Succeeded", 2, false),
                ("Failed", 1, true)
            ]
        );
        assert_eq!(c[0].href, "?phase=");
    }
}
