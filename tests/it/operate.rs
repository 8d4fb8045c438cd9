//! Operating the provider: `/metrics` after real mounts, readiness and
//! liveness with meaning, the runtime log level, and the `mount` and `check`
//! subcommands — against a real OpenBao and the Kubernetes API double,
//! through the real binary.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;
use serde_json::json;
use tonic::Code;
use vcp_testbed::driver::{mount_request, Generation, PodContext};

const BIN: &str = env!("CARGO_BIN_EXE_vault-csi-provider");

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http(addr, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    body
}

/// The value of the series `series` (name and labels exactly as exported).
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} in\n{metrics}"))
        .parse()
        .unwrap()
}

const OBJECTS: &str = KV_OBJECT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_successful_failed_and_cached_mounts() {
    let (bed, p) = Bed::ready().await;
    let addr = health_addr(&p);
    let pod = bed.pod("web-0").await;

    let m = scrape(addr).await;
    assert_eq!(
        value(&m, r#"vault_csi_provider_mounts_total{result="ok",code="OK"}"#),
        0.0
    );
    assert!(m.contains("vault_csi_provider_build_info{version=\""), "{m}");

    // A fresh login, then a cached token.
    p.mount(&params(OBJECTS, &[]), &pod).await.expect("first mount");
    p.mount(&params(OBJECTS, &[]), &pod).await.expect("cached mount");
    // Two failures of different kinds: a missing secret (after a read) and
    // bad input (before anything is sent).
    let e = refused(
        &p,
        "- {objectName: k, secretPath: secret/data/none, secretKey: k}\n",
        &pod,
    )
    .await;
    assert_eq!(e.code(), Code::NotFound);
    let e = refused(&p, "- {objectName: ../k, secretPath: s/a}\n", &pod).await;
    assert_eq!(e.code(), Code::InvalidArgument);

    let m = scrape(addr).await;
    let v = |s: &str| value(&m, s);
    assert_eq!(v(r#"vault_csi_provider_mounts_total{result="ok",code="OK"}"#), 2.0);
    assert_eq!(
        v(r#"vault_csi_provider_mounts_total{result="not_found",code="NOT_FOUND"}"#),
        1.0
    );
    assert_eq!(
        v(r#"vault_csi_provider_mounts_total{result="invalid_request",code="INVALID_ARGUMENT"}"#),
        1.0
    );
    // The histogram: every observation is in +Inf and in the 120 s bucket,
    // buckets never decrease, and the sum moved.
    for (outcome, n) in [("ok", 2.0), ("error", 2.0)] {
        assert_eq!(
            v(&format!(
                r#"vault_csi_provider_mount_duration_seconds_count{{outcome="{outcome}"}}"#
            )),
            n
        );
        assert_eq!(
            v(&format!(
                r#"vault_csi_provider_mount_duration_seconds_bucket{{le="+Inf",outcome="{outcome}"}}"#
            )),
            n
        );
        assert_eq!(
            v(&format!(
                r#"vault_csi_provider_mount_duration_seconds_bucket{{le="120.0",outcome="{outcome}"}}"#
            )),
            n
        );
        assert!(
            v(&format!(
                r#"vault_csi_provider_mount_duration_seconds_sum{{outcome="{outcome}"}}"#
            )) > 0.0
        );
        let buckets: Vec<f64> = m
            .lines()
            .filter(|l| {
                l.starts_with("vault_csi_provider_mount_duration_seconds_bucket{")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(buckets.len(), 15, "14 bounds and +Inf");
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    }
    // Vault: one login (the second mount used the cache), three reads, one 404.
    assert_eq!(
        v(r#"vault_csi_provider_vault_requests_total{operation="login",status="2xx"}"#),
        1.0
    );
    assert_eq!(
        v(r#"vault_csi_provider_vault_requests_total{operation="read",status="2xx"}"#),
        2.0
    );
    assert_eq!(
        v(r#"vault_csi_provider_vault_requests_total{operation="read",status="4xx"}"#),
        1.0
    );
    assert_eq!(
        v(r#"vault_csi_provider_vault_request_duration_seconds_count{operation="login"}"#),
        1.0
    );
    assert_eq!(v("vault_csi_provider_token_cache_misses_total"), 1.0);
    assert_eq!(v("vault_csi_provider_token_cache_hits_total"), 2.0);
    assert_eq!(v("vault_csi_provider_token_cache_size"), 1.0);
    assert_eq!(v("vault_csi_provider_token_cache_evictions_total"), 0.0);
    assert_eq!(v("vault_csi_provider_hmac_key_loaded"), 1.0);
    assert_eq!(v("vault_csi_provider_credentials_held"), 0.0);
    assert_eq!(v("vault_csi_provider_vault_up"), 1.0);
    // Low cardinality: no pod, path or secret names in any label.
    for needle in ["web-0", "secret/data", "\"k\""] {
        assert!(!m.contains(needle), "{needle} appears in the metrics");
    }

    // A one-entry cache evicts on the second pod.
    let small = bed.provider("small", &["-cache-size=1"]).await;
    let small_addr = health_addr(&small);
    let other = bed.pod("web-1").await;
    small.mount(&params(OBJECTS, &[]), &pod).await.unwrap();
    small.mount(&params(OBJECTS, &[]), &other).await.unwrap();
    let m = scrape(small_addr).await;
    assert_eq!(value(&m, "vault_csi_provider_token_cache_evictions_total"), 1.0);
    assert_eq!(value(&m, "vault_csi_provider_token_cache_size"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_changes_at_runtime_through_the_health_port() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    let p = bed.provider("p", &["-log-level=info"]).await;
    let addr = health_addr(&p);
    let pod = bed.pod("web-0").await;
    let infos = |p: &Provider| p.logs().lines().filter(|l| l.contains(" INFO ")).count();

    assert_eq!(http(addr, "GET", "/log-level", "").await, (200, "info\n".to_string()));
    assert_eq!(http(addr, "PUT", "/log-level", "warn").await.0, 200);
    assert_eq!(http(addr, "GET", "/log-level", "").await, (200, "warn\n".to_string()));
    let before = infos(&p);
    p.mount(&params(OBJECTS, &[]), &pod).await.unwrap();
    assert_eq!(infos(&p), before, "no info line at level warn");

    let (status, body) = http(addr, "PUT", "/log-level", "loud").await;
    assert_eq!(status, 400);
    assert!(body.contains("unknown log level"), "{body}");

    assert_eq!(http(addr, "PUT", "/log-level", "debug\n").await.0, 200);
    p.mount(&params(OBJECTS, &[]), &pod).await.unwrap();
    let logs = p.logs();
    let line = logs
        .lines()
        .rev()
        .find(|l| l.contains(" INFO ") && l.contains("result=\"ok\""))
        .expect("the per-mount info line is back");
    let namespace = format!("namespace={}", bed.ns());
    for field in ["pod=web-0", &namespace, "spc=spc", "objects=1", "duration_ms="] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert!(logs.contains("DEBUG"), "debug lines after switching to debug");
    assert!(
        !logs.contains("\"v\"") && !logs.contains("=v "),
        "a secret value reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_needs_the_key_and_the_socket_and_vault_down_changes_neither_probe() {
    let bed = Bed::start().await;
    bed.kv_secret().await;

    // 1. The key Secret lives in a namespace the provider may not read yet:
    // the socket serves, but the provider is not ready until it may.
    let locked = bed.kube.namespace("locked").await.unwrap();
    let p = bed
        .provider("locked", &[&format!("-hmac-secret-namespace={locked}")])
        .await;
    let addr = health_addr(&p);
    let (status, body) = http(addr, "GET", "/health/ready", "").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("key not loaded"), "{body}");
    assert_eq!(http(addr, "GET", "/health/live", "").await.0, 200);
    // An admin lets it: a Role for Secrets there, bound to its account.
    bed.kube
        .apply(&[
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "key", "namespace": locked},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]}],
            }),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "key", "namespace": locked},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "key"},
                "subjects": [{"kind": "ServiceAccount", "name": PROVIDER_SA, "namespace": bed.provider_ns()}],
            }),
        ])
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "readiness once the key loads", || async {
        http(addr, "GET", "/health/ready", "").await.0 == 200
    })
    .await;

    // 2. Not ready as soon as the socket stops serving (SIGTERM drains a
    // slow mount), while still alive.
    let slow = Proxy::start(&bed.world.bao.addr(), Duration::from_millis(1500)).await;
    let p = bed.provider("p", &[&format!("-vault-addr={}", slow.url())]).await;
    let addr = health_addr(&p);
    eventually(Duration::from_secs(10), "readiness", || async {
        http(addr, "GET", "/health/ready", "").await.0 == 200
    })
    .await;
    let pod = bed.pod("web-0").await;
    let client = p.client(Generation::V16).await.unwrap();
    let req = mount_request(Generation::V16, "spc", &params(OBJECTS, &[]), &pod, false, Vec::new());
    let mount = tokio::spawn(async move { client.mount(req, Duration::from_secs(60)).await });
    eventually(Duration::from_secs(10), "the mount's login to reach Vault", || async {
        slow.seen().iter().any(|s| s.path.contains("/auth/"))
    })
    .await;
    p.sigterm();
    eventually(Duration::from_secs(2), "not ready while draining", || async {
        http(addr, "GET", "/health/ready", "").await.0 == 503
    })
    .await;
    assert!(!mount.is_finished(), "the check ran during the drain");
    assert_eq!(http(addr, "GET", "/health/live", "").await.0, 200);
    mount.await.unwrap().expect("the drained mount completes");

    // 3. Vault down: ready and live, vault_up 0, a log line, UNAVAILABLE.
    let dead = format!("http://127.0.0.1:{}", vcp_testbed::ports::free_port().unwrap());
    let p = bed.provider("down", &[&format!("-vault-addr={dead}")]).await;
    let addr = health_addr(&p);
    eventually(Duration::from_secs(10), "the Vault-unreachable log line", || async {
        p.logs().contains("Vault address is unreachable")
    })
    .await;
    // A down Vault is retried until the deadline (the driver's 5 s, less 2 s).
    let req = mount_request(Generation::V16, "spc", &params(OBJECTS, &[]), &pod, false, Vec::new());
    let client = p.client(Generation::V16).await.expect("socket accepts");
    let e = client.mount(req, Duration::from_secs(5)).await.unwrap_err();
    assert_failed_as(&p, &e, "vault_unavailable");
    let m = scrape(addr).await;
    assert_eq!(value(&m, "vault_csi_provider_vault_up"), 0.0);
    assert_eq!(
        value(
            &m,
            r#"vault_csi_provider_mounts_total{result="vault_unavailable",code="FAILED_PRECONDITION"}"#
        ),
        1.0
    );
    assert!(
        value(
            &m,
            r#"vault_csi_provider_vault_requests_total{operation="login",status="error"}"#
        ) >= 1.0
    );
    assert_eq!(http(addr, "GET", "/health/live", "").await.0, 200);
    eventually(Duration::from_secs(10), "ready although Vault is down", || async {
        http(addr, "GET", "/health/ready", "").await.0 == 200
    })
    .await;
}

/// The JWT inside a pod's `serviceAccount.tokens`.
fn pod_jwt(pod: &PodContext) -> String {
    let tokens: serde_json::Value = serde_json::from_str(pod.tokens.as_deref().expect("tokens")).unwrap();
    tokens["vault"]["token"].as_str().unwrap().to_string()
}

fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .env_remove("VAULT_ADDR")
        .env_remove("KUBECONFIG")
        .env_remove("VAULT_NAMESPACE")
        .output()
        .expect("run the binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_subcommand_writes_the_files_and_modes_the_grpc_path_returns() {
    let bed = Bed::start().await;
    bed.kv(json!({"password": "s3cret-value", "port": 5432})).await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = "- objectName: password\n  secretPath: secret/data/app\n  secretKey: password\n  filePermission: 0600\n- objectName: config/port\n  secretPath: /v1/secret/data/app\n  secretKey: port\n  filePermission: 0440\n- objectName: whole.json\n  secretPath: secret/data/app\n";
    let grpc = p.mount(&params(objects, &[]), &pod).await.expect("gRPC mount");

    let dir = bed.dir.path();
    let spc = dir.join("spc.yaml");
    let indented: String = objects.lines().map(|l| format!("      {l}\n")).collect();
    std::fs::write(
        &spc,
        format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: spc\n  namespace: {}\nspec:\n  provider: vault\n  parameters:\n    roleName: app\n    objects: |\n{indented}",
            bed.ns()
        ),
    )
    .unwrap();
    let token = dir.join("token");
    std::fs::write(&token, pod_jwt(&pod)).unwrap();
    let kubeconfig = dir.join("p.kubeconfig");
    let target = dir.join("target");
    let vault_addr = format!("-vault-addr={}", bed.world.bao.addr());
    let kube_flag = format!("-kubeconfig={}", kubeconfig.display());
    let key_namespace = format!("-hmac-secret-namespace={}", bed.provider_ns());
    let common = [
        "mount",
        spc.to_str().unwrap(),
        &vault_addr,
        &key_namespace,
        "--pod-name=web-0",
        "--service-account=app",
    ];

    let mut args = common.to_vec();
    args.extend([
        &kube_flag as &str,
        "--token-file",
        token.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = run_cli(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(grpc.files.len(), 3);
    for f in &grpc.files {
        let path = target.join(&f.path);
        assert_eq!(std::fs::read(&path).unwrap(), f.contents, "{}", f.path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode as i32, f.mode, "mode of {}", f.path);
    }
    assert!(target.join("..data").is_symlink(), "the driver's ..data layout");
    // Same versions as the provider: the key Secret was read, not created.
    for v in &grpc.object_version {
        assert!(
            stdout.contains(&v.version),
            "version of {} missing from\n{stdout}",
            v.id
        );
    }
    assert!(!stdout.contains("s3cret-value") && !stderr.contains("s3cret-value"));

    // Again into the same directory: the layout is replaced, not refused.
    let (code, stdout, stderr) = run_cli(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");

    // The key from a file (base64, as in the Secret) gives the same versions.
    let secret = bed.key_secret(KEY_SECRET).await;
    let key_file = dir.join("hmac.key");
    std::fs::write(&key_file, secret["data"]["key"].as_str().unwrap()).unwrap();
    let mut args = common.to_vec();
    args.extend([
        "--token-file",
        token.to_str().unwrap(),
        "--hmac-key-file",
        key_file.to_str().unwrap(),
        "--dry-run",
    ]);
    let (code, stdout, stderr) = run_cli(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("dry run"), "{stdout}");
    for v in &grpc.object_version {
        assert!(stdout.contains(&v.version), "{stdout}");
    }
    assert!(stdout.contains("0600") && stdout.contains("0440") && stdout.contains("config/port"));
    assert!(
        !stdout.contains("s3cret-value") && !stdout.contains("5432\n"),
        "{stdout}"
    );

    // No token file: a token is requested through the TokenRequest API,
    // bound to the pod, for the class's audience.
    let mut args = common.to_vec();
    let uid = format!("--pod-uid={}", pod.uid);
    args.extend([&kube_flag as &str, &uid, "--param", "audience=vault", "--dry-run"]);
    let (code, stdout, stderr) = run_cli(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");

    // A failure says what failed and the gRPC code the driver would see.
    let mut args = common.to_vec();
    args.extend([
        "--token-file",
        token.to_str().unwrap(),
        "--param",
        "roleName=nope",
        "--dry-run",
    ]);
    let (code, _, stderr) = run_cli(&args);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("role \"nope\""), "{stderr}");
    assert!(
        stderr.contains("FAILED_PRECONDITION") || stderr.contains("PERMISSION_DENIED"),
        "{stderr}"
    );
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn check_reports_every_error_with_its_line() {
    let file = fixture("broken.yaml");
    let (code, out, err) = run_cli(&["check", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}\n{err}");
    let expected: [(usize, &str); 12] = [
        (12, "objectName \"not-an-object\" is not one of the objects"),
        (14, "roleName is missing"),
        (15, "vaultKubernetesMountPath and vaultAuthMountPath are both set"),
        (17, "vaultSkipTLSVerify: \"maybe\" is not a boolean"),
        (18, "vaultAddress: \"ftp://vault:8200\" must start with https://"),
        (
            19,
            "vaultTLSClientCertPath and vaultTLSClientKeyPath must be set together",
        ),
        (22, "objectName: \"../escape\" must not contain \"..\""),
        (24, "unknown encoding \"base32\""),
        (28, "filePermission: 0o1777 is larger than 0777"),
        (31, "secretPath: missing"),
        (45, "parameter objects is not a YAML list of objects"),
        (55, "spec.parameters.vaultSkipTLSVerify is a boolean"),
    ];
    let name = file.display().to_string();
    for (line, text) in expected {
        let prefix = format!("{name}:{line}: error: ");
        assert!(
            out.lines().any(|l| l.starts_with(&prefix) && l.contains(text)),
            "missing {prefix}...{text} in\n{out}"
        );
        // The line itself is shown under the message.
        assert!(out.contains(&format!("{line:>6} | ")), "no context for line {line}");
    }
    assert!(out.contains("method: \"DELETE\" is not supported"), "{out}");
    assert!(out.contains("did you mean roleName?"), "{out}");
    assert!(out.contains("3 SecretProviderClasses checked, 13 problems"), "{out}");
}

#[test]
fn check_prints_the_normalised_plan_of_valid_classes() {
    let file = fixture("valid.yaml");
    let (code, out, err) = run_cli(&["check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("SecretProviderClass default/app-kv: ok"), "{out}");
    assert!(out.contains("3 files from 1 Vault request"), "{out}");
    assert!(
        out.contains("0600  db-password  <- request #1 GET /v1/secret/data/app: key \"password\""),
        "{out}"
    );
    assert!(
        out.contains("2 files from 1 Vault request"),
        "equal secretArgs share one issue: {out}"
    );
    assert!(out.contains("2 SecretProviderClasses checked, 0 problems"), "{out}");
    // Go-style flags and no subcommand still mean the server.
    let (code, _, err) = run_cli(&[
        "-endpoint=/nonexistent/dir/x.sock",
        "-health-addr=",
        "-kubeconfig=/nonexistent",
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("Kubernetes API configuration"), "{err}");
}

/// Every SecretProviderClass document under `examples/`.
fn example_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                if text.contains("kind: SecretProviderClass") {
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"), &mut out);
    out.sort();
    out
}

#[test]
fn check_passes_on_every_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    if !dir.exists() {
        // The examples land separately; until then there is nothing to
        // check, and saying so beats failing the whole suite.
        eprintln!("NOTE: {} does not exist yet: no examples checked", dir.display());
        return;
    }
    let files = example_files();
    assert!(
        !files.is_empty(),
        "examples/ holds no SecretProviderClass YAML: this test would check nothing"
    );
    let mut args = vec!["check".to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run_cli(&args);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_metrics_follow_held_credentials_and_renewals() {
    let bed = Bed::start().await;
    bed.database("3s", "1h").await;
    let p = bed.provider("p", &[]).await;
    let addr = health_addr(&p);
    let pod = bed.pod("web-0").await;
    let objects = "- {objectName: user, secretPath: database/creds/app, secretKey: username}\n";
    p.mount(&params(objects, &[]), &pod).await.expect("mount");
    let m = scrape(addr).await;
    assert_eq!(value(&m, "vault_csi_provider_credentials_held"), 1.0);
    let expiry = value(&m, "vault_csi_provider_credential_soonest_expiry_seconds");
    assert!(expiry > 0.0 && expiry <= 3.0, "{expiry}");
    // With a 3 s lease the ledger renews it within about 2 s.
    eventually(Duration::from_secs(10), "a lease renewal", || async {
        value(
            &scrape(addr).await,
            r#"vault_csi_provider_credential_renewals_total{result="ok"}"#,
        ) >= 1.0
    })
    .await;
    let m = scrape(addr).await;
    assert!(
        value(
            &m,
            r#"vault_csi_provider_vault_requests_total{operation="renew",status="2xx"}"#
        ) >= 1.0
    );
}

/// Managed clusters (EKS, GKE, AKS) hand out kubeconfigs whose user runs an
/// `exec` credential plugin; `mount` must work with them, as kubectl does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_subcommand_uses_a_kubeconfig_with_an_exec_credential_plugin() {
    use std::os::unix::fs::PermissionsExt as _;
    let bed = Bed::start().await;
    bed.kv_secret().await;
    // The provider's key Secret exists, as on a cluster running the provider.
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = KV_OBJECT;
    let grpc = p.mount(&params(objects, &[]), &pod).await.expect("gRPC mount");

    let dir = bed.dir.path();
    // The plugin: prints an ExecCredential with a token the API accepts, and
    // records that it ran.
    let token = bed
        .kube
        .service_account_token(
            bed.provider_ns(),
            PROVIDER_SA,
            &[],
            std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap();
    let ran = dir.join("plugin-ran");
    let plugin = dir.join("credential-plugin.sh");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\ntouch '{}'\ncat <<'JSON'\n{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{token}\"}}}}\nJSON\n",
            ran.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plain = dir.join("plain.kubeconfig");
    bed.kube.write_kubeconfig(&plain, "unused", bed.ns()).unwrap();
    let mut kubeconfig: serde_json::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&plain).unwrap()).unwrap();
    kubeconfig["users"][0]["user"] = json!({"exec": {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": plugin.display().to_string(),
        "args": ["--cluster", "test"],
        "interactiveMode": "Never",
    }});
    let exec_config = dir.join("exec.kubeconfig");
    std::fs::write(&exec_config, serde_yaml_ng::to_string(&kubeconfig).unwrap()).unwrap();

    let spc = dir.join("spc.yaml");
    std::fs::write(
        &spc,
        format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: spc\n  namespace: {}\nspec:\n  provider: vault\n  parameters:\n    roleName: app\n    audience: vault\n    objects: |\n      {}",
            bed.ns(),
            objects.trim_end()
        ),
    )
    .unwrap();
    let vault_addr = format!("-vault-addr={}", bed.world.bao.addr());
    let kube_flag = format!("-kubeconfig={}", exec_config.display());
    let uid = format!("--pod-uid={}", pod.uid);
    // No token file: the key Secret is read and a pod token requested
    // through the API, both as the plugin's identity.
    let (code, stdout, stderr) = run_cli(&[
        "mount",
        spc.to_str().unwrap(),
        &vault_addr,
        &kube_flag,
        &format!("-hmac-secret-namespace={}", bed.provider_ns()),
        "--pod-name=web-0",
        &uid,
        "--service-account=app",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(ran.exists(), "the exec plugin ran");
    for v in &grpc.object_version {
        assert!(stdout.contains(&v.version), "same versions as the provider\n{stdout}");
    }
}

/// Context switches of each thread of process `pid` so far, by thread id:
/// each is the thread waking (or being woken) once.
fn wake_ups(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut threads = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the provider's threads")
        .flatten()
    {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let n: u64 = status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum();
        threads.insert(task.file_name().to_string_lossy().into_owned(), n);
    }
    threads
}

/// Wake-ups between two [`wake_ups`] samples (a thread that ended between
/// them takes its own along: the count is a floor).
fn woken_since(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> u64 {
    after
        .iter()
        .map(|(tid, n)| n.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

/// An idle provider (a pod mounted, its token and lease held, nothing due
/// for an hour) wakes only for what is due: the ledger sleeps until its next
/// job instead of a fixed round, so the process's threads wake about as
/// often as the Vault health probes ask (every 5 s per connection, every
/// 30 s for `vault_up`). Run: `cargo test --test it operate::idle -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_the_provider_wakes_only_for_what_is_due() {
    let (bed, p) = Bed::ready().await;
    let pod = bed.pod("web-0").await;
    p.mount(&params(KV_OBJECT, &[]), &pod).await.unwrap();
    let pid = p.child.id().unwrap();
    // Let the mount's after-effects (the state file written, connections
    // settled) pass first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (before, started) = (wake_ups(pid), std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let rate = woken_since(&before, &wake_ups(pid)) as f64 / started.elapsed().as_secs_f64();
    println!("IDLE | {rate:.1} thread wake-ups per second, idle with one pod held");
    assert!(rate < 3.0, "{rate:.1} wake-ups per second while idle");
}
