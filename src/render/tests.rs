use super::*;
use crate::spc::{parse_objects, ObjectSet};
use crate::versions::Versions;

fn object(yaml: &str) -> ObjectSpec {
    parse_objects(yaml, 0o644).unwrap().objects.remove(0)
}

fn kv2() -> Json {
    serde_json::json!({
        "request_id": "r1",
        "lease_id": "",
        "data": {
            "data": {
                "s": "text", "n": 5, "o": {"a": [1, true], "x/y": {"~k": "deep"}},
                "b64": "aGk=", "hx": "6869", "bad": "secret value!"
            },
            "metadata": {"version": 3}
        }
    })
}

async fn render_set(yaml: &str, responses: &[(&str, Json)]) -> Result<Rendered> {
    let ObjectSet { objects, templates } = parse_objects(yaml, 0o644).unwrap();
    let mut by_read = HashMap::new();
    for o in &objects {
        let r = responses
            .iter()
            .find(|(path, _)| o.read.path == format!("/v1/{path}"))
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("no response for {}", o.read));
        by_read.insert(o.read.clone(), r);
    }
    let key = Versions::fixed(&[9u8; 32]).key().await.unwrap();
    render_all(&objects, &templates, &by_read, &key, &crate::budget::Unlimited)
}

fn text(r: &Rendered, path: &str) -> String {
    let f = r
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no file {path}"));
    String::from_utf8(f.contents.clone()).unwrap()
}

#[test]
fn kv2_values_are_unwrapped_and_typed_values_are_json() {
    let resp = kv2();
    let r = |y: &str| render(&object(y), &resp);
    assert_eq!(
        r("- {objectName: a, secretPath: s/data/x, secretKey: s}").unwrap(),
        b"text"
    );
    assert_eq!(
        r("- {objectName: a, secretPath: s/data/x, secretKey: n}").unwrap(),
        b"5"
    );
    assert_eq!(
        r("- {objectName: a, secretPath: s/data/x, secretKey: o}").unwrap(),
        br#"{"a":[1,true],"x/y":{"~k":"deep"}}"#
    );
    assert_eq!(
        r("- {objectName: a, secretPath: s/data/x, secretKey: b64, encoding: base64}").unwrap(),
        b"hi"
    );
    assert_eq!(
        r("- {objectName: a, secretPath: s/data/x, secretKey: hx, encoding: hex}").unwrap(),
        b"hi"
    );
    let e = r("- {objectName: a, secretPath: s/data/x, secretKey: bad, encoding: base64}").unwrap_err();
    assert!(e.to_string().contains("not valid base64"), "{e}");
    assert!(
        !e.to_string().contains("secret value"),
        "the value must not appear in the error"
    );
    let e = r("- {objectName: a, secretPath: s/data/x, secretKey: missing}").unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(
        e.to_string().contains("\"missing\" not found")
            && e.to_string().contains("available keys: b64, bad, hx, n, o, s"),
        "{e}"
    );
}

#[test]
fn kv1_values_and_whole_responses() {
    let resp = serde_json::json!({ "request_id": "r1", "lease_id": "", "data": { "k": "v" } });
    assert_eq!(
        render(&object("- {objectName: a, secretPath: kv/x, secretKey: k}"), &resp).unwrap(),
        b"v"
    );
    let whole = render(&object("- {objectName: a, secretPath: kv/x}"), &resp).unwrap();
    assert_eq!(whole, br#"{"data":{"k":"v"},"lease_id":""}"#, "request_id is dropped");
}

#[test]
fn json_pointers_reach_nested_values_and_name_what_is_missing() {
    let resp = kv2();
    let r = |p: &str| {
        render(
            &object(&format!(
                "- {{objectName: a, secretPath: s/data/x, secretKeyPointer: '{p}'}}"
            )),
            &resp,
        )
    };
    assert_eq!(r("/o/a/0").unwrap(), b"1");
    assert_eq!(r("/o/a").unwrap(), b"[1,true]");
    assert_eq!(r("/o/x~1y/~0k").unwrap(), b"deep");
    assert_eq!(r("/s").unwrap(), b"text");
    let e = r("/o/nope").unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let m = e.to_string();
    assert!(
        m.contains("object \"a\"")
            && m.contains("secretKeyPointer \"/o/nope\"")
            && m.contains("\"/o\" has no key \"nope\""),
        "{m}"
    );
    let m = r("/o/a/7").unwrap_err().to_string();
    assert!(m.contains("array of 2 items"), "{m}");
    let m = r("/o/a/01").unwrap_err().to_string();
    assert!(m.contains("not an index"), "{m}");
    let m = r("/s/deeper").unwrap_err().to_string();
    assert!(m.contains("\"/s\" is a string") && !m.contains("text"), "{m}");
}

#[test]
fn data_only_formats() {
    let resp = serde_json::json!({"data": {"data": {"b": "two words", "a": 1, "n": {"x": [true]}}, "metadata": {"version": 1}}});
    let r = |f: &str| {
        render(
            &object(&format!("- {{objectName: a, secretPath: s/data/x, format: {f}}}")),
            &resp,
        )
    };
    assert_eq!(
        String::from_utf8(r("json").unwrap()).unwrap(),
        "{\n  \"a\": 1,\n  \"b\": \"two words\",\n  \"n\": {\n    \"x\": [\n      true\n    ]\n  }\n}\n"
    );
    assert_eq!(
        String::from_utf8(r("yaml").unwrap()).unwrap(),
        "a: 1\nb: two words\n\"n\":\n  x:\n  - true\n",
        "`n` is a YAML 1.1 boolean: quoted"
    );
    assert_eq!(
        String::from_utf8(r("dotenv").unwrap()).unwrap(),
        "a=1\nb='two words'\nn='{\"x\":[true]}'\n"
    );
    // format on a selected sub-map
    let sub = render(
        &object("- {objectName: a, secretPath: s/data/x, secretKeyPointer: /n, format: yaml}"),
        &resp,
    )
    .unwrap();
    assert_eq!(sub, b"x:\n- true\n");
}

#[test]
fn yaml_quotes_what_some_reader_would_read_as_another_type() {
    let o = object("- {objectName: a, secretPath: kv/x, format: yaml}");
    let long_key = "k".repeat(1001);
    let resp = serde_json::json!({"data": {
        "plain": "two words", "url": "https://h:8443/p", "no": "off", "oct": "0755", "time": "12:30",
        "merge": "<<", "null": "~", "empty": "", "lead": " x", "nul": "a\u{0}b", "nel": "\u{85}",
        "pem": "-----BEGIN-----\nAA\n-----END-----\n", "strip": "a\nb", "keep": "a\n\n",
        "crlf": "a\r\nb", "indented": " a\nb", "num": 1e300, "int": 5432, "t": true,
        "list": ["y", [], {}], long_key.as_str(): "v",
    }});
    let text = String::from_utf8(render(&o, &resp).unwrap()).unwrap();
    assert_eq!(
        text,
        concat!(
            "crlf: \"a\\r\\nb\"\n",
            "empty: \"\"\n",
            "indented: \" a\\nb\"\n",
            "int: 5432\n",
            "keep: |+\n  a\n\n",
            "? ",
        )
        .to_string()
            + &long_key
            + concat!(
                "\n: v\n",
                "lead: \" x\"\n",
                "list:\n- \"y\"\n- []\n- {}\n",
                "merge: \"<<\"\n",
                "nel: \"\\u0085\"\n",
                "\"no\": \"off\"\n",
                "nul: \"a\\0b\"\n",
                "\"null\": \"~\"\n",
                "num: 1.0e+300\n",
                "oct: \"0755\"\n",
                "pem: |\n  -----BEGIN-----\n  AA\n  -----END-----\n",
                "plain: two words\n",
                "strip: |-\n  a\n  b\n",
                "t: true\n",
                "time: \"12:30\"\n",
                "url: https://h:8443/p\n",
            )
    );
    // A selected string is a document of its own.
    let o = object("- {objectName: a, secretPath: kv/x, secretKey: v, format: yaml}");
    let one = |v: &str| String::from_utf8(render(&o, &serde_json::json!({"data": {"v": v}})).unwrap()).unwrap();
    assert_eq!(one("no"), "\"no\"\n");
    assert_eq!(one("app"), "app\n");
    assert_eq!(one("a\nb\n"), "|\n  a\n  b\n");
}

#[test]
fn dotenv_quotes_safely_and_refuses_bad_names() {
    let o = object("- {objectName: a, secretPath: kv/x, format: dotenv}");
    let resp = serde_json::json!({"data": {
        "PLAIN": "p@ss$word \"q\"",
        "QUOTE": "it's",
        "MULTI": "line1\nline2",
        "BACK": "a\\b$c`d",
        "BARE": "v1.2:x@y/z=%+,-",
        "EMPTY": "",
        "PORT": 5432,
        "TWO": "a\\\\b",
        "WIN": "C:\\dir\\",
        "BOTH": "it's $HOME",
    }});
    // As they are, single-quoted (line breaks raw), else double-quoted with
    // trailing backslashes after the closing quote.
    assert_eq!(
        String::from_utf8(render(&o, &resp).unwrap()).unwrap(),
        concat!(
            "BACK='a\\b$c`d'\n",
            "BARE=v1.2:x@y/z=%+,-\n",
            "BOTH=\"it's \\$HOME\"\n",
            "EMPTY=\n",
            "MULTI='line1\nline2'\n",
            "PLAIN='p@ss$word \"q\"'\n",
            "PORT=5432\n",
            "QUOTE=\"it's\"\n",
            "TWO=\"a\\\\\\\\b\"\n",
            "WIN=\"C:\\\\dir\"\\\\\n",
        )
    );
    let e = render(
        &o,
        &serde_json::json!({"data": {"OK": "x", "9LIVES": "y", "with-dash": "z"}}),
    )
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.to_string().contains("\"9LIVES\", \"with-dash\"") && !e.to_string().contains("\"OK\""),
        "{e}"
    );
    let e = render(&o, &serde_json::json!({"data": {"K": "a\u{0}b"}})).unwrap_err();
    assert!(e.to_string().contains("NUL"), "{e}");
    let e = render(
        &object("- {objectName: a, secretPath: kv/x, secretKey: K, format: dotenv}"),
        &serde_json::json!({"data": {"K": "v"}}),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("needs a map of keys") && e.to_string().contains("a string"),
        "{e}"
    );
}

#[tokio::test]
async fn expand_keys_writes_one_versioned_file_per_key() {
    let yaml = "- {objectName: app, secretPath: secret/data/app, expandKeys: true}\n- {objectName: other, secretPath: secret/data/app, secretKey: a}\n";
    let resp = serde_json::json!({"data": {"data": {"a": "1", "b": {"x": 1}, "c": 3}, "metadata": {}}});
    let r = render_set(yaml, &[("secret/data/app", resp.clone())]).await.unwrap();
    let paths: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["app/a", "app/b", "app/c", "other"]);
    assert_eq!(text(&r, "app/b"), r#"{"x":1}"#);
    let ids: Vec<&str> = r.versions.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, paths);
    assert_ne!(
        r.versions[0].1, r.versions[3].1,
        "same content, different file → different version"
    );

    for (bad, why) in [("a/b", "contains \"/\""), ("..", "is \"..\""), ("", "is empty")] {
        let resp = serde_json::json!({"data": {"data": {"fine": "1", bad: "x"}, "metadata": {}}});
        let e = render_set(yaml, &[("secret/data/app", resp)]).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let m = e.to_string();
        assert!(
            m.contains("object \"app\"") && m.contains(&format!("key {bad:?}")) && m.contains(why),
            "{m}"
        );
    }
    // An expanded key colliding with another object's file.
    let yaml = "- {objectName: app, secretPath: secret/data/app, expandKeys: true}\n- {objectName: app/a, secretPath: secret/data/app, secretKey: a}\n";
    let e = render_set(yaml, &[("secret/data/app", resp)]).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("\"app/a\" would be written by more than one object"),
        "{e}"
    );
}

#[tokio::test]
async fn templates_combine_objects_from_their_responses() {
    let yaml = r#"
- objectName: db-creds
  secretPath: database/creds/app
  writeFile: false
- objectName: db-host
  secretPath: secret/data/db
  secretKey: host
- objectName: .pgpass
  filePermission: 0600
  template: |
    {{ objects["db-host"].data.host }}:{{ objects["db-host"].data.port }}:*:{{ objects["db-creds"].data.username }}:{{ objects["db-creds"].data.password | pgpass_escape }}
- objectName: url
  secretPath: secret/data/db
  template: "postgresql://{{ objects['db-creds'].data.username | urlencode }}:{{ objects['db-creds'].data.password | urlencode }}@{{ data.host }}:{{ data.port }}/app?v={{ response.data.metadata.version }}"
"#;
    let creds = serde_json::json!({"request_id": "x", "lease_id": "database/creds/app/abc", "data": {"username": "v-user", "password": "a:b/c@d\\e"}});
    let db = serde_json::json!({"data": {"data": {"host": "db.example", "port": 5432}, "metadata": {"version": 4}}});
    let r = render_set(
        yaml,
        &[("database/creds/app", creds.clone()), ("secret/data/db", db.clone())],
    )
    .await
    .unwrap();
    let paths: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["db-host", "url", ".pgpass"], "writeFile: false writes nothing");
    assert_eq!(text(&r, ".pgpass"), "db.example:5432:*:v-user:a\\:b/c@d\\\\e\n");
    assert_eq!(r.files[2].mode, 0o600);
    assert_eq!(
        text(&r, "url"),
        "postgresql://v-user:a%3Ab%2Fc%40d%5Ce@db.example:5432/app?v=4"
    );
    // Pure: the same responses give the same versions.
    let again = render_set(yaml, &[("database/creds/app", creds), ("secret/data/db", db)])
        .await
        .unwrap();
    assert_eq!(again.versions, r.versions);
}

#[tokio::test]
async fn template_helpers() {
    let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN EC PRIVATE KEY-----\nKKK\n-----END EC PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
    let resp = serde_json::json!({"data": {"bundle": pem, "chain": ["-----BEGIN CERTIFICATE-----\nC1\n-----END CERTIFICATE-----", "-----BEGIN CERTIFICATE-----\nC2\n-----END CERTIFICATE-----"], "j": "{\"a\": [1, 2]}", "b": "aGVsbG8="}});
    let t = |tpl: &str| {
        let yaml = format!(
            "- objectName: f\n  secretPath: kv/x\n  template: {}\n",
            serde_json::to_string(tpl).unwrap()
        );
        let resp = resp.clone();
        async move { render_set(&yaml, &[("kv/x", resp)]).await.map(|r| text(&r, "f")) }
    };
    assert_eq!(
        t("{{ data.bundle | pem_certs | first }}").await.unwrap(),
        "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"
    );
    assert_eq!(t("{{ data.bundle | pem_certs | length }}").await.unwrap(), "2");
    assert_eq!(
        t("{{ data.bundle | pem_private_key }}").await.unwrap(),
        "-----BEGIN EC PRIVATE KEY-----\nKKK\n-----END EC PRIVATE KEY-----\n"
    );
    assert_eq!(
        t("{{ data.chain | pem_certs | join('') }}")
            .await
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    assert_eq!(
        t("{{ (data.bundle | pem_blocks('EC PRIVATE KEY'))[0] | length }}")
            .await
            .unwrap(),
        "64"
    );
    assert_eq!(
        t("{{ data.b | b64decode }}|{{ 'hello' | b64encode }}").await.unwrap(),
        "hello|aGVsbG8="
    );
    assert_eq!(
        t("{{ (data.j | fromjson).a[1] }} {{ data.j | fromjson | tojson }}")
            .await
            .unwrap(),
        "2 {\"a\": [1, 2]}"
    );
    assert_eq!(t("x\n").await.unwrap(), "x\n", "trailing newline kept");
    assert_eq!(
        t("{{ '<&>' }}").await.unwrap(),
        "<&>",
        "no HTML escaping, even for .html names"
    );
}

#[tokio::test]
async fn template_errors_name_object_and_line_and_never_a_value() {
    let resp = serde_json::json!({"data": {"pw": "hunter2", "n": 9223372036854775807i64}});
    let t = |tpl: &'static str| {
        let yaml = format!(
            "- objectName: f\n  secretPath: kv/x\n  template: {}\n",
            serde_json::to_string(tpl).unwrap()
        );
        let resp = resp.clone();
        async move { render_set(&yaml, &[("kv/x", resp)]).await.unwrap_err() }
    };
    let e = t("ok\n{{ data.nope }}").await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.to_string()
            .contains("object \"f\": template: line 2: undefined value"),
        "{e}"
    );
    let e = t("{{ data.pw | b64decode }}").await;
    assert!(
        e.to_string().contains("b64decode: not valid base64") && !e.to_string().contains("hunter2"),
        "{e}"
    );
    let e = t("{{ data.n * data.n * data.n * data.n * data.n }}").await;
    assert!(e.to_string().contains("invalid operation"), "{e}");
    assert!(!e.to_string().contains("9223372036854775807"), "{e}");
    let e = t("{{ data.pw | pem_private_key }}").await;
    assert!(
        e.to_string().contains("no PRIVATE KEY block") && !e.to_string().contains("hunter2"),
        "{e}"
    );
}

#[tokio::test]
async fn templates_cannot_read_files_or_run_away() {
    let resp = serde_json::json!({"data": {"k": "v"}});
    let t = |tpl: &'static str| {
        let yaml = format!(
            "- objectName: f\n  secretPath: kv/x\n  template: {}\n",
            serde_json::to_string(tpl).unwrap()
        );
        let resp = resp.clone();
        async move {
            let started = std::time::Instant::now();
            let r = match parse_objects(&yaml, 0o644) {
                Err(e) => Err(e),
                Ok(_) => render_set(&yaml, &[("kv/x", resp)]).await.map(|_| ()),
            };
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "{tpl} took {:?}",
                started.elapsed()
            );
            r.unwrap_err().to_string()
        }
    };
    for tpl in [
        "{% include '/etc/passwd' %}",
        "{% import '/etc/passwd' as x %}",
        "{% extends '/etc/passwd' %}",
    ] {
        let m = t(tpl).await;
        assert!(!m.contains("root:"), "{m}");
        assert!(m.contains("object \"f\"") && m.contains("template"), "{tpl}: {m}");
    }
    let m = t("{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}").await;
    assert!(m.contains("did more work than a template may"), "{m}");
    let m = t("{% for x in [[1]] recursive %}{{ loop([[x]]) }}{% endfor %}").await;
    assert!(m.contains("object \"f\": template"), "{m}");
    let m = t("{{ 'x' * 100000000 }}").await;
    assert!(m.contains("did more work") || m.contains("larger than"), "{m}");
    // Odd but valid templates do not trip the reference scanner.
    for tpl in ["{% raw %}{%}{{}}{% endraw %}", "{{ '{%}' }}", "{#{%}#}"] {
        assert!(
            parse_objects(
                &format!(
                    "- objectName: f\n  secretPath: kv/x\n  template: {}\n",
                    serde_json::to_string(tpl).unwrap()
                ),
                0o644
            )
            .is_ok(),
            "{tpl}"
        );
    }
    let m = t("{{ env }}{{ range }}").await;
    assert!(m.contains("undefined value"), "no env global: {m}");
}

#[tokio::test]
async fn template_output_is_capped() {
    let resp = serde_json::json!({"data": {"k": "v"}});
    let yaml =
        "- objectName: f\n  secretPath: kv/x\n  template: \"{% for i in range(3000) %}{{ 'y' * 1000 }}{% endfor %}\"\n";
    let e = render_set(yaml, &[("kv/x", resp)]).await.unwrap_err();
    assert!(
        e.to_string().contains("larger than") || e.to_string().contains("did more work"),
        "{e}"
    );
}

#[tokio::test]
async fn one_fuel_budget_covers_every_template_of_a_mount() {
    let resp = serde_json::json!({"data": {"k": "v"}});
    // Each template alone is well within a render's fuel; thirty of them
    // are not within a mount's.
    let busy = "{% for i in range(20000) %}{{ objects.k.data.k }}{% endfor %}";
    let mut yaml = String::from("- {objectName: k, secretPath: kv/x, secretKey: k}\n");
    let one = format!(
        "{yaml}- objectName: t0\n  template: {}\n",
        serde_json::to_string(busy).unwrap()
    );
    render_set(&one, &[("kv/x", resp.clone())])
        .await
        .expect("one busy template renders");
    for i in 0..30 {
        yaml.push_str(&format!(
            "- objectName: t{i}\n  template: {}\n",
            serde_json::to_string(busy).unwrap()
        ));
    }
    let started = std::time::Instant::now();
    let e = render_set(&yaml, &[("kv/x", resp)]).await.unwrap_err();
    assert!(
        e.to_string().contains("together did more work than one mount's may"),
        "{e}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_class_lists_at_most_as_many_objects_as_a_mount_writes_files() {
    assert_eq!(crate::spc::MAX_OBJECTS, MAX_FILES);
}
