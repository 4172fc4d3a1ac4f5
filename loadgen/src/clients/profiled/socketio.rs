//! Socket.IO by a profile's section: an Engine.IO v4 session over WebSocket on the section's path,
//! connected to its namespace, its subscribe event emitted (with an ack that confirms it, when
//! asked); the arguments of its event are searched for stamps. Shares the session handling
//! (`clients::socketio`) with commbench's own Socket.IO client. After a drop it subscribes again:
//! after the target's cursor, with the section's resume arguments, when an event carried one.

use commbench_servers::socketio_wire::{self as sio, PacketType};
use tokio_tungstenite::tungstenite::Message;

use super::{no_section, resume_values, values, ClientCtx, Cursor};
use crate::{
    clients::{
        socketio::{open, read_packet},
        stream_feed::Arrival,
        ws_conn,
        ws_feed::{self, FeedProtocol, Opened, Step},
        Accounting,
    },
    profile::{template::Template, PatternSpec},
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
    /// The subscribe event's name, its resume arguments and the cursor they take.
    resume: Option<(String, Vec<Template>, Cursor)>,
    accounting: Accounting,
}

impl TemplateSocketIo {
    /// The subscribe packet to send: the resume form once an event carried a cursor.
    fn subscribe_packet(&self, ctx: &ClientCtx) -> Option<String> {
        let resumed = self.resume.as_ref().and_then(|(event, args, cursor)| {
            let cursor = cursor.for_json()?;
            let values = resume_values(ctx, &cursor);
            let args: Vec<String> = args.iter().map(|a| a.render(&values)).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Some(subscribe_packet(&self.namespace, self.ack, event, &args))
        });
        resumed.or_else(|| self.subscribe.clone())
    }
}

/// The subscribe event, asking for an ack when the section says so.
fn subscribe_packet(namespace: &str, ack: bool, event: &str, args: &[&str]) -> String {
    sio::event(namespace, ack.then_some(SUBSCRIBE_ACK), event, args)
}

impl FeedProtocol for TemplateSocketIo {
    fn accounting(&self) -> Accounting {
        self.accounting
    }

    async fn subscribe(&mut self, ctx: &ClientCtx, _cursor: Option<u64>) -> Opened {
        let mut socket = open(ctx, &self.path, &self.namespace).await?;
        if let Some(subscribe) = self.subscribe_packet(ctx) {
            ws_conn::send_text(&mut socket, subscribe).await?;
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
                let args: Vec<&str> = packet.event_args().iter().map(|a| a.get()).collect();
                if let Some((_, _, cursor)) = &mut self.resume {
                    // The pointer looks into the arguments as one array.
                    cursor.note(format!("[{}]", args.join(",")).as_bytes());
                }
                match arrival.receiver.as_mut() {
                    Some(receiver) => {
                        receiver.message(arrival.ctx, args.concat().as_bytes(), arrival.now_ns);
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
    let subscribe = spec
        .subscribe_event
        .as_ref()
        .map(|event| subscribe_packet(&spec.namespace, spec.ack, event, &args));
    let resume = spec
        .resume
        .as_ref()
        .zip(spec.subscribe_event.as_ref())
        .map(|(resume, event)| {
            (
                event.clone(),
                resume.with.clone(),
                Cursor::new(resume.cursor.clone()),
            )
        });
    let protocol = TemplateSocketIo {
        path: ctx.target.join(&spec.path),
        namespace: spec.namespace.clone(),
        subscribe,
        ack: spec.ack,
        event: spec.event.clone(),
        resume,
        accounting: ctx.shared.accounting(),
    };
    ws_feed::run(ctx, protocol).await;
}
