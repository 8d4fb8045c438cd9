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

use crate::error::{Error, ErrorKind, Result};
use crate::flavor::Flavor;
use crate::policy::ClassPolicy;
use crate::vault::failover::Addresses;
use crate::vault::{ReadKey, VaultConfig};

mod attributes;
mod objects;
mod problems;
mod sync;

use attributes::*;
pub use objects::{check_objects, parse_objects, ObjectSet, Problem, MAX_OBJECTS, MAX_REFERENCES, MAX_TEMPLATES};
pub use problems::{Collector, Quoted, Text};
pub use sync::{check_secret_key, parse_sync, SECRET_TYPES};

/// The types a parsed request is made of, defined in [`crate::model`] and
/// re-exported here for the callers that parse requests.
pub use crate::model::{
    check_object_path, names, Encoding, Format, JsonPointer, MountSpec, ObjectSpec, Output, Pod, ProvidedToken, Select,
    SyncSecret, TemplateObject, TemplateSource,
};

/// Attribute keys kubelet and the driver add to every request.
pub use vcp_proto::keys;

/// The largest file mode we accept: permission bits only.
const MAX_MODE: u32 = 0o777;
/// Longest `secretPath` (with its query) we send to Vault.
const MAX_SECRET_PATH_LEN: usize = 8192;
/// Audience of the kubelet token used when a class on a vault socket names
/// none (openbao sockets: [`Flavor::default_audience`]).
pub const DEFAULT_AUDIENCE: &str = "vault";

/// The Vault address a socket gives when neither a flag nor the
/// environment names one.
pub const DEFAULT_ADDR: &str = "https://127.0.0.1:8200";
/// The auth mount a socket gives when no flag names one.
pub const DEFAULT_AUTH_MOUNT: &str = "kubernetes";

/// Provider-wide defaults (flags and environment) that SPC parameters
/// override, and the operator's limits on what they may override them with.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Vault address, namespace and TLS settings.
    pub vault: VaultConfig,
    /// Auth mount path.
    pub auth_mount: String,
    /// What a SecretProviderClass may ask for.
    pub policy: ClassPolicy,
    /// Which provider the socket stands in for: the default audience, and
    /// the product named in messages.
    pub flavor: Flavor,
}

impl Defaults {
    /// What a socket of `flavor` gives with no flags and no environment:
    /// [`DEFAULT_ADDR`], [`DEFAULT_AUTH_MOUNT`], no Vault namespace, the
    /// system's TLS roots and an open policy. `check` assumes these, and
    /// tests and fuzz targets parse against them.
    pub fn builtin(flavor: Flavor) -> Defaults {
        Defaults {
            vault: VaultConfig {
                addresses: crate::endpoint::Endpoint::Tcp {
                    tls: true,
                    host: "127.0.0.1".to_string(),
                    port: 8200,
                    prefix: String::new(),
                }
                .into(),
                namespace: None,
                tls: crate::vault::TlsConfig::default(),
            },
            auth_mount: DEFAULT_AUTH_MOUNT.to_string(),
            policy: ClassPolicy::default(),
            flavor,
        }
    }
}

/// Parses a boolean the way Go's `strconv.ParseBool` does, since users carry
/// values such as `1`, `t` or `TRUE` over from the incumbent.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (use true or false)")),
    }
}

/// Parsed `objects` of the classes mounted lately, per namespace, by their
/// default mode and YAML: every pod of a class sends the same YAML on every
/// republish (each pod every two minutes, by default), and parsing it was
/// most of what parsing a Mount request cost. Only documents that parsed are
/// kept, none longer than [`ClassCache::MAX_DOCUMENT`] bytes; each namespace
/// keeps at most [`ClassCache::NAMESPACE_BUDGET`] bytes of YAML (forgetting
/// its own when a new one would not fit), and at most
/// [`ClassCache::NAMESPACES`] namespaces are kept (the one unused longest
/// goes first). The YAML is a tenant's: what it may make the provider hold
/// is bounded by the operator's build, and one namespace's churn never
/// evicts another's classes.
#[derive(Default)]
pub struct ClassCache {
    kept: std::sync::Mutex<KeptNamespaces>,
}

#[derive(Default)]
struct KeptNamespaces {
    /// Per namespace: its classes, and when it last used the cache.
    by_namespace: HashMap<String, (KeptClasses, u64)>,
    /// A counter standing for time, for "unused longest".
    clock: u64,
}

#[derive(Default)]
struct KeptClasses {
    /// Per default mode, per YAML document.
    by_mode: HashMap<u32, HashMap<String, ObjectSet>>,
    /// YAML bytes held in `by_mode`.
    bytes: usize,
}

impl ClassCache {
    /// The longest `objects` document kept (longer ones are parsed each time).
    pub const MAX_DOCUMENT: usize = 64 * 1024;
    /// YAML bytes one namespace's classes keep.
    pub const NAMESPACE_BUDGET: usize = 256 * 1024;
    /// Namespaces whose classes are kept.
    pub const NAMESPACES: usize = 64;

    /// [`parse_objects`] of a class of `namespace`, remembered.
    fn objects(&self, namespace: &str, yaml: &str, default_mode: u32) -> Result<ObjectSet> {
        {
            let mut kept = self.lock();
            kept.clock += 1;
            let now = kept.clock;
            if let Some((classes, used)) = kept.by_namespace.get_mut(namespace) {
                *used = now;
                if let Some(set) = classes.by_mode.get(&default_mode).and_then(|m| m.get(yaml)) {
                    return Ok(set.clone());
                }
            }
        }
        let set = parse_objects(yaml, default_mode)?;
        if yaml.len() <= Self::MAX_DOCUMENT {
            let mut kept = self.lock();
            if !kept.by_namespace.contains_key(namespace) && kept.by_namespace.len() >= Self::NAMESPACES {
                let oldest = kept
                    .by_namespace
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(ns, _)| ns.clone());
                if let Some(oldest) = oldest {
                    kept.by_namespace.remove(&oldest);
                }
            }
            let now = kept.clock;
            let (classes, _) = kept
                .by_namespace
                .entry(namespace.to_string())
                .or_insert_with(|| (KeptClasses::default(), now));
            if classes.bytes + yaml.len() > Self::NAMESPACE_BUDGET {
                *classes = KeptClasses::default();
            }
            let documents = classes.by_mode.entry(default_mode).or_default();
            if documents.insert(yaml.to_string(), set.clone()).is_none() {
                classes.bytes += yaml.len();
            }
        }
        Ok(set)
    }

    /// Whether `namespace` has `yaml` kept (for tests).
    #[cfg(test)]
    fn holds(&self, namespace: &str, yaml: &str) -> bool {
        self.lock()
            .by_namespace
            .get(namespace)
            .is_some_and(|(c, _)| c.by_mode.values().any(|m| m.contains_key(yaml)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeptNamespaces> {
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Parses and validates everything a Mount request carries.
pub fn parse_mount(attributes: &str, secrets: &str, permission: &str, defaults: &Defaults) -> Result<MountSpec> {
    parse_mount_with(attributes, secrets, permission, defaults, None)
}

/// [`parse_mount`], taking the parsed `objects` of a class mounted before
/// from `classes`.
pub fn parse_mount_cached(
    attributes: &str,
    secrets: &str,
    permission: &str,
    defaults: &Defaults,
    classes: &ClassCache,
) -> Result<MountSpec> {
    parse_mount_with(attributes, secrets, permission, defaults, Some(classes))
}

fn parse_mount_with(
    attributes: &str,
    secrets: &str,
    permission: &str,
    defaults: &Defaults,
    classes: Option<&ClassCache>,
) -> Result<MountSpec> {
    let attrs: HashMap<String, String> = serde_json::from_str(attributes)
        .map_err(|e| invalid(format!("attributes are not a JSON object of strings: {e}")))?;
    let secrets = parse_secrets(secrets)?;
    let default_mode = parse_permission(permission)?;

    let params = Params { attrs: &attrs };
    let pod = parse_pod(&params)?;
    let role = parse_role(&params, defaults.flavor.product())?;
    let auth_mount = parse_auth_mount_param(&params, defaults)?;
    let vault = parse_vault_config(&params, defaults)?;
    let audience = defaults.policy.audience(params.plain("audience"), "audience")?;
    let provided_token = pod_token(&secrets, &attrs, defaults, audience.as_deref())?;
    let (ObjectSet { objects, templates }, sync) = parse_class_objects(&params, &pod.namespace, default_mode, classes)?;

    Ok(MountSpec {
        pod,
        spc_name: params.plain(keys::SPC_NAME).map(str::to_string),
        role,
        auth_mount,
        audience,
        flavor: defaults.flavor,
        operator_vault: vault.addresses.iter().all(|e| defaults.vault.addresses.contains(e)),
        vault,
        provided_token,
        objects,
        sync,
        templates,
    })
}

/// The pod the mount is for, from the attributes the driver adds when the
/// CSIDriver object asks for pod info (the namespace and service account
/// are needed to log in).
fn parse_pod(params: &Params<'_>) -> Result<Pod> {
    let required = |key: &str| {
        params.plain(key).map(str::to_string).ok_or_else(|| {
            invalid(format!(
                "attribute {key} is missing: set podInfoOnMount: true on the CSIDriver object"
            ))
        })
    };
    Ok(Pod {
        name: params.plain(keys::POD_NAME).unwrap_or_default().to_string(),
        namespace: required(keys::POD_NAMESPACE)?,
        uid: params.plain(keys::POD_UID).unwrap_or_default().to_string(),
        service_account: required(keys::SERVICE_ACCOUNT)?,
    })
}

/// The role to log in with, which the class must name; an empty one says
/// which lower-precedence alias it hid.
fn parse_role(params: &Params<'_>, product: &str) -> Result<String> {
    match params.lookup(names::ROLE) {
        Some((_, Some(role))) => Ok(role.to_string()),
        Some((name, None)) => {
            let hint = params
                .hidden(names::ROLE, name)
                .map(|h| format!(" (it is set, so {h} is not read)"))
                .unwrap_or_default();
            Err(invalid(format!(
                "parameter {name} is missing: it is empty{hint}; name the {product} role to log in with"
            )))
        }
        None => Err(invalid(format!(
            "parameter roleName is missing: name the {product} role to log in with"
        ))),
    }
}

/// The auth mount path: the class's (under either of its alias names, not
/// both) or the provider's default, checked, and named in the message when
/// the class set it.
fn parse_auth_mount_param(params: &Params<'_>, defaults: &Defaults) -> Result<String> {
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
    check_auth_mount(auth_mount.trim_matches('/')).map_err(|e| match mount_param {
        Some(n) => invalid(format!("parameter {n}: {}", strip_invalid(e))),
        None => e,
    })
}

/// The pod's token for `audience` (the flavor's default when `None`), if
/// the request carries one.
///
/// The pod's tokens are kubelet's attributes (it overwrites any class
/// parameter of that name). Kubernetes 1.35+ can hand them over in
/// `secrets` instead (serviceAccountTokenInSecrets), but `secrets` is
/// also the pod's nodePublishSecretRef, whose values the pod's author
/// writes: read only when the operator says the CSIDriver does that, and
/// then first (kubelet leaves the attribute unset, so a class parameter
/// could fill it).
fn pod_token(
    secrets: &HashMap<String, String>,
    attrs: &HashMap<String, String>,
    defaults: &Defaults,
    audience: Option<&str>,
) -> Result<Option<ProvidedToken>> {
    let from_secrets = secrets.get(keys::SA_TOKENS).filter(|s| !s.trim().is_empty());
    let from_attributes = attrs.get(keys::SA_TOKENS).filter(|s| !s.trim().is_empty());
    let token_json = if defaults.policy.tokens_in_secrets {
        from_secrets.or(from_attributes)
    } else {
        if from_secrets.is_some() {
            tokens_in_secrets_ignored();
        }
        from_attributes
    };
    match token_json {
        Some(json) => select_token(json, audience.unwrap_or(defaults.flavor.default_audience())),
        None => Ok(None),
    }
}

/// The class's `objects` (from `classes` when it holds them for
/// `namespace`) and the `syncSecrets` that draw on them.
fn parse_class_objects(
    params: &Params<'_>,
    namespace: &str,
    default_mode: u32,
    classes: Option<&ClassCache>,
) -> Result<(ObjectSet, Vec<SyncSecret>)> {
    let objects_yaml = params
        .plain("objects")
        .ok_or_else(|| invalid("parameter objects is missing: list the secrets to mount".to_string()))?;
    let set = match classes {
        Some(classes) => classes.objects(namespace, objects_yaml, default_mode)?,
        None => parse_objects(objects_yaml, default_mode)?,
    };
    let sync = match params.plain("syncSecrets") {
        Some(yaml) => parse_sync(yaml, &set.objects, &set.templates)?,
        None => Vec::new(),
    };
    Ok((set, sync))
}

/// Says once per process that tokens arrived in `secrets` and were not
/// read (a tenant can send them on every mount: not a line each time).
fn tokens_in_secrets_ignored() {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "a Mount's secrets carry {}: ignored, since -service-account-token-in-secrets is off; set it if the CSIDriver object has serviceAccountTokenInSecrets: true",
            keys::SA_TOKENS
        );
    }
}

#[cfg(test)]
mod tests;
