//! Engine.IO v4 / Socket.IO v5 packets as they travel in WebSocket text frames: one decoder and one
//! set of encoders, shared by the server (`patterns/socketio`) and the load generator's client.
//!
//! Over WebSocket every Engine.IO packet is one frame, `<type>[<data>]`; a Socket.IO packet is the
//! data of an Engine.IO `message` (type 4), encoded by the default parser as
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]`, the namespace only when it is
//! not `/`. Spec: github.com/socketio/engine.io-protocol and github.com/socketio/socket.io-protocol.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The one namespace every client connects to first.
pub const MAIN_NAMESPACE: &str = "/";

/// Engine.IO `ping` (the server sends it every `pingInterval` in v4).
pub const PING: &str = "2";
/// Engine.IO `pong`, the client's answer to a ping.
pub const PONG: &str = "3";
/// Engine.IO `close`: the sender closes the session.
pub const CLOSE: &str = "1";

/// Event names the reference implementation keeps for itself; a peer may not emit them.
const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Why a frame is not a valid packet. The message names what was wrong, for a close reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty Engine.IO packet")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    EngineType(char),
    #[error("unknown Socket.IO packet type {0:?}")]
    PacketType(char),
    #[error("malformed attachment count")]
    Attachments,
    #[error("ack id is not a number below 2^53")]
    AckId,
    #[error("payload is not valid JSON: {0}")]
    Json(String),
    #[error("invalid payload for a {kind} packet: {expected}")]
    Payload {
        kind: &'static str,
        expected: &'static str,
    },
}

/// One Engine.IO packet received in a WebSocket text frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnginePacket<'a> {
    /// The handshake, `0{"sid",…}` (see [`Handshake`]).
    Open(&'a str),
    Close,
    Ping(&'a str),
    Pong(&'a str),
    /// A Socket.IO packet (decode it with [`decode_packet`]).
    Message(&'a str),
    Upgrade,
    Noop,
}

/// Splits a text frame into its Engine.IO packet.
pub fn decode_engine(text: &str) -> Result<EnginePacket<'_>, WireError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(WireError::Empty)?;
    let data = chars.as_str();
    Ok(match kind {
        '0' => EnginePacket::Open(data),
        '1' => EnginePacket::Close,
        '2' => EnginePacket::Ping(data),
        '3' => EnginePacket::Pong(data),
        '4' => EnginePacket::Message(data),
        '5' => EnginePacket::Upgrade,
        '6' => EnginePacket::Noop,
        other => return Err(WireError::EngineType(other)),
    })
}

/// The Engine.IO handshake the server sends first: `0` + this JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake {
    pub sid: String,
    /// Transports the session may upgrade to (none for a WebSocket session).
    pub upgrades: Vec<String>,
    /// Milliseconds between the server's pings.
    pub ping_interval: u64,
    /// Milliseconds the client has to answer a ping (and the server's margin before a client
    /// considers the connection dead: no ping within interval + timeout).
    pub ping_timeout: u64,
    /// Largest packet, in bytes, the server accepts.
    pub max_payload: u64,
}

impl Handshake {
    /// The `open` packet.
    pub fn encode(&self) -> String {
        // A struct of strings and integers always serialises.
        format!("0{}", serde_json::to_string(self).unwrap_or_default())
    }

    /// Reads an `open` packet's data (what follows the `0`).
    pub fn decode(data: &str) -> Result<Self, WireError> {
        serde_json::from_str(data).map_err(|e| WireError::Json(e.to_string()))
    }
}

/// Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl PacketType {
    fn from_char(c: char) -> Result<Self, WireError> {
        Ok(match c {
            '0' => PacketType::Connect,
            '1' => PacketType::Disconnect,
            '2' => PacketType::Event,
            '3' => PacketType::Ack,
            '4' => PacketType::ConnectError,
            '5' => PacketType::BinaryEvent,
            '6' => PacketType::BinaryAck,
            other => return Err(WireError::PacketType(other)),
        })
    }

    fn digit(self) -> char {
        match self {
            PacketType::Connect => '0',
            PacketType::Disconnect => '1',
            PacketType::Event => '2',
            PacketType::Ack => '3',
            PacketType::ConnectError => '4',
            PacketType::BinaryEvent => '5',
            PacketType::BinaryAck => '6',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PacketType::Connect => "CONNECT",
            PacketType::Disconnect => "DISCONNECT",
            PacketType::Event => "EVENT",
            PacketType::Ack => "ACK",
            PacketType::ConnectError => "CONNECT_ERROR",
            PacketType::BinaryEvent => "BINARY_EVENT",
            PacketType::BinaryAck => "BINARY_ACK",
        }
    }

    fn is_binary(self) -> bool {
        matches!(self, PacketType::BinaryEvent | PacketType::BinaryAck)
    }
}

/// One decoded Socket.IO packet, borrowing from the frame.
#[derive(Debug, Clone)]
pub struct Packet<'a> {
    pub kind: PacketType,
    /// `/` unless the packet names another namespace.
    pub namespace: &'a str,
    /// Binary attachments that follow in separate frames (binary packet types only).
    pub attachments: u32,
    /// The acknowledgement id, when the sender asks for (or answers with) an ack.
    pub id: Option<u64>,
    /// The payload of CONNECT and CONNECT_ERROR, as raw JSON.
    pub data: Option<&'a RawValue>,
    /// The array elements of EVENT (name first) and ACK payloads, as raw JSON.
    pub args: Vec<&'a RawValue>,
}

impl<'a> Packet<'a> {
    /// An EVENT's name (its first element; checked to be a string by the decoder).
    pub fn event_name(&self) -> Option<Cow<'a, str>> {
        let first = *self.args.first()?;
        serde_json::from_str::<Cow<'a, str>>(first.get()).ok()
    }

    /// An EVENT's arguments after its name, or an ACK's arguments.
    pub fn event_args(&self) -> &[&'a RawValue] {
        match self.kind {
            PacketType::Event | PacketType::BinaryEvent => self.args.get(1..).unwrap_or(&[]),
            _ => &self.args,
        }
    }
}

/// Largest integer JavaScript represents exactly; the reference parser reads ack ids as numbers.
const MAX_ACK_ID: u64 = (1 << 53) - 1;

/// Decodes a Socket.IO packet (the data of an Engine.IO `message`) and checks its payload shape as
/// the reference parser does: CONNECT an object (or nothing), DISCONNECT nothing, EVENT a non-empty
/// array led by a non-reserved name, ACK an array, CONNECT_ERROR an object or a string.
pub fn decode_packet(text: &str) -> Result<Packet<'_>, WireError> {
    let mut chars = text.chars();
    let kind = PacketType::from_char(chars.next().ok_or(WireError::Empty)?)?;
    let mut rest = chars.as_str();
    let mut attachments = 0;
    if kind.is_binary() {
        let (count, after) = rest.split_once('-').ok_or(WireError::Attachments)?;
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(WireError::Attachments);
        }
        attachments = count.parse().map_err(|_| WireError::Attachments)?;
        rest = after;
    }
    let mut namespace = MAIN_NAMESPACE;
    if rest.starts_with('/') {
        // The namespace runs to the next comma (which is dropped) or to the end.
        (namespace, rest) = match rest.split_once(',') {
            Some((ns, after)) => (ns, after),
            None => (rest, ""),
        };
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let mut id = None;
    if digits > 0 {
        let value: u64 = rest[..digits].parse().map_err(|_| WireError::AckId)?;
        if value > MAX_ACK_ID {
            return Err(WireError::AckId);
        }
        id = Some(value);
        rest = &rest[digits..];
    }
    let mut packet = Packet {
        kind,
        namespace,
        attachments,
        id,
        data: None,
        args: Vec::new(),
    };
    let invalid = |expected| WireError::Payload {
        kind: kind.name(),
        expected,
    };
    let json_error = |e: serde_json::Error| WireError::Json(e.to_string());
    match kind {
        PacketType::Connect | PacketType::ConnectError => {
            if !rest.is_empty() {
                let data: &RawValue = serde_json::from_str(rest).map_err(json_error)?;
                let object = data.get().starts_with('{');
                let string = data.get().starts_with('"');
                if !(object || (kind == PacketType::ConnectError && string)) {
                    return Err(invalid(if kind == PacketType::Connect {
                        "an object"
                    } else {
                        "an object or a string"
                    }));
                }
                packet.data = Some(data);
            }
        }
        PacketType::Disconnect => {
            if !rest.is_empty() {
                return Err(invalid("no payload"));
            }
        }
        PacketType::Event | PacketType::BinaryEvent => {
            packet.args = array(rest).ok_or(invalid("a non-empty array"))??;
            let name = packet
                .event_name()
                .ok_or(invalid("an array led by the event name (a string)"))?;
            if RESERVED_EVENTS.contains(&name.as_ref()) {
                return Err(invalid("an event name that is not reserved"));
            }
        }
        PacketType::Ack | PacketType::BinaryAck => {
            packet.args = array(rest).ok_or(invalid("an array"))??;
        }
    }
    Ok(packet)
}

/// Parses a JSON array into its raw elements; `None` when the text is not an array at all.
fn array(text: &str) -> Option<Result<Vec<&RawValue>, WireError>> {
    if !text.trim_start().starts_with('[') {
        return None;
    }
    Some(serde_json::from_str(text).map_err(|e| WireError::Json(e.to_string())))
}

/// Starts a Socket.IO packet inside an Engine.IO message: `4<type>[<namespace>,]`.
fn header(kind: PacketType, namespace: &str, capacity: usize) -> String {
    let mut out = String::with_capacity(capacity + namespace.len() + 4);
    out.push('4');
    out.push(kind.digit());
    if namespace != MAIN_NAMESPACE {
        out.push_str(namespace);
        out.push(',');
    }
    out
}

/// `40[<ns>,]{"sid":…}`: the server accepted the connection to the namespace.
pub fn connect_ok(namespace: &str, sid: &str) -> String {
    let mut out = header(PacketType::Connect, namespace, sid.len() + 10);
    out.push_str(&serde_json::json!({ "sid": sid }).to_string());
    out
}

/// `40[<ns>,][<auth JSON>]`: the client asks to connect to the namespace.
pub fn connect_request(namespace: &str, auth: Option<&str>) -> String {
    let mut out = header(PacketType::Connect, namespace, 0);
    out.push_str(auth.unwrap_or_default());
    out
}

/// `44[<ns>,]{"message":…}`: the server refused the connection to the namespace.
pub fn connect_error(namespace: &str, message: &str) -> String {
    let mut out = header(PacketType::ConnectError, namespace, message.len() + 14);
    out.push_str(&serde_json::json!({ "message": message }).to_string());
    out
}

/// `41[<ns>,]`: leaving the namespace.
pub fn disconnect(namespace: &str) -> String {
    header(PacketType::Disconnect, namespace, 0)
}

/// `42[<ns>,][<id>]["<name>",<args>…]`: an event with arguments given as JSON text.
pub fn event(namespace: &str, id: Option<u64>, name: &str, args: &[&str]) -> String {
    let size = name.len() + args.iter().map(|a| a.len() + 1).sum::<usize>() + 24;
    let mut out = header(PacketType::Event, namespace, size);
    if let Some(id) = id {
        out.push_str(&id.to_string());
    }
    out.push('[');
    // Serialising a &str cannot fail.
    out.push_str(&serde_json::to_string(name).unwrap_or_default());
    for arg in args {
        out.push(',');
        out.push_str(arg);
    }
    out.push(']');
    out
}

/// `42["<name>",<json>]` for the main namespace, built from bytes (an event's pre-encoded JSON).
pub fn event_bytes(name: &str, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + name.len() + 8);
    out.extend_from_slice(b"42[");
    out.extend_from_slice(serde_json::to_string(name).unwrap_or_default().as_bytes());
    out.push(b',');
    out.extend_from_slice(json);
    out.push(b']');
    out
}

/// `43[<ns>,]<id>[<args>…]`: the answer to an event that asked for an ack.
pub fn ack(namespace: &str, id: u64, args: &[&str]) -> String {
    let size = args.iter().map(|a| a.len() + 1).sum::<usize>() + 24;
    let mut out = header(PacketType::Ack, namespace, size);
    out.push_str(&id.to_string());
    out.push('[');
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(arg);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(values: &[&RawValue]) -> Vec<String> {
        values.iter().map(|v| v.get().to_owned()).collect()
    }

    /// A Socket.IO packet as it arrives in a frame: the Engine.IO `message` wrapper first.
    fn socketio(frame: &str) -> Packet<'_> {
        match decode_engine(frame) {
            Ok(EnginePacket::Message(data)) => decode_packet(data).unwrap(),
            other => panic!("{frame}: {other:?}"),
        }
    }

    #[test]
    fn engine_packets_of_the_spec() {
        assert_eq!(decode_engine("4hello"), Ok(EnginePacket::Message("hello")));
        assert_eq!(decode_engine("2"), Ok(EnginePacket::Ping("")));
        assert_eq!(decode_engine("3probe"), Ok(EnginePacket::Pong("probe")));
        assert_eq!(decode_engine("1"), Ok(EnginePacket::Close));
        assert_eq!(decode_engine("5"), Ok(EnginePacket::Upgrade));
        assert_eq!(decode_engine("6"), Ok(EnginePacket::Noop));
        assert_eq!(decode_engine(""), Err(WireError::Empty));
        assert_eq!(decode_engine("abc"), Err(WireError::EngineType('a')));
        assert_eq!(decode_engine("7"), Err(WireError::EngineType('7')));
    }

    #[test]
    fn handshake_matches_the_spec_example() {
        let text = r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        let Ok(EnginePacket::Open(data)) = decode_engine(text) else {
            panic!("not an open packet");
        };
        let handshake = Handshake::decode(data).unwrap();
        assert_eq!(handshake.sid, "lv_VI97HAXpY6yYWAAAC");
        assert_eq!(handshake.upgrades, ["websocket"]);
        assert_eq!(
            (
                handshake.ping_interval,
                handshake.ping_timeout,
                handshake.max_payload
            ),
            (25000, 20000, 1_000_000)
        );
        assert_eq!(handshake.encode(), text);
        assert!(Handshake::decode(r#"{"sid":"x"}"#).is_err());
    }

    #[test]
    fn connect_packets_of_the_spec() {
        let p = socketio("40");
        assert_eq!((p.kind, p.namespace), (PacketType::Connect, "/"));
        assert!(p.data.is_none());
        let p = socketio(r#"40/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#);
        assert_eq!(p.namespace, "/admin");
        assert_eq!(p.data.unwrap().get(), r#"{"sid":"oSO0OpakMV_3jnilAAAA"}"#);
        let p = socketio(r#"40{"token":"123"}"#);
        assert_eq!(
            (p.namespace, p.data.unwrap().get()),
            ("/", r#"{"token":"123"}"#)
        );
        // The test suite's namespace without a trailing comma.
        assert_eq!(socketio("40/random").namespace, "/random");
        let p = socketio(r#"44{"message":"Not authorized"}"#);
        assert_eq!(p.kind, PacketType::ConnectError);
        assert_eq!(p.data.unwrap().get(), r#"{"message":"Not authorized"}"#);
        assert_eq!(socketio("41").kind, PacketType::Disconnect);
        assert_eq!(socketio("41/admin,").namespace, "/admin");
    }

    #[test]
    fn event_and_ack_packets_of_the_spec() {
        let p = socketio(r#"42["foo"]"#);
        assert_eq!((p.kind, p.id), (PacketType::Event, None));
        assert_eq!(p.event_name().as_deref(), Some("foo"));
        assert!(p.event_args().is_empty());
        let p = socketio(r#"42/admin,["bar"]"#);
        assert_eq!(
            (p.namespace, p.event_name().as_deref()),
            ("/admin", Some("bar"))
        );
        let p = socketio(r#"4212["foo"]"#);
        assert_eq!(p.id, Some(12));
        let p = socketio(r#"43/admin,13["bar"]"#);
        assert_eq!(
            (p.kind, p.namespace, p.id),
            (PacketType::Ack, "/admin", Some(13))
        );
        assert_eq!(raw(p.event_args()), [r#""bar""#]);
        let p = socketio(r#"42["message",1,"2",{"3":[true]}]"#);
        assert_eq!(raw(p.event_args()), ["1", r#""2""#, r#"{"3":[true]}"#]);
        let p = socketio(r#"43456[1,"2",{"3":[false]}]"#);
        assert_eq!(p.id, Some(456));
        assert_eq!(raw(p.event_args()).len(), 3);
        assert!(socketio("43[]").args.is_empty());
    }

    #[test]
    fn binary_packets_of_the_spec() {
        let p = socketio(r#"451-["baz",{"_placeholder":true,"num":0}]"#);
        assert_eq!((p.kind, p.attachments), (PacketType::BinaryEvent, 1));
        let p = socketio(
            r#"452-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        );
        assert_eq!((p.attachments, p.namespace), (2, "/admin"));
        let p = socketio(r#"461-15["bar",{"_placeholder":true,"num":0}]"#);
        assert_eq!((p.kind, p.id), (PacketType::BinaryAck, Some(15)));
        assert_eq!(
            decode_packet("5x-[\"a\"]").err(),
            Some(WireError::Attachments)
        );
        assert_eq!(
            decode_packet("5[\"a\"]").err(),
            Some(WireError::Attachments)
        );
    }

    #[test]
    fn invalid_packets_of_the_test_suite_are_errors() {
        // Unknown packet type, payload not an array, ack id not a number.
        assert_eq!(decode_packet("abc").err(), Some(WireError::PacketType('a')));
        assert!(matches!(
            decode_packet("2{}"),
            Err(WireError::Payload { .. })
        ));
        assert!(matches!(
            decode_packet(r#"2abc["message-with-ack",1]"#),
            Err(WireError::Payload { .. })
        ));
        assert!(matches!(decode_packet("2"), Err(WireError::Payload { .. })));
        assert!(matches!(
            decode_packet("2[]"),
            Err(WireError::Payload { .. })
        ));
        assert!(matches!(
            decode_packet("2[1]"),
            Err(WireError::Payload { .. })
        ));
        assert!(matches!(
            decode_packet(r#"2["disconnect"]"#),
            Err(WireError::Payload { .. })
        ));
        assert!(matches!(decode_packet(r#"2["a""#), Err(WireError::Json(_))));
        assert!(matches!(
            decode_packet("0[1]"),
            Err(WireError::Payload { .. })
        ));
        assert!(matches!(
            decode_packet(r#"0"x""#),
            Err(WireError::Payload { .. })
        ));
        assert!(matches!(
            decode_packet("1{}"),
            Err(WireError::Payload { .. })
        ));
        assert!(matches!(
            decode_packet("3{}"),
            Err(WireError::Payload { .. })
        ));
        assert_eq!(
            decode_packet(r#"299999999999999999999["a"]"#).err(),
            Some(WireError::AckId)
        );
        assert_eq!(
            decode_packet(r#"29007199254740992["a"]"#).err(),
            Some(WireError::AckId)
        );
        assert_eq!(decode_packet("").err(), Some(WireError::Empty));
        // CONNECT_ERROR may carry a plain string (older servers).
        assert!(decode_packet(r#"4"nope""#).is_ok());
    }

    #[test]
    fn encoders_write_what_the_decoder_reads() {
        assert_eq!(connect_ok("/", "abc"), r#"40{"sid":"abc"}"#);
        assert_eq!(connect_ok("/admin", "x"), r#"40/admin,{"sid":"x"}"#);
        assert_eq!(connect_request("/", None), "40");
        assert_eq!(
            connect_request("/", Some(r#"{"token":"1"}"#)),
            r#"40{"token":"1"}"#
        );
        assert_eq!(
            connect_error("/random", "Invalid namespace"),
            r#"44/random,{"message":"Invalid namespace"}"#
        );
        assert_eq!(disconnect("/"), "41");
        assert_eq!(disconnect("/admin"), "41/admin,");
        assert_eq!(event("/", None, "foo", &[]), r#"42["foo"]"#);
        assert_eq!(
            event("/admin", Some(12), "a\"b", &["1", r#"{"x":2}"#]),
            r#"42/admin,12["a\"b",1,{"x":2}]"#
        );
        assert_eq!(ack("/", 456, &["1", r#""2""#]), r#"43456[1,"2"]"#);
        assert_eq!(ack("/", 1, &[]), "431[]");
        assert_eq!(
            event_bytes("event", br#"{"seq":1}"#),
            br#"42["event",{"seq":1}]"#.to_vec()
        );
        let text = event("/", Some(7), "publish", &[r#"{"topic":"t"}"#]);
        let p = socketio(&text);
        assert_eq!(
            (p.id, p.event_name().as_deref()),
            (Some(7), Some("publish"))
        );
        assert_eq!(raw(p.event_args()), [r#"{"topic":"t"}"#]);
    }
}
