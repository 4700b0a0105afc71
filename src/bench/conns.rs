//! `lizards bench conns`: how many idle WebSocket connections one provider
//! process holds, and the resident memory each costs it (SPEC §12: ≥ 18,000
//! per process at ≤ 10 KB each). The provider runs as a child process of
//! this binary (`--target provider`, embedded backends), so its resident
//! set is its own; this process opens the connections, subscribes each to
//! one symbol, answers pings, and reads the child's `/proc` figures.

use std::{net::TcpListener, process::Stdio, time::Duration};

use anyhow::Context;
use clap::Args;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::{process::Child, sync::Semaphore, time::Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Args)]
pub struct ConnsBench {
    /// Connections to open (the open-file limit of this process bounds it).
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Time connections stay open, idle, before the memory is read.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Symbols each connection subscribes to (0: connected only).
    #[arg(long, default_value_t = 1)]
    symbols: usize,
}

/// The provider child; killed on drop.
struct Provider {
    child: Child,
    pid: u32,
    url: String,
    _data: tempfile::TempDir,
}

impl Provider {
    async fn start() -> anyhow::Result<Provider> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = tempfile::tempdir()?;
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command
            .args(["--target", "provider"])
            .env("BIND_HOST", "127.0.0.1")
            .env("PROVIDER_PORT", port.to_string())
            .env("PROVIDER_GRPC_PORT", "0")
            .env("DATA_DIR", data.path())
            // No registry: registration keeps failing quietly.
            .env("REGISTRY_URL", "http://127.0.0.1:9")
            .env("RUST_LOG", "error");
        for url in ["AMQP_URL", "DATABASE_URL", "REDIS_URL", "MONGODB_URI", "LIZARDS_TARGET"] {
            command.env_remove(url);
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn()?;
        let pid = child.id().context("provider pid")?;
        let provider = Provider { child, pid, url: format!("127.0.0.1:{port}"), _data: data };
        let health = format!("http://{}/healthz", provider.url);
        let http = lizards_shared::http::client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http.get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
            anyhow::ensure!(Instant::now() < deadline, "the provider did not start on {}", provider.url);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(provider)
    }

    /// Resident set size in bytes (`VmRSS`).
    fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
        let kib: u64 = line.split_whitespace().nth(1).context("VmRSS value")?.parse()?;
        Ok(kib * 1024)
    }

    fn open_files(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid))?.count())
    }
}

impl ConnsBench {
    pub async fn run(self) -> anyhow::Result<()> {
        let mut provider = Provider::start().await?;
        let url = format!("ws://{}/ws", provider.url);
        // One warm-up connection, so what the first connection allocates
        // once (pools, buffers) is in the baseline.
        let (warm, _) = tokio_tungstenite::connect_async(&url).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let baseline = provider.rss()?;

        let started = Instant::now();
        let gate = std::sync::Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut opening = Vec::with_capacity(self.connections);
        for i in 0..self.connections {
            let permit = gate.clone().acquire_owned().await?;
            let (url, symbols) = (url.clone(), self.symbols);
            opening.push(tokio::spawn(async move {
                let result = tokio_tungstenite::connect_async(&url).await;
                drop(permit);
                let (mut socket, _) = result?;
                // Idle but real: a small watchlist each, spread over 30 symbols.
                let symbols: Vec<&str> =
                    (0..symbols).map(|k| lizards_ingestion::sources::synthetic::UNIVERSE[(i + k) % 30].0).collect();
                if !symbols.is_empty() {
                    socket.send(Message::text(json!({"type": "subscribe", "symbols": symbols}).to_string())).await?;
                }
                anyhow::Ok(socket)
            }));
        }
        let mut sockets = Vec::with_capacity(self.connections);
        for task in opening {
            sockets.push(task.await??);
        }
        let connect_seconds = started.elapsed().as_secs_f64();
        // Keep reading, so pings are answered and frames do not pile up.
        let readers: Vec<_> = sockets
            .into_iter()
            .map(|socket| tokio::spawn(async move { socket.for_each(|_| async {}).await }))
            .collect();
        tokio::time::sleep(self.settle).await;
        let rss = provider.rss()?;
        let open_files = provider.open_files()?;
        let per_connection = rss.saturating_sub(baseline) as f64 / self.connections.max(1) as f64;
        let alive = readers.iter().filter(|r| !r.is_finished()).count();
        println!(
            "{}",
            json!({
                "bench": "conns",
                "connections": self.connections,
                "symbols_each": self.symbols,
                "alive": alive,
                "connect_seconds": connect_seconds,
                "provider_open_files": open_files,
                "provider_rss_baseline_bytes": baseline,
                "provider_rss_bytes": rss,
                "bytes_per_connection": per_connection.round(),
            })
        );
        for reader in readers {
            reader.abort();
        }
        drop(warm);
        provider.child.kill().await?;
        Ok(())
    }
}
