//! Parsing of a Mount request: the driver's attributes (SecretProviderClass
//! parameters plus the pod's volume context), `secrets`, `permission` and the
//! `objects` YAML, into a [`MountSpec`] that cannot be invalid.
//!
//! Everything is checked here, before any network call, and every problem is
//! reported with the object and field it concerns. Unknown parameter keys are
//! ignored because the driver and kubelet add their own.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value as Json;

use crate::config::{parse_go_bool, Defaults, VaultConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::failover::Addresses;
use crate::flavor::Flavor;

mod output;
pub use output::{Format, JsonPointer, Output, Select, TemplateSource};

/// Attribute keys kubelet and the driver add to every request.
pub use vcp_proto::keys;

/// The largest file mode we accept: permission bits only.
const MAX_MODE: u32 = 0o777;
/// The driver's limit for a whole `File.path`.
const MAX_PATH_LEN: usize = 4096;
/// The driver's (and Linux's) limit for one path element.
const MAX_ELEMENT_LEN: usize = 255;
/// Longest `secretPath` (with its query) we send to Vault.
const MAX_SECRET_PATH_LEN: usize = 8192;
/// Audience of the kubelet token used when a class on a vault socket names
/// none (openbao sockets: [`Flavor::default_audience`]).
pub const DEFAULT_AUDIENCE: &str = "vault";

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

/// A class's parameters, looked up by alias.
struct Params<'a> {
    attrs: &'a HashMap<String, String>,
}

impl<'a> Params<'a> {
    /// The first of `names` the class sets, and its value trimmed (`None`
    /// when empty): present wins, even when empty.
    fn lookup(&self, names: &[&'static str]) -> Option<(&'static str, Option<&'a str>)> {
        names.iter().find_map(|n| {
            self.attrs
                .get(*n)
                .map(|v| (*n, Some(v.trim()).filter(|v| !v.is_empty())))
        })
    }

    /// The winning name and its value, when the value is not empty.
    fn get(&self, names: &[&'static str]) -> Option<(&'static str, &'a str)> {
        self.lookup(names).and_then(|(n, v)| v.map(|v| (n, v)))
    }

    /// A non-aliased key, when not empty.
    fn plain(&self, key: &str) -> Option<&'a str> {
        self.attrs.get(key).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    /// For a message: a lower-precedence name the class also set to a
    /// value, which `winner` hid.
    fn hidden(&self, names: &[&'static str], winner: &str) -> Option<&'static str> {
        names
            .iter()
            .skip_while(|n| **n != winner)
            .skip(1)
            .find(|n| self.attrs.get(**n).is_some_and(|v| !v.trim().is_empty()))
            .copied()
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

/// Secret types the sync accepts (the ones the driver's own sync knows).
pub const SECRET_TYPES: &[&str] = &[
    "Opaque",
    "kubernetes.io/basic-auth",
    "bootstrap.kubernetes.io/token",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
];

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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSyncSecret {
    secret_name: Option<String>,
    #[serde(rename = "type")]
    secret_type: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    data: Vec<RawSyncData>,
    #[serde(default)]
    keep: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSyncData {
    key: Option<String>,
    object_name: Option<String>,
}

/// Parses `syncSecrets` against the objects it may reference, reporting
/// every problem at once.
pub fn parse_sync(yaml: &str, objects: &[ObjectSpec], templates: &[TemplateObject]) -> Result<Vec<SyncSecret>> {
    let raw: Vec<RawSyncSecret> = serde_yaml_ng::from_str(yaml).map_err(|e| {
        invalid(format!(
            "parameter syncSecrets is not a YAML list of Secrets: {}",
            plain(e)
        ))
    })?;
    // The files the objects produce: plain and template objects by name,
    // expanded objects as `<name>/<key>` (keys are known only after reading).
    let names: std::collections::HashSet<&str> = objects
        .iter()
        .filter(|o| o.output.writes_files() && !matches!(o.output, Output::Expand { .. }))
        .map(|o| o.name.as_str())
        .chain(templates.iter().map(|t| t.name.as_str()))
        .collect();
    let expanded: Vec<String> = objects
        .iter()
        .filter(|o| matches!(o.output, Output::Expand { .. }))
        .map(|o| format!("{}/", o.name))
        .collect();
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        let label = match &r.secret_name {
            Some(n) => format!("syncSecrets Secret {n:?}"),
            None => format!("syncSecrets entry #{}", i + 1),
        };
        let before = problems.len();
        let name = r.secret_name.clone().unwrap_or_default();
        if let Err(e) = check_dns_subdomain(&name) {
            problems.push(format!("{label}: secretName: {e}"));
        } else if !seen.insert(name.clone()) {
            problems.push(format!("{label}: secretName is listed more than once"));
        }
        let secret_type = r
            .secret_type
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "Opaque".to_string());
        if !SECRET_TYPES.contains(&secret_type.as_str()) {
            problems.push(format!(
                "{label}: type {secret_type:?} is not supported (use one of {})",
                SECRET_TYPES.join(", ")
            ));
        }
        if r.data.is_empty() {
            problems.push(format!("{label}: data lists no keys"));
        }
        let mut data = Vec::new();
        let mut keys = std::collections::HashSet::new();
        for (j, d) in r.data.iter().enumerate() {
            let key = d.key.clone().unwrap_or_default();
            let object = d.object_name.clone().unwrap_or_default();
            if let Err(e) = check_secret_key(&key) {
                problems.push(format!("{label}: data #{}: key {key:?}: {e}", j + 1));
            } else if !keys.insert(key.clone()) {
                problems.push(format!("{label}: key {key:?} is listed more than once"));
            }
            if !names.contains(object.as_str()) && !expanded.iter().any(|e| object.starts_with(e.as_str())) {
                problems.push(format!(
                    "{label}: key {key:?}: objectName {object:?} is not one of the objects"
                ));
            }
            data.push((key, object));
        }
        let has = |k: &str| keys.contains(k);
        let missing: Vec<&str> = match secret_type.as_str() {
            "kubernetes.io/tls" => ["tls.crt", "tls.key"].into_iter().filter(|k| !has(k)).collect(),
            "kubernetes.io/dockerconfigjson" => [".dockerconfigjson"].into_iter().filter(|k| !has(k)).collect(),
            "kubernetes.io/dockercfg" => [".dockercfg"].into_iter().filter(|k| !has(k)).collect(),
            "kubernetes.io/ssh-auth" => ["ssh-privatekey"].into_iter().filter(|k| !has(k)).collect(),
            "bootstrap.kubernetes.io/token" => ["token-id", "token-secret"].into_iter().filter(|k| !has(k)).collect(),
            "kubernetes.io/basic-auth" if !has("username") && !has("password") => vec!["username or password"],
            _ => Vec::new(),
        };
        for m in missing {
            problems.push(format!("{label}: type {secret_type} needs key {m}"));
        }
        for k in r.labels.keys().chain(r.annotations.keys()) {
            if k.is_empty() || k.len() > 253 || k.chars().any(|c| c.is_whitespace()) {
                problems.push(format!("{label}: label or annotation key {k:?} is not valid"));
            }
        }
        if problems.len() == before {
            out.push(SyncSecret {
                name,
                secret_type,
                labels: r.labels,
                annotations: r.annotations,
                data,
                keep: r.keep,
            });
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(invalid(problems.join("; ")))
    }
}

fn check_dns_subdomain(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid Secret name (lowercase letters, digits, '-' and '.')"
        ))
    }
}

/// The API server's rule for Secret data keys.
pub fn check_secret_key(key: &str) -> std::result::Result<(), String> {
    if key.is_empty() || key.len() > 253 {
        return Err("must be 1 to 253 characters".to_string());
    }
    if key == "." || key == ".." {
        return Err("must not be '.' or '..'".to_string());
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err("may only contain letters, digits, '-', '_' and '.'".to_string());
    }
    Ok(())
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

/// One HTTP request to Vault. Objects with equal `ReadKey`s share one request
/// per Mount, so `username` and `password` of one database read match.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub struct ReadKey {
    /// `GET`, `PUT` or `POST`.
    pub method: String,
    /// API path starting with `/v1/`.
    pub path: String,
    /// Query parameters, sorted.
    pub query: Vec<(String, String)>,
    /// Canonical JSON of `secretArgs` (keys sorted), sent as the body.
    pub body: Option<String>,
}

/// The body (`secretArgs`, which may hold a value meant for Vault only) is
/// shown by length.
impl std::fmt::Debug for ReadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadKey")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("body_len", &self.body.as_ref().map(String::len))
            .finish()
    }
}

impl std::fmt::Display for ReadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.query.is_empty() {
            let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, "?{}", q.join("&"))?;
        }
        Ok(())
    }
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

/// The parsed `objects` list, split by whether an entry reads Vault.
#[derive(Debug, Clone)]
pub struct ObjectSet {
    /// Entries with a `secretPath`, in SPC order.
    pub objects: Vec<ObjectSpec>,
    /// Entries with only a `template`, in SPC order.
    pub templates: Vec<TemplateObject>,
}

enum Parsed {
    Read(ObjectSpec),
    Template(TemplateObject),
}

impl Parsed {
    fn name(&self) -> &str {
        match self {
            Parsed::Read(o) => &o.name,
            Parsed::Template(t) => &t.name,
        }
    }
}

/// The `objects` entry as users write it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawObject {
    object_name: Option<String>,
    secret_path: Option<String>,
    secret_key: Option<String>,
    method: Option<String>,
    secret_args: Option<serde_yaml_ng::Value>,
    encoding: Option<String>,
    file_permission: Option<serde_yaml_ng::Value>,
    secret_key_pointer: Option<String>,
    format: Option<String>,
    expand_keys: Option<serde_yaml_ng::Value>,
    template: Option<String>,
    write_file: Option<serde_yaml_ng::Value>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_yaml_ng::Value>,
}

/// Parses and validates everything a Mount request carries.
pub fn parse_mount(attributes: &str, secrets: &str, permission: &str, defaults: &Defaults) -> Result<MountSpec> {
    let attrs: HashMap<String, String> = serde_json::from_str(attributes)
        .map_err(|e| invalid(format!("attributes are not a JSON object of strings: {e}")))?;
    let secrets = parse_secrets(secrets)?;
    let default_mode = parse_permission(permission)?;

    let params = Params { attrs: &attrs };
    let get = |k: &str| params.plain(k);

    let pod = Pod {
        name: get(keys::POD_NAME).unwrap_or_default().to_string(),
        namespace: get(keys::POD_NAMESPACE)
            .ok_or_else(|| {
                invalid(format!(
                    "attribute {} is missing: set podInfoOnMount: true on the CSIDriver object",
                    keys::POD_NAMESPACE
                ))
            })?
            .to_string(),
        uid: get(keys::POD_UID).unwrap_or_default().to_string(),
        service_account: get(keys::SERVICE_ACCOUNT)
            .ok_or_else(|| {
                invalid(format!(
                    "attribute {} is missing: set podInfoOnMount: true on the CSIDriver object",
                    keys::SERVICE_ACCOUNT
                ))
            })?
            .to_string(),
    };

    let product = defaults.flavor.product();
    let role = match params.lookup(names::ROLE) {
        Some((_, Some(role))) => role.to_string(),
        Some((name, None)) => {
            let hint = params
                .hidden(names::ROLE, name)
                .map(|h| format!(" (it is set, so {h} is not read)"))
                .unwrap_or_default();
            return Err(invalid(format!(
                "parameter {name} is missing: it is empty{hint}; name the {product} role to log in with"
            )));
        }
        None => {
            return Err(invalid(format!(
                "parameter roleName is missing: name the {product} role to log in with"
            )))
        }
    };

    let (auth_mount, mount_param) = match (
        params.get(names::KUBERNETES_MOUNT_PATH),
        params.get(names::AUTH_MOUNT_PATH),
    ) {
        (Some((k, _)), Some((a, _))) => {
            return Err(invalid(format!(
                "parameters {k} and {a} are both set: they are aliases, keep one"
            )))
        }
        (Some((n, m)), None) | (None, Some((n, m))) => (m.to_string(), Some(n)),
        (None, None) => (defaults.auth_mount.clone(), None),
    };
    let auth_mount = check_auth_mount(auth_mount.trim_matches('/')).map_err(|e| match mount_param {
        Some(n) => invalid(format!("parameter {n}: {}", strip_invalid(e))),
        None => e,
    })?;

    let vault = parse_vault_config(&params, defaults)?;
    let audience = defaults.policy.audience(get("audience"), "audience")?;

    // Kubernetes 1.35+ can hand the tokens over in `secrets`
    // (serviceAccountTokenInSecrets), which a SecretProviderClass's
    // parameters cannot reach; attributes mix kubelet's values with the
    // class's, so they come second.
    let token_json = secrets
        .get(keys::SA_TOKENS)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| attrs.get(keys::SA_TOKENS).filter(|s| !s.trim().is_empty()));
    let provided_token = match token_json {
        Some(json) => select_token(json, audience.as_deref().unwrap_or(defaults.flavor.default_audience()))?,
        None => None,
    };

    let objects_yaml =
        get("objects").ok_or_else(|| invalid("parameter objects is missing: list the secrets to mount".to_string()))?;
    let ObjectSet { objects, templates } = parse_objects(objects_yaml, default_mode)?;
    let sync = match get("syncSecrets") {
        Some(yaml) => parse_sync(yaml, &objects, &templates)?,
        None => Vec::new(),
    };

    Ok(MountSpec {
        pod,
        spc_name: get(keys::SPC_NAME).map(str::to_string),
        role,
        auth_mount,
        audience,
        flavor: defaults.flavor,
        vault,
        provided_token,
        objects,
        sync,
        templates,
    })
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidRequest, msg)
}

/// The message of an [`invalid`] error, to prefix it.
fn strip_invalid(e: Error) -> String {
    match e.kind() {
        ErrorKind::InvalidRequest => e.message().to_string(),
        _ => e.to_string(),
    }
}

/// A serde error in the words users wrote, not the names of our structs.
fn plain(e: impl std::fmt::Display) -> String {
    e.to_string()
        .replace("struct RawObject", "an object (objectName, secretPath, ...)")
        .replace("struct RawSyncSecret", "a Secret (secretName, type, data, ...)")
        .replace("struct RawSyncData", "a data entry (key, objectName)")
        .replace("struct RawToken", "a token entry (token, expirationTimestamp)")
        .replace("unit value", "null")
}

fn parse_secrets(secrets: &str) -> Result<HashMap<String, String>> {
    let trimmed = secrets.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(HashMap::new());
    }
    serde_json::from_str(trimmed).map_err(|e| invalid(format!("secrets are not a JSON object of strings: {e}")))
}

fn parse_permission(permission: &str) -> Result<u32> {
    let p = permission.trim();
    if p.is_empty() {
        return Ok(0o644);
    }
    let mode: u32 = p
        .parse()
        .map_err(|_| invalid(format!("permission {p:?} is not a decimal file mode such as \"420\"")))?;
    if mode > MAX_MODE {
        return Err(invalid(format!("permission {p} is larger than 0777")));
    }
    Ok(mode)
}

/// The auth mount travels in the login URL (`/v1/auth/<mount>/login`), so it
/// must be a plain path: nothing that could change which URL is requested.
fn check_auth_mount(mount: &str) -> Result<String> {
    if mount.is_empty() {
        return Err(invalid("the auth mount path is empty".to_string()));
    }
    let plain = mount
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if !plain || mount.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") || mount.len() > 256 {
        return Err(invalid(format!(
            "the auth mount path {:?} is not a plain path (letters, digits, '-', '_', '.', and '/' between non-empty segments other than '.' and '..')",
            shorten(mount)
        )));
    }
    Ok(mount.to_string())
}

/// At most 64 characters of a bad value, for an error message.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn parse_vault_config(params: &Params<'_>, defaults: &Defaults) -> Result<VaultConfig> {
    let policy = &defaults.policy;
    let addresses = match params.get(names::ADDRESS) {
        Some((name, list)) => {
            let addrs = Addresses::parse(list).map_err(|e| invalid(format!("parameter {name}: {e}")))?;
            // Each address the operator did not configure must pass the
            // class policy on its own.
            for e in addrs.iter().filter(|e| !defaults.vault.addresses.contains(e)) {
                policy.check_endpoint(e, name)?;
            }
            addrs
        }
        None => defaults.vault.addresses.clone(),
    };
    let mut tls = defaults.vault.tls.clone();
    if let Some((name, p)) = params.get(names::CA_CERT_PATH) {
        tls.ca_cert = Some(policy.class_file(p, name)?);
    }
    if let Some((name, p)) = params.get(names::CA_DIRECTORY) {
        tls.ca_directory = Some(policy.class_directory(p, name)?);
    }
    if let Some((_, n)) = params.get(names::TLS_SERVER_NAME) {
        tls.server_name = Some(n.to_string());
    }
    match (
        params.get(names::TLS_CLIENT_CERT_PATH),
        params.get(names::TLS_CLIENT_KEY_PATH),
    ) {
        (Some((cn, c)), Some((kn, k))) => {
            tls.client_cert = Some((policy.class_file(c, cn)?, policy.class_file(k, kn)?))
        }
        (None, None) => {}
        (Some((cn, _)), None) => {
            let kn = names::like(cn, names::TLS_CLIENT_CERT_PATH, names::TLS_CLIENT_KEY_PATH);
            return Err(invalid(format!("{cn} and {kn} must be set together")));
        }
        (None, Some((kn, _))) => {
            let cn = names::like(kn, names::TLS_CLIENT_KEY_PATH, names::TLS_CLIENT_CERT_PATH);
            return Err(invalid(format!("{cn} and {kn} must be set together")));
        }
    }
    if let Some((name, v)) = params.get(names::SKIP_TLS_VERIFY) {
        tls.skip_verify = parse_go_bool(v).map_err(|e| invalid(format!("parameter {name}: {e}")))?;
        if tls.skip_verify && !defaults.vault.tls.skip_verify {
            policy.check_skip_verify(name)?;
        }
    }
    let namespace = match params.get(names::NAMESPACE) {
        Some((name, ns)) => {
            // It travels as the X-Vault-Namespace header.
            if http::HeaderValue::from_str(ns).is_err() {
                return Err(invalid(format!(
                    "parameter {name} {ns:?} is not a valid namespace (it contains control characters)"
                )));
            }
            Some(ns.to_string())
        }
        None => defaults.vault.namespace.clone(),
    };
    if let Some(ns) = &namespace {
        if http::HeaderValue::from_str(ns).is_err() {
            return Err(invalid(format!(
                "the default namespace {ns:?} is not a valid namespace (it contains control characters)"
            )));
        }
    }
    Ok(VaultConfig {
        addresses,
        namespace,
        tls,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawToken {
    token: String,
    expiration_timestamp: Option<String>,
}

fn select_token(json: &str, audience: &str) -> Result<Option<ProvidedToken>> {
    let tokens: HashMap<String, RawToken> = serde_json::from_str(json).map_err(|e| {
        invalid(format!(
            "attribute {} is not a JSON map of audience to token: {}",
            keys::SA_TOKENS,
            plain(e)
        ))
    })?;
    let Some(raw) = tokens.get(audience) else {
        return Ok(None);
    };
    let expires = match raw.expiration_timestamp.as_deref().filter(|s| !s.is_empty()) {
        Some(ts) => Some(humantime::parse_rfc3339_weak(ts).map_err(|e| {
            invalid(format!(
                "token for audience {audience:?} has a bad expirationTimestamp {ts:?}: {e}"
            ))
        })?),
        None => None,
    };
    Ok(Some(ProvidedToken {
        token: raw.token.clone(),
        expires,
    }))
}

/// One problem found in the `objects` YAML, with what is known of where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The entry it concerns (0-based), when it concerns one.
    pub object: Option<usize>,
    /// The line within the `objects` text (1-based), when the YAML parser said.
    pub line: Option<usize>,
    /// What is wrong, naming the object and field.
    pub message: String,
}

/// Parses the `objects` YAML into validated objects, reporting every problem
/// found rather than only the first.
pub fn parse_objects(yaml: &str, default_mode: u32) -> Result<ObjectSet> {
    check_objects(yaml, default_mode).map_err(|problems| {
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        invalid(messages.join("; "))
    })
}

/// [`parse_objects`] with its problems kept apart and located, for the
/// `check` command.
pub fn check_objects(yaml: &str, default_mode: u32) -> std::result::Result<ObjectSet, Vec<Problem>> {
    let raw: Vec<RawObject> = serde_yaml_ng::from_str(yaml).map_err(|e| {
        vec![Problem {
            object: None,
            line: e.location().map(|l| l.line()),
            message: format!("parameter objects is not a YAML list of objects: {}", plain(&e)),
        }]
    })?;
    if raw.is_empty() {
        return Err(vec![Problem {
            object: None,
            line: None,
            message: "parameter objects lists no objects".to_string(),
        }]);
    }
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        match parse_object(i, r, default_mode) {
            Ok(o) => parsed.push(o),
            Err(p) => problems.extend(p.into_iter().map(|message| Problem {
                object: Some(i),
                line: None,
                message,
            })),
        }
    }
    let whole = |message| Problem {
        object: None,
        line: None,
        message,
    };
    problems.extend(check_names(&parsed).into_iter().map(whole));
    problems.extend(check_references(&parsed).into_iter().map(whole));
    let mut set = ObjectSet {
        objects: Vec::new(),
        templates: Vec::new(),
    };
    for p in parsed {
        match p {
            Parsed::Read(o) => set.objects.push(o),
            Parsed::Template(t) => set.templates.push(t),
        }
    }
    if problems.is_empty() && set.templates.is_empty() && !set.objects.iter().any(|o| o.output.writes_files()) {
        problems.push(whole(
            "every object has writeFile: false, so nothing would be mounted".to_string(),
        ));
    }
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(problems)
    }
}

/// Templates may use the responses of objects that read Vault, by name.
/// They never see another template's output, so references cannot form a
/// cycle; what is checked here is that every literal reference names an
/// object with a `secretPath`.
fn check_references(parsed: &[Parsed]) -> Vec<String> {
    let reads: Vec<&str> = parsed
        .iter()
        .filter_map(|p| match p {
            Parsed::Read(o) => Some(o.name.as_str()),
            Parsed::Template(_) => None,
        })
        .collect();
    let mut problems = Vec::new();
    for p in parsed {
        let (name, template) = match p {
            Parsed::Read(ObjectSpec {
                name,
                output: Output::Template(t),
                ..
            }) => (name, t),
            Parsed::Template(t) => (&t.name, &t.template),
            Parsed::Read(_) => continue,
        };
        for r in &template.references {
            if reads.contains(&r.as_str()) {
                continue;
            }
            if parsed.iter().any(|q| q.name() == r) {
                problems.push(format!(
                    "object {name:?}: template: objects[{r:?}] has no secretPath; a template can use only objects that read Vault"
                ));
            } else {
                problems.push(format!(
                    "object {name:?}: template: objects[{r:?}] names no object (objects that read Vault: {})",
                    reads.join(", ")
                ));
            }
        }
    }
    problems
}

/// Reads a YAML boolean; a quoted `"true"` is accepted too.
fn parse_flag(v: &serde_yaml_ng::Value) -> std::result::Result<bool, String> {
    match v {
        serde_yaml_ng::Value::Bool(b) => Ok(*b),
        serde_yaml_ng::Value::String(s) => parse_go_bool(s).map_err(|_| format!("{s:?} is not true or false")),
        _ => Err("must be true or false".to_string()),
    }
}

/// Collects the problems of one `objects` entry, each naming the entry and
/// the field.
struct Problems {
    label: String,
    found: Vec<String>,
}

impl Problems {
    fn new(index: usize, name: Option<&str>) -> Problems {
        let label = match name {
            Some(n) => format!("object {n:?} (#{})", index + 1),
            None => format!("object #{}", index + 1),
        };
        Problems {
            label,
            found: Vec::new(),
        }
    }

    fn add(&mut self, field: &str, msg: impl std::fmt::Display) {
        self.found.push(format!("{}: {field}: {msg}", self.label));
    }

    /// `Some(value)`, or `None` with the problem recorded.
    fn take<T>(&mut self, field: &str, r: std::result::Result<T, String>) -> Option<T> {
        r.map_err(|e| self.add(field, e)).ok()
    }
}

/// A `secretPath` split into API path and query parameters.
type SecretPath = (String, Vec<(String, String)>);

/// The fields of one entry, each parsed on its own; `None` where a problem
/// was recorded.
struct Fields {
    name: Option<String>,
    /// `None`: missing or bad; `Some(None)`: no `secretPath` (a template).
    path: Option<Option<SecretPath>>,
    method: Option<String>,
    body: Option<Option<String>>,
    secret_key: Option<String>,
    pointer: Option<JsonPointer>,
    encoding: Option<Encoding>,
    format: Option<Format>,
    expand: bool,
    write_file: bool,
    template: Option<TemplateSource>,
    mode: Option<u32>,
}

fn parse_object(index: usize, r: RawObject, default_mode: u32) -> std::result::Result<Parsed, Vec<String>> {
    let mut problems = Problems::new(index, r.object_name.as_deref());
    if !r.unknown.is_empty() {
        let names: Vec<&str> = r.unknown.keys().map(String::as_str).collect();
        tracing::warn!(object = %problems.label, fields = ?names, "ignoring unknown fields in objects entry");
    }
    let fields = parse_fields(&r, default_mode, &mut problems);
    check_combinations(&r, &fields, &mut problems);
    if !problems.found.is_empty() {
        return Err(problems.found);
    }
    assemble(fields).ok_or(problems.found)
}

/// Each field on its own, every problem recorded.
fn parse_fields(r: &RawObject, default_mode: u32, problems: &mut Problems) -> Fields {
    let name = match r.object_name.as_deref() {
        None | Some("") => {
            problems.add("objectName", "missing");
            None
        }
        Some(n) => problems.take("objectName", check_object_path(n).map(|()| n.to_string())),
    };
    let path = match r.secret_path.as_deref().map(str::trim) {
        None | Some("") if r.template.is_some() => Some(None),
        None | Some("") => {
            problems.add("secretPath", "missing (or give a template)");
            None
        }
        Some(p) => problems.take("secretPath", parse_secret_path(p)).map(Some),
    };
    let method = match r.method.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        None => Some("GET".to_string()),
        Some(m) => {
            let up = m.to_ascii_uppercase();
            let known = matches!(up.as_str(), "GET" | "PUT" | "POST");
            problems.take(
                "method",
                known
                    .then_some(up)
                    .ok_or_else(|| format!("{m:?} is not supported (use GET, PUT or POST)")),
            )
        }
    };
    let body = problems.take("secretArgs", parse_secret_args(r.secret_args.as_ref()));
    let encoding = problems.take("encoding", parse_encoding(r.encoding.as_deref()));
    let pointer = match r.secret_key_pointer.as_deref() {
        None => None,
        Some(p) => problems.take("secretKeyPointer", JsonPointer::parse(p)),
    };
    let format = match r.format.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        None => None,
        Some(f) => problems.take("format", Format::parse(f)),
    };
    let mut flag = |field: &str, v: Option<&serde_yaml_ng::Value>, default: bool| {
        v.map_or(Some(default), |v| problems.take(field, parse_flag(v)))
            .unwrap_or(default)
    };
    let expand = flag("expandKeys", r.expand_keys.as_ref(), false);
    let write_file = flag("writeFile", r.write_file.as_ref(), true);
    let template = match r.template.as_deref() {
        None => None,
        Some(t) if t.trim().is_empty() => {
            problems.add("template", "is empty");
            None
        }
        Some(t) => {
            let scanned = crate::template::scan_template(name.as_deref().unwrap_or("template"), t);
            problems.take("template", scanned).map(|references| TemplateSource {
                source: t.to_string(),
                references,
            })
        }
    };
    let mode = match r.file_permission.as_ref().map(parse_mode).transpose() {
        Ok(None) | Ok(Some(0)) => Some(default_mode),
        Ok(Some(m)) => Some(m),
        Err(e) => {
            problems.add("filePermission", e);
            None
        }
    };
    Fields {
        name,
        path,
        method,
        body,
        secret_key: r.secret_key.clone().filter(|k| !k.is_empty()),
        pointer,
        encoding,
        format,
        expand,
        write_file,
        template,
        mode,
    }
}

/// `secretArgs`: a map, sent as canonical JSON.
fn parse_secret_args(v: Option<&serde_yaml_ng::Value>) -> std::result::Result<Option<String>, String> {
    match v {
        None | Some(serde_yaml_ng::Value::Null) => Ok(None),
        Some(v @ serde_yaml_ng::Value::Mapping(_)) => match serde_json::to_value(v) {
            Ok(Json::Object(map)) => Ok(Some(Json::Object(map).to_string())),
            Ok(_) | Err(_) => Err("must be a map with string keys".to_string()),
        },
        Some(_) => Err("must be a map of argument names to values".to_string()),
    }
}

fn parse_encoding(v: Option<&str>) -> std::result::Result<Encoding, String> {
    match v.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("utf-8") | Some("utf8") => Ok(Encoding::Utf8),
        Some("base64") => Ok(Encoding::Base64),
        Some("hex") => Ok(Encoding::Hex),
        Some(other) => Err(format!("unknown encoding {other:?} (use utf-8, base64 or hex)")),
    }
}

/// Refuses combinations of fields that mean nothing together.
fn check_combinations(r: &RawObject, f: &Fields, problems: &mut Problems) {
    let has_template = r.template.is_some();
    let has_encoding = r.encoding.as_deref().is_some_and(|e| !e.trim().is_empty());
    let given: Vec<&str> = [
        ("secretKey", f.secret_key.is_some()),
        ("secretKeyPointer", r.secret_key_pointer.is_some()),
        ("format", r.format.is_some()),
        ("expandKeys", f.expand),
        ("encoding", has_encoding),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect();
    if f.secret_key.is_some() && r.secret_key_pointer.is_some() {
        problems.add("secretKeyPointer", "cannot be used together with secretKey; keep one");
    }
    if has_template && !given.is_empty() {
        problems.add(
            "template",
            format!("renders the whole file; remove {}", given.join(", ")),
        );
    }
    if !f.write_file {
        let mut extra = given.clone();
        if has_template {
            extra.push("template");
        }
        if r.file_permission.is_some() {
            extra.push("filePermission");
        }
        if !extra.is_empty() {
            problems.add(
                "writeFile",
                format!(
                    "false makes the object only an input of templates; remove {}",
                    extra.join(", ")
                ),
            );
        }
        if matches!(f.path, Some(None)) && has_template {
            problems.add("writeFile", "false needs a secretPath to read");
        }
    }
    let decoded = matches!(f.encoding, Some(Encoding::Base64 | Encoding::Hex));
    if f.format.is_some() && f.expand {
        problems.add(
            "format",
            "cannot be combined with expandKeys (each expanded key is written as its value)",
        );
    }
    if f.format.is_some() && decoded {
        problems.add("encoding", "cannot be combined with format");
    }
    if f.secret_key.is_none() && f.pointer.is_none() && !f.expand && decoded {
        problems.add(
            "encoding",
            "only applies to a value selected with secretKey (or secretKeyPointer, or expandKeys)",
        );
    }
}

/// Builds the typed object from fields that all parsed.
fn assemble(f: Fields) -> Option<Parsed> {
    let Fields {
        name,
        path,
        method,
        body,
        secret_key,
        pointer,
        encoding,
        format,
        expand,
        write_file,
        template,
        mode,
    } = f;
    let (name, method, encoding, mode, path, body) = (name?, method?, encoding?, mode?, path?, body?);
    let Some((path, query)) = path else {
        // No secretPath: a template over other objects.
        let template = template?;
        let config_digest_input =
            serde_json::json!({"objectName": name, "template": template.source, "mode": mode}).to_string();
        return Some(Parsed::Template(TemplateObject {
            name,
            template,
            mode,
            config_digest_input,
        }));
    };
    let read = ReadKey {
        method,
        path,
        query,
        body,
    };
    let shaping = Shaping {
        secret_key: secret_key.as_deref(),
        pointer: pointer.as_ref(),
        format,
        expand,
        template: template.as_ref(),
        write_file,
    };
    let config_digest_input = config_digest(&name, &read, &shaping, encoding, mode);
    let select = match (secret_key, pointer) {
        (Some(k), _) => Select::Key(k),
        (None, Some(p)) => Select::Pointer(p),
        (None, None) => Select::Data,
    };
    let output = if !write_file {
        Output::Hidden
    } else if let Some(t) = template {
        Output::Template(t)
    } else if expand {
        Output::Expand { select, encoding }
    } else if let Some(format) = format {
        Output::Formatted { select, format }
    } else if select == Select::Data {
        Output::Envelope
    } else {
        Output::Value { select, encoding }
    };
    Some(Parsed::Read(ObjectSpec {
        name,
        read,
        output,
        mode,
        config_digest_input,
    }))
}

/// The object's configuration as it enters its version: exactly the fields
/// every object had before the shaping fields came, so existing objects keep
/// their versions; each shaping field only when written.
/// The shaping fields of an object, as its version sees them.
struct Shaping<'a> {
    secret_key: Option<&'a str>,
    pointer: Option<&'a JsonPointer>,
    format: Option<Format>,
    expand: bool,
    template: Option<&'a TemplateSource>,
    write_file: bool,
}

fn config_digest(name: &str, read: &ReadKey, f: &Shaping<'_>, encoding: Encoding, mode: u32) -> String {
    let mut digest = serde_json::json!({
        "objectName": name,
        "secretPath": read.to_string(),
        "secretArgs": read.body,
        "secretKey": f.secret_key,
        "encoding": format!("{encoding:?}"),
        "mode": mode,
    });
    if let Some(map) = digest.as_object_mut() {
        if let Some(p) = f.pointer {
            map.insert("secretKeyPointer".into(), Json::from(p.as_str()));
        }
        if let Some(format) = f.format {
            map.insert("format".into(), Json::from(format.name()));
        }
        if f.expand {
            map.insert("expandKeys".into(), Json::from(true));
        }
        if let Some(t) = f.template {
            map.insert("template".into(), Json::from(t.source.as_str()));
        }
        if !f.write_file {
            map.insert("writeFile".into(), Json::from(false));
        }
    }
    digest.to_string()
}

/// Parses a YAML `filePermission`. Users write `0600` meaning octal (YAML 1.1);
/// the YAML 1.2 parser hands such a leading-zero scalar over as a string, so
/// strings are read as octal when they start with `0`, like Go's yaml did.
fn parse_mode(v: &serde_yaml_ng::Value) -> std::result::Result<u32, String> {
    let mode = match v {
        serde_yaml_ng::Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("{n} is not a file mode"))?,
        serde_yaml_ng::Value::String(s) => {
            let s = s.trim();
            let parsed = if let Some(o) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
                u32::from_str_radix(o, 8)
            } else if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                u32::from_str_radix(h, 16)
            } else if s.len() > 1 && s.starts_with('0') {
                u32::from_str_radix(&s[1..], 8)
            } else {
                s.parse()
            };
            parsed.map_err(|_| format!("{s:?} is not a file mode such as 0600"))?
        }
        _ => return Err("must be a number such as 0600".to_string()),
    };
    if mode > MAX_MODE {
        return Err(format!("{mode:#o} is larger than 0777"));
    }
    Ok(mode)
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
    if p.starts_with('/') {
        return Err(format!("{p:?} must be a relative path"));
    }
    for (i, element) in p.split('/').enumerate() {
        match element {
            "" => return Err(format!("{p:?} is not a clean path (empty element or trailing slash)")),
            "." => return Err(format!("{p:?} is not a clean path (\".\" element)")),
            ".." => return Err(format!("{p:?} must not contain \"..\"")),
            e if i == 0 && e.starts_with("..") => return Err(format!("{p:?} must not start with \"..\"")),
            e if e.len() > MAX_ELEMENT_LEN => {
                return Err(format!("{p:?} has an element longer than {MAX_ELEMENT_LEN} bytes"))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Duplicate names, and a name that is also another's directory (`a` and
/// `a/b`), would make the driver fail after the secrets were read. Objects
/// with `writeFile: false` write nothing, so only their names must be unique.
fn check_names(parsed: &[Parsed]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    // Written names, and whether each is a directory (expandKeys) or a file.
    let mut written: BTreeMap<&str, bool> = BTreeMap::new();
    for p in parsed {
        *seen.entry(p.name()).or_default() += 1;
        match p {
            Parsed::Read(o) if !o.output.writes_files() => {}
            Parsed::Read(o) => {
                written.insert(&o.name, matches!(o.output, Output::Expand { .. }));
            }
            Parsed::Template(t) => {
                written.insert(&t.name, false);
            }
        }
    }
    for (name, n) in &seen {
        if *n > 1 {
            problems.push(format!(
                "objectName {name:?} is used more than once; each objectName must be unique"
            ));
        }
    }
    for name in written.keys() {
        for (slash, _) in name.match_indices('/') {
            let dir = &name[..slash];
            if written.get(dir) == Some(&false) {
                problems.push(format!(
                    "objectName {dir:?} is a file but {name:?} needs it to be a directory"
                ));
            }
        }
    }
    problems
}

/// Normalises `secretPath`: `/v1/x`, `v1/x`, `/x` and `x` all mean `/v1/x`;
/// a `?query` suffix becomes sorted query parameters.
fn parse_secret_path(p: &str) -> std::result::Result<(String, Vec<(String, String)>), String> {
    let (path, query) = match p.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (p, None),
    };
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("v1/").unwrap_or(path);
    let path = path.trim_start_matches('/');
    if path.is_empty() || path == "v1" {
        return Err(format!("{p:?} names no Vault path"));
    }
    for element in path.split('/') {
        if element == "." || element == ".." {
            return Err(format!("{p:?} must not contain \".\" or \"..\" elements"));
        }
    }
    if path.chars().any(|c| c.is_control() || c == '#') {
        return Err(format!("{p:?} contains a control character or '#'"));
    }
    if p.len() > MAX_SECRET_PATH_LEN {
        // Longer URLs cannot even be sent (and Vault would refuse them).
        return Err(format!("{p:?} is longer than {MAX_SECRET_PATH_LEN} bytes"));
    }
    let mut pairs = Vec::new();
    if let Some(q) = query {
        if !q.is_empty() {
            for part in q.split('&') {
                check_percent_escapes(part).map_err(|e| format!("query {q:?}: {e}"))?;
                let (k, _) = part.split_once('=').unwrap_or((part, ""));
                if k.is_empty() {
                    return Err(format!("query {q:?} has a parameter without a name"));
                }
            }
            pairs = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
            pairs.sort();
        }
    }
    Ok((format!("/v1/{path}"), pairs))
}

fn check_percent_escapes(s: &str) -> std::result::Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(format!("bad percent-escape in {s:?}"));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
