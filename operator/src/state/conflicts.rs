//! Two HostStates that fight over a file: found by what their steps touch (same plugin,
//! same `parameter.path`, on a node both select), or caught in the act (each corrected a
//! node after the other did: a flip-flop the path rule could not see). Either way the
//! nodes are reported on both and corrected by neither.
//!
//! Pure functions and a small in-memory record; nothing here talks to the cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use hostplug_api::state::HostStateSpec;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a step touches, for conflict detection: plugin and normalised `parameter.path`.
pub fn file_keys(spec: &HostStateSpec) -> BTreeSet<(String, String)> {
    spec.steps
        .iter()
        .filter_map(|s| {
            let path = s.parameter.as_ref()?.get("path")?.as_str()?;
            Some((s.api.clone(), normalise_path(path)))
        })
        .collect()
}

/// `/etc//a/./b` → `/etc/a/b` (`..` is left alone: the plugin refuses what escapes).
fn normalise_path(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// One HostState as conflict detection sees it.
#[derive(Debug, Clone)]
pub struct StateFootprint {
    /// HostState name.
    pub name: String,
    /// The files its steps touch.
    pub files: BTreeSet<(String, String)>,
    /// Its selected nodes.
    pub nodes: BTreeSet<String>,
}

/// For `me`: the nodes shared with another state touching one of the same files, each
/// with the names of those states.
pub fn path_conflicts(
    me: &StateFootprint,
    others: &[StateFootprint],
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for o in others.iter().filter(|o| o.name != me.name) {
        if me.files.is_disjoint(&o.files) {
            continue;
        }
        for n in me.nodes.intersection(&o.nodes) {
            out.entry(n.clone()).or_default().insert(o.name.clone());
        }
    }
    out
}

/// Which state corrected which node when, to catch two states undoing each other.
#[derive(Debug, Default)]
pub struct FlipFlops {
    inner: Mutex<FlipInner>,
}

#[derive(Debug, Default)]
struct FlipInner {
    seq: u64,
    /// (node, state) → sequence number of the state's last correction of the node.
    last: HashMap<(String, String), u64>,
    /// Pairs of states (sorted) found undoing each other, with the nodes.
    pairs: BTreeMap<(String, String), BTreeSet<String>>,
}

impl FlipFlops {
    /// `state` is about to correct `node`: the other state that corrected it after
    /// `state` did (so the drift is likely its doing), recorded as a conflict pair.
    pub fn suspect(&self, node: &str, state: &str) -> Option<String> {
        let mut f = lock(&self.inner);
        let mine = *f.last.get(&(node.to_owned(), state.to_owned()))?;
        let other = f
            .last
            .iter()
            .filter(|((n, s), seq)| n == node && s != state && **seq > mine)
            .map(|((_, s), _)| s.clone())
            .next()?;
        let pair = if state < other.as_str() {
            (state.to_owned(), other.clone())
        } else {
            (other.clone(), state.to_owned())
        };
        f.pairs.entry(pair).or_default().insert(node.to_owned());
        Some(other)
    }
    /// `state` corrected `node`.
    pub fn corrected(&self, node: &str, state: &str) {
        let mut f = lock(&self.inner);
        f.seq += 1;
        let seq = f.seq;
        f.last.insert((node.to_owned(), state.to_owned()), seq);
    }
    /// The flip-flop conflicts of `state`: node → other states.
    pub fn of(&self, state: &str) -> BTreeMap<String, BTreeSet<String>> {
        let f = lock(&self.inner);
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ((a, b), nodes) in &f.pairs {
            let other = if a == state {
                b
            } else if b == state {
                a
            } else {
                continue;
            };
            for n in nodes {
                out.entry(n.clone()).or_default().insert(other.clone());
            }
        }
        out
    }
    /// `state` changed or went away: its records and conflicts are void.
    pub fn forget(&self, state: &str) {
        let mut f = lock(&self.inner);
        f.last.retain(|(_, s), _| s != state);
        f.pairs.retain(|(a, b), _| a != state && b != state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::NodeView;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> HostStateSpec {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
    }

    fn nodes() -> Vec<NodeView> {
        let view = |name: &str, labels: &[(&str, &str)]| NodeView {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..NodeView::default()
        };
        vec![
            view("master", &[("node-role.kubernetes.io/control-plane", "")]),
            view("node1", &[("pool", "a")]),
            view("node2", &[("pool", "b")]),
        ]
    }

    #[test]
    fn states_sharing_a_file_conflict_on_shared_nodes_only() {
        let a = spec(
            json!({"targetType": "All", "steps": [{"api": "etc-file", "method": "ensure-line", "parameter": {"path": "/etc/x.conf", "line": "a"}}]}),
        );
        let b = spec(
            json!({"workers": ["node2"], "steps": [{"api": "etc-file", "method": "ensure-line", "parameter": {"path": "/etc//./x.conf", "line": "b"}}]}),
        );
        let c = spec(
            json!({"targetType": "All", "steps": [{"api": "etc-file", "method": "ensure-line", "parameter": {"path": "/etc/y.conf", "line": "c"}}]}),
        );
        let fp = |name: &str, s: &HostStateSpec| StateFootprint {
            name: name.into(),
            files: file_keys(s),
            nodes: s
                .targets
                .select(&nodes())
                .map(|sel| sel.nodes)
                .unwrap_or_default()
                .into_iter()
                .collect(),
        };
        let all = vec![fp("a", &a), fp("b", &b), fp("c", &c)];
        let of_a = path_conflicts(&all[0], &all);
        assert_eq!(of_a.len(), 1, "{of_a:?}");
        assert_eq!(of_a.get("node2").map(|s| s.contains("b")), Some(true));
        assert_eq!(path_conflicts(&all[1], &all).len(), 1);
        assert!(path_conflicts(&all[2], &all).is_empty());
    }

    #[test]
    fn flip_flops_are_caught_on_the_second_round() {
        let f = FlipFlops::default();
        // a corrects, b corrects (first time: nothing to suspect), a finds drift again.
        assert_eq!(f.suspect("n1", "a"), None);
        f.corrected("n1", "a");
        assert_eq!(f.suspect("n1", "b"), None);
        f.corrected("n1", "b");
        assert_eq!(f.suspect("n1", "a").as_deref(), Some("b"));
        assert!(f.of("a").get("n1").is_some_and(|s| s.contains("b")));
        assert!(f.of("b").get("n1").is_some_and(|s| s.contains("a")));
        assert!(!f.of("a").contains_key("n2"));
        f.forget("b");
        assert!(f.of("a").is_empty());
        // A state that corrects the same node twice alone is no flip-flop.
        f.corrected("n2", "a");
        f.corrected("n2", "a");
        assert_eq!(f.suspect("n2", "a"), None);
    }
}
