//! Fault injection: Vault stopped, restarted, sealed, slow, failing,
//! redirecting, cutting connections, refusing them; the Kubernetes API down
//! or slow. For each fault the mount fails within a bounded time with a
//! message naming the cause (or succeeds where retrying is safe), the
//! provider stays alive, the failure's kind (in its log line and metric
//! label) tells "nothing was minted" (`vault_unavailable`) from "Vault may
//! have minted something" (`vault_failed`), every gRPC code is final for
//! kubelet (`error.rs`), leases are counted, and the next mount after
//! recovery succeeds.
//!
//! Each observation is printed as a `FAULT |` line (`--nocapture`); those
//! lines are the figures in docs/reliability.md.

use std::time::{Duration, Instant};

use crate::support::*;
use tonic::Code;
use vcp_testbed::driver::{mount_request, Generation, PodContext};

/// A KV object and a dynamic database credential (one lease per read).
const OBJECTS: &str = "- {objectName: k, secretPath: secret/data/app, secretKey: k}\n- {objectName: user, secretPath: database/creds/app, secretKey: username}\n- {objectName: pass, secretPath: database/creds/app, secretKey: password}\n";
const LEASES: &str = "database/creds/app";

/// A world with a KV secret and a database role, for counting leases.
async fn db_bed() -> Bed {
    let bed = Bed::start().await;
    configure_secrets(&bed).await;
    bed
}

async fn configure_secrets(bed: &Bed) {
    bed.database("1h", "2h").await;
    bed.kv_secret().await;
}

/// A provider that watches its node's pods, so deleting a pod revokes its
/// token and every lease the token created.
async fn provider(bed: &Bed, name: &str, extra: &[&str]) -> Provider {
    let node = format!("-node-name={}", bed.kube.node);
    let mut args = vec![node.as_str()];
    args.extend_from_slice(extra);
    bed.provider(name, &args).await
}

/// Deletes the pods and waits until their leases are revoked with their tokens.
async fn pods_gone_leases_revoked(bed: &Bed, pods: &[&PodContext]) {
    for pod in pods {
        bed.kube.delete_pod(&pod.namespace, &pod.name).await.unwrap();
    }
    eventually(
        Duration::from_secs(10),
        "every lease revoked with its pod's token",
        || async { leases(bed).await == 0 },
    )
    .await;
}

/// The SPC parameters: role `app`, audience `vault` (also for tokens the
/// provider requests itself, which role `app` insists on).
fn spc() -> std::collections::BTreeMap<String, String> {
    params(OBJECTS, &[("audience", "vault")])
}

async fn leases(bed: &Bed) -> usize {
    bed.bao.leases(LEASES).await.expect("list leases").len()
}

/// Mounts expecting a failure of `kind` within `bound`, with a message
/// naming every one of `mentions`; prints the observation.
async fn fails(
    label: &str,
    p: &Provider,
    pod: &PodContext,
    bound: Duration,
    kind: &str,
    mentions: &[&str],
) -> tonic::Status {
    let started = Instant::now();
    let r = p.mount(&spc(), pod).await;
    let elapsed = started.elapsed();
    let e = match r {
        Ok(_) => panic!("{label}: the mount succeeded during the fault"),
        Err(e) => e,
    };
    println!(
        "FAULT | {label} | {:?} | {} ms | {}",
        e.code(),
        elapsed.as_millis(),
        e.message()
    );
    assert!(
        elapsed < bound,
        "{label}: took {elapsed:?} (bound {bound:?}): {}",
        e.message()
    );
    assert_failed_as(p, &e, kind);
    assert_mentions(&e, mentions);
    e
}

/// Mounts with a driver deadline of `deadline` (the provider keeps 2 s of
/// it), expecting a failure before it: for faults the provider waits out
/// (Vault unreachable or sealed) until its deadline.
async fn fails_by(label: &str, p: &Provider, pod: &PodContext, deadline: Duration) -> tonic::Status {
    let client = p.client(Generation::V16).await.expect("socket accepts");
    let req = mount_request(Generation::V16, "spc", &spc(), pod, false, Vec::new());
    let started = Instant::now();
    let e = client
        .mount(req, deadline)
        .await
        .err()
        .unwrap_or_else(|| panic!("{label}: the mount succeeded during the fault"));
    let elapsed = started.elapsed();
    println!(
        "FAULT | {label} | {:?} | {} ms | {}",
        e.code(),
        elapsed.as_millis(),
        e.message()
    );
    assert!(elapsed < deadline, "{label}: took {elapsed:?} (deadline {deadline:?})");
    assert_ne!(
        e.code(),
        Code::DeadlineExceeded,
        "{label}: reported before the deadline: {}",
        e.message()
    );
    e
}

/// A driver deadline for faults that are waited out: 3 s of retrying.
const SHORT_DEADLINE: Duration = Duration::from_secs(5);

/// Mounts expecting success (the recovery check).
async fn succeeds(label: &str, p: &Provider, pod: &PodContext) {
    let started = Instant::now();
    let r = p.mount(&spc(), pod).await;
    let r = r.unwrap_or_else(|e| panic!("{label}: {:?}: {}", e.code(), e.message()));
    assert_eq!(text(&r, "k"), "v");
    println!("FAULT | {label} | OK | {} ms |", started.elapsed().as_millis());
}

/// The provider process is alive, answers, and never panicked.
async fn alive(p: &mut Provider) {
    assert!(p.child.try_wait().unwrap().is_none(), "provider exited: {}", p.logs());
    let c = p.client(Generation::V16).await.expect("socket accepts");
    c.version().await.expect("Version answers");
    assert!(!p.logs().contains("panicked"), "provider panicked: {}", p.logs());
}

/// A fault that lets requests reach Vault and loses the answers: a new pod
/// (`cold-0`) fails its login and `warm` its reads within `bound`, as
/// `vault_failed` (Vault may have issued a token, or minted a credential)
/// naming `cause`. Returns the new pod.
async fn answers_lost(
    bed: &Bed,
    p: &Provider,
    warm: &PodContext,
    label: &str,
    bound: Duration,
    cause: &str,
) -> PodContext {
    let cold = bed.pod("cold-0").await;
    fails(
        &format!("{label}, new pod (login)"),
        p,
        &cold,
        bound,
        "vault_failed",
        &["login to Vault", cause, "may have issued a token"],
    )
    .await;
    fails(
        &format!("{label}, cached token (reads)"),
        p,
        warm,
        bound,
        "vault_failed",
        &[cause],
    )
    .await;
    cold
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_stopped_then_restarted() {
    let mut bed = db_bed().await;
    let mut p = provider(&bed, "p", &[]).await;
    let warm = bed.pod("warm-0").await;
    succeeds("stopped: warm-up", &p, &warm).await;
    assert_eq!(leases(&bed).await, 1);

    bed.world.bao.stop().await.unwrap();
    // No token yet: the login never reached Vault, so the driver may retry.
    let cold = bed.pod("cold-0").await;
    let e = fails_by("Vault stopped, new pod (login)", &p, &cold, SHORT_DEADLINE).await;
    assert_failed_as(&p, &e, "vault_unavailable");
    assert_mentions(
        &e,
        &["login to Vault at", "cannot connect to Vault", "refused", "attempts in"],
    );
    // A cached token: no read reached Vault, so nothing was minted either.
    let e = fails_by(
        "Vault stopped, pod with cached token (reads)",
        &p,
        &warm,
        SHORT_DEADLINE,
    )
    .await;
    assert_failed_as(&p, &e, "vault_unavailable");
    assert_mentions(&e, &["object \"", "cannot connect to Vault"]);
    alive(&mut p).await;

    // Dev mode forgets everything on restart: configure it again. The
    // provider's cached token is now unknown to Vault (403): one fresh login.
    bed.world.bao.restart().await.unwrap();
    bed.world.configure_vault().await.unwrap();
    configure_secrets(&bed).await;
    succeeds("Vault restarted: pod with stale token", &p, &warm).await;
    succeeds("Vault restarted: new pod", &p, &cold).await;
    assert_eq!(leases(&bed).await, 2, "one lease per pod after the restart");
    alive(&mut p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_refusing_connections() {
    let bed = db_bed().await;
    let proxy = Proxy::start(&bed.bao.addr(), Duration::ZERO).await;
    let mut p = provider(&bed, "p", &[&format!("-vault-addr={}", proxy.url())]).await;
    let warm = bed.pod("warm-0").await;
    succeeds("refused: warm-up", &p, &warm).await;

    proxy.set(Fault::Refuse);
    let cold = bed.pod("cold-0").await;
    let e = fails_by("connection refused, new pod (login)", &p, &cold, SHORT_DEADLINE).await;
    assert_failed_as(&p, &e, "vault_unavailable");
    assert_mentions(&e, &["cannot connect to Vault", "refused"]);
    let e = fails_by("connection refused, cached token (reads)", &p, &warm, SHORT_DEADLINE).await;
    assert_failed_as(&p, &e, "vault_unavailable");
    assert_eq!(leases(&bed).await, 1, "nothing was minted");
    alive(&mut p).await;

    proxy.set(Fault::Pass);
    succeeds("connections accepted again: cached token", &p, &warm).await;
    succeeds("connections accepted again: new pod", &p, &cold).await;
    assert_eq!(leases(&bed).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_sealed_then_unsealed() {
    let bed = db_bed().await;
    let mut p = provider(&bed, "p", &[]).await;
    let warm = bed.pod("warm-0").await;
    succeeds("sealed: warm-up", &p, &warm).await;

    bed.bao.seal().await.unwrap();
    let cold = bed.pod("cold-0").await;
    let e = fails_by("Vault sealed, new pod (login)", &p, &cold, SHORT_DEADLINE).await;
    assert_failed_as(&p, &e, "vault_unavailable");
    assert_mentions(&e, &["login to Vault", "503", "Vault is sealed", "attempts in"]);
    // A sealed Vault processed no read: retryable.
    let e = fails_by("Vault sealed, cached token (reads)", &p, &warm, SHORT_DEADLINE).await;
    assert_failed_as(&p, &e, "vault_unavailable");
    assert_mentions(&e, &["503", "Vault is sealed"]);
    alive(&mut p).await;

    bed.bao.unseal().await.unwrap();
    succeeds("unsealed: cached token", &p, &warm).await;
    succeeds("unsealed: new pod", &p, &cold).await;
    assert_eq!(leases(&bed).await, 2, "a sealed Vault minted nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_slower_than_the_request_timeout_or_the_deadline() {
    let bed = db_bed().await;
    let proxy = Proxy::start(&bed.bao.addr(), Duration::ZERO).await;
    let vault = format!("-vault-addr={}", proxy.url());
    let mut p = provider(&bed, "p", &[&vault, "-request-timeout=1s"]).await;
    let warm = bed.pod("warm-0").await;
    succeeds("slow: warm-up", &p, &warm).await;
    let tokens_before = bed.bao.leases("auth/kubernetes/login").await.unwrap().len();

    proxy.set(Fault::Delay(Duration::from_secs(3)));
    let cold = answers_lost(
        &bed,
        &p,
        &warm,
        "Vault slower than -request-timeout=1s",
        Duration::from_millis(2500),
        "did not answer within 1s",
    )
    .await;
    let tokens = bed.bao.leases("auth/kubernetes/login").await.unwrap().len() - tokens_before;
    println!("FAULT | slow: tokens created by timed-out logins | {tokens} |");
    assert_eq!(tokens, 1, "a timed-out login is not resent");

    // Only the database is slow: the read reached Vault, which minted a
    // credential the provider never saw.
    let db_slow = bed.pod("db-slow-0").await;
    let before = leases(&bed).await;
    proxy.set_only("/v1/database/", Fault::Delay(Duration::from_secs(3)));
    let e = fails(
        "Vault's database engine slower than -request-timeout=1s, new pod",
        &p,
        &db_slow,
        Duration::from_millis(2500),
        "vault_failed",
        &[],
    )
    .await;
    assert_mentions(
        &e,
        &["object \"user\"", "database/creds/app", "did not answer within 1s"],
    );
    // Proving a negative: the read's lease exists once Vault has it; a
    // resend (the client's retries come within 1 s) would add a second one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let orphans = leases(&bed).await - before;
    println!("FAULT | slow database read: leases minted by the failed mount | {orphans} |");
    assert_eq!(orphans, 1, "a timed-out read is not resent");
    alive(&mut p).await;

    // The driver's deadline (4 s, minus the provider's 2 s margin) comes
    // before the default 15 s request timeout.
    let p2 = provider(&bed, "p2", &[&vault]).await;
    proxy.set(Fault::Delay(Duration::from_secs(10)));
    let client = p2.client(Generation::V16).await.unwrap();
    let late = bed.pod("late-0").await;
    let req = mount_request(Generation::V16, "spc", &params(OBJECTS, &[]), &late, false, Vec::new());
    let started = Instant::now();
    let e = client.mount(req, Duration::from_secs(4)).await.unwrap_err();
    let elapsed = started.elapsed();
    println!(
        "FAULT | Vault slower than the driver's 4 s deadline | {:?} | {} ms | {}",
        e.code(),
        elapsed.as_millis(),
        e.message()
    );
    assert_failed_as(&p2, &e, "timeout");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_mentions(&e, &["timed out", "late-0"]);

    proxy.set(Fault::Pass);
    succeeds("fast again: cached token", &p, &warm).await;
    succeeds("fast again: new pod", &p, &cold).await;
    succeeds("fast again: the pod whose database read was slow", &p, &db_slow).await;
    pods_gone_leases_revoked(&bed, &[&warm, &cold, &db_slow, &late]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_answering_500_and_503() {
    let bed = db_bed().await;
    let proxy = Proxy::start(&bed.bao.addr(), Duration::ZERO).await;
    let mut p = provider(&bed, "p", &[&format!("-vault-addr={}", proxy.url())]).await;
    let warm = bed.pod("warm-0").await;
    succeeds("5xx: warm-up", &p, &warm).await;

    for status in [500, 503] {
        proxy.clear_seen();
        proxy.set(Fault::Status(status));
        let cold = bed.pod(&format!("cold-{status}")).await;
        // Vault answered with an error: no token was handed out.
        fails(
            &format!("Vault answering {status}, new pod (login)"),
            &p,
            &cold,
            Duration::from_secs(5),
            "vault_unavailable",
            &["login to Vault", &format!("Vault answered {status}"), "injected fault"],
        )
        .await;
        // An unexplained 5xx may have been processed: a login is not resent.
        assert_eq!(proxy.seen().iter().filter(|s| s.path.contains("/login")).count(), 1);
        fails(
            &format!("Vault answering {status}, cached token (reads)"),
            &p,
            &warm,
            Duration::from_secs(5),
            "vault_failed",
            &[&format!("Vault answered {status}")],
        )
        .await;
        // GETs were retried (3 attempts).
        let seen = proxy.seen();
        assert_eq!(seen.iter().filter(|s| s.path.starts_with("/v1/secret/")).count(), 3);
        proxy.set(Fault::Pass);
        succeeds(&format!("after {status}: new pod"), &p, &cold).await;
    }
    alive(&mut p).await;
    succeeds("after 5xx: cached token", &p, &warm).await;
    assert_eq!(leases(&bed).await, 3, "warm-up plus one per recovered pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_redirecting_to_a_standby() {
    let bed = db_bed().await;
    let proxy = Proxy::start(&bed.bao.addr(), Duration::ZERO).await;
    let mut p = provider(&bed, "p", &[&format!("-vault-addr={}", proxy.url())]).await;
    let warm = bed.pod("warm-0").await;
    succeeds("307: warm-up", &p, &warm).await;

    proxy.clear_seen();
    proxy.set(Fault::Redirect("http://standby.invalid:8200/v1/x".to_string()));
    let cold = bed.pod("cold-0").await;
    fails(
        "Vault redirecting (307), new pod (login)",
        &p,
        &cold,
        Duration::from_secs(3),
        "vault_rejected",
        &["307", "redirect to http://standby.invalid:8200", "vaultAddress"],
    )
    .await;
    fails(
        "Vault redirecting (307), cached token (reads)",
        &p,
        &warm,
        Duration::from_secs(3),
        "vault_rejected",
        &[],
    )
    .await;
    assert_eq!(
        proxy.seen().iter().filter(|s| s.path.contains("/login")).count(),
        1,
        "a redirect is not retried"
    );
    alive(&mut p).await;
    proxy.set(Fault::Pass);
    succeeds("redirects over: new pod", &p, &cold).await;
    assert_eq!(leases(&bed).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_closing_connections_mid_response() {
    let bed = db_bed().await;
    bed.bao.setup_pki("pki", "web", "24h").await.unwrap();
    let proxy = Proxy::start(&bed.bao.addr(), Duration::ZERO).await;
    let mut p = provider(&bed, "p", &[&format!("-vault-addr={}", proxy.url())]).await;
    let warm = bed.pod("warm-0").await;
    succeeds("cut: warm-up", &p, &warm).await;
    let tokens_before = bed.bao.leases("auth/kubernetes/login").await.unwrap().len();

    proxy.set(Fault::CloseMidResponse);
    let cold = answers_lost(
        &bed,
        &p,
        &warm,
        "connection closed mid-response",
        Duration::from_secs(5),
        "connection to Vault broke",
    )
    .await;

    // A PUT (a certificate issue) reached Vault: it must not be sent twice.
    proxy.clear_seen();
    let pki = "- {objectName: crt, secretPath: pki/issue/web, method: PUT, secretArgs: {common_name: a.example.com}, secretKey: certificate}\n";
    let started = Instant::now();
    let e = p
        .mount(&params(pki, &[("audience", "vault")]), &warm)
        .await
        .unwrap_err();
    println!(
        "FAULT | connection closed mid-response, PUT pki/issue | {:?} | {} ms | {}",
        e.code(),
        started.elapsed().as_millis(),
        e.message()
    );
    assert_failed_as(&p, &e, "vault_failed");
    assert_eq!(proxy.forwarded("/v1/pki/issue/web"), 1, "a PUT is never resent");
    alive(&mut p).await;

    // Only the database read is cut: it reached Vault, which minted a
    // credential; the GET is retried (up to 3 attempts), each minting one.
    let db_cut = bed.pod("db-cut-0").await;
    let before = leases(&bed).await;
    proxy.set_only("/v1/database/", Fault::CloseMidResponse);
    fails(
        "connection closed mid-response, database read only, new pod",
        &p,
        &db_cut,
        Duration::from_secs(5),
        "vault_failed",
        &[],
    )
    .await;
    let orphans = leases(&bed).await - before;
    println!("FAULT | cut database read: leases minted by the failed mount | {orphans} |");
    assert_eq!(
        orphans,
        proxy.forwarded("/v1/database/"),
        "one lease per attempt that reached Vault"
    );

    proxy.set(Fault::Pass);
    let tokens = bed.bao.leases("auth/kubernetes/login").await.unwrap().len() - tokens_before;
    println!("FAULT | cut: tokens created by cut logins | {tokens} |");
    assert_eq!(
        tokens, 2,
        "the cut login is not resent: one token from it, one from the db-cut pod's login"
    );
    succeeds("connections whole again: cached token", &p, &warm).await;
    succeeds("connections whole again: new pod", &p, &cold).await;
    succeeds("connections whole again: the pod whose read was cut", &p, &db_cut).await;
    // What cut reads minted belongs to the pod's token: gone with the pod.
    pods_gone_leases_revoked(&bed, &[&warm, &cold, &db_cut]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_api_down_or_slow() {
    let bed = db_bed().await;
    // Vault behind a proxy, to prove that nothing reaches it when the key
    // cannot be loaded.
    let proxy = Proxy::start(&bed.bao.addr(), Duration::ZERO).await;
    let vault = format!("-vault-addr={}", proxy.url());
    let pod = bed.pod("web-0").await;

    // Down from the start: the version key cannot be loaded, so the mount
    // fails before anything is asked of Vault, and the driver may retry.
    bed.kube.set_unavailable(true);
    let mut p = provider(&bed, "p", &[&vault, "-request-timeout=1s"]).await;
    fails(
        "Kubernetes API down (503), version key not loaded",
        &p,
        &pod,
        Duration::from_secs(5),
        "kube_unavailable",
        &["object-version key Secret", "503"],
    )
    .await;
    // (Only the provider's reachability probe, GET sys/health, may pass.)
    let asked: Vec<Seen> = proxy
        .seen()
        .into_iter()
        .filter(|s| !s.path.starts_with("/v1/sys/health"))
        .collect();
    assert!(asked.is_empty(), "nothing was asked of Vault: {asked:?}");
    bed.kube.set_unavailable(false);
    succeeds("Kubernetes API back", &p, &pod).await;

    // Down with the key loaded and a cached token: nothing needs Kubernetes.
    bed.kube.set_unavailable(true);
    succeeds("Kubernetes API down, key and token cached", &p, &pod).await;
    // A pod without a kubelet token needs the TokenRequest API.
    let bare = bed.pod_without_token("bare-0").await;
    let e = fails(
        "Kubernetes API down (503), TokenRequest needed",
        &p,
        &bare,
        Duration::from_secs(5),
        "kube_unavailable",
        &[],
    )
    .await;
    // (The pod is first checked to run on this node, which needs the API too.)
    assert_mentions(&e, &[&format!("pod {}/bare-0", bed.ns()), "503"]);
    // A new pod with a kubelet token: Vault's own TokenReview fails.
    let fresh = bed.pod("fresh-0").await;
    fails(
        "Kubernetes API down (503), Vault's TokenReview fails",
        &p,
        &fresh,
        Duration::from_secs(5),
        "vault_denied",
        &["login to Vault", "TokenReview"],
    )
    .await;
    bed.kube.set_unavailable(false);
    alive(&mut p).await;

    // Slow (3 s per answer, -request-timeout=1s) from the start.
    bed.kube.set_delay(Duration::from_secs(3));
    let mut q = provider(&bed, "q", &[&vault, "-request-timeout=1s"]).await;
    fails(
        "Kubernetes API slower than -request-timeout=1s, version key not loaded",
        &q,
        &pod,
        Duration::from_secs(5),
        "kube_unavailable",
        &["object-version key Secret", "1s"],
    )
    .await;
    // Slow after the key was loaded: the TokenRequest times out.
    bed.kube.set_delay(Duration::ZERO);
    succeeds("Kubernetes API fast again", &q, &pod).await;
    bed.kube.set_delay(Duration::from_secs(3));
    let bare2 = bed.pod_without_token("bare-1").await;
    fails(
        "Kubernetes API slower than -request-timeout=1s, TokenRequest needed",
        &q,
        &bare2,
        Duration::from_secs(5),
        "kube_unavailable",
        &[],
    )
    .await;
    succeeds("Kubernetes API slow, key and token cached", &q, &pod).await;
    bed.kube.set_delay(Duration::ZERO);
    alive(&mut q).await;
    succeeds("Kubernetes API fast again: TokenRequest", &q, &bare2).await;
    succeeds("Kubernetes API fast again: fresh pod", &p, &fresh).await;

    // Throttled by API priority and fairness (429 with Retry-After): no
    // hidden retries, the same bounded failure, naming the answer.
    bed.kube.set_failing(Some(429));
    let bare3 = bed.pod_without_token("bare-2").await;
    fails(
        "Kubernetes API throttling (429), TokenRequest needed",
        &p,
        &bare3,
        Duration::from_secs(5),
        "kube_unavailable",
        &["429"],
    )
    .await;
    succeeds("Kubernetes API throttling, key and token cached", &p, &pod).await;
    bed.kube.set_failing(None);
    succeeds("Kubernetes API answering again: TokenRequest", &p, &bare3).await;
}
