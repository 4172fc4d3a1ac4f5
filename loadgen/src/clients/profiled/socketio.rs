//! Socket.IO by a profile's section: an Engine.IO v4 session over WebSocket on the section's path,
//! connected to its namespace, its subscribe event emitted (with an ack that confirms it, when
//! asked); the arguments of its event are searched for stamps. Shares the session handling
//! (`clients::socketio`) with commbench's own Socket.IO client.

use commbench_servers::socketio_wire::{self as sio, PacketType};
use tokio_tungstenite::tungstenite::Message;

use super::{no_section, values, ClientCtx};
use crate::{
    clients::{
        socketio::{open, read_packet},
        stream_feed::Arrival,
        ws_conn,
        ws_feed::{self, FeedProtocol, Opened, Step},
        Accounting,
    },
    profile::PatternSpec,
};

/// The ack id of the subscribe event.
const SUBSCRIBE_ACK: u64 = 1;

struct TemplateSocketIo {
    path: String,
    namespace: String,
    /// The subscribe packet, built once.
    subscribe: Option<String>,
    ack: bool,
    event: String,
    accounting: Accounting,
}

impl FeedProtocol for TemplateSocketIo {
    fn accounting(&self) -> Accounting {
        self.accounting
    }

    async fn subscribe(&mut self, ctx: &ClientCtx, _cursor: Option<u64>) -> Opened {
        let mut socket = open(ctx, &self.path, &self.namespace).await?;
        if let Some(subscribe) = &self.subscribe {
            ws_conn::send_text(&mut socket, subscribe.clone()).await?;
        }
        // With an ack, the subscription starts when it comes.
        Ok((socket, (!self.ack).then_some(0)))
    }

    fn message(&mut self, message: Message, mut arrival: Arrival<'_>) -> Step {
        let counters = &arrival.ctx.recorder().counters;
        let packet = match read_packet(&message, counters) {
            Ok(packet) => packet,
            Err(step) => return step,
        };
        if packet.namespace != self.namespace {
            return Step::Continue;
        }
        match packet.kind {
            PacketType::Event if packet.event_name().as_deref() == Some(self.event.as_str()) => {
                match arrival.receiver.as_mut() {
                    Some(receiver) => {
                        let raw = packet.event_args();
                        let text: String = raw.iter().map(|a| a.get()).collect();
                        receiver.message(arrival.ctx, text.as_bytes(), arrival.now_ns);
                    }
                    None => counters.error("event_before_subscribed"),
                }
            }
            PacketType::Ack if self.ack && packet.id == Some(SUBSCRIBE_ACK) => {
                arrival.subscribed(0)
            }
            PacketType::Disconnect | PacketType::ConnectError => {
                counters.error("socketio_disconnect");
                return Step::End;
            }
            _ => {}
        }
        Step::Continue
    }
}

pub async fn run(ctx: ClientCtx) {
    let Some(PatternSpec::SocketIo(spec)) = ctx.shared.spec() else {
        return no_section(&ctx, "Socket.IO");
    };
    let values = values(&ctx);
    let args: Vec<String> = spec
        .subscribe_args
        .iter()
        .map(|a| a.render(&values))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let subscribe = spec.subscribe_event.as_ref().map(|event| {
        sio::event(
            &spec.namespace,
            spec.ack.then_some(SUBSCRIBE_ACK),
            event,
            &args,
        )
    });
    let protocol = TemplateSocketIo {
        path: ctx.target.join(&spec.path),
        namespace: spec.namespace.clone(),
        subscribe,
        ack: spec.ack,
        event: spec.event.clone(),
        accounting: ctx.shared.accounting(),
    };
    ws_feed::run(ctx, protocol).await;
}
