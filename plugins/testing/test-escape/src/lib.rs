//! Test plugin: an adversarial file plugin. It does whatever path it is given — `..`,
//! absolute paths outside /etc, symlinks — and writes even in dry runs, so that the tests
//! show the host's sandbox, not the plugin, keeps the node safe.
//!
//! Methods (params JSON): `read {path}`, `write {path, content}` (ignores dry-run on
//! purpose), `list {path}`, `exists {path}`, `remove {path}`, `mkdir {path}`,
//! `env {}` (environment, arguments and cwd as the guest sees them), `stat {path}` and
//! `chmod {path, mode?, uid?, gid?}` (the host's `files` import, numbers as JSON integers;
//! ignores dry-run on purpose), `rename {path, to}` and `rmdir {path}`.

wit_bindgen::generate!({ path: "../../../wit", world: "host-action" });

use hostplug::plugin::types::{CapabilityError, MethodInfo};
use serde_json::{Value, json};

struct TestEscape;

fn param<'a>(params: &'a Value, name: &str) -> Result<&'a str, PluginError> {
    params
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| PluginError::InvalidParams(format!("missing string parameter {name}")))
}

fn io_error(path: &str, e: std::io::Error) -> PluginError {
    let msg = format!("{path}: {e}");
    match e.kind() {
        std::io::ErrorKind::NotFound => PluginError::NotFound(msg),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            PluginError::Denied(msg)
        }
        _ => PluginError::Failed(msg),
    }
}

/// The host's typed `files` error, passed on as the plugin error of the same kind; the
/// message keeps the kind in front (`denied: …`), as the host said it.
fn import_error(e: CapabilityError) -> PluginError {
    match e {
        CapabilityError::Denied(m) => PluginError::Denied(format!("denied: {m}")),
        CapabilityError::NotFound(m) => PluginError::NotFound(format!("not-found: {m}")),
        CapabilityError::Invalid(m) => PluginError::InvalidParams(format!("invalid: {m}")),
        CapabilityError::Failed(m) => PluginError::Failed(m),
    }
}

fn ok(changed: bool, output: Value) -> Result<Outcome, PluginError> {
    Ok(Outcome {
        changed,
        output: output.to_string(),
        diff: None,
        reboot_required: None,
    })
}

impl Guest for TestEscape {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "test-escape".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Tries to escape its /etc sandbox.".into(),
            methods: [
                "read",
                "write",
                "list",
                "exists",
                "remove",
                "mkdir",
                "env",
                "stat",
                "chmod",
                "registry-auth",
                "rename",
                "rmdir",
            ]
            .map(|name| MethodInfo {
                name: name.into(),
                description: format!("test method {name}"),
                mutates: matches!(
                    name,
                    "write" | "remove" | "mkdir" | "chmod" | "rename" | "rmdir"
                ),
                params_schema: r#"{"type":"object"}"#.into(),
            })
            .to_vec(),
        }
    }

    fn invoke(method: String, params: String, _dry_run: bool) -> Result<Outcome, PluginError> {
        let params: Value = serde_json::from_str(&params)
            .map_err(|e| PluginError::InvalidParams(format!("params: {e}")))?;
        match method.as_str() {
            "read" => {
                let path = param(&params, "path")?;
                let content = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
                ok(false, json!({ "content": content }))
            }
            "write" => {
                let path = param(&params, "path")?;
                let content = param(&params, "content")?;
                std::fs::write(path, content).map_err(|e| io_error(path, e))?;
                ok(true, json!({ "written": path }))
            }
            "list" => {
                let path = param(&params, "path")?;
                let mut names = Vec::new();
                for entry in std::fs::read_dir(path).map_err(|e| io_error(path, e))? {
                    let entry = entry.map_err(|e| io_error(path, e))?;
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
                names.sort();
                ok(false, json!({ "entries": names }))
            }
            "exists" => {
                let path = param(&params, "path")?;
                ok(false, json!({ "exists": std::fs::metadata(path).is_ok() }))
            }
            "remove" => {
                let path = param(&params, "path")?;
                std::fs::remove_file(path).map_err(|e| io_error(path, e))?;
                ok(true, json!({ "removed": path }))
            }
            "mkdir" => {
                let path = param(&params, "path")?;
                std::fs::create_dir(path).map_err(|e| io_error(path, e))?;
                ok(true, json!({ "created": path }))
            }
            "rename" => {
                let path = param(&params, "path")?;
                let to = param(&params, "to")?;
                std::fs::rename(path, to).map_err(|e| io_error(path, e))?;
                ok(true, json!({ "renamed": path, "to": to }))
            }
            "rmdir" => {
                let path = param(&params, "path")?;
                std::fs::remove_dir_all(path).map_err(|e| io_error(path, e))?;
                ok(true, json!({ "removed": path }))
            }
            "env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                let args: Vec<String> = std::env::args().collect();
                let cwd = std::env::current_dir()
                    .ok()
                    .map(|p| p.display().to_string());
                let root = std::fs::read_dir("/").is_ok();
                ok(
                    false,
                    json!({ "env": vars, "args": args, "cwd": cwd, "rootReadable": root }),
                )
            }
            "stat" => {
                let path = param(&params, "path")?;
                let a = hostplug::plugin::files::stat(path).map_err(import_error)?;
                ok(false, json!({ "mode": a.mode, "uid": a.uid, "gid": a.gid }))
            }
            "chmod" => {
                let path = param(&params, "path")?;
                let number = |name: &str| {
                    params
                        .get(name)
                        .and_then(Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok())
                };
                hostplug::plugin::files::set_attributes(
                    path,
                    number("mode"),
                    number("uid"),
                    number("gid"),
                )
                .map_err(import_error)?;
                ok(true, json!({ "changed": path }))
            }
            "registry-auth" => {
                // Asks for every registry it is told, as a plugin hunting credentials
                // would, and returns what it got: only a declared plugin of a task with
                // a Secret may get anything.
                let registries: Vec<String> = params
                    .get("registries")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let found: serde_json::Map<String, Value> = registries
                    .iter()
                    .map(|r| {
                        let c = hostplug::plugin::registry_auth::lookup(r);
                        (
                            r.clone(),
                            c.map_or(
                                Value::Null,
                                |c| json!({"username": c.username, "password": c.password}),
                            ),
                        )
                    })
                    .collect();
                ok(false, json!({ "found": found }))
            }
            other => Err(PluginError::NotFound(format!("no method {other}"))),
        }
    }
}

export!(TestEscape);
