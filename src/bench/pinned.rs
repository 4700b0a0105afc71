//! `bench ws --pinned`: each server in a child process of its own, pinned
//! to core 0, the benchmark clients in this process, pinned to core 1, and
//! the server's CPU time read from `/proc`. Two servers that both deliver
//! every update look equal by throughput; what each spends per update
//! tells them apart. The server's cost with no clients (the pipeline:
//! ingestion, broker, persistence, alerts) is measured first, so the
//! fan-out's own share shows.

use std::{process::Stdio, time::Duration};

use anyhow::Context;
use lizards_shared::{config::Config, shutdown::Shutdown};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Child,
};

use super::{
    WsBench, WsFigures,
    process::{self, MIB},
    reference,
};

/// Which server a `--serve` child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Server {
    /// The all-in-one platform, as `bench ws` runs it in-process.
    Lizards,
    /// The plain tokio-tungstenite broadcast server.
    Reference,
}

const SERVER_CORE: &str = "0";
const CLIENT_CORE: &str = "1";
/// What a server child prints once it listens, then its WebSocket URL and
/// its metrics URL (`-`: none).
const LISTENING: &str = "bench ws server listening:";
const START_DEADLINE: Duration = Duration::from_secs(60);
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// The child's side: serves until the parent closes its stdin.
pub async fn serve(bench: &WsBench, server: Server, symbols: &[String], config: Config) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    let dir = tempfile::tempdir()?;
    let (platform, ws, metrics) = match server {
        Server::Lizards => {
            let (platform, ws, metrics) = bench.start_platform(config, dir.path(), symbols, &shutdown).await?;
            (Some(platform), ws, metrics)
        }
        Server::Reference => {
            let reference = reference::start(symbols, bench.rate, shutdown.clone()).await?;
            (None, format!("ws://{}/ws", reference.addr), "-".to_string())
        }
    };
    println!("{LISTENING} {ws} {metrics}");
    tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await?;
    shutdown.cancel();
    if let Some(platform) = platform {
        platform.stopped().await?;
    }
    Ok(())
}

/// What one pinned server delivered and what it cost.
struct Figures {
    ws: WsFigures,
    conflated: Option<f64>,
    /// Server CPU while the clients were counted.
    cpu: Duration,
    /// Share of its core the server used before any client came.
    idle_share: f64,
    rss: u64,
}

impl Figures {
    fn cpu_share(&self) -> f64 {
        self.cpu.as_secs_f64() / self.ws.seconds
    }

    /// None when the server used less CPU than `/proc` counts (10 ms).
    fn updates_per_cpu_second(&self) -> Option<f64> {
        (!self.cpu.is_zero()).then(|| self.ws.updates_per_s * self.ws.seconds / self.cpu.as_secs_f64())
    }

    fn print(&self, name: &str, rate: f64) {
        self.ws.print(name, rate);
        println!(
            "{name}: server CPU {:.0} % of its core with the clients, {:.0} % with none; {:.0} updates per server CPU-second; resident {:.0} MiB",
            self.cpu_share() * 100.0,
            self.idle_share * 100.0,
            self.updates_per_cpu_second().unwrap_or(f64::NAN),
            self.rss as f64 / MIB
        );
    }

    fn json(&self) -> Value {
        json!({
            "connected": self.ws.connected, "seconds": self.ws.seconds,
            "updates_per_s": self.ws.updates_per_s.round(), "frames_per_s": self.ws.frames_per_s.round(),
            "p50_ms": self.ws.ms(0.5), "p99_ms": self.ws.ms(0.99), "conflated_per_s": self.conflated.map(f64::round),
            "server_cpu_pct": (self.cpu_share() * 1000.0).round() / 10.0,
            "idle_cpu_pct": (self.idle_share * 1000.0).round() / 10.0,
            "updates_per_cpu_s": self.updates_per_cpu_second().map(f64::round),
            "server_rss_mib": (self.rss as f64 / MIB).round(),
        })
    }
}

/// The parent's side: pins itself, runs Lizards then (with `--reference`)
/// the plain server, and prints the comparison.
pub async fn run(bench: &WsBench, symbols: &[String]) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism()?.get();
    anyhow::ensure!(
        cores >= 2,
        "--pinned needs two cores, one for the server and one for the clients; {cores} available"
    );
    pin_this_process().await?;
    println!(
        "bench ws --pinned: {} clients × {} of {} symbols, {} quotes/s, warm-up {:?}, measuring {:?}; servers on core {SERVER_CORE}, clients on core {CLIENT_CORE}",
        bench.clients,
        bench.watched(symbols),
        symbols.len(),
        bench.rate,
        bench.warmup,
        bench.duration
    );
    let lizards = measure_server(bench, Server::Lizards, symbols).await?;
    lizards.print("lizards", bench.rate);
    let mut summary = json!({"bench": "ws", "pinned": true, "clients": bench.clients, "symbols": bench.watched(symbols),
               "universe": symbols.len(), "rate": bench.rate});
    summary["lizards"] = lizards.json();
    if bench.reference {
        let reference = measure_server(bench, Server::Reference, symbols).await?;
        reference.print("reference", bench.rate);
        // CPU per delivered update, Lizards over the reference.
        let ratio = reference.updates_per_cpu_second().zip(lizards.updates_per_cpu_second()).map(|(r, l)| r / l);
        if let Some(ratio) = ratio {
            println!("lizards / reference server CPU per delivered update: {ratio:.2}");
        }
        summary["reference"] = reference.json();
        summary["cpu_ratio"] = json!(ratio.map(|ratio| (ratio * 100.0).round() / 100.0));
    }
    println!("{summary}");
    Ok(())
}

/// Every thread of this process, and those it starts later, on the clients'
/// core.
async fn pin_this_process() -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    let status = tokio::process::Command::new("taskset")
        .args(["--all-tasks", "--cpu-list", "--pid", CLIENT_CORE, &pid])
        .stdout(Stdio::null())
        .status()
        .await
        .context("running taskset (util-linux)")?;
    anyhow::ensure!(status.success(), "taskset could not pin the clients to core {CLIENT_CORE}: {status}");
    Ok(())
}

/// Starts `server` as a pinned child, measures its cost idle and under the
/// clients, and stops it.
async fn measure_server(bench: &WsBench, server: Server, symbols: &[String]) -> anyhow::Result<Figures> {
    let name = if server == Server::Lizards { "lizards" } else { "reference" };
    // taskset execs the server: the child's pid is the server's.
    let mut command = tokio::process::Command::new("taskset");
    command
        .args(["--cpu-list", SERVER_CORE])
        .arg(std::env::current_exe()?)
        .args(["bench", "ws", "--serve", name, "--symbols", &bench.symbols.to_string()])
        .args(["--universe", &symbols.len().to_string()])
        .args(["--rate", &bench.rate.to_string()]);
    let (mut child, listening) = spawn_server(command, name).await?;
    let pid = child.id().context("the server's pid")?;
    let (ws, metrics) = listening.split_once(' ').context("the server's listening line")?;
    let metrics = (metrics != "-").then_some(metrics);

    tokio::time::sleep(bench.warmup).await;
    let before = process::cpu_time(pid)?;
    tokio::time::sleep(bench.duration).await;
    let idle_share = (process::cpu_time(pid)? - before).as_secs_f64() / bench.duration.as_secs_f64();
    let (figures, conflated) = bench.measure(ws, symbols, metrics, Some(pid)).await?;
    let cpu = figures.server_cpu.context("the server's CPU time")?;
    let rss = process::resident_bytes(pid)?;

    drop(child.stdin.take());
    let status = tokio::time::timeout(STOP_DEADLINE, child.wait())
        .await
        .with_context(|| format!("the {name} server did not stop within {STOP_DEADLINE:?}"))??;
    anyhow::ensure!(status.success(), "the {name} server ended with {status}");
    Ok(Figures { ws: figures, conflated, cpu, idle_share, rss })
}

/// Starts a `bench ws --serve` child (`command`) and waits until it
/// listens; returns it and what it printed after [`LISTENING`]: its
/// WebSocket URL and its metrics URL (`-`: none). Its standard input held
/// open keeps it serving.
pub async fn spawn_server(mut command: tokio::process::Command, name: &str) -> anyhow::Result<(Child, String)> {
    let mut child = command
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the {name} server"))?;
    let mut lines = BufReader::new(child.stdout.take().context("the server's stdout")?).lines();
    let listening = tokio::time::timeout(START_DEADLINE, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(LISTENING) {
                return Ok(rest.trim().to_string());
            }
        }
        anyhow::bail!("the {name} server exited before it listened")
    })
    .await
    .with_context(|| format!("the {name} server did not listen within {START_DEADLINE:?}"))??;
    // Whatever else it prints must not fill the pipe and stall it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, listening))
}
