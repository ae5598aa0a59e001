//! A task's registry credentials (`spec.registryAuth.secretName`): read from a
//! `kubernetes.io/dockerconfigjson` Secret in the task's namespace when the task is
//! validated and again when each node's call is sent (so a rotated Secret is used and
//! nothing is kept between calls), then carried to the worker inside the invoke request.
//!
//! The operator needs `get` on Secrets for this, cluster-wide because tasks live in any
//! namespace (no `list` or `watch`: it reads exactly the one Secret a task names, in
//! the task's own namespace). It must never write a credential into a status, an
//! Event, a log line or a metric: errors here name the Secret and the problem only.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use hostplug_api::crd::{HostPluginSpec, HostTaskSpec};
use hostplug_api::registry_auth::{
    DOCKER_CONFIG_JSON_KEY, DOCKER_CONFIG_JSON_TYPE, RegistryCredentials,
};

use crate::validate::Invalid;

/// The field every message here names.
pub const FIELD: &str = "spec.registryAuth.secretName";

/// A task with `spec.registryAuth` needs a plugin that declares `registryAuth`; a task
/// without it is not affected.
pub fn check_declared(
    spec: &HostTaskSpec,
    plugin_name: &str,
    plugin: &HostPluginSpec,
) -> Result<(), Invalid> {
    if spec.registry_auth.is_some() && !plugin.capabilities.registry_auth {
        return Err(Invalid {
            field: "spec.registryAuth".into(),
            problem: format!(
                "HostPlugin {plugin_name:?} does not declare the registryAuth capability \
                 (spec.capabilities.registryAuth: true), so it cannot be given registry \
                 credentials; remove spec.registryAuth or use a plugin that declares it"
            ),
        });
    }
    Ok(())
}

/// The credentials of `secret` (as read; `name` in `namespace` for messages): type
/// `kubernetes.io/dockerconfigjson`, key `.dockerconfigjson`, a usable file.
pub fn from_secret(
    namespace: &str,
    name: &str,
    secret: &Secret,
) -> Result<RegistryCredentials, Invalid> {
    let bad = |problem: String| Invalid {
        field: FIELD.into(),
        problem: format!("Secret {namespace}/{name} {problem}"),
    };
    let type_ = secret.type_.as_deref().unwrap_or("Opaque");
    if type_ != DOCKER_CONFIG_JSON_TYPE {
        return Err(bad(format!(
            "has type {type_:?}; it must be {DOCKER_CONFIG_JSON_TYPE:?} \
             (kubectl create secret docker-registry)"
        )));
    }
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(DOCKER_CONFIG_JSON_KEY))
        .ok_or_else(|| bad(format!("has no key {DOCKER_CONFIG_JSON_KEY:?}")))?;
    RegistryCredentials::from_docker_config_json(&data.0)
        .map_err(|e| bad(format!("key {DOCKER_CONFIG_JSON_KEY}: {e}")))
}

/// Reads and parses the Secret `spec.registryAuth` names, in `namespace`. `Ok(None)`
/// when the task has no `registryAuth`. A missing, unreadable or malformed Secret is
/// an [`Invalid`] naming [`FIELD`].
pub async fn read(
    client: &Client,
    namespace: &str,
    spec: &HostTaskSpec,
) -> Result<Option<RegistryCredentials>, Invalid> {
    let Some(auth) = &spec.registry_auth else {
        return Ok(None);
    };
    let name = &auth.secret_name;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api.get_opt(name).await.map_err(|e| {
        let forbidden = matches!(&e, kube::Error::Api(s) if s.code == 403);
        Invalid {
            field: FIELD.into(),
            problem: format!(
                "reading Secret {namespace}/{name}: {}{}",
                crate::plugins::kube_error_line(&e),
                if forbidden {
                    "; the operator may read Secrets only where an administrator lets it: \
                     grant its ServiceAccount `get` on this Secret with a Role in this \
                     namespace (deploy/examples/registry-auth-rbac.yaml)"
                } else {
                    ""
                }
            ),
        }
    })?;
    let Some(secret) = secret else {
        return Err(Invalid {
            field: FIELD.into(),
            problem: format!(
                "Secret {namespace}/{name} does not exist; create it (type \
                 {DOCKER_CONFIG_JSON_TYPE}) in the task's namespace"
            ),
        });
    };
    from_secret(namespace, name, &secret).map(Some)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use k8s_openapi::ByteString;

    use super::*;

    fn secret(type_: &str, key: &str, value: &str) -> Secret {
        Secret {
            type_: Some(type_.into()),
            data: Some(BTreeMap::from([(
                key.to_owned(),
                ByteString(value.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn reads_a_docker_config_secret_and_names_the_field_when_it_cannot() {
        let auth = base64::engine::general_purpose::STANDARD.encode("u:s3cr3t");
        let file = format!(r#"{{"auths":{{"localhost:5000":{{"auth":"{auth}"}}}}}}"#);
        let ok = from_secret(
            "team-a",
            "creds",
            &secret(DOCKER_CONFIG_JSON_TYPE, ".dockerconfigjson", &file),
        )
        .expect("usable");
        assert_eq!(
            ok.lookup("localhost:5000").map(|c| c.username.as_str()),
            Some("u")
        );
        for (s, want) in [
            (
                secret("Opaque", ".dockerconfigjson", &file),
                "has type \"Opaque\"",
            ),
            (
                secret(DOCKER_CONFIG_JSON_TYPE, "config.json", &file),
                "has no key",
            ),
            (
                secret(
                    DOCKER_CONFIG_JSON_TYPE,
                    ".dockerconfigjson",
                    "{\"auths\": s3cr3t}",
                ),
                "not JSON",
            ),
        ] {
            let e = from_secret("team-a", "creds", &s)
                .expect_err(want)
                .to_string();
            assert!(
                e.starts_with("spec.registryAuth.secretName: Secret team-a/creds "),
                "{e}"
            );
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }
}
