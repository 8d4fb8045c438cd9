use super::objects::{parse_mode, parse_secret_path};
use super::*;
use crate::endpoint::Endpoint;

fn defaults() -> Defaults {
    Defaults::builtin(Flavor::Vault)
}

#[test]
fn the_builtin_address_is_the_one_the_provider_parses() {
    let parsed: crate::vault::failover::Addresses = Endpoint::parse(DEFAULT_ADDR).unwrap().into();
    assert_eq!(defaults().vault.addresses, parsed);
    assert_eq!(defaults().auth_mount, DEFAULT_AUTH_MOUNT);
}

fn attrs(extra: &[(&str, &str)], objects: &str) -> String {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    m.insert(keys::POD_NAME.into(), "web-0".into());
    m.insert(keys::POD_NAMESPACE.into(), "default".into());
    m.insert(keys::POD_UID.into(), "uid-1".into());
    m.insert(keys::SERVICE_ACCOUNT.into(), "app".into());
    m.insert("roleName".into(), "app".into());
    m.insert("objects".into(), objects.into());
    for (k, v) in extra {
        m.insert((*k).into(), (*v).into());
    }
    serde_json::to_string(&m).unwrap()
}

const ONE: &str = "- objectName: a\n  secretPath: secret/data/a\n  secretKey: k\n";

fn err(attributes: &str) -> String {
    match parse_mount(attributes, "", "420", &defaults()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
            e.to_string()
        }
    }
}

fn objects_err(yaml: &str) -> String {
    err(&attrs(&[], yaml))
}

#[test]
fn a_full_request_parses() {
    let yaml = r#"
- objectName: db/password
  secretPath: /v1/database/creds/app
  secretKey: password
  filePermission: 0600
- objectName: cert
  secretPath: pki/issue/web
  method: put
  secretArgs: {common_name: web.example, ttl: 1h}
  secretKey: certificate
- objectName: bin
  secretPath: v1/secret/data/app?version=2
  secretKey: blob
  encoding: BASE64
  filePermission: 420
"#;
    let a = attrs(
        &[
            ("vaultAddress", "unix:///var/run/vault/agent.sock"),
            ("vaultNamespace", "team"),
            ("audience", "custom"),
        ],
        yaml,
    );
    let spec = parse_mount(&a, "null", "420", &defaults()).unwrap();
    assert_eq!(spec.role, "app");
    assert_eq!(spec.auth_mount, "kubernetes");
    assert_eq!(spec.audience.as_deref(), Some("custom"));
    assert_eq!(
        spec.vault.addresses,
        Endpoint::Unix("/var/run/vault/agent.sock".into()).into()
    );
    assert_eq!(spec.vault.namespace.as_deref(), Some("team"));
    let o = &spec.objects;
    assert_eq!(o[0].name, "db/password");
    assert_eq!(o[0].read.path, "/v1/database/creds/app");
    assert_eq!(o[0].read.method, "GET");
    assert_eq!(o[0].mode, 0o600, "YAML 1.1 octal");
    assert_eq!(o[1].read.method, "PUT");
    assert_eq!(
        o[1].read.body.as_deref(),
        Some(r#"{"common_name":"web.example","ttl":"1h"}"#)
    );
    assert_eq!(o[1].mode, 0o644, "default from permission");
    assert_eq!(o[2].read.path, "/v1/secret/data/app");
    assert_eq!(o[2].read.query, vec![("version".to_string(), "2".to_string())]);
    assert!(matches!(
        o[2].output,
        Output::Value {
            encoding: Encoding::Base64,
            ..
        }
    ));
    assert_eq!(o[2].mode, 420, "a plain YAML integer is decimal");
}

#[test]
fn secrets_field_accepts_every_empty_form() {
    for s in ["", "null", "{}", "  "] {
        parse_mount(&attrs(&[], ONE), s, "420", &defaults()).unwrap();
    }
    let e = parse_mount(&attrs(&[], ONE), "[1]", "420", &defaults()).unwrap_err();
    assert!(e.to_string().contains("secrets are not a JSON object"), "{e}");
}

#[test]
fn secret_path_forms_are_equivalent() {
    for p in [
        "/v1/secret/data/x",
        "v1/secret/data/x",
        "/secret/data/x",
        "secret/data/x",
    ] {
        assert_eq!(parse_secret_path(p).unwrap().0, "/v1/secret/data/x", "{p}");
    }
    assert!(parse_secret_path("secret/x?%zz=1").is_err());
    assert!(parse_secret_path("secret/x?=1").is_err());
    assert!(parse_secret_path("secret/../sys").is_err());
    assert!(parse_secret_path("/v1/").is_err());
}

#[test]
fn modes() {
    let m = |y: &str| parse_mode(&serde_yaml_ng::from_str(y).unwrap());
    assert_eq!(m("0600"), Ok(0o600));
    assert_eq!(m("\"0640\""), Ok(0o640));
    assert_eq!(m("0o755"), Ok(0o755));
    assert_eq!(m("420"), Ok(420));
    assert!(m("0800").is_err());
    assert!(m("07777").is_err());
    assert!(m("rw").is_err());
    assert!(m("-1").is_err());
}

#[test]
fn bad_attributes_are_clear_errors() {
    assert!(err("{not json").contains("attributes are not a JSON object"));
    assert!(err(r#"{"objects": 5}"#).contains("attributes are not a JSON object"));
    let no_role = attrs(&[("roleName", "")], ONE);
    assert!(err(&no_role).contains("roleName is missing"));
    let both = attrs(
        &[("vaultKubernetesMountPath", "k8s"), ("vaultAuthMountPath", "jwt")],
        ONE,
    );
    assert!(err(&both).contains("both set"));
    let skip = attrs(&[("vaultSkipTLSVerify", "sure")], ONE);
    assert!(err(&skip).contains("vaultSkipTLSVerify"));
    let addr = attrs(&[("vaultAddress", "vault:8200")], ONE);
    assert!(err(&addr).contains("vaultAddress"));
    let half_mtls = attrs(&[("vaultTLSClientCertPath", "/c.pem")], ONE);
    assert!(err(&half_mtls).contains("must be set together"));
    let e = parse_mount(&attrs(&[], ONE), "", "abc", &defaults()).unwrap_err();
    assert!(e.to_string().contains("permission"), "{e}");
}

#[test]
fn bad_objects_name_the_object_and_field() {
    assert!(objects_err("- objectName: [").contains("not a YAML list"));
    assert!(objects_err("[]").contains("no objects"));
    let e = objects_err("- objectName: a\n  secretPath: s/a\n  secretKey: k\n  encoding: base32\n");
    assert!(
        e.contains("object \"a\" (#1): encoding: unknown encoding \"base32\""),
        "{e}"
    );
    let e = objects_err("- objectName: a\n  secretPath: s/a\n  encoding: hex\n");
    assert!(e.contains("only applies to a value selected with secretKey"), "{e}");
    let e = objects_err("- objectName: a\n  secretPath: s/a\n- objectName: a\n  secretPath: s/b\n");
    assert!(e.contains("objectName \"a\" is used more than once"), "{e}");
    let e = objects_err("- objectName: a\n  secretPath: s/a\n- objectName: a/b\n  secretPath: s/b\n");
    assert!(e.contains("is a file but"), "{e}");
    let e = objects_err("- secretPath: s/a\n");
    assert!(e.contains("object #1: objectName: missing"), "{e}");
    let e = objects_err("- objectName: a\n");
    assert!(e.contains("secretPath: missing"), "{e}");
    let e = objects_err("- objectName: a\n  secretPath: s/a\n  method: DELETE\n");
    assert!(e.contains("method: \"DELETE\" is not supported"), "{e}");
    let e = objects_err("- objectName: a\n  secretPath: s/a\n  secretArgs: [1]\n");
    assert!(e.contains("secretArgs"), "{e}");
    // Every problem is reported, not just the first.
    let e = objects_err("- objectName: ../x\n  secretPath: s/a\n- objectName: b\n  encoding: rot13\n");
    assert!(
        e.contains("\"../x\"") && e.contains("secretPath: missing") && e.contains("rot13"),
        "{e}"
    );
}

#[test]
fn object_names_follow_the_driver_path_rules() {
    for bad in ["../x", "/x", "a//b", "./a", "a/", "a/./b", "a/../b", "..a", ""] {
        assert!(check_object_path(bad).is_err(), "{bad:?} should be rejected");
    }
    for good in ["a", "dir/file", "a..b", "x/..y", ".hidden", "tls.crt"] {
        assert!(check_object_path(good).is_ok(), "{good:?} should be accepted");
    }
    assert!(check_object_path(&"a".repeat(256)).is_err());
    assert!(check_object_path(&["a"; 2100].join("/")).is_err());
    assert!(check_object_path(&"a".repeat(255)).is_ok());
}

#[test]
fn equal_reads_share_a_key_and_different_args_do_not() {
    let yaml = r#"
- {objectName: u, secretPath: database/creds/app, secretKey: username}
- {objectName: p, secretPath: /v1/database/creds/app, secretKey: password}
- {objectName: c1, secretPath: pki/issue/web, method: PUT, secretArgs: {common_name: a.example}}
- {objectName: c2, secretPath: pki/issue/web, method: PUT, secretArgs: {common_name: b.example}}
"#;
    let o = parse_objects(yaml, 0o644).unwrap().objects;
    assert_eq!(o[0].read, o[1].read);
    assert_ne!(o[2].read, o[3].read);
}

#[test]
fn tokens_are_taken_by_audience() {
    let tokens = r#"{"vault":{"token":"jwt-v","expirationTimestamp":"2030-01-01T00:00:00Z"},"custom":{"token":"jwt-c","expirationTimestamp":""}}"#;
    let spec = parse_mount(&attrs(&[(keys::SA_TOKENS, tokens)], ONE), "", "420", &defaults()).unwrap();
    assert_eq!(spec.provided_token.as_ref().unwrap().token, "jwt-v");
    let spec = parse_mount(
        &attrs(&[(keys::SA_TOKENS, tokens), ("audience", "custom")], ONE),
        "",
        "420",
        &defaults(),
    )
    .unwrap();
    assert_eq!(spec.provided_token.as_ref().unwrap().token, "jwt-c");
    let spec = parse_mount(
        &attrs(&[(keys::SA_TOKENS, tokens), ("audience", "other")], ONE),
        "",
        "420",
        &defaults(),
    )
    .unwrap();
    assert!(spec.provided_token.is_none());
    // `secrets` is the pod's nodePublishSecretRef, which its author writes:
    // a token there never overrides kubelet's, and is not read at all ...
    let planted =
        serde_json::json!({ keys::SA_TOKENS: r#"{"vault":{"token":"planted","expirationTimestamp":""}}"# }).to_string();
    let spec = parse_mount(&attrs(&[(keys::SA_TOKENS, tokens)], ONE), &planted, "420", &defaults()).unwrap();
    assert_eq!(spec.provided_token.as_ref().unwrap().token, "jwt-v");
    let spec = parse_mount(&attrs(&[], ONE), &planted, "420", &defaults()).unwrap();
    assert!(spec.provided_token.is_none());
    // ... unless the operator says the CSIDriver passes them there
    // (serviceAccountTokenInSecrets, Kubernetes 1.35+): then `secrets` comes
    // first, since kubelet leaves the attribute for a class to fill.
    let mut opted_in = defaults();
    opted_in.policy.tokens_in_secrets = true;
    let secrets = serde_json::json!({ keys::SA_TOKENS: tokens }).to_string();
    let spec = parse_mount(&attrs(&[], ONE), &secrets, "420", &opted_in).unwrap();
    assert_eq!(spec.provided_token.as_ref().unwrap().token, "jwt-v");
    let in_class = r#"{"vault":{"token":"planted","expirationTimestamp":""}}"#;
    let spec = parse_mount(&attrs(&[(keys::SA_TOKENS, in_class)], ONE), &secrets, "420", &opted_in).unwrap();
    assert_eq!(spec.provided_token.as_ref().unwrap().token, "jwt-v");
    assert!(
        !format!("{:?}", spec.provided_token).contains("jwt-v"),
        "tokens must not appear in Debug output"
    );
    assert!(err(&attrs(&[(keys::SA_TOKENS, "{bad")], ONE)).contains("serviceAccount.tokens"));
}

#[test]
fn missing_pod_info_explains_pod_info_on_mount() {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    m.insert("roleName".into(), "r".into());
    m.insert("objects".into(), ONE.into());
    assert!(err(&serde_json::to_string(&m).unwrap()).contains("podInfoOnMount"));
}

#[test]
fn shaping_fields_become_typed_outputs() {
    let yaml = r#"
- {objectName: whole, secretPath: s/data/a}
- {objectName: key, secretPath: s/data/a, secretKey: k}
- {objectName: ptr, secretPath: s/data/a, secretKeyPointer: /a/b~1c}
- {objectName: env, secretPath: s/data/a, format: DOTENV}
- {objectName: sub.yaml, secretPath: s/data/a, secretKeyPointer: /a, format: yaml}
- {objectName: keys, secretPath: s/data/a, expandKeys: true, encoding: base64}
- {objectName: in, secretPath: s/data/a, writeFile: "false"}
- {objectName: t, secretPath: s/data/a, template: "{{ data.k }}{{ objects.in.data.x }}"}
- {objectName: only-template, template: "{{ objects['key'].data.k }}", filePermission: 0600}
"#;
    let set = parse_objects(yaml, 0o644).unwrap();
    let out: Vec<&Output> = set.objects.iter().map(|o| &o.output).collect();
    assert_eq!(*out[0], Output::Envelope);
    assert_eq!(
        *out[1],
        Output::Value {
            select: Select::Key("k".into()),
            encoding: Encoding::Utf8
        }
    );
    assert!(matches!(out[2], Output::Value { select: Select::Pointer(p), .. } if p.tokens() == ["a", "b/c"]));
    assert!(matches!(
        out[3],
        Output::Formatted {
            select: Select::Data,
            format: Format::Dotenv
        }
    ));
    assert!(matches!(
        out[4],
        Output::Formatted {
            select: Select::Pointer(_),
            format: Format::Yaml
        }
    ));
    assert!(matches!(
        out[5],
        Output::Expand {
            select: Select::Data,
            encoding: Encoding::Base64
        }
    ));
    assert_eq!(*out[6], Output::Hidden);
    assert!(matches!(out[7], Output::Template(t) if t.references == ["in"]));
    assert_eq!(set.templates.len(), 1);
    assert_eq!(set.templates[0].name, "only-template");
    assert_eq!(set.templates[0].template.references, ["key"]);
    assert_eq!(set.templates[0].mode, 0o600);
}

#[test]
fn existing_objects_keep_their_version_input() {
    // The digest input of an object without new fields is exactly what it
    // was before issue 7 (and so is its version).
    let o = parse_objects(
        "- {objectName: a, secretPath: s/data/a?version=2, secretKey: k, encoding: hex, filePermission: 0600}",
        0o644,
    )
    .unwrap();
    assert_eq!(
        o.objects[0].config_digest_input,
        r#"{"encoding":"Hex","mode":384,"objectName":"a","secretArgs":null,"secretKey":"k","secretPath":"GET /v1/s/data/a?version=2"}"#
    );
}

#[test]
fn shaping_field_problems_are_all_reported() {
    let cases = [
        (
            "- {objectName: a, secretPath: s/a, secretKeyPointer: a/b}",
            "secretKeyPointer: \"a/b\" is not a JSON Pointer",
        ),
        (
            "- {objectName: a, secretPath: s/a, secretKeyPointer: /a~x}",
            "not followed by 0 or 1",
        ),
        (
            "- {objectName: a, secretPath: s/a, secretKey: k, secretKeyPointer: /k}",
            "cannot be used together with secretKey",
        ),
        (
            "- {objectName: a, secretPath: s/a, format: toml}",
            "format: unknown format \"toml\"",
        ),
        (
            "- {objectName: a, secretPath: s/a, format: json, expandKeys: true}",
            "cannot be combined with expandKeys",
        ),
        (
            "- {objectName: a, secretPath: s/a, format: json, encoding: hex}",
            "encoding: cannot be combined with format",
        ),
        (
            "- {objectName: a, secretPath: s/a, expandKeys: maybe}",
            "expandKeys: \"maybe\" is not true or false",
        ),
        (
            "- {objectName: a, secretPath: s/a, template: '{{ x }', secretKey: k}",
            "object \"a\" (#1): template: line 1: syntax error",
        ),
        (
            "- {objectName: a, secretPath: s/a, template: 'x', secretKey: k, format: json}",
            "renders the whole file; remove secretKey, format",
        ),
        ("- {objectName: a, template: ''}", "template: is empty"),
        (
            "- {objectName: a, secretPath: s/a, writeFile: false, secretKey: k}\n- {objectName: b, secretPath: s/b}",
            "false makes the object only an input of templates; remove secretKey",
        ),
        (
            "- {objectName: a, secretPath: s/a, writeFile: false}",
            "every object has writeFile: false",
        ),
        (
            "- {objectName: a, template: '{{ objects.nope.data }}'}",
            "objects[\"nope\"] names no object",
        ),
        (
            "- {objectName: a, template: '{{ objects[\"b\"].data }}'}\n- {objectName: b, template: 'x'}",
            "objects[\"b\"] has no secretPath",
        ),
        (
            "- {objectName: a, template: \"{% if x %}{{ objects['self'] }}{% endif %}\"}",
            "objects[\"self\"] names no object",
        ),
    ];
    for (yaml, want) in cases {
        let e = objects_err(yaml);
        assert!(e.contains(want), "{yaml}: expected {want:?} in {e}");
    }
    // A hidden object may share a directory-like name with a file.
    parse_objects(
        "- {objectName: db, secretPath: s/a, writeFile: false}\n- {objectName: db/url, template: \"{{ objects.db.data.u }}\"}",
        0o644,
    )
    .unwrap();
}

#[test]
fn type_errors_speak_of_what_users_wrote() {
    let e = parse_objects("- ~\n", 0o644).unwrap_err().to_string();
    assert!(
        e.contains("invalid type: null, expected an object (objectName, secretPath, ...)"),
        "{e}"
    );
    let e = parse_objects("- {objectName: k, secretPath: s}\n", 0o644)
        .and_then(|o| parse_sync("- 42\n", &o.objects, &o.templates))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected a Secret (secretName, type, data, ...)"), "{e}");
    let e = err(&attrs(&[(keys::SA_TOKENS, r#"{"vault": 1}"#)], ONE));
    assert!(e.contains("expected a token entry (token, expirationTimestamp)"), "{e}");
    assert!(!e.contains("Raw"), "{e}");
}

/// A small deterministic generator (xorshift64*) for the random-input
/// tests below; a fixed seed keeps failures reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A string of `len` pieces drawn from `alphabet`.
    fn text(&mut self, alphabet: &[&str], len: usize) -> String {
        (0..len).map(|_| alphabet[self.below(alphabet.len())]).collect()
    }
}

/// Whatever `check_object_path` accepts satisfies the driver's rules,
/// checked independently (the same property as the `object_path` fuzz target).
#[test]
fn random_object_paths_accepted_only_when_clean() {
    let alphabet = ["a", "b", "/", ".", "..", "\0", "é", " ", "-", "_", "\\", "~"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for _ in 0..50_000 {
        let len = rng.below(12);
        let p = rng.text(&alphabet, len);
        if check_object_path(&p).is_ok() {
            accepted += 1;
            assert!(!p.is_empty() && !p.starts_with('/') && !p.contains('\0'), "{p:?}");
            let elements: Vec<&str> = p.split('/').collect();
            assert!(!elements[0].starts_with(".."), "{p:?}");
            assert!(
                elements.iter().all(|e| !e.is_empty() && *e != "." && *e != ".."),
                "{p:?}"
            );
        }
    }
    assert!(accepted > 1000, "the generator reaches valid paths too ({accepted})");
}

/// Random `objects` YAML never panics, and what parses obeys the rules
/// later stages rely on (the same property as the `parse_objects` fuzz
/// target). Entries are built from plausible and broken field values, with
/// random characters spliced in now and then.
#[test]
fn random_objects_yaml_parses_or_fails_cleanly() {
    let names = [
        "k", "a/b", "../x", "/x", "a//b", "./a", "..a", "é", "\"a b\"", "k", "x/y/z", "",
    ];
    let paths = [
        "secret/data/app",
        "/v1/x",
        "v1",
        "/",
        "a/../b",
        "s?v=1",
        "s?%zz",
        "s?=1",
        "\"s#f\"",
        "pki/issue/web",
    ];
    let fields = [
        "secretKey: k",
        "method: PUT",
        "method: DELETE",
        "encoding: base64",
        "encoding: rot13",
        "filePermission: 0600",
        "filePermission: 0800",
        "filePermission: \"0o777\"",
        "secretArgs: {a: 1}",
        "secretArgs: [1]",
        "extra: 1",
    ];
    let noise = ["{", "}", "[", ":", "\"", "&a ", "*a", "\t", "\n", "#", "!!str "];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut yaml = String::new();
        for _ in 0..1 + rng.below(3) {
            let mut parts = vec![
                format!("objectName: {}", names[rng.below(names.len())]),
                format!("secretPath: {}", paths[rng.below(paths.len())]),
            ];
            for _ in 0..rng.below(3) {
                parts.push(fields[rng.below(fields.len())].to_string());
            }
            yaml.push_str(&format!("- {{{}}}\n", parts.join(", ")));
        }
        if rng.below(4) == 0 {
            let at = rng.below(yaml.len() + 1);
            if yaml.is_char_boundary(at) {
                yaml.insert_str(at, noise[rng.below(noise.len())]);
            }
        }
        if let Ok(objects) = parse_objects(&yaml, 0o644) {
            parsed += 1;
            let mut seen = std::collections::HashSet::new();
            for o in &objects.objects {
                assert!(check_object_path(&o.name).is_ok(), "{yaml:?}");
                assert!(seen.insert(o.name.clone()), "{yaml:?}");
                assert!(o.mode <= 0o777, "{yaml:?}");
                assert!(o.read.path.starts_with("/v1/"), "{yaml:?}");
                assert!(!o.read.path.split('/').any(|e| e == "." || e == ".."), "{yaml:?}");
            }
        }
    }
    assert!(parsed > 100, "the generator reaches valid objects too ({parsed})");
}

/// Random attributes JSON (mostly well-formed maps with odd values) never
/// panics `parse_mount`.
#[test]
fn random_attributes_parse_or_fail_cleanly() {
    let keys_ = [
        "roleName",
        "objects",
        "vaultAddress",
        "vaultSkipTLSVerify",
        "audience",
        "vaultNamespace",
        "vaultAuthMountPath",
        "syncSecrets",
        keys::POD_NAMESPACE,
        keys::SERVICE_ACCOUNT,
        keys::SA_TOKENS,
    ];
    let values = [
        "",
        "app",
        "- {objectName: k, secretPath: s}",
        "http://v:1",
        "unix://x",
        "https://[::1]:99999",
        "true",
        "maybe",
        "{\"vault\":{\"token\":\"t\"}}",
        "{\"vault\":{\"token\":\"t\",\"expirationTimestamp\":\"x\"}}",
        "- {secretName: s, data: [{key: a, objectName: k}]}",
        "/",
        "ns\n",
    ];
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for _ in 0..20_000 {
        let mut m = serde_json::Map::new();
        for _ in 0..rng.below(8) {
            let k = keys_[rng.below(keys_.len())];
            let v = values[rng.below(values.len())];
            m.insert(k.to_string(), serde_json::Value::String(v.to_string()));
        }
        let attrs = serde_json::Value::Object(m).to_string();
        let permission = ["420", "", "511", "512", "x"][rng.below(5)];
        let _ = parse_mount(&attrs, "{}", permission, &defaults());
    }
}

#[test]
fn auth_mounts_must_be_plain_paths() {
    for good in ["kubernetes", "/k8s/", "team-a/kubernetes", "jwt_1.prod"] {
        let spec = parse_mount(&attrs(&[("vaultAuthMountPath", good)], ONE), "", "420", &defaults()).unwrap();
        assert_eq!(spec.auth_mount, good.trim_matches('/'));
    }
    for bad in [
        "../sys", "a/../b", "a//b", "k8s?x=1", "k8s#frag", "a b", "k8s%2f", "a/./b", "\u{7}",
    ] {
        let e = err(&attrs(&[("vaultAuthMountPath", bad)], ONE));
        assert!(e.contains("not a plain path"), "{bad}: {e}");
    }
}

#[test]
fn vault_address_takes_a_list_of_nodes() {
    let spec = parse_mount(
        &attrs(
            &[(
                "vaultAddress",
                "https://vault-0:8200, https://vault-1:8200,https://vault-2:8200",
            )],
            ONE,
        ),
        "",
        "420",
        &defaults(),
    )
    .unwrap();
    assert_eq!(spec.vault.addresses.len(), 3);
    assert_eq!(
        spec.vault.addresses.to_string(),
        "https://vault-0:8200,https://vault-1:8200,https://vault-2:8200"
    );
    let e = err(&attrs(
        &[("vaultAddress", "https://vault-0:8200,,https://vault-1:8200")],
        ONE,
    ));
    assert!(e.contains("parameter vaultAddress") && e.contains("empty entry"), "{e}");
    let e = err(&attrs(&[("vaultAddress", "https://vault-0:8200,vault-1:8200")], ONE));
    assert!(e.contains("\"vault-1:8200\" must start with https://"), "{e}");
}

#[test]
fn the_operators_policy_limits_what_a_class_may_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "x").unwrap();
    let mut d = defaults();
    d.policy = crate::policy::ClassPolicy {
        vault_addrs: vec![Endpoint::parse("https://vault.example:8200").unwrap()],
        allow_http: false,
        allow_unix: false,
        allow_skip_verify: false,
        audiences: vec!["vault".into()],
        ..Default::default()
    }
    .with_file_dirs(&[dir.path().to_path_buf()])
    .unwrap();
    let parse = |extra: &[(&str, &str)]| parse_mount(&attrs(extra, ONE), "", "420", &d);
    let fails = |extra: &[(&str, &str)], needle: &str| {
        let e = parse(extra).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.to_string().contains(needle), "{extra:?}: {e}");
    };

    // The default address and the allowed one pass; anything else fails.
    assert!(parse(&[]).is_ok());
    assert!(parse(&[("vaultAddress", "https://127.0.0.1:8200")]).is_ok());
    assert!(parse(&[("vaultAddress", "https://vault.example:8200")]).is_ok());
    fails(
        &[("vaultAddress", "https://attacker.example")],
        "-spc-allowed-vault-addrs",
    );
    fails(&[("vaultAddress", "http://vault.example:8200")], "-spc-allow-http");
    // Each address of a list is checked on its own.
    assert!(parse(&[("vaultAddress", "https://127.0.0.1:8200,https://vault.example:8200")]).is_ok());
    fails(
        &[("vaultAddress", "https://vault.example:8200,https://attacker.example")],
        "https://attacker.example:443 is not one of the Vault addresses",
    );
    fails(
        &[("vaultAddress", "https://vault.example:8200,http://vault.example:8200")],
        "-spc-allow-http",
    );
    fails(&[("vaultAddress", "unix:///run/vault.sock")], "-spc-allow-unix");
    fails(&[("vaultSkipTLSVerify", "true")], "-spc-allow-skip-tls-verify");
    assert!(parse(&[("vaultSkipTLSVerify", "false")]).is_ok());

    // Files: inside the allowed directory only.
    let inside = ca.display().to_string();
    assert!(parse(&[("vaultCACertPath", &inside)]).is_ok());
    fails(&[("vaultCACertPath", "/dev/zero")], "outside the directories");
    fails(&[("vaultCADirectory", "/etc")], "outside the directories");
    fails(
        &[
            ("vaultTLSClientCertPath", &inside),
            ("vaultTLSClientKeyPath", "/etc/shadow"),
        ],
        "outside the directories",
    );

    // The audience is pinned: none named means the operator's first.
    assert_eq!(parse(&[]).unwrap().audience.as_deref(), Some("vault"));
    fails(
        &[("audience", "https://kubernetes.default.svc")],
        "-spc-allowed-audiences",
    );

    // Without a policy, all of it is accepted as the incumbent accepts it.
    let open = |extra: &[(&str, &str)]| parse_mount(&attrs(extra, ONE), "", "420", &defaults());
    assert!(open(&[
        ("vaultAddress", "http://attacker.example"),
        ("vaultSkipTLSVerify", "true")
    ])
    .is_ok());
    assert_eq!(open(&[]).unwrap().audience, None);
}

// ------------------------------------------------------- OpenBao parameter names

/// Attributes with exactly `params` (no default roleName), plus the pod.
fn bare_attrs(params: &[(&str, &str)]) -> String {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    m.insert(keys::POD_NAME.into(), "web-0".into());
    m.insert(keys::POD_NAMESPACE.into(), "default".into());
    m.insert(keys::POD_UID.into(), "uid-1".into());
    m.insert(keys::SERVICE_ACCOUNT.into(), "app".into());
    m.insert("objects".into(), ONE.into());
    for (k, v) in params {
        m.insert((*k).into(), (*v).into());
    }
    serde_json::to_string(&m).unwrap()
}

fn bare(params: &[(&str, &str)]) -> Result<MountSpec> {
    parse_mount(&bare_attrs(params), "", "420", &defaults())
}

/// One aliased parameter: its names, a value for each (distinct), and what
/// the parsed spec says it resolved to.
struct Alias {
    names: &'static [&'static str],
    values: Vec<String>,
    read: fn(&MountSpec) -> Option<String>,
    /// Parameters the value needs next to it.
    with: &'static [(&'static str, &'static str)],
}

fn aliases(dir: &std::path::Path) -> Vec<Alias> {
    let files = |kind: &str| -> Vec<String> {
        (0..4)
            .map(|i| {
                let p = dir.join(format!("{kind}-{i}"));
                if kind == "dir" {
                    std::fs::create_dir_all(&p).unwrap();
                } else {
                    std::fs::write(&p, "x").unwrap();
                }
                p.display().to_string()
            })
            .collect()
    };
    let distinct = |f: fn(usize) -> String| (0..4).map(f).collect::<Vec<_>>();
    vec![
        Alias {
            names: names::ROLE,
            values: distinct(|i| format!("role-{i}")),
            read: |s| Some(s.role.clone()),
            with: &[],
        },
        Alias {
            names: names::ADDRESS,
            values: distinct(|i| format!("https://vault-{i}.example:8200")),
            read: |s| Some(s.vault.addresses.to_string()),
            with: &[],
        },
        Alias {
            names: names::NAMESPACE,
            values: distinct(|i| format!("team-{i}")),
            read: |s| s.vault.namespace.clone(),
            with: &[],
        },
        Alias {
            names: names::KUBERNETES_MOUNT_PATH,
            values: distinct(|i| format!("k8s-{i}")),
            read: |s| Some(s.auth_mount.clone()),
            with: &[],
        },
        Alias {
            names: names::AUTH_MOUNT_PATH,
            values: distinct(|i| format!("jwt-{i}")),
            read: |s| Some(s.auth_mount.clone()),
            with: &[],
        },
        Alias {
            names: names::CA_CERT_PATH,
            values: files("ca"),
            read: |s| s.vault.tls.ca_cert.as_ref().map(|p| p.display().to_string()),
            with: &[],
        },
        Alias {
            names: names::CA_DIRECTORY,
            values: files("dir"),
            read: |s| s.vault.tls.ca_directory.as_ref().map(|p| p.display().to_string()),
            with: &[],
        },
        Alias {
            names: names::TLS_SERVER_NAME,
            values: distinct(|i| format!("vault-{i}.internal")),
            read: |s| s.vault.tls.server_name.clone(),
            with: &[],
        },
        Alias {
            names: names::TLS_CLIENT_CERT_PATH,
            values: files("cert"),
            read: |s| s.vault.tls.client_cert.as_ref().map(|(c, _)| c.display().to_string()),
            with: &[("vaultTLSClientKeyPath", "/pair/key.pem")],
        },
        Alias {
            names: names::TLS_CLIENT_KEY_PATH,
            values: files("key"),
            read: |s| s.vault.tls.client_cert.as_ref().map(|(_, k)| k.display().to_string()),
            with: &[("vaultTLSClientCertPath", "/pair/cert.pem")],
        },
        Alias {
            names: names::SKIP_TLS_VERIFY,
            // Only the first differs, so precedence shows at every step.
            values: vec!["true".into(), "false".into(), "true".into(), "false".into()],
            read: |s| Some(s.vault.tls.skip_verify.to_string()),
            with: &[],
        },
    ]
}

#[test]
fn every_parameter_is_read_under_each_of_its_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for a in aliases(dir.path()) {
        for (i, name) in a.names.iter().enumerate() {
            let mut params: Vec<(&str, &str)> = a.with.to_vec();
            if a.names != names::ROLE {
                params.push(("roleName", "app"));
            }
            params.push((name, &a.values[i]));
            // The partner of a client cert/key half is written with the same prefix.
            let partner;
            if a.names == names::TLS_CLIENT_CERT_PATH || a.names == names::TLS_CLIENT_KEY_PATH {
                let other = if a.names == names::TLS_CLIENT_CERT_PATH {
                    names::TLS_CLIENT_KEY_PATH
                } else {
                    names::TLS_CLIENT_CERT_PATH
                };
                partner = names::like(name, a.names, other);
                params.push((partner, "/pair/other.pem"));
            }
            let spec = bare(&params).unwrap_or_else(|e| panic!("{name}: {e}"));
            let expected = if a.names == names::ADDRESS {
                Endpoint::parse(&a.values[i]).unwrap().to_string()
            } else {
                a.values[i].clone()
            };
            assert_eq!((a.read)(&spec).as_deref(), Some(expected.as_str()), "{name}");
            checked += 1;
        }
    }
    // 3 prefixes for 11 parameters, plus plain roleName.
    assert_eq!(checked, 34);
}

#[test]
fn bao_beats_openbao_beats_vault_for_every_parameter() {
    let dir = tempfile::tempdir().unwrap();
    for a in aliases(dir.path()) {
        // All names set, each to its own value; drop the winner, the next wins.
        for first in 0..a.names.len() {
            let mut params: Vec<(&str, &str)> = a.with.to_vec();
            if a.names != names::ROLE {
                params.push(("roleName", "app"));
            }
            for (i, name) in a.names.iter().enumerate().skip(first) {
                params.push((name, &a.values[i]));
            }
            let spec = bare(&params).unwrap_or_else(|e| panic!("{}: {e}", a.names[first]));
            let expected = if a.names == names::ADDRESS {
                Endpoint::parse(&a.values[first]).unwrap().to_string()
            } else {
                a.values[first].clone()
            };
            assert_eq!(
                (a.read)(&spec).as_deref(),
                Some(expected.as_str()),
                "{} should win over {:?}",
                a.names[first],
                &a.names[first + 1..]
            );
        }
    }
}

#[test]
fn a_name_present_but_empty_wins_over_the_names_after_it() {
    // The default, not vaultAddress.
    let spec = bare(&[
        ("roleName", "app"),
        ("baoAddress", ""),
        ("vaultAddress", "https://other.example:8200"),
    ])
    .unwrap();
    assert_eq!(spec.vault.addresses, defaults().vault.addresses);
    let spec = bare(&[
        ("roleName", "app"),
        ("openbaoNamespace", " "),
        ("vaultNamespace", "team"),
    ])
    .unwrap();
    assert_eq!(spec.vault.namespace, None);
    let spec = bare(&[
        ("roleName", "app"),
        ("baoKubernetesMountPath", ""),
        ("vaultKubernetesMountPath", "other"),
    ])
    .unwrap();
    assert_eq!(spec.auth_mount, "kubernetes");
    let spec = bare(&[
        ("roleName", "app"),
        ("baoSkipTLSVerify", ""),
        ("vaultSkipTLSVerify", "true"),
    ])
    .unwrap();
    assert!(!spec.vault.tls.skip_verify);
    // An empty role is missing, and the message says which name hid which.
    let e = bare(&[("baoRoleName", ""), ("roleName", "app")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("parameter baoRoleName is missing"), "{e}");
    assert!(e.contains("roleName is not read"), "{e}");
    let e = bare(&[]).unwrap_err().to_string();
    assert!(e.contains("parameter roleName is missing"), "{e}");
}

#[test]
fn the_mount_path_conflict_is_checked_after_the_names_are_resolved() {
    // Two spellings of one alias: the first wins, silently.
    let spec = bare(&[
        ("roleName", "app"),
        ("baoKubernetesMountPath", "bao"),
        ("vaultKubernetesMountPath", "vault"),
    ])
    .unwrap();
    assert_eq!(spec.auth_mount, "bao");
    // Both aliases: an error naming the parameters the class wrote.
    let e = bare(&[
        ("roleName", "app"),
        ("baoKubernetesMountPath", "bao"),
        ("vaultAuthMountPath", "jwt"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("parameters baoKubernetesMountPath and vaultAuthMountPath are both set"),
        "{e}"
    );
    let e = bare(&[("roleName", "app"), ("openbaoAuthMountPath", "a/../b")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("parameter openbaoAuthMountPath: the auth mount path"), "{e}");
}

#[test]
fn errors_name_the_parameter_the_class_wrote() {
    let fails = |params: &[(&str, &str)], needle: &str| {
        let mut all = vec![("roleName", "app")];
        all.extend_from_slice(params);
        let e = bare(&all).unwrap_err().to_string();
        assert!(e.contains(needle), "{params:?}: {e}");
    };
    fails(
        &[("baoSkipTLSVerify", "maybe")],
        "parameter baoSkipTLSVerify: \"maybe\" is not a boolean",
    );
    fails(&[("openbaoAddress", "ftp://x")], "parameter openbaoAddress: ");
    fails(&[("baoNamespace", "a\nb")], "parameter baoNamespace ");
    fails(
        &[("baoTLSClientCertPath", "/c.pem")],
        "baoTLSClientCertPath and baoTLSClientKeyPath must be set together",
    );
    fails(
        &[("openbaoTLSClientKeyPath", "/k.pem")],
        "openbaoTLSClientCertPath and openbaoTLSClientKeyPath must be set together",
    );
    fails(&[("baoCACertPath", "relative.pem")], "parameter baoCACertPath: ");
}

#[test]
fn the_operators_policy_applies_to_the_resolved_value_whatever_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "x").unwrap();
    let inside = ca.display().to_string();
    let mut d = defaults();
    d.policy = crate::policy::ClassPolicy {
        allow_http: false,
        allow_skip_verify: false,
        tls_server_names: vec!["vault.internal".into()],
        ..Default::default()
    }
    .with_file_dirs(&[dir.path().to_path_buf()])
    .unwrap();
    let parse = |params: &[(&str, &str)]| parse_mount(&bare_attrs(params), "", "420", &d);
    let fails = |params: &[(&str, &str)], needle: &str| {
        let e = parse(params).unwrap_err().to_string();
        assert!(e.contains(needle), "{params:?}: {e}");
    };
    fails(
        &[("roleName", "app"), ("baoAddress", "http://vault.example:8200")],
        "parameter baoAddress: http://vault.example:8200 is plain http",
    );
    fails(
        &[("roleName", "app"), ("openbaoSkipTLSVerify", "true")],
        "parameter openbaoSkipTLSVerify: this provider does not allow",
    );
    fails(
        &[("roleName", "app"), ("baoCADirectory", "/etc")],
        "parameter baoCADirectory: ",
    );
    fails(
        &[("roleName", "app"), ("openbaoTLSServerName", "vault.elsewhere")],
        "parameter openbaoTLSServerName: TLS server name \"vault.elsewhere\" is not one this provider allows (-spc-allowed-tls-server-names: vault.internal)",
    );
    assert!(parse(&[("roleName", "app"), ("vaultTLSServerName", "vault.internal")]).is_ok());
    // A refused value under a name that is not read does not matter: the
    // check is on what the class resolves to.
    assert!(parse(&[
        ("roleName", "app"),
        ("baoAddress", "https://vault.example:8200"),
        ("vaultAddress", "http://vault.example:8200"),
        ("baoCACertPath", &inside),
        ("vaultCACertPath", "/dev/zero"),
    ])
    .is_ok());
    // ... but a refused value that wins is refused.
    fails(
        &[
            ("roleName", "app"),
            ("baoAddress", "http://vault.example:8200"),
            ("vaultAddress", "https://vault.example:8200"),
        ],
        "parameter baoAddress",
    );
}

#[test]
fn the_default_audience_follows_the_sockets_flavour() {
    let tokens = r#"{"vault":{"token":"jwt-vault","expirationTimestamp":""},"openbao":{"token":"jwt-openbao","expirationTimestamp":""}}"#;
    let mut bao = defaults();
    bao.flavor = Flavor::OpenBao;
    let a = attrs(&[(keys::SA_TOKENS, tokens)], ONE);
    let spec = parse_mount(&a, "", "420", &defaults()).unwrap();
    assert_eq!(spec.provided_token.as_ref().unwrap().token, "jwt-vault");
    assert_eq!(spec.token_audience(), "vault");
    assert_eq!(spec.flavor, Flavor::Vault);
    let spec = parse_mount(&a, "", "420", &bao).unwrap();
    assert_eq!(spec.provided_token.as_ref().unwrap().token, "jwt-openbao");
    assert_eq!((spec.token_audience(), spec.flavor), ("openbao", Flavor::OpenBao));
    assert_eq!(
        spec.audience, None,
        "a self-requested token still gets the API server's default"
    );
    // A named audience is the same on both.
    let a = attrs(&[(keys::SA_TOKENS, tokens), ("audience", "vault")], ONE);
    assert_eq!(
        parse_mount(&a, "", "420", &bao).unwrap().provided_token.unwrap().token,
        "jwt-vault"
    );
    // Messages name the product of the socket.
    let e = parse_mount(&bare_attrs(&[]), "", "420", &bao).unwrap_err().to_string();
    assert!(e.contains("name the OpenBao role"), "{e}");
}

#[test]
fn a_vault_config_from_before_address_lists_still_reads() {
    // As ledger state files wrote it: one `endpoint`.
    let old = r#"{"endpoint":{"Tcp":{"tls":true,"host":"vault","port":8200,"prefix":""}},"namespace":null,"tls":{"ca_cert":null,"ca_directory":null,"server_name":null,"client_cert":null,"skip_verify":false}}"#;
    let cfg: VaultConfig = serde_json::from_str(old).unwrap();
    assert_eq!(cfg.addresses.to_string(), "https://vault:8200");
    let again: VaultConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(again, cfg);
}

#[test]
fn a_class_parsed_once_answers_like_a_fresh_parse() {
    let classes = ClassCache::default();
    let two = "- objectName: a\n  secretPath: secret/data/a\n  secretKey: k\n- objectName: b\n  secretPath: secret/data/b\n  filePermission: \"0400\"\n";
    for _ in 0..3 {
        for mode in ["420", "256"] {
            let fresh = parse_mount(&attrs(&[], two), "", mode, &defaults()).unwrap();
            let kept = parse_mount_cached(&attrs(&[], two), "", mode, &defaults(), &classes).unwrap();
            assert_eq!(format!("{:?}", fresh.objects), format!("{:?}", kept.objects));
        }
    }
    // Two modes of one document: two entries, each with its own default.
    let kept = classes.lock();
    let (ns, _) = &kept.by_namespace["default"];
    assert_eq!(ns.by_mode.len(), 2);
    assert!(ns.by_mode.values().all(|documents| documents.len() == 1));
    assert_eq!(ns.bytes, 2 * two.trim().len());
}

/// YAML bytes the cache holds for `namespace`.
fn kept_bytes(classes: &ClassCache, namespace: &str) -> usize {
    classes.lock().by_namespace.get(namespace).map_or(0, |(c, _)| c.bytes)
}

#[test]
fn a_class_that_failed_is_not_kept_and_fails_again() {
    let classes = ClassCache::default();
    let bad = "- objectName: ../a\n  secretPath: secret/data/a\n";
    for _ in 0..2 {
        let e = match parse_mount_cached(&attrs(&[], bad), "", "420", &defaults(), &classes) {
            Ok(_) => panic!("a path leaving the mount parsed"),
            Err(e) => e,
        };
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    }
    assert_eq!(kept_bytes(&classes, "default"), 0);
}

#[test]
fn what_the_class_cache_holds_is_bounded() {
    let classes = ClassCache::default();
    // A document over the per-document bound parses but is not kept.
    let padding = format!("# {}\n", "x".repeat(ClassCache::MAX_DOCUMENT));
    let long = format!("{padding}{ONE}");
    classes.objects("a", &long, 0o644).unwrap();
    assert_eq!(kept_bytes(&classes, "a"), 0);
    // Distinct documents fill a namespace's budget; the next one starts it
    // afresh, and another namespace's classes stay.
    classes.objects("b", ONE, 0o644).unwrap();
    let mut held = 0;
    for i in 0.. {
        let yaml = format!("# {i} {}\n{ONE}", "y".repeat(16 * 1024));
        classes.objects("a", &yaml, 0o644).unwrap();
        let bytes = kept_bytes(&classes, "a");
        assert!(bytes <= ClassCache::NAMESPACE_BUDGET, "{bytes} bytes kept");
        if bytes < held {
            assert_eq!(bytes, yaml.len(), "the budget starts afresh with the new document");
            break;
        }
        held = bytes;
    }
    assert!(
        held > ClassCache::NAMESPACE_BUDGET - 17 * 1024,
        "the budget was used before it was reset: {held}"
    );
    assert!(classes.holds("b", ONE), "a's churn never evicts b's classes");
    // Namespaces beyond the bound push out the one unused longest.
    for i in 0..ClassCache::NAMESPACES {
        classes.objects(&format!("n{i}"), ONE, 0o644).unwrap();
        classes.objects("b", ONE, 0o644).unwrap();
    }
    assert!(classes.holds("b", ONE), "b is in use");
    assert!(
        !classes.holds("a", ONE) && kept_bytes(&classes, "a") == 0,
        "a was unused longest"
    );
    assert!(classes.lock().by_namespace.len() <= ClassCache::NAMESPACES);
}
