//! Every pattern commbench drives and everything the harness and the report know about it, in one
//! row per pattern ([`Pattern::about`]); every other place asks the row instead of matching names.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    clients::{self, jobs::Notify, ClientFn},
    profile::Section,
};

/// The patterns `commbench run` can drive. Adding one: a variant here, its row in
/// [`Pattern::about`], its place in [`Pattern::ALL`]; nothing else in the load generator or the
/// report names patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    RequestResponse,
    ShortPoll,
    LongPoll,
    Sse,
    Ws,
    GraphqlPoll,
    GraphqlSub,
    PollUrl,
    SseUrl,
    WsUrl,
    JobShortPoll,
    JobLongPoll,
    JobSse,
    JobWs,
    SocketIo,
}

/// What a pattern's traffic is: which counters apply and what the report compares it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Holds a connection down which the server pushes the shared feed.
    FeedPush,
    /// Asks the server for the shared feed's events; the answers come in this envelope.
    FeedPoll(Envelope),
    /// Request-response against commbench: no feed, each response is the cell's event.
    Request,
    /// The message queue: users submit jobs at the rate and learn each result by the pattern.
    Job,
    /// Generic: drives someone else's server at `--target`, not the commbench feed.
    External,
}

/// How a polling pattern's answers are framed. Cells with the same envelope share one fit of the
/// bytes per response and per event in the report's measured-vs-model table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Envelope {
    /// How the report names the cells that share it.
    pub name: &'static str,
    /// What one poll uploads, in words.
    pub request: &'static str,
}

/// The JSON batch answer of `/poll` and `/long-poll`.
const FEED_BATCH: Envelope = Envelope {
    name: "short-/long-poll",
    request: "a poll is a GET without body, so this is its request line and headers",
};

/// The GraphQL response wrapping the same batch.
const GRAPHQL_BATCH: Envelope = Envelope {
    name: "graphql-poll",
    request: "a poll is a POST of the JSON query, so this is its request line, headers and body",
};

/// A pattern that is another one in a different envelope: the report sets the two side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// The pattern underneath, on the same transport and schedule.
    pub over: Pattern,
    /// The layer's name in prose (`GraphQL`).
    pub name: &'static str,
}

/// What a cell's achieved rate counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateOf {
    /// Events published (submitted jobs for the job patterns); nothing for a pushing external server.
    Publishes,
    /// Requests the clients sent.
    Requests,
}

/// Everything about one pattern.
#[derive(Clone, Copy)]
pub struct About {
    /// The name in flags, scenario files, cell names and `summary.csv`.
    pub name: &'static str,
    /// Other spellings a user may type (matched case-insensitively).
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    /// Asks on `--interval` (a study gives it one cell per interval).
    pub interval: bool,
    /// Display order in tables, charts and findings: push first, then polling, then the rest.
    pub rank: u8,
    /// The name in the report's sentences.
    pub prose: &'static str,
    /// Chart colour (the colour-blind-friendly "tab10" set; the job patterns take the light "tab20"
    /// partner of the pattern that notifies them).
    pub color: (u8, u8, u8),
    pub layer: Option<Layer>,
    pub rate_of: RateOf,
    /// The simulated client (`clients/`) against commbench's own server.
    pub client: ClientFn,
    /// The kind of section a target profile describes this pattern with, and so the
    /// profile-driven client that runs it against another server; `None`: only commbench's.
    pub section: Option<Section>,
}

impl Pattern {
    /// Every pattern, in the order error messages and help text list them.
    pub const ALL: [Pattern; 15] = [
        Pattern::RequestResponse,
        Pattern::ShortPoll,
        Pattern::LongPoll,
        Pattern::Sse,
        Pattern::Ws,
        Pattern::GraphqlPoll,
        Pattern::GraphqlSub,
        Pattern::PollUrl,
        Pattern::SseUrl,
        Pattern::WsUrl,
        Pattern::JobShortPoll,
        Pattern::JobLongPoll,
        Pattern::JobSse,
        Pattern::JobWs,
        Pattern::SocketIo,
    ];

    /// The pattern's row.
    pub fn about(self) -> About {
        match self {
            Pattern::RequestResponse => About {
                name: "request-response",
                aliases: &["rr", "request_response", "reqres"],
                kind: Kind::Request,
                interval: false,
                rank: 7,
                prose: "request-response",
                color: (127, 127, 127),
                layer: None,
                rate_of: RateOf::Requests,
                client: |ctx| Box::pin(clients::request_response::run(ctx)),
                section: Some(Section::Request),
            },
            Pattern::ShortPoll => About {
                name: "short-poll",
                aliases: &["short_poll", "poll"],
                kind: Kind::FeedPoll(FEED_BATCH),
                interval: true,
                rank: 5,
                prose: "short polling",
                color: (214, 39, 40),
                layer: None,
                rate_of: RateOf::Publishes,
                client: |ctx| Box::pin(clients::short_poll::run(ctx)),
                section: Some(Section::Poll),
            },
            Pattern::LongPoll => About {
                name: "long-poll",
                aliases: &["long_poll", "longpoll"],
                kind: Kind::FeedPoll(FEED_BATCH),
                interval: false,
                rank: 4,
                prose: "long polling",
                color: (255, 127, 14),
                layer: None,
                rate_of: RateOf::Publishes,
                client: |ctx| Box::pin(clients::long_poll::run(ctx)),
                section: Some(Section::LongPoll),
            },
            Pattern::Sse => About {
                name: "sse",
                aliases: &[],
                kind: Kind::FeedPush,
                interval: false,
                rank: 0,
                prose: "SSE",
                color: (31, 119, 180),
                layer: None,
                rate_of: RateOf::Publishes,
                client: |ctx| Box::pin(clients::sse::run(ctx)),
                section: Some(Section::Sse),
            },
            Pattern::Ws => About {
                name: "ws",
                aliases: &["websocket", "websockets"],
                kind: Kind::FeedPush,
                interval: false,
                rank: 1,
                prose: "WebSocket",
                color: (44, 160, 44),
                layer: None,
                rate_of: RateOf::Publishes,
                client: |ctx| Box::pin(clients::ws::run(ctx)),
                section: Some(Section::WebSocket),
            },
            // Socket.IO (Engine.IO v4 over WebSocket) on `/socket.io/`: `subscribe`, events as `event`.
            Pattern::SocketIo => About {
                name: "socketio",
                aliases: &["socket.io", "socket-io", "socket_io"],
                kind: Kind::FeedPush,
                interval: false,
                rank: 2,
                prose: "Socket.IO",
                // Socket.IO's own near-black: tab10 is used up, and it stands apart from every hue.
                color: (33, 33, 33),
                layer: Some(Layer {
                    over: Pattern::Ws,
                    name: "Socket.IO",
                }),
                rate_of: RateOf::Publishes,
                client: |ctx| Box::pin(clients::socketio::run(ctx)),
                section: Some(Section::SocketIo),
            },
            // Short polling in GraphQL: the `events` query over `POST /graphql`.
            Pattern::GraphqlPoll => About {
                name: "graphql-poll",
                aliases: &["graphql_poll", "gql-poll", "gql_poll", "graphql-query"],
                kind: Kind::FeedPoll(GRAPHQL_BATCH),
                interval: true,
                rank: 6,
                prose: "GraphQL polling",
                color: (188, 189, 34),
                layer: Some(Layer {
                    over: Pattern::ShortPoll,
                    name: "GraphQL",
                }),
                rate_of: RateOf::Publishes,
                client: |ctx| Box::pin(clients::graphql_poll::run(ctx)),
                section: None,
            },
            // A GraphQL subscription over `graphql-transport-ws` on `/graphql/ws`.
            Pattern::GraphqlSub => About {
                name: "graphql-sub",
                aliases: &[
                    "graphql_sub",
                    "gql-sub",
                    "gql_sub",
                    "graphql-subscription",
                    "graphql_subscription",
                    "graphql-ws",
                ],
                kind: Kind::FeedPush,
                interval: false,
                rank: 3,
                prose: "GraphQL subscriptions",
                color: (23, 190, 207),
                layer: Some(Layer {
                    over: Pattern::Ws,
                    name: "GraphQL",
                }),
                rate_of: RateOf::Publishes,
                client: |ctx| Box::pin(clients::graphql_sub::run(ctx)),
                section: Some(Section::GraphqlSub),
            },
            // The generic patterns and the job patterns have no common name: prose uses theirs.
            // GET any URL on an interval per client: the poll client of an ad-hoc profile.
            Pattern::PollUrl => About {
                name: "poll-url",
                aliases: &[],
                kind: Kind::External,
                interval: true,
                rank: 12,
                prose: "poll-url",
                color: (148, 103, 189),
                layer: None,
                rate_of: RateOf::Requests,
                client: |ctx| Box::pin(clients::profiled::poll::run_short(ctx)),
                section: Some(Section::Poll),
            },
            // Hold an SSE stream on any URL, recording inter-arrival times (an ad-hoc profile).
            Pattern::SseUrl => About {
                name: "sse-url",
                aliases: &[],
                kind: Kind::External,
                interval: false,
                rank: 13,
                prose: "sse-url",
                color: (140, 86, 75),
                layer: None,
                rate_of: RateOf::Publishes,
                client: |ctx| Box::pin(clients::profiled::sse::run(ctx)),
                section: Some(Section::Sse),
            },
            // Open a WebSocket to any URL, optionally send a message, record inter-arrival times
            // (an ad-hoc profile).
            Pattern::WsUrl => About {
                name: "ws-url",
                aliases: &[],
                kind: Kind::External,
                interval: false,
                rank: 14,
                prose: "ws-url",
                color: (227, 119, 194),
                layer: None,
                rate_of: RateOf::Publishes,
                client: |ctx| Box::pin(clients::profiled::ws::run(ctx)),
                section: Some(Section::WebSocket),
            },
            // Users submit jobs and short-poll each job's status until it is done.
            Pattern::JobShortPoll => About {
                name: "job-short-poll",
                aliases: &[],
                kind: Kind::Job,
                interval: true,
                rank: 9,
                prose: "job-short-poll",
                color: (255, 152, 150),
                layer: None,
                rate_of: RateOf::Publishes,
                client: |ctx| Box::pin(clients::jobs::run(ctx, Notify::ShortPoll)),
                section: None,
            },
            // Users long-poll the job handle (`?wait_ms=`) until it is done.
            Pattern::JobLongPoll => About {
                name: "job-long-poll",
                aliases: &[],
                kind: Kind::Job,
                interval: false,
                rank: 8,
                prose: "job-long-poll",
                color: (255, 187, 120),
                layer: None,
                rate_of: RateOf::Publishes,
                client: |ctx| Box::pin(clients::jobs::run(ctx, Notify::LongPoll)),
                section: None,
            },
            // Users hear the completion on their own topic over SSE.
            Pattern::JobSse => About {
                name: "job-sse",
                aliases: &[],
                kind: Kind::Job,
                interval: false,
                rank: 10,
                prose: "job-sse",
                color: (174, 199, 232),
                layer: None,
                rate_of: RateOf::Publishes,
                client: |ctx| Box::pin(clients::jobs::run(ctx, Notify::Sse)),
                section: None,
            },
            // Users hear the completion on their own topic over WebSocket.
            Pattern::JobWs => About {
                name: "job-ws",
                aliases: &[],
                kind: Kind::Job,
                interval: false,
                rank: 11,
                prose: "job-ws",
                color: (152, 223, 138),
                layer: None,
                rate_of: RateOf::Publishes,
                client: |ctx| Box::pin(clients::jobs::run(ctx, Notify::Ws)),
                section: None,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        self.about().name
    }

    pub fn kind(self) -> Kind {
        self.about().kind
    }

    /// The display rank (unique per pattern).
    pub fn rank(self) -> u8 {
        self.about().rank
    }

    /// The name in the report's sentences: `short polling`, `SSE`.
    pub fn prose(self) -> &'static str {
        self.about().prose
    }

    /// The pattern this one wraps in another envelope, if any.
    pub fn layer(self) -> Option<Layer> {
        self.about().layer
    }

    /// The simulated client of this pattern: the profile-driven one when the target is described
    /// by a profile (and the pattern has a section), else the one for commbench's own server.
    pub fn client(self, profiled: bool) -> ClientFn {
        let about = self.about();
        match about.section {
            Some(section) if profiled => section.client(),
            _ => about.client,
        }
    }

    /// Generic modes need `--target` and measure any server, not the commbench feed.
    pub fn is_generic(self) -> bool {
        self.kind() == Kind::External
    }

    /// Clients receive the feed's events (and so have loss/duplicate accounting).
    pub fn uses_feed(self) -> bool {
        matches!(self.kind(), Kind::FeedPush | Kind::FeedPoll(_))
    }

    /// A push pattern of its own (not another one in a new envelope): what the report takes as
    /// the reference the other patterns are compared with.
    pub fn is_plain_push(self) -> bool {
        self.kind() == Kind::FeedPush && self.layer().is_none()
    }

    /// Asks on `--interval` (a study gives it one cell per interval).
    pub fn polls_on_interval(self) -> bool {
        self.about().interval
    }

    /// The message-queue patterns: users submit jobs at `rate` (in total) and wait for the results.
    pub fn is_job(self) -> bool {
        self.kind() == Kind::Job
    }

    /// Loss accounting: feed events by sequence number, or job results by job.
    pub fn counts_loss(self) -> bool {
        self.uses_feed() || self.is_job()
    }

    /// The names of the patterns `keep` selects, joined with `, ` (for messages and help).
    pub fn names_where(keep: impl Fn(Pattern) -> bool) -> String {
        Pattern::ALL
            .into_iter()
            .filter(|p| keep(*p))
            .map(Pattern::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `--pattern` help: every name, grouped as users meet them.
    pub fn help() -> String {
        format!(
            "Patterns to run, one after another: {}; the message queue's {}; against --target \
             also {}. Comma-separated or repeated. [default: sse]",
            Pattern::names_where(|p| !p.is_job() && !p.is_generic()),
            Pattern::names_where(Pattern::is_job),
            Pattern::names_where(Pattern::is_generic),
        )
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a user typed: a name or an alias, in any case.
impl FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = s.trim().to_ascii_lowercase();
        Pattern::ALL
            .into_iter()
            .find(|p| {
                let about = p.about();
                about.name == wanted || about.aliases.contains(&wanted.as_str())
            })
            .ok_or_else(|| unknown(s))
    }
}

fn unknown(name: &str) -> String {
    format!(
        "unknown pattern `{name}` (known: {})",
        Pattern::names_where(|_| true)
    )
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a result file holds: exactly a name commbench writes. A name this build does not know (a
/// file from a newer commbench) is an error, not a cell drawn without colour, rank or prose.
impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(d)?;
        Pattern::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| serde::de::Error::custom(unknown(&name)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn all_lists_every_variant_once() {
        // Exhaustive: a new variant does not compile until it is given its place in ALL.
        let position = |p: Pattern| match p {
            Pattern::RequestResponse => 0,
            Pattern::ShortPoll => 1,
            Pattern::LongPoll => 2,
            Pattern::Sse => 3,
            Pattern::Ws => 4,
            Pattern::GraphqlPoll => 5,
            Pattern::GraphqlSub => 6,
            Pattern::PollUrl => 7,
            Pattern::SseUrl => 8,
            Pattern::WsUrl => 9,
            Pattern::JobShortPoll => 10,
            Pattern::JobLongPoll => 11,
            Pattern::JobSse => 12,
            Pattern::JobWs => 13,
            Pattern::SocketIo => 14,
        };
        for (i, pattern) in Pattern::ALL.into_iter().enumerate() {
            assert_eq!(position(pattern), i, "{pattern}");
        }
    }

    #[test]
    fn names_aliases_ranks_and_colours_are_unique() {
        let all = Pattern::ALL.len();
        let spellings: Vec<&str> = Pattern::ALL
            .iter()
            .flat_map(|p| std::iter::once(p.as_str()).chain(p.about().aliases.iter().copied()))
            .collect();
        let distinct: BTreeSet<_> = spellings.iter().collect();
        assert_eq!(distinct.len(), spellings.len(), "{spellings:?}");
        let ranks: BTreeSet<_> = Pattern::ALL.iter().map(|p| p.rank()).collect();
        assert_eq!(ranks.len(), all);
        let colours: BTreeSet<_> = Pattern::ALL.iter().map(|p| p.about().color).collect();
        assert_eq!(colours.len(), all);
        for pattern in Pattern::ALL {
            let about = pattern.about();
            assert_eq!(about.name, about.name.to_ascii_lowercase(), "{pattern}");
            assert!(!about.prose.is_empty(), "{pattern}");
            for alias in about.aliases {
                assert_eq!(alias.parse::<Pattern>(), Ok(pattern), "{alias}");
            }
            if let Some(layer) = about.layer {
                assert!(layer.over.layer().is_none(), "{pattern}: one layer deep");
                let kind = |p: Pattern| std::mem::discriminant(&p.kind());
                assert_eq!(kind(layer.over), kind(pattern), "{pattern}: same kind");
                assert_eq!(layer.over.polls_on_interval(), about.interval, "{pattern}");
            }
        }
    }

    #[test]
    fn names_round_trip_through_text_and_serde() {
        for pattern in Pattern::ALL {
            assert_eq!(pattern.as_str().parse::<Pattern>(), Ok(pattern));
            let json = serde_json::to_value(pattern).unwrap();
            assert_eq!(json, serde_json::json!(pattern.as_str()));
            assert_eq!(serde_json::from_value::<Pattern>(json).unwrap(), pattern);
        }
        assert_eq!(" GQL_POLL ".parse::<Pattern>(), Ok(Pattern::GraphqlPoll));
        let err = "carrier-pigeon".parse::<Pattern>().unwrap_err();
        assert!(
            err.contains("carrier-pigeon") && err.contains("long-poll"),
            "{err}"
        );
        // Result files hold exact names: an alias there is not what commbench wrote.
        let err = serde_json::from_value::<Pattern>(serde_json::json!("websocket")).unwrap_err();
        assert!(
            err.to_string().contains("unknown pattern `websocket`"),
            "{err}"
        );
    }

    #[test]
    fn help_names_every_pattern() {
        let help = Pattern::help();
        for pattern in Pattern::ALL {
            assert!(help.contains(pattern.as_str()), "{pattern} missing: {help}");
        }
        assert!(help.starts_with(
            "Patterns to run, one after another: request-response, short-poll, long-poll, sse, \
             ws, graphql-poll, graphql-sub, socketio; the message queue's job-short-poll, job-long-poll, \
             job-sse, job-ws; against --target also poll-url, sse-url, ws-url."
        ));
    }
}
