//! WebSocket feed clients (WebSocket, GraphQL subscriptions, Socket.IO, and their profile-driven kin) on the one streaming loop
//! (`stream_feed`): a socket is the stream, a message the item; a protocol only subscribes and
//! reads its messages, answering when it must.

use std::future::Future;

use tokio_tungstenite::tungstenite::Message;

use super::{
    stream_feed::{self, Arrival, Flow, StreamProtocol},
    ws_conn::{self, Socket},
    ClientCtx,
};
use crate::http::ClientError;

/// A socket subscribed to the client's topic, and the cursor it starts after when known without a
/// server notice.
pub type Opened = Result<(Socket, Option<u64>), ClientError>;

/// What the loop does after a message.
pub enum Step {
    Continue,
    /// Send this text back (a protocol-level pong).
    Reply(String),
    /// The server ended the subscription: resubscribe after the cursor.
    End,
}

/// How one WebSocket protocol subscribes and reads its messages.
pub trait FeedProtocol: Send {
    /// Opens a socket subscribed to the client's topic after `cursor` (`None`: the first time).
    fn subscribe(
        &mut self,
        ctx: &ClientCtx,
        cursor: Option<u64>,
    ) -> impl Future<Output = Opened> + Send;

    /// Handles a data message (not a close).
    fn message(&mut self, message: Message, arrival: Arrival<'_>) -> Step;

    /// How the client's books are kept (see `StreamProtocol::accounting`).
    fn accounting(&self) -> super::Accounting {
        super::Accounting::Seq
    }
}

/// Runs one feed client over `protocol` until the run stops or the client has everything.
pub async fn run(ctx: ClientCtx, protocol: impl FeedProtocol) {
    stream_feed::run(ctx, WebSocket(protocol)).await;
}

struct WebSocket<P>(P);

impl<P: FeedProtocol> StreamProtocol for WebSocket<P> {
    type Stream = Socket;
    type Item = Message;
    const UNCONFIRMED: &'static str = "socket closed before the subscription was confirmed";

    fn accounting(&self) -> super::Accounting {
        self.0.accounting()
    }

    async fn open(&mut self, ctx: &ClientCtx, cursor: Option<u64>) -> Opened {
        self.0.subscribe(ctx, cursor).await
    }

    /// A close frame ends the stream (its code counted as an error).
    async fn read(socket: &mut Socket, ctx: &ClientCtx) -> Option<Message> {
        match ws_conn::next(socket).await {
            Some(Ok(Message::Close(frame))) => {
                if let Some(frame) = frame {
                    ctx.recorder()
                        .counters
                        .error(format!("ws_close_{}", u16::from(frame.code)));
                }
                None
            }
            Some(Ok(message)) => Some(message),
            Some(Err(error)) => {
                ctx.error(&error);
                None
            }
            None => None,
        }
    }

    async fn handle(
        &mut self,
        socket: &mut Socket,
        message: Message,
        arrival: Arrival<'_>,
    ) -> Flow {
        let ctx = arrival.ctx;
        match self.0.message(message, arrival) {
            Step::Continue => Flow::Continue,
            Step::Reply(text) => match ws_conn::send_text(socket, text).await {
                Ok(()) => Flow::Continue,
                Err(error) => {
                    ctx.error(&error);
                    Flow::End
                }
            },
            Step::End => Flow::End,
        }
    }
}
