//! Outbound HTTP client and listener helpers.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Once,
    time::Duration,
};

use axum::serve::{ListenerExt, TapIo};
use tokio::net::{TcpListener, TcpStream};

/// A reqwest client; installs the ring crypto provider once (reqwest is built
/// without one, see docs/decisions.md).
pub fn client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .expect("http client builds")
}

pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A listener whose accepted sockets have `TCP_NODELAY` set.
pub type Listener = TapIo<TcpListener, fn(&mut TcpStream)>;

/// Binds `host:port` (port 0 picks a free one). Accepted sockets send at
/// once: with Nagle's algorithm a small frame written while the previous
/// one is unacknowledged waits for the peer's delayed ACK (40 ms on Linux),
/// which is what a stream of small WebSocket frames hits.
pub async fn bind(host: std::net::IpAddr, port: u16) -> std::io::Result<(Listener, SocketAddr)> {
    let listener = TcpListener::bind(SocketAddr::new(host, port)).await?;
    let addr = listener.local_addr()?;
    Ok((listener.tap_io(no_delay as fn(&mut TcpStream)), addr))
}

fn no_delay(socket: &mut TcpStream) {
    if let Err(error) = socket.set_nodelay(true) {
        tracing::warn!(%error, "cannot set TCP_NODELAY");
    }
}

/// An address others can dial: a wildcard bind (`0.0.0.0`, `::`) becomes loopback.
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}
