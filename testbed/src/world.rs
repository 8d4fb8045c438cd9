//! A whole test world: a real OpenBao whose kubernetes auth method reviews
//! tokens through the real kube-apiserver (the test's share of it, behind
//! its fault proxy: see [`crate::kubernetes::cluster`]), plus pods, and provider
//! processes serving a unix socket, each as its own ServiceAccount with the
//! RBAC `deploy/` renders. Shared by the integration tests, the demo and
//! the benchmark, so all exercise the same wiring.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context as _};
use tokio::process::Child;

use crate::driver::{mount_request, DriverClient, Generation, PodContext};
use crate::kubernetes::cluster::Cluster;
use crate::kubernetes::control_plane::ControlPlane;
use crate::postgres::Postgres;
use crate::vault::openbao::{KubernetesRole, OpenBao};
use vcp_proto::{MountRequest, MountResponse};

pub use crate::kubernetes::cluster::PROVIDER_SA;

/// The object-version key Secret's default name (`-hmac-secret-name`), in
/// the provider's namespace.
pub const KEY_SECRET: &str = "vault-csi-provider-hmac-key";
/// Policy granting read on everything the tests use.
pub const READ_ALL: &str = "read-all";
/// The service account of the world's application pods, bound by role `app`.
pub const APP_SA: &str = "app";

/// OpenBao, the test's share of the Kubernetes control plane and a scratch
/// directory.
pub struct World {
    /// The real OpenBao dev server.
    pub bao: OpenBao,
    /// The real kube-apiserver, through the test's namespaces and proxy.
    pub kube: Cluster,
    /// Scratch directory for sockets, kubeconfigs and logs.
    pub dir: PathBuf,
}

impl World {
    /// Starts OpenBao, takes a share of the shared control plane, wires
    /// kubernetes auth, and creates role `app` for service account `app` of
    /// the test's namespace (audience `vault`).
    pub async fn start(dir: &Path) -> anyhow::Result<World> {
        let bao = OpenBao::start().await.context("starting OpenBao")?;
        Self::with(dir, bao).await
    }

    /// The same world with OpenBao serving TLS (its dev CA at
    /// `bao.ca_cert_path()`).
    pub async fn start_tls(dir: &Path) -> anyhow::Result<World> {
        let bao = OpenBao::start_tls().await.context("starting OpenBao with TLS")?;
        Self::with(dir, bao).await
    }

    /// The same world around an OpenBao started elsewhere (a handle to a
    /// node of a [`RaftCluster`](crate::vault::raft::RaftCluster)).
    pub async fn around(dir: &Path, bao: OpenBao) -> anyhow::Result<World> {
        Self::with(dir, bao).await
    }

    /// The same world on a control plane of its own (e.g. another signing
    /// algorithm).
    pub async fn on(dir: &Path, cp: Arc<ControlPlane>) -> anyhow::Result<World> {
        let bao = OpenBao::start().await.context("starting OpenBao")?;
        let kube = Cluster::on(cp)
            .await
            .context("a share of the Kubernetes control plane")?;
        Self::wired(dir, bao, kube).await
    }

    /// [`start`](Self::start) with namespaces named after `name` (rather
    /// than after the running test).
    pub async fn start_named(dir: &Path, name: &str) -> anyhow::Result<World> {
        let bao = OpenBao::start().await.context("starting OpenBao")?;
        let cp = ControlPlane::shared().await?;
        let kube = Cluster::named(cp, name)
            .await
            .context("a share of the Kubernetes control plane")?;
        Self::wired(dir, bao, kube).await
    }

    async fn with(dir: &Path, bao: OpenBao) -> anyhow::Result<World> {
        let kube = Cluster::start()
            .await
            .context("a share of the Kubernetes control plane")?;
        Self::wired(dir, bao, kube).await
    }

    async fn wired(dir: &Path, bao: OpenBao, kube: Cluster) -> anyhow::Result<World> {
        wire_vault(&bao, &kube).await?;
        Ok(World {
            bao,
            kube,
            dir: dir.to_path_buf(),
        })
    }

    /// Wires OpenBao to the control plane again (see [`wire_vault`]):
    /// after a dev-mode restart, which forgets all configuration.
    pub async fn configure_vault(&self) -> anyhow::Result<()> {
        wire_vault(&self.bao, &self.kube).await
    }

    /// The test's namespace, where its application pods run.
    pub fn ns(&self) -> &str {
        &self.kube.namespace
    }

    /// Role `name` for the world's application pods (see [`app_role`]).
    pub fn role(&self, name: &str) -> KubernetesRole<'_> {
        app_role(&self.bao, self.ns(), name)
    }

    /// The database engine at `database/` with role `app` issuing
    /// PostgreSQL logins of `default_ttl` (at most `max_ttl`); the server
    /// (`VCP_TEST_PG_URL`, see `scripts/testbed.sh pg-start`).
    pub async fn database(&self, default_ttl: &str, max_ttl: &str) -> anyhow::Result<Postgres> {
        let pg = Postgres::from_env().context("PostgreSQL for tests (scripts/testbed.sh pg-start)")?;
        self.bao
            .setup_database("database", &pg, "app", default_ttl, max_ttl)
            .await?;
        Ok(pg)
    }

    /// The provider's namespace (its ServiceAccount, RBAC and key Secret).
    pub fn provider_ns(&self) -> &str {
        &self.kube.provider_namespace
    }

    /// Adds a pod on the world's node and returns what kubelet tells the
    /// driver about it, with a token for audience `vault` (as the
    /// CSIDriver's `tokenRequests` asks).
    pub async fn pod(&self, ns: &str, name: &str, sa: &str) -> anyhow::Result<PodContext> {
        let mut pod = self.pod_without_token(ns, name, sa).await?;
        let ttl = Duration::from_secs(3600);
        let token = self.kube.bound_token(ns, name, &pod.uid, sa, &["vault"], ttl).await?;
        pod.tokens = Some(PodContext::tokens_json("vault", &token, SystemTime::now() + ttl));
        Ok(pod)
    }

    /// kubelet's `serviceAccount.tokens` for `pod` (audience `vault`),
    /// freshly minted: what every NodePublishVolume brings.
    pub async fn fresh_tokens(&self, pod: &PodContext) -> anyhow::Result<Option<String>> {
        let ttl = Duration::from_secs(3600);
        let token = self
            .kube
            .bound_token(
                &pod.namespace,
                &pod.name,
                &pod.uid,
                &pod.service_account,
                &["vault"],
                ttl,
            )
            .await?;
        Ok(Some(PodContext::tokens_json("vault", &token, SystemTime::now() + ttl)))
    }

    /// Adds a pod on the world's node whose volume context carries no token.
    pub async fn pod_without_token(&self, ns: &str, name: &str, sa: &str) -> anyhow::Result<PodContext> {
        let uid = self.kube.add_pod(ns, name, sa, &self.kube.node).await?;
        Ok(PodContext {
            name: name.to_string(),
            namespace: ns.to_string(),
            uid,
            service_account: sa.to_string(),
            tokens: None,
        })
    }

    /// A kubeconfig for the provider's ServiceAccount installed in `ns`,
    /// written to `<dir>/<name>.kubeconfig`, whose context names `ns`.
    pub async fn provider_kubeconfig(&self, ns: &str, name: &str) -> anyhow::Result<PathBuf> {
        let token = self
            .kube
            .service_account_token(ns, PROVIDER_SA, &[], Duration::from_secs(86400))
            .await?;
        let kubeconfig = self.dir.join(format!("{name}.kubeconfig"));
        self.kube.write_kubeconfig(&kubeconfig, &token, ns)?;
        Ok(kubeconfig)
    }

    /// The arguments a provider named `name` runs with in this world: as
    /// the provider's ServiceAccount of the world's provider namespace.
    pub async fn provider_args(&self, name: &str) -> anyhow::Result<(Vec<String>, PathBuf)> {
        let kubeconfig = self.provider_kubeconfig(self.provider_ns(), name).await?;
        let socket = self.dir.join(format!("{name}.sock"));
        let args = vec![
            format!("-endpoint={}", socket.display()),
            format!("-vault-addr={}", self.bao.addr()),
            format!("-kubeconfig={}", kubeconfig.display()),
            format!("-hmac-secret-namespace={}", self.provider_ns()),
            format!("-state-file={}", self.dir.join(format!("{name}.state")).display()),
            "-health-addr=127.0.0.1:0".to_string(),
            "-log-level=debug".to_string(),
        ];
        Ok((args, socket))
    }

    /// Starts the provider binary at `binary` with this world's arguments
    /// plus `extra` (later flags win, as with Go's flag package).
    pub async fn provider(&self, binary: &Path, name: &str, extra: &[&str]) -> anyhow::Result<Provider> {
        let (mut args, socket) = self.provider_args(name).await?;
        args.extend(extra.iter().map(|s| s.to_string()));
        Provider::spawn(binary, &args, socket, self.dir.join(format!("{name}.log")), &[]).await
    }

    /// [`provider`](Self::provider) held to `bytes` of heap (the process's
    /// data limit, `RLIMIT_DATA`: what a container's memory limit bounds,
    /// short of a cgroup, which the test bed cannot make): an allocation
    /// past it fails, and the provider with it, as an OOM kill would end it.
    pub async fn provider_limited(
        &self,
        binary: &Path,
        name: &str,
        extra: &[&str],
        bytes: u64,
    ) -> anyhow::Result<Provider> {
        let (mut args, socket) = self.provider_args(name).await?;
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut wrapped = vec![
            format!("--data={bytes}"),
            "--".to_string(),
            binary.display().to_string(),
        ];
        wrapped.extend(args);
        let prlimit = Path::new("/usr/bin/prlimit");
        anyhow::ensure!(
            prlimit.is_file(),
            "prlimit (util-linux) is needed to hold a provider to a memory limit"
        );
        Provider::spawn(prlimit, &wrapped, socket, self.dir.join(format!("{name}.log")), &[]).await
    }
}

/// Configures `bao` like every world's: kubernetes auth reviewing through
/// `kube` (its proxy) with Vault's reviewer identity, the read-all policy,
/// and role `app` for service account `app` of the test's namespace
/// (audience `vault`).
pub async fn wire_vault(bao: &OpenBao, kube: &Cluster) -> anyhow::Result<()> {
    let reviewer = kube.reviewer_token().await?;
    bao.enable_auth("kubernetes", "kubernetes").await?;
    bao.configure_kubernetes_auth("kubernetes", &kube.url(), &kube.ca_pem(), &reviewer)
        .await?;
    bao.put_policy(
        READ_ALL,
        r#"
path "secret/*" { capabilities = ["read"] }
path "kv1/*" { capabilities = ["read"] }
path "database/creds/*" { capabilities = ["read"] }
path "pki/issue/*" { capabilities = ["create", "update"] }
"#,
    )
    .await?;
    app_role(bao, &kube.namespace, "app")
        .audience(Some("vault"))
        .write()
        .await?;
    Ok(())
}

/// Role `name` at `auth/kubernetes` for the world's application pods:
/// service account `app` of `namespace`, the read-all policy, tokens of 1h
/// (at most 2h), any audience. Refine it before `write`.
pub fn app_role<'a>(bao: &'a OpenBao, namespace: &str, name: &str) -> KubernetesRole<'a> {
    bao.kubernetes_role(name)
        .binding(&[APP_SA], &[namespace])
        .policies(&[READ_ALL])
}

/// The suffixes of the `VAULT_*` and `BAO_*` variables the provider reads.
const CONNECTION_ENV: [&str; 8] = [
    "ADDR",
    "NAMESPACE",
    "CACERT",
    "CAPATH",
    "TLS_SERVER_NAME",
    "CLIENT_CERT",
    "CLIENT_KEY",
    "SKIP_VERIFY",
];

/// A running provider process.
pub struct Provider {
    /// The process (killed on drop).
    pub child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Its stderr log file.
    pub log: PathBuf,
}

impl Provider {
    /// Spawns a provider and waits until its socket answers Version.
    pub async fn spawn(
        binary: &Path,
        args: &[String],
        socket: PathBuf,
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Provider> {
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = crate::child::command(binary);
        cmd.args(args).env_remove("KUBECONFIG");
        // The provider's connection defaults come only from what a test gives.
        for var in CONNECTION_ENV {
            cmd.env_remove(format!("VAULT_{var}")).env_remove(format!("BAO_{var}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let mut p = Provider { child, socket, log };
        p.wait_ready().await?;
        Ok(p)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait()? {
                return Err(anyhow!("provider exited with {status}: {}", self.logs()));
            }
            if self.socket.exists() {
                if let Ok(c) = DriverClient::connect(&self.socket, Generation::V16).await {
                    if c.version().await.is_ok() {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(anyhow!("provider socket not ready after 10 s: {}", self.logs()))
    }

    /// The provider's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A driver-like client of the given generation.
    pub async fn client(&self, generation: Generation) -> anyhow::Result<DriverClient> {
        DriverClient::connect(&self.socket, generation).await
    }

    /// Mounts as a v1.6 driver would, on another socket this process serves
    /// (`-vault-endpoint`, `-openbao-endpoint`).
    pub async fn mount_at(
        &self,
        socket: &Path,
        params: &BTreeMap<String, String>,
        pod: &PodContext,
    ) -> Result<MountResponse, tonic::Status> {
        let req = mount_request(Generation::V16, "spc", params, pod, false, Vec::new());
        let client = DriverClient::connect(socket, Generation::V16)
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        client.mount(req, Duration::from_secs(60)).await
    }

    /// Mounts as a v1.6 driver would.
    pub async fn mount(
        &self,
        params: &BTreeMap<String, String>,
        pod: &PodContext,
    ) -> Result<MountResponse, tonic::Status> {
        let req = mount_request(Generation::V16, "spc", params, pod, false, Vec::new());
        self.mount_raw(Generation::V16, req).await
    }

    /// Sends a prepared request with a driver of `generation`.
    pub async fn mount_raw(&self, generation: Generation, req: MountRequest) -> Result<MountResponse, tonic::Status> {
        let client = self
            .client(generation)
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        client.mount(req, Duration::from_secs(60)).await
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// SPC parameters: role `app`, the given objects, and extras.
pub fn params(objects: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("roleName".to_string(), "app".to_string());
    m.insert("objects".to_string(), objects.to_string());
    for (k, v) in extra {
        m.insert(k.to_string(), v.to_string());
    }
    m
}
