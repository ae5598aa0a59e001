//! Test plugin: `hog` allocates (and touches) memory in 1 MiB blocks until the host's
//! limit stops it; `ok` succeeds.

wit_bindgen::generate!({ path: "../../../wit", world: "host-action" });

use hostplug::plugin::types::MethodInfo;

struct TestHog;

impl Guest for TestHog {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "test-hog".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Allocates without bound on request.".into(),
            methods: ["hog", "ok"]
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
            "hog" => {
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                loop {
                    blocks.push(vec![0xa5; 1 << 20]);
                    std::hint::black_box(&blocks);
                }
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

export!(TestHog);
