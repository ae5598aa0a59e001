//! Test plugin: `describe` sleeps for an hour inside one host call (`wasi:io/poll` on a
//! monotonic-clock subscription) before answering, as a module that would hang whoever
//! describes it (the operator does, for every HostPlugin). `ok` succeeds.

wit_bindgen::generate!({ path: "../../../wit", world: "host-action" });

use hostplug::plugin::types::MethodInfo;

struct TestSlowDescribe;

impl Guest for TestSlowDescribe {
    fn describe() -> PluginInfo {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        PluginInfo {
            name: "test-slow-describe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Describes itself an hour late.".into(),
            methods: vec![MethodInfo {
                name: "ok".into(),
                description: "test method ok".into(),
                mutates: false,
                params_schema: "{}".into(),
            }],
        }
    }

    fn invoke(method: String, _params: String, _dry_run: bool) -> Result<Outcome, PluginError> {
        match method.as_str() {
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

export!(TestSlowDescribe);
