//! Test plugin: `set` makes a file under /etc hold `content`
//! (`{"path": "/etc/x", "content": "…", "ms": N}`). Its dry run reports whether the file
//! differs; a real run that changes the file first sleeps `ms` milliseconds, so a test can
//! catch a correction in flight (an operator killed mid-correction), then writes and
//! appends one line to `<path>.writes`, so the test counts the real writes.

wit_bindgen::generate!({ path: "../../../wit", world: "host-action" });

use hostplug::plugin::types::MethodInfo;

/// Longest sleep accepted: 10 minutes, far beyond any test's need.
const MAX_SLEEP_MS: u64 = 600_000;

struct TestSlowWrite;

fn param<'a>(p: &'a serde_json::Value, key: &str) -> Result<&'a str, PluginError> {
    p.get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| PluginError::InvalidParams(format!("{key} (a string) is required")))
}

impl Guest for TestSlowWrite {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "test-slow-write".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Writes a file, slowly on request.".into(),
            methods: vec![MethodInfo {
                name: "set".into(),
                description: "Makes a file hold the given content.".into(),
                mutates: true,
                params_schema: r#"{"type":"object","required":["path","content"],"properties":{"path":{"type":"string"},"content":{"type":"string"},"ms":{"type":"integer","minimum":0}}}"#.into(),
            }],
        }
    }

    fn invoke(method: String, params: String, dry_run: bool) -> Result<Outcome, PluginError> {
        if method != "set" {
            return Err(PluginError::NotFound(format!("no method {method}")));
        }
        let p: serde_json::Value =
            serde_json::from_str(&params).map_err(|e| PluginError::InvalidParams(e.to_string()))?;
        let path = param(&p, "path")?;
        let content = param(&p, "content")?;
        let ms = p
            .get("ms")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
            .min(MAX_SLEEP_MS);
        let old = std::fs::read_to_string(path).ok();
        let changed = old.as_deref() != Some(content);
        if changed && !dry_run {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            std::fs::write(path, content).map_err(|e| PluginError::Failed(e.to_string()))?;
            let log = format!("{path}.writes");
            let mut count = std::fs::read_to_string(&log).unwrap_or_default();
            count.push_str("write\n");
            std::fs::write(&log, count).map_err(|e| PluginError::Failed(e.to_string()))?;
        }
        Ok(Outcome {
            changed,
            output: format!(r#"{{"changed":{changed}}}"#),
            diff: changed.then(|| {
                format!(
                    "--- a{path}\n+++ b{path}\n-{}\n+{content}\n",
                    old.unwrap_or_default().trim_end()
                )
            }),
            reboot_required: None,
        })
    }
}

export!(TestSlowWrite);
