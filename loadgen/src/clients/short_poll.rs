//! Short polling: `GET /poll/{topic}?after={cursor}` every `--interval` (random phase per client);
//! a late poll is measured from its intended time. Asks again at once while the answer says `more`.

use bytes::Bytes;
use http::Method;

use super::{
    requests::{open, request_loop, Exchange},
    ClientCtx, FeedReceiver, Phase,
};
use crate::{http::HttpConn, schedule::Schedule, wire};

pub(super) struct FeedPoll {
    pub topic: String,
    pub receiver: FeedReceiver,
    pub more: bool,
    /// `longpoll` or `poll`, and extra query (the long-poll timeout).
    pub route: &'static str,
    pub extra: String,
}

impl Exchange for FeedPoll {
    fn path(&self) -> String {
        format!(
            "/{}/{}?after={}{}",
            self.route,
            self.topic,
            self.receiver.cursor(),
            self.extra
        )
    }

    fn answer(&mut self, ctx: &ClientCtx, body: &Bytes, now_ns: u64) {
        let Some(answer) = wire::poll_answer(body) else {
            ctx.recorder().counters.error("bad_poll_answer");
            return;
        };
        self.more = self.receiver.page(ctx, &answer, now_ns);
    }

    fn more(&self) -> bool {
        self.more
    }

    fn done(&self, ctx: &ClientCtx) -> bool {
        self.receiver.done(ctx)
    }
}

/// Opens the connection and learns the topic's head (the cursor to start after), then marks ready.
pub(super) async fn start(
    ctx: &ClientCtx,
    route: &'static str,
    extra: String,
) -> Option<(HttpConn, FeedPoll)> {
    let mut conn = open(ctx).await?;
    let probe = format!("/poll/{}?after=0&limit=1", ctx.topic());
    let head = match conn.fetch(Method::GET, &probe, Bytes::new()).await {
        Ok(body) => match wire::poll_answer(&body) {
            Some(answer) => answer.head,
            None => {
                ctx.mark_failed(&crate::http::ClientError::Protocol(
                    "bad poll answer".into(),
                ));
                return None;
            }
        },
        Err(error) => {
            ctx.mark_failed(&error);
            return None;
        }
    };
    ctx.mark_ready();
    let poll = FeedPoll {
        topic: ctx.topic().to_owned(),
        receiver: FeedReceiver::new(head),
        more: false,
        route,
        extra,
    };
    Some((conn, poll))
}

/// Polls on the scenario's interval (a random phase per client) from the run's start until the
/// exchange is done; shared with GraphQL polling.
pub(super) async fn on_interval(
    ctx: &mut ClientCtx,
    conn: &mut HttpConn,
    exchange: &mut impl Exchange,
) {
    if ctx.wait_for(Phase::Run).await == Phase::Run {
        let interval = ctx.shared.scenario.interval;
        let schedule = Schedule::fixed_with_random_phase(ctx.now_ns(), interval, &mut ctx.rng);
        request_loop(ctx, conn, Some(schedule), exchange).await;
    }
}

pub async fn run(mut ctx: ClientCtx) {
    let Some((mut conn, mut poll)) = start(&ctx, "poll", String::new()).await else {
        return;
    };
    on_interval(&mut ctx, &mut conn, &mut poll).await;
    poll.receiver.finish(&ctx);
}
