//! Test plugin: traps. `panic` panics (an `unreachable` trap after the panic message on
//! stderr), `unreachable` executes the instruction directly, `recurse` overflows the
//! stack, `ok` succeeds (to show the next call works).

wit_bindgen::generate!({ path: "../../../wit", world: "host-action" });

use hostplug::plugin::types::MethodInfo;

struct TestTrap;

fn method(name: &str) -> MethodInfo {
    MethodInfo {
        name: name.into(),
        description: format!("test method {name}"),
        mutates: false,
        params_schema: "{}".into(),
    }
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == u64::MAX {
        return 0;
    }
    let buf = std::hint::black_box([n; 64]);
    recurse(buf[3] + 1) + buf[7]
}

impl Guest for TestTrap {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "test-trap".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Traps on request.".into(),
            methods: ["panic", "unreachable", "recurse", "ok"]
                .map(method)
                .to_vec(),
        }
    }

    fn invoke(method: String, _params: String, _dry_run: bool) -> Result<Outcome, PluginError> {
        match method.as_str() {
            "panic" => panic!("test-trap was asked to panic"),
            // The wasm `unreachable` instruction; native test builds only need to compile.
            #[cfg(target_arch = "wasm32")]
            "unreachable" => core::arch::wasm32::unreachable(),
            #[cfg(not(target_arch = "wasm32"))]
            "unreachable" => std::process::abort(),
            "recurse" => {
                let n = recurse(std::hint::black_box(1));
                Ok(Outcome {
                    changed: false,
                    output: n.to_string(),
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

export!(TestTrap);
