//! How files and versions are made: a pure function from the parsed objects
//! and the Vault responses of one mount to the files and their versions.
//!
//! Pure on purpose: the same responses (a fresh read, or a lease reused from
//! an earlier mount) always give the same bytes and so the same versions.

mod dotenv;
mod yaml;

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use serde_json::Value as Json;

use crate::budget::Charge;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Encoding, Format, ObjectSpec, Output, Select, TemplateObject};
use crate::vault::ReadKey;
use crate::versions::VersionKey;

/// Most files one mount may write. The driver writes each through kubelet's
/// atomic writer; thousands of files are a mistake, not a configuration.
pub const MAX_FILES: usize = 2048;
/// The driver rejects responses above this size (its default
/// `--max-call-recv-msg-size`), so files beyond it are never delivered.
pub const MAX_FILES_BYTES: usize = 4 * 1024 * 1024;

/// One file to hand to the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct OutFile {
    /// Relative path.
    pub path: String,
    /// Mode bits.
    pub mode: u32,
    /// Content. Secret: never logged.
    pub contents: Vec<u8>,
}

impl std::fmt::Debug for OutFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("len", &self.contents.len())
            .finish()
    }
}

/// Files and `(object id, version)` pairs of one mount.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// Files, in SPC order (expanded keys sorted within their object).
    pub files: Vec<OutFile>,
    /// One version per file, with the file path as the id.
    pub versions: Vec<(String, String)>,
}

/// Renders every object. `responses` must hold the response of every read
/// of `objects`; templates see those responses by object name.
pub fn render_all(
    objects: &[ObjectSpec],
    templates: &[TemplateObject],
    responses: &HashMap<ReadKey, Json>,
    key: &VersionKey,
    budget: &dyn Charge,
) -> Result<Rendered> {
    let context = template_context(objects, templates, responses)?;
    let mut out = Files {
        rendered: Rendered::default(),
        key,
        budget,
    };
    for object in objects {
        render_object(&mut out, object, response_of(responses, object)?, context.as_ref())?;
    }
    for t in templates {
        let contents = renderer(context.as_ref())?.render(&t.name, &t.template.source, None)?;
        out.push(t.name.clone(), t.mode, &t.config_digest_input, contents)?;
    }
    let out = out.rendered;
    check_paths(&out.files)?;
    if out.files.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            "no files to write: every object with expandKeys expanded to no keys".to_string(),
        ));
    }
    Ok(out)
}

/// The files of one mount as they are made. Each file is counted as it is
/// made, so a mount that renders too much stops at the file that crosses a
/// limit.
struct Files<'a> {
    rendered: Rendered,
    key: &'a VersionKey,
    budget: &'a dyn Charge,
}

impl Files<'_> {
    /// Adds the file `path` and its version (of `config` and the contents),
    /// once it is within the limits.
    fn push(&mut self, path: String, mode: u32, config: &str, contents: Vec<u8>) -> Result<()> {
        self.account(&contents)?;
        self.rendered
            .versions
            .push((path.clone(), self.key.version(config, &contents)));
        self.rendered.files.push(OutFile { path, mode, contents });
        Ok(())
    }

    /// Refuses a next file of `contents` that would take the mount past the
    /// driver's limits ([`MAX_FILES_BYTES`], [`MAX_FILES`]) or the budget,
    /// else charges it to the budget.
    fn account(&self, contents: &[u8]) -> Result<()> {
        let out = &self.rendered;
        let total: usize = out.files.iter().map(|f| f.contents.len()).sum::<usize>() + contents.len();
        if total > MAX_FILES_BYTES {
            return Err(Error::new(ErrorKind::TooLarge, format!(
                "the files of this mount total more than the driver's {MAX_FILES_BYTES}-byte limit: split the SecretProviderClass or raise the driver's --max-call-recv-msg-size"
            )));
        }
        if out.files.len() >= MAX_FILES {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("this mount would write more than {MAX_FILES} files (expandKeys of a large map?)"),
            ));
        }
        self.budget.charge(contents.len()).map_err(Error::from)
    }
}

/// The response of `o`'s read, which the caller must have made.
fn response_of<'r>(responses: &'r HashMap<ReadKey, Json>, o: &ObjectSpec) -> Result<&'r Json> {
    responses
        .get(&o.read)
        .ok_or_else(|| Error::new(ErrorKind::Internal, format!("no response for object {:?}", o.name)))
}

/// The renderer templates use, over every object's response by name; `None`
/// when nothing is a template (no response is looked at then).
fn template_context(
    objects: &[ObjectSpec],
    templates: &[TemplateObject],
    responses: &HashMap<ReadKey, Json>,
) -> Result<Option<crate::template::Renderer>> {
    let needs_context = !templates.is_empty() || objects.iter().any(|o| matches!(o.output, Output::Template(_)));
    if !needs_context {
        return Ok(None);
    }
    let mut inputs = BTreeMap::new();
    for o in objects {
        let response = response_of(responses, o)?;
        let entry = serde_json::json!({"data": kv_data(response), "response": envelope(response)});
        inputs.insert(o.name.as_str(), entry);
    }
    Ok(Some(crate::template::Renderer::new(&inputs)))
}

/// The renderer of [`template_context`], which a template always has.
fn renderer(context: Option<&crate::template::Renderer>) -> Result<&crate::template::Renderer> {
    context.ok_or_else(|| Error::new(ErrorKind::Internal, "template context missing"))
}

/// Adds the files of one object: none, one, or one per expanded key.
fn render_object(
    out: &mut Files<'_>,
    object: &ObjectSpec,
    response: &Json,
    context: Option<&crate::template::Renderer>,
) -> Result<()> {
    match &object.output {
        Output::Hidden => {}
        Output::Expand { select, encoding } => {
            for (k, contents) in expand(object, response, select, *encoding)? {
                let config = format!("{}\n{k}", object.config_digest_input);
                out.push(format!("{}/{k}", object.name), object.mode, &config, contents)?;
            }
        }
        Output::Template(t) => {
            let contents = renderer(context)?.render(&object.name, &t.source, Some(&object.name))?;
            out.push(object.name.clone(), object.mode, &object.config_digest_input, contents)?;
        }
        _ => {
            let contents = render(object, response)?;
            out.push(object.name.clone(), object.mode, &object.config_digest_input, contents)?;
        }
    }
    Ok(())
}

/// Turns one Vault response into the content of an object that writes one
/// file without a template.
pub fn render(object: &ObjectSpec, response: &Json) -> Result<Vec<u8>> {
    match &object.output {
        Output::Envelope => Ok(envelope(response).to_string().into_bytes()),
        Output::Value { select, encoding } => {
            let value = selected(object, response, select)?;
            decode(object, select, *encoding, value_text(value))
        }
        Output::Formatted { select, format } => formatted(object, selected(object, response, select)?, *format),
        Output::Expand { .. } | Output::Template(_) | Output::Hidden => Err(Error::new(
            ErrorKind::Internal,
            format!("object {:?} does not render to a single file", object.name),
        )),
    }
}

/// The whole response minus the per-request id: it changes on every read
/// and would make the version change although nothing did.
fn envelope(response: &Json) -> Json {
    let mut whole = response.clone();
    if let Some(map) = whole.as_object_mut() {
        map.remove("request_id");
    }
    whole
}

/// The data a selection starts from: `data.data` when it is an object (KV
/// v2), else `data`.
fn kv_data(response: &Json) -> &Json {
    let data = response.get("data").unwrap_or(&Json::Null);
    match data.get("data") {
        Some(inner @ Json::Object(_)) => inner,
        _ => data,
    }
}

fn key_list(scope: &Json) -> String {
    scope
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// The value an object selects. Errors name the object, the key or pointer,
/// and where the lookup stopped; never a value.
fn selected<'a>(object: &ObjectSpec, response: &'a Json, select: &Select) -> Result<&'a Json> {
    let scope = kv_data(response);
    match select {
        Select::Data => Ok(scope),
        Select::Key(key) => scope.get(key).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "object {:?}: key {key:?} not found in the response of {} (available keys: {})",
                    object.name,
                    object.read,
                    key_list(scope)
                ),
            )
        }),
        Select::Pointer(pointer) => {
            let mut at = scope;
            let mut walked = String::new();
            for token in pointer.tokens() {
                let next = match at {
                    Json::Object(map) => map.get(token),
                    Json::Array(items) => array_index(token).and_then(|i| items.get(i)),
                    _ => None,
                };
                let Some(next) = next else {
                    let place = if walked.is_empty() {
                        "the data".to_string()
                    } else {
                        format!("{walked:?}")
                    };
                    let why = match at {
                        Json::Object(_) => format!("{place} has no key {token:?} (available keys: {})", key_list(at)),
                        Json::Array(items) => format!(
                            "{place} is an array of {} items; {token:?} is not an index in it",
                            items.len()
                        ),
                        other => format!("{place} is {}, not an object or array", kind(other)),
                    };
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "object {:?}: secretKeyPointer {pointer} not found in the response of {}: {why}",
                            object.name, object.read
                        ),
                    ));
                };
                walked.push('/');
                walked.push_str(&token.replace('~', "~0").replace('/', "~1"));
                at = next;
            }
            Ok(at)
        }
    }
}

/// An RFC 6901 array index: digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let ok =
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) && (token == "0" || !token.starts_with('0'));
    if ok {
        token.parse().ok()
    } else {
        None
    }
}

/// Strings raw, anything else as compact JSON (the `secretKey` rule).
fn value_text(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn what(select: &Select) -> String {
    match select {
        Select::Data => "the data".to_string(),
        Select::Key(k) => format!("key {k:?}"),
        Select::Pointer(p) => format!("secretKeyPointer {p}"),
    }
}

fn decode(object: &ObjectSpec, select: &Select, encoding: Encoding, text: String) -> Result<Vec<u8>> {
    match encoding {
        Encoding::Utf8 => Ok(text.into_bytes()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| {
                Error::new(
                    ErrorKind::InvalidRequest,
                    format!(
                        "object {:?}: {} is not valid base64 ({e}); remove encoding: base64 or fix the value",
                        object.name,
                        what(select)
                    ),
                )
                .with_source(e)
            }),
        Encoding::Hex => hex::decode(text.trim()).map_err(|e| {
            Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "object {:?}: {} is not valid hex ({e}); remove encoding: hex or fix the value",
                    object.name,
                    what(select)
                ),
            )
            .with_source(e)
        }),
    }
}

fn formatted(object: &ObjectSpec, value: &Json, format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(value).map_err(|e| {
                Error::because(ErrorKind::Internal, format!("object {:?}: JSON output", object.name), e)
            })?;
            text.push('\n');
            Ok(text.into_bytes())
        }
        Format::Yaml => Ok(yaml::document(value).into_bytes()),
        Format::Dotenv => dotenv::document(object, value),
    }
}

/// `(key, contents)` for every key of the selected map, keys sorted. A key
/// that cannot be one file name fails the whole object.
fn expand(object: &ObjectSpec, response: &Json, select: &Select, encoding: Encoding) -> Result<Vec<(String, Vec<u8>)>> {
    let value = selected(object, response, select)?;
    let Json::Object(map) = value else {
        return Err(Error::new(
            ErrorKind::InvalidRequest,
            format!(
                "object {:?}: expandKeys needs a map of keys, but {} of {} is {}",
                object.name,
                what(select),
                object.read,
                kind(value)
            ),
        ));
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let why = if k.is_empty() {
            Some("it is empty".to_string())
        } else if k.contains('/') {
            Some("it contains \"/\"".to_string())
        } else if k == "." || k == ".." {
            Some(format!("it is {k:?}"))
        } else {
            crate::model::check_object_path(&format!("{}/{k}", object.name))
                .err()
                .map(|e| format!("the file path {e}"))
        };
        if let Some(why) = why {
            return Err(Error::new(ErrorKind::InvalidRequest, format!(
                "object {:?}: expandKeys: key {k:?} of {} cannot be a file name: {why}; select keys one by one with secretKey instead",
                object.name, object.read
            )));
        }
        let select = Select::Key(k.clone());
        out.push((k.clone(), decode(object, &select, encoding, value_text(v))?));
    }
    Ok(out)
}

/// Expanded keys can collide with other objects' files only once the keys
/// are known: the same path twice, or a file where another needs a directory.
fn check_paths(files: &[OutFile]) -> Result<()> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for f in files {
        *seen.entry(f.path.as_str()).or_default() += 1;
    }
    for (path, n) in &seen {
        if *n > 1 {
            return Err(Error::new(ErrorKind::InvalidRequest, format!(
                "file {path:?} would be written by more than one object (check expandKeys objects against the other objectNames)"
            )));
        }
        for (slash, _) in path.match_indices('/') {
            let dir = &path[..slash];
            if seen.contains_key(dir) {
                return Err(Error::new(ErrorKind::InvalidRequest, format!(
                    "file {dir:?} is written, but {path:?} needs it to be a directory (check expandKeys objects against the other objectNames)"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
