//! `lizards bench gateway`: proxied REST throughput through the gateway
//! (rate limiting on, cache bypassed) next to nginx `proxy_pass` to the
//! same provider and to the provider direct; then cache hits through the
//! gateway, and the latency of one rate-limit check against the store
//! (Redis when `REDIS_URL` is set). One load generator for every target:
//! N keep-alive HTTP/1.1 connections, each sending its next GET as soon as
//! the previous answer is read.

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use lizards_shared::{
    cache::{Cache, MemoryCache, Quota, RedisCache},
    config::Config,
    shutdown::Shutdown,
};
use tokio::{net::TcpStream, process::Command, time::Instant};

use crate::platform::{self, Target};

#[derive(Debug, Clone, Args)]
pub struct GatewayBench {
    /// Concurrent keep-alive connections of the load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured time per target and round.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Rounds over every target; figures are medians over the rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Unmeasured load before each measurement.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Path every request asks for.
    #[arg(long, default_value = "/quotes/AAPL")]
    path: String,
    /// nginx binary for the reference proxy (Debian's `nginx`); the row is
    /// skipped when it cannot be started.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: String,
    /// Rate-limit checks timed one after another against the store.
    #[arg(long, default_value_t = 20_000)]
    checks: u32,
}

/// What one target sustained.
struct Throughput {
    requests_per_s: f64,
    errors: u64,
    latency: Histogram<u64>,
}

impl Throughput {
    fn ms(&self, quantile: f64) -> f64 {
        super::ms(&self.latency, quantile)
    }
}

impl GatewayBench {
    pub async fn run(self, config: Config) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let shutdown = Shutdown::new();
        let mut config = config.ephemeral(dir.path());
        // Every request is counted against a limit it never reaches.
        config.gateway.rate_limit_anonymous = Quota::new(1_000_000_000, Duration::from_secs(3600));
        config.gateway.cache_ttls = "/quotes/*=60s".parse()?;
        let store_kind = if config.common.redis_url.is_some() { "Redis" } else { "in-process" };
        let platform = platform::start(config.clone(), Target::All, shutdown.clone()).await?;
        let provider = platform.provider.context("provider started")?;
        let registry = platform.registry.context("registry started")?;
        wait_for_ok(provider, &self.path).await?;
        // A gateway process of its own, as nginx has: neither shares the
        // load generator's and the provider's threads.
        let gateway_process = GatewayProcess::start(registry, &config, dir.path()).await?;
        let gateway = gateway_process.addr;
        wait_for_ok(gateway, &self.path).await?;
        println!(
            "bench gateway: GET {} over {} keep-alive connections, {} rounds of warm-up {:?} + {:?} per target, rate-limit store {store_kind}",
            self.path, self.connections, self.rounds, self.warmup, self.duration
        );

        let nginx = match Nginx::start(&self.nginx, provider, dir.path()).await {
            Ok(nginx) => Some(nginx),
            Err(error) => {
                println!("nginx proxy_pass: skipped ({error:#})");
                None
            }
        };
        let no_store = Some("no-store");
        let mut targets = vec![("provider direct", provider, no_store)];
        if let Some(nginx) = &nginx {
            targets.push(("nginx proxy_pass", nginx.addr, no_store));
        }
        targets.push(("gateway, rate-limited, cache bypassed", gateway, no_store));
        targets.push(("gateway, rate-limited, cache hits", gateway, None));
        // Rounds interleave the targets, so that a slower spell of this
        // shared machine weighs on all of them alike; ratios are taken
        // within a round.
        let mut rounds: Vec<Vec<f64>> = Vec::new();
        let mut latency: Vec<Histogram<u64>> = Vec::new();
        for round in 1..=self.rounds {
            println!("round {round}:");
            let mut rates = Vec::new();
            for (i, (name, addr, cache_control)) in targets.iter().enumerate() {
                let measured = self.measure(name, *addr, *cache_control).await?;
                rates.push(measured.requests_per_s);
                match latency.get_mut(i) {
                    Some(histogram) => histogram.add(&measured.latency)?,
                    None => latency.push(measured.latency),
                }
            }
            rounds.push(rates);
        }
        if let Some(nginx) = nginx {
            nginx.stop().await;
        }
        let check = self.rate_limit_check(&config).await?;
        gateway_process.stop().await;
        shutdown.cancel();
        platform.stopped().await?;

        println!("median of {} rounds:", self.rounds);
        let mut summary = serde_json::Map::new();
        for (i, (name, ..)) in targets.iter().enumerate() {
            let rate = median(rounds.iter().map(|r| r[i]).collect());
            let ms = |q: f64| super::ms(&latency[i], q);
            println!("{name:<40} {rate:>9.0} req/s   p50 {:.2} ms  p99 {:.2} ms", ms(0.5), ms(0.99));
            summary.insert(name.to_string(), serde_json::json!({"rps": rate.round(), "p99_ms": ms(0.99)}));
        }
        let ratio = |of: usize, to: usize| median(rounds.iter().map(|r| r[of] / r[to]).collect());
        let n = targets.len();
        if n == 4 {
            let gateway_to_nginx = ratio(2, 1);
            println!("gateway / nginx: {gateway_to_nginx:.2}× (median of the rounds' ratios)");
            summary.insert("gateway_to_nginx".into(), serde_json::json!((gateway_to_nginx * 100.0).round() / 100.0));
        }
        println!("gateway / direct: {:.2}×; cache hits / direct: {:.2}×", ratio(n - 2, 0), ratio(n - 1, 0));
        let us = |q: f64| check.value_at_quantile(q) as f64;
        println!(
            "rate-limit check ({store_kind}, {} sequential): p50 {:.0} µs  p99 {:.0} µs  max {:.0} µs",
            check.len(),
            us(0.5),
            us(0.99),
            check.max() as f64
        );
        summary.insert("ratelimit_check_p99_us".into(), serde_json::json!(us(0.99)));
        summary.insert("store".into(), serde_json::json!(store_kind));
        println!("{}", serde_json::json!({"bench": "gateway", "connections": self.connections, "results": summary}));
        Ok(())
    }

    /// Loads `target` for the warm-up, then measures it.
    async fn measure(&self, name: &str, target: SocketAddr, cache_control: Option<&str>) -> anyhow::Result<Throughput> {
        let stop = Arc::new(AtomicBool::new(false));
        let measuring = Arc::new(AtomicBool::new(false));
        let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut tasks = Vec::with_capacity(self.connections);
        request(&self.path, cache_control)?; // fails here, not in every task
        for _ in 0..self.connections {
            let (path, cache_control) = (self.path.clone(), cache_control.map(str::to_string));
            let request = move || request(&path, cache_control.as_deref()).expect("checked above");
            let (stop, measuring, done, errors) = (stop.clone(), measuring.clone(), done.clone(), errors.clone());
            tasks.push(tokio::spawn(async move { connection(target, request, stop, measuring, done, errors).await }));
        }
        tokio::time::sleep(self.warmup).await;
        measuring.store(true, Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(self.duration).await;
        let count = done.load(Ordering::Relaxed);
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for task in tasks {
            latency.add(task.await??)?;
        }
        let measured = Throughput {
            requests_per_s: count as f64 / elapsed.as_secs_f64(),
            errors: errors.load(Ordering::Relaxed),
            latency,
        };
        println!(
            "  {name:<38} {:>9.0} req/s   p50 {:.2} ms  p99 {:.2} ms   errors {}",
            measured.requests_per_s,
            measured.ms(0.5),
            measured.ms(0.99),
            measured.errors
        );
        if measured.errors > 0 && measured.errors * 100 > count {
            bail!("{name}: {} of {count} requests failed", measured.errors);
        }
        Ok(measured)
    }

    /// Times single rate-limit checks against the gateway's store.
    async fn rate_limit_check(&self, config: &Config) -> anyhow::Result<Histogram<u64>> {
        let store: Arc<dyn Cache> = match &config.common.redis_url {
            Some(url) => Arc::new(RedisCache::connect(url, "lizards-bench").await?),
            None => Arc::new(MemoryCache::default()),
        };
        let quota = Quota::new(1_000_000_000, Duration::from_secs(3600));
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for i in 0..self.checks {
            let key = format!("bench:{}", i % 1024);
            let started = Instant::now();
            store.throttle(&key, quota, 1).await?;
            histogram.record(started.elapsed().as_micros().max(1) as u64)?;
        }
        Ok(histogram)
    }
}

fn request(path: &str, cache_control: Option<&str>) -> anyhow::Result<Request<Empty<Bytes>>> {
    let mut request = Request::get(path).header(header::HOST, "bench");
    if let Some(value) = cache_control {
        request = request.header(header::CACHE_CONTROL, value);
    }
    Ok(request.body(Empty::new())?)
}

/// One keep-alive connection sending GETs back to back until `stop`;
/// returns the latencies (µs) seen while `measuring`.
async fn connection(
    target: SocketAddr,
    request: impl Fn() -> Request<Empty<Bytes>>,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) -> anyhow::Result<Histogram<u64>> {
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while !stop.load(Ordering::Relaxed) {
        let stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let ok = match sender.send_request(request()).await {
                Ok(response) => {
                    let status = response.status();
                    response.into_body().collect().await.is_ok() && status == StatusCode::OK
                }
                Err(_) => false,
            };
            if measuring.load(Ordering::Relaxed) {
                done.fetch_add(1, Ordering::Relaxed);
                latency.record(started.elapsed().as_micros().max(1) as u64)?;
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if !ok || sender.ready().await.is_err() {
                break; // a fresh connection
            }
        }
    }
    Ok(latency)
}

async fn wait_for_ok(target: SocketAddr, path: &str) -> anyhow::Result<()> {
    let url = format!("http://{target}{path}");
    let http = lizards_shared::http::client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = http.get(&url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer 200 within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Binds and releases a loopback port for a child process to listen on.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `lizards --target gateway` as a child process, with the benchmark's
/// limits and cache rules.
struct GatewayProcess {
    addr: SocketAddr,
    child: tokio::process::Child,
}

impl GatewayProcess {
    async fn start(registry: SocketAddr, config: &Config, dir: &std::path::Path) -> anyhow::Result<GatewayProcess> {
        let port = free_port()?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["--target", "gateway"])
            .env("BIND_HOST", "127.0.0.1")
            .env("GATEWAY_PORT", port.to_string())
            .env("REGISTRY_URL", format!("http://{registry}"))
            .env("DATA_DIR", dir)
            .env("RATE_LIMIT_ANONYMOUS", config.gateway.rate_limit_anonymous.to_string())
            .env("CACHE_TTLS", "/quotes/*=60s")
            .env("RUST_LOG", "warn")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if let Some(url) = &config.common.redis_url {
            command.env("REDIS_URL", url);
        }
        let child = command.spawn().context("starting the gateway process")?;
        Ok(GatewayProcess { addr: SocketAddr::from(([127, 0, 0, 1], port)), child })
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// nginx as a plain reverse proxy to the provider: one worker per core,
/// keep-alive upstream connections, no access log (as the benchmark runs
/// Lizards with warnings only).
struct Nginx {
    addr: SocketAddr,
    child: tokio::process::Child,
    binary: String,
    conf: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Nginx {
    async fn start(binary: &str, upstream: SocketAddr, dir: &std::path::Path) -> anyhow::Result<Nginx> {
        let port = free_port()?;
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nworker_processes auto;\npid {dir}/nginx.pid;\nerror_log stderr warn;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
                 upstream provider {{ server {upstream}; keepalive 128; }}\n\
                 server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://provider;\n\
                 proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n",
                dir = dir.display()
            ),
        )?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut nginx = Nginx { addr, child, conf, dir: dir.to_path_buf(), binary: binary.to_string() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                bail!("nginx exited: {status}");
            }
            if Instant::now() > deadline {
                nginx.stop().await;
                bail!("nginx did not listen on {addr}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(nginx)
    }

    /// Fast shutdown through the master (`-s stop`), so no worker outlives it.
    async fn stop(mut self) {
        let mut stop = Command::new(&self.binary);
        stop.arg("-c").arg(&self.conf).arg("-p").arg(&self.dir).args(["-s", "stop"]);
        let _ = stop.status().await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}
