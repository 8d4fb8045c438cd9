//! Provider-side sync of mounted objects into Kubernetes Secrets
//! (`syncSecrets`), for workloads that can only read a Secret.
//!
//! Unlike the driver's own `secretObjects` sync, it writes only into the
//! mounting pod's namespace, only Secrets it manages (a Secret of that name
//! created by anyone else is never touched), only when the content changed
//! (compared by a keyed HMAC kept in an annotation, never plaintext), and
//! with owner references to the pod's controller so garbage collection
//! removes it with its workloads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use serde_json::{json, Value as Json};

use crate::bounded::BoundedMap;
use crate::error::{Error, ErrorKind, Result};
use crate::kubernetes::client::{KubeClient, KubeError};
use crate::model::{MountSpec, Pod, SyncSecret};
use crate::render::OutFile;
use crate::versions::VersionKey;

/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "vault-csi-provider";
/// Label marking the Secrets this provider manages.
pub const MANAGED_LABEL: &str = "vault-csi-provider.io/managed";
/// Annotation holding the keyed HMAC of the applied content.
pub const HMAC_ANNOTATION: &str = "vault-csi-provider.io/content-hmac";
/// Annotation naming the SecretProviderClass a Secret is synced from: another
/// class may not rewrite it.
pub const CLASS_ANNOTATION: &str = "vault-csi-provider.io/secret-provider-class";
/// A Secret may not exceed 1 MiB; leave room for metadata.
const MAX_DATA_BYTES: usize = 1024 * 1024 - 16 * 1024;
/// How long an applied HMAC is trusted without looking at the Secret again
/// (a Secret deleted by hand is recreated at most this late).
const VERIFY_AFTER: Duration = Duration::from_secs(60);

/// Most synced Secrets whose applied content is remembered (see
/// [`BoundedMap`]): a forgotten one is read back from the API once.
const MAX_APPLIED_REMEMBERED: usize = 10_000;

/// Writes `syncSecrets`.
pub struct Syncer {
    kube: Option<KubeClient>,
    /// (namespace, name) → (content HMAC, owning class, when applied).
    applied: Mutex<BoundedMap<(String, String), Applied>>,
}

struct Applied {
    hmac: String,
    class: Option<String>,
    at: Instant,
}

impl Syncer {
    /// A syncer; without a Kubernetes client any `syncSecrets` fails clearly.
    pub fn new(kube: Option<KubeClient>) -> Syncer {
        Syncer {
            kube,
            applied: Mutex::new(BoundedMap::new(MAX_APPLIED_REMEMBERED)),
        }
    }

    /// Whether this content was applied lately for this class (a request
    /// that names no class, a v1.5 rotation call, matches any).
    fn remembered(&self, ns: &str, name: &str, hmac: &str, class: Option<&str>) -> bool {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.get(&(ns.to_string(), name.to_string())).is_some_and(|a| {
            a.hmac == hmac && a.at.elapsed() < VERIFY_AFTER && (class.is_none() || a.class.as_deref() == class)
        })
    }

    fn remember(&self, ns: &str, name: &str, hmac: String, class: Option<String>) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.insert(
            (ns.to_string(), name.to_string()),
            Applied {
                hmac,
                class,
                at: Instant::now(),
            },
        );
    }

    /// Writes every Secret of `spec.sync` whose content changed.
    pub async fn sync(&self, spec: &MountSpec, files: &[OutFile], key: &VersionKey) -> Result<()> {
        if spec.sync.is_empty() {
            return Ok(());
        }
        let Some(kube) = &self.kube else {
            return Err(Error::new(
                ErrorKind::Internal,
                "syncSecrets needs access to the Kubernetes API",
            ));
        };
        let contents: HashMap<&str, &[u8]> = files.iter().map(|f| (f.path.as_str(), f.contents.as_slice())).collect();
        let mut owners: Option<Vec<OwnerReference>> = None;
        for secret in &spec.sync {
            let data = build_data(secret, &contents)?;
            validate(secret, &data)?;
            let ns = spec.pod.namespace.as_str();
            let hmac = content_hmac(secret, &data, key);
            let class = spec.spc_name.as_deref();
            if self.remembered(ns, &secret.name, &hmac, class) {
                continue;
            }
            let what = format!("Secret {ns}/{}", secret.name);
            let existing = kube
                .get_secret(ns, &secret.name)
                .await
                .map_err(|e| kube_error(e, &what, ns))?;
            let (owner_class, mut refs) = match judge_existing(existing.as_ref(), &what, class, &hmac)? {
                Found::UpToDate { owner_class } => {
                    self.remember(ns, &secret.name, hmac, owner_class);
                    continue;
                }
                Found::Write { owner_class, refs } => (owner_class, refs),
            };
            if !secret.keep {
                if owners.is_none() {
                    owners = Some(owner_of(kube, &spec.pod).await?);
                }
                for o in owners.iter().flatten() {
                    if !refs.iter().any(|r| r.uid == o.uid) {
                        refs.push(o.clone());
                    }
                }
            }
            let body = apply_body(secret, ns, &data, &hmac, owner_class.as_deref(), &refs);
            kube.apply_secret(ns, &secret.name, FIELD_MANAGER, &body)
                .await
                .map_err(|e| kube_error(e, &what, ns))?;
            tracing::info!(secret = %what, keys = data.len(), "synced Secret");
            self.remember(ns, &secret.name, hmac, owner_class);
        }
        Ok(())
    }
}

/// The keyed HMAC of what a synced Secret would hold: its settings, keys
/// and values, each length-prefixed so that no two contents collide.
fn content_hmac(secret: &SyncSecret, data: &BTreeMap<String, &[u8]>, key: &VersionKey) -> String {
    let config = json!({
        "type": secret.secret_type, "labels": secret.labels, "annotations": secret.annotations, "keep": secret.keep,
        "keys": data.keys().collect::<Vec<_>>(),
    })
    .to_string();
    let mut all = Vec::new();
    for (k, v) in data {
        all.extend_from_slice(&(k.len() as u64).to_be_bytes());
        all.extend_from_slice(k.as_bytes());
        all.extend_from_slice(&(v.len() as u64).to_be_bytes());
        all.extend_from_slice(v);
    }
    key.version(&config, &all)
}

/// What the Secret already in the API means for writing ours.
enum Found {
    /// It holds this content already, for this class.
    UpToDate { owner_class: Option<String> },
    /// Write it (or create it), owned by this class, keeping these owners.
    Write {
        owner_class: Option<String>,
        refs: Vec<OwnerReference>,
    },
}

/// Judges the Secret found under a synced name: one this provider does
/// not manage, or that another class syncs, is refused; the class recorded
/// on it is kept when this request names none (v1.5 rotation calls do not
/// say which class they are for).
fn judge_existing(existing: Option<&Secret>, what: &str, class: Option<&str>, hmac: &str) -> Result<Found> {
    let mut owner_class = class.map(str::to_string);
    let Some(existing) = existing else {
        return Ok(Found::Write {
            owner_class,
            refs: Vec::new(),
        });
    };
    let meta = &existing.metadata;
    let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k)).map(String::as_str);
    let annotation = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k)).map(String::as_str);
    if label(MANAGED_LABEL) != Some("true") {
        return Err(Error::new(ErrorKind::SyncRefused, format!(
            "{what} already exists and is not managed by vault-csi-provider: refusing to touch it (delete it or choose another secretName)"
        )));
    }
    let recorded = annotation(CLASS_ANNOTATION);
    match (recorded, class) {
        (Some(theirs), Some(ours)) if theirs != ours => {
            return Err(Error::new(ErrorKind::SyncRefused, format!(
                "{what} is synced from SecretProviderClass {theirs:?}, not {ours:?}: refusing to let another class rewrite it (choose another secretName)"
            )));
        }
        (Some(theirs), None) => owner_class = Some(theirs.to_string()),
        _ => {}
    }
    if annotation(HMAC_ANNOTATION) == Some(hmac) && (recorded.is_some() || class.is_none()) {
        return Ok(Found::UpToDate { owner_class });
    }
    Ok(Found::Write {
        owner_class,
        refs: meta.owner_references.iter().flatten().cloned().collect(),
    })
}

fn build_data<'a>(secret: &SyncSecret, contents: &HashMap<&str, &'a [u8]>) -> Result<BTreeMap<String, &'a [u8]>> {
    let mut data = BTreeMap::new();
    for (key, object) in &secret.data {
        let bytes = contents.get(object.as_str()).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "syncSecrets Secret {:?}: key {key:?}: object {object:?} produced no file",
                    secret.name
                ),
            )
        })?;
        data.insert(key.clone(), *bytes);
    }
    Ok(data)
}

/// Checks content against the Secret type, naming the Secret and key.
fn validate(secret: &SyncSecret, data: &BTreeMap<String, &[u8]>) -> Result<()> {
    let bad = |key: &str, why: &dyn std::fmt::Display| {
        Error::new(
            ErrorKind::InvalidRequest,
            format!("syncSecrets Secret {:?}: key {key:?}: {why}", secret.name),
        )
    };
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_DATA_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidRequest,
            format!(
                "syncSecrets Secret {:?}: {size} bytes of data, more than a Secret can hold (1 MiB)",
                secret.name
            ),
        ));
    }
    match secret.secret_type.as_str() {
        "kubernetes.io/tls" => {
            let cert = data.get("tls.crt").copied().unwrap_or_default();
            let key = data.get("tls.key").copied().unwrap_or_default();
            let chain = crate::pem::parse_pem_certs(cert, "tls.crt").map_err(|e| bad("tls.crt", &e))?;
            let private = crate::pem::parse_pem_key(key, "tls.key").map_err(|e| bad("tls.key", &e))?;
            let provider = rustls::crypto::ring::default_provider();
            let signing = provider
                .key_provider
                .load_private_key(private)
                .map_err(|e| bad("tls.key", &format!("unusable private key: {e}")))?;
            rustls::sign::CertifiedKey::new(chain, signing)
                .keys_match()
                .map_err(|_| bad("tls.key", &"does not match the certificate in tls.crt"))?;
        }
        "kubernetes.io/dockerconfigjson" | "kubernetes.io/dockercfg" => {
            let key = if secret.secret_type.ends_with("json") {
                ".dockerconfigjson"
            } else {
                ".dockercfg"
            };
            let raw = data.get(key).copied().unwrap_or_default();
            let parsed: Json = serde_json::from_slice(raw).map_err(|e| bad(key, &format!("is not valid JSON: {e}")))?;
            let ok = if key == ".dockerconfigjson" {
                parsed.get("auths").is_some_and(Json::is_object)
            } else {
                parsed.is_object()
            };
            if !ok {
                return Err(bad(key, &"is not a Docker config (expected an object with \"auths\")"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The pod's controller (ReplicaSet, StatefulSet, DaemonSet, Job, ...) as
/// owner, or the pod itself when it has none.
async fn owner_of(kube: &KubeClient, pod: &Pod) -> Result<Vec<OwnerReference>> {
    let what = format!("pod {}/{}", pod.namespace, pod.name);
    let found = kube
        .get_pod(&pod.namespace, &pod.name)
        .await
        .map_err(|e| kube_error(e, &what, &pod.namespace))?;
    let Some(found) = found else {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("{what} not found: cannot set the owner of its synced Secrets"),
        ));
    };
    let controller = found
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    // Only the reference itself: not "controller", not "blockOwnerDeletion"
    // (which needs delete rights on the owner).
    let owner = match controller {
        Some(c) => OwnerReference {
            api_version: c.api_version.clone(),
            kind: c.kind.clone(),
            name: c.name.clone(),
            uid: c.uid.clone(),
            ..Default::default()
        },
        None => OwnerReference {
            api_version: "v1".to_string(),
            kind: "Pod".to_string(),
            name: pod.name.clone(),
            uid: found.metadata.uid.clone().unwrap_or_else(|| pod.uid.clone()),
            ..Default::default()
        },
    };
    Ok(vec![owner])
}

fn apply_body(
    secret: &SyncSecret,
    ns: &str,
    data: &BTreeMap<String, &[u8]>,
    hmac: &str,
    class: Option<&str>,
    owners: &[OwnerReference],
) -> Secret {
    let mut labels = secret.labels.clone();
    labels.insert(MANAGED_LABEL.to_string(), "true".to_string());
    let mut annotations = secret.annotations.clone();
    annotations.insert(HMAC_ANNOTATION.to_string(), hmac.to_string());
    if let Some(class) = class {
        annotations.insert(CLASS_ANNOTATION.to_string(), class.to_string());
    }
    let encoded: BTreeMap<String, ByteString> = data.iter().map(|(k, v)| (k.clone(), ByteString(v.to_vec()))).collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(secret.name.clone()),
            namespace: Some(ns.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: (!owners.is_empty()).then(|| owners.to_vec()),
            ..Default::default()
        },
        type_: Some(secret.secret_type.clone()),
        data: Some(encoded),
        ..Default::default()
    }
}

fn kube_error(e: KubeError, what: &str, ns: &str) -> Error {
    if e.code() == Some(409) {
        return Error::because(ErrorKind::SyncRefused, format!("syncing {what}"), e)
            .hint("Another field manager owns fields of this Secret; it is not changed");
    }
    e.classify(
        &format!("syncing {what}"),
        &format!("The provider may not write Secrets in namespace {ns}: bind the ClusterRole vault-csi-provider-secret-sync to the provider's service account with a RoleBinding in {ns} (see deploy/components/secret-sync)"),
    )
}
