//! The Secrets Store CSI driver's side of the provider's socket, and
//! kubelet's above it.
//!
//! This module is a client that behaves like the driver: it dials the
//! provider's unix socket and sends Mount requests shaped exactly as driver
//! v1.6 (authority `localhost`, full attributes) or v1.5 (the socket path as
//! `:authority`, and rotation calls with the reduced attribute set) does.
//! [`kubelet`] plays kubelet and the driver as they treat a pod's volume
//! around such calls; [`clients`] runs the gRPC libraries real drivers use
//! as child processes; [`wire`] records what a client puts on the wire.

pub mod clients;
pub mod kubelet;
pub mod wire;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use authority_filter as authority;
use vcp_proto::csi_driver_provider_client::CsiDriverProviderClient;
use vcp_proto::keys;
use vcp_proto::{MountRequest, MountResponse, ObjectVersion, VersionRequest, VersionResponse};

/// What a v1.5 driver sends as `:authority`: grpc-go passthrough dialing
/// with the provider socket's path.
pub const V15_AUTHORITY: &[u8] = b"/etc/kubernetes/secrets-store-csi-providers/vault.sock";

/// Which driver generation to impersonate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// v1.6+: authority `localhost`, `secretProviderClass` and `ephemeral` attributes.
    V16,
    /// v1.5 and older: socket path as authority.
    V15,
}

/// The pod a mount is for, as kubelet describes it.
#[derive(Debug, Clone)]
pub struct PodContext {
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
    /// Service account.
    pub service_account: String,
    /// `serviceAccount.tokens` JSON, when the CSIDriver has `tokenRequests`.
    pub tokens: Option<String>,
}

impl PodContext {
    /// The `serviceAccount.tokens` value kubelet would send for one audience.
    pub fn tokens_json(audience: &str, token: &str, expires: std::time::SystemTime) -> String {
        serde_json::json!({
            audience: { "token": token, "expirationTimestamp": humantime::format_rfc3339_seconds(expires).to_string() }
        })
        .to_string()
    }
}

/// Builds the Mount request a driver of `generation` sends for an SPC's
/// `parameters` and a pod. `rotation` selects v1.5's reduced rotation form.
pub fn mount_request(
    generation: Generation,
    spc_name: &str,
    parameters: &BTreeMap<String, String>,
    pod: &PodContext,
    rotation: bool,
    current: Vec<ObjectVersion>,
) -> MountRequest {
    let mut attrs: BTreeMap<String, String> = parameters.clone();
    let v15_rotation = generation == Generation::V15 && rotation;
    if !v15_rotation {
        attrs.insert(keys::SPC_NAME.to_string(), spc_name.to_string());
        attrs.insert("csi.storage.k8s.io/ephemeral".to_string(), "true".to_string());
    }
    attrs.insert(keys::POD_NAME.to_string(), pod.name.clone());
    attrs.insert(keys::POD_NAMESPACE.to_string(), pod.namespace.clone());
    attrs.insert(keys::POD_UID.to_string(), pod.uid.clone());
    attrs.insert(keys::SERVICE_ACCOUNT.to_string(), pod.service_account.clone());
    if let Some(t) = &pod.tokens {
        attrs.insert(keys::SA_TOKENS.to_string(), t.clone());
    }
    MountRequest {
        attributes: serde_json::to_string(&attrs).unwrap_or_default(),
        secrets: "{}".to_string(),
        target_path: format!(
            "/var/lib/kubelet/pods/{}/volumes/kubernetes.io~csi/secrets-store/mount",
            pod.uid
        ),
        permission: "420".to_string(),
        current_object_version: if generation == Generation::V15 {
            current
        } else {
            Vec::new()
        },
    }
}

fn v15_authority(_original: &[u8]) -> Option<Vec<u8>> {
    Some(V15_AUTHORITY.to_vec())
}

/// A connection to the provider socket.
#[derive(Clone)]
pub struct DriverClient {
    client: CsiDriverProviderClient<Channel>,
}

impl DriverClient {
    /// Dials `socket` the way the given driver generation does.
    pub async fn connect(socket: &Path, generation: Generation) -> anyhow::Result<DriverClient> {
        let path: PathBuf = socket.to_path_buf();
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = UnixStream::connect(&path).await?;
                    match generation {
                        Generation::V16 => Ok::<_, std::io::Error>(TokioIo::new(DriverStream::Direct(stream))),
                        Generation::V15 => {
                            // Our tonic client cannot put a path in :authority,
                            // so a relay rewrites it on the wire, exactly as
                            // grpc-go's passthrough dialing sends it.
                            let (ours, theirs) = tokio::io::duplex(64 * 1024);
                            tokio::spawn(async move {
                                let _ = authority::relay(ours, stream, v15_authority).await;
                            });
                            Ok(TokioIo::new(DriverStream::Relayed(theirs)))
                        }
                    }
                }
            }))
            .await?;
        Ok(DriverClient {
            client: CsiDriverProviderClient::new(channel).max_decoding_message_size(4 * 1024 * 1024),
        })
    }

    /// Calls Mount with a deadline, like kubelet's NodePublishVolume context.
    pub async fn mount(&self, request: MountRequest, deadline: Duration) -> Result<MountResponse, tonic::Status> {
        let mut req = tonic::Request::new(request);
        req.set_timeout(deadline);
        self.client.clone().mount(req).await.map(|r| r.into_inner())
    }

    /// The underlying tonic client, for requests with hand-made metadata.
    pub fn raw(&self) -> CsiDriverProviderClient<Channel> {
        self.client.clone()
    }

    /// Calls Version.
    pub async fn version(&self) -> Result<VersionResponse, tonic::Status> {
        self.client
            .clone()
            .version(VersionRequest {
                version: "v1alpha1".to_string(),
            })
            .await
            .map(|r| r.into_inner())
    }
}

/// Either the socket itself or the relayed end of a duplex pipe.
enum DriverStream {
    Direct(UnixStream),
    Relayed(tokio::io::DuplexStream),
}

impl tokio::io::AsyncRead for DriverStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            DriverStream::Direct(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            DriverStream::Relayed(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for DriverStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            DriverStream::Direct(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            DriverStream::Relayed(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            DriverStream::Direct(s) => std::pin::Pin::new(s).poll_flush(cx),
            DriverStream::Relayed(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            DriverStream::Direct(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            DriverStream::Relayed(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}
