//! `vault-csi-provider check FILE...`: validates SecretProviderClass
//! manifests offline with the provider's own parser (`spc::parse_mount`,
//! `spc::check_objects`), reports every problem with its line, and prints the
//! normalised plan of each valid one: which files, with which modes, from
//! which Vault requests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use super::spc_file::{self, Located, SpcDocument};
use super::{usage_error, EXIT_PROBLEMS};
use crate::flavor::Flavor;
use crate::spc::Defaults;
use crate::spc::{self, keys, MountSpec};

/// Arguments of `check`.
#[derive(Debug, Parser)]
#[command(
    about = "Validate SecretProviderClass YAML files offline and print what each would mount",
    disable_help_subcommand = true
)]
pub struct CheckArgs {
    /// YAML files; documents of other kinds are skipped.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Whether the provider reads `key` (any alias of a connection parameter,
/// or a plain one); others are ignored by it (the driver adds its own), so a
/// misspelt one is worth a warning.
fn known(key: &str) -> bool {
    spc::names::ALL.iter().any(|names| names.contains(&key)) || spc::names::PLAIN.contains(&key)
}

/// Every parameter name the provider reads, for "did you mean" hints.
fn known_names() -> impl Iterator<Item = &'static str> {
    spc::names::ALL
        .iter()
        .flat_map(|names| names.iter().copied())
        .chain(spc::names::PLAIN.iter().copied())
}

/// Parameter groups validated on their own, so one bad parameter does not
/// hide the next: `parse_mount` stops at the first problem it meets. Each
/// group holds every alias of its parameters.
fn groups() -> Vec<Vec<&'static str>> {
    use spc::names;
    let of = |lists: &[&[&'static str]]| lists.iter().flat_map(|l| l.iter().copied()).collect::<Vec<_>>();
    vec![
        of(&[names::ROLE]),
        of(&[names::KUBERNETES_MOUNT_PATH, names::AUTH_MOUNT_PATH]),
        of(&[names::ADDRESS]),
        of(&[names::TLS_CLIENT_CERT_PATH, names::TLS_CLIENT_KEY_PATH]),
        of(&[names::SKIP_TLS_VERIFY]),
        of(&[names::NAMESPACE]),
        vec!["audience"],
        // Checked against the class's own objects, when those parse.
        vec!["syncSecrets"],
    ]
}

/// A placeholder that always parses, standing in for `objects` while the
/// other parameters are checked.
const PLACEHOLDER_OBJECTS: &str = "- {objectName: placeholder, secretPath: placeholder}";

/// Entry point of `check`.
pub fn main(argv: Vec<String>) -> ExitCode {
    let args = match CheckArgs::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => return usage_error(e, Some("check")),
    };
    let mut out = String::new();
    let problems = run(&args.files, &mut out);
    print!("{out}");
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PROBLEMS)
    }
}

/// Checks `files`, appending the report to `out`; returns the number of
/// problems found.
pub fn run(files: &[PathBuf], out: &mut String) -> usize {
    let mut problems = 0;
    let mut classes = 0;
    for file in files {
        let loaded = match spc_file::load(file) {
            Ok(l) => l,
            Err(e) => {
                let _ = writeln!(out, "{e}");
                problems += 1;
                continue;
            }
        };
        for p in &loaded.problems {
            report(out, &file.display().to_string(), p, None);
            problems += 1;
        }
        if loaded.documents.is_empty() && loaded.problems.is_empty() {
            let _ = writeln!(out, "{}: no SecretProviderClass in this file", file.display());
        }
        for (i, doc) in loaded.documents.iter().enumerate() {
            classes += 1;
            let mut found: Vec<Located> = loaded
                .document_problems
                .iter()
                .filter(|(d, _)| *d == i)
                .map(|(_, p)| p.clone())
                .collect();
            found.extend(check_document(doc));
            found.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            problems += found.len();
            print_document(out, doc, &found);
        }
    }
    let _ = writeln!(
        out,
        "{} SecretProviderClass{} checked, {problems} problem{}",
        classes,
        if classes == 1 { "" } else { "es" },
        if problems == 1 { "" } else { "s" }
    );
    problems
}

/// The flavour of the socket the driver sends `doc` to: its `spec.provider`.
fn flavor_of(doc: &SpcDocument) -> Flavor {
    match doc.provider.as_deref() {
        Some("openbao") => Flavor::OpenBao,
        _ => Flavor::Vault,
    }
}

/// The attributes the driver would send for this class, for a stand-in pod.
fn attributes(doc: &SpcDocument, params: &BTreeMap<String, String>) -> String {
    let mut attrs: BTreeMap<&str, &str> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    attrs.insert(keys::POD_NAMESPACE, doc.namespace.as_deref().unwrap_or("default"));
    attrs.insert(keys::SERVICE_ACCOUNT, "default");
    attrs.insert(keys::POD_NAME, "check");
    attrs.insert(keys::SPC_NAME, &doc.name);
    serde_json::to_string(&attrs).unwrap_or_default()
}

fn strip_prefix(message: String) -> String {
    message
        .strip_prefix("invalid mount request: ")
        .map(str::to_string)
        .unwrap_or(message)
}

/// Every problem of one class: parameters group by group, then each object.
fn check_document(doc: &SpcDocument) -> Vec<Located> {
    let defaults = Defaults::builtin(flavor_of(doc));
    let mut found: Vec<Located> = groups()
        .iter()
        .filter_map(|group| check_group(doc, group, &defaults))
        .collect();
    check_objects_parameter(doc, &mut found);
    check_secret_objects(doc, &mut found);
    found
}

/// The problem `parse_mount` finds in one parameter group, placed at the
/// first of its parameters the class sets. A group the class does not set
/// is skipped, but for the role, which it must set.
fn check_group(doc: &SpcDocument, group: &[&'static str], defaults: &Defaults) -> Option<Located> {
    let is_role = group == spc::names::ROLE;
    let present: Vec<&str> = group
        .iter()
        .copied()
        .filter(|k| doc.parameters.contains_key(*k))
        .collect();
    if present.is_empty() && !is_role {
        return None;
    }
    let params = group_parameters(doc, group, is_role)?;
    let e = spc::parse_mount(&attributes(doc, &params), "", "", defaults).err()?;
    let line = present
        .first()
        .and_then(|k| doc.parameter_line(k))
        .or_else(|| doc.key_line("parameters", 1));
    Some(Located {
        line,
        message: strip_prefix(e.to_string()),
    })
}

/// The parameters to check `group` with: the class's own for the group,
/// over placeholders for the role (unless it is the group) and the objects.
/// `syncSecrets` is checked against the class's objects, so `None` (not
/// checked) when those have problems: they are reported on their own.
fn group_parameters(doc: &SpcDocument, group: &[&'static str], is_role: bool) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    params.insert("roleName".to_string(), "placeholder".to_string());
    params.insert("objects".to_string(), PLACEHOLDER_OBJECTS.to_string());
    if is_role {
        params.remove("roleName");
    }
    if group == ["syncSecrets"] {
        match doc.parameters.get("objects") {
            Some(o) if spc::check_objects(o, DEFAULT_MODE).is_ok() => {
                params.insert("objects".to_string(), o.clone());
            }
            // The objects' own problems are reported by
            // check_objects_parameter.
            _ => return None,
        }
    }
    for k in group {
        if let Some(v) = doc.parameters.get(*k) {
            params.insert((*k).to_string(), v.clone());
        }
    }
    Some(params)
}

/// Adds the problems of the `objects` parameter to `found`: each with the
/// line of its YAML error or its entry where known, then how many more
/// there were.
fn check_objects_parameter(doc: &SpcDocument, found: &mut Vec<Located>) {
    let Some(objects) = doc
        .parameters
        .get("objects")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    else {
        found.push(Located {
            line: doc.key_line("parameters", 1),
            message: "parameter objects is missing: list the secrets to mount".to_string(),
        });
        return;
    };
    let Err(problems) = spc::check_objects(objects, DEFAULT_MODE) else {
        return;
    };
    let (shown, more) = problems.into_parts();
    for p in shown {
        let line = p
            .line
            .and_then(|l| doc.objects_line(l))
            .or_else(|| p.object.and_then(|i| doc.object_line(i)))
            .or_else(|| doc.parameter_line("objects"));
        found.push(Located {
            line,
            message: p.message,
        });
    }
    if more > 0 {
        found.push(Located {
            line: doc.parameter_line("objects"),
            message: format!("and {more} more problems in objects (the first are listed)"),
        });
    }
}

/// Adds to `found` each `secretObjects` data entry naming an unknown
/// object: the driver fails to sync a Secret whose data does. Names are
/// read loosely here, so this is reported even when some objects have
/// other problems.
fn check_secret_objects(doc: &SpcDocument, found: &mut Vec<Located>) {
    let Some(objects) = doc.parameters.get("objects") else {
        return;
    };
    let Ok(parsed) = serde_yaml_ng::from_str::<Vec<serde_yaml_ng::Value>>(objects) else {
        return;
    };
    let names: BTreeSet<&str> = parsed
        .iter()
        .filter_map(|o| o.get("objectName").and_then(serde_yaml_ng::Value::as_str))
        .collect();
    for (secret, refs) in &doc.secret_objects {
        for r in refs.iter().filter(|r| !names.contains(r.as_str())) {
            found.push(Located {
                line: secret_object_line(doc, r),
                message: format!(
                    "secretObjects {secret:?}: objectName {r:?} is not one of the objects, so the driver cannot sync it"
                ),
            });
        }
    }
}

/// The file line of the first `objectName` naming `object` under
/// `secretObjects`.
fn secret_object_line(doc: &SpcDocument, object: &str) -> Option<usize> {
    doc.key_line("secretObjects", 1).and_then(|from| {
        doc.text
            .lines()
            .enumerate()
            .skip(from - doc.first_line)
            .find(|(_, l)| l.contains("objectName") && l.contains(object))
            .map(|(i, _)| doc.first_line + i)
    })
}

/// The mode the driver asks for when an object sets none (`permission`
/// "420").
const DEFAULT_MODE: u32 = 0o644;

fn report(out: &mut String, file: &str, p: &Located, doc: Option<&SpcDocument>) {
    match p.line {
        Some(line) => {
            let _ = writeln!(out, "{file}:{line}: error: {}", p.message);
            if let Some(text) = doc.and_then(|d| d.line_text(line)) {
                let _ = writeln!(out, "{line:>6} | {text}");
            }
        }
        None => {
            let _ = writeln!(out, "{file}: error: {}", p.message);
        }
    }
}

fn print_document(out: &mut String, doc: &SpcDocument, problems: &[Located]) {
    let file = doc.file.display().to_string();
    let title = format!(
        "SecretProviderClass {}/{}",
        doc.namespace.as_deref().unwrap_or("<namespace of the pod>"),
        doc.name
    );
    for key in doc.parameters.keys() {
        if !known(key) {
            let hint = known_names()
                .find(|k| k.eq_ignore_ascii_case(key))
                .map(|k| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            let line = doc.parameter_line(key).map(|l| format!("{l}:")).unwrap_or_default();
            let _ = writeln!(
                out,
                "{file}:{line} warning: {title}: parameter {key:?} is not read by this provider{hint}"
            );
        }
    }
    if let Some(p) = doc
        .provider
        .as_deref()
        .filter(|p| !Flavor::ALL.iter().any(|f| f.provider() == *p))
    {
        let _ = writeln!(
            out,
            "{file}: warning: {title}: spec.provider is {p:?}; the driver only sends classes with provider \"vault\" or \"openbao\" to this provider"
        );
    }
    if !problems.is_empty() {
        let _ = writeln!(
            out,
            "{file}:{}: {title}: {} problem{}",
            doc.header_line(),
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        for p in problems {
            report(out, &file, p, Some(doc));
        }
        return;
    }
    let spec = match spc::parse_mount(
        &attributes(doc, &doc.parameters),
        "",
        "",
        &Defaults::builtin(flavor_of(doc)),
    ) {
        Ok(s) => s,
        Err(e) => {
            // Every group passed, so this would be a combination the groups
            // missed; still report it rather than print a wrong plan.
            report(
                out,
                &file,
                &Located {
                    line: Some(doc.first_line),
                    message: strip_prefix(e.to_string()),
                },
                Some(doc),
            );
            return;
        }
    };
    let _ = writeln!(out, "{file}:{}: {title}: ok", doc.header_line());
    print_plan(out, doc, &spec);
}

/// The plan of a valid class: how it logs in, its files, and the Secrets
/// synced from them.
fn print_plan(out: &mut String, doc: &SpcDocument, spec: &MountSpec) {
    print_login(out, doc, spec);
    print_files(out, spec);
    for (secret, refs) in &doc.secret_objects {
        let _ = writeln!(out, "  synced by the driver to Secret {secret:?}: {}", refs.join(", "));
    }
    for s in &spec.sync {
        let _ = writeln!(
            out,
            "  synced by the provider to Secret {:?} (type {}) in the pod's namespace",
            s.name, s.secret_type
        );
    }
}

/// The plan's login line: role, auth mount, address, audience and
/// namespace, naming the provider's flag where the class sets none.
fn print_login(out: &mut String, doc: &SpcDocument, spec: &MountSpec) {
    let sets = |names: &[&str]| {
        names
            .iter()
            .any(|n| doc.parameters.get(*n).is_some_and(|v| !v.trim().is_empty()))
    };
    let prefix = spec.flavor.flag_prefix();
    let product = spec.flavor.product();
    let vault = if sets(spc::names::ADDRESS) {
        spec.vault.addresses.to_string()
    } else {
        format!("the provider's -{prefix}-addr")
    };
    let auth = if sets(spc::names::KUBERNETES_MOUNT_PATH) || sets(spc::names::AUTH_MOUNT_PATH) {
        format!("auth/{}", spec.auth_mount)
    } else {
        format!("the provider's -{prefix}-mount (auth/kubernetes by default)")
    };
    let _ = writeln!(
        out,
        "  login: role {:?} at {auth}, {product} {vault}, token audience {:?}{}",
        spec.role,
        spec.token_audience(),
        spec.vault
            .namespace
            .as_deref()
            .map(|n| format!(", {product} namespace {n:?}"))
            .unwrap_or_default()
    );
}

/// The plan's files: each object's mode, name and request (numbered in
/// the order first made, since objects may share one), then the templates.
fn print_files(out: &mut String, spec: &MountSpec) {
    let mut reads: HashMap<&crate::vault::ReadKey, usize> = HashMap::new();
    for o in &spec.objects {
        let n = reads.len() + 1;
        reads.entry(&o.read).or_insert(n);
    }
    let files = spec.objects.len() + spec.templates.len();
    let _ = writeln!(
        out,
        "  {} file{} from {} Vault request{}:",
        files,
        if files == 1 { "" } else { "s" },
        reads.len(),
        if reads.len() == 1 { "" } else { "s" }
    );
    let width = spec.objects.iter().map(|o| o.name.len()).max().unwrap_or(0);
    for o in &spec.objects {
        let what = describe_output(&o.output);
        let args = if o.read.body.is_some() { " with secretArgs" } else { "" };
        let _ = writeln!(
            out,
            "    {:04o}  {:<width$}  <- request #{} {}{args}: {what}",
            o.mode,
            o.name,
            reads.get(&o.read).copied().unwrap_or(0),
            o.read,
        );
    }
    for t in &spec.templates {
        let _ = writeln!(
            out,
            "    {:04o}  {:<width$}  <- template over the other objects",
            t.mode, t.name
        );
    }
}

/// What an object's file holds, in words, for the plan.
fn describe_output(output: &spc::Output) -> String {
    let select = |s: &spc::Select| match s {
        spc::Select::Data => "the data".to_string(),
        spc::Select::Key(k) => format!("key {k:?}"),
        spc::Select::Pointer(p) => format!("pointer {p}"),
    };
    let decoded = |e: &spc::Encoding| match e {
        spc::Encoding::Utf8 => String::new(),
        other => format!(", {} decoded", format!("{other:?}").to_ascii_lowercase()),
    };
    match output {
        spc::Output::Envelope => "whole response as JSON".to_string(),
        spc::Output::Value { select: s, encoding } => format!("{}{}", select(s), decoded(encoding)),
        spc::Output::Formatted { select: s, format } => format!("{} as {format:?}", select(s)),
        spc::Output::Expand { select: s, encoding } => {
            format!("one file per key of {}{}", select(s), decoded(encoding))
        }
        spc::Output::Template(_) => "a template over this and the other objects".to_string(),
        spc::Output::Hidden => "no file (input of templates only)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> (usize, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spc.yaml");
        std::fs::write(&file, yaml).unwrap();
        let mut out = String::new();
        let problems = run(&[file], &mut out);
        (problems, out)
    }

    #[test]
    fn the_plan_lists_each_template_once_and_counts_it_as_a_file() {
        let (problems, out) = check(
            &class(
                "vault",
                "    roleName: app\n    objects: |\n      - {objectName: a, secretPath: secret/data/a, secretKey: k}\n      - {objectName: conf, template: \"k={{ objects.a.data.k }}\", filePermission: 0600}\n",
            ),
        );
        assert_eq!(problems, 0, "{out}");
        assert!(out.contains("2 files from 1 Vault request:"), "{out}");
        assert_eq!(
            out.matches("conf  <- template over the other objects").count(),
            1,
            "{out}"
        );
    }

    /// A class for `provider` with these `parameters` lines.
    fn class(provider: &str, parameters: &str) -> String {
        format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {{name: app}}\nspec:\n  provider: {provider}\n  parameters:\n{parameters}"
        )
    }

    #[test]
    fn an_openbao_class_is_checked_with_openbao_names_and_defaults() {
        let (problems, out) = check(
            &class(
                "openbao",
                "    baoRoleName: app\n    baoKubernetesMountPath: k8s\n    objects: |\n      - {objectName: a, secretPath: secret/data/a, secretKey: k}\n",
            ),
        );
        assert_eq!(problems, 0, "{out}");
        assert!(
            !out.contains("warning"),
            "bao names and provider openbao are known:\n{out}"
        );
        assert!(
            out.contains("role \"app\" at auth/k8s, OpenBao the provider's -openbao-addr, token audience \"openbao\""),
            "{out}"
        );
        // A bad value under a bao name is found and named, with its line.
        let (problems, out) = check(
            r#"
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: bao}
spec:
  provider: openbao
  parameters:
    baoRoleName: app
    baoSkipTLSVerify: "maybe"
    baoKubernetesMountPath: a
    openbaoAuthMountPath: b
    baoRolName: typo
    objects: |
      - {objectName: a, secretPath: secret/data/a}
"#,
        );
        assert_eq!(problems, 2, "{out}");
        assert!(out.contains(":9: error: parameter baoSkipTLSVerify"), "{out}");
        assert!(
            out.contains("parameters baoKubernetesMountPath and openbaoAuthMountPath are both set"),
            "{out}"
        );
        assert!(out.contains("parameter \"baoRolName\" is not read"), "{out}");
    }
}
