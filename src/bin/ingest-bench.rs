//! `ingest-bench`: the ingestion benchmark. One command runs it all:
//!
//! ```text
//! cargo run --release --bin ingest-bench            # 5 s per measurement
//! cargo run --release --bin ingest-bench -- --seconds 10
//! cargo run --release --bin ingest-bench -- --fsync      # the server syncs each group commit
//! ```
//!
//! It starts `ingest-emulator serve --ephemeral --no-tls` (the release binary next to this one),
//! pinned to core 0 with `taskset`, gets a token from the server's token endpoint, and drives
//! `POST /service/ThirdPartyIngestionService.svc` over keep-alive HTTP/1.1 connections from core
//! 1 (a minimal client: no client library overhead in the figures), for each scenario: batch
//! size, item size, connection count, for a fixed time. Every scenario is also run against a bare
//! baseline (a minimal hyper server in this binary, on core 0 as well, that reads the body and
//! answers a fixed 200), so every figure is printed as a ratio to the machine's ceiling. It prints
//! requests/s, items/s, p50/p99 latency, the server's idle RSS, peak RSS (VmHWM) and its time to
//! readiness on an existing store; and, under each scenario, where the server's CPU went in
//! the measured window (cores used, µs per request and per item, the share of tokio's request
//! tasks, the store's committer, sled's IO threads and the search index's threads, from
//! `/proc/<pid>/task/*/stat`), so a profile's first answer needs no profiler.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TENANT: &str = "11111111-1111-1111-1111-111111111111";
/// The admin key of the servers this benchmark starts.
const ADMIN_KEY: &str = "bench-admin-key";
const APP_ID: &str = "22222222-2222-2222-2222-222222222222";
const APP_SECRET: &str = "dev-secret-value";
const SCOPE: &str = "https://outlook.office365.com/.default";
const SERVICE_PATH: &str = "/service/ThirdPartyIngestionService.svc";

#[derive(Parser, Debug, Clone)]
#[command(about = "Ingestion benchmark of ingest-emulator, with a bare-hyper baseline")]
struct Args {
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds of warm-up before each measurement.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// The server binary (default: `ingest-emulator` next to this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Measure an already running server (plain HTTP, `host:port`) instead of starting one.
    #[arg(long, requires = "server_pid")]
    server: Option<String>,
    /// The pid of `--server`, for its RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Only these scenarios (by name, e.g. `b1-c16`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip the baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Run the server with `--fsync` (a disk sync per group commit: power-loss durability).
    #[arg(long)]
    fsync: bool,
    /// Open loop: send at this fixed rate (requests/s, all connections together) instead of
    /// as fast as answers come back. Latency then counts from when a request was due, so a
    /// server stall delays every request due during it, as it would for independent clients
    /// (with a closed loop, a stall delays only the requests in flight).
    #[arg(long)]
    rate: Option<f64>,
    /// Compare with this second server binary (B; A is `--server-bin`): the scenarios run
    /// against A, then B, `--rounds` times in turn, without the baseline, and a last table
    /// gives the medians and B/A. Alternating is what makes two builds comparable on a
    /// machine whose speed drifts between runs.
    #[arg(long, conflicts_with = "server")]
    against: Option<PathBuf>,
    /// Rounds of `--against`.
    #[arg(long, default_value_t = 3, requires = "against")]
    rounds: usize,
    /// Internal: run the bare baseline server and print its address.
    #[arg(long, hide = true)]
    baseline_server: bool,
}

#[derive(Debug, Clone)]
struct Scenario {
    name: &'static str,
    batch: usize,
    connections: usize,
    attachment: usize,
    /// Mapped participants of each item (copies per item): 1 (alice) or up to 4.
    participants: usize,
    /// Items as an RFC 5322 message in `MimeContent` (what exchangelib-based connectors send)
    /// instead of EWS properties.
    mime: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "b1-c16",
        batch: 1,
        connections: 16,
        attachment: 0,
        participants: 1,
        mime: false,
    },
    Scenario {
        name: "b10-c16",
        batch: 10,
        connections: 16,
        attachment: 0,
        participants: 1,
        mime: false,
    },
    Scenario {
        name: "b100-c16",
        batch: 100,
        connections: 16,
        attachment: 0,
        participants: 1,
        mime: false,
    },
    Scenario {
        name: "b1-c1",
        batch: 1,
        connections: 1,
        attachment: 0,
        participants: 1,
        mime: false,
    },
    Scenario {
        name: "b1-c16-att64k",
        batch: 1,
        connections: 16,
        attachment: 64 * 1024,
        participants: 1,
        mime: false,
    },
    Scenario {
        name: "b10-c16-att64k",
        batch: 10,
        connections: 16,
        attachment: 64 * 1024,
        participants: 1,
        mime: false,
    },
    Scenario {
        name: "b10-c16-p4",
        batch: 10,
        connections: 16,
        attachment: 0,
        participants: 4,
        mime: false,
    },
    Scenario {
        name: "b10-c16-mime",
        batch: 10,
        connections: 16,
        attachment: 0,
        participants: 1,
        mime: true,
    },
];

fn main() {
    let args = Args::parse();
    if args.baseline_server {
        baseline_server();
        return;
    }
    have_taskset(); // before this process pins itself (see there)
    let outcome = match args.against.clone() {
        Some(b) => compare(args, b),
        None => run(args).map(|_| ()),
    };
    if let Err(e) = outcome {
        eprintln!("ingest-bench: {e}");
        std::process::exit(1);
    }
}

/// (req/s, CPU µs per item) of each round of one scenario against one binary.
type Rounds = Vec<(f64, f64)>;

/// `--against`: A and B in turn, `rounds` times, then the medians side by side.
fn compare(args: Args, b: PathBuf) -> Result<(), String> {
    let a = server_bin(&args);
    let mut runs: Vec<(&'static str, [Rounds; 2])> = Vec::new();
    for round in 1..=args.rounds.max(1) {
        for (side, bin) in [&a, &b].into_iter().enumerate() {
            println!("== round {round}, {}: {}", ["A", "B"][side], bin.display());
            let results = run(Args {
                server_bin: Some(bin.clone()),
                no_baseline: true,
                against: None,
                ..args.clone()
            })?;
            for (name, figures, batch) in results {
                let per_item = figures.cpu.as_ref().map_or(f64::NAN, |cpu| {
                    cpu.total() / (figures.rps * args.seconds.max(1) as f64 * batch as f64) * 1e6
                });
                let at = match runs.iter().position(|(n, _)| *n == name) {
                    Some(at) => at,
                    None => {
                        runs.push((name, [Vec::new(), Vec::new()]));
                        runs.len() - 1
                    }
                };
                runs[at].1[side].push((figures.rps, per_item));
            }
            println!();
        }
    }
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    println!("A: {}\nB: {}", a.display(), b.display());
    println!(
        "medians of {} rounds, alternating A and B:",
        args.rounds.max(1)
    );
    println!(
        "{:<16} {:>10} {:>10} {:>7} {:>12} {:>12} {:>7}",
        "scenario", "A req/s", "B req/s", "B/A", "A µs/item", "B µs/item", "B/A"
    );
    for (name, [ra, rb]) in runs {
        let rps = |r: &[(f64, f64)]| median(r.iter().map(|x| x.0).collect());
        let cpu = |r: &[(f64, f64)]| median(r.iter().map(|x| x.1).collect());
        let (a_rps, b_rps, a_cpu, b_cpu) = (rps(&ra), rps(&rb), cpu(&ra), cpu(&rb));
        println!(
            "{:<16} {:>10.0} {:>10.0} {:>6.3}x {:>12.1} {:>12.1} {:>6.3}x",
            name,
            a_rps,
            b_rps,
            b_rps / a_rps,
            a_cpu,
            b_cpu,
            b_cpu / a_cpu
        );
    }
    Ok(())
}

/// A child process pinned to core 0 (when `taskset` is there), with its address from stdout.
struct Spawned {
    child: Child,
    addr: String,
    ready_line: Option<String>,
}

impl Drop for Spawned {
    /// SIGTERM, so the `--ephemeral` server removes its store (several GB after the batch-100
    /// runs); SIGKILL if it has not exited within 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `taskset` is there and this process may run on two cores or more. Decided once, at the
/// first call (`main` makes it before anything is pinned): once this process is pinned to
/// core 1, it may run on one core only, and the servers it starts would then inherit core 1,
/// the load generator's, instead of being pinned to core 0.
fn have_taskset() -> bool {
    static HAVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAVE.get_or_init(|| {
        Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
    })
}

fn spawn_pinned(program: &PathBuf, args: &[String]) -> Result<Spawned, String> {
    let mut command = if have_taskset() {
        let mut c = Command::new("taskset");
        c.arg("-c").arg("0").arg(program);
        c
    } else {
        Command::new(program)
    };
    let mut child = command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut addr, mut ready_line) = (None, None);
    for line in lines.by_ref() {
        let line = line.map_err(|e| e.to_string())?;
        let line = line.trim().to_string();
        if line.contains("ready in") {
            ready_line = Some(line.clone());
        }
        if let Some(rest) = line.strip_prefix("Base URL:") {
            addr = Some(rest.trim().trim_start_matches("http://").to_string());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let addr = addr.ok_or_else(|| format!("{} printed no Base URL", program.display()))?;
    Ok(Spawned {
        child,
        addr,
        ready_line,
    })
}

fn pin_self_to_core_1() -> bool {
    if !have_taskset() {
        return false;
    }
    Command::new("taskset")
        .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn proc_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The pid of the server process itself (the child of `taskset` execs it: same pid).
fn server_bin(args: &Args) -> PathBuf {
    args.server_bin.clone().unwrap_or_else(|| {
        let me = std::env::current_exe().unwrap_or_default();
        me.with_file_name("ingest-emulator")
    })
}

/// Runs the selected scenarios and prints their figures; returns them (name, figures,
/// batch) for `--against`.
fn run(args: Args) -> Result<Vec<(&'static str, Figures, usize)>, String> {
    let pinned = pin_self_to_core_1();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = server_bin(&args);

    // Time to ready on an existing store: start once to create it, then measure a restart.
    let ready_ms = if args.server.is_none() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let store_args: Vec<String> = [
            "serve",
            "--no-tls",
            "--listen",
            "127.0.0.1:0",
            "--admin-key",
            ADMIN_KEY,
            "--log",
            "warn",
            "--data",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([dir.path().join("data").display().to_string()])
        .chain(args.fsync.then(|| "--fsync".to_string()))
        .collect();
        drop(spawn_pinned(&bin, &store_args)?);
        let started = Instant::now();
        let again = spawn_pinned(&bin, &store_args)?;
        let printed = started.elapsed();
        let until_healthy = runtime.block_on(async {
            loop {
                if let Ok(mut c) = Conn::open(&again.addr).await {
                    if let Ok((200, _)) = c.send(&get_request("/healthz")).await {
                        break started.elapsed();
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        Some((again.ready_line.clone(), printed, until_healthy))
    } else {
        None
    };

    let server = match &args.server {
        Some(_) => None,
        None => Some(spawn_pinned(
            &bin,
            &[
                "serve",
                "--ephemeral",
                "--no-tls",
                "--listen",
                "127.0.0.1:0",
                "--admin-key",
                ADMIN_KEY,
                "--log",
                "warn",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(args.fsync.then(|| "--fsync".to_string()))
            .collect::<Vec<_>>(),
        )?),
    };
    let (addr, pid) = match (&server, &args.server) {
        (Some(s), _) => (s.addr.clone(), s.child.id()),
        (None, Some(addr)) => (addr.clone(), args.server_pid.unwrap_or(0)),
        _ => unreachable!(),
    };
    let baseline = if args.no_baseline {
        None
    } else {
        Some(spawn_pinned(&me, &["--baseline-server".to_string()])?)
    };

    println!("ingest-bench: server {addr} (pid {pid}), {}", bin.display());
    println!(
        "pinning: {}",
        if pinned {
            "server and baseline on core 0, load generator on core 1"
        } else {
            "none (taskset unavailable or one core): figures are indicative"
        }
    );
    if let Some(rate) = args.rate {
        println!(
            "open loop: {rate} requests/s per scenario; latency counts from when each request was due"
        );
    }
    if let Some((line, printed, healthy)) = &ready_ms {
        println!(
            "restart on an existing store: {} ; first /healthz answered {:.1} ms after spawn (stdout ready {:.1} ms)",
            line.as_deref().unwrap_or("?"),
            healthy.as_secs_f64() * 1000.0,
            printed.as_secs_f64() * 1000.0
        );
    }
    let token = runtime.block_on(token(&addr))?;
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss = proc_kb(pid, "VmRSS:");
    println!(
        "server idle RSS after start + token: {} (target < 30 MB)",
        mb(idle_rss)
    );
    println!();
    println!(
        "{:<16} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9} {:>7} {:>11} {:>9} {:>7}",
        "scenario",
        "req/s",
        "items/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "base r/s",
        "ratio",
        "base p50",
        "base p99",
        "HWM"
    );
    let selected: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s.name))
        .collect();
    let mut results = Vec::new();
    for scenario in selected {
        let request = Arc::new(ews_request(
            &token,
            scenario.batch,
            scenario.attachment,
            scenario.participants,
            scenario.mime,
        ));
        let base = match &baseline {
            Some(b) => Some(runtime.block_on(load(
                &b.addr,
                request.clone(),
                scenario.connections,
                args.warmup,
                args.seconds,
                None,
                args.rate,
            ))?),
            None => None,
        };
        let real = runtime.block_on(load(
            &addr,
            request,
            scenario.connections,
            args.warmup,
            args.seconds,
            (pid != 0).then_some(pid),
            args.rate,
        ))?;
        let hwm = proc_kb(pid, "VmHWM:");
        let ratio = base.as_ref().map(|b| real.rps / b.rps);
        println!(
            "{:<16} {:>10.0} {:>10.0} {:>8.3} {:>8.3} {:>8.1} {:>9} {:>9} {:>7} {:>11} {:>9} {:>7}",
            scenario.name,
            real.rps,
            real.rps * scenario.batch as f64,
            real.p50_ms,
            real.p99_ms,
            real.max_ms,
            real.errors,
            base.as_ref()
                .map_or("-".into(), |b| format!("{:.0}", b.rps)),
            ratio.map_or("-".into(), |r| format!("{r:.3}x")),
            base.as_ref()
                .map_or("-".into(), |b| format!("{:.3}", b.p50_ms)),
            base.as_ref()
                .map_or("-".into(), |b| format!("{:.3}", b.p99_ms)),
            mb(hwm),
        );
        if let Some(cpu) = &real.cpu {
            println!("{}", cpu_line(cpu, &real, scenario.batch, args.seconds));
        }
        if server.is_some() {
            // The index's work waits while requests are in flight: the first search pays it.
            let (waiting, took) = runtime.block_on(first_search(&addr))?;
            println!(
                "  first search after the load: {:.0} ms ({waiting} items waited for the search index)",
                took.as_secs_f64() * 1000.0
            );
        }
        results.push((scenario.name, real, ratio, hwm, scenario.batch));
    }
    println!();
    println!("targets (issue 6):");
    for (name, real, ratio, hwm, _) in &results {
        let line = match *name {
            "b1-c16" => Some(format!(
                "batch 1, 16 connections: ratio {} (target >= 0.3x), p99 {:.2} ms (target < 5 ms)",
                fmt_ratio(*ratio),
                real.p99_ms
            )),
            "b10-c16" => Some(format!(
                "batch 10: ratio {} (target >= 0.14x)",
                fmt_ratio(*ratio)
            )),
            "b100-c16" => Some(format!(
                "batch 100: ratio {} (target >= 0.08x); peak RSS {} (target < 256 MB)",
                fmt_ratio(*ratio),
                mb(*hwm)
            )),
            "b1-c1" => Some(format!(
                "1 connection, batch 1: p50 {:.3} ms (target < 1 ms)",
                real.p50_ms
            )),
            _ => None,
        };
        if let Some(line) = line {
            println!("  {line}");
        }
    }
    println!("  idle RSS {} (target < 30 MB)", mb(idle_rss));
    if let Some((_, _, healthy)) = &ready_ms {
        println!(
            "  ready on an existing store: {:.1} ms to first answer (target < 50 ms)",
            healthy.as_secs_f64() * 1000.0
        );
    }
    drop(server);
    drop(baseline);
    Ok(results
        .into_iter()
        .map(|(name, real, _, _, batch)| (name, real, batch))
        .collect())
}

/// Where the server's CPU went in a scenario: cores used, time per request and per item, and
/// the share of each part (tokio's request tasks, the store's committer, sled's IO threads,
/// the search index's threads).
fn cpu_line(cpu: &ThreadCpu, real: &Figures, batch: usize, seconds: u64) -> String {
    let total = cpu.total();
    let requests = real.rps * seconds.max(1) as f64;
    let per_request_us = if requests > 0.0 {
        total / requests * 1e6
    } else {
        f64::NAN
    };
    let mut groups: Vec<(&&str, &f64)> = cpu.groups.iter().collect();
    groups.sort_by(|a, b| b.1.total_cmp(a.1));
    let shares: Vec<String> = groups
        .into_iter()
        .filter(|(_, s)| **s > 0.0)
        .map(|(name, s)| format!("{name} {:.0}%", s / total.max(f64::MIN_POSITIVE) * 100.0))
        .collect();
    let items = requests * batch.max(1) as f64;
    let written = match cpu.written {
        Some(bytes) if items > 0.0 => format!(
            "; wrote {:.1} KB per item to storage",
            bytes as f64 / items / 1024.0
        ),
        _ => String::new(),
    };
    format!(
        "  server CPU {:.2} cores, {:.0} µs per request, {:.1} µs per item: {}{written}",
        total / seconds.max(1) as f64,
        per_request_us,
        per_request_us / batch.max(1) as f64,
        shares.join(", ")
    )
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.3}x"))
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or("?".into(), |kb| format!("{:.1}MB", kb as f64 / 1024.0))
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes()
}

async fn token(addr: &str) -> Result<String, String> {
    let form = format!(
        "grant_type=client_credentials&client_id={APP_ID}&client_secret={APP_SECRET}&scope={}",
        SCOPE.replace(':', "%3A").replace('/', "%2F")
    );
    let request = format!(
        "POST /{TENANT}/oauth2/v2.0/token HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let mut conn = Conn::open(addr).await.map_err(|e| e.to_string())?;
    let (status, body) = conn
        .send(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("token request failed: {status} {json}"));
    }
    json["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "no access_token".into())
}

/// The search index's backlog (from `/metrics`), then how long a search of everything takes:
/// it has the backlog indexed and committed first.
async fn first_search(addr: &str) -> Result<(u64, Duration), String> {
    let mut conn = Conn::open(addr).await.map_err(|e| e.to_string())?;
    let (_, metrics) = conn
        .send(&get_request("/metrics"))
        .await
        .map_err(|e| e.to_string())?;
    let waiting = String::from_utf8_lossy(&metrics)
        .lines()
        .find_map(|l| l.strip_prefix("ingest_search_backlog_items "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no ingest_search_backlog_items in /metrics")?;
    let request = format!(
        "GET /api/tenants/{TENANT}/search?query=*&top=0 HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n"
    );
    let started = Instant::now();
    let (status, body) = conn
        .send(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!(
            "search failed: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok((waiting, started.elapsed()))
}

/// Users of the default fixture: the recipients of a bench item, each a copy.
const RECIPIENTS: [&str; 4] = [
    "alice@contoso.com",
    "bob@contoso.com",
    "carol@contoso.com",
    "dave@contoso.com",
];

/// A CreateItem request of `batch` items of about 1 KB each (plus an attachment of `attachment`
/// bytes each, when not 0), each to `participants` users of the default fixture, as EWS
/// properties or (`mime`) as a MIME message.
fn ews_request(
    token: &str,
    batch: usize,
    attachment: usize,
    participants: usize,
    mime: bool,
) -> Vec<u8> {
    use base64::Engine;
    let text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(12);
    let attachment_xml = if attachment > 0 {
        let bytes: Vec<u8> = (0..attachment).map(|i| (i * 31 % 251) as u8).collect();
        format!(
            "<t:Attachments><t:FileAttachment><t:Name>data.bin</t:Name><t:Content>{}</t:Content></t:FileAttachment></t:Attachments>",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    } else {
        String::new()
    };
    let recipients: String = RECIPIENTS
        .iter()
        .take(participants.clamp(1, RECIPIENTS.len()))
        .map(|a| format!("<t:Mailbox><t:EmailAddress>{a}</t:EmailAddress></t:Mailbox>"))
        .collect();
    let mut items = String::new();
    let to = RECIPIENTS
        .iter()
        .take(participants.clamp(1, RECIPIENTS.len()))
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    for i in 0..batch {
        items += &if mime {
            let message = format!(
                "From: Contoso <contoso@twitter.example>\r\nTo: {to}\r\nSubject: Bench message {i}\r\nDate: Fri, 01 Mar 2024 12:00:00 +0000\r\nMessage-ID: <bench-{i}@twitter.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
            );
            format!(
                "<t:Message><t:MimeContent CharacterSet=\"UTF-8\">{}</t:MimeContent><t:ItemClass>IPM.NOTE.Twitter.Tweet</t:ItemClass>{attachment_xml}</t:Message>",
                base64::engine::general_purpose::STANDARD.encode(message)
            )
        } else {
            format!(
                "<t:Message><t:ItemClass>IPM.NOTE.Twitter.Tweet</t:ItemClass><t:Subject>Bench message {i}</t:Subject><t:Body BodyType=\"Text\">{text}</t:Body>{attachment_xml}<t:DateTimeSent>2024-03-01T12:00:00Z</t:DateTimeSent><t:ToRecipients>{recipients}</t:ToRecipients><t:From><t:Mailbox><t:EmailAddress>contoso@twitter.example</t:EmailAddress></t:Mailbox></t:From></t:Message>"
            )
        };
    }
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><soap:Header><t:RequestServerVersion Version="Exchange2013_SP1"/></soap:Header><soap:Body><m:CreateItem MessageDisposition="SaveOnly"><m:Items>{items}</m:Items></m:CreateItem></soap:Body></soap:Envelope>"#
    );
    let mut request = format!(
        "POST {SERVICE_PATH} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());
    request
}

/// One keep-alive HTTP/1.1 connection: a request at a time, answers with a Content-Length.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends `request`, returns the status and the body.
    async fn send(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut chunk = [0u8; 16 * 1024];
        let (head_end, length, status) = loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("head"))?;
                let status: u16 = head
                    .get(9..12)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("status"))?;
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .ok_or_else(|| bad("no content-length"))?;
                break (end + 4, length, status);
            }
        };
        while self.buf.len() < head_end + length {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok((status, self.buf[head_end..head_end + length].to_vec()))
    }
}

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The slowest request: a stall of the server shows here (with a fixed number of
    /// connections, a stall delays only the requests in flight, too few to move p99).
    max_ms: f64,
    errors: u64,
    /// The server's CPU time in the measured window, by thread group (when its pid is known).
    cpu: Option<ThreadCpu>,
}

/// CPU seconds of a process: in all (threads that ended included) and by live thread.
#[derive(Clone, Debug, Default)]
struct CpuSample {
    total: f64,
    /// Bytes the process has sent to the storage layer (`write_bytes` of `/proc/<pid>/io`).
    written: Option<u64>,
    /// tid -> (group, seconds).
    threads: std::collections::HashMap<u32, (&'static str, f64)>,
}

/// CPU seconds of a process over a window, grouped by what its threads do (from their names).
#[derive(Clone, Debug, Default)]
struct ThreadCpu {
    groups: std::collections::BTreeMap<&'static str, f64>,
    /// Bytes written to storage in the window (log, database, attachment files).
    written: Option<u64>,
}

/// utime + stime of a `/proc/.../stat` line, in seconds (clock ticks of USER_HZ: 100 on every
/// Linux ABI), and the comm.
fn stat_seconds(stat: &str) -> Option<(String, f64)> {
    const TICKS_PER_SECOND: f64 = 100.0;
    // "pid (comm) state ... utime stime ...": fields 14 and 15, the 12th and 13th after comm.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(').map_or("", |(_, c)| c).to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    Some((comm, (ticks(11)? + ticks(12)?) / TICKS_PER_SECOND))
}

impl CpuSample {
    /// Linux only (`/proc/<pid>/stat` and `/proc/<pid>/task/*/stat`).
    fn take(pid: u32) -> Option<CpuSample> {
        let process = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, total) = stat_seconds(&process)?;
        let mut threads = std::collections::HashMap::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread that ended meanwhile has no stat any more.
            if let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) {
                if let Some((comm, seconds)) = stat_seconds(&stat) {
                    threads.insert(tid, (thread_group(&comm), seconds));
                }
            }
        }
        let written = std::fs::read_to_string(format!("/proc/{pid}/io"))
            .ok()
            .and_then(|io| {
                io.lines()
                    .find_map(|l| l.strip_prefix("write_bytes:"))
                    .and_then(|v| v.trim().parse().ok())
            });
        Some(CpuSample {
            total,
            written,
            threads,
        })
    }

    /// What was used since `before`, by group (`self` holds the last sample of every thread
    /// seen); what threads used after their last sample, before they ended, is "unattributed".
    fn since(&self, before: &CpuSample) -> ThreadCpu {
        let mut cpu = ThreadCpu {
            written: self
                .written
                .zip(before.written)
                .map(|(now, then)| now.saturating_sub(then)),
            ..ThreadCpu::default()
        };
        let mut known = 0.0;
        for (tid, (group, seconds)) in &self.threads {
            let earlier = before.threads.get(tid).map_or(0.0, |(_, s)| *s);
            let used = (seconds - earlier).max(0.0);
            known += used;
            *cpu.groups.entry(group).or_default() += used;
        }
        let ended = (self.total - before.total - known).max(0.0);
        if ended > 0.0 {
            cpu.groups.insert("unattributed (ended threads)", ended);
        }
        cpu
    }
}

impl ThreadCpu {
    fn total(&self) -> f64 {
        self.groups.values().sum()
    }
}

/// The part of the server a thread belongs to, by its name.
fn thread_group(comm: &str) -> &'static str {
    if comm.starts_with("tokio-rt-worker") {
        // tokio's workers and its blocking pool (attachment reads, exports); without
        // `--fsync`, requests commit their own writes there (see `store::committer`).
        "requests"
    } else if comm.starts_with("store-committer") {
        "committer"
    } else if comm.starts_with("sled") {
        "sled IO"
    } else if comm.starts_with("thrd-tantivy")
        || comm.starts_with("search")
        || comm.starts_with("docstore")
        || comm.starts_with("tantivy")
        || comm.starts_with("merge_thread")
        || comm.starts_with("segment_updater")
    {
        "search index"
    } else {
        "other"
    }
}

/// `connections` connections sending `request` in a loop: `warmup` s unmeasured, then `seconds`.
async fn load(
    addr: &str,
    request: Arc<Vec<u8>>,
    connections: usize,
    warmup: u64,
    seconds: u64,
    pid: Option<u32>,
    rate: Option<f64>,
) -> Result<Figures, String> {
    let start = Instant::now();
    // Open loop: the next request slot (request n is due at start + n / rate).
    let next_slot = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let measure_from = start + Duration::from_secs(warmup);
    let end = measure_from + Duration::from_secs(seconds.max(1));
    let cpu = pid.map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let before = CpuSample::take(pid)?;
            // Sampled every 100 ms, so the threads that end within the window (tantivy starts
            // new indexing threads after each commit) are counted up to their last sample.
            let mut latest = before.clone();
            while Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(100).min(end - Instant::now())).await;
                if let Some(sample) = CpuSample::take(pid) {
                    latest.total = sample.total;
                    latest.written = sample.written.or(latest.written);
                    latest.threads.extend(sample.threads);
                }
            }
            Some(latest.since(&before))
        })
    });
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (addr, request) = (addr.to_string(), request.clone());
        let next_slot = next_slot.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut conn = Conn::open(&addr).await.map_err(|e| e.to_string())?;
            loop {
                // When the request is due: now (closed loop), or its slot (open loop).
                let sent = match rate {
                    Some(rate) => {
                        let slot = next_slot.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let due = start + Duration::from_secs_f64(slot as f64 / rate);
                        if due < end {
                            tokio::time::sleep_until(due.into()).await;
                        }
                        due
                    }
                    None => Instant::now(),
                };
                if sent >= end {
                    break;
                }
                let ok = match conn.send(&request).await {
                    Ok((status, _)) => status == 200,
                    Err(_) => {
                        conn = Conn::open(&addr).await.map_err(|e| e.to_string())?;
                        false
                    }
                };
                if sent >= measure_from {
                    if ok {
                        latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            Ok::<_, String>((latencies, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await.map_err(|e| e.to_string())??;
        all.extend(latencies);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 * p) as usize).min(all.len() - 1);
        all[i] as f64 / 1000.0
    };
    let cpu = match cpu {
        Some(task) => task.await.map_err(|e| e.to_string())?,
        None => None,
    };
    Ok(Figures {
        rps: all.len() as f64 / seconds.max(1) as f64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: all.last().map_or(f64::NAN, |&m| m as f64 / 1000.0),
        errors,
        cpu,
    })
}

/// The bare baseline: hyper HTTP/1.1, reads the body, answers a fixed 200.
fn baseline_server() {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("Base URL: http://{}", listener.local_addr().expect("addr"));
        let _ = std::io::stdout().flush();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = request.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
