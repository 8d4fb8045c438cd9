//! The files under `examples/`, applied and mounted as they are, and the
//! committed example install pinning classes to the operator's Vault.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{in_cluster_stand_in, openbao_provider, provider_container, strings, variants, yaml_docs, EXAMPLES, REPO};
use crate::support::*;
use serde_json::{json, Value};
use tonic::Code;
use vault_csi_provider::spc::names as spc_names;
use vcp_testbed::driver::PodContext;

/// One example as a user would apply it.
struct Example {
    /// `spec.provider`: `vault` or `openbao`.
    provider: String,
    /// The SecretProviderClass's `spec.parameters`.
    parameters: BTreeMap<String, String>,
    /// The pod's name and service account.
    pod_name: String,
    service_account: String,
    /// `pod.yaml`: the ServiceAccount and the Pod.
    manifests: Vec<Value>,
    /// `policy.hcl`.
    policy: String,
}

/// Loads `examples/<name>`, checking the SecretProviderClass field by field
/// (the schema validator has no CRD schemas) and that the pod mounts it.
fn example(name: &str) -> Example {
    let dir = Path::new(REPO).join("examples").join(name);
    let spc = yaml_docs(&std::fs::read_to_string(dir.join("secretproviderclass.yaml")).unwrap());
    assert_eq!(spc.len(), 1, "{name}: one SecretProviderClass");
    let spc = &spc[0];
    assert_eq!(spc["apiVersion"], "secrets-store.csi.x-k8s.io/v1", "{name}");
    assert_eq!(spc["kind"], "SecretProviderClass", "{name}");
    let spec = spc["spec"].as_object().unwrap();
    for key in spec.keys() {
        assert!(
            ["provider", "parameters", "secretObjects"].contains(&key.as_str()),
            "{name}: unknown SecretProviderClass field spec.{key}"
        );
    }
    let provider = spec["provider"].as_str().unwrap_or_default().to_string();
    assert!(
        provider == "vault" || provider == "openbao",
        "{name}: spec.provider {provider:?} is not served"
    );
    let mut parameters = BTreeMap::new();
    for (k, v) in spec["parameters"].as_object().unwrap() {
        let v = v
            .as_str()
            .unwrap_or_else(|| panic!("{name}: parameter {k} must be a string (quote it)"));
        parameters.insert(k.clone(), v.to_string());
    }
    let docs = yaml_docs(&std::fs::read_to_string(dir.join("pod.yaml")).unwrap());
    let pod = docs.iter().find(|d| d["kind"] == "Pod").expect("a Pod");
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["csi"]["driver"] == "secrets-store.csi.k8s.io")
        .expect("a secrets-store CSI volume");
    assert_eq!(volume["csi"]["readOnly"], true, "{name}");
    let attrs = volume["csi"]["volumeAttributes"].as_object().unwrap();
    assert_eq!(
        attrs["secretProviderClass"], spc["metadata"]["name"],
        "{name}: pod mounts the SPC"
    );
    // The driver copies the volume attributes over the SPC parameters.
    for (k, v) in attrs {
        if k != "secretProviderClass" {
            parameters.insert(k.clone(), v.as_str().unwrap().to_string());
        }
    }
    let sa = pod["spec"]["serviceAccountName"].as_str().unwrap().to_string();
    assert!(
        docs.iter()
            .any(|d| d["kind"] == "ServiceAccount" && d["metadata"]["name"] == sa.as_str()),
        "{name}: the pod's ServiceAccount is in the example"
    );
    Example {
        provider,
        parameters,
        pod_name: pod["metadata"]["name"].as_str().unwrap().to_string(),
        service_account: sa,
        manifests: docs.clone(),
        policy: std::fs::read_to_string(dir.join("policy.hcl")).unwrap(),
    }
}

impl Example {
    /// The parameters with the address (under whichever name the example
    /// writes it) pointed at the test's OpenBao.
    fn params_for(&self, bed: &Bed) -> BTreeMap<String, String> {
        let mut p = self.parameters.clone();
        let name = spc_names::ADDRESS
            .iter()
            .find(|n| p.contains_key(**n))
            .expect("examples show the address");
        p.insert(name.to_string(), bed.world.bao.addr());
        p
    }

    /// The role, under whichever name the example writes it.
    fn role_name(&self) -> &str {
        spc_names::ROLE
            .iter()
            .find_map(|n| self.parameters.get(*n))
            .expect("examples name a role")
    }

    /// Writes the example's policy and a kubernetes-auth role for its pod.
    async fn role(&self, bed: &Bed, audience: Option<&str>) {
        let role = self.role_name();
        bed.world.bao.put_policy(role, &self.policy).await.unwrap();
        bed.world
            .bao
            .kubernetes_role(role)
            .binding(&[&self.service_account], &[bed.ns()])
            .policies(&[role])
            .audience(audience)
            .write()
            .await
            .unwrap();
    }

    /// Applies `pod.yaml` to the API server as written, in the test's
    /// namespace (the examples name none, so they land in the user's
    /// current one), with the pod named `name` and scheduled to the
    /// provider's node; what kubelet tells the driver about it, no token yet.
    async fn pod_named(&self, bed: &Bed, name: &str) -> PodContext {
        let mut applied = Vec::new();
        for doc in &self.manifests {
            let mut doc = doc.clone();
            doc["metadata"]["namespace"] = json!(bed.ns());
            if doc["kind"] == "Pod" {
                doc["metadata"]["name"] = json!(name);
                doc["spec"]["nodeName"] = json!(bed.kube.node);
            }
            applied.push(doc);
        }
        bed.kube.apply(&applied).await.expect("the example's pod.yaml applies");
        let uid = bed
            .kube
            .pod_uid(bed.ns(), name)
            .await
            .unwrap()
            .expect("the example's pod");
        PodContext {
            name: name.to_string(),
            namespace: bed.ns().to_string(),
            uid,
            service_account: self.service_account.clone(),
            tokens: None,
        }
    }

    /// The example's pod with kubelet's token for `audience`.
    async fn pod_for(&self, bed: &Bed, audience: &str) -> PodContext {
        let mut pod = self.pod_named(bed, &self.pod_name).await;
        let ttl = Duration::from_secs(3600);
        let token = bed
            .kube
            .pod_token(bed.ns(), &self.pod_name, &[audience], ttl)
            .await
            .unwrap();
        pod.tokens = Some(PodContext::tokens_json(
            audience,
            &token,
            std::time::SystemTime::now() + ttl,
        ));
        pod
    }

    /// The example's pod with the token the reference CSIDriver's
    /// `tokenRequests` asks for (audience `vault`).
    async fn pod(&self, bed: &Bed) -> PodContext {
        self.pod_for(bed, "vault").await
    }
}

#[test]
fn every_example_directory_is_mounted_by_a_test() {
    let mut found: Vec<String> = std::fs::read_dir(Path::new(REPO).join("examples"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "add a test below for each new example");
    for ex in EXAMPLES {
        example(ex);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_kv() {
    let bed = Bed::start().await;
    let ex = example("kv");
    ex.role(&bed, Some("vault")).await;
    bed.kv(json!({"password": "first", "api-key": "k1"})).await;
    bed.kv(json!({"password": "second", "api-key": "k2"})).await;
    let p = bed.provider("p", &[]).await;
    let r = p
        .mount(&ex.params_for(&bed), &ex.pod(&bed).await)
        .await
        .expect("kv example mounts");
    assert_eq!(text(&r, "db-password"), "second");
    assert_eq!(text(&r, "api/key"), "k2");
    assert_eq!(text(&r, "db-password.previous"), "first");
    let whole: Value = serde_json::from_str(&text(&r, "app.json")).unwrap();
    assert_eq!(whole["data"]["data"]["password"], "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_database() {
    let bed = Bed::start().await;
    let pg = bed.database("5m", "10m").await;
    let ex = example("database");
    ex.role(&bed, Some("vault")).await;
    let p = bed.provider("p", &[]).await;
    let r = p
        .mount(&ex.params_for(&bed), &ex.pod(&bed).await)
        .await
        .expect("database example mounts");
    let (user, pass) = (text(&r, "db-username"), text(&r, "db-password"));
    assert!(pg.can_login(&user, &pass).await.unwrap(), "the credentials log in");
    assert_eq!(bed.world.bao.leases("database/creds/app").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_pki() {
    let bed = Bed::start().await;
    let ex = example("pki");
    ex.role(&bed, Some("vault")).await;
    let ca = bed.world.bao.setup_pki("pki", "web", "24h").await.unwrap();
    let p = bed.provider("p", &[]).await;
    let r = p
        .mount(&ex.params_for(&bed), &ex.pod(&bed).await)
        .await
        .expect("pki example mounts");
    let cert = text(&r, "tls.crt");
    assert_eq!(
        openssl(&["x509", "-noout", "-pubkey"], cert.as_bytes()),
        openssl(&["pkey", "-pubout"], text(&r, "tls.key").as_bytes()),
        "key and certificate come from one issue"
    );
    assert!(openssl(&["x509", "-noout", "-subject"], cert.as_bytes()).contains("web.default.svc"));
    assert_eq!(text(&r, "ca.crt").trim(), ca.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_jwt_auth() {
    let bed = Bed::start().await;
    let ex = example("jwt-auth");
    assert_eq!(ex.parameters["vaultAuthMountPath"], "jwt");
    let role = ex.parameters["roleName"].clone();
    bed.world.bao.put_policy(&role, &ex.policy).await.unwrap();
    bed.world.bao.enable_auth("jwt", "jwt").await.unwrap();
    bed.world
        .bao
        .configure_jwt_auth("jwt", &bed.kube.jwt_public_key_pem())
        .await
        .unwrap();
    let subject = format!("system:serviceaccount:{}:{}", bed.ns(), ex.service_account);
    bed.world
        .bao
        .jwt_role("jwt", &role, "vault", &subject, &[&role], "1h")
        .await
        .unwrap();
    bed.kv(json!({"password": "jwt"})).await;
    let p = bed.provider("p", &[]).await;
    let r = p
        .mount(&ex.params_for(&bed), &ex.pod(&bed).await)
        .await
        .expect("jwt example mounts");
    assert_eq!(text(&r, "db-password"), "jwt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_custom_audience() {
    let bed = Bed::start().await;
    let ex = example("custom-audience");
    let audience = ex.parameters["audience"].clone();
    ex.role(&bed, Some(&audience)).await;
    bed.kv(json!({"password": "aud"})).await;
    let p = bed.provider("p", &[]).await;
    // Kubelet minted the audience (CSIDriver tokenRequests lists it) ...
    let pod = ex.pod_for(&bed, &audience).await;
    let r = p
        .mount(&ex.params_for(&bed), &pod)
        .await
        .expect("custom-audience example mounts");
    assert_eq!(text(&r, "db-password"), "aud");
    // ... or the provider requests it (token-request component).
    let bare = ex.pod_named(&bed, &format!("{}-2", ex.pod_name)).await;
    let r = p
        .mount(&ex.params_for(&bed), &bare)
        .await
        .expect("mount via TokenRequest");
    assert_eq!(text(&r, "db-password"), "aud");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_sync() {
    let bed = Bed::start().await;
    let ex = example("sync");
    ex.role(&bed, Some("vault")).await;
    bed.kv(json!({"username": "app", "password": "synced"})).await;
    // The example's RoleBinding binds the secret-sync component's ClusterRole
    // for the provider (in `csi`) in the pod's namespace (`default`): apply
    // it, placed in the test's namespaces.
    let binding =
        yaml_docs(&std::fs::read_to_string(Path::new(REPO).join("examples/sync/rolebinding.yaml")).unwrap()).remove(0);
    assert_eq!(binding["roleRef"]["name"], "vault-csi-provider-secret-sync");
    assert_eq!(binding["subjects"][0]["name"], PROVIDER_SA);
    assert_eq!(binding["subjects"][0]["namespace"], "csi", "deploy/base's namespace");
    assert_eq!(binding["metadata"]["namespace"], "default", "the pod's");
    let p = bed.provider("p", &[]).await;
    let pod = ex.pod(&bed).await;
    // Without the binding the mount fails and says so.
    let e = p.mount(&ex.params_for(&bed), &pod).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    let binding = vcp_testbed::kubernetes::cluster::sync_binding(binding, bed.provider_ns(), bed.ns()).unwrap();
    bed.kube.apply(&[binding]).await.unwrap();
    let r = p.mount(&ex.params_for(&bed), &pod).await.expect("sync example mounts");
    assert_eq!(text(&r, "password"), "synced");
    let secret = bed.secret("app-credentials").await;
    assert_eq!(secret["type"], "kubernetes.io/basic-auth");
    assert_eq!(secret["data"]["password"], "c3luY2Vk", "base64 of the Vault value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_openbao_kv() {
    let bed = Bed::start().await;
    let ex = example("openbao-kv");
    assert_eq!(ex.provider, "openbao");
    assert!(!ex.parameters.contains_key("audience"), "the socket's default audience");
    ex.role(&bed, Some("openbao")).await;
    bed.kv(json!({"password": "from-openbao", "mode": "prod"})).await;
    let p = openbao_provider(&bed, "p", &[], &[]).await;
    // Kubelet hands over the token for audience openbao (tokenRequests).
    let pod = ex.pod_for(&bed, "openbao").await;
    let r = p
        .mount(&ex.params_for(&bed), &pod)
        .await
        .expect("openbao-kv example mounts");
    assert_eq!(text(&r, "db-password"), "from-openbao");
    let config: Value = serde_json::from_str(&text(&r, "config/app.json")).unwrap();
    assert_eq!(config["mode"], "prod");
}

/// The committed example pins classes to the operator's Vault: a class
/// naming another address (or plain http, a unix socket, skipped TLS
/// verification) is refused while its request is parsed, before any
/// connection is made; one naming none mounts from the operator's Vault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_install_pins_classes_to_the_operators_vault() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    let example = variants().into_iter().find(|v| v.name == "deploy/example").unwrap();
    let (_, c) = provider_container(&example);
    let root = bed.dir.path();
    let provider_dir = root.join("provider");
    std::fs::create_dir_all(&provider_dir).unwrap();
    // Where the vault-ca ConfigMap is mounted.
    let ca_dir = root.join("vault-tls");
    std::fs::create_dir_all(&ca_dir).unwrap();
    // The rendered arguments, relocated, with the test's OpenBao in place of
    // the example's https://vault.example.com:8200 (TLS aside, the same pin).
    let operators = bed.world.bao.addr();
    let mut args: Vec<String> = strings(&c["args"])
        .into_iter()
        .map(|a| a.replace("/provider/", &format!("{}/", provider_dir.display())))
        .map(|a| a.replace("=/vault/tls", &format!("={}", ca_dir.display())))
        .map(|a| a.replace("https://vault.example.com:8200", &operators))
        .map(|a| {
            if a.starts_with("-health-addr=") {
                "-health-addr=127.0.0.1:0".to_string()
            } else {
                a
            }
        })
        .collect();
    for pinned in [
        "-spc-allow-http=false",
        "-spc-allow-unix=false",
        "-spc-allow-skip-tls-verify=false",
        "-spc-allowed-audiences=vault",
        "-spc-allowed-tls-server-names=vault.example.com",
    ] {
        assert!(
            args.contains(&pinned.to_string()),
            "the example sets {pinned}: {args:?}"
        );
    }
    assert!(
        args.contains(&format!("-spc-allowed-vault-addrs={operators}")),
        "the example lists only its own Vault: {args:?}"
    );
    args.push(format!(
        "-kubeconfig={}",
        in_cluster_stand_in(&bed, "example").await.display()
    ));
    args.push(format!("-hmac-secret-namespace={}", bed.provider_ns()));
    let socket = provider_dir.join("vault.sock");
    let p = spawn_provider(
        &args,
        socket,
        root.join("example.log"),
        &[("VAULT_ADDR", &operators)],
        "provider starts with the example's arguments",
    )
    .await;

    // Another server that counts every connection made to it.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = format!("https://{}", elsewhere.local_addr().unwrap());
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = elsewhere.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let pod = bed.pod("web-0").await;
    let sock = root.join("agent.sock");
    let http_other = other.replace("https://", "http://");
    let unix = format!("unix://{}", sock.display());
    for (what, extra, needle) in [
        (
            "another https address",
            vec![("vaultAddress", other.as_str())],
            "-spc-allowed-vault-addrs",
        ),
        (
            "another plain-http address",
            vec![("vaultAddress", http_other.as_str())],
            "-spc-allow-http=false",
        ),
        (
            "a unix socket on the node",
            vec![("vaultAddress", unix.as_str())],
            "-spc-allow-unix=false",
        ),
        (
            "an unverified connection to the operator's Vault",
            vec![("vaultSkipTLSVerify", "true")],
            "-spc-allow-skip-tls-verify=false",
        ),
        (
            "another TLS server name",
            vec![("vaultTLSServerName", "vault.elsewhere.example")],
            "-spc-allowed-tls-server-names",
        ),
        (
            "another audience",
            vec![("audience", "elsewhere")],
            "-spc-allowed-audiences",
        ),
        (
            "a CA file outside the operator's directory",
            vec![("vaultCACertPath", "/etc/hostname")],
            "-spc-file-dirs",
        ),
    ] {
        let e = p.mount(&params(KV_OBJECT, &extra), &pod).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {}", e.message());
        assert!(e.message().contains(needle), "{what}: {}", e.message());
    }
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was sent to the address a class named"
    );
    let r = p
        .mount(&params(KV_OBJECT, &[]), &pod)
        .await
        .expect("a class naming no address mounts from the operator's Vault");
    assert_eq!(text(&r, "k"), "v");
    let named = p
        .mount(&params(KV_OBJECT, &[("vaultAddress", operators.as_str())]), &pod)
        .await
        .expect("a class naming the operator's own address mounts too");
    assert_eq!(text(&named, "k"), "v");
    assert!(
        !p.logs().contains("the tenant policy is open"),
        "the example closes every switch: {}",
        p.logs()
    );
    // The base's defaults (the incumbent's) leave them open, and say so once.
    let open = bed.provider("open", &[]).await;
    let warned: Vec<String> = open
        .logs()
        .lines()
        .filter(|l| l.contains("the tenant policy is open"))
        .map(str::to_owned)
        .collect();
    assert_eq!(warned.len(), 1, "{}", open.logs());
    for flag in [
        "-spc-allowed-vault-addrs",
        "-spc-allow-http=true",
        "-spc-allow-unix=true",
        "-spc-allow-skip-tls-verify=true",
        "-spc-file-dirs",
        "-spc-allowed-audiences",
        "-spc-allowed-tls-server-names",
    ] {
        assert!(warned[0].contains(flag), "{flag}: {}", warned[0]);
    }
}
