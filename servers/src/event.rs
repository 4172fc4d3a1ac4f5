//! One published event and its wire encodings, built once per publish and shared by every subscriber.
//!
//! Every pattern carries the same JSON object per event, `{"topic":"t","seq":7,"data":"…"}` (or
//! `"data_b64"` when the payload is not UTF-8), so byte counts compare like with like. The SSE frame is
//! pre-built too; poll bodies reuse the JSON bytes without copying. The `/ws` WebSocket frame and
//! the Socket.IO one are built on first use, once, so patterns nobody follows cost nothing, and
//! every subscriber writes the same bytes; so is a GraphQL subscription item, for the first
//! selection that asks.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

use crate::topic::TopicName;

/// A published event shared by reference between history, channels and subscribers.
pub type SharedEvent = Arc<Event>;

#[derive(Debug)]
pub struct Event {
    pub topic: TopicName,
    /// Per-topic sequence number, strictly increasing from 1.
    pub seq: u64,
    /// The opaque payload as published.
    pub payload: Bytes,
    /// The JSON object every pattern sends for this event.
    pub json: Bytes,
    /// The complete SSE frame: `id: {seq}\ndata: {json}\n\n`.
    pub sse: Bytes,
    /// The SSE frame as one HTTP/1.1 chunk, built by its first SSE subscriber.
    sse_chunk: OnceLock<Bytes>,
    /// The `/ws` binary frame holding the JSON, built by its first WebSocket subscriber.
    ws_frame: OnceLock<Bytes>,
    /// The WebSocket text frame holding the Socket.IO event packet `42["event",{json}]`, built by
    /// its first Socket.IO subscriber.
    socketio_frame: OnceLock<Bytes>,
    /// A GraphQL subscription item for this event (`patterns/graphql/direct.rs`): the signature of
    /// the selection of the first subscriber that wrote one, and the item's JSON, which every
    /// subscriber with the same selection then writes.
    graphql_item: OnceLock<(Bytes, Bytes)>,
}

impl Event {
    /// Builds the event and its encodings; the only place an event is ever encoded.
    pub fn new(topic: TopicName, seq: u64, payload: Bytes) -> SharedEvent {
        let json = encode_json(&topic, seq, &payload);
        let mut sse = BytesMut::with_capacity(json.len() + 32);
        sse.put_slice(b"id: ");
        sse.put_slice(seq.to_string().as_bytes());
        sse.put_slice(b"\ndata: ");
        sse.put_slice(&json);
        sse.put_slice(b"\n\n");
        Arc::new(Event {
            topic,
            seq,
            payload,
            json,
            sse: sse.freeze(),
            sse_chunk: OnceLock::new(),
            ws_frame: OnceLock::new(),
            socketio_frame: OnceLock::new(),
            graphql_item: OnceLock::new(),
        })
    }

    /// The SSE frame as one chunk of a chunked HTTP/1.1 body, framed once and shared by every SSE
    /// subscriber.
    pub fn sse_chunk(&self) -> &Bytes {
        self.sse_chunk
            .get_or_init(|| crate::handover::chunk(&self.sse))
    }

    /// The complete `/ws` WebSocket frame carrying this event (the JSON as a binary message),
    /// framed once and shared by every WebSocket subscriber.
    pub fn ws_frame(&self) -> &Bytes {
        self.ws_frame
            .get_or_init(|| crate::ws_conn::frame(crate::ws_conn::BINARY, &self.json))
    }

    /// The complete WebSocket frame carrying this event's Socket.IO packet (the event JSON as the
    /// argument of an `event` event, a text message), encoded once and shared by every Socket.IO
    /// subscriber.
    pub fn socketio_frame(&self) -> &Bytes {
        self.socketio_frame.get_or_init(|| {
            let packet = crate::socketio_wire::event_bytes("event", &self.json);
            crate::ws_conn::frame(crate::ws_conn::TEXT, &packet)
        })
    }

    /// The GraphQL subscription item of the selection named by `signature`: encoded once for the
    /// first selection that asks and shared by every subscriber with it; another selection's is
    /// encoded for the asker alone.
    pub fn graphql_item(&self, signature: &Bytes, encode: impl Fn() -> Bytes) -> Bytes {
        let (first, item) = self
            .graphql_item
            .get_or_init(|| (signature.clone(), encode()));
        if first == signature {
            item.clone()
        } else {
            encode()
        }
    }

    /// Bytes this event occupies in memory (payload plus encodings), for history accounting. The
    /// WebSocket frames and the GraphQL item are left out: they may be built after the event entered history, and the
    /// accounting must not change while the event is held (each adds about the JSON's size again).
    pub fn footprint(&self) -> usize {
        self.payload.len() + self.json.len() + self.sse.len()
    }
}

fn encode_json(topic: &TopicName, seq: u64, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + topic.as_str().len() + 48);
    out.extend_from_slice(b"{\"topic\":\"");
    // Topic names are restricted to [A-Za-z0-9_-], so they never need escaping.
    out.extend_from_slice(topic.as_str().as_bytes());
    out.extend_from_slice(b"\",\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    match std::str::from_utf8(payload) {
        Ok(text) => {
            out.extend_from_slice(b",\"data\":");
            // Serialising a &str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, text);
        }
        Err(_) => {
            out.extend_from_slice(b",\"data_b64\":\"");
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(payload)
                    .as_bytes(),
            );
            out.push(b'"');
        }
    }
    out.push(b'}');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> TopicName {
        TopicName::parse("t1").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn utf8_payload_is_a_json_string() {
        let e = Event::new(topic(), 7, Bytes::from_static(b"he said \"hi\"\n"));
        let v: serde_json::Value = serde_json::from_slice(&e.json).unwrap_or_default();
        assert_eq!(v["topic"], "t1");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["data"], "he said \"hi\"\n");
    }

    #[test]
    fn binary_payload_is_base64() {
        let e = Event::new(topic(), 1, Bytes::from_static(&[0xff, 0x00, 0x80]));
        let v: serde_json::Value = serde_json::from_slice(&e.json).unwrap_or_default();
        assert_eq!(v["data_b64"], "/wCA");
    }

    #[test]
    fn websocket_frames_wrap_the_json_once() {
        let e = Event::new(topic(), 3, Bytes::from_static(b"x"));
        let footprint = e.footprint();
        let packet = br#"42["event",{"topic":"t1","seq":3,"data":"x"}]"#;
        let frame = e.socketio_frame().clone();
        assert_eq!(frame[..2], [0x81, packet.len() as u8]);
        assert_eq!(&frame[2..], packet);
        let ws = e.ws_frame().clone();
        assert_eq!(ws[..2], [0x82, e.json.len() as u8]);
        assert_eq!(&ws[2..], &e.json[..]);
        // The same bytes every time, and history accounting is unchanged.
        assert_eq!(e.socketio_frame().as_ptr(), frame.as_ptr());
        assert_eq!(e.ws_frame().as_ptr(), ws.as_ptr());
        assert_eq!(e.footprint(), footprint);
    }

    #[test]
    fn sse_frame_is_one_event_with_id() {
        let e = Event::new(topic(), 42, Bytes::from_static(b"line1\nline2"));
        let frame = std::str::from_utf8(&e.sse).unwrap_or_default();
        assert!(frame.starts_with("id: 42\ndata: {"));
        assert!(frame.ends_with("}\n\n"));
        // The JSON escapes newlines, so the frame has exactly the two framing line breaks plus the end.
        assert_eq!(frame.matches('\n').count(), 3);
    }

    #[test]
    fn a_graphql_item_is_shared_by_its_selection_and_encoded_apart_for_others() {
        let event = Event::new(topic(), 1, Bytes::from_static(b"x"));
        let (first, other) = (Bytes::from_static(b"A"), Bytes::from_static(b"B"));
        assert_eq!(event.graphql_item(&first, || Bytes::from_static(b"a")), "a");
        // The first selection's item is kept: a second encoding is never asked for.
        let shared = event.graphql_item(&first, || unreachable!("encoded twice"));
        assert_eq!(shared, "a");
        assert_eq!(event.graphql_item(&other, || Bytes::from_static(b"b")), "b");
        assert_eq!(event.graphql_item(&first, || Bytes::from_static(b"c")), "a");
    }
}
