//! The provider's modules stay layered: read every product file's `crate::`
//! paths (outside tests and comments), draw the graph of which module uses
//! which, and fail on any edge that points up the layer list of `src/lib.rs`
//! (read from its module map: one rank table, the one the docs show) or
//! closes a cycle within a layer, naming the file and line.

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

/// The layers of `src/lib.rs`'s module map, top first: each list item's
/// linked modules (`[`name`]`).
fn layers() -> Vec<Vec<String>> {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).expect("src/lib.rs");
    let map: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .skip_while(|l| !l.contains("Module map, by layer"))
        .skip(1)
        .skip_while(|l| !l.trim_start().starts_with("- "))
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let mut layers: Vec<Vec<String>> = Vec::new();
    for line in map {
        if line.trim_start().starts_with("- ") {
            layers.push(Vec::new());
        }
        let layer = layers.last_mut().expect("the map starts with a list item");
        let mut rest = line;
        while let Some(at) = rest.find("[`") {
            let after = &rest[at + 2..];
            let end = after.find("`]").expect("a closed link");
            layer.push(after[..end].to_string());
            rest = &after[end + 2..];
        }
    }
    layers
}

#[test]
fn modules_use_only_modules_of_their_layer_or_below_and_no_import_closes_a_cycle() {
    let edges = graph();
    assert!(edges.len() > 15, "the graph was read: {edges:?}");
    let layers = layers();
    assert!(layers.len() >= 5, "the layer list was read from src/lib.rs: {layers:?}");
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let mut problems = Vec::new();
    let modules: BTreeSet<&String> = edges.keys().chain(edges.values().flat_map(|t| t.keys())).collect();
    for m in modules {
        if !rank.contains_key(m.as_str()) {
            problems.push(format!("{m} is in no layer of src/lib.rs's module map"));
        }
    }
    // Ranks grow downwards: an edge to a smaller rank points up.
    for (from, targets) in &edges {
        for (to, at) in targets {
            if let (Some(f), Some(t)) = (rank.get(from.as_str()), rank.get(to.as_str())) {
                if t < f {
                    problems.push(format!(
                        "{from} (layer {f}: {}) uses {to}, a layer above it ({t}: {}) at {at}",
                        layers[*f].join(", "),
                        layers[*t].join(", ")
                    ));
                }
            }
        }
    }
    // Within a layer, no cycle: every edge whose target reaches back.
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
    for (from, targets) in &edges {
        for (to, at) in targets {
            if reaches(to, from) {
                problems.push(format!("{from} -> {to} closes a cycle ({at})"));
            }
        }
    }
    assert!(problems.is_empty(), "the layering is broken:\n{}", problems.join("\n"));
}
