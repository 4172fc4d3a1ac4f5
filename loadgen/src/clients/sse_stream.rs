//! An SSE response on a counted connection, shared by the SSE feed, SSE job and `sse-url` clients:
//! open it, and read its body into the shared event-stream parser
//! (`commbench_servers::event_stream`).

use commbench_servers::event_stream::Parser;

use super::ClientCtx;
use crate::{http::ClientError, http_stream::StreamResponse, record::Metric};

/// Opens `GET path` with `headers` (e.g. `Last-Event-ID`) and returns the stream of a 2xx answer,
/// recording the connect time.
pub async fn open(
    ctx: &ClientCtx,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<StreamResponse, ClientError> {
    let started = ctx.now_ns();
    let (status, stream) =
        StreamResponse::get(&ctx.target, ctx.source, &ctx.shared.recorder, path, headers).await?;
    if !status.is_success() {
        return Err(ClientError::Status(status));
    }
    let micros = ctx.now_ns().saturating_sub(started) / 1_000;
    ctx.recorder().record(ctx.id, Metric::Connect, micros);
    Ok(stream)
}

/// Reads the next piece of the body into `parser`. False when the stream ended, failed or sent an
/// oversized frame (both counted as errors).
pub async fn read_chunk(body: &mut StreamResponse, parser: &mut Parser, ctx: &ClientCtx) -> bool {
    match body.next_data().await {
        Ok(Some(data)) => {
            if parser.push(data).is_err() {
                ctx.recorder().counters.error("sse_frame_too_large");
                return false;
            }
            true
        }
        Ok(None) => false,
        Err(error) => {
            ctx.error(&error);
            false
        }
    }
}
