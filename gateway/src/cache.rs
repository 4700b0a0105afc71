//! Response caching at the edge, in the cache port (Redis when set, so
//! every gateway shares it). Only GET requests of routes with a TTL rule
//! are cached, and only 200 responses. `Cache-Control` is honoured both
//! ways: a request's `no-store` bypasses the cache, `no-cache` (or
//! `max-age=0`) skips the stored copy and refreshes it, `max-age=N` accepts
//! copies up to N s old; a response's `no-store`, `no-cache`, `private` (on
//! a shared entry) or `Set-Cookie` keep it out, its `max-age`/`s-maxage`
//! shortens the TTL. A request with a verified token gets entries of its
//! own user only. Concurrent misses for one key share one upstream call.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{FutureExt, future::Shared};
use lizards_shared::{
    cache::Cache,
    config::{GatewayConfig, HumanDuration, PathRules},
};
use serde::{Deserialize, Serialize};

use crate::{identity::Identity, metrics::Metrics};

/// Larger bodies are relayed but not stored.
const MAX_STORED_BODY: usize = 4 * 1024 * 1024;

/// A complete upstream answer (or the gateway's error in its place).
#[derive(Clone)]
pub struct Entry {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it was stored, for `Age`; `None` if it never was.
    pub stored_at: Option<SystemTime>,
    /// Whether it was read from the store rather than fetched.
    pub hit: bool,
}

impl Entry {
    /// The gateway's own answer (e.g. 502) in place of an upstream one.
    pub async fn from_response(response: Response) -> Entry {
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, MAX_STORED_BODY).await.unwrap_or_default();
        Entry { status: parts.status, headers: parts.headers, body, stored_at: None, hit: false }
    }
}

/// What a request allows the cache to do.
#[derive(Debug, Default, PartialEq)]
struct Directives {
    no_store: bool,
    no_cache: bool,
    private: bool,
    max_age: Option<u64>,
}

fn directives(headers: &HeaderMap) -> Directives {
    let mut directives = Directives::default();
    for value in headers.get_all(header::CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()) {
        for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            let (name, argument) = directive.split_once('=').unwrap_or((&directive, ""));
            let seconds = || argument.trim_matches('"').parse::<u64>().ok();
            match name {
                "no-store" => directives.no_store = true,
                "no-cache" => directives.no_cache = true,
                "private" => directives.private = true,
                // s-maxage is for shared caches such as this one and wins.
                "s-maxage" => directives.max_age = seconds().or(directives.max_age),
                "max-age" if directives.max_age.is_none() => directives.max_age = seconds(),
                _ => {}
            }
        }
    }
    directives
}

/// How one request uses the cache.
pub struct Plan {
    pub key: String,
    ttl: Duration,
    /// The stored copy may be served if it is at most this old.
    read: Option<Duration>,
    /// Per-user key: `private` responses may be stored.
    per_user: bool,
}

/// A cacheable request that asked not to use the cache (`no-store`).
pub struct Bypass;

type Flight = Shared<Pin<Box<dyn Future<Output = Arc<Entry>> + Send>>>;

pub struct ResponseCache {
    ttls: PathRules<HumanDuration>,
    shared: Arc<Inner>,
}

/// What the requests and the flights they started share.
struct Inner {
    store: Arc<dyn Cache>,
    metrics: Metrics,
    flights: Mutex<HashMap<String, Flight>>,
}

impl ResponseCache {
    /// `None` when caching is off.
    pub fn new(config: &GatewayConfig, store: Arc<dyn Cache>, metrics: Metrics) -> Option<ResponseCache> {
        config.cache.then(|| ResponseCache {
            ttls: config.cache_ttls.clone(),
            shared: Arc::new(Inner { store, metrics, flights: Mutex::default() }),
        })
    }

    /// The plan for a GET of `path_and_query`: `None` when the route is not
    /// cached, `Some(Err(Bypass))` when the request says `no-store`.
    pub fn plan(
        &self,
        path: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        identity: &Identity,
    ) -> Option<Result<Plan, Bypass>> {
        let ttl = self.ttls.lookup(path)?.0;
        let request = directives(headers);
        if request.no_store || ttl.is_zero() {
            return Some(Err(Bypass));
        }
        let read = match request.max_age {
            _ if request.no_cache => None,
            Some(0) => None,
            Some(seconds) => Some(Duration::from_secs(seconds).min(ttl)),
            None => Some(ttl),
        };
        let scope = identity.user.as_deref().map_or_else(|| "public".to_string(), |user| format!("user:{user}"));
        Some(Ok(Plan {
            key: format!("httpcache:{scope}:GET:{path_and_query}"),
            ttl,
            read,
            per_user: identity.user.is_some(),
        }))
    }

    /// Marks the answer to a request that bypassed the cache.
    pub fn bypassed(&self, route: &'static str, response: &mut Response) {
        self.shared.metrics.cache.with_label_values(&[route, "bypass"]).inc();
        response.headers_mut().insert("x-cache", HeaderValue::from_static("MISS"));
    }

    /// Answers from the store, or from one upstream call shared by every
    /// concurrent miss of the same key; stores what may be stored.
    pub async fn serve<F>(&self, route: &'static str, plan: Plan, fetch: F) -> Entry
    where
        F: Future<Output = Entry> + Send + 'static,
    {
        let shared = &self.shared;
        if let Some(entry) = shared.lookup(&plan).await {
            shared.metrics.cache.with_label_values(&[route, "hit"]).inc();
            return entry;
        }
        let (flight, leader) = {
            let mut flights = shared.flights.lock().expect("flights lock");
            match flights.get(&plan.key) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let key = plan.key.clone();
                    let flight = shared.clone().flight(plan, fetch);
                    flights.insert(key, flight.clone());
                    (flight, true)
                }
            }
        };
        let entry = flight.await;
        let result = match (entry.hit, leader) {
            (true, _) => "hit",
            (false, true) => "miss",
            (false, false) => "coalesced",
        };
        shared.metrics.cache.with_label_values(&[route, result]).inc();
        (*entry).clone()
    }
}

impl Inner {
    /// The stored copy, if fresh enough for the plan. Store failures read
    /// as misses (the cache is bypassed while Redis is down).
    async fn lookup(&self, plan: &Plan) -> Option<Entry> {
        let max_age = plan.read?;
        let stored = match self.store.get(&plan.key).await {
            Ok(stored) => stored?,
            Err(error) => {
                self.metrics.store_failure("cache");
                tracing::debug!(%error, "cache read failed; treating as a miss");
                return None;
            }
        };
        let entry = decode(&stored)?;
        let age = SystemTime::now().duration_since(entry.stored_at?).unwrap_or_default();
        (age <= max_age).then_some(entry)
    }

    async fn store(&self, plan: &Plan, entry: &mut Entry) {
        let Some(ttl) = storable(entry, plan) else { return };
        let stored_at = SystemTime::now();
        match self.store.set(&plan.key, encode(entry, stored_at), Some(ttl)).await {
            Ok(()) => entry.stored_at = Some(stored_at),
            Err(error) => {
                self.metrics.store_failure("cache");
                tracing::debug!(%error, "cache write failed");
            }
        }
    }

    /// The shared upstream call of a key. It looks at the store once more
    /// (a flight that just ended stored its answer before leaving the
    /// table), fetches, stores, and leaves the table; it runs as long as any
    /// requester still waits for it.
    fn flight<F>(self: Arc<Inner>, plan: Plan, fetch: F) -> Flight
    where
        F: Future<Output = Entry> + Send + 'static,
    {
        let future = async move {
            let entry = match self.lookup(&plan).await {
                Some(entry) => entry,
                None => {
                    let mut entry = fetch.await;
                    self.store(&plan, &mut entry).await;
                    add_cache_control(&mut entry.headers, &plan);
                    entry
                }
            };
            self.flights.lock().expect("flights lock").remove(&plan.key);
            Arc::new(entry)
        };
        let future: Pin<Box<dyn Future<Output = Arc<Entry>> + Send>> = Box::pin(future);
        future.shared()
    }
}

/// How long an answer may be stored under `plan`, `None` if not at all.
fn storable(entry: &Entry, plan: &Plan) -> Option<Duration> {
    if entry.status != StatusCode::OK
        || entry.body.len() > MAX_STORED_BODY
        || entry.headers.contains_key(header::SET_COOKIE)
    {
        return None;
    }
    let response = directives(&entry.headers);
    if response.no_store || response.no_cache || (response.private && !plan.per_user) {
        return None;
    }
    let ttl = response.max_age.map_or(plan.ttl, |seconds| plan.ttl.min(Duration::from_secs(seconds)));
    (!ttl.is_zero()).then_some(ttl)
}

/// Tells clients how long the answer stays fresh when the upstream did not.
fn add_cache_control(headers: &mut HeaderMap, plan: &Plan) {
    if !headers.contains_key(header::CACHE_CONTROL) {
        let visibility = if plan.per_user { "private" } else { "public" };
        let value = format!("{visibility}, max-age={}", plan.ttl.as_secs());
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header::CACHE_CONTROL, value);
        }
    }
}

/// Stored form: a JSON head line, then the body bytes.
#[derive(Serialize, Deserialize)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    stored_at_ms: u64,
}

fn encode(entry: &Entry, stored_at: SystemTime) -> Bytes {
    let head = Head {
        status: entry.status.as_u16(),
        headers: entry
            .headers
            .iter()
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect(),
        stored_at_ms: stored_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64,
    };
    let head = serde_json::to_vec(&head).expect("head serializes");
    let mut bytes = BytesMut::with_capacity(head.len() + 1 + entry.body.len());
    bytes.put_slice(&head);
    bytes.put_u8(b'\n');
    bytes.put_slice(&entry.body);
    bytes.freeze()
}

fn decode(stored: &Bytes) -> Option<Entry> {
    let newline = stored.iter().position(|b| *b == b'\n')?;
    let head: Head = serde_json::from_slice(&stored[..newline]).ok()?;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for (name, value) in head.headers {
        headers.append(HeaderName::try_from(name).ok()?, HeaderValue::try_from(value).ok()?);
    }
    Some(Entry {
        status: StatusCode::from_u16(head.status).ok()?,
        headers,
        body: stored.slice(newline + 1..),
        stored_at: Some(UNIX_EPOCH + Duration::from_millis(head.stored_at_ms)),
        hit: true,
    })
}

impl IntoResponse for Entry {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        let headers = response.headers_mut();
        headers.insert("x-cache", HeaderValue::from_static(if self.hit { "HIT" } else { "MISS" }));
        if self.hit
            && let Some(stored_at) = self.stored_at
        {
            let age = SystemTime::now().duration_since(stored_at).unwrap_or_default().as_secs();
            headers.insert(header::AGE, HeaderValue::from(age));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cache_control: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(cache_control).unwrap());
        headers
    }

    fn plan(per_user: bool) -> Plan {
        Plan { key: "k".into(), ttl: Duration::from_secs(10), read: Some(Duration::from_secs(10)), per_user }
    }

    fn entry(status: StatusCode, headers: HeaderMap) -> Entry {
        Entry { status, headers, body: Bytes::from_static(b"{}"), stored_at: None, hit: false }
    }

    #[test]
    fn directives_are_parsed_case_insensitively_and_s_maxage_wins() {
        let parsed = directives(&headers("No-Store, max-age=5, S-MAXAGE=\"7\", private"));
        assert_eq!(parsed, Directives { no_store: true, no_cache: false, private: true, max_age: Some(7) });
        assert_eq!(directives(&headers("max-age=abc")).max_age, None);
        assert_eq!(directives(&HeaderMap::new()), Directives::default());
    }

    #[test]
    fn only_plain_200s_are_stored_for_at_most_their_max_age() {
        assert_eq!(storable(&entry(StatusCode::OK, HeaderMap::new()), &plan(false)), Some(Duration::from_secs(10)));
        assert_eq!(storable(&entry(StatusCode::OK, headers("max-age=3")), &plan(false)), Some(Duration::from_secs(3)));
        assert_eq!(storable(&entry(StatusCode::OK, headers("max-age=0")), &plan(false)), None);
        assert_eq!(storable(&entry(StatusCode::NOT_FOUND, HeaderMap::new()), &plan(false)), None);
        assert_eq!(storable(&entry(StatusCode::OK, headers("no-store")), &plan(true)), None);
        assert_eq!(storable(&entry(StatusCode::OK, headers("private")), &plan(false)), None);
        assert!(storable(&entry(StatusCode::OK, headers("private")), &plan(true)).is_some());
        let mut cookie = HeaderMap::new();
        cookie.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        assert_eq!(storable(&entry(StatusCode::OK, cookie), &plan(true)), None);
    }

    #[test]
    fn stored_form_round_trips() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let original = Entry { body: Bytes::from_static(b"{\"a\":\n1}"), ..entry(StatusCode::OK, headers) };
        let stored_at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let decoded = decode(&encode(&original, stored_at)).expect("decodes");
        assert_eq!((decoded.status, decoded.body.clone()), (original.status, original.body.clone()));
        assert_eq!(decoded.headers, original.headers);
        assert_eq!(decoded.stored_at, Some(stored_at));
        assert!(decoded.hit);
        assert!(decode(&Bytes::from_static(b"garbage")).is_none());
    }
}
