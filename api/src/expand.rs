//! `$(…)` references in a plugin call's parameters, replaced per node: a call's `vars`
//! (`$(name)`, from a literal, a ConfigMap key or a Secret key) and the node's own values
//! (`$(node.name)`, `$(node.labels['KEY'])`, `$(node.annotations['KEY'])`,
//! `$(node.addresses.TYPE)`). `$$(` stands for a literal `$(`; a `$` not followed by `(`
//! stays as it is. Only strings are expanded, object keys never.
//!
//! And the masking of values that came from Secrets ([`mask`]): whatever the operator
//! reports (statuses, Events, logs) passes through it.
//!
//! Pure functions: the operator reads the ConfigMaps and Secrets and the node; nothing
//! here talks to a cluster.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::call::{Invalid, NodeView};

/// What a value from a Secret is replaced by wherever the operator reports.
pub const MASK: &str = "********";

/// Longest parameters text after expansion: 1 MiB, the worker's request limit's order of
/// magnitude; a var that would blow a parameter past it is refused.
pub const MAX_EXPANDED_BYTES: usize = 1 << 20;

/// Replaces every `$(…)` reference in the strings of `params` (under the field `root`,
/// e.g. `spec.http.parameter`) with its value for `node`. The error names the field and
/// the reference that has no value.
pub fn expand(
    params: &Value,
    root: &str,
    vars: &BTreeMap<String, String>,
    node: &NodeView,
) -> Result<Value, Invalid> {
    let out = expand_value(params, root, vars, node)?;
    let size = serde_json::to_string(&out).map_or(0, |s| s.len());
    if size > MAX_EXPANDED_BYTES {
        return Err(Invalid::new(
            root,
            format!(
                "{size} bytes once its $(…) references are replaced on node {}, more than {MAX_EXPANDED_BYTES}",
                node.name
            ),
        ));
    }
    Ok(out)
}

/// Whether `params` hold a reference to the node (so they differ per node).
pub fn refers_to_node(params: &Value) -> bool {
    match params {
        Value::String(s) => s.contains("$(node."),
        Value::Array(a) => a.iter().any(refers_to_node),
        Value::Object(o) => o.values().any(refers_to_node),
        _ => false,
    }
}

fn expand_value(
    v: &Value,
    field: &str,
    vars: &BTreeMap<String, String>,
    node: &NodeView,
) -> Result<Value, Invalid> {
    Ok(match v {
        Value::String(s) => Value::String(expand_str(s, field, vars, node)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, x)| expand_value(x, &format!("{field}[{i}]"), vars, node))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| {
                    Ok((
                        k.clone(),
                        expand_value(x, &format!("{field}.{k}"), vars, node)?,
                    ))
                })
                .collect::<Result<_, Invalid>>()?,
        ),
        other => other.clone(),
    })
}

fn expand_str(
    s: &str,
    field: &str,
    vars: &BTreeMap<String, String>,
    node: &NodeView,
) -> Result<String, Invalid> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$$(") {
            out.push_str("$(");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("$(") {
            let Some(end) = tail.find(')') else {
                return Err(Invalid::new(
                    field,
                    format!(
                        "unterminated reference {:?} (write $$( for a literal $()",
                        cut(after)
                    ),
                ));
            };
            let reference = &tail[..end];
            let value = resolve(reference, vars, node)
                .map_err(|problem| Invalid::new(field, format!("$({reference}): {problem}")))?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The value of one reference, or what is missing.
fn resolve(
    reference: &str,
    vars: &BTreeMap<String, String>,
    node: &NodeView,
) -> Result<String, String> {
    let Some(path) = reference.strip_prefix("node.") else {
        return vars.get(reference).cloned().ok_or_else(|| {
            let known: Vec<&str> = vars.keys().map(String::as_str).collect();
            if known.is_empty() {
                "no such var (the call defines none in vars)".to_owned()
            } else {
                format!("no such var (vars: {})", known.join(", "))
            }
        });
    };
    if path == "name" {
        return Ok(node.name.clone());
    }
    if let Some(key) = keyed(path, "labels") {
        return node
            .labels
            .get(key)
            .cloned()
            .ok_or_else(|| format!("node {} has no label {key:?}", node.name));
    }
    if let Some(key) = keyed(path, "annotations") {
        return node
            .annotations
            .get(key)
            .cloned()
            .ok_or_else(|| format!("node {} has no annotation {key:?}", node.name));
    }
    if let Some(kind) = path.strip_prefix("addresses.") {
        return node
            .addresses
            .iter()
            .find(|(t, _)| t == kind)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| format!("node {} has no address of type {kind:?}", node.name));
    }
    Err(
        "unknown reference (use a var's name, node.name, node.labels['KEY'], \
         node.annotations['KEY'] or node.addresses.TYPE)"
            .into(),
    )
}

/// `labels['k']` or `labels["k"]` → `k`.
fn keyed<'a>(path: &'a str, map: &str) -> Option<&'a str> {
    let inner = path
        .strip_prefix(map)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    inner
        .strip_prefix('\'')
        .and_then(|k| k.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|k| k.strip_suffix('"')))
}

/// `text` with every occurrence of each of `secrets` replaced by [`MASK`] (longer values
/// first, so a value containing another is masked whole). Empty values mask nothing.
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for s in sorted {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// [`mask`] over every string of a JSON value (keys included).
pub fn mask_json(v: &Value, secrets: &[String]) -> Value {
    match v {
        Value::String(s) => Value::String(mask(s, secrets)),
        Value::Array(a) => Value::Array(a.iter().map(|x| mask_json(x, secrets)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (mask(k, secrets), mask_json(x, secrets)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> NodeView {
        NodeView {
            name: "node1".into(),
            labels: [("topology.kubernetes.io/zone".to_owned(), "eu-1a".to_owned())].into(),
            annotations: [("rack".to_owned(), "r7".to_owned())].into(),
            addresses: vec![
                ("Hostname".into(), "node1".into()),
                ("InternalIP".into(), "10.0.0.5".into()),
            ],
        }
    }

    fn vars() -> BTreeMap<String, String> {
        [("ntp".to_owned(), "ntp.example.com".to_owned())].into()
    }

    #[test]
    fn node_values_and_vars_are_replaced_in_strings_only() {
        let p = json!({
            "path": "/etc/chrony.conf",
            "line": "server $(ntp) iburst # $(node.name) in $(node.labels['topology.kubernetes.io/zone'])",
            "more": ["$(node.annotations[\"rack\"])", "$(node.addresses.InternalIP)", 5, true],
            "$(ntp)": "keys stay",
            "cost": "$5 and $$(literal)",
        });
        let out = expand(&p, "spec.http.parameter", &vars(), &node());
        assert_eq!(
            out,
            Ok(json!({
                "path": "/etc/chrony.conf",
                "line": "server ntp.example.com iburst # node1 in eu-1a",
                "more": ["r7", "10.0.0.5", 5, true],
                "$(ntp)": "keys stay",
                "cost": "$5 and $(literal)",
            }))
        );
        assert!(refers_to_node(&p));
        assert!(!refers_to_node(&json!({"a": "$(ntp)"})));
    }

    #[test]
    fn what_is_missing_is_named_with_its_field() {
        let e = |p: Value| {
            expand(&p, "spec.http.parameter", &vars(), &node())
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(
            e(json!({"a": ["x", "$(node.labels['rack'])"]})),
            Some(
                "spec.http.parameter.a[1]: $(node.labels['rack']): node node1 has no label \"rack\""
                    .into()
            )
        );
        assert!(
            e(json!({"a": "$(password)"})).is_some_and(|m| m.contains("no such var (vars: ntp)")),
        );
        assert!(e(json!({"a": "$(node.uid)"})).is_some_and(|m| m.contains("unknown reference")));
        assert!(e(json!({"a": "$(ntp"})).is_some_and(|m| m.contains("unterminated")));
        assert!(
            e(json!({"a": "$(node.addresses.ExternalIP)"}))
                .is_some_and(|m| m.contains("no address of type \"ExternalIP\""))
        );
    }

    #[test]
    fn secrets_are_masked_whole_wherever_they_appear() {
        let secrets = vec![
            "hunter2".to_owned(),
            "hunter2-long".to_owned(),
            String::new(),
        ];
        assert_eq!(
            mask("+password = \"hunter2-long\" (was hunter2)", &secrets),
            format!("+password = \"{MASK}\" (was {MASK})")
        );
        assert_eq!(
            mask_json(&json!({"out": ["hunter2"], "hunter2": 1}), &secrets),
            json!({"out": [MASK], MASK: 1})
        );
        assert_eq!(mask("nothing here", &secrets), "nothing here");
    }
}
