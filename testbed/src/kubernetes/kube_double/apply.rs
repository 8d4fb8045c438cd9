//! Server-side apply and `metadata.managedFields`, and the other patch
//! formats, as kube-apiserver's field manager behaves for the kinds served
//! here.
//!
//! Fields are tracked as paths (`f:` map fields, `k:` items of lists keyed
//! by merge keys, `v:` items of sets); lists without keys are atomic, owned
//! whole. An apply conflicts where it sets a field to another value than the
//! object has and another manager owns that field; `force` takes such
//! fields over. Fields a manager stops applying are removed unless another
//! manager still owns them. Any other write (create, update, patch) makes
//! its manager the owner of the fields it changed and takes them from the
//! others. What the double simplifies: the list types come from a short
//! table of the fields the served kinds have (`list_type`), not from
//! OpenAPI schemas, and a strategic merge patch honours merge keys and
//! `$patch: delete` but no other directive.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// A map field.
    Field(String),
    /// A list item, by its merge keys (canonical JSON).
    Key(String),
    /// A set item, by its value (canonical JSON).
    Value(String),
}

/// A field path.
pub type Path = Vec<Step>;

/// How a list at a field path merges.
#[derive(Debug, PartialEq)]
enum ListType {
    /// Replaced whole, owned whole.
    Atomic,
    /// Items identified by these keys.
    Map(&'static [&'static str]),
    /// Items identified by their value.
    Set,
}

/// The list type of the field reached by `names` (map fields only).
fn list_type(names: &[String]) -> ListType {
    let joined = names.join(".");
    let last_two = names[names.len().saturating_sub(2)..].join(".");
    match joined.as_str() {
        "metadata.ownerReferences" => return ListType::Map(&["uid"]),
        "metadata.finalizers" | "spec.finalizers" => return ListType::Set,
        "spec.containers"
        | "spec.initContainers"
        | "spec.ephemeralContainers"
        | "spec.volumes"
        | "spec.imagePullSecrets" => return ListType::Map(&["name"]),
        _ => {}
    }
    match last_two.as_str() {
        "containers.env" | "initContainers.env" => ListType::Map(&["name"]),
        "containers.volumeMounts" | "initContainers.volumeMounts" => ListType::Map(&["mountPath"]),
        "containers.ports" | "initContainers.ports" => ListType::Map(&["containerPort", "protocol"]),
        _ => ListType::Atomic,
    }
}

/// Fields the server owns, never tracked.
fn ignored(names: &[String], field: &str) -> bool {
    match names {
        [] => matches!(field, "apiVersion" | "kind" | "status"),
        [m] if m == "metadata" => matches!(
            field,
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "deletionTimestamp"
                | "deletionGracePeriodSeconds"
                | "managedFields"
                | "selfLink"
        ),
        _ => false,
    }
}

/// The canonical key of `item` in a list keyed by `keys` (sorted, as the
/// real field manager writes `k:{...}`).
fn item_key(item: &Value, keys: &[&str]) -> String {
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_unstable();
    let parts: Vec<String> = sorted
        .iter()
        .filter(|k| !item[**k].is_null())
        .map(|k| format!("{}:{}", Value::String((*k).to_string()), item[*k]))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn same_item(a: &Value, b: &Value, keys: &[&str]) -> bool {
    item_key(a, keys) == item_key(b, keys)
}

/// Every field `value` sets: its leaves, atomic lists, keyed list items and
/// set items; with `maps`, also every non-empty map (what an update owns
/// as the map itself, `.` in `managedFields`).
pub fn fields(value: &Value, maps: bool) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    collect(value, &mut Vec::new(), &mut Vec::new(), maps, &mut out);
    out
}

/// [`collect`] for field `k` of an object, whose value is `child`.
fn collect_field(
    k: &str,
    child: &Value,
    path: &mut Path,
    names: &mut Vec<String>,
    maps: bool,
    out: &mut BTreeSet<Path>,
) {
    path.push(Step::Field(k.to_string()));
    under(names, k, |names| collect(child, path, names, maps, out));
    path.pop();
}

fn collect(v: &Value, path: &mut Path, names: &mut Vec<String>, maps: bool, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            if maps && !path.is_empty() && !matches!(path.last(), Some(Step::Key(_))) {
                out.insert(path.clone());
            }
            for (k, child) in m {
                if ignored(names, k) || child.is_null() {
                    continue;
                }
                collect_field(k, child, path, names, maps, out);
            }
        }
        Value::Array(items) => match list_type(names) {
            ListType::Map(keys) => {
                for item in items {
                    path.push(Step::Key(item_key(item, keys)));
                    out.insert(path.clone());
                    if let Value::Object(m) = item {
                        for (k, child) in m {
                            if child.is_null() {
                                continue;
                            }
                            collect_field(k, child, path, names, maps, out);
                        }
                    }
                    path.pop();
                }
            }
            ListType::Set => {
                for item in items {
                    path.push(Step::Value(item.to_string()));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListType::Atomic => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// One hop along a path: a field of an object, or an item of a list.
enum Hop<'p> {
    Field(&'p str),
    Item(usize),
}

/// The hops `path` takes through `value`: the fields it names, and the
/// position of the list item its key or value selects.
fn locate<'p>(value: &Value, path: &'p [Step]) -> Option<Vec<Hop<'p>>> {
    let mut v = value;
    let mut names: Vec<String> = Vec::new();
    let mut hops = Vec::with_capacity(path.len());
    for step in path {
        let hop = match step {
            Step::Field(f) => {
                names.push(f.clone());
                Hop::Field(f)
            }
            Step::Key(k) => {
                let ListType::Map(keys) = list_type(&names) else {
                    return None;
                };
                Hop::Item(v.as_array()?.iter().position(|item| item_key(item, keys) == *k)?)
            }
            Step::Value(s) => Hop::Item(v.as_array()?.iter().position(|item| is_item_text(item, s))?),
        };
        v = match &hop {
            Hop::Field(f) => v.get(f)?,
            Hop::Item(i) => v.get(i)?,
        };
        hops.push(hop);
    }
    Some(hops)
}

/// Whether a set's `item` is the one whose JSON text is `text`.
fn is_item_text(item: &Value, text: &str) -> bool {
    let own = item.to_string();
    own == text
}

/// The value at `path`.
pub fn get<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut v = value;
    for hop in locate(value, path)? {
        v = match hop {
            Hop::Field(f) => v.get(f)?,
            Hop::Item(i) => v.get(i)?,
        };
    }
    Some(v)
}

/// Removes what is at `path`.
fn remove(value: &mut Value, path: &[Step]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let names: Vec<String> = parent_path
        .iter()
        .filter_map(|s| match s {
            Step::Field(f) => Some(f.clone()),
            _ => None,
        })
        .collect();
    let Some(parent) = get_mut(value, parent_path) else {
        return;
    };
    match last {
        Step::Field(f) => {
            if let Some(m) = parent.as_object_mut() {
                m.remove(f);
            }
        }
        Step::Key(k) => {
            if let (Some(items), ListType::Map(keys)) = (parent.as_array_mut(), list_type(&names)) {
                items.retain(|item| item_key(item, keys) != *k);
            }
        }
        Step::Value(s) => {
            if let (Some(items), Ok(value)) = (parent.as_array_mut(), serde_json::from_str::<Value>(s)) {
                items.retain(|item| *item != value);
            }
        }
    }
}

/// The value at `path`, to change.
fn get_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let hops = locate(value, path)?;
    let mut v = value;
    for hop in hops {
        v = match hop {
            Hop::Field(f) => v.get_mut(f)?,
            Hop::Item(i) => v.get_mut(i)?,
        };
    }
    Some(v)
}

/// `f` run with field `k` on the path of field names (which decides the
/// list types below it).
fn under<T>(names: &mut Vec<String>, k: &str, f: impl FnOnce(&mut Vec<String>) -> T) -> T {
    names.push(k.to_string());
    let out = f(names);
    names.pop();
    out
}

/// `config` merged over `live`: maps field by field, keyed lists item by
/// item, sets as a union, everything else replaced.
fn merge(live: &Value, config: &Value, names: &mut Vec<String>) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    continue;
                }
                let merged = l.get(k).map(|lv| under(names, k, |names| merge(lv, cv, names)));
                out.insert(k.clone(), merged.unwrap_or_else(|| cv.clone()));
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => match list_type(names) {
            ListType::Map(keys) => {
                let mut out = l.clone();
                for ci in c {
                    match out.iter().position(|li| same_item(li, ci, keys)) {
                        Some(i) => out[i] = merge(&out[i], ci, names),
                        None => out.push(ci.clone()),
                    }
                }
                Value::Array(out)
            }
            ListType::Set => {
                let mut out = l.clone();
                out.extend(c.iter().filter(|ci| !l.contains(ci)).cloned());
                Value::Array(out)
            }
            ListType::Atomic => config.clone(),
        },
        _ => config.clone(),
    }
}

/// Which kind of write a manager made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Create, update or patch.
    Update,
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    manager: String,
    operation: Operation,
    api_version: String,
    time: String,
    fields: BTreeSet<Path>,
}

impl Entry {
    /// `w`'s entry for `operation`, owning `fields`, stamped now.
    fn by(w: &Writer, operation: Operation, fields: BTreeSet<Path>) -> Entry {
        Entry {
            manager: w.manager.to_string(),
            operation,
            api_version: w.api_version.to_string(),
            time: w.now.to_string(),
            fields,
        }
    }
}

fn encode_step(step: &Step) -> String {
    match step {
        Step::Field(f) => format!("f:{f}"),
        Step::Key(k) => format!("k:{k}"),
        Step::Value(v) => format!("v:{v}"),
    }
}

fn decode_step(s: &str) -> Option<Step> {
    let (kind, rest) = s.split_at_checked(2)?;
    match kind {
        "f:" => Some(Step::Field(rest.to_string())),
        "k:" => Some(Step::Key(rest.to_string())),
        "v:" => Some(Step::Value(rest.to_string())),
        _ => None,
    }
}

/// A field set as `fieldsV1`.
fn fields_v1(set: &BTreeSet<Path>) -> Value {
    let mut root = Value::Object(Map::new());
    for path in set {
        let mut node = &mut root;
        for step in path {
            node = node
                .as_object_mut()
                .map(|m| m.entry(encode_step(step)).or_insert_with(|| json!({})))
                .expect("fieldsV1 nodes are objects");
        }
    }
    for path in set {
        let mut node = &mut root;
        for step in path {
            node = &mut node[encode_step(step)];
        }
        if let Some(m) = node.as_object_mut().filter(|m| !m.is_empty()) {
            m.insert(".".into(), json!({}));
        }
    }
    root
}

fn read_fields_v1(node: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    for (k, child) in node.as_object().into_iter().flatten() {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        let Some(step) = decode_step(k) else { continue };
        path.push(step);
        if child.as_object().is_none_or(|m| m.is_empty()) {
            out.insert(path.clone());
        } else {
            read_fields_v1(child, path, out);
        }
        path.pop();
    }
}

fn read_entries(object: &Value) -> Vec<Entry> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut fields = BTreeSet::new();
            read_fields_v1(&e["fieldsV1"], &mut Vec::new(), &mut fields);
            Entry {
                manager: e["manager"].as_str().unwrap_or_default().to_string(),
                operation: if e["operation"] == "Apply" {
                    Operation::Apply
                } else {
                    Operation::Update
                },
                api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                time: e["time"].as_str().unwrap_or_default().to_string(),
                fields,
            }
        })
        .collect()
}

fn write_entries(object: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "manager": e.manager,
                "operation": match e.operation { Operation::Apply => "Apply", Operation::Update => "Update" },
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(&e.fields),
            })
        })
        .collect();
    if let Some(meta) = object["metadata"].as_object_mut() {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// A path as conflicts name it: `.data.key`, `.metadata.labels.app`,
/// `.spec.containers[name="app"].image`.
pub fn display(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Step::Key(k) => {
                let fields: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Step::Value(v) => out.push_str(&format!("[={v}]")),
        }
    }
    out
}

/// Who applies, and when.
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// `apiVersion` of the request.
    pub api_version: &'a str,
    /// The time (RFC 3339).
    pub now: &'a str,
}

/// Server-side applies `config` over `live` (an empty object when it is
/// new): the new object with its `managedFields`, or the conflicts
/// (manager, field) when `force` is off.
pub fn apply(live: &Value, config: &Value, w: &Writer, force: bool) -> Result<Value, Vec<(String, String)>> {
    let mut entries = read_entries(live);
    let applied = fields(config, false);
    let mine = |e: &Entry| e.manager == w.manager && e.operation == Operation::Apply;
    let mut conflicts = Vec::new();
    let mut taken: Vec<(usize, Path)> = Vec::new();
    for path in &applied {
        if !matches!(path.last(), Some(Step::Field(_))) {
            continue;
        }
        let before = get(live, path);
        if before.is_none() || before == get(config, path) {
            continue;
        }
        for (i, e) in entries.iter().enumerate() {
            if !mine(e) && e.fields.contains(path) {
                conflicts.push((e.manager.clone(), display(path)));
                taken.push((i, path.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for (i, path) in taken {
        entries[i].fields.remove(&path);
    }
    let mut object = live.clone();
    let previous = entries
        .iter()
        .find(|e| mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for path in previous.difference(&applied) {
        let shared = entries.iter().any(|e| !mine(e) && e.fields.contains(path));
        if !shared {
            remove(&mut object, path);
        }
    }
    let mut object = merge(&object, config, &mut Vec::new());
    let changed = object != *live || previous != applied;
    match entries.iter_mut().find(|e| mine(e)) {
        Some(e) => {
            if changed {
                e.time = w.now.to_string();
            }
            e.fields = applied;
            e.api_version = w.api_version.to_string();
        }
        None => entries.push(Entry::by(w, Operation::Apply, applied)),
    }
    write_entries(&mut object, entries);
    Ok(object)
}

/// Records a create, update or patch of `old` (none: created) into `new`
/// by `w`: it owns the fields it changed, which the others lose; fields it
/// removed leave every set.
pub fn record_update(old: Option<&Value>, new: &mut Value, w: &Writer) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let empty = json!({});
    let old = old.unwrap_or(&empty);
    let before = fields(old, true);
    let after = fields(new, true);
    let changed: BTreeSet<Path> = after
        .iter()
        .filter(|p| !before.contains(*p) || (is_leaf(new, p) && get(old, p) != get(new, p)))
        .cloned()
        .collect();
    let removed: BTreeSet<Path> = before.difference(&after).cloned().collect();
    let mine = |e: &Entry| e.manager == w.manager && e.operation == Operation::Update;
    for e in entries.iter_mut() {
        e.fields.retain(|p| !removed.contains(p));
        if !mine(e) {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| mine(e)) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = w.now.to_string();
                e.api_version = w.api_version.to_string();
            }
            None => entries.push(Entry::by(w, Operation::Update, changed)),
        }
    }
    write_entries(new, entries);
}

/// Whether `path` in `value` is a value rather than a map or list item
/// (whose members are tracked on their own).
fn is_leaf(value: &Value, path: &[Step]) -> bool {
    matches!(path.last(), Some(Step::Field(_)))
        && get(value, path).is_none_or(|v| v.as_object().is_none_or(|m| m.is_empty()))
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = target.as_object().cloned().unwrap_or_default();
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// A strategic merge patch: a merge patch whose keyed lists merge item by
/// item (an item with `$patch: delete` is removed).
pub fn strategic_merge_patch(target: &Value, patch: &Value) -> Value {
    smp(target, patch, &mut Vec::new())
}

fn smp(target: &Value, patch: &Value, names: &mut Vec<String>) -> Value {
    match (target, patch) {
        (_, Value::Object(p)) => {
            let mut out = target.as_object().cloned().unwrap_or_default();
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = under(names, k, |names| smp(out.get(k).unwrap_or(&Value::Null), v, names));
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(t), Value::Array(p)) => match list_type(names) {
            ListType::Map(keys) => {
                let mut out = t.clone();
                for item in p {
                    let pos = out.iter().position(|x| same_item(x, item, keys));
                    if item["$patch"] == "delete" {
                        if let Some(i) = pos {
                            out.remove(i);
                        }
                        continue;
                    }
                    match pos {
                        Some(i) => out[i] = smp(&out[i], item, names),
                        None => out.push(item.clone()),
                    }
                }
                Value::Array(out)
            }
            _ => patch.clone(),
        },
        _ => patch.clone(),
    }
}

/// RFC 6902 JSON patch (add, remove, replace, test, move, copy).
pub fn json_patch(target: &Value, ops: &Value) -> Result<Value, String> {
    let mut doc = target.clone();
    let ops = ops.as_array().ok_or("a JSON patch is a list of operations")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("an operation without a path")?;
        match op["op"].as_str().unwrap_or_default() {
            "add" => pointer_add(&mut doc, path, op["value"].clone())?,
            "remove" => {
                pointer_remove(&mut doc, path)?;
            }
            "replace" => {
                pointer_remove(&mut doc, path)?;
                pointer_add(&mut doc, path, op["value"].clone())?;
            }
            "test" => {
                if doc.pointer(path) != Some(&op["value"]) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            "move" | "copy" => {
                let from = op["from"].as_str().ok_or("move or copy without from")?;
                let value = if op["op"] == "move" {
                    pointer_remove(&mut doc, from)?
                } else {
                    doc.pointer(from)
                        .cloned()
                        .ok_or_else(|| format!("doc is missing path: {from}"))?
                };
                pointer_add(&mut doc, path, value)?;
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(doc)
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The value holding what JSON pointer `path` names, and the last
/// token (unescaped) that names it there.
fn pointer_parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let (parent, last) = path.rsplit_once('/').ok_or_else(|| format!("invalid path {path:?}"))?;
    let target = doc
        .pointer_mut(parent)
        .ok_or_else(|| format!("doc is missing path: {path}"))?;
    Ok((target, unescape(last)))
}

fn pointer_add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let (target, last) = pointer_parent(doc, path)?;
    match target {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last.parse().map_err(|_| format!("invalid index {last:?}"))?;
                if i > a.len() {
                    return Err(format!("index out of range: {path}"));
                }
                a.insert(i, value);
            }
        }
        _ => return Err(format!("doc is missing path: {path}")),
    }
    Ok(())
}

fn pointer_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (target, last) = pointer_parent(doc, path)?;
    match target {
        Value::Object(m) => m.remove(&last).ok_or_else(|| format!("doc is missing key: {path}")),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| format!("invalid index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("index out of range: {path}"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("doc is missing path: {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1",
            now: "2026-12-07T00:00:00Z",
        }
    }

    fn secret(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "labels": {"app": "a"}}, "data": data})
    }

    #[test]
    fn apply_conflicts_with_another_managers_field_unless_forced_and_removes_what_it_stops_applying() {
        let created = apply(
            &json!({}),
            &secret(json!({"a": "MQ==", "b": "Mg=="})),
            &w("sync"),
            false,
        )
        .unwrap();
        // Another writer changes `a`: it owns it now.
        let mut edited = created.clone();
        edited["data"]["a"] = json!("OQ==");
        record_update(Some(&created), &mut edited, &w("kubectl-edit"));
        let e = apply(&edited, &secret(json!({"a": "MQ==", "b": "Mg=="})), &w("sync"), false).unwrap_err();
        assert_eq!(e, [("kubectl-edit".to_string(), ".data.a".to_string())]);
        // The same value is no conflict; forcing takes the field back.
        apply(&edited, &secret(json!({"a": "OQ==", "b": "Mg=="})), &w("sync"), false).unwrap();
        let forced = apply(&edited, &secret(json!({"a": "MQ=="})), &w("sync"), true).unwrap();
        assert_eq!(forced["data"], json!({"a": "MQ=="}), "b no longer applied: removed");
        let managers: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, ["sync"], "kubectl-edit lost its only field");
    }

    #[test]
    fn managed_fields_round_trip_through_fields_v1() {
        let obj = json!({"metadata": {"labels": {"a": "1"}, "ownerReferences": [{"uid": "u", "name": "n"}]}, "data": {"k": "v"}});
        let set = fields(&obj, true);
        let v1 = fields_v1(&set);
        assert_eq!(
            v1["f:metadata"]["f:ownerReferences"]["k:{\"uid\":\"u\"}"]["f:name"],
            json!({})
        );
        let mut back = BTreeSet::new();
        read_fields_v1(&v1, &mut Vec::new(), &mut back);
        assert_eq!(back, set);
    }

    #[test]
    fn patches_merge_as_their_formats_say() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}});
        let p = strategic_merge_patch(
            &pod,
            &json!({"spec": {"containers": [{"name": "b", "image": "2"}, {"name": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(p["spec"]["containers"], json!([{"name": "b", "image": "2"}]));
        let m = merge_patch(&json!({"a": {"b": 1, "c": 2}}), &json!({"a": {"b": null}}));
        assert_eq!(m, json!({"a": {"c": 2}}));
        let j = json_patch(&json!({"a": [1]}), &json!([{"op": "add", "path": "/a/-", "value": 2}])).unwrap();
        assert_eq!(j, json!({"a": [1, 2]}));
    }
}
