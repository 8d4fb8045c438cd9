//! The double's HTTP surface: authentication (client certificates, bearer
//! tokens, anonymous) and impersonation, RBAC, content negotiation, and
//! routing to non-resource URLs (health, version, discovery, the issuer's
//! keys) and to the verbs: reads in [`super::read`], writes in
//! [`super::write`], reviews and tokens in [`super::reviews`].

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::discovery;
use super::rbac::{self, Target};
use super::resources::{self, Resource};
use super::status::Status;
use super::store::{self, Key};
use super::tokens::User;
use super::{read, reviews, validate, write, Shared};

/// A whole JSON document, or a watch stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// The API server's limit on request bodies.
const MAX_BODY: usize = 3 * 1024 * 1024;

fn respond(code: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

pub(super) fn json_response(code: u16, v: &Value) -> Response<Body> {
    respond(code, "application/json", v.to_string().into_bytes())
}

/// Every request on every connection; `peer` is the client certificate's
/// user, when it presented one the double knows.
pub async fn handle(
    shared: Arc<Shared>,
    peer: Option<User>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let target = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let answer = serve(&shared, peer, req).await.unwrap_or_else(|s| {
        tracing::debug!(%method, %target, code = s.code, message = %s.message, "kube double: request failed");
        json_response(s.code, &s.to_json())
    });
    Ok(answer)
}

/// A parsed request, after authentication.
pub(super) struct Ctx<'a> {
    pub(super) shared: &'a Arc<Shared>,
    pub(super) user: User,
    pub(super) method: Method,
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Ctx<'_> {
    pub(super) fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(super) fn header(&self, name: impl http::header::AsHeaderName) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub(super) fn allowed(&self, verb: &str, target: &Target) -> bool {
        rbac::allowed(&self.shared.lock(), &self.user, verb, target)
    }

    /// 403 unless RBAC lets the user do this to `r`.
    pub(super) fn authorize(
        &self,
        verb: &str,
        r: &Resource,
        sub: Option<&str>,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Result<(), Status> {
        let target = Target::Resource {
            group: r.group,
            resource: r.plural,
            subresource: sub,
            namespace: ns,
            name,
        };
        if self.allowed(verb, &target) {
            Ok(())
        } else {
            Err(Status::forbidden(&self.user.name, verb, r, sub, ns, name))
        }
    }

    /// The body as a JSON (or YAML) document.
    pub(super) fn document(&self, r: &Resource) -> Result<Value, Status> {
        let media = media_type(self.header(http::header::CONTENT_TYPE));
        let parsed = match media.as_str() {
            "application/json" | "" => serde_json::from_slice::<Value>(&self.body).map_err(|e| e.to_string()),
            "application/yaml" | "application/apply-patch+yaml" => {
                serde_yaml_ng::from_slice::<Value>(&self.body).map_err(|e| e.to_string())
            }
            "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/json-patch+json" => serde_json::from_slice::<Value>(&self.body).map_err(|e| e.to_string()),
            "application/vnd.kubernetes.protobuf" if r.plural.ends_with("accessreviews") => {
                super::protobuf::access_review(&self.body)
            }
            other => return Err(Status::unsupported_media_type(other)),
        };
        parsed.map_err(|e| {
            Status::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: {e}",
                r.kind, r.version, r.kind
            ))
        })
    }

    /// The field manager of a write: `fieldManager`, else the user agent's
    /// first word, as the real server derives it.
    pub(super) fn manager(&self) -> String {
        if let Some(m) = self.query("fieldManager").filter(|m| !m.is_empty()) {
            return m.to_string();
        }
        let ua = self.header(http::header::USER_AGENT);
        let first = ua.split('/').next().unwrap_or_default().trim();
        if first.is_empty() {
            "unknown".into()
        } else {
            first.chars().filter(|c| !c.is_control()).take(128).collect()
        }
    }

    pub(super) fn dry_run(&self) -> bool {
        self.query("dryRun") == Some("All")
    }
}

pub(super) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// What the client asked to get back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Output {
    /// The objects as they are.
    Full,
    /// `PartialObjectMetadata`(`List`).
    Metadata,
}

/// The representation the `Accept` header asks for: the first acceptable
/// media range wins; JSON only (protobuf, YAML and tables are not served,
/// so a client offering nothing else gets 406).
pub(super) fn negotiate(headers: &HeaderMap, list: bool) -> Result<Output, Status> {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.trim().is_empty() {
        return Ok(Output::Full);
    }
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        if !matches!(media.as_str(), "application/json" | "application/*" | "*/*") {
            continue;
        }
        let params: Vec<(String, String)> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let param = |k: &str| params.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        match param("as") {
            None => return Ok(Output::Full),
            Some(kind) => {
                let wanted = if list {
                    "PartialObjectMetadataList"
                } else {
                    "PartialObjectMetadata"
                };
                if kind == wanted && param("g") == Some("meta.k8s.io") && matches!(param("v"), Some("v1" | "v1beta1")) {
                    return Ok(Output::Metadata);
                }
            }
        }
    }
    Err(Status::not_acceptable(&["application/json"]))
}

/// `object` as the client gets it: with its kind, or only its metadata.
pub(super) fn render(r: &Resource, object: &Value, output: Output) -> Value {
    match output {
        Output::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"],
        }),
        Output::Full => with_kind(r, object),
    }
}

pub(super) fn with_kind(r: &Resource, object: &Value) -> Value {
    let mut out = json!({"kind": r.kind, "apiVersion": r.api_version()});
    if let (Some(o), Some(m)) = (out.as_object_mut(), object.as_object()) {
        for (k, v) in m {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Authenticates a request: a bearer token (which must be valid: 401
/// otherwise), else the client certificate, else anonymous.
fn authenticate(shared: &Shared, peer: Option<User>, headers: &HeaderMap) -> Result<User, Status> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match bearer {
        Some(token) if !token.is_empty() => {
            let audiences = vec![shared.issuer.clone()];
            shared.review(token, &audiences).map(|s| s.user()).map_err(|e| {
                tracing::debug!(error = %e, "kube double: bearer token refused");
                Status::unauthorized()
            })
        }
        Some(_) => Err(Status::unauthorized()),
        None => Ok(peer.unwrap_or_else(User::anonymous)),
    }
}

/// Applies `Impersonate-*` headers, if the user may impersonate.
fn impersonate(shared: &Shared, user: User, headers: &HeaderMap) -> Result<User, Status> {
    let Some(name) = headers.get("impersonate-user").and_then(|v| v.to_str().ok()) else {
        return Ok(user);
    };
    let store = shared.lock();
    let can = |resource: &'static str, ns: Option<&str>, who: &str| {
        let target = Target::Resource {
            group: "",
            resource,
            subresource: None,
            namespace: ns,
            name: Some(who),
        };
        rbac::allowed(&store, &user, "impersonate", &target)
    };
    let forbidden = |what: &str, who: &str| {
        Status {
            code: 403,
            reason: "Forbidden",
            message: format!("{what} {who:?} is forbidden: User {:?} cannot impersonate resource {what:?} in API group \"\" at the cluster scope", user.name),
            details: None,
    }
    };
    let mut impersonated = match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => {
            if !can("serviceaccounts", Some(ns), sa) {
                return Err(forbidden("serviceaccounts", sa));
            }
            User::service_account(ns, sa)
        }
        None => {
            if !can("users", None, name) {
                return Err(forbidden("users", name));
            }
            User {
                name: name.to_string(),
                ..User::default()
            }
        }
    };
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    for g in &groups {
        if !can("groups", None, g) {
            return Err(forbidden("groups", g));
        }
    }
    if !groups.is_empty() {
        impersonated.groups = groups;
    }
    if impersonated.name != "system:anonymous" && !impersonated.groups.iter().any(|g| g == "system:authenticated") {
        impersonated.groups.push("system:authenticated".into());
    }
    Ok(impersonated)
}

/// Where a request goes.
enum Route {
    /// A non-resource URL (discovery, health, version, issuer).
    Path(String),
    /// A resource.
    Resource {
        r: &'static Resource,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    },
}

fn route(path: &str) -> Result<Route, Status> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(Route::Path(path.to_string())),
    };
    let find = |plural: &str| resources::find(group, version, plural);
    let (r, namespace, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
            (find(plural).ok_or_else(Status::no_route)?, Some(ns.to_string()), rest)
        }
        [plural, rest @ ..] => (find(plural).ok_or_else(Status::no_route)?, None, rest),
        [] => return Err(Status::no_route()),
    };
    let (name, subresource) = match rest {
        [] => (None, None),
        [name] => (Some(name.to_string()), None),
        [name, sub] => (Some(name.to_string()), Some(sub.to_string())),
        _ => return Err(Status::no_route()),
    };
    if !r.namespaced && namespace.is_some() {
        return Err(Status::no_route());
    }
    Ok(Route::Resource {
        r,
        namespace,
        name,
        subresource,
    })
}

async fn serve(shared: &Arc<Shared>, peer: Option<User>, req: Request<Incoming>) -> Result<Response<Body>, Status> {
    let (parts, body) = req.into_parts();
    let user = authenticate(shared, peer, &parts.headers)?;
    let user = impersonate(shared, user, &parts.headers)?;
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(Status::too_large()),
        Err(e) => return Err(Status::bad_request(format!("reading the request body: {e}"))),
    };
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let ctx = Ctx {
        shared,
        user,
        method: parts.method,
        query,
        headers: parts.headers,
        body,
    };
    match route(parts.uri.path())? {
        Route::Path(path) => non_resource(&ctx, &path),
        Route::Resource {
            r,
            namespace,
            name,
            subresource,
        } => resource(&ctx, r, namespace.as_deref(), name.as_deref(), subresource.as_deref()),
    }
}

fn non_resource(ctx: &Ctx, path: &str) -> Result<Response<Body>, Status> {
    let verb = match ctx.method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::DELETE => "delete",
        _ => "patch",
    };
    if !ctx.allowed(verb, &Target::Path(path)) {
        return Err(Status::forbidden_path(&ctx.user.name, verb, path));
    }
    if verb != "get" {
        return Err(Status::method_not_allowed());
    }
    let shared = ctx.shared;
    match path.trim_end_matches('/') {
        "/healthz" | "/livez" | "/readyz" => Ok(respond(200, "text/plain; charset=utf-8", b"ok".to_vec())),
        "/version" => Ok(json_response(200, &discovery::version())),
        "/.well-known/openid-configuration" => Ok(json_response(
            200,
            &json!({
                "issuer": shared.issuer,
                "jwks_uri": format!("{}/openid/v1/jwks", shared.issuer),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [shared.signer.alg()],
            }),
        )),
        "/openid/v1/jwks" => {
            let accept = ctx.header(http::header::ACCEPT);
            let acceptable = accept.trim().is_empty()
                || accept.split(',').any(|r| {
                    matches!(
                        media_type(r).as_str(),
                        "application/jwk-set+json" | "application/*" | "*/*"
                    )
                });
            if !acceptable {
                return Err(Status::not_acceptable(&["application/jwk-set+json"]));
            }
            let keys = json!({"keys": [shared.signer.jwk()]});
            Ok(respond(200, "application/jwk-set+json", keys.to_string().into_bytes()))
        }
        other => match discovery::document(other, &shared.issuer, |r| resources::served(&shared.lock(), r)) {
            Some(doc) => Ok(json_response(200, &doc)),
            None => Err(Status::no_route()),
        },
    }
}

fn resource(
    ctx: &Ctx,
    r: &'static Resource,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
) -> Result<Response<Body>, Status> {
    if let Some(n) = name {
        if !validate::valid_name(r, n) && ctx.method != Method::GET {
            return Err(Status::not_found(r, n));
        }
    }
    if !resources::served(&ctx.shared.lock(), r) {
        return Err(Status::no_route());
    }
    let watch = matches!(ctx.query("watch"), Some("true" | "1"));
    match (ctx.method.clone(), name, sub) {
        (Method::POST, None, None) => match r.plural {
            "tokenreviews" => reviews::token_review(ctx, r),
            "selfsubjectaccessreviews" | "subjectaccessreviews" => reviews::access_review(ctx, r),
            _ => write::create(ctx, r, ns),
        },
        (Method::POST, Some(sa), Some("token")) if r.plural == "serviceaccounts" => {
            reviews::token_request(ctx, r, ns.ok_or_else(Status::no_route)?, sa)
        }
        (_, _, Some(_)) => Err(Status::no_route()),
        _ if !r.stored => Err(Status::method_not_allowed()),
        (Method::GET, None, None) if watch => read::watch(ctx, r, ns),
        (Method::GET, None, None) => read::list(ctx, r, ns),
        (Method::GET, Some(name), None) => read::get(ctx, r, ns, name),
        (Method::PUT, Some(name), None) => write::update(ctx, r, ns, name),
        (Method::PATCH, Some(name), None) => write::patch(ctx, r, ns, name),
        (Method::DELETE, Some(name), None) => write::delete(ctx, r, ns, name),
        (Method::DELETE, None, None) => write::delete_collection(ctx, r, ns),
        _ => Err(Status::method_not_allowed()),
    }
}

pub(super) fn key(r: &Resource, ns: Option<&str>, name: &str) -> Key {
    (store::id(r), ns.unwrap_or_default().to_string(), name.to_string())
}
