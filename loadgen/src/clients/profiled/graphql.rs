//! A GraphQL subscription by a profile's section: `graphql-transport-ws` on its URL, its
//! subscription document with its variables; every `next` payload is searched for stamps. Shares
//! the socket handling (`clients::graphql_sub`) with commbench's own subscription client. After a
//! drop it subscribes again: after the target's cursor, with the section's resume variables, when
//! a `next` payload carried one.

use tokio_tungstenite::tungstenite::Message;

use super::{no_section, resume_values, values, ClientCtx, Cursor};
use crate::{
    clients::{
        graphql_sub::{control, open},
        stream_feed::Arrival,
        ws_conn,
        ws_feed::{self, FeedProtocol, Opened, Step},
        Accounting,
    },
    profile::{template::Template, PatternSpec},
    wire,
};

struct TemplateGraphql {
    path: String,
    /// The `subscribe` message, built once.
    subscribe: String,
    /// The subscription document, its resume variables and the cursor they take.
    resume: Option<(String, Template, Cursor)>,
    accounting: Accounting,
}

impl TemplateGraphql {
    /// The `subscribe` message to send: the resume form once a `next` payload carried a cursor.
    fn subscribe_message(&self, ctx: &ClientCtx) -> String {
        let resumed = self.resume.as_ref().and_then(|(query, variables, cursor)| {
            let cursor = cursor.for_json()?;
            Some(subscribe_message(
                query,
                &variables.render(&resume_values(ctx, &cursor)),
            ))
        });
        resumed.unwrap_or_else(|| self.subscribe.clone())
    }
}

impl FeedProtocol for TemplateGraphql {
    fn accounting(&self) -> Accounting {
        self.accounting
    }

    async fn subscribe(&mut self, ctx: &ClientCtx, _cursor: Option<u64>) -> Opened {
        let mut socket = open(ctx, &self.path).await?;
        ws_conn::send_text(&mut socket, self.subscribe_message(ctx)).await?;
        Ok((socket, Some(0)))
    }

    fn message(&mut self, message: Message, arrival: Arrival<'_>) -> Step {
        let counters = &arrival.ctx.recorder().counters;
        let Message::Text(text) = message else {
            return Step::Continue;
        };
        let Some(message) = wire::gql_ws_message(&text) else {
            counters.error("bad_graphql_message");
            return Step::Continue;
        };
        match (message.kind, message.payload, arrival.receiver) {
            ("next", Some(payload), Some(receiver)) => {
                if let Some((_, _, cursor)) = &mut self.resume {
                    cursor.note(payload.get().as_bytes());
                }
                receiver.message(arrival.ctx, payload.get().as_bytes(), arrival.now_ns);
                Step::Continue
            }
            (kind, _, _) => control(kind, counters),
        }
    }
}

/// `{"id":"1","type":"subscribe","payload":{"query":…,"variables":…}}`.
fn subscribe_message(query: &str, variables: &str) -> String {
    let query = serde_json::Value::from(query).to_string();
    format!(
        r#"{{"id":"1","type":"subscribe","payload":{{"query":{query},"variables":{variables}}}}}"#
    )
}

pub async fn run(ctx: ClientCtx) {
    let Some(PatternSpec::GraphqlSub(spec)) = ctx.shared.spec() else {
        return no_section(&ctx, "GraphQL");
    };
    let values = values(&ctx);
    let protocol = TemplateGraphql {
        path: ctx.target.join(&spec.url.render(&values)),
        subscribe: subscribe_message(&spec.query, &spec.variables.render(&values)),
        resume: spec.resume.as_ref().map(|resume| {
            (
                spec.query.clone(),
                resume.with.clone(),
                Cursor::new(resume.cursor.clone()),
            )
        }),
        accounting: ctx.shared.accounting(),
    };
    ws_feed::run(ctx, protocol).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_message_carries_the_document_and_variables() {
        let text = subscribe_message(
            "subscription{events(topic:\"t\"){event{data}}}",
            r#"{"topic":"t"}"#,
        );
        let message: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(message["type"], "subscribe");
        assert_eq!(message["payload"]["variables"]["topic"], "t");
        assert!(message["payload"]["query"]
            .as_str()
            .unwrap()
            .starts_with("subscription"));
    }
}
