//! hello: the example plugin of plugins/README.md, kept as a real crate so it always
//! builds. `greet` only answers; `set-motd` writes /etc/motd idempotently, with a diff,
//! a dry run and an atomic write.

use hostplug_sdk::{Context, Definition, Outcome, Plugin, Result, diff, export_plugin, fs};
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
    let old = fs::read_text(&path)?;
    let new = format!("{}\n", p.message);
    let Some(change) = diff::unified("/etc/motd", old.as_deref(), Some(&new)) else {
        return Ok(Outcome::unchanged(
            serde_json::json!({ "path": "/etc/motd" }),
        ));
    };
    if !cx.dry_run() {
        fs::write_atomic(&path, new.as_bytes())?;
        hostplug_sdk::log::info("motd updated");
    }
    Ok(Outcome::changed(serde_json::json!({ "path": "/etc/motd" })).with_diff(Some(change)))
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
