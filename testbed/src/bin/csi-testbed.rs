//! `csi-testbed demo`: the whole path on one machine. Starts a real OpenBao
//! dev server and a Kubernetes control plane (the real kube-apiserver and
//! etcd where `KUBEBUILDER_ASSETS` names them, the project's double
//! elsewhere: see `vcp_testbed::kubernetes::control_plane`), wires Vault's
//! kubernetes auth to it, starts the real `vault-csi-provider` binary as its
//! own ServiceAccount with the RBAC `deploy/` renders, creates a pod, and
//! mounts a SecretProviderClass for it through the unix socket exactly as
//! the CSI driver would, then prints the files the driver would write.
//!
//! The Mount goes through grpc-go, the CSI driver's own gRPC library, dialing
//! as driver v1.6 does (`testbed/go-driver`, found through `VCP_GO_DRIVER`;
//! `scripts/demo.sh` builds it). Without it the demo says so and uses the
//! test bed's tonic client instead.
//!
//! `csi-testbed kubernetes` prints which Kubernetes the test bed would run
//! on (the line `scripts/test.sh` starts with), and fails when
//! `KUBEBUILDER_ASSETS` is set but names no usable binaries.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use serde_json::json;
use vcp_proto::MountResponse;
use vcp_testbed::driver::clients::{RealClient, GO_DRIVER_ENV};
use vcp_testbed::driver::{mount_request, Generation};
use vcp_testbed::kubernetes::control_plane::Backend;
use vcp_testbed::world::{params, World};

const OBJECTS: &str = r#"
- objectName: db/username
  secretPath: secret/data/demo
  secretKey: username
- objectName: db/password
  secretPath: secret/data/demo
  secretKey: password
  filePermission: 0600
- objectName: demo.json
  secretPath: secret/data/demo
"#;

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_default();
    if command == "kubernetes" {
        return match Backend::from_env() {
            Ok(backend) => {
                println!("Kubernetes: {}", backend.describe());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("csi-testbed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if command != "demo" {
        eprintln!("usage: csi-testbed demo | csi-testbed kubernetes");
        return ExitCode::from(64);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("csi-testbed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("csi-testbed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("csi-testbed-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(dir: &std::path::Path) -> anyhow::Result<()> {
    let binary = provider_binary()?;
    println!("starting OpenBao (dev server) and a Kubernetes control plane ...");
    let world = World::start_named(dir, "demo").await?;
    let cp = world.kube.control_plane();
    println!(
        "  Kubernetes: {} at {} (RS256 service-account issuer)",
        cp.backend().describe(),
        cp.url(),
    );
    world
        .bao
        .kv2_put(
            "secret",
            "demo",
            json!({"username": "demo-user", "password": "correct horse battery staple"}),
        )
        .await?;
    println!("  OpenBao at {}", world.bao.addr());
    println!(
        "  kubernetes auth: role \"app\" binds service account {}/app (audience vault); Vault reviews tokens through TokenReview",
        world.ns()
    );

    // As the DaemonSet runs it: NODE_NAME from the downward API.
    let node = format!("-node-name={}", world.kube.node);
    let provider = world.provider(&binary, "vault", &["-log-level=info", &node]).await?;
    println!("provider serving {}", provider.socket.display());

    println!(
        "provider runs as service account {}/{} with the RBAC of deploy/",
        world.provider_ns(),
        vcp_testbed::world::PROVIDER_SA
    );
    let pod = world.pod(world.ns(), "web-0", "app").await?;
    println!(
        "mounting SecretProviderClass \"demo\" for pod {}/web-0 (service account app, uid {}) ...",
        world.ns(),
        pod.uid
    );
    let request = mount_request(Generation::V16, "demo", &params(OBJECTS, &[]), &pod, false, Vec::new());
    let response = mount(&provider, request).await?;
    println!();
    for file in &response.files {
        println!(
            "== {}  (mode {:04o}, {} bytes)",
            file.path,
            file.mode,
            file.contents.len()
        );
        println!("{}", String::from_utf8_lossy(&file.contents));
    }
    println!();
    for v in &response.object_version {
        println!("version {:<12} {}", v.id, v.version);
    }
    provider.sigterm();
    let mut provider = provider;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), provider.child.wait()).await;
    println!("\nprovider log:\n{}", provider.logs());
    Ok(())
}

/// Mounts with grpc-go when it is built, else with the tonic client, saying
/// which.
async fn mount(
    provider: &vcp_testbed::world::Provider,
    request: vcp_proto::MountRequest,
) -> anyhow::Result<MountResponse> {
    let client = RealClient::GoV16;
    let result = match client.program() {
        Ok(program) => {
            println!(
                "  client: grpc-go, the CSI driver's gRPC library, dialing as driver v1.6 (unix:<socket>, authority localhost): {}",
                program.display()
            );
            let call = client
                .mount(&provider.socket, &request, std::time::Duration::from_secs(30))
                .await?;
            println!("  Mount answered in {:.1} ms", call.latency.as_secs_f64() * 1000.0);
            call.result
        }
        Err(_) => {
            println!(
                "  client: the test bed's tonic client ({GO_DRIVER_ENV} not set, so grpc-go is not used; scripts/demo.sh builds it)"
            );
            provider.mount_raw(Generation::V16, request).await
        }
    };
    result.map_err(|s| anyhow!("mount failed: {:?}: {}", s.code(), s.message()))
}

/// The provider binary built next to this one (`cargo build` puts both in
/// the same directory).
fn provider_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating csi-testbed")?;
    let path = me.with_file_name("vault-csi-provider");
    if path.exists() {
        Ok(path)
    } else {
        Err(anyhow!(
            "{} not found: build it with cargo build --bins",
            path.display()
        ))
    }
}
