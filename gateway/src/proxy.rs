//! Reverse proxy: REST requests are streamed to an instance of the route's
//! service (one retry of idempotent requests on another instance), and
//! WebSocket upgrades are bridged frame by frame.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{
        ConnectInfo, FromRequestParts, Request, State,
        ws::{self, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::{SinkExt, StreamExt};
use lizards_shared::{discovery::Instance, problem::Problem};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, protocol::WebSocketConfig};

use crate::{GatewayState, routes, ui};

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

/// Copies end-to-end headers and adds `X-Forwarded-*`.
fn forward_headers(incoming: &HeaderMap, client: SocketAddr) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(incoming.len() + 3);
    for (name, value) in incoming {
        if !hop_by_hop(name) && !name.as_str().starts_with("sec-websocket") {
            headers.append(name.clone(), value.clone());
        }
    }
    let forwarded_for = match incoming.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {}", client.ip()),
        None => client.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
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

/// Every request the gateway does not answer itself.
pub async fn handle(
    State(state): State<Arc<GatewayState>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    let upgrade = is_upgrade(request.headers());
    // The seed's WebSocket URL had no path: upgrades on `/` go to the provider.
    let route = if upgrade && path == "/" { routes::route_for("/ws") } else { routes::route_for(&path) };
    let Some(route) = route else {
        return ui::serve(&path);
    };
    if let Some(methods) = route.methods
        && !methods.contains(request.method())
    {
        return Problem::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
            .detail(format!("{} {} is not exposed by the gateway", request.method(), route.prefix))
            .into_response();
    }
    let response = if upgrade {
        websocket(&state, route.service, client, request).await
    } else {
        rest(&state, route.service, client, request).await
    };
    state.metrics.requests.with_label_values(&[route.prefix, response.status().as_str()]).inc();
    response
}

fn no_instance(service: &str) -> Response {
    Problem::unavailable(format!("no healthy instance of '{service}' is registered")).into_response()
}

async fn rest(state: &GatewayState, service: &str, client: SocketAddr, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let headers = forward_headers(&parts.headers, client);
    let idempotent = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let mut body = Some(reqwest::Body::wrap_stream(body.into_data_stream()));
    let mut tried: Vec<String> = Vec::new();
    loop {
        let Some(instance) = state.upstreams.pick(service, &tried).await else {
            return no_instance(service);
        };
        let url = format!("http://{}{path_and_query}", instance.authority());
        let mut upstream =
            state.http.request(parts.method.clone(), url).headers(headers.clone()).timeout(state.upstream_timeout);
        // Idempotent requests carry no body worth resending; others are
        // streamed once and never retried.
        if !idempotent && let Some(body) = body.take() {
            upstream = upstream.body(body);
        }
        let started = Instant::now();
        match upstream.send().await {
            Ok(response) => {
                state.metrics.upstream_duration.with_label_values(&[service]).observe(started.elapsed().as_secs_f64());
                return relay(response);
            }
            Err(error) => {
                let kind = if error.is_timeout() { "timeout" } else { "connect" };
                state.metrics.upstream_errors.with_label_values(&[service, kind]).inc();
                tracing::warn!(%error, instance = %instance.authority(), "upstream request failed");
                if error.is_timeout() {
                    return Problem::new(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout")
                        .detail(format!("'{service}' did not answer in time"))
                        .into_response();
                }
                state.upstreams.eject(&instance);
                tried.push(instance.authority());
                if !idempotent || tried.len() > 1 {
                    return Problem::new(StatusCode::BAD_GATEWAY, "Bad Gateway")
                        .detail(format!("'{service}' is unreachable"))
                        .into_response();
                }
            }
        }
    }
}

fn relay(upstream: reqwest::Response) -> Response {
    let mut response = Response::builder().status(upstream.status());
    if let Some(headers) = response.headers_mut() {
        for (name, value) in upstream.headers() {
            if !hop_by_hop(name) && name != header::CONTENT_LENGTH {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    response
        .body(Body::from_stream(upstream.bytes_stream()))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

async fn websocket(state: &GatewayState, service: &str, client: SocketAddr, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(instance) = state.upstreams.pick(service, &[]).await else {
        return no_instance(service);
    };
    let path_and_query = parts.uri.path_and_query().map_or("/ws", |p| p.as_str());
    let path_and_query =
        if parts.uri.path() == "/" { format!("/ws{}", &path_and_query[1..]) } else { path_and_query.to_string() };
    let connecting = connect(&instance, &path_and_query, forward_headers(&parts.headers, client));
    let connected = tokio::time::timeout(state.upstream_timeout, connecting)
        .await
        .unwrap_or_else(|_| Err(tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into())));
    let upstream = match connected {
        Ok(upstream) => upstream,
        Err(error) => {
            state.metrics.upstream_errors.with_label_values(&[service, "connect"]).inc();
            state.upstreams.eject(&instance);
            tracing::warn!(%error, instance = %instance.authority(), "WebSocket upstream failed");
            return Problem::new(StatusCode::BAD_GATEWAY, "Bad Gateway")
                .detail("no provider accepted the WebSocket")
                .into_response();
        }
    };
    let metrics = state.metrics.clone();
    upgrade.read_buffer_size(4096).max_message_size(MAX_MESSAGE).max_frame_size(MAX_MESSAGE).on_upgrade(
        move |socket| async move {
            metrics.ws_proxied.inc();
            bridge(socket, upstream).await;
            metrics.ws_proxied.dec();
        },
    )
}

type Upstream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(
    instance: &Instance,
    path_and_query: &str,
    headers: HeaderMap,
) -> Result<Upstream, tungstenite::Error> {
    let mut request = format!("ws://{}{path_and_query}", instance.authority()).into_client_request()?;
    for (name, value) in &headers {
        request.headers_mut().append(name.clone(), value.clone());
    }
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (stream, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    Ok(stream)
}

/// Largest client message the bridge accepts (the provider's own limit).
const MAX_MESSAGE: usize = 1024 * 1024;
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
    let to_upstream = async {
        while let Ok(Some(Ok(message))) = tokio::time::timeout(CLIENT_IDLE, client_rx.next()).await {
            let Some(message) = to_tungstenite(message) else { continue };
            let closing = matches!(message, tungstenite::Message::Close(_));
            let sent = tokio::time::timeout(SEND_TIMEOUT, upstream_tx.send(message)).await;
            if !matches!(sent, Ok(Ok(()))) || closing {
                break;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), upstream_tx.close()).await;
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
    tokio::select! {
        _ = to_upstream => {}
        _ = to_client => {}
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
