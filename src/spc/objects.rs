//! The `objects` YAML: every entry parsed field by field into an
//! [`ObjectSpec`] (or a template object), each problem named with its object
//! and field, the combinations that mean nothing refused, and the version's
//! configuration digest computed.

use super::*;

/// The most entries `objects` may list: the most files a mount writes
/// (`render::MAX_FILES`, which a unit test keeps equal).
pub const MAX_OBJECTS: usize = 2048;
/// The most templates a class may have: rendering is the CPU a class chooses.
pub const MAX_TEMPLATES: usize = 256;
/// The most objects one template may name.
pub const MAX_REFERENCES: usize = 256;

/// The parsed `objects` list, split by whether an entry reads Vault.
#[derive(Debug, Clone)]
pub struct ObjectSet {
    /// Entries with a `secretPath`, in SPC order.
    pub objects: Vec<ObjectSpec>,
    /// Entries with only a `template`, in SPC order.
    pub templates: Vec<TemplateObject>,
}

pub(super) enum Parsed {
    Read(ObjectSpec),
    Template(TemplateObject),
}

impl Parsed {
    fn name(&self) -> &str {
        match self {
            Parsed::Read(o) => &o.name,
            Parsed::Template(t) => &t.name,
        }
    }
}

/// The `objects` entry as users write it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawObject {
    object_name: Option<String>,
    secret_path: Option<String>,
    secret_key: Option<String>,
    method: Option<String>,
    secret_args: Option<serde_yaml_ng::Value>,
    encoding: Option<String>,
    file_permission: Option<serde_yaml_ng::Value>,
    secret_key_pointer: Option<String>,
    format: Option<String>,
    expand_keys: Option<serde_yaml_ng::Value>,
    template: Option<String>,
    write_file: Option<serde_yaml_ng::Value>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_yaml_ng::Value>,
}

/// One problem found in the `objects` YAML, with what is known of where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The entry it concerns (0-based), when it concerns one.
    pub object: Option<usize>,
    /// The line within the `objects` text (1-based), when the YAML parser said.
    pub line: Option<usize>,
    /// What is wrong, naming the object and field.
    pub message: String,
}

impl Text for Problem {
    fn text(&self) -> &str {
        &self.message
    }
}

/// Parses the `objects` YAML into validated objects, reporting the first
/// problems found (and how many more) rather than only the first.
pub fn parse_objects(yaml: &str, default_mode: u32) -> Result<ObjectSet> {
    check_objects(yaml, default_mode).map_err(|found| invalid(found.message()))
}

/// One problem of the whole list, not of one entry.
fn whole(message: String) -> Problem {
    Problem {
        object: None,
        line: None,
        message,
    }
}

/// [`parse_objects`] with its problems kept apart and located, for the
/// `check` command: the first [`Collector::SHOWN`], and the count of all.
pub fn check_objects(yaml: &str, default_mode: u32) -> std::result::Result<ObjectSet, Collector<Problem>> {
    let mut found = Collector::default();
    let raw: Vec<RawObject> = match serde_yaml_ng::from_str(yaml) {
        Ok(raw) => raw,
        Err(e) => {
            found.add(Problem {
                object: None,
                line: e.location().map(|l| l.line()),
                message: format!("parameter objects is not a YAML list of objects: {}", plain(&e)),
            });
            return Err(found);
        }
    };
    if raw.is_empty() || raw.len() > MAX_OBJECTS {
        found.add(whole(match raw.len() {
            0 => "parameter objects lists no objects".to_string(),
            n => format!(
                "parameter objects lists {n} objects; at most {MAX_OBJECTS} are allowed: split the SecretProviderClass"
            ),
        }));
        return Err(found);
    }
    let templates = raw.iter().filter(|r| r.template.is_some()).count();
    if templates > MAX_TEMPLATES {
        found.add(whole(format!(
            "parameter objects has {templates} templates; at most {MAX_TEMPLATES} are allowed: split the SecretProviderClass"
        )));
        return Err(found);
    }
    let mut parsed = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        match parse_object(i, r, default_mode) {
            Ok(o) => parsed.push(o),
            Err(p) => found.extend(p.into_iter().map(|message| Problem {
                object: Some(i),
                line: None,
                message,
            })),
        }
    }
    check_names(&parsed, &mut found);
    check_references(&parsed, &mut found);
    let problems = found;
    let mut set = ObjectSet {
        objects: Vec::new(),
        templates: Vec::new(),
    };
    for p in parsed {
        match p {
            Parsed::Read(o) => set.objects.push(o),
            Parsed::Template(t) => set.templates.push(t),
        }
    }
    let mut problems = problems;
    if problems.is_empty() && set.templates.is_empty() && !set.objects.iter().any(|o| o.output.writes_files()) {
        problems.add(whole(
            "every object has writeFile: false, so nothing would be mounted".to_string(),
        ));
    }
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(problems)
    }
}

/// Templates may use the responses of objects that read Vault, by name.
/// They never see another template's output, so references cannot form a
/// cycle; what is checked here is that every literal reference names an
/// object with a `secretPath`. One problem per template and kind, naming
/// the first few references.
pub(super) fn check_references(parsed: &[Parsed], problems: &mut Collector<Problem>) {
    let reads: std::collections::HashSet<&str> = parsed
        .iter()
        .filter_map(|p| match p {
            Parsed::Read(o) => Some(o.name.as_str()),
            Parsed::Template(_) => None,
        })
        .collect();
    let all: std::collections::HashSet<&str> = parsed.iter().map(Parsed::name).collect();
    let first_reads = parsed.iter().filter_map(|p| match p {
        Parsed::Read(o) => Some(o.name.as_str()),
        Parsed::Template(_) => None,
    });
    for p in parsed {
        let (name, template) = match p {
            Parsed::Read(ObjectSpec {
                name,
                output: Output::Template(t),
                ..
            }) => (name, t),
            Parsed::Template(t) => (&t.name, &t.template),
            Parsed::Read(_) => continue,
        };
        let unknown = template
            .references
            .iter()
            .map(String::as_str)
            .filter(|r| !all.contains(r));
        let templates = template
            .references
            .iter()
            .map(String::as_str)
            .filter(|r| all.contains(r) && !reads.contains(r));
        if unknown.clone().next().is_some() {
            problems.add_with(|| {
                let (list, one) = listing(unknown.map(|r| format!("objects[{}]", Quoted(r))));
                let reads = listing(first_reads.clone().map(|r| Quoted(r).to_string())).0;
                let verb = if one { "names" } else { "name" };
                whole(format!(
                    "object {}: template: {list} {verb} no object (objects that read Vault: {reads})",
                    Quoted(name)
                ))
            });
        }
        if templates.clone().next().is_some() {
            problems.add_with(|| {
                let (list, one) = listing(templates.map(|r| format!("objects[{}]", Quoted(r))));
                let verb = if one { "has" } else { "have" };
                whole(format!(
                    "object {}: template: {list} {verb} no secretPath; a template can use only objects that read Vault",
                    Quoted(name)
                ))
            });
        }
    }
}

/// The first five of `items`, and how many more; whether there was one.
fn listing(items: impl Iterator<Item = String>) -> (String, bool) {
    let mut shown = Vec::new();
    let mut more = 0;
    for item in items {
        if shown.len() < 5 {
            shown.push(item);
        } else {
            more += 1;
        }
    }
    let one = shown.len() == 1 && more == 0;
    let mut text = shown.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    if text.is_empty() {
        text.push_str("none");
    }
    (text, one)
}

/// Reads a YAML boolean; a quoted `"true"` is accepted too.
pub(super) fn parse_flag(v: &serde_yaml_ng::Value) -> std::result::Result<bool, String> {
    match v {
        serde_yaml_ng::Value::Bool(b) => Ok(*b),
        serde_yaml_ng::Value::String(s) => parse_go_bool(s).map_err(|_| format!("{} is not true or false", Quoted(s))),
        _ => Err("must be true or false".to_string()),
    }
}

/// Collects the problems of one `objects` entry, each naming the entry and
/// the field.
pub(super) struct Problems {
    label: String,
    found: Vec<String>,
}

impl Problems {
    fn new(index: usize, name: Option<&str>) -> Problems {
        let label = match name {
            Some(n) => format!("object {} (#{})", Quoted(n), index + 1),
            None => format!("object #{}", index + 1),
        };
        Problems {
            label,
            found: Vec::new(),
        }
    }

    fn add(&mut self, field: &str, msg: impl std::fmt::Display) {
        self.found.push(format!("{}: {field}: {msg}", self.label));
    }

    /// `Some(value)`, or `None` with the problem recorded.
    fn take<T>(&mut self, field: &str, r: std::result::Result<T, String>) -> Option<T> {
        r.map_err(|e| self.add(field, e)).ok()
    }
}

/// A `secretPath` split into API path and query parameters.
type SecretPath = (String, Vec<(String, String)>);

/// The fields of one entry, each parsed on its own; `None` where a problem
/// was recorded.
pub(super) struct Fields {
    name: Option<String>,
    /// `None`: missing or bad; `Some(None)`: no `secretPath` (a template).
    path: Option<Option<SecretPath>>,
    method: Option<String>,
    body: Option<Option<String>>,
    secret_key: Option<String>,
    pointer: Option<JsonPointer>,
    encoding: Option<Encoding>,
    format: Option<Format>,
    expand: bool,
    write_file: bool,
    template: Option<TemplateSource>,
    mode: Option<u32>,
}

pub(super) fn parse_object(index: usize, r: RawObject, default_mode: u32) -> std::result::Result<Parsed, Vec<String>> {
    let mut problems = Problems::new(index, r.object_name.as_deref());
    if !r.unknown.is_empty() {
        let names: Vec<&str> = r.unknown.keys().map(String::as_str).collect();
        tracing::warn!(object = %problems.label, fields = ?names, "ignoring unknown fields in objects entry");
    }
    let fields = parse_fields(&r, default_mode, &mut problems);
    check_combinations(&r, &fields, &mut problems);
    if !problems.found.is_empty() {
        return Err(problems.found);
    }
    assemble(fields).ok_or(problems.found)
}

/// Each field on its own, every problem recorded.
pub(super) fn parse_fields(r: &RawObject, default_mode: u32, problems: &mut Problems) -> Fields {
    let name = parse_name_field(r.object_name.as_deref(), problems);
    let path = parse_path_field(r, problems);
    let method = parse_method_field(r.method.as_deref(), problems);
    let body = problems.take("secretArgs", parse_secret_args(r.secret_args.as_ref()));
    let encoding = problems.take("encoding", parse_encoding(r.encoding.as_deref()));
    let pointer = match r.secret_key_pointer.as_deref() {
        None => None,
        Some(p) => problems.take("secretKeyPointer", JsonPointer::parse(p)),
    };
    let format = match r.format.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        None => None,
        Some(f) => problems.take("format", Format::parse(f)),
    };
    let mut flag = |field: &str, v: Option<&serde_yaml_ng::Value>, default: bool| {
        v.map_or(Some(default), |v| problems.take(field, parse_flag(v)))
            .unwrap_or(default)
    };
    let expand = flag("expandKeys", r.expand_keys.as_ref(), false);
    let write_file = flag("writeFile", r.write_file.as_ref(), true);
    let template = parse_template_field(r.template.as_deref(), name.as_deref(), problems);
    let mode = parse_mode_field(r.file_permission.as_ref(), default_mode, problems);
    Fields {
        name,
        path,
        method,
        body,
        secret_key: r.secret_key.clone().filter(|k| !k.is_empty()),
        pointer,
        encoding,
        format,
        expand,
        write_file,
        template,
        mode,
    }
}

/// `objectName`: required, and a path the driver will write.
fn parse_name_field(name: Option<&str>, problems: &mut Problems) -> Option<String> {
    match name {
        None | Some("") => {
            problems.add("objectName", "missing");
            None
        }
        Some(n) => problems.take("objectName", check_object_path(n).map(|()| n.to_string())),
    }
}

/// `secretPath`, split: `Some(None)` when a template stands in for it,
/// `None` when it is missing or bad.
fn parse_path_field(r: &RawObject, problems: &mut Problems) -> Option<Option<SecretPath>> {
    match r.secret_path.as_deref().map(str::trim) {
        None | Some("") if r.template.is_some() => Some(None),
        None | Some("") => {
            problems.add("secretPath", "missing (or give a template)");
            None
        }
        Some(p) => problems.take("secretPath", parse_secret_path(p)).map(Some),
    }
}

/// `method`: GET when unset, else GET, PUT or POST in any case.
fn parse_method_field(method: Option<&str>, problems: &mut Problems) -> Option<String> {
    match method.map(str::trim).filter(|m| !m.is_empty()) {
        None => Some("GET".to_string()),
        Some(m) => {
            let up = m.to_ascii_uppercase();
            let known = matches!(up.as_str(), "GET" | "PUT" | "POST");
            problems.take(
                "method",
                known
                    .then_some(up)
                    .ok_or_else(|| format!("{} is not supported (use GET, PUT or POST)", Quoted(m))),
            )
        }
    }
}

/// `template`: scanned for the objects it names (at most
/// [`MAX_REFERENCES`]), so a bad one fails before anything is read.
/// `name` is the entry's, when valid, for the scanner's messages.
fn parse_template_field(template: Option<&str>, name: Option<&str>, problems: &mut Problems) -> Option<TemplateSource> {
    match template {
        None => None,
        Some(t) if t.trim().is_empty() => {
            problems.add("template", "is empty");
            None
        }
        Some(t) => {
            let scanned = crate::template::scan_template(name.unwrap_or("template"), t);
            let scanned = scanned.and_then(|references| match references.len() {
                n if n > MAX_REFERENCES => Err(format!(
                    "names {n} objects; a template may name at most {MAX_REFERENCES}"
                )),
                _ => Ok(references),
            });
            problems.take("template", scanned).map(|references| TemplateSource {
                source: t.to_string(),
                references,
            })
        }
    }
}

/// `filePermission`: the mount's default mode when unset or 0.
fn parse_mode_field(
    permission: Option<&serde_yaml_ng::Value>,
    default_mode: u32,
    problems: &mut Problems,
) -> Option<u32> {
    match permission.map(parse_mode).transpose() {
        Ok(None) | Ok(Some(0)) => Some(default_mode),
        Ok(Some(m)) => Some(m),
        Err(e) => {
            problems.add("filePermission", e);
            None
        }
    }
}

/// `secretArgs`: a map, sent as canonical JSON.
pub(super) fn parse_secret_args(v: Option<&serde_yaml_ng::Value>) -> std::result::Result<Option<String>, String> {
    match v {
        None | Some(serde_yaml_ng::Value::Null) => Ok(None),
        Some(v @ serde_yaml_ng::Value::Mapping(_)) => match serde_json::to_value(v) {
            Ok(Json::Object(map)) => Ok(Some(Json::Object(map).to_string())),
            Ok(_) | Err(_) => Err("must be a map with string keys".to_string()),
        },
        Some(_) => Err("must be a map of argument names to values".to_string()),
    }
}

pub(super) fn parse_encoding(v: Option<&str>) -> std::result::Result<Encoding, String> {
    match v.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("utf-8") | Some("utf8") => Ok(Encoding::Utf8),
        Some("base64") => Ok(Encoding::Base64),
        Some("hex") => Ok(Encoding::Hex),
        Some(other) => Err(format!("unknown encoding {} (use utf-8, base64 or hex)", Quoted(other))),
    }
}

/// Refuses combinations of fields that mean nothing together.
pub(super) fn check_combinations(r: &RawObject, f: &Fields, problems: &mut Problems) {
    let has_template = r.template.is_some();
    let has_encoding = r.encoding.as_deref().is_some_and(|e| !e.trim().is_empty());
    let given: Vec<&str> = [
        ("secretKey", f.secret_key.is_some()),
        ("secretKeyPointer", r.secret_key_pointer.is_some()),
        ("format", r.format.is_some()),
        ("expandKeys", f.expand),
        ("encoding", has_encoding),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect();
    if f.secret_key.is_some() && r.secret_key_pointer.is_some() {
        problems.add("secretKeyPointer", "cannot be used together with secretKey; keep one");
    }
    if has_template && !given.is_empty() {
        problems.add(
            "template",
            format!("renders the whole file; remove {}", given.join(", ")),
        );
    }
    if !f.write_file {
        let mut extra = given.clone();
        if has_template {
            extra.push("template");
        }
        if r.file_permission.is_some() {
            extra.push("filePermission");
        }
        if !extra.is_empty() {
            problems.add(
                "writeFile",
                format!(
                    "false makes the object only an input of templates; remove {}",
                    extra.join(", ")
                ),
            );
        }
        if matches!(f.path, Some(None)) && has_template {
            problems.add("writeFile", "false needs a secretPath to read");
        }
    }
    let decoded = matches!(f.encoding, Some(Encoding::Base64 | Encoding::Hex));
    if f.format.is_some() && f.expand {
        problems.add(
            "format",
            "cannot be combined with expandKeys (each expanded key is written as its value)",
        );
    }
    if f.format.is_some() && decoded {
        problems.add("encoding", "cannot be combined with format");
    }
    if f.secret_key.is_none() && f.pointer.is_none() && !f.expand && decoded {
        problems.add(
            "encoding",
            "only applies to a value selected with secretKey (or secretKeyPointer, or expandKeys)",
        );
    }
}

/// Builds the typed object from fields that all parsed.
pub(super) fn assemble(f: Fields) -> Option<Parsed> {
    let Fields {
        name,
        path,
        method,
        body,
        secret_key,
        pointer,
        encoding,
        format,
        expand,
        write_file,
        template,
        mode,
    } = f;
    let (name, method, encoding, mode, path, body) = (name?, method?, encoding?, mode?, path?, body?);
    let Some((path, query)) = path else {
        // No secretPath: a template over other objects.
        let template = template?;
        let config_digest_input =
            serde_json::json!({"objectName": name, "template": template.source, "mode": mode}).to_string();
        return Some(Parsed::Template(TemplateObject {
            name,
            template,
            mode,
            config_digest_input,
        }));
    };
    let read = ReadKey {
        method,
        path,
        query,
        body,
    };
    let shaping = Shaping {
        secret_key: secret_key.as_deref(),
        pointer: pointer.as_ref(),
        format,
        expand,
        template: template.as_ref(),
        write_file,
    };
    let config_digest_input = config_digest(&name, &read, &shaping, encoding, mode);
    let select = match (secret_key, pointer) {
        (Some(k), _) => Select::Key(k),
        (None, Some(p)) => Select::Pointer(p),
        (None, None) => Select::Data,
    };
    let output = if !write_file {
        Output::Hidden
    } else if let Some(t) = template {
        Output::Template(t)
    } else if expand {
        Output::Expand { select, encoding }
    } else if let Some(format) = format {
        Output::Formatted { select, format }
    } else if select == Select::Data {
        Output::Envelope
    } else {
        Output::Value { select, encoding }
    };
    Some(Parsed::Read(ObjectSpec {
        name,
        read,
        output,
        mode,
        config_digest_input,
    }))
}

/// The object's configuration as it enters its version: exactly the fields
/// every object had before the shaping fields came, so existing objects keep
/// their versions; each shaping field only when written.
/// The shaping fields of an object, as its version sees them.
pub(super) struct Shaping<'a> {
    secret_key: Option<&'a str>,
    pointer: Option<&'a JsonPointer>,
    format: Option<Format>,
    expand: bool,
    template: Option<&'a TemplateSource>,
    write_file: bool,
}

pub(super) fn config_digest(name: &str, read: &ReadKey, f: &Shaping<'_>, encoding: Encoding, mode: u32) -> String {
    let mut digest = serde_json::json!({
        "objectName": name,
        "secretPath": read.to_string(),
        "secretArgs": read.body,
        "secretKey": f.secret_key,
        "encoding": format!("{encoding:?}"),
        "mode": mode,
    });
    if let Some(map) = digest.as_object_mut() {
        if let Some(p) = f.pointer {
            map.insert("secretKeyPointer".into(), Json::from(p.as_str()));
        }
        if let Some(format) = f.format {
            map.insert("format".into(), Json::from(format.name()));
        }
        if f.expand {
            map.insert("expandKeys".into(), Json::from(true));
        }
        if let Some(t) = f.template {
            map.insert("template".into(), Json::from(t.source.as_str()));
        }
        if !f.write_file {
            map.insert("writeFile".into(), Json::from(false));
        }
    }
    digest.to_string()
}

/// Parses a YAML `filePermission`. Users write `0600` meaning octal (YAML 1.1);
/// the YAML 1.2 parser hands such a leading-zero scalar over as a string, so
/// strings are read as octal when they start with `0`, like Go's yaml did.
pub(super) fn parse_mode(v: &serde_yaml_ng::Value) -> std::result::Result<u32, String> {
    let mode = match v {
        serde_yaml_ng::Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("{n} is not a file mode"))?,
        serde_yaml_ng::Value::String(s) => {
            let s = s.trim();
            let parsed = if let Some(o) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
                u32::from_str_radix(o, 8)
            } else if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                u32::from_str_radix(h, 16)
            } else if s.len() > 1 && s.starts_with('0') {
                u32::from_str_radix(&s[1..], 8)
            } else {
                s.parse()
            };
            parsed.map_err(|_| format!("{} is not a file mode such as 0600", Quoted(s)))?
        }
        _ => return Err("must be a number such as 0600".to_string()),
    };
    if mode > MAX_MODE {
        return Err(format!("{mode:#o} is larger than 0777"));
    }
    Ok(mode)
}

/// Duplicate names, and a name that is also another's directory (`a` and
/// `a/b`), would make the driver fail after the secrets were read. Objects
/// with `writeFile: false` write nothing, so only their names must be unique.
pub(super) fn check_names(parsed: &[Parsed], problems: &mut Collector<Problem>) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    // Written names, and whether each is a directory (expandKeys) or a file.
    let mut written: BTreeMap<&str, bool> = BTreeMap::new();
    for p in parsed {
        *seen.entry(p.name()).or_default() += 1;
        match p {
            Parsed::Read(o) if !o.output.writes_files() => {}
            Parsed::Read(o) => {
                written.insert(&o.name, matches!(o.output, Output::Expand { .. }));
            }
            Parsed::Template(t) => {
                written.insert(&t.name, false);
            }
        }
    }
    for (name, n) in &seen {
        if *n > 1 {
            problems.add_with(|| {
                whole(format!(
                    "objectName {} is used more than once; each objectName must be unique",
                    Quoted(name)
                ))
            });
        }
    }
    for name in written.keys() {
        for (slash, _) in name.match_indices('/') {
            let dir = &name[..slash];
            if written.get(dir) == Some(&false) {
                problems.add_with(|| {
                    whole(format!(
                        "objectName {} is a file but {} needs it to be a directory",
                        Quoted(dir),
                        Quoted(name)
                    ))
                });
            }
        }
    }
}

/// Normalises `secretPath`: `/v1/x`, `v1/x`, `/x` and `x` all mean `/v1/x`;
/// a `?query` suffix becomes sorted query parameters.
pub(super) fn parse_secret_path(p: &str) -> std::result::Result<(String, Vec<(String, String)>), String> {
    let (path, query) = match p.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (p, None),
    };
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("v1/").unwrap_or(path);
    let path = path.trim_start_matches('/');
    let q = Quoted(p);
    if path.is_empty() || path == "v1" {
        return Err(format!("{q} names no Vault path"));
    }
    for element in path.split('/') {
        if element == "." || element == ".." {
            return Err(format!("{q} must not contain \".\" or \"..\" elements"));
        }
    }
    if path.chars().any(|c| c.is_control() || c == '#') {
        return Err(format!("{q} contains a control character or '#'"));
    }
    if p.len() > MAX_SECRET_PATH_LEN {
        // Longer URLs cannot even be sent (and Vault would refuse them).
        return Err(format!("{q} is longer than {MAX_SECRET_PATH_LEN} bytes"));
    }
    let mut pairs = Vec::new();
    if let Some(q) = query {
        if !q.is_empty() {
            for part in q.split('&') {
                check_percent_escapes(part).map_err(|e| format!("query {}: {e}", Quoted(q)))?;
                let (k, _) = part.split_once('=').unwrap_or((part, ""));
                if k.is_empty() {
                    return Err(format!("query {} has a parameter without a name", Quoted(q)));
                }
            }
            pairs = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
            pairs.sort();
        }
    }
    Ok((format!("/v1/{path}"), pairs))
}

pub(super) fn check_percent_escapes(s: &str) -> std::result::Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(format!("bad percent-escape in {}", Quoted(s)));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}
