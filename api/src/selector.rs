//! Label selectors as people type them (`kubectl -l` syntax, one requirement per line or
//! comma-separated): `key=value`, `key==value`, `key!=value`, `key in (a, b)`,
//! `key notin (a, b)`, `key` (exists), `!key` (does not exist). [`parse`] turns the text
//! into a [`LabelSelector`], [`format`] turns one back, so a task's selector can be shown
//! and edited. Pure functions; nothing here talks to a cluster.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Longest selector text accepted: far beyond any real selector, small enough to parse
/// without thought.
pub const MAX_SELECTOR_LEN: usize = 4096;

/// Splits on commas that are not inside parentheses, and on newlines.
fn requirements(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' | '\n' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn set_values(rest: &str) -> Option<Vec<String>> {
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    (!values.is_empty() && values.iter().all(|v| valid_value(v))).then_some(values)
}

/// Parses selector text; `Ok(None)` for empty text. The error names the requirement
/// that could not be read.
pub fn parse(text: &str) -> Result<Option<LabelSelector>, String> {
    if text.len() > MAX_SELECTOR_LEN {
        return Err(format!("longer than {MAX_SELECTOR_LEN} characters"));
    }
    let mut labels = BTreeMap::new();
    let mut expressions = Vec::new();
    for requirement in requirements(text) {
        let bad = || {
            format!(
                "cannot read {requirement:?} (use key=value, key!=value, key in (a,b), key notin (a,b), key or !key)"
            )
        };
        let expression =
            |key: &str, operator: &str, values: Option<Vec<String>>| LabelSelectorRequirement {
                key: key.to_owned(),
                operator: operator.to_owned(),
                values,
            };
        if let Some((key, value)) = requirement.split_once("!=") {
            let (key, value) = (key.trim(), value.trim());
            if !valid_key(key) || !valid_value(value) {
                return Err(bad());
            }
            expressions.push(expression(key, "NotIn", Some(vec![value.to_owned()])));
        } else if let Some((key, value)) = requirement
            .split_once("==")
            .or_else(|| requirement.split_once('='))
        {
            let (key, value) = (key.trim(), value.trim());
            if !valid_key(key) || !valid_value(value) {
                return Err(bad());
            }
            labels.insert(key.to_owned(), value.to_owned());
        } else if let Some(key) = requirement.strip_prefix('!') {
            let key = key.trim();
            if !valid_key(key) {
                return Err(bad());
            }
            expressions.push(expression(key, "DoesNotExist", None));
        } else if let Some((key, rest)) = requirement.split_once(char::is_whitespace) {
            let rest = rest.trim_start();
            let (operator, rest) = if let Some(rest) = rest.strip_prefix("notin") {
                ("NotIn", rest)
            } else if let Some(rest) = rest.strip_prefix("in") {
                ("In", rest)
            } else {
                return Err(bad());
            };
            let values = set_values(rest).ok_or_else(bad)?;
            if !valid_key(key) {
                return Err(bad());
            }
            expressions.push(expression(key, operator, Some(values)));
        } else if valid_key(requirement) {
            expressions.push(expression(requirement, "Exists", None));
        } else {
            return Err(bad());
        }
    }
    if labels.is_empty() && expressions.is_empty() {
        return Ok(None);
    }
    Ok(Some(LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    }))
}

/// Writes a selector in the syntax [`parse`] reads, one requirement per line.
pub fn format(selector: &LabelSelector) -> String {
    let mut lines: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(", ");
        lines.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "DoesNotExist" => format!("!{}", e.key),
            _ => e.key.clone(),
        });
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_formats_back() {
        let text = "disk=ssd\nzone in (a, b), tier notin (x)\n!spot\ngpu\nrack!=r1";
        let selector = parse(text).expect("valid").expect("not empty");
        assert_eq!(
            selector.match_labels,
            Some([("disk".to_owned(), "ssd".to_owned())].into())
        );
        let ops: Vec<_> = selector
            .match_expressions
            .iter()
            .flatten()
            .map(|e| (e.key.as_str(), e.operator.as_str()))
            .collect();
        assert_eq!(
            ops,
            [
                ("zone", "In"),
                ("tier", "NotIn"),
                ("spot", "DoesNotExist"),
                ("gpu", "Exists"),
                ("rack", "NotIn"),
            ]
        );
        assert_eq!(parse(&format(&selector)), Ok(Some(selector)));
    }

    #[test]
    fn empty_is_none_and_nonsense_is_named() {
        assert_eq!(parse("  \n , "), Ok(None));
        let err = parse("disk=ssd\nzone in a").expect_err("bad");
        assert!(err.contains("zone in a"), "{err}");
        assert!(parse("a b c").is_err());
        assert!(parse("=x").is_err());
    }
}
