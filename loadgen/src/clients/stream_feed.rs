//! The one loop of the streaming feed clients (SSE, WebSocket, GraphQL subscriptions): open a
//! stream subscribed after the cursor, hand everything it delivers to the protocol, stop when the
//! run stops or once drained, resume after the cursor on a new stream when it ends, close the books.

use std::{future::Future, sync::atomic::Ordering::Relaxed, time::Duration};

use super::{Accounting, ClientCtx, FeedReceiver, Phase};
use crate::http::ClientError;

/// Reconnects a stream client allows itself before giving up.
const MAX_RECONNECTS: u32 = 10;

/// What the loop does after the protocol handled something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The server ended the subscription: resume after the cursor on a new stream.
    End,
}

/// What a protocol has in hand when something arrives.
pub struct Arrival<'a> {
    pub ctx: &'a ClientCtx,
    /// The client's books; `None` until the server confirms the subscription.
    pub receiver: &'a mut Option<FeedReceiver>,
    /// When it arrived (run clock).
    pub now_ns: u64,
    /// How the client's books are kept.
    pub accounting: Accounting,
}

impl Arrival<'_> {
    /// The server confirmed the subscription after `after` (see [`confirmed`]).
    pub fn subscribed(&mut self, after: u64) {
        confirmed(self.ctx, self.receiver, self.accounting, after);
    }
}

/// How one streaming protocol opens, reads and understands its stream.
pub trait StreamProtocol: Send {
    /// An open stream.
    type Stream: Send;
    /// One thing read from it.
    type Item: Send;
    /// Why the client failed when a stream ended before the subscription was confirmed.
    const UNCONFIRMED: &'static str;

    /// How the client's books are kept: by the server's sequence numbers unless the protocol
    /// says otherwise (the profile-driven clients).
    fn accounting(&self) -> Accounting {
        Accounting::Seq
    }

    /// Opens a stream subscribed to the client's topic after `cursor` (`None`: the first time).
    /// Returns the cursor the subscription starts after when it is known without a server notice.
    fn open(
        &mut self,
        ctx: &ClientCtx,
        cursor: Option<u64>,
    ) -> impl Future<Output = Result<(Self::Stream, Option<u64>), ClientError>> + Send;

    /// The next item; `None` once the stream ended or broke (errors counted). Cancel-safe: the
    /// loop drops it when the run moves on.
    fn read(
        stream: &mut Self::Stream,
        ctx: &ClientCtx,
    ) -> impl Future<Output = Option<Self::Item>> + Send;

    /// Handles one item.
    fn handle(
        &mut self,
        stream: &mut Self::Stream,
        item: Self::Item,
        arrival: Arrival<'_>,
    ) -> impl Future<Output = Flow> + Send;
}

/// Runs one feed client over `protocol` until the run stops or the client has everything.
pub async fn run<P: StreamProtocol>(ctx: ClientCtx, mut protocol: P) {
    let mut receiver: Option<FeedReceiver> = None;
    let mut reconnects = 0;
    let mut stop = std::pin::pin!(ctx.reached(Phase::Stop));
    let mut drain = std::pin::pin!(ctx.reached(Phase::Drain));
    let mut draining = false;
    let accounting = protocol.accounting();
    'connection: loop {
        let cursor = receiver.as_ref().map(FeedReceiver::cursor);
        let mut stream = match protocol.open(&ctx, cursor).await {
            Ok((stream, confirmed_after)) => {
                if let Some(after) = confirmed_after {
                    confirmed(&ctx, &mut receiver, accounting, after);
                }
                stream
            }
            Err(error) if receiver.is_none() => return ctx.mark_failed(&error),
            Err(error) => {
                ctx.error(&error);
                break;
            }
        };
        loop {
            let item = tokio::select! {
                item = P::read(&mut stream, &ctx) => item,
                () = &mut stop => break 'connection,
                () = &mut drain, if !draining => {
                    draining = true;
                    if receiver.as_ref().is_some_and(|r| r.done(&ctx)) {
                        break 'connection;
                    }
                    continue;
                }
            };
            let Some(item) = item else {
                break;
            };
            let arrival = Arrival {
                ctx: &ctx,
                receiver: &mut receiver,
                now_ns: ctx.now_ns(),
                accounting,
            };
            if protocol.handle(&mut stream, item, arrival).await == Flow::End {
                break;
            }
            if draining && receiver.as_ref().is_some_and(|r| r.done(&ctx)) {
                break 'connection;
            }
        }
        match after_stream_end(&ctx, receiver.as_ref(), &mut reconnects).await {
            AfterEnd::Reconnect => {}
            AfterEnd::Finish => break,
            AfterEnd::NeverSubscribed => {
                return ctx.mark_failed(&ClientError::Protocol(P::UNCONFIRMED.into()));
            }
        }
    }
    if let Some(receiver) = receiver {
        receiver.finish(&ctx);
    }
}

/// The first confirmation starts the client's books and marks it ready; later ones (after a
/// reconnect) resume the same books.
fn confirmed(
    ctx: &ClientCtx,
    receiver: &mut Option<FeedReceiver>,
    accounting: Accounting,
    after: u64,
) {
    if receiver.is_none() {
        *receiver = Some(FeedReceiver::start(Some(ctx), accounting, after));
        ctx.mark_ready();
    }
}

/// What a client does when its stream ended.
enum AfterEnd {
    /// Reconnect and resume after the cursor (counted, after a growing back-off).
    Reconnect,
    /// Done: the run is over, or reconnecting has failed too often.
    Finish,
    /// It ended before the server confirmed the subscription: the client failed to start.
    NeverSubscribed,
}

/// Decides what a client does after its stream ended, backing off before a reconnect.
async fn after_stream_end(
    ctx: &ClientCtx,
    receiver: Option<&FeedReceiver>,
    reconnects: &mut u32,
) -> AfterEnd {
    let Some(receiver) = receiver else {
        return AfterEnd::NeverSubscribed;
    };
    let phase = ctx.shared.phase();
    if phase == Phase::Stop || (phase == Phase::Drain && receiver.done(ctx)) {
        return AfterEnd::Finish;
    }
    *reconnects += 1;
    if *reconnects > MAX_RECONNECTS {
        return AfterEnd::Finish;
    }
    ctx.recorder().counters.reconnects.fetch_add(1, Relaxed);
    tokio::time::sleep(Duration::from_millis(100 * u64::from(*reconnects))).await;
    AfterEnd::Reconnect
}
