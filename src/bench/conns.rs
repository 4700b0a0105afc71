//! `lizards bench conns`: how many idle WebSocket connections provider
//! processes hold, and the resident memory each costs (targets in
//! docs/benchmarks.md: ≥ 18,000 per process, ≥ 50,000 across three
//! processes sharing one broker, and a bound per connection). Providers
//! run as child processes of this binary (`--target provider`), so each
//! resident set is a provider's own. The connections come from this
//! process, or from `--client-processes` child processes of it, each from
//! its own 127.0.0.x address (one process holds fewer than 20,000
//! descriptors). Every connection subscribes to
//! `--symbols` symbols, known to the provider (its store holds their
//! prices), and keeps reading (pings are answered); after `--settle`, each
//! provider's `VmRSS` and open descriptors are read from `/proc`.
//! `--reference` measures the plain tokio-tungstenite server the same way.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use futures::{SinkExt, StreamExt};
use lizards_ingestion::sources::synthetic::UNIVERSE;
use lizards_shared::{
    Quote, Symbol,
    config::Config,
    store::{QuoteStore, SqliteStore},
};
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    net::{TcpSocket, TcpStream},
    process::Child,
    sync::Semaphore,
    time::Instant,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, protocol::WebSocketConfig},
};

use super::process;

#[derive(Debug, Clone, Args)]
pub struct ConnsBench {
    /// Connections to open in all (spread evenly over the providers).
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Connections being opened at once, per client process.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Time connections stay open, idle, before the memory is read.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Symbols each connection subscribes to (0: connected only).
    #[arg(long, default_value_t = 10)]
    symbols: usize,
    /// Provider processes; more than one share the broker at AMQP_URL.
    #[arg(long, default_value_t = 1)]
    providers: usize,
    /// Processes opening the connections (0: this one), each from its own
    /// 127.0.0.x source address.
    #[arg(long, default_value_t = 0)]
    client_processes: usize,
    /// Also measure the plain tokio-tungstenite server (`bench ws
    /// --reference`'s) with the same connections, after the provider.
    #[arg(long)]
    reference: bool,
    /// Internal: be one client process of these WebSocket URLs.
    #[arg(long, hide = true)]
    client_of: Vec<String>,
    /// Internal: the client process's source address.
    #[arg(long, hide = true)]
    source_ip: Option<IpAddr>,
}

type Socket = WebSocketStream<TcpStream>;

/// A provider child; killed on drop.
struct Provider {
    child: Child,
    pid: u32,
    url: String,
    _data: Option<tempfile::TempDir>,
}

impl Provider {
    /// A provider child whose store already holds a price for each of the
    /// symbols connections subscribe to: they are known at once, so what is
    /// measured is the subscribed connection, not pending lookups.
    async fn start(amqp_url: Option<&str>) -> anyhow::Result<Provider> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = tempfile::tempdir()?;
        seed_prices(data.path()).await?;
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
        if let Some(url) = amqp_url {
            command.env("AMQP_URL", url);
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn()?;
        let pid = child.id().context("provider pid")?;
        let provider = Provider { child, pid, url: format!("ws://127.0.0.1:{port}/ws"), _data: Some(data) };
        let health = format!("http://127.0.0.1:{port}/healthz");
        let http = lizards_shared::http::client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http.get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
            anyhow::ensure!(Instant::now() < deadline, "the provider on port {port} did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(provider)
    }

    /// The plain tokio-tungstenite server of `bench ws --reference`, idle
    /// (no quotes), as a child of its own.
    async fn reference() -> anyhow::Result<Provider> {
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command.args(["bench", "ws", "--serve", "reference", "--rate", "0", "--symbols", &WATCHED.to_string()]);
        let (child, listening) = super::pinned::spawn_server(command, "reference").await?;
        let url = listening.split(' ').next().context("the reference's URL")?.to_string();
        let pid = child.id().context("reference pid")?;
        Ok(Provider { child, pid, url, _data: None })
    }
}

/// Symbols the connections subscribe to, spread over this many.
const WATCHED: usize = 30;

/// Writes one price per watched symbol into the embedded store under `dir`.
async fn seed_prices(dir: &std::path::Path) -> anyhow::Result<()> {
    let store = SqliteStore::open(&dir.join("lizards.db")).await?;
    let now = chrono::Utc::now();
    let quotes: Vec<Quote> = UNIVERSE[..WATCHED]
        .iter()
        .map(|(symbol, price)| {
            Ok(Quote {
                symbol: Symbol::parse(symbol)?,
                price: *price,
                ts: now,
                volume: None,
                source: "bench".into(),
                ingest_id: String::new(),
                ingested_at: now,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    store.insert_batch(&quotes).await?;
    Ok(())
}

/// One WebSocket connection from `source` (any address when `None`), with a
/// small read buffer so 50,000 clients fit the generator's memory.
async fn connect(url: &str, source: Option<IpAddr>) -> anyhow::Result<Socket> {
    let request = url.into_client_request()?;
    let host = request.uri().host().context("host")?;
    let port = request.uri().port_u16().context("port")?;
    let addr: SocketAddr = format!("{host}:{port}").parse()?;
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (socket, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(socket)
}

/// Opens `count` connections spread over `urls`, each subscribed to
/// `symbols` symbols, and keeps reading them until dropped.
async fn open(
    urls: &[String],
    count: usize,
    symbols: usize,
    concurrency: usize,
    source: Option<IpAddr>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let (opened, mut results) = tokio::sync::mpsc::unbounded_channel();
    let mut readers = Vec::with_capacity(count);
    for i in 0..count {
        let permit = gate.clone().acquire_owned().await?;
        let (url, opened) = (urls[i % urls.len()].clone(), opened.clone());
        readers.push(tokio::spawn(async move {
            let socket = async {
                let mut socket = connect(&url, source).await?;
                // Idle but real: a small watchlist each, spread over 30 symbols.
                let symbols: Vec<&str> = (0..symbols).map(|k| UNIVERSE[(i + k) % WATCHED].0).collect();
                if !symbols.is_empty() {
                    socket.send(Message::text(json!({"type": "subscribe", "symbols": symbols}).to_string())).await?;
                }
                anyhow::Ok(socket)
            }
            .await;
            drop(permit);
            match socket {
                Ok(socket) => {
                    let _ = opened.send(Ok(()));
                    // Read from the start, so pings are answered while the
                    // others are still connecting: a connection silent for
                    // 60 s is closed by the provider.
                    socket.for_each(|_| async {}).await;
                }
                Err(error) => {
                    let _ = opened.send(Err(error));
                }
            }
        }));
    }
    for _ in 0..count {
        results.recv().await.context("a connection task ended")??;
    }
    Ok(readers)
}

impl ConnsBench {
    pub async fn run(self, config: Config) -> anyhow::Result<()> {
        if !self.client_of.is_empty() {
            return self.run_client().await;
        }
        let shared = config.common.amqp_url.as_deref();
        anyhow::ensure!(self.providers == 1 || shared.is_some(), "--providers above 1 share a broker: set AMQP_URL");
        anyhow::ensure!(
            !self.reference || (self.providers == 1 && self.client_processes == 0),
            "--reference compares one provider with connections from this process"
        );
        let mut providers = Vec::with_capacity(self.providers);
        for _ in 0..self.providers.max(1) {
            providers.push(Provider::start(shared.filter(|_| self.providers > 1)).await?);
        }
        let (connect_seconds, per_provider) = self.measure(providers).await?;
        let mut report = json!({
            "bench": "conns",
            "connections": self.connections,
            "providers": self.providers.max(1),
            "client_processes": self.client_processes,
            "symbols_each": self.symbols,
            "connect_seconds": connect_seconds,
            "per_provider": per_provider,
        });
        if self.reference {
            let (_, reference) = self.measure(vec![Provider::reference().await?]).await?;
            let ratio = per_provider[0]["bytes_per_connection"].as_f64().unwrap_or(f64::NAN)
                / reference[0]["bytes_per_connection"].as_f64().unwrap_or(f64::NAN);
            report["reference"] = reference[0].clone();
            report["memory_ratio"] = json!((ratio * 100.0).round() / 100.0);
        }
        println!("{report}");
        Ok(())
    }

    /// Opens the connections to `servers`, lets them settle, and reads each
    /// server's resident memory and descriptors; then closes everything.
    /// Returns the connect time and one figure set per server.
    async fn measure(&self, servers: Vec<Provider>) -> anyhow::Result<(f64, Vec<serde_json::Value>)> {
        let urls: Vec<String> = servers.iter().map(|p| p.url.clone()).collect();
        // One warm-up connection each, watching every symbol, so what the
        // first connection allocates once (pools, buffers, the symbols' hub
        // entries) is in the baseline.
        let warm = open(&urls, urls.len(), WATCHED, 1, None).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let baselines: Vec<u64> =
            servers.iter().map(|p| process::resident_bytes(p.pid)).collect::<anyhow::Result<_>>()?;

        let started = Instant::now();
        let (local, clients) = if self.client_processes == 0 {
            (open(&urls, self.connections, self.symbols, self.concurrency, None).await?, Vec::new())
        } else {
            (Vec::new(), self.start_clients(&urls).await?)
        };
        let connect_seconds = started.elapsed().as_secs_f64();
        tokio::time::sleep(self.settle).await;

        let per_server = self.connections as f64 / servers.len() as f64;
        let mut figures = Vec::new();
        for (server, baseline) in servers.iter().zip(&baselines) {
            let rss = process::resident_bytes(server.pid)?;
            figures.push(json!({
                "rss_bytes": rss,
                "open_files": process::open_files(server.pid)?,
                "bytes_per_connection": (rss.saturating_sub(*baseline) as f64 / per_server).round(),
                // Client processes only say they connected; the servers'
                // open descriptors say how many are still there.
                "alive": clients.is_empty().then(|| local.iter().filter(|r| !r.is_finished()).count()),
            }));
        }
        for reader in local.into_iter().chain(warm) {
            reader.abort();
        }
        for mut client in clients {
            let _ = client.kill().await;
        }
        for mut server in servers {
            server.child.kill().await?;
        }
        Ok((connect_seconds, figures))
    }

    /// Starts the client processes and waits until each has opened its
    /// share of the connections.
    async fn start_clients(&self, urls: &[String]) -> anyhow::Result<Vec<Child>> {
        let processes = self.client_processes;
        let mut clients = Vec::with_capacity(processes);
        for k in 0..processes {
            let share = self.connections / processes + usize::from(k < self.connections % processes);
            let source = Ipv4Addr::new(127, 0, 0, u8::try_from(k + 2).context("at most 250 client processes")?);
            let mut command = tokio::process::Command::new(std::env::current_exe()?);
            command.args(["bench", "conns", "--connections", &share.to_string()]);
            command.args(["--symbols", &self.symbols.to_string(), "--concurrency", &self.concurrency.to_string()]);
            command.args(["--source-ip", &source.to_string()]);
            for url in urls {
                command.args(["--client-of", url]);
            }
            command.env("RUST_LOG", "error").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
            let child = command.kill_on_drop(true).spawn()?;
            clients.push(child);
        }
        for client in &mut clients {
            let stdout = client.stdout.take().context("client stdout")?;
            let mut lines = BufReader::new(stdout).lines();
            let ready = async {
                while let Some(line) = lines.next_line().await? {
                    if line.starts_with("ready") {
                        return anyhow::Ok(());
                    }
                }
                anyhow::bail!("a client process ended before it was ready")
            };
            tokio::time::timeout(Duration::from_secs(300), ready)
                .await
                .context("a client process took over 5 minutes")??;
        }
        Ok(clients)
    }

    /// One client process: opens its connections, says `ready`, and holds
    /// them until its standard input closes (the parent ends or kills it).
    async fn run_client(&self) -> anyhow::Result<()> {
        let readers = open(&self.client_of, self.connections, self.symbols, self.concurrency, self.source_ip).await?;
        println!("ready {}", readers.len());
        let mut stdin = tokio::io::stdin();
        let mut sink = Vec::new();
        let _ = stdin.read_to_end(&mut sink).await;
        Ok(())
    }
}
