//! Shared harness for the integration tests: a real OpenBao, the test's
//! share of a real kube-apiserver (namespaces of its own, behind a fault
//! proxy; OpenBao's kubernetes auth reviews through it, so every login is a
//! genuine TokenReview), and the real provider binary serving a unix socket
//! as its own ServiceAccount, driven by the driver-like client.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use vault_csi_provider::proto::MountResponse;
use vcp_testbed::driver::PodContext;
use vcp_testbed::kubernetes::cluster::Cluster;

pub use vcp_testbed::vault::fault_proxy::{Fault, Proxy, Seen};
pub use vcp_testbed::world::{params, Provider, World, APP_SA, KEY_SECRET, PROVIDER_SA, READ_ALL};

/// The one-object class most tests mount: file `k` with the value of key
/// `k` of `secret/data/app` (see [`Bed::kv_secret`]).
pub const KV_OBJECT: &str = "- {objectName: k, secretPath: secret/data/app, secretKey: k}\n";

/// One test's world, with its scratch directory.
pub struct Bed {
    pub world: World,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for Bed {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl Bed {
    /// Starts OpenBao and takes a share of the real control plane (see
    /// [`World::start`]).
    pub async fn start() -> Bed {
        let dir = tempfile::tempdir().expect("tempdir");
        let world = World::start(dir.path())
            .await
            .expect("test world starts (run scripts/test.sh, which installs OpenBao and unpacks the envtest assets)");
        Bed { world, dir }
    }

    /// The arrangement most tests start from: the KV secret [`KV_OBJECT`]
    /// reads, and provider `p` serving.
    pub async fn ready() -> (Bed, Provider) {
        let bed = Bed::start().await;
        bed.kv_secret().await;
        let p = bed.provider("p", &[]).await;
        (bed, p)
    }

    /// The database engine with role `app` issuing PostgreSQL logins of
    /// `default_ttl` (at most `max_ttl`), and the PostgreSQL server.
    pub async fn database(&self, default_ttl: &str, max_ttl: &str) -> vcp_testbed::postgres::Postgres {
        self.world
            .database(default_ttl, max_ttl)
            .await
            .expect("database engine (run scripts/test.sh, which starts PostgreSQL)")
    }

    /// A pod of service account `app` in the test's namespace, on the
    /// provider's node, with a kubelet token for audience `vault`.
    pub async fn pod(&self, name: &str) -> PodContext {
        self.world.pod(self.ns(), name, APP_SA).await.expect("pod with a token")
    }

    /// The same pod without a kubelet token in its volume context.
    pub async fn pod_without_token(&self, name: &str) -> PodContext {
        self.world
            .pod_without_token(self.ns(), name, APP_SA)
            .await
            .expect("pod")
    }

    /// Lets the world's provider sync Secrets into `ns`: the admin's
    /// RoleBinding of the secret-sync ClusterRole (`deploy/components/secret-sync`).
    pub async fn allow_sync(&self, ns: &str) {
        self.kube
            .allow_sync(self.provider_ns(), ns)
            .await
            .expect("sync RoleBinding");
    }

    /// Stores the KV v2 secret `secret/app` = `{"k": "v"}` that
    /// [`KV_OBJECT`] reads.
    pub async fn kv_secret(&self) {
        self.kv(serde_json::json!({"k": "v"})).await;
    }

    /// Stores `data` as the KV v2 secret `secret/app` (a new version).
    pub async fn kv(&self, data: serde_json::Value) {
        self.world
            .bao
            .kv2_put("secret", "app", data)
            .await
            .expect("KV secret stored");
    }

    /// The Secret `name` of the test's namespace, which must exist.
    pub async fn secret(&self, name: &str) -> serde_json::Value {
        self.existing_secret(self.ns(), name).await
    }

    /// The provider's object-version key Secret `name` (in the provider's
    /// namespace), which must exist.
    pub async fn key_secret(&self, name: &str) -> serde_json::Value {
        self.existing_secret(self.provider_ns(), name).await
    }

    async fn existing_secret(&self, ns: &str, name: &str) -> serde_json::Value {
        self.kube
            .secret(ns, name)
            .await
            .expect("reading a Secret")
            .unwrap_or_else(|| panic!("Secret {ns}/{name} exists"))
    }

    /// Enables KV v1 at `kv1/` and stores `data` at `kv1/app`.
    pub async fn kv1(&self, data: serde_json::Value) {
        let bao = &self.world.bao;
        bao.enable_secrets("kv1", "kv", serde_json::json!({"version": "1"}))
            .await
            .expect("KV v1 enabled");
        bao.write("kv1/app", data).await.expect("KV v1 secret stored");
    }

    /// Revokes every token kubernetes logins issued, behind the provider's
    /// back (and with them every lease they created).
    pub async fn revoke_logins(&self) {
        self.world
            .bao
            .write("sys/leases/revoke-prefix/auth/kubernetes/login", serde_json::json!({}))
            .await
            .expect("tokens revoked");
    }

    /// The provider binary built for these tests, held to the DaemonSet's
    /// memory limit (128 MiB of heap, see [`World::provider_limited`]).
    pub async fn provider_in_daemonset_limits(&self, name: &str, extra: &[&str]) -> Provider {
        self.world
            .provider_limited(provider_binary(), name, extra, 128 << 20)
            .await
            .expect("provider starts")
    }

    /// Starts the provider binary built for these tests.
    pub async fn provider(&self, name: &str, extra: &[&str]) -> Provider {
        self.world
            .provider(provider_binary(), name, extra)
            .await
            .expect("provider starts")
    }
}

/// The gRPC code the provider answers a failure of `kind` (its log and
/// metric label) with, as README's "Behaviour worth knowing" documents it:
/// never one kubelet would take as still in progress.
pub fn code_of(kind: &str) -> tonic::Code {
    use tonic::Code;
    match kind {
        "invalid_request" | "too_large" => Code::InvalidArgument,
        "vault_denied" | "kube_denied" | "not_this_pod" => Code::PermissionDenied,
        "not_found" => Code::NotFound,
        "vault_rejected" | "sync_refused" | "vault_unavailable" | "kube_unavailable" | "vault_failed" | "timeout"
        | "busy" => Code::FailedPrecondition,
        "bad_response" | "internal" => Code::Internal,
        other => panic!("the provider has no failure kind {other:?}"),
    }
}

/// Asserts that `e` is `p`'s answer to a failure of `kind`: the kind's
/// code, and `p`'s latest `mount failed` log line naming the kind.
pub fn assert_failed_as(p: &Provider, e: &tonic::Status, kind: &str) {
    assert_eq!(e.code(), code_of(kind), "{kind}: {}", e.message());
    let logs = p.logs();
    let line = logs
        .lines()
        .rev()
        .find(|l| l.contains("mount failed"))
        .unwrap_or_else(|| panic!("no `mount failed` line in the log:\n{logs}"));
    assert!(line.contains(&format!("result=\"{kind}\"")), "{kind} expected: {line}");
}

/// Whether the test may go on: true on the real kube-apiserver; on the
/// double, says (past the harness's capture, so it shows in every run's
/// output) that this test runs only on the real server and why.
pub fn real_server_only(kube: &Cluster, why: &str) -> bool {
    if kube.control_plane().backend().is_real() {
        return true;
    }
    use std::io::Write as _;
    let test = std::thread::current().name().unwrap_or("this test").to_string();
    let _ = writeln!(
        std::io::stderr(),
        "{test}: runs only on the real kube-apiserver (set KUBEBUILDER_ASSETS): {why}"
    );
    false
}

/// The health port the provider logged (it binds `127.0.0.1:0`).
pub fn health_addr(p: &Provider) -> std::net::SocketAddr {
    let logs = p.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("health server listening"))
        .unwrap_or_else(|| panic!("no health server line in the log:\n{logs}"));
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .expect("addr= field");
    addr.parse().expect("socket address")
}

/// One HTTP/1.1 exchange; returns the status and body.
pub async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the health port");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "this helper reads fixed-length bodies only"
    );
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The provider binary built for these tests.
pub fn provider_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vault-csi-provider"))
}

/// Starts the provider binary with exactly `args` and `env` (as a chart or
/// a manifest renders them), serving `socket`, logging to `log`; panics
/// naming `what` if it does not start.
pub async fn spawn_provider(
    args: &[String],
    socket: PathBuf,
    log: PathBuf,
    env: &[(&str, &str)],
    what: &str,
) -> Provider {
    Provider::spawn(provider_binary(), args, socket, log, env)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

/// Mounts `objects` (role `app`) for `pod`, expecting the mount to be
/// refused; the status.
pub async fn refused(p: &Provider, objects: &str, pod: &PodContext) -> tonic::Status {
    p.mount(&params(objects, &[]), pod)
        .await
        .expect_err("the mount is refused")
}

/// Asserts that a refusal's message names every one of `parts`.
pub fn assert_mentions(e: &tonic::Status, parts: &[&str]) {
    for part in parts {
        assert!(e.message().contains(part), "{part:?} missing from {:?}", e.message());
    }
}

/// Waits until `f` holds, polling every 50 ms for at most `within`; panics
/// naming `what` otherwise. The one way tests wait for something to happen.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        if std::time::Instant::now() >= until {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// path → (mode, contents) of a response.
pub fn files(r: &MountResponse) -> BTreeMap<String, (i32, Vec<u8>)> {
    r.files
        .iter()
        .map(|f| (f.path.clone(), (f.mode, f.contents.clone())))
        .collect()
}

/// path → contents as text.
pub fn text(r: &MountResponse, path: &str) -> String {
    let f = r
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no file {path} in response"));
    String::from_utf8(f.contents.clone()).expect("utf-8 file")
}

/// id → version of a response.
pub fn versions(r: &MountResponse) -> BTreeMap<String, String> {
    r.object_version
        .iter()
        .map(|v| (v.id.clone(), v.version.clone()))
        .collect()
}

/// Runs `openssl` on PEM input and returns stdout.
pub fn openssl(args: &[&str], input: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// TokenReview calls that reached the API server (one per Vault login).
pub fn token_reviews(kube: &Cluster) -> usize {
    kube.requests()
        .iter()
        .filter(|(m, p)| m == "POST" && p.contains("tokenreviews"))
        .count()
}

/// Resident memory of a process, in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Peak resident memory of a process so far, in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("process status")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .count()
}

/// `token` with its claims edited after signing (its signature no longer
/// matches them).
pub fn forge(token: &str, edit: impl Fn(&mut serde_json::Value)) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    edit(&mut claims);
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    )
}

/// The JOSE header of a JWT.
pub fn jwt_header(token: &str) -> serde_json::Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let header = token.split('.').next().expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url header")).expect("a JSON header")
}

/// `pod` as kubelet describes it with `token` for audience `vault`.
pub fn with_token(pod: &PodContext, token: &str) -> PodContext {
    let mut p = pod.clone();
    p.tokens = Some(PodContext::tokens_json(
        "vault",
        token,
        std::time::SystemTime::now() + Duration::from_secs(3600),
    ));
    p
}
