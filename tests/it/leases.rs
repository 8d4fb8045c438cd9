//! The credential ledger against real OpenBao and PostgreSQL: reuse,
//! renewal, rotation before expiry, revocation when the pod goes, restart
//! safety and per-pod identity. TTLs are seconds so the tests stay fast.

use std::time::{Duration, Instant};

use crate::support::*;
use vcp_testbed::postgres::Postgres;

const DB_OBJECTS: &str = "- {objectName: user, secretPath: database/creds/app, secretKey: username}\n- {objectName: pass, secretPath: database/creds/app, secretKey: password}\n";

async fn db_bed(default_ttl: &str, max_ttl: &str, token_ttl: &str) -> (Bed, Postgres) {
    let bed = Bed::start().await;
    let pg = bed.database(default_ttl, max_ttl).await;
    bed.role("app")
        .audience(Some("vault"))
        .ttl(token_ttl, "1h")
        .write()
        .await
        .unwrap();
    (bed, pg)
}

async fn count(bed: &Bed, prefix: &str) -> usize {
    bed.world.bao.leases(prefix).await.unwrap().len()
}

fn creds(r: &vault_csi_provider::proto::MountResponse) -> (String, String) {
    (text(r, "user"), text(r, "pass"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republishing_reuses_one_lease_and_one_login_across_ttls() {
    let (bed, pg) = db_bed("4s", "1h", "6s").await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let started = Instant::now();
    let mut first: Option<(String, String)> = None;
    let mut versions_seen = std::collections::BTreeSet::new();
    for i in 0..30 {
        let r = p.mount(&params(DB_OBJECTS, &[]), &pod).await.expect("mount");
        let (user, pass) = creds(&r);
        assert!(
            pg.can_login(&user, &pass).await.unwrap(),
            "call {i}: returned credentials must log in"
        );
        assert_eq!(
            count(&bed, "database/creds/app").await,
            1,
            "call {i}: exactly one database lease"
        );
        assert_eq!(
            count(&bed, "auth/kubernetes/login").await,
            1,
            "call {i}: exactly one login"
        );
        versions_seen.insert(versions(&r)["user"].clone());
        first.get_or_insert((user.clone(), pass.clone()));
        assert_eq!(
            first.as_ref().unwrap().0,
            user,
            "call {i}: the same credentials are returned"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        started.elapsed() > Duration::from_secs(8),
        "the test spans two lease TTLs"
    );
    assert_eq!(versions_seen.len(), 1, "same content, same version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_never_republished_keeps_working_credentials() {
    let (bed, pg) = db_bed("3s", "1h", "4s").await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let (user, pass) = creds(&p.mount(&params(DB_OBJECTS, &[]), &pod).await.unwrap());
    for second in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            pg.can_login(&user, &pass).await.unwrap(),
            "after {}s (3 × TTL = 9 s) the credentials still work: {}",
            second + 1,
            p.logs()
        );
    }
    assert_eq!(count(&bed, "database/creds/app").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_rotate_before_their_max_ttl_and_always_work() {
    let (bed, pg) = db_bed("3s", "6s", "1h").await;
    let p = bed.provider("p", &["-rotation-grace=30s"]).await;
    let pod = bed.pod("web-0").await;
    let mut users = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(14) {
        let r = p.mount(&params(DB_OBJECTS, &[]), &pod).await.expect("mount");
        let (user, pass) = creds(&r);
        assert!(
            pg.can_login(&user, &pass).await.unwrap(),
            "at {:?}: returned credentials must log in",
            started.elapsed()
        );
        if users.last() != Some(&user) {
            users.push(user);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        users.len() >= 2,
        "new credentials were issued before the 6 s max TTL: {users:?}"
    );
    assert!(
        users.len() <= 5,
        "not re-issued on every call: {} distinct",
        users.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_certificates_are_reused_until_the_threshold_then_renewed_before_expiry() {
    let bed = Bed::start().await;
    bed.world.bao.setup_pki("pki", "web", "1h").await.unwrap();
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = "- {objectName: tls.crt, secretPath: pki/issue/web, method: PUT, secretArgs: {common_name: a.example.com, ttl: 6s}, secretKey: certificate}\n";
    let mut serials: Vec<(String, Duration)> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(9) {
        let r = p.mount(&params(objects, &[]), &pod).await.expect("mount");
        let cert = text(&r, "tls.crt");
        let end = openssl(&["x509", "-noout", "-checkend", "0"], cert.as_bytes());
        assert!(
            end.contains("will not expire"),
            "a returned certificate is valid: {end}"
        );
        let serial = openssl(&["x509", "-noout", "-serial"], cert.as_bytes());
        if serials.last().map(|(s, _)| s) != Some(&serial) {
            serials.push((serial, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(serials.len() >= 2, "a new certificate arrived: {serials:?}");
    let (_, second_at) = &serials[1];
    assert!(
        *second_at >= Duration::from_secs(3),
        "the first certificate was reused until the threshold: {serials:?}"
    );
    assert!(
        *second_at < Duration::from_secs(6),
        "the new certificate came before the first expired: {serials:?}"
    );
}

/// Serials of the certificates the PKI mount has stored (its CA included).
async fn stored_certificates(bed: &Bed, mount: &str) -> Vec<String> {
    bed.world.bao.list(&format!("{mount}/certs")).await.unwrap()
}

fn serial_of(pem: &str) -> String {
    // `serial=0A1B...` → Vault's `0a:1b:...`.
    let hex = openssl(&["x509", "-noout", "-serial"], pem.as_bytes());
    let hex = hex.trim().trim_start_matches("serial=").to_ascii_lowercase();
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_outlives_shorter_tokens_across_logins() {
    // Tokens of 3 s that cannot be renewed past 3 s: the provider logs in
    // again every couple of seconds. The certificate (1 h) is not a lease:
    // it is returned across every token replacement, and revoking the old
    // tokens does not revoke it.
    let bed = Bed::start().await;
    bed.world.bao.setup_pki("pki", "web", "2h").await.unwrap();
    bed.role("app")
        .audience(Some("vault"))
        .ttl("3s", "3s")
        .write()
        .await
        .unwrap();
    let p = bed.provider("p", &["-rotation-grace=1s"]).await;
    let pod = bed.pod("web-0").await;
    let objects = "- {objectName: tls.crt, secretPath: pki/issue/web, method: PUT, secretArgs: {common_name: a.example.com, ttl: 1h}, secretKey: certificate}\n";
    let stored_before = stored_certificates(&bed, "pki").await.len();
    let logins_before = token_reviews(&bed.kube);
    let started = Instant::now();
    let mut first: Option<(String, String)> = None;
    while started.elapsed() < Duration::from_secs(8) {
        let r = p.mount(&params(objects, &[]), &pod).await.expect("mount");
        let cert = text(&r, "tls.crt");
        let version = versions(&r)["tls.crt"].clone();
        let (cert0, version0) = first.get_or_insert((cert.clone(), version.clone()));
        assert_eq!(
            *cert0,
            cert,
            "at {:?}: the same certificate across token logins",
            started.elapsed()
        );
        assert_eq!(*version0, version, "same content, same version");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let logins = token_reviews(&bed.kube) - logins_before;
    assert!(
        logins >= 2,
        "the 3-second tokens were replaced by logins: {logins} logins\n{}",
        p.logs()
    );
    assert_eq!(
        stored_certificates(&bed, "pki").await.len() - stored_before,
        1,
        "one certificate issued for {logins} tokens"
    );
    // Every token but the current one has expired or been revoked by now.
    let (cert, _) = first.unwrap();
    let serial = serial_of(&cert);
    let record = bed.world.bao.read(&format!("pki/cert/{serial}")).await.unwrap();
    assert_eq!(
        record["data"]["revocation_time"].as_i64(),
        Some(0),
        "the certificate is not revoked with its token: {record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refused_by_vault_costs_a_login_but_not_the_certificate() {
    let bed = Bed::start().await;
    bed.world.bao.setup_pki("pki", "web", "2h").await.unwrap();
    bed.kv_secret().await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = "- {objectName: tls.crt, secretPath: pki/issue/web, method: PUT, secretArgs: {common_name: a.example.com, ttl: 1h}, secretKey: certificate}\n- {objectName: k, secretPath: secret/data/app, secretKey: k}\n";
    let stored_before = stored_certificates(&bed, "pki").await.len();
    let first = text(&p.mount(&params(objects, &[]), &pod).await.unwrap(), "tls.crt");
    // Every kubernetes-login token revoked behind the provider's back: the
    // KV read is refused with the cached token, which earns one login.
    bed.revoke_logins().await;
    let r = p
        .mount(&params(objects, &[]), &pod)
        .await
        .expect("a refused token leads to one fresh login");
    assert_eq!(text(&r, "k"), "v");
    assert_eq!(token_reviews(&bed.kube), 2);
    assert_eq!(
        text(&r, "tls.crt"),
        first,
        "the certificate did not depend on the refused token"
    );
    assert_eq!(stored_certificates(&bed, "pki").await.len() - stored_before, 1);
    let record = bed
        .world
        .bao
        .read(&format!("pki/cert/{}", serial_of(&first)))
        .await
        .unwrap();
    assert_eq!(record["data"]["revocation_time"].as_i64(), Some(0), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pod_revokes_its_credentials_only() {
    let (bed, pg) = db_bed("1h", "2h", "1h").await;
    let p = bed.provider("p", &[&format!("-node-name={}", bed.kube.node)]).await;
    let a = bed.pod("a-0").await;
    let b = bed.pod("b-0").await;
    let (ua, pa) = creds(&p.mount(&params(DB_OBJECTS, &[]), &a).await.unwrap());
    let (ub, pb) = creds(&p.mount(&params(DB_OBJECTS, &[]), &b).await.unwrap());
    assert_ne!(ua, ub, "two pods of one service account get their own credentials");
    assert_eq!(count(&bed, "database/creds/app").await, 2);
    bed.kube.delete_pod(bed.ns(), "a-0").await.unwrap();
    eventually(Duration::from_secs(5), "pod a's credentials to be revoked", || async {
        !pg.can_login(&ua, &pa).await.unwrap()
    })
    .await;
    assert!(
        pg.can_login(&ub, &pb).await.unwrap(),
        "pod b's credentials are untouched"
    );
    assert_eq!(count(&bed, "database/creds/app").await, 1);
    assert_eq!(
        count(&bed, "auth/kubernetes/login").await,
        1,
        "pod a's token was revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_the_ledger_and_a_tampered_state_file_is_ignored() {
    let (bed, pg) = db_bed("1h", "2h", "1h").await;
    let pod = bed.pod("web-0").await;
    let p = bed.provider("p", &[]).await;
    let before = creds(&p.mount(&params(DB_OBJECTS, &[]), &pod).await.unwrap());
    let state = bed.dir.path().join("p.state");
    eventually(Duration::from_secs(5), "the state file to be written", || async {
        state.exists()
    })
    .await;
    p.kill().await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o600);
    let raw = std::fs::read(&state).unwrap();
    assert!(
        !String::from_utf8_lossy(&raw).contains(&before.0),
        "the state file is encrypted"
    );

    let p = bed.provider("p", &[]).await;
    let after = creds(&p.mount(&params(DB_OBJECTS, &[]), &pod).await.unwrap());
    assert_eq!(before, after, "same credentials after SIGKILL and restart");
    assert_eq!(count(&bed, "database/creds/app").await, 1, "no new lease");
    assert!(pg.can_login(&after.0, &after.1).await.unwrap());
    p.kill().await;

    let mut tampered = std::fs::read(&state).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x55;
    std::fs::write(&state, tampered).unwrap();
    let p = bed.provider("p", &[]).await;
    let fresh = creds(
        &p.mount(&params(DB_OBJECTS, &[]), &pod)
            .await
            .expect("mounts work with a tampered state file"),
    );
    assert_ne!(fresh.0, before.0, "state ignored: new credentials");
    assert!(p.logs().contains("ignoring the ledger state file"), "{}", p.logs());
}

/// The committed measurement: leases and logins per pod-hour for a pod
/// republished every 2 minutes (30 calls in an hour), with the ledger off
/// (every mount reads anew, as the core provider and the incumbent do) and
/// on. TTLs are an hour, so compressing the hour into seconds changes no
/// count. Run: `cargo test --test it leases::pod_hour -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_hour_lease_and_login_counts() {
    let (bed, _pg) = db_bed("1h", "2h", "1h").await;
    bed.kv_secret().await;
    let objects = format!("{DB_OBJECTS}- {{objectName: kv, secretPath: secret/data/app, secretKey: k}}\n");
    let mut report = Vec::new();
    for (label, reuse) in [
        ("before (lease reuse off)", "false"),
        ("after (lease reuse on)", "true"),
    ] {
        let name = format!("p-{reuse}");
        let p = bed.provider(&name, &[&format!("-lease-reuse={reuse}")]).await;
        let pod = bed.pod(&format!("pod-{reuse}")).await;
        let leases_before = count(&bed, "database/creds/app").await;
        let logins_before = count(&bed, "auth/kubernetes/login").await;
        for _ in 0..30 {
            p.mount(&params(&objects, &[]), &pod).await.expect("mount");
        }
        let leases = count(&bed, "database/creds/app").await - leases_before;
        let logins = count(&bed, "auth/kubernetes/login").await - logins_before;
        report.push((label, leases, logins));
    }
    for (label, leases, logins) in &report {
        println!("pod-hour, republished every 2 min, {label}: {leases} database leases, {logins} logins");
    }
    assert_eq!(report[0].1, 30, "without reuse every republish mints a lease");
    assert_eq!(report[1].1, 1, "with reuse one lease serves the hour");
    assert_eq!(report[1].2, 1);
}

/// The committed PKI measurement: certificates issued per pod-hour for a
/// pod republished every 2 minutes (30 calls), with a role token TTL of
/// 20 minutes and a certificate TTL of 72 hours, with the ledger off and on.
/// The hour is compressed into seconds: the certificate's own 72 h are what
/// bound its reuse, so this changes no certificate count (the token renewals
/// and re-logins of a real hour are simulated in the ledger's unit tests,
/// `cargo test --lib pod_hour -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_hour_certificate_counts() {
    let bed = Bed::start().await;
    bed.world.bao.setup_pki("pki", "web", "100h").await.unwrap();
    bed.role("app")
        .audience(Some("vault"))
        .ttl("20m", "24h")
        .write()
        .await
        .unwrap();
    let objects = "- {objectName: tls.crt, secretPath: pki/issue/web, method: PUT, secretArgs: {common_name: a.example.com, ttl: 72h}, secretKey: certificate}\n";
    let mut report = Vec::new();
    for (label, reuse) in [
        ("before (lease reuse off)", "false"),
        ("after (lease reuse on)", "true"),
    ] {
        let p = bed
            .provider(&format!("p-{reuse}"), &[&format!("-lease-reuse={reuse}")])
            .await;
        let pod = bed.pod(&format!("pod-{reuse}")).await;
        let certs_before = stored_certificates(&bed, "pki").await.len();
        let logins_before = token_reviews(&bed.kube);
        for _ in 0..30 {
            p.mount(&params(objects, &[]), &pod).await.expect("mount");
        }
        let certs = stored_certificates(&bed, "pki").await.len() - certs_before;
        let logins = token_reviews(&bed.kube) - logins_before;
        report.push((label, certs, logins));
    }
    for (label, certs, logins) in &report {
        println!(
            "pod-hour, republished every 2 min, token TTL 20 m, certificate TTL 72 h, {label}: {certs} certificates, {logins} logins"
        );
    }
    assert_eq!(report[0].1, 30, "without reuse every republish issues a certificate");
    assert_eq!(report[1].1, 1, "with reuse one certificate serves the hour");
    assert_eq!(report[1].2, 1);
}
