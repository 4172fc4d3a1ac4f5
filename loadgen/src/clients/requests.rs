//! The one request loop every request-driven client shares (request-response, short and long
//! polling, GraphQL polling, the profile-driven polls): open-loop on a schedule (latency from the intended time,
//! and from the actual send) or closed-loop (next request when the answer arrives).

use bytes::Bytes;
use http::Method;

use super::{ClientCtx, Phase};
use crate::{
    http::{ClientError, HttpConn},
    record::Metric,
    schedule::Schedule,
};

/// One request as an exchange asks for it.
pub struct Ask<'a> {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Bytes,
}

impl Ask<'_> {
    /// A body-less GET, what most exchanges send.
    pub fn get(path: String) -> Self {
        Self {
            method: Method::GET,
            path,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}

/// What a request-driven client does with each exchange.
pub trait Exchange: Send {
    fn path(&self) -> String;
    /// The next request: a GET of [`path`](Self::path) unless the exchange needs a method or body.
    fn request(&self) -> Ask<'_> {
        Ask::get(self.path())
    }
    /// Sees a 2xx answer's headers, before [`answer`](Self::answer) gets its body.
    fn headers(&mut self, _headers: &http::HeaderMap) {}
    /// Handles a 2xx answer received at `now_ns`.
    fn answer(&mut self, ctx: &ClientCtx, body: &Bytes, now_ns: u64);
    /// True when the last answer was cut short and the client should ask again at once.
    fn more(&self) -> bool {
        false
    }
    /// True when the client has everything it needs and may stop (checked between requests).
    fn done(&self, ctx: &ClientCtx) -> bool {
        ctx.shared.phase() >= Phase::Drain
    }
}

/// Runs requests until `exchange.done()`. `schedule = None` means closed loop.
pub async fn request_loop(
    ctx: &ClientCtx,
    conn: &mut HttpConn,
    mut schedule: Option<Schedule>,
    exchange: &mut impl Exchange,
) {
    let clock = ctx.shared.clock;
    let mut stop = std::pin::pin!(ctx.reached(Phase::Stop));
    let mut drain = std::pin::pin!(ctx.reached(Phase::Drain));
    let mut draining = false;
    while !exchange.done(ctx) {
        let intended = match schedule.as_mut() {
            Some(schedule) if !exchange.more() => {
                let intended = schedule.next_send();
                let sleep = tokio::time::sleep_until(clock.instant_at(intended).into());
                tokio::select! {
                    () = sleep => {}
                    () = &mut stop => return,
                }
                if exchange.done(ctx) {
                    return;
                }
                intended
            }
            _ => ctx.now_ns(),
        };
        let sent = ctx.now_ns();
        let answer = {
            let ask = exchange.request();
            let mut fetch =
                std::pin::pin!(conn.exchange(ask.method, &ask.path, &ask.headers, ask.body));
            loop {
                tokio::select! {
                    answer = &mut fetch => break answer,
                    () = &mut stop => return,
                    // A held request (a long poll) may have nothing left to bring: stop waiting for it
                    // once publishing has ended and this client already has everything.
                    () = &mut drain, if !draining => {
                        draining = true;
                        if exchange.done(ctx) {
                            return;
                        }
                    }
                }
            }
        };
        let now = ctx.now_ns();
        ctx.recorder()
            .counters
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if ctx.shared.in_window(intended) {
            ctx.recorder().record(
                ctx.id,
                Metric::RoundTrip,
                now.saturating_sub(intended) / 1_000,
            );
            if schedule.is_some() {
                ctx.recorder().record(
                    ctx.id,
                    Metric::RoundTripUncorrected,
                    now.saturating_sub(sent) / 1_000,
                );
            }
        }
        match answer {
            Ok((headers, body)) => {
                exchange.headers(&headers);
                exchange.answer(ctx, &body, now);
            }
            Err(error) => {
                if !recover(ctx, conn, &error).await {
                    return;
                }
            }
        }
    }
}

/// Counts the error and, when the connection is gone, reconnects once (counted). False when the
/// client must give up.
pub async fn recover(ctx: &ClientCtx, conn: &mut HttpConn, error: &ClientError) -> bool {
    ctx.error(error);
    if !matches!(error, ClientError::Request(_)) {
        return true;
    }
    match HttpConn::open(&ctx.target, ctx.source, &ctx.shared.recorder).await {
        Ok(fresh) => {
            *conn = fresh;
            ctx.recorder()
                .counters
                .reconnects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            true
        }
        Err(error) => {
            ctx.error(&error);
            false
        }
    }
}

/// Opens the connection, marks the client ready and waits for the run to start; `None` when the
/// connection failed (counted) or the run ended first.
pub async fn open_and_wait(ctx: &ClientCtx) -> Option<HttpConn> {
    let conn = open(ctx).await?;
    ctx.mark_ready();
    (ctx.wait_for(Phase::Run).await == Phase::Run).then_some(conn)
}

/// Opens the client's connection, recording the connect time; counts a failure and returns `None`.
pub async fn open(ctx: &ClientCtx) -> Option<HttpConn> {
    let started = ctx.now_ns();
    match HttpConn::open(&ctx.target, ctx.source, &ctx.shared.recorder).await {
        Ok(conn) => {
            let micros = ctx.now_ns().saturating_sub(started) / 1_000;
            ctx.recorder().record(ctx.id, Metric::Connect, micros);
            Some(conn)
        }
        Err(error) => {
            ctx.mark_failed(&error);
            None
        }
    }
}
