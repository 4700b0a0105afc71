//! `lizards client` against the whole platform on free ports: the binary
//! runs as a person would run it, and its output and exit status are read.

// The e2e suite's platform helpers; this suite uses only some of them.
#[allow(dead_code)]
#[path = "../e2e/helpers.rs"]
mod helpers;

use std::{process::Stdio, time::Duration};

use helpers::{App, WAIT, spawn_app, spawn_app_with};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::Command,
    time::Instant,
};

/// The client binary pointed at one gateway, with its own config directory.
struct Terminal {
    url: String,
    config: tempfile::TempDir,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Terminal {
    fn new(app: &App) -> Terminal {
        Terminal { url: app.url(""), config: tempfile::tempdir().expect("config dir") }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lizards"));
        command
            .arg("client")
            .args(["--url", &self.url])
            .args(args)
            .env("LIZARDS_CONFIG_DIR", self.config.path())
            .env_remove("LIZARDS_PASSWORD")
            .kill_on_drop(true);
        command
    }

    async fn run_with_input(&self, args: &[&str], input: &str) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("client starts");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).await.expect("input written");
        drop(stdin);
        let output = tokio::time::timeout(WAIT, child.wait_with_output()).await.expect("client ends in time").unwrap();
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into(),
            stderr: String::from_utf8_lossy(&output.stderr).into(),
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with_input(args, "").await
    }

    /// Runs a command that must succeed; its output.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(run.code, Some(0), "{args:?} failed:\n{}{}", run.stdout, run.stderr);
        run.stdout
    }

    /// Runs a command that must fail with `code`; its error output.
    async fn fails(&self, code: i32, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(run.code, Some(code), "{args:?}:\n{}{}", run.stdout, run.stderr);
        run.stderr
    }

    /// Runs `args` until it succeeds (e.g. until a price is known).
    async fn eventually(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let run = self.run(args).await;
            if run.code == Some(0) {
                return run.stdout;
            }
            assert!(Instant::now() < deadline, "{args:?} kept failing: {}", run.stderr);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The price lines `watch` printed for `symbol` (not on a terminal, one
/// line per update: time, symbol, price, arrow, change).
fn prices(out: &str, symbol: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&symbol)).then(|| fields[2].parse().expect("a price"))
        })
        .collect()
}

#[tokio::test]
async fn quote_mean_and_history_print_stored_prices_and_name_what_is_wrong() {
    let app = spawn_app().await;
    let terminal = Terminal::new(&app);

    let quote = terminal.eventually(&["quote", "aapl", "MSFT"]).await;
    let lines: Vec<&str> = quote.lines().collect();
    assert_eq!(lines.len(), 3, "{quote}");
    assert!(lines[0].starts_with("SYMBOL") && lines[1].starts_with("AAPL") && lines[2].starts_with("MSFT"), "{quote}");
    assert!(lines[1].contains("synthetic"), "{quote}");

    // Three prices stored, asked of the provider itself: the gateway would
    // cache a shorter answer for 10 s.
    let provider = app.platform.as_ref().unwrap().provider.expect("provider runs");
    let stored = format!("http://{provider}/quotes/AAPL/mean?last=3");
    lizards_testkit::eventually("three AAPL prices are stored", || async {
        app.http.get(&stored).send().await.unwrap().json::<serde_json::Value>().await.unwrap()["count"] == 3
    })
    .await;
    let mean = terminal.ok(&["mean", "AAPL", "--last", "3"]).await;
    assert!(mean.starts_with("AAPL: mean of the last 3 prices is "), "{mean}");
    let history = terminal.ok(&["history", "AAPL", "--limit", "3"]).await;
    assert_eq!(history.lines().count(), 4, "{history}");
    let candles = terminal.ok(&["history", "AAPL", "--interval", "1m"]).await;
    assert!(candles.starts_with("START") && candles.lines().count() >= 2, "{candles}");

    // A symbol with no quote: the table for the others, then the reason.
    let run = terminal.run(&["quote", "AAPL", "XYZ123"]).await;
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.contains("AAPL"), "{}", run.stdout);
    assert_eq!(run.stderr, "error: 404 Not Found: no quote for XYZ123\n");
    // Malformed input never reaches the server.
    let bad = terminal.fails(2, &["quote", "bad!"]).await;
    assert!(bad.contains("Invalid stock symbol: bad!"), "{bad}");
    let bad = terminal.fails(2, &["history", "AAPL", "--interval", "2m"]).await;
    assert!(bad.contains("'2m' is not a candle interval"), "{bad}");
    let bad = terminal.fails(2, &["mean", "AAPL", "--last", "many"]).await;
    assert!(bad.contains("invalid value 'many'"), "{bad}");
    let bad = terminal.fails(1, &["mean", "AAPL", "--last", "100000"]).await;
    assert!(bad.starts_with("error: 400 Bad Request: "), "{bad}");
    app.stop().await;
}

#[tokio::test]
async fn a_person_registers_deposits_buys_and_sets_alerts_from_the_terminal() {
    let app = spawn_app().await;
    let terminal = Terminal::new(&app);
    terminal.eventually(&["quote", "AAPL"]).await;

    let not_yet = terminal.fails(1, &["portfolio"]).await;
    assert!(not_yet.contains("not signed in") && not_yet.contains("lizards client login"), "{not_yet}");
    let short = terminal.fails(1, &["register", "--email", "ada@example.com", "--password", "short"]).await;
    assert_eq!(short, "error: 422 Unprocessable Entity: 'password': must be at least 8 characters\n");

    let registered = terminal.ok(&["register", "--email", "Ada@Example.com", "--password", "correct horse"]).await;
    assert!(registered.starts_with("Registered ada@example.com.\nSigned in as ada@example.com"), "{registered}");
    let saved = terminal.config.path().join("credentials.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&saved).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the token is readable by its owner only");
    let again = terminal.fails(1, &["register", "--email", "ada@example.com", "--password", "correct horse"]).await;
    assert!(again.starts_with("error: 409 Conflict: "), "{again}");
    let wrong = terminal.fails(1, &["login", "--email", "ada@example.com", "--password", "wrong horse"]).await;
    assert!(wrong.starts_with("error: 401 Unauthorized: "), "{wrong}");

    let deposited = terminal.ok(&["portfolio", "deposit", "1000"]).await;
    assert_eq!(deposited, "Deposited 1000 USD; cash is now 1000.00 USD.\n");
    let bought = terminal.ok(&["portfolio", "buy", "aapl", "2"]).await;
    assert!(bought.starts_with("Bought 2 AAPL at "), "{bought}");
    let refused = terminal.fails(1, &["portfolio", "sell", "AAPL", "5"]).await;
    assert!(refused.contains("insufficient quantity: selling 5 but holding 2"), "{refused}");
    let refused = terminal.fails(1, &["portfolio", "buy", "AAPL", "lots"]).await;
    assert!(refused.starts_with("error: 422 Unprocessable Entity: 'quantity'"), "{refused}");
    let portfolio = terminal.ok(&["portfolio"]).await;
    let position = portfolio.lines().find(|l| l.starts_with("AAPL")).unwrap_or_else(|| panic!("{portfolio}"));
    assert_eq!(position.split_whitespace().nth(1), Some("2"), "{portfolio}");
    let orders = terminal.ok(&["portfolio", "orders"]).await;
    assert_eq!(orders.lines().filter(|l| l.contains(" buy ")).count(), 1, "{orders}");

    let created = terminal.ok(&["alerts", "add", "MSFT", "change", "-5", "--window", "60"]).await;
    assert!(created.ends_with(": MSFT moves -5 % within 60 min.\n"), "{created}");
    let id = created.trim_start_matches("Created rule ").split(':').next().unwrap().to_string();
    terminal.ok(&["alerts", "add", "portfolio", "change", "10"]).await;
    let refused = terminal.fails(1, &["alerts", "add", "AAPL", "above", "-5"]).await;
    assert!(refused.contains("must be a positive price"), "{refused}");
    let listed = terminal.ok(&["alerts"]).await;
    assert!(listed.contains("MSFT moves -5 % within 60 min") && listed.contains("portfolio moves +10 %"), "{listed}");
    assert!(listed.contains("No alerts yet."), "{listed}");
    terminal.ok(&["alerts", "delete", &id]).await;
    let gone = terminal.fails(1, &["alerts", "delete", &id]).await;
    assert!(gone.starts_with("error: 404 Not Found"), "{gone}");

    // A token the server no longer accepts is named as such.
    let forged = serde_json::json!({"url": terminal.url.trim_end_matches('/'), "email": "ada@example.com", "access_token": "forged"});
    std::fs::write(&saved, forged.to_string()).unwrap();
    let expired = terminal.fails(1, &["alerts"]).await;
    assert!(expired.contains("expired or was revoked"), "{expired}");
    assert_eq!(terminal.ok(&["logout"]).await, "Signed out.\n");
    assert_eq!(terminal.ok(&["logout"]).await, "Not signed in.\n");
    app.stop().await;
}

#[tokio::test]
async fn watch_prints_changing_prices_and_the_errors_of_unknown_symbols() {
    let app = spawn_app().await;
    let terminal = Terminal::new(&app);
    let out = terminal.ok(&["watch", "AAPL", "msft", "XYZ123", "--for", "3s"]).await;
    let aapl = prices(&out, "AAPL");
    assert!(aapl.len() >= 2 && aapl.iter().any(|p| *p != aapl[0]), "AAPL did not change:\n{out}");
    assert!(!prices(&out, "MSFT").is_empty(), "{out}");
    assert!(out.contains("error: Invalid stock symbol: XYZ123"), "{out}");

    let nothing = terminal.fails(1, &["watch", "XYZ123", "--for", "20s"]).await;
    assert!(nothing.ends_with("error: none of the symbols can be watched\n"), "{nothing}");
    app.stop().await;
}

#[tokio::test]
async fn watch_reconnects_when_the_platform_comes_back() {
    let app = spawn_app().await;
    let port = app.gateway.port();
    let terminal = Terminal::new(&app);
    let mut watch = terminal
        .command(&["watch", "AAPL", "--for", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch starts");
    let mut stdout = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(watch.stderr.take().unwrap()).lines();
    let next_price = async |lines: &mut tokio::io::Lines<_>| loop {
        let line: String = lines.next_line().await.expect("readable").expect("watch still running");
        if !prices(&line, "AAPL").is_empty() {
            return line;
        }
    };
    tokio::time::timeout(WAIT, next_price(&mut stdout)).await.expect("a first price");

    app.stop().await;
    let lost = tokio::time::timeout(WAIT, async {
        loop {
            let line = stderr.next_line().await.unwrap().expect("watch still running");
            if line.starts_with("reconnecting in ") {
                return line;
            }
        }
    });
    lost.await.expect("the lost connection is reported");
    let again = spawn_app_with(|config| config.gateway.gateway_port = port).await;
    tokio::time::timeout(WAIT, next_price(&mut stdout)).await.expect("prices again after the restart");
    watch.kill().await.unwrap();
    again.stop().await;
}

#[tokio::test]
async fn the_menu_runs_entries_by_number_and_typed_commands() {
    let app = spawn_app().await;
    let terminal = Terminal::new(&app);
    // Every symbol the menu is asked about has a price first (the synthetic
    // source quotes them one after another; BTC-USD was once still missing).
    terminal.eventually(&["quote", "AAPL", "BTC-USD", "MSFT"]).await;
    let run = terminal.run_with_input(&[], "1\nAAPL BTC-USD\nquote msft\n42\nfrobnicate\n9\nq\n").await;
    assert_eq!(run.code, Some(0), "{}{}", run.stderr, run.stdout);
    assert!(run.stdout.contains("(not signed in)") && run.stdout.contains("1 quote"), "{}", run.stdout);
    for symbol in ["AAPL", "BTC-USD", "MSFT"] {
        assert!(run.stdout.lines().any(|l| l.starts_with(symbol)), "no {symbol} row:\n{}", run.stdout);
    }
    assert!(run.stdout.contains("Not signed in."), "{}", run.stdout);
    assert!(run.stderr.contains("no such entry: 42"), "{}", run.stderr);
    assert!(run.stderr.contains("unrecognized subcommand 'frobnicate'"), "{}", run.stderr);
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_is_named_with_what_to_do() {
    let terminal = Terminal { url: "http://127.0.0.1:1".into(), config: tempfile::tempdir().unwrap() };
    let error = terminal.fails(1, &["quote", "AAPL"]).await;
    assert!(error.starts_with("error: cannot reach Lizards at http://127.0.0.1:1 ("), "{error}");
    assert!(error.contains("`cargo run --release` starts it"), "{error}");
}
