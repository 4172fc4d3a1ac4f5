//! The one `text/event-stream` parser (WHATWG HTML, "Server-sent events" § event stream
//! interpretation), incremental and bounded; the load generator, the benches and the server's tests
//! read SSE with it.
//!
//! Lines end in CRLF, LF or a lone CR — also when a CR ends one read and its LF starts the next. A
//! leading byte-order mark is skipped. A blank line ends a frame; `data` lines join with `\n`; one
//! space after the colon is dropped; a line without a colon is a field with an empty value; an `id`
//! containing NUL and a `retry` that is not all ASCII digits are ignored, as are unknown fields.
//! Text is decoded as UTF-8 with replacement characters, as a browser does.
//!
//! Every frame is returned, even one a browser would not dispatch (comments only, or no `data`):
//! [`Frame::dispatched_type`] says what a browser would do. A frame (or a line) growing past the
//! parser's bound is an error, so a stream that never ends a frame cannot take unbounded memory; the
//! frames completed by one [`Parser::push`] wait in a queue no larger than what that push handed in.

use std::collections::VecDeque;

/// The UTF-8 byte-order mark a stream may start with.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One frame: the fields between two blank lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// The last `event` field.
    pub event: Option<String>,
    /// The `data` lines joined with `\n`; `None` when the frame had no `data` line.
    pub data: Option<String>,
    /// The last valid `id` field of this frame.
    pub id: Option<String>,
    /// The last valid `retry` field: the reconnection time the server asks for, in milliseconds.
    pub retry: Option<u64>,
    /// Comment lines, without their leading `:` (the server's `: heartbeat` gives ` heartbeat`).
    pub comments: Vec<String>,
    /// The names of the fields the rules ignore: unknown ones, an `id` with NUL, a bad `retry`.
    pub ignored: Vec<String>,
}

impl Frame {
    /// The type of the event a browser dispatches for this frame: the `event` field, `message` when
    /// it is absent or empty; `None` when it dispatches nothing (the frame has no `data` line).
    pub fn dispatched_type(&self) -> Option<&str> {
        self.data.as_ref()?;
        match self.event.as_deref() {
            None | Some("") => Some("message"),
            Some(kind) => Some(kind),
        }
    }

    /// The `data` of a dispatched frame (`""` for a frame without data).
    pub fn data(&self) -> &str {
        self.data.as_deref().unwrap_or_default()
    }
}

/// A frame grew past the parser's bound without ending. The stream is broken: stop reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream frame grew past {limit} bytes without ending")]
pub struct FrameTooLarge {
    pub limit: usize,
}

/// An incremental parser: [`push`](Parser::push) bytes as they arrive, take complete frames out
/// with [`next_frame`](Parser::next_frame).
#[derive(Debug)]
pub struct Parser {
    max_frame: usize,
    /// The frame being read, and its bytes so far (lines and their line ends).
    frame: Frame,
    frame_bytes: usize,
    in_frame: bool,
    /// The start of a line whose end has not arrived yet.
    line: Vec<u8>,
    /// The last byte taken was a CR: an LF right after it belongs to the same line end.
    after_cr: bool,
    /// No line has ended yet (a byte-order mark may still lead the first one).
    at_start: bool,
    ready: VecDeque<Frame>,
}

impl Parser {
    /// A parser refusing frames (and lines) longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            frame: Frame::default(),
            frame_bytes: 0,
            in_frame: false,
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            ready: VecDeque::new(),
        }
    }

    /// Takes the next bytes of the stream; the frames they complete become available to
    /// [`next_frame`](Parser::next_frame).
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), FrameTooLarge> {
        while let Some((&first, rest)) = bytes.split_first() {
            if std::mem::take(&mut self.after_cr) && first == b'\n' {
                bytes = rest;
                continue;
            }
            let Some(end) = bytes.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                self.check(self.line.len() + bytes.len())?;
                self.line.extend_from_slice(bytes);
                return Ok(());
            };
            self.after_cr = bytes[end] == b'\r';
            let length = self.line.len() + end;
            // A blank line ends the frame and adds nothing to it.
            if length > 0 {
                self.check(length + 1)?;
            }
            if self.line.is_empty() {
                self.take_line(&bytes[..end]);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&bytes[..end]);
                self.take_line(&line);
                line.clear();
                self.line = line;
            }
            bytes = &bytes[end + 1..];
        }
        Ok(())
    }

    /// The next complete frame, in stream order.
    pub fn next_frame(&mut self) -> Option<Frame> {
        self.ready.pop_front()
    }

    /// True while part of a frame is buffered: a stream ending now ends inside a frame (which the
    /// rules discard).
    pub fn in_frame(&self) -> bool {
        self.in_frame || !self.line.is_empty()
    }

    /// Fails when the frame being read would grow past the bound with `more` bytes.
    fn check(&self, more: usize) -> Result<(), FrameTooLarge> {
        if self.frame_bytes + more > self.max_frame {
            return Err(FrameTooLarge {
                limit: self.max_frame,
            });
        }
        Ok(())
    }

    /// One whole line, without its line end.
    fn take_line(&mut self, line: &[u8]) {
        let line = match std::mem::take(&mut self.at_start) {
            true => line.strip_prefix(BOM).unwrap_or(line),
            false => line,
        };
        if line.is_empty() {
            if std::mem::take(&mut self.in_frame) {
                self.ready.push_back(std::mem::take(&mut self.frame));
                self.frame_bytes = 0;
            }
            return;
        }
        self.in_frame = true;
        self.frame_bytes += line.len() + 1;
        let line = String::from_utf8_lossy(line);
        if let Some(comment) = line.strip_prefix(':') {
            self.frame.comments.push(comment.to_owned());
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        let frame = &mut self.frame;
        match field {
            "event" => frame.event = Some(value.to_owned()),
            "data" => match &mut frame.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => frame.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => frame.id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // All digits, yet too large for u64: as good as "never", so saturate.
                frame.retry = Some(value.parse().unwrap_or(u64::MAX));
            }
            other => frame.ignored.push(other.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 10;

    /// Every frame `chunks` complete, pushed one after another.
    fn frames(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut parser = Parser::new(MAX);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk).unwrap();
            out.extend(std::iter::from_fn(|| parser.next_frame()));
        }
        out
    }

    fn event(kind: Option<&str>, id: Option<&str>, data: &str) -> Frame {
        Frame {
            event: kind.map(str::to_owned),
            id: id.map(str::to_owned),
            data: Some(data.to_owned()),
            ..Frame::default()
        }
    }

    /// What the server's stream looks like: a subscribed notice, a heartbeat, two events.
    const STREAM: &str = "retry: 1000\nevent: subscribed\ndata: {\"after\":0}\n\n\
                          : heartbeat\n\n\
                          id: 1\ndata: {\"seq\":1}\n\n\
                          id: 2\ndata: first\ndata: second\n\n";

    /// [`STREAM`] with LF, CR and CRLF line ends in turn (never a CR before an LF: that pair is
    /// one line end).
    fn mixed() -> String {
        let mut mixed = String::new();
        for (i, part) in STREAM.split_inclusive('\n').enumerate() {
            let end = ["\n", "\r", "\r\n"][i % 3];
            mixed.push_str(&part.replace('\n', end));
        }
        mixed
    }

    fn stream_frames() -> Vec<Frame> {
        let subscribed = Frame {
            retry: Some(1000),
            ..event(Some("subscribed"), None, "{\"after\":0}")
        };
        let heartbeat = Frame {
            comments: vec![" heartbeat".to_owned()],
            ..Frame::default()
        };
        vec![
            subscribed,
            heartbeat,
            event(None, Some("1"), "{\"seq\":1}"),
            event(None, Some("2"), "first\nsecond"),
        ]
    }

    #[test]
    fn lf_stream() {
        let got = frames(&[STREAM.as_bytes()]);
        assert_eq!(got, stream_frames());
        assert_eq!(got[0].dispatched_type(), Some("subscribed"));
        assert_eq!(
            got[1].dispatched_type(),
            None,
            "a heartbeat is not dispatched"
        );
        assert_eq!(got[2].dispatched_type(), Some("message"));
        assert_eq!(got[3].data(), "first\nsecond");
    }

    #[test]
    fn crlf_cr_and_mixed_line_ends() {
        let crlf = STREAM.replace('\n', "\r\n");
        let cr = STREAM.replace('\n', "\r");
        let mixed = mixed();
        assert!(
            mixed.contains("1000\n") && mixed.contains("subscribed\r") && mixed.contains("\r\n")
        );
        for text in [crlf, cr, mixed] {
            assert_eq!(frames(&[text.as_bytes()]), stream_frames(), "{text:?}");
        }
    }

    #[test]
    fn a_frame_split_at_every_byte_gives_the_same_frames() {
        let crlf = STREAM.replace('\n', "\r\n");
        let cr = STREAM.replace('\n', "\r");
        for text in [STREAM.to_owned(), crlf, cr, mixed()] {
            let bytes = text.as_bytes();
            let whole = frames(&[bytes]);
            assert_eq!(whole, stream_frames(), "{text:?}");
            for split in 0..=bytes.len() {
                let (a, b) = bytes.split_at(split);
                assert_eq!(frames(&[a, b]), whole, "split at {split} of {text:?}");
            }
            let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(frames(&one_by_one), whole, "byte by byte: {text:?}");
        }
    }

    #[test]
    fn a_cr_at_the_end_of_a_read_and_its_lf_are_one_line_end() {
        // Two line ends would be a blank line and dispatch `data: a` alone.
        let got = frames(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(got, [event(None, None, "a\nb")]);
    }

    #[test]
    fn field_rules() {
        let got = frames(&[b"data\ndata:x\ndata:  y\n\
                             event\nid: a\0b\nretry: 12a\nretry: \nfoo: bar\n: c\n\n"]);
        assert_eq!(got.len(), 1);
        let frame = &got[0];
        assert_eq!(
            frame.data(),
            "\nx\n y",
            "no colon: empty value; one space dropped"
        );
        assert_eq!(frame.event.as_deref(), Some(""));
        assert_eq!(frame.dispatched_type(), Some("message"));
        assert_eq!(frame.id, None, "an id with NUL is ignored");
        assert_eq!(frame.retry, None);
        assert_eq!(frame.ignored, ["id", "retry", "retry", "foo"]);
        assert_eq!(frame.comments, [" c"]);
        let got = frames(&[b"id: 7\nid: 8\0\nretry: 99999999999999999999999\nevent: x\n\n"]);
        assert_eq!(got[0].id.as_deref(), Some("7"), "the last valid id");
        assert_eq!(got[0].retry, Some(u64::MAX));
        assert_eq!(got[0].dispatched_type(), None, "no data: not dispatched");
    }

    #[test]
    fn a_leading_bom_is_skipped_even_when_split() {
        let text = b"\xEF\xBB\xBFdata: x\n\n";
        for split in 0..=3 {
            let (a, b) = text.split_at(split);
            assert_eq!(
                frames(&[a, b]),
                [event(None, None, "x")],
                "split at {split}"
            );
        }
        // Only at the start of the stream: later it is part of the field name.
        let got = frames(&[b"data: x\n\n\xEF\xBB\xBFdata: y\n\n"]);
        assert_eq!(got[1].ignored, ["\u{feff}data"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let got = frames(&[b"data: a\xFFb\n\n"]);
        assert_eq!(got[0].data(), "a\u{fffd}b");
    }

    #[test]
    fn blank_lines_alone_make_no_frame_and_an_unended_frame_is_pending() {
        let mut parser = Parser::new(MAX);
        parser.push(b"\n\r\n\r\ndata: x\n").unwrap();
        assert_eq!(parser.next_frame(), None);
        assert!(parser.in_frame());
        parser.push(b"\n").unwrap();
        assert_eq!(parser.next_frame(), Some(event(None, None, "x")));
        assert!(!parser.in_frame());
        parser.push(b"da").unwrap();
        assert!(parser.in_frame(), "half a line is half a frame");
    }

    #[test]
    fn oversized_frames_and_lines_are_refused() {
        // A line that never ends.
        let mut parser = Parser::new(16);
        parser.push(b"data: 0123456").unwrap();
        assert_eq!(parser.push(b"789abcdef"), Err(FrameTooLarge { limit: 16 }));
        // Short lines, but a frame that never ends.
        let mut parser = Parser::new(16);
        parser.push(b"data: a\ndata: b\n").unwrap();
        assert!(parser.push(b"data: c\n").is_err());
        // Many frames within the bound are fine, however many arrive at once.
        let mut parser = Parser::new(16);
        parser
            .push("data: abcdefgh\n\n".repeat(100).as_bytes())
            .unwrap();
        assert_eq!(std::iter::from_fn(|| parser.next_frame()).count(), 100);
        // A frame of exactly the bound (its line ends included) is accepted.
        let mut parser = Parser::new(16);
        parser.push(b"data: 123456789\n\n").unwrap();
        assert_eq!(
            parser.next_frame().map(|f| f.data),
            Some(Some("123456789".into()))
        );
    }
}
