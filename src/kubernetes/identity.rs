//! Proof that a Mount comes from the pod it names, before a Vault token held
//! for that pod is handed out again.
//!
//! A fresh login proves itself: Vault reviews the pod's JWT. A held token is
//! different — without a check, it would go to any request that names the
//! pod's public attributes (namespace, name, uid, service account). So a
//! request that reuses a held token must carry the pod's service-account JWT
//! (kubelet passes it when the CSIDriver has `tokenRequests`), and that JWT
//! must
//!
//! - name this pod: `kubernetes.io.pod.uid` and `.name`, the namespace and the
//!   service account; be meant for the class's audience (`aud`); be
//!   unexpired (`exp`), valid already (`nbf`) and not issued in the future
//!   (`iat`); and name the cluster's issuer (`iss`) once that is known. These
//!   are checked always, before any login too: a token for another pod is
//!   refused outright;
//! - carry a valid signature of the cluster's service-account issuer, whose
//!   keys the API server publishes at `/openid/v1/jwks` (readable by every
//!   service account by default). The keys are cached and fetched again at
//!   most every [`REFRESH_AFTER`], or sooner when a token names a key id not
//!   seen yet (the issuer rotated keys), at most every [`MISS_BACKOFF`]. A
//!   key id the issuer still does not publish after that fetch is refused:
//!   the issuer publishes a key before it signs with it, so while keys are
//!   loaded and fresh, an unknown key id is a forgery, never a reason to ask
//!   Vault instead.
//!
//! Only when no keys can be had (the discovery binding removed, the API
//! server unreachable) is the proof left to Vault's own review: the Mounter
//! reuses a held token for a JWT Vault reviewed before for the same whole
//! token key (Vault address, auth mount, role, audience and pod; the ledger
//! remembers its digest), and proves any other by a login whose token it
//! revokes at once, keeping the held token and the credentials it leases
//! (see [`crate::mount`]).
//!
//! The issuer is known once the discovery document has been read, and stays
//! known while later fetches fail.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value as Json;

use crate::bounded::BoundedMap;
use crate::kubernetes::client::KubeClient;
use crate::model::Pod;

/// How long fetched issuer keys are trusted before they are fetched again.
pub const REFRESH_AFTER: Duration = Duration::from_secs(300);
/// Least time between fetches caused by unknown key ids or failures.
pub const MISS_BACKOFF: Duration = Duration::from_secs(5);
/// Clock skew tolerated for `nbf` and `iat` (never for `exp`).
const SKEW: u64 = 60;
/// The JWS algorithms a Kubernetes service-account issuer signs with.
const SIGNING_ALGORITHMS: &[&str] = &["RS256", "RS384", "RS512", "ES256", "ES384"];

/// Why a JWT does not prove the request's pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It is not a JWT at all, or not one Kubernetes issues.
    #[error("the service-account token is not a Kubernetes JWT: {0}")]
    Malformed(String),
    /// Its claims name another pod, namespace or service account.
    #[error("the service-account token belongs to {actual}, not to {expected}")]
    OtherPod {
        /// Who the claims name.
        actual: String,
        /// Who the request names.
        expected: String,
    },
    /// It has expired (or is not valid yet).
    #[error("the service-account token is {0}")]
    Expired(String),
    /// It was requested for another audience than the class's.
    #[error("the service-account token is for audience {actual}, not {expected:?} (the class's audience): kubelet passes one token per audience")]
    OtherAudience {
        /// The token's `aud`.
        actual: String,
        /// The class's audience.
        expected: String,
    },
    /// Its issuer is not the cluster's.
    #[error("the service-account token was issued by {actual:?}, not by the cluster's issuer {expected:?}")]
    OtherIssuer {
        /// The token's `iss`.
        actual: String,
        /// The cluster's issuer.
        expected: String,
    },
    /// The issuer's keys do not verify its signature.
    #[error("the service-account token's signature does not verify against the cluster's issuer keys{0}")]
    BadSignature(String),
}

/// What the checks found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// Signed by the cluster's issuer, naming this pod, unexpired.
    Verified,
    /// Naming this pod and unexpired, but the issuer's keys were not
    /// available to check the signature (the reason says why).
    ClaimsOnly(String),
}

/// The parts of a compact JWS.
struct Jws<'a> {
    header: Json,
    claims: Json,
    signing_input: &'a str,
    signature: Vec<u8>,
}

fn decode(token: &str) -> Result<Jws<'_>, Refusal> {
    let bad = |what: &str| Refusal::Malformed(what.to_string());
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad("not three dot-separated parts"));
    };
    let json = |part: &str, what: &str| -> Result<Json, Refusal> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| bad(what))?;
        serde_json::from_slice(&bytes).map_err(|_| bad(what))
    };
    Ok(Jws {
        header: json(h, "bad header")?,
        claims: json(c, "bad claims")?,
        signing_input: &token[..h.len() + 1 + c.len()],
        signature: URL_SAFE_NO_PAD.decode(s).map_err(|_| bad("bad signature encoding"))?,
    })
}

/// Checks that `claims` name `pod`, are meant for `audience` and are valid
/// at `now`.
pub fn check_claims(claims: &Json, pod: &Pod, audience: &str, now: SystemTime) -> Result<(), Refusal> {
    let text = |pointer: &str| claims.pointer(pointer).and_then(Json::as_str).unwrap_or_default();
    let expected = format!(
        "pod {}/{} (uid {}) of service account {}",
        pod.namespace, pod.name, pod.uid, pod.service_account
    );
    let (ns, name, uid, sa) = (
        text("/kubernetes.io/namespace"),
        text("/kubernetes.io/pod/name"),
        text("/kubernetes.io/pod/uid"),
        text("/kubernetes.io/serviceaccount/name"),
    );
    if uid.is_empty() {
        return Err(Refusal::Malformed(
            "it is not bound to a pod (kubelet's tokens are)".to_string(),
        ));
    }
    // A request without a uid (the `mount` subcommand, given only a name)
    // is matched on the rest.
    let uid_differs = !pod.uid.is_empty() && uid != pod.uid;
    if ns != pod.namespace || uid_differs || name != pod.name || sa != pod.service_account {
        return Err(Refusal::OtherPod {
            actual: format!("pod {ns}/{name} (uid {uid}) of service account {sa}"),
            expected,
        });
    }
    let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let number = |k: &str| claims.get(k).and_then(Json::as_u64);
    match number("exp") {
        Some(exp) if exp > now => {}
        Some(_) => return Err(Refusal::Expired("expired".to_string())),
        None => return Err(Refusal::Malformed("it has no expiry".to_string())),
    }
    if number("nbf").is_some_and(|nbf| nbf > now + SKEW) {
        return Err(Refusal::Expired("not valid yet".to_string()));
    }
    if number("iat").is_some_and(|iat| iat > now + SKEW) {
        return Err(Refusal::Expired("issued in the future".to_string()));
    }
    // `aud` is a string or an array of strings (RFC 7519, 4.1.3).
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Json::String(one)) => vec![one.as_str()],
        Some(Json::Array(many)) => many.iter().filter_map(Json::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&audience) {
        return Err(Refusal::OtherAudience {
            actual: format!("{audiences:?}"),
            expected: audience.to_string(),
        });
    }
    Ok(())
}

/// Checks the token's `iss` against the cluster's issuer, when known.
fn check_issuer(claims: &Json, issuer: Option<&str>) -> Result<(), Refusal> {
    let Some(expected) = issuer else { return Ok(()) };
    let iss = claims.get("iss").and_then(Json::as_str).unwrap_or_default();
    if iss == expected {
        Ok(())
    } else {
        Err(Refusal::OtherIssuer {
            actual: iss.to_string(),
            expected: expected.to_string(),
        })
    }
}

/// One verification key of the issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256 { point: Vec<u8> },
    P384 { point: Vec<u8> },
}

/// Reads a JWK set; keys of other types are skipped.
fn parse_jwks(jwks: &Json) -> HashMap<String, Key> {
    let mut keys = HashMap::new();
    for k in jwks.get("keys").and_then(Json::as_array).into_iter().flatten() {
        let field = |name: &str| {
            k.get(name)
                .and_then(Json::as_str)
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
        };
        let kid = k.get("kid").and_then(Json::as_str).unwrap_or_default().to_string();
        let key = match (k.get("kty").and_then(Json::as_str), k.get("crv").and_then(Json::as_str)) {
            (Some("RSA"), _) => match (field("n"), field("e")) {
                (Some(n), Some(e)) => Key::Rsa { n, e },
                _ => continue,
            },
            (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => match (field("x"), field("y")) {
                (Some(x), Some(y)) => {
                    let point = [&[4u8][..], &x, &y].concat();
                    if crv == "P-256" {
                        Key::P256 { point }
                    } else {
                        Key::P384 { point }
                    }
                }
                _ => continue,
            },
            _ => continue,
        };
        keys.insert(kid, key);
    }
    keys
}

fn verify_signature(jws: &Jws<'_>, key: &Key) -> Result<(), Refusal> {
    let alg = jws.header.get("alg").and_then(Json::as_str).unwrap_or_default();
    let msg = jws.signing_input.as_bytes();
    let sig = jws.signature.as_slice();
    let ok = match (alg, key) {
        ("RS256", Key::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
            .is_ok(),
        ("RS384", Key::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA384, msg, sig)
            .is_ok(),
        ("RS512", Key::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA512, msg, sig)
            .is_ok(),
        ("ES256", Key::P256 { point }) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(msg, sig)
            .is_ok(),
        ("ES384", Key::P384 { point }) => UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
            .verify(msg, sig)
            .is_ok(),
        // "none", HMAC and anything else never verify.
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::BadSignature(String::new()))
    }
}

/// What a verified token is remembered by.
fn token_digest(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The issuer's keys, as last fetched.
struct Fetched {
    issuer: Option<String>,
    keys: HashMap<String, Key>,
    at: Instant,
}

struct CacheState {
    fetched: Option<Fetched>,
    /// When the last fetch was tried, and why it failed if it did.
    last_try: Option<(Instant, Option<String>)>,
    /// Tokens whose signature verified, by their SHA-256, with the key that
    /// verified them: a pod's token comes back on every republish until
    /// kubelet rotates it, and the signature need not be checked again
    /// while the issuer still publishes that key under the token's key id
    /// (part of the token, so of its digest). The claims (expiry included)
    /// are checked on every request all the same. At most
    /// [`MAX_VERIFIED_TOKENS`].
    verified: BoundedMap<[u8; 32], Key>,
}

/// Most tokens whose verified signature is remembered (see [`BoundedMap`]).
const MAX_VERIFIED_TOKENS: usize = 4096;

impl Default for CacheState {
    fn default() -> CacheState {
        CacheState {
            fetched: None,
            last_try: None,
            verified: BoundedMap::new(MAX_VERIFIED_TOKENS),
        }
    }
}

/// The cluster's service-account issuer keys, fetched through the
/// Kubernetes API and cached.
pub struct IssuerKeys {
    kube: Option<KubeClient>,
    state: Mutex<CacheState>,
}

impl IssuerKeys {
    /// Keys fetched with `kube`; `None` (no API access) verifies no
    /// signature.
    pub fn new(kube: Option<KubeClient>) -> IssuerKeys {
        IssuerKeys {
            kube,
            state: Mutex::new(CacheState::default()),
        }
    }

    /// Checks that `token` proves `pod` for `audience`: claims always, the
    /// signature when the issuer's keys can be had. A key id the issuer does
    /// not publish (after a fetch, at most every [`MISS_BACKOFF`]) is
    /// refused, as are a signature a published key does not verify and an
    /// algorithm Kubernetes never signs with; only when no keys can be read
    /// at all is the proof left to Vault's review.
    pub async fn prove(&self, token: &str, pod: &Pod, audience: &str) -> Result<Proof, Refusal> {
        let jws = decode(token)?;
        check_claims(&jws.claims, pod, audience, SystemTime::now())?;
        let alg = jws.header.get("alg").and_then(Json::as_str).unwrap_or_default();
        if !SIGNING_ALGORITHMS.contains(&alg) {
            return Err(Refusal::BadSignature(format!(
                " (algorithm {alg:?} is not one a Kubernetes issuer signs with)"
            )));
        }
        let kid = jws.header.get("kid").and_then(Json::as_str).unwrap_or_default();
        let key = match self.lookup(kid, Instant::now()) {
            Some(key) => Some(key),
            None => match self.refresh().await {
                Some(why) => return self.claims_only(&jws, why),
                None => self.lookup(kid, Instant::now()),
            },
        };
        let Some(key) = key else {
            return Err(Refusal::BadSignature(format!(
                " (the cluster's issuer publishes no key with id {})",
                crate::error::Quoted(kid)
            )));
        };
        let digest = token_digest(token);
        if !self.verified_with(&digest, &key) {
            verify_signature(&jws, &key)?;
            self.remember_verified(digest, key);
        }
        check_issuer(&jws.claims, self.known_issuer().as_deref())?;
        Ok(Proof::Verified)
    }

    /// Whether the token with this digest verified before with `key` (the
    /// key the issuer currently publishes under the token's key id).
    fn verified_with(&self, digest: &[u8; 32], key: &Key) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.verified.get(digest) == Some(key)
    }

    fn remember_verified(&self, digest: [u8; 32], key: Key) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.verified.insert(digest, key);
    }

    /// What is left when the signature cannot be checked (`why`): the
    /// claims, and the issuer if known.
    fn claims_only(&self, jws: &Jws<'_>, why: String) -> Result<Proof, Refusal> {
        check_issuer(&jws.claims, self.known_issuer().as_deref())?;
        Ok(Proof::ClaimsOnly(why))
    }

    /// The cluster's issuer, once its discovery document was read (kept
    /// while later fetches fail).
    fn known_issuer(&self) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.fetched.as_ref().and_then(|f| f.issuer.clone())
    }

    /// The key `kid`, if the cache holds it and is fresh.
    fn lookup(&self, kid: &str, now: Instant) -> Option<Key> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let fetched = state.fetched.as_ref()?;
        if now.duration_since(fetched.at) > REFRESH_AFTER {
            return None;
        }
        fetched.keys.get(kid).cloned()
    }

    /// Fetches the keys unless a fetch was tried within [`MISS_BACKOFF`];
    /// `Some(reason)` when no keys are available at all.
    async fn refresh(&self) -> Option<String> {
        {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, failure)) = &state.last_try {
                if at.elapsed() < MISS_BACKOFF {
                    let fresh = state.fetched.as_ref().is_some_and(|f| f.at.elapsed() <= REFRESH_AFTER);
                    return match (fresh, failure) {
                        (true, _) => None,
                        (false, Some(why)) => Some(why.clone()),
                        (false, None) => Some("the issuer's keys are out of date".to_string()),
                    };
                }
            }
        }
        let result = self.fetch().await;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match result {
            Ok((issuer, keys)) => {
                state.fetched = Some(Fetched { issuer, keys, at: now });
                state.last_try = Some((now, None));
                None
            }
            Err(why) => {
                if state
                    .last_try
                    .as_ref()
                    .is_none_or(|(_, f)| f.as_deref() != Some(why.as_str()))
                {
                    tracing::warn!(error = %why, "cannot read the cluster's service-account issuer keys; a held Vault token is reused for a token Vault reviewed, and any other is proven by a login whose token is revoked at once");
                }
                state.last_try = Some((now, Some(why.clone())));
                // Keys fetched before stay usable while fresh.
                match &state.fetched {
                    Some(f) if now.duration_since(f.at) <= REFRESH_AFTER => None,
                    _ => Some(why),
                }
            }
        }
    }

    async fn fetch(&self) -> Result<(Option<String>, HashMap<String, Key>), String> {
        let Some(kube) = &self.kube else {
            return Err("no Kubernetes API access".to_string());
        };
        let jwks = kube
            .get_json("/openid/v1/jwks")
            .await
            .map_err(|e| format!("GET /openid/v1/jwks: {e}"))?;
        let keys = parse_jwks(&jwks);
        if keys.is_empty() {
            return Err("GET /openid/v1/jwks listed no usable key".to_string());
        }
        // The issuer is a further check, not a requirement.
        let issuer = match kube.get_json("/.well-known/openid-configuration").await {
            Ok(doc) => doc.get("issuer").and_then(Json::as_str).map(str::to_string),
            Err(e) => {
                tracing::debug!(error = %e, "no issuer discovery document; checking signatures only");
                None
            }
        };
        Ok((issuer, keys))
    }
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair as _, RsaKeyPair};
    use rustls_pki_types::pem::PemObject as _;
    use serde_json::json;

    use super::*;

    fn pod() -> Pod {
        Pod {
            name: "web-0".into(),
            namespace: "default".into(),
            uid: "uid-1".into(),
            service_account: "app".into(),
        }
    }

    fn claims_for(pod: &Pod, exp_in: i64) -> Json {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        json!({
            "aud": ["vault"], "iss": "https://kube.test", "sub": format!("system:serviceaccount:{}:{}", pod.namespace, pod.service_account),
            "exp": now + exp_in, "iat": now, "nbf": now,
            "kubernetes.io": {
                "namespace": pod.namespace,
                "pod": {"name": pod.name, "uid": pod.uid},
                "serviceaccount": {"name": pod.service_account, "uid": "sa-uid"},
            },
        })
    }

    /// A P-256 signing key and the JWK set publishing it as `ec-1`.
    fn ec_key(rng: &SystemRandom) -> (EcdsaKeyPair, Json) {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), rng).unwrap();
        let point = ec.public_key().as_ref();
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "ec-1",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        }]});
        (ec, jwks)
    }

    fn jws(header: &Json, claims: &Json, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[test]
    fn claims_must_name_this_pod_and_be_current() {
        let p = pod();
        assert_eq!(
            check_claims(&claims_for(&p, 600), &p, "vault", SystemTime::now()),
            Ok(())
        );
        for other in [
            Pod {
                uid: "uid-2".into(),
                ..pod()
            },
            Pod {
                name: "web-1".into(),
                ..pod()
            },
            Pod {
                namespace: "prod".into(),
                ..pod()
            },
            Pod {
                service_account: "admin".into(),
                ..pod()
            },
        ] {
            assert!(matches!(
                check_claims(&claims_for(&p, 600), &other, "vault", SystemTime::now()),
                Err(Refusal::OtherPod { .. })
            ));
        }
        assert!(matches!(
            check_claims(&claims_for(&p, -1), &p, "vault", SystemTime::now()),
            Err(Refusal::Expired(_))
        ));
        let mut unbound = claims_for(&p, 600);
        unbound["kubernetes.io"].as_object_mut().unwrap().remove("pod");
        assert!(matches!(
            check_claims(&unbound, &p, "vault", SystemTime::now()),
            Err(Refusal::Malformed(_))
        ));
        let mut future = claims_for(&p, 600);
        future["nbf"] = json!(future["nbf"].as_u64().unwrap() + 3600);
        assert!(matches!(
            check_claims(&future, &p, "vault", SystemTime::now()),
            Err(Refusal::Expired(_))
        ));
        let mut minted_later = claims_for(&p, 600);
        minted_later["iat"] = json!(minted_later["iat"].as_u64().unwrap() + 3600);
        assert_eq!(
            check_claims(&minted_later, &p, "vault", SystemTime::now()),
            Err(Refusal::Expired("issued in the future".into()))
        );
        // Within the tolerated skew, a slightly fast clock is no reason.
        let mut skewed = claims_for(&p, 600);
        skewed["iat"] = json!(skewed["iat"].as_u64().unwrap() + 30);
        assert_eq!(check_claims(&skewed, &p, "vault", SystemTime::now()), Ok(()));
    }

    #[test]
    fn the_token_must_be_meant_for_the_class_audience() {
        let p = pod();
        let now = SystemTime::now();
        assert!(matches!(
            check_claims(&claims_for(&p, 600), &p, "openbao", now),
            Err(Refusal::OtherAudience { .. })
        ));
        let mut one = claims_for(&p, 600);
        one["aud"] = json!("openbao");
        assert_eq!(check_claims(&one, &p, "openbao", now), Ok(()));
        let mut several = claims_for(&p, 600);
        several["aud"] = json!(["https://kubernetes.default.svc", "vault"]);
        assert_eq!(check_claims(&several, &p, "vault", now), Ok(()));
        let mut none = claims_for(&p, 600);
        none.as_object_mut().unwrap().remove("aud");
        let e = check_claims(&none, &p, "vault", now).unwrap_err();
        assert!(e.to_string().contains("not \"vault\""), "{e}");
        assert_eq!(check_issuer(&claims_for(&p, 600), None), Ok(()));
        assert_eq!(check_issuer(&claims_for(&p, 600), Some("https://kube.test")), Ok(()));
        assert!(matches!(
            check_issuer(&claims_for(&p, 600), Some("https://other.test")),
            Err(Refusal::OtherIssuer { .. })
        ));
    }

    #[test]
    fn es256_and_rs256_signatures_verify_and_forgeries_do_not() {
        let rng = SystemRandom::new();
        let p = pod();
        let claims = claims_for(&p, 600);

        let (ec, jwks) = ec_key(&rng);
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(include_bytes!(
            "../../tests/fixtures/jwt-rsa-2048.pem"
        ))
        .unwrap();
        let rsa = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public());
        let mut keys = parse_jwks(&jwks);
        keys.extend(parse_jwks(&json!({"keys": [{
            "kty": "RSA", "kid": "rsa-1", "n": URL_SAFE_NO_PAD.encode(&public.n), "e": URL_SAFE_NO_PAD.encode(&public.e),
        }, {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}]})));
        assert_eq!(keys.len(), 2, "the symmetric key is not a verification key");

        let es = jws(&json!({"alg": "ES256", "kid": "ec-1"}), &claims, |m| {
            ec.sign(&rng, m).unwrap().as_ref().to_vec()
        });
        let rs = jws(&json!({"alg": "RS256", "kid": "rsa-1"}), &claims, |m| {
            let mut sig = vec![0; rsa.public().modulus_len()];
            rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, m, &mut sig).unwrap();
            sig
        });
        let check = |token: &str, kid: &str| {
            let j = decode(token).unwrap();
            verify_signature(&j, &keys[kid])
        };
        assert_eq!(check(&es, "ec-1"), Ok(()));
        assert_eq!(check(&rs, "rsa-1"), Ok(()));
        // The right key for the wrong algorithm, or the other key, fails.
        assert!(check(&es, "rsa-1").is_err());
        assert!(check(&rs, "ec-1").is_err());

        // Claims edited after signing (another pod's uid), or an unsigned token.
        let mut forged_claims = claims.clone();
        forged_claims["kubernetes.io"]["pod"]["uid"] = json!("uid-2");
        let (head, _) = es.split_once('.').unwrap();
        let sig = es.rsplit_once('.').unwrap().1;
        let forged = format!("{head}.{}.{sig}", URL_SAFE_NO_PAD.encode(forged_claims.to_string()));
        assert!(check(&forged, "ec-1").is_err());
        let none = jws(&json!({"alg": "none", "kid": "ec-1"}), &claims, |_| Vec::new());
        assert!(check(&none, "ec-1").is_err());
        let hs = jws(&json!({"alg": "HS256", "kid": "ec-1"}), &claims, |_| vec![1; 32]);
        assert!(check(&hs, "ec-1").is_err());
        assert!(matches!(decode("a.b"), Err(Refusal::Malformed(_))));
    }

    #[tokio::test]
    async fn an_unknown_key_id_is_refused_while_keys_are_loaded_and_a_known_one_must_verify() {
        let rng = SystemRandom::new();
        let p = pod();
        let (ec, jwks) = ec_key(&rng);
        let keys = IssuerKeys::new(None);
        {
            // As after a successful fetch, moments ago: inside the miss back-off.
            let mut state = keys.state.lock().unwrap();
            let now = Instant::now();
            state.fetched = Some(Fetched {
                issuer: Some("https://kube.test".into()),
                keys: parse_jwks(&jwks),
                at: now,
            });
            state.last_try = Some((now, None));
        }
        let sign = |header: Json, claims: &Json| jws(&header, claims, |m| ec.sign(&rng, m).unwrap().as_ref().to_vec());
        let claims = claims_for(&p, 600);
        let good = sign(json!({"alg": "ES256", "kid": "ec-1"}), &claims);
        assert_eq!(keys.prove(&good, &p, "vault").await, Ok(Proof::Verified));
        // A forged token naming a key id the issuer does not publish: with
        // fresh keys loaded it is refused, never left to Vault's review.
        let forged = sign(json!({"alg": "ES256", "kid": "ec-2"}), &claims);
        assert!(
            matches!(keys.prove(&forged, &p, "vault").await, Err(Refusal::BadSignature(why)) if why.contains("\"ec-2\"")),
            "an unknown key id with keys loaded is refused"
        );
        let mut elsewhere = claims.clone();
        elsewhere["iss"] = json!("https://other.test");
        let foreign = sign(json!({"alg": "ES256", "kid": "ec-1"}), &elsewhere);
        assert!(matches!(
            keys.prove(&foreign, &p, "vault").await,
            Err(Refusal::OtherIssuer { .. })
        ));
        let mut edited = good.rsplit_once('.').unwrap().0.to_string();
        edited.push_str(".AAAA");
        assert!(matches!(
            keys.prove(&edited, &p, "vault").await,
            Err(Refusal::BadSignature(_))
        ));
        // Keys out of date and the last fetch failed: nothing to check the
        // signature with, so the proof is left to Vault.
        {
            let mut state = keys.state.lock().unwrap();
            let long_ago = Instant::now() - REFRESH_AFTER - Duration::from_secs(1);
            state.fetched.as_mut().unwrap().at = long_ago;
            state.last_try = Some((Instant::now(), Some("GET /openid/v1/jwks: 403".into())));
        }
        assert!(matches!(
            keys.prove(&forged, &p, "vault").await,
            Ok(Proof::ClaimsOnly(why)) if why.contains("403")
        ));
    }

    #[tokio::test]
    async fn a_verified_token_is_remembered_only_while_its_key_and_claims_hold() {
        let rng = SystemRandom::new();
        let p = pod();
        let (ec, jwks) = ec_key(&rng);
        let keys = IssuerKeys::new(None);
        let publish = |jwks: &Json| {
            let mut state = keys.state.lock().unwrap();
            let now = Instant::now();
            state.fetched = Some(Fetched {
                issuer: None,
                keys: parse_jwks(jwks),
                at: now,
            });
            state.last_try = Some((now, None));
        };
        publish(&jwks);
        let sign = |claims: &Json| {
            jws(&json!({"alg": "ES256", "kid": "ec-1"}), claims, |m| {
                ec.sign(&rng, m).unwrap().as_ref().to_vec()
            })
        };
        let good = sign(&claims_for(&p, 600));
        assert_eq!(keys.prove(&good, &p, "vault").await, Ok(Proof::Verified));
        let published = keys.lookup("ec-1", Instant::now()).unwrap();
        assert!(keys.verified_with(&token_digest(&good), &published));
        assert_eq!(keys.prove(&good, &p, "vault").await, Ok(Proof::Verified));
        // The claims are checked on every request: a remembered token for
        // another pod or audience is refused.
        let mut other = pod();
        other.uid = "uid-2".into();
        assert!(matches!(
            keys.prove(&good, &other, "vault").await,
            Err(Refusal::OtherPod { .. })
        ));
        assert!(matches!(
            keys.prove(&good, &p, "other").await,
            Err(Refusal::OtherAudience { .. })
        ));
        // The issuer now publishes another key under that id: the old
        // signature is checked again, and fails.
        let (_, rotated) = ec_key(&rng);
        publish(&rotated);
        let published = keys.lookup("ec-1", Instant::now()).unwrap();
        assert!(!keys.verified_with(&token_digest(&good), &published));
        assert!(matches!(
            keys.prove(&good, &p, "vault").await,
            Err(Refusal::BadSignature(_))
        ));
        // Expiry is a claim, checked after the signature was remembered.
        publish(&jwks);
        let brief = sign(&claims_for(&p, 1));
        assert_eq!(keys.prove(&brief, &p, "vault").await, Ok(Proof::Verified));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(matches!(
            keys.prove(&brief, &p, "vault").await,
            Err(Refusal::Expired(_))
        ));
    }

    #[tokio::test]
    async fn without_api_access_only_the_claims_are_checked() {
        let keys = IssuerKeys::new(None);
        let p = pod();
        let token = jws(&json!({"alg": "ES256", "kid": "x"}), &claims_for(&p, 600), |_| {
            vec![0; 64]
        });
        assert!(matches!(
            keys.prove(&token, &p, "vault").await,
            Ok(Proof::ClaimsOnly(_))
        ));
        let other = Pod {
            uid: "uid-2".into(),
            ..pod()
        };
        assert!(matches!(
            keys.prove(&token, &other, "vault").await,
            Err(Refusal::OtherPod { .. })
        ));
        assert!(matches!(
            keys.prove(&token, &p, "openbao").await,
            Err(Refusal::OtherAudience { .. })
        ));
        // An algorithm no Kubernetes issuer uses is refused, keys or not.
        for alg in ["none", "HS256"] {
            let unsigned = jws(&json!({"alg": alg, "kid": "x"}), &claims_for(&p, 600), |_| Vec::new());
            assert!(matches!(
                keys.prove(&unsigned, &p, "vault").await,
                Err(Refusal::BadSignature(_))
            ));
        }
    }
}
