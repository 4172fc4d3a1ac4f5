//! Long polling: `GET /longpoll/{topic}?after={cursor}&timeout_ms={t}`, re-polling at once with the
//! new cursor after every answer (closed loop by nature: the server decides when to answer).

use super::{requests::request_loop, short_poll::start, ClientCtx, Phase};

pub async fn run(ctx: ClientCtx) {
    let timeout_ms = ctx.shared.scenario.long_poll_timeout.as_millis();
    let extra = format!("&timeout_ms={timeout_ms}");
    let Some((mut conn, mut poll)) = start(&ctx, "longpoll", extra).await else {
        return;
    };
    if ctx.wait_for(Phase::Run).await == Phase::Run {
        request_loop(&ctx, &mut conn, None, &mut poll).await;
    }
    poll.receiver.finish(&ctx);
}
