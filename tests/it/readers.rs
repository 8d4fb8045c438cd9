//! Real readers read `format: yaml` and `format: dotenv` files back (issue
//! 12): PyYAML (YAML 1.1) and ruamel.yaml (YAML 1.2) for YAML; `sh` (dash),
//! bash and python-dotenv for dotenv. Each reader runs as a subprocess on the
//! rendered bytes; the strings are a corpus of values that look like
//! something else to some reader.
//!
//! Needs the test bed's Python (`VCP_PYTHON`, from `scripts/testbed.sh env`
//! after `scripts/testbed.sh install`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value as Json};
use vault_csi_provider::render::render;
use vault_csi_provider::spc::parse_objects;

fn python() -> PathBuf {
    match std::env::var_os("VCP_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "VCP_PYTHON is not set: run scripts/testbed.sh install, then eval \"$(scripts/testbed.sh env)\" (scripts/test.sh does both)"
        ),
    }
}

/// Runs a Python script with `args` in an empty environment and returns its
/// stdout parsed as JSON.
fn run_python(script: &str, args: &[&Path]) -> Json {
    let py = python();
    let out = Command::new(&py)
        .arg("-c")
        .arg(script)
        .args(args)
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("running {} (run scripts/testbed.sh install): {e}", py.display()));
    assert!(
        out.status.success(),
        "{} failed ({}); if a module is missing, run scripts/testbed.sh install:\n{}",
        py.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

fn title(w: &str) -> String {
    let mut c = w.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// Strings that some YAML 1.1 or 1.2 reader, shell or dotenv reader could
/// read as something else, and some that no reader should. No duplicates.
fn look_alikes() -> Vec<String> {
    let mut c: Vec<String> = Vec::new();
    // Booleans of YAML 1.1 (and Psych, which ignores case) and 1.2.
    for w in ["y", "yes", "n", "no", "true", "false", "on", "off"] {
        c.extend([w.to_string(), w.to_uppercase(), title(w)]);
    }
    let fixed: &[&str] = &[
        "yEs",
        "tRUE",
        "oN",
        "nO",
        // null
        "~",
        "null",
        "Null",
        "NULL",
        "nULL",
        "",
        // integers: decimal, octal (1.1 and 1.2), hex, binary, underscores, sexagesimal
        "0",
        "-0",
        "+1",
        "-1",
        "5432",
        "0755",
        "0o755",
        "0O755",
        "-0755",
        "0x1F",
        "0X1f",
        "0b101",
        "-0b101",
        "1_000",
        "0_1",
        "190:20:30",
        "12:30",
        "-12:30",
        "1:2:3",
        "12:30:00",
        "18446744073709551616",
        // floats
        "1e3",
        "1E3",
        "1e+3",
        "1.0",
        "1.",
        ".5",
        "-.5",
        "+.5",
        "1.5e+3",
        "1.5e-3",
        "6.8523015e+5",
        "685.230_15e+03",
        "190:20:30.15",
        "1_0.5",
        ".inf",
        ".Inf",
        ".INF",
        "-.inf",
        "+.inf",
        "-.Inf",
        ".nan",
        ".NaN",
        ".NAN",
        "inf",
        "nan",
        "NaN",
        "Infinity",
        "-Infinity",
        "1.0e+300",
        // timestamps
        "2001-12-14",
        "2001-12-14t21:59:43.10-05:00",
        "2001-12-14T21:59:43.10-05:00",
        "2001-12-14 21:59:43.10 -5",
        "2001-12-15T02:59:43.1Z",
        "2002-1-1",
        // YAML indicators, document markers, merge and value keys
        "=",
        "<<",
        "---",
        "...",
        "--- x",
        "... x",
        "-",
        "- ",
        "- x",
        "-x",
        "?",
        "? x",
        "?x",
        ":",
        ": x",
        ":x",
        "x:",
        "x: y",
        "a:b",
        "https://example.com:8443/a?b=c&d=e#f",
        "#",
        "# x",
        "x #y",
        "x#y",
        "*",
        "*x",
        "&",
        "&x",
        "!",
        "!x",
        "!!str",
        "!!int 1",
        "%",
        "%YAML 1.1",
        "%x",
        "@",
        "@x",
        "`",
        "`x`",
        "|",
        "|-",
        "|x",
        ">",
        ">-",
        ">x",
        "'",
        "'x'",
        "''",
        "\"",
        "\"x\"",
        "{",
        "}",
        "{}",
        "{a: 1}",
        "[",
        "]",
        "[]",
        "[1, 2]",
        ",",
        "x,y",
        "x, y",
        ",x",
        // white space and line breaks
        " ",
        "  ",
        " x",
        "x ",
        " x ",
        "x  y",
        "\t",
        "\tx",
        "x\t",
        "x\ty",
        "\n",
        "\n\n",
        "x\n",
        "x\n\n",
        "\nx",
        "x\ny",
        "x\n\ny",
        "x\r\ny\r\n",
        "\r",
        "x\ry",
        "x\n y",
        " x\ny",
        "x \ny",
        "x\n ",
        "x\n\t",
        "x\n#y",
        "x\n---\ny",
        "x\n...\n",
        "x\n- y\n",
        "x\n\n\n",
        "x\n  \ny",
        "x\ny  ",
        "x\n  y\n   z",
        // non-ASCII: accents, emoji, right-to-left, invisible and line-breaking characters
        "é",
        "café",
        "naïve façade",
        "😀",
        "x😀y",
        "שלום",
        "مرحبا",
        "\u{200F}x",
        "x\u{202E}y",
        "\u{200B}",
        "\u{85}",
        "x\u{85}y",
        "\u{2028}",
        "x\u{2029}y",
        "\u{FEFF}x",
        "\u{A0}",
        "x\u{A0}",
        "\u{FFFE}",
        "\u{FFFF}",
        "\u{10FFFF}",
        "\u{E000}",
        "é\nü\n",
        // control characters, NUL included (dotenv refuses NUL)
        "\0",
        "x\0y",
        "\u{1}",
        "\u{7}",
        "\u{8}",
        "\u{B}",
        "\u{C}",
        "\u{1B}[0m",
        "\u{7F}",
        "\u{80}",
        "\u{9F}",
        // quotes, backslashes, and what shells expand
        "it's",
        "say \"hi\"",
        "it's \"both\"",
        "a\\b",
        "a\\\\b",
        "a\\",
        "\\",
        "\\\\",
        "a\\\\",
        "a\\nb",
        "\\'",
        "\\\"",
        "'\"'",
        "$HOME",
        "${X}",
        "${X:-d}",
        "a${X}b",
        "$(touch pwned)",
        "`touch pwned`",
        "a$",
        "$",
        "$$",
        "p'w$\"d",
        "it's $HOME",
        "it's `id`",
        "a\\$b",
        "a\\\\$b",
        "x\\\ny",
        "$'x'",
        "~",
        "~/x",
        "x=y",
        "a b",
        "!x!",
        "a;b",
        "a&&b",
        "a|b",
        "a>b",
        "(x)",
        "*.txt",
        "\\\\$",
        "'$\\",
        "it's\nmulti $line\n",
        "a\\\r\n$b",
        // plain strings no reader should change
        "app",
        "two words",
        "v1.2.3",
        "user@example.com",
        "a-b_c.d/e",
        "Yes please",
        "nope",
        "x",
        "A",
        "postgres://u:p@h:5432/db",
        "export",
        // a PEM key
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5o\n-----END EC PRIVATE KEY-----\n",
    ];
    c.extend(fixed.iter().map(|s| s.to_string()));
    c.push("x".repeat(5000));
    c.push("k".repeat(1500) + "\n" + &"v".repeat(10));
    let mut seen = BTreeSet::new();
    c.retain(|s| seen.insert(s.clone()));
    c
}

fn object(yaml: &str) -> vault_csi_provider::spc::ObjectSpec {
    parse_objects(yaml, 0o644).expect("objects parse").objects.remove(0)
}

/// The file `format` makes of `data` (as a KV v2 secret's data).
fn rendered(format: &str, data: &Json) -> Vec<u8> {
    let o = object(&format!(
        "- {{objectName: f, secretPath: secret/data/x, format: {format}}}"
    ));
    render(&o, &json!({"data": {"data": data, "metadata": {}}})).expect("renders")
}

// ---------------------------------------------------------------- YAML

/// Loads each file with PyYAML (`yaml.safe_load`, YAML 1.1) and ruamel.yaml
/// (safe, pure Python, YAML 1.2). Values come back typed, so that a reader
/// turning the key "1" into the integer 1 cannot pass.
const YAML_READERS: &str = r#"
import json, sys
import yaml
import ruamel.yaml
from ruamel.yaml import YAML

def typed(x):
    if isinstance(x, bool): return {"bool": x}
    if isinstance(x, int): return {"int": str(x)}
    if isinstance(x, float): return {"float": repr(x)}
    if x is None: return {"null": None}
    if isinstance(x, str): return {"str": x}
    if isinstance(x, list): return {"seq": [typed(i) for i in x]}
    if isinstance(x, dict): return {"map": [[typed(k), typed(v)] for k, v in x.items()]}
    return {"other": type(x).__name__ + " " + repr(x)}

r12 = YAML(typ="safe", pure=True)
assert r12.version is None or tuple(r12.version) >= (1, 2)
out = {"versions": {"pyyaml": yaml.__version__, "ruamel": ruamel.yaml.__version__}}
for name, load in (("pyyaml", yaml.safe_load), ("ruamel", r12.load)):
    results = []
    for path in sys.argv[1:]:
        with open(path, "rb") as f:
            data = f.read()
        try:
            results.append({"ok": typed(load(data))})
        except Exception as e:
            results.append({"error": type(e).__name__ + ": " + str(e)[:300]})
    out[name] = results
print(json.dumps(out))
"#;

/// The typed form of a JSON value, as the reader script prints it.
fn typed(v: &Json) -> Json {
    match v {
        Json::Bool(b) => json!({"bool": b}),
        Json::Number(n) if n.is_f64() => {
            let f = n.as_f64().expect("f64");
            json!({"float": f})
        }
        Json::Number(n) => json!({"int": n.to_string()}),
        Json::Null => json!({"null": null}),
        Json::String(s) => json!({"str": s}),
        Json::Array(a) => json!({"seq": a.iter().map(typed).collect::<Vec<_>>()}),
        Json::Object(m) => {
            json!({"map": m.iter().map(|(k, v)| json!([{"str": k}, typed(v)])).collect::<Vec<_>>()})
        }
    }
}

/// Python's float repr parsed, so floats compare by value.
fn normalize_floats(v: &mut Json) {
    match v {
        Json::Object(m) => {
            if let Some(Json::String(r)) = m.get("float") {
                let f: f64 = r.parse().unwrap_or_else(|_| panic!("float repr {r:?}"));
                m.insert("float".into(), json!(f));
            }
            m.values_mut().for_each(normalize_floats);
        }
        Json::Array(a) => a.iter_mut().for_each(normalize_floats),
        _ => {}
    }
}

/// Reads every file with both YAML readers; one typed value per file and reader.
fn read_yaml(files: &[Vec<u8>]) -> BTreeMap<String, Vec<Json>> {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let p = dir.path().join(format!("{i}.yaml"));
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let mut out = run_python(YAML_READERS, &refs);
    eprintln!("YAML readers: {}", out["versions"]);
    let mut by_reader = BTreeMap::new();
    for reader in ["pyyaml", "ruamel"] {
        let mut results: Vec<Json> = serde_json::from_value(out[reader].take()).unwrap();
        results.iter_mut().for_each(normalize_floats);
        assert_eq!(results.len(), files.len());
        by_reader.insert(reader.to_string(), results);
    }
    by_reader
}

/// Asserts both readers read each file as `want`, naming the differences.
fn assert_yaml_reads(files: &[Vec<u8>], want: &[Json]) {
    let read = read_yaml(files);
    let mut problems = Vec::new();
    for (reader, results) in &read {
        for (i, got) in results.iter().enumerate() {
            let expected = json!({"ok": typed(&want[i])});
            if *got != expected {
                problems.push(format!(
                    "{reader} reads file #{i} differently:\n  file: {:?}\n  got:  {}\n  want: {}",
                    String::from_utf8_lossy(&files[i]).chars().take(600).collect::<String>(),
                    diff_hint(got, &expected),
                    expected.to_string().chars().take(300).collect::<String>()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// For maps of strings: the entries that differ; else the whole value.
fn diff_hint(got: &Json, want: &Json) -> String {
    let (Some(g), Some(w)) = (got["ok"]["map"].as_array(), want["ok"]["map"].as_array()) else {
        return got.to_string().chars().take(300).collect();
    };
    let w: BTreeSet<String> = w.iter().map(Json::to_string).collect();
    let extra: Vec<String> = g
        .iter()
        .map(Json::to_string)
        .filter(|e| !w.contains(e))
        .take(40)
        .collect();
    format!(
        "{} of {} entries differ, e.g. {}",
        extra.len(),
        g.len(),
        extra.join(", ")
    )
}

#[test]
fn yaml_strings_read_back_exactly_with_yaml_1_1_and_1_2_readers() {
    let corpus = look_alikes();
    let n = corpus.len();
    // Every string as a key, with another string as its value.
    let pairs: serde_json::Map<String, Json> = corpus
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), json!(corpus[n - 1 - i])))
        .collect();
    let pairs = Json::Object(pairs);
    // Strings in lists, nested maps, lists of maps and lists of lists.
    let firsts: Vec<&String> = corpus.iter().take(40).collect();
    let mut nested = json!({
        "list": corpus,
        "nested": {"inner": pairs.clone(), "<<": {"no": "yes"}},
        "maps": corpus.iter().map(|s| {
            let mut m = json!({"z": [s], "~": {"a": s}});
            m[s.as_str()] = json!({"v": s});
            m
        }).collect::<Vec<_>>(),
        "lists": firsts.iter().map(|s| json!([s, [s], {"k": s}])).collect::<Vec<_>>(),
    });
    // A key too long for an implicit key, with a map and a list under it.
    nested["k".repeat(1200)] = json!({"long key": ["x".repeat(1100)], "l": "a\nb"});
    nested["y".repeat(1200)] = json!(["x", "y\n"]);
    let mut files = vec![rendered("yaml", &pairs), rendered("yaml", &nested)];
    let mut want = vec![pairs.clone(), nested.clone()];
    // Every string as a whole document (`secretKey` selecting it).
    let o = object("- {objectName: f, secretPath: secret/data/x, secretKey: v, format: yaml}");
    for s in &corpus {
        files.push(render(&o, &json!({"data": {"data": {"v": s}, "metadata": {}}})).unwrap());
        want.push(json!(s));
    }
    assert_yaml_reads(&files, &want);

    // Readable: ordinary strings stay plain, PEM keys become literal blocks.
    let text = String::from_utf8(rendered(
        "yaml",
        &json!({"user": "app", "host": "db.example", "url": "postgres://u@h:5432/db", "yes": "no",
                 "key": "-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n", "port": "5432"}),
    ))
    .unwrap();
    assert_eq!(
        text,
        "host: db.example\nkey: |\n  -----BEGIN KEY-----\n  AAAA\n  -----END KEY-----\nport: \"5432\"\nurl: postgres://u@h:5432/db\nuser: app\n\"yes\": \"no\"\n"
    );
}

#[test]
fn yaml_non_strings_keep_their_yaml_types() {
    let data = json!({
        "int": 5432, "neg": -7, "zero": 0, "big": u64::MAX, "small": i64::MIN,
        "float": 1.5, "tiny": 1e-7, "huge": 1e300, "negzero": -0.0, "third": 0.1, "whole": 3.0,
        "t": true, "f": false, "nil": null, "empty_map": {}, "empty_list": [],
        "nested": {"a": [1, "1", {"b": null, "c": [[], {}]}], "d": [[1, 2], [true]]},
        "string_int": "5432", "string_true": "true",
    });
    let file = rendered("yaml", &data);
    let text = String::from_utf8(file.clone()).unwrap();
    assert!(
        text.contains("huge: 1.0e+300\n") && text.contains("tiny: 1.0e-7\n") && text.contains("int: 5432\n"),
        "{text}"
    );
    assert_yaml_reads(&[file], &[data]);
}

// ---------------------------------------------------------------- dotenv

/// python-dotenv's two readings of a file: without and with interpolation.
const DOTENV_READER: &str = r#"
import json, sys
from dotenv import dotenv_values
print(json.dumps({
    "plain": dotenv_values(sys.argv[1], interpolate=False),
    "interpolating": dotenv_values(sys.argv[1]),
}))
"#;

/// What `shell` exports after `set -a; . ./app.env`, byte for byte (`env -0`),
/// restricted to `keys`; the shell starts with an empty environment.
fn read_with_shell(shell: &str, dir: &Path, keys: &BTreeSet<String>) -> BTreeMap<String, String> {
    let out = Command::new(shell)
        .arg("-c")
        .arg("set -a; . ./app.env; exec env -0")
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap_or_else(|e| panic!("running {shell}: {e}"));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{shell} could not source the file ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let text = String::from_utf8(e.to_vec()).expect("UTF-8 environment");
            let (k, v) = text.split_once('=').expect("NAME=value");
            (k.to_string(), v.to_string())
        })
        .filter(|(k, _)| keys.contains(k))
        .collect()
}

/// The README's rows for dotenv readers; the test checks that each is in
/// the README and that each exception it names is what python-dotenv does.
const README_DOTENV_ROWS: [&str; 4] = [
    "| `sh` (dash, bash): `set -a; . ./app.env` | every value | — |",
    "| python-dotenv 1.2: `dotenv_values(path, interpolate=False)` | every other value | a value ending in `\\`: python-dotenv cannot parse its line and leaves the key out; a carriage return (`\\r`, also of `\\r\\n`) is read as `\\n`; in a value with `$` or `` ` `` that also has `'` or `\\\\`, each `$` and `` ` `` is read with a `\\` before it |",
    "| python-dotenv 1.2, interpolating (the default of `load_dotenv`, `dotenv_values`) | as above | as above, and `${NAME}` and `${NAME:-default}` are expanded, inside single quotes too |",
    "| `docker run --env-file` | values written as they are (only letters, digits and `_./:@%+,=-`, or empty) | every other value keeps its quotes; a multi-line value breaks the file (from Docker's documentation; not run by the tests) |",
];

/// Which exception of the README's python-dotenv row applies to a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Exception {
    TrailingBackslash,
    CarriageReturn,
    EscapedDollar,
}

/// What python-dotenv (`interpolate=False`) reads for `v`, per the README's
/// row: `None` when it leaves the key out.
fn python_dotenv_reads(v: &str, hit: &mut BTreeSet<Exception>) -> Option<String> {
    if v.ends_with('\\') {
        hit.insert(Exception::TrailingBackslash);
        return None;
    }
    let mut r = v.to_string();
    if r.contains(['$', '`']) && (r.contains('\'') || r.contains("\\\\")) {
        hit.insert(Exception::EscapedDollar);
        r = r.replace('$', "\\$").replace('`', "\\`");
    }
    if r.contains('\r') {
        hit.insert(Exception::CarriageReturn);
        r = r.replace("\r\n", "\n").replace('\r', "\n");
    }
    Some(r)
}

/// python-dotenv's interpolation in an empty environment, where no name is
/// set: `${NAME}` becomes "" and `${NAME:-default}` the default.
fn interpolated(v: &str) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(at) = rest.find("${") {
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else { break };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.contains(':') {
            out.push_str(&rest[..at + 2]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..at]);
        out.push_str(default.unwrap_or(""));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn dotenv_values_read_back_exactly_with_sh_and_python_dotenv() {
    let values: Vec<String> = look_alikes().into_iter().filter(|s| !s.contains('\0')).collect();
    let mut data = serde_json::Map::new();
    for (i, v) in values.iter().enumerate() {
        data.insert(format!("VCPT_{i:03}"), json!(v));
    }
    data.insert("export".into(), json!("app"));
    data.insert("VCPT_NUMBER".into(), json!(5432));
    data.insert("VCPT_OBJECT".into(), json!({"a": ["it's", "$x"]}));
    let want: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
            )
        })
        .collect();
    let keys: BTreeSet<String> = want.keys().cloned().collect();
    let file = rendered("dotenv", &Json::Object(data));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.env");
    std::fs::write(&path, &file).unwrap();

    // sh and bash: every value, exactly, and nothing executed.
    for shell in ["sh", "bash"] {
        let got = read_with_shell(shell, dir.path(), &keys);
        let wrong: Vec<String> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: want {v:?}, got {:?}", got.get(k)))
            .collect();
        assert!(
            wrong.is_empty(),
            "{shell} reads {} values differently:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
        assert!(!dir.path().join("pwned").exists(), "{shell} ran a command from a value");
    }

    // python-dotenv: exact except for the README's exceptions, which all occur.
    let read = run_python(DOTENV_READER, &[&path]);
    let mut hit = BTreeSet::new();
    for (mode, interpolate) in [("plain", false), ("interpolating", true)] {
        let got: BTreeMap<String, Option<String>> = serde_json::from_value(read[mode].clone()).unwrap();
        let mut wrong = Vec::new();
        for (k, v) in &want {
            let mut expected = python_dotenv_reads(v, &mut hit);
            if interpolate {
                expected = expected.map(|e| interpolated(&e));
            }
            let actual = got.get(k).cloned().flatten();
            if actual != expected {
                wrong.push(format!("{k} = {v:?}: want {expected:?}, got {actual:?}"));
            }
        }
        let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        assert!(
            extra.is_empty(),
            "python-dotenv ({mode}) reads keys that are not in the file: {extra:?}"
        );
        assert!(
            wrong.is_empty(),
            "python-dotenv ({mode}) reads {} values other than the README says:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
    assert_eq!(
        hit,
        BTreeSet::from([
            Exception::TrailingBackslash,
            Exception::CarriageReturn,
            Exception::EscapedDollar
        ]),
        "every exception the README names occurs in the corpus"
    );
    let changed_by_interpolation = values.iter().filter(|v| interpolated(v) != **v).count();
    assert!(changed_by_interpolation >= 3, "the corpus exercises interpolation");

    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for row in README_DOTENV_ROWS {
        assert!(readme.contains(row), "README.md lacks the dotenv readers' row:\n{row}");
    }

    // docker --env-file takes the rest of the line: exact for unquoted values.
    let text = String::from_utf8(file).unwrap();
    for line in text.lines() {
        if let Some((k, rest)) = line.split_once('=') {
            if let Some(v) = want.get(k) {
                let bare = v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_./:@%+,=-".contains(&b));
                assert_eq!(bare, rest == v, "{k}: written as {rest:?}");
            }
        }
    }
}

#[test]
fn dotenv_refuses_nul() {
    let o = object("- {objectName: f, secretPath: secret/data/x, format: dotenv}");
    let e = render(&o, &json!({"data": {"data": {"K": "a\u{0}b"}, "metadata": {}}})).unwrap_err();
    assert!(
        e.to_string().contains("NUL") && !e.to_string().contains("a\u{0}b"),
        "{e}"
    );
}
