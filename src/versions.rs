//! Object versions: HMAC-SHA256 over an object's configuration and content,
//! keyed by 32 random bytes kept in a Kubernetes Secret.
//!
//! Keyed, because the driver stores versions in a SecretProviderClassPodStatus
//! that more principals can read than the secret itself; shared through the
//! Secret, so every node and every restart computes the same version for the
//! same content. The key is held in memory and re-checked at most once per
//! refresh interval, so deleting the Secret rotates the key without every
//! mount paying for an API call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::hmac;
use ring::rand::SecureRandom as _;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

use crate::kube::{KubeClient, KubeError};

/// Data key of the HMAC Secret.
const KEY_FIELD: &str = "key";
const KEY_LEN: usize = 32;

/// Where the key comes from.
enum Source {
    /// The Kubernetes Secret `namespace/name`.
    Secret {
        kube: Box<KubeClient>,
        namespace: String,
        name: String,
    },
    /// A fixed key (the offline `check`/tests; never used by the server).
    Fixed,
}

struct Loaded {
    key: hmac::Key,
    /// Encryption key for the ledger state file, derived from the shared key
    /// so that nothing on the node's disk can decrypt that file.
    state_key: [u8; 32],
    /// Fingerprint of the raw key, to log rotations without logging the key.
    fingerprint: String,
    checked: Instant,
}

/// Computes object versions with the shared key.
pub struct Versions {
    source: Source,
    refresh: Duration,
    state: Mutex<Option<Arc<Loaded>>>,
    /// The monotonic clock re-checks are timed by (a test moves it on).
    now: Arc<dyn Fn() -> Instant + Send + Sync>,
}

impl Versions {
    /// Versions keyed by the Secret `namespace/name`, created on first use.
    pub fn from_secret(kube: KubeClient, namespace: String, name: String, refresh: Duration) -> Versions {
        Versions {
            source: Source::Secret {
                kube: Box::new(kube),
                namespace,
                name,
            },
            refresh,
            state: Mutex::new(None),
            now: Arc::new(Instant::now),
        }
    }

    /// The same, timed by `now` instead of the system's monotonic clock.
    #[cfg(test)]
    fn with_clock(mut self, now: impl Fn() -> Instant + Send + Sync + 'static) -> Versions {
        self.now = Arc::new(now);
        self
    }

    /// Versions keyed by fixed bytes.
    pub fn fixed(key: &[u8]) -> Versions {
        let loaded = Loaded {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            state_key: derive_state_key(key),
            fingerprint: fingerprint(key),
            checked: Instant::now(),
        };
        Versions {
            source: Source::Fixed,
            refresh: Duration::MAX,
            state: Mutex::new(Some(Arc::new(loaded))),
            now: Arc::new(Instant::now),
        }
    }

    /// Whether a key has been loaded (for readiness).
    pub async fn is_loaded(&self) -> bool {
        self.state.lock().await.is_some()
    }

    /// The current key, loading or re-checking it when due. A failed re-check
    /// keeps the key already held (the API server being briefly down must not
    /// fail mounts); a failed first load fails the mount, since versions
    /// without the key would leak content hashes.
    pub async fn key(&self) -> Result<VersionKey> {
        let mut state = self.state.lock().await;
        if let Some(loaded) = state.as_ref() {
            if (self.now)().saturating_duration_since(loaded.checked) < self.refresh {
                return Ok(VersionKey(loaded.clone()));
            }
        }
        let Source::Secret { kube, namespace, name } = &self.source else {
            return state
                .as_ref()
                .map(|l| VersionKey(l.clone()))
                .ok_or_else(|| Error::Internal("no version key".into()));
        };
        match load_or_create(kube, namespace, name).await {
            Ok(raw) => {
                let fp = fingerprint(&raw);
                if let Some(old) = state.as_ref() {
                    if old.fingerprint != fp {
                        tracing::warn!(secret = %format!("{namespace}/{name}"), "object-version key changed: versions of every object will change once");
                    }
                } else {
                    tracing::info!(secret = %format!("{namespace}/{name}"), fingerprint = %fp, "object-version key loaded");
                }
                let loaded = Arc::new(Loaded {
                    key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
                    state_key: derive_state_key(&raw),
                    fingerprint: fp,
                    checked: (self.now)(),
                });
                *state = Some(loaded.clone());
                Ok(VersionKey(loaded))
            }
            Err(e) => match state.as_ref() {
                Some(old) if !matches!(e, Error::KubeDenied(_)) => {
                    tracing::warn!(error = %e, "cannot re-check the object-version key; keeping the one in memory");
                    // Count the failed attempt as the check: otherwise every
                    // mount (serialised by this lock) would wait for the
                    // unreachable API server until it is back.
                    let kept = Arc::new(Loaded {
                        key: old.key.clone(),
                        state_key: old.state_key,
                        fingerprint: old.fingerprint.clone(),
                        checked: (self.now)(),
                    });
                    *state = Some(kept.clone());
                    Ok(VersionKey(kept))
                }
                _ => Err(e),
            },
        }
    }
}

/// A loaded key, ready to compute versions.
#[derive(Clone)]
pub struct VersionKey(Arc<Loaded>);

impl VersionKey {
    /// The key that encrypts the ledger state file.
    pub fn state_key(&self) -> [u8; 32] {
        self.0.state_key
    }

    /// The version of one object: HMAC over its configuration, a separator,
    /// then its content, as lowercase hex.
    pub fn version(&self, config: &str, content: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0.key);
        ctx.update(&(config.len() as u64).to_be_bytes());
        ctx.update(config.as_bytes());
        ctx.update(content);
        hex::encode(ctx.sign().as_ref())
    }
}

fn derive_state_key(raw: &[u8]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, raw);
    let tag = hmac::sign(&k, b"vault-csi-provider ledger state key v1");
    let mut out = [0u8; 32];
    out.copy_from_slice(&tag.as_ref()[..32]);
    out
}

fn fingerprint(raw: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, raw);
    hex::encode(&d.as_ref()[..6])
}

fn kube_error(e: KubeError, namespace: &str, name: &str, verb: &str) -> Error {
    let what = format!("cannot {verb} the object-version key Secret {namespace}/{name}");
    let error = e.classify(
        &what,
        &format!("The provider's service account needs get on that Secret and create on secrets in {namespace} (see deploy/)"),
    );
    match error {
        // The key Secret is the provider's own: a 404 here is no user's mistake.
        Error::NotFound(m) => Error::BadResponse(m),
        other => other,
    }
}

pub(crate) fn key_from_secret(secret: &Secret, namespace: &str, name: &str) -> Result<Vec<u8>> {
    let raw = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY_FIELD))
        .map(|b| b.0.clone())
        .ok_or_else(|| {
            Error::Internal(format!(
                "Secret {namespace}/{name} has no data.{KEY_FIELD}: delete it to have a new key created"
            ))
        })?;
    if raw.len() < KEY_LEN {
        return Err(Error::Internal(format!(
            "Secret {namespace}/{name}: the key is {} bytes, at least {KEY_LEN} are needed: delete it to have a new key created",
            raw.len()
        )));
    }
    Ok(raw)
}

/// Gets the key Secret, creating it (immutable) when missing. Two providers
/// racing to create it both end up with the winner's key.
async fn load_or_create(kube: &KubeClient, namespace: &str, name: &str) -> Result<Vec<u8>> {
    if let Some(secret) = kube
        .get_secret(namespace, name)
        .await
        .map_err(|e| kube_error(e, namespace, name, "read"))?
    {
        return key_from_secret(&secret, namespace, name);
    }
    let mut raw = [0u8; KEY_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| Error::Internal("no randomness available for the object-version key".into()))?;
    let body = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "vault-csi-provider".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        immutable: Some(true),
        data: Some([(KEY_FIELD.to_string(), ByteString(raw.to_vec()))].into()),
        ..Default::default()
    };
    match kube
        .create_secret(namespace, &body)
        .await
        .map_err(|e| kube_error(e, namespace, name, "create"))?
    {
        Some(created) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "created the object-version key Secret");
            key_from_secret(&created, namespace, name)
        }
        None => {
            let secret = kube
                .get_secret(namespace, name)
                .await
                .map_err(|e| kube_error(e, namespace, name, "read"))?
                .ok_or_else(|| {
                    Error::KubeUnavailable(format!(
                        "Secret {namespace}/{name} was created by another provider but cannot be read back"
                    ))
                })?;
            key_from_secret(&secret, namespace, name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcp_testbed::kube_double::KubeDouble;

    /// A failed re-check keeps the key and waits a full interval before the
    /// next attempt, so an API server that is down or slow costs one request
    /// per interval rather than one per mount.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_recheck_is_not_repeated_by_every_mount() {
        let kube = KubeDouble::start().await.unwrap();
        kube.add_service_account("csi", "provider");
        kube.grant("csi", "provider", "get", "secrets", Some("csi"), None);
        kube.grant("csi", "provider", "create", "secrets", Some("csi"), None);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kubeconfig");
        let token = kube.service_account_token("csi", "provider", &[], Duration::from_secs(3600));
        kube.write_kubeconfig(&config, &token).unwrap();
        let client = KubeClient::load(Some(&config), Duration::from_millis(500))
            .await
            .unwrap();
        let refresh = Duration::from_secs(60);
        let skew = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let clock = skew.clone();
        let versions = Versions::from_secret(client, "csi".into(), "key".into(), refresh)
            .with_clock(move || Instant::now() + Duration::from_secs(clock.load(std::sync::atomic::Ordering::SeqCst)));
        let first = versions.key().await.unwrap().version("c", b"x");

        kube.set_delay(Duration::from_secs(2));
        // A re-check is due.
        skew.fetch_add(refresh.as_secs(), std::sync::atomic::Ordering::SeqCst);
        let started = Instant::now();
        assert_eq!(
            versions.key().await.unwrap().version("c", b"x"),
            first,
            "the held key is kept"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "the re-check was attempted"
        );
        let started = Instant::now();
        for _ in 0..5 {
            assert_eq!(versions.key().await.unwrap().version("c", b"x"), first);
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "mounts after a failed re-check wait for nothing: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn versions_depend_on_key_config_and_content() {
        let a = Versions::fixed(&[1u8; 32]).key().await.unwrap();
        let b = Versions::fixed(&[2u8; 32]).key().await.unwrap();
        let v = a.version("cfg", b"content");
        assert_eq!(v, a.version("cfg", b"content"));
        assert_eq!(v.len(), 64);
        assert_ne!(v, a.version("cfg", b"other"));
        assert_ne!(v, a.version("cfg2", b"content"));
        assert_ne!(v, b.version("cfg", b"content"));
        // The length prefix keeps config and content apart.
        assert_ne!(a.version("ab", b"c"), a.version("a", b"bc"));
        // Not a plain hash of the content.
        let plain = hex::encode(ring::digest::digest(&ring::digest::SHA256, b"content").as_ref());
        assert_ne!(v, plain);
    }
}
