//! The startup convention every service crate follows (zero2prod's
//! `Application::build`): `build(config, ...)` binds its listener (port 0
//! allowed) and returns the bound address with the future that serves until
//! the shutdown token is cancelled.

use std::net::SocketAddr;

use futures::future::BoxFuture;

pub struct Started {
    pub addr: SocketAddr,
    /// The bound gRPC address of a service that serves gRPC too (ingestion).
    pub grpc: Option<SocketAddr>,
    pub serve: BoxFuture<'static, ()>,
}

impl Started {
    /// Spawns the serving future; returns the address and the task.
    pub fn spawn(self) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        (self.addr, tokio::spawn(self.serve))
    }
}
