//! Request-response baseline: `GET /hello` open-loop at the target rate (wrk2's model: the rate is
//! split evenly over the connections) or closed-loop (`--closed-loop` / `--rate 0`).

use std::time::Duration;

use bytes::Bytes;

use super::{
    requests::{open_and_wait, request_loop, Exchange},
    ClientCtx,
};
use crate::schedule::Schedule;

struct Hello;

impl Exchange for Hello {
    fn path(&self) -> String {
        "/hello".into()
    }
    fn answer(&mut self, _: &ClientCtx, _: &Bytes, _: u64) {}
}

pub async fn run(ctx: ClientCtx) {
    let Some(mut conn) = open_and_wait(&ctx).await else {
        return;
    };
    let scenario = ctx.shared.scenario.clone();
    let schedule = (!scenario.closed_loop).then(|| {
        let per_connection = Duration::from_secs_f64(scenario.clients as f64 / scenario.rate);
        Schedule::fixed_spread(ctx.now_ns(), per_connection, ctx.id, scenario.clients)
    });
    request_loop(&ctx, &mut conn, schedule, &mut Hello).await;
}
