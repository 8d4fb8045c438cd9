//! The provider as real drivers reach it: programs built on grpc-go (the
//! library of every Secrets Store CSI driver release, dialing as v1.5 and as
//! v1.6 do) and on gRPC C-core (PyPI grpcio), against the real provider
//! binary, a real OpenBao and the Kubernetes double.
//!
//! These clients send their HTTP/2 preface and SETTINGS and then wait for the
//! server's SETTINGS before any request, unlike the tonic client in
//! `testbed::driver`; a server that waits for the first request first
//! deadlocks with them (issue 11). Every call has a 10 s client deadline, so
//! such a hang fails fast as DEADLINE_EXCEEDED.
//!
//! Needs `VCP_GO_DRIVER` and `VCP_PYTHON` (`scripts/testbed.sh install`, then
//! `eval "$(scripts/testbed.sh env)"`; `scripts/test.sh` does both).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::support::*;
use serde::Deserialize as _;
use serde_json::{json, Value};
use tokio::net::UnixListener;
use vault_csi_provider::proto::{MountRequest, MountResponse};
use vcp_testbed::driver::clients::{Call, RealClient};
use vcp_testbed::driver::wire;
use vcp_testbed::driver::{mount_request, Generation, PodContext};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Each call's deadline in the client: a hang fails the test this fast.
const DEADLINE: Duration = Duration::from_secs(10);
/// What "answered promptly" means for one call on this 2-core machine.
const PROMPT: Duration = Duration::from_secs(1);

/// The request shape a client's driver generation sends.
fn generation(client: RealClient) -> Generation {
    match client {
        // The socket path as :authority is what drivers before v1.6 send.
        RealClient::GoV15 | RealClient::CcorePath => Generation::V15,
        RealClient::GoV16 | RealClient::CcoreDefault | RealClient::CcoreLocalhost => Generation::V16,
    }
}

/// The call's response, which must have come within [`PROMPT`].
fn answered<T>(client: RealClient, what: &str, call: Call<T>, p: &Provider) -> T {
    let response = match call.result {
        Ok(r) => r,
        Err(s) => panic!(
            "{}: {what} failed after {:?}: {:?}: {}\nprovider log:\n{}",
            client.name(),
            call.latency,
            s.code(),
            s.message(),
            p.logs()
        ),
    };
    assert!(
        call.latency < PROMPT,
        "{}: {what} answered, but took {:?} (bound {PROMPT:?})",
        client.name(),
        call.latency
    );
    response
}

// ---------------------------------------------------------------- the wire

/// What each client really sends, seen by a bare HTTP/2 listener: the
/// dialing code is what the driver generations do, not what we assume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_real_client_sends_the_authority_of_the_driver_it_stands_for() {
    let dir = tempfile::tempdir().unwrap();
    for client in RealClient::ALL {
        let socket = dir.path().join(format!("{client:?}.sock"));
        let listener = UnixListener::bind(&socket).unwrap();
        let calling = {
            let socket = socket.clone();
            tokio::spawn(async move { client.version(&socket, DEADLINE).await })
        };
        let seen = wire::first_request(&listener, DEADLINE).await;
        let call = calling.await.unwrap();
        let call = call.unwrap_or_else(|e| panic!("{e:#}"));
        let seen = seen.unwrap_or_else(|e| panic!("{}: {e:#}; the client saw {call:?}", client.name()));
        let status = call.result.expect_err("the listener answers UNIMPLEMENTED");
        assert_eq!(
            status.code(),
            tonic::Code::Unimplemented,
            "{}: {status:?}",
            client.name()
        );
        assert_eq!(status.message(), wire::CAPTURED, "{}", client.name());
        assert_eq!(
            seen.get(":path"),
            Some(&b"/v1alpha1.CSIDriverProvider/Version"[..]),
            "{}",
            client.name()
        );
        assert_eq!(
            seen.get("content-type"),
            Some(&b"application/grpc"[..]),
            "{}",
            client.name()
        );
        let authority = String::from_utf8_lossy(seen.get(":authority").unwrap_or_default()).into_owned();
        let path = socket.display().to_string();
        match client {
            RealClient::GoV15 => assert_eq!(authority, path, "v1.5 dialing sends the socket path"),
            RealClient::GoV16 | RealClient::CcoreLocalhost => assert_eq!(authority, "localhost", "{}", client.name()),
            RealClient::CcoreDefault => {
                let encoded = path.trim_start_matches('/').replace('/', "%2F");
                assert_eq!(authority, encoded, "C-core %-encodes a unix path as its authority")
            }
            RealClient::CcorePath => assert_eq!(authority, path, "grpc.default_authority reaches the wire as is"),
        }
        eprintln!("{}: :authority {authority:?}", client.name());
    }
}

// ---------------------------------------------------------------- the KV example

/// `examples/kv` as a user applies it: the SecretProviderClass's parameters
/// (with `vaultAddress` pointed at the test's OpenBao), its policy and role,
/// and its pod.
struct KvExample {
    parameters: BTreeMap<String, String>,
    pod: PodContext,
}

async fn kv_example(bed: &Bed) -> KvExample {
    let dir = Path::new(REPO).join("examples/kv");
    let spc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("secretproviderclass.yaml")).unwrap())
        .expect("examples/kv/secretproviderclass.yaml is YAML");
    assert_eq!(spc["spec"]["provider"], "vault");
    let mut parameters: BTreeMap<String, String> =
        serde_json::from_value(spc["spec"]["parameters"].clone()).expect("string parameters");
    parameters.insert("vaultAddress".into(), bed.world.bao.addr());
    let role = parameters["roleName"].clone();

    let pod_yaml = std::fs::read_to_string(dir.join("pod.yaml")).unwrap();
    let pod: Value = serde_yaml_ng::Deserializer::from_str(&pod_yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "Pod")
        .expect("examples/kv/pod.yaml has a Pod");
    let pod_name = pod["metadata"]["name"].as_str().unwrap();
    let sa = pod["spec"]["serviceAccountName"].as_str().unwrap();

    let policy = std::fs::read_to_string(dir.join("policy.hcl")).unwrap();
    bed.world.bao.put_policy(&role, &policy).await.unwrap();
    bed.world
        .bao
        .kubernetes_role(&role)
        .binding(&[sa], &[bed.ns()])
        .policies(&[&role])
        .audience(Some("vault"))
        .write()
        .await
        .unwrap();
    bed.kv(json!({"password": "first", "api-key": "k1"})).await;
    bed.kv(json!({"password": "second", "api-key": "k2"})).await;
    KvExample {
        parameters,
        pod: bed.world.pod(bed.ns(), pod_name, sa).await.unwrap(),
    }
}

impl KvExample {
    fn first(&self, generation: Generation) -> MountRequest {
        mount_request(generation, "vault-kv", &self.parameters, &self.pod, false, Vec::new())
    }

    /// v1.5's rotation call; the client fills in `current_object_version`
    /// from the first answer.
    fn rotation(&self) -> MountRequest {
        mount_request(
            Generation::V15,
            "vault-kv",
            &self.parameters,
            &self.pod,
            true,
            Vec::new(),
        )
    }
}

fn assert_kv_files(client: RealClient, r: &MountResponse) {
    let name = client.name();
    assert_eq!(text(r, "db-password"), "second", "{name}");
    assert_eq!(text(r, "api/key"), "k2", "{name}");
    assert_eq!(text(r, "db-password.previous"), "first", "{name}");
    let whole: Value = serde_json::from_str(&text(r, "app.json")).unwrap();
    assert_eq!(whole["data"]["data"]["password"], "second", "{name}");
    assert!(
        r.files.iter().all(|f| f.mode == 0o644),
        "{name}: permission 420: {:?}",
        files(r)
    );
    assert_eq!(r.object_version.len(), 4, "{name}: one version per object");
}

/// Version, the KV example's Mount, then a v1.5 rotation call carrying the
/// versions of the first answer, on one connection: each answered promptly,
/// the rotation with the same files and versions.
async fn version_mount_and_rotation(client: RealClient) {
    let bed = Bed::start().await;
    let ex = kv_example(&bed).await;
    let p = bed.provider("vault", &[]).await;

    let version = client
        .version(&p.socket, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let version = answered(client, "Version", version, &p);
    assert_eq!(version.version, "v1alpha1", "{}", client.name());
    assert_eq!(version.runtime_name, "vault-csi-provider", "{}", client.name());

    let calls = client
        .rotate(&p.socket, &ex.first(generation(client)), &ex.rotation(), DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut calls = calls.into_iter();
    let first = calls.next().expect("the first Mount's outcome");
    let first = answered(client, "the first Mount", first, &p);
    assert_kv_files(client, &first);
    let second = calls.next().expect("the rotation call's outcome");
    let second = answered(client, "the rotation Mount", second, &p);
    assert_eq!(
        versions(&second),
        versions(&first),
        "{}: unchanged content, same versions",
        client.name()
    );
    assert_eq!(files(&second), files(&first), "{}", client.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_dialing_as_driver_v15_mounts_and_rotates() {
    version_mount_and_rotation(RealClient::GoV15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_dialing_as_driver_v16_mounts_and_rotates() {
    version_mount_and_rotation(RealClient::GoV16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_c_core_with_its_own_authority_mounts_and_rotates() {
    version_mount_and_rotation(RealClient::CcoreDefault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_c_core_with_authority_localhost_mounts_and_rotates() {
    version_mount_and_rotation(RealClient::CcoreLocalhost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_c_core_with_the_socket_path_as_authority_mounts_and_rotates() {
    version_mount_and_rotation(RealClient::CcorePath).await;
}

/// Twenty grpc-go connections opened at once (a node's worth of pods
/// starting, or a restarted driver), each calling Version then Mount: every
/// call is answered, each within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_grpc_go_connections_are_each_answered_promptly() {
    let bed = Bed::start().await;
    let ex = kv_example(&bed).await;
    let p = bed.provider("vault", &[]).await;
    for client in [RealClient::GoV16, RealClient::GoV15] {
        let conns = client
            .concurrent(&p.socket, &ex.first(generation(client)), 20, DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(conns.len(), 20, "{}", client.name());
        let mut slowest = Duration::ZERO;
        for (i, c) in conns.into_iter().enumerate() {
            let what = format!("connection {i}");
            slowest = slowest.max(c.version.latency);
            answered(client, &format!("{what}: Version"), c.version, &p);
            let mount = c
                .mount
                .unwrap_or_else(|| panic!("{}: {what} made no Mount", client.name()));
            slowest = slowest.max(mount.latency);
            assert_kv_files(client, &answered(client, &format!("{what}: Mount"), mount, &p));
        }
        eprintln!("{}: 20 connections, slowest call {slowest:?}", client.name());
    }
}
