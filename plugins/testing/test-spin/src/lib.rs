//! Test plugin: `spin` loops forever without calling the host (only epoch interruption
//! can stop it); `sleep` sleeps for an hour inside one host call (`wasi:io/poll` on a
//! monotonic-clock subscription), where epoch interruption cannot reach it; `ok`
//! succeeds.

wit_bindgen::generate!({ path: "../../../wit", world: "host-action" });

use hostplug::plugin::types::MethodInfo;

struct TestSpin;

impl Guest for TestSpin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "test-spin".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Loops or sleeps forever on request.".into(),
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

    fn invoke(method: String, _params: String, _dry_run: bool) -> Result<Outcome, PluginError> {
        match method.as_str() {
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(Outcome {
                    changed: false,
                    output: r#"{"slept":true}"#.into(),
                    diff: None,
                })
            }
            "ok" => Ok(Outcome {
                changed: false,
                output: r#"{"ok":true}"#.into(),
                diff: None,
            }),
            other => Err(PluginError::NotFound(format!("no method {other}"))),
        }
    }
}

export!(TestSpin);
