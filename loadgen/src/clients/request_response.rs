//! Request-response baseline: `GET /hello` (or a target profile's request template) open-loop at
//! the target rate (wrk2's model: the rate is split evenly over the connections) or closed-loop
//! (`--closed-loop` / `--rate 0`).

use std::time::Duration;

use bytes::Bytes;
use http::Method;

use super::{
    requests::{open_and_wait, request_loop, Ask, Exchange},
    ClientCtx,
};
use crate::{
    profile::{template::Values, PatternSpec},
    schedule::Schedule,
};

/// The request every call sends, rendered once per client.
struct Request {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Request {
    /// The profile's template for the client's topic, or commbench's `GET /hello`.
    fn of(ctx: &ClientCtx) -> Self {
        match ctx.shared.spec() {
            Some(PatternSpec::Request(spec)) => {
                let values = Values {
                    topic: ctx.topic(),
                    ..Values::default()
                };
                Self {
                    method: spec.method.clone(),
                    path: ctx.target.join(&spec.url.render(&values)),
                    headers: spec.headers.clone(),
                    body: Bytes::from(spec.body.render_with(&values, b"", &[])),
                }
            }
            _ => Self {
                method: Method::GET,
                path: "/hello".into(),
                headers: Vec::new(),
                body: Bytes::new(),
            },
        }
    }
}

impl Exchange for Request {
    fn path(&self) -> String {
        self.path.clone()
    }
    fn request(&self) -> Ask<'_> {
        Ask {
            method: self.method.clone(),
            path: self.path(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            body: self.body.clone(),
        }
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
    let mut request = Request::of(&ctx);
    request_loop(&ctx, &mut conn, schedule, &mut request).await;
}
