//! GraphQL polling: the `events` query `POST`ed to `/graphql` every `--interval` (random phase per
//! client), after the highest sequence number seen; asks again at once while the page says `more`.

use bytes::Bytes;
use http::Method;

use super::{
    requests::{open, Ask, Exchange},
    short_poll::on_interval,
    ClientCtx, FeedReceiver,
};
use crate::{
    http::{ClientError, HttpConn},
    wire::{self, PageHead, PollAnswer},
};

/// Where GraphQL queries go.
const ENDPOINT: &str = "/graphql";

/// Every GraphQL request carries a JSON body.
const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

/// One page after a cursor. It selects the same event fields the plain patterns deliver
/// (`topic seq data`), so the patterns carry the same content and differ only in their envelope.
const PAGE_QUERY: &str = "query($topic:String!,$after:Int!){events(topic:$topic,after:$after)\
                          {head more gap{oldest} events{topic seq data}}}";

/// The topic's head only: `after` defaults to 0, one event at most comes back, its fields unasked.
const HEAD_QUERY: &str = "query($topic:String!){events(topic:$topic,limit:1){head}}";

/// `{"query":…,"variables":{"topic":…` — the start of a GraphQL request whose variables the caller
/// completes (`,"after":N`) and closes (`}}`). Built once per client, so a poll only appends its
/// cursor.
pub(super) fn operation_start(query: &str, topic: &str) -> String {
    // A JSON string's Display is its escaped form: no fallible serializer needed.
    let json = |text: &str| serde_json::Value::from(text).to_string();
    format!(
        "{{\"query\":{},\"variables\":{{\"topic\":{}",
        json(query),
        json(topic)
    )
}

/// Learns `topic`'s head (the cursor to start after) with a one-event query.
pub(super) async fn head(conn: &mut HttpConn, topic: &str) -> Result<u64, ClientError> {
    let body = format!("{}}}}}", operation_start(HEAD_QUERY, topic));
    let answer = conn
        .fetch_with(Method::POST, ENDPOINT, &JSON, Bytes::from(body))
        .await?;
    wire::graphql::<PageHead>(&answer)
        .and_then(wire::GraphqlEvents::events)
        .map(|page| page.head)
        .ok_or_else(|| {
            ClientError::Protocol(format!(
                "bad GraphQL head answer: {}",
                String::from_utf8_lossy(&answer)
            ))
        })
}

struct GraphqlPoll {
    receiver: FeedReceiver,
    more: bool,
    /// The request body up to the cursor.
    body_start: String,
}

impl Exchange for GraphqlPoll {
    fn path(&self) -> String {
        ENDPOINT.to_owned()
    }

    fn request(&self) -> Ask<'_> {
        let body = format!(
            "{},\"after\":{}}}}}",
            self.body_start,
            self.receiver.cursor()
        );
        Ask {
            method: Method::POST,
            path: self.path(),
            headers: JSON.to_vec(),
            body: Bytes::from(body),
        }
    }

    fn answer(&mut self, ctx: &ClientCtx, body: &Bytes, now_ns: u64) {
        let Some(answer) = wire::graphql::<PollAnswer>(body) else {
            ctx.recorder().counters.error("bad_graphql_answer");
            self.more = false;
            return;
        };
        // GraphQL reports failures in a 200 answer: count them, then take whatever data came.
        if answer.has_errors() {
            ctx.recorder().counters.error("graphql_error");
        }
        self.more = answer
            .events()
            .is_some_and(|page| self.receiver.page(ctx, &page, now_ns));
    }

    fn more(&self) -> bool {
        self.more
    }

    fn done(&self, ctx: &ClientCtx) -> bool {
        self.receiver.done(ctx)
    }
}

pub async fn run(mut ctx: ClientCtx) {
    let Some(mut conn) = open(&ctx).await else {
        return;
    };
    let start = match head(&mut conn, ctx.topic()).await {
        Ok(head) => head,
        Err(error) => return ctx.mark_failed(&error),
    };
    ctx.mark_ready();
    let mut poll = GraphqlPoll {
        receiver: FeedReceiver::new(start),
        more: false,
        body_start: operation_start(PAGE_QUERY, ctx.topic()),
    };
    on_interval(&mut ctx, &mut conn, &mut poll).await;
    poll.receiver.finish(&ctx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_are_json_with_variables() {
        let poll = GraphqlPoll {
            receiver: FeedReceiver::new(41),
            more: false,
            body_start: operation_start(PAGE_QUERY, "t\"1"),
        };
        let ask = poll.request();
        assert_eq!((ask.method, ask.path.as_str()), (Method::POST, "/graphql"));
        assert_eq!(ask.headers, JSON);
        let body: serde_json::Value = serde_json::from_slice(&ask.body).unwrap();
        assert_eq!(body["query"], PAGE_QUERY);
        assert_eq!(
            body["variables"],
            serde_json::json!({"topic": "t\"1", "after": 41})
        );
        let head_body = format!("{}}}}}", operation_start(HEAD_QUERY, "t"));
        let head: serde_json::Value = serde_json::from_str(&head_body).unwrap();
        assert_eq!(head["variables"], serde_json::json!({"topic": "t"}));
    }
}
