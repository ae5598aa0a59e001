//! The plugin author's registry and scaffolding commands behind `hostplug plugin
//! push|sign|verify|keygen|new`, and the OCI form of `plugin manifest`.
//!
//! Registry work goes through `hostplug_oci` (every digest checked, plain HTTP only with
//! `--insecure`); this module adds the files on the author's side: key files (the private
//! key written 0600), the scaffolded crate. It must never write outside the paths it was
//! given and never print a password or a private key.

use std::path::{Path, PathBuf};

use hostplug_api::crd::{
    Capabilities, HostPlugin, HostPluginSpec, OciSource, PluginSource, SignaturePolicy,
};
use hostplug_api::protocol::{ErrorKind, InvokeError};
use hostplug_oci::{Credentials, PublicKey, Reference, RegistryClient, SigningKey, cosign};

use hostplug_host::{Digest, EtcAccess};

/// Largest module `plugin push` uploads: the operator's (and the worker's) module limit,
/// since a larger one could never run.
pub const MAX_PUSH_BYTES: u64 = hostplug_api::worker::DEFAULT_MAX_MODULE_BYTES as u64;

/// Environment variable holding the registry password (never a flag: flags show in `ps`).
pub const PASSWORD_ENV: &str = "HOSTPLUG_REGISTRY_PASSWORD";

/// The error of a registry or key problem, with the kind the CLI reports.
pub fn oci_error(e: hostplug_oci::Error) -> InvokeError {
    use hostplug_oci::Error as E;
    let kind = match &e {
        E::InvalidReference { .. } | E::InvalidKey(_) => ErrorKind::BadRequest,
        E::Unauthorized { .. } => ErrorKind::Unauthorized,
        E::NotFound { .. } => ErrorKind::NotFound,
        E::DigestMismatch { .. } => ErrorKind::DigestMismatch,
        E::TooLarge { .. } => ErrorKind::PayloadTooLarge,
        E::Unsigned { .. } | E::BadSignature { .. } => ErrorKind::Denied,
        E::Unreachable { .. } | E::NotWasm { .. } | E::Registry { .. } => ErrorKind::Failed,
    };
    InvokeError::new(kind, e.to_string())
}

fn io_error(what: String, e: std::io::Error) -> InvokeError {
    InvokeError::new(ErrorKind::Failed, format!("{what}: {e}"))
}

/// Credentials from `--username` and [`PASSWORD_ENV`].
pub fn credentials(username: Option<&str>) -> Result<Option<Credentials>, InvokeError> {
    let Some(username) = username else {
        return Ok(None);
    };
    let password = std::env::var(PASSWORD_ENV).map_err(|_| {
        InvokeError::new(
            ErrorKind::BadRequest,
            format!("--username needs the password in the environment variable {PASSWORD_ENV}"),
        )
    })?;
    Ok(Some(Credentials {
        username: username.to_owned(),
        password,
    }))
}

fn runtime() -> Result<tokio::runtime::Runtime, InvokeError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_error("starting the async runtime".into(), e))
}

fn client(
    r: &Reference,
    insecure: bool,
    creds: Option<Credentials>,
) -> Result<RegistryClient, InvokeError> {
    RegistryClient::new(&r.registry, insecure, creds).map_err(oci_error)
}

fn parse_ref(s: &str) -> Result<Reference, InvokeError> {
    s.parse().map_err(oci_error)
}

/// Pushes `module` to `reference`; returns the reference pinned by manifest digest.
pub fn push(
    module: &[u8],
    reference: &str,
    insecure: bool,
    creds: Option<Credentials>,
) -> Result<Reference, InvokeError> {
    if module.len() as u64 > MAX_PUSH_BYTES {
        return Err(InvokeError::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "the module is {} bytes, above the {MAX_PUSH_BYTES}-byte module limit",
                module.len()
            ),
        ));
    }
    let r = parse_ref(reference)?;
    if r.digest.is_some() {
        return Err(InvokeError::new(
            ErrorKind::BadRequest,
            "push to a tag (registry/repository:tag); the digest is what push prints",
        ));
    }
    let c = client(&r, insecure, creds)?;
    runtime()?
        .block_on(c.push_wasm(&r, module))
        .map_err(oci_error)
}

/// Signs `reference` (pinned by digest) with the PKCS#8 key in `key_file`; returns the
/// signature tag.
pub fn sign(
    reference: &str,
    key_file: &Path,
    insecure: bool,
    creds: Option<Credentials>,
) -> Result<String, InvokeError> {
    let r = parse_ref(reference)?;
    let pem = std::fs::read_to_string(key_file)
        .map_err(|e| io_error(format!("reading {}", key_file.display()), e))?;
    let key = SigningKey::from_pem(&pem).map_err(oci_error)?;
    let c = client(&r, insecure, creds)?;
    runtime()?
        .block_on(cosign::sign(&c, &r, &key))
        .map_err(oci_error)
}

/// Reads every public key of `files`.
pub fn read_public_keys(files: &[PathBuf]) -> Result<Vec<PublicKey>, InvokeError> {
    let mut keys = Vec::new();
    for f in files {
        let pem = std::fs::read_to_string(f)
            .map_err(|e| io_error(format!("reading {}", f.display()), e))?;
        keys.extend(PublicKey::all_from_pem(&pem).map_err(|e| {
            InvokeError::new(ErrorKind::BadRequest, format!("{}: {e}", f.display()))
        })?);
    }
    Ok(keys)
}

/// Verifies that `reference` has a signature by one of `keys` (the artifact is pulled and
/// its digests checked first); returns the pinned reference and the signing key.
pub fn verify(
    reference: &str,
    keys: &[PublicKey],
    insecure: bool,
    creds: Option<Credentials>,
) -> Result<(Reference, PublicKey), InvokeError> {
    let r = parse_ref(reference)?;
    let c = client(&r, insecure, creds)?;
    runtime()?.block_on(async {
        let pulled = c.pull_wasm(&r, MAX_PUSH_BYTES).await.map_err(oci_error)?;
        let key = cosign::verify(&c, &r, &pulled.manifest_digest, keys)
            .await
            .map_err(oci_error)?;
        Ok((pulled.reference, key))
    })
}

/// Writes a new key pair: `<prefix>.key` (PKCS#8, mode 0600, refused if it exists) and
/// `<prefix>.pub`. Returns the two paths.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf), InvokeError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let private = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    let (key, pem) = SigningKey::generate().map_err(oci_error)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .map_err(|e| io_error(format!("creating {}", private.display()), e))?;
    f.write_all(pem.as_bytes())
        .map_err(|e| io_error(format!("writing {}", private.display()), e))?;
    std::fs::write(&public, key.public_key().to_pem())
        .map_err(|e| io_error(format!("writing {}", public.display()), e))?;
    Ok((private, public))
}

/// What `plugin manifest --oci` renders.
#[derive(Debug, Clone)]
pub struct OciManifestRequest<'a> {
    /// HostPlugin name.
    pub name: &'a str,
    /// The image reference (pinned by digest, or a tag: then `spec.sha256` pins the module).
    pub image: &'a str,
    /// Plain HTTP registry.
    pub insecure: bool,
    /// Pull secret name (in the operator's namespace).
    pub pull_secret: Option<&'a str>,
    /// Keys one of which must have signed it.
    pub public_keys: Vec<PublicKey>,
    /// `etc` capability.
    pub etc: EtcAccess,
    /// `docker` capability.
    pub docker: bool,
    /// `containerd` capability.
    pub containerd: bool,
}

/// The HostPlugin (YAML) of a module published at `req.image`. A tag-only reference is
/// pinned with the module's own sha256 (`module`), so the cluster runs exactly the module
/// the author has.
pub fn render_oci_manifest(
    module: &[u8],
    req: &OciManifestRequest<'_>,
) -> Result<String, InvokeError> {
    let r = parse_ref(req.image)?;
    let sha256 = r.digest.is_none().then(|| Digest::of(module).hex());
    let mut hp = HostPlugin::new(
        req.name,
        HostPluginSpec {
            source: PluginSource {
                builtin: None,
                config_map: None,
                oci: Some(OciSource {
                    image: r.to_string(),
                    pull_secret: req.pull_secret.map(str::to_owned),
                    insecure: req.insecure,
                }),
            },
            sha256,
            capabilities: Capabilities {
                etc: req.etc,
                docker: req.docker,
                containerd: req.containerd,
                ..Default::default()
            },
            signature: (!req.public_keys.is_empty()).then(|| SignaturePolicy {
                public_keys: req.public_keys.iter().map(PublicKey::to_pem).collect(),
            }),
        },
    );
    hp.metadata.labels = Some(
        [
            (
                "app.kubernetes.io/part-of".to_owned(),
                "hostplug".to_owned(),
            ),
            ("hostplug.dev/plugin".to_owned(), req.name.to_owned()),
        ]
        .into_iter()
        .collect(),
    );
    let yaml = serde_yaml::to_string(&hp)
        .map_err(|e| InvokeError::new(ErrorKind::Internal, format!("encoding YAML: {e}")))?;
    Ok(format!("---\n{yaml}"))
}

/// Where `plugin new` takes the SDK from when `--sdk-path` is not given: the checkout this
/// binary was built from, when it is still there.
pub fn default_sdk_path() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
    p.join("Cargo.toml")
        .is_file()
        .then(|| p.canonicalize().unwrap_or(p))
}

/// Whether `name` is a plugin name `plugin new` accepts: lowercase letters, digits and
/// `-`, starting with a letter, at most 63 bytes (it becomes a HostPlugin name too).
fn valid_name(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Creates the plugin crate `name` in directory `dir` (which must not exist), depending on
/// the SDK at `sdk` by path. The crate builds as it stands
/// (`cargo build --release --target wasm32-wasip2`) into `<name with _>.wasm`.
pub fn scaffold(name: &str, dir: &Path, sdk: &Path) -> Result<Vec<PathBuf>, InvokeError> {
    if !valid_name(name) {
        return Err(InvokeError::new(
            ErrorKind::BadRequest,
            format!(
                "{name:?} is not a plugin name: lowercase letters, digits and '-', starting \
                 with a letter, at most 63 characters"
            ),
        ));
    }
    if !sdk.join("Cargo.toml").is_file() {
        return Err(InvokeError::new(
            ErrorKind::BadRequest,
            format!(
                "--sdk-path {}: no Cargo.toml there; point it at plugins/sdk of a hostplug checkout",
                sdk.display()
            ),
        ));
    }
    if dir.exists() {
        return Err(InvokeError::new(
            ErrorKind::BadRequest,
            format!(
                "{} exists already; plugin new only creates a new directory",
                dir.display()
            ),
        ));
    }
    let sdk = sdk
        .canonicalize()
        .map_err(|e| io_error(format!("{}", sdk.display()), e))?;
    let files = scaffold_files(name, &sdk);
    let mut written = Vec::new();
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| io_error(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| io_error(format!("writing {}", path.display()), e))?;
        written.push(path);
    }
    Ok(written)
}

/// The hostplug-sdk version a new plugin asks for: the WIT package version, which the SDK
/// follows (its own test keeps the two equal).
fn sdk_version() -> &'static str {
    include_str!("../../wit/hostplug.wit")
        .lines()
        .find_map(|l| l.trim().strip_prefix("package hostplug:plugin@"))
        .and_then(|v| v.strip_suffix(';'))
        .unwrap_or("*")
}

fn scaffold_files(name: &str, sdk: &Path) -> Vec<(&'static str, String)> {
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
publish = false

# A crate of its own, not a member of any enclosing workspace.
[workspace]

[lib]
# cdylib: the WebAssembly component (target/wasm32-wasip2/release/{file}.wasm);
# rlib: lets `cargo test` run the unit tests natively.
crate-type = ["cdylib", "rlib"]

[dependencies]
# Until hostplug-sdk is on crates.io, a path into a hostplug checkout; then:
# hostplug-sdk = "{sdk_version}"
hostplug-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
schemars = "1.2"

# Small, self-contained components: the host compiles each once and caches it by digest.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#,
        file = name.replace('-', "_"),
        sdk_version = sdk_version(),
        sdk = sdk.display(),
    );
    let lib = format!(
        r##"//! {name}: a hostplug plugin. `hello` answers without touching the node; add methods
//! with `.read_only(…)` or `.mutating(…)` in `definition`.

use hostplug_sdk::{{Context, Definition, Outcome, Plugin, Result, export_plugin}};
use schemars::JsonSchema;
use serde::Deserialize;

/// Parameters of `hello`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hello {{
    /// Whom to greet.
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
}}

fn hello(p: Hello, _cx: &Context) -> Result<Outcome> {{
    Ok(Outcome::unchanged(format!("hello, {{}}!", p.name)))
}}

/// The plugin.
pub struct ThisPlugin;

impl Plugin for ThisPlugin {{
    fn definition() -> Definition {{
        Definition::new("{name}", env!("CARGO_PKG_VERSION"), "A hostplug plugin.")
            .read_only("hello", "Returns a greeting.", hello)
    }}
}}

export_plugin!(ThisPlugin);

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn greets() {{
        let out = ThisPlugin::definition()
            .invoke("hello", r#"{{"name": "node1"}}"#, false)
            .expect("runs");
        assert!(!out.is_changed());
    }}
}}
"##
    );
    let readme = format!(
        r#"# {name}

A hostplug plugin. The author's path (see hostplug's plugins/README.md):

    cargo build --release --target wasm32-wasip2
    hostplug plugin run target/wasm32-wasip2/release/{file}.wasm --method hello --params '{{"name":"me"}}'
    hostplug plugin push target/wasm32-wasip2/release/{file}.wasm registry.example/plugins/{name}:0.1.0
    hostplug plugin keygen --out signing && hostplug plugin sign <pinned ref> --key signing.key
    hostplug plugin manifest target/wasm32-wasip2/release/{file}.wasm --name {name} --oci <pinned ref> --public-key signing.pub
"#,
        file = name.replace('-', "_"),
    );
    vec![
        ("Cargo.toml", cargo),
        ("src/lib.rs", lib),
        ("README.md", readme),
        (".gitignore", "/target\n".to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_existing_directories_are_refused() {
        for bad in ["", "Upper", "9lives", "a_b", "trailing-", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_name("sysctl-conf"));
        let tmp = tempfile::tempdir().expect("tempdir");
        let sdk = tmp.path().join("sdk");
        std::fs::create_dir(&sdk).expect("mkdir");
        std::fs::write(sdk.join("Cargo.toml"), "").expect("write");
        let e = scaffold("p", tmp.path(), &sdk).expect_err("exists");
        assert!(e.message.contains("exists already"), "{}", e.message);
        let e = scaffold("p", &tmp.path().join("p"), tmp.path()).expect_err("no sdk");
        assert!(e.message.contains("--sdk-path"), "{}", e.message);
        let written = scaffold("my-plugin", &tmp.path().join("p"), &sdk).expect("scaffold");
        assert_eq!(written.len(), 4);
        let cargo = std::fs::read_to_string(tmp.path().join("p/Cargo.toml")).expect("read");
        assert!(cargo.contains("name = \"my-plugin\""), "{cargo}");
        assert!(cargo.contains("my_plugin.wasm"), "{cargo}");
        assert_ne!(sdk_version(), "*", "the WIT names its package version");
        assert!(
            cargo.contains(&format!("# hostplug-sdk = \"{}\"", sdk_version())),
            "{cargo}"
        );
    }

    #[test]
    fn oci_manifest_pins_a_tag_with_the_module_digest() {
        let (key, _) = SigningKey::generate().expect("key");
        let req = OciManifestRequest {
            name: "p",
            image: "r.example:5000/plugins/p:1",
            insecure: true,
            pull_secret: Some("regcred"),
            public_keys: vec![key.public_key()],
            etc: EtcAccess::Read,
            docker: false,
            containerd: false,
        };
        let yaml = render_oci_manifest(b"module", &req).expect("renders");
        let hp: HostPlugin =
            serde_yaml::from_str(yaml.trim_start_matches("---\n")).expect("parses");
        assert_eq!(
            hp.spec.sha256.as_deref(),
            Some(Digest::of(b"module").hex().as_str())
        );
        let oci = hp.spec.source.oci.expect("oci");
        assert_eq!(oci.image, "r.example:5000/plugins/p:1");
        assert!(oci.insecure);
        assert_eq!(oci.pull_secret.as_deref(), Some("regcred"));
        assert_eq!(
            PublicKey::from_pem(&hp.spec.signature.expect("signature").public_keys[0])
                .expect("key"),
            key.public_key()
        );
        // Pinned by digest: no spec.sha256 needed.
        let pinned = format!("r.example/p@sha256:{}", "a".repeat(64));
        let yaml = render_oci_manifest(
            b"module",
            &OciManifestRequest {
                image: &pinned,
                ..req
            },
        )
        .expect("renders");
        assert!(!yaml.contains("sha256: "), "{yaml}");
    }
}
