//! The `syncSecrets` parameter: which Kubernetes Secrets a mount also
//! writes, from which of its objects, each checked by type before anything
//! is read.

use std::collections::HashSet;

use super::*;

/// Secret types the sync accepts (the ones the driver's own sync knows).
pub const SECRET_TYPES: &[&str] = &[
    "Opaque",
    "kubernetes.io/basic-auth",
    "bootstrap.kubernetes.io/token",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
];

/// The most Secrets one class may sync.
pub const MAX_SYNC_SECRETS: usize = 64;
/// The most keys one synced Secret may have.
pub const MAX_SYNC_KEYS: usize = 256;
/// The most labels and annotations one synced Secret may have, together.
pub const MAX_SYNC_METADATA: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawSyncSecret {
    secret_name: Option<String>,
    #[serde(rename = "type")]
    secret_type: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    data: Vec<RawSyncData>,
    #[serde(default)]
    keep: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawSyncData {
    key: Option<String>,
    object_name: Option<String>,
}

/// Parses `syncSecrets` against the objects it may reference, reporting
/// every problem at once.
pub fn parse_sync(yaml: &str, objects: &[ObjectSpec], templates: &[TemplateObject]) -> Result<Vec<SyncSecret>> {
    let raw = read_sync_list(yaml)?;
    let files = SyncFiles::of(objects, templates);
    let mut problems = Collector::<String>::default();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        if let Some(secret) = check_sync_secret(i, r, &files, &mut seen, &mut problems) {
            out.push(secret);
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(invalid(problems.message()))
    }
}

/// Reads the `syncSecrets` YAML as a list of Secrets, refusing a list longer
/// than [`MAX_SYNC_SECRETS`] before any entry is checked.
fn read_sync_list(yaml: &str) -> Result<Vec<RawSyncSecret>> {
    let raw: Vec<RawSyncSecret> = serde_yaml_ng::from_str(yaml).map_err(|e| {
        invalid(format!(
            "parameter syncSecrets is not a YAML list of Secrets: {}",
            plain(e)
        ))
    })?;
    if raw.len() > MAX_SYNC_SECRETS {
        return Err(invalid(format!(
            "parameter syncSecrets lists {} Secrets; at most {MAX_SYNC_SECRETS} are allowed",
            raw.len()
        )));
    }
    Ok(raw)
}

/// The files the objects produce, which a synced key may take its value
/// from.
struct SyncFiles<'a> {
    /// Plain and template objects, by name.
    names: HashSet<&'a str>,
    /// Expanded objects as `<name>/` (their keys are known only after
    /// reading).
    expanded: Vec<String>,
}

impl<'a> SyncFiles<'a> {
    /// The files of `objects` and `templates`.
    fn of(objects: &'a [ObjectSpec], templates: &'a [TemplateObject]) -> Self {
        let names = objects
            .iter()
            .filter(|o| o.output.writes_files() && !matches!(o.output, Output::Expand { .. }))
            .map(|o| o.name.as_str())
            .chain(templates.iter().map(|t| t.name.as_str()))
            .collect();
        let expanded = objects
            .iter()
            .filter(|o| matches!(o.output, Output::Expand { .. }))
            .map(|o| format!("{}/", o.name))
            .collect();
        SyncFiles { names, expanded }
    }

    /// Whether `object` names one of the files.
    fn contains(&self, object: &str) -> bool {
        self.names.contains(object) || self.expanded.iter().any(|e| object.starts_with(e.as_str()))
    }
}

/// Checks entry `i` (from 0) of `syncSecrets`, adding its problems to
/// `problems` and its name to `seen`; the Secret to sync if it has none.
/// An entry too large to check is reported once and not walked.
fn check_sync_secret(
    i: usize,
    r: RawSyncSecret,
    files: &SyncFiles,
    seen: &mut HashSet<String>,
    problems: &mut Collector<String>,
) -> Option<SyncSecret> {
    let name = r.secret_name.clone().unwrap_or_default();
    // The name is checked first and named in the label only when valid:
    // an invalid one (of any length) is reported once, cut.
    let valid = check_dns_subdomain(&name);
    let label = match (&r.secret_name, &valid) {
        (Some(n), Ok(())) => format!("syncSecrets Secret {n:?}"),
        _ => format!("syncSecrets entry #{}", i + 1),
    };
    let before = problems.count();
    if let Err(e) = valid {
        problems.add_with(|| format!("{label}: secretName: {e}"));
    } else if !seen.insert(name.clone()) {
        problems.add_with(|| format!("{label}: secretName is listed more than once"));
    }
    if !check_sync_size(&label, &r, problems) {
        return None;
    }
    let secret_type = check_sync_type(&label, r.secret_type.as_deref(), problems);
    if r.data.is_empty() {
        problems.add_with(|| format!("{label}: data lists no keys"));
    }
    let (data, keys) = check_sync_data(&label, &r.data, files, problems);
    for m in missing_keys(&secret_type, &keys) {
        problems.add_with(|| format!("{label}: type {secret_type} needs key {m}"));
    }
    for k in r.labels.keys().chain(r.annotations.keys()) {
        if k.is_empty() || k.len() > 253 || k.chars().any(|c| c.is_whitespace()) {
            problems.add_with(|| format!("{label}: label or annotation key {} is not valid", Quoted(k)));
        }
    }
    if problems.count() != before {
        return None;
    }
    Some(SyncSecret {
        name,
        secret_type,
        labels: r.labels,
        annotations: r.annotations,
        data,
        keep: r.keep,
    })
}

/// Whether the entry `label` is within [`MAX_SYNC_KEYS`] keys and
/// [`MAX_SYNC_METADATA`] labels and annotations, adding the problem if not:
/// a larger one is not walked any further.
fn check_sync_size(label: &str, r: &RawSyncSecret, problems: &mut Collector<String>) -> bool {
    if r.data.len() > MAX_SYNC_KEYS {
        problems.add_with(|| {
            format!(
                "{label}: data lists {} keys; at most {MAX_SYNC_KEYS} are allowed",
                r.data.len()
            )
        });
        return false;
    }
    if r.labels.len() + r.annotations.len() > MAX_SYNC_METADATA {
        problems.add_with(|| format!("{label}: more than {MAX_SYNC_METADATA} labels and annotations"));
        return false;
    }
    true
}

/// The entry's Secret type (`Opaque` when unset or empty), with a problem
/// added if it is not one of [`SECRET_TYPES`].
fn check_sync_type(label: &str, secret_type: Option<&str>, problems: &mut Collector<String>) -> String {
    let secret_type = secret_type.filter(|t| !t.is_empty()).unwrap_or("Opaque").to_string();
    if !SECRET_TYPES.contains(&secret_type.as_str()) {
        problems.add_with(|| {
            format!(
                "{label}: type {} is not supported (use one of {})",
                Quoted(&secret_type),
                SECRET_TYPES.join(", ")
            )
        });
    }
    secret_type
}

/// Checks the entry's `data` (each key valid and listed once, each object
/// one of `files`), adding its problems; the (key, objectName) pairs, and
/// the set of keys for the type's checks.
fn check_sync_data(
    label: &str,
    raw: &[RawSyncData],
    files: &SyncFiles,
    problems: &mut Collector<String>,
) -> (Vec<(String, String)>, HashSet<String>) {
    let mut data = Vec::new();
    let mut keys = HashSet::new();
    for (j, d) in raw.iter().enumerate() {
        let key = d.key.clone().unwrap_or_default();
        let object = d.object_name.clone().unwrap_or_default();
        if let Err(e) = check_secret_key(&key) {
            problems.add_with(|| format!("{label}: data #{}: key {}: {e}", j + 1, Quoted(&key)));
        } else if !keys.insert(key.clone()) {
            problems.add_with(|| format!("{label}: key {key:?} is listed more than once"));
        }
        if !files.contains(&object) {
            problems.add_with(|| {
                format!(
                    "{label}: key {}: objectName {} is not one of the objects",
                    Quoted(&key),
                    Quoted(&object)
                )
            });
        }
        data.push((key, object));
    }
    (data, keys)
}

/// The keys a Secret of `secret_type` needs that `keys` lacks, in the order
/// they are reported.
fn missing_keys(secret_type: &str, keys: &HashSet<String>) -> Vec<&'static str> {
    let has = |k: &str| keys.contains(k);
    match secret_type {
        "kubernetes.io/tls" => ["tls.crt", "tls.key"].into_iter().filter(|k| !has(k)).collect(),
        "kubernetes.io/dockerconfigjson" => [".dockerconfigjson"].into_iter().filter(|k| !has(k)).collect(),
        "kubernetes.io/dockercfg" => [".dockercfg"].into_iter().filter(|k| !has(k)).collect(),
        "kubernetes.io/ssh-auth" => ["ssh-privatekey"].into_iter().filter(|k| !has(k)).collect(),
        "bootstrap.kubernetes.io/token" => ["token-id", "token-secret"].into_iter().filter(|k| !has(k)).collect(),
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => vec!["username or password"],
        _ => Vec::new(),
    }
}

pub(super) fn check_dns_subdomain(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a valid Secret name (lowercase letters, digits, '-' and '.', at most 253)",
            Quoted(name)
        ))
    }
}

/// The API server's rule for Secret data keys.
pub fn check_secret_key(key: &str) -> std::result::Result<(), String> {
    if key.is_empty() || key.len() > 253 {
        return Err("must be 1 to 253 characters".to_string());
    }
    if key == "." || key == ".." {
        return Err("must not be '.' or '..'".to_string());
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err("may only contain letters, digits, '-', '_' and '.'".to_string());
    }
    Ok(())
}
