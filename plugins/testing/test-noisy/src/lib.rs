//! Test plugin: floods every output channel and calls the docker import.
//!
//! Methods (params JSON): `chatter {stdout, stderr, logs, logSize}` writes that many bytes
//! to stdout and stderr (in 100-byte lines) and calls the log import `logs` times with
//! `logSize`-byte messages; `output {bytes}` returns an output of about that size;
//! `docker {method, path, body?}` makes one docker call and returns status and body.

wit_bindgen::generate!({ path: "../../../wit", world: "host-action" });

use std::io::Write;

use hostplug::plugin::docker;
use hostplug::plugin::log::{Level, log};
use hostplug::plugin::types::{CapabilityError, MethodInfo};
use serde_json::{Value, json};

struct TestNoisy;

fn num(params: &Value, name: &str) -> usize {
    params
        .get(name)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
}

fn flood(mut out: impl Write, bytes: usize, tag: char) {
    let line: String = std::iter::repeat_n(tag, 99).chain(['\n']).collect();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(line.len());
        // Errors are ignored on purpose: a capped stream must not fail the plugin.
        let _ = out.write_all(&line.as_bytes()[..n]);
        left -= n;
    }
    let _ = out.flush();
}

impl Guest for TestNoisy {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "test-noisy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Floods stdout, stderr, logs and output; calls docker.".into(),
            methods: ["chatter", "output", "docker"]
                .map(|name| MethodInfo {
                    name: name.into(),
                    description: format!("test method {name}"),
                    mutates: name == "docker",
                    params_schema: r#"{"type":"object"}"#.into(),
                })
                .to_vec(),
        }
    }

    fn invoke(method: String, params: String, _dry_run: bool) -> Result<Outcome, PluginError> {
        let params: Value = serde_json::from_str(&params)
            .map_err(|e| PluginError::InvalidParams(format!("params: {e}")))?;
        match method.as_str() {
            "chatter" => {
                flood(std::io::stdout(), num(&params, "stdout"), 'o');
                flood(std::io::stderr(), num(&params, "stderr"), 'e');
                let msg = "l".repeat(num(&params, "logSize").max(1));
                for i in 0..num(&params, "logs") {
                    let level = [Level::Debug, Level::Info, Level::Warn, Level::Error][i % 4];
                    log(level, &msg);
                }
                Ok(Outcome {
                    changed: false,
                    output: r#"{"done":true}"#.into(),
                    diff: None,
                    reboot_required: None,
                })
            }
            "output" => {
                let text = "x".repeat(num(&params, "bytes"));
                Ok(Outcome {
                    changed: false,
                    output: json!({ "text": text }).to_string(),
                    diff: None,
                    reboot_required: None,
                })
            }
            "docker" => {
                let method = params
                    .get("method")
                    .and_then(Value::as_str)
                    .unwrap_or("GET");
                let path = params
                    .get("path")
                    .and_then(Value::as_str)
                    .unwrap_or("/_ping");
                let body = params.get("body").map(|b| b.to_string().into_bytes());
                match docker::request(method, path, body.as_deref()) {
                    Ok(r) => Ok(Outcome {
                        changed: false,
                        output: json!({
                            "status": r.status,
                            "body": String::from_utf8_lossy(&r.body),
                        })
                        .to_string(),
                        diff: None,
                        reboot_required: None,
                    }),
                    // The host's typed error, passed on by kind: nothing here reads the
                    // message to decide it. The message keeps the kind in front, as the
                    // host's words.
                    Err(CapabilityError::Denied(m)) => {
                        Err(PluginError::Denied(format!("denied: {m}")))
                    }
                    Err(CapabilityError::NotFound(m)) => {
                        Err(PluginError::NotFound(format!("not-found: {m}")))
                    }
                    Err(CapabilityError::Invalid(m)) => {
                        Err(PluginError::InvalidParams(format!("invalid: {m}")))
                    }
                    Err(CapabilityError::Failed(m)) => Err(PluginError::Failed(m)),
                }
            }
            other => Err(PluginError::NotFound(format!("no method {other}"))),
        }
    }
}

export!(TestNoisy);
