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

/// A listener that could not be bound, named: `cannot bind the provider's
/// gRPC listener on 0.0.0.0:50052: Address in use (os error 98)`.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind the {listener} on {addr}: {source}")]
pub struct BindError {
    pub listener: &'static str,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds `host:port` (port 0 picks a free one) for `listener` (its name in
/// errors) and returns the bound address. Tokio sets `SO_REUSEADDR` on
/// Unix listeners, so a restart binds even while sockets of the previous
/// run are in TIME_WAIT.
pub async fn bind_tcp(listener: &'static str, host: IpAddr, port: u16) -> Result<(TcpListener, SocketAddr), BindError> {
    let addr = SocketAddr::new(host, port);
    let error = |source| BindError { listener, addr, source };
    let bound = TcpListener::bind(addr).await.map_err(error)?;
    let local = bound.local_addr().map_err(error)?;
    Ok((bound, local))
}

/// [`bind_tcp`] for an HTTP server. Accepted sockets send at once: with
/// Nagle's algorithm a small frame written while the previous one is
/// unacknowledged waits for the peer's delayed ACK (40 ms on Linux), which
/// is what a stream of small WebSocket frames hits.
pub async fn bind(listener: &'static str, host: IpAddr, port: u16) -> Result<(Listener, SocketAddr), BindError> {
    let (bound, addr) = bind_tcp(listener, host, port).await?;
    Ok((bound.tap_io(no_delay as fn(&mut TcpStream)), addr))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_is_named_with_its_listener() {
        let (_held, addr) = bind_tcp("first listener", IpAddr::from([127, 0, 0, 1]), 0).await.expect("a free port");
        let Err(error) = bind("provider's HTTP listener", addr.ip(), addr.port()).await else {
            panic!("the port is taken, yet it was bound again");
        };
        let text = error.to_string();
        assert!(text.starts_with(&format!("cannot bind the provider's HTTP listener on {addr}: ")), "{text}");
    }

    /// Sockets in TIME_WAIT on `port` (state 06 in /proc/net/tcp).
    fn time_wait_on(port: u16) -> usize {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let local = format!(":{port:04X} ");
        table
            .lines()
            .skip(1)
            .filter(|line| line.contains(&local) && line.split_whitespace().nth(3) == Some("06"))
            .count()
    }

    #[tokio::test]
    async fn a_restart_binds_the_port_while_closed_connections_are_in_time_wait() {
        use tokio::io::AsyncReadExt;
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let (listener, addr) = bind_tcp("first run", loopback, 0).await.expect("a free port");
        for _ in 0..20 {
            let mut client = TcpStream::connect(addr).await.expect("connects");
            let (server_side, _) = listener.accept().await.expect("accepts");
            // The server closes first, so its side ends in TIME_WAIT.
            drop(server_side);
            let _ = client.read(&mut [0; 1]).await;
        }
        drop(listener);
        assert!(time_wait_on(addr.port()) > 0, "no socket in TIME_WAIT on {addr}: the test proves nothing");
        bind("second run", loopback, addr.port()).await.expect("the port binds again at once");
    }
}
