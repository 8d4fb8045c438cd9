//! The install manifests under `deploy/`, rendered as a user renders them
//! (`kubectl kustomize`), for the tests and the test worlds: a world's
//! provider runs as its own ServiceAccount bound by exactly the RBAC these
//! render, so a rule missing there fails a test.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Deserialize as _;
use serde_json::{json, Value};

/// The repository root (the test bed lives in `<repo>/testbed`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `kubectl` on `PATH`, or an error that says how to get it.
pub fn kubectl() -> Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("kubectl"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            anyhow!("kubectl not found on PATH: deploy/ is rendered with `kubectl kustomize`; install kubectl (v1.27+)")
        })
}

/// `kubectl kustomize <dir>`: the rendered YAML.
pub fn kustomize(dir: &Path) -> Result<String> {
    let out = Command::new(kubectl()?)
        .arg("kustomize")
        .arg(dir)
        .output()
        .context("running kubectl kustomize")?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("kubectl kustomize printed non-UTF-8")
}

/// Parses a multi-document YAML stream into JSON values (empty documents
/// dropped).
pub fn yaml_docs(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).context("a YAML document")?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// `to` relative to `from` (kustomize refuses absolute paths to bases).
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// The base with `components` (directories under `deploy/components`),
/// rendered through an overlay written under `scratch`: the YAML.
pub fn render_in(scratch: &Path, components: &[&str]) -> Result<String> {
    std::fs::create_dir_all(scratch).context("overlay directory")?;
    let dir = scratch.canonicalize().context("overlay directory")?;
    let deploy = repo().join("deploy").canonicalize().context("deploy/")?;
    let rel = |p: &str| relative(&dir, &deploy.join(p)).display().to_string();
    let overlay = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [rel("base")],
        "components": components.iter().map(|c| rel(&format!("components/{c}"))).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("kustomization.yaml"), serde_yaml_ng::to_string(&overlay)?)
        .context("writing the overlay")?;
    kustomize(&dir)
}

/// The base with `components`, rendered once per process: its objects.
pub fn render(components: &[&str]) -> Result<Vec<Value>> {
    static RENDERED: Mutex<Option<HashMap<String, Vec<Value>>>> = Mutex::new(None);
    let key = components.join(",");
    if let Some(objects) = RENDERED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .get(&key)
    {
        return Ok(objects.clone());
    }
    let scratch = tempfile::tempdir().context("scratch directory")?;
    let objects = yaml_docs(&render_in(scratch.path(), components)?)?;
    RENDERED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .insert(key, objects.clone());
    Ok(objects)
}

/// The objects of the ServiceAccount and RBAC kinds.
pub fn rbac(objects: &[Value]) -> Vec<Value> {
    const KINDS: [&str; 5] = [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    objects
        .iter()
        .filter(|o| KINDS.iter().any(|k| o["kind"] == *k))
        .cloned()
        .collect()
}

/// `deploy/components/secret-sync/rolebinding-template.yaml`, the binding an
/// admin copies into each namespace that may receive synced Secrets.
pub fn sync_rolebinding_template() -> Result<Value> {
    let path = repo().join("deploy/components/secret-sync/rolebinding-template.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    yaml_docs(&text)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("{} holds no object", path.display()))
}
