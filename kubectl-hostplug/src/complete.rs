//! Shell completion of `kubectl hostplug` arguments. kubectl (1.26 and later) completes a
//! plugin's arguments by running `kubectl_complete-hostplug ARGS… WORD` from the PATH and
//! reading Cobra's answer: one candidate a line (`value<TAB>description`), then
//! `:<directive>`; `kubectl hostplug __complete ARGS… WORD` gives that answer (the
//! one-line script that links the two is in docs/operations.md).
//!
//! Completed: subcommands, plugin and method names from the catalog, and after `--param`
//! (`-p`) the method's parameter names in the one order and, after `NAME=`, an enum's
//! values with their descriptions (the console's select shows the same, from the same
//! reader, [`hostplug_api::schema`]) and a boolean's `true`/`false`.
//!
//! Pure: the caller fetches the HostPlugins. It must never print anything but the answer:
//! the shell shows every line of it to the user, so the plugins' text goes through
//! [`plain`] first.

use std::fmt::Write as _;

use hostplug_api::crd::HostPlugin;
use hostplug_api::schema::{Kind, ParamSchema};
use serde_json::Value;

use crate::terminal::plain;

/// Cobra's directive: do not offer file names.
pub const NO_FILE_COMPLETION: u8 = 4;
/// Cobra's directive: do not add a space after the candidate (`NAME=` goes on).
pub const NO_SPACE: u8 = 2;

/// The subcommands with the first line of their help, read from the command-line
/// parser itself (one list: a new subcommand completes without a second edit); the
/// hidden ones (`__complete`) and clap's `help` are left out.
fn subcommands() -> Vec<(String, String)> {
    let cli = <crate::Cli as clap::CommandFactory>::command();
    cli.get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .map(|c| {
            let about = c
                .get_about()
                .map(|a| a.to_string())
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_owned();
            (c.get_name().to_owned(), about)
        })
        .collect()
}

/// Flags that take the next word as their value (`run`'s and the global ones).
const VALUE_FLAGS: [&str; 18] = [
    "--nodes",
    "--target",
    "-l",
    "--selector",
    "-p",
    "--param",
    "--wait-timeout",
    "--name",
    "--timeout",
    "--max-parallel",
    "--max-failures",
    "--ttl",
    "--kubeconfig",
    "--context",
    "-n",
    "--namespace",
    "-o",
    "--output",
];

/// An answer to the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Candidates with their descriptions (may be empty).
    pub candidates: Vec<(String, String)>,
    /// Cobra's directive bits.
    pub directive: u8,
}

impl Completion {
    fn of(candidates: Vec<(String, String)>, word: &str, directive: u8) -> Self {
        Self {
            candidates: candidates
                .into_iter()
                .filter(|(c, _)| c.starts_with(word))
                .collect(),
            directive,
        }
    }

    fn none() -> Self {
        Self {
            candidates: Vec::new(),
            directive: NO_FILE_COMPLETION,
        }
    }

    /// The answer in Cobra's format. Descriptions are put on one line (doc comments
    /// arrive wrapped; tabs separate fields): each candidate is one line of the protocol.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (value, description) in &self.candidates {
            // The plugin's text: no control sequence of its own reaches the terminal.
            let value = plain(value).replace(['\n', '\t'], " ");
            let description = plain(description)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if description.is_empty() {
                let _ = writeln!(out, "{value}");
            } else {
                let _ = writeln!(out, "{value}\t{description}");
            }
        }
        let _ = writeln!(out, ":{}", self.directive);
        out
    }
}

/// Completes the last of `words` (the arguments after `hostplug`, the one being typed
/// last, possibly empty).
pub fn complete(plugins: &[HostPlugin], words: &[String]) -> Completion {
    let Some((word, before)) = words.split_last() else {
        return Completion::none();
    };
    let Some((sub, rest)) = before.split_first() else {
        return Completion::of(subcommands(), word, NO_FILE_COMPLETION);
    };
    if sub != "run" && sub != "explain" {
        return Completion::none();
    }
    let mut positionals: Vec<&str> = Vec::new();
    let mut skip = false;
    for w in rest {
        if skip {
            skip = false;
        } else if VALUE_FLAGS.contains(&w.as_str()) {
            skip = true;
        } else if !w.starts_with('-') {
            positionals.push(w);
        }
    }
    let plugin = |name: &str| {
        plugins
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .and_then(|p| p.status.as_ref()?.info.as_ref())
    };
    let after_param = skip && rest.last().is_some_and(|w| w == "-p" || w == "--param");
    if after_param {
        let schema = match positionals.as_slice() {
            [p, m, ..] => plugin(p)
                .and_then(|info| info.method(m))
                .and_then(|m| m.params_schema.clone()),
            _ => None,
        };
        return match schema {
            Some(schema) => param_candidates(&schema, word),
            None => Completion::none(),
        };
    }
    if skip || word.starts_with('-') {
        return Completion::none();
    }
    match positionals.as_slice() {
        [] => {
            let names = plugins
                .iter()
                .filter_map(|p| {
                    let name = p.metadata.name.clone()?;
                    let about = p
                        .status
                        .as_ref()
                        .and_then(|s| s.info.as_ref())
                        .map(|i| i.description.clone())
                        .unwrap_or_default();
                    Some((name, about))
                })
                .collect();
            Completion::of(names, word, NO_FILE_COMPLETION)
        }
        [p] => {
            let methods = plugin(p)
                .map(|info| {
                    info.methods
                        .iter()
                        .map(|m| (m.name.clone(), m.description.clone()))
                        .collect()
                })
                .unwrap_or_default();
            Completion::of(methods, word, NO_FILE_COMPLETION)
        }
        _ => Completion::none(),
    }
}

/// Completes a `--param` word of a method with parameter schema `schema`: `NAME=` for
/// each parameter, then an enum's or a boolean's values after `NAME=`.
pub fn param_candidates(schema: &Value, word: &str) -> Completion {
    let read = ParamSchema::read(schema);
    let Some((name, _)) = word.split_once('=') else {
        let names = read
            .leaves()
            .into_iter()
            .map(|(f, required)| {
                let mut about = f.summary();
                if required {
                    about.insert_str(0, "(required) ");
                }
                (format!("{}=", f.path), about)
            })
            .collect();
        return Completion::of(names, word, NO_SPACE | NO_FILE_COMPLETION);
    };
    let values: Vec<(String, String)> = match read.field(name).map(|f| &f.kind) {
        Some(Kind::Enum(choices)) => choices
            .iter()
            .map(|c| {
                (
                    format!("{name}={}", c.label()),
                    c.description.clone().unwrap_or_default(),
                )
            })
            .collect(),
        Some(Kind::Boolean) => ["true", "false"]
            .iter()
            .map(|v| (format!("{name}={v}"), String::new()))
            .collect(),
        _ => Vec::new(),
    };
    Completion::of(values, word, NO_FILE_COMPLETION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::crd::{HostPluginSpec, HostPluginStatus};
    use hostplug_api::{MethodInfo, PluginInfo};
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["path"],
            "properties": {
                "path": {"type": "string", "x-order": 0, "description": "A file."},
                "state": {"$ref": "#/$defs/State", "x-order": 1},
                "create": {"type": "boolean", "x-order": 2}
            },
            "$defs": {"State": {"oneOf": [
                {"type": "string", "const": "present", "description": "It is there."},
                {"type": "string", "const": "absent", "description": "It is\ngone."}]}}
        })
    }

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| (*s).to_owned()).collect()
    }

    fn plugins() -> Vec<HostPlugin> {
        let spec: HostPluginSpec = serde_json::from_value(json!({
            "sha256": "0".repeat(64), "source": {"builtin": "etc-file"}
        }))
        .expect("spec");
        let mut hp = HostPlugin::new("etc-file", spec);
        hp.status = Some(HostPluginStatus {
            ready: true,
            info: Some(PluginInfo {
                name: "etc-file".into(),
                version: "1.0.0".into(),
                description: "Files under /etc.".into(),
                methods: vec![MethodInfo {
                    name: "ensure-block".into(),
                    description: "A block.".into(),
                    mutates: true,
                    params_schema: Some(schema()),
                }],
            }),
            ..Default::default()
        });
        vec![hp]
    }

    #[test]
    fn every_subcommand_completes_and_hidden_ones_do_not() {
        let c = complete(&plugins(), &words(&[""]));
        let names: Vec<&str> = c.candidates.iter().map(|(n, _)| n.as_str()).collect();
        for sub in [
            "run", "status", "logs", "rerun", "revert", "pause", "resume", "cancel",
        ] {
            assert!(names.contains(&sub), "{sub} missing from {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.starts_with("__") || *n == "help"),
            "{names:?}"
        );
        assert!(
            c.candidates.iter().all(|(_, about)| !about.is_empty()),
            "{c:?}"
        );
        let c = complete(&plugins(), &words(&["re"]));
        let names: Vec<&str> = c.candidates.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["rerun", "revert", "resume"]);
    }

    #[test]
    fn an_enum_completes_to_its_values_with_their_descriptions() {
        let c = complete(
            &plugins(),
            &words(&[
                "run",
                "etc-file",
                "ensure-block",
                "--nodes",
                "n1",
                "-p",
                "state=",
            ]),
        );
        assert_eq!(
            c.render(),
            "state=present\tIt is there.\nstate=absent\tIt is gone.\n:4\n"
        );
        let c = param_candidates(&schema(), "state=a");
        assert_eq!(
            c.candidates,
            [("state=absent".to_owned(), "It is\ngone.".to_owned())]
        );
        let c = param_candidates(&schema(), "create=");
        assert_eq!(c.candidates.len(), 2);
    }

    #[test]
    fn names_come_in_the_one_order_and_leave_the_word_open() {
        let c = complete(
            &plugins(),
            &words(&["run", "etc-file", "ensure-block", "--param", ""]),
        );
        let names: Vec<&str> = c.candidates.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["path=", "state=", "create="]);
        assert_eq!(c.candidates[0].1, "(required) A file.");
        assert_eq!(c.directive, NO_SPACE | NO_FILE_COMPLETION);
    }

    #[test]
    fn subcommands_plugins_and_methods_complete() {
        let c = complete(&plugins(), &words(&["ex"]));
        assert_eq!(c.candidates[0].0, "explain");
        let c = complete(&plugins(), &words(&["run", "-n", "x", "etc"]));
        assert_eq!(c.candidates[0].0, "etc-file");
        let c = complete(&plugins(), &words(&["explain", "etc-file", ""]));
        assert_eq!(c.candidates[0].0, "ensure-block");
        let c = complete(
            &plugins(),
            &words(&["run", "etc-file", "ensure-block", "--nodes", ""]),
        );
        assert!(c.candidates.is_empty());
        assert!(complete(&[], &[]).candidates.is_empty());
    }

    #[test]
    fn candidates_from_a_plugin_carry_no_control_sequences() {
        let hostile = "\u{1b}]52;c;cm0gLXJmIH4K\u{7}\u{1b}[2J\u{9b}1;1H";
        let c = Completion {
            candidates: vec![(
                format!("state=a{hostile}"),
                format!("It is{hostile} there."),
            )],
            directive: NO_FILE_COMPLETION,
        };
        let text = c.render();
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{text:?}"
        );
    }
}
