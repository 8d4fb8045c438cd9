//! Object versions: HMAC-SHA256 over an object's configuration and content,
//! keyed by 32 random bytes kept in a Kubernetes Secret.
//!
//! Keyed, because the driver stores versions in a SecretProviderClassPodStatus
//! that more principals can read than the secret itself; shared through the
//! Secret, so every node and every restart computes the same version for the
//! same content.
//!
//! The key is held in memory, so a mount pays no API call for it, and
//! [`Versions::watch`] keeps it in step with the Secret: it watches that one
//! Secret by name (a `metadata.name` field selector, which RBAC can grant
//! list and watch for by `resourceNames`), creates a new key the moment the
//! Secret is deleted (deleting it is how an operator rotates the key: every
//! object's version changes at the next mount) and takes up a key someone
//! else put there. While the watch is in step, [`Versions::key`] asks the API
//! server nothing. While it is not — before its first list, after a failed
//! watch until it delivers again, and for good when RBAC refuses it (a Role
//! from before the watch, with only get and create) — `key` re-reads the
//! Secret at most once per refresh interval, as it always did; a deleted
//! Secret then comes back within that interval instead of at once.
//!
//! A failing API server never fails a mount that has a key: the held key is
//! kept until the Secret can be read (or recreated) again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::kube::runtime::watcher::{self, Event};
use ::kube::runtime::WatchStreamExt as _;
use futures_util::StreamExt as _;
use ring::hmac;
use ring::rand::SecureRandom as _;
use tokio::sync::Mutex;

use crate::error::{Error, ErrorKind, Result};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

use crate::kubernetes::client::{watch_refused, KubeClient, KubeError};

/// Data key of the HMAC Secret.
const KEY_FIELD: &str = "key";
const KEY_LEN: usize = 32;
/// The label the provider puts on the key Secret it creates; a Secret
/// without it is not taken up.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "vault-csi-provider");

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
    /// How often `key` re-reads the Secret while the watch is not in step.
    refresh: Duration,
    state: Mutex<Option<Arc<Loaded>>>,
    /// Whether [`Versions::watch`] holds the key in step with the Secret;
    /// `key` then makes no API call. Changed only under the `state` lock.
    in_step: AtomicBool,
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
            in_step: AtomicBool::new(false),
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
            in_step: AtomicBool::new(false),
            now: Arc::new(Instant::now),
        }
    }

    /// Whether a key has been loaded (for readiness).
    pub async fn is_loaded(&self) -> bool {
        self.state.lock().await.is_some()
    }

    /// The current key. While the watch is in step that is the key held,
    /// with no API call; otherwise it is loaded, or re-checked when the last
    /// check is a refresh interval old. A failed re-check keeps the key
    /// already held (the API server being briefly down must not fail
    /// mounts); a failed first load fails the mount, since versions without
    /// the key would leak content hashes.
    pub async fn key(&self) -> Result<VersionKey> {
        let mut state = self.state.lock().await;
        if let Some(loaded) = state.as_ref() {
            if self.in_step.load(Ordering::Acquire)
                || (self.now)().saturating_duration_since(loaded.checked) < self.refresh
            {
                return Ok(VersionKey(loaded.clone()));
            }
        }
        let Source::Secret { kube, namespace, name } = &self.source else {
            return state
                .as_ref()
                .map(|l| VersionKey(l.clone()))
                .ok_or_else(|| Error::new(ErrorKind::Internal, "no version key"));
        };
        match load_or_create(kube, namespace, name).await {
            Ok(raw) => Ok(self.hold(&mut state, &raw)),
            Err(e) => match state.as_ref() {
                Some(old) if e.kind() != ErrorKind::KubeDenied => {
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

    /// Makes `raw` the held key, logging a first load or a change by
    /// fingerprint (never the key).
    fn hold(&self, state: &mut Option<Arc<Loaded>>, raw: &[u8]) -> VersionKey {
        let fp = fingerprint(raw);
        let secret = self.secret_name();
        match state.as_ref() {
            Some(old) if old.fingerprint != fp => tracing::warn!(
                %secret, fingerprint = %fp, previous = %old.fingerprint,
                "object-version key changed: versions of every object will change once"
            ),
            Some(_) => {}
            None => tracing::info!(%secret, fingerprint = %fp, "object-version key loaded"),
        }
        let loaded = Arc::new(Loaded {
            key: hmac::Key::new(hmac::HMAC_SHA256, raw),
            state_key: derive_state_key(raw),
            fingerprint: fp,
            checked: (self.now)(),
        });
        *state = Some(loaded.clone());
        VersionKey(loaded)
    }

    /// `namespace/name` of the key Secret, for messages.
    fn secret_name(&self) -> String {
        match &self.source {
            Source::Secret { namespace, name, .. } => format!("{namespace}/{name}"),
            Source::Fixed => "(fixed key)".to_string(),
        }
    }

    /// Keeps the held key in step with the key Secret, until dropped: a
    /// kube-runtime watcher on that one Secret (listing again by itself, with
    /// backoff, when the watch breaks). The Secret deleted, or missing from a
    /// list, is recreated at once; a Secret with another key has its key
    /// taken up. Ends at once for a fixed key, and when RBAC refuses the
    /// list or watch (saying so once): `key` then re-checks on its own.
    pub async fn watch(self: Arc<Versions>) {
        let Source::Secret { kube, namespace, name } = &self.source else {
            return;
        };
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let events = watcher::watcher(kube.secrets(namespace), config).default_backoff();
        tokio::pin!(events);
        // Whether the list in progress holds the Secret.
        let mut listed = false;
        loop {
            match events.next().await {
                None => break,
                Some(Ok(Event::Init)) => listed = false,
                Some(Ok(Event::InitApply(secret))) => {
                    listed = true;
                    self.take_up(&secret).await;
                }
                Some(Ok(Event::InitDone)) => {
                    if !listed {
                        self.recreate("missing").await;
                    }
                }
                Some(Ok(Event::Apply(secret))) => self.take_up(&secret).await,
                Some(Ok(Event::Delete(_))) => self.recreate("deleted").await,
                Some(Err(e)) if watch_refused(&e) => {
                    tracing::warn!(
                        secret = %self.secret_name(), error = %e,
                        "cannot watch the object-version key Secret: a deleted key Secret is recreated, and a changed key taken up, only when the key is re-checked, every {:?} (grant list and watch on that Secret by resourceNames, as deploy/base/rbac.yaml does)",
                        self.refresh
                    );
                    break;
                }
                Some(Err(e)) => {
                    // The watcher backs off and lists or watches again by
                    // itself; meanwhile `key` re-checks on its own.
                    let was_in_step = self.leave_step().await;
                    if was_in_step {
                        tracing::warn!(secret = %self.secret_name(), error = %e, "watching the object-version key Secret failed; re-checking it every {:?} until the watch is back", self.refresh);
                    } else {
                        tracing::debug!(secret = %self.secret_name(), error = %e, "watching the object-version key Secret failed again");
                    }
                }
            }
        }
        self.leave_step().await;
    }

    /// Takes up the key of the Secret as the watch saw it; a Secret without
    /// a usable key leaves the held key in place and `key` re-checking.
    async fn take_up(&self, secret: &Secret) {
        let Source::Secret { namespace, name, .. } = &self.source else {
            return;
        };
        let mut state = self.state.lock().await;
        match key_from_secret(secret, namespace, name) {
            Ok(raw) => {
                self.hold(&mut state, &raw);
                self.in_step.store(true, Ordering::Release);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the object-version key Secret holds no usable key; keeping the one in memory");
                self.in_step.store(false, Ordering::Release);
            }
        }
    }

    /// The Secret is gone (`why`): creates a new key at once, or takes the
    /// one another provider created first. The lock is held throughout, so
    /// no mount after the Secret is back uses the old key. On failure the
    /// held key stays, and `key` re-checks until the Secret exists again.
    async fn recreate(&self, why: &str) {
        let Source::Secret { kube, namespace, name } = &self.source else {
            return;
        };
        let mut state = self.state.lock().await;
        tracing::info!(secret = %self.secret_name(), "object-version key Secret {why}; recreating it");
        match load_or_create(kube, namespace, name).await {
            Ok(raw) => {
                self.hold(&mut state, &raw);
                self.in_step.store(true, Ordering::Release);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot recreate the object-version key Secret yet; keeping the key in memory and re-checking every {:?}", self.refresh);
                self.in_step.store(false, Ordering::Release);
            }
        }
    }

    /// Marks the watch out of step; returns whether it was in step.
    async fn leave_step(&self) -> bool {
        let _state = self.state.lock().await;
        self.in_step.swap(false, Ordering::AcqRel)
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
    match error.kind() {
        // The key Secret is the provider's own: a 404 here is no user's mistake.
        ErrorKind::NotFound => error.into_kind(ErrorKind::BadResponse),
        _ => error,
    }
}

/// The key in the key Secret, if the Secret is exactly what the provider
/// creates: labelled `app.kubernetes.io/managed-by: vault-csi-provider`,
/// immutable, of type Opaque, with one data key `key` of 32 bytes. Anything
/// else is refused rather than taken up: the key seals the ledger's state
/// file and keys the versions, so a key someone else wrote could be known
/// to them.
pub(crate) fn key_from_secret(secret: &Secret, namespace: &str, name: &str) -> Result<Vec<u8>> {
    let refuse = |why: String| {
        Error::new(
            ErrorKind::Internal,
            format!("Secret {namespace}/{name} is not an object-version key this provider created ({why}): delete it to have a new key created"),
        )
    };
    let (label, value) = MANAGED_BY;
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(label))
        .is_some_and(|v| v == value);
    if !labelled {
        return Err(refuse(format!("it lacks the label {label}={value}")));
    }
    if secret.immutable != Some(true) {
        return Err(refuse("it is not immutable".to_string()));
    }
    if secret.type_.as_deref().unwrap_or("Opaque") != "Opaque" {
        return Err(refuse("its type is not Opaque".to_string()));
    }
    let data = secret.data.as_ref();
    let raw = data.and_then(|d| d.get(KEY_FIELD)).map(|b| b.0.clone());
    let Some(raw) = raw.filter(|_| data.is_some_and(|d| d.len() == 1)) else {
        return Err(refuse(format!("its data is not exactly one key, {KEY_FIELD}")));
    };
    if raw.len() != KEY_LEN {
        return Err(refuse(format!("the key is {} bytes, not {KEY_LEN}", raw.len())));
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
    ring::rand::SystemRandom::new().fill(&mut raw).map_err(|_| {
        Error::new(
            ErrorKind::Internal,
            "no randomness available for the object-version key",
        )
    })?;
    let body = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into()),
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
                    Error::new(
                        ErrorKind::KubeUnavailable,
                        format!("Secret {namespace}/{name} was created by another provider but cannot be read back"),
                    )
                })?;
            key_from_secret(&secret, namespace, name)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use vcp_testbed::kubernetes::cluster::Cluster;

    /// The key Secret's name, as deploy/base's Role names it.
    const KEY: &str = "vault-csi-provider-hmac-key";

    /// A share of the real API server and a client of it (through the
    /// share's fault proxy) as the provider's ServiceAccount with
    /// deploy/base's RBAC; without `watch`, a Role from before the watch
    /// (get on the key Secret, create on Secrets).
    async fn provider_client(dir: &std::path::Path, watch: bool) -> (Cluster, KubeClient) {
        let kube = Cluster::start().await.unwrap();
        let ns = kube.provider_namespace.clone();
        if !watch {
            kube.key_role_from_before_the_watch(&ns).await.unwrap();
        }
        let token = kube
            .service_account_token(
                &ns,
                vcp_testbed::kubernetes::cluster::PROVIDER_SA,
                &[],
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
        let config = dir.join("kubeconfig");
        kube.write_kubeconfig(&config, &token, &ns).unwrap();
        let client = KubeClient::load(Some(&config), Duration::from_millis(500))
            .await
            .unwrap();
        (kube, client)
    }

    /// Versions keyed by the provider namespace's key Secret whose clock runs
    /// `skew` seconds ahead.
    fn skewed(kube: &Cluster, client: KubeClient, refresh: Duration, skew: &Arc<AtomicU64>) -> Arc<Versions> {
        let clock = skew.clone();
        let versions = Versions::from_secret(client, kube.provider_namespace.clone(), KEY.into(), refresh)
            .with_clock(move || Instant::now() + Duration::from_secs(clock.load(Ordering::SeqCst)));
        Arc::new(versions)
    }

    /// The re-check interval of [`rechecking`].
    const RECHECK: Duration = Duration::from_secs(60);

    /// Versions kept by the once-a-minute re-check alone (a Role from
    /// before the watch), their clock's skew, and the first version made.
    struct Rechecking {
        kube: Cluster,
        versions: Arc<Versions>,
        skew: Arc<AtomicU64>,
        first: String,
        _dir: tempfile::TempDir,
    }

    impl Rechecking {
        /// The version the held key gives the fixed object.
        async fn held(&self) -> String {
            self.versions.key().await.unwrap().version("c", b"x")
        }

        /// Moves the clock one interval on: a re-check is due.
        fn recheck_due(&self) {
            self.skew.fetch_add(RECHECK.as_secs(), Ordering::SeqCst);
        }
    }

    async fn rechecking() -> Rechecking {
        let dir = tempfile::tempdir().unwrap();
        let (kube, client) = provider_client(dir.path(), false).await;
        let skew = Arc::new(AtomicU64::new(0));
        let versions = skewed(&kube, client, RECHECK, &skew);
        let first = versions.key().await.unwrap().version("c", b"x");
        Rechecking {
            kube,
            versions,
            skew,
            first,
            _dir: dir,
        }
    }

    /// The version of one fixed object under the key `raw`.
    async fn version_under(raw: &[u8]) -> String {
        Versions::fixed(raw).key().await.unwrap().version("c", b"x")
    }

    /// The raw key stored in the key Secret.
    async fn stored_key(kube: &Cluster) -> Option<Vec<u8>> {
        let ns = &kube.provider_namespace;
        let secret: Secret = serde_json::from_value(kube.secret(ns, KEY).await.unwrap()?).unwrap();
        key_from_secret(&secret, ns, KEY).ok()
    }

    /// Polls `f` every 20 ms for at most 5 s.
    async fn within_5s<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
        let until = Instant::now() + Duration::from_secs(5);
        while !f().await {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// With the watch in step, mounts make no API call for the key; a
    /// deleted key Secret is recreated at once with a new key, which
    /// replaces the held one; a key put there by someone else is taken up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_watch_recreates_a_deleted_key_at_once_and_mounts_ask_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (kube, client) = provider_client(dir.path(), true).await;
        let versions = skewed(&kube, client, Duration::from_secs(60), &Arc::new(AtomicU64::new(0)));
        let first = versions.key().await.unwrap().version("c", b"x");
        let watch = tokio::spawn(versions.clone().watch());
        within_5s("the watch in step", || async {
            versions.in_step.load(Ordering::Acquire)
        })
        .await;

        kube.clear_requests();
        for _ in 0..20 {
            assert_eq!(versions.key().await.unwrap().version("c", b"x"), first);
        }
        let asked: Vec<_> = kube
            .requests()
            .into_iter()
            .filter(|(_, path)| !path.contains("watch="))
            .collect();
        assert!(asked.is_empty(), "mounts asked Kubernetes: {asked:?}");

        kube.clear_requests();
        kube.delete_secret(&kube.provider_namespace, KEY).await.unwrap();
        within_5s("the key Secret back", || async { stored_key(&kube).await.is_some() }).await;
        let recreated = stored_key(&kube).await.unwrap();
        let rotated = version_under(&recreated).await;
        assert_ne!(rotated, first, "a new key");
        within_5s("the new key held", || async {
            versions.key().await.unwrap().version("c", b"x") == rotated
        })
        .await;

        // Meanwhile the only calls besides the watch were the watch task's
        // own recreation (a read, then the create): none by `key`.
        let non_watch = || -> Vec<(String, String)> {
            kube.requests()
                .into_iter()
                .filter(|(_, path)| !path.contains("watch="))
                .map(|(m, path)| (m, path.split('?').next().unwrap_or_default().to_string()))
                .collect()
        };
        let ns = &kube.provider_namespace;
        let recreation = [
            ("GET".to_string(), format!("/api/v1/namespaces/{ns}/secrets/{KEY}")),
            ("POST".to_string(), format!("/api/v1/namespaces/{ns}/secrets")),
        ];
        assert_eq!(non_watch(), recreation);

        // A Secret of that name someone else wrote (no label, mutable) is
        // not taken up: the key held stays.
        kube.set_unavailable(true);
        kube.delete_secret(ns, KEY).await.unwrap();
        let planted = [5u8; KEY_LEN];
        kube.put_secret(
            ns,
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": KEY}, "data": {"key": ByteString(planted.to_vec())}}),
        )
        .await
        .unwrap();
        kube.set_unavailable(false);
        // The watch delivers it within milliseconds; a second is plenty.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!versions.in_step.load(Ordering::Acquire));
        assert_eq!(versions.key().await.unwrap().version("c", b"x"), rotated);
        assert_ne!(rotated, version_under(&planted).await);

        // Another provider's key wins the race to recreate it (here: while
        // this one's own calls are refused, its watch stream still open).
        kube.clear_requests();
        kube.set_unavailable(true);
        kube.delete_secret(ns, KEY).await.unwrap();
        let theirs = [7u8; KEY_LEN];
        kube.put_secret(
            ns,
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "immutable": true, "type": "Opaque",
                "metadata": {"name": KEY, "labels": {MANAGED_BY.0: MANAGED_BY.1}},
                "data": {"key": ByteString(theirs.to_vec())}}),
        )
        .await
        .unwrap();
        kube.set_unavailable(false);
        let expected = version_under(&theirs).await;
        within_5s("the key put there taken up", || async {
            versions.key().await.unwrap().version("c", b"x") == expected
        })
        .await;
        assert!(versions.in_step.load(Ordering::Acquire));
        assert!(
            non_watch().iter().all(|call| recreation.contains(call)),
            "only recreation attempts: {:?}",
            non_watch()
        );
        watch.abort();
    }

    /// Without list and watch on the key Secret (a Role from before the
    /// watch) the watch ends and the key is re-checked every interval, as
    /// before: the held key until then, the recreated one after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_watch_falls_back_to_the_periodic_recheck() {
        let r = rechecking().await;
        let (kube, versions, first) = (&r.kube, &r.versions, r.first.clone());
        tokio::time::timeout(Duration::from_secs(10), versions.clone().watch())
            .await
            .expect("a refused watch ends");
        assert!(!versions.in_step.load(Ordering::Acquire));

        kube.delete_secret(&kube.provider_namespace, KEY).await.unwrap();
        assert_eq!(r.held().await, first, "the held key until the re-check is due");
        r.recheck_due();
        let rotated = r.held().await;
        assert_ne!(rotated, first);
        assert_eq!(
            rotated,
            version_under(&stored_key(kube).await.expect("recreated")).await
        );
    }

    /// A failed re-check keeps the key and waits a full interval before the
    /// next attempt, so an API server that is down or slow costs one request
    /// per interval rather than one per mount.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_recheck_is_not_repeated_by_every_mount() {
        let r = rechecking().await;
        let (kube, versions, first) = (&r.kube, &r.versions, r.first.clone());

        kube.set_delay(Duration::from_secs(2));
        r.recheck_due();
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

    #[test]
    fn only_a_key_secret_of_the_providers_exact_shape_is_taken_up() {
        let made = |edit: &dyn Fn(&mut Secret)| {
            let mut s = Secret {
                metadata: ObjectMeta {
                    labels: Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into()),
                    ..Default::default()
                },
                type_: Some("Opaque".into()),
                immutable: Some(true),
                data: Some([(KEY_FIELD.to_string(), ByteString(vec![9; KEY_LEN]))].into()),
                ..Default::default()
            };
            edit(&mut s);
            key_from_secret(&s, "csi", "k").map_err(|e| e.to_string())
        };
        assert_eq!(made(&|_| {}).unwrap(), vec![9; KEY_LEN]);
        // The type left out is Opaque, as the API server defaults it.
        assert!(made(&|s| s.type_ = None).is_ok());
        let refused = [
            (made(&|s| s.metadata.labels = None), "lacks the label"),
            (
                made(&|s| s.metadata.labels = Some([(MANAGED_BY.0.to_string(), "someone".into())].into())),
                "lacks the label",
            ),
            (made(&|s| s.immutable = None), "not immutable"),
            (made(&|s| s.type_ = Some("kubernetes.io/tls".into())), "not Opaque"),
            (made(&|s| s.data = None), "not exactly one key"),
            (
                made(&|s| {
                    s.data.as_mut().unwrap().insert("extra".into(), ByteString(vec![1]));
                }),
                "not exactly one key",
            ),
            (
                made(&|s| s.data = Some([(KEY_FIELD.to_string(), ByteString(vec![9; 64]))].into())),
                "64 bytes, not 32",
            ),
        ];
        for (result, why) in refused {
            let e = result.unwrap_err();
            assert!(e.contains(why) && e.contains("delete it"), "{e}");
        }
    }
}
