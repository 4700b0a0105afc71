//! Smoke runs of `lizards bench`: each benchmark starts, measures with small
//! numbers, prints its figures and exits by itself. Speed is not checked
//! here (docs/benchmarks.md has the measured runs).

use std::{process::Command, sync::Mutex};

/// Benchmarks run one at a time: each loads both cores, and two at once
/// starve each other past their deadlines.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn bench_gateway_prints_its_figures_and_exits() {
    let _serial = serial();
    let output = Command::new(env!("CARGO_BIN_EXE_lizards"))
        .args(["bench", "gateway", "--rounds", "1", "--duration", "300ms", "--warmup", "100ms"])
        .args(["--connections", "2", "--checks", "20"])
        .output()
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    for line in ["provider direct", "gateway, rate-limited, cache bypassed", "cache hits", "rate-limit check"] {
        assert!(stdout.contains(line), "'{line}' missing from:\n{stdout}");
    }
    assert!(stdout.contains("\"bench\":\"gateway\""), "the JSON summary line:\n{stdout}");
}

#[test]
fn bench_alerts_prints_its_figures_and_exits() {
    let _serial = serial();
    let output = Command::new(env!("CARGO_BIN_EXE_lizards"))
        .args(["bench", "alerts", "--quotes", "200", "--symbols", "2", "--rules-per-symbol", "2", "--crossings", "5"])
        .output()
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    for line in
        ["no rules: evaluated", "quiet: evaluated", "flapping: evaluated", "crossing quote published → alert frame"]
    {
        assert!(stdout.contains(line), "'{line}' missing from:\n{stdout}");
    }
    assert!(stdout.contains("\"bench\":\"alerts\""), "the JSON summary line:\n{stdout}");
}

#[test]
fn bench_conns_holds_connections_from_client_processes_on_a_child_provider() {
    let _serial = serial();
    let output = Command::new(env!("CARGO_BIN_EXE_lizards"))
        .args(["bench", "conns", "--connections", "50", "--settle", "300ms", "--client-processes", "2"])
        .output()
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().find(|l| l.contains("\"bench\":\"conns\"")).expect("the JSON summary line");
    let summary: serde_json::Value = serde_json::from_str(line).unwrap();
    // The provider holds one descriptor per connection (and the warm-up's).
    let provider = &summary["per_provider"][0];
    assert!(provider["open_files"].as_u64().unwrap() > 50, "{summary}");
    assert!(provider["bytes_per_connection"].as_f64().is_some(), "{summary}");
}

#[test]
fn bench_ws_measures_lizards_and_the_plain_reference_and_exits() {
    let _serial = serial();
    let output = Command::new(env!("CARGO_BIN_EXE_lizards"))
        .args(["bench", "ws", "--clients", "5", "--symbols", "2", "--rate", "100"])
        .args(["--warmup", "300ms", "--duration", "700ms", "--reference"])
        .output()
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().find(|l| l.contains("\"bench\":\"ws\"")).expect("the JSON summary line");
    let summary: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(summary["connected"], 5, "{summary}");
    // Both servers delivered something, so the ratio means something.
    assert!(summary["updates_per_s"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(summary["reference"]["updates_per_s"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(summary["ratio"].as_f64().is_some(), "{summary}");
}

#[test]
fn bench_persist_writes_to_postgres_next_to_psql_copy_and_exits() {
    let Some(database) = lizards_testkit::real_url("DATABASE_URL") else { return };
    let _serial = serial();
    let output = Command::new(env!("CARGO_BIN_EXE_lizards"))
        .args(["bench", "persist", "--rows", "2000", "--batch", "500"])
        .env("DATABASE_URL", database)
        .output()
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().find(|l| l.contains("\"bench\":\"persist\"")).expect("the JSON summary line");
    let summary: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(summary["rows"], 2000, "{summary}");
    assert!(summary["store_quotes_per_s"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(summary["copy_quotes_per_s"].as_f64().unwrap() > 0.0, "{summary}");
}

#[test]
fn bench_broker_measures_plain_rabbitmq_and_exits() {
    let Some(amqp) = lizards_testkit::real_url("AMQP_URL") else { return };
    let _serial = serial();
    let output = Command::new(env!("CARGO_BIN_EXE_lizards"))
        .args(["bench", "broker", "--rate", "200", "--warmup", "300ms", "--duration", "700ms"])
        .env("AMQP_URL", amqp)
        .output()
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().find(|l| l.contains("\"bench\":\"broker\"")).expect("the JSON summary line");
    let summary: serde_json::Value = serde_json::from_str(line).unwrap();
    for figure in ["confirmed_per_s", "live_per_s", "durable_per_s"] {
        assert!(summary[figure].as_f64().unwrap() > 0.0, "{figure}: {summary}");
    }
}
