use super::*;
use crate::spc::parse_objects;

fn object(yaml: &str) -> ObjectSpec {
    parse_objects(yaml, 0o644).unwrap().remove(0)
}

#[test]
fn kv2_values_are_unwrapped_and_typed_values_are_json() {
    let resp = serde_json::json!({
        "request_id": "r1",
        "data": { "data": { "s": "text", "n": 5, "o": {"a": [1, true]}, "b64": "aGk=", "hx": "6869", "bad": "secret value!" }, "metadata": {"version": 3} }
    });
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
        br#"{"a":[1,true]}"#
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
    let parsed: Json = serde_json::from_slice(&whole).unwrap();
    assert_eq!(parsed["data"]["k"], "v");
    assert!(
        parsed.get("request_id").is_none(),
        "request_id changes per read and is dropped"
    );
}
