//! A SecretProviderClass is written by a namespace's users, the provider
//! installed by someone else and shared by every namespace of its node. These
//! tests play a hostile or careless class author against the real binary:
//! whatever a class names, the provider stays up, answers with a clear error
//! within a second, and keeps serving everyone else; and the operator's
//! `-spc-*` flags limit what a class may name at all.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;
use tonic::Code;

const OBJECTS: &str = KV_OBJECT;

/// Mounts with `extra` parameters; asserts a clear INVALID_ARGUMENT within a
/// second that mentions `needle`.
async fn refused(p: &Provider, pod: &vcp_testbed::driver::PodContext, extra: &[(&str, &str)], needle: &str) {
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
    let (bed, p) = Bed::ready().await;
    let pod = bed.pod("web-0").await;
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
    bed.kv_secret().await;
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
    let pod = bed.pod("web-0").await;

    // What the operator configured still mounts, with a CA from inside.
    let r = p
        .mount(
            &params(OBJECTS, &[("vaultCACertPath", &ca.display().to_string())]),
            &pod,
        )
        .await
        .expect("default address, allowed file, default audience");
    assert_eq!(text(&r, "k"), "v");

    // A symlink out of the allowed directory, as each file parameter.
    let esc = escape.display().to_string();
    let inside = ca.display().to_string();
    let out = "outside the directories";
    refused(&p, &pod, &[("vaultCACertPath", &esc)], out).await;
    refused(&p, &pod, &[("vaultCADirectory", &allowed.display().to_string())], out).await;
    refused(
        &p,
        &pod,
        &[("vaultTLSClientCertPath", &esc), ("vaultTLSClientKeyPath", &inside)],
        out,
    )
    .await;
    refused(
        &p,
        &pod,
        &[("vaultTLSClientCertPath", &inside), ("vaultTLSClientKeyPath", &esc)],
        out,
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
    let (mut args, socket) = bed.world.provider_args("typo").await.unwrap();
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
    use vcp_testbed::driver::{mount_request, Generation};
    let (bed, p) = Bed::ready().await;
    let pod = bed.pod("web-0").await;
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

/// A Vault stand-in for sizes OpenBao will not store: any login succeeds;
/// `GET /v1/big/<n>` answers `n` KiB of JSON (one key per 32 KiB), streamed in
/// chunks without a Content-Length; anything else answers `{"k": "v"}`.
async fn oversized_vault() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                let _ = conn.read_exact(&mut body).await;
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
                    .await;
                let send = |chunk: Vec<u8>| {
                    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                    framed.extend_from_slice(&chunk);
                    framed.extend_from_slice(b"\r\n");
                    framed
                };
                let pieces: Vec<Vec<u8>> = if path.contains("/login") {
                    vec![
                        br#"{"auth":{"client_token":"t","accessor":"a","lease_duration":3600,"renewable":true}}"#
                            .to_vec(),
                    ]
                } else if let Some(kib) = path
                    .strip_prefix("/v1/big/")
                    .and_then(|n| n.split('?').next()?.parse::<usize>().ok())
                {
                    let value = "x".repeat(32 * 1024 - 16);
                    let mut pieces = vec![br#"{"data":{"#.to_vec()];
                    for i in 0..kib / 32 {
                        let sep = if i == 0 { "" } else { "," };
                        pieces.push(format!(r#"{sep}"k{i}":"{value}""#).into_bytes());
                    }
                    pieces.push(b"}}".to_vec());
                    pieces
                } else {
                    vec![br#"{"data":{"k":"v"}}"#.to_vec()]
                };
                for piece in pieces {
                    if conn.write_all(&send(piece)).await.is_err() {
                        return;
                    }
                }
                let _ = conn.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_that_read_or_render_too_much_are_refused_and_the_provider_stays_up() {
    let bed = Bed::start().await;
    let vault = oversized_vault().await;
    let p = bed.provider("p", &[&format!("-vault-addr={vault}")]).await;
    let pid = p.child.id().unwrap();
    let pod = bed.pod("web-0").await;
    let small = "- {objectName: k, secretPath: small, secretKey: k}\n";
    p.mount(&params(small, &[]), &pod).await.expect("a small mount");
    let rss_before = rss_kib(pid);

    // 20 objects of 7 MiB each: 140 MiB if held at once.
    let twenty: String = (0..20)
        .map(|i| format!("- {{objectName: o{i}, secretPath: big/7168?n={i}}}\n"))
        .collect();
    // 200 keys of 1 MiB: far over any limit, streamed without a length.
    let expand_huge = "- {objectName: many, secretPath: big/204800, expandKeys: true}\n";
    // 7 MiB that fits the reads but not also 7 MiB of rendered files.
    let expand_big = "- {objectName: many, secretPath: big/7168, expandKeys: true}\n";
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for (objects, needle) in [
        (twenty.as_str(), "-max-mount-bytes"),
        (expand_huge, "larger than"),
        (expand_big, "-max-mount-bytes"),
    ] {
        let started = Instant::now();
        let e = p.mount(&params(objects, &[]), &pod).await.expect_err("over budget");
        assert_failed_as(&p, &e, "too_large");
        assert_mentions(&e, &[needle]);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // Eight of the 20-object mounts at once: the provider-wide pool holds.
    let mut running = Vec::new();
    for i in 0..8 {
        let (p, pod) = (&p, bed.pod(&format!("burst-{i}")).await);
        let objects = twenty.clone();
        running.push(async move { p.mount(&params(&objects, &[]), &pod).await });
    }
    for r in futures_util::future::join_all(running).await {
        let e = r.expect_err("over budget");
        assert!(
            e.code() == code_of("too_large") || e.code() == code_of("busy"),
            "its own limit or the pool's: {e:?}"
        );
    }
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    sampler.await.unwrap();

    let r = p.mount(&params(small, &[]), &pod).await.expect("still serving");
    assert_eq!(text(&r, "k"), "v");
    let peak_growth = peak
        .load(std::sync::atomic::Ordering::SeqCst)
        .saturating_sub(rss_before);
    println!("TENANCY | RSS before {rss_before} KiB, peak growth {peak_growth} KiB");
    assert!(peak_growth < 96 * 1024, "peak RSS grew by {peak_growth} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_token_goes_only_to_a_request_that_proves_its_pod() {
    let (bed, p) = Bed::ready().await;
    let victim = bed.pod("web-0").await;
    let attacker = bed.pod("intruder-0").await;
    let ps = params(OBJECTS, &[]);
    p.mount(&ps, &victim).await.expect("the victim's own mount");
    let reviews = token_reviews(&bed.kube);
    p.mount(&ps, &victim)
        .await
        .expect("the victim again: the held token, proven by signature");
    assert_eq!(token_reviews(&bed.kube), reviews, "no new login for a proven request");

    let victim_uid = victim.uid.clone();
    let attacker_token = bed
        .kube
        .pod_token(bed.ns(), "intruder-0", &["vault"], Duration::from_secs(3600))
        .await
        .unwrap();
    let forged_uid = forge(&attacker_token, |c| {
        c["kubernetes.io"]["pod"] = json!({"name": "web-0", "uid": victim_uid});
    });
    let expired = forge(&attacker_token, |c| c["exp"] = json!(1));
    let unsigned = {
        let forged = forge(&forged_uid, |_| {});
        let mut parts: Vec<&str> = forged.split('.').collect();
        let header = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, r#"{"alg":"none"}"#);
        parts[0] = &header;
        parts[2] = "";
        parts.join(".")
    };
    let attackers = format!("belongs to pod {}/intruder-0", bed.ns());
    for (what, token, needle) in [
        ("another pod's real token", attacker_token.as_str(), attackers.as_str()),
        (
            "a token re-written to name the victim",
            forged_uid.as_str(),
            "signature does not verify",
        ),
        (
            "an unsigned token naming the victim",
            unsigned.as_str(),
            "signature does not verify",
        ),
        ("an expired token", expired.as_str(), attackers.as_str()),
    ] {
        let e = p.mount(&ps, &with_token(&victim, token)).await.expect_err(what);
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
        assert!(e.message().contains(needle), "{what}: {}", e.message());
        assert!(
            !e.message().contains(token),
            "{what}: the message must not echo the token"
        );
    }
    assert_eq!(
        token_reviews(&bed.kube),
        reviews,
        "refused before anything reached Vault"
    );
    p.mount(&ps, &attacker)
        .await
        .expect("the attacker's own pod still mounts its own secrets");

    // Without the issuer keys, the held token is reused only for the exact
    // JWT Vault reviewed; kubelet's next token costs one login, no refusal.
    bed.kube.set_issuer_discovery(false);
    let q = bed.provider("q", &[]).await;
    q.mount(&ps, &victim).await.expect("first mount: a login");
    let reviews = token_reviews(&bed.kube);
    q.mount(&ps, &victim).await.expect("the same JWT: the held token");
    assert_eq!(token_reviews(&bed.kube), reviews);
    let refreshed = bed
        .kube
        .pod_token(bed.ns(), "web-0", &["vault"], Duration::from_secs(3600))
        .await
        .unwrap();
    q.mount(&ps, &with_token(&victim, &refreshed))
        .await
        .expect("a new JWT: a fresh login");
    assert!(
        token_reviews(&bed.kube) > reviews,
        "an unverifiable new JWT is proven by Vault's review"
    );
    let e = q
        .mount(&ps, &with_token(&victim, &forged_uid))
        .await
        .expect_err("a forgery");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_other_nodes_get_no_token_and_pods_are_read_as_metadata_only() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    // The pinned audience makes self-requested tokens ones the role accepts.
    let node = format!("-node-name={}", bed.kube.node);
    let p = bed
        .provider(
            "p",
            &[&node, "-revoke-on-pod-delete=true", "-spc-allowed-audiences=vault"],
        )
        .await;
    let ps = params(OBJECTS, &[]);
    // Pods without kubelet tokens: the provider would mint one itself.
    let here = bed.pod_without_token("here-0").await;
    let uid = bed
        .kube
        .add_pod(bed.ns(), "there-0", APP_SA, &bed.kube.other_node)
        .await
        .unwrap();
    let there = vcp_testbed::driver::PodContext {
        name: "there-0".into(),
        namespace: bed.ns().into(),
        uid,
        service_account: "app".into(),
        tokens: None,
    };
    p.mount(&ps, &here).await.expect("a pod on this node");
    let minted = || {
        bed.kube
            .requests()
            .into_iter()
            .filter(|(m, path)| m == "POST" && path.split('?').next().is_some_and(|p| p.ends_with("/token")))
            .count()
    };
    let minted_for_here = minted();
    let e = p.mount(&ps, &there).await.expect_err("a pod on another node");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_mentions(&e, &[&format!("does not run on node {}", bed.kube.node)]);
    assert_eq!(
        minted(),
        minted_for_here,
        "no token was requested for the other node's pod"
    );

    // Every pod read the provider made (the node check, the revocation
    // list and watch) asked for metadata only.
    let reads = bed.kube.pod_reads();
    assert!(reads.iter().any(|(path, _)| path.ends_with("?watch")), "{reads:?}");
    assert!(reads.iter().any(|(path, _)| path.ends_with("?list")), "{reads:?}");
    assert!(reads.iter().all(|(_, metadata_only)| *metadata_only), "{reads:?}");
}
