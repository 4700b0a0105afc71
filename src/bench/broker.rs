//! `bench broker`: the plain reference for the latency target through
//! RabbitMQ. Plain lapin, no Lizards: quotes in the broker's wire format
//! (each tick's quotes as one message per symbol shard, or with `--single`
//! one message per quote) are published persistent with confirms (a window
//! of `--in-flight` messages) to a topic exchange routed to the same three queues a
//! quote reaches in the platform (two durable, consumed with batched acks
//! like `provider.persist` and `alerts.eval`, and an exclusive one consumed
//! without acks like a provider's live queue). Latency is publish → receipt
//! on the live queue. The topology has names of its own and is deleted
//! afterwards. RabbitMQ's CPU share is read from `/proc` (`beam.smp`).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use bytes::Bytes;
use chrono::Utc;
use clap::Args;
use futures::{FutureExt, StreamExt, stream::FuturesUnordered};
use hdrhistogram::Histogram;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        ExchangeDeclareOptions, QueueDeclareOptions,
    },
    types::FieldTable,
};
use lizards_ingestion::sources::synthetic::UNIVERSE;
use lizards_shared::{
    Quote, Symbol,
    config::Config,
    quote::{decode_message, encode_batch, shard, shard_routing_key},
    shutdown::Shutdown,
};
use tokio::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct BrokerBench {
    /// Quotes published per second.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Symbols the quotes are spread over.
    #[arg(long, default_value_t = 10)]
    symbols: usize,
    /// Publishes waiting for their confirm at once (ingestion's window).
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Time before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Publish non-persistent messages (delivery mode 1), to see what
    /// persistence costs; the platform always publishes persistent ones.
    #[arg(long)]
    transient: bool,
    /// One message per quote (the version 1 body) instead of one per symbol
    /// shard per tick.
    #[arg(long)]
    single: bool,
}

/// Consumer prefetch of the durable queues (the provider's is 1,024).
const PREFETCH: u16 = 1024;
/// Publishes are spread over ticks of this length, as the synthetic source's.
const TICK: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Counts {
    confirmed: AtomicU64,
    live: AtomicU64,
    durable: AtomicU64,
}

impl BrokerBench {
    pub async fn run(self, config: Config) -> anyhow::Result<()> {
        let url = config
            .common
            .amqp_url
            .context("bench broker needs RabbitMQ: set AMQP_URL (eval \"$(scripts/services.sh)\")")?;
        let prefix = format!("bench.broker.{}", std::process::id());
        let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
        let setup = connection.create_channel().await?;
        let exchange = format!("{prefix}.quotes");
        let options = ExchangeDeclareOptions { auto_delete: true, ..ExchangeDeclareOptions::default() };
        setup.exchange_declare(exchange.as_str().into(), ExchangeKind::Topic, options, FieldTable::default()).await?;
        let durable = [format!("{prefix}.persist"), format!("{prefix}.alerts")];
        for queue in &durable {
            // Auto-delete too, so a run that fails half-way leaves nothing.
            let options = QueueDeclareOptions { durable: true, auto_delete: true, ..QueueDeclareOptions::default() };
            declare_bound(&setup, queue, options, &exchange).await?;
        }
        let live = format!("{prefix}.live");
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        declare_bound(&setup, &live, options, &exchange).await?;
        println!(
            "bench broker: {} quotes/s over {} symbols, {}, {} messages in flight, warm-up {:?}, measuring {:?}",
            self.rate,
            self.symbols,
            if self.single { "one message per quote" } else { "one message per shard per tick" },
            self.in_flight,
            self.warmup,
            self.duration
        );

        let counts = Arc::new(Counts::default());
        let stop = Shutdown::new();
        let mut tasks = Vec::new();
        for queue in &durable {
            let channel = connection.create_channel().await?;
            tasks.push(tokio::spawn(drain(channel, queue.clone(), counts.clone(), stop.clone())));
        }
        let measuring = Arc::new(AtomicBool::new(false));
        let channel = connection.create_channel().await?;
        let latency = tokio::spawn(listen(channel, live.clone(), counts.clone(), measuring.clone(), stop.clone()));
        let publisher = connection.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        let publishing = Shutdown::new();
        let publisher =
            tokio::spawn(publish(publisher, exchange.clone(), self.clone(), counts.clone(), publishing.clone()));

        tokio::time::sleep(self.warmup).await;
        measuring.store(true, Ordering::Relaxed);
        let before = (snapshot(&counts), cpu_ticks("beam.smp"), cpu_ticks_self(), Instant::now());
        tokio::time::sleep(self.duration).await;
        let after = (snapshot(&counts), cpu_ticks("beam.smp"), cpu_ticks_self(), Instant::now());
        // Publishing stops first: the queues (and with them the exchange)
        // go away with their consumers.
        publishing.cancel();
        publisher.await??;
        stop.cancel();
        let histogram = latency.await??;
        for task in tasks {
            task.await??;
        }
        for queue in durable.iter().chain([&live]) {
            let _ = setup.queue_delete(queue.as_str().into(), Default::default()).await;
        }
        let _ = connection.close(200, "done".into()).await;

        let seconds = (after.3 - before.3).as_secs_f64();
        let rate = |i: usize| (after.0[i] - before.0[i]) as f64 / seconds;
        // Clock ticks are 1/100 s (`getconf CLK_TCK`).
        let cpu = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(b, a)| (a - b) as f64 / 100.0 / seconds * 100.0);
        let (confirmed, live_rate, durable_rate) = (rate(0), rate(1), rate(2) / 2.0);
        let ms = |q: f64| super::ms(&histogram, q);
        let beam_cpu = cpu(before.1, after.1);
        let own_cpu = cpu(before.2, after.2);
        println!("confirmed publishes/s: {confirmed:.0}");
        println!("live queue deliveries/s: {live_rate:.0}; each durable queue: {durable_rate:.0}/s");
        println!(
            "latency publish → live receipt (ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            histogram.max() as f64 / 1000.0
        );
        println!(
            "CPU: RabbitMQ {} %, this process {} %",
            beam_cpu.map_or("?".into(), |c| format!("{c:.0}")),
            own_cpu.map_or("?".into(), |c| format!("{c:.0}"))
        );
        println!(
            "{}",
            serde_json::json!({
                "bench": "broker", "rate": self.rate, "symbols": self.symbols, "in_flight": self.in_flight,
                "persistent": !self.transient, "batched": !self.single,
                "seconds": seconds, "confirmed_per_s": confirmed.round(), "live_per_s": live_rate.round(),
                "durable_per_s": durable_rate.round(), "p50_ms": ms(0.5), "p99_ms": ms(0.99),
                "rabbitmq_cpu_pct": beam_cpu.map(f64::round), "bench_cpu_pct": own_cpu.map(f64::round),
            })
        );
        Ok(())
    }
}

async fn declare_bound(
    channel: &Channel,
    queue: &str,
    options: QueueDeclareOptions,
    exchange: &str,
) -> lapin::Result<()> {
    channel.queue_declare(queue.into(), options, FieldTable::default()).await?;
    channel.queue_bind(queue.into(), exchange.into(), "quote.#".into(), Default::default(), FieldTable::default()).await
}

/// Publishes `rate` quotes/s round-robin over the symbols, each persistent,
/// keeping at most `in_flight` unconfirmed.
async fn publish(
    channel: Channel,
    exchange: String,
    bench: BrokerBench,
    counts: Arc<Counts>,
    stop: Shutdown,
) -> anyhow::Result<()> {
    let symbols: Vec<Symbol> =
        UNIVERSE.iter().take(bench.symbols.max(1)).map(|(s, _)| Symbol::parse(s)).collect::<Result<_, _>>()?;
    let mut confirms = FuturesUnordered::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut owed, mut next) = (0.0, 0);
    let properties = BasicProperties::default().with_delivery_mode(if bench.transient { 1 } else { 2 });
    while !stop.is_cancelled() {
        ticker.tick().await;
        owed += bench.rate * TICK.as_secs_f64();
        let mut tick = Vec::new();
        while owed >= 1.0 {
            owed -= 1.0;
            let now = Utc::now();
            tick.push(Quote {
                symbol: symbols[next].clone(),
                price: 100.0,
                ts: now,
                volume: Some(1.0),
                source: "bench".into(),
                ingest_id: format!("bench-{}-{}", now.timestamp_micros(), tick.len()),
                ingested_at: now,
            });
            next = (next + 1) % symbols.len();
        }
        for (routing_key, body, quotes) in messages(tick, bench.single) {
            while confirms.len() >= bench.in_flight {
                confirmed(confirms.next().await, &counts)?;
            }
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties.clone(),
                )
                .await?;
            confirms.push(confirm.map(move |result| (result, quotes)));
        }
        while let Some(Some(confirm)) = confirms.next().now_or_never() {
            confirmed(Some(confirm), &counts)?;
        }
    }
    while let Some(confirm) = confirms.next().await {
        confirmed(Some(confirm), &counts)?;
    }
    Ok(())
}

/// A tick's quotes as messages (routing key, body, quotes in it): one per
/// symbol shard, as ingestion publishes them, or one per quote.
fn messages(tick: Vec<Quote>, single: bool) -> Vec<(String, Bytes, u64)> {
    if single {
        return tick.into_iter().map(|quote| (quote.symbol.routing_key(), quote.encode(), 1)).collect();
    }
    let mut shards: BTreeMap<u16, Vec<Quote>> = BTreeMap::new();
    for quote in tick {
        shards.entry(shard(&quote.symbol)).or_default().push(quote);
    }
    shards
        .into_iter()
        .map(|(shard, quotes)| (shard_routing_key(shard), encode_batch(&quotes), quotes.len() as u64))
        .collect()
}

fn confirmed(confirm: Option<(lapin::Result<lapin::Confirmation>, u64)>, counts: &Counts) -> anyhow::Result<()> {
    if let Some((confirm, quotes)) = confirm {
        anyhow::ensure!(confirm?.is_ack(), "RabbitMQ nacked a publish");
        counts.confirmed.fetch_add(quotes, Ordering::Relaxed);
    }
    Ok(())
}

/// Quotes in a message body.
fn quotes_in(body: &[u8]) -> anyhow::Result<Vec<Quote>> {
    Ok(decode_message(body)?.quotes)
}

/// Consumes a durable queue, acking what is ready with one multiple-ack.
async fn drain(channel: Channel, queue: String, counts: Arc<Counts>, stop: Shutdown) -> anyhow::Result<()> {
    channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            delivery = consumer.next() => match delivery {
                Some(delivery) => delivery?,
                None => return Ok(()),
            },
        };
        let mut quotes = quotes_in(&first.data)?.len();
        let mut last = first;
        while let Some(Some(Ok(delivery))) = consumer.next().now_or_never() {
            quotes += quotes_in(&delivery.data)?.len();
            last = delivery;
        }
        last.acker.ack(BasicAckOptions { multiple: true }).await?;
        counts.durable.fetch_add(quotes as u64, Ordering::Relaxed);
    }
}

/// Consumes the live queue without acks; returns publish → receipt latency
/// (µs) from when `measuring` is set.
async fn listen(
    channel: Channel,
    queue: String,
    counts: Arc<Counts>,
    measuring: Arc<AtomicBool>,
    stop: Shutdown,
) -> anyhow::Result<Histogram<u64>> {
    let options = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
    let mut consumer = channel.basic_consume(queue.as_str().into(), "".into(), options, FieldTable::default()).await?;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    loop {
        let delivery = tokio::select! {
            _ = stop.cancelled() => return Ok(latency),
            delivery = consumer.next() => match delivery {
                Some(delivery) => delivery?,
                None => return Ok(latency),
            },
        };
        let quotes = quotes_in(&delivery.data)?;
        counts.live.fetch_add(quotes.len() as u64, Ordering::Relaxed);
        if !measuring.load(Ordering::Relaxed) {
            continue;
        }
        let now = Utc::now();
        for quote in quotes {
            let us = (now - quote.ingested_at).num_microseconds().unwrap_or(0).max(1) as u64;
            latency.record(us.min(60_000_000))?;
        }
    }
}

fn snapshot(counts: &Counts) -> [u64; 3] {
    [
        counts.confirmed.load(Ordering::Relaxed),
        counts.live.load(Ordering::Relaxed),
        counts.durable.load(Ordering::Relaxed),
    ]
}

/// User + system CPU clock ticks of the first process named `name`.
fn cpu_ticks(name: &str) -> Option<u64> {
    let pid = std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        (comm.trim() == name).then(|| entry.file_name().to_string_lossy().into_owned())
    })?;
    ticks(&pid)
}

fn cpu_ticks_self() -> Option<u64> {
    ticks("self")
}

fn ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}
