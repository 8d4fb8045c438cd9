//! `csi-bench`: the committed performance harness. Everything runs on this
//! machine against a real OpenBao dev server: the provider binary (built
//! next to this one; use `--release`), driven over its unix socket by
//! driver-like clients, and a **floor** — a direct Vault client making
//! exactly the calls a mount needs (login, then the reads) — measured in the
//! same run, so results are ratios that survive a noisy machine.
//!
//! Warm mounts are also timed through real driver libraries — grpc-go (the
//! CSI driver's own, `testbed/go-driver`) and gRPC C-core (grpcio) — each
//! on one persistent connection as the driver keeps one, interleaved call by
//! call with the floor (`VCP_GO_DRIVER` and `VCP_PYTHON` must be set;
//! `scripts/bench.sh` builds and exports them).
//!
//! Run: `scripts/bench.sh` (or `cargo run --release --bin csi-bench`).
//! `--quick` shortens every phase; `--pod-hour` runs only the Vault load
//! per pod-hour (database leases and PKI certificates); `--footprint` only
//! the footprint (RSS idle and loaded, start-up, binary size). For diagnosis, `BENCH_PROVIDER_ARG` sets
//! one extra provider flag (e.g. `-log-level=warn`) and `BENCH_KEEP=1` keeps
//! the scratch directory with the provider's log (its mount lines carry
//! `duration_ms`).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use serde_json::json;
use vcp_testbed::clients::{RealClient, Session};
use vcp_testbed::driver::{mount_request, DriverClient, Generation, PodContext};
use vcp_testbed::floor::VaultFloor;
use vcp_testbed::postgres::Postgres;
use vcp_testbed::vault_proxy::VaultProxy;
use vcp_testbed::world::{params, Provider, World};

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if std::env::args().any(|a| a == "--pod-hour") {
        return rt.block_on(pod_hour_only());
    }
    if std::env::args().any(|a| a == "--footprint") {
        return rt.block_on(footprint_only(quick));
    }
    rt.block_on(run(quick))
}

/// `--footprint`: only the footprint section.
async fn footprint_only(quick: bool) -> anyhow::Result<()> {
    let bench = Bench::start().await?;
    let mut report = Report::new();
    let result = footprint(&bench, scale(quick), &mut report).await;
    print_report(&report);
    let _ = std::fs::remove_dir_all(&bench.dir);
    result
}

/// The run's scratch directory (created) and the provider binary built
/// next to this one.
fn scratch() -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("csi-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let binary = std::env::current_exe()?.with_file_name("vault-csi-provider");
    if !binary.exists() {
        return Err(anyhow!("{} not found: cargo build --release --bins", binary.display()));
    }
    Ok((dir, binary))
}

/// How much `--quick` divides every phase's iteration count by.
fn scale(quick: bool) -> usize {
    if quick {
        5
    } else {
        1
    }
}

/// What the run measured against its targets: (target, measured, met).
type Report = Vec<(&'static str, String, bool)>;

fn print_report(report: &Report) {
    println!("\n## Targets\n");
    println!("| target | measured | met |");
    println!("|---|---|---|");
    for (t, m, ok) in report {
        println!("| {t} | {m} | {} |", if *ok { "yes" } else { "no" });
    }
}

/// `--pod-hour`: only the Vault load per pod-hour.
async fn pod_hour_only() -> anyhow::Result<()> {
    let (dir, binary) = scratch()?;
    let world = World::start_named(&dir, "bench").await?;
    world
        .bao
        .kv2_put("secret", "bench/0", json!({"value": "value-0"}))
        .await?;
    let pg = Postgres::from_env().context("PostgreSQL (scripts/testbed.sh pg-start)")?;
    let result = vault_load(&world, &pg, &binary, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

struct Stats {
    p50: Duration,
    p99: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// One numeric field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, `Threads`
/// ...): kB for the memory fields; 0 when unreadable.
fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.split(':').next() == Some(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
}

/// Where the resident memory is: heap and stacks, or mapped file pages
/// (mostly the binary's own code), and how many threads.
fn rss_parts(pid: u32) -> String {
    format!(
        "anonymous {:.1} MiB, file-backed {:.1} MiB, {} threads",
        proc_status(pid, "RssAnon") as f64 / 1024.0,
        proc_status(pid, "RssFile") as f64 / 1024.0,
        proc_status(pid, "Threads")
    )
}

fn kv_objects(n: usize) -> String {
    (0..n)
        .map(|i| format!("- {{objectName: o{i}, secretPath: secret/data/bench/{i}, secretKey: value}}\n"))
        .collect()
}

fn secret_path(i: usize) -> String {
    format!("secret/data/bench/{i}")
}

struct Bench {
    world: World,
    provider: Provider,
    binary: PathBuf,
    floor: VaultFloor,
    /// Scratch directory: logs, state files.
    dir: PathBuf,
    pods: std::sync::atomic::AtomicUsize,
}

impl Bench {
    async fn new_pod(&self) -> anyhow::Result<PodContext> {
        let n = self.pods.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.world.pod(self.world.ns(), &format!("pod-{n}"), "app").await
    }

    fn jwt(pod: &PodContext) -> anyhow::Result<String> {
        let tokens: serde_json::Value = serde_json::from_str(pod.tokens.as_deref().unwrap_or("{}"))?;
        tokens["vault"]["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no token"))
    }

    async fn floor_mount(&self, jwt: &str, token: Option<&str>, objects: usize) -> anyhow::Result<()> {
        let token = match token {
            Some(t) => t.to_string(),
            None => self.floor.login("kubernetes", "app", jwt).await?,
        };
        let reads = (0..objects).map(|i| {
            let token = token.clone();
            async move { self.floor.read(&token, &secret_path(i)).await }
        });
        for r in futures_util::future::join_all(reads).await {
            r?;
        }
        Ok(())
    }
}

impl Bench {
    /// OpenBao with ten KV secrets, the Kubernetes double, and the provider
    /// under test serving.
    async fn start() -> anyhow::Result<Arc<Bench>> {
        let (dir, binary) = scratch()?;
        let world = World::start_named(&dir, "bench").await?;
        for i in 0..10 {
            world
                .bao
                .kv2_put(
                    "secret",
                    &format!("bench/{i}"),
                    json!({"value": format!("value-{i}-{}", "x".repeat(32))}),
                )
                .await?;
        }
        let provider = world
            .provider(
                &binary,
                "bench",
                &[std::env::var("BENCH_PROVIDER_ARG")
                    .unwrap_or("-log-level=info".into())
                    .as_str()],
            )
            .await?;
        let floor = VaultFloor::new(&world.bao.addr(), Duration::from_secs(15));
        Ok(Arc::new(Bench {
            world,
            provider,
            binary,
            floor,
            dir,
            pods: Default::default(),
        }))
    }
}

async fn run(quick: bool) -> anyhow::Result<()> {
    let scale = scale(quick);
    let bench = Bench::start().await?;
    let dir = bench.dir.clone();
    let client = bench.provider.client(Generation::V16).await?;
    let mut report = Report::new();
    println!(
        "# vault-csi-provider performance ({} run)\n",
        if quick { "quick" } else { "full" }
    );

    // --- Latency -------------------------------------------------------------------------
    let n_cold = 200 / scale;
    let n_warm = 500 / scale;
    let one = params(&kv_objects(1), &[]);
    let ten = params(&kv_objects(10), &[]);
    let (mut ours_cold, mut floor_cold) = (Vec::new(), Vec::new());
    for _ in 0..n_cold {
        let pod = bench.new_pod().await?;
        let req = mount_request(Generation::V16, "bench", &one, &pod, false, Vec::new());
        let t = Instant::now();
        client
            .mount(req, Duration::from_secs(30))
            .await
            .map_err(|s| anyhow!("mount: {s}"))?;
        ours_cold.push(t.elapsed());
        let pod = bench.new_pod().await?;
        let jwt = Bench::jwt(&pod)?;
        let t = Instant::now();
        bench.floor_mount(&jwt, None, 1).await?;
        floor_cold.push(t.elapsed());
    }
    let warm_pod = bench.new_pod().await?;
    let floor_token = bench.floor.login("kubernetes", "app", &Bench::jwt(&warm_pod)?).await?;
    let (mut ours_warm, mut floor_warm, mut ours_warm10, mut floor_warm10) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n_warm {
        let req = mount_request(Generation::V16, "bench", &one, &warm_pod, false, Vec::new());
        let t = Instant::now();
        client
            .mount(req, Duration::from_secs(30))
            .await
            .map_err(|s| anyhow!("mount: {s}"))?;
        ours_warm.push(t.elapsed());
        let t = Instant::now();
        bench.floor_mount("", Some(&floor_token), 1).await?;
        floor_warm.push(t.elapsed());
        let req = mount_request(Generation::V16, "bench", &ten, &warm_pod, false, Vec::new());
        let t = Instant::now();
        client
            .mount(req, Duration::from_secs(30))
            .await
            .map_err(|s| anyhow!("mount: {s}"))?;
        ours_warm10.push(t.elapsed());
        let t = Instant::now();
        bench.floor_mount("", Some(&floor_token), 10).await?;
        floor_warm10.push(t.elapsed());
    }
    let mut rtt = Vec::new();
    for _ in 0..n_warm {
        let t = Instant::now();
        client.version().await.map_err(|s| anyhow!("version: {s}"))?;
        rtt.push(t.elapsed());
    }
    let rtt = stats(rtt);
    let mut rejected = Vec::new();
    let bad = params("- {objectName: ../x, secretPath: secret/data/bench/0}\n", &[]);
    for _ in 0..n_warm {
        let req = mount_request(Generation::V16, "bench", &bad, &warm_pod, false, Vec::new());
        let t = Instant::now();
        let _ = client.mount(req, Duration::from_secs(30)).await;
        rejected.push(t.elapsed());
    }
    let rejected = stats(rejected);
    let (oc, fc, ow, fw, ow10, fw10) = (
        stats(ours_cold),
        stats(floor_cold),
        stats(ours_warm),
        stats(floor_warm),
        stats(ours_warm10),
        stats(floor_warm10),
    );
    println!("## Mount latency (p50 / p99)\n");
    println!("| scenario | provider | floor (direct Vault client) | ratio p50 |");
    println!("|---|---|---|---|");
    for (name, o, f) in [
        ("1 object, cold (login + read)", &oc, &fc),
        ("1 object, warm (cached token)", &ow, &fw),
        ("10 distinct objects, warm", &ow10, &fw10),
    ] {
        println!(
            "| {name} | {} / {} | {} / {} | {:.2}× |",
            ms(o.p50),
            ms(o.p99),
            ms(f.p50),
            ms(f.p99),
            o.p50.as_secs_f64() / f.p50.as_secs_f64()
        );
    }
    let warm_ratio = ow.p50.as_secs_f64() / fw.p50.as_secs_f64();
    let ten_over_one = ow10.p50.as_secs_f64() / ow.p50.as_secs_f64();
    println!("\n10-object warm mount over 1-object warm mount (p50): {ten_over_one:.2}×; the floor's own 10-read over 1-read ratio: {:.2}×", fw10.p50.as_secs_f64() / fw.p50.as_secs_f64());
    println!(
        "gRPC round trip through the socket (Version call, no Vault): p50 {} / p99 {}",
        ms(rtt.p50),
        ms(rtt.p99)
    );
    println!(
        "Mount rejected at parsing (full request, no Vault call): p50 {} / p99 {}\n",
        ms(rejected.p50),
        ms(rejected.p99)
    );
    report.push((
        "warm mount p50 ≤ 1.2× floor",
        format!("{warm_ratio:.2}×"),
        warm_ratio <= 1.2,
    ));

    // --- Warm mounts through the drivers' gRPC libraries ------------------------------------
    println!(
        "## Warm mount (1 object) through the drivers' gRPC libraries, one persistent connection
"
    );
    println!("| client | provider p50 / p90 / p99 / mean | floor p50 / p99 | ratio p50 |");
    println!("|---|---|---|---|");
    let warm_req = mount_request(Generation::V16, "bench", &one, &warm_pod, false, Vec::new());
    let mut go_ratio = f64::NAN;
    for client in [RealClient::GoV16, RealClient::GoV15, RealClient::CcoreLocalhost] {
        let mut session = client
            .session(&bench.provider.socket, &warm_req, Duration::from_secs(30))
            .await?;
        for _ in 0..20 {
            session_mount(&mut session, client).await?;
            bench.floor_mount("", Some(&floor_token), 1).await?;
        }
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..n_warm {
            ours.push(session_mount(&mut session, client).await?);
            let t = Instant::now();
            bench.floor_mount("", Some(&floor_token), 1).await?;
            floor.push(t.elapsed());
        }
        let mean = ours.iter().sum::<Duration>() / u32::try_from(ours.len()).unwrap_or(u32::MAX).max(1);
        let mut sorted = ours.clone();
        sorted.sort();
        let p90 = sorted[((sorted.len() as f64 - 1.0) * 0.9).round() as usize];
        let (o, f) = (stats(ours), stats(floor));
        let ratio = o.p50.as_secs_f64() / f.p50.as_secs_f64();
        if client == RealClient::GoV16 {
            go_ratio = ratio;
        }
        println!(
            "| {} | {} / {} / {} / {} | {} / {} | {ratio:.2}× |",
            client.name(),
            ms(o.p50),
            ms(p90),
            ms(o.p99),
            ms(mean),
            ms(f.p50),
            ms(f.p99)
        );
    }
    println!(
        "\n(latency measured inside each client around the library call; {n_warm} calls after 20 warm-ups, each followed by one floor read)\n"
    );
    report.push((
        "warm mount through grpc-go (driver v1.6 dialing) p50 ≤ 1.2× floor",
        format!("{go_ratio:.2}×"),
        go_ratio <= 1.2,
    ));
    report.push((
        "10-object warm ≤ 2× 1-object warm",
        format!("{ten_over_one:.2}×"),
        ten_over_one <= 2.0,
    ));

    // --- Throughput ----------------------------------------------------------------------
    println!("## Throughput (warm, 1 object)\n");
    println!("| concurrent clients | provider mounts/s | floor reads/s | ratio |");
    println!("|---|---|---|---|");
    let window = Duration::from_millis(if quick { 1000 } else { 3000 });
    let mut ratio64 = 0.0;
    for conc in [1usize, 16, 64] {
        let mut pods = Vec::new();
        for _ in 0..conc {
            let pod = bench.new_pod().await?;
            // Warm each pod's token first.
            let req = mount_request(Generation::V16, "bench", &one, &pod, false, Vec::new());
            client
                .mount(req, Duration::from_secs(30))
                .await
                .map_err(|s| anyhow!("{s}"))?;
            pods.push(pod);
        }
        let ours = throughput(
            window,
            pods.iter().cloned().map(|pod| {
                let one = one.clone();
                let socket = bench.provider.socket.clone();
                async move {
                    let c = DriverClient::connect(&socket, Generation::V16).await?;
                    Ok::<_, anyhow::Error>(move || {
                        let c = c.clone();
                        let req = mount_request(Generation::V16, "bench", &one, &pod, false, Vec::new());
                        async move {
                            c.mount(req, Duration::from_secs(30))
                                .await
                                .map(|_| ())
                                .map_err(|s| anyhow!("{s}"))
                        }
                    })
                }
            }),
        )
        .await?;
        let floor = throughput(
            window,
            (0..conc).map(|_| {
                let b = bench.clone();
                let token = floor_token.clone();
                async move {
                    Ok::<_, anyhow::Error>(move || {
                        let b = b.clone();
                        let token = token.clone();
                        async move { b.floor_mount("", Some(&token), 1).await }
                    })
                }
            }),
        )
        .await?;
        let ratio = ours / floor;
        if conc == 64 {
            ratio64 = ratio;
        }
        println!("| {conc} | {ours:.0} | {floor:.0} | {ratio:.2}× |");
    }
    report.push((
        "throughput at 64 clients ≥ 0.8× direct",
        format!("{ratio64:.2}×"),
        ratio64 >= 0.8,
    ));

    // --- Footprint -----------------------------------------------------------------------
    footprint(&bench, scale, &mut report).await?;

    // --- Vault load per pod-hour ---------------------------------------------------------
    match Postgres::from_env() {
        Ok(pg) => vault_load(&bench.world, &pg, &bench.binary, &dir).await?,
        Err(e) => println!("\n(Vault load per pod-hour skipped: {e})"),
    }

    print_report(&report);
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("\n(kept {})", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// The footprint section: idle and loaded RSS, start-up time, binary size.
async fn footprint(bench: &Bench, scale: usize, report: &mut Report) -> anyhow::Result<()> {
    println!("\n## Footprint\n");
    let one = params(&kv_objects(1), &[]);
    let ten = params(&kv_objects(10), &[]);
    let fresh = bench
        .world
        .provider(&bench.binary, "idle", &["-log-level=info"])
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = fresh.child.id().ok_or_else(|| anyhow!("no pid"))?;
    let idle = rss_kib(pid);
    println!("- RSS idle: {:.1} MiB ({})", idle as f64 / 1024.0, rss_parts(pid));
    let fresh_client = fresh.client(Generation::V16).await?;
    let n_ids = 1000 / scale;
    for _ in 0..n_ids {
        let pod = bench.new_pod().await?;
        let req = mount_request(Generation::V16, "bench", &one, &pod, false, Vec::new());
        fresh_client
            .mount(req, Duration::from_secs(30))
            .await
            .map_err(|s| anyhow!("{s}"))?;
    }
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..40 {
            peak = peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    });
    let mut burst = Vec::new();
    for _ in 0..64 {
        let pod = bench.new_pod().await?;
        let c = fresh_client.clone();
        let req = mount_request(Generation::V16, "bench", &ten, &pod, false, Vec::new());
        burst.push(tokio::spawn(async move { c.mount(req, Duration::from_secs(30)).await }));
    }
    for b in burst {
        b.await?.map_err(|s| anyhow!("{s}"))?;
    }
    let peak = sampler.await?.max(rss_kib(pid));
    println!(
        "- RSS with {n_ids} cached pod identities and 64 concurrent 10-object mounts: {:.1} MiB (peak sampled)",
        peak as f64 / 1024.0
    );
    report.push((
        "idle RSS ≤ 15 MiB",
        format!("{:.1} MiB", idle as f64 / 1024.0),
        idle <= 15 * 1024,
    ));
    report.push((
        "RSS under load ≤ 64 MiB",
        format!("{:.1} MiB", peak as f64 / 1024.0),
        peak <= 64 * 1024,
    ));
    fresh.kill().await;

    let mut startups = Vec::new();
    for i in 0..5 {
        let (args, socket) = bench.world.provider_args(&format!("start-{i}")).await?;
        let t = Instant::now();
        let p = Provider::spawn(
            &bench.binary,
            &args,
            socket,
            bench.dir.join(format!("start-{i}.log")),
            &[],
        )
        .await?;
        startups.push(t.elapsed());
        p.kill().await;
    }
    let start = stats(startups);
    println!(
        "- start-up to a served socket (spawn → Version answered), p50 of 5: {}",
        ms(start.p50)
    );
    report.push((
        "start-up ≤ 100 ms",
        ms(start.p50),
        start.p50 <= Duration::from_millis(100),
    ));
    let size = std::fs::metadata(&bench.binary)?.len();
    println!(
        "- binary size ({}): {:.1} MiB",
        bench.binary.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    report.push((
        "binary ≤ 25 MiB",
        format!("{:.1} MiB", size as f64 / (1024.0 * 1024.0)),
        size <= 25 * 1024 * 1024,
    ));

    Ok(())
}

/// One Mount through a real client's persistent connection; its latency as
/// measured inside the client.
async fn session_mount(session: &mut Session, client: RealClient) -> anyhow::Result<Duration> {
    let call = session.mount().await?;
    call.result.map_err(|s| anyhow!("{}: mount: {s}", client.name()))?;
    Ok(call.latency)
}

/// Runs each worker's operation in a loop for `window`; returns operations
/// per second across all workers.
async fn throughput<W, M, F, Fut>(window: Duration, workers: W) -> anyhow::Result<f64>
where
    W: IntoIterator<Item = M>,
    M: std::future::Future<Output = anyhow::Result<F>>,
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let mut ops = Vec::new();
    for w in workers {
        ops.push(w.await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = ops
        .into_iter()
        .map(|op| {
            tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < window {
                    op().await?;
                    n += 1;
                }
                Ok::<_, anyhow::Error>(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Vault requests, leases and logins per pod-hour for a pod republished
/// every 2 minutes (30 calls) with one KV and one database object, through a
/// counting proxy, with lease reuse off (the incumbent's behaviour) and on.
/// TTLs are an hour, so compressing the hour changes no count except the
/// one renewal of the token (in both modes: tokens are cached either way)
/// and of the lease the ledger makes per 2/3 TTL (added below).
///
/// Then the same for one PKI certificate (TTL 72 h) with a role token TTL
/// of 20 minutes: the certificate's own lifetime bounds its reuse, so
/// compressing the hour changes no certificate count; the four renewals of
/// the 20-minute token in a real hour (every 2/3 × 20 min) are added.
async fn vault_load(world: &World, pg: &Postgres, binary: &Path, dir: &Path) -> anyhow::Result<()> {
    world
        .bao
        .setup_database("database", pg, "app", "1h", "2h")
        .await
        .context("database engine")?;
    world
        .role("app")
        .audience(Some("vault"))
        .ttl("1h", "24h")
        .write()
        .await?;
    let objects = "- {objectName: kv, secretPath: secret/data/bench/0, secretKey: value}\n- {objectName: user, secretPath: database/creds/app, secretKey: username}\n- {objectName: pass, secretPath: database/creds/app, secretKey: password}\n";
    println!("\n## Vault load per pod-hour (republished every 2 min, one KV + one database object)\n");
    println!("| mode | Vault requests | database leases | logins | by operation |");
    println!("|---|---|---|---|---|");
    for reuse in [false, true] {
        // One renewal of the token within the hour, and with reuse one of
        // the lease.
        let renewals = if reuse { 2 } else { 1 };
        let params = params(objects, &[]);
        pod_hour_row(
            world,
            binary,
            dir,
            "load",
            reuse,
            &params,
            Issued::Leases("database/creds/app"),
            renewals,
        )
        .await?;
    }

    world.bao.setup_pki("pki", "web", "100h").await.context("PKI engine")?;
    world
        .role("app-20m")
        .audience(Some("vault"))
        .ttl("20m", "24h")
        .write()
        .await?;
    let objects = "- {objectName: tls.crt, secretPath: pki/issue/web, method: PUT, secretArgs: {common_name: a.example.com, ttl: 72h}, secretKey: certificate}\n";
    println!("\n## PKI certificates per pod-hour (republished every 2 min, token TTL 20 min, certificate TTL 72 h)\n");
    println!("| mode | Vault requests | certificates issued | logins | by operation |");
    println!("|---|---|---|---|---|");
    for reuse in [false, true] {
        // The token is renewed at 2/3 of its 20 minutes: 4 times an hour.
        let params = params(objects, &[("roleName", "app-20m")]);
        pod_hour_row(
            world,
            binary,
            dir,
            "pki",
            reuse,
            &params,
            Issued::Listed("pki/certs"),
            4,
        )
        .await?;
    }
    Ok(())
}

/// What a pod-hour row counts as issued: database leases under a prefix,
/// or the entries of a LIST (certificates).
enum Issued<'a> {
    Leases(&'a str),
    Listed(&'a str),
}

impl Issued<'_> {
    async fn count(&self, world: &World) -> anyhow::Result<usize> {
        Ok(match self {
            Issued::Leases(prefix) => world.bao.leases(prefix).await?.len(),
            Issued::Listed(path) => world.bao.list(path).await?.len(),
        })
    }
}

/// One row of a pod-hour table: a provider behind a counting proxy, one
/// pod mounting `params` 30 times (an hour at one republish every 2 min),
/// with `renewals` token and lease renewals added for the hour the run
/// compresses.
#[allow(clippy::too_many_arguments)]
async fn pod_hour_row(
    world: &World,
    binary: &Path,
    dir: &Path,
    tag: &str,
    reuse: bool,
    params: &BTreeMap<String, String>,
    issued: Issued<'_>,
    renewals: u64,
) -> anyhow::Result<()> {
    let proxy = VaultProxy::start(&world.bao.addr()).await?;
    let name = format!("{tag}-{reuse}");
    let p = world
        .provider(
            binary,
            &name,
            &[
                "-log-level=warn",
                &format!("-vault-addr={}", proxy.url()),
                &format!("-lease-reuse={reuse}"),
            ],
        )
        .await?;
    let pod = world.pod(world.ns(), &name, "app").await?;
    let before = issued.count(world).await?;
    for _ in 0..30 {
        p.mount(params, &pod).await.map_err(|s| anyhow!("{s}"))?;
    }
    let count = issued.count(world).await? - before;
    let mut counts: BTreeMap<String, u64> = proxy.counts();
    *counts.entry("renew".into()).or_default() += renewals;
    let total: u64 = counts.values().sum();
    let logins = counts.get("login").copied().unwrap_or(0);
    let by_op: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let label = if reuse {
        "lease reuse on (default)"
    } else {
        "lease reuse off (incumbent behaviour)"
    };
    println!("| {label} | {total} | {count} | {logins} | {} |", by_op.join(", "));
    std::fs::remove_file(dir.join(format!("{name}.state"))).ok();
    p.kill().await;
    Ok(())
}
