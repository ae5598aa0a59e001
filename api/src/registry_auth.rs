//! Registry credentials for a HostTask (`spec.registryAuth`): the `.dockerconfigjson` of
//! a `kubernetes.io/dockerconfigjson` Secret, parsed once by the operator, carried to the
//! worker inside the invoke request and handed to the plugin one registry at a time by
//! the host's `registry-auth` import.
//!
//! The shapes here hold secrets. They must never print one: [`Credential`] and
//! [`RegistryCredentials`] have `Debug` forms that show registries and usernames only,
//! and every parse error names the entry and the problem, never a value of the file
//! (serde's own messages can quote the offending value, so they are not passed on).
//! Nothing here reads a Secret or talks to a registry.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The key of a `kubernetes.io/dockerconfigjson` Secret's data that holds the file.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";

/// The Secret type `spec.registryAuth.secretName` must have.
pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";

/// The one name Docker Hub is known by here: `docker.io`, `index.docker.io`,
/// `registry-1.docker.io`, `registry.hub.docker.com` and `https://index.docker.io/v1/`
/// (the key `docker login` writes) all normalise to it.
pub const DOCKER_HUB: &str = "docker.io";

/// Names of Docker Hub that [`normalise_registry`] maps to [`DOCKER_HUB`].
const DOCKER_HUB_ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// Most entries a credentials file may hold: 256. A pull secret names a few registries;
/// the bound keeps an absurd Secret from growing every invoke request.
pub const MAX_REGISTRIES: usize = 256;

/// Longest username or password accepted: 16 KiB (registry tokens used as passwords run
/// to a few KiB).
pub const MAX_CREDENTIAL_BYTES: usize = 16 << 10;

/// One registry's username and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The credentials of one task: registry (normalised, see [`normalise_registry`]) →
/// credential. Serialised as a JSON object, e.g. `{"localhost:5000": {"username": …,
/// "password": …}}`; `Debug` lists registries only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegistryCredentials(BTreeMap<String, Credential>);

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Why a `.dockerconfigjson` cannot be used. Messages name the entry (a registry name)
/// and the problem, never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerConfigError {
    /// Not JSON, or not the `{"auths": {…}}` shape.
    #[error(
        "is not a docker config file ({0}); expected {{\"auths\": {{\"<registry>\": {{\"auth\": \"<base64 user:password>\"}}}}}}"
    )]
    Shape(String),
    /// No registry at all.
    #[error("has no entries under \"auths\"")]
    Empty,
    /// More than [`MAX_REGISTRIES`] entries.
    #[error("has {0} entries under \"auths\", more than the limit of {MAX_REGISTRIES}")]
    TooMany(usize),
    /// One entry is unusable.
    #[error("entry {registry:?}: {problem}")]
    Entry {
        /// The entry's key as written.
        registry: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// The `~/.docker/config.json` shape.
#[derive(Deserialize)]
struct DockerConfig {
    auths: Option<BTreeMap<String, DockerAuth>>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

impl RegistryCredentials {
    /// Parses a `.dockerconfigjson` (the imagePullSecrets format): each entry under
    /// `auths` has `auth` (base64 of `user:password`) or `username` and `password`
    /// (these win when both are there). Keys are normalised with [`normalise_registry`];
    /// two keys naming the same registry are an error, as is an entry without a
    /// username, with only an identity token (OAuth refresh tokens are not supported) or
    /// an empty file.
    pub fn from_docker_config_json(bytes: &[u8]) -> Result<Self, DockerConfigError> {
        let config: DockerConfig = serde_json::from_slice(bytes).map_err(|e| {
            DockerConfigError::Shape(match e.classify() {
                serde_json::error::Category::Data => format!(
                    "a field has the wrong type, line {} column {}",
                    e.line(),
                    e.column()
                ),
                _ => format!("not JSON, line {} column {}", e.line(), e.column()),
            })
        })?;
        let auths = config
            .auths
            .ok_or_else(|| DockerConfigError::Shape("no \"auths\" object".into()))?;
        if auths.is_empty() {
            return Err(DockerConfigError::Empty);
        }
        if auths.len() > MAX_REGISTRIES {
            return Err(DockerConfigError::TooMany(auths.len()));
        }
        let mut out = BTreeMap::new();
        for (key, entry) in auths {
            let bad = |problem| DockerConfigError::Entry {
                registry: key.chars().take(253).collect(),
                problem,
            };
            let registry = normalise_registry(&key);
            if registry.is_empty() {
                return Err(bad("the key does not name a registry"));
            }
            let credential = match (entry.username, entry.password, entry.auth) {
                (Some(username), Some(password), _) => Credential { username, password },
                (_, _, Some(auth)) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|_| bad("\"auth\" is not base64"))?;
                    let text = String::from_utf8(decoded)
                        .map_err(|_| bad("\"auth\" does not decode to UTF-8 text"))?;
                    let (username, password) = text
                        .split_once(':')
                        .ok_or_else(|| bad("\"auth\" does not decode to user:password"))?;
                    Credential {
                        username: username.to_owned(),
                        password: password.to_owned(),
                    }
                }
                (_, _, None) if entry.identity_token.is_some() => {
                    return Err(bad(
                        "has only an identity token; hostplug needs a username and password",
                    ));
                }
                _ => {
                    return Err(bad(
                        "has neither \"auth\" nor \"username\" and \"password\"",
                    ));
                }
            };
            if credential.username.is_empty() {
                return Err(bad("the username is empty"));
            }
            if credential.username.len() > MAX_CREDENTIAL_BYTES
                || credential.password.len() > MAX_CREDENTIAL_BYTES
            {
                return Err(bad("the username or password is longer than 16 KiB"));
            }
            if out.insert(registry, credential).is_some() {
                return Err(bad("names the same registry as another entry"));
            }
        }
        Ok(Self(out))
    }

    /// The credential for `registry` (any spelling [`normalise_registry`] accepts), if
    /// the file has one. Only that entry: nothing else is reachable through here.
    pub fn lookup(&self, registry: &str) -> Option<&Credential> {
        self.0.get(&normalise_registry(registry))
    }

    /// The registries (normalised) that have credentials.
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether there are no credentials at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The one spelling of a registry name: scheme and path dropped
/// (`https://r.example:5000/v2/` → `r.example:5000`), lower case, Docker Hub's aliases
/// mapped to [`DOCKER_HUB`]. Image references name their registry in this form after
/// the same normalisation, so `lookup("index.docker.io")` finds an entry written as
/// `https://index.docker.io/v1/`.
pub fn normalise_registry(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase();
    let name = name
        .strip_prefix("https://")
        .or_else(|| name.strip_prefix("http://"))
        .unwrap_or(&name);
    let host = name.split('/').next().unwrap_or_default().to_owned();
    if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        DOCKER_HUB.to_owned()
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn parses_auth_and_username_password_entries() -> Result<(), DockerConfigError> {
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "localhost:5000": {{"username": "u2", "password": "p:2", "auth": "ignored"}},
                "HTTP://Registry.Example:5000/v2/": {{"auth": "{}"}}
            }}}}"#,
            b64("hub-user:hub:pass"),
            b64("u3:p3")
        );
        let creds = RegistryCredentials::from_docker_config_json(json.as_bytes())?;
        let hub = creds
            .lookup("registry-1.docker.io")
            .map(|c| c.password.as_str());
        assert_eq!(hub, Some("hub:pass"));
        assert_eq!(
            creds.lookup("docker.io").map(|c| c.username.as_str()),
            Some("hub-user")
        );
        assert_eq!(
            creds.lookup("localhost:5000").map(|c| c.password.as_str()),
            Some("p:2")
        );
        assert_eq!(
            creds
                .lookup("registry.example:5000")
                .map(|c| c.username.as_str()),
            Some("u3")
        );
        assert!(creds.lookup("localhost:5001").is_none());
        assert!(creds.lookup("quay.io").is_none());
        assert_eq!(
            creds.registries().collect::<Vec<_>>(),
            ["docker.io", "localhost:5000", "registry.example:5000"]
        );
        Ok(())
    }

    #[test]
    fn debug_and_errors_never_show_a_password() {
        let json = format!(
            r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
            b64("user:s3cr3t")
        );
        let creds =
            RegistryCredentials::from_docker_config_json(json.as_bytes()).expect("valid file");
        let debug = format!("{creds:?} {:?}", creds.lookup("r.example"));
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("r.example"), "{debug}");

        let bad = [
            r#"not json s3cr3t"#.to_owned(),
            r#"{"auths": {"r.example": {"username": 5, "password": "s3cr3t"}}}"#.to_owned(),
            r#"{"auths": {"r.example": {"auth": "s3cr3t!!"}}}"#.to_owned(),
            format!(
                r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
                b64("s3cr3t")
            ),
            r#"{"auths": {"r.example": {"password": "s3cr3t"}}}"#.to_owned(),
            r#"{"auths": {"r.example": {"identitytoken": "s3cr3t"}}}"#.to_owned(),
            format!(
                r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
                b64(":s3cr3t")
            ),
            r#"{"auths": {}}"#.to_owned(),
            r#"{"s3cr3t": {}}"#.to_owned(),
            format!(
                r#"{{"auths": {{"docker.io": {{"auth": "{0}"}}, "index.docker.io": {{"auth": "{0}"}}}}}}"#,
                b64("u:s3cr3t")
            ),
        ];
        for json in bad {
            let e = RegistryCredentials::from_docker_config_json(json.as_bytes())
                .expect_err(&json)
                .to_string();
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn wire_form_is_a_plain_object() -> Result<(), serde_json::Error> {
        let json = format!(
            r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
            b64("u:p")
        );
        let creds = RegistryCredentials::from_docker_config_json(json.as_bytes())
            .map_err(serde::de::Error::custom)?;
        let wire = serde_json::to_value(&creds)?;
        assert_eq!(
            wire,
            serde_json::json!({"r.example": {"username": "u", "password": "p"}})
        );
        assert_eq!(serde_json::from_value::<RegistryCredentials>(wire)?, creds);
        Ok(())
    }

    #[test]
    fn registry_names_normalise() {
        for (input, want) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry.hub.docker.com", "docker.io"),
            ("Localhost:5000", "localhost:5000"),
            ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
            ("quay.io", "quay.io"),
        ] {
            assert_eq!(normalise_registry(input), want, "{input}");
        }
    }
}
