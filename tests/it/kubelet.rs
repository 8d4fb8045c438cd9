//! A pod's secrets volume as kubelet and the CSI driver (v1.6, rotation on)
//! treat the provider's answers (`vcp_testbed::driver::kubelet`): a pod started
//! while Vault is down ends up with its files once Vault is back, never
//! with an empty volume; a failed republish keeps the old files; a
//! republish after the rotation interval brings new ones.

use std::time::Duration;

use crate::support::*;
use vcp_testbed::driver::kubelet::{Kubelet, Publish, Volume};

/// The class most tests mount, as a SecretProviderClass's parameters.
fn class() -> std::collections::BTreeMap<String, String> {
    params(KV_OBJECT, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_started_while_vault_is_down_gets_its_files_once_vault_is_back_never_an_empty_volume() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    let proxy = Proxy::start(&bed.bao.addr(), Duration::ZERO).await;
    proxy.set(Fault::Refuse);
    let p = bed
        .provider("p", &[&format!("-vault-addr={}", proxy.url()), "-retry-budget=1s"])
        .await;
    let pod = bed.pod("web-0").await;
    let mut volume = Volume::new(pod.clone(), "spc", class());
    // The driver's default rotation interval: a retry within it that found
    // the target set up would answer OK without asking the provider.
    let mut kubelet = Kubelet::new(&p.socket, Duration::from_secs(120));
    for attempt in 0..3 {
        let tokens = bed.fresh_tokens(&pod).await.unwrap();
        match kubelet.publish(&mut volume, tokens.as_deref()).await.unwrap() {
            Publish::Failed { status, kept } => {
                assert!(
                    !kept,
                    "attempt {attempt}: {:?} is not final for kubelet: {}",
                    status.code(),
                    status.message()
                );
                assert_mentions(&status, &["cannot connect to Vault"]);
            }
            other => panic!("attempt {attempt} while Vault is down: {other:?}"),
        }
        assert!(!volume.mounted(), "no target kept: the pod does not start");
    }
    proxy.set(Fault::Pass);
    let outcomes = kubelet
        .start(&mut volume, Duration::from_millis(200), Duration::from_secs(30), || {
            bed.fresh_tokens(&pod)
        })
        .await
        .unwrap();
    assert!(matches!(outcomes.last(), Some(Publish::Mounted)), "{outcomes:?}");
    assert!(
        !outcomes.iter().any(|o| matches!(o, Publish::Skipped)),
        "never an OK without the provider: {outcomes:?}"
    );
    assert_eq!(volume.text("k").as_deref(), Some("v"), "the pod starts with its files");
}

/// One NodePublishVolume with a fresh token.
async fn republish(bed: &Bed, kubelet: &mut Kubelet, volume: &mut Volume) -> Publish {
    let tokens = bed.fresh_tokens(&volume.pod).await.unwrap();
    kubelet.publish(volume, tokens.as_deref()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_republish_keeps_the_old_files_and_a_later_one_rotates_them() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    let proxy = Proxy::start(&bed.bao.addr(), Duration::ZERO).await;
    let p = bed
        .provider("p", &[&format!("-vault-addr={}", proxy.url()), "-retry-budget=1s"])
        .await;
    let pod = bed.pod("web-0").await;
    let mut volume = Volume::new(pod.clone(), "spc", class());
    let rotation = Duration::from_secs(1);
    let mut kubelet = Kubelet::new(&p.socket, rotation);
    assert!(matches!(
        republish(&bed, &mut kubelet, &mut volume).await,
        Publish::Mounted
    ));
    assert_eq!(volume.text("k").as_deref(), Some("v"));
    // Within the rotation interval the driver does not call the provider.
    bed.kv(serde_json::json!({"k": "v2"})).await;
    assert!(matches!(
        republish(&bed, &mut kubelet, &mut volume).await,
        Publish::Skipped
    ));

    // Vault unreachable at the next republish: masked, the old files stay.
    proxy.set(Fault::Refuse);
    tokio::time::sleep(rotation).await;
    match republish(&bed, &mut kubelet, &mut volume).await {
        Publish::Masked(status) => assert_mentions(&status, &["cannot connect to Vault"]),
        other => panic!("a failed republish: {other:?}"),
    }
    assert_eq!(volume.text("k").as_deref(), Some("v"), "the pod keeps its files");
    assert_eq!(kubelet.driver_log.len(), 1, "only the driver's log says so");

    // Vault back: the next republish brings the new version.
    proxy.set(Fault::Pass);
    assert!(matches!(
        republish(&bed, &mut kubelet, &mut volume).await,
        Publish::Mounted
    ));
    assert_eq!(volume.text("k").as_deref(), Some("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authoritative_classes_refuse_a_pods_override_and_leave_the_rest_alone() {
    let (bed, lenient) = Bed::ready().await;
    let ns = bed.ns().to_string();
    bed.kube
        .install_provider(bed.provider_ns(), &["authoritative-class"])
        .await
        .unwrap();
    bed.kube.add_class(&ns, "spc", &class()).await.unwrap();
    let strict = bed.provider("strict", &["-spc-authoritative-class"]).await;
    let pod = bed.pod("web-0").await;
    let mut kubelet = Kubelet::new(&strict.socket, Duration::from_secs(120));

    // A volume as its class says: mounted.
    let mut plain = Volume::new(pod.clone(), "spc", class());
    let tokens = bed.fresh_tokens(&pod).await.unwrap();
    let outcome = kubelet.publish(&mut plain, tokens.as_deref()).await.unwrap();
    assert!(matches!(outcome, Publish::Mounted), "{outcome:?}");
    assert_eq!(plain.text("k").as_deref(), Some("v"));

    // A pod changing what the class reads, as whom or where: refused before
    // anything is sent, naming the parameter.
    let overrides = [
        ("roleName", "other"),
        (
            "objects",
            "- {objectName: k, secretPath: secret/data/elsewhere, secretKey: k}\n",
        ),
        ("vaultAddress", "http://127.0.0.1:9"),
        ("audience", "other"),
    ];
    for (key, value) in overrides {
        let mut v = Volume::new(pod.clone(), "spc", class());
        v.volume_attributes.insert(key.to_string(), value.to_string());
        match kubelet.publish(&mut v, tokens.as_deref()).await.unwrap() {
            Publish::Failed { status, kept } => {
                assert!(!kept);
                assert_eq!(
                    status.code(),
                    tonic::Code::InvalidArgument,
                    "{key}: {}",
                    status.message()
                );
                assert_mentions(
                    &status,
                    &[
                        &format!("parameter {key}"),
                        &format!("SecretProviderClass {ns}/spc"),
                        "-spc-authoritative-class",
                    ],
                );
            }
            other => panic!("{key} overridden: {other:?}"),
        }
    }
    // A class that does not exist is named.
    let mut missing = Volume::new(pod.clone(), "nowhere", class());
    match kubelet.publish(&mut missing, tokens.as_deref()).await.unwrap() {
        Publish::Failed { status, .. } => {
            assert_eq!(status.code(), tonic::Code::NotFound, "{}", status.message());
            assert_mentions(&status, &[&format!("SecretProviderClass {ns}/nowhere")]);
        }
        other => panic!("a missing class: {other:?}"),
    }

    // Without the flag a pod's override wins, as with both incumbents.
    let mut kubelet = Kubelet::new(&lenient.socket, Duration::from_secs(120));
    let mut v = Volume::new(pod.clone(), "spc", class());
    v.volume_attributes.insert(
        "objects".into(),
        "- {objectName: renamed, secretPath: secret/data/app, secretKey: k}\n".into(),
    );
    let outcome = kubelet.publish(&mut v, tokens.as_deref()).await.unwrap();
    assert!(matches!(outcome, Publish::Mounted), "{outcome:?}");
    assert_eq!(v.text("renamed").as_deref(), Some("v"));
}
