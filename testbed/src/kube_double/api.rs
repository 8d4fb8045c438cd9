//! HTTP side of the double: request log and fault injection, bearer-token
//! authentication, RBAC checks, routing and the endpoint handlers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};

use super::crypto::{rfc3339, unix_now};
use super::secrets::{self, Writer};
use super::state::{Pod, Selector, Watched};
use super::status::{Cause, Status};
use super::tokens::{Identity, TokenClaims};
use super::Shared;

/// Response body: a whole JSON document or a watch stream.
pub(super) type Body = BoxBody<Bytes, Infallible>;

/// The API server's limit on request bodies is about 3 MiB.
const MAX_BODY: usize = 3 * 1024 * 1024;
const MIN_TOKEN_SECONDS: i64 = 600;
const MAX_TOKEN_SECONDS: i64 = 1 << 32;
const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.phase",
];

fn full(code: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    full(code, "application/json", v.to_string().into_bytes())
}

fn status_response(s: &Status) -> Response<Body> {
    json_response(s.code, &s.to_json())
}

/// Entry point for every request on every connection.
pub(super) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let (delay, unavailable) = {
        let mut st = shared.lock();
        st.requests.push((method.clone(), target.clone()));
        (st.delay, st.unavailable)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if unavailable {
        return Ok(status_response(&Status::unavailable()));
    }
    let resp = match route(&shared, req).await {
        Ok(r) => r,
        Err(s) => failure_response(&method, &target, s),
    };
    Ok(resp)
}

fn failure_response(method: &str, target: &str, s: Status) -> Response<Body> {
    tracing::debug!(method, target, code = s.code, message = %s.message, "kube double: request failed");
    status_response(&s)
}

/// Parsed request pieces the handlers share.
struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    caller: Identity,
    method: Method,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

impl Ctx<'_> {
    fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Whether the client asked for `PartialObjectMetadata` (or its list).
    fn metadata_only(&self) -> bool {
        self.headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
    }

    fn json_body(&self) -> Result<Value, Status> {
        // A real API server also takes protobuf (kubectl sends it for built-in
        // types); the double speaks JSON only, like the provider, and says so
        // the way the API server refuses a media type it does not know.
        let media = self
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if media.starts_with("application/vnd.kubernetes.protobuf") {
            return Err(Status::unsupported_media_type(media));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| Status::bad_request(format!("error decoding request body as JSON: {e}")))
    }

    /// Checks the caller's grants; 403 with RBAC's message otherwise.
    fn authorize(&self, verb: &str, resource: &str, namespace: Option<&str>, name: Option<&str>) -> Result<(), Status> {
        let allowed = self.shared.lock().grants.iter().any(|g| {
            g.allows(
                (&self.caller.namespace, &self.caller.name),
                verb,
                resource,
                namespace,
                name,
            )
        });
        if allowed {
            return Ok(());
        }
        let group = if resource == "tokenreviews" {
            "authentication.k8s.io"
        } else {
            ""
        };
        Err(Status::forbidden(
            &self.caller.username(),
            verb,
            resource,
            group,
            namespace,
            name,
        ))
    }

    /// `fieldManager`, else the User-Agent's product name as the real server does.
    fn field_manager(&self) -> String {
        if let Some(m) = self.query("fieldManager").filter(|m| !m.is_empty()) {
            return m.to_owned();
        }
        self.headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_owned()
    }

    fn writer(&self) -> Writer<'_> {
        Writer {
            uids: &self.shared.uids,
            manager: self.field_manager(),
            now: unix_now(),
        }
    }
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Identity, Status> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(Status::unauthorized)?;
    // Bearer tokens must carry the API server's own audience, like a real one.
    shared.review(token, &[]).map_err(|e| {
        tracing::debug!(error = %e, "kube double: rejected bearer token");
        Status::unauthorized()
    })
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Status> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // Health and version are public on a real cluster (system:public-info-viewer).
    match segs.as_slice() {
        ["healthz"] | ["livez"] | ["readyz"] => return Ok(full(200, "text/plain", b"ok".to_vec())),
        ["version"] => {
            return Ok(json_response(
                200,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-kube-double", "platform": "linux/amd64"}),
            ))
        }
        _ => {}
    }
    let caller = authenticate(shared, &parts.headers)?;
    // Issuer discovery: non-resource URLs every service account may read by
    // default, like `/version`, but only authenticated.
    match segs.as_slice() {
        [".well-known", "openid-configuration"] | ["openid", "v1", "jwks"] => {
            if !shared.lock().issuer_discovery {
                return Err(Status::forbidden_url(&caller.username(), &path));
            }
            let body = if segs[0] == "openid" {
                json!({"keys": [shared.signer.jwk()]})
            } else {
                json!({
                    "issuer": shared.issuer,
                    "jwks_uri": format!("{}/openid/v1/jwks", shared.issuer),
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["ES256"],
                })
            };
            return Ok(json_response(200, &body));
        }
        _ => {}
    }
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| Status::bad_request(format!("reading request body: {e}")))?
        .to_bytes();
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let ctx = Ctx {
        shared,
        caller,
        method: parts.method,
        query,
        headers: parts.headers,
        body,
    };
    let m = ctx.method.clone();
    match segs.as_slice() {
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => match m {
            Method::POST => token_review(&ctx),
            _ => Err(Status::method_not_allowed()),
        },
        ["api", "v1", "namespaces", ns, "serviceaccounts", sa, "token"] => match m {
            Method::POST => token_request(&ctx, ns, sa),
            _ => Err(Status::method_not_allowed()),
        },
        ["api", "v1", "secrets"] => match m {
            Method::GET => list_secrets(&ctx, None),
            _ => Err(Status::method_not_allowed()),
        },
        ["api", "v1", "namespaces", ns, "secrets"] => match m {
            Method::GET => list_secrets(&ctx, Some(ns)),
            Method::POST => create_secret(&ctx, ns),
            _ => Err(Status::method_not_allowed()),
        },
        ["api", "v1", "namespaces", ns, "secrets", name] => match m {
            Method::GET => get_secret(&ctx, ns, name),
            Method::PUT => replace_secret(&ctx, ns, name),
            Method::PATCH => patch_secret(&ctx, ns, name),
            Method::DELETE => delete_secret(&ctx, ns, name),
            _ => Err(Status::method_not_allowed()),
        },
        ["api", "v1", "pods"] => match m {
            Method::GET => list_pods(&ctx, None),
            _ => Err(Status::method_not_allowed()),
        },
        ["api", "v1", "namespaces", ns, "pods"] => match m {
            Method::GET => list_pods(&ctx, Some(ns)),
            _ => Err(Status::method_not_allowed()),
        },
        ["api", "v1", "namespaces", ns, "pods", name] => match m {
            Method::GET => get_pod(&ctx, ns, name),
            _ => Err(Status::method_not_allowed()),
        },
        _ => Err(Status::no_route()),
    }
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
fn token_review(ctx: &Ctx) -> Result<Response<Body>, Status> {
    ctx.authorize("create", "tokenreviews", None, None)?;
    let body = ctx.json_body()?;
    tracing::debug!(spec_audiences = ?body.pointer("/spec/audiences"), "kube double: TokenReview");
    let token = body.pointer("/spec/token").and_then(Value::as_str).unwrap_or_default();
    if token.is_empty() {
        return Err(Status::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let audiences = string_list(body.pointer("/spec/audiences"));
    let mut spec = json!({"token": token});
    if !audiences.is_empty() {
        spec["audiences"] = json!(audiences);
    }
    let status = match ctx.shared.review(token, &audiences) {
        Ok(id) => json!({
            "authenticated": true,
            "user": id.user_info(),
            "audiences": id.audiences,
        }),
        Err(error) => json!({"authenticated": false, "user": {}, "error": error}),
    };
    Ok(json_response(
        201,
        &json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status,
        }),
    ))
}

/// `POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token`.
fn token_request(ctx: &Ctx, ns: &str, sa: &str) -> Result<Response<Body>, Status> {
    ctx.authorize("create", "serviceaccounts/token", Some(ns), Some(sa))?;
    let body = ctx.json_body()?;
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => 3600,
        Some(v) => v.as_i64().ok_or_else(|| {
            Status::bad_request("TokenRequest in version \"v1\" cannot be handled as a TokenRequest: json: cannot unmarshal into Go struct field TokenRequestSpec.spec.expirationSeconds of type int64")
        })?,
    };
    // The real server answers 422 Invalid here (NewInvalid over the validation errors).
    if expiration < MIN_TOKEN_SECONDS {
        return Err(Status::invalid(
            "TokenRequest.authentication.k8s.io",
            "",
            vec![Cause {
                field: "spec.expirationSeconds".into(),
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
            }],
        ));
    }
    if expiration > MAX_TOKEN_SECONDS {
        return Err(Status::invalid(
            "TokenRequest.authentication.k8s.io",
            "",
            vec![Cause {
                field: "spec.expirationSeconds".into(),
                reason: "FieldValueTooLong",
                message: "Too long: may not specify a duration larger than 2^32 seconds".into(),
            }],
        ));
    }
    let audiences = string_list(spec.get("audiences"));
    let bound = spec.get("boundObjectRef").filter(|v| !v.is_null());
    let (sa_uid, pod) = {
        let st = ctx.shared.lock();
        let sa_uid = st
            .service_accounts
            .get(&(ns.to_owned(), sa.to_owned()))
            .map(|s| s.uid.clone())
            .ok_or_else(|| Status::not_found("serviceaccounts", sa))?;
        let pod = match bound {
            None => None,
            Some(r) => {
                let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
                if kind != "Pod" {
                    return Err(Status::bad_request(format!(
                        "cannot bind token for serviceaccount {sa:?} to an object of kind {kind:?} (the test double supports only Pod)"
                    )));
                }
                let pod_name = r.get("name").and_then(Value::as_str).unwrap_or_default();
                let pod = st
                    .pods
                    .get(&(ns.to_owned(), pod_name.to_owned()))
                    .ok_or_else(|| Status::not_found("pods", pod_name))?;
                if let Some(uid) = r.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty()) {
                    if uid != pod.uid {
                        return Err(Status::conflict(
                            "Pod",
                            pod_name,
                            &format!("the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"),
                        ));
                    }
                }
                if pod.service_account != sa {
                    return Err(Status::bad_request(format!(
                        "cannot bind token for serviceaccount {sa:?} to pod running with different serviceaccount name."
                    )));
                }
                Some((pod.name.clone(), pod.uid.clone()))
            }
        };
        (sa_uid, pod)
    };
    let ttl = u64::try_from(expiration).unwrap_or(3600);
    let (token, exp) = ctx
        .shared
        .mint(&TokenClaims {
            namespace: ns,
            sa_name: sa,
            sa_uid: &sa_uid,
            pod: pod.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
            audiences: &audiences,
            ttl_seconds: ttl,
        })
        .map_err(|e| Status::internal(format!("signing token: {e}")))?;
    let effective_audiences = if audiences.is_empty() {
        vec![ctx.shared.issuer.clone()]
    } else {
        audiences
    };
    let mut out_spec = json!({"audiences": effective_audiences, "expirationSeconds": expiration});
    if let (Some(r), Some((name, uid))) = (bound, &pod) {
        out_spec["boundObjectRef"] = json!({
            "kind": "Pod",
            "apiVersion": r.get("apiVersion").and_then(Value::as_str).unwrap_or("v1"),
            "name": name,
            "uid": uid,
        });
    }
    Ok(json_response(
        201,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": sa, "namespace": ns, "creationTimestamp": null},
            "spec": out_spec,
            "status": {"token": token, "expirationTimestamp": rfc3339(exp)},
        }),
    ))
}

/// `GET .../secrets`: a list or, with `watch`, a watch (the provider
/// watches its key Secret by name).
fn list_secrets(ctx: &Ctx, ns: Option<&str>) -> Result<Response<Body>, Status> {
    let watch = is_watch(ctx);
    let verb = if watch { "watch" } else { "list" };
    ctx.authorize(verb, "secrets", ns, request_name(ctx).as_deref())?;
    let labels = Selector::labels(ctx.query("labelSelector"))?;
    let fields = Selector::fields(ctx.query("fieldSelector"), secrets::FIELDS)?;
    if watch {
        return serve_watch::<secrets::Secret>(ctx, ns, labels, fields);
    }
    let st = ctx.shared.lock();
    Ok(json_response(200, &secrets::list(&st, ns, &labels, &fields)))
}

fn get_secret(ctx: &Ctx, ns: &str, name: &str) -> Result<Response<Body>, Status> {
    ctx.authorize("get", "secrets", Some(ns), Some(name))?;
    let st = ctx.shared.lock();
    Ok(json_response(200, &secrets::get(&st, ns, name)?))
}

fn create_secret(ctx: &Ctx, ns: &str) -> Result<Response<Body>, Status> {
    ctx.authorize("create", "secrets", Some(ns), None)?;
    let body = ctx.json_body()?;
    let w = ctx.writer();
    let mut st = ctx.shared.lock();
    Ok(json_response(201, &secrets::create(&mut st, &w, ns, &body)?))
}

fn replace_secret(ctx: &Ctx, ns: &str, name: &str) -> Result<Response<Body>, Status> {
    ctx.authorize("update", "secrets", Some(ns), Some(name))?;
    let body = ctx.json_body()?;
    let w = ctx.writer();
    let mut st = ctx.shared.lock();
    Ok(json_response(200, &secrets::replace(&mut st, &w, ns, name, &body)?))
}

fn patch_secret(ctx: &Ctx, ns: &str, name: &str) -> Result<Response<Body>, Status> {
    ctx.authorize("patch", "secrets", Some(ns), Some(name))?;
    let content_type = ctx
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        // Strategic merge on a Secret's maps and scalars is plain merge patch.
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let patch = ctx.json_body()?;
            let w = ctx.writer();
            let mut st = ctx.shared.lock();
            Ok(json_response(
                200,
                &secrets::merge_patch(&mut st, &w, ns, name, &patch)?,
            ))
        }
        "application/apply-patch+yaml" => {
            let Some(manager) = ctx.query("fieldManager").filter(|m| !m.is_empty()) else {
                return Err(Status::invalid(
                    "PatchOptions.meta.k8s.io",
                    "",
                    vec![Cause {
                        field: "fieldManager".into(),
                        reason: "FieldValueRequired",
                        message: "Required value: is required for apply patch".into(),
                    }],
                ));
            };
            let config: Value = serde_yaml_ng::from_slice(&ctx.body)
                .map_err(|e| Status::bad_request(format!("error decoding YAML: {e}")))?;
            let force = ctx.query("force") == Some("true");
            let w = Writer {
                uids: &ctx.shared.uids,
                manager: manager.to_owned(),
                now: unix_now(),
            };
            let mut st = ctx.shared.lock();
            let (code, obj) = secrets::apply(&mut st, &w, ns, name, &config, force)?;
            Ok(json_response(code, &obj))
        }
        other => Err(Status::unsupported_media_type(other)),
    }
}

fn delete_secret(ctx: &Ctx, ns: &str, name: &str) -> Result<Response<Body>, Status> {
    ctx.authorize("delete", "secrets", Some(ns), Some(name))?;
    let options = if ctx.body.is_empty() {
        None
    } else {
        Some(ctx.json_body()?)
    };
    let mut st = ctx.shared.lock();
    Ok(json_response(
        200,
        &secrets::delete(&mut st, ns, name, options.as_ref())?,
    ))
}

fn get_pod(ctx: &Ctx, ns: &str, name: &str) -> Result<Response<Body>, Status> {
    ctx.authorize("get", "pods", Some(ns), Some(name))?;
    let metadata_only = ctx.metadata_only();
    let mut st = ctx.shared.lock();
    st.pod_reads
        .push((format!("/api/v1/namespaces/{ns}/pods/{name}"), metadata_only));
    let pod = st
        .pods
        .get(&(ns.to_owned(), name.to_owned()))
        .ok_or_else(|| Status::not_found("pods", name))?;
    Ok(json_response(200, &pod.render(metadata_only)))
}

fn is_watch(ctx: &Ctx) -> bool {
    matches!(ctx.query("watch"), Some("true" | "1"))
}

/// The object a list or watch request names, for RBAC. The API server
/// takes the value its field selector requires `metadata.name` to equal
/// (`metadata.name=x` or `==`, alone or with other requirements, as long as
/// it could be a name in a URL path), so a rule with `resourceNames` allows
/// listing and watching exactly those objects; without one the request
/// names nothing, and only rules without `resourceNames` allow it.
fn request_name(ctx: &Ctx) -> Option<String> {
    let fields = Selector::any(ctx.query("fieldSelector")).ok()?;
    fields
        .exact("metadata.name")
        .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains(['/', '%']))
        .map(str::to_owned)
}

fn list_pods(ctx: &Ctx, ns: Option<&str>) -> Result<Response<Body>, Status> {
    let watch = is_watch(ctx);
    let verb = if watch { "watch" } else { "list" };
    ctx.authorize(verb, "pods", ns, request_name(ctx).as_deref())?;
    let labels = Selector::labels(ctx.query("labelSelector"))?;
    let fields = Selector::fields(ctx.query("fieldSelector"), POD_FIELDS)?;
    let metadata_only = ctx.metadata_only();
    ctx.shared.lock().pod_reads.push((
        format!(
            "{}?{}",
            ns.map_or("/api/v1/pods".to_string(), |n| format!("/api/v1/namespaces/{n}/pods")),
            if watch { "watch" } else { "list" }
        ),
        metadata_only,
    ));
    if watch {
        return serve_watch::<Pod>(ctx, ns, labels, fields);
    }
    let st = ctx.shared.lock();
    let items: Vec<Value> = st
        .pods
        .values()
        .filter(|p| p.matches(ns, &labels, &fields))
        .map(|p| {
            if metadata_only {
                p.to_metadata_json()
            } else {
                p.to_json()
            }
        })
        .collect();
    let (kind, api_version) = if metadata_only {
        ("PartialObjectMetadataList", "meta.k8s.io/v1")
    } else {
        ("PodList", "v1")
    };
    Ok(json_response(
        200,
        &json!({
            "kind": kind,
            "apiVersion": api_version,
            "metadata": {"resourceVersion": st.resource_version.to_string()},
            "items": items,
        }),
    ))
}

fn event_line(kind: &str, object: Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Answers a watch request on objects of kind `T` (`resourceVersion`,
/// `timeoutSeconds` and the metadata-only `Accept` as the real server reads
/// them); the caller has authorized it and parsed the selectors.
fn serve_watch<T: Watched>(
    ctx: &Ctx,
    ns: Option<&str>,
    labels: Selector,
    fields: Selector,
) -> Result<Response<Body>, Status> {
    let since = match ctx.query("resourceVersion").unwrap_or("") {
        "" | "0" => None,
        rv => Some(
            rv.parse::<u64>()
                .map_err(|_| Status::bad_request(format!("invalid resource version: {rv:?}")))?,
        ),
    };
    let timeout = ctx
        .query("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok(watch_stream::<T>(
        ctx.shared.clone(),
        Filter {
            namespace: ns.map(str::to_owned),
            labels,
            fields,
        },
        since,
        timeout,
        ctx.metadata_only(),
    ))
}

/// Which objects a watch sees.
struct Filter {
    namespace: Option<String>,
    labels: Selector,
    fields: Selector,
}

/// State of one watch stream between polls.
struct WatchCursor<T> {
    shared: Arc<Shared>,
    filter: Filter,
    last_rv: u64,
    pending: VecDeque<Bytes>,
    changes: tokio::sync::watch::Receiver<u64>,
    deadline: Option<tokio::time::Instant>,
    metadata_only: bool,
    kind: std::marker::PhantomData<fn() -> T>,
}

impl<T: Watched> WatchCursor<T> {
    /// Queues every event after `last_rv` this watcher should see.
    fn collect(&mut self) {
        let st = self.shared.lock();
        let events = T::events(&st);
        let start = events.partition_point(|e| e.resource_version <= self.last_rv);
        let f = &self.filter;
        for e in &events[start..] {
            if let Some((kind, object)) = e.filtered(f.namespace.as_deref(), &f.labels, &f.fields) {
                self.pending
                    .push_back(event_line(kind.as_str(), object.render(self.metadata_only)));
            }
            self.last_rv = e.resource_version;
        }
    }
}

/// Streams newline-delimited watch events; without a resourceVersion it
/// first sends ADDED for every matching object, as the real server does.
fn watch_stream<T: Watched>(
    shared: Arc<Shared>,
    filter: Filter,
    since: Option<u64>,
    timeout: Option<Duration>,
    metadata_only: bool,
) -> Response<Body> {
    let mut pending = VecDeque::new();
    // Subscribe under the same lock the state is read with, so no change
    // between the two is missed.
    let (changes, last_rv) = {
        let st = shared.lock();
        let mut changes = st.changes.subscribe();
        changes.borrow_and_update();
        let last_rv = match since {
            Some(rv) => rv,
            None => {
                for object in
                    T::current(&st).filter(|o| o.matches(filter.namespace.as_deref(), &filter.labels, &filter.fields))
                {
                    pending.push_back(event_line("ADDED", object.render(metadata_only)));
                }
                st.resource_version
            }
        };
        (changes, last_rv)
    };
    let cursor = WatchCursor::<T> {
        shared,
        filter,
        last_rv,
        pending,
        changes,
        deadline: timeout.map(|t| tokio::time::Instant::now() + t),
        metadata_only,
        kind: std::marker::PhantomData,
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(line) = c.pending.pop_front() {
                return Some((Ok::<_, Infallible>(Frame::data(line)), c));
            }
            c.collect();
            if !c.pending.is_empty() {
                continue;
            }
            let changed = match c.deadline {
                Some(d) => tokio::select! {
                    r = c.changes.changed() => r.is_ok(),
                    _ = tokio::time::sleep_until(d) => false,
                },
                None => c.changes.changed().await.is_ok(),
            };
            if !changed {
                return None;
            }
        }
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
