//! The ingest API: gRPC `dataprocessor.DataProcessor/ProcessData`
//! over the generated client and its REST twin `POST /ingest` over real
//! HTTP, on the whole service without sources, so every quote on the broker
//! was sent by the test.

use chrono::{DateTime, Duration, SecondsFormat, SubsecRound, Utc};
use lizards_ingestion::ingest::{MAX_CONTENT_BYTES, MAX_ITEMS};
use lizards_shared::Quote;
use reqwest::{StatusCode, header::CONTENT_TYPE};
use serde_json::{Value, json};

use crate::helpers::{INGEST_TOKEN, TestIngestion, authorized, spawn_quiet_ingestion, within};

const PROBLEM_JSON: &str = "application/problem+json";

const PRICE_DETAIL: &str = "price must be finite and greater than zero";
const INVALID_PRICE: &str = "invalid_price (price must be finite and greater than zero)";

/// A source time a minute ago, in milliseconds like a typical client's.
fn recent() -> DateTime<Utc> {
    (Utc::now() - Duration::minutes(1)).trunc_subsecs(3)
}

fn rfc3339(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A quote without timestamp: stamped with the call's time.
fn quote(symbol: &str, price: f64) -> Value {
    json!({"symbol": symbol, "price": price})
}

fn quote_at(symbol: &str, price: f64, ts: DateTime<Utc>) -> Value {
    json!({"symbol": symbol, "price": price, "timestamp": rfc3339(ts)})
}

fn content_type(response: &reqwest::Response) -> String {
    let value = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    value.unwrap_or_default().to_string()
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

fn symbols_and_prices(quotes: &[Quote]) -> Vec<(String, f64)> {
    let mut pairs: Vec<(String, f64)> = quotes.iter().map(|q| (q.symbol.as_str().to_string(), q.price)).collect();
    pairs.sort_by(|a, b| a.partial_cmp(b).expect("prices are numbers"));
    pairs
}

/// `count` valid quotes in one array.
fn array_of(count: usize) -> String {
    let items: Vec<Value> = (0..count).map(|i| quote("AAPL", 100.0 + i as f64)).collect();
    Value::Array(items).to_string()
}

/// A valid single quote padded with spaces to `len` bytes.
fn padded_to(len: usize) -> String {
    let mut content = quote("AAPL", 1.0).to_string();
    content.push_str(&" ".repeat(len - content.len()));
    content
}

/// Content that must be refused or rejected whole, the fragment its
/// message must contain, and the REST status of it.
fn garbage() -> Vec<(String, &'static str, StatusCode)> {
    let future = Utc::now() + Duration::hours(1);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    vec![
        ("not json".to_string(), "content: not JSON (", StatusCode::BAD_REQUEST),
        (r#"{"symbol":"AAPL","price":1"#.to_string(), "content: not JSON (", StatusCode::BAD_REQUEST),
        ("42".to_string(), "content: expected a quote object or an array of quote objects", unprocessable),
        ("[]".to_string(), "content: empty array, send at least one quote", unprocessable),
        ("{}".to_string(), "item 0: invalid_item (symbol: missing)", unprocessable),
        ("[1]".to_string(), "item 0: invalid_item (item: expected an object)", unprocessable),
        (r#"{"symbol":1,"price":1}"#.to_string(), "item 0: invalid_item (symbol: expected a string)", unprocessable),
        (r#"{"symbol":"AAPL"}"#.to_string(), "item 0: invalid_item (price: missing)", unprocessable),
        (r#"{"symbol":"AAPL","price":"abc"}"#.to_string(), "(price: expected a number)", unprocessable),
        (r#"{"symbol":"AAPL","price":"NaN"}"#.to_string(), "(price: expected a number)", unprocessable),
        (quote("AAPL", -1.0).to_string(), "item 0: invalid_price (", unprocessable),
        (quote("AAPL", 0.0).to_string(), "item 0: invalid_price (", unprocessable),
        (
            r#"{"symbol":"AAPL","price":1,"timestamp":"garbage"}"#.to_string(),
            "(timestamp: not RFC 3339)",
            unprocessable,
        ),
        (quote_at("AAPL", 1.0, future).to_string(), "item 0: future_timestamp (", unprocessable),
        (
            quote_at("AAPL", 1.0, "2024-09-14T12:34:56.123Z".parse().expect("a time")).to_string(),
            "too_old",
            unprocessable,
        ),
        (quote("AA PL", 1.0).to_string(), "item 0: invalid_symbol (", unprocessable),
        (r#"{"symbol":"AAPL","price":1,"volume":-5}"#.to_string(), "item 0: invalid_volume (", unprocessable),
        (r#"{"symbol":"AAPL","price":1,"source":"a b"}"#.to_string(), "(source: expected", unprocessable),
        (
            array_of(MAX_ITEMS + 1),
            "content: 10001 items, at most 10000 are accepted per call",
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (padded_to(MAX_CONTENT_BYTES + 1), "at most 4194304 (4 MiB) are accepted", StatusCode::PAYLOAD_TOO_LARGE),
    ]
}

/// What a call answered, the same way for both APIs: the gRPC `status` and
/// `message`, or REST's `status` and `message` (200) or `rejected` and the
/// problem's `detail` (4xx/5xx).
async fn verdict_rest(app: &TestIngestion, content: &str) -> (String, String) {
    let response = app.post_ingest(content.to_string()).await;
    let ok = response.status() == StatusCode::OK;
    let body = json_of(response).await;
    if ok {
        (
            body["status"].as_str().expect("a status").to_string(),
            body["message"].as_str().expect("a message").to_string(),
        )
    } else {
        ("rejected".to_string(), body["detail"].as_str().expect("a problem detail").to_string())
    }
}

async fn verdict_grpc(app: &TestIngestion, content: &str) -> (String, String) {
    let response = app.process_data(content).await;
    (response.status, response.message)
}

#[tokio::test]
async fn grpc_single_quote_is_published_with_its_price_source_and_timestamp() {
    let app = spawn_quiet_ingestion().await;
    let mut observer = app.observe_quotes().await;
    let ts = recent();
    let content =
        json!({"symbol": "aapl", "price": 150.23, "timestamp": rfc3339(ts), "source": "seed-client", "volume": 1200});

    let response = app.process_data(&content.to_string()).await;
    assert_eq!((response.status.as_str(), response.message.as_str()), ("ok", "accepted 1, rejected 0"));

    let quotes = app.published_before_fence(observer.as_mut()).await;
    assert_eq!(quotes.len(), 1, "{quotes:?}");
    let q = &quotes[0];
    assert_eq!(
        (q.symbol.as_str(), q.price, q.ts, q.volume, q.source.as_str()),
        ("AAPL", 150.23, ts, Some(1200.0), "seed-client")
    );
}

#[tokio::test]
async fn grpc_quote_without_source_or_timestamp_is_manual_and_stamped_with_the_call_time() {
    let app = spawn_quiet_ingestion().await;
    let mut observer = app.observe_quotes().await;
    let before = Utc::now().trunc_subsecs(6);
    let response = app.process_data(&quote("MSFT", 410.5).to_string()).await;
    let after = Utc::now();
    assert_eq!(response.status, "ok", "{}", response.message);

    let quotes = app.published_before_fence(observer.as_mut()).await;
    assert_eq!(quotes.len(), 1, "{quotes:?}");
    let q = &quotes[0];
    assert_eq!((q.symbol.as_str(), q.price, q.source.as_str(), q.volume), ("MSFT", 410.5, "manual", None));
    assert!(before <= q.ts && q.ts <= after, "{} is not between {before} and {after}", q.ts);
}

#[tokio::test]
async fn grpc_array_of_three_is_accepted_with_the_counts_in_the_message() {
    let app = spawn_quiet_ingestion().await;
    let mut observer = app.observe_quotes().await;
    let content = json!([quote("AAPL", 1.5), quote("MSFT", 2.5), quote("BTC-USD", 3.5)]).to_string();

    let response = app.process_data(&content).await;
    assert_eq!((response.status.as_str(), response.message.as_str()), ("ok", "accepted 3, rejected 0"));
    let quotes = app.published_before_fence(observer.as_mut()).await;
    assert_eq!(
        symbols_and_prices(&quotes),
        vec![("AAPL".to_string(), 1.5), ("BTC-USD".to_string(), 3.5), ("MSFT".to_string(), 2.5)]
    );
}

#[tokio::test]
async fn grpc_ten_thousand_quotes_in_one_call_are_all_accepted() {
    let app = spawn_quiet_ingestion().await;
    let mut observer = app.observe_quotes().await;
    let items: Vec<Value> = (0..MAX_ITEMS).map(|i| quote(&format!("S{i}"), 1.0)).collect();

    let response = app.process_data(&Value::Array(items).to_string()).await;
    assert_eq!((response.status.as_str(), response.message.as_str()), ("ok", "accepted 10000, rejected 0"));
    assert_eq!(app.published_before_fence(observer.as_mut()).await.len(), MAX_ITEMS);
}

#[tokio::test]
async fn grpc_garbage_is_rejected_naming_the_problem_and_nothing_is_published() {
    let app = spawn_quiet_ingestion().await;
    let mut observer = app.observe_quotes().await;
    for (content, expected, _) in garbage() {
        let response = app.process_data(&content).await;
        let shown = &content[..content.len().min(80)];
        assert_eq!(response.status, "rejected", "{shown}: {}", response.message);
        assert!(response.message.contains(expected), "{shown}: {:?} does not name {expected:?}", response.message);
    }
    let published = app.published_before_fence(observer.as_mut()).await;
    assert!(published.is_empty(), "rejected quotes reached the broker: {published:?}");
}

#[tokio::test]
async fn grpc_batch_with_a_bad_item_names_it_and_publishes_the_good_ones() {
    let app = spawn_quiet_ingestion().await;
    let mut observer = app.observe_quotes().await;
    // Distinct symbols: quotes without a timestamp share the call's time, so
    // two of one symbol would be duplicates.
    let content = json!([quote("AAPL", 10.0), quote("TSLA", -1.0), quote("MSFT", 20.0)]).to_string();

    let response = app.process_data(&content).await;
    assert_eq!(response.status, "rejected");
    assert_eq!(response.message, format!("accepted 2, rejected 1; item 1: {INVALID_PRICE}"));
    let quotes = app.published_before_fence(observer.as_mut()).await;
    assert_eq!(symbols_and_prices(&quotes), vec![("AAPL".to_string(), 10.0), ("MSFT".to_string(), 20.0)]);
}

#[tokio::test]
async fn grpc_duplicate_quote_is_rejected_and_published_once() {
    let app = spawn_quiet_ingestion().await;
    let mut observer = app.observe_quotes().await;
    let content = quote_at("AAPL", 150.0, recent()).to_string();

    assert_eq!(app.process_data(&content).await.status, "ok");
    let again = app.process_data(&content).await;
    assert_eq!(again.status, "rejected");
    assert_eq!(
        again.message,
        "accepted 0, rejected 1; item 0: duplicate (duplicate (same symbol, source and timestamp))"
    );
    assert_eq!(app.published_before_fence(observer.as_mut()).await.len(), 1);

    // Within one call too: the two quotes are one observation.
    let twice = json!([quote_at("MSFT", 1.0, recent()), quote_at("MSFT", 1.0, recent())]).to_string();
    let response = app.process_data(&twice).await;
    assert!(response.message.starts_with("accepted 1, rejected 1; item "), "{}", response.message);
    assert!(response.message.contains(": duplicate ("), "{}", response.message);
    assert_eq!(app.published_before_fence(observer.as_mut()).await.len(), 1);
}

#[tokio::test]
async fn rest_and_grpc_give_the_same_verdicts() {
    // One service per API: the same quote sent to both would be a duplicate.
    let (grpc, rest) = (spawn_quiet_ingestion().await, spawn_quiet_ingestion().await);
    let ts = recent();
    let mut contents = vec![
        quote_at("AAPL", 150.23, ts).to_string(),
        json!([quote_at("AAPL", 1.0, ts), quote_at("MSFT", 2.0, ts)]).to_string(),
        json!([quote_at("AAPL", 10.0, ts), quote_at("TSLA", -1.0, ts), {"symbol": "X"}, 7]).to_string(),
        quote_at("AAPL", 150.23, ts).to_string(),
    ];
    // The oversized one is left out: REST refuses it unread, without its size.
    contents.extend(garbage().into_iter().map(|(content, _, _)| content).filter(|c| c.len() <= MAX_CONTENT_BYTES));
    for content in contents {
        let shown = &content[..content.len().min(80)];
        assert_eq!(verdict_rest(&rest, &content).await, verdict_grpc(&grpc, &content).await, "{shown}");
    }
}

#[tokio::test]
async fn rest_accepted_quotes_get_200_with_each_items_ingest_id() {
    let app = spawn_quiet_ingestion().await;
    let mut observer = app.observe_quotes().await;
    let response = app.post_ingest(json!([quote("AAPL", 1.0), quote("MSFT", 2.0)]).to_string()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(content_type(&response), "application/json");
    let body = json_of(response).await;
    assert_eq!(
        (body["status"].clone(), body["accepted"].clone(), body["rejected"].clone()),
        (json!("ok"), json!(2), json!(0))
    );
    assert_eq!(body["message"], "accepted 2, rejected 0");

    let items = body["items"].as_array().expect("items");
    let ids: Vec<&str> = items.iter().map(|item| item["ingest_id"].as_str().expect("an ingest id")).collect();
    assert_eq!(
        items.iter().map(|item| (item["index"].clone(), item["status"].clone())).collect::<Vec<_>>(),
        vec![(json!(0), json!("accepted")), (json!(1), json!("accepted"))]
    );
    let mut published: Vec<String> =
        app.published_before_fence(observer.as_mut()).await.into_iter().map(|q| q.ingest_id).collect();
    let mut expected: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    published.sort();
    expected.sort();
    assert_eq!(published, expected, "the items' ids are the published quotes' ids");
}

#[tokio::test]
async fn rest_partial_batch_is_200_with_status_rejected_and_the_bad_items_reason() {
    let app = spawn_quiet_ingestion().await;
    let mut observer = app.observe_quotes().await;
    let response =
        app.post_ingest(json!([quote("AAPL", 1.0), quote("TSLA", 0.0), quote("MSFT", 2.0)]).to_string()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(
        (body["status"].clone(), body["accepted"].clone(), body["rejected"].clone()),
        (json!("rejected"), json!(2), json!(1))
    );
    assert_eq!(
        body["items"][1],
        json!({"index": 1, "status": "rejected", "reason": "invalid_price", "detail": PRICE_DETAIL})
    );
    assert_eq!(body["items"][2]["status"], "accepted");
    assert_eq!(app.published_before_fence(observer.as_mut()).await.len(), 2);
}

#[tokio::test]
async fn rest_garbage_is_a_problem_naming_the_problem_and_nothing_is_published() {
    let app = spawn_quiet_ingestion().await;
    let mut observer = app.observe_quotes().await;
    for (content, expected, status) in garbage() {
        let shown = content[..content.len().min(80)].to_string();
        let response = app.post_ingest(content).await;
        assert_eq!(response.status(), status, "{shown}");
        assert_eq!(content_type(&response), PROBLEM_JSON, "{shown}");
        let problem = json_of(response).await;
        assert_eq!(problem["status"], status.as_u16(), "{shown}");
        let detail = problem["detail"].as_str().expect("a detail");
        assert!(detail.contains(expected), "{shown}: {detail:?} does not name {expected:?}");
    }
    let published = app.published_before_fence(observer.as_mut()).await;
    assert!(published.is_empty(), "rejected quotes reached the broker: {published:?}");
}

#[tokio::test]
async fn rest_nothing_accepted_is_a_422_problem_listing_each_item() {
    let app = spawn_quiet_ingestion().await;
    let response = app.post_ingest(json!([quote("AAPL", -1.0), {"price": 1}]).to_string()).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(content_type(&response), PROBLEM_JSON);
    let problem = json_of(response).await;
    const MISSING_SYMBOL: &str = "invalid_item (symbol: missing)";
    assert_eq!(
        problem,
        json!({
            "type": "about:blank",
            "title": "Unprocessable Entity",
            "status": 422,
            "detail": format!("accepted 0, rejected 2; item 0: {INVALID_PRICE}; item 1: {MISSING_SYMBOL}"),
            "accepted": 0,
            "rejected": 2,
            "items": [
                {"index": 0, "status": "rejected", "reason": "invalid_price", "detail": PRICE_DETAIL},
                {"index": 1, "status": "rejected", "reason": "invalid_item", "detail": "symbol: missing"},
            ],
        })
    );
}

#[tokio::test]
async fn rest_duplicate_is_a_422_problem_and_the_quote_is_published_once() {
    let app = spawn_quiet_ingestion().await;
    let mut observer = app.observe_quotes().await;
    let content = quote_at("AAPL", 150.0, recent()).to_string();
    assert_eq!(app.post_ingest(content.clone()).await.status(), StatusCode::OK);

    let again = app.post_ingest(content).await;
    assert_eq!(again.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(again).await["items"][0]["reason"], "duplicate");
    assert_eq!(app.published_before_fence(observer.as_mut()).await.len(), 1);
}

#[tokio::test]
async fn unconfirmed_publish_is_a_503_problem_over_rest_and_publish_failed_over_grpc() {
    let app = spawn_quiet_ingestion().await;
    let mut observer = app.observe_quotes().await;
    app.refuse_publishes();

    let response = app.post_ingest(quote("AAPL", 1.0).to_string()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(content_type(&response), PROBLEM_JSON);
    assert_eq!(json_of(response).await["items"][0]["reason"], "publish_failed");

    let answer = app.process_data(&quote("AAPL", 2.0).to_string()).await;
    assert_eq!(answer.status, "rejected");
    assert!(answer.message.starts_with("accepted 0, rejected 1; item 0: publish_failed ("), "{}", answer.message);
    assert!(app.published_before_fence(observer.as_mut()).await.is_empty());
}

#[tokio::test]
async fn rest_takes_json_or_no_content_type_and_refuses_others_with_a_415_problem() {
    let app = spawn_quiet_ingestion().await;
    let url = app.url("/ingest");
    let send = |content_type: Option<&'static str>, price: f64| {
        let mut request = app.http.post(&url).bearer_auth(INGEST_TOKEN).body(quote("AAPL", price).to_string());
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        async move { request.send().await.expect("POST /ingest answers") }
    };
    for (price, content_type) in [(1.0, Some("application/json; charset=utf-8")), (2.0, None)] {
        assert_eq!(send(content_type, price).await.status(), StatusCode::OK, "{content_type:?}");
    }
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let response = send(Some(content_type), 3.0).await;
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type}");
        assert_eq!(json_of(response).await["detail"], "send the quotes as application/json");
    }
}

/// The value of the series of `name` with all `labels` in `/metrics`.
async fn metric(app: &TestIngestion, name: &str, labels: &[&str]) -> Option<f64> {
    let text = app.get("/metrics").await.text().await.expect("metrics text");
    let line = text
        .lines()
        .find(|line| line.starts_with(&format!("{name}{{")) && labels.iter().all(|label| line.contains(label)))?;
    line.rsplit(' ').next()?.parse().ok()
}

#[tokio::test]
async fn ingest_calls_are_counted_per_api_and_status_and_items_per_outcome() {
    let app = spawn_quiet_ingestion().await;
    app.process_data(&json!([quote("AAPL", 1.0), quote("MSFT", 2.0)]).to_string()).await;
    app.process_data(&json!([quote("AAPL", 1.0), quote("TSLA", -2.0)]).to_string()).await;
    app.process_data("not json").await;
    app.post_ingest(quote("AAPL", 3.0).to_string()).await;

    const REQUESTS: &str = "lizards_ingest_requests_total";
    const ITEMS: &str = "lizards_ingest_items_total";
    let grpc = r#"api="grpc""#;
    assert_eq!(metric(&app, REQUESTS, &[grpc, r#"status="ok""#]).await, Some(1.0));
    assert_eq!(metric(&app, REQUESTS, &[grpc, r#"status="rejected""#]).await, Some(2.0));
    assert_eq!(metric(&app, ITEMS, &[grpc, r#"outcome="accepted""#]).await, Some(3.0));
    assert_eq!(metric(&app, ITEMS, &[grpc, r#"outcome="rejected""#]).await, Some(1.0));
    assert_eq!(metric(&app, REQUESTS, &[r#"api="rest""#, r#"status="ok""#]).await, Some(1.0));

    app.refuse_publishes();
    app.process_data(&quote("AAPL", 4.0).to_string()).await;
    assert_eq!(metric(&app, REQUESTS, &[grpc, r#"status="error""#]).await, Some(1.0));
}

#[tokio::test]
async fn grpc_server_stops_with_the_service() {
    let app = spawn_quiet_ingestion().await;
    let addr = app.grpc;
    let mut client = app.grpc_client().await;
    let content = quote("AAPL", 1.0).to_string();
    let answer = client.process_data(authorized(lizards_ingestion::grpc::proto::RawData { content })).await;
    let answer = answer.expect("an answer");
    assert_eq!(answer.into_inner().status, "ok");

    // A client's open connection does not hold the shutdown up.
    app.stop().await;
    let refused = within("a refused connection", tokio::net::TcpStream::connect(addr)).await;
    assert!(refused.is_err(), "the gRPC port still accepts connections");
}

#[tokio::test]
async fn writes_without_the_ingest_token_or_an_admin_token_are_refused_and_publish_nothing() {
    let app = spawn_quiet_ingestion().await;
    let mut observer = app.observe_quotes().await;
    let body = quote("AAPL", 0.01).to_string();
    let url = app.url("/ingest");
    let anonymous = app.http.post(&url).body(body.clone()).send().await.expect("an answer");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let wrong = app.http.post(&url).bearer_auth(format!("{INGEST_TOKEN}x")).body(body.clone()).send().await;
    assert_eq!(wrong.expect("an answer").status(), StatusCode::UNAUTHORIZED, "a near miss");
    let forged = app.http.post(&url).bearer_auth("eyJhbGciOiJub25lIn0.e30.").body(body.clone()).send().await;
    assert_eq!(forged.expect("an answer").status(), StatusCode::UNAUTHORIZED, "an unsigned token");

    let mut client = app.grpc_client().await;
    let raw = || lizards_ingestion::grpc::proto::RawData { content: body.clone() };
    let status = client.process_data(raw()).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let mut wrong = tonic::Request::new(raw());
    wrong.metadata_mut().insert("authorization", "Bearer guess".parse().unwrap());
    assert_eq!(client.process_data(wrong).await.expect_err("refused").code(), tonic::Code::Unauthenticated);

    assert!(app.published_before_fence(observer.as_mut()).await.is_empty(), "nothing reached the broker");
    const REQUESTS: &str = "lizards_ingest_requests_total";
    assert_eq!(metric(&app, REQUESTS, &[r#"api="rest""#, r#"status="unauthorized""#]).await, Some(3.0));
    assert_eq!(metric(&app, REQUESTS, &[r#"api="grpc""#, r#"status="unauthorized""#]).await, Some(2.0));

    let accepted = client.process_data(authorized(raw())).await.expect("an answer").into_inner();
    assert_eq!(accepted.status, "ok", "{}", accepted.message);
}
