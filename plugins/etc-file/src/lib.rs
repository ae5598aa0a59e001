//! etc-file: the built-in hostplug plugin for idempotent edits of files under /etc.
//!
//! Methods: `read`, `write`, `ensure-line`, `remove-line`, `replace`, `ensure-block`,
//! `delete` (parameters in [`params`]). Every method:
//!
//! - accepts only absolute paths that stay under /etc after lexical normalisation, and
//!   follows a symbolic link only while it stays under /etc; the sandbox, which preopens
//!   only /etc, is the second line of defence;
//! - computes the new content first and reports `changed: false` when it equals the old,
//!   so a repeated call changes nothing;
//! - returns a unified diff of every change; in a dry run it returns that diff and
//!   writes nothing (the host also mounts /etc read-only then);
//! - writes atomically by default, keeping the file's mode, owner and group (through the
//!   host's `files` import, see [`hostplug_sdk::fs`]), and can keep a timestamped `.bak`
//!   copy first (with the same mode, owner and group).
//!
//! The text logic lives in [`edit`] and is unit-tested natively; this module is the I/O
//! around it.

#![warn(missing_docs)]

pub mod edit;
pub mod params;

use std::path::{Path, PathBuf};

use hostplug_sdk::fs::{self, WriteStrategy};
use hostplug_sdk::{Context, Definition, Error, Outcome, Plugin, Result, diff, export_plugin, log};
use serde::Serialize;

use crate::edit::{Markers, Position};
use crate::params::State;

/// The etc-file plugin.
#[derive(Debug)]
pub struct EtcFile;

impl Plugin for EtcFile {
    fn definition() -> Definition {
        Definition::new(
            "etc-file",
            env!("CARGO_PKG_VERSION"),
            "Reads and idempotently edits files under /etc: whole files, single lines, \
             regex replacements and marked blocks, with unified diffs, dry runs and backups.",
        )
        .read_only("read", "Reads a text file under /etc.", read)
        .mutating(
            "write",
            "Sets the complete content of a file under /etc.",
            write,
        )
        .mutating(
            "ensure-line",
            "Makes sure a line is in a file: replaces the last line matching `regexp`, or adds the line if missing.",
            ensure_line,
        )
        .mutating(
            "remove-line",
            "Removes every line matching a regular expression.",
            remove_line,
        )
        .mutating(
            "replace",
            "Replaces every match of a regular expression in a file.",
            replace,
        )
        .mutating(
            "ensure-block",
            "Makes sure a block of lines between marker lines is in a file with the given content, or removes it.",
            ensure_block,
        )
        .mutating(
            "delete",
            "Deletes a file under /etc (nothing to do if it is missing).",
            delete,
        )
    }
}

export_plugin!(EtcFile);

/// Output of `read`.
#[derive(Debug, Serialize)]
struct ReadOutput {
    path: String,
    content: String,
    size: usize,
    /// Permission bits as four octal digits, e.g. "0644".
    mode: String,
    uid: u32,
    gid: u32,
}

/// Output of the editing methods.
#[derive(Debug, Serialize)]
struct EditOutput {
    /// The file that was (or would be) changed, after following symbolic links.
    path: String,
    /// Size of the file's content after the call, in bytes.
    bytes: usize,
    /// The backup made by this call, if any.
    backup: Option<String>,
    /// True when the file did not exist before.
    created: bool,
    /// The file's mode after the call (in a dry run: what it would be), e.g. "0640";
    /// null when the file does not exist.
    mode: Option<String>,
}

/// Output of `delete`.
#[derive(Debug, Serialize)]
struct DeleteOutput {
    path: String,
    /// True when the file existed (and was, or in a dry run would be, deleted).
    deleted: bool,
    backup: Option<String>,
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn strategy(atomic: bool) -> WriteStrategy {
    if atomic {
        WriteStrategy::Atomic
    } else {
        WriteStrategy::InPlace
    }
}

/// Checks the path and follows symbolic links that stay under /etc.
fn target(path: &str) -> Result<PathBuf> {
    fs::resolve_symlinks(&fs::etc_path(path)?)
}

/// The common shape of every editing method: follow the path to its target, let
/// `change` compute the new content from the old (`None` = missing; returning `None`
/// leaves a missing file missing), then report, or write with an optional backup.
fn edit_file(
    cx: &Context,
    path: &str,
    backup: bool,
    strategy: WriteStrategy,
    mode: Option<u32>,
    change: impl FnMut(Option<&str>) -> Result<Option<String>>,
) -> Result<Outcome> {
    let path = target(path)?;
    let options = fs::EditOptions {
        dry_run: cx.dry_run(),
        backup,
        strategy,
        mode,
    };
    let edit = fs::edit_text(&path, options, change)?;
    let name = display(&path);
    let saved = edit.backup.as_deref().map(display);
    if edit.changed && !cx.dry_run() {
        let note = saved.as_deref().map(|b| format!(" (backup {b})"));
        log::info(format!(
            "{}: {name}{}",
            cx.method(),
            note.unwrap_or_default()
        ));
    }
    Ok(Outcome::new(
        edit.changed,
        EditOutput {
            path: name,
            bytes: edit.bytes,
            backup: saved,
            created: edit.created,
            mode: edit.mode.map(fs::format_mode),
        },
    )
    .with_diff(edit.diff))
}

fn missing(path: &str) -> Error {
    Error::not_found(format!(
        "{path}: no such file; set \"create\": true to create it"
    ))
}

fn read(p: params::Read, _cx: &Context) -> Result<Outcome> {
    let requested = fs::etc_path(&p.path)?;
    let name = display(&requested);
    // Links that stay under /etc are followed; one that leads out of it (Debian's and
    // Fedora's /etc/os-release → ../usr/lib/os-release) is refused with a message that
    // says so, where the sandbox alone would only say "Operation not permitted".
    let path = fs::resolve_symlinks(&requested)?;
    let content =
        fs::read_text(&path)?.ok_or_else(|| Error::not_found(format!("{name}: no such file")))?;
    let attributes =
        fs::stat(&path)?.ok_or_else(|| Error::not_found(format!("{name}: no such file")))?;
    Ok(Outcome::unchanged(ReadOutput {
        path: name,
        size: content.len(),
        content,
        mode: fs::format_mode(attributes.mode),
        uid: attributes.uid,
        gid: attributes.gid,
    }))
}

/// Checks a `mode` parameter: permission bits only, no setuid, setgid or sticky bit (a
/// sticky regular file means nothing on Linux, and an integer such as 644 that was meant
/// as octal would set it). Errors name the field.
fn check_mode(mode: &params::Mode) -> Result<u32> {
    let value = match mode {
        params::Mode::Octal(text) => fs::parse_mode(text)?,
        params::Mode::Value(value) => {
            fs::check_mode(*value)?;
            *value
        }
    };
    if value & 0o1000 != 0 {
        let hint = match mode {
            params::Mode::Value(v) => format!(
                "; {v} is {} in octal: give a mode as a string such as \"0644\"",
                fs::format_mode(*v)
            ),
            params::Mode::Octal(_) => String::new(),
        };
        return Err(Error::invalid_params(format!(
            "mode: the sticky bit (01000) is not for files{hint}"
        )));
    }
    Ok(value)
}

fn write(p: params::Write, cx: &Context) -> Result<Outcome> {
    let mode = p.mode.as_ref().map(check_mode).transpose()?;
    let path = p.path.clone();
    edit_file(
        cx,
        &p.path,
        p.backup,
        strategy(p.atomic),
        mode,
        |old| match old {
            None if !p.create => Err(missing(&path)),
            _ => Ok(Some(p.content.clone())),
        },
    )
}

fn ensure_line(p: params::EnsureLine, cx: &Context) -> Result<Outcome> {
    let regexp = p
        .regexp
        .as_deref()
        .map(|r| edit::compile("regexp", r))
        .transpose()?;
    let at = Position::from_params(p.insertafter.as_deref(), p.insertbefore.as_deref())?;
    let path = p.path.clone();
    edit_file(cx, &p.path, p.backup, strategy(p.atomic), None, |old| {
        let old = match old {
            Some(old) => old,
            None if p.create => "",
            None => return Err(missing(&path)),
        };
        edit::ensure_line(old, &p.line, regexp.as_ref(), &at).map(Some)
    })
}

fn remove_line(p: params::RemoveLine, cx: &Context) -> Result<Outcome> {
    let regexp = edit::compile("regexp", &p.regexp)?;
    // A missing file has no line to remove: nothing to do.
    edit_file(cx, &p.path, p.backup, strategy(p.atomic), None, |old| {
        Ok(old.map(|old| edit::remove_lines(old, &regexp)))
    })
}

fn replace(p: params::Replace, cx: &Context) -> Result<Outcome> {
    let regexp = edit::compile_multiline("regexp", &p.regexp)?;
    let path = p.path.clone();
    edit_file(cx, &p.path, p.backup, strategy(p.atomic), None, |old| {
        let old = old.ok_or_else(|| Error::not_found(format!("{path}: no such file")))?;
        Ok(Some(edit::replace(old, &regexp, &p.replacement)))
    })
}

fn ensure_block(p: params::EnsureBlock, cx: &Context) -> Result<Outcome> {
    let markers = Markers::new(&p.marker, &p.markerbegin, &p.markerend)?;
    let at = Position::from_params(p.insertafter.as_deref(), p.insertbefore.as_deref())?;
    let present = p.state == State::Present;
    let path = p.path.clone();
    edit_file(cx, &p.path, p.backup, strategy(p.atomic), None, |old| {
        let old = match old {
            Some(old) => old,
            // A missing file has no block to remove.
            None if !present => return Ok(None),
            None if p.create => "",
            None => return Err(missing(&path)),
        };
        edit::ensure_block(old, &markers, &p.block, present, &at).map(Some)
    })
}

fn delete(p: params::Delete, cx: &Context) -> Result<Outcome> {
    // No symlink resolution: deleting a link removes the link, not what it points to.
    let path = fs::etc_path(&p.path)?;
    let name = display(&path);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Outcome::unchanged(DeleteOutput {
                path: name,
                deleted: false,
                backup: None,
            }));
        }
        Err(e) => return Err(Error::io(&path, &e)),
    };
    if meta.is_dir() {
        return Err(Error::invalid_params(format!(
            "path: {name} is a directory; delete removes files only"
        )));
    }
    // The old content for the diff and the backup; a link's target may be gone or
    // outside /etc, and binary files have no text diff.
    let old = std::fs::read(&path).ok();
    let diff = match old.as_deref().map(std::str::from_utf8) {
        Some(Ok(text)) => diff::unified(&name, Some(text), None),
        _ => Some(format!(
            "--- a/{}\n+++ /dev/null\n",
            name.trim_start_matches('/')
        )),
    };
    let mut saved = None;
    if !cx.dry_run() {
        if p.backup
            && let Some(old) = &old
        {
            saved = Some(display(&fs::backup(&path, old)?));
        }
        fs::remove_file(&path)?;
        log::info(format!("delete: {name}"));
    }
    Ok(Outcome::changed(DeleteOutput {
        path: name,
        deleted: true,
        backup: saved,
    })
    .with_diff(diff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_every_method_with_a_schema() {
        let def = EtcFile::definition();
        assert_eq!(def.name(), "etc-file");
        assert_eq!(def.version(), env!("CARGO_PKG_VERSION"));
        let names: Vec<&str> = def.methods().iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "read",
                "write",
                "ensure-line",
                "remove-line",
                "replace",
                "ensure-block",
                "delete"
            ]
        );
        for m in def.methods() {
            assert_eq!(m.mutates(), m.name() != "read", "{}", m.name());
            let schema: serde_json::Value = serde_json::from_str(m.params_schema()).unwrap();
            assert_eq!(schema["required"][0], "path", "{}", m.name());
            assert!(schema["properties"]["path"]["description"].is_string());
        }
    }

    #[test]
    fn paths_outside_etc_are_refused_before_any_io() {
        for path in ["/tmp/x", "/etc/../tmp/x", "etc/hosts", "/etc"] {
            let params = serde_json::json!({"path": path, "line": "x", "create": true}).to_string();
            let e = EtcFile::definition()
                .invoke("ensure-line", &params, false)
                .unwrap_err();
            assert_eq!(e.kind(), "denied", "{path}: {e}");
        }
    }

    #[test]
    fn bad_params_name_the_field() {
        let e = EtcFile::definition()
            .invoke(
                "ensure-line",
                r#"{"path":"/etc/x","line":"a","regexp":"("}"#,
                false,
            )
            .unwrap_err();
        assert!(e.message().starts_with("regexp:"), "{e}");
        for mode in [
            r#""0964""#,
            r#""4755""#,
            r#""12345""#,
            "644",
            "2048",
            r#""""#,
        ] {
            let e = EtcFile::definition()
                .invoke(
                    "write",
                    &format!(r#"{{"path":"/etc/x","content":"a","mode":{mode}}}"#),
                    false,
                )
                .unwrap_err();
            assert!(e.message().starts_with("mode:"), "{mode}: {e}");
        }
        assert_eq!(
            check_mode(&params::Mode::Octal("0640".into())).unwrap(),
            0o640
        );
        assert_eq!(
            check_mode(&params::Mode::Octal("0o600".into())).unwrap(),
            0o600
        );
        assert_eq!(check_mode(&params::Mode::Value(420)).unwrap(), 0o644);
        let e = EtcFile::definition()
            .invoke("write", r#"{"path":"/etc/x"}"#, false)
            .unwrap_err();
        assert!(e.message().contains("content"), "{e}");
    }
}
