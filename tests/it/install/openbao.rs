//! OpenBao compatibility: `BAO_ADDR` against `VAULT_ADDR`, and one provider
//! serving both sockets from the `openbao` component, each with its own
//! defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{
    in_cluster_stand_in, openbao_provider, openbao_role, pod_with_tokens, provider_container, render, strings,
};
use crate::support::*;
use serde_json::json;
use tonic::Code;
use vcp_testbed::driver::{DriverClient, Generation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bao_addr_unset_empty_or_set_against_vault_addr() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    openbao_role(&bed, "kubernetes", "bao-app").await;
    let pod = pod_with_tokens(&bed, "web-0", &["openbao"]).await;
    let objects = KV_OBJECT;
    let spc = params(objects, &[("baoRoleName", "bao-app")]);
    let bao = bed.world.bao.addr();
    let dead = "http://127.0.0.1:1";

    // Unset: VAULT_ADDR.
    let p = openbao_provider(&bed, "unset", &[], &[("VAULT_ADDR", &bao)]).await;
    assert_eq!(text(&p.mount(&spc, &pod).await.expect("VAULT_ADDR used"), "k"), "v");
    // Set: BAO_ADDR, whatever VAULT_ADDR says.
    let p = openbao_provider(&bed, "set", &[], &[("VAULT_ADDR", dead), ("BAO_ADDR", &bao)]).await;
    assert_eq!(text(&p.mount(&spc, &pod).await.expect("BAO_ADDR used"), "k"), "v");
    // Empty: BAO_ADDR still wins, and means the built-in default, not VAULT_ADDR.
    let p = openbao_provider(&bed, "empty", &[], &[("VAULT_ADDR", &bao), ("BAO_ADDR", "")]).await;
    // Nothing listens there: a short driver deadline, since a Vault that
    // refuses connections is waited out until the deadline.
    let req = vcp_testbed::driver::mount_request(Generation::V16, "spc", &spc, &pod, false, Vec::new());
    let e = p
        .client(Generation::V16)
        .await
        .unwrap()
        .mount(req, Duration::from_secs(4))
        .await
        .unwrap_err();
    assert_mentions(&e, &["login to OpenBao at https://127.0.0.1:8200"]);
    // A vault socket reads VAULT_ADDR only, as HashiCorp's provider.
    let p = bed.provider("vault", &[]).await;
    assert_eq!(
        p.client(Generation::V16)
            .await
            .unwrap()
            .version()
            .await
            .unwrap()
            .runtime_name,
        "vault-csi-provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_provider_serves_vault_and_openbao_sockets_from_the_openbao_component() {
    let bed = Bed::start().await;
    bed.kv(json!({"k": "shared"})).await;
    // The openbao socket's auth mount: kubernetes auth at bao-kubernetes,
    // where role `app` wants audience openbao. At `kubernetes`, role `app`
    // wants audience vault (the world's).
    bed.world.bao.enable_auth("bao-kubernetes", "kubernetes").await.unwrap();
    let reviewer = bed.kube.reviewer_token().await.unwrap();
    bed.world
        .bao
        .configure_kubernetes_auth("bao-kubernetes", &bed.kube.url(), &bed.kube.ca_pem(), &reviewer)
        .await
        .unwrap();
    openbao_role(&bed, "bao-kubernetes", "app").await;
    // BAO_ADDR points at a proxy in front of the same OpenBao, to see which
    // socket's requests go where.
    let proxy = Proxy::start(&bed.world.bao.addr(), Duration::ZERO).await;

    // The DaemonSet's arguments and env as the component renders them,
    // relocated (/provider under the scratch directory, addresses of the
    // test), plus what an operator adds for this cluster.
    let v = render("openbao", &["openbao"]);
    let (_, c) = provider_container(&v);
    let root = bed.dir.path();
    let provider_dir = root.join("provider");
    std::fs::create_dir_all(&provider_dir).unwrap();
    let mut args: Vec<String> = strings(&c["args"])
        .into_iter()
        .map(|a| a.replace("/provider/", &format!("{}/", provider_dir.display())))
        .map(|a| {
            if a.starts_with("-health-addr=") {
                "-health-addr=127.0.0.1:0".to_string()
            } else {
                a
            }
        })
        .collect();
    let kubeconfig = in_cluster_stand_in(&bed, "both").await;
    args.push(format!("-kubeconfig={}", kubeconfig.display()));
    args.push("-openbao-mount=bao-kubernetes".to_string());
    let rendered_env: BTreeMap<String, String> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        rendered_env.contains_key("BAO_ADDR") && rendered_env.contains_key("VAULT_ADDR"),
        "the component adds the openbao socket's address: {rendered_env:?}"
    );
    let (vault_addr, bao_addr) = (bed.world.bao.addr(), proxy.url());
    let vault_sock = provider_dir.join("vault.sock");
    let bao_sock = provider_dir.join("openbao.sock");
    let p = spawn_provider(
        &args,
        vault_sock.clone(),
        root.join("both.log"),
        &[("VAULT_ADDR", &vault_addr), ("BAO_ADDR", &bao_addr)],
        "provider starts with the component's arguments",
    )
    .await;
    // Both sockets, one process, each with its runtime name.
    for (sock, name) in [(&vault_sock, "vault-csi-provider"), (&bao_sock, "openbao-csi-provider")] {
        let client = DriverClient::connect(sock, Generation::V16).await.unwrap();
        assert_eq!(client.version().await.unwrap().runtime_name, name);
    }

    // One pod, kubelet tokens for both audiences, the same class on both
    // sockets: each socket picks its audience, auth mount and address.
    let pod = pod_with_tokens(&bed, "web-0", &["vault", "openbao"]).await;
    let objects = KV_OBJECT;
    let spc = params(objects, &[]);
    let from_vault = p.mount_at(&vault_sock, &spc, &pod).await.expect("provider: vault");
    assert_eq!(text(&from_vault, "k"), "shared");
    assert_eq!(proxy.forwarded("/v1/"), 0, "the vault socket uses VAULT_ADDR");
    let from_bao = p.mount_at(&bao_sock, &spc, &pod).await.expect("provider: openbao");
    assert_eq!(text(&from_bao, "k"), "shared");
    assert_eq!(
        proxy.forwarded("/v1/auth/bao-kubernetes/login"),
        1,
        "the openbao socket uses BAO_ADDR and -openbao-mount"
    );
    // One object-version key for both sockets: equal objects, equal versions.
    assert_eq!(versions(&from_vault)["k"], versions(&from_bao)["k"]);
    let key = |name: &'static str| bed.kube.secret(bed.provider_ns(), name);
    assert!(key(KEY_SECRET).await.unwrap().is_some());
    assert!(key("openbao-csi-provider-hmac-key").await.unwrap().is_none());

    // The token cache keeps the flavours apart. A class on the openbao
    // socket naming the vault socket's address and mount, for the same pod
    // and role, resolves to the same connection as the vault-socket mount
    // above, whose token is cached; but its JWT is the `openbao` one, which
    // role app at auth/kubernetes refuses. Reusing the cached token would
    // let it through.
    let same_connection = params(
        objects,
        &[("baoAddress", &vault_addr), ("baoKubernetesMountPath", "kubernetes")],
    );
    let e = p.mount_at(&bao_sock, &same_connection, &pod).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert_mentions(&e, &["login to OpenBao at"]);
    // Naming the audience makes it the same login as the vault socket's.
    let mut named = same_connection.clone();
    named.insert("audience".into(), "vault".into());
    let r = p.mount_at(&bao_sock, &named, &pod).await.expect("audience vault named");
    assert_eq!(text(&r, "k"), "shared");

    let logs = p.logs();
    for line in [
        "serving the CSI driver for provider: vault (Vault defaults)",
        "serving the CSI driver for provider: openbao (OpenBao defaults)",
    ] {
        assert!(logs.contains(line), "{line}:\n{logs}");
    }
}
