//! Generic polling of anyone's server: `GET <target URL>` every `--interval` per client (random
//! phase), recording corrected and uncorrected round trips, bytes and status codes.

use bytes::Bytes;

use super::{
    requests::{open_and_wait, request_loop, Exchange},
    ClientCtx,
};
use crate::schedule::Schedule;

struct Get(String);

impl Exchange for Get {
    fn path(&self) -> String {
        self.0.clone()
    }
    fn answer(&mut self, ctx: &ClientCtx, _: &Bytes, _: u64) {
        // Each answer is the unit of work for a generic poller.
        ctx.recorder()
            .counters
            .events_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub async fn run(mut ctx: ClientCtx) {
    let Some(mut conn) = open_and_wait(&ctx).await else {
        return;
    };
    let interval = ctx.shared.scenario.interval;
    let schedule = Schedule::fixed_with_random_phase(ctx.now_ns(), interval, &mut ctx.rng);
    let mut get = Get(ctx.target.path.clone());
    request_loop(&ctx, &mut conn, Some(schedule), &mut get).await;
}
