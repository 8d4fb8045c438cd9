//! The bad-input corpus: every file in `tests/corpus/*.json` is one malformed
//! Mount request with the gRPC code and a piece of the message it must earn.
//! Each is sent through the real provider's socket; afterwards the provider
//! must still answer and serve a good mount.
//!
//! The files are the corpus: to add a case, add a file (`about` says what is
//! wrong with it; `expand` builds huge values at run time so files stay
//! small). Every file must parse as a [`Case`], with no unknown fields.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::*;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use vault_csi_provider::proto::MountResponse;
use vault_csi_provider::spc::keys;
use vcp_testbed::driver::PodContext;

/// One corpus entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// What is wrong with it.
    about: String,
    /// SPC parameters, merged over the pod's volume-context attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parameters: Option<BTreeMap<String, String>>,
    /// Volume-context keys to drop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    omit: Vec<String>,
    /// Sent verbatim as `attributes` instead of the merged map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attributes_raw: Option<String>,
    /// Bytes (base64) sent verbatim as `attributes`: not necessarily UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attributes_base64: Option<String>,
    /// Bytes (base64) sent verbatim as `secrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secrets_base64: Option<String>,
    /// `secrets` (default `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secrets: Option<String>,
    /// `permission` (default `420`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    permission: Option<String>,
    /// A huge value built at run time (so the files stay small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expand: Option<Expand>,
    /// Expected gRPC code, as tonic spells it (`InvalidArgument`, ...).
    code: String,
    /// A piece of the expected message.
    message: String,
}

/// `parameters[param] = prefix + unit * times + suffix` (with `{i}` in
/// `unit` replaced by the repetition's index); `param` `"<attributes>"`
/// replaces the whole attributes string instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expand {
    param: String,
    #[serde(default)]
    prefix: String,
    unit: String,
    times: usize,
    #[serde(default)]
    suffix: String,
}

impl Expand {
    fn build(&self) -> String {
        let mut s = String::with_capacity(self.prefix.len() + self.unit.len() * self.times + self.suffix.len());
        s.push_str(&self.prefix);
        let indexed = self.unit.contains("{i}");
        for i in 0..self.times {
            if indexed {
                s.push_str(&self.unit.replace("{i}", &i.to_string()));
            } else {
                s.push_str(&self.unit);
            }
        }
        s.push_str(&self.suffix);
        s
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

// ---------------------------------------------------------------------------
// The runner.

fn load_corpus() -> Vec<(String, Case)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(corpus_dir()).expect("tests/corpus exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read corpus file");
        let case: Case = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        out.push((name, case));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `MountRequest` with its string fields as bytes (same wire format), so a
/// test can send bytes that are not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawMountRequest {
    #[prost(bytes = "vec", tag = "1")]
    attributes: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    secrets: Vec<u8>,
    #[prost(string, tag = "3")]
    target_path: String,
    #[prost(bytes = "vec", tag = "4")]
    permission: Vec<u8>,
}

async fn raw_channel(socket: &Path) -> tonic::transport::Channel {
    let path = socket.to_path_buf();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .expect("connect to the provider socket")
}

async fn send(channel: &tonic::transport::Channel, req: RawMountRequest) -> Result<MountResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(req);
    request.set_timeout(Duration::from_secs(30));
    let path = http::uri::PathAndQuery::from_static("/v1alpha1.CSIDriverProvider/Mount");
    grpc.unary(request, path, tonic_prost::ProstCodec::default())
        .await
        .map(|r| r.into_inner())
}

fn build(case: &Case, pod: &PodContext) -> RawMountRequest {
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64 in corpus")
    };
    let expanded = case.expand.as_ref().map(|e| (e.param.clone(), e.build()));
    let attributes = if let Some(b) = &case.attributes_base64 {
        b64(b)
    } else if let Some(raw) = &case.attributes_raw {
        raw.clone().into_bytes()
    } else if let Some(("<attributes>", v)) = expanded.as_ref().map(|(k, v)| (k.as_str(), v)) {
        v.clone().into_bytes()
    } else {
        let mut attrs: BTreeMap<String, String> = BTreeMap::new();
        attrs.insert(keys::SPC_NAME.into(), "spc".into());
        attrs.insert(keys::POD_NAME.into(), pod.name.clone());
        attrs.insert(keys::POD_NAMESPACE.into(), pod.namespace.clone());
        attrs.insert(keys::POD_UID.into(), pod.uid.clone());
        attrs.insert(keys::SERVICE_ACCOUNT.into(), pod.service_account.clone());
        if let Some(t) = &pod.tokens {
            attrs.insert(keys::SA_TOKENS.into(), t.clone());
        }
        for (k, v) in case.parameters.iter().flatten() {
            attrs.insert(k.clone(), v.clone());
        }
        if let Some((k, v)) = expanded {
            attrs.insert(k, v);
        }
        for k in &case.omit {
            attrs.remove(k);
        }
        serde_json::to_vec(&attrs).expect("attributes JSON")
    };
    let secrets = match (&case.secrets_base64, &case.secrets) {
        (Some(b), _) => b64(b),
        (None, Some(s)) => s.clone().into_bytes(),
        (None, None) => b"{}".to_vec(),
    };
    RawMountRequest {
        attributes,
        secrets,
        target_path: "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/v/mount".into(),
        permission: case.permission.clone().unwrap_or_else(|| "420".into()).into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_request_gets_a_clear_error_and_the_server_survives() {
    let corpus = load_corpus();
    assert!(corpus.len() >= 200, "only {} corpus files", corpus.len());
    let bed = Bed::start().await;
    bed.kv(json!({"k": "v", "notb64": "not base64!", "nothex": "zz"})).await;
    bed.bao
        .kv2_put("secret", "big", json!({"blob": "b".repeat(5 << 20)}))
        .await
        .unwrap();
    bed.bao
        .kv2_put("secret", "three", json!({"blob": "t".repeat(3 << 20)}))
        .await
        .unwrap();
    bed.bao
        .kv2_put("secret", "huge", json!({"blob": "h".repeat(9 << 20)}))
        .await
        .unwrap();
    let mut p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let channel = raw_channel(&p.socket).await;

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for (name, case) in &corpus {
        let req = build(case, &pod);
        let t = Instant::now();
        let r = send(&channel, req).await;
        let took = t.elapsed();
        if took > slowest.0 {
            slowest = (took, name.clone());
        }
        match r {
            Ok(_) => failures.push(format!("{name} ({}): succeeded", case.about)),
            Err(e) => {
                let code = format!("{:?}", e.code());
                let message = e.message();
                if code != case.code || !message.contains(&case.message) {
                    let shown: String = message.chars().take(400).collect();
                    failures.push(format!(
                        "{name} ({}): got {code} {shown:?}, want {} containing {:?}",
                        case.about, case.code, case.message
                    ));
                }
                if message.len() > 16 * 1024 {
                    failures.push(format!("{name}: a {}-byte message is not readable", message.len()));
                }
            }
        }
        if took > Duration::from_secs(10) {
            failures.push(format!("{name}: took {took:?}"));
        }
    }
    println!(
        "CORPUS | {} requests | {} ms total | slowest {} ms ({}) | {} mismatches",
        corpus.len(),
        started.elapsed().as_millis(),
        slowest.0.as_millis(),
        slowest.1,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} corpus mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Still serving, and serving well.
    assert!(p.child.try_wait().unwrap().is_none(), "provider exited: {}", p.logs());
    assert!(!p.logs().contains("panicked"), "provider panicked");
    let r = p
        .mount(&params(KV_OBJECT, &[]), &pod)
        .await
        .expect("a good mount afterwards");
    assert_eq!(text(&r, "k"), "v");
}
