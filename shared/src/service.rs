//! The startup convention every service crate follows (zero2prod's
//! `Application::build`): `build(config, ...)` binds its listeners (port 0
//! allowed), hands its server and background workers to the role's
//! [`Supervisor`], and returns the bound address with the future that
//! resolves once every worker has stopped after the shutdown token.

use std::net::SocketAddr;

use futures::future::BoxFuture;

use crate::supervisor::{Supervisor, WorkerFailure};

pub struct Started {
    pub addr: SocketAddr,
    /// The bound gRPC address of a service that serves gRPC too.
    pub grpc: Option<SocketAddr>,
    /// The role's workers (tests abort one through it).
    pub supervisor: Supervisor,
    /// Resolves after shutdown; `Err` when a worker the role cannot run
    /// without ended early (it cancelled the shutdown token then).
    pub serve: BoxFuture<'static, Result<(), WorkerFailure>>,
}

/// A spawned role: `Err` when a worker it cannot run without failed.
pub type Serving = tokio::task::JoinHandle<Result<(), WorkerFailure>>;

impl Started {
    /// Spawns the serving future; returns the address and the task.
    pub fn spawn(self) -> (SocketAddr, Serving) {
        (self.addr, tokio::spawn(self.serve))
    }
}
