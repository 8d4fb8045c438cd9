//! Minting and reviewing service-account tokens, with the checks the API
//! server's service-account authenticator makes.

use anyhow::Result;
use serde_json::{json, Value};

use super::crypto::unix_now;
use super::Shared;

/// Who a valid token speaks for.
#[derive(Clone, Debug)]
pub(super) struct Identity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `(name, uid)` of the pod a bound token belongs to.
    pub pod: Option<(String, String)>,
    /// The token's audiences that matched the requested ones.
    pub audiences: Vec<String>,
    pub jti: String,
}

impl Identity {
    /// `system:serviceaccount:<ns>:<name>`.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    /// `status.user` of a successful TokenReview.
    pub fn user_info(&self) -> Value {
        let mut extra = serde_json::Map::new();
        if let Some((pod, pod_uid)) = &self.pod {
            extra.insert("authentication.kubernetes.io/pod-name".into(), json!([pod]));
            extra.insert("authentication.kubernetes.io/pod-uid".into(), json!([pod_uid]));
        }
        if !self.jti.is_empty() {
            extra.insert(
                "authentication.kubernetes.io/credential-id".into(),
                json!([format!("JTI={}", self.jti)]),
            );
        }
        json!({
            "username": self.username(),
            "uid": self.uid,
            "groups": [
                "system:serviceaccounts",
                format!("system:serviceaccounts:{}", self.namespace),
                "system:authenticated",
            ],
            "extra": extra,
        })
    }
}

/// What a new token says.
pub(super) struct TokenClaims<'a> {
    pub namespace: &'a str,
    pub sa_name: &'a str,
    pub sa_uid: &'a str,
    pub pod: Option<(&'a str, &'a str)>,
    /// Empty means the API server's default audience (the issuer).
    pub audiences: &'a [String],
    pub ttl_seconds: u64,
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quoted_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", inner.join(" "))
}

fn str_claim<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

impl Shared {
    /// Signs a token like the TokenRequest API issues; returns it with its expiry.
    pub(super) fn mint(&self, c: &TokenClaims) -> Result<(String, u64)> {
        let now = unix_now();
        let exp = now + c.ttl_seconds;
        let audiences: Vec<String> = if c.audiences.is_empty() {
            vec![self.issuer.clone()]
        } else {
            c.audiences.to_vec()
        };
        let mut k8s = serde_json::Map::new();
        k8s.insert("namespace".into(), json!(c.namespace));
        if let Some((name, uid)) = c.pod {
            k8s.insert("pod".into(), json!({"name": name, "uid": uid}));
        }
        k8s.insert("serviceaccount".into(), json!({"name": c.sa_name, "uid": c.sa_uid}));
        let claims = json!({
            "aud": audiences,
            "exp": exp,
            "iat": now,
            "iss": self.issuer,
            "jti": self.uids.next(),
            "kubernetes.io": k8s,
            "nbf": now,
            "sub": format!("system:serviceaccount:{}:{}", c.namespace, c.sa_name),
        });
        Ok((self.signer.sign(&claims)?, exp))
    }

    /// Validates `token` for `audiences` (empty: the API server's own audience)
    /// and that the service account and bound pod still exist unchanged.
    /// The error is the TokenReview `status.error` text.
    pub(super) fn review(&self, token: &str, audiences: &[String]) -> Result<Identity, String> {
        let wrap = |detail: String| format!("[invalid bearer token, {detail}]");
        let claims = self.signer.verify(token).map_err(|e| wrap(e.to_string()))?;
        if str_claim(&claims, "/iss") != Some(self.issuer.as_str()) {
            return Err(wrap("token issuer is not trusted".into()));
        }
        let now = unix_now();
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        if now >= exp {
            return Err(wrap(
                "square/go-jose/jwt: validation failed, token is expired (exp)".into(),
            ));
        }
        let nbf = claims.get("nbf").and_then(Value::as_u64).unwrap_or(0);
        if now < nbf {
            return Err(wrap(
                "square/go-jose/jwt: validation failed, token not valid yet (nbf)".into(),
            ));
        }
        let token_aud: Vec<String> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let wanted: Vec<String> = if audiences.is_empty() {
            vec![self.issuer.clone()]
        } else {
            audiences.to_vec()
        };
        let matched: Vec<String> = wanted.iter().filter(|a| token_aud.contains(a)).cloned().collect();
        if matched.is_empty() {
            return Err(wrap(format!(
                "token audiences {} is invalid for the target audiences {}",
                go_quoted_list(&token_aud),
                go_quoted_list(&wanted)
            )));
        }
        let (Some(namespace), Some(sa_name), Some(sa_uid)) = (
            str_claim(&claims, "/kubernetes.io/namespace"),
            str_claim(&claims, "/kubernetes.io/serviceaccount/name"),
            str_claim(&claims, "/kubernetes.io/serviceaccount/uid"),
        ) else {
            return Err(wrap("token lacks kubernetes.io service account claims".into()));
        };
        let pod = match (
            str_claim(&claims, "/kubernetes.io/pod/name"),
            str_claim(&claims, "/kubernetes.io/pod/uid"),
        ) {
            (Some(n), Some(u)) => Some((n.to_owned(), u.to_owned())),
            _ => None,
        };
        {
            let st = self.lock();
            let key = (namespace.to_owned(), sa_name.to_owned());
            let sa = st
                .service_accounts
                .get(&key)
                .ok_or_else(|| wrap(format!("serviceaccounts \"{sa_name}\" not found")))?;
            if sa.uid != sa_uid {
                return Err(wrap(format!(
                    "service account UID ({}) does not match claim ({sa_uid})",
                    sa.uid
                )));
            }
            if let Some((pod_name, pod_uid)) = &pod {
                let p = st
                    .pods
                    .get(&(namespace.to_owned(), pod_name.clone()))
                    .ok_or_else(|| wrap(format!("pods \"{pod_name}\" not found")))?;
                if &p.uid != pod_uid {
                    return Err(wrap(format!("pod UID ({}) does not match claim ({pod_uid})", p.uid)));
                }
            }
        }
        Ok(Identity {
            namespace: namespace.to_owned(),
            name: sa_name.to_owned(),
            uid: sa_uid.to_owned(),
            pod,
            audiences: matched,
            jti: str_claim(&claims, "/jti").unwrap_or_default().to_owned(),
        })
    }
}
