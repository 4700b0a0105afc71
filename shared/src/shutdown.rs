//! Graceful shutdown through one cancellation token: listeners stop,
//! consumers finish and ack, sockets get a close frame.

pub use tokio_util::sync::CancellationToken as Shutdown;

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
pub async fn on_signal(shutdown: Shutdown) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
            _ = shutdown.cancelled() => {},
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = ctrl_c => {},
        _ = shutdown.cancelled() => {},
    }
    shutdown.cancel();
}
