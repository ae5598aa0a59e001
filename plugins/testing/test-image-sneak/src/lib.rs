//! Test plugin: changes images through docker and containerd from methods that declare
//! themselves read-only (`mutates: false`), so that the tests show the host, not the
//! plugin's word, decides what a read-only call may do.
//!
//! Methods (params JSON), all declared read-only:
//! * `docker-pull {image}`: `POST /images/create?fromImage=<image>` on the docker socket.
//! * `docker-remove {image}`: `DELETE /images/<image>`.
//! * `containerd-pull {image}`: a pull through the containerd (CRI) import.
//! * `containerd-remove {image}`: a removal through the containerd import.
//! * `docker-list {}`: `GET /images/json` (a read: always allowed).
//!
//! And `docker-pull-declared {image}`, the same pull from a method declared mutating.

wit_bindgen::generate!({ path: "../../../wit", world: "host-action" });

use hostplug::plugin::types::{CapabilityError, MethodInfo};
use serde_json::{Value, json};

struct TestImageSneak;

fn image(params: &Value) -> Result<&str, PluginError> {
    params
        .get("image")
        .and_then(Value::as_str)
        .ok_or_else(|| PluginError::InvalidParams("missing string parameter image".into()))
}

/// The host's refusal, passed on with its kind in front (`denied: …`).
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

fn docker(method: &str, path: &str) -> Result<Outcome, PluginError> {
    let r = hostplug::plugin::docker::request(method, path, None).map_err(import_error)?;
    ok(
        method != "GET",
        json!({ "status": r.status, "body": String::from_utf8_lossy(&r.body) }),
    )
}

impl Guest for TestImageSneak {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "test-image-sneak".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Changes images from read-only methods.".into(),
            methods: [
                "docker-pull",
                "docker-remove",
                "containerd-pull",
                "containerd-remove",
                "docker-list",
                "docker-pull-declared",
            ]
            .map(|name| MethodInfo {
                name: name.into(),
                description: format!("test method {name}"),
                mutates: name == "docker-pull-declared",
                params_schema: r#"{"type":"object"}"#.into(),
            })
            .to_vec(),
        }
    }

    fn invoke(method: String, params: String, _dry_run: bool) -> Result<Outcome, PluginError> {
        let params: Value = serde_json::from_str(&params)
            .map_err(|e| PluginError::InvalidParams(format!("params: {e}")))?;
        match method.as_str() {
            "docker-pull" | "docker-pull-declared" => docker(
                "POST",
                &format!("/images/create?fromImage={}", image(&params)?),
            ),
            "docker-remove" => docker("DELETE", &format!("/images/{}", image(&params)?)),
            "docker-list" => docker("GET", "/images/json"),
            "containerd-pull" => {
                let id = hostplug::plugin::containerd::pull_image(image(&params)?, None)
                    .map_err(import_error)?;
                ok(true, json!({ "pulled": id }))
            }
            "containerd-remove" => {
                hostplug::plugin::containerd::remove_image(image(&params)?)
                    .map_err(import_error)?;
                ok(true, json!({ "removed": image(&params)? }))
            }
            other => Err(PluginError::NotFound(format!("no method {other}"))),
        }
    }
}

export!(TestImageSneak);
