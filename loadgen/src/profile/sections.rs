//! A profile's per-pattern sections (`[patterns.sse]`, …): the raw TOML shape of each kind of
//! section, and the checked plan a profile-driven client follows. Which kind a pattern's section
//! is comes from the pattern's row (`crate::pattern::About::section`).

use http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;

use super::{
    pointer::Pointer,
    template::{Template, Var},
    Field,
};
use crate::clients::{self, ClientFn};

/// The kinds of section, each read by one profile-driven client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// A request template, sent on the request-response schedule.
    Request,
    /// A poll URL with a cursor rule, asked every `--interval`.
    Poll,
    /// The same, asked again as soon as each answer arrives (the server holds the request).
    LongPoll,
    /// A held `text/event-stream` response.
    Sse,
    /// A WebSocket, optionally sent a subscribe message.
    WebSocket,
    /// Socket.IO (Engine.IO v4 over WebSocket): a namespace, a subscribe event, an event name.
    SocketIo,
    /// A `graphql-transport-ws` subscription.
    GraphqlSub,
}

impl Section {
    /// The client that follows this kind of section.
    pub fn client(self) -> ClientFn {
        match self {
            Section::Request => |ctx| Box::pin(clients::request_response::run(ctx)),
            Section::Poll => |ctx| Box::pin(clients::profiled::poll::run_short(ctx)),
            Section::LongPoll => |ctx| Box::pin(clients::profiled::poll::run_long(ctx)),
            Section::Sse => |ctx| Box::pin(clients::profiled::sse::run(ctx)),
            Section::WebSocket => |ctx| Box::pin(clients::profiled::ws::run(ctx)),
            Section::SocketIo => |ctx| Box::pin(clients::profiled::socketio::run(ctx)),
            Section::GraphqlSub => |ctx| Box::pin(clients::profiled::graphql::run(ctx)),
        }
    }

    /// Reads and checks a section of this kind; `field` names it in errors.
    pub fn parse(self, table: toml::Table, field: &Field) -> Result<PatternSpec, String> {
        let value = toml::Value::Table(table);
        let raw = |e: toml::de::Error| e.to_string().trim().to_owned();
        Ok(match self {
            Section::Request => {
                PatternSpec::Request(value.try_into::<RawRequest>().map_err(raw)?.check(field)?)
            }
            Section::Poll | Section::LongPoll => PatternSpec::Poll(
                value
                    .try_into::<RawPoll>()
                    .map_err(raw)?
                    .check(field, self)?,
            ),
            Section::Sse => {
                PatternSpec::Sse(value.try_into::<RawSse>().map_err(raw)?.check(field)?)
            }
            Section::WebSocket => {
                PatternSpec::WebSocket(value.try_into::<RawWs>().map_err(raw)?.check(field)?)
            }
            Section::SocketIo => {
                PatternSpec::SocketIo(value.try_into::<RawSocketIo>().map_err(raw)?.check(field)?)
            }
            Section::GraphqlSub => {
                PatternSpec::GraphqlSub(value.try_into::<RawGraphql>().map_err(raw)?.check(field)?)
            }
        })
    }
}

/// How a profile-driven client reaches one pattern on the target.
#[derive(Debug, Clone)]
pub enum PatternSpec {
    Request(RequestSpec),
    Poll(PollSpec),
    Sse(SseSpec),
    WebSocket(WsSpec),
    SocketIo(SocketIoSpec),
    GraphqlSub(GraphqlSpec),
}

impl PatternSpec {
    /// False when the route sends the server's own events rather than the published payloads.
    pub fn relays(&self) -> bool {
        match self {
            PatternSpec::Request(_) => false,
            PatternSpec::Poll(s) => s.relays,
            PatternSpec::Sse(s) => s.relays,
            PatternSpec::WebSocket(s) => s.relays,
            PatternSpec::SocketIo(s) => s.relays,
            PatternSpec::GraphqlSub(s) => s.relays,
        }
    }
}

/// Extra request headers, checked.
pub type Headers = Vec<(String, String)>;

/// A request: method, URL, body, headers.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    pub url: Template,
    pub body: Template,
    pub headers: Headers,
}

/// Where a poll's next cursor comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorRule {
    /// No cursor: every answer is the newest state (the `/bitcoin` kind).
    None,
    /// A JSON pointer into the answer; an answer without it keeps the cursor.
    Json(Pointer),
    /// A response header; an answer without it keeps the cursor.
    Header(HeaderName),
}

#[derive(Debug, Clone)]
pub struct PollSpec {
    pub url: Template,
    pub cursor: CursorRule,
    /// The cursor of the first poll.
    pub start_cursor: String,
    /// A JSON pointer to a boolean saying the answer was cut short: ask again at once.
    pub more: Option<Pointer>,
    pub headers: Headers,
    pub relays: bool,
}

#[derive(Debug, Clone)]
pub struct SseSpec {
    pub url: Template,
    /// Send the last `id:` seen as `Last-Event-ID` when reconnecting.
    pub last_event_id: bool,
    pub headers: Headers,
    pub relays: bool,
}

/// Which WebSocket data frames carry events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frames {
    Text,
    Binary,
    Any,
}

/// How a feed client takes its subscription up again on a new connection after a drop: where each
/// event message carries the target's cursor, and the subscribe form that takes it (`{cursor}`),
/// used instead of the first one once a cursor was seen. Without it a reconnected client subscribes
/// afresh, and what was published while it was away is counted lost.
#[derive(Debug, Clone)]
pub struct Resume<T> {
    /// Where an event message holds the cursor; a message without it keeps the last one.
    pub cursor: Pointer,
    pub with: T,
}

/// A WebSocket's resume form: another URL, another subscribe message, or both.
#[derive(Debug, Clone)]
pub struct WsResume {
    pub url: Option<Template>,
    pub subscribe: Option<Template>,
}

#[derive(Debug, Clone)]
pub struct WsSpec {
    pub url: Template,
    /// Sent (as a text frame) once the socket is open.
    pub subscribe: Option<Template>,
    /// Text a message must contain to confirm the subscription; without it the client counts as
    /// subscribed once the subscribe message is sent.
    pub subscribed: Option<String>,
    pub frames: Frames,
    pub resume: Option<Resume<WsResume>>,
    pub relays: bool,
}

#[derive(Debug, Clone)]
pub struct SocketIoSpec {
    /// The Engine.IO path, e.g. `/socket.io/`.
    pub path: String,
    pub namespace: String,
    /// Emitted after connecting, with `subscribe_args`; `None`: the namespace alone subscribes.
    pub subscribe_event: Option<String>,
    /// Arguments of the subscribe event, each a JSON template.
    pub subscribe_args: Vec<Template>,
    /// Ask for an ack and count as subscribed when it arrives.
    pub ack: bool,
    /// The event whose arguments carry the payloads.
    pub event: String,
    /// The subscribe event's arguments after a drop; the cursor is looked up in the event's
    /// arguments as one JSON array (`/0/seq`: the first argument's `seq`).
    pub resume: Option<Resume<Vec<Template>>>,
    pub relays: bool,
}

#[derive(Debug, Clone)]
pub struct GraphqlSpec {
    pub url: Template,
    /// The subscription document.
    pub query: String,
    /// Its variables, a JSON object template.
    pub variables: Template,
    /// The variables after a drop; the cursor is looked up in each `next` payload.
    pub resume: Option<Resume<Template>>,
    pub relays: bool,
}

const TOPIC: &[Var] = &[Var::Topic];
/// What a resume form may ask for.
const RESUME: &[Var] = &[Var::Topic, Var::Cursor];

/// Pairs a section's `cursor` with its resume form (`key`): both or neither, and the form must ask
/// for `{cursor}`.
fn resume<T>(
    cursor: Option<String>,
    with: Option<T>,
    uses_cursor: impl Fn(&T) -> bool,
    key: &str,
    field: &Field,
) -> Result<Option<Resume<T>>, String> {
    let (cursor, with) = match (cursor, with) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(field.at(
                "cursor",
                format!("says where events carry the target's cursor, but no `{key}` takes it"),
            ))
        }
        (None, Some(_)) => {
            return Err(field.at(
                key,
                "needs `cursor`: where each event message carries the target's cursor \
                 (e.g. `json:/seq`)"
                    .to_owned(),
            ))
        }
        (Some(cursor), Some(with)) => (cursor, with),
    };
    if !uses_cursor(&with) {
        return Err(field.at(
            key,
            "never asks for `{cursor}`, so it cannot resume after it".to_owned(),
        ));
    }
    let Some(("json", pointer)) = cursor.split_once(':') else {
        let detail = "expected `json:/pointer` into each event message (e.g. `json:/seq`)";
        return Err(field.at("cursor", format!("`{cursor}`: {detail}")));
    };
    let cursor = Pointer::parse(pointer).map_err(|e| field.at("cursor", e))?;
    Ok(Some(Resume { cursor, with }))
}

/// A template whose text must be JSON once filled in (`object`: a JSON object).
fn json_template(
    text: &str,
    allowed: &[Var],
    object: bool,
    field: &Field,
    key: &str,
) -> Result<Template, String> {
    let t = template(text, allowed, field, key)?;
    let sample = t.render(&super::template::Values {
        topic: "t",
        cursor: "0",
        ..Default::default()
    });
    match serde_json::from_str::<serde_json::Value>(&sample) {
        Ok(value) if !object || value.is_object() => Ok(t),
        Ok(_) => Err(field.at(key, format!("`{text}` is not a JSON object once filled in"))),
        Err(e) => Err(field.at(key, format!("`{text}` is not JSON once filled in: {e}"))),
    }
}

fn template(text: &str, allowed: &[Var], field: &Field, key: &str) -> Result<Template, String> {
    Template::parse(text, allowed).map_err(|e| field.at(key, e))
}

fn url(text: &str, allowed: &[Var], field: &Field) -> Result<Template, String> {
    path_template(text, allowed, field, "url")
}

/// A URL template (`key` names it in errors): a path under the base URL.
fn path_template(
    text: &str,
    allowed: &[Var],
    field: &Field,
    key: &str,
) -> Result<Template, String> {
    if !text.starts_with('/') {
        return Err(field.at(
            key,
            format!("`{text}` must be a path starting with `/` (the base URL gives host and port)"),
        ));
    }
    template(text, allowed, field, key)
}

pub fn headers(raw: Option<toml::Table>, field: &Field) -> Result<Headers, String> {
    let mut out = Vec::new();
    for (name, value) in raw.unwrap_or_default() {
        let toml::Value::String(value) = value else {
            return Err(field.at("headers", format!("`{name}` must be a string")));
        };
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| field.at("headers", format!("`{name}` is not a header name")))?;
        HeaderValue::from_str(&value)
            .map_err(|_| field.at("headers", format!("`{value}` is not a header value")))?;
        out.push((name.to_ascii_lowercase(), value));
    }
    Ok(out)
}

pub fn method(text: Option<&str>, field: &Field) -> Result<Method, String> {
    let text = text.unwrap_or("GET");
    match text.to_ascii_uppercase().as_str() {
        "GET" => Ok(Method::GET),
        "POST" => Ok(Method::POST),
        "PUT" => Ok(Method::PUT),
        "PATCH" => Ok(Method::PATCH),
        "DELETE" => Ok(Method::DELETE),
        _ => Err(field.at(
            "method",
            format!("`{text}` is not one of GET, POST, PUT, PATCH, DELETE"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    method: Option<String>,
    url: String,
    body: Option<String>,
    headers: Option<toml::Table>,
}

impl RawRequest {
    fn check(self, field: &Field) -> Result<RequestSpec, String> {
        Ok(RequestSpec {
            method: method(self.method.as_deref(), field)?,
            url: url(&self.url, TOPIC, field)?,
            body: template(self.body.as_deref().unwrap_or(""), TOPIC, field, "body")?,
            headers: headers(self.headers, field)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoll {
    url: String,
    cursor: Option<String>,
    start_cursor: Option<String>,
    more: Option<String>,
    headers: Option<toml::Table>,
    relays: Option<bool>,
}

impl RawPoll {
    fn check(self, field: &Field, kind: Section) -> Result<PollSpec, String> {
        let cursor = match self.cursor.as_deref().unwrap_or("none") {
            "none" => CursorRule::None,
            text => match text.split_once(':') {
                Some(("json", pointer)) => {
                    CursorRule::Json(Pointer::parse(pointer).map_err(|e| field.at("cursor", e))?)
                }
                Some(("header", name)) => {
                    CursorRule::Header(HeaderName::from_bytes(name.trim().as_bytes()).map_err(
                        |_| field.at("cursor", format!("`{name}` is not a header name")),
                    )?)
                }
                _ => {
                    return Err(field.at(
                        "cursor",
                        format!(
                        "`{text}`: expected `none`, `json:/pointer` (e.g. `json:/events/-1/seq`) \
                             or `header:name`"
                    ),
                    ))
                }
            },
        };
        let mut allowed = vec![Var::Topic, Var::Cursor];
        if kind == Section::LongPoll {
            allowed.push(Var::TimeoutMs);
        }
        let url = url(&self.url, &allowed, field)?;
        if (cursor == CursorRule::None) == url.uses(Var::Cursor) {
            let detail = if cursor == CursorRule::None {
                "the URL asks for `{cursor}` but `cursor` is `none`: say where the next cursor is \
                 (`json:/pointer` or `header:name`)"
            } else {
                "a cursor rule is given but the URL has no `{cursor}`"
            };
            return Err(field.at("cursor", detail.to_owned()));
        }
        Ok(PollSpec {
            url,
            cursor,
            start_cursor: self.start_cursor.unwrap_or_else(|| "0".to_owned()),
            more: self
                .more
                .map(|p| Pointer::parse(&p).map_err(|e| field.at("more", e)))
                .transpose()?,
            headers: headers(self.headers, field)?,
            relays: self.relays.unwrap_or(true),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSse {
    url: String,
    last_event_id: Option<bool>,
    headers: Option<toml::Table>,
    relays: Option<bool>,
}

impl RawSse {
    fn check(self, field: &Field) -> Result<SseSpec, String> {
        Ok(SseSpec {
            url: url(&self.url, TOPIC, field)?,
            last_event_id: self.last_event_id.unwrap_or(true),
            headers: headers(self.headers, field)?,
            relays: self.relays.unwrap_or(true),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWs {
    url: String,
    subscribe: Option<String>,
    subscribed: Option<String>,
    frames: Option<String>,
    cursor: Option<String>,
    resume_url: Option<String>,
    resume: Option<String>,
    relays: Option<bool>,
}

impl RawWs {
    fn check(self, field: &Field) -> Result<WsSpec, String> {
        let frames = match self.frames.as_deref().unwrap_or("any") {
            "text" => Frames::Text,
            "binary" => Frames::Binary,
            "any" => Frames::Any,
            other => {
                return Err(field.at("frames", format!("`{other}`: expected text, binary or any")))
            }
        };
        let subscribe = self
            .subscribe
            .filter(|s| !s.is_empty())
            .map(|s| template(&s, TOPIC, field, "subscribe"))
            .transpose()?;
        if self.subscribed.is_some() && subscribe.is_none() {
            return Err(field.at(
                "subscribed",
                "confirms a subscription, but no `subscribe` message is sent".to_owned(),
            ));
        }
        let resume_url = self
            .resume_url
            .map(|text| path_template(&text, RESUME, field, "resume_url"))
            .transpose()?;
        let resume_message = self
            .resume
            .filter(|s| !s.is_empty())
            .map(|s| template(&s, RESUME, field, "resume"))
            .transpose()?;
        let forms = (resume_url.is_some() || resume_message.is_some()).then_some(WsResume {
            url: resume_url,
            subscribe: resume_message,
        });
        let resume = resume(
            self.cursor,
            forms,
            |forms| {
                forms
                    .url
                    .iter()
                    .chain(&forms.subscribe)
                    .any(|t| t.uses(Var::Cursor))
            },
            "resume",
            field,
        )?;
        Ok(WsSpec {
            url: url(&self.url, TOPIC, field)?,
            subscribe,
            subscribed: self.subscribed.filter(|s| !s.is_empty()),
            frames,
            resume,
            relays: self.relays.unwrap_or(true),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSocketIo {
    path: Option<String>,
    namespace: Option<String>,
    subscribe_event: Option<String>,
    subscribe_args: Option<Vec<String>>,
    ack: Option<bool>,
    event: String,
    cursor: Option<String>,
    resume_args: Option<Vec<String>>,
    relays: Option<bool>,
}

impl RawSocketIo {
    fn check(self, field: &Field) -> Result<SocketIoSpec, String> {
        let path = self.path.unwrap_or_else(|| "/socket.io/".to_owned());
        if !path.starts_with('/') || path.contains('?') {
            return Err(field.at(
                "path",
                format!("`{path}` must be a path starting with `/`, without a query"),
            ));
        }
        let namespace = self.namespace.unwrap_or_else(|| "/".to_owned());
        if !namespace.starts_with('/') || namespace.contains([',', '?']) {
            return Err(field.at(
                "namespace",
                format!("`{namespace}` must start with `/` and hold no `,` or `?`"),
            ));
        }
        let args = self
            .subscribe_args
            .unwrap_or_default()
            .iter()
            .map(|arg| json_template(arg, TOPIC, false, field, "subscribe_args"))
            .collect::<Result<Vec<_>, _>>()?;
        let resume_args = self
            .resume_args
            .map(|args| {
                args.iter()
                    .map(|arg| json_template(arg, RESUME, false, field, "resume_args"))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        if resume_args.is_some() && self.subscribe_event.is_none() {
            return Err(field.at(
                "resume_args",
                "given without a `subscribe_event` to send them with".to_owned(),
            ));
        }
        let resume = resume(
            self.cursor,
            resume_args,
            |args| args.iter().any(|t| t.uses(Var::Cursor)),
            "resume_args",
            field,
        )?;
        if self.subscribe_event.is_none() && !args.is_empty() {
            return Err(field.at(
                "subscribe_args",
                "given without a `subscribe_event` to send them with".to_owned(),
            ));
        }
        let ack = self.ack.unwrap_or(self.subscribe_event.is_some());
        if ack && self.subscribe_event.is_none() {
            return Err(field.at(
                "ack",
                "an ack answers the subscribe event, and none is sent".to_owned(),
            ));
        }
        Ok(SocketIoSpec {
            path,
            namespace,
            subscribe_event: self.subscribe_event,
            subscribe_args: args,
            ack,
            event: self.event,
            resume,
            relays: self.relays.unwrap_or(true),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGraphql {
    url: String,
    subscription: String,
    variables: Option<String>,
    cursor: Option<String>,
    resume_variables: Option<String>,
    relays: Option<bool>,
}

impl RawGraphql {
    fn check(self, field: &Field) -> Result<GraphqlSpec, String> {
        let variables = json_template(
            self.variables.as_deref().unwrap_or("{}"),
            TOPIC,
            true,
            field,
            "variables",
        )?;
        let resume_variables = self
            .resume_variables
            .map(|text| json_template(&text, RESUME, true, field, "resume_variables"))
            .transpose()?;
        let resume = resume(
            self.cursor,
            resume_variables,
            |t| t.uses(Var::Cursor),
            "resume_variables",
            field,
        )?;
        if !self.subscription.trim_start().starts_with("subscription") {
            return Err(field.at(
                "subscription",
                "expected a GraphQL subscription document (`subscription … { … }`)".to_owned(),
            ));
        }
        Ok(GraphqlSpec {
            url: url(&self.url, TOPIC, field)?,
            query: self.subscription,
            variables,
            resume,
            relays: self.relays.unwrap_or(true),
        })
    }
}
