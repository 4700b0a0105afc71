//! `lizards`: run the platform (all roles or one), or benchmark it.

use clap::{Parser, Subcommand};
use lizards::{
    bench::BenchCommand,
    client::ClientCommand,
    platform::{self, Target},
};
use lizards_shared::{config::Config, secrets, shutdown, telemetry};

/// Lizards: real-time market prices over WebSocket.
///
/// With no environment it runs every role in one process with embedded
/// backends and synthetic prices; the web UI is at http://localhost:8080.
/// Every setting below can be given as a flag or as the environment
/// variable shown.
/// mimalloc: the proxy and fan-out paths allocate small short-lived
/// buffers per request and frame, where glibc's malloc showed up at ~10 %
/// of CPU (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "lizards",
    version,
    max_term_width = 110,
    after_help = "Secrets (JWT_SECRET, REGISTRY_TOKEN, INGEST_TOKEN, ADMIN_PASSWORD, SMTP_URL, TELEGRAM_BOT_TOKEN \
                  and the API keys) can instead be read from the file that <NAME>_FILE names. Outside the \
                  embedded mode, weak or placeholder secrets refuse to start (docs/security.md)."
)]
struct Cli {
    /// Role to run: every role in one process, or one of them.
    #[arg(long, value_enum, env = "LIZARDS_TARGET", default_value = "all")]
    target: Target,
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The project's own load and latency benchmarks (docs/benchmarks.md).
    Bench(BenchCommand),
    /// The terminal client: quotes, history, a live table, alerts and the
    /// portfolio of a running Lizards (docs/client.md).
    Client(ClientCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    // Benchmarks keep the platform under test to warnings (no access log
    // lines), as the nginx they compare with runs with `access_log off`.
    let default_filter = if cli.command.is_some() { "warn" } else { "info" };
    telemetry::init_tracing(cli.config.common.log_format, default_filter);
    match cli.command {
        Some(Command::Bench(bench)) => bench.run(cli.config).await,
        Some(Command::Client(client)) => {
            if let Err(error) = client.run().await {
                eprintln!("error: {error}");
                std::process::exit(1);
            }
            Ok(())
        }
        None => {
            secrets::read_files(&mut cli.config, |name| std::env::var_os(name))?;
            run(cli.config, cli.target).await
        }
    }
}

async fn run(config: Config, target: Target) -> anyhow::Result<()> {
    let shutdown = shutdown::Shutdown::new();
    let platform = platform::start(config, target, shutdown.clone()).await?;
    if let Some(addr) = platform.gateway {
        tracing::info!(
            "Lizards is up: open http://{} (WebSocket ws://{}/ws)",
            lizards_shared::http::dialable(addr),
            lizards_shared::http::dialable(addr)
        );
    }
    shutdown::on_signal(shutdown).await;
    tracing::info!("shutting down");
    platform.stopped().await
}
