//! `commbench-server`: the pattern server on its own (`commbench serve` runs the same thing).

use clap::Parser;
use commbench_servers::{init_tracing, serve_until_signal, ServerConfig};

/// Hosts every commbench pattern (request-response, short/long polling, jobs, SSE, WebSocket) on one
/// shared event feed.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: ServerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    serve_until_signal(cli.config).await
}
