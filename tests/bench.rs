//! Smoke runs of `lizards bench`: each benchmark starts, measures with small
//! numbers, prints its figures and exits by itself. Speed is not checked
//! here (docs/benchmarks.md has the measured runs).

use std::{process::Command, sync::Mutex};

use serde_json::Value;

/// Benchmarks run one at a time: each loads both cores, and two at once
/// starve each other past their deadlines. (Under nextest, which runs each
/// test in a process of its own, `.config/nextest.toml` does the same.)
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `lizards bench <args>` with extra environment, alone; asserts that
/// it succeeded and returns its output and its JSON summary line.
fn bench(args: &[&str], env: &[(&str, String)]) -> (String, Value) {
    bench_with(args, |command| {
        command.envs(env.iter().map(|(k, v)| (k, v)));
    })
}

/// [`bench`], with the command's environment set by `configure`.
fn bench_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> (String, Value) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut command = Command::new(env!("CARGO_BIN_EXE_lizards"));
    configure(command.arg("bench").args(args));
    let output = command.output().expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "exit {}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let kind = format!("\"bench\":\"{}\"", args[0]);
    let line = stdout.lines().find(|l| l.contains(&kind)).unwrap_or_else(|| panic!("no JSON summary line:\n{stdout}"));
    let summary = serde_json::from_str(line).expect("the summary is JSON");
    (stdout, summary)
}

#[test]
fn bench_gateway_prints_its_figures_and_exits() {
    let (stdout, _) = bench(
        &[
            "gateway",
            "--rounds",
            "1",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--connections",
            "2",
            "--checks",
            "20",
        ],
        &[],
    );
    for line in ["provider direct", "gateway, rate-limited, cache bypassed", "cache hits", "rate-limit check"] {
        assert!(stdout.contains(line), "'{line}' missing from:\n{stdout}");
    }
}

#[test]
fn bench_alerts_prints_its_figures_and_exits() {
    let (stdout, _) =
        bench(&["alerts", "--quotes", "200", "--symbols", "2", "--rules-per-symbol", "2", "--crossings", "5"], &[]);
    for line in
        ["no rules: evaluated", "quiet: evaluated", "flapping: evaluated", "crossing quote published → alert frame"]
    {
        assert!(stdout.contains(line), "'{line}' missing from:\n{stdout}");
    }
}

#[test]
fn bench_conns_holds_connections_from_client_processes_on_a_child_provider() {
    let (_, summary) = bench(&["conns", "--connections", "50", "--settle", "300ms", "--client-processes", "2"], &[]);
    // The provider holds one descriptor per connection (and the warm-up's).
    let provider = &summary["per_provider"][0];
    assert!(provider["open_files"].as_u64().unwrap() > 50, "{summary}");
    assert!(provider["bytes_per_connection"].as_f64().is_some(), "{summary}");
}

#[test]
fn bench_conns_measures_the_plain_server_beside_the_provider() {
    let (_, summary) = bench(&["conns", "--connections", "20", "--settle", "300ms", "--reference"], &[]);
    for server in [&summary["per_provider"][0], &summary["reference"]] {
        assert_eq!(server["alive"], 20, "{summary}");
        assert!(server["open_files"].as_u64().unwrap() > 20, "{summary}");
    }
    assert!(summary["memory_ratio"].as_f64().is_some(), "{summary}");
}

/// `bench ws` with small numbers, both servers.
const WS_SMALL: &[&str] = &[
    "ws",
    "--clients",
    "5",
    "--symbols",
    "2",
    "--rate",
    "100",
    "--warmup",
    "300ms",
    "--duration",
    "700ms",
    "--reference",
];

#[test]
fn bench_ws_measures_lizards_and_the_plain_reference_and_exits() {
    let (_, summary) = bench(WS_SMALL, &[]);
    assert_eq!(summary["connected"], 5, "{summary}");
    // Both servers delivered something, so the ratio means something.
    assert!(summary["updates_per_s"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(summary["reference"]["updates_per_s"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(summary["ratio"].as_f64().is_some(), "{summary}");
}

#[test]
fn bench_ws_pinned_runs_each_server_as_a_child_and_reads_its_cpu() {
    // Clients watch 2 of 4 symbols: each server sends each client its own.
    let (_, summary) = bench(&[WS_SMALL, &["--pinned", "--universe", "4"]].concat(), &[]);
    assert_eq!(summary["universe"], 4, "{summary}");
    for server in ["lizards", "reference"] {
        let figures = &summary[server];
        assert_eq!(figures["connected"], 5, "{summary}");
        assert!(figures["updates_per_s"].as_f64().unwrap() > 0.0, "{summary}");
        assert!(figures["server_cpu_pct"].as_f64().is_some(), "{summary}");
        assert!(figures["idle_cpu_pct"].as_f64().is_some(), "{summary}");
        assert!(figures["server_rss_mib"].as_f64().unwrap() > 0.0, "{summary}");
    }
}

#[test]
fn bench_persist_writes_to_postgres_next_to_psql_copy_and_exits() {
    let Some(database) = lizards_testkit::real_url("DATABASE_URL") else { return };
    let (_, summary) = bench(&["persist", "--rows", "2000", "--batch", "500"], &[("DATABASE_URL", database)]);
    assert_eq!(summary["rows"], 2000, "{summary}");
    assert!(summary["store_quotes_per_s"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(summary["copy_quotes_per_s"].as_f64().unwrap() > 0.0, "{summary}");
}

#[test]
fn bench_broker_measures_plain_rabbitmq_and_exits() {
    let Some(amqp) = lizards_testkit::real_url("AMQP_URL") else { return };
    let (_, summary) =
        bench(&["broker", "--rate", "200", "--warmup", "300ms", "--duration", "700ms"], &[("AMQP_URL", amqp)]);
    for figure in ["confirmed_per_s", "live_per_s", "durable_per_s"] {
        assert!(summary[figure].as_f64().unwrap() > 0.0, "{figure}: {summary}");
    }
}

/// The soak's CI smoke: a minute of the mixed load on small numbers. A
/// minute is too short for the growth verdict (the 30-minute run in
/// docs/benchmarks.md has it); here every part of the load must run and
/// every confirmed marker quote be stored.
#[test]
fn bench_soak_runs_the_mixed_load_and_finds_every_confirmed_quote_stored() {
    let (_, summary) = bench_with(
        &[
            "soak",
            "--duration",
            "60s",
            "--rate",
            "200",
            "--symbols",
            "20",
            "--clients",
            "50",
            "--rest-clients",
            "5",
            "--traders",
            "2",
            "--sample",
            "2s",
        ],
        |command| {
            // The embedded raw store, capped so it fills within seconds: the
            // MongoDB-protocol server CI runs (in Python) serves ~120
            // operations/s, and 200 quotes/s need 400 (docs/testing.md).
            command.env("RAW_CAP", "2000").env_remove("MONGODB_URI");
        },
    );
    assert_eq!(summary["failures"], serde_json::json!([]), "{summary}");
    assert_eq!(summary["growth_judged"], false, "{summary}");
    let markers = &summary["markers"];
    // A marker whose answer was lost (counted refused) may still be stored.
    let (confirmed, stored) = (markers["confirmed"].as_u64().unwrap(), markers["stored"].as_u64().unwrap());
    assert!((confirmed..=confirmed + markers["refused"].as_u64().unwrap()).contains(&stored), "{summary}");
    for counter in
        [&markers["confirmed"], &summary["ws"]["updates"], &summary["rest"]["ok"], &summary["orders"]["placed"]]
    {
        assert!(counter.as_u64().unwrap() > 0, "{summary}");
    }
    assert!(summary["samples"].as_u64().unwrap() >= 30, "{summary}");
}
