//! Integration tests of how responses become files (issue 7): golden files
//! proving existing-style objects are unchanged, and the opt-in shaping
//! fields, against a real OpenBao (and PostgreSQL for dynamic credentials).

use std::path::PathBuf;

use crate::support::*;
use base64::Engine as _;
use serde_json::json;

/// Where the golden files of existing-style objects live.
fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/existing")
}

/// A fixed object-version key, so versions are reproducible across runs.
async fn put_fixed_version_key(bed: &Bed) {
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    bed.kube
        .put_secret(
            bed.provider_ns(),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": KEY_SECRET, "labels": {"app.kubernetes.io/managed-by": "vault-csi-provider"}},
                "type": "Opaque",
                "immutable": true,
                "data": {"key": key},
            }),
        )
        .await
        .unwrap();
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
    put_fixed_version_key(&bed).await;
    bed.kv(json!({"password": "first-v1"})).await;
    let blob = base64::engine::general_purpose::STANDARD.encode([0u8, 1, 2, 0xfe, 0xff]);
    bed.kv(json!({
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
    }))
    .await;
    bed.kv1(json!({"user": "admin", "nested": {"z": 1, "a": [true]}})).await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_pointer_into_a_nested_kv_value() {
    let bed = Bed::start().await;
    bed.kv(
        json!({"tls": {"server": {"cert": "CERT", "port": 8443}}, "a/b": {"~x": "escaped"}, "list": ["zero", "one"]}),
    )
    .await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = r#"
- {objectName: cert, secretPath: secret/data/app, secretKeyPointer: /tls/server/cert}
- {objectName: port, secretPath: secret/data/app, secretKeyPointer: /tls/server/port}
- {objectName: server.json, secretPath: secret/data/app, secretKeyPointer: /tls/server}
- {objectName: escaped, secretPath: secret/data/app, secretKeyPointer: /a~1b/~0x}
- {objectName: second, secretPath: secret/data/app, secretKeyPointer: /list/1}
- {objectName: literal, secretPath: secret/data/app, secretKey: a/b}
"#;
    let r = p.mount(&params(objects, &[]), &pod).await.expect("mount");
    assert_eq!(text(&r, "cert"), "CERT");
    assert_eq!(text(&r, "port"), "8443");
    assert_eq!(text(&r, "server.json"), r#"{"cert":"CERT","port":8443}"#);
    assert_eq!(text(&r, "escaped"), "escaped");
    assert_eq!(text(&r, "second"), "one");
    assert_eq!(
        text(&r, "literal"),
        r#"{"~x":"escaped"}"#,
        "secretKey stays a literal key"
    );

    let missing = "- {objectName: key-file, secretPath: secret/data/app, secretKeyPointer: /tls/client/key}\n";
    let e = refused(&p, missing, &pod).await;
    assert_eq!(e.code(), tonic::Code::NotFound);
    let m = e.message();
    assert!(
        m.contains("object \"key-file\"")
            && m.contains("secretKeyPointer \"/tls/client/key\"")
            && m.contains("\"/tls\" has no key \"client\""),
        "{m}"
    );
    assert!(!m.contains("CERT"), "no value in the error: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_only_json_yaml_and_dotenv_for_a_kv_v2_secret() {
    let bed = Bed::start().await;
    bed.kv(json!({"DB_USER": "app", "DB_PASS": "p'w$\"d", "PORT": 5432}))
        .await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = r#"
- {objectName: app.json, secretPath: secret/data/app, format: json}
- {objectName: app.yaml, secretPath: secret/data/app, format: yaml}
- {objectName: app.env, secretPath: secret/data/app, format: dotenv, filePermission: 0600}
"#;
    let r = p.mount(&params(objects, &[]), &pod).await.expect("mount");
    assert_eq!(
        text(&r, "app.json"),
        "{\n  \"DB_PASS\": \"p'w$\\\"d\",\n  \"DB_USER\": \"app\",\n  \"PORT\": 5432\n}\n",
        "the KV data only, no envelope or metadata"
    );
    let yaml: serde_json::Value = serde_yaml_ng::from_str(&text(&r, "app.yaml")).unwrap();
    assert_eq!(yaml, json!({"DB_USER": "app", "DB_PASS": "p'w$\"d", "PORT": 5432}));
    let env = text(&r, "app.env");
    assert_eq!(env, "DB_PASS=\"p'w\\$\\\"d\"\nDB_USER=app\nPORT=5432\n");
    assert_eq!(files(&r)["app.env"].0, 0o600);
    // A shell reads the dotenv file back to the same values.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.env"), &env).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("set -a; . ./app.env; printf '%s|%s|%s' \"$DB_USER\" \"$DB_PASS\" \"$PORT\"")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app|p'w$\"d|5432");

    // Same content → same versions; a change moves all three.
    let v = versions(&r);
    assert_eq!(versions(&p.mount(&params(objects, &[]), &pod).await.unwrap()), v);
    bed.kv(json!({"DB_USER": "app", "DB_PASS": "new", "PORT": 5432})).await;
    let changed = versions(&p.mount(&params(objects, &[]), &pod).await.unwrap());
    assert!(v.iter().all(|(id, ver)| changed[id] != *ver));

    // A key that is not a valid environment variable name is refused.
    bed.world
        .bao
        .kv2_put("secret", "bad", json!({"OK": "1", "not-an-env": "2"}))
        .await
        .unwrap();
    let e = p
        .mount(
            &params(
                "- {objectName: bad.env, secretPath: secret/data/bad, format: dotenv}",
                &[],
            ),
            &pod,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_mentions(&e, &["\"not-an-env\"", "not valid environment variable names"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_per_key_and_unsafe_keys_are_refused() {
    let bed = Bed::start().await;
    bed.kv(json!({"user": "admin", "password": "pw", "port": 5432})).await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = "- {objectName: app, secretPath: secret/data/app, expandKeys: true, filePermission: 0640}\n";
    let r = p.mount(&params(objects, &[]), &pod).await.expect("mount");
    let f = files(&r);
    assert_eq!(f.keys().collect::<Vec<_>>(), ["app/password", "app/port", "app/user"]);
    assert_eq!(f["app/user"], (0o640, b"admin".to_vec()));
    assert_eq!(f["app/password"].1, b"pw");
    assert_eq!(f["app/port"].1, b"5432");
    let v = versions(&r);
    assert_eq!(v.len(), 3, "one version per key");

    // Only the changed key's version moves.
    bed.kv(json!({"user": "admin", "password": "new", "port": 5432})).await;
    let changed = versions(&p.mount(&params(objects, &[]), &pod).await.unwrap());
    assert_ne!(changed["app/password"], v["app/password"]);
    assert_eq!(changed["app/user"], v["app/user"]);
    assert_eq!(changed["app/port"], v["app/port"]);

    // A key with "/" cannot be a file name.
    bed.kv(json!({"user": "admin", "tls/key": "k", "port": 5432})).await;
    let e = refused(&p, objects, &pod).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let m = e.message();
    assert!(
        m.contains("object \"app\"")
            && m.contains("key \"tls/key\"")
            && m.contains("cannot be a file name: it contains \"/\""),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_render_pgpass_and_url_from_one_database_lease() {
    let bed = Bed::start().await;
    let pg = bed.database("5m", "10m").await;
    let info = pg.conn_info().unwrap();
    bed.world
        .bao
        .kv2_put(
            "secret",
            "db",
            json!({"host": info.host, "port": info.port, "database": info.database}),
        )
        .await
        .unwrap();
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = r#"
- objectName: db-creds
  secretPath: database/creds/app
  writeFile: false
- objectName: db
  secretPath: secret/data/db
  writeFile: false
- objectName: .pgpass
  filePermission: 0600
  template: |
    {% set db = objects.db.data %}{% set c = objects["db-creds"].data -%}
    {{ db.host }}:{{ db.port }}:{{ db.database }}:{{ c.username | pgpass_escape }}:{{ c.password | pgpass_escape }}
- objectName: database-url
  template: >-
    postgresql://{{ objects["db-creds"].data.username | urlencode }}:{{ objects["db-creds"].data.password | urlencode
    }}@{{ objects.db.data.host }}:{{ objects.db.data.port }}/{{ objects.db.data.database }}?sslmode=disable
"#;
    let r = p.mount(&params(objects, &[]), &pod).await.expect("mount");
    let f = files(&r);
    assert_eq!(
        f.keys().collect::<Vec<_>>(),
        [".pgpass", "database-url"],
        "inputs write no file"
    );
    assert_eq!(f[".pgpass"].0, 0o600);

    let pgpass = text(&r, ".pgpass");
    let line = pgpass.strip_suffix('\n').expect("one line ending in a newline");
    let fields: Vec<&str> = line.split(':').collect();
    assert_eq!(fields.len(), 5, "{}", fields.len());
    assert_eq!(
        fields[..3],
        [info.host.as_str(), &info.port.to_string(), info.database.as_str()]
    );
    let (user, pass) = (fields[3], fields[4]);
    assert!(
        pg.can_login(user, pass).await.unwrap(),
        "the .pgpass credentials log in"
    );

    let url = text(&r, "database-url");
    let rest = url.strip_prefix("postgresql://").expect("a postgresql:// URL");
    let (userinfo, hostpart) = rest.split_once('@').unwrap();
    let (url_user, url_pass) = userinfo.split_once(':').unwrap();
    assert_eq!((url_user, url_pass), (user, pass), "both files come from the same read");
    assert_eq!(
        hostpart,
        format!("{}:{}/{}?sslmode=disable", info.host, info.port, info.database)
    );
    assert!(pg.can_login(url_user, url_pass).await.unwrap());
    assert_eq!(
        bed.world.bao.leases("database/creds/app").await.unwrap().len(),
        1,
        "both templates use one read → one lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_split_a_pki_issue_into_cert_key_and_ca_that_verify() {
    let bed = Bed::start().await;
    let root = bed.world.bao.setup_pki("pki", "web", "24h").await.unwrap();
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    // One issue; the bundle a user might keep is re-split with the PEM helpers.
    let objects = r#"
- objectName: issue
  secretPath: pki/issue/web
  method: PUT
  secretArgs: {common_name: web.example.com, ttl: 1h}
  writeFile: false
- objectName: tls.crt
  template: '{{ objects.issue.data.certificate | pem_certs | first }}'
- objectName: tls.key
  filePermission: 0600
  template: '{{ [objects.issue.data.certificate, objects.issue.data.private_key] | pem_private_key }}'
- objectName: ca.crt
  template: '{{ objects.issue.data.ca_chain | pem_certs | join("") }}'
"#;
    let r = p.mount(&params(objects, &[]), &pod).await.expect("mount");
    let f = files(&r);
    assert_eq!(f.keys().collect::<Vec<_>>(), ["ca.crt", "tls.crt", "tls.key"]);
    assert_eq!(f["tls.key"].0, 0o600);
    let dir = tempfile::tempdir().unwrap();
    for (name, (_, contents)) in &f {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    let path = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    // The key belongs to the certificate.
    let cert_pub = openssl(&["x509", "-noout", "-pubkey", "-in", &path("tls.crt")], b"");
    let key_pub = openssl(&["pkey", "-pubout", "-in", &path("tls.key")], b"");
    assert_eq!(cert_pub, key_pub);
    // The certificate verifies against ca.crt, which is the mount's root.
    let verified = openssl(&["verify", "-CAfile", &path("ca.crt"), &path("tls.crt")], b"");
    assert!(verified.contains(": OK"), "{verified}");
    assert_eq!(text(&r, "ca.crt").trim(), root.trim());
    assert_eq!(text(&r, "tls.crt").matches("BEGIN CERTIFICATE").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_that_read_files_or_loop_forever_fail_quickly() {
    let (bed, p) = Bed::ready().await;
    let pod = bed.pod("web-0").await;
    let t = |tpl: &str| {
        format!(
            "- {{objectName: k, secretPath: secret/data/app, writeFile: false}}\n- objectName: f\n  template: {}\n",
            serde_json::to_string(tpl).unwrap()
        )
    };
    for tpl in [
        "{% include '/etc/passwd' %}",
        "{% import '/etc/hostname' as h %}",
        "{% extends '/etc/passwd' %}",
    ] {
        let e = refused(&p, &t(tpl), &pod).await;
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{tpl}: {}", e.message());
        assert_mentions(&e, &["object \"f\"", "template"]);
        assert!(!e.message().contains("root:"));
    }
    for tpl in [
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ objects.k.data.k }}{% endfor %}{% endfor %}",
        "{% for x in [[1]] recursive %}{{ loop([[x]]) }}{% endfor %}",
        "{{ 'x' * 1000000000 }}",
    ] {
        let started = std::time::Instant::now();
        let e = refused(&p, &t(tpl), &pod).await;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{tpl}: {:?}",
            started.elapsed()
        );
        assert!(
            e.code() == tonic::Code::InvalidArgument,
            "{tpl}: {:?} {}",
            e.code(),
            e.message()
        );
        assert_mentions(&e, &["object \"f\": template"]);
    }
    // The provider is still serving.
    let ok = t("{{ objects.k.data.k }}");
    assert_eq!(text(&p.mount(&params(&ok, &[]), &pod).await.unwrap(), "f"), "v");
}
