//! Shared harness for the integration tests: a real OpenBao, the Kubernetes
//! API double (with OpenBao's kubernetes auth configured against it, so every
//! login is a genuine TokenReview), and the real provider binary serving a
//! unix socket, driven by the driver-like client.
#![allow(dead_code, unused_imports)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use vault_csi_provider::proto::MountResponse;
use vault_csi_provider::testbed::driver::PodContext;
use vault_csi_provider::testbed::kube_double::KubeDouble;

#[allow(unused_imports)]
pub use vault_csi_provider::testbed::world::{params, Provider, World, PROVIDER_NS, READ_ALL};

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
    /// Starts OpenBao and the Kubernetes double (see [`World::start`]).
    pub async fn start() -> Bed {
        let dir = tempfile::tempdir().expect("tempdir");
        let world = World::start(dir.path())
            .await
            .expect("test world starts (run scripts/testbed.sh install)");
        Bed { world, dir }
    }

    /// A pod with a kubelet token for audience `vault`.
    pub fn pod(&self, ns: &str, name: &str, sa: &str) -> PodContext {
        self.world.pod(ns, name, sa).expect("pod token")
    }

    /// Starts the provider binary built for these tests.
    pub async fn provider(&self, name: &str, extra: &[&str]) -> Provider {
        self.world
            .provider(Path::new(env!("CARGO_BIN_EXE_vault-csi-provider")), name, extra)
            .await
            .expect("provider starts")
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

/// TokenReview calls the Kubernetes double has served (one per Vault login).
pub fn token_reviews(kube: &KubeDouble) -> usize {
    kube.requests()
        .iter()
        .filter(|(m, p)| m == "POST" && p.contains("tokenreviews"))
        .count()
}

/// A TCP proxy in front of a server: counts the bytes clients send (to prove
/// that no request reached the server) and can hold every chunk the server
/// sends back for `delay` (a slow server).
pub struct Proxy {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream_url: &str, delay: Duration) -> Proxy {
        use std::sync::atomic::Ordering;
        let upstream = upstream_url.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = up.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut sr, mut sw) = server.into_split();
                    let (mut cr, mut cw) = client.split();
                    let to_server = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            counter.fetch_add(n, Ordering::SeqCst);
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = sw.shutdown().await;
                    };
                    let to_client = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = sr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            tokio::time::sleep(delay).await;
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::join!(to_server, to_client);
                });
            }
        });
        Proxy { addr, up, _task: task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn bytes_to_server(&self) -> usize {
        self.up.load(std::sync::atomic::Ordering::SeqCst)
    }
}
