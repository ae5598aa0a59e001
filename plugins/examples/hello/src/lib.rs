//! hello: the example plugin of plugins/README.md, kept as a real crate so it always
//! builds. `greet` only answers; `set-motd` writes /etc/motd idempotently, with a diff,
//! a dry run and an atomic write.

use hostplug_sdk::{Context, Definition, Outcome, Plugin, Result, export_plugin, fs};
use schemars::JsonSchema;
use serde::Deserialize;

/// Parameters of `greet`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Greet {
    /// Whom to greet.
    pub name: String,
}

/// Parameters of `set-motd`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMotd {
    /// The message of the day, one line.
    pub message: String,
}

fn greet(p: Greet, _cx: &Context) -> Result<Outcome> {
    Ok(Outcome::unchanged(format!("hello, {}!", p.name)))
}

fn set_motd(p: SetMotd, cx: &Context) -> Result<Outcome> {
    let path = fs::etc_path("/etc/motd")?;
    let options = fs::EditOptions {
        dry_run: cx.dry_run(),
        ..Default::default()
    };
    // Read, compute the new content, diff, and write atomically unless a dry run.
    let edit = fs::edit_text(&path, options, |_old| Ok(Some(format!("{}\n", p.message))))?;
    if edit.changed && !cx.dry_run() {
        hostplug_sdk::log::info("motd updated");
    }
    let output = serde_json::json!({ "path": "/etc/motd" });
    Ok(Outcome::new(edit.changed, output).with_diff(edit.diff))
}

/// The plugin.
pub struct Hello;

impl Plugin for Hello {
    fn definition() -> Definition {
        Definition::new("hello", env!("CARGO_PKG_VERSION"), "An example plugin.")
            .read_only("greet", "Returns a greeting.", greet)
            .mutating(
                "set-motd",
                "Sets the message of the day in /etc/motd.",
                set_motd,
            )
    }
}

export_plugin!(Hello);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets() {
        let out = Hello::definition()
            .invoke("greet", r#"{"name": "node1"}"#, false)
            .unwrap();
        assert!(!out.is_changed());
        assert_eq!(out.output().unwrap(), "hello, node1!");
    }

    #[test]
    fn names_a_bad_field() {
        let err = Hello::definition()
            .invoke("greet", r#"{"nam": "x"}"#, false)
            .unwrap_err();
        assert_eq!(err.kind(), "invalid-params");
    }
}
