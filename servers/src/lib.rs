//! commbench's server side: one server hosting every communication pattern on a shared event feed.
//!
//! Start with [`app::run`] (an already-bound listener plus a shutdown future) or
//! [`app::ServerHandle::spawn`]; patterns live in `patterns/`, the feed behind [`bus::Bus`].

pub mod app;
pub mod backoff;
pub mod broker;
pub mod bus;
pub mod child;
pub mod config;
pub mod conn_timeouts;
pub mod counted_io;
pub mod error;
pub mod event;
pub mod event_stream;
pub mod extract;
pub mod fd_limit;
pub mod feed_api;
pub mod handover;
pub mod listener;
pub mod lock;
pub mod log;
pub mod metrics;
pub mod patterns;
pub mod queue;
pub mod redis;
pub mod serve;
pub mod socketio_wire;
pub mod spool;
pub mod topic;
pub mod units;
pub mod vectored;
pub mod wake_flag;
pub mod ws_close;
pub mod ws_conn;

pub use app::{run, AppState, ServerHandle};
pub use config::ServerConfig;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Binds with a deep accept queue (4096; the kernel caps it at `net.core.somaxconn`), so a burst of
/// thousands of connecting clients is queued rather than having SYNs dropped.
pub fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Starts `tracing` output on stderr, honouring `RUST_LOG` (default `info`). The Kafka client's own
/// logs are off unless `RUST_LOG` names `rskafka`: it logs at ERROR the "unknown topic" a log that
/// does not exist yet gets, an expected answer (`log::kafka` reports real failures itself).
pub fn init_tracing() {
    let given = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let directives = if given.contains("rskafka") {
        given
    } else {
        format!("{given},rskafka=off")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rskafka=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Binds `config.bind` and serves until SIGINT/SIGTERM; what both server binaries run.
pub async fn serve_until_signal(config: ServerConfig) -> anyhow::Result<()> {
    serve_until(config, shutdown_signal()).await
}

/// Binds `config.bind` and serves until `shutdown` resolves.
pub async fn serve_until(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    config.validate().map_err(anyhow::Error::msg)?;
    let listener =
        bind_listener(config.bind).with_context(|| format!("cannot listen on {}", config.bind))?;
    let addr = listener.local_addr()?;
    let state = AppState::connect(config).await?;
    tracing::info!(%addr, "commbench server listening");
    // Machine-readable line for a parent process (the load generator) that started us on port 0.
    println!("listening on http://{addr}");
    run(listener, state, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
