//! Reviews and tokens: TokenReview, the access reviews, and TokenRequest
//! (the `token` subresource of a ServiceAccount).

use std::sync::Arc;

use http::Response;
use serde_json::{json, Value};

use super::api::{json_response, key, Body, Ctx};
use super::rbac::{self, Target};
use super::resources::{self, Resource};
use super::status::{Cause, Status};
use super::tokens::{rfc3339, unix_now, Claims, User};

/// TokenRequest's bounds on `expirationSeconds`.
const MIN_TOKEN_SECONDS: i64 = 600;
const MAX_TOKEN_SECONDS: i64 = 1 << 32;

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

pub(super) fn token_review(ctx: &Ctx, r: &'static Resource) -> Result<Response<Body>, Status> {
    ctx.authorize("create", r, None, None, None)?;
    let body = ctx.document(r)?;
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    if token.is_empty() {
        return Err(Status::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let asked = string_list(&body["spec"]["audiences"]);
    let audiences = if asked.is_empty() {
        vec![ctx.shared.issuer.clone()]
    } else {
        asked.clone()
    };
    let mut spec = json!({"token": token});
    if !asked.is_empty() {
        spec["audiences"] = json!(asked);
    }
    let status = match ctx.shared.review(token, &audiences) {
        Ok(subject) => json!({
            "authenticated": true,
            "user": subject.user().to_json(),
            "audiences": subject.audiences,
        }),
        Err(e) => json!({"user": {}, "error": format!("[invalid bearer token, {e}]")}),
    };
    Ok(json_response(
        201,
        &json!({
            "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null}, "spec": spec, "status": status,
        }),
    ))
}

pub(super) fn access_review(ctx: &Ctx, r: &'static Resource) -> Result<Response<Body>, Status> {
    ctx.authorize("create", r, None, None, None)?;
    let body = ctx.document(r)?;
    let spec = &body["spec"];
    let who = if r.plural == "selfsubjectaccessreviews" {
        ctx.user.clone()
    } else {
        let name = spec["user"].as_str().unwrap_or_default();
        let mut user = match name
            .strip_prefix("system:serviceaccount:")
            .and_then(|x| x.split_once(':'))
        {
            Some((ns, sa)) => User::service_account(ns, sa),
            None => User {
                name: name.to_string(),
                ..User::default()
            },
        };
        let groups = string_list(&spec["groups"]);
        if !groups.is_empty() {
            user.groups = groups;
        }
        user
    };
    let ra = &spec["resourceAttributes"];
    let allowed = if ra.is_object() {
        let text = |f: &str| ra[f].as_str().filter(|s| !s.is_empty());
        let target = Target::Resource {
            group: text("group").unwrap_or_default(),
            resource: text("resource").unwrap_or_default(),
            subresource: text("subresource"),
            namespace: text("namespace"),
            name: text("name"),
        };
        rbac::allowed(&ctx.shared.lock(), &who, text("verb").unwrap_or_default(), &target)
    } else {
        let nra = &spec["nonResourceAttributes"];
        let path = nra["path"].as_str().unwrap_or_default();
        let verb = nra["verb"].as_str().unwrap_or_default();
        rbac::allowed(&ctx.shared.lock(), &who, verb, &Target::Path(path))
    };
    let mut status = json!({"allowed": allowed});
    if allowed {
        status["reason"] = json!("RBAC: allowed by the test double's authorizer");
    }
    let mut answer = body.clone();
    answer["kind"] = json!(r.kind);
    answer["apiVersion"] = json!(r.api_version());
    answer["metadata"] = json!({"creationTimestamp": null});
    answer["status"] = status;
    Ok(json_response(201, &answer))
}

pub(super) fn token_request(ctx: &Ctx, r: &'static Resource, ns: &str, sa: &str) -> Result<Response<Body>, Status> {
    ctx.authorize("create", r, Some("token"), Some(ns), Some(sa))?;
    let body: Value = serde_json::from_slice(&ctx.body).map_err(|e| {
        Status::bad_request(format!(
            "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: {e}"
        ))
    })?;
    let spec = &body["spec"];
    let expiration = match &spec["expirationSeconds"] {
        Value::Null => 3600,
        v => v.as_i64().ok_or_else(|| {
            Status::bad_request("TokenRequest in version \"v1\" cannot be handled as a TokenRequest: json: cannot unmarshal into Go struct field TokenRequestSpec.spec.expirationSeconds of type int64")
        })?,
    };
    let kind = "TokenRequest.authentication.k8s.io";
    if expiration < MIN_TOKEN_SECONDS {
        return Err(Status::invalid(
            kind,
            "",
            vec![Cause::invalid(
                "spec.expirationSeconds",
                &json!(expiration),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    if expiration > MAX_TOKEN_SECONDS {
        return Err(Status::invalid(
            kind,
            "",
            vec![Cause::too_long(
                "spec.expirationSeconds",
                "may not specify a duration larger than 2^32 seconds",
            )],
        ));
    }
    let asked = string_list(&spec["audiences"]);
    let audiences = if asked.is_empty() {
        vec![ctx.shared.issuer.clone()]
    } else {
        asked
    };
    let bound = spec.get("boundObjectRef").filter(|v| !v.is_null());
    let store = ctx.shared.lock();
    let lookup = |plural: &str, ns: Option<&str>, name: &str| -> Result<Arc<Value>, Status> {
        let r = resources::find("", "v1", plural).ok_or_else(|| Status::internal(format!("no {plural}")))?;
        store.get(&key(r, ns, name)).ok_or_else(|| Status::not_found(r, name))
    };
    let account = lookup("serviceaccounts", Some(ns), sa)?;
    let sa_uid = account["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let mut pod = None;
    let mut node = None;
    let mut bound_out = None;
    if let Some(b) = bound {
        let kind = b["kind"].as_str().unwrap_or_default();
        let name = b["name"].as_str().unwrap_or_default();
        if kind != "Pod" {
            return Err(Status::bad_request(format!(
                "cannot bind token for serviceaccount {sa:?} to an object of kind {kind:?}: the double binds tokens to pods only"
            )));
        }
        let p = lookup("pods", Some(ns), name)?;
        let pod_uid = p["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        if let Some(uid) = b["uid"].as_str().filter(|u| !u.is_empty()) {
            if uid != pod_uid {
                let pods = resources::find("", "v1", "pods").ok_or_else(|| Status::internal("no pods"))?;
                return Err(Status::conflict(
                    pods,
                    name,
                    &format!("the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"),
                ));
            }
        }
        if p["spec"]["serviceAccountName"].as_str() != Some(sa) {
            return Err(Status::bad_request(format!(
                "cannot bind token for serviceaccount {sa:?} to pod running with different serviceaccount name."
            )));
        }
        if let Some(node_name) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            if let Ok(n) = lookup("nodes", None, node_name) {
                node = Some((
                    node_name.to_string(),
                    n["metadata"]["uid"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        bound_out = Some(json!({"kind": "Pod", "apiVersion": "v1", "name": name, "uid": pod_uid}));
        pod = Some((name.to_string(), pod_uid));
    }
    drop(store);
    let now = unix_now();
    let ttl = expiration.unsigned_abs();
    let jti = ctx.shared.uid();
    let claims = super::tokens::claims(
        &ctx.shared.issuer,
        &Claims {
            namespace: ns,
            service_account: (sa, &sa_uid),
            pod: pod.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
            node: node.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
            audiences: &audiences,
            ttl,
            jti: &jti,
        },
        now,
    );
    let token = ctx
        .shared
        .signer
        .sign(&claims)
        .map_err(|e| Status::internal(format!("signing the token: {e}")))?;
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": expiration});
    if let Some(b) = bound_out {
        out_spec["boundObjectRef"] = b;
    }
    Ok(json_response(
        201,
        &json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": sa, "namespace": ns, "creationTimestamp": null},
            "spec": out_spec,
            "status": {"token": token, "expirationTimestamp": rfc3339(now + ttl)},
        }),
    ))
}
