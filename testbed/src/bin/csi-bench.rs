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
//! the footprint (RSS idle and loaded, start-up, binary size); `--cpu` only
//! the CPU time per warm mount (provider, OpenBao, and the floor), with
//! `--perf <file>` recording the provider's stacks meanwhile
//! (`scripts/profile.sh` turns them into a flame graph); `--cold` only the
//! rate of cold mounts, 32 at a time, against the floor's logins and reads
//! for the same pods. For diagnosis, `BENCH_PROVIDER_ARG` sets
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
use vcp_testbed::driver::clients::{RealClient, Session};
use vcp_testbed::driver::{mount_request, DriverClient, Generation, PodContext};
use vcp_testbed::postgres::Postgres;
use vcp_testbed::vault::floor::VaultFloor;
use vcp_testbed::vault::vault_proxy::VaultProxy;
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
    if std::env::args().any(|a| a == "--cold") {
        return rt.block_on(cold_only(quick));
    }
    if std::env::args().any(|a| a == "--cpu") {
        let perf = std::env::args().skip_while(|a| a != "--perf").nth(1).map(PathBuf::from);
        return rt.block_on(cpu_only(quick, perf));
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

/// `--cold`: only the cold-mount rate.
async fn cold_only(quick: bool) -> anyhow::Result<()> {
    let bench = Bench::start().await?;
    let mut report = Report::new();
    let result = cold_rate(&bench, 640 / scale(quick), 32, &mut report).await;
    print_report(&report);
    let _ = std::fs::remove_dir_all(&bench.dir);
    result
}

/// `--cpu`: only the CPU section.
async fn cpu_only(quick: bool, perf: Option<PathBuf>) -> anyhow::Result<()> {
    let bench = Bench::start().await?;
    let mut report = Report::new();
    let result = cpu(&bench, 3000 / scale(quick), perf.as_deref(), &mut report).await;
    print_report(&report);
    let _ = std::fs::remove_dir_all(&bench.dir);
    result
}

/// CPU time a process (all its threads) has run, in nanoseconds: the sum
/// of the first field of each `/proc/<pid>/task/*/schedstat`.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| schedstat_ns(&t.path().join("schedstat")))
        .sum()
}

/// The run time in a `schedstat` file (its first field, nanoseconds).
fn schedstat_ns(path: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// The CPU section: `n` warm one-object mounts through grpc-go on one
/// kept connection (as the driver keeps it), then `n` reads of the floor
/// (a compiled Vault client, kept-alive, on a thread and runtime of its
/// own); CPU per call of the provider, of OpenBao for each, and of the
/// floor. With `perf`, the
/// provider's stacks are recorded during its mounts (`perf record -g`).
async fn cpu(bench: &Bench, n: usize, perf: Option<&Path>, report: &mut Report) -> anyhow::Result<()> {
    let provider = bench.provider.child.id().ok_or_else(|| anyhow!("no provider pid"))?;
    let bao = bench.world.bao.pid().ok_or_else(|| anyhow!("no OpenBao pid"))?;
    eprintln!("csi-bench: provider pid {provider}, OpenBao pid {bao}");
    if let Ok(wait) = std::env::var("BENCH_CPU_PAUSE") {
        // Time to attach a tracer (strace -c -p) before the measured calls.
        tokio::time::sleep(Duration::from_secs(wait.parse().unwrap_or(5))).await;
    }
    let pod = bench.new_pod().await?;
    let one = params(&kv_objects(1), &[]);
    let req = mount_request(Generation::V16, "bench", &one, &pod, false, Vec::new());
    let client = RealClient::GoV16;
    let mut session = client
        .session(&bench.provider.socket, &req, Duration::from_secs(30))
        .await?;
    let token = bench.floor.login("kubernetes", "app", &Bench::jwt(&pod)?).await?;
    for _ in 0..100 {
        session_mount(&mut session, client).await?;
    }
    let recorder = match perf {
        Some(out) => {
            let child = std::process::Command::new("perf")
                .args(["record", "-F", "2999", "-g", "--call-graph", "dwarf,16384", "-p"])
                .arg(provider.to_string())
                .arg("-o")
                .arg(out)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("starting perf record (Debian: linux-perf)")?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some(child)
        }
        None => None,
    };
    let (p0, b0, t0) = (cpu_ns(provider), cpu_ns(bao), user_system_ticks(provider));
    let mut ours = Vec::with_capacity(n);
    for _ in 0..n {
        ours.push(session_mount(&mut session, client).await?);
    }
    let (p1, b1, t1) = (cpu_ns(provider), cpu_ns(bao), user_system_ticks(provider));
    if let Some(mut child) = recorder {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    // The gRPC round trip alone: Version calls on the same connection (no
    // Vault, no attributes), what any provider behind this driver costs.
    let v0 = cpu_ns(provider);
    let mut versions = Vec::with_capacity(n);
    for _ in 0..n {
        let call = session.version().await?;
        call.result.map_err(|s| anyhow!("{}: version: {s}", client.name()))?;
        versions.push(call.latency);
    }
    let v1 = cpu_ns(provider);
    let fb0 = cpu_ns(bao);
    let (floor, floor_ns) = floor_on_own_thread(bench.world.bao.addr(), token, n).await?;
    let fb1 = cpu_ns(bao);
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / n as f64 / 1000.0;
    let (provider_us, bao_us) = (per(p0, p1), per(b0, b1));
    let (floor_us, floor_bao_us) = (per(0, floor_ns), per(fb0, fb1));
    let (o, f, v) = (stats(ours), stats(floor), stats(versions));
    let ratio = o.p50.as_secs_f64() / f.p50.as_secs_f64();
    println!(
        "## CPU per warm mount (1 object, {n} calls, one kept connection each)
"
    );
    println!("| path | p50 | client-side CPU µs per call | OpenBao CPU µs per call |");
    println!("|---|---|---|---|");
    println!(
        "| provider, through grpc-go (driver v1.6 dialing) | {} | provider: {provider_us:.0} | {bao_us:.0} |",
        ms(o.p50)
    );
    println!(
        "| floor: compiled direct read (hyper, kept-alive) | {} | floor: {floor_us:.0} | {floor_bao_us:.0} |",
        ms(f.p50)
    );
    println!(
        "| gRPC round trip alone: Version through grpc-go, same connection | {} | provider: {:.0} | — |",
        ms(v.p50),
        per(v0, v1)
    );
    println!(
        "
provider CPU over OpenBao's for the read it needs: {:.2}×; warm p50 over the floor's: {ratio:.2}×; \
floor p50 + Version p50 over the floor's: {:.2}× (the least a mount through grpc-go could take)
",
        provider_us / floor_bao_us,
        (f.p50 + v.p50).as_secs_f64() / f.p50.as_secs_f64()
    );
    let (user, system) = (t1.0.saturating_sub(t0.0), t1.1.saturating_sub(t0.1));
    if user + system > 0 {
        println!(
            "the provider's CPU in its mounts: {:.0} % user, {:.0} % kernel (/proc/<pid>/stat, {} ticks)\n",
            100.0 * user as f64 / (user + system) as f64,
            100.0 * system as f64 / (user + system) as f64,
            user + system
        );
    }
    report.push((
        "provider CPU per warm mount ≤ 100 µs",
        format!("{provider_us:.0} µs"),
        provider_us <= 100.0,
    ));
    report.push((
        "provider CPU ≤ 0.1× OpenBao's for the read",
        format!("{:.2}×", provider_us / floor_bao_us),
        provider_us <= 0.1 * floor_bao_us,
    ));
    report.push((
        "warm p50 through grpc-go ≤ 1.2× the compiled floor (CPU run)",
        format!("{ratio:.2}×"),
        ratio <= 1.2,
    ));
    Ok(())
}

/// A process's user and system CPU time in clock ticks (`utime` and
/// `stime`, fields 14 and 15 of `/proc/<pid>/stat`); zeros if unreadable.
fn user_system_ticks(pid: u32) -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0, 0);
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|n| n.parse().ok())
        .collect();
    match fields[..] {
        [user, system] => (user, system),
        _ => (0, 0),
    }
}

/// CPU time all processors of the machine have been busy (not idle or
/// waiting for I/O), in nanoseconds, from the `cpu` line of `/proc/stat`.
fn machine_busy_ns() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .next()
        .filter(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("no cpu line in /proc/stat"))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice: busy is
    // user, nice, system, irq and softirq (guest time is counted in user).
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
    // USER_HZ is 100 on Linux.
    Ok(busy * 10_000_000)
}

/// The compiled floor's `n` reads of secret 0 with `token`, timed one by
/// one, and the CPU they cost: on a thread of their own with a
/// single-threaded runtime (the provider's shape), so that the figure is
/// that thread's alone — not this process's other threads, and not the
/// hand-offs between workers of a multi-threaded runtime. A hundred reads
/// first open and warm the kept-alive connection.
async fn floor_on_own_thread(addr: String, token: String, n: usize) -> anyhow::Result<(Vec<Duration>, u64)> {
    let thread = std::thread::spawn(move || -> anyhow::Result<(Vec<Duration>, u64)> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let floor = VaultFloor::new(&addr, Duration::from_secs(15));
            for _ in 0..100 {
                floor.read(&token, &secret_path(0)).await?;
            }
            let c0 = thread_cpu_ns()?;
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                floor.read(&token, &secret_path(0)).await?;
                times.push(t.elapsed());
            }
            Ok((times, thread_cpu_ns()?.saturating_sub(c0)))
        })
    });
    tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| anyhow!("the floor's thread panicked"))?
}

/// CPU time the calling thread has run, in nanoseconds
/// (`/proc/thread-self/schedstat`, the same clock as [`cpu_ns`]).
fn thread_cpu_ns() -> anyhow::Result<u64> {
    schedstat_ns(Path::new("/proc/thread-self/schedstat"))
        .ok_or_else(|| anyhow!("unreadable /proc/thread-self/schedstat"))
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
    cold_rate(&bench, 320 / scale, 32, &mut report).await?;

    // --- CPU per warm mount -----------------------------------------------------------
    cpu(&bench, 3000 / scale, None, &mut report).await?;

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

/// Cold mounts side by side: `total` pods never mounted before, `conc` at a
/// time on one driver connection (a login and a read each, the login
/// reviewed by the real kube-apiserver), against the floor's login and read
/// for each of the same pods' tokens at the same concurrency.
async fn cold_rate(bench: &Bench, total: usize, conc: usize, report: &mut Report) -> anyhow::Result<()> {
    use futures_util::{StreamExt as _, TryStreamExt as _};
    let one = params(&kv_objects(1), &[]);
    let mut pods = Vec::with_capacity(total);
    for _ in 0..total {
        pods.push(bench.new_pod().await?);
    }
    let client = DriverClient::connect(&bench.provider.socket, Generation::V16).await?;
    let provider = bench.provider.child.id().ok_or_else(|| anyhow!("no provider pid"))?;
    let bao = bench.world.bao.pid().ok_or_else(|| anyhow!("no OpenBao pid"))?;
    let before = (cpu_ns(provider), cpu_ns(bao), machine_busy_ns()?);
    let t = Instant::now();
    futures_util::stream::iter(pods.iter())
        .map(|pod| {
            let req = mount_request(Generation::V16, "bench", &one, pod, false, Vec::new());
            let client = client.clone();
            async move {
                client
                    .mount(req, Duration::from_secs(60))
                    .await
                    .map(|_| ())
                    .map_err(|s| anyhow!("{s}"))
            }
        })
        .buffer_unordered(conc)
        .try_collect::<Vec<()>>()
        .await?;
    let ours = total as f64 / t.elapsed().as_secs_f64();
    let after = (cpu_ns(provider), cpu_ns(bao), machine_busy_ns()?);
    let jwts = pods.iter().map(Bench::jwt).collect::<anyhow::Result<Vec<_>>>()?;
    let floor_before = (cpu_ns(bao), machine_busy_ns()?);
    let t = Instant::now();
    futures_util::stream::iter(jwts.iter())
        .map(|jwt| bench.floor_mount(jwt, None, 1))
        .buffer_unordered(conc)
        .try_collect::<Vec<()>>()
        .await?;
    let floor = total as f64 / t.elapsed().as_secs_f64();
    let floor_after = (cpu_ns(bao), machine_busy_ns()?);
    let ratio = ours / floor;
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / total as f64 / 1000.0;
    println!("## Cold mounts ({total} new pods, {conc} at a time)\n");
    println!("| path | per second | provider CPU µs per mount | OpenBao CPU µs | whole machine CPU µs |");
    println!("|---|---|---|---|---|");
    println!(
        "| provider (login + read, on one driver connection) | {ours:.0} | {:.0} | {:.0} | {:.0} |",
        per(before.0, after.0),
        per(before.1, after.1),
        per(before.2, after.2)
    );
    println!(
        "| floor (login + read) | {floor:.0} | — | {:.0} | {:.0} |",
        per(floor_before.0, floor_after.0),
        per(floor_before.1, floor_after.1)
    );
    println!("\nprovider over floor: {ratio:.2}× (the machine's CPU includes kube-apiserver's TokenReviews and this harness)\n");
    report.push((
        "cold mounts at 32 concurrent ≥ 0.9× the floor's login + read rate",
        format!("{ratio:.2}×"),
        ratio >= 0.9,
    ));
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
