//! Plugin resolution: from a HostPlugin to module bytes pinned by sha256 and the
//! plugin's self-description, and the HostPlugin controller that reports it.
//!
//! Built-in plugins are the `*.wasm` files of the operator's plugin directory; their
//! HostPlugin objects are created at start-up when absent; an administrator's later
//! change is kept (only the digest pin follows the image). ConfigMap-sourced plugins must
//! name their sha256; a module with another digest is refused. `describe` runs in the
//! operator's own Wasm engine with no host access at all (no /etc, no docker). A module
//! that fails to load is reported on its own HostPlugin and affects no other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hostplug_api::crd::{
    Capabilities, HostPlugin, HostPluginSpec, HostPluginStatus, PluginInfo, PluginSource,
};
use hostplug_api::worker::DEFAULT_MAX_MODULE_BYTES;
use hostplug_host::{Digest, Host};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::{Context, Error, Result};

/// How often a HostPlugin is looked at again when nothing changed: 5 min, so an edited
/// ConfigMap (which the operator does not watch) is picked up without a restart.
const PLUGIN_RESYNC: Duration = Duration::from_secs(300);
/// Retry interval after a failure to load: 30 s.
const PLUGIN_RETRY: Duration = Duration::from_secs(30);
/// Largest module the operator reads: the worker's upload limit, since a larger one could
/// never be shipped.
const MAX_MODULE_BYTES: u64 = DEFAULT_MAX_MODULE_BYTES as u64;

/// A plugin ready to be shipped to workers.
#[derive(Debug)]
pub struct LoadedPlugin {
    /// The HostPlugin's name (what policies list).
    pub name: String,
    /// Module digest.
    pub digest: Digest,
    /// Module bytes.
    pub bytes: Arc<Vec<u8>>,
    /// What `describe` returned.
    pub info: PluginInfo,
    /// The capabilities of the HostPlugin it was loaded for (what travels with each call,
    /// e.g. the systemd units and actions, is taken from here by `dispatch::send`).
    pub capabilities: Capabilities,
}

/// The operator's plugins: the Wasm engine used for `describe` and the modules loaded so
/// far, keyed by HostPlugin name and the spec they were loaded for.
#[derive(Debug)]
pub struct PluginStore {
    host: Host,
    dir: PathBuf,
    oci: crate::oci::OciSettings,
    loaded: Mutex<HashMap<String, (HostPluginSpec, Arc<LoadedPlugin>)>>,
}

/// Cap on a built-in plugin's capabilities file: 64 KiB (it is a few lines of JSON).
const MAX_CAPABILITIES_FILE_BYTES: u64 = 64 << 10;

/// The capabilities a built-in plugin declares next to its module: `<name>.capabilities.json`
/// beside `<name>.wasm`, in the shape of `HostPlugin.spec.capabilities` (copied there from
/// `plugins/<name>/capabilities.json` by `make plugins` and the operator image). A plugin
/// without the file gets none: it can only compute. A file that cannot be read or does
/// not parse also gives none, with a warning: never more than declared.
pub fn builtin_capabilities(module: &Path) -> Capabilities {
    use std::io::Read;
    let path = module.with_extension("capabilities.json");
    let read = || -> std::result::Result<Option<Capabilities>, String> {
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let mut text = String::new();
        file.take(MAX_CAPABILITIES_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| e.to_string())
    };
    match read() {
        Ok(caps) => caps.unwrap_or_default(),
        Err(e) => {
            warn!(path = %path.display(), error = %e,
                "ignoring an unreadable capabilities file: the built-in plugin gets no capabilities");
            Capabilities::default()
        }
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
            oci: crate::oci::OciSettings::default(),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The same store with `settings` for OCI sources (pull secret namespace, cluster-wide
    /// signature keys).
    pub fn with_oci(mut self, settings: crate::oci::OciSettings) -> Self {
        self.oci = settings;
        self
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
        // What the schema cannot say (e.g. the systemd unit patterns), before any fetch.
        hp.spec
            .capabilities
            .validate("spec.capabilities")
            .map_err(|e| e.to_string())?;
        let bytes = self.fetch(client, &hp.spec).await?;
        let expected = match &hp.spec.sha256 {
            Some(s) => Some(
                s.parse::<Digest>()
                    .map_err(|e| format!("spec.sha256 is not a sha256: {e}"))?,
            ),
            None if hp.spec.source.builtin.is_some() => None,
            // The manifest digest pins the layer digest, which the pull checked.
            None if hp
                .spec
                .source
                .oci
                .as_ref()
                .is_some_and(|o| o.image.contains("@sha256:")) =>
            {
                None
            }
            None => {
                return Err(
                    "spec.sha256 is required for a plugin that is not built in (or an \
                     OCI image pinned by @sha256:)"
                        .into(),
                );
            }
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
        .map_err(|e| load_error_message(&bytes, &e.to_string()))?;
        let loaded = Arc::new(LoadedPlugin {
            name: name.clone(),
            digest: actual,
            bytes,
            info,
            capabilities: hp.spec.capabilities.clone(),
        });
        if let Ok(mut map) = self.loaded.lock() {
            map.insert(name, (hp.spec.clone(), loaded.clone()));
        }
        Ok(loaded)
    }

    async fn fetch(&self, client: &Client, spec: &HostPluginSpec) -> Result<Vec<u8>, String> {
        // A policy that cannot be met is reported before anything is read.
        crate::oci::key_sets(spec, &self.oci)?;
        match (
            &spec.source.builtin,
            &spec.source.config_map,
            &spec.source.oci,
        ) {
            (None, None, Some(oci)) => {
                crate::oci::fetch(client, &self.oci, spec, oci, MAX_MODULE_BYTES).await
            }
            (Some(name), None, None) => {
                if !valid_builtin_name(name) {
                    return Err(format!(
                        "spec.source.builtin: {name:?} is not a plugin name"
                    ));
                }
                let path = self.dir.join(format!("{name}.wasm"));
                read_capped(&path).await
            }
            (None, Some(cm), None) => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), &cm.namespace);
                let obj = api.get_opt(&cm.name).await.map_err(|e| {
                    format!(
                        "spec.source.configMap: reading ConfigMap {}/{}: {}",
                        cm.namespace,
                        cm.name,
                        kube_error_line(&e)
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
            _ => Err("spec.source: set exactly one of builtin, configMap or oci".into()),
        }
    }
}

/// The first bytes of every binary WebAssembly module or component.
const WASM_MAGIC: &[u8] = b"\0asm";

/// The HostPlugin status message of a module that does not load. Bytes that are not
/// binary Wasm are also tried as the text format, whose parser error (e.g. "expected
/// `(`") says nothing to someone who put a script or a README into the ConfigMap; those
/// are reported as not a WebAssembly component.
fn load_error_message(bytes: &[u8], error: &str) -> String {
    let text_format = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'(');
    if bytes.starts_with(WASM_MAGIC) || text_format {
        format!("the module does not load: {error}")
    } else {
        "the module is not a WebAssembly component: it does not start with the Wasm magic \
         bytes (\\0asm); build it with `cargo build --target wasm32-wasip2`"
            .to_owned()
    }
}

/// One readable line for a Kubernetes API error: the server's message, reason and HTTP
/// code, instead of the `Debug` structure that `kube::Error`'s `Display` includes.
pub(crate) fn kube_error_line(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let message = s.message.lines().next().unwrap_or_default();
            match (s.reason.is_empty(), s.code) {
                (false, 0) => format!("{message} ({})", s.reason),
                (false, code) => format!("{message} ({}, HTTP {code})", s.reason),
                (true, 0) => message.to_owned(),
                (true, code) => format!("{message} (HTTP {code})"),
            }
        }
        other => other
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
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

/// What start-up does with the HostPlugin of one built-in plugin.
#[derive(Debug, Clone, PartialEq)]
enum BuiltinInstall {
    /// There is none: create it with the image's spec.
    Create(Box<HostPluginSpec>),
    /// It is the built-in pinned to another digest (the image was upgraded): set only
    /// `spec.sha256`, keeping everything an administrator changed.
    UpdateSha256(String),
    /// Leave it as it is: an administrator's capabilities, source or unpinned digest win.
    Keep,
}

/// Decides [`BuiltinInstall`] for built-in `name` whose file has digest `digest_hex`,
/// given the HostPlugin of that name if one exists.
fn builtin_install(
    name: &str,
    digest_hex: &str,
    capabilities: Capabilities,
    existing: Option<&HostPluginSpec>,
) -> BuiltinInstall {
    match existing {
        None => BuiltinInstall::Create(Box::new(HostPluginSpec {
            source: PluginSource {
                builtin: Some(name.to_owned()),
                config_map: None,
                oci: None,
            },
            sha256: Some(digest_hex.to_owned()),
            capabilities,
            signature: None,
        })),
        Some(spec)
            if spec.source.builtin.as_deref() == Some(name)
                && spec.source.config_map.is_none()
                && spec.sha256.as_deref().is_some_and(|s| s != digest_hex) =>
        {
            BuiltinInstall::UpdateSha256(digest_hex.to_owned())
        }
        Some(_) => BuiltinInstall::Keep,
    }
}

/// Creates the HostPlugin of every built-in plugin that has none. An existing one is
/// not overwritten: an administrator may have narrowed its capabilities or pointed it
/// elsewhere, and that must survive an operator restart. Only the digest pin of an
/// unchanged built-in follows the image (see [`builtin_install`]).
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
        let existing = api
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("reading built-in HostPlugin {name}")))?;
        match builtin_install(
            &name,
            &digest.hex(),
            builtin_capabilities(&path),
            existing.as_ref().map(|hp| &hp.spec),
        ) {
            BuiltinInstall::Create(spec) => {
                match api
                    .create(&PostParams::default(), &HostPlugin::new(&name, *spec))
                    .await
                {
                    Ok(_) => info!(plugin = %name, %digest, "built-in plugin installed"),
                    // Created meanwhile (another replica): theirs is kept like any other.
                    Err(kube::Error::Api(s)) if s.is_already_exists() => {}
                    Err(e) => {
                        return Err(Error::kube(format!("creating built-in HostPlugin {name}"))(
                            e,
                        ));
                    }
                }
            }
            BuiltinInstall::UpdateSha256(hex) => {
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"sha256": hex}})),
                )
                .await
                .map_err(Error::kube(format!("updating built-in HostPlugin {name}")))?;
                info!(plugin = %name, %digest, "built-in plugin pinned to the image's module");
            }
            BuiltinInstall::Keep => {
                info!(plugin = %name, "built-in HostPlugin exists; kept as it is");
            }
        }
    }
    Ok(())
}

/// Retry after a status write lost to a newer HostPlugin (409): 1 s, by when the cache
/// holds the newer object.
const CONFLICT_RETRY: Duration = Duration::from_secs(1);

/// Reconciles one HostPlugin: loads it and writes its status.
async fn reconcile(hp: Arc<HostPlugin>, ctx: Arc<Context>) -> Result<Action> {
    let name = hp.name_any();
    let status = match ctx.plugins.resolve(&ctx.client, &hp).await {
        Ok(p) => HostPluginStatus {
            digest: Some(p.digest.to_string()),
            size: i64::try_from(p.bytes.len()).ok(),
            ready: true,
            message: Some(p.info.to_string()),
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
        match crate::report::write_status(&ctx.client, &*hp, &status).await {
            Ok(_) => {}
            // The cache lagged behind a newer HostPlugin: decide again on the newer one.
            Err(Error::Conflict { .. }) => return Ok(Action::requeue(CONFLICT_RETRY)),
            Err(e) => return Err(e),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::crd::EtcAccess;

    /// etc-file's declared capabilities.
    fn write() -> Capabilities {
        Capabilities {
            etc: EtcAccess::Write,
            docker: false,
            containerd: false,
            ..Default::default()
        }
    }

    #[test]
    fn builtin_is_created_when_absent_and_admin_edits_are_kept() {
        let BuiltinInstall::Create(spec) = builtin_install("etc-file", "aa", write(), None) else {
            panic!("an absent built-in is created");
        };
        assert_eq!(spec.capabilities, write());
        assert_eq!(spec.sha256.as_deref(), Some("aa"));
        // The administrator narrowed etc-file to read-only: a restart keeps that.
        let mut narrowed = spec.clone();
        narrowed.capabilities.etc = EtcAccess::Read;
        assert_eq!(
            builtin_install("etc-file", "aa", write(), Some(&narrowed)),
            BuiltinInstall::Keep
        );
        // A new image changes only the digest pin, never the capabilities.
        assert_eq!(
            builtin_install("etc-file", "bb", write(), Some(&narrowed)),
            BuiltinInstall::UpdateSha256("bb".into())
        );
        // Pointed at a ConfigMap, or unpinned, by the administrator: kept.
        let mut elsewhere = narrowed.clone();
        elsewhere.source = PluginSource {
            builtin: None,
            config_map: None,
            oci: None,
        };
        assert_eq!(
            builtin_install("etc-file", "bb", write(), Some(&elsewhere)),
            BuiltinInstall::Keep
        );
        let mut unpinned = narrowed;
        unpinned.sha256 = None;
        assert_eq!(
            builtin_install("etc-file", "bb", write(), Some(&unpinned)),
            BuiltinInstall::Keep
        );
    }

    #[test]
    fn non_wasm_module_is_named_as_such() {
        let m = load_error_message(b"#!/bin/sh\necho hi\n", "expected `(`");
        assert!(m.contains("not a WebAssembly component"), "{m}");
        assert!(!m.contains("expected `(`"), "{m}");
        // A real Wasm or text-format module keeps the loader's own error.
        let m = load_error_message(b"\0asm\x0d\0\x01\0", "invalid section");
        assert!(m.contains("invalid section"), "{m}");
        let m = load_error_message(b"  (component (bad))", "unknown operator");
        assert!(m.contains("unknown operator"), "{m}");
    }

    #[test]
    fn forbidden_config_map_read_is_one_readable_line() {
        let status = kube::core::Status::failure(
            "configmaps \"mod\" is forbidden: User \"system:serviceaccount:hostplug-system:\
             hostplug-operator\" cannot get resource \"configmaps\" in API group \"\" in \
             the namespace \"team-a\"",
            "Forbidden",
        )
        .with_code(403);
        let line = kube_error_line(&kube::Error::Api(status.boxed()));
        assert!(!line.contains('\n'), "{line}");
        assert!(!line.contains("Status {"), "{line}");
        assert!(!line.contains("StatusSummary"), "{line}");
        assert!(
            line.starts_with("configmaps \"mod\" is forbidden"),
            "{line}"
        );
        assert!(line.ends_with("(Forbidden, HTTP 403)"), "{line}");
    }
}

#[cfg(test)]
mod builtin_capability_tests {
    use super::*;
    use hostplug_api::crd::EtcAccess;

    /// The real declarations in `plugins/<name>/capabilities.json`, read the way the
    /// operator reads them beside each module.
    #[test]
    fn built_in_plugins_declare_their_capabilities_next_to_the_module() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
        for name in [
            "etc-file",
            "docker-image",
            "containerd-image",
            "systemd-unit",
        ] {
            std::fs::copy(
                plugins.join(name).join("capabilities.json"),
                tmp.path().join(format!("{name}.capabilities.json")),
            )
            .expect("copy");
        }
        let caps = |name: &str| builtin_capabilities(&tmp.path().join(format!("{name}.wasm")));
        assert_eq!(
            caps("etc-file"),
            Capabilities {
                etc: EtcAccess::Write,
                docker: false,
                containerd: false,
                ..Default::default()
            }
        );
        assert_eq!(
            caps("docker-image"),
            Capabilities {
                etc: EtcAccess::None,
                docker: true,
                registry_auth: true,
                containerd: false,
                systemd: None,
                ..Default::default()
            }
        );
        assert_eq!(
            caps("containerd-image"),
            Capabilities {
                etc: EtcAccess::None,
                docker: false,
                containerd: true,
                registry_auth: true,
                systemd: None,
                ..Default::default()
            }
        );
        // systemd-unit: /etc and its units and actions, a declaration that validates.
        let systemd = caps("systemd-unit");
        assert_eq!(systemd.etc, EtcAccess::Write);
        assert!(
            systemd
                .systemd
                .as_ref()
                .is_some_and(|s| s.units.iter().any(|u| u == "chrony.service")),
            "{systemd}"
        );
        assert_eq!(systemd.validate("spec.capabilities"), Ok(()));
        // No declaration, or one that does not parse: nothing.
        assert_eq!(caps("test-spin"), Capabilities::default());
        std::fs::write(
            tmp.path().join("bad.capabilities.json"),
            "{\"etc\": \"root\"}",
        )
        .expect("write");
        assert_eq!(caps("bad"), Capabilities::default());
    }
}
