//! Certificates and keys for one control plane, generated at start.
//!
//! A CA signs the API server's serving certificate (127.0.0.1 and localhost) and the client
//! certificates of the admin (group `system:masters`), kube-controller-manager and
//! kube-scheduler. A
//! separate key pair signs service-account tokens. Keys are ECDSA P-256, which Go's TLS,
//! kube-apiserver's token signer (ES256) and rustls all accept. Nothing here is
//! meant to be secret beyond the life of the environment: files are written with mode 0600
//! into the environment's own directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::{Error, Result};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM (PKCS#8) private key.
    pub key: PathBuf,
}

/// The files of one control plane's PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA (its key signs cluster CSRs too).
    pub ca: CertFiles,
    /// kube-apiserver's serving certificate.
    pub apiserver: CertFiles,
    /// The admin's client certificate (O=system:masters).
    pub admin: CertFiles,
    /// kube-controller-manager's client certificate (CN=system:kube-controller-manager).
    pub controller_manager: CertFiles,
    /// kube-scheduler's client certificate (CN=system:kube-scheduler).
    pub scheduler: CertFiles,
    /// The private key that signs service-account tokens.
    pub service_account_key: PathBuf,
    /// Its public key, with which the API server verifies tokens.
    pub service_account_pub: PathBuf,
}

/// The CA: its certificate and key, kept to sign the others.
struct Authority {
    cert: Certificate,
    key: KeyPair,
}

impl Pki {
    /// Generates everything into `dir` (created if needed).
    pub fn generate(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;

        let ca_key = KeyPair::generate()?;
        let ca = Authority {
            cert: ca_params()?.self_signed(&ca_key)?,
            key: ca_key,
        };
        let ca_files = write_pair(dir, "ca", &ca.cert, &ca.key)?;

        let apiserver = issue(
            dir,
            "apiserver",
            &ca,
            "kube-apiserver",
            None,
            &[
                "127.0.0.1",
                // The `kubernetes` Service's ClusterIP: Pods on real nodes reach the API
                // server there (see realnode).
                super::KUBERNETES_SERVICE_IP,
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let admin = issue(
            dir,
            "admin",
            &ca,
            "hostplug-admin",
            Some("system:masters"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let controller_manager = issue(
            dir,
            "kube-controller-manager",
            &ca,
            "system:kube-controller-manager",
            None,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;

        let scheduler = issue(
            dir,
            "kube-scheduler",
            &ca,
            "system:kube-scheduler",
            None,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;

        let sa = KeyPair::generate()?;
        let service_account_key = dir.join("sa.key");
        write_private(&service_account_key, &sa.serialize_pem())?;
        let service_account_pub = dir.join("sa.pub");
        write_private(&service_account_pub, &sa.public_key_pem())?;

        Ok(Pki {
            ca: ca_files,
            apiserver,
            admin,
            controller_manager,
            scheduler,
            service_account_key,
            service_account_pub,
        })
    }
}

impl Pki {
    /// Issues a client certificate signed by the CA into `dir` as `<name>.crt/.key`, with
    /// common name `common_name` and, if given, organization `organization` (a group).
    /// Used for the kubelets of real nodes (`system:node:NAME` in `system:nodes`).
    pub fn issue_client(
        &self,
        dir: &Path,
        name: &str,
        common_name: &str,
        organization: Option<&str>,
    ) -> Result<CertFiles> {
        let pem = fs::read_to_string(&self.ca.key)
            .map_err(|e| Error::io(format!("reading {}", self.ca.key.display()), e))?;
        let key = KeyPair::from_pem(&pem)?;
        // The same name and key as the CA certificate on disk: what a verifier matches.
        let ca = Authority {
            cert: ca_params()?.self_signed(&key)?,
            key,
        };
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        issue(
            dir,
            name,
            &ca,
            common_name,
            organization,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

/// The CA's certificate parameters.
fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "hostplug-test-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Issues a certificate signed by `ca` and writes it with its new key as `<name>.crt/.key`.
fn issue(
    dir: &Path,
    name: &str,
    ca: &Authority,
    common_name: &str,
    organization: Option<&str>,
    alt_names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertFiles> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(
        alt_names
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
    )?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca.cert, &ca.key)?;
    write_pair(dir, name, &cert, &key)
}

fn write_pair(dir: &Path, name: &str, cert: &Certificate, key: &KeyPair) -> Result<CertFiles> {
    let files = CertFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    write_private(&files.cert, &cert.pem())?;
    write_private(&files.key, &key.serialize_pem())?;
    Ok(files)
}

/// Writes `contents` to a new file readable by its owner only.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<()> {
    let mut f = fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
