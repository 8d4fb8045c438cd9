//! The control plane's key material, the same for both backends (the real
//! kube-apiserver and the project's double): a CA, the API server's serving
//! certificate for loopback and the in-cluster names, the admin's client
//! certificate (`system:masters`), the service-account signing key (RS256 or
//! ES256), and the TLS configurations clients and proxies use with them.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How the API server signs service-account tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// An RSA 2048 key (what kubeadm generates): RS256 tokens.
    Rs256,
    /// A P-256 key: ES256 tokens.
    Es256,
}

impl Signing {
    /// The JWS `alg` of tokens signed this way.
    pub fn alg(self) -> &'static str {
        match self {
            Signing::Rs256 => "RS256",
            Signing::Es256 => "ES256",
        }
    }
}

/// The service-account signing key (PKCS#8 PEM) and its public key (SPKI
/// PEM). `dir` is a scratch directory for openssl, which makes RSA keys
/// (ring cannot).
pub fn signing_key(signing: Signing, dir: &Path) -> Result<(String, String)> {
    match signing {
        Signing::Es256 => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("P-256 key")?;
            Ok((key.serialize_pem(), key.public_key_pem()))
        }
        Signing::Rs256 => {
            let key = dir.join("sa-rsa.key");
            let run = |args: &[&str]| -> Result<Vec<u8>> {
                let out = Command::new("openssl")
                    .args(args)
                    .output()
                    .context("running openssl (Debian: openssl)")?;
                if !out.status.success() {
                    bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
                }
                Ok(out.stdout)
            };
            let path = key.display().to_string();
            run(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &path,
            ])?;
            let public = run(&["pkey", "-in", &path, "-pubout"])?;
            let private = std::fs::read_to_string(&key).context("reading the RSA key")?;
            let _ = std::fs::remove_file(&key);
            Ok((private, String::from_utf8(public).context("openssl's public key")?))
        }
    }
}

/// The CA, the API server's serving certificate and the admin's client
/// certificate.
pub struct Pki {
    /// The CA, which signs every other certificate here.
    pub ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate (PEM), what clients trust.
    pub ca_pem: String,
    /// The API server's serving certificate (PEM).
    pub serving_cert_pem: String,
    /// Its key (PEM).
    pub serving_key_pem: String,
    /// The admin's client certificate and key (PEM).
    pub admin: (String, String),
}

impl Pki {
    /// A fresh CA with a serving and an admin certificate.
    pub fn generate() -> Result<Pki> {
        let ca_key = rcgen::KeyPair::generate().context("CA key")?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vcp-testbed-ca");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = params.self_signed(&ca_key).context("self-signing the CA")?;
        let ca = rcgen::Issuer::new(params, ca_key);
        let (serving_cert_pem, serving_key_pem) = leaf_pem(&ca, "kube-apiserver", Leaf::Server)?;
        let admin = leaf_pem(
            &ca,
            "vcp-admin",
            Leaf::Client {
                group: "system:masters",
            },
        )?;
        Ok(Pki {
            ca,
            ca_pem: ca_cert.pem(),
            serving_cert_pem,
            serving_key_pem,
            admin,
        })
    }
}

/// What a leaf certificate is for.
pub enum Leaf {
    /// Serving `127.0.0.1`, `localhost` and the in-cluster names.
    Server,
    /// A client in `group` (the certificate's organization).
    Client { group: &'static str },
}

fn leaf_params(name: &str, kind: &Leaf) -> Result<rcgen::CertificateParams> {
    let sans = match kind {
        Leaf::Server => vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
        ],
        Leaf::Client { .. } => Vec::new(),
    };
    let mut params = rcgen::CertificateParams::new(sans)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    match kind {
        Leaf::Server => params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth],
        Leaf::Client { group } => {
            params.distinguished_name.push(rcgen::DnType::OrganizationName, *group);
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    Ok(params)
}

/// A certificate of `kind` named `name`, signed by `ca`, and its key (PEM).
pub fn leaf_pem(ca: &rcgen::Issuer<'static, rcgen::KeyPair>, name: &str, kind: Leaf) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate().context("leaf key")?;
    let cert = leaf_params(name, &kind)?
        .signed_by(&key, ca)
        .with_context(|| format!("signing the {name} certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A certificate chain and its key, as rustls takes them.
pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// A certificate and key in PEM as rustls takes them.
pub fn identity((cert_pem, key_pem): &(String, String)) -> Result<Identity> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("a leaf certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("a leaf key")?;
    Ok((chain, key))
}

/// ring, explicitly: independent of any process-wide default provider.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting `ca_pem`, with `identity` as its client
/// certificate if given; HTTP/1.1.
pub fn client_config(ca_pem: &str, identity: Option<Identity>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.context("the CA certificate")?;
        roots.add(cert).context("trusting the CA")?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .context("the client certificate")?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
