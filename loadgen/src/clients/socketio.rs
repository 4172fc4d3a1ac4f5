//! Socket.IO push: one Engine.IO v4 WebSocket per client on `/socket.io/`, connected to the main
//! namespace; `subscribe` (with an ack that gives the start cursor) to its topic, events arrive as
//! the `event` event, pings are answered; on a dropped socket the client reconnects and
//! resubscribes after its cursor. Packets are read with the codec the server uses
//! (`commbench_servers::socketio_wire`), which is tested against the protocol specs.

use std::time::Duration;

use commbench_servers::socketio_wire::{
    self as sio, EnginePacket, Handshake, Packet, PacketType, MAIN_NAMESPACE,
};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use super::{
    stream_feed::Arrival,
    ws_conn::{self, Socket},
    ws_feed::{self, FeedProtocol, Opened, Step},
    ClientCtx,
};
use crate::{
    http::ClientError,
    record::Counters,
    wire::{self, WireGap},
};

/// The Engine.IO path; the session is WebSocket from the start (no polling, no upgrade).
const PATH: &str = "/socket.io/";

/// The ack id of the one `subscribe` a socket sends.
const SUBSCRIBE_ACK: u64 = 1;

/// How long the server may take to open the session and accept the namespace connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `subscribe` ack: the cursor the subscription starts after, or a refusal.
#[derive(Debug, Deserialize)]
struct SubscribeAck<'a> {
    #[serde(default)]
    after: Option<u64>,
    #[serde(default, borrow)]
    error: Option<&'a str>,
}

struct SocketIo;

impl FeedProtocol for SocketIo {
    async fn subscribe(&mut self, ctx: &ClientCtx, cursor: Option<u64>) -> Opened {
        let mut socket = open(ctx, PATH, MAIN_NAMESPACE).await?;
        let subscribe = subscribe_packet(ctx.topic(), cursor);
        ws_conn::send_text(&mut socket, subscribe).await?;
        // The start cursor comes with the ack.
        Ok((socket, None))
    }

    fn message(&mut self, message: Message, arrival: Arrival<'_>) -> Step {
        match read_packet(&message, &arrival.ctx.recorder().counters) {
            Ok(packet) => on_packet(&packet, arrival),
            Err(step) => step,
        }
    }
}

/// One message of an Engine.IO session over WebSocket: the Socket.IO packet it carries, or what
/// the session does by itself (answer a ping, end on the Engine.IO close, skip anything else,
/// counting what it cannot read).
pub(super) fn read_packet<'a>(
    message: &'a Message,
    counters: &Counters,
) -> Result<Packet<'a>, Step> {
    let text = match message {
        Message::Text(text) => text.as_str(),
        Message::Binary(_) => {
            counters.error("bad_socketio_packet");
            return Err(Step::Continue);
        }
        // WebSocket pings are answered by the socket itself.
        _ => return Err(Step::Continue),
    };
    match sio::decode_engine(text) {
        Ok(EnginePacket::Message(data)) => sio::decode_packet(data).map_err(|_| {
            counters.error("bad_socketio_packet");
            Step::Continue
        }),
        // In Engine.IO v4 the server pings and the client answers.
        Ok(EnginePacket::Ping(_)) => Err(Step::Reply(sio::PONG.to_owned())),
        Ok(EnginePacket::Close) => Err(Step::End),
        Ok(_) => Err(Step::Continue),
        Err(_) => {
            counters.error("bad_socketio_packet");
            Err(Step::Continue)
        }
    }
}

/// Opens `path` (the Engine.IO path, e.g. `/socket.io/`) over WebSocket and connects to
/// `namespace` within the handshake timeout.
pub(super) async fn open(
    ctx: &ClientCtx,
    path: &str,
    namespace: &str,
) -> Result<Socket, ClientError> {
    let mut socket = ws_conn::open(ctx, &format!("{path}?EIO=4&transport=websocket"), None).await?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connect(&mut socket, namespace))
        .await
        .map_err(|_| ClientError::Timeout(HANDSHAKE_TIMEOUT))??;
    Ok(socket)
}

/// `42<id>["subscribe",{"topic":…[,"after":N]}]`.
fn subscribe_packet(topic: &str, cursor: Option<u64>) -> String {
    let after = cursor.map_or(String::new(), |c| format!(",\"after\":{c}"));
    let arg = format!("{{\"topic\":\"{topic}\"{after}}}");
    sio::event(MAIN_NAMESPACE, Some(SUBSCRIBE_ACK), "subscribe", &[&arg])
}

fn on_packet(packet: &Packet<'_>, mut arrival: Arrival<'_>) -> Step {
    let ctx = arrival.ctx;
    let counters = &ctx.recorder().counters;
    let arg = packet.event_args().first().map(|a| a.get());
    match packet.kind {
        PacketType::Event => match (packet.event_name().as_deref(), arrival.receiver.as_mut()) {
            (Some("event"), Some(receiver)) => match arg.and_then(|a| wire::event(a.as_bytes())) {
                Some(event) => {
                    receiver.event(ctx, event.seq, event.data.as_deref(), arrival.now_ns)
                }
                None => counters.error("bad_event"),
            },
            (Some("gap"), Some(receiver)) => {
                match arg.and_then(|a| serde_json::from_str::<WireGap>(a).ok()) {
                    Some(gap) => receiver.gap(gap.oldest),
                    None => counters.error("bad_socketio_packet"),
                }
            }
            (Some("error"), _) => {
                let reason = arg.and_then(wire::ws_notice).and_then(|n| n.error);
                counters.error(format!("socketio_{}", reason.unwrap_or("error")));
            }
            // An event before the subscription was confirmed.
            (Some("event" | "gap"), None) => counters.error("bad_event"),
            _ => {}
        },
        PacketType::Ack if packet.id == Some(SUBSCRIBE_ACK) => {
            match arg.and_then(|a| serde_json::from_str::<SubscribeAck>(a).ok()) {
                Some(SubscribeAck { error: Some(e), .. }) => {
                    counters.error(format!("socketio_{e}"));
                }
                Some(SubscribeAck { after, .. }) => arrival.subscribed(after.unwrap_or(0)),
                None => counters.error("bad_socketio_packet"),
            }
        }
        // The server left the namespace or refused it: resubscribe on a new socket.
        PacketType::Disconnect | PacketType::ConnectError => {
            counters.error("socketio_disconnect");
            return Step::End;
        }
        _ => {}
    }
    Step::Continue
}

/// Reads the Engine.IO `open` packet, connects to `namespace` and waits for the answer, answering
/// pings meanwhile.
async fn connect(socket: &mut Socket, namespace: &str) -> Result<(), ClientError> {
    let open = next_text(socket).await?;
    match sio::decode_engine(&open) {
        Ok(EnginePacket::Open(data)) => {
            Handshake::decode(data).map_err(|e| protocol(format!("open packet: {e}")))?;
        }
        _ => return Err(protocol(format!("expected the open packet, got {open}"))),
    }
    ws_conn::send_text(socket, sio::connect_request(namespace, None)).await?;
    loop {
        let text = next_text(socket).await?;
        match sio::decode_engine(&text) {
            Ok(EnginePacket::Ping(_)) => ws_conn::send_text(socket, sio::PONG.to_owned()).await?,
            Ok(EnginePacket::Message(data)) => {
                return match sio::decode_packet(data).map(|p| p.kind) {
                    Ok(PacketType::Connect) => Ok(()),
                    Ok(PacketType::ConnectError) => Err(protocol(format!("refused: {text}"))),
                    _ => Err(protocol(format!("expected CONNECT, got {text}"))),
                };
            }
            _ => return Err(protocol(format!("expected CONNECT, got {text}"))),
        }
    }
}

/// The next text frame; a close or the end of the socket is an error during the handshake.
async fn next_text(socket: &mut Socket) -> Result<String, ClientError> {
    loop {
        match ws_conn::next(socket).await {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Close(_))) | None => {
                return Err(protocol(
                    "socket closed during the Socket.IO handshake".into(),
                ))
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error),
        }
    }
}

fn protocol(detail: String) -> ClientError {
    ClientError::Protocol(detail)
}

pub async fn run(ctx: ClientCtx) {
    ws_feed::run(ctx, SocketIo).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_packet_asks_for_an_ack_and_resumes_after_the_cursor() {
        assert_eq!(
            subscribe_packet("t0", None),
            r#"421["subscribe",{"topic":"t0"}]"#
        );
        let text = subscribe_packet("t0", Some(41));
        let Ok(EnginePacket::Message(data)) = sio::decode_engine(&text) else {
            panic!("{text}");
        };
        let packet = sio::decode_packet(data).unwrap();
        assert_eq!(packet.id, Some(SUBSCRIBE_ACK));
        assert_eq!(packet.event_name().as_deref(), Some("subscribe"));
        let arg: serde_json::Value = serde_json::from_str(packet.event_args()[0].get()).unwrap();
        assert_eq!(arg, serde_json::json!({"topic": "t0", "after": 41}));
    }

    #[test]
    fn acks_say_where_the_subscription_starts_or_why_it_was_refused() {
        let ok: SubscribeAck = serde_json::from_str(r#"{"topic":"t","after":4,"head":4}"#).unwrap();
        assert_eq!((ok.after, ok.error), (Some(4), None));
        let refused: SubscribeAck =
            serde_json::from_str(r#"{"type":"error","error":"cursor_ahead","detail":"x"}"#)
                .unwrap();
        assert_eq!(refused.error, Some("cursor_ahead"));
    }
}
