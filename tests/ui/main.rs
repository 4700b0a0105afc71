//! The web UI in a real browser: headless Chromium driven over WebDriver
//! (Debian's chromium and chromedriver, installed by scripts/browser.sh)
//! against the whole platform on free ports, as a person would use it.
//! Screenshots are kept under `target/tmp/ui-artifacts/`; with
//! `LIZARDS_UPDATE_SCREENSHOTS=1` the signed-in page is also written to
//! `docs/screenshots/` (desktop and phone), as shown in the README.

// The e2e suite's platform helpers; this suite uses only some of them.
#[allow(dead_code)]
#[path = "../e2e/helpers.rs"]
mod helpers;

use std::{path::PathBuf, process::Stdio, time::Duration};

use fantoccini::{Client, ClientBuilder, Locator};
use helpers::spawn_app;
use tokio::{process::Child, time::Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(15);

/// A chromedriver process and a browser session on it; both end on drop.
struct Browser {
    client: Client,
    _driver: Child,
    _profile: tempfile::TempDir,
}

/// Starts chromedriver and a headless Chromium, or `None` (skip) when they
/// are not installed; under CI a missing browser fails the test.
async fn browser() -> Option<Browser> {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        assert!(std::env::var_os("CI").is_none(), "{CHROMEDRIVER} missing: run scripts/browser.sh");
        eprintln!("skipped: {CHROMEDRIVER} missing (scripts/browser.sh installs it)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().expect("profile dir");
    let mut capabilities = serde_json::Map::new();
    // The page's console (errors, failed loads), read by `console_errors`.
    capabilities.insert("goog:loggingPrefs".into(), serde_json::json!({ "browser": "ALL" }));
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-quic", "--no-first-run", "--window-size=1360,1000",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + WAIT;
    let client = loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => break client,
            // chromedriver takes a moment to listen.
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => panic!("no WebDriver session on {url}: {error}"),
        }
    };
    Some(Browser { client, _driver: driver, _profile: profile })
}

/// Polls `read` until `done` holds for its value, failing after [`WAIT`].
async fn wait_until<T: std::fmt::Debug, F, Fut>(what: &str, mut read: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let value = read().await;
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: still {value:?} after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the first element matching `css`, or `None`.
async fn text(client: &Client, css: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn screenshot(client: &Client, name: &str) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), &png).expect("screenshot written");
    if std::env::var_os("LIZARDS_UPDATE_SCREENSHOTS").is_some() && name.starts_with("docs-") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&docs).expect("docs/screenshots");
        std::fs::write(docs.join(format!("{}.png", &name[5..])), png).expect("docs screenshot written");
    }
}

/// Chromium's console since the last call (ChromeDriver's log endpoint
/// hands each entry out once): `(level, message)`.
async fn console(client: &Client) -> Vec<(String, String)> {
    #[derive(Debug)]
    struct BrowserLog;
    impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
        fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
            base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
        }
        fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
            (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
        }
    }
    let entries = client.issue_cmd(BrowserLog).await.expect("browser log");
    let entries = entries.as_array().expect("log entries").iter();
    entries.map(|e| (e["level"].as_str().unwrap_or("").into(), e["message"].as_str().unwrap_or("").into())).collect()
}

async fn console_errors(client: &Client) -> Vec<String> {
    console(client).await.into_iter().filter(|(level, _)| level == "SEVERE").map(|(_, message)| message).collect()
}

/// Chromium logs every 4xx answer as a failed load: after a deliberately
/// refused request, its status must be all the console has.
async fn expected_console_errors(client: &Client, path: &str, status: u16) {
    let errors = console_errors(client).await;
    let expected = |e: &String| e.contains(path) && e.contains(&format!(" {status} "));
    assert!(!errors.is_empty() && errors.iter().all(expected), "{errors:?}");
}

async fn click(client: &Client, css: &str) {
    client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.expect("clicked");
}

async fn fill(client: &Client, css: &str, value: &str) {
    let input = client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    input.clear().await.expect("cleared");
    input.send_keys(value).await.expect("typed");
}

/// Counts the chart's pixels drawn in the CSS colour `variable` (the live
/// line is `--accent`, candles `--up`/`--down`).
async fn chart_pixels(client: &Client, variables: &[&str]) -> i64 {
    let script = r#"
        const css = getComputedStyle(document.documentElement);
        const rgb = arguments[0].map((v) => {
            const hex = css.getPropertyValue(v).trim();
            return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
        });
        const canvas = document.getElementById("chart");
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < data.length; i += 4)
            if (rgb.some(([r, g, b]) => data[i] === r && data[i + 1] === g && data[i + 2] === b)) n++;
        return n;"#;
    client.execute(script, vec![serde_json::json!(variables)]).await.expect("pixels counted").as_i64().unwrap_or(0)
}

/// Opens the page with `symbols` as the saved watchlist and waits until
/// it streams.
async fn open(client: &Client, app: &helpers::App, symbols: &[&str]) {
    client.goto(&app.url("/")).await.expect("page opens");
    let saved = serde_json::to_string(symbols).unwrap();
    client
        .execute("localStorage.clear(); localStorage.setItem('lizards.watchlist', arguments[0])", vec![saved.into()])
        .await
        .expect("storage");
    client.refresh().await.expect("reload");
    wait_until("connection status", || text(client, "#status"), |s| s.as_deref() == Some("live")).await;
}

fn shown(value: &Option<String>) -> bool {
    value.as_ref().is_some_and(|v| !v.is_empty() && v != "—")
}

async fn watch(client: &Client, symbol: &str) {
    fill(client, "#symbol-input", symbol).await;
    click(client, "#add-form button[type=submit]").await;
}

/// Ingests a quote `pct` % above `symbol`'s latest price, as the market
/// (an admin through the gateway's `/ingest`).
async fn move_up(app: &helpers::App, symbol: &str, pct: f64) {
    let latest = app.http.get(app.url(&format!("/quotes/{symbol}"))).send().await.expect("latest price");
    let latest: serde_json::Value = latest.json().await.expect("a JSON body");
    let price = latest["price"].as_f64().expect("a price") * (1.0 + pct / 100.0);
    let quote = serde_json::json!({
        "symbol": symbol, "price": price, "source": "manual",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    let response = app.http.post(app.url("/ingest")).bearer_auth(app.admin_token().await).json(&quote).send().await;
    let response = response.expect("POST /ingest answers");
    assert!(response.status().is_success(), "ingest: {}", response.status());
}

/// Asserts nothing on the page is wider than a 390 px phone.
async fn fits_a_phone(client: &Client) {
    client.set_window_size(390, 844).await.expect("resized");
    let overflow = client
        .execute("return document.documentElement.scrollWidth - window.innerWidth", vec![])
        .await
        .expect("measured");
    assert!(overflow.as_i64().is_some_and(|px| px <= 0), "{overflow} px wider than the phone");
}

#[tokio::test]
async fn a_watched_symbol_streams_live_prices_and_an_unknown_one_shows_the_error() {
    let Some(browser) = browser().await else { return };
    let app = spawn_app().await;
    let client = &browser.client;
    open(client, &app, &[]).await;

    watch(client, "aapl").await;
    let price = "tr[data-symbol='AAPL'] .price";
    let first = wait_until("AAPL's first price", || text(client, price), shown).await;
    wait_until("AAPL's price to change", || text(client, price), |p| *p != first).await;
    let change = text(client, "tr[data-symbol='AAPL'] .change").await.expect("change column");
    assert!(change.ends_with('%'), "{change}");

    // The first symbol is charted: a live line, then candles for 1H.
    assert_eq!(text(client, "#chart-title").await.as_deref(), Some("AAPL"));
    wait_until("the live line", || chart_pixels(client, &["--accent"]), |n| *n > 50).await;
    click(client, "#ranges button[data-range='1h']").await;
    wait_until("1-minute candles", || chart_pixels(client, &["--up", "--down"]), |n| *n > 10).await;
    let label = client.find(Locator::Css("#chart")).await.unwrap().attr("aria-label").await.unwrap();
    assert_eq!(label.as_deref(), Some("AAPL price chart, last hour, 1-minute candles"));
    screenshot(client, "watchlist").await;

    watch(client, "XYZ123").await;
    let error = wait_until("the error line", || text(client, "#error"), shown).await;
    assert_eq!(error.as_deref(), Some("Invalid stock symbol: XYZ123"));
    wait_until("XYZ123's row to go", || text(client, "tr[data-symbol='XYZ123'] .sym"), Option::is_none).await;
    screenshot(client, "unknown-symbol").await;

    fits_a_phone(client).await;
    screenshot(client, "watchlist-phone").await;
    assert_eq!(console_errors(client).await, Vec::<String>::new(), "console errors");

    browser.client.close().await.expect("browser closes");
    app.stop().await;
}

#[tokio::test]
async fn a_user_registers_creates_an_alert_rule_sees_it_fire_and_buys_a_position() {
    let Some(browser) = browser().await else { return };
    let app = spawn_app().await;
    let client = &browser.client;
    open(client, &app, &["AAPL", "MSFT", "BTC-USD", "ETH-USD"]).await;

    // A short password is refused by the server and the page says so.
    fill(client, "#auth-email", "ada@example.com").await;
    fill(client, "#auth-password", "short").await;
    client.execute("document.getElementById('auth-password').removeAttribute('minlength')", vec![]).await.unwrap();
    click(client, "#auth-form button[value=register]").await;
    let refused = wait_until("the password error", || text(client, "#auth-error"), shown).await.unwrap();
    assert!(refused.contains("password"), "{refused}");
    expected_console_errors(client, "/auth/register", 422).await;

    fill(client, "#auth-password", "correct horse battery").await;
    click(client, "#auth-form button[value=register]").await;
    wait_until("signed in", || text(client, "#who-email"), |e| e.as_deref() == Some("ada@example.com")).await;

    // An alert rule, a market move that fires it, the alert pushed to the
    // feed. (Waiting for the synthetic walk to move up instead failed about
    // once in ten runs: it may stay below its start for the whole wait.)
    client.find(Locator::Css("#rule-kind")).await.unwrap().select_by_value("change_pct").await.unwrap();
    fill(client, "#rule-symbol", "msft").await;
    fill(client, "#rule-threshold", "1").await;
    click(client, "#rule-form button[type=submit]").await;
    let rule = wait_until("the rule listed", || text(client, "#rules li span"), shown).await;
    assert_eq!(rule.as_deref(), Some("MSFT moves +1 %"));
    move_up(&app, "MSFT", 5.0).await;
    let alert = wait_until("the alert in the feed", || text(client, "#feed li"), shown).await.unwrap();
    assert!(alert.contains("MSFT"), "{alert}");

    // Cash, then a buy: the position is listed with its value.
    fill(client, "#deposit-amount", "10000").await;
    click(client, "#deposit-form button").await;
    wait_until("the cash", || text(client, "#cash"), |c| c.as_deref() == Some("$10,000.00")).await;
    fill(client, "#order-symbol", "aapl").await;
    fill(client, "#order-quantity", "2").await;
    click(client, "#order-form button[value=buy]").await;
    let position = "#positions tr[data-symbol='AAPL'] td";
    let quantity = wait_until("the AAPL position", || text(client, position), shown).await;
    assert_eq!(quantity.as_deref(), Some("2"));
    let bought = text(client, "#portfolio-message").await.unwrap();
    assert!(bought.starts_with("Bought 2 AAPL at $"), "{bought}");
    assert_eq!(text(client, "#portfolio-error").await.as_deref(), Some(""), "no error shown");
    assert_eq!(console_errors(client).await, Vec::<String>::new(), "console errors");

    client.set_window_size(1360, 1000).await.expect("resized");
    screenshot(client, "docs-desktop").await;

    // Selling more than is held: the server's reason, and nothing changes.
    fill(client, "#order-quantity", "5").await;
    click(client, "#order-form button[value=sell]").await;
    let refused = wait_until("the order error", || text(client, "#portfolio-error"), shown).await.unwrap();
    assert!(refused.to_lowercase().contains("insufficient"), "{refused}");
    assert_eq!(text(client, position).await.as_deref(), Some("2"));
    expected_console_errors(client, "/portfolio/orders", 422).await;

    // Deleting the rule empties the list.
    click(client, "#rules li button").await;
    wait_until("the rule gone", || text(client, "#rules li span"), Option::is_none).await;

    fits_a_phone(client).await;
    screenshot(client, "docs-phone").await;

    // Signing out hides the account panels again.
    click(client, "#sign-out").await;
    wait_until("signed out", || text(client, "#auth-title"), |t| t.as_deref() == Some("Sign in")).await;
    assert_eq!(text(client, "#portfolio-title").await.as_deref(), Some(""), "the portfolio is hidden");

    // A token the server refuses (expired, revoked) signs the page out.
    // Set from a page of the same origin without the app, so that nothing
    // of the old page still in flight sees the forged token first.
    client.goto(&app.url("/healthz")).await.expect("a plain page");
    client.execute("localStorage.setItem('lizards.token', 'forged')", vec![]).await.expect("storage");
    client.goto(&app.url("/")).await.expect("page opens");
    let expired = wait_until("the expiry message", || text(client, "#auth-error"), shown).await.unwrap();
    assert_eq!(expired, "Your sign-in has expired; please sign in again.");
    expected_console_errors(client, "/users/me", 401).await;

    browser.client.close().await.expect("browser closes");
    app.stop().await;
}
