//! The domain model: what a mount is made of once its request is parsed —
//! the pod ([`Pod`]), the whole validated request ([`MountSpec`]), its
//! objects ([`ObjectSpec`], [`TemplateObject`]) and how each becomes files
//! ([`Output`]), the Secrets it syncs ([`SyncSecret`]), the driver's rules
//! for a file's path, and the parameter names a class may use. Every layer
//! that handles a mount (rendering, the ledger, the identity proof, Secret
//! sync) uses these types; only [`crate::spc`] builds them, from a
//! tenant's input.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::Quoted;
use crate::flavor::Flavor;
use crate::vault::{ReadKey, VaultConfig};

mod output;

pub use output::{Format, JsonPointer, Output, Select, TemplateSource};

/// The driver's limit for a whole `File.path`.
pub const MAX_PATH_LEN: usize = 4096;
/// The driver's (and Linux's) limit for one path element.
pub const MAX_ELEMENT_LEN: usize = 255;
/// The names a SecretProviderClass may give each connection parameter, in
/// OpenBao's order of precedence: `bao…`, then `openbao…`, then `vault…`
/// (and plain `roleName` last). The first name the class sets wins, even
/// when its value is empty (an empty value then means "the provider's
/// default", and the names after it are not read). The same names and
/// order apply on every socket, whatever its flavour.
pub mod names {
    /// The role to log in with.
    pub const ROLE: &[&str] = &["baoRoleName", "openbaoRoleName", "vaultRoleName", "roleName"];
    /// The server's address.
    pub const ADDRESS: &[&str] = &["baoAddress", "openbaoAddress", "vaultAddress"];
    /// The namespace header.
    pub const NAMESPACE: &[&str] = &["baoNamespace", "openbaoNamespace", "vaultNamespace"];
    /// The auth mount (one spelling).
    pub const KUBERNETES_MOUNT_PATH: &[&str] = &[
        "baoKubernetesMountPath",
        "openbaoKubernetesMountPath",
        "vaultKubernetesMountPath",
    ];
    /// The auth mount (the other spelling; setting both is an error).
    pub const AUTH_MOUNT_PATH: &[&str] = &["baoAuthMountPath", "openbaoAuthMountPath", "vaultAuthMountPath"];
    /// A PEM CA file.
    pub const CA_CERT_PATH: &[&str] = &["baoCACertPath", "openbaoCACertPath", "vaultCACertPath"];
    /// A directory of PEM CA files.
    pub const CA_DIRECTORY: &[&str] = &["baoCADirectory", "openbaoCADirectory", "vaultCADirectory"];
    /// The TLS server name.
    pub const TLS_SERVER_NAME: &[&str] = &["baoTLSServerName", "openbaoTLSServerName", "vaultTLSServerName"];
    /// The mTLS client certificate.
    pub const TLS_CLIENT_CERT_PATH: &[&str] = &[
        "baoTLSClientCertPath",
        "openbaoTLSClientCertPath",
        "vaultTLSClientCertPath",
    ];
    /// The mTLS client key.
    pub const TLS_CLIENT_KEY_PATH: &[&str] = &[
        "baoTLSClientKeyPath",
        "openbaoTLSClientKeyPath",
        "vaultTLSClientKeyPath",
    ];
    /// Whether to skip certificate verification.
    pub const SKIP_TLS_VERIFY: &[&str] = &["baoSkipTLSVerify", "openbaoSkipTLSVerify", "vaultSkipTLSVerify"];
    /// Every aliased parameter.
    pub const ALL: &[&[&str]] = &[
        ROLE,
        ADDRESS,
        NAMESPACE,
        KUBERNETES_MOUNT_PATH,
        AUTH_MOUNT_PATH,
        CA_CERT_PATH,
        CA_DIRECTORY,
        TLS_SERVER_NAME,
        TLS_CLIENT_CERT_PATH,
        TLS_CLIENT_KEY_PATH,
        SKIP_TLS_VERIFY,
    ];
    /// Parameters read under one name only.
    pub const PLAIN: &[&str] = &["objects", "audience", "syncSecrets"];

    /// The name of `other` spelt like `written` (same prefix): the partner
    /// to name in a message about a missing half.
    pub fn like(written: &str, concept: &[&str], other: &'static [&'static str]) -> &'static str {
        let i = concept.iter().position(|n| *n == written).unwrap_or(concept.len() - 1);
        other[i.min(other.len() - 1)]
    }
}

/// The pod a Mount is for, from the volume context.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
pub struct Pod {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
    /// Service account the pod runs as.
    pub service_account: String,
}

/// A service-account token kubelet handed over in the volume context.
#[derive(Clone)]
pub struct ProvidedToken {
    /// The JWT. Never logged.
    pub token: String,
    /// When it expires, if kubelet said.
    pub expires: Option<std::time::SystemTime>,
}

impl std::fmt::Debug for ProvidedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvidedToken")
            .field("token", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

/// A fully validated Mount request.
#[derive(Debug, Clone)]
pub struct MountSpec {
    /// The pod the files are for.
    pub pod: Pod,
    /// SecretProviderClass name, when the driver sends it.
    pub spc_name: Option<String>,
    /// Vault role for login.
    pub role: String,
    /// Auth mount path, without slashes at either end.
    pub auth_mount: String,
    /// Audience named by the SPC, if any.
    pub audience: Option<String>,
    /// The flavour of the socket the request came in on.
    pub flavor: Flavor,
    /// Vault connection.
    pub vault: VaultConfig,
    /// Whether every address of `vault` is one the operator configured
    /// (else the class chose it: it gets no waiting out of elections).
    pub operator_vault: bool,
    /// Token from kubelet for the audience, when present.
    pub provided_token: Option<ProvidedToken>,
    /// The objects that read Vault, in SPC order.
    pub objects: Vec<ObjectSpec>,
    /// Kubernetes Secrets to write from the objects (`syncSecrets`).
    pub sync: Vec<SyncSecret>,
    /// The objects without a `secretPath`: rendered from a template over
    /// the responses of `objects`.
    pub templates: Vec<TemplateObject>,
}

impl MountSpec {
    /// The audience of the kubelet token to use: the class's, else the
    /// socket flavour's default (`vault` or `openbao`).
    pub fn token_audience(&self) -> &str {
        self.audience.as_deref().unwrap_or(self.flavor.default_audience())
    }
}

/// Value decoding applied to an extracted `secretKey` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Written as is.
    Utf8,
    /// Standard base64, decoded before writing.
    Base64,
    /// Hexadecimal, decoded before writing.
    Hex,
}

/// One validated entry of `objects`.
#[derive(Debug, Clone)]
pub struct ObjectSpec {
    /// File path relative to the mount; also the ObjectVersion id.
    pub name: String,
    /// The Vault request that produces it.
    pub read: ReadKey,
    /// How the response becomes file content.
    pub output: Output,
    /// File mode.
    pub mode: u32,
    /// Canonical text of the object's configuration, hashed into its version.
    pub config_digest_input: String,
}

/// An `objects` entry with a `template` and no `secretPath`: its file is
/// rendered from the responses of the other objects only.
#[derive(Debug, Clone)]
pub struct TemplateObject {
    /// File path relative to the mount; also the ObjectVersion id.
    pub name: String,
    /// The template.
    pub template: TemplateSource,
    /// File mode.
    pub mode: u32,
    /// Canonical text of the object's configuration, hashed into its version.
    pub config_digest_input: String,
}

/// One entry of `syncSecrets`: a Kubernetes Secret in the pod's namespace
/// built from mounted objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSecret {
    /// Secret name.
    pub name: String,
    /// Secret type.
    pub secret_type: String,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Extra annotations.
    pub annotations: BTreeMap<String, String>,
    /// (Secret key, objectName) pairs.
    pub data: Vec<(String, String)>,
    /// Keep the Secret when its workloads are gone (no owner references).
    pub keep: bool,
}

/// Applies the driver's rules for `File.path`, so a bad `objectName` fails
/// here with a clear message instead of after every secret was read.
pub fn check_object_path(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() {
        return Err("must not be empty".to_string());
    }
    if p.len() > MAX_PATH_LEN {
        return Err(format!("is longer than {MAX_PATH_LEN} bytes"));
    }
    if p.contains('\0') {
        return Err("contains a NUL byte".to_string());
    }
    let q = Quoted(p);
    if p.starts_with('/') {
        return Err(format!("{q} must be a relative path"));
    }
    for (i, element) in p.split('/').enumerate() {
        match element {
            "" => return Err(format!("{q} is not a clean path (empty element or trailing slash)")),
            "." => return Err(format!("{q} is not a clean path (\".\" element)")),
            ".." => return Err(format!("{q} must not contain \"..\"")),
            e if i == 0 && e.starts_with("..") => return Err(format!("{q} must not start with \"..\"")),
            e if e.len() > MAX_ELEMENT_LEN => {
                return Err(format!("{q} has an element longer than {MAX_ELEMENT_LEN} bytes"))
            }
            _ => {}
        }
    }
    Ok(())
}
