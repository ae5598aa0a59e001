//! Pod volumes, made into host paths the containers' roots bind-mount.
//!
//! hostPath resolves inside the node's own tree (`nodes/<node>/root/<path>`), never on the
//! host's real file system; Secret, ConfigMap, downward API and projected volumes are written
//! once into `pods/<uid>/volumes/<name>` (and mounted read-only, as the kubelet does);
//! emptyDir is a per-Pod directory shared by the Pod's containers.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};

use super::Runtime;

/// A volume ready to be bind-mounted.
#[derive(Clone, Debug)]
pub(crate) struct PreparedVolume {
    pub(crate) source: PathBuf,
    /// Secret-like volumes are always mounted read-only.
    pub(crate) force_read_only: bool,
}

/// Why a volume cannot be set up (yet); the Pod stays in ContainerCreating meanwhile.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VolumeError {
    #[error("volume {volume}: {message}")]
    Invalid { volume: String, message: String },
    #[error("volume {volume}: {what}: {source}")]
    Io {
        volume: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {volume}: {what}: {source}")]
    Kube {
        volume: String,
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// The default service account token lifetime the kubelet asks for.
const TOKEN_EXPIRATION_SECONDS: i64 = 3607;

/// Joins an absolute or relative path below `base`, refusing `..`.
pub(crate) fn join_inside(base: &Path, path: &str) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => out.push(s),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

struct VolumeContext<'a> {
    rt: &'a Runtime,
    pod: &'a Pod,
    namespace: &'a str,
    node_root: PathBuf,
    dir: PathBuf,
}

/// Prepares every volume of the Pod; the map is keyed by volume name.
pub(crate) async fn prepare(
    rt: &Runtime,
    pod: &Pod,
    namespace: &str,
    node: &str,
    pod_dir: &Path,
) -> Result<HashMap<String, PreparedVolume>, VolumeError> {
    let cx = VolumeContext {
        rt,
        pod,
        namespace,
        node_root: rt.node_root(node),
        dir: pod_dir.join("volumes"),
    };
    let mut out = HashMap::new();
    for volume in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let prepared = cx.prepare_one(volume).await?;
        out.insert(volume.name.clone(), prepared);
    }
    Ok(out)
}

impl VolumeContext<'_> {
    fn io(volume: &Volume, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VolumeError {
        let volume = volume.name.clone();
        let what = what.into();
        move |source| VolumeError::Io {
            volume,
            what,
            source,
        }
    }

    fn invalid(volume: &Volume, message: impl Into<String>) -> VolumeError {
        VolumeError::Invalid {
            volume: volume.name.clone(),
            message: message.into(),
        }
    }

    async fn prepare_one(&self, volume: &Volume) -> Result<PreparedVolume, VolumeError> {
        if let Some(host_path) = &volume.host_path {
            return self.host_path(
                volume,
                &host_path.path,
                host_path.type_.as_deref().unwrap_or(""),
            );
        }
        let dir = join_inside(&self.dir, &volume.name)
            .ok_or_else(|| Self::invalid(volume, "invalid name"))?;
        if volume.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(Self::io(volume, "creating the emptyDir"))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(Self::io(volume, "setting the emptyDir's mode"))?;
            return Ok(PreparedVolume {
                source: dir,
                force_read_only: false,
            });
        }
        let mut files = FileSet::default();
        if let Some(secret) = &volume.secret {
            let name = secret.secret_name.as_deref().unwrap_or_default();
            let data = self
                .secret_data(volume, name, secret.optional.unwrap_or(false))
                .await?;
            files.add_keys(volume, &data, secret.items.as_deref(), secret.default_mode)?;
        } else if let Some(cm) = &volume.config_map {
            let data = self
                .config_map_data(volume, &cm.name, cm.optional.unwrap_or(false))
                .await?;
            files.add_keys(volume, &data, cm.items.as_deref(), cm.default_mode)?;
        } else if let Some(downward) = &volume.downward_api {
            self.add_downward(
                volume,
                &mut files,
                downward.items.as_deref().unwrap_or_default(),
                downward.default_mode,
            )?;
        } else if let Some(projected) = &volume.projected {
            let mode = projected.default_mode;
            for source in projected.sources.iter().flatten() {
                if let Some(secret) = &source.secret {
                    let data = self
                        .secret_data(volume, &secret.name, secret.optional.unwrap_or(false))
                        .await?;
                    files.add_keys(volume, &data, secret.items.as_deref(), mode)?;
                }
                if let Some(cm) = &source.config_map {
                    let data = self
                        .config_map_data(volume, &cm.name, cm.optional.unwrap_or(false))
                        .await?;
                    files.add_keys(volume, &data, cm.items.as_deref(), mode)?;
                }
                if let Some(downward) = &source.downward_api {
                    self.add_downward(
                        volume,
                        &mut files,
                        downward.items.as_deref().unwrap_or_default(),
                        mode,
                    )?;
                }
                if let Some(token) = &source.service_account_token {
                    let jwt = self
                        .token(volume, token.audience.as_deref(), token.expiration_seconds)
                        .await?;
                    files.add(volume, &token.path, jwt.into_bytes(), mode.unwrap_or(0o644))?;
                }
                if source.cluster_trust_bundle.is_some() || source.pod_certificate.is_some() {
                    return Err(Self::invalid(
                        volume,
                        "this projected source is not supported by the node simulator",
                    ));
                }
            }
        } else {
            return Err(Self::invalid(
                volume,
                "this volume type is not supported by the node simulator",
            ));
        }
        files.write(volume, &dir)?;
        Ok(PreparedVolume {
            source: dir,
            force_read_only: true,
        })
    }

    fn host_path(
        &self,
        volume: &Volume,
        path: &str,
        type_: &str,
    ) -> Result<PreparedVolume, VolumeError> {
        if !path.starts_with('/') {
            return Err(Self::invalid(
                volume,
                format!("hostPath {path:?} is not absolute"),
            ));
        }
        let source = join_inside(&self.node_root, path)
            .ok_or_else(|| Self::invalid(volume, format!("hostPath {path:?} contains '..'")))?;
        let meta = std::fs::metadata(&source).ok();
        let wrong = |what: &str| {
            Self::invalid(
                volume,
                format!("hostPath type check failed: {path} is not {what}"),
            )
        };
        match type_ {
            "" | "DirectoryOrCreate" => {
                if meta.is_none() {
                    std::fs::create_dir_all(&source)
                        .map_err(Self::io(volume, format!("creating {path}")))?;
                } else if type_ == "DirectoryOrCreate"
                    && !meta.as_ref().is_some_and(std::fs::Metadata::is_dir)
                {
                    return Err(wrong("a directory"));
                }
            }
            "Directory" => {
                if !meta.is_some_and(|m| m.is_dir()) {
                    return Err(wrong("a directory"));
                }
            }
            "FileOrCreate" => match meta {
                None => {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&source)
                        .map_err(Self::io(volume, format!("creating {path}")))?;
                }
                Some(m) if !m.is_file() => return Err(wrong("a file")),
                Some(_) => {}
            },
            "File" => {
                if !meta.is_some_and(|m| m.is_file()) {
                    return Err(wrong("a file"));
                }
            }
            "Socket" => {
                if !meta.is_some_and(|m| m.file_type().is_socket()) {
                    return Err(wrong("a socket"));
                }
            }
            "CharDevice" | "BlockDevice" => {
                return Err(Self::invalid(
                    volume,
                    "device hostPaths are not supported by the node simulator",
                ));
            }
            other => {
                return Err(Self::invalid(
                    volume,
                    format!("unknown hostPath type {other:?}"),
                ));
            }
        }
        Ok(PreparedVolume {
            source,
            force_read_only: false,
        })
    }

    async fn secret_data(
        &self,
        volume: &Volume,
        name: &str,
        optional: bool,
    ) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
        let api: Api<Secret> = Api::namespaced(self.rt.client.clone(), self.namespace);
        match api.get_opt(name).await {
            Ok(Some(secret)) => Ok(secret_bytes(&secret)),
            Ok(None) if optional => Ok(BTreeMap::new()),
            Ok(None) => Err(Self::invalid(volume, format!("secret {name:?} not found"))),
            Err(source) => Err(VolumeError::Kube {
                volume: volume.name.clone(),
                what: format!("reading secret {name:?}"),
                source,
            }),
        }
    }

    async fn config_map_data(
        &self,
        volume: &Volume,
        name: &str,
        optional: bool,
    ) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
        let api: Api<ConfigMap> = Api::namespaced(self.rt.client.clone(), self.namespace);
        match api.get_opt(name).await {
            Ok(Some(cm)) => Ok(config_map_bytes(&cm)),
            Ok(None) if optional => Ok(BTreeMap::new()),
            Ok(None) => Err(Self::invalid(
                volume,
                format!("configmap {name:?} not found"),
            )),
            Err(source) => Err(VolumeError::Kube {
                volume: volume.name.clone(),
                what: format!("reading configmap {name:?}"),
                source,
            }),
        }
    }

    fn add_downward(
        &self,
        volume: &Volume,
        files: &mut FileSet,
        items: &[DownwardAPIVolumeFile],
        default_mode: Option<i32>,
    ) -> Result<(), VolumeError> {
        for item in items {
            let Some(field) = &item.field_ref else {
                return Err(Self::invalid(
                    volume,
                    "resourceFieldRef is not supported by the node simulator",
                ));
            };
            let value = downward_file_value(self.pod, &field.field_path).ok_or_else(|| {
                Self::invalid(
                    volume,
                    format!("unsupported fieldPath {:?}", field.field_path),
                )
            })?;
            files.add(
                volume,
                &item.path,
                value.into_bytes(),
                item.mode.or(default_mode).unwrap_or(0o644),
            )?;
        }
        Ok(())
    }

    async fn token(
        &self,
        volume: &Volume,
        audience: Option<&str>,
        expiration: Option<i64>,
    ) -> Result<String, VolumeError> {
        let spec = self.pod.spec.as_ref();
        let sa = spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: audience
                    .filter(|a| !a.is_empty())
                    .map(|a| vec![a.to_owned()]),
                expiration_seconds: Some(expiration.unwrap_or(TOKEN_EXPIRATION_SECONDS)),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: self.pod.metadata.name.clone(),
                    uid: self.pod.metadata.uid.clone(),
                }),
            }),
            ..TokenRequest::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.rt.client.clone(), self.namespace);
        let response = api
            .create_token_request(&sa, &PostParams::default(), &request)
            .await
            .map_err(|source| VolumeError::Kube {
                volume: volume.name.clone(),
                what: format!("requesting a token for service account {sa:?}"),
                source,
            })?;
        response
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Self::invalid(volume, "the token request returned no token"))
    }
}

fn secret_bytes(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, ByteString(v))| (k.clone(), v.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

fn config_map_bytes(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .binary_data
        .iter()
        .flatten()
        .map(|(k, ByteString(v))| (k.clone(), v.clone()))
        .collect();
    for (k, v) in cm.data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// A downward API file's content, formatted as the kubelet does.
fn downward_file_value(pod: &Pod, field_path: &str) -> Option<String> {
    let map_lines = |m: Option<&BTreeMap<String, String>>| {
        m.into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect::<String>()
    };
    match field_path {
        "metadata.labels" => Some(map_lines(pod.metadata.labels.as_ref())),
        "metadata.annotations" => Some(map_lines(pod.metadata.annotations.as_ref())),
        other => super::container::pod_field(pod, other, None),
    }
}

/// The files of a Secret-like volume before they are written.
#[derive(Default)]
struct FileSet {
    files: Vec<(String, Vec<u8>, u32)>,
}

impl FileSet {
    fn add(
        &mut self,
        volume: &Volume,
        path: &str,
        content: Vec<u8>,
        mode: i32,
    ) -> Result<(), VolumeError> {
        if path.is_empty()
            || path.starts_with('/')
            || Path::new(path)
                .components()
                .any(|c| c == Component::ParentDir)
        {
            return Err(VolumeContext::invalid(
                volume,
                format!("invalid item path {path:?}"),
            ));
        }
        let mode = u32::try_from(mode).unwrap_or(0o644) & 0o777;
        self.files.push((path.to_owned(), content, mode));
        Ok(())
    }

    fn add_keys(
        &mut self,
        volume: &Volume,
        data: &BTreeMap<String, Vec<u8>>,
        items: Option<&[KeyToPath]>,
        default_mode: Option<i32>,
    ) -> Result<(), VolumeError> {
        let default_mode = default_mode.unwrap_or(0o644);
        match items {
            Some(items) if !items.is_empty() => {
                for item in items {
                    let content = data.get(&item.key).ok_or_else(|| {
                        VolumeContext::invalid(volume, format!("key {:?} not found", item.key))
                    })?;
                    self.add(
                        volume,
                        &item.path,
                        content.clone(),
                        item.mode.unwrap_or(default_mode),
                    )?;
                }
            }
            _ => {
                for (key, content) in data {
                    self.add(volume, key, content.clone(), default_mode)?;
                }
            }
        }
        Ok(())
    }

    fn write(&self, volume: &Volume, dir: &Path) -> Result<(), VolumeError> {
        let io = |what: &str| VolumeContext::io(volume, what.to_owned());
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io("clearing the volume directory"))?;
        }
        std::fs::create_dir_all(dir).map_err(io("creating the volume directory"))?;
        for (rel, content, mode) in &self.files {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io("creating a directory"))?;
            }
            std::fs::write(&path, content).map_err(io("writing a file"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
                .map_err(io("setting a file mode"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_inside_refuses_parent_components() {
        let base = Path::new("/w/nodes/node1/root");
        assert_eq!(
            join_inside(base, "/etc/hosts"),
            Some(base.join("etc/hosts"))
        );
        assert_eq!(join_inside(base, "/etc/../../x"), None);
    }
}
