//! Secret storage semantics: create/replace/merge-patch/server-side apply/
//! delete with the API server's preconditions, immutability rules,
//! validation and `managedFields` bookkeeping.
//!
//! Server-side apply is approximated: ownership is tracked per leaf field
//! (`data.<key>`, `metadata.labels.<key>`, `metadata.annotations.<key>`,
//! `type`, `immutable`) and `metadata.ownerReferences` as one atomic field;
//! other fields of an applied configuration are ignored. Conflicts arise when
//! an apply changes the value of a field another manager owns; `force=true`
//! takes such fields over; fields a manager stops applying are removed unless
//! another manager still owns them.
//!
//! Every write records a watch event (ADDED, MODIFIED, DELETED) in the
//! state's Secret log, as the pods' writes do in theirs.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::crypto::{rfc3339, UidSource};
use super::state::{Event, EventKind, FieldSet, Selector, State, Watched};
use super::status::{Cause, Status};

const PLURAL: &str = "secrets";
const KIND: &str = "Secret";
const MAX_DATA_BYTES: usize = 1024 * 1024;

/// The mutable part of a Secret: what writes change and what SSA tracks.
#[derive(Clone, Debug, PartialEq, Default)]
pub(super) struct SecretContent {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub owner_references: Option<Value>,
    pub data: BTreeMap<String, Vec<u8>>,
    pub type_: String,
    pub immutable: Option<bool>,
}

/// Whether a managedFields entry came from an apply or from another write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Operation {
    Apply,
    Update,
}

/// One `metadata.managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ManagerEntry {
    pub manager: String,
    pub operation: Operation,
    pub time: String,
    pub fields: FieldSet,
}

/// A stored Secret.
#[derive(Clone, Debug)]
pub(super) struct Secret {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: u64,
    pub created: String,
    pub content: SecretContent,
    pub managers: Vec<ManagerEntry>,
}

/// Who writes, and when.
pub(super) struct Writer<'a> {
    pub uids: &'a UidSource,
    /// `fieldManager` query parameter, or a name derived from the User-Agent.
    pub manager: String,
    pub now: u64,
}

impl Secret {
    /// The object as served; `kind` adds `kind`/`apiVersion` (lists omit them on items).
    pub fn to_json(&self, kind: bool) -> Value {
        let mut meta = Map::new();
        meta.insert("name".into(), json!(self.name));
        meta.insert("namespace".into(), json!(self.namespace));
        meta.insert("uid".into(), json!(self.uid));
        meta.insert("resourceVersion".into(), json!(self.resource_version.to_string()));
        meta.insert("creationTimestamp".into(), json!(self.created));
        let c = &self.content;
        if !c.labels.is_empty() {
            meta.insert("labels".into(), json!(c.labels));
        }
        if !c.annotations.is_empty() {
            meta.insert("annotations".into(), json!(c.annotations));
        }
        if let Some(refs) = &c.owner_references {
            meta.insert("ownerReferences".into(), refs.clone());
        }
        if !self.managers.is_empty() {
            let entries: Vec<Value> = self
                .managers
                .iter()
                .map(|m| {
                    json!({
                        "manager": m.manager,
                        "operation": match m.operation { Operation::Apply => "Apply", Operation::Update => "Update" },
                        "apiVersion": "v1",
                        "time": m.time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": fields_v1(&m.fields),
                    })
                })
                .collect();
            meta.insert("managedFields".into(), Value::Array(entries));
        }
        let mut obj = Map::new();
        if kind {
            obj.insert("kind".into(), json!(KIND));
            obj.insert("apiVersion".into(), json!("v1"));
        }
        obj.insert("metadata".into(), Value::Object(meta));
        if !c.data.is_empty() {
            let data: Map<String, Value> = c
                .data
                .iter()
                .map(|(k, v)| (k.clone(), json!(STANDARD.encode(v))))
                .collect();
            obj.insert("data".into(), Value::Object(data));
        }
        obj.insert("type".into(), json!(c.type_));
        if let Some(imm) = c.immutable {
            obj.insert("immutable".into(), json!(imm));
        }
        Value::Object(obj)
    }
}

/// The field selectors the API server supports on Secrets.
pub(super) const FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "type"];

impl Secret {
    fn field(&self, key: &str) -> Option<String> {
        Some(match key {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.namespace.clone(),
            "type" => self.content.type_.clone(),
            _ => return None,
        })
    }
}

impl Watched for Secret {
    fn current(st: &State) -> impl Iterator<Item = &Self> {
        st.secrets.values()
    }
    fn events(st: &State) -> &[Event<Self>] {
        &st.secret_events
    }
    fn events_mut(st: &mut State) -> &mut Vec<Event<Self>> {
        &mut st.secret_events
    }
    fn resource_version(&self) -> u64 {
        self.resource_version
    }
    fn matches(&self, namespace: Option<&str>, labels: &Selector, fields: &Selector) -> bool {
        namespace.is_none_or(|ns| ns == self.namespace)
            && labels.matches(|k| self.content.labels.get(k).cloned())
            && fields.matches(|k| self.field(k))
    }
    fn render(&self, metadata_only: bool) -> Value {
        if metadata_only {
            json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": self.to_json(false)["metadata"],
            })
        } else {
            self.to_json(true)
        }
    }
}

/// `{"f:data":{"f:key":{}}}` from a set of paths.
fn fields_v1(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for seg in path {
            let entry = node
                .entry(format!("f:{seg}"))
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = entry else {
                break;
            };
            node = next;
        }
    }
    Value::Object(root)
}

fn path(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

fn display_path(p: &[String]) -> String {
    format!(".{}", p.join("."))
}

/// The tracked leaf fields a content sets.
fn content_fields(c: &SecretContent) -> FieldSet {
    let mut f = FieldSet::new();
    for k in c.data.keys() {
        f.insert(path(&["data", k]));
    }
    for k in c.labels.keys() {
        f.insert(path(&["metadata", "labels", k]));
    }
    for k in c.annotations.keys() {
        f.insert(path(&["metadata", "annotations", k]));
    }
    if c.owner_references.is_some() {
        f.insert(path(&["metadata", "ownerReferences"]));
    }
    f.insert(path(&["type"]));
    if c.immutable.is_some() {
        f.insert(path(&["immutable"]));
    }
    f
}

fn field_value(c: &SecretContent, p: &[String]) -> Option<Value> {
    let p: Vec<&str> = p.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["data", k] => c.data.get(*k).map(|v| json!(STANDARD.encode(v))),
        ["metadata", "labels", k] => c.labels.get(*k).map(|v| json!(v)),
        ["metadata", "annotations", k] => c.annotations.get(*k).map(|v| json!(v)),
        ["metadata", "ownerReferences"] => c.owner_references.clone(),
        ["type"] => Some(json!(c.type_)),
        ["immutable"] => c.immutable.map(|v| json!(v)),
        _ => None,
    }
}

fn copy_field(dst: &mut SecretContent, src: &SecretContent, p: &[String]) {
    let p: Vec<&str> = p.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["data", k] => {
            if let Some(v) = src.data.get(*k) {
                dst.data.insert((*k).to_owned(), v.clone());
            }
        }
        ["metadata", "labels", k] => {
            if let Some(v) = src.labels.get(*k) {
                dst.labels.insert((*k).to_owned(), v.clone());
            }
        }
        ["metadata", "annotations", k] => {
            if let Some(v) = src.annotations.get(*k) {
                dst.annotations.insert((*k).to_owned(), v.clone());
            }
        }
        ["metadata", "ownerReferences"] => dst.owner_references = src.owner_references.clone(),
        ["type"] => dst.type_ = src.type_.clone(),
        ["immutable"] => dst.immutable = src.immutable,
        _ => {}
    }
}

fn remove_field(c: &mut SecretContent, p: &[String]) {
    let p: Vec<&str> = p.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["data", k] => {
            c.data.remove(*k);
        }
        ["metadata", "labels", k] => {
            c.labels.remove(*k);
        }
        ["metadata", "annotations", k] => {
            c.annotations.remove(*k);
        }
        ["metadata", "ownerReferences"] => c.owner_references = None,
        // `type` is required; dropping ownership leaves the value in place.
        ["immutable"] => c.immutable = None,
        _ => {}
    }
}

/// A Secret as a client sent it, decoded but not yet validated.
#[derive(Default)]
struct SecretInput {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    uid: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Value>,
    /// `data` with `stringData` merged over it; `None` if neither was sent.
    data: Option<BTreeMap<String, Vec<u8>>>,
    type_: Option<String>,
    immutable: Option<bool>,
}

fn decode_error(detail: impl std::fmt::Display) -> Status {
    Status::bad_request(format!(
        "Secret in version \"v1\" cannot be handled as a Secret: {detail}"
    ))
}

fn string_map(v: Option<&Value>, what: &str) -> Result<Option<BTreeMap<String, String>>, Status> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(decode_error(format!(
                    "json: cannot unmarshal {} into Go struct field {what} of type string",
                    json_type(other)
                ))),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(other) => Err(decode_error(format!(
            "json: cannot unmarshal {} into Go struct field {what} of type map[string]string",
            json_type(other)
        ))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn opt_string(v: Option<&Value>, what: &str) -> Result<Option<String>, Status> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(decode_error(format!(
            "json: cannot unmarshal {} into Go struct field {what} of type string",
            json_type(other)
        ))),
    }
}

fn base64_error(e: base64::DecodeError, len: usize) -> Status {
    let at = match e {
        base64::DecodeError::InvalidByte(o, _) | base64::DecodeError::InvalidLastSymbol(o, _) => o,
        base64::DecodeError::InvalidLength(l) => l,
        base64::DecodeError::InvalidPadding => len,
    };
    decode_error(format!("illegal base64 data at input byte {at}"))
}

fn parse_input(body: &Value) -> Result<SecretInput, Status> {
    let Value::Object(obj) = body else {
        return Err(decode_error("json: cannot unmarshal into Go value of type v1.Secret"));
    };
    if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
        if kind != KIND {
            return Err(Status::bad_request(format!(
                "the body of the request was of kind {kind:?}, expected \"Secret\""
            )));
        }
    }
    if let Some(api) = obj.get("apiVersion").and_then(Value::as_str) {
        if api != "v1" {
            return Err(Status::bad_request(format!(
                "the API version in the data ({api}) does not match the expected API version (v1)"
            )));
        }
    }
    let empty = Map::new();
    let meta = match obj.get("metadata") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(decode_error("metadata must be an object")),
    };
    let mut input = SecretInput {
        name: opt_string(meta.get("name"), "ObjectMeta.metadata.name")?,
        generate_name: opt_string(meta.get("generateName"), "ObjectMeta.metadata.generateName")?,
        namespace: opt_string(meta.get("namespace"), "ObjectMeta.metadata.namespace")?,
        resource_version: opt_string(meta.get("resourceVersion"), "ObjectMeta.metadata.resourceVersion")?
            .filter(|s| !s.is_empty()),
        uid: opt_string(meta.get("uid"), "ObjectMeta.metadata.uid")?.filter(|s| !s.is_empty()),
        labels: string_map(meta.get("labels"), "ObjectMeta.metadata.labels")?,
        annotations: string_map(meta.get("annotations"), "ObjectMeta.metadata.annotations")?,
        owner_references: meta.get("ownerReferences").filter(|v| !v.is_null()).cloned(),
        type_: opt_string(obj.get("type"), "Secret.type")?.filter(|s| !s.is_empty()),
        ..SecretInput::default()
    };
    input.immutable = match obj.get("immutable") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(decode_error(format!(
                "json: cannot unmarshal {} into Go struct field Secret.immutable of type bool",
                json_type(other)
            )))
        }
    };
    let data = string_map(obj.get("data"), "Secret.data")?;
    let string_data = string_map(obj.get("stringData"), "Secret.stringData")?;
    if data.is_some() || string_data.is_some() {
        let mut merged = BTreeMap::new();
        for (k, v) in data.unwrap_or_default() {
            let bytes = STANDARD.decode(&v).map_err(|e| base64_error(e, v.len()))?;
            merged.insert(k, bytes);
        }
        // stringData is write-only and wins over data, as documented for the API.
        for (k, v) in string_data.unwrap_or_default() {
            merged.insert(k, v.into_bytes());
        }
        input.data = Some(merged);
    }
    Ok(input)
}

impl SecretInput {
    /// The whole content this input describes, with API defaults.
    fn content(&self) -> SecretContent {
        SecretContent {
            labels: self.labels.clone().unwrap_or_default(),
            annotations: self.annotations.clone().unwrap_or_default(),
            owner_references: self.owner_references.clone(),
            data: self.data.clone().unwrap_or_default(),
            type_: self.type_.clone().unwrap_or_else(|| "Opaque".to_owned()),
            immutable: self.immutable,
        }
    }

    /// The fields an applied configuration specifies.
    fn applied_fields(&self) -> FieldSet {
        let mut f = FieldSet::new();
        for k in self.data.iter().flat_map(BTreeMap::keys) {
            f.insert(path(&["data", k]));
        }
        for k in self.labels.iter().flat_map(BTreeMap::keys) {
            f.insert(path(&["metadata", "labels", k]));
        }
        for k in self.annotations.iter().flat_map(BTreeMap::keys) {
            f.insert(path(&["metadata", "annotations", k]));
        }
        if self.owner_references.is_some() {
            f.insert(path(&["metadata", "ownerReferences"]));
        }
        if self.type_.is_some() {
            f.insert(path(&["type"]));
        }
        if self.immutable.is_some() {
            f.insert(path(&["immutable"]));
        }
        f
    }

    fn check_namespace(&self, ns: &str) -> Result<(), Status> {
        match &self.namespace {
            Some(n) if !n.is_empty() && n != ns => Err(Status::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => Ok(()),
        }
    }

    fn check_name(&self, url_name: &str) -> Result<(), Status> {
        match &self.name {
            Some(n) if n != url_name => Err(Status::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({url_name})"
            ))),
            _ => Ok(()),
        }
    }

    fn check_preconditions(&self, existing: &Secret) -> Result<(), Status> {
        if let Some(uid) = &self.uid {
            if uid != &existing.uid {
                return Err(Status::conflict(
                    PLURAL,
                    &existing.name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        existing.uid
                    ),
                ));
            }
        }
        if let Some(rv) = &self.resource_version {
            if rv != &existing.resource_version.to_string() {
                return Err(Status::stale(PLURAL, &existing.name));
            }
        }
        Ok(())
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b.first() != Some(&b'-')
                && b.last() != Some(&b'-')
        })
}

fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn immutable_forbidden(field: &str) -> Cause {
    Cause {
        field: field.to_owned(),
        reason: "FieldValueForbidden",
        message: "Forbidden: field is immutable when `immutable` is set".into(),
    }
}

/// Validation the API server applies to every write.
fn validate(name: &str, c: &SecretContent, old: Option<&SecretContent>) -> Result<(), Status> {
    let mut causes = Vec::new();
    for key in c.data.keys().filter(|k| !is_config_key(k)) {
        causes.push(Cause {
            field: format!("data[{key}]"),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: \"{key}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"),
        });
    }
    let total: usize = c.data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_DATA_BYTES {
        causes.push(Cause {
            field: "data".into(),
            reason: "FieldValueTooLong",
            message: format!("Too long: must have at most {MAX_DATA_BYTES} bytes"),
        });
    }
    if let Some(old) = old {
        if old.type_ != c.type_ {
            causes.push(Cause {
                field: "type".into(),
                reason: "FieldValueInvalid",
                message: format!("Invalid value: \"{}\": field is immutable", c.type_),
            });
        }
        if old.immutable == Some(true) {
            if c.immutable != Some(true) {
                causes.push(immutable_forbidden("immutable"));
            }
            if c.data != old.data {
                causes.push(immutable_forbidden("data"));
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid(KIND, name, causes))
    }
}

fn key(ns: &str, name: &str) -> (String, String) {
    (ns.to_owned(), name.to_owned())
}

/// `GET .../secrets` with optional label and field selectors.
pub(super) fn list(state: &State, ns: Option<&str>, labels: &Selector, fields: &Selector) -> Value {
    let items: Vec<Value> = state
        .secrets
        .values()
        .filter(|s| s.matches(ns, labels, fields))
        .map(|s| s.to_json(false))
        .collect();
    json!({
        "kind": "SecretList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": state.resource_version.to_string()},
        "items": items,
    })
}

/// `GET .../secrets/{name}`.
pub(super) fn get(state: &State, ns: &str, name: &str) -> Result<Value, Status> {
    state
        .secrets
        .get(&key(ns, name))
        .map(|s| s.to_json(true))
        .ok_or_else(|| Status::not_found(PLURAL, name))
}

/// `POST .../secrets`.
pub(super) fn create(state: &mut State, w: &Writer, ns: &str, body: &Value) -> Result<Value, Status> {
    let input = parse_input(body)?;
    input.check_namespace(ns)?;
    let name = match (&input.name, &input.generate_name) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(prefix)) if !prefix.is_empty() => {
            let suffix: String = w
                .uids
                .next()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(5)
                .collect();
            format!("{prefix}{suffix}")
        }
        _ => {
            return Err(Status::invalid(
                KIND,
                "",
                vec![Cause {
                    field: "metadata.name".into(),
                    reason: "FieldValueRequired",
                    message: "Required value: name or generateName is required".into(),
                }],
            ))
        }
    };
    if !is_dns_subdomain(&name) {
        return Err(Status::invalid(KIND, &name, vec![Cause {
            field: "metadata.name".into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
        }]));
    }
    if input.resource_version.is_some() {
        // The real storage layer refuses this with an internal error too.
        return Err(Status::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    if state.secrets.contains_key(&key(ns, &name)) {
        return Err(Status::already_exists(PLURAL, &name));
    }
    let content = input.content();
    validate(&name, &content, None)?;
    let secret = Secret {
        namespace: ns.to_owned(),
        name: name.clone(),
        uid: w.uids.next(),
        resource_version: state.bump(),
        created: rfc3339(w.now),
        managers: vec![ManagerEntry {
            manager: w.manager.clone(),
            operation: Operation::Update,
            time: rfc3339(w.now),
            fields: content_fields(&content),
        }],
        content,
    };
    let out = secret.to_json(true);
    state.secrets.insert(key(ns, &name), secret.clone());
    state.record(EventKind::Added, None, secret);
    Ok(out)
}

/// `PUT .../secrets/{name}`: full replacement, optimistic on `resourceVersion`.
pub(super) fn replace(state: &mut State, w: &Writer, ns: &str, name: &str, body: &Value) -> Result<Value, Status> {
    let input = parse_input(body)?;
    input.check_name(name)?;
    input.check_namespace(ns)?;
    let existing = state
        .secrets
        .get(&key(ns, name))
        .ok_or_else(|| Status::not_found(PLURAL, name))?;
    input.check_preconditions(existing)?;
    let content = input.content();
    commit_update(state, w, ns, name, content)
}

/// Applies RFC 7386 JSON merge patch `patch` onto `target`.
fn merge_patch_value(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch_value(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// `PATCH` with `application/merge-patch+json` (and strategic merge patch,
/// which for a Secret's maps and scalars behaves the same).
pub(super) fn merge_patch(state: &mut State, w: &Writer, ns: &str, name: &str, patch: &Value) -> Result<Value, Status> {
    let existing = state
        .secrets
        .get(&key(ns, name))
        .ok_or_else(|| Status::not_found(PLURAL, name))?;
    let mut doc = existing.to_json(true);
    if let Some(Value::Object(meta)) = doc.get_mut("metadata") {
        meta.remove("managedFields");
    }
    merge_patch_value(&mut doc, patch);
    let input = parse_input(&doc)?;
    input.check_name(name)?;
    input.check_namespace(ns)?;
    // A resourceVersion or uid inside the patch acts as a precondition.
    input.check_preconditions(existing)?;
    let content = input.content();
    commit_update(state, w, ns, name, content)
}

/// Stores new content for an existing secret as an `Update` by the writer.
fn commit_update(state: &mut State, w: &Writer, ns: &str, name: &str, content: SecretContent) -> Result<Value, Status> {
    let k = key(ns, name);
    let Some(existing) = state.secrets.get(&k) else {
        return Err(Status::not_found(PLURAL, name));
    };
    validate(name, &content, Some(&existing.content))?;
    if content == existing.content {
        // The real server skips no-op writes: no new resourceVersion.
        return Ok(existing.to_json(true));
    }
    let old_fields = content_fields(&existing.content);
    let new_fields = content_fields(&content);
    let touched: FieldSet = new_fields
        .iter()
        .filter(|f| field_value(&existing.content, f) != field_value(&content, f))
        .cloned()
        .chain(old_fields.difference(&new_fields).cloned())
        .collect();
    let changed: FieldSet = new_fields.iter().filter(|f| touched.contains(*f)).cloned().collect();
    let mut managers = existing.managers.clone();
    for m in &mut managers {
        m.fields.retain(|f| !touched.contains(f));
    }
    let now = rfc3339(w.now);
    match managers
        .iter_mut()
        .find(|m| m.manager == w.manager && m.operation == Operation::Update)
    {
        Some(m) => {
            m.fields.extend(changed);
            m.time = now;
        }
        None => managers.push(ManagerEntry {
            manager: w.manager.clone(),
            operation: Operation::Update,
            time: now,
            fields: changed,
        }),
    }
    managers.retain(|m| !m.fields.is_empty());
    store_update(state, &k, content, managers)
}

/// Stores an existing Secret's new content and managers under a new
/// resourceVersion, recording the MODIFIED event.
fn store_update(
    state: &mut State,
    k: &(String, String),
    content: SecretContent,
    managers: Vec<ManagerEntry>,
) -> Result<Value, Status> {
    let rv = state.bump();
    let Some(secret) = state.secrets.get_mut(k) else {
        return Err(Status::not_found(PLURAL, &k.1));
    };
    let old = secret.clone();
    secret.content = content;
    secret.managers = managers;
    secret.resource_version = rv;
    let new = secret.clone();
    let out = new.to_json(true);
    state.record(EventKind::Modified, Some(old), new);
    Ok(out)
}

/// `PATCH` with `application/apply-patch+yaml` (server-side apply). Returns
/// the HTTP code (201 when it created the object) and the object.
pub(super) fn apply(
    state: &mut State,
    w: &Writer,
    ns: &str,
    name: &str,
    config: &Value,
    force: bool,
) -> Result<(u16, Value), Status> {
    let Value::Object(obj) = config else {
        return Err(Status::bad_request(
            "error decoding YAML: the applied configuration must be an object",
        ));
    };
    if obj.get("apiVersion").and_then(Value::as_str).is_none() {
        return Err(Status::bad_request(format!(
            "Object 'apiVersion' is missing in '{config}'"
        )));
    }
    if obj.get("kind").and_then(Value::as_str).is_none() {
        return Err(Status::bad_request(format!("Object 'Kind' is missing in '{config}'")));
    }
    let input = parse_input(config)?;
    match &input.name {
        None => {
            return Err(Status::bad_request(format!(
                "the name of the object () does not match the name on the URL ({name})"
            )))
        }
        Some(_) => input.check_name(name)?,
    }
    input.check_namespace(ns)?;
    let applied_fields = input.applied_fields();
    let applied = input.content();
    let now = rfc3339(w.now);
    let k = key(ns, name);

    let Some(existing) = state.secrets.get(&k) else {
        if !is_dns_subdomain(name) {
            return Err(Status::invalid(KIND, name, vec![Cause {
                field: "metadata.name".into(),
                reason: "FieldValueInvalid",
                message: format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
            }]));
        }
        if input.resource_version.is_some() || input.uid.is_some() {
            return Err(Status::not_found(PLURAL, name));
        }
        validate(name, &applied, None)?;
        let secret = Secret {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            uid: w.uids.next(),
            resource_version: state.bump(),
            created: now.clone(),
            content: applied,
            managers: vec![ManagerEntry {
                manager: w.manager.clone(),
                operation: Operation::Apply,
                time: now,
                fields: applied_fields,
            }],
        };
        let out = secret.to_json(true);
        state.secrets.insert(k, secret.clone());
        state.record(EventKind::Added, None, secret);
        return Ok((201, out));
    };

    input.check_preconditions(existing)?;
    let differs: FieldSet = applied_fields
        .iter()
        .filter(|f| field_value(&existing.content, f) != field_value(&applied, f))
        .cloned()
        .collect();
    let mut conflicts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in existing.managers.iter().filter(|m| m.manager != w.manager) {
        for f in m.fields.intersection(&differs) {
            conflicts.entry(m.manager.clone()).or_default().push(display_path(f));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(apply_conflict(name, &conflicts));
    }

    let mut content = existing.content.clone();
    for f in &applied_fields {
        copy_field(&mut content, &applied, f);
    }
    let mut managers = existing.managers.clone();
    let previously_applied: FieldSet = managers
        .iter()
        .find(|m| m.manager == w.manager && m.operation == Operation::Apply)
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    for dropped in previously_applied.difference(&applied_fields) {
        let still_owned = managers
            .iter()
            .any(|m| !(m.manager == w.manager && m.operation == Operation::Apply) && m.fields.contains(dropped));
        if !still_owned {
            remove_field(&mut content, dropped);
        }
    }
    // Forced fields move to the applier; untouched shared fields stay shared.
    for m in managers.iter_mut().filter(|m| m.manager != w.manager) {
        m.fields.retain(|f| !differs.contains(f));
    }
    match managers
        .iter_mut()
        .find(|m| m.manager == w.manager && m.operation == Operation::Apply)
    {
        Some(m) => {
            if m.fields != applied_fields {
                m.fields = applied_fields;
                m.time = now;
            }
        }
        None => managers.push(ManagerEntry {
            manager: w.manager.clone(),
            operation: Operation::Apply,
            time: now,
            fields: applied_fields,
        }),
    }
    managers.retain(|m| !m.fields.is_empty());
    validate(name, &content, Some(&existing.content))?;
    if content == existing.content && managers == existing.managers {
        return Ok((200, existing.to_json(true)));
    }
    Ok((200, store_update(state, &k, content, managers)?))
}

fn apply_conflict(name: &str, conflicts: &BTreeMap<String, Vec<String>>) -> Status {
    let total: usize = conflicts.values().map(Vec::len).sum();
    let mut causes = Vec::new();
    let mut text = Vec::new();
    for (manager, fields) in conflicts {
        for f in fields {
            causes.push(json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{manager}\" using v1"),
                "field": f,
            }));
        }
        if fields.len() == 1 {
            text.push(format!("conflict with \"{manager}\" using v1: {}", fields.join("")));
        } else {
            text.push(format!(
                "conflicts with \"{manager}\" using v1:\n- {}",
                fields.join("\n- ")
            ));
        }
    }
    let plural = if total == 1 { "conflict" } else { "conflicts" };
    Status {
        code: 409,
        reason: "Conflict",
        message: format!("Apply failed with {total} {plural}: {}", text.join("\n")),
        details: Some(json!({"name": name, "kind": PLURAL, "causes": causes})),
    }
}

/// `DELETE .../secrets/{name}` honouring `DeleteOptions.preconditions`.
pub(super) fn delete(state: &mut State, ns: &str, name: &str, options: Option<&Value>) -> Result<Value, Status> {
    let k = key(ns, name);
    let existing = state.secrets.get(&k).ok_or_else(|| Status::not_found(PLURAL, name))?;
    let pre = options.and_then(|o| o.get("preconditions"));
    let precondition = SecretInput {
        uid: pre
            .and_then(|p| p.get("uid"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        resource_version: pre
            .and_then(|p| p.get("resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        ..SecretInput::default()
    };
    precondition.check_preconditions(existing)?;
    let uid = existing.uid.clone();
    remove(state, ns, name);
    Ok(json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "kind": PLURAL, "uid": uid},
    }))
}

/// Control-API write: stores `body` as given (after decoding and `stringData`
/// merge) with no RBAC, precondition or immutability checks.
pub(super) fn put_unchecked(
    state: &mut State,
    uids: &UidSource,
    now: u64,
    ns: &str,
    body: &Value,
) -> Result<(), Status> {
    let input = parse_input(body)?;
    let name = input
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Status::bad_request("metadata.name is required"))?;
    let content = input.content();
    let k = key(ns, &name);
    if state.secrets.contains_key(&k) {
        let managers = state.secrets.get(&k).map(|s| s.managers.clone()).unwrap_or_default();
        store_update(state, &k, content, managers)?;
    } else {
        let secret = Secret {
            namespace: ns.to_owned(),
            name,
            uid: uids.next(),
            resource_version: state.bump(),
            created: rfc3339(now),
            content,
            managers: Vec::new(),
        };
        state.secrets.insert(k, secret.clone());
        state.record(EventKind::Added, None, secret);
    }
    Ok(())
}

/// Deletes a Secret if it exists (the DELETE handler after its checks, and
/// the control API), recording the DELETED event.
pub(super) fn remove(state: &mut State, ns: &str, name: &str) {
    if let Some(mut gone) = state.secrets.remove(&key(ns, name)) {
        gone.resource_version = state.bump();
        state.record(EventKind::Deleted, None, gone);
    }
}
