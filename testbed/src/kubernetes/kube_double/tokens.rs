//! Service-account tokens as kube-apiserver makes and checks them: JWTs
//! signed RS256 or ES256 with the `--service-account-signing-key-file` key,
//! the claims TokenRequest puts in them, and the checks its service-account
//! authenticator makes (signature, issuer, audience, time with a minute of
//! leeway, and that the service account, pod and node still exist with the
//! uids the token names).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde_json::{json, Value};

use crate::kubernetes::pki::Signing;

/// The leeway the real validator allows on `exp`, `nbf` and `iat`.
const LEEWAY_SECONDS: u64 = 60;

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 with seconds, as Kubernetes writes times.
pub fn rfc3339(unix_seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(unix_seconds)).to_string()
}

enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// Signs and verifies tokens with one key pair.
pub struct Signer {
    key: Key,
    signing: Signing,
    kid: String,
    rng: SystemRandom,
}

impl Signer {
    /// The signer of a PKCS#8 private key (PEM) whose public key is
    /// `public_pem` (SPKI PEM). The key id is what kube-apiserver derives:
    /// base64url of the SHA-256 of the public key's DER.
    pub fn new(signing: Signing, private_pem: &str, public_pem: &str) -> Result<Signer> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(private_pem.as_bytes()).context("the signing key (PKCS#8 PEM)")?;
        let rng = SystemRandom::new();
        let key = match signing {
            Signing::Rs256 => Key::Rsa(
                RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| anyhow!("the RSA signing key: {e}"))?,
            ),
            Signing::Es256 => Key::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der.secret_pkcs8_der(),
                    &rng,
                )
                .map_err(|e| anyhow!("the P-256 signing key: {e}"))?,
            ),
        };
        let spki =
            SubjectPublicKeyInfoDer::from_pem_slice(public_pem.as_bytes()).context("the public key (SPKI PEM)")?;
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, spki.as_ref()));
        Ok(Signer { key, signing, kid, rng })
    }

    /// The public key as `/openid/v1/jwks` lists it.
    pub fn jwk(&self) -> Value {
        match &self.key {
            Key::Rsa(k) => {
                let parts = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({
                    "use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256",
                    "n": URL_SAFE_NO_PAD.encode(&parts.n), "e": URL_SAFE_NO_PAD.encode(&parts.e),
                })
            }
            Key::Ec(k) => {
                // 0x04 || x || y
                let point = k.public_key().as_ref();
                let (x, y) = point[1..].split_at(32);
                json!({
                    "use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
                    "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
                })
            }
        }
    }

    /// The algorithm tokens carry.
    pub fn alg(&self) -> &'static str {
        self.signing.alg()
    }

    /// A compact JWS over `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String> {
        let header = json!({"alg": self.alg(), "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        let sig = match &self.key {
            Key::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, input.as_bytes(), &mut sig)
                    .map_err(|_| anyhow!("RS256 signing failed"))?;
                sig
            }
            Key::Ec(k) => k
                .sign(&self.rng, input.as_bytes())
                .map_err(|_| anyhow!("ES256 signing failed"))?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// The claims of `token` if this key signed it. Errors in go-jose's
    /// words, which the real server passes on.
    pub fn verify(&self, token: &str) -> Result<Value> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            bail!("go-jose/go-jose: compact JWS format must have three parts");
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| anyhow!("go-jose/go-jose: invalid JWS header"))?;
        if header["alg"] != self.alg() {
            bail!("go-jose/go-jose: unexpected signature algorithm {}", header["alg"]);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| anyhow!("go-jose/go-jose: invalid signature encoding"))?;
        let input = &token[..h.len() + 1 + c.len()];
        let verified = match &self.key {
            Key::Rsa(k) => UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, k.public().as_ref())
                .verify(input.as_bytes(), &sig),
            Key::Ec(k) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, k.public_key().as_ref())
                .verify(input.as_bytes(), &sig),
        };
        verified.map_err(|_| anyhow!("go-jose/go-jose: error in cryptographic primitive"))?;
        URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| anyhow!("go-jose/go-jose: invalid claims"))
    }
}

/// Who a request or a token speaks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// `system:serviceaccount:ns:name`, `system:anonymous`, a CN, ...
    pub name: String,
    /// The user's uid (a service account's).
    pub uid: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// `extra` (pod name and uid, node, credential id).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// `system:anonymous`, what a request without credentials is.
    pub fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..User::default()
        }
    }

    /// A service account's user, with the groups the authenticator adds.
    pub fn service_account(namespace: &str, name: &str) -> User {
        User {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            ..User::default()
        }
    }

    /// `status.user` of a TokenReview.
    pub fn to_json(&self) -> Value {
        let mut user = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            user["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            user["extra"] = json!(self.extra);
        }
        user
    }
}

/// What a token is for, as TokenRequest asks for it.
pub struct Claims<'a> {
    /// The service account's namespace.
    pub namespace: &'a str,
    /// Its name and uid.
    pub service_account: (&'a str, &'a str),
    /// The pod it is bound to: name and uid.
    pub pod: Option<(&'a str, &'a str)>,
    /// The pod's node: name and uid.
    pub node: Option<(&'a str, &'a str)>,
    /// Its audiences (never empty: the API audiences by default).
    pub audiences: &'a [String],
    /// Seconds until it expires.
    pub ttl: u64,
    /// The token's unique id.
    pub jti: &'a str,
}

/// The claim set kube-apiserver signs (key order as it writes them).
pub fn claims(issuer: &str, c: &Claims, now: u64) -> Value {
    let mut k8s = json!({
        "namespace": c.namespace,
        "serviceaccount": {"name": c.service_account.0, "uid": c.service_account.1},
    });
    if let Some((name, uid)) = c.pod {
        k8s["pod"] = json!({"name": name, "uid": uid});
    }
    if let Some((name, uid)) = c.node {
        k8s["node"] = json!({"name": name, "uid": uid});
    }
    json!({
        "aud": c.audiences,
        "exp": now + c.ttl,
        "iat": now,
        "iss": issuer,
        "jti": c.jti,
        "kubernetes.io": k8s,
        "nbf": now,
        "sub": format!("system:serviceaccount:{}:{}", c.namespace, c.service_account.0),
    })
}

/// What a token's claims say about its subject, read but not yet checked
/// against the objects it names.
#[derive(Debug)]
pub struct Subject {
    /// The namespace.
    pub namespace: String,
    /// The service account's name and uid.
    pub service_account: (String, String),
    /// The bound pod's name and uid.
    pub pod: Option<(String, String)>,
    /// The node's name and uid.
    pub node: Option<(String, String)>,
    /// The token's id.
    pub jti: String,
    /// The token's audiences that were asked for.
    pub audiences: Vec<String>,
}

/// Go's `%q` of a `[]string`.
fn go_quoted(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", inner.join(" "))
}

fn str_at(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer).and_then(Value::as_str).map(str::to_owned)
}

fn pair(v: &Value, pointer: &str) -> Option<(String, String)> {
    Some((
        str_at(v, &format!("{pointer}/name"))?,
        str_at(v, &format!("{pointer}/uid"))?,
    ))
}

impl Signer {
    /// Checks `token`'s signature, issuer, audience (one of `wanted`) and
    /// time, as the service-account authenticator does; the subject it
    /// names. Errors are the text the real server puts in a TokenReview.
    pub fn subject(&self, token: &str, issuer: &str, wanted: &[String], now: u64) -> Result<Subject, String> {
        let claims = self.verify(token).map_err(|e| e.to_string())?;
        if str_at(&claims, "/iss").as_deref() != Some(issuer) {
            return Err("token issuer is not trusted".into());
        }
        let aud: Vec<String> = match &claims["aud"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let matched: Vec<String> = wanted.iter().filter(|a| aud.contains(a)).cloned().collect();
        if matched.is_empty() {
            return Err(format!(
                "token audiences {} is invalid for the target audiences {}",
                go_quoted(&aud),
                go_quoted(wanted)
            ));
        }
        let time = |name: &str| claims[name].as_u64();
        if time("exp").is_some_and(|exp| now > exp + LEEWAY_SECONDS) {
            return Err("service account token has expired".into());
        }
        if time("nbf").is_some_and(|nbf| now + LEEWAY_SECONDS < nbf) {
            return Err("service account token is not valid yet".into());
        }
        if time("iat").is_some_and(|iat| now + LEEWAY_SECONDS < iat) {
            return Err("service account token is issued in the future".into());
        }
        let (Some(namespace), Some(service_account)) = (
            str_at(&claims, "/kubernetes.io/namespace"),
            pair(&claims, "/kubernetes.io/serviceaccount"),
        ) else {
            return Err("service account token claims are missing".into());
        };
        Ok(Subject {
            namespace,
            service_account,
            pod: pair(&claims, "/kubernetes.io/pod"),
            node: pair(&claims, "/kubernetes.io/node"),
            jti: str_at(&claims, "/jti").unwrap_or_default(),
            audiences: matched,
        })
    }
}

impl Subject {
    /// The user a checked token authenticates as.
    pub fn user(&self) -> User {
        let mut user = User::service_account(&self.namespace, &self.service_account.0);
        user.uid = self.service_account.1.clone();
        let mut extra = |k: &str, v: &str| {
            user.extra
                .insert(format!("authentication.kubernetes.io/{k}"), vec![v.to_string()]);
        };
        if !self.jti.is_empty() {
            extra("credential-id", &format!("JTI={}", self.jti));
        }
        if let Some((name, uid)) = &self.node {
            extra("node-name", name);
            extra("node-uid", uid);
        }
        if let Some((name, uid)) = &self.pod {
            extra("pod-name", name);
            extra("pod-uid", uid);
        }
        user
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(signing: Signing) -> Signer {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = crate::kubernetes::pki::signing_key(signing, dir.path()).unwrap();
        Signer::new(signing, &private, &public).unwrap()
    }

    #[test]
    fn tokens_verify_with_their_own_key_only_and_check_audience_and_time() {
        for signing in [Signing::Rs256, Signing::Es256] {
            let s = signer(signing);
            let aud = vec!["vault".to_string()];
            let c = Claims {
                namespace: "ns",
                service_account: ("app", "sa-uid"),
                pod: Some(("web-0", "pod-uid")),
                node: None,
                audiences: &aud,
                ttl: 600,
                jti: "j",
            };
            let now = unix_now();
            let token = s.sign(&claims("https://i", &c, now)).unwrap();
            let subject = s.subject(&token, "https://i", &aud, now).unwrap();
            assert_eq!(subject.pod, Some(("web-0".into(), "pod-uid".into())));
            assert_eq!(subject.user().name, "system:serviceaccount:ns:app");
            let other = signer(signing);
            assert!(other.subject(&token, "https://i", &aud, now).is_err(), "another key");
            let e = s.subject(&token, "https://i", &["api".into()], now).unwrap_err();
            assert_eq!(
                e,
                r#"token audiences ["vault"] is invalid for the target audiences ["api"]"#
            );
            assert!(s.subject(&token, "https://i", &aud, now + 600 + 59).is_ok(), "leeway");
            let e = s.subject(&token, "https://i", &aud, now + 600 + 61).unwrap_err();
            assert_eq!(e, "service account token has expired");
            assert_eq!(s.jwk()["alg"], signing.alg());
        }
    }
}
