//! Writes: create, update, the four patch formats (server-side apply
//! among them), delete (graceful for scheduled pods, finalizers, namespaces
//! that stay Terminating) and deletecollection, with the admission the real
//! server applies and the managed fields every write records.

use std::sync::Arc;

use http::Response;
use serde_json::{json, Value};

use super::api::{json_response, key, media_type, with_kind, Body, Ctx};
use super::apply::{self, Writer};
use super::resources;
use super::resources::Resource;
use super::status::Cause;
use super::status::Status;
use super::store::{self, Key};
use super::tokens::{rfc3339, unix_now};
use super::{validate, Shared};

/// The object of a create, update or apply body: kind and apiVersion as
/// the endpoint's (or absent), the namespace as the URL's.
fn body_object(ctx: &Ctx, r: &Resource, ns: Option<&str>, required_kind: bool) -> Result<Value, Status> {
    let mut object = ctx.document(r)?;
    if !object.is_object() {
        return Err(Status::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: the body is not an object",
            r.kind, r.version, r.kind
        )));
    }
    let kind = object["kind"].as_str().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    if required_kind && (kind.is_empty() || api_version.is_empty()) {
        return Err(Status::bad_request(
            "apiVersion and kind must be set in an applied configuration",
        ));
    }
    if !kind.is_empty() && kind != r.kind {
        return Err(Status::bad_request(format!(
            "the body of the request was of kind {kind:?}, expected {:?}",
            r.kind
        )));
    }
    if !api_version.is_empty() && api_version != r.api_version() {
        return Err(Status::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            r.api_version()
        )));
    }
    if let Some(o) = object.as_object_mut() {
        o.remove("kind");
        o.remove("apiVersion");
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    match (ns, object["metadata"]["namespace"].as_str()) {
        (Some(url), Some(body)) if !body.is_empty() && body != url => {
            return Err(Status::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ))
        }
        (Some(url), _) => object["metadata"]["namespace"] = json!(url),
        (None, _) => {
            if let Some(m) = object["metadata"].as_object_mut() {
                m.remove("namespace");
            }
        }
    }
    Ok(object)
}

/// What the server checks before any create: the namespace exists and is
/// not being deleted (NamespaceLifecycle), and a pod's service account
/// exists (ServiceAccount admission).
fn admit_create(store: &store::Store, r: &Resource, ns: Option<&str>, object: &Value) -> Result<(), Status> {
    if let Some(ns) = ns {
        let namespaces = resources::find("", "v1", "namespaces").ok_or_else(|| Status::internal("no namespaces"))?;
        let namespace = store
            .get(&key(namespaces, None, ns))
            .ok_or_else(|| Status::not_found(namespaces, ns))?;
        if namespace["status"]["phase"] == "Terminating" {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            return Err(Status::forbidden_by(
                r,
                name,
                &format!("unable to create new content in namespace {ns} because it is being terminated"),
            ));
        }
        if r.plural == "pods" {
            let sa = object["spec"]["serviceAccountName"].as_str().unwrap_or("default");
            let accounts =
                resources::find("", "v1", "serviceaccounts").ok_or_else(|| Status::internal("no serviceaccounts"))?;
            if store.get(&key(accounts, Some(ns), sa)).is_none() {
                let name = object["metadata"]["name"].as_str().unwrap_or_default();
                return Err(Status::forbidden_by(
                    r,
                    name,
                    &format!("error looking up service account {ns}/{sa}: serviceaccount {sa:?} not found"),
                ));
            }
        }
    }
    Ok(())
}

/// Stamps what the server sets on a new object.
fn stamp_new(shared: &Shared, object: &mut Value) {
    object["metadata"]["uid"] = json!(shared.uid());
    object["metadata"]["creationTimestamp"] = json!(rfc3339(unix_now()));
    if let Some(m) = object["metadata"].as_object_mut() {
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            m.remove(field);
        }
    }
}

pub(super) fn create(ctx: &Ctx, r: &'static Resource, ns: Option<&str>) -> Result<Response<Body>, Status> {
    if r.namespaced && ns.is_none() {
        return Err(Status::method_not_allowed());
    }
    ctx.authorize("create", r, None, ns, None)?;
    let mut object = body_object(ctx, r, ns, false)?;
    if object["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        if let Some(prefix) = object["metadata"]["generateName"].as_str().filter(|p| !p.is_empty()) {
            let suffix: String = ctx
                .shared
                .uid()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(5)
                .collect();
            object["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
        }
    }
    validate::create(r, &mut object)?;
    stamp_new(ctx.shared, &mut object);
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let manager = ctx.manager();
    let now = rfc3339(unix_now());
    apply::record_update(
        None,
        &mut object,
        &Writer {
            manager: &manager,
            api_version: &r.api_version(),
            now: &now,
        },
    );
    let mut store = ctx.shared.lock();
    admit_create(&store, r, ns, &object)?;
    let k = key(r, ns, &name);
    if store.get(&k).is_some() {
        return Err(Status::already_exists(r, &name));
    }
    let stored = if ctx.dry_run() {
        Arc::new(object)
    } else {
        store.put(k, object)
    };
    Ok(json_response(201, &with_kind(r, &stored)))
}

/// Writes `new` as the next state of the object at `k` (after checks):
/// nothing when nothing changed; an object whose finalizers are gone while
/// it is being deleted goes.
fn write(ctx: &Ctx, r: &Resource, k: Key, old: &Value, mut new: Value) -> Result<Value, Status> {
    let manager = ctx.manager();
    let now = rfc3339(unix_now());
    apply::record_update(
        Some(old),
        &mut new,
        &Writer {
            manager: &manager,
            api_version: &r.api_version(),
            now: &now,
        },
    );
    commit(ctx, r, k, old, new)
}

fn commit(ctx: &Ctx, r: &Resource, k: Key, old: &Value, mut new: Value) -> Result<Value, Status> {
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    if new == *old || ctx.dry_run() {
        return Ok(new);
    }
    let mut store = ctx.shared.lock();
    let current = store.get(&k).ok_or_else(|| Status::not_found(r, &k.2))?;
    if current["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
        return Err(Status::stale(r, &k.2));
    }
    let finished = !new["metadata"]["deletionTimestamp"].is_null()
        && new["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty())
        && r.plural != "pods"
        && r.plural != "namespaces";
    if finished {
        return Ok((*store.remove(&k).unwrap_or_else(|| Arc::new(new))).clone());
    }
    Ok((*store.put(k, new)).clone())
}

pub(super) fn update(ctx: &Ctx, r: &'static Resource, ns: Option<&str>, name: &str) -> Result<Response<Body>, Status> {
    ctx.authorize("update", r, None, ns, Some(name))?;
    let mut new = body_object(ctx, r, ns, false)?;
    if new["metadata"]["name"].as_str() != Some(name) {
        return Err(Status::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            new["metadata"]["name"].as_str().unwrap_or_default()
        )));
    }
    let k = key(r, ns, name);
    let old = ctx.shared.lock().get(&k).ok_or_else(|| Status::not_found(r, name))?;
    check_resource_version(r, name, &old, &new)?;
    // An update sent without managedFields keeps the recorded ones.
    if new["metadata"]["managedFields"].is_null() {
        new["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
    }
    validate::update(r, &old, &mut new)?;
    let written = write(ctx, r, k, &old, new)?;
    Ok(json_response(200, &with_kind(r, &written)))
}

pub(super) fn patch(ctx: &Ctx, r: &'static Resource, ns: Option<&str>, name: &str) -> Result<Response<Body>, Status> {
    ctx.authorize("patch", r, None, ns, Some(name))?;
    let media = media_type(ctx.header(http::header::CONTENT_TYPE));
    let force = ctx.query("force") == Some("true");
    let k = key(r, ns, name);
    let live = ctx.shared.lock().get(&k);
    if media == "application/apply-patch+yaml" {
        return server_side_apply(ctx, r, ns, name, live, force);
    }
    if force {
        return Err(Status::invalid(
            "PatchOptions.meta.k8s.io",
            "",
            vec![Cause::forbidden("force", "may not be specified for non-apply patch")],
        ));
    }
    let old = live.ok_or_else(|| Status::not_found(r, name))?;
    let patch = ctx.document(r)?;
    let current = with_kind(r, &old);
    let patched = match media.as_str() {
        "application/merge-patch+json" => apply::merge_patch(&current, &patch),
        "application/strategic-merge-patch+json" => apply::strategic_merge_patch(&current, &patch),
        "application/json-patch+json" => apply::json_patch(&current, &patch).map_err(|e| Status {
            code: 422,
            reason: "Invalid",
            message: e,
            details: None,
        })?,
        other => return Err(Status::unsupported_media_type(other)),
    };
    let mut new = patched;
    if let Some(o) = new.as_object_mut() {
        o.remove("kind");
        o.remove("apiVersion");
    }
    if new["metadata"]["name"].as_str() != Some(name) {
        return Err(Status::bad_request(
            "metadata.name: the name of a patched object cannot change",
        ));
    }
    check_resource_version(r, name, &old, &new)?;
    validate::update(r, &old, &mut new)?;
    let written = write(ctx, r, k, &old, new)?;
    Ok(json_response(200, &with_kind(r, &written)))
}

fn server_side_apply(
    ctx: &Ctx,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    live: Option<Arc<Value>>,
    force: bool,
) -> Result<Response<Body>, Status> {
    let Some(manager) = ctx.query("fieldManager").filter(|m| !m.is_empty()) else {
        return Err(Status::invalid(
            "PatchOptions.meta.k8s.io",
            "",
            vec![Cause::required("fieldManager", "is required for apply patch")],
        ));
    };
    let mut config = body_object(ctx, r, ns, true)?;
    match config["metadata"]["name"].as_str() {
        Some(n) if n == name => {}
        None | Some("") => config["metadata"]["name"] = json!(name),
        Some(n) => {
            return Err(Status::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
    }
    let now = rfc3339(unix_now());
    let w = Writer {
        manager,
        api_version: &r.api_version(),
        now: &now,
    };
    let base = match &live {
        Some(l) => (**l).clone(),
        None => json!({"metadata": {"name": name}}),
    };
    let mut new = apply::apply(&base, &config, &w, force).map_err(|c| Status::apply_conflicts(r, name, &c))?;
    let k = key(r, ns, name);
    match live {
        None => {
            validate::create(r, &mut new)?;
            stamp_new(ctx.shared, &mut new);
            if let Some(ns) = ns {
                new["metadata"]["namespace"] = json!(ns);
            }
            let mut store = ctx.shared.lock();
            admit_create(&store, r, ns, &new)?;
            if store.get(&k).is_some() {
                return Err(Status::conflict(
                    r,
                    name,
                    "the object has been created meanwhile; please try again",
                ));
            }
            let stored = if ctx.dry_run() {
                Arc::new(new)
            } else {
                store.put(k, new)
            };
            Ok(json_response(201, &with_kind(r, &stored)))
        }
        Some(old) => {
            validate::update(r, &old, &mut new)?;
            let written = commit(ctx, r, k, &old, new)?;
            Ok(json_response(200, &with_kind(r, &written)))
        }
    }
}

/// `DeleteOptions` from the body or the query.
fn delete_options(ctx: &Ctx) -> Result<Value, Status> {
    let mut options = if ctx.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&ctx.body)
            .map_err(|e| Status::bad_request(format!("DeleteOptions cannot be decoded: {e}")))?
    };
    if let Some(g) = ctx.query("gracePeriodSeconds") {
        let g: i64 = g
            .parse()
            .map_err(|_| Status::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?;
        options["gracePeriodSeconds"] = json!(g);
    }
    Ok(options)
}

/// Optimistic concurrency: a write naming a resourceVersion is refused
/// (409) unless the object is still at it; one naming none always goes.
fn check_resource_version(r: &'static Resource, name: &str, old: &Value, new: &Value) -> Result<(), Status> {
    let wanted = new["metadata"]["resourceVersion"].as_str().unwrap_or_default();
    if !wanted.is_empty() && old["metadata"]["resourceVersion"].as_str() != Some(wanted) {
        return Err(Status::stale(r, name));
    }
    Ok(())
}

pub(super) fn delete(ctx: &Ctx, r: &'static Resource, ns: Option<&str>, name: &str) -> Result<Response<Body>, Status> {
    ctx.authorize("delete", r, None, ns, Some(name))?;
    let options = delete_options(ctx)?;
    let k = key(r, ns, name);
    let mut store = ctx.shared.lock();
    let old = store.get(&k).ok_or_else(|| Status::not_found(r, name))?;
    let pre = &options["preconditions"];
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        let (Some(wanted), held) = (pre[field].as_str(), old["metadata"][field].as_str()) else {
            continue;
        };
        if held != Some(wanted) {
            return Err(Status::conflict(
                r,
                name,
                &format!(
                    "Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {}",
                    held.unwrap_or_default()
                ),
            ));
        }
    }
    if ctx.dry_run() {
        return Ok(json_response(200, &with_kind(r, &old)));
    }
    let now = unix_now();
    let mut marked = (*old).clone();
    let graceful = match r.plural {
        // A namespace is deleted by the namespace controller, which envtest
        // does not run: it stays Terminating.
        "namespaces" => {
            marked["status"]["phase"] = json!("Terminating");
            true
        }
        // A scheduled, running pod is deleted by its kubelet after the grace
        // period; none runs here, so it stays Terminating unless the grace
        // period is zero (or it never ran).
        "pods" => {
            let grace = options["gracePeriodSeconds"]
                .as_i64()
                .or_else(|| old["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            let scheduled = old["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
            let ended = matches!(old["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
            let graceful = grace > 0 && scheduled && !ended;
            if graceful {
                marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                marked["metadata"]["deletionTimestamp"] = json!(rfc3339(now + grace.unsigned_abs()));
            }
            graceful
        }
        _ => old["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()),
    };
    if graceful {
        if old["metadata"]["deletionTimestamp"].is_null() {
            if marked["metadata"]["deletionTimestamp"].is_null() {
                marked["metadata"]["deletionTimestamp"] = json!(rfc3339(now));
                marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
            let written = store.put(k, marked);
            return Ok(json_response(200, &with_kind(r, &written)));
        }
        return Ok(json_response(200, &with_kind(r, &old)));
    }
    let gone = store.remove(&k).unwrap_or(old);
    if matches!(r.plural, "pods" | "namespaces") {
        return Ok(json_response(200, &with_kind(r, &gone)));
    }
    Ok(json_response(
        200,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": r.group, "kind": r.plural, "uid": gone["metadata"]["uid"]},
        }),
    ))
}

pub(super) fn delete_collection(ctx: &Ctx, r: &'static Resource, ns: Option<&str>) -> Result<Response<Body>, Status> {
    let f = super::read::filter(ctx, r, ns)?;
    ctx.authorize("deletecollection", r, None, ns, None)?;
    let mut store = ctx.shared.lock();
    let doomed: Vec<Key> = store
        .list(f.resource, ns)
        .into_iter()
        .filter(|(k, o)| f.matches(k, o))
        .map(|(k, _)| k)
        .collect();
    if !ctx.dry_run() {
        for k in &doomed {
            store.remove(k);
        }
    }
    Ok(json_response(
        200,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    ))
}
