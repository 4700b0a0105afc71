//! Reverse proxy: REST requests are streamed to an instance of the route's
//! service (one retry of idempotent requests on another instance), and
//! WebSocket upgrades are bridged frame by frame.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{
        ConnectInfo, FromRequestParts, Request, State,
        ws::{self, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use lizards_shared::{
    problem::Problem,
    protocol::{self, MAX_MESSAGE},
};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, protocol::WebSocketConfig};

use crate::{
    GatewayState,
    cache::{Bypass, Entry},
    client,
    guard::Access,
    identity::{self, Identity},
    ratelimit::Counted,
    routes::{self, Route},
    ui,
    upstream::Picked,
};

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

fn hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Copies end-to-end headers and adds `X-Forwarded-*`. `X-Forwarded-For`
/// is the client's address as the gateway determined it (`client.rs`),
/// and nothing else: what a client claims never reaches the services.
fn forward_headers(incoming: &HeaderMap, client: IpAddr) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(incoming.len() + 3);
    for (name, value) in incoming {
        if !hop_by_hop(name) && !name.as_str().starts_with("sec-websocket") && name != "x-forwarded-for" {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(value) = HeaderValue::from_str(&client.to_string()) {
        headers.insert("x-forwarded-for", value);
    }
    if !incoming.contains_key("x-forwarded-host")
        && let Some(host) = incoming.get(header::HOST)
    {
        headers.insert("x-forwarded-host", host.clone());
    }
    if !incoming.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    headers
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Every request the gateway does not answer itself: identified, counted
/// against its rate limit, then served from the cache or an upstream.
pub async fn handle(
    State(state): State<Arc<GatewayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let client = client::client_ip(peer.ip(), request.headers(), &state.trusted_proxies);
    let path = request.uri().path().to_string();
    let upgrade = is_upgrade(request.headers());
    // The seed's WebSocket URL had no path: upgrades on `/` go to the provider.
    let route = if upgrade && path == "/" { routes::route_for("/ws") } else { routes::route_for(&path) };
    let Some(route) = route else {
        return ui::serve(&path);
    };
    let method = request.method().clone();
    if let Some(methods) = route.methods
        && !methods.contains(&method)
    {
        return Problem::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
            .detail(format!("{method} {} is not exposed by the gateway", route.prefix))
            .into_response();
    }
    let admitted = admit(&state, route, upgrade, client, request.headers(), request.uri()).await;
    let (response, user) = match admitted {
        Err(refused) => (refused, None),
        Ok((identity, counted)) => {
            let guarded = state.guard.check(route.access, &method, request.headers()).await;
            let mut response = if let Err(refused) = guarded {
                refused
            } else if upgrade {
                websocket(&state, route, client, request).await
            } else {
                rest(&state, route, client, &identity, request).await
            };
            if let Some(counted) = counted {
                counted.annotate(response.headers_mut());
            }
            (response, identity.user)
        }
    };
    let status = response.status();
    state.metrics.requests.with_label_values(&[route.prefix, status.as_str()]).inc();
    let cache = response.headers().get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info!(
        target: "lizards::access",
        %method, %path, status = status.as_u16(), route = route.prefix, %client,
        user = user.as_deref().unwrap_or("-"), cache, ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// Verifies the caller's token and counts the request against its limit.
async fn admit<'a>(
    state: &'a GatewayState,
    route: &Route,
    upgrade: bool,
    client: IpAddr,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(Identity, Option<Counted<'a>>), Response> {
    // INGEST_TOKEN is not a JWT: the guard checks `/ingest` credentials.
    let check_token = route.prefix != "/auth" && route.access != Access::Ingest;
    let identity = identity::identify(&state.jwt, headers, uri, upgrade, client, check_token);
    // A request with a bad token counts against its IP like any anonymous
    // one, so a flood of forged tokens is limited too.
    let anonymous = Identity { ip: client, user: None };
    let counted = match &state.limiter {
        Some(limiter) => {
            limiter.check(route.prefix, uri.path(), upgrade, identity.as_ref().unwrap_or(&anonymous)).await?
        }
        None => None,
    };
    match identity {
        Ok(identity) => Ok((identity, counted)),
        Err(error) => {
            let mut refused = identity::unauthorized(&error);
            if let Some(counted) = counted {
                counted.annotate(refused.headers_mut());
            }
            Err(refused)
        }
    }
}

fn no_instance(service: &str) -> Response {
    Problem::unavailable(format!("no healthy instance of '{service}' is registered")).into_response()
}

/// The client the gateway reaches upstreams with: plain HTTP/1.1 over a
/// keep-alive pool, sockets without Nagle's delay.
pub type HttpClient = Client<HttpConnector, Body>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(3)));
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector)
}

/// One request on its way to an upstream.
struct Outgoing {
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Option<Body>,
    timeout: Duration,
}

type Upstreamed = hyper::Response<hyper::body::Incoming>;

/// Sends `outgoing` to an instance of the route's service. After a failure
/// the instance is ejected and an idempotent request is tried once more on
/// another one; a request that outlives the route's timeout gets 504.
async fn send(state: &GatewayState, route: &Route, mut outgoing: Outgoing) -> Result<(Upstreamed, Picked), Response> {
    let idempotent = matches!(outgoing.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let mut tried: Vec<Arc<str>> = Vec::new();
    loop {
        let Some(picked) = state.upstreams.pick(route.service, &tried).await else {
            return Err(no_instance(route.service));
        };
        // Idempotent requests carry no body worth resending and may be
        // retried; others are streamed once and never retried.
        let (body, headers) = if idempotent {
            (Body::empty(), outgoing.headers.clone())
        } else {
            (outgoing.body.take().unwrap_or_default(), std::mem::take(&mut outgoing.headers))
        };
        let mut request = hyper::Request::new(body);
        *request.method_mut() = outgoing.method.clone();
        *request.headers_mut() = headers;
        match format!("http://{}{}", picked.authority, outgoing.path_and_query).parse() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => return Err(Problem::bad_request("the request target cannot be forwarded").into_response()),
        }
        let started = Instant::now();
        let error = match tokio::time::timeout(outgoing.timeout, state.http.request(request)).await {
            Ok(Ok(response)) => {
                let elapsed = started.elapsed().as_secs_f64();
                state.metrics.upstream_duration.with_label_values(&[route.prefix]).observe(elapsed);
                return Ok((response, picked));
            }
            Ok(Err(error)) => error,
            Err(_) => {
                state.metrics.upstream_error(route.prefix, "timeout");
                tracing::warn!(instance = %picked.authority, timeout = ?outgoing.timeout, "upstream timed out");
                return Err(Problem::new(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout")
                    .detail(format!("'{}' did not answer within {:?}", route.service, outgoing.timeout))
                    .into_response());
            }
        };
        let kind = if error.is_connect() { "connect" } else { "broken" };
        state.metrics.upstream_error(route.prefix, kind);
        tracing::warn!(%error, instance = %picked.authority, "upstream request failed");
        state.upstreams.eject(&picked.authority);
        tried.push(picked.authority.clone());
        if !idempotent || tried.len() > 1 {
            return Err(Problem::new(StatusCode::BAD_GATEWAY, "Bad Gateway")
                .detail(format!("'{}' is unreachable", route.service))
                .into_response());
        }
    }
}

async fn rest(
    state: &Arc<GatewayState>,
    route: &'static Route,
    client: IpAddr,
    identity: &Identity,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut outgoing = Outgoing {
        method: parts.method.clone(),
        headers: forward_headers(&parts.headers, client),
        timeout: state.timeout(parts.uri.path()),
        path_and_query,
        body: Some(body),
    };
    state.guard.vouch(route.access, &parts.method, &mut outgoing.headers);
    let plan = match &state.cache {
        Some(cache) if parts.method == Method::GET => {
            cache.plan(parts.uri.path(), &outgoing.path_and_query, &parts.headers, identity).map(|plan| (cache, plan))
        }
        _ => None,
    };
    let (cache, plan) = match plan {
        Some((cache, Ok(plan))) => (cache, plan),
        uncached => {
            let mut response = send(state, route, outgoing).await.map_or_else(|refused| refused, |(r, _)| relay(r));
            if let Some((cache, Err(Bypass))) = uncached {
                cache.bypassed(route.prefix, &mut response);
            }
            return response;
        }
    };
    if identity.user.is_none() {
        // A shared entry must not depend on who happened to fetch it.
        outgoing.headers.remove(header::AUTHORIZATION);
        outgoing.headers.remove(header::COOKIE);
    }
    outgoing.body = None;
    let fetch = {
        let state = state.clone();
        async move {
            let timeout = outgoing.timeout;
            match send(&state, route, outgoing).await {
                Ok((response, _picked)) => buffered(response, timeout).await,
                Err(refused) => Entry::from_response(refused).await,
            }
        }
    };
    cache.serve(route.prefix, plan, fetch).await.into_response()
}

/// Keeps the end-to-end headers of an upstream response.
fn end_to_end(headers: &mut HeaderMap) {
    let hop: Vec<HeaderName> = headers.keys().filter(|name| hop_by_hop(name)).cloned().collect();
    for name in hop {
        headers.remove(name);
    }
}

/// Streams an upstream response through.
fn relay(upstream: Upstreamed) -> Response {
    let (mut parts, body) = upstream.into_parts();
    end_to_end(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

/// Reads a whole upstream response, for the cache.
async fn buffered(upstream: Upstreamed, timeout: Duration) -> Entry {
    let (mut parts, body) = upstream.into_parts();
    end_to_end(&mut parts.headers);
    let problem = match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(body)) => {
            return Entry {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
                stored_at: None,
                hit: false,
            };
        }
        Ok(Err(error)) => format!("the upstream response broke off: {error}"),
        Err(_) => format!("the upstream response took longer than {timeout:?}"),
    };
    Entry::from_response(Problem::new(StatusCode::BAD_GATEWAY, "Bad Gateway").detail(problem).into_response()).await
}

async fn websocket(state: &GatewayState, route: &Route, client: IpAddr, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(picked) = state.upstreams.pick(route.service, &[]).await else {
        return no_instance(route.service);
    };
    let path_and_query = parts.uri.path_and_query().map_or("/ws", |p| p.as_str());
    let path_and_query =
        if parts.uri.path() == "/" { format!("/ws{}", &path_and_query[1..]) } else { path_and_query.to_string() };
    let connecting = connect(&picked.authority, &path_and_query, forward_headers(&parts.headers, client));
    let connected = tokio::time::timeout(state.timeout(parts.uri.path()), connecting)
        .await
        .unwrap_or_else(|_| Err(tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into())));
    let upstream = match connected {
        Ok(upstream) => upstream,
        Err(error) => {
            state.metrics.upstream_error(route.prefix, "connect");
            state.upstreams.eject(&picked.authority);
            tracing::warn!(%error, instance = %picked.authority, "WebSocket upstream failed");
            return Problem::new(StatusCode::BAD_GATEWAY, "Bad Gateway")
                .detail("no provider accepted the WebSocket")
                .into_response();
        }
    };
    let metrics = state.metrics.clone();
    upgrade.read_buffer_size(4096).max_message_size(MAX_MESSAGE).max_frame_size(MAX_MESSAGE).on_upgrade(
        move |socket| async move {
            // The instance counts this connection as load while it lasts.
            let _picked = picked;
            metrics.ws_proxied.inc();
            bridge(socket, upstream).await;
            metrics.ws_proxied.dec();
        },
    )
}

type Upstream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(authority: &str, path_and_query: &str, headers: HeaderMap) -> Result<Upstream, tungstenite::Error> {
    let mut request = format!("ws://{authority}{path_and_query}").into_client_request()?;
    for (name, value) in &headers {
        request.headers_mut().append(name.clone(), value.clone());
    }
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (stream, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    Ok(stream)
}

/// A bridged write that does not complete in this time ends the bridge (the
/// provider closes clients that stay unwritable anyway).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// A client silent this long is gone: the provider's pings are forwarded to
/// it every 20 s and answered by any live client.
const CLIENT_IDLE: Duration = Duration::from_secs(90);

/// Pumps frames both ways until either side closes, stalls or goes silent.
async fn bridge(client: WebSocket, upstream: Upstream) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    // Ends with whether the client sent a message over the limit.
    let to_upstream = async {
        let mut too_big = false;
        loop {
            let message = match tokio::time::timeout(CLIENT_IDLE, client_rx.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => {
                    too_big = protocol::is_message_too_big(&error);
                    break;
                }
                _ => break,
            };
            let Some(message) = to_tungstenite(message) else { continue };
            let closing = matches!(message, tungstenite::Message::Close(_));
            let sent = tokio::time::timeout(SEND_TIMEOUT, upstream_tx.send(message)).await;
            if !matches!(sent, Ok(Ok(()))) || closing {
                break;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), upstream_tx.close()).await;
        too_big
    };
    let to_client = async {
        while let Some(Ok(message)) = upstream_rx.next().await {
            let Some(message) = to_axum(message) else { continue };
            let closing = matches!(message, ws::Message::Close(_));
            let sent = tokio::time::timeout(SEND_TIMEOUT, client_tx.send(message)).await;
            if !matches!(sent, Ok(Ok(()))) || closing {
                break;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), client_tx.close()).await;
    };
    let too_big = tokio::select! {
        too_big = to_upstream => too_big,
        _ = to_client => false,
    };
    if too_big {
        let frame = ws::CloseFrame { code: protocol::CLOSE_TOO_BIG, reason: protocol::TOO_BIG_REASON.into() };
        let _ = tokio::time::timeout(Duration::from_secs(1), client_tx.send(ws::Message::Close(Some(frame)))).await;
    }
}

fn to_tungstenite(message: ws::Message) -> Option<tungstenite::Message> {
    Some(match message {
        ws::Message::Text(text) => {
            tungstenite::Message::Text(tungstenite::Utf8Bytes::try_from(bytes::Bytes::from(text)).ok()?)
        }
        ws::Message::Binary(data) => tungstenite::Message::Binary(data),
        ws::Message::Ping(data) => tungstenite::Message::Ping(data),
        ws::Message::Pong(data) => tungstenite::Message::Pong(data),
        ws::Message::Close(frame) => tungstenite::Message::Close(frame.map(|f| tungstenite::protocol::CloseFrame {
            code: f.code.into(),
            reason: tungstenite::Utf8Bytes::from(f.reason.as_str()),
        })),
    })
}

fn to_axum(message: tungstenite::Message) -> Option<ws::Message> {
    Some(match message {
        tungstenite::Message::Text(text) => ws::Message::Text(ws::Utf8Bytes::try_from(bytes::Bytes::from(text)).ok()?),
        tungstenite::Message::Binary(data) => ws::Message::Binary(data),
        tungstenite::Message::Ping(data) => ws::Message::Ping(data),
        tungstenite::Message::Pong(data) => ws::Message::Pong(data),
        tungstenite::Message::Close(frame) => ws::Message::Close(
            frame.map(|f| ws::CloseFrame { code: f.code.into(), reason: ws::Utf8Bytes::from(f.reason.as_str()) }),
        ),
        tungstenite::Message::Frame(_) => return None,
    })
}
