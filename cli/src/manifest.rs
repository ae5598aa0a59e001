//! Kubernetes manifests for a plugin module: a ConfigMap holding the module in
//! `binaryData` and a HostPlugin pointing at it, pinned by sha256, ready for
//! `kubectl apply -f -`.
//!
//! Pure rendering: this module must never contact a cluster or write files.

use base64::Engine as _;
use hostplug_api::crd::{Capabilities, ConfigMapSource, HostPlugin, HostPluginSpec, PluginSource};
use hostplug_api::protocol::{ErrorKind, InvokeError};
use hostplug_host::{Digest, EtcAccess};
use serde_json::json;

/// Largest module a ConfigMap manifest holds: 1 MiB, the API server's limit on one
/// object (the module is base64-encoded in `binaryData`, a third larger).
pub const MAX_CONFIGMAP_BYTES: usize = 1 << 20;

/// The error of output that could not be encoded (`what`: JSON, YAML, the HostPlugin):
/// a defect of the CLI, kind `internal`.
pub(crate) fn encode_error(what: &str, e: &dyn std::fmt::Display) -> InvokeError {
    InvokeError::new(ErrorKind::Internal, format!("encoding {what}: {e}"))
}

/// Namespace the ConfigMap goes to when none is given.
pub const DEFAULT_NAMESPACE: &str = "hostplug-system";

/// Key of the module inside the ConfigMap's `binaryData`.
pub const CONFIGMAP_KEY: &str = "plugin.wasm";

/// What to render.
#[derive(Debug, Clone)]
pub struct ManifestRequest<'a> {
    /// The HostPlugin's name (also names the ConfigMap `plugin-<name>`).
    pub name: &'a str,
    /// Namespace of the ConfigMap.
    pub namespace: &'a str,
    /// The `etc` capability.
    pub etc: EtcAccess,
    /// The `docker` capability.
    pub docker: bool,
    /// The `containerd` capability.
    pub containerd: bool,
}

/// Renders the two documents as YAML for `module`. ConfigMaps hold at most 1 MiB, so
/// larger modules are refused.
pub fn render(module: &[u8], req: &ManifestRequest<'_>) -> Result<String, InvokeError> {
    if module.len() * 4 / 3 + 1024 > MAX_CONFIGMAP_BYTES {
        return Err(encode_error(
            "ConfigMap",
            &format!(
                "the module is {} bytes; a ConfigMap holds at most 1 MiB (base64-encoded)",
                module.len()
            ),
        ));
    }
    let digest = Digest::of(module);
    let cm_name = format!("plugin-{}", req.name);
    let labels: std::collections::BTreeMap<String, String> = [
        ("app.kubernetes.io/part-of", "hostplug"),
        ("hostplug.dev/plugin", req.name),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": &cm_name, "namespace": req.namespace, "labels": &labels},
        "binaryData": {CONFIGMAP_KEY: base64::engine::general_purpose::STANDARD.encode(module)},
    });
    let mut host_plugin = HostPlugin::new(
        req.name,
        HostPluginSpec {
            source: PluginSource {
                builtin: None,
                config_map: Some(ConfigMapSource {
                    namespace: req.namespace.to_owned(),
                    name: cm_name,
                    key: CONFIGMAP_KEY.to_owned(),
                }),
                oci: None,
            },
            sha256: Some(digest.hex()),
            capabilities: Capabilities {
                etc: req.etc,
                docker: req.docker,
                containerd: req.containerd,
                ..Default::default()
            },
            signature: None,
        },
    );
    host_plugin.metadata.labels = Some(labels);
    let host_plugin =
        serde_json::to_value(&host_plugin).map_err(|e| encode_error("HostPlugin", &e))?;
    let mut out = String::new();
    for doc in [config_map, host_plugin] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&doc).map_err(|e| encode_error("YAML", &e))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_configmap_and_hostplugin() -> Result<(), InvokeError> {
        let yaml = render(
            b"\0asm",
            &ManifestRequest {
                name: "demo",
                namespace: DEFAULT_NAMESPACE,
                etc: EtcAccess::Read,
                docker: true,
                containerd: false,
            },
        )?;
        let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde_json::Value::deserialize(d).map_err(|e| encode_error("YAML", &e)))
            .collect::<Result<_, _>>()?;
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["binaryData"][CONFIGMAP_KEY], "AGFzbQ==");
        assert_eq!(docs[1]["spec"]["sha256"], Digest::of(b"\0asm").hex());
        assert_eq!(
            docs[1]["spec"]["source"]["configMap"]["name"],
            "plugin-demo"
        );
        assert_eq!(docs[1]["spec"]["capabilities"]["etc"], "read");
        assert!(docs[1]["metadata"].get("namespace").is_none());
        assert_eq!(docs[1]["apiVersion"], "hostplug.dev/v1alpha1");
        assert_eq!(docs[1]["kind"], "HostPlugin");
        assert_eq!(docs[1]["metadata"]["labels"]["hostplug.dev/plugin"], "demo");
        assert!(docs[1].get("status").is_none(), "{:?}", docs[1]);
        Ok(())
    }

    use serde::Deserialize as _;
}
