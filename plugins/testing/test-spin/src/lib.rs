//! Test plugin: `spin` loops forever without calling the host (only epoch interruption
//! can stop it); `sleep` waits `{"ms": N}` milliseconds inside one host call
//! (`wasi:io/poll` on a monotonic-clock subscription, where epoch interruption cannot
//! reach it), by default an hour ([`DEFAULT_SLEEP_MS`]), and succeeds, so a test can catch
//! calls in flight or a deadline cut a host call; `ok` succeeds.

/// How long `sleep` waits when the parameters name no `ms`: an hour, longer than any
/// deadline, so a test calling it with `{}` sees the deadline cut it.
const DEFAULT_SLEEP_MS: u64 = 3_600_000;

wit_bindgen::generate!({ path: "../../../wit", world: "host-action" });

use hostplug::plugin::types::MethodInfo;

struct TestSpin;

impl Guest for TestSpin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "test-spin".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Loops or sleeps on request.".into(),
            methods: ["spin", "sleep", "ok"]
                .map(|name| MethodInfo {
                    name: name.into(),
                    description: format!("test method {name}"),
                    mutates: false,
                    params_schema: "{}".into(),
                })
                .to_vec(),
        }
    }

    fn invoke(method: String, params: String, _dry_run: bool) -> Result<Outcome, PluginError> {
        match method.as_str() {
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "sleep" => {
                let ms = params
                    .split(|c: char| !c.is_ascii_digit())
                    .find(|s| !s.is_empty())
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(DEFAULT_SLEEP_MS);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(Outcome {
                    changed: false,
                    output: format!(r#"{{"slept_ms":{ms}}}"#),
                    diff: None,
                    reboot_required: None,
                })
            }
            "ok" => Ok(Outcome {
                changed: false,
                output: r#"{"ok":true}"#.into(),
                diff: None,
                reboot_required: None,
            }),
            other => Err(PluginError::NotFound(format!("no method {other}"))),
        }
    }
}

export!(TestSpin);
