//! The accept loop: each accepted socket is one hyper HTTP/1 connection (upgrades on, for the
//! WebSocket edge) serving the router; on shutdown the listener closes and every connection finishes
//! what it is answering, then closes. Not `axum::serve`: its version-sniffing builder reads a
//! request's first bytes on their own, which makes hyper grow its read buffer to 16 KiB for the
//! whole life of the connection (an SSE stream's, say) instead of 8 KiB.

use std::pin::pin;

use axum::{serve::Listener, Router};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{conn_timeouts::Tracked, listener::CountingListener};

/// Serves `router` on `listener` until `shutdown` is cancelled, then until every connection has
/// finished its answers (the caller bounds that wait).
pub async fn serve(mut listener: CountingListener, router: Router, shutdown: CancellationToken) {
    // Each connection holds a receiver; `closed()` resolves when the last one is gone.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let (io, info) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let service = Tracked::new(router.clone(), info);
        let (shutdown, open) = (shutdown.clone(), open_rx.clone());
        tokio::spawn(async move {
            let mut builder = http1::Builder::new();
            // The socket's own deadlines (`conn_timeouts.rs`) bound a slow head.
            builder.header_read_timeout(None);
            let mut connection = pin!(builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades());
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::trace!(%error, "connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(open);
        });
    }
    drop((listener, open_rx));
    open_tx.closed().await;
}
