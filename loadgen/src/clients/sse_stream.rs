//! An SSE response on a counted connection, shared by the SSE feed, SSE job and `sse-url` clients:
//! open it, and read its body into the shared event-stream parser
//! (`commbench_servers::event_stream`).

use bytes::Bytes;
use commbench_servers::event_stream::Parser;
use http::Method;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::ClientCtx;
use crate::{
    http::{ClientError, HttpConn},
    record::Metric,
};

/// Opens `GET path` with `headers` (e.g. `Last-Event-ID`) and returns the body of a 2xx answer,
/// recording the connect time.
pub async fn open(
    ctx: &ClientCtx,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Incoming, ClientError> {
    let started = ctx.now_ns();
    let mut conn = HttpConn::open(&ctx.target, ctx.source, &ctx.shared.recorder).await?;
    let response = conn.send(Method::GET, path, headers, Bytes::new()).await?;
    if !response.status().is_success() {
        return Err(ClientError::Status(response.status()));
    }
    let micros = ctx.now_ns().saturating_sub(started) / 1_000;
    ctx.recorder().record(ctx.id, Metric::Connect, micros);
    Ok(response.into_body())
}

/// Reads the next body chunk into `parser`. False when the stream ended, failed or sent an
/// oversized frame (both counted as errors).
pub async fn read_chunk(body: &mut Incoming, parser: &mut Parser, ctx: &ClientCtx) -> bool {
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                // Trailers carry no events.
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if parser.push(&data).is_err() {
                    ctx.recorder().counters.error("sse_frame_too_large");
                    return false;
                }
                return true;
            }
            Some(Err(error)) => {
                ctx.error(&ClientError::Request(error));
                return false;
            }
            None => return false,
        }
    }
}
