//! The provider's modules stay layered: read every product file's
//! `crate::`/`super::` paths (outside tests and comments), draw the graph of
//! which module uses which, and fail on an import cycle — a lower module
//! reaching back up — naming the files and lines that close it. The module
//! map in `src/lib.rs` and `docs/architecture.md` is what this keeps true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Folders whose files are modules of their own in the graph.
const FOLDERS: &[&str] = &["kubernetes", "vault"];

/// The module a product file belongs to (`vault::failover`, `spc`, ...);
/// `None` for test files and the crate root.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.iter().any(|p| p == "tests") || parts.is_empty() || parts[0] == "lib" || parts[0] == "main" {
        return None;
    }
    if FOLDERS.contains(&parts[0].as_str()) && parts.len() > 1 {
        return Some(format!("{}::{}", parts[0], parts[1]));
    }
    Some(parts[0].clone())
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// module → module it uses → where (file:line).
fn graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in all {
        let Some(from) = module_of(&src, &file) else { continue };
        let text = std::fs::read_to_string(&file).expect("a source file");
        // Unit tests may reach anywhere; the product may not.
        let product = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in product.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for (i, _) in code.match_indices("crate::") {
                let path: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut segments = path.split("::").filter(|s| !s.is_empty());
                let Some(top) = segments.next() else { continue };
                let to = match segments.next() {
                    Some(sub) if FOLDERS.contains(&top) && sub.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                        format!("{top}::{sub}")
                    }
                    _ => top.to_string(),
                };
                if to != from && !to.starts_with(&format!("{from}::")) && !from.starts_with(&format!("{to}::")) {
                    edges
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert_with(|| format!("{}:{}", file.display(), n + 1));
                }
            }
        }
    }
    edges
}

#[test]
fn modules_use_only_modules_below_them_and_no_import_closes_a_cycle() {
    let edges = graph();
    assert!(edges.len() > 15, "the graph was read: {edges:?}");
    // Every edge whose target can reach back to its source closes a cycle.
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            for next in edges.get(&m).into_iter().flat_map(|e| e.keys()) {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        false
    };
    let mut cycles = Vec::new();
    for (from, targets) in &edges {
        for (to, at) in targets {
            if reaches(to, from) {
                cycles.push(format!("{from} -> {to} ({at})"));
            }
        }
    }
    assert!(cycles.is_empty(), "imports that close a cycle:\n{}", cycles.join("\n"));
    // The directions the layering rests on (docs/architecture.md).
    for (low, high) in [
        ("vault", "spc"),
        ("vault", "config"),
        ("metrics", "vault"),
        ("logging", "config"),
        ("kubernetes::client", "mount"),
        ("spc", "render"),
        ("error", "vault"),
    ] {
        assert!(
            !edges.get(low).is_some_and(|e| e.contains_key(high)),
            "{low} uses {high}, a layer above it: {:?}",
            edges.get(low).and_then(|e| e.get(high))
        );
    }
}
