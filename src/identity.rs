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
//!   service account, and be unexpired (checked always, before any login
//!   too: a token for another pod is refused outright);
//! - carry a valid signature of the cluster's service-account issuer, whose
//!   keys the API server publishes at `/openid/v1/jwks` (readable by every
//!   service account by default). The keys are cached and fetched again at
//!   most every [`REFRESH_AFTER`], or sooner when a token names a key id not
//!   seen yet (the issuer rotated keys), at most every [`MISS_BACKOFF`].
//!
//! When the keys cannot be had, the only proof left is Vault's own review:
//! the Mounter then reuses a held token only for the very JWT Vault reviewed
//! at login, and logs in again for any other.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value as Json;

use crate::kube::KubeClient;
use crate::spc::Pod;

/// How long fetched issuer keys are trusted before they are fetched again.
pub const REFRESH_AFTER: Duration = Duration::from_secs(300);
/// Least time between fetches caused by unknown key ids or failures.
pub const MISS_BACKOFF: Duration = Duration::from_secs(10);
/// Clock skew tolerated for `nbf` and `iat` (never for `exp`).
const SKEW: u64 = 60;

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

/// Checks that `claims` name `pod` and are valid at `now`.
pub fn check_claims(claims: &Json, pod: &Pod, now: SystemTime) -> Result<(), Refusal> {
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
    Ok(())
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

/// The issuer's keys, as last fetched.
struct Fetched {
    issuer: Option<String>,
    keys: HashMap<String, Key>,
    at: Instant,
}

#[derive(Default)]
struct CacheState {
    fetched: Option<Fetched>,
    /// When the last fetch was tried, and why it failed if it did.
    last_try: Option<(Instant, Option<String>)>,
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

    /// Checks that `token` proves `pod`: claims always, the signature when
    /// the issuer's keys can be had.
    pub async fn prove(&self, token: &str, pod: &Pod) -> Result<Proof, Refusal> {
        let jws = decode(token)?;
        check_claims(&jws.claims, pod, SystemTime::now())?;
        let kid = jws
            .header
            .get("kid")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(found) = self.lookup(&kid, Instant::now()) {
            return self.conclude(&jws, found);
        }
        if let Some(why) = self.refresh().await {
            return Ok(Proof::ClaimsOnly(why));
        }
        match self.lookup(&kid, Instant::now()) {
            Some(found) => self.conclude(&jws, found),
            None => Err(Refusal::BadSignature(format!(" (no key with id {kid:?})"))),
        }
    }

    fn conclude(&self, jws: &Jws<'_>, (key, issuer): (Key, Option<String>)) -> Result<Proof, Refusal> {
        verify_signature(jws, &key)?;
        let iss = jws.claims.get("iss").and_then(Json::as_str);
        if let Some(expected) = issuer {
            if iss != Some(expected.as_str()) {
                return Err(Refusal::BadSignature(format!(
                    " (issued by {:?}, not the cluster's issuer {expected:?})",
                    iss.unwrap_or_default()
                )));
            }
        }
        Ok(Proof::Verified)
    }

    /// The key `kid` and the issuer, if the cache holds them and is fresh.
    fn lookup(&self, kid: &str, now: Instant) -> Option<(Key, Option<String>)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let fetched = state.fetched.as_ref()?;
        if now.duration_since(fetched.at) > REFRESH_AFTER {
            return None;
        }
        fetched.keys.get(kid).map(|k| (k.clone(), fetched.issuer.clone()))
    }

    /// Fetches the keys unless a fetch was tried within [`MISS_BACKOFF`];
    /// `Some(reason)` when no keys are available at all.
    async fn refresh(&self) -> Option<String> {
        {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, failure)) = &state.last_try {
                if at.elapsed() < MISS_BACKOFF {
                    return match (&state.fetched, failure) {
                        (Some(_), _) => None,
                        (None, Some(why)) => Some(why.clone()),
                        (None, None) => Some("the issuer published no keys".to_string()),
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
                    tracing::warn!(error = %why, "cannot read the cluster's service-account issuer keys; held Vault tokens are reused only for the exact token Vault reviewed");
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
        assert_eq!(check_claims(&claims_for(&p, 600), &p, SystemTime::now()), Ok(()));
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
                check_claims(&claims_for(&p, 600), &other, SystemTime::now()),
                Err(Refusal::OtherPod { .. })
            ));
        }
        assert!(matches!(
            check_claims(&claims_for(&p, -1), &p, SystemTime::now()),
            Err(Refusal::Expired(_))
        ));
        let mut unbound = claims_for(&p, 600);
        unbound["kubernetes.io"].as_object_mut().unwrap().remove("pod");
        assert!(matches!(
            check_claims(&unbound, &p, SystemTime::now()),
            Err(Refusal::Malformed(_))
        ));
        let mut future = claims_for(&p, 600);
        future["nbf"] = json!(future["nbf"].as_u64().unwrap() + 3600);
        assert!(matches!(
            check_claims(&future, &p, SystemTime::now()),
            Err(Refusal::Expired(_))
        ));
    }

    #[test]
    fn es256_and_rs256_signatures_verify_and_forgeries_do_not() {
        let rng = SystemRandom::new();
        let p = pod();
        let claims = claims_for(&p, 600);

        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = ec.public_key().as_ref();
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "ec-1",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        }]});
        let der =
            rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(include_bytes!("../tests/fixtures/jwt-rsa-2048.pem"))
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
    async fn without_api_access_only_the_claims_are_checked() {
        let keys = IssuerKeys::new(None);
        let p = pod();
        let token = jws(&json!({"alg": "ES256", "kid": "x"}), &claims_for(&p, 600), |_| {
            vec![0; 64]
        });
        assert!(matches!(keys.prove(&token, &p).await, Ok(Proof::ClaimsOnly(_))));
        let other = Pod {
            uid: "uid-2".into(),
            ..pod()
        };
        assert!(matches!(
            keys.prove(&token, &other).await,
            Err(Refusal::OtherPod { .. })
        ));
    }
}
