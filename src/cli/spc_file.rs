//! Reading SecretProviderClass manifests from YAML files, keeping enough of
//! where things are (document start, key lines, the `objects` block) to show
//! each problem with its line in the file.
//!
//! The YAML parser gives positions for syntax errors only; semantic problems
//! are placed by finding the key or list entry they concern in the text,
//! which is exact for the block style manifests are written in and simply
//! omitted otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value as Yaml;

/// A problem in a file, with its 1-based line when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Line in the file.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// One SecretProviderClass document of a file.
#[derive(Debug, Clone)]
pub struct SpcDocument {
    /// The file it came from.
    pub file: PathBuf,
    /// Line in the file where the document's text starts (1-based).
    pub first_line: usize,
    /// The document's text.
    pub text: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, if set.
    pub namespace: Option<String>,
    /// `spec.provider`, if set.
    pub provider: Option<String>,
    /// `spec.parameters` whose values are strings (others are reported).
    pub parameters: BTreeMap<String, String>,
    /// `spec.secretObjects`: Secret name and the objectNames its data uses.
    pub secret_objects: Vec<(String, Vec<String>)>,
}

impl SpcDocument {
    /// The file line of the first line (1-based) of this document whose
    /// trimmed text starts with `key:`, searching from document line `from`.
    pub fn key_line(&self, key: &str, from: usize) -> Option<usize> {
        let plain = format!("{key}:");
        let quoted = format!("\"{key}\":");
        let single = format!("'{key}':");
        self.text
            .lines()
            .enumerate()
            .skip(from.saturating_sub(1))
            .find(|(_, l)| {
                let t = l.trim_start().trim_start_matches("- ");
                t.starts_with(&plain) || t.starts_with(&quoted) || t.starts_with(&single)
            })
            .map(|(i, _)| self.first_line + i)
    }

    /// The file line of parameter `key`.
    pub fn parameter_line(&self, key: &str) -> Option<usize> {
        let params = self.key_line("parameters", 1)?;
        self.key_line(key, params - self.first_line + 1)
    }

    /// Maps a line of the `objects` text (1-based) to a file line. Only a
    /// literal block (`objects: |`) keeps lines one to one.
    pub fn objects_line(&self, inner: usize) -> Option<usize> {
        let key = self.parameter_line("objects")?;
        let text = self.text.lines().nth(key - self.first_line)?;
        let after = text.split_once(':')?.1.trim_start();
        after.starts_with('|').then_some(key + inner)
    }

    /// The file line where entry `index` (0-based) of `objects` starts.
    pub fn object_line(&self, index: usize) -> Option<usize> {
        let objects = self.parameters.get("objects")?;
        let items: Vec<(usize, usize)> = objects
            .lines()
            .enumerate()
            .filter_map(|(i, l)| {
                let indent = l.len() - l.trim_start().len();
                let t = l.trim_start();
                (t == "-" || t.starts_with("- ")).then_some((i + 1, indent))
            })
            .collect();
        let top = items.iter().map(|(_, indent)| *indent).min()?;
        let (inner, _) = items.iter().filter(|(_, indent)| *indent == top).nth(index)?;
        self.objects_line(*inner)
    }

    /// The file line of the document's first content (not comment) line.
    pub fn header_line(&self) -> usize {
        self.text
            .lines()
            .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|i| self.first_line + i)
            .unwrap_or(self.first_line)
    }

    /// The text of file line `line`, if it is in this document.
    pub fn line_text(&self, line: usize) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(self.first_line)?)
    }
}

/// The documents of a file: SecretProviderClasses parsed, other kinds
/// skipped, and every problem found on the way.
#[derive(Debug, Default)]
pub struct Loaded {
    /// SecretProviderClass documents, in file order.
    pub documents: Vec<SpcDocument>,
    /// Problems with their documents' first line, for documents that could
    /// not be read as a SecretProviderClass.
    pub problems: Vec<Located>,
    /// Problems tied to a readable document (by index into `documents`).
    pub document_problems: Vec<(usize, Located)>,
}

/// Reads `path` and splits it into YAML documents.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(parse(path, &text))
}

/// Parses the text of a file (see [`load`]).
pub fn parse(path: &Path, text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    for (first_line, chunk) in split_documents(text) {
        let value: Yaml = match serde_yaml_ng::from_str(&chunk) {
            Ok(v) => v,
            Err(e) => {
                loaded.problems.push(Located {
                    line: e.location().map(|l| first_line + l.line() - 1),
                    message: format!("not valid YAML: {e}"),
                });
                continue;
            }
        };
        if value.is_null() {
            continue;
        }
        if value.get("kind").and_then(Yaml::as_str) != Some("SecretProviderClass") {
            continue;
        }
        let (doc, problems) = read_document(path, first_line, chunk, &value);
        let index = loaded.documents.len();
        loaded
            .document_problems
            .extend(problems.into_iter().map(|p| (index, p)));
        loaded.documents.push(doc);
    }
    loaded
}

/// One SecretProviderClass document, `value` parsed from its text
/// `chunk`, and the problems found in it.
fn read_document(path: &Path, first_line: usize, chunk: String, value: &Yaml) -> (SpcDocument, Vec<Located>) {
    let mut doc = SpcDocument {
        file: path.to_path_buf(),
        first_line,
        text: chunk,
        name: String::new(),
        namespace: None,
        provider: None,
        parameters: BTreeMap::new(),
        secret_objects: Vec::new(),
    };
    let mut problems = Vec::new();
    let meta = value.get("metadata");
    match meta.and_then(|m| m.get("name")).and_then(Yaml::as_str) {
        Some(n) if !n.is_empty() => doc.name = n.to_string(),
        _ => problems.push(Located {
            line: doc.key_line("metadata", 1).or(Some(first_line)),
            message: "metadata.name is missing".to_string(),
        }),
    }
    doc.namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Yaml::as_str)
        .map(str::to_string);
    let spec = value.get("spec");
    doc.provider = spec
        .and_then(|s| s.get("provider"))
        .and_then(Yaml::as_str)
        .map(str::to_string);
    read_parameters(&mut doc, spec.and_then(|s| s.get("parameters")), &mut problems);
    if let Some(Yaml::Sequence(list)) = spec.and_then(|s| s.get("secretObjects")) {
        doc.secret_objects = list.iter().map(read_secret_object).collect();
    }
    (doc, problems)
}

/// Reads `spec.parameters` (`parameters`) into `doc`, adding a problem for
/// each value Kubernetes would refuse, not being a string.
fn read_parameters(doc: &mut SpcDocument, parameters: Option<&Yaml>, problems: &mut Vec<Located>) {
    match parameters {
        Some(Yaml::Mapping(map)) => {
            for (k, v) in map {
                let Some(key) = k.as_str() else {
                    problems.push(Located {
                        line: doc.key_line("parameters", 1),
                        message: "spec.parameters has a key that is not a string".to_string(),
                    });
                    continue;
                };
                match v {
                    Yaml::String(s) => {
                        doc.parameters.insert(key.to_string(), s.clone());
                    }
                    other => problems.push(Located {
                        line: doc.parameter_line(key),
                        message: format!(
                            "spec.parameters.{key} is {}, but Kubernetes only accepts strings here: quote the value",
                            describe(other)
                        ),
                    }),
                }
            }
        }
        None | Some(Yaml::Null) => problems.push(Located {
            line: doc.key_line("spec", 1).or(Some(doc.first_line)),
            message: "spec.parameters is missing".to_string(),
        }),
        Some(other) => problems.push(Located {
            line: doc.key_line("parameters", 1),
            message: format!("spec.parameters is {}, not a map of strings", describe(other)),
        }),
    }
}

/// One `spec.secretObjects` entry: its Secret's name and the objectNames
/// its data uses.
fn read_secret_object(so: &Yaml) -> (String, Vec<String>) {
    let name = so
        .get("secretName")
        .and_then(Yaml::as_str)
        .unwrap_or_default()
        .to_string();
    let refs = match so.get("data") {
        Some(Yaml::Sequence(data)) => data
            .iter()
            .filter_map(|d| d.get("objectName").and_then(Yaml::as_str))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    (name, refs)
}

fn describe(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "empty",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a map",
        Yaml::Tagged(_) => "a tagged value",
    }
}

/// Splits a multi-document YAML stream at `---` lines, returning each
/// document's text and the file line it starts on.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 1;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line == "...";
        if is_marker {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs.retain(|(_, d)| !d.trim().is_empty());
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# leading comment
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
---
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: app
  namespace: team
spec:
  provider: vault
  parameters:
    roleName: app
    vaultSkipTLSVerify: true
    objects: |
      - objectName: a
        secretPath: secret/data/a
      - objectName: b
        secretPath: secret/data/b
";

    #[test]
    fn documents_keys_and_object_lines_are_located() {
        let loaded = parse(Path::new("f.yaml"), FILE);
        assert_eq!(loaded.documents.len(), 1, "the ConfigMap is skipped");
        let doc = &loaded.documents[0];
        assert_eq!(doc.first_line, 6);
        assert_eq!(doc.name, "app");
        assert_eq!(doc.namespace.as_deref(), Some("team"));
        assert_eq!(doc.parameter_line("roleName"), Some(14));
        assert_eq!(doc.object_line(0), Some(17));
        assert_eq!(doc.object_line(1), Some(19));
        assert_eq!(doc.line_text(19).map(str::trim), Some("- objectName: b"));
        assert_eq!(loaded.document_problems.len(), 1);
        let (_, p) = &loaded.document_problems[0];
        assert_eq!(p.line, Some(15));
        assert!(p.message.contains("vaultSkipTLSVerify is a boolean"), "{}", p.message);
    }

    #[test]
    fn yaml_errors_carry_file_lines() {
        let text = "kind: SecretProviderClass\n---\nkind: SecretProviderClass\nmetadata:\n  name: [x\n";
        let loaded = parse(Path::new("f.yaml"), text);
        assert_eq!(loaded.problems.len(), 1);
        let line = loaded.problems[0].line.expect("a line");
        assert!((5..=6).contains(&line), "{line}");
    }
}
