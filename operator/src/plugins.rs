//! Plugin resolution: from a HostPlugin to module bytes pinned by sha256 and the
//! plugin's self-description, and the HostPlugin controller that reports it.
//!
//! Built-in plugins are the `*.wasm` files of the operator's plugin directory; their
//! HostPlugin objects are created or updated at start-up. ConfigMap-sourced plugins must
//! name their sha256; a module with another digest is refused. `describe` runs in the
//! operator's own Wasm engine with no host access at all (no /etc, no docker). A module
//! that fails to load is reported on its own HostPlugin and affects no other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hostplug_host::{Digest, Host};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::crd::{
    Capabilities, EtcAccess, HostPlugin, HostPluginSpec, HostPluginStatus, MethodInfo, PluginInfo,
    PluginSource,
};
use crate::{Context, Error, FIELD_MANAGER, Result};

/// How often a HostPlugin is looked at again when nothing changed: 5 min, so an edited
/// ConfigMap (which the operator does not watch) is picked up without a restart.
const PLUGIN_RESYNC: Duration = Duration::from_secs(300);
/// Retry interval after a failure to load: 30 s.
const PLUGIN_RETRY: Duration = Duration::from_secs(30);
/// Largest module the operator reads: 32 MiB, the worker's upload limit.
const MAX_MODULE_BYTES: u64 = 32 * 1024 * 1024;

/// A plugin ready to be shipped to workers.
#[derive(Debug)]
pub struct LoadedPlugin {
    /// Module digest.
    pub digest: Digest,
    /// Module bytes.
    pub bytes: Arc<Vec<u8>>,
    /// What `describe` returned.
    pub info: PluginInfo,
}

/// The operator's plugins: the Wasm engine used for `describe` and the modules loaded so
/// far, keyed by HostPlugin name and the spec they were loaded for.
#[derive(Debug)]
pub struct PluginStore {
    host: Host,
    dir: PathBuf,
    loaded: Mutex<HashMap<String, (HostPluginSpec, Arc<LoadedPlugin>)>>,
}

/// Capabilities of the built-in plugins, by name. A built-in plugin not listed gets
/// none: it can only compute.
pub fn builtin_capabilities(name: &str) -> Capabilities {
    match name {
        "etc-file" => Capabilities {
            etc: EtcAccess::Write,
            docker: false,
        },
        "docker-image" => Capabilities {
            etc: EtcAccess::None,
            docker: true,
        },
        _ => Capabilities::default(),
    }
}

/// Whether `name` is a safe built-in plugin name (it becomes a file name).
fn valid_builtin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl PluginStore {
    /// A store using `host` to describe modules and `dir` for built-in plugins.
    pub fn new(host: Host, dir: PathBuf) -> Self {
        Self {
            host,
            dir,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The Wasm host that compiled the plugins (its artifacts go to workers).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The built-in plugins in the plugin directory: (name, file).
    pub fn builtins(&self) -> Result<Vec<(String, PathBuf)>> {
        let rd = std::fs::read_dir(&self.dir).map_err(|source| Error::Io {
            path: self.dir.display().to_string(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if valid_builtin_name(name) {
                out.push((name.to_owned(), path));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The plugin `name` as loaded for `spec`, if it is.
    pub fn cached(&self, name: &str, spec: &HostPluginSpec) -> Option<Arc<LoadedPlugin>> {
        let loaded = self.loaded.lock().ok()?;
        loaded
            .get(name)
            .filter(|(s, _)| s == spec)
            .map(|(_, p)| p.clone())
    }

    /// Loads the plugin of `hp` (or returns it from the cache): fetches the module,
    /// checks its digest, compiles it and runs `describe`. The error string is for the
    /// HostPlugin's status.
    pub async fn resolve(
        &self,
        client: &Client,
        hp: &HostPlugin,
    ) -> Result<Arc<LoadedPlugin>, String> {
        let name = hp.name_any();
        if let Some(p) = self.cached(&name, &hp.spec) {
            return Ok(p);
        }
        let bytes = self.fetch(client, &hp.spec).await?;
        let expected = match &hp.spec.sha256 {
            Some(s) => Some(
                s.parse::<Digest>()
                    .map_err(|e| format!("spec.sha256 is not a sha256: {e}"))?,
            ),
            None if hp.spec.source.builtin.is_some() => None,
            None => return Err("spec.sha256 is required for a plugin that is not built in".into()),
        };
        let actual = Digest::of(&bytes);
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(format!(
                "sha256 mismatch: spec.sha256 is {expected} but the module is {actual}; refused"
            ));
        }
        let host = self.host.clone();
        let bytes = Arc::new(bytes);
        let for_load = bytes.clone();
        let info = tokio::task::spawn_blocking(move || {
            let plugin = host.load(&for_load, Some(&actual))?;
            plugin.describe()
        })
        .await
        .map_err(|e| format!("loading the module failed: {e}"))?
        .map_err(|e| format!("the module does not load: {e}"))?;
        let loaded = Arc::new(LoadedPlugin {
            digest: actual,
            bytes,
            info: convert_info(info),
        });
        if let Ok(mut map) = self.loaded.lock() {
            map.insert(name, (hp.spec.clone(), loaded.clone()));
        }
        Ok(loaded)
    }

    async fn fetch(&self, client: &Client, spec: &HostPluginSpec) -> Result<Vec<u8>, String> {
        match (&spec.source.builtin, &spec.source.config_map) {
            (Some(name), None) => {
                if !valid_builtin_name(name) {
                    return Err(format!(
                        "spec.source.builtin: {name:?} is not a plugin name"
                    ));
                }
                let path = self.dir.join(format!("{name}.wasm"));
                read_capped(&path).await
            }
            (None, Some(cm)) => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), &cm.namespace);
                let obj = api.get_opt(&cm.name).await.map_err(|e| {
                    format!(
                        "spec.source.configMap: reading ConfigMap {}/{}: {e}",
                        cm.namespace, cm.name
                    )
                })?;
                let obj = obj.ok_or_else(|| {
                    format!(
                        "spec.source.configMap: ConfigMap {}/{} does not exist",
                        cm.namespace, cm.name
                    )
                })?;
                if let Some(b) = obj.binary_data.as_ref().and_then(|d| d.get(&cm.key)) {
                    Ok(b.0.clone())
                } else if let Some(s) = obj.data.as_ref().and_then(|d| d.get(&cm.key)) {
                    Ok(s.as_bytes().to_vec())
                } else {
                    Err(format!(
                        "spec.source.configMap: ConfigMap {}/{} has no key {:?}",
                        cm.namespace, cm.name, cm.key
                    ))
                }
            }
            _ => Err("spec.source: set exactly one of builtin or configMap".into()),
        }
    }
}

async fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("built-in plugin {}: {e}", path.display()))?;
    if meta.len() > MAX_MODULE_BYTES {
        return Err(format!(
            "built-in plugin {} is {} bytes, above the {MAX_MODULE_BYTES}-byte limit",
            path.display(),
            meta.len()
        ));
    }
    tokio::fs::read(path)
        .await
        .map_err(|e| format!("built-in plugin {}: {e}", path.display()))
}

fn convert_info(info: hostplug_host::PluginInfo) -> PluginInfo {
    PluginInfo {
        name: info.name,
        version: info.version,
        description: info.description,
        methods: info
            .methods
            .into_iter()
            .map(|m| MethodInfo {
                name: m.name,
                description: m.description,
                mutates: m.mutates,
                params_schema: Some(m.params_schema),
            })
            .collect(),
    }
}

/// Creates or updates the HostPlugin of every built-in plugin (server-side apply with
/// the operator's field manager, so the spec follows the image).
pub async fn install_builtins(client: &Client, store: &PluginStore) -> Result<()> {
    let api: Api<HostPlugin> = Api::all(client.clone());
    for (name, path) in store.builtins()? {
        let bytes = match read_capped(&path).await {
            Ok(b) => b,
            Err(e) => {
                warn!(plugin = %name, error = %e, "skipping unreadable built-in plugin");
                continue;
            }
        };
        let digest = Digest::of(&bytes);
        let hp = HostPlugin::new(
            &name,
            HostPluginSpec {
                source: PluginSource {
                    builtin: Some(name.clone()),
                    config_map: None,
                },
                sha256: Some(digest.hex()),
                capabilities: builtin_capabilities(&name),
            },
        );
        let mut value = serde_json::to_value(&hp).map_err(|source| Error::Serialize {
            context: "HostPlugin",
            source,
        })?;
        if let Some(obj) = value.as_object_mut() {
            obj.remove("status");
        }
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(value),
        )
        .await
        .map_err(Error::kube(format!("applying built-in HostPlugin {name}")))?;
        info!(plugin = %name, %digest, "built-in plugin installed");
    }
    Ok(())
}

/// Reconciles one HostPlugin: loads it and writes its status.
async fn reconcile(hp: Arc<HostPlugin>, ctx: Arc<Context>) -> Result<Action> {
    let name = hp.name_any();
    let api: Api<HostPlugin> = Api::all(ctx.client.clone());
    let status = match ctx.plugins.resolve(&ctx.client, &hp).await {
        Ok(p) => HostPluginStatus {
            digest: Some(p.digest.to_string()),
            size: i64::try_from(p.bytes.len()).ok(),
            ready: true,
            message: Some(format!(
                "{} {}: {} methods",
                p.info.name,
                p.info.version,
                p.info.methods.len()
            )),
            info: Some(p.info.clone()),
            observed_generation: hp.metadata.generation,
        },
        Err(message) => {
            warn!(plugin = %name, %message, "plugin not ready");
            HostPluginStatus {
                ready: false,
                message: Some(crate::status::truncate_str(
                    &message,
                    crate::status::MAX_MESSAGE_BYTES,
                )),
                observed_generation: hp.metadata.generation,
                ..HostPluginStatus::default()
            }
        }
    };
    let ready = status.ready;
    if hp.status.as_ref() != Some(&status) {
        let patch = json!({
            "apiVersion": "hostplug.dev/v1alpha1",
            "kind": "HostPlugin",
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map_err(Error::kube(format!("writing status of HostPlugin {name}")))?;
    }
    Ok(Action::requeue(if ready {
        PLUGIN_RESYNC
    } else {
        PLUGIN_RETRY
    }))
}

fn error_policy(_hp: Arc<HostPlugin>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(error = %err, "HostPlugin reconcile failed");
    ctx.metrics.reconcile_error();
    Action::requeue(PLUGIN_RETRY)
}

/// Runs the HostPlugin controller until `shutdown` resolves.
pub async fn run_controller(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<HostPlugin> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
