use super::state_file::{open_state, write_state, Seal, MAGIC};
use super::*;
use crate::endpoint::Endpoint;
use crate::vault::TlsConfig;

struct ManualClock(Mutex<SystemTime>);

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

impl ManualClock {
    fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap();
        *t += d;
    }
}

/// The clock every test starts from.
fn start_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock(Mutex::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    )))
}

/// The settings every test starts from: rotation at 2/3 of a lifetime, 30 s
/// of grace, 10 pods, no state file, 16 MiB of responses.
fn base_settings(reuse: bool) -> LedgerSettings {
    LedgerSettings {
        reuse,
        threshold: 2.0 / 3.0,
        grace: Duration::from_secs(30),
        capacity: 10,
        state_file: None,
        node: None,
        max_held_bytes: 16 * 1024 * 1024,
    }
}

/// [`setup`] with `-cache-size=0`: nothing is held.
fn without_cache() -> (Ledger, Arc<ManualClock>, TokenKey) {
    let (ledger, clock, key) = setup(true);
    let settings = LedgerSettings {
        capacity: 0,
        ..ledger.settings.clone()
    };
    (Ledger::new(settings, clock.clone()), clock, key)
}

fn setup(reuse: bool) -> (Ledger, Arc<ManualClock>, TokenKey) {
    let clock = start_clock();
    let settings = base_settings(reuse);
    let key = TokenKey {
        pod: Pod {
            name: "p".into(),
            namespace: "ns".into(),
            uid: "u1".into(),
            service_account: "sa".into(),
        },
        role: "r".into(),
        auth_mount: "kubernetes".into(),
        audience: None,
        flavor: Default::default(),
        vault: VaultConfig {
            addresses: Endpoint::parse("http://127.0.0.1:8200").unwrap().into(),
            namespace: None,
            tls: TlsConfig::default(),
        },
    };
    (Ledger::new(settings, clock.clone()), clock, key)
}

fn token(now: SystemTime, ttl: u64, renewable: bool) -> VaultToken {
    VaultToken {
        token: "s.secret".into(),
        accessor: "acc".into(),
        issued: now,
        ttl: Duration::from_secs(ttl),
        expires: Some(now + Duration::from_secs(ttl)),
        renewable,
    }
}

fn read() -> ReadKey {
    ReadKey {
        method: "GET".into(),
        path: "/v1/database/creds/app".into(),
        query: vec![],
        body: None,
    }
}

fn leased(ttl: u64, renewable: bool) -> Json {
    serde_json::json!({"lease_id": "database/creds/app/abc", "lease_duration": ttl, "renewable": renewable, "data": {"username": "u"}})
}

#[test]
fn renewable_leases_are_reused_and_static_reads_are_not() {
    let (ledger, clock, key) = setup(true);
    ledger.store_token(&key, token(clock.now(), 3600, true));
    ledger.store_response(&key, &read(), &leased(60, true));
    assert!(ledger.reusable(&key, &read()).is_some());
    clock.advance(Duration::from_secs(55));
    assert!(
        ledger.reusable(&key, &read()).is_some(),
        "renewable: the background renews it"
    );
    clock.advance(Duration::from_secs(4));
    assert!(
        ledger.reusable(&key, &read()).is_none(),
        "within the safety margin of expiry"
    );

    let kv = ReadKey {
        path: "/v1/secret/data/x".into(),
        ..read()
    };
    ledger.store_response(
        &key,
        &kv,
        &serde_json::json!({"lease_id": "", "lease_duration": 0, "data": {}}),
    );
    assert!(ledger.reusable(&key, &kv).is_none(), "static secrets are read fresh");
}

#[test]
fn non_renewable_credentials_rotate_at_the_threshold_and_the_old_lease_retires() {
    let (ledger, clock, key) = setup(true);
    ledger.store_token(&key, token(clock.now(), 3600, true));
    ledger.store_response(&key, &read(), &leased(90, false));
    clock.advance(Duration::from_secs(59));
    assert!(ledger.reusable(&key, &read()).is_some());
    clock.advance(Duration::from_secs(2));
    assert!(
        ledger.reusable(&key, &read()).is_none(),
        "past 2/3 of a lifetime that cannot be extended"
    );
    ledger.store_response(&key, &read(), &leased(90, false));
    assert_eq!(
        ledger.summary().retiring,
        1,
        "the replaced lease waits out its grace period"
    );
    assert_eq!(ledger.summary().credentials, 1);
}

#[test]
fn credentials_die_with_their_token_and_capped_tokens_are_replaced() {
    let (ledger, clock, key) = setup(true);
    ledger.store_token(&key, token(clock.now(), 30, false));
    ledger.store_response(&key, &read(), &leased(3600, true));
    clock.advance(Duration::from_secs(14));
    assert!(ledger.token(&key).is_some());
    assert!(ledger.reusable(&key, &read()).is_some());
    clock.advance(Duration::from_secs(2));
    assert!(
        ledger.token(&key).is_none(),
        "a token that cannot be renewed is replaced with the grace (30 s, at most half its TTL) left"
    );
    assert!(
        ledger.reusable(&key, &read()).is_none(),
        "the lease dies with its token, so it is issued again under the new one"
    );
    let fresh = VaultToken {
        token: "s.fresh".into(),
        ..token(clock.now(), 30, false)
    };
    ledger.store_token(&key, fresh);
    assert_eq!(
        ledger.summary().retiring,
        1,
        "the old token is revoked after the grace period"
    );
    assert_eq!(
        ledger.summary().credentials,
        0,
        "leases of the old token are not carried over"
    );
}

#[test]
fn reuse_off_keeps_tokens_only_and_pods_are_removed_with_their_tokens() {
    let (ledger, clock, key) = setup(false);
    ledger.store_token(&key, token(clock.now(), 3600, true));
    ledger.store_response(&key, &read(), &leased(60, true));
    assert!(ledger.reusable(&key, &read()).is_none());
    assert!(ledger.token(&key).is_some());
    let revoke = ledger.remove_pod("u1");
    assert_eq!(revoke.len(), 1);
    assert!(ledger.token(&key).is_none());
    assert!(ledger.remove_pod("u1").is_empty());
}

#[test]
fn state_files_are_encrypted_and_authenticated() {
    let (ledger, clock, key) = setup(true);
    ledger.store_token(&key, token(clock.now(), 3600, true));
    ledger.store_response(&key, &read(), &leased(60, true));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let state = {
        let inner = ledger.lock();
        State {
            entries: inner.entries.values().cloned().collect(),
            retiring: inner.retiring.clone(),
            reviews: Vec::new(),
        }
    };
    let seal = Seal {
        key: &[7u8; 32],
        node: "node-1",
        generation: 5,
    };
    write_state(&path, &seal, &state).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        !String::from_utf8_lossy(&bytes).contains("s.secret"),
        "tokens are not stored in clear"
    );
    let (opened, generation) = open_state(&[7u8; 32], "node-1", &bytes).unwrap();
    assert_eq!((opened.entries.len(), generation), (1, 5));
    let refused = |key: &[u8; 32], node: &str, bytes: &[u8]| open_state(key, node, bytes).err();
    assert!(
        refused(&[8u8; 32], "node-1", &bytes)
            .unwrap()
            .contains("authentication failed"),
        "another key"
    );
    assert!(
        refused(&[7u8; 32], "node-2", &bytes)
            .unwrap()
            .contains("authentication failed"),
        "another node"
    );
    let mut tampered = bytes.clone();
    tampered[30] ^= 1;
    assert!(refused(&[7u8; 32], "node-1", &tampered).is_some(), "content");
    let mut older = bytes.clone();
    older[MAGIC.len() + 7] = 4;
    assert!(
        refused(&[7u8; 32], "node-1", &older).is_some(),
        "the generation is authenticated"
    );
    assert!(refused(&[7u8; 32], "node-1", b"garbage")
        .unwrap()
        .contains("not a ledger state file"));
    let mut v1 = b"VCPLEDGER1".to_vec();
    v1.extend_from_slice(&bytes[MAGIC.len()..]);
    assert!(
        refused(&[7u8; 32], "node-1", &v1).is_some(),
        "the old format is ignored, not misread"
    );

    // Only the state file remains: no temporary file is left behind, and a
    // symlink at the path is replaced, never written through.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("state")]);
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    write_state(&path, &seal, &state).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_cache_size_of_zero_means_a_login_per_mount() {
    let (ledger, clock, key) = without_cache();
    ledger.store_token(&key, token(clock.now(), 3600, true));
    assert!(ledger.token(&key).is_none());
    let second = VaultToken {
        token: "s.second".into(),
        ..token(clock.now(), 3600, true)
    };
    ledger.store_token(&key, second);
    assert_eq!(
        ledger.summary().retiring,
        1,
        "the replaced token is still revoked after its grace"
    );
}

// --- Certificates and leases across token renewals and replacements ---------------------
//
// A pod republished every 2 minutes for a simulated hour, driven through the
// ledger calls `Mounter::fetch_all` makes, in its order: `token` (else a
// login and `store_token`), then `reusable` (else an issue and
// `store_response`), with the background `tick` between mounts renewing and
// revoking against a fake Vault. The clock is injected: nothing sleeps.

/// A Vault that renews tokens and leases for what is asked and counts
/// renewals and revocations.
struct FakeVault {
    url: String,
    token_renewals: Arc<std::sync::atomic::AtomicUsize>,
    token_revocations: Arc<std::sync::atomic::AtomicUsize>,
    lease_revocations: Arc<std::sync::atomic::AtomicUsize>,
}

fn seconds(increment: &Json) -> u64 {
    match increment {
        Json::String(s) => s.trim_end_matches('s').parse().unwrap(),
        other => other.as_u64().unwrap(),
    }
}

async fn fake_vault() -> FakeVault {
    use axum::routing::{post, put};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let token_renewals = Arc::new(AtomicUsize::new(0));
    let token_revocations = Arc::new(AtomicUsize::new(0));
    let lease_revocations = Arc::new(AtomicUsize::new(0));
    let (tr, tv, lv) = (
        token_renewals.clone(),
        token_revocations.clone(),
        lease_revocations.clone(),
    );
    let app = axum::Router::new()
        .route(
            "/v1/auth/token/renew-self",
            post(move |axum::Json(body): axum::Json<Json>| {
                let tr = tr.clone();
                async move {
                    tr.fetch_add(1, Ordering::SeqCst);
                    axum::Json(serde_json::json!({"auth": {
                        "client_token": "renewed", "lease_duration": seconds(&body["increment"]), "renewable": true
                    }}))
                }
            }),
        )
        .route(
            "/v1/auth/token/revoke-self",
            post(move || {
                let tv = tv.clone();
                async move {
                    tv.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
        .route(
            "/v1/sys/leases/renew",
            put(|axum::Json(body): axum::Json<Json>| async move {
                axum::Json(serde_json::json!({
                    "lease_id": body["lease_id"], "lease_duration": seconds(&body["increment"]), "renewable": true
                }))
            }),
        )
        .route(
            "/v1/sys/leases/revoke",
            put(move || {
                let lv = lv.clone();
                async move {
                    lv.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeVault {
        url,
        token_renewals,
        token_revocations,
        lease_revocations,
    }
}

fn count(c: &std::sync::atomic::AtomicUsize) -> usize {
    c.load(std::sync::atomic::Ordering::SeqCst)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn pki_read() -> ReadKey {
    ReadKey {
        method: "PUT".into(),
        path: "/v1/pki/issue/web".into(),
        query: vec![],
        body: Some(r#"{"common_name":"a.example.com"}"#.into()),
    }
}

/// What `pki/issue` returns without `generate_lease`: no lease, the
/// certificate's own `expiration`.
fn certificate(now: SystemTime, ttl: u64, serial: usize) -> Json {
    serde_json::json!({"lease_id": "", "lease_duration": 0, "renewable": false, "data": {
        "certificate": format!("-----BEGIN CERTIFICATE----- #{serial}"),
        "serial_number": format!("{serial:02x}"),
        "expiration": unix(now) + ttl,
    }})
}

fn database_lease(ttl: u64, renewable: bool, serial: usize) -> Json {
    serde_json::json!({"lease_id": format!("database/creds/app/{serial}"), "lease_duration": ttl, "renewable": renewable, "data": {"username": format!("u{serial}")}})
}

/// How the role issues tokens.
#[derive(Clone, Copy, Debug)]
enum Tokens {
    /// Renewable well past the hour: the background renews it.
    Renewable,
    /// At its max TTL from the start (not renewable): replaced by a login.
    AtMaxTtl,
}

/// A pod whose mounts go through the ledger as the Mounter's do.
struct Republished {
    ledger: Ledger,
    clock: Arc<ManualClock>,
    key: TokenKey,
    pool: VaultPool,
    token_ttl: u64,
    tokens: Tokens,
    logins: usize,
    issues: usize,
    /// Per login after the first: how long the replaced token had left.
    replaced_with_left: Vec<Duration>,
    current_token_expires: SystemTime,
}

impl Republished {
    fn new(vault: &FakeVault, tokens: Tokens, token_ttl: u64, grace: Duration) -> Republished {
        let (_, clock, mut key) = setup(true);
        key.vault.addresses = Endpoint::parse(&vault.url).unwrap().into();
        let settings = LedgerSettings {
            grace,
            ..base_settings(true)
        };
        Republished {
            ledger: Ledger::new(settings, clock.clone()),
            clock,
            key,
            pool: VaultPool::new(Duration::from_secs(5)),
            token_ttl,
            tokens,
            logins: 0,
            issues: 0,
            replaced_with_left: Vec::new(),
            current_token_expires: SystemTime::UNIX_EPOCH,
        }
    }

    /// One Mount with one object: returns the response it hands out.
    fn mount(&mut self, read: &ReadKey, issue: impl FnOnce(SystemTime, usize) -> Json) -> Json {
        let now = self.clock.now();
        if self.ledger.token(&self.key).is_none() {
            if self.logins > 0 {
                self.replaced_with_left.push(left(self.current_token_expires, now));
            }
            self.logins += 1;
            let mut t = token(now, self.token_ttl, matches!(self.tokens, Tokens::Renewable));
            t.token = format!("s.token-{}", self.logins);
            t.accessor = format!("accessor-{}", self.logins);
            self.current_token_expires = t.expires.unwrap();
            self.ledger.store_token(&self.key, t);
        }
        if let Some(held) = self.ledger.reusable(&self.key, read) {
            return held;
        }
        self.issues += 1;
        let fresh = issue(now, self.issues);
        self.ledger.store_response(&self.key, read, &fresh);
        fresh
    }

    /// The background between two mounts.
    async fn pass(&self, d: Duration) {
        self.clock.advance(d);
        self.ledger.tick(&self.pool).await;
    }
}

const REPUBLISH: Duration = Duration::from_secs(120);
const MOUNTS_PER_HOUR: usize = 30;
const TOKEN_TTL: u64 = 20 * 60;

/// Certificates issued in a simulated pod-hour, republished every 2 minutes,
/// with a 20-minute token: asserts that every returned certificate is valid.
async fn certificate_pod_hour(tokens: Tokens, cert_ttl: u64) -> (Republished, FakeVault) {
    let vault = fake_vault().await;
    let mut pod = Republished::new(&vault, tokens, TOKEN_TTL, Duration::from_secs(30));
    for i in 0..MOUNTS_PER_HOUR {
        let cert = pod.mount(&pki_read(), |now, n| certificate(now, cert_ttl, n));
        let expires = cert["data"]["expiration"].as_u64().unwrap();
        let now = unix(pod.clock.now());
        assert!(
            expires > now,
            "{tokens:?}, mount {i}: the returned certificate expired {}s ago",
            now - expires
        );
        pod.pass(REPUBLISH).await;
    }
    println!(
        "simulated pod-hour, republished every 2 min, token TTL 20 min ({tokens:?}), certificate TTL {cert_ttl} s: {} certificates, {} logins",
        pod.issues, pod.logins
    );
    (pod, vault)
}

#[tokio::test]
async fn pod_hour_one_certificate_outlives_a_shorter_token() {
    // Token TTL 20 min, certificate TTL 72 h.
    let (pod, vault) = certificate_pod_hour(Tokens::Renewable, 72 * 3600).await;
    assert_eq!(pod.issues, 1, "one certificate serves the pod-hour");
    assert_eq!(pod.logins, 1, "the token was renewed, never replaced");
    assert!(
        count(&vault.token_renewals) >= 3,
        "the background renewed the 20-minute token: {} renewals",
        count(&vault.token_renewals)
    );

    let (pod, vault) = certificate_pod_hour(Tokens::AtMaxTtl, 72 * 3600).await;
    assert_eq!(
        pod.issues, 1,
        "one certificate serves the pod-hour although its token was replaced"
    );
    // Replaced once 1/3 of its TTL is left: at 14, 28, 42 and 56 minutes.
    assert_eq!(pod.logins, 5);
    assert_eq!(
        count(&vault.token_revocations),
        4,
        "the replaced tokens were revoked after their grace"
    );
    assert_eq!(pod.ledger.summary().credentials, 1, "the certificate is still held");
}

#[tokio::test]
async fn pod_hour_short_certificates_are_replaced_at_the_threshold_never_expired() {
    // Certificate TTL 10 min: reused while more than 1/3 of it is left, so a
    // new one on the first mount at or past 2/3 of 600 s.
    let cert_ttl = 600;
    let reuse_for = scale(Duration::from_secs(cert_ttl), 2.0 / 3.0).as_secs_f64();
    let mounts_per_certificate = (reuse_for / REPUBLISH.as_secs_f64()).ceil() as usize;
    let predicted = MOUNTS_PER_HOUR.div_ceil(mounts_per_certificate);
    assert_eq!(
        (mounts_per_certificate, predicted),
        (4, 8),
        "issued at 0, 8, 16, ... 56 minutes"
    );
    for tokens in [Tokens::Renewable, Tokens::AtMaxTtl] {
        let (pod, _vault) = certificate_pod_hour(tokens, cert_ttl).await;
        assert_eq!(pod.issues, predicted, "{tokens:?}");
    }
}

#[tokio::test]
async fn leases_are_reissued_with_their_token_and_before_its_cap_by_the_grace() {
    // A one-hour non-renewable lease under a 20-minute token at its max TTL:
    // the lease dies with the token, so it is issued again once per token,
    // not on every mount, and each replacement comes while the old token has
    // the rotation grace left (10 min here: more than 1/3 of the TTL).
    let vault = fake_vault().await;
    let grace = Duration::from_secs(600);
    let mut pod = Republished::new(&vault, Tokens::AtMaxTtl, TOKEN_TTL, grace);
    let mut by_token = Vec::new();
    for i in 0..MOUNTS_PER_HOUR {
        let logins = pod.logins;
        let r = pod.mount(&read(), |_, n| database_lease(3600, false, n));
        let user = r["data"]["username"].as_str().unwrap().to_string();
        if pod.logins != logins {
            by_token.push(user);
        } else {
            assert_eq!(
                Some(&user),
                by_token.last(),
                "mount {i}: the lease is reused while its token is"
            );
        }
        pod.pass(REPUBLISH).await;
    }
    assert_eq!(pod.issues, pod.logins, "one lease per token: {by_token:?}");
    // Replaced when 10 minutes are left: at 10, 20, 30, 40, 50 minutes.
    assert_eq!(pod.logins, 6);
    assert!(
        pod.replaced_with_left.iter().all(|l| *l >= grace),
        "every token was replaced with the grace left: {:?}",
        pod.replaced_with_left
    );
    assert_eq!(count(&vault.token_revocations), 5, "old tokens, with their leases");
    assert_eq!(
        count(&vault.lease_revocations),
        0,
        "leases go with their token, not one by one"
    );
}

#[test]
fn a_refused_token_takes_its_leases_but_not_its_certificates() {
    let (ledger, clock, key) = setup(true);
    let refused = token(clock.now(), 3600, true);
    ledger.store_token(&key, refused.clone());
    ledger.store_response(&key, &read(), &leased(3600, true));
    ledger.store_response(&key, &pki_read(), &certificate(clock.now(), 72 * 3600, 1));
    ledger.forget_dead_token(&key, &refused.token);
    assert!(ledger.token(&key).is_none(), "the refused token is not used again");
    assert!(ledger.reusable(&key, &read()).is_none(), "its lease went with it");
    ledger.store_token(&key, token(clock.now(), 3600, true));
    assert_eq!(ledger.summary().retiring, 0, "a refused token is not revoked again");
    assert_eq!(
        ledger.reusable(&key, &pki_read()).unwrap()["data"]["serial_number"],
        "01",
        "the certificate is kept under the new token"
    );
    assert!(ledger.reusable(&key, &read()).is_none());
}

#[tokio::test]
async fn a_certificate_is_kept_when_its_token_expires_unused() {
    let (ledger, clock, key) = setup(true);
    ledger.store_token(&key, token(clock.now(), 60, false));
    ledger.store_response(&key, &pki_read(), &certificate(clock.now(), 72 * 3600, 1));
    ledger.store_response(&key, &read(), &leased(3600, true));
    clock.advance(Duration::from_secs(120));
    ledger.tick(&VaultPool::new(Duration::from_secs(1))).await;
    let s = ledger.summary();
    assert_eq!((s.tokens, s.credentials), (0, 1), "the lease died with the token");
    assert!(ledger.token(&key).is_none());
    ledger.store_token(&key, token(clock.now(), 60, false));
    assert!(ledger.reusable(&key, &pki_read()).is_some());
    assert_eq!(ledger.summary().retiring, 0, "an expired token is not revoked");
}

#[test]
fn a_cache_size_of_zero_reuses_no_certificate() {
    let (ledger, clock, key) = without_cache();
    ledger.store_token(&key, token(clock.now(), 3600, true));
    ledger.store_response(&key, &pki_read(), &certificate(clock.now(), 72 * 3600, 1));
    ledger.store_token(&key, token(clock.now(), 3600, true));
    assert!(ledger.reusable(&key, &pki_read()).is_none());
}

#[tokio::test]
async fn a_lease_under_a_renewed_token_follows_its_own_lifetime() {
    // A one-hour non-renewable lease under a renewable 20-minute token: the
    // token's current expiry does not bound the lease (it is renewed), so
    // the lease is replaced at 2/3 of its own hour, not on every mount.
    let vault = fake_vault().await;
    let mut pod = Republished::new(&vault, Tokens::Renewable, TOKEN_TTL, Duration::from_secs(30));
    for _ in 0..MOUNTS_PER_HOUR {
        pod.mount(&read(), |_, n| database_lease(3600, false, n));
        pod.pass(REPUBLISH).await;
    }
    assert_eq!(pod.logins, 1);
    assert_eq!(pod.issues, 2, "issued at 0 and 40 minutes");
    assert_eq!(
        count(&vault.lease_revocations),
        1,
        "the replaced lease, after its grace"
    );
}

#[test]
fn what_the_ledger_holds_is_bounded() {
    let (mut ledger, clock, key) = setup(true);
    // One namespace holds at most a quarter: 8 KiB of 32 KiB.
    ledger.settings.max_held_bytes = 32 * 1024;
    ledger.store_token(&key, token(clock.now(), 3600, true));
    let read_n = |n: usize| ReadKey {
        path: format!("/v1/database/creds/app-{n}"),
        ..read()
    };
    let sized = |bytes: usize| {
        serde_json::json!({"lease_id": "database/creds/app/abc", "lease_duration": 600, "renewable": true,
            "data": {"username": "u", "blob": "x".repeat(bytes)}})
    };
    // Two of ~3 KiB fit in the namespace's 8 KiB; the third does not.
    ledger.store_response(&key, &read_n(1), &sized(3000));
    ledger.store_response(&key, &read_n(2), &sized(3000));
    ledger.store_response(&key, &read_n(3), &sized(3000));
    assert!(ledger.reusable(&key, &read_n(1)).is_some());
    assert!(ledger.reusable(&key, &read_n(2)).is_some());
    assert!(
        ledger.reusable(&key, &read_n(3)).is_none(),
        "over the namespace's share: not held"
    );
    // Replacing a held one counts only the new size.
    ledger.store_response(&key, &read_n(2), &sized(3500));
    assert!(ledger.reusable(&key, &read_n(2)).is_some());
    // Another namespace still has its own share.
    let mut other = key.clone();
    other.pod.namespace = "other".into();
    other.pod.uid = "u2".into();
    ledger.store_token(&other, token(clock.now(), 3600, true));
    ledger.store_response(&other, &read_n(1), &sized(3000));
    assert!(
        ledger.reusable(&other, &read_n(1)).is_some(),
        "a full namespace does not starve another"
    );
    // One huge leased response is never held, whatever room is left.
    let (big, clock, key) = setup(true);
    big.store_token(&key, token(clock.now(), 3600, true));
    big.store_response(&key, &read(), &sized(MAX_HELD_RESPONSE + 1));
    assert!(big.reusable(&key, &read()).is_none());
}

#[test]
fn reviewed_jwts_are_bound_to_the_whole_token_key_and_survive_a_restart() {
    let (ledger, clock, key) = setup(true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let ledger = Ledger {
        settings: LedgerSettings {
            state_file: Some(path.clone()),
            ..ledger.settings.clone()
        },
        ..ledger
    };
    let other_audience = TokenKey {
        audience: Some("other".into()),
        ..key.clone()
    };
    let until = clock.now() + Duration::from_secs(600);
    ledger.record_review(&key, "jwt-a", until);
    ledger.record_review(&other_audience, "jwt-b", until);
    assert!(ledger.was_reviewed(&key, "jwt-a"));
    assert!(
        ledger.was_reviewed(&other_audience, "jwt-b"),
        "a second audience does not displace the first"
    );
    assert!(!ledger.was_reviewed(&key, "jwt-b"));
    // A review by one Vault, auth mount or role, or for another pod, proves
    // nothing to another.
    let mut elsewhere = key.clone();
    elsewhere.vault.addresses = Endpoint::parse("https://tenant.example:8200").unwrap().into();
    let other_mount = TokenKey {
        auth_mount: "kubernetes-tenant".into(),
        ..key.clone()
    };
    let other_role = TokenKey {
        role: "admin".into(),
        ..key.clone()
    };
    let mut other_pod = key.clone();
    other_pod.pod.uid = "u2".into();
    for k in [&elsewhere, &other_mount, &other_role, &other_pod] {
        assert!(!ledger.was_reviewed(k, "jwt-a"));
    }
    ledger.store_token(&key, token(clock.now(), 3600, true));
    ledger.persist(&[3u8; 32]);
    assert!(
        !String::from_utf8_lossy(&std::fs::read(&path).unwrap()).contains("jwt-a"),
        "only digests, sealed"
    );

    let restarted = Ledger::new(ledger.settings.clone(), clock.clone());
    restarted.restore(&[3u8; 32]);
    assert!(restarted.was_reviewed(&key, "jwt-a"));
    assert!(restarted.was_reviewed(&other_audience, "jwt-b"));
    assert!(!restarted.was_reviewed(&elsewhere, "jwt-a"));
    clock.advance(Duration::from_secs(601));
    assert!(!restarted.was_reviewed(&key, "jwt-a"), "not past the JWT's expiry");
    restarted.record_review(&key, "jwt-c", clock.now() + Duration::from_secs(60));
    restarted.remove_pod("u1");
    assert!(!restarted.was_reviewed(&key, "jwt-c"), "gone with its pod");
}

#[tokio::test]
async fn a_lease_revocation_vault_denies_is_counted_once_and_not_retried() {
    use axum::routing::put;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A Vault whose policies do not grant update on sys/leases/revoke (its
    // default policy does not).
    let asked = Arc::new(AtomicUsize::new(0));
    let seen = asked.clone();
    let app = axum::Router::new().route(
        "/v1/sys/leases/revoke",
        put(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::FORBIDDEN,
                    axum::Json(serde_json::json!({"errors": ["1 error occurred:\n\t* permission denied\n\n"]})),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (ledger, clock, mut key) = setup(true);
    key.vault.addresses = Endpoint::parse(&url).unwrap().into();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let ledger = ledger.with_metrics(metrics.clone());
    let pool = VaultPool::new(Duration::from_secs(5));
    ledger.store_token(&key, token(clock.now(), 3600, true));
    ledger.store_response(&key, &read(), &database_lease(60, false, 1));
    // Rotated past the threshold: the old lease retires after the grace.
    clock.advance(Duration::from_secs(41));
    ledger.store_response(&key, &read(), &database_lease(60, false, 2));
    clock.advance(Duration::from_secs(31));
    ledger.tick(&pool).await;
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert!(
        metrics
            .encode()
            .contains("vault_csi_provider_credential_revocations_denied_total 1"),
        "{}",
        metrics.encode()
    );
    assert!(ledger.lock().retiring.is_empty(), "a denial is final: not retried");
    assert!(
        ledger.lock().warned_revoke_denied.contains("r"),
        "logged once for role r"
    );
    clock.advance(Duration::from_secs(10));
    ledger.tick(&pool).await;
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[test]
fn a_deleted_pods_tokens_are_queued_for_revocation_and_its_certificates_counted() {
    let (ledger, clock, key) = setup(true);
    let held = token(clock.now(), 3600, true);
    ledger.store_token(&key, held.clone());
    ledger.store_response(&key, &read(), &leased(3600, true));
    ledger.store_response(&key, &pki_read(), &certificate(clock.now(), 72 * 3600, 1));
    assert_eq!(ledger.retire_pod("u1"), 1, "one live token");
    assert!(ledger.token(&key).is_none());
    let jobs = ledger.plan();
    assert_eq!(jobs.len(), 1, "due at once");
    assert!(matches!(&jobs[0], Job::Retire(r) if r.token == held.token && r.lease_id.is_none()));
    assert_eq!(ledger.retire_pod("u1"), 0, "nothing left");
}

#[test]
fn a_refused_renewal_retires_the_token_it_renewed_not_a_fresher_one() {
    let (ledger, clock, key) = setup(true);
    let old = token(clock.now(), 3600, true);
    ledger.store_token(&key, old.clone());
    let mut fresh = token(clock.now(), 3600, true);
    fresh.token = "s.fresh".into();
    ledger.store_token(&key, fresh.clone());
    let queued = ledger.summary().retiring;
    assert_eq!(queued, 1, "the login replaced the old token, which retires");
    ledger.retire_token(&key, &old.token);
    assert_eq!(
        ledger.summary().retiring,
        queued,
        "the old token was retired already by the login"
    );
    assert_eq!(ledger.token(&key).unwrap().token, fresh.token, "the fresh token stays");
    ledger.retire_token(&key, &fresh.token);
    assert!(ledger.token(&key).is_none());
    assert_eq!(
        ledger.summary().retiring,
        queued + 1,
        "let go and queued for revocation"
    );
}

#[test]
fn one_namespace_churning_identities_never_evicts_another_and_evicted_tokens_are_revoked() {
    let (mut ledger, clock, victim) = setup(true);
    ledger.settings.capacity = 8; // two per namespace
    ledger.store_token(&victim, token(clock.now(), 3600, true));
    ledger.store_response(&victim, &read(), &leased(600, true));
    let before = ledger.summary().retiring;
    for n in 0..100 {
        clock.advance(Duration::from_secs(1));
        let mut churn = victim.clone();
        churn.pod.namespace = "churn".into();
        churn.pod.uid = format!("c{n}");
        let mut t = token(clock.now(), 3600, true);
        t.token = format!("s.churn-{n}");
        ledger.store_token(&churn, t);
    }
    assert!(ledger.token(&victim).is_some(), "the victim's token stays");
    assert!(ledger.reusable(&victim, &read()).is_some(), "and so does its lease");
    let inner = ledger.lock();
    let churned = inner.entries.keys().filter(|k| k.pod.namespace == "churn").count();
    assert_eq!(churned, 2, "the churning namespace keeps its share only");
    let retired: Vec<&str> = inner.retiring.iter().map(|r| r.token.as_str()).collect();
    assert_eq!(
        retired.len() - before,
        98,
        "every evicted live token is queued for revocation"
    );
    assert!(retired.contains(&"s.churn-0") && !retired.contains(&"s.churn-99"));
}

#[test]
fn only_a_regular_state_file_within_its_limit_is_read_and_links_are_not_followed() {
    use super::state_file::read_state_file;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    assert_eq!(read_state_file(&path, 100).unwrap(), None, "none yet: normal");
    std::fs::write(&path, b"sealed").unwrap();
    assert_eq!(read_state_file(&path, 100).unwrap().unwrap(), b"sealed");
    let why = read_state_file(&path, 3).unwrap_err();
    assert!(why.contains("6 bytes, over the 3"), "{why}");
    // A link planted in its place (here to another provider's secret).
    let target = dir.path().join("other-provider-secret");
    std::fs::write(&target, b"not ours").unwrap();
    let link = dir.path().join("linked");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let why = read_state_file(&link, 100).unwrap_err();
    assert!(why.contains("symbolic link"), "{why}");
    // A FIFO would block a plain read forever; a directory is no file.
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let why = read_state_file(&fifo, 100).unwrap_err();
    assert!(why.contains("not a regular file"), "{why}");
    let why = read_state_file(dir.path(), 100).unwrap_err();
    assert!(why.contains("not a regular file"), "{why}");
}

#[tokio::test]
async fn the_background_loop_is_told_what_is_due_and_woken_by_a_change() {
    let (ledger, clock, key) = setup(true);
    assert_eq!(ledger.next_due(), None, "nothing held: nothing due");
    ledger.store_token(&key, token(clock.now(), 3600, true));
    // Woken once by the change (the permit waits for the loop).
    tokio::time::timeout(Duration::from_secs(1), ledger.changed())
        .await
        .expect("a change wakes the loop");
    // The token's renewal at about 2/3 of its hour (with its jitter).
    let due = ledger.next_due().unwrap();
    assert!(
        due >= Duration::from_secs(2280) && due <= Duration::from_secs(2520),
        "{due:?}"
    );
    // A lease renewable at 2/3 of a minute comes first.
    ledger.store_response(&key, &read(), &leased(60, true));
    assert!(ledger.next_due().unwrap() <= Duration::from_secs(42));
    // A retirement due now: due now.
    ledger.retire_token_now(&key, "s.other");
    assert_eq!(ledger.next_due(), Some(Duration::ZERO));
    // No further wake-up until the ledger is persisted and changes again.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), ledger.changed())
            .await
            .is_err(),
        "one wake-up per change after a persist"
    );
    ledger.persist(&[1u8; 32]);
    ledger.retire_token_now(&key, "s.third");
    tokio::time::timeout(Duration::from_secs(1), ledger.changed())
        .await
        .expect("a change after the persist wakes it again");
}
