//! Integration tests of how responses become files (issue 7): golden files
//! proving existing-style objects are unchanged, and the opt-in shaping
//! fields, against a real OpenBao (and PostgreSQL for dynamic credentials).

mod support;

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::json;
use support::*;

/// Where the golden files of existing-style objects live.
fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/existing")
}

/// A fixed object-version key, so versions are reproducible across runs.
fn put_fixed_version_key(bed: &Bed) {
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    bed.world.kube.put_secret(
        PROVIDER_NS,
        json!({
            "metadata": {"name": "vault-csi-provider-hmac-key"},
            "immutable": true,
            "data": {"key": key},
        }),
    );
}

/// Replaces the value of every `"created_time":"..."` with a fixed one: the
/// only field of these responses that differs from run to run.
fn fix_created_time(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).expect("whole responses are UTF-8 JSON");
    let marker = "\"created_time\":\"";
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(marker) {
        let start = at + marker.len();
        let end = start + rest[start..].find('"').expect("closing quote");
        out.push_str(&rest[..start]);
        out.push_str("2000-01-01T00:00:00.000000000Z");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out.into_bytes()
}

/// Objects written the way SPCs are written before issue 7; their files and
/// versions must never change.
const EXISTING_OBJECTS: &str = r#"
- objectName: kv2/string
  secretPath: secret/data/app
  secretKey: password
- objectName: kv2/number
  secretPath: /v1/secret/data/app
  secretKey: port
- objectName: kv2/float
  secretPath: secret/data/app
  secretKey: ratio
- objectName: kv2/bool
  secretPath: secret/data/app
  secretKey: enabled
- objectName: kv2/null
  secretPath: secret/data/app
  secretKey: nothing
- objectName: kv2/object
  secretPath: secret/data/app
  secretKey: nested
- objectName: kv2/array
  secretPath: secret/data/app
  secretKey: list
- objectName: kv2/unicode
  secretPath: secret/data/app
  secretKey: unicode
- objectName: kv2/multiline
  secretPath: secret/data/app
  secretKey: multiline
- objectName: kv2/base64.bin
  secretPath: secret/data/app
  secretKey: blob
  encoding: base64
- objectName: kv2/hex.bin
  secretPath: secret/data/app
  secretKey: hexed
  encoding: hex
- objectName: kv2/pinned
  secretPath: secret/data/app?version=1
  secretKey: password
- objectName: kv2/mode
  secretPath: secret/data/app
  secretKey: password
  filePermission: 0600
- objectName: kv2/whole.json
  secretPath: secret/data/app
- objectName: kv2/whole-pinned.json
  secretPath: secret/data/app?version=1
- objectName: kv1/string
  secretPath: kv1/app
  secretKey: user
- objectName: kv1/object
  secretPath: kv1/app
  secretKey: nested
- objectName: kv1/whole.json
  secretPath: kv1/app
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_files_of_existing_objects_are_unchanged() {
    let bed = Bed::start().await;
    put_fixed_version_key(&bed);
    bed.world
        .bao
        .kv2_put("secret", "app", json!({"password": "first-v1"}))
        .await
        .unwrap();
    let blob = base64::engine::general_purpose::STANDARD.encode([0u8, 1, 2, 0xfe, 0xff]);
    bed.world
        .bao
        .kv2_put(
            "secret",
            "app",
            json!({
                "password": "p@ss:w0rd\"x",
                "port": 5432,
                "ratio": 0.25,
                "enabled": true,
                "nothing": null,
                "nested": {"b": [1, "two", {"c": false}], "a": "x"},
                "list": ["x", 2],
                "unicode": "grüße ✓",
                "multiline": "line one\nline two\n",
                "blob": blob,
                "hexed": "CAFE01",
            }),
        )
        .await
        .unwrap();
    bed.world
        .bao
        .enable_secrets("kv1", "kv", json!({"version": "1"}))
        .await
        .unwrap();
    bed.world
        .bao
        .write("kv1/app", json!({"user": "admin", "nested": {"z": 1, "a": [true]}}))
        .await
        .unwrap();
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("default", "web-0", "app");
    let r = p
        .mount(&params(EXISTING_OBJECTS, &[]), &pod)
        .await
        .expect("mount succeeds");

    let got = files(&r);
    let got_versions = versions(&r);
    let mut manifest = String::new();
    for (path, (mode, contents)) in &got {
        let contents = if path.ends_with("whole.json") || path.ends_with("whole-pinned.json") {
            fix_created_time(contents)
        } else {
            contents.clone()
        };
        // Versions of whole KV v2 responses cover `created_time`, which
        // differs from run to run; every other version is reproducible.
        let version = if path.starts_with("kv2/whole") {
            "(varies)".to_string()
        } else {
            got_versions[path].clone()
        };
        manifest.push_str(&format!("{path} {mode:o} {version}\n"));
        let file = golden_dir().join(path);
        if std::env::var_os("VCP_WRITE_GOLDEN").is_some() {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &contents).unwrap();
        } else {
            let want = std::fs::read(&file).unwrap_or_else(|e| panic!("golden file {}: {e}", file.display()));
            assert_eq!(
                contents,
                want,
                "{path} differs from its golden file:\n got: {}\nwant: {}",
                String::from_utf8_lossy(&contents),
                String::from_utf8_lossy(&want)
            );
        }
    }
    let manifest_file = golden_dir().join("MANIFEST");
    if std::env::var_os("VCP_WRITE_GOLDEN").is_some() {
        std::fs::write(&manifest_file, &manifest).unwrap();
    } else {
        let want = std::fs::read_to_string(&manifest_file).expect("golden MANIFEST");
        assert_eq!(manifest, want, "paths, modes or versions changed");
    }
    assert_eq!(got.len(), 18, "one file per object");
}
