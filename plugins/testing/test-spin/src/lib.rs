//! Test plugin: `spin` loops forever without calling the host (only epoch interruption
//! can stop it); `ok` succeeds.

wit_bindgen::generate!({ path: "../../../wit", world: "host-action" });

use hostplug::plugin::types::MethodInfo;

struct TestSpin;

impl Guest for TestSpin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "test-spin".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Loops forever on request.".into(),
            methods: ["spin", "ok"]
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
