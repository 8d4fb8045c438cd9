//! kubelet and the Secrets Store CSI driver (v1.6, rotation on) as they
//! treat a pod's secrets volume, played for tests: not only the gRPC bytes,
//! but what each outcome of a Mount does to the volume the pod sees
//! (`../shared/spec/driver-protocol.md`, last section).
//!
//! - The request: the class's `parameters`, then the pod's
//!   `volumeAttributes` over them, then kubelet's own keys (pod identity,
//!   `secretProviderClass`, `ephemeral`, a fresh token), which nothing
//!   overrides; `secrets` is `"null"`, `permission` `"420"`, no object
//!   versions.
//! - A first publish sets up the target directory (an empty tmpfs) and
//!   calls the provider. On success the files are written.
//! - A failed call's gRPC code reaches kubelet unchanged. After a code
//!   kubelet takes as *not final* ([`NOT_FINAL`]) it keeps the target and
//!   retries soon; the driver then finds the target set up within the
//!   rotation interval and answers OK without calling the provider, so the
//!   pod starts with whatever the target holds — nothing. After a final
//!   code kubelet removes the target, and its retry calls the provider
//!   afresh.
//! - A republish (kubelet's pod sync, about once a minute) calls the
//!   provider only when the rotation interval has passed since the last
//!   content change; a failure then is masked (kubelet gets OK, the old
//!   files stay, only the driver's log has it); a success replaces the
//!   files, writing nothing when nothing changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tonic::Code;
use vcp_proto::{keys, MountRequest};

use crate::driver::{DriverClient, Generation, PodContext};

/// The codes kubelet treats as "may still be in progress" when
/// NodePublishVolume returns them.
pub const NOT_FINAL: [Code; 5] = [
    Code::Cancelled,
    Code::DeadlineExceeded,
    Code::Unavailable,
    Code::ResourceExhausted,
    Code::Aborted,
];

/// kubelet's NodePublishVolume deadline (its context of about 2 minutes).
const PUBLISH_DEADLINE: Duration = Duration::from_secs(120);

/// A pod's CSI volume of a SecretProviderClass, and what its target holds.
pub struct Volume {
    /// The pod.
    pub pod: PodContext,
    /// The SecretProviderClass's name.
    pub class: String,
    /// Its `spec.parameters`.
    pub parameters: BTreeMap<String, String>,
    /// The pod's `volumeAttributes` for this volume.
    pub volume_attributes: BTreeMap<String, String>,
    target: Option<Target>,
}

/// The target directory, while it exists.
struct Target {
    files: BTreeMap<String, (i32, Vec<u8>)>,
    /// When the driver last set up or changed it.
    changed: Instant,
}

/// What one NodePublishVolume did.
#[derive(Debug)]
pub enum Publish {
    /// OK: the provider was called and its files are in the target.
    Mounted,
    /// OK without calling the provider: the target was set up or changed
    /// within the rotation interval, and holds what it held.
    Skipped,
    /// OK to kubelet, but the provider's answer was an error: the driver
    /// masks failures on a republish; the old files stay.
    Masked(tonic::Status),
    /// Failed: kubelet saw `status`; `kept` says whether it kept the target
    /// (a code it does not take as final) or removed it.
    Failed {
        /// What the provider answered.
        status: tonic::Status,
        /// Whether the target stays for the retry.
        kept: bool,
    },
}

impl Volume {
    /// The volume of `class` (with `parameters`) for `pod`.
    pub fn new(pod: PodContext, class: &str, parameters: BTreeMap<String, String>) -> Volume {
        Volume {
            pod,
            class: class.to_string(),
            parameters,
            volume_attributes: BTreeMap::new(),
            target: None,
        }
    }

    /// Whether the target directory exists (the pod can start).
    pub fn mounted(&self) -> bool {
        self.target.is_some()
    }

    /// What the pod sees: path → (mode, contents); empty without a target.
    pub fn files(&self) -> BTreeMap<String, (i32, Vec<u8>)> {
        self.target.as_ref().map(|t| t.files.clone()).unwrap_or_default()
    }

    /// A file's contents as text, if it is there.
    pub fn text(&self, path: &str) -> Option<String> {
        let t = self.target.as_ref()?;
        t.files.get(path).map(|(_, c)| String::from_utf8_lossy(c).into_owned())
    }

    /// The Mount request for this publish, with `tokens` (kubelet's
    /// `serviceAccount.tokens` JSON, fresh on every publish).
    pub fn request(&self, tokens: Option<&str>) -> MountRequest {
        let mut attrs = self.parameters.clone();
        attrs.extend(self.volume_attributes.clone());
        attrs.insert(keys::SPC_NAME.to_string(), self.class.clone());
        attrs.insert("csi.storage.k8s.io/ephemeral".to_string(), "true".to_string());
        attrs.insert(keys::POD_NAME.to_string(), self.pod.name.clone());
        attrs.insert(keys::POD_NAMESPACE.to_string(), self.pod.namespace.clone());
        attrs.insert(keys::POD_UID.to_string(), self.pod.uid.clone());
        attrs.insert(keys::SERVICE_ACCOUNT.to_string(), self.pod.service_account.clone());
        if let Some(t) = tokens {
            attrs.insert(keys::SA_TOKENS.to_string(), t.to_string());
        }
        MountRequest {
            attributes: serde_json::to_string(&attrs).unwrap_or_default(),
            secrets: "null".to_string(),
            target_path: format!(
                "/var/lib/kubelet/pods/{}/volumes/kubernetes.io~csi/secrets-store/mount",
                self.pod.uid
            ),
            permission: "420".to_string(),
            current_object_version: Vec::new(),
        }
    }
}

/// kubelet and the driver on one node, talking to one provider socket.
pub struct Kubelet {
    socket: PathBuf,
    /// The driver's `--rotation-poll-interval`.
    pub rotation_poll_interval: Duration,
    /// What the driver logged: masked republish failures.
    pub driver_log: Vec<String>,
}

impl Kubelet {
    /// kubelet and a driver (rotation on, `rotation_poll_interval`) using
    /// the provider at `socket`.
    pub fn new(socket: &Path, rotation_poll_interval: Duration) -> Kubelet {
        Kubelet {
            socket: socket.to_path_buf(),
            rotation_poll_interval,
            driver_log: Vec::new(),
        }
    }

    /// One NodePublishVolume of `volume`, with `tokens` as kubelet's
    /// `serviceAccount.tokens` for this call.
    pub async fn publish(&mut self, volume: &mut Volume, tokens: Option<&str>) -> anyhow::Result<Publish> {
        let now = Instant::now();
        let republish = match &volume.target {
            Some(t) if now.duration_since(t.changed) < self.rotation_poll_interval => return Ok(Publish::Skipped),
            Some(_) => true,
            None => {
                volume.target = Some(Target {
                    files: BTreeMap::new(),
                    changed: now,
                });
                false
            }
        };
        let client = DriverClient::connect(&self.socket, Generation::V16).await?;
        match client.mount(volume.request(tokens), PUBLISH_DEADLINE).await {
            Ok(response) => {
                let files: BTreeMap<String, (i32, Vec<u8>)> = response
                    .files
                    .into_iter()
                    .map(|f| (f.path, (f.mode, f.contents)))
                    .collect();
                if let Some(t) = volume.target.as_mut() {
                    if t.files != files || !republish {
                        t.files = files;
                        t.changed = Instant::now();
                    }
                }
                Ok(Publish::Mounted)
            }
            Err(status) if republish => {
                self.driver_log.push(format!(
                    "failed to rotate response for pod {}/{}: {:?}: {}",
                    volume.pod.namespace,
                    volume.pod.name,
                    status.code(),
                    status.message()
                ));
                Ok(Publish::Masked(status))
            }
            Err(status) => {
                let kept = NOT_FINAL.contains(&status.code());
                if !kept {
                    volume.target = None;
                }
                Ok(Publish::Failed { status, kept })
            }
        }
    }

    /// Starts a pod's volume as kubelet does: NodePublishVolume, retried
    /// every `backoff` after a failure, until it reports OK or `within`
    /// passes. Each call gets a fresh token from `token`. Returns every
    /// outcome; the volume then holds what the pod starts with.
    pub async fn start<F, Fut>(
        &mut self,
        volume: &mut Volume,
        backoff: Duration,
        within: Duration,
        mut token: F,
    ) -> anyhow::Result<Vec<Publish>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<String>>>,
    {
        let until = Instant::now() + within;
        let mut outcomes = Vec::new();
        loop {
            let tokens = token().await?;
            let outcome = self.publish(volume, tokens.as_deref()).await?;
            let done = matches!(outcome, Publish::Mounted | Publish::Skipped);
            outcomes.push(outcome);
            if done || Instant::now() >= until {
                return Ok(outcomes);
            }
            tokio::time::sleep(backoff).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vcp_proto::csi_driver_provider_server::{CsiDriverProvider, CsiDriverProviderServer};
    use vcp_proto::{File, MountResponse, ObjectVersion, VersionRequest, VersionResponse};

    /// A provider answering each Mount from a script of answers (the last
    /// one repeated), recording the requests.
    #[derive(Clone, Default)]
    struct Scripted {
        answers: Arc<Mutex<Vec<Result<String, Code>>>>,
        seen: Arc<Mutex<Vec<MountRequest>>>,
    }

    #[tonic::async_trait]
    impl CsiDriverProvider for Scripted {
        async fn version(
            &self,
            _: tonic::Request<VersionRequest>,
        ) -> Result<tonic::Response<VersionResponse>, tonic::Status> {
            Ok(tonic::Response::new(VersionResponse::default()))
        }

        async fn mount(
            &self,
            req: tonic::Request<MountRequest>,
        ) -> Result<tonic::Response<MountResponse>, tonic::Status> {
            self.seen.lock().unwrap().push(req.into_inner());
            let mut answers = self.answers.lock().unwrap();
            let answer = if answers.len() > 1 {
                answers.remove(0)
            } else {
                answers[0].clone()
            };
            match answer {
                Ok(contents) => Ok(tonic::Response::new(MountResponse {
                    object_version: vec![ObjectVersion {
                        id: "k".into(),
                        version: contents.clone(),
                    }],
                    error: None,
                    files: vec![File {
                        path: "k".into(),
                        mode: 0o644,
                        contents: contents.into_bytes(),
                    }],
                })),
                Err(code) => Err(tonic::Status::new(code, "scripted failure")),
            }
        }
    }

    async fn serve(answers: Vec<Result<String, Code>>) -> (tempfile::TempDir, Scripted) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("p.sock");
        let provider = Scripted {
            answers: Arc::new(Mutex::new(answers)),
            ..Scripted::default()
        };
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let incoming = tokio_stream_unix(listener);
        let service = CsiDriverProviderServer::new(provider.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        (dir, provider)
    }

    fn tokio_stream_unix(
        listener: tokio::net::UnixListener,
    ) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::UnixStream>> {
        futures_util::stream::unfold(listener, |l| async move {
            let next = l.accept().await.map(|(s, _)| s);
            Some((next, l))
        })
    }

    fn volume() -> Volume {
        let pod = PodContext {
            name: "web-0".into(),
            namespace: "ns".into(),
            uid: "u".into(),
            service_account: "app".into(),
            tokens: None,
        };
        let mut v = Volume::new(
            pod,
            "spc",
            BTreeMap::from([("roleName".to_string(), "class".to_string())]),
        );
        v.volume_attributes.insert("roleName".into(), "pod".into());
        v
    }

    async fn started(answers: Vec<Result<String, Code>>) -> (Volume, Vec<Publish>, Scripted) {
        let (dir, provider) = serve(answers).await;
        let mut kubelet = Kubelet::new(&dir.path().join("p.sock"), Duration::from_secs(60));
        let mut v = volume();
        let outcomes = kubelet
            .start(&mut v, Duration::from_millis(10), Duration::from_secs(5), || async {
                Ok(Some("{}".to_string()))
            })
            .await
            .unwrap();
        (v, outcomes, provider)
    }

    #[tokio::test]
    async fn a_non_final_code_at_the_start_leaves_the_pod_with_an_empty_volume() {
        let (v, outcomes, provider) = started(vec![Err(Code::Unavailable), Ok("v".into())]).await;
        assert!(
            matches!(outcomes[..], [Publish::Failed { kept: true, .. }, Publish::Skipped]),
            "{outcomes:?}"
        );
        assert!(v.mounted() && v.files().is_empty(), "started with nothing");
        assert_eq!(
            provider.seen.lock().unwrap().len(),
            1,
            "the retry never reached the provider"
        );
    }

    #[tokio::test]
    async fn a_final_code_at_the_start_is_retried_afresh_until_the_files_come() {
        let (v, outcomes, provider) = started(vec![Err(Code::FailedPrecondition), Ok("v".into())]).await;
        assert!(
            matches!(outcomes[..], [Publish::Failed { kept: false, .. }, Publish::Mounted]),
            "{outcomes:?}"
        );
        assert_eq!(v.text("k").as_deref(), Some("v"));
        let seen = provider.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        let attrs: BTreeMap<String, String> = serde_json::from_str(&seen[1].attributes).unwrap();
        assert_eq!(
            attrs["roleName"], "pod",
            "the pod's volume attributes override the class"
        );
        assert_eq!(attrs[keys::SPC_NAME], "spc");
        assert_eq!((seen[1].secrets.as_str(), seen[1].permission.as_str()), ("null", "420"));
    }

    #[tokio::test]
    async fn republishes_wait_out_the_rotation_interval_and_mask_failures() {
        let (dir, _provider) = serve(vec![Ok("v1".into()), Err(Code::FailedPrecondition), Ok("v2".into())]).await;
        let mut kubelet = Kubelet::new(&dir.path().join("p.sock"), Duration::from_millis(200));
        let mut v = volume();
        assert!(matches!(kubelet.publish(&mut v, None).await.unwrap(), Publish::Mounted));
        assert!(matches!(kubelet.publish(&mut v, None).await.unwrap(), Publish::Skipped));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(matches!(
            kubelet.publish(&mut v, None).await.unwrap(),
            Publish::Masked(_)
        ));
        assert_eq!(v.text("k").as_deref(), Some("v1"), "the old files stay");
        assert_eq!(kubelet.driver_log.len(), 1);
        assert!(matches!(kubelet.publish(&mut v, None).await.unwrap(), Publish::Mounted));
        assert_eq!(v.text("k").as_deref(), Some("v2"));
    }
}
