//! Reads: get, list (paginated from one revision's snapshot, metadata only
//! when asked) and watch (from a resourceVersion, with bookmarks, and the
//! `410 Gone` a watcher left behind by the history gets).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};

use super::api::{json_response, key, negotiate, render, Body, Ctx, Output};
use super::resources::Resource;
use super::status::Status;
use super::store::{self, EventKind, Filter, Key, Selector};
use super::Shared;

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// A watch without `timeoutSeconds` ends after this (the real server picks
/// a random time between its minimum request timeout and twice it).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

pub(super) fn get(ctx: &Ctx, r: &'static Resource, ns: Option<&str>, name: &str) -> Result<Response<Body>, Status> {
    ctx.authorize("get", r, None, ns, Some(name))?;
    let output = negotiate(&ctx.headers, false)?;
    let object = ctx
        .shared
        .lock()
        .get(&key(r, ns, name))
        .ok_or_else(|| Status::not_found(r, name))?;
    Ok(json_response(200, &render(r, &object, output)))
}

/// The filter of a list or watch, and the object its field selector names.
pub(super) fn filter(ctx: &Ctx, r: &'static Resource, ns: Option<&str>) -> Result<Filter, Status> {
    let labels = Selector::labels(ctx.query("labelSelector").unwrap_or_default()).map_err(Status::bad_request)?;
    let fields = Selector::fields(ctx.query("fieldSelector").unwrap_or_default(), |f| r.selectable(f))
        .map_err(Status::bad_request)?;
    Ok(Filter {
        resource: store::id(r),
        namespace: ns.map(str::to_owned),
        labels,
        fields,
    })
}

/// The name a list or watch asks for (its field selector's
/// `metadata.name`), which RBAC's `resourceNames` match.
fn named(filter: &Filter) -> Option<String> {
    filter
        .fields
        .exact("metadata.name")
        .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains(['/', '%']))
        .map(str::to_owned)
}

/// The continue token: the revision of the first page and the last key.
fn continue_token(rv: u64, last: &Key) -> String {
    let body = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{}/{}\u{0}", last.1, last.2)});
    URL_SAFE_NO_PAD.encode(body.to_string())
}

fn read_continue(token: &str) -> Result<(u64, String, String), Status> {
    let bad = || {
        Status::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?.trim_end_matches('\u{0}');
    let (ns, name) = start.split_once('/').ok_or_else(bad)?;
    Ok((rv, ns.to_string(), name.to_string()))
}

pub(super) fn list(ctx: &Ctx, r: &'static Resource, ns: Option<&str>) -> Result<Response<Body>, Status> {
    let f = filter(ctx, r, ns)?;
    ctx.authorize("list", r, None, ns, named(&f).as_deref())?;
    let output = negotiate(&ctx.headers, true)?;
    let limit = match ctx.query("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| Status::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let store = ctx.shared.lock();
    let (rv, after) = match ctx.query("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, ns, name) = read_continue(token)?;
            (rv, Some((ns, name)))
        }
        None => (store.rv(), None),
    };
    let objects = store.list_at(f.resource, ns, rv).ok_or_else(|| {
        Status::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
    })?;
    drop(store);
    let mut matching = objects
        .iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|(ns, name)| (&k.1, &k.2) > (ns, name)))
        .filter(|(k, o)| f.matches(k, o));
    let mut items = Vec::new();
    let mut last = None;
    for (k, o) in matching.by_ref() {
        items.push(match output {
            Output::Metadata => render(r, o, output),
            Output::Full => (**o).clone(),
        });
        last = Some(k.clone());
        if limit > 0 && items.len() == limit {
            break;
        }
    }
    let remaining = matching.count();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if remaining > 0 {
        if let Some(last) = &last {
            metadata["continue"] = json!(continue_token(rv, last));
            if f.labels.is_empty() && f.fields.is_empty() {
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
    }
    let (kind, api_version) = match output {
        Output::Metadata => ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1".to_string()),
        Output::Full => (format!("{}List", r.kind), r.api_version()),
    };
    Ok(json_response(
        200,
        &json!({"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": items}),
    ))
}

fn event_line(kind: &str, object: Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// One watch stream between polls.
struct Cursor {
    shared: Arc<Shared>,
    r: &'static Resource,
    filter: Filter,
    output: Output,
    last_rv: u64,
    pending: VecDeque<Bytes>,
    changes: tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
    bookmarks: bool,
    next_bookmark: tokio::time::Instant,
    done: bool,
}

impl Cursor {
    /// Queues what this watcher sees of the changes after `last_rv`, or
    /// the 410 a watcher left behind by compaction gets.
    fn collect(&mut self) {
        let store = self.shared.lock();
        if self.last_rv < store.compacted() {
            let gone = Status::expired(format!(
                "too old resource version: {} ({})",
                self.last_rv,
                store.compacted() + 1
            ));
            self.pending.push_back(event_line("ERROR", gone.to_json()));
            self.done = true;
            return;
        }
        for e in store.since(self.last_rv) {
            if let Some(kind) = self.filter.sees(e) {
                self.pending
                    .push_back(event_line(kind.as_str(), render(self.r, &e.object, self.output)));
            }
            self.last_rv = e.rv;
        }
    }

    fn bookmark(&self, annotations: Option<Value>) -> Bytes {
        let mut metadata = json!({"resourceVersion": self.last_rv.to_string()});
        if let Some(a) = annotations {
            metadata["annotations"] = a;
        }
        let object = match self.output {
            Output::Metadata => {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})
            }
            Output::Full => json!({"kind": self.r.kind, "apiVersion": self.r.api_version(), "metadata": metadata}),
        };
        event_line("BOOKMARK", object)
    }
}

pub(super) fn watch(ctx: &Ctx, r: &'static Resource, ns: Option<&str>) -> Result<Response<Body>, Status> {
    let f = filter(ctx, r, ns)?;
    ctx.authorize("watch", r, None, ns, named(&f).as_deref())?;
    let output = negotiate(&ctx.headers, false)?;
    let from = match ctx.query("resourceVersion").unwrap_or_default() {
        "" | "0" => None,
        rv => Some(
            rv.parse::<u64>()
                .map_err(|_| Status::bad_request(format!("invalid resource version: {rv:?}")))?,
        ),
    };
    let timeout = ctx
        .query("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let bookmarks = ctx.query("allowWatchBookmarks") == Some("true");
    let initial_events_end = ctx.query("sendInitialEvents") == Some("true");
    let now = tokio::time::Instant::now();
    let deadline = now + timeout;
    let mut pending = VecDeque::new();
    // Subscribed under the lock the state is read with: no change between
    // the two is missed.
    let (changes, last_rv) = {
        let store = ctx.shared.lock();
        let mut changes = store.subscribe();
        changes.borrow_and_update();
        let last_rv = match from {
            Some(rv) => rv,
            None => {
                for (k, o) in store.list(f.resource, ns) {
                    if f.matches(&k, &o) {
                        pending.push_back(event_line(EventKind::Added.as_str(), render(r, &o, output)));
                    }
                }
                store.rv()
            }
        };
        (changes, last_rv)
    };
    let mut cursor = Cursor {
        shared: ctx.shared.clone(),
        r,
        filter: f,
        output,
        last_rv,
        pending,
        changes,
        deadline,
        bookmarks,
        // The real server sends one two seconds before the deadline at the
        // latest, so that clients can resume where they were.
        next_bookmark: (now + BOOKMARK_EVERY).min(deadline.checked_sub(Duration::from_secs(2)).unwrap_or(now)),
        done: false,
    };
    if initial_events_end && from.is_none() {
        let line = cursor.bookmark(Some(json!({"k8s.io/initial-events-end": "true"})));
        cursor.pending.push_back(line);
    }
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(line) = c.pending.pop_front() {
                return Some((Ok::<_, Infallible>(Frame::data(line)), c));
            }
            if c.done {
                return None;
            }
            c.collect();
            if !c.pending.is_empty() {
                continue;
            }
            let bookmark_at = if c.bookmarks { c.next_bookmark } else { c.deadline };
            tokio::select! {
                changed = c.changes.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = tokio::time::sleep_until(bookmark_at.min(c.deadline)) => {
                    if tokio::time::Instant::now() >= c.deadline {
                        return None;
                    }
                    let line = c.bookmark(None);
                    c.pending.push_back(line);
                    let next = tokio::time::Instant::now() + BOOKMARK_EVERY;
                    c.next_bookmark = next.min(c.deadline.checked_sub(Duration::from_secs(2)).unwrap_or(next));
                    if c.next_bookmark <= tokio::time::Instant::now() {
                        c.next_bookmark = c.deadline;
                    }
                }
            }
        }
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
