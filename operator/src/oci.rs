//! HostPlugin modules from OCI registries (`spec.source.oci`): the pull secret, the pull
//! itself (every digest checked, see `hostplug_oci`), and the signature policy — the
//! HostPlugin's own `spec.signature` keys and the operator's cluster-wide keys
//! (`--signature-keys`), each of which must be satisfied by a cosign-format signature.
//!
//! Errors are strings for the HostPlugin's status, each naming the field at fault. The
//! module is returned only once every check passed; nothing here runs it.

use std::path::Path;

use hostplug_api::crd::{HostPluginSpec, OciSource};
use hostplug_api::registry_auth::{
    DOCKER_CONFIG_JSON_KEY, DOCKER_CONFIG_JSON_TYPE, MAX_CREDENTIAL_BYTES, RegistryCredentials,
    normalise_registry,
};
use hostplug_oci::{Credentials, PublicKey, Reference, RegistryClient, cosign};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

/// Cap on the operator's signature key file: 64 KiB (a P-256 key is ~180 bytes of PEM).
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

/// The operator's settings for OCI sources.
#[derive(Debug, Clone, Default)]
pub struct OciSettings {
    /// Namespace of pull secrets: the operator's own, so a HostPlugin (cluster-scoped,
    /// created by whoever may create HostPlugins) cannot make the operator read a Secret
    /// anywhere else.
    pub namespace: String,
    /// Keys of the cluster-wide policy: when non-empty, every plugin that is not built in
    /// must come from a registry and be signed by one of them.
    pub cluster_keys: Vec<PublicKey>,
}

impl OciSettings {
    /// Reads the cluster-wide keys from `path` (one or more PEM `PUBLIC KEY` blocks).
    pub fn read_cluster_keys(path: &Path) -> Result<Vec<PublicKey>, String> {
        use std::io::Read as _;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_KEY_FILE_BYTES).read_to_string(&mut text))
            .map_err(|e| format!("--signature-keys {}: {e}", path.display()))?;
        PublicKey::all_from_pem(&text)
            .map_err(|e| format!("--signature-keys {}: {e}", path.display()))
    }
}

/// A set of keys one of which must have signed the module, and where the set came from.
#[derive(Debug, Clone)]
pub struct KeySet {
    /// `spec.signature` or the operator's flag, for messages.
    pub origin: &'static str,
    /// The keys.
    pub keys: Vec<PublicKey>,
}

/// Where the cluster-wide keys come from, as messages name it.
pub const CLUSTER_POLICY: &str = "the operator's signature policy (--signature-keys)";

/// The key sets `spec` must satisfy under `settings`. A policy that cannot be met (keys
/// that do not parse, a required signature on a ConfigMap module) is an error.
pub fn key_sets(spec: &HostPluginSpec, settings: &OciSettings) -> Result<Vec<KeySet>, String> {
    let mut sets = Vec::new();
    if let Some(policy) = &spec.signature {
        if spec.source.oci.is_none() {
            return Err(
                "spec.signature: only spec.source.oci modules carry signatures (stored in the registry)"
                    .to_owned(),
            );
        }
        let mut keys = Vec::new();
        for (i, pem) in policy.public_keys.iter().enumerate() {
            keys.push(
                PublicKey::from_pem(pem)
                    .map_err(|e| format!("spec.signature.publicKeys[{i}]: {e}"))?,
            );
        }
        if keys.is_empty() {
            return Err("spec.signature.publicKeys: name at least one key".to_owned());
        }
        sets.push(KeySet {
            origin: "spec.signature",
            keys,
        });
    }
    if !settings.cluster_keys.is_empty() && spec.source.builtin.is_none() {
        if spec.source.oci.is_none() {
            return Err(format!(
                "spec.source: {CLUSTER_POLICY} requires signed plugins; a ConfigMap module \
                 cannot be signed: push it to a registry (`hostplug plugin push`) and sign it"
            ));
        }
        sets.push(KeySet {
            origin: CLUSTER_POLICY,
            keys: settings.cluster_keys.clone(),
        });
    }
    Ok(sets)
}

/// Key of a plain pull secret naming the registry its `username` and `password` are
/// for; without it they go nowhere.
pub const PLAIN_REGISTRY_KEY: &str = "registry";

/// The credentials for `registry` in pull secret `secret` (named `name` in messages).
///
/// Either form is bound to a registry, so a HostPlugin naming an image elsewhere (its
/// author's own registry, say) never receives them: a `.dockerconfigjson` gives only the
/// entry of `registry`; a plain Secret (keys `username` and `password`) must also have
/// the key [`PLAIN_REGISTRY_KEY`] naming `registry`. Registry names are compared after
/// [`normalise_registry`] (scheme, path and case dropped). Messages name the Secret, the
/// key and the registries, never a credential.
pub fn credentials_from_secret(
    name: &str,
    secret: &Secret,
    registry: &str,
) -> Result<Credentials, String> {
    let field = "spec.source.oci.pullSecret";
    let empty = Default::default();
    let data = secret.data.as_ref().unwrap_or(&empty);
    if let Some(json) = data.get(DOCKER_CONFIG_JSON_KEY) {
        let all = RegistryCredentials::from_docker_config_json(&json.0)
            .map_err(|e| format!("{field}: Secret {name}: {DOCKER_CONFIG_JSON_KEY} {e}"))?;
        let c = all
            .lookup(registry)
            .ok_or_else(|| format!("{field}: Secret {name} has no credentials for {registry}"))?;
        return Ok(Credentials {
            username: c.username.clone(),
            password: c.password.clone(),
        });
    }
    let text = |k: &str| {
        data.get(k)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let (Some(username), Some(password)) = (text("username"), text("password")) else {
        return Err(format!(
            "{field}: Secret {name} has neither {DOCKER_CONFIG_JSON_KEY} nor username and \
             password keys"
        ));
    };
    let Some(bound) = text(PLAIN_REGISTRY_KEY) else {
        return Err(format!(
            "{field}: Secret {name} has \"username\" and \"password\" but no \
             \"{PLAIN_REGISTRY_KEY}\" key naming the registry they are for, so they are \
             given to none; add \"{PLAIN_REGISTRY_KEY}\" (e.g. {registry:?}) or use a \
             {DOCKER_CONFIG_JSON_TYPE} Secret (kubectl create secret docker-registry)"
        ));
    };
    let bound = normalise_registry(&bound);
    if bound != normalise_registry(registry) {
        return Err(format!(
            "{field}: Secret {name} holds credentials for registry {bound:?} (its \
             \"{PLAIN_REGISTRY_KEY}\" key), not for {registry:?}, the image's registry"
        ));
    }
    if username.is_empty()
        || username.len() > MAX_CREDENTIAL_BYTES
        || password.len() > MAX_CREDENTIAL_BYTES
    {
        return Err(format!(
            "{field}: Secret {name}: the username is empty, or the username or password is \
             longer than {} KiB",
            MAX_CREDENTIAL_BYTES >> 10
        ));
    }
    Ok(Credentials { username, password })
}

/// Fetches the module of OCI source `src`: reads the pull secret from the operator's
/// namespace, then [`pull_verified`].
pub async fn fetch(
    client: &Client,
    settings: &OciSettings,
    spec: &HostPluginSpec,
    src: &OciSource,
    max_bytes: u64,
) -> Result<Vec<u8>, String> {
    let sets = key_sets(spec, settings)?;
    let reference: Reference = src
        .image
        .parse()
        .map_err(|e| format!("spec.source.oci.image: {e}"))?;
    let credentials = match &src.pull_secret {
        None => None,
        Some(name) => {
            let api: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
            let secret = api
                .get_opt(name)
                .await
                .map_err(|e| {
                    format!(
                        "spec.source.oci.pullSecret: reading Secret {}/{name}: {}",
                        settings.namespace,
                        crate::plugins::kube_error_line(&e)
                    )
                })?
                .ok_or_else(|| {
                    format!(
                        "spec.source.oci.pullSecret: Secret {}/{name} does not exist (pull \
                         secrets are read from the operator's namespace)",
                        settings.namespace
                    )
                })?;
            Some(credentials_from_secret(name, &secret, &reference.registry)?)
        }
    };
    pull_verified(&reference, src.insecure, credentials, &sets, max_bytes).await
}

/// Pulls `reference` and checks every key set against the signatures stored next to it.
/// Only a module that passed everything is returned.
pub async fn pull_verified(
    reference: &Reference,
    insecure: bool,
    credentials: Option<Credentials>,
    sets: &[KeySet],
    max_bytes: u64,
) -> Result<Vec<u8>, String> {
    let client = RegistryClient::new(&reference.registry, insecure, credentials)
        .map_err(|e| format!("spec.source.oci: {e}"))?;
    let pulled = client
        .pull_wasm(reference, max_bytes)
        .await
        .map_err(|e| format!("spec.source.oci: {e}"))?;
    for set in sets {
        let key = cosign::verify(&client, reference, &pulled.manifest_digest, &set.keys)
            .await
            .map_err(|e| format!("{}: {e}; refused", set.origin))?;
        tracing::info!(
            reference = %pulled.reference,
            key = %key.fingerprint(),
            policy = set.origin,
            "module signature verified"
        );
    }
    Ok(pulled.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::crd::{Capabilities, ConfigMapSource, PluginSource, SignaturePolicy};
    use k8s_openapi::ByteString;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn pull_secret_formats() {
        let dockercfg = r#"{"auths":{"https://r.example:5000/v1/":{"username":"u","password":"p"},
            "other.example":{"auth":"dTI6cDI="}}}"#;
        let s = secret(&[(".dockerconfigjson", dockercfg)]);
        let c = credentials_from_secret("s", &s, "r.example:5000").expect("by host");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        let c = credentials_from_secret("s", &s, "other.example").expect("auth field");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u2", "p2"));
        let e = credentials_from_secret("s", &s, "third.example").expect_err("none");
        assert!(
            e.contains("spec.source.oci.pullSecret") && e.contains("third.example"),
            "{e}"
        );
        let e = credentials_from_secret("s", &secret(&[("token", "x")]), "r").expect_err("no keys");
        assert!(e.contains("neither"), "{e}");
    }

    /// A plain username/password Secret goes only to the registry it names, as a
    /// `.dockerconfigjson` entry does: a HostPlugin naming another registry (its
    /// author's own, say) must not receive it.
    #[test]
    fn plain_pull_secrets_are_bound_to_their_registry() {
        let unbound = secret(&[("username", "a"), ("password", "s3cr3t")]);
        for registry in ["r.example:5000", "attacker.example"] {
            let e = credentials_from_secret("s", &unbound, registry)
                .expect_err("a plain secret without a registry");
            assert!(
                e.starts_with("spec.source.oci.pullSecret: Secret s ")
                    && e.contains("\"registry\"")
                    && e.contains("kubernetes.io/dockerconfigjson"),
                "{e}"
            );
            assert!(!e.contains("s3cr3t"), "{e}");
        }

        let bound = secret(&[
            ("registry", "R.example:5000"),
            ("username", "a"),
            ("password", "s3cr3t"),
        ]);
        let c = credentials_from_secret("s", &bound, "r.example:5000").expect("its registry");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("a", "s3cr3t"));
        for other in ["attacker.example", "r.example", "r.example:5001"] {
            let e = credentials_from_secret("s", &bound, other).expect_err(other);
            assert!(
                e.contains("r.example:5000") && e.contains(other) && !e.contains("s3cr3t"),
                "{e}"
            );
        }
    }

    #[test]
    fn signature_policy_applies_per_plugin_and_cluster_wide() {
        let (key, _) = hostplug_oci::SigningKey::generate().expect("key");
        let oci = PluginSource {
            builtin: None,
            config_map: None,
            oci: Some(OciSource {
                image: "r.example/p:1".into(),
                pull_secret: None,
                insecure: false,
            }),
        };
        let mut spec = HostPluginSpec {
            source: oci,
            sha256: None,
            capabilities: Capabilities::default(),
            signature: Some(SignaturePolicy {
                public_keys: vec![key.public_key().to_pem()],
            }),
        };
        let none = OciSettings::default();
        let sets = key_sets(&spec, &none).expect("one set");
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].origin, "spec.signature");

        let cluster = OciSettings {
            namespace: "ns".into(),
            cluster_keys: vec![key.public_key()],
        };
        assert_eq!(key_sets(&spec, &cluster).expect("two sets").len(), 2);

        spec.signature = Some(SignaturePolicy {
            public_keys: vec![
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into(),
            ],
        });
        let e = key_sets(&spec, &none).expect_err("bad key");
        assert!(e.starts_with("spec.signature.publicKeys[0]:"), "{e}");

        // A ConfigMap module cannot satisfy a signature requirement of either kind.
        spec.source = PluginSource {
            builtin: None,
            config_map: Some(ConfigMapSource {
                namespace: "n".into(),
                name: "m".into(),
                key: "plugin.wasm".into(),
            }),
            oci: None,
        };
        spec.signature = None;
        assert!(key_sets(&spec, &none).expect("no policy").is_empty());
        let e = key_sets(&spec, &cluster).expect_err("cluster policy");
        assert!(
            e.contains("--signature-keys") && e.contains("push it to a registry"),
            "{e}"
        );
        // Built-ins ship in the operator image and are exempt.
        spec.source = PluginSource {
            builtin: Some("etc-file".into()),
            config_map: None,
            oci: None,
        };
        assert!(key_sets(&spec, &cluster).expect("builtin").is_empty());
    }
}
