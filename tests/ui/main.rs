//! The web UI in a real browser: headless Chromium driven over WebDriver
//! (Debian's chromium and chromedriver, installed by scripts/browser.sh)
//! against the whole platform on free ports, as a person would use it.
//! Screenshots are kept under `target/tmp/ui-artifacts/`.

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
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-quic", "--no-first-run", "--window-size=1280,900",
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
    std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
}

async fn watch(client: &Client, symbol: &str) {
    let input = client.find(Locator::Css("#symbol-input")).await.expect("symbol input");
    input.send_keys(symbol).await.expect("typed");
    client.find(Locator::Css("#add-form button[type=submit]")).await.expect("button").click().await.expect("clicked");
}

#[tokio::test]
async fn a_watched_symbol_streams_live_prices_and_an_unknown_one_shows_the_error() {
    let Some(browser) = browser().await else { return };
    let app = spawn_app().await;
    let client = &browser.client;
    client.goto(&app.url("/")).await.expect("page opens");
    // Start from an empty watchlist (the page's default has three symbols).
    client.execute("localStorage.setItem('lizards.watchlist', '[]')", vec![]).await.expect("storage");
    client.refresh().await.expect("reload");
    wait_until("connection status", || text(client, "#status"), |s| s.as_deref() == Some("live")).await;

    watch(client, "aapl").await;
    let price = "tr[data-symbol='AAPL'] .price";
    let first =
        wait_until("AAPL's first price", || text(client, price), |p| p.as_ref().is_some_and(|p| p != "—")).await;
    wait_until("AAPL's price to change", || text(client, price), |p| *p != first).await;
    let change = text(client, "tr[data-symbol='AAPL'] .change").await.expect("change column");
    assert!(change.ends_with('%'), "{change}");
    screenshot(client, "watchlist").await;

    watch(client, "XYZ123").await;
    let error =
        wait_until("the error line", || text(client, "#error"), |e| e.as_ref().is_some_and(|e| !e.is_empty())).await;
    assert_eq!(error.as_deref(), Some("Invalid stock symbol: XYZ123"));
    wait_until("XYZ123's row to go", || text(client, "tr[data-symbol='XYZ123'] .sym"), Option::is_none).await;
    screenshot(client, "unknown-symbol").await;

    // A phone-sized window: everything fits its width.
    client.set_window_size(390, 844).await.expect("resized");
    let overflow = client
        .execute("return document.documentElement.scrollWidth - window.innerWidth", vec![])
        .await
        .expect("measured");
    assert!(overflow.as_i64().is_some_and(|px| px <= 0), "{overflow} px wider than the phone");
    screenshot(client, "watchlist-phone").await;

    browser.client.close().await.expect("browser closes");
    app.stop().await;
}
