//! sysctl-conf: kernel parameters in `/etc/sysctl.d/*.conf`, the files `systemd-sysctl`
//! applies at boot. `set` and `unset` edit one file (default `99-hostplug.conf`),
//! idempotently, with a diff and a dry run; `list` reads every `*.conf` there. It never
//! applies a value to the running kernel (no plugin can reach /proc): it manages what the
//! node applies at its next boot or `sysctl --system`. `set` with `reboot: true` says so
//! in its outcome when it changed the file (a reboot request, SDK 0.4.0): a HostTask with
//! `spec.disruption.reboot: IfRequested` then has the operator drain and reboot the node.

use std::path::PathBuf;

use hostplug_sdk::{Context, Definition, Error, Outcome, Plugin, Result, export_plugin, fs};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

/// The directory this plugin manages.
const SYSCTL_D: &str = "/etc/sysctl.d";
/// Mode of `/etc/sysctl.d` when the plugin has to create it (what distributions ship).
const SYSCTL_D_MODE: u32 = 0o755;

fn default_file() -> String {
    "99-hostplug.conf".to_owned()
}

/// Parameters of `set`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Set {
    /// Kernel parameter, e.g. `net.ipv4.ip_forward`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-/*]{0,254}$"))]
    pub key: String,
    /// Its value, one line (e.g. `1`, or `4096 87380 6291456`).
    #[schemars(length(max = 4096), regex(pattern = r"^[^\n\r]*$"))]
    pub value: String,
    /// File in /etc/sysctl.d to edit.
    #[serde(default = "default_file")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,120}\.conf$"))]
    pub file: String,
    /// Ask for a reboot when the file changed, so that the value is in effect (read by
    /// `systemd-sysctl` at boot). Only a request: the task's `spec.disruption.reboot`
    /// decides.
    #[serde(default)]
    pub reboot: bool,
}

/// Parameters of `unset`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unset {
    /// Kernel parameter whose assignments are removed from the file.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-/*]{0,254}$"))]
    pub key: String,
    /// File in /etc/sysctl.d to edit.
    #[serde(default = "default_file")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,120}\.conf$"))]
    pub file: String,
}

/// Parameters of `list`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// Only this key (all keys when absent).
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-/*]{0,254}$"))]
    pub key: Option<String>,
}

/// One assignment found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// 0-based line number.
    pub line: usize,
    /// The key as written, without a leading `-`.
    pub key: String,
    /// The value, trimmed.
    pub value: String,
}

/// `a/b.c` and `a.b.c` name the same parameter (`sysctl.d(5)`).
pub fn normalize(key: &str) -> String {
    key.replace('/', ".")
}

/// The assignments of a sysctl.d file: `key = value` lines; `#` and `;` start comments;
/// a leading `-` (ignore errors) is not part of the key.
pub fn parse(text: &str) -> Vec<Assignment> {
    text.lines()
        .enumerate()
        .filter_map(|(line, l)| {
            let t = l.trim();
            if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
                return None;
            }
            let (k, v) = t.split_once('=')?;
            let key = k.trim().trim_start_matches('-').trim().to_owned();
            Some(Assignment {
                line,
                key,
                value: v.trim().to_owned(),
            })
        })
        .collect()
}

/// The lines of `text` (0-based) that assign `key`, in order.
fn lines_assigning(text: &str, key: &str) -> Vec<usize> {
    let wanted = normalize(key);
    parse(text)
        .into_iter()
        .filter(|a| normalize(&a.key) == wanted)
        .map(|a| a.line)
        .collect()
}

/// `text` with `key` set to `value`: the first assignment of the key is rewritten (only if
/// its value differs), later ones removed, or a line appended.
pub fn set_in(text: &str, key: &str, value: &str) -> String {
    let matching = lines_assigning(text, key);
    let mut out = String::new();
    for (i, l) in text.lines().enumerate() {
        match matching.first() {
            Some(first) if *first == i => {
                let current = parse(l).pop().map(|a| a.value);
                if current.as_deref() == Some(value) && matching.len() == 1 {
                    out.push_str(l);
                } else {
                    out.push_str(&format!("{key} = {value}"));
                }
                out.push('\n');
            }
            _ if matching.contains(&i) => {}
            _ => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    if matching.is_empty() {
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

/// `text` without any assignment of `key`.
pub fn unset_in(text: &str, key: &str) -> String {
    let drop = lines_assigning(text, key);
    let mut out = String::new();
    for (i, l) in text.lines().enumerate() {
        if !drop.contains(&i) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// The schema's patterns, checked again here: the schema is enforced by the operator and
/// the CLI, but a plugin must not rely on its caller.
fn check(field: &str, value: &str, pattern_ok: bool) -> Result<()> {
    if pattern_ok {
        Ok(())
    } else {
        Err(Error::invalid_params(format!(
            "{field}: {value:?} is not allowed"
        )))
    }
}

fn key_ok(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= 255
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-/*".contains(c))
}

fn file_path(file: &str) -> Result<PathBuf> {
    let ok = file.len() <= 126
        && file.ends_with(".conf")
        && !file.starts_with(['.', '-'])
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    check("file", file, ok)?;
    fs::etc_path(&format!("{SYSCTL_D}/{file}"))
}

/// Makes sure /etc/sysctl.d exists (except in a dry run, which only reports).
fn ensure_dir(cx: &Context) -> Result<()> {
    let dir = fs::etc_path(SYSCTL_D)?;
    if !cx.dry_run() && fs::stat(&dir)?.is_none() {
        fs::create_dir(&dir, SYSCTL_D_MODE)?;
        hostplug_sdk::log::info("created /etc/sysctl.d");
    }
    Ok(())
}

fn set(p: Set, cx: &Context) -> Result<Outcome> {
    check("key", &p.key, key_ok(&p.key))?;
    check(
        "value",
        &p.value,
        !p.value.contains(['\n', '\r']) && p.value.len() <= 4096,
    )?;
    let path = file_path(&p.file)?;
    ensure_dir(cx)?;
    let options = fs::EditOptions {
        dry_run: cx.dry_run(),
        ..Default::default()
    };
    let edit = fs::edit_text(&path, options, |old| {
        Ok(Some(set_in(
            old.unwrap_or_default(),
            &p.key,
            p.value.trim(),
        )))
    })?;
    let output = json!({"file": path, "key": p.key, "value": p.value.trim()});
    let done = Outcome::new(edit.changed, output).with_diff(edit.diff);
    Ok(if edit.changed && p.reboot {
        done.requires_reboot(format!(
            "{} = {} in {} takes effect when systemd-sysctl applies it at boot",
            p.key,
            p.value.trim(),
            path.display()
        ))
    } else {
        done
    })
}

fn unset(p: Unset, cx: &Context) -> Result<Outcome> {
    check("key", &p.key, key_ok(&p.key))?;
    let path = file_path(&p.file)?;
    let options = fs::EditOptions {
        dry_run: cx.dry_run(),
        ..Default::default()
    };
    // A missing file stays missing: nothing to remove.
    let edit = fs::edit_text(&path, options, |old| Ok(old.map(|t| unset_in(t, &p.key))))?;
    let output = json!({"file": path, "key": p.key});
    Ok(Outcome::new(edit.changed, output).with_diff(edit.diff))
}

fn list(p: List, _cx: &Context) -> Result<Outcome> {
    if let Some(k) = &p.key {
        check("key", k, key_ok(k))?;
    }
    let wanted = p.key.as_deref().map(normalize);
    let dir = fs::etc_path(SYSCTL_D)?;
    let mut found = Vec::new();
    for name in fs::list_dir(&dir)?.unwrap_or_default() {
        if !name.ends_with(".conf") {
            continue;
        }
        let path = dir.join(&name);
        let Some(text) = fs::read_text(&path)? else {
            continue;
        };
        for a in parse(&text) {
            if wanted.as_ref().is_none_or(|w| *w == normalize(&a.key)) {
                found.push(json!({"file": path, "key": a.key, "value": a.value}));
            }
        }
    }
    Ok(Outcome::unchanged(json!(found)))
}

/// The plugin.
pub struct SysctlConf;

impl Plugin for SysctlConf {
    fn definition() -> Definition {
        Definition::new(
            "sysctl-conf",
            env!("CARGO_PKG_VERSION"),
            "Kernel parameters in /etc/sysctl.d/*.conf (applied at boot).",
        )
        .read_only(
            "list",
            "Lists the assignments in /etc/sysctl.d/*.conf, in file order.",
            list,
        )
        .mutating(
            "set",
            "Sets a kernel parameter in one /etc/sysctl.d file.",
            set,
        )
        .mutating(
            "unset",
            "Removes a kernel parameter's assignments from one /etc/sysctl.d file.",
            unset,
        )
    }
}

export_plugin!(SysctlConf);

#[cfg(test)]
mod tests {
    use super::*;

    /// Pattern of a key: the dotted names of `sysctl -a` (slashes are the same name); what
    /// `key_ok` checks.
    const KEY_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9_.\-/*]{0,254}$";
    /// Pattern of a file name in `/etc/sysctl.d`; what `file_path` checks.
    const FILE_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,120}\.conf$";

    #[test]
    fn patterns_in_the_schema_match_the_checks() {
        let s = hostplug_sdk::params_schema::<Set>();
        assert!(s.contains(&KEY_PATTERN.replace('\\', "\\\\")), "{s}");
        assert!(s.contains(&FILE_PATTERN.replace('\\', "\\\\")), "{s}");
    }

    #[test]
    fn set_is_idempotent_and_keeps_the_rest() {
        let text = "# tuning\nnet.ipv4.ip_forward = 0\nvm.swappiness=10\n";
        let once = set_in(text, "net.ipv4.ip_forward", "1");
        assert_eq!(
            once,
            "# tuning\nnet.ipv4.ip_forward = 1\nvm.swappiness=10\n"
        );
        assert_eq!(set_in(&once, "net.ipv4.ip_forward", "1"), once);
        // An equal value keeps the line as written.
        assert_eq!(set_in(text, "vm.swappiness", "10"), text);
        // Slashes name the same key; duplicates collapse to one line.
        let dup = "net/ipv4/ip_forward = 0\n-net.ipv4.ip_forward = 0\n";
        assert_eq!(
            set_in(dup, "net.ipv4.ip_forward", "1"),
            "net.ipv4.ip_forward = 1\n"
        );
        assert_eq!(
            set_in("", "kernel.pid_max", "4194304"),
            "kernel.pid_max = 4194304\n"
        );
    }

    #[test]
    fn unset_and_parse() {
        let text = "; c\nvm.swappiness = 10\nkernel.pid_max = 9\n";
        assert_eq!(unset_in(text, "vm/swappiness"), "; c\nkernel.pid_max = 9\n");
        assert_eq!(unset_in(text, "absent.key"), text);
        let a = parse("# x\n -fs.file-max = 100 \nbad line\n");
        assert_eq!(
            a,
            vec![Assignment {
                line: 1,
                key: "fs.file-max".into(),
                value: "100".into()
            }]
        );
    }

    #[test]
    fn bad_keys_and_files_are_refused_with_the_field() {
        let d = SysctlConf::definition();
        let e = d
            .invoke("set", r#"{"key": "a\nb", "value": "1"}"#, true)
            .expect_err("bad key");
        assert_eq!(e.kind(), "invalid-params");
        let e = d
            .invoke(
                "set",
                r#"{"key": "vm.x", "value": "1", "file": "../passwd"}"#,
                true,
            )
            .expect_err("bad file");
        assert!(e.to_string().contains("file"), "{e}");
    }
}
