//! Templates: `minijinja` in a sandbox. No loader (so no `include`,
//! `import` or `extends` can reach a file), no environment access (the
//! engine has none), strict undefined values (a typo fails instead of
//! writing an empty string), a fuel budget that bounds work and memory, a
//! recursion limit, and an output cap.
//!
//! Template context: `objects` maps the objectName of every object that
//! reads Vault to `{data, response}`: `data` is the KV-unwrapped data (the
//! scope `secretKey` uses), `response` the whole response without its
//! per-request `request_id`. An object with a `secretPath` also gets its own
//! `data` and `response` at the top level.
//!
//! Errors name the object and the template line, and never carry a value:
//! engine messages that can quote a value are reduced to their kind.

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine as _;
use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::Value as Json;

use crate::error::{Error, ErrorKind, Result};

/// Work budget of one render: about this many instructions, or 64 times as
/// many bytes of data created. Milliseconds of CPU at most.
const FUEL: u64 = 200_000;
/// Work budget of every render of one mount together: a class chooses how
/// many templates it has, so what they may cost is bounded per mount (about
/// ten renders at the limit, some tens of milliseconds of CPU).
pub const MOUNT_FUEL: u64 = 2_000_000;
/// Nesting depth of loops, conditions and recursive loops.
const RECURSION_LIMIT: usize = 64;
/// Largest file a template may write (a Kubernetes Secret holds about 1 MiB).
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// The inputs of every template of one mount, converted once, and the
/// work its renders may still do ([`MOUNT_FUEL`] in all).
pub struct Renderer {
    /// objectName → `{data, response}`.
    objects: Value,
    /// Fuel left for this mount's renders.
    fuel: std::cell::Cell<u64>,
}

impl Renderer {
    /// Prepares `objects`: per object that reads Vault, its `{data,
    /// response}` as templates see them.
    pub fn new(inputs: &BTreeMap<&str, Json>) -> Renderer {
        let objects = inputs
            .iter()
            .map(|(name, entry)| (name.to_string(), Value::from(Serde(entry))));
        Renderer {
            objects: Value::from_pairs(objects),
            fuel: std::cell::Cell::new(MOUNT_FUEL),
        }
    }

    /// Renders the template of object `name`; `own` names the object whose
    /// response becomes the top-level `data` and `response`.
    pub fn render(&self, name: &str, source: &str, own: Option<&str>) -> Result<Vec<u8>> {
        let left = self.fuel.get();
        let mut env = environment();
        env.set_fuel(Some(FUEL.min(left)));
        let template = env
            .template_from_named_str(name, source)
            .map_err(|e| template_error(name, &e))?;
        let mut ctx: BTreeMap<&str, Value> = BTreeMap::new();
        ctx.insert("objects", self.objects.clone());
        if let Some(own) = own.and_then(|o| self.objects.get_item(&Value::from(o)).ok()) {
            for field in ["data", "response"] {
                if let Ok(v) = own.get_attr(field) {
                    ctx.insert(field, v);
                }
            }
        }
        let mut out = Capped::default();
        let rendered = template.render_captured_to(Value::from_pairs(ctx), &mut out);
        let rendered = match rendered {
            Ok(captured) => captured,
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel && left < FUEL => {
                self.fuel.set(0);
                return Err(Error::new(
                    ErrorKind::InvalidRequest,
                    format!(
                        "object {name:?}: template: the templates of this mount together did more work than one mount's may (at most {MOUNT_FUEL} steps in all): fewer or simpler templates, or split the SecretProviderClass"
                    ),
                ));
            }
            Err(e) => return Err(template_error(name, &e)),
        };
        let used = rendered.state().fuel_levels().map_or(0, |(used, _)| used);
        self.fuel.set(left.saturating_sub(used));
        Ok(out.buf)
    }
}

/// Compiles a template (syntax errors name the line) and lists the object
/// names it references literally, as `objects["name"]`, `objects['name']` or
/// `objects.name`, so unknown names fail before anything is read.
pub fn scan_template(name: &str, source: &str) -> std::result::Result<Vec<String>, String> {
    let env = environment();
    let template = env.template_from_named_str(name, source).map_err(|e| describe(&e))?;
    let mut refs: Vec<String> = template
        .undeclared_variables(true)
        .into_iter()
        .filter_map(|v| {
            v.strip_prefix("objects.")
                .map(|r| r.split('.').next().unwrap_or(r).to_string())
        })
        .collect();
    refs.extend(subscript_references(source));
    refs.sort();
    refs.dedup();
    Ok(refs)
}

/// `objects["x"]` / `objects['x']` inside `{{ }}` and `{% %}`.
fn subscript_references(source: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find(['{']) {
        let after = &rest[open + 1..];
        let close = match after.chars().next() {
            Some('{') => "}}",
            Some('%') => "%}",
            _ => {
                rest = after;
                continue;
            }
        };
        // Search after the opening delimiter's second character, so `{%}` is not a whole tag.
        let body_end = after[1..].find(close).map_or(after.len(), |i| i + 1);
        let mut body = &after[1..body_end];
        while let Some(at) = body.find("objects") {
            let before_ok = body[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
            let tail = body[at + "objects".len()..].trim_start();
            body = &body[at + "objects".len()..];
            if !before_ok {
                continue;
            }
            let Some(tail) = tail.strip_prefix('[') else { continue };
            let tail = tail.trim_start();
            let Some(quote) = tail.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                continue;
            };
            if let Some(end) = tail[1..].find(quote) {
                refs.push(tail[1..1 + end].to_string());
            }
        }
        rest = &after[body_end.min(after.len())..];
    }
    refs
}

/// The sandboxed engine with the provider's helpers.
fn environment<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    env.remove_global("debug");
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    let mut syntax = env.syntax().to_builder();
    syntax.keep_trailing_newline(true);
    if let Ok(s) = syntax.build() {
        env.set_syntax(s);
    }
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("fromjson", fromjson);
    env.add_filter("urlencode", urlencode);
    env.add_filter("pgpass_escape", pgpass_escape);
    env.add_filter("pem_blocks", pem_blocks);
    env.add_filter("pem_certs", pem_certs);
    env.add_filter("pem_private_key", pem_private_key);
    env
}

fn helper_error(msg: String) -> minijinja::Error {
    minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg)
}

/// The text of a string, a number, or bytes (UTF-8).
fn text_of(filter: &str, v: &Value) -> std::result::Result<String, minijinja::Error> {
    if let Some(s) = v.as_str() {
        return Ok(s.to_string());
    }
    if let Some(b) = v.as_bytes() {
        return String::from_utf8(b.to_vec())
            .map_err(|_| helper_error(format!("{filter}: the bytes are not UTF-8 text")));
    }
    if v.is_number() || v.kind() == minijinja::value::ValueKind::Bool {
        return Ok(v.to_string());
    }
    Err(helper_error(format!("{filter}: expects a string, got {}", v.kind())))
}

fn b64encode(v: Value) -> std::result::Result<String, minijinja::Error> {
    let bytes = match v.as_bytes() {
        Some(b) => b.to_vec(),
        None => text_of("b64encode", &v)?.into_bytes(),
    };
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn b64decode(v: Value) -> std::result::Result<String, minijinja::Error> {
    let text = text_of("b64decode", &v)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| helper_error(format!("b64decode: not valid base64 ({e})")))?;
    String::from_utf8(bytes).map_err(|_| helper_error("b64decode: the decoded bytes are not UTF-8 text".to_string()))
}

fn fromjson(v: Value) -> std::result::Result<Value, minijinja::Error> {
    let text = text_of("fromjson", &v)?;
    let json: Json = serde_json::from_str(&text).map_err(|e| {
        helper_error(format!(
            "fromjson: not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    Ok(Value::from(Serde(&json)))
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so the
/// result is safe in a URL's user, password, path segment or query.
fn urlencode(v: Value) -> std::result::Result<String, minijinja::Error> {
    let text = text_of("urlencode", &v)?;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// Escapes `\` and `:` as a `.pgpass` field needs.
fn pgpass_escape(v: Value) -> std::result::Result<String, minijinja::Error> {
    let text = text_of("pgpass_escape", &v)?;
    if text.contains(['\n', '\r']) {
        return Err(helper_error(
            "pgpass_escape: a .pgpass field cannot contain a line break".to_string(),
        ));
    }
    Ok(text.replace('\\', "\\\\").replace(':', "\\:"))
}

/// One PEM text from a string or a list of strings (as PKI's `ca_chain`).
fn pem_input(filter: &str, v: &Value) -> std::result::Result<String, minijinja::Error> {
    if v.kind() == minijinja::value::ValueKind::Seq {
        let mut all = String::new();
        for item in v.try_iter()? {
            all.push_str(&text_of(filter, &item)?);
            all.push('\n');
        }
        return Ok(all);
    }
    text_of(filter, v)
}

/// Every PEM block (`-----BEGIN X-----` … `-----END X-----`), optionally only
/// those labelled `label`, each ending with a newline.
fn pem_blocks(v: Value, label: Option<String>) -> std::result::Result<Vec<String>, minijinja::Error> {
    let text = pem_input("pem_blocks", &v)?;
    let blocks = split_pem(&text)?;
    Ok(blocks
        .into_iter()
        .filter(|(l, _)| label.as_deref().is_none_or(|want| l == want))
        .map(|(_, b)| b)
        .collect())
}

/// The `CERTIFICATE` blocks: `| first` is the leaf, `| join` the chain.
fn pem_certs(v: Value) -> std::result::Result<Vec<String>, minijinja::Error> {
    pem_blocks(v, Some("CERTIFICATE".to_string()))
}

/// The first private key block (`PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`, ...).
fn pem_private_key(v: Value) -> std::result::Result<String, minijinja::Error> {
    let text = pem_input("pem_private_key", &v)?;
    split_pem(&text)?
        .into_iter()
        .find(|(l, _)| l.ends_with("PRIVATE KEY"))
        .map(|(_, b)| b)
        .ok_or_else(|| helper_error("pem_private_key: no PRIVATE KEY block in the value".to_string()))
}

fn split_pem(text: &str) -> std::result::Result<Vec<(String, String)>, minijinja::Error> {
    const BEGIN: &str = "-----BEGIN ";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(BEGIN) {
        let after = &rest[at + BEGIN.len()..];
        let label_end = after
            .find("-----")
            .ok_or_else(|| helper_error("pem: a BEGIN line is not closed by -----".to_string()))?;
        let label = &after[..label_end];
        let end_marker = format!("-----END {label}-----");
        let end = rest[at..]
            .find(&end_marker)
            .ok_or_else(|| helper_error(format!("pem: BEGIN {label} without a matching END line")))?;
        let stop = at + end + end_marker.len();
        let mut block = rest[at..stop].replace("\r\n", "\n");
        block.push('\n');
        blocks.push((label.to_string(), block));
        rest = &rest[stop..];
    }
    Ok(blocks)
}

/// Collects output up to [`MAX_OUTPUT`] bytes, then refuses more.
#[derive(Default)]
struct Capped {
    buf: Vec<u8>,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > MAX_OUTPUT {
            return Err(std::io::Error::other("template output limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The engine's message without anything that could quote a value: only
/// arithmetic failures print their operands, so those keep just their kind.
fn describe(e: &minijinja::Error) -> String {
    let line = e.line().map(|l| format!("line {l}: ")).unwrap_or_default();
    let detail = e.detail().filter(|d| !d.contains("unable to calculate"));
    match detail {
        Some(d) => format!("{line}{}: {d}", e.kind()),
        None => format!("{line}{}", e.kind()),
    }
}

fn template_error(object: &str, e: &minijinja::Error) -> Error {
    match e.kind() {
        minijinja::ErrorKind::OutOfFuel => Error::new(
            ErrorKind::InvalidRequest,
            format!(
                "object {object:?}: template: {}: it did more work than a template may (an endless or very long loop?)",
                describe(e)
            ),
        ),
        minijinja::ErrorKind::WriteFailure => Error::new(
            ErrorKind::TooLarge,
            format!("object {object:?}: template output is larger than {} bytes", MAX_OUTPUT),
        ),
        _ => Error::new(
            ErrorKind::InvalidRequest,
            format!("object {object:?}: template: {}", describe(e)),
        ),
    }
}
