//! A SecretProviderClass is written by a namespace's users, the provider
//! installed by someone else and shared by every namespace of its node. These
//! tests play a hostile or careless class author against the real binary:
//! whatever a class names, the provider stays up, answers with a clear error
//! within a second, and keeps serving everyone else; and the operator's
//! `-spc-*` flags limit what a class may name at all.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tonic::Code;

const OBJECTS: &str = "- {objectName: k, secretPath: secret/data/app, secretKey: k}\n";

/// Mounts with `extra` parameters; asserts a clear INVALID_ARGUMENT within a
/// second that mentions `needle`.
async fn refused(
    p: &Provider,
    pod: &vault_csi_provider::testbed::driver::PodContext,
    extra: &[(&str, &str)],
    needle: &str,
) {
    let started = Instant::now();
    let e = p
        .mount(&params(OBJECTS, extra), pod)
        .await
        .expect_err(&format!("{extra:?} is refused"));
    let took = started.elapsed();
    assert_eq!(e.code(), Code::InvalidArgument, "{extra:?}: {e:?}");
    assert!(e.message().contains(needle), "{extra:?}: {}", e.message());
    assert!(took < Duration::from_secs(1), "{extra:?} took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_a_class_names_are_read_only_as_small_regular_files() {
    let bed = Bed::start().await;
    bed.bao.kv2_put("secret", "app", json!({"k": "v"})).await.unwrap();
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("default", "web-0", "app");
    let pid = p.child.id().unwrap();
    p.mount(&params(OBJECTS, &[]), &pod).await.expect("a first mount");
    let rss_before = rss_kib(pid);

    let dir = bed.dir.path();
    let fifo = dir.join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let huge = dir.join("huge.pem");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(100 * 1024 * 1024)
        .unwrap();
    let subdir = dir.join("a-directory");
    std::fs::create_dir(&subdir).unwrap();
    let link = dir.join("link.pem");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let s = |p: &std::path::Path| p.display().to_string();
    let bad = [
        ("/dev/zero".to_string(), "device"),
        (s(&fifo), "FIFO"),
        (s(&huge), "limit"),
        (s(&subdir), "directory"),
        (s(&link), "device"),
    ];
    for (path, needle) in &bad {
        refused(&p, &pod, &[("vaultCACertPath", path)], needle).await;
        refused(
            &p,
            &pod,
            &[("vaultTLSClientCertPath", path), ("vaultTLSClientKeyPath", path)],
            needle,
        )
        .await;
    }
    // A CA directory of devices, FIFOs and huge files holds no certificate;
    // a file where a directory belongs is not one.
    refused(&p, &pod, &[("vaultCADirectory", "/dev")], "no PEM certificate").await;
    refused(&p, &pod, &[("vaultCADirectory", &s(dir))], "no PEM certificate").await;
    refused(&p, &pod, &[("vaultCADirectory", &s(&huge))], "CA directory").await;

    // Still up, still serving, and nothing was read into memory.
    let r = p
        .mount(&params(OBJECTS, &[]), &pod)
        .await
        .expect("the next mount is served");
    assert_eq!(text(&r, "k"), "v");
    let grown = rss_kib(pid).saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "RSS grew by {grown} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_confines_files_addresses_tls_and_audiences() {
    let bed = Bed::start().await;
    bed.bao.kv2_put("secret", "app", json!({"k": "v"})).await.unwrap();
    let allowed = bed.dir.path().join("tls");
    std::fs::create_dir(&allowed).unwrap();
    let ca = allowed.join("ca.pem");
    std::fs::write(&ca, bed.kube.ca_pem()).unwrap();
    let escape = allowed.join("escape.pem");
    std::os::unix::fs::symlink("/etc/hostname", &escape).unwrap();
    let other_vault = bed.bao.addr().replace("127.0.0.1", "localhost");
    let p = bed
        .provider(
            "p",
            &[
                &format!("-spc-file-dirs={}", allowed.display()),
                "-spc-allowed-vault-addrs=https://vault.example:8200",
                "-spc-allow-http=false",
                "-spc-allow-unix=false",
                "-spc-allow-skip-tls-verify=false",
                "-spc-allowed-audiences=vault",
            ],
        )
        .await;
    let pod = bed.pod("default", "web-0", "app");

    // What the operator configured still mounts, with a CA from inside.
    let r = p
        .mount(
            &params(OBJECTS, &[("vaultCACertPath", &ca.display().to_string())]),
            &pod,
        )
        .await
        .expect("default address, allowed file, default audience");
    assert_eq!(text(&r, "k"), "v");

    refused(
        &p,
        &pod,
        &[("vaultCACertPath", &escape.display().to_string())],
        "outside the directories",
    )
    .await;
    refused(&p, &pod, &[("vaultCACertPath", "/etc/hostname")], "-spc-file-dirs").await;
    refused(&p, &pod, &[("vaultAddress", &other_vault)], "-spc-allow-http").await;
    refused(
        &p,
        &pod,
        &[("vaultAddress", "https://attacker.example:8200")],
        "-spc-allowed-vault-addrs",
    )
    .await;
    refused(
        &p,
        &pod,
        &[("vaultAddress", "unix:///run/vault.sock")],
        "-spc-allow-unix",
    )
    .await;
    refused(
        &p,
        &pod,
        &[("vaultSkipTLSVerify", "true")],
        "-spc-allow-skip-tls-verify",
    )
    .await;
    refused(
        &p,
        &pod,
        &[("audience", "https://kubernetes.default.svc")],
        "-spc-allowed-audiences",
    )
    .await;

    // A typo in a directory flag stops the provider at start, with exit 64.
    let (mut args, socket) = bed.world.provider_args("typo").unwrap();
    args.push("-spc-file-dirs=/does/not/exist".into());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vault-csi-provider"))
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-spc-file-dirs"));
    assert!(!socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_at_the_top_of_the_grpc_timeout_range_are_served() {
    use vault_csi_provider::testbed::driver::{mount_request, Generation};
    let bed = Bed::start().await;
    bed.bao.kv2_put("secret", "app", json!({"k": "v"})).await.unwrap();
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("default", "web-0", "app");
    let client = p.client(Generation::V16).await.unwrap();
    // The protocol allows 8 digits; a sender may write more.
    let max = u64::MAX.to_string();
    let beyond: Vec<String> = ["H", "M", "S"].iter().map(|u| format!("{max}{u}")).collect();
    let timeouts = [
        "99999999H",
        "99999999M",
        "99999999S",
        "99999999m",
        "99999999u",
        "99999999n",
        "1n",
    ];
    for timeout in timeouts.iter().copied().chain(beyond.iter().map(String::as_str)) {
        let mut req = tonic::Request::new(mount_request(
            Generation::V16,
            "spc",
            &params(OBJECTS, &[]),
            &pod,
            false,
            Vec::new(),
        ));
        req.metadata_mut().insert("grpc-timeout", timeout.parse().unwrap());
        let answer = client.raw().mount(req).await;
        if timeout != "1n" {
            assert_eq!(text(&answer.expect(timeout).into_inner(), "k"), "v");
        }
    }
    // Still the same process.
    assert!(p.child.id().is_some());
    let r = p.mount(&params(OBJECTS, &[]), &pod).await.expect("still serving");
    assert_eq!(text(&r, "k"), "v");
}
