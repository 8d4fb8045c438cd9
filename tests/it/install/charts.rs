//! The vault-helm and openbao-helm charts: the provider started with the
//! argument lists and env they render, mounting through the Vault Agent's
//! unix socket as `VAULT_ADDR`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{chart_key_role, in_cluster_stand_in, openbao_role, pod_with_tokens};
use crate::support::*;
use serde_json::json;
use vcp_testbed::driver::{Generation, PodContext};
use vcp_testbed::ports::free_port;

/// A unix socket that relays every connection to a TCP address: the Vault
/// Agent sidecar's `listener "unix"` as vault-helm configures it.
async fn agent_relay(socket: &Path, upstream: String) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::sync::atomic::Ordering;
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    count
}

/// A chart's provider mounting through the Agent's unix socket: the value
/// arrives, the relay carried Vault's traffic, and the key Secret the
/// chart's Role names is in the provider's namespace, immutable.
async fn mounts_through_the_agent(
    bed: &Bed,
    p: &Provider,
    ps: &BTreeMap<String, String>,
    pod: &PodContext,
    relayed: &std::sync::atomic::AtomicUsize,
    key_secret: &str,
) {
    let r = p.mount(ps, pod).await.expect("mount through the Agent socket");
    assert_eq!(text(&r, "k"), "via-agent");
    assert!(
        relayed.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "Vault was reached through the Agent's unix socket"
    );
    let key = bed.key_secret(key_secret).await;
    assert_eq!(key["immutable"], true);
}

/// GET on the health server, as the chart's probes do: the status code.
async fn probe(port: u16, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Polls a probe until it answers 200 (readiness waits for the version key).
async fn wait_ready(port: u16) {
    eventually(Duration::from_secs(5), "/health/ready to answer 200", || async {
        probe(port, "/health/ready").await == 200
    })
    .await;
}

/// Starts the provider with the arguments a chart renders — `args`, given
/// the socket path (`socket` under `root`) and a free health port — and the
/// container's `env`; returns once `/health/ready` answers.
async fn chart_provider(
    root: &Path,
    socket: &str,
    env: &[(&str, String)],
    what: &str,
    args: impl FnOnce(&Path, u16) -> Vec<String>,
) -> Provider {
    let endpoint = root.join(socket);
    std::fs::create_dir_all(endpoint.parent().unwrap()).unwrap();
    // A free port, not the chart's 8080, which may be taken on a shared test
    // machine; `-health-addr` arrives through `csi.extraArgs`.
    let health = free_port().unwrap();
    let args = args(&endpoint, health);
    let log = root.join(format!("{}.log", socket.replace('/', "-")));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = spawn_provider(&args, endpoint, log, &env, &format!("provider starts with {what}")).await;
    wait_ready(health).await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_helm_arguments_and_agent_socket_vault_addr_mount() {
    let bed = Bed::start().await;
    bed.kv(json!({"k": "via-agent"})).await;
    let root = bed.dir.path();
    // The chart's paths, relocated under the test's scratch directory:
    // /provider (the providervol hostPath) and /var/run/vault (the Agent's emptyDir).
    let endpoint = root.join("provider/vault.sock");
    std::fs::create_dir_all(endpoint.parent().unwrap()).unwrap();
    let agent_socket = root.join("var/run/vault/agent.sock");
    let upstream = bed.world.bao.addr().trim_start_matches("http://").to_string();
    let relayed = agent_relay(&agent_socket, upstream).await;
    let kubeconfig = in_cluster_stand_in(&bed, "helm").await;
    chart_key_role(&bed, "my-vault-csi-provider-hmac-key").await;
    let health = free_port().unwrap();

    // csi-daemonset.yaml with csi.agent.enabled=true (the chart's default),
    // release name `my-vault`, csi.logLevel=info, and csi.extraArgs.
    let args = vec![
        format!("--endpoint={}", endpoint.display()),
        "--log-level=info".to_string(),
        "--hmac-secret-name=my-vault-csi-provider-hmac-key".to_string(),
        // csi.extraArgs (rendered verbatim, one list item each):
        format!("-health-addr=127.0.0.1:{health}"),
        "-vault-mount=kubernetes".to_string(),
    ];
    let vault_addr = format!("unix://{}", agent_socket.display());
    assert!(
        vault_addr.starts_with("unix:///"),
        "same form as unix:///var/run/vault/agent.sock"
    );
    let p = spawn_provider(
        &args,
        endpoint.clone(),
        root.join("helm.log"),
        &[
            ("VAULT_ADDR", &vault_addr),
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ],
        "provider starts with the chart's arguments",
    )
    .await;
    wait_ready(health).await;
    assert_eq!(probe(health, "/health/ready").await, 200);

    // An SPC without vaultAddress: every Vault request goes through the Agent socket.
    let pod = bed.pod("web-0").await;
    let objects = KV_OBJECT;
    mounts_through_the_agent(
        &bed,
        &p,
        &params(objects, &[]),
        &pod,
        &relayed,
        "my-vault-csi-provider-hmac-key",
    )
    .await;
    p.sigterm();

    // Older charts render --debug=<bool> instead of --log-level, and without
    // the Agent, VAULT_ADDR is the Vault service's URL.
    let env = [
        ("VAULT_ADDR", bed.world.bao.addr()),
        ("KUBECONFIG", kubeconfig.display().to_string()),
    ];
    let p = chart_provider(
        root,
        "provider-old/vault.sock",
        &env,
        "the older chart's arguments",
        |endpoint, health| {
            vec![
                format!("--endpoint={}", endpoint.display()),
                "--debug=false".to_string(),
                "--hmac-secret-name=vault-csi-provider-hmac-key".to_string(),
                format!("--health-addr=127.0.0.1:{health}"),
            ]
        },
    )
    .await;
    let r = p.mount(&params(objects, &[]), &pod).await.expect("mount");
    assert_eq!(text(&r, "k"), "via-agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_helm_arguments_env_and_agent_socket_mount() {
    let bed = Bed::start().await;
    bed.kv(json!({"k": "via-agent"})).await;
    openbao_role(&bed, "kubernetes", "bao-app").await;
    let root = bed.dir.path();
    // openbao-helm's paths, relocated under the scratch directory:
    // /provider (hostPath csi.daemonSet.providersDir) and /var/run/vault
    // (the Agent's emptyDir). These are the only writable paths the chart
    // gives the container (readOnlyRootFilesystem: true); TMPDIR points at
    // a read-only directory to show nothing else is written.
    let endpoint = root.join("provider/openbao.sock");
    std::fs::create_dir_all(endpoint.parent().unwrap()).unwrap();
    let agent_socket = root.join("var/run/vault/agent.sock");
    let upstream = bed.world.bao.addr().trim_start_matches("http://").to_string();
    let relayed = agent_relay(&agent_socket, upstream).await;
    let readonly = root.join("read-only");
    std::fs::create_dir_all(&readonly).unwrap();
    std::fs::set_permissions(&readonly, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    let kubeconfig = in_cluster_stand_in(&bed, "openbao-helm").await;
    chart_key_role(&bed, "openbao-csi-provider-hmac-key").await;
    let health = free_port().unwrap();

    // csi-daemonset.yaml of openbao-helm 0.29.2 with its defaults (chart
    // name `openbao`, csi.agent.enabled=true, csi.debug=false,
    // csi.daemonSet.endpoint=/provider/openbao.sock), and csi.extraArgs.
    let args = vec![
        format!("--endpoint={}", endpoint.display()),
        "--debug=false".to_string(),
        "--hmac-secret-name=openbao-csi-provider-hmac-key".to_string(),
        // csi.extraArgs (the chart's probes use 8080; moved for a shared machine):
        format!("-health-addr=127.0.0.1:{health}"),
    ];
    // The chart's only env: VAULT_ADDR, the Agent's socket. No BAO_ADDR, so
    // the openbao socket falls back to it.
    let vault_addr = format!("unix://{}", agent_socket.display());
    let p = spawn_provider(
        &args,
        endpoint.clone(),
        root.join("openbao-helm.log"),
        &[
            ("VAULT_ADDR", &vault_addr),
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("TMPDIR", readonly.to_str().unwrap()),
        ],
        "provider starts with openbao-helm's arguments",
    )
    .await;
    wait_ready(health).await;
    let version = p.client(Generation::V16).await.unwrap().version().await.unwrap();
    assert_eq!(version.runtime_name, "openbao-csi-provider");

    // A class as OpenBao users write it: baoRoleName wins over roleName
    // (`app`, bound to audience vault), and with no audience the kubelet
    // token for `openbao` is used.
    let pod = pod_with_tokens(&bed, "web-0", &["vault", "openbao"]).await;
    let objects = KV_OBJECT;
    let ps = params(objects, &[("baoRoleName", "bao-app")]);
    mounts_through_the_agent(&bed, &p, &ps, &pod, &relayed, "openbao-csi-provider-hmac-key").await;
    let logs = p.logs();
    assert!(
        logs.contains("serving the CSI driver for provider: openbao (OpenBao defaults)"),
        "{logs}"
    );
    assert!(!logs.contains("DEBUG"), "--debug=false logs at info:\n{logs}");
    p.sigterm();
    let mut p = p;
    let status = p.child.wait().await.unwrap();
    assert!(status.success(), "{status}: {}", p.logs());
    // The ledger's state went to the socket directory, the writable host path.
    assert!(root.join("provider/openbao-csi-provider.state").is_file());
    assert_eq!(std::fs::read_dir(&readonly).unwrap().count(), 0);

    // csi.debug=true and csi.agent.enabled=false: --debug=true, and
    // VAULT_ADDR is the OpenBao service's URL.
    let env = [
        ("VAULT_ADDR", bed.world.bao.addr()),
        ("KUBECONFIG", kubeconfig.display().to_string()),
    ];
    let p = chart_provider(
        root,
        "provider-debug/openbao.sock",
        &env,
        "csi.debug=true",
        |endpoint, health| {
            vec![
                format!("--endpoint={}", endpoint.display()),
                "--debug=true".to_string(),
                "--hmac-secret-name=openbao-csi-provider-hmac-key".to_string(),
                format!("-health-addr=127.0.0.1:{health}"),
            ]
        },
    )
    .await;
    let r = p
        .mount(&params(objects, &[("baoRoleName", "bao-app")]), &pod)
        .await
        .expect("mount");
    assert_eq!(text(&r, "k"), "via-agent");
    assert!(
        p.logs().contains("DEBUG"),
        "--debug=true gives debug logs:\n{}",
        p.logs()
    );
}
