use super::*;
use crate::http::Endpoint;
use crate::spc::TlsConfig;

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

fn setup(reuse: bool) -> (Ledger, Arc<ManualClock>, TokenKey) {
    let clock = Arc::new(ManualClock(Mutex::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    )));
    let settings = LedgerSettings {
        reuse,
        threshold: 2.0 / 3.0,
        grace: Duration::from_secs(30),
        capacity: 10,
        state_file: None,
    };
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
        vault: VaultConfig {
            endpoint: Endpoint::parse("http://127.0.0.1:8200").unwrap(),
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
    clock.advance(Duration::from_secs(15));
    assert!(ledger.token(&key).is_some());
    assert!(ledger.reusable(&key, &read()).is_some());
    clock.advance(Duration::from_secs(11));
    assert!(
        ledger.token(&key).is_none(),
        "a token that cannot be renewed is replaced after the threshold"
    );
    clock.advance(Duration::from_secs(3));
    assert!(
        ledger.reusable(&key, &read()).is_none(),
        "the lease dies with its token"
    );
    ledger.store_token(&key, token(clock.now(), 30, false));
    assert_eq!(
        ledger.summary().retiring,
        1,
        "the old token is revoked after the grace period"
    );
    assert_eq!(
        ledger.summary().credentials,
        0,
        "credentials of the old token are not carried over"
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
        }
    };
    write_state(&path, &[7u8; 32], &state).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        !String::from_utf8_lossy(&bytes).contains("s.secret"),
        "tokens are not stored in clear"
    );
    assert_eq!(open_state(&[7u8; 32], &bytes).unwrap().entries.len(), 1);
    assert_eq!(
        open_state(&[8u8; 32], &bytes).err(),
        Some("authentication failed"),
        "another key"
    );
    let mut tampered = bytes.clone();
    tampered[20] ^= 1;
    assert!(open_state(&[7u8; 32], &tampered).is_err());
    assert_eq!(
        open_state(&[7u8; 32], b"garbage").err(),
        Some("not a ledger state file")
    );
}

#[test]
fn a_cache_size_of_zero_means_a_login_per_mount() {
    let clock = Arc::new(ManualClock(Mutex::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    )));
    let (_, _, key) = setup(true);
    let settings = LedgerSettings {
        reuse: true,
        threshold: 2.0 / 3.0,
        grace: Duration::from_secs(30),
        capacity: 0,
        state_file: None,
    };
    let ledger = Ledger::new(settings, clock.clone());
    ledger.store_token(&key, token(clock.now(), 3600, true));
    assert!(ledger.token(&key).is_none());
    ledger.store_token(&key, token(clock.now(), 3600, true));
    assert_eq!(
        ledger.summary().retiring,
        1,
        "the replaced token is still revoked after its grace"
    );
}
