//! Incremental `text/event-stream` parsing with a bounded buffer.

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::ClientCtx;
use crate::http::ClientError;

/// Reads the next body chunk into `parser`. False when the stream ended, failed or sent an
/// oversized frame (both counted as errors).
pub async fn read_chunk(body: &mut Incoming, parser: &mut SseParser, ctx: &ClientCtx) -> bool {
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

/// One dispatched SSE event (comments are skipped, heartbeats included).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseFrame {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

pub struct SseParser {
    buf: BytesMut,
    max: usize,
}

/// A frame grew past the parser's bound without ending.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameTooLarge(pub usize);

impl SseParser {
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max: max_frame,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<(), FrameTooLarge> {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > self.max && !self.buf.windows(2).any(|w| w == b"\n\n") {
            return Err(FrameTooLarge(self.max));
        }
        Ok(())
    }

    /// The next complete frame, if one is buffered. Comment-only blocks yield a frame with no event,
    /// id or data (callers count them as heartbeats).
    pub fn next_frame(&mut self) -> Option<SseFrame> {
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let block = self.buf.split_to(end);
        self.buf.advance(2);
        let mut frame = SseFrame::default();
        for line in block[..].split(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(line);
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => frame.event = Some(value.to_owned()),
                "id" => frame.id = Some(value.to_owned()),
                "data" => {
                    if !frame.data.is_empty() {
                        frame.data.push('\n');
                    }
                    frame.data.push_str(value);
                }
                _ => {}
            }
        }
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_across_chunks() {
        let mut p = SseParser::new(1024);
        p.push(b"retry: 1000\nevent: subscribed\ndata: {}\n\nid: 1\nda")
            .unwrap();
        let first = p.next_frame().unwrap();
        assert_eq!(first.event.as_deref(), Some("subscribed"));
        assert!(p.next_frame().is_none());
        p.push(b"ta: x\n\n: heartbeat\n\n").unwrap();
        let second = p.next_frame().unwrap();
        assert_eq!(
            (second.id.as_deref(), second.data.as_str()),
            (Some("1"), "x")
        );
        assert_eq!(p.next_frame(), Some(SseFrame::default()));
    }

    #[test]
    fn unbounded_frames_are_refused() {
        let mut p = SseParser::new(16);
        assert_eq!(p.push(&[b'a'; 32]), Err(FrameTooLarge(16)));
    }
}
