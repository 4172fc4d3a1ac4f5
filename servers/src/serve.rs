//! The accept loop: each accepted socket is one hyper HTTP/1 connection (upgrades on, for the
//! WebSocket edge) serving the router; on shutdown the listener closes and every connection finishes
//! what it is answering, then closes. Not `axum::serve`: hyper's socket here is [`Detachable`], so a
//! streaming answer (SSE) takes the socket over once its head is written (`handover.rs`), and the
//! shutdown signal each connection polls takes no lock shared by all of them.

use std::{pin::pin, sync::Arc};

use axum::{serve::Listener, Router};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    conn_timeouts::Tracked,
    handover::{Detachable, Tenure},
    listener::CountingListener,
    metrics::Metrics,
};

/// Serves `router` on `listener` until `shutdown` is cancelled, then until every connection has
/// finished its answers (the caller bounds that wait); refusals are counted in `metrics`.
pub async fn serve(
    mut listener: CountingListener,
    router: Router,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    // Each connection holds an `open` receiver (its socket's [`Tenure`], which goes with the socket
    // when it is handed over); `closed()` resolves when the last one is gone.
    let (open_tx, open_rx) = watch::channel(());
    // Dropping `stop_rx` tells every connection to finish. A watch sender's `closed()` is what each
    // connection polls on every wake-up: unlike a cancellation token's, it takes no
    // lock shared by all connections.
    let (stop_tx, stop_rx) = watch::channel(());
    loop {
        let (io, info) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let io = Detachable::new(io, info.handover.clone(), Tenure::new(open_rx.clone()));
        let service = Tracked::new(router.clone(), info, metrics.clone());
        let stop = stop_tx.clone();
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
                () = stop.closed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop((listener, open_rx, stop_rx));
    open_tx.closed().await;
}
