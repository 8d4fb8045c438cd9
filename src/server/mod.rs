//! The gRPC face of the provider: translates the driver's protocol to the
//! mount logic and back, and owns the unix socket and its lifecycle.
//!
//! Every accepted connection is handed to tonic at once, with the client's
//! bytes passing through the `:authority` filter (see [`conn`] and
//! [`authority_filter`]), so drivers of every generation are served.

pub mod conn;
pub mod health;

use crate::slots::Slots;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::net::UnixListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::error::{Error, ErrorKind};
use crate::flavor::Flavor;
use crate::mount::{MountInput, Mounter};
use crate::proto::csi_driver_provider_server::{CsiDriverProvider, CsiDriverProviderServer};
use crate::proto::{self, MountRequest, MountResponse, VersionRequest, VersionResponse};
use crate::spc::Defaults;

/// The driver rejects responses above this size (its default
/// `--max-call-recv-msg-size`).
pub const MAX_RESPONSE_BYTES: usize = crate::render::MAX_FILES_BYTES;
/// Mounts running at once unless configured otherwise.
pub const DEFAULT_MAX_CONCURRENT_MOUNTS: usize = 64;
/// Time kept back from the caller's deadline to send an answer in time.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);
/// Longest a mount may run, whatever deadline the caller sends (a
/// `grpc-timeout` can say up to 99,999,999 hours; kubelet's is ~2 minutes).
const MAX_MOUNT_TIME: Duration = Duration::from_secs(3600);

/// The `CSIDriverProvider` service of one socket. Clones share the mount
/// logic (its ledger and caches) and the mount slots, so several sockets
/// (`vault.sock`, `openbao.sock`) are one provider with per-socket defaults.
#[derive(Clone)]
pub struct ProviderService {
    mounter: Arc<Mounter>,
    mount_timeout: Duration,
    /// Bounds the mounts running at once: after a node reboot every pod
    /// mounts together, and beyond what Vault answers in parallel, more
    /// concurrency only adds memory and queueing inside the provider. One
    /// namespace holds at most its share of them.
    slots: Arc<Slots>,
    /// This socket's defaults; `None`: the mount logic's own.
    defaults: Option<Arc<Defaults>>,
    /// Which provider this socket stands in for (the Version RPC's name).
    flavor: Flavor,
}

impl ProviderService {
    /// A service over the given mount logic; `mount_timeout` bounds mounts
    /// whose caller sent no deadline.
    pub fn new(mounter: Arc<Mounter>, mount_timeout: Duration) -> ProviderService {
        let slots = Slots::new(DEFAULT_MAX_CONCURRENT_MOUNTS, DEFAULT_MAX_CONCURRENT_MOUNTS / 2);
        ProviderService {
            mounter,
            mount_timeout,
            slots,
            defaults: None,
            flavor: Flavor::Vault,
        }
    }

    /// This service as the socket of `defaults.flavor`, with those defaults.
    pub fn for_socket(mut self, defaults: Arc<Defaults>) -> ProviderService {
        self.flavor = defaults.flavor;
        self.defaults = Some(defaults);
        self
    }

    /// Runs at most `n` mounts at once, at most `per_namespace` of them of
    /// one namespace; the others wait (within their deadline).
    pub fn with_max_concurrent_mounts(mut self, n: usize, per_namespace: usize) -> ProviderService {
        self.slots = Slots::new(n, per_namespace);
        self
    }

    /// The tonic service, ready to add to a router.
    pub fn into_server(self) -> CsiDriverProviderServer<ProviderService> {
        CsiDriverProviderServer::new(self)
            .max_decoding_message_size(8 * 1024 * 1024)
            .max_encoding_message_size(16 * 1024 * 1024)
    }
}

/// Parses the `grpc-timeout` header (`<digits><unit>`).
fn grpc_timeout(meta: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl CsiDriverProvider for ProviderService {
    async fn version(&self, _request: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "v1alpha1".to_string(),
            runtime_name: self.flavor.runtime_name().to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn mount(&self, request: Request<MountRequest>) -> Result<Response<MountResponse>, Status> {
        let started = Instant::now();
        let allowed = match grpc_timeout(request.metadata()) {
            Some(t) => t.saturating_sub(DEADLINE_MARGIN).max(Duration::from_millis(100)),
            None => self.mount_timeout,
        }
        .min(MAX_MOUNT_TIME);
        let req = request.into_inner();
        let input = MountInput {
            attributes: req.attributes,
            secrets: req.secrets,
            permission: req.permission,
        };
        let (pod, namespace, spc) = pod_labels(&input.attributes);
        let provider = self.flavor.provider();
        let span = tracing::info_span!("mount", %pod, %namespace, %spc, provider);
        let deadline = started + allowed;
        let result = match tokio::time::timeout(allowed, self.slots.acquire(namespace)).await {
            Ok(Ok(_slot)) => match &self.defaults {
                Some(d) => self.mounter.mount_with(&input, deadline, d).instrument(span.clone()).await,
                None => self.mounter.mount(&input, deadline).instrument(span.clone()).await,
            },
            Ok(Err(_)) => Err(Error::new(ErrorKind::Internal, "the provider is shutting down")),
            Err(_) => Err(Error::new(ErrorKind::Busy, format!(
                "no mount slot became free within {allowed:?}: every -max-concurrent-mounts slot was busy, or namespace {namespace}'s mounts held its share of them (-max-concurrent-mounts-per-namespace={}; is Vault slow?)",
                self.slots.per_namespace()
            ))),
        };
        let response = result.and_then(|out| {
            let response = MountResponse {
                object_version: out
                    .versions
                    .into_iter()
                    .map(|(id, version)| proto::ObjectVersion { id, version })
                    .collect(),
                error: None,
                files: out
                    .files
                    .into_iter()
                    .map(|f| proto::File { path: f.path, mode: f.mode as i32, contents: f.contents })
                    .collect(),
            };
            let size = response.encoded_len();
            if size > MAX_RESPONSE_BYTES {
                return Err(Error::new(ErrorKind::TooLarge, format!(
                    "the files of this mount total {size} bytes, more than the driver's {MAX_RESPONSE_BYTES}-byte limit: split the SecretProviderClass or raise the driver's --max-call-recv-msg-size"
                )));
            }
            Ok(response)
        });
        let elapsed = started.elapsed();
        let _entered = span.enter();
        self.mounter
            .metrics()
            .mount_finished(response.as_ref().map(|_| ()), elapsed);
        match response {
            Ok(r) => {
                tracing::debug!(files = ?r.files.iter().map(|f| (f.path.as_str(), format!("{:#o}", f.mode), f.contents.len())).collect::<Vec<_>>(), "mount files (path, mode, bytes)");
                tracing::info!(
                    objects = r.object_version.len(),
                    duration_ms = (elapsed.as_secs_f64() * 1000.0 * 100.0).round() / 100.0,
                    result = "ok",
                    "mount"
                );
                Ok(Response::new(r))
            }
            Err(e) => {
                // Logged as sent: shortened, so a huge bad value cannot flood the log.
                let kind = e.kind().label();
                let status: Status = e.into();
                tracing::warn!(duration_ms = (elapsed.as_secs_f64() * 1000.0 * 100.0).round() / 100.0, result = kind, error = %status.message(), "mount failed");
                Err(status)
            }
        }
    }
}

/// Pod name, namespace and SecretProviderClass for log fields, read
/// leniently: a request whose attributes do not parse is still logged (with
/// `?` for what could not be read), with its error. Only these three are
/// kept; the other attributes, the `objects` YAML among them, are skipped
/// without being copied.
#[derive(Default, serde::Deserialize)]
struct LogLabels<'a> {
    #[serde(rename = "csi.storage.k8s.io/pod.name")]
    pod: Option<&'a str>,
    #[serde(rename = "csi.storage.k8s.io/pod.namespace")]
    namespace: Option<&'a str>,
    #[serde(rename = "secretProviderClass")]
    spc: Option<&'a str>,
}

fn pod_labels(attributes: &str) -> (&str, &str, &str) {
    // Values with JSON escapes (no Kubernetes name has any) cannot be
    // borrowed: then all three are "?".
    let labels: LogLabels<'_> = serde_json::from_str(attributes).unwrap_or_default();
    let LogLabels { pod, namespace, spc } = labels;
    (pod.unwrap_or("?"), namespace.unwrap_or("?"), spc.unwrap_or("?"))
}

/// Binds the provider socket: removes a stale socket left by an earlier run,
/// and makes the socket 0600 before it becomes visible under its real name
/// (bind under a temporary name, chmod, rename), so no other user can ever
/// connect.
pub fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path)?;
            tracing::info!(path = %path.display(), "removed stale socket");
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; refusing to replace it", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let tmp = temp_name(path);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(listener)
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Serves the driver protocol on `listener` until `stop` is cancelled, then
/// drains in-flight mounts for at most `grace`.
pub async fn serve(
    listener: UnixListener,
    service: ProviderService,
    stop: CancellationToken,
    grace: Duration,
) -> Result<(), tonic::transport::Error> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<conn::DriverConn, io::Error>>(16);
    let accepting = stop.clone();
    let acceptor = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = accepting.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        // Served at once: tonic sends its SETTINGS before the
                        // client says anything, as grpc-go and C-core expect.
                        if tx.send(Ok(conn::DriverConn::new(stream))).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a driver connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    });
    let server = tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), stop.clone().cancelled_owned());
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        _ = async {
            stop.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "in-flight mounts did not finish within the shutdown grace period");
            Ok(())
        }
    };
    acceptor.abort();
    result
}

/// Serves several sockets (each with its own service, e.g. `vault.sock`
/// and `openbao.sock`) until `shutdown` resolves or one of them stops, then
/// drains each for at most `grace`. The first failure is returned once all
/// have stopped.
pub async fn serve_all(
    sockets: Vec<(UnixListener, ProviderService)>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), tonic::transport::Error> {
    let stop = CancellationToken::new();
    let mut servers = tokio::task::JoinSet::new();
    for (listener, service) in sockets {
        servers.spawn(serve(listener, service, stop.clone(), grace));
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut result = Ok(());
    loop {
        tokio::select! {
            _ = &mut shutdown, if !stop.is_cancelled() => stop.cancel(),
            joined = servers.join_next() => {
                match joined {
                    None => break,
                    Some(Ok(Err(e))) if result.is_ok() => result = Err(e),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::error!(error = %e, "a socket's server task failed"),
                }
                // One socket stopped: the others stop too, rather than run
                // on with a socket the driver can no longer reach.
                stop.cancel();
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_labels_are_read_from_the_attribute_keys() {
        use crate::spc::keys;
        let attributes = serde_json::json!({
            keys::POD_NAME: "web-0",
            keys::POD_NAMESPACE: "shop",
            keys::SPC_NAME: "db-creds",
            "objects": "- objectName: a\n  secretPath: secret/data/a\n",
        })
        .to_string();
        assert_eq!(pod_labels(&attributes), ("web-0", "shop", "db-creds"));
        assert_eq!(pod_labels("not json"), ("?", "?", "?"));
        assert_eq!(
            pod_labels(&serde_json::json!({keys::POD_NAME: "a\"b"}).to_string()),
            ("?", "?", "?")
        );
    }

    #[test]
    fn grpc_timeouts_parse() {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("grpc-timeout", "119998m".parse().unwrap());
        assert_eq!(grpc_timeout(&m), Some(Duration::from_millis(119_998)));
        m.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(grpc_timeout(&m), Some(Duration::from_secs(2)));
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&m), None);
    }

    #[tokio::test]
    async fn socket_is_private_and_stale_sockets_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.sock");
        let first = bind_socket(&path).unwrap();
        drop(first);
        // The file is still there, like after a crash.
        assert!(path.exists());
        let _second = bind_socket(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let other = dir.path().join("plain");
        std::fs::write(&other, b"x").unwrap();
        assert!(bind_socket(&other).is_err());
        assert_eq!(std::fs::read(&other).unwrap(), b"x");
    }
}
