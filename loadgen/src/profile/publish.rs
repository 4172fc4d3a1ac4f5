//! How events are published to a target: an HTTP request template or a WebSocket message template,
//! over a number of connections; commbench's own `POST /publish/{topic}` is the built-in route.
//! The publisher (`crate::publisher`) schedules; this module sends one publish.

use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use serde::Deserialize;

use super::{
    pointer::Pointer,
    sections::{headers, method, Headers},
    template::{Template, Values, Var},
    Field,
};
use crate::{
    clients::ws_conn::{self, Socket},
    http::{ClientError, HttpConn},
    record::Recorder,
    target::Target,
};

/// The `[publish]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublish {
    method: Option<String>,
    url: Option<String>,
    body: Option<String>,
    headers: Option<toml::Table>,
    seq: Option<String>,
    ws: Option<String>,
    message: Option<String>,
    connections: Option<u64>,
}

/// How one publish travels.
#[derive(Debug, Clone)]
pub enum Route {
    Http {
        method: Method,
        url: Template,
        body: Template,
        headers: Headers,
        /// Where the answer says the event's sequence number (commbench's native clients need it).
        seq: Option<Pointer>,
    },
    WebSocket {
        url: Template,
        message: Template,
    },
}

/// A checked `[publish]`.
#[derive(Debug, Clone)]
pub struct Publish {
    pub route: Route,
    /// Concurrent publish connections.
    pub connections: usize,
    /// Paths are under the target URL's path (a profile's); commbench's own route is at the root.
    pub under_target_path: bool,
}

/// Concurrent publish connections by default: enough to keep up with slow answers without queueing.
pub const CONNECTIONS: usize = 16;

impl Publish {
    /// commbench's own: `POST /publish/{topic}` with the payload as the body; the answer's `seq`.
    pub fn commbench() -> Self {
        let parse = |text: &str, vars: &[Var]| {
            Template::parse(text, vars).unwrap_or_else(|_| Template::literal(text))
        };
        Self {
            route: Route::Http {
                method: Method::POST,
                url: parse("/publish/{topic}", &[Var::Topic]),
                body: parse("{payload}", &[Var::Payload]),
                headers: Vec::new(),
                seq: Pointer::parse("/seq").ok(),
            },
            connections: CONNECTIONS,
            under_target_path: false,
        }
    }

    /// Opens one publish connection ahead of the first publish (the publisher's connections
    /// exist before any client's); `None` when the route's WebSocket URL names the topic, so its
    /// connection is opened with its first publish.
    pub async fn open(
        &self,
        target: &Target,
        recorder: &Arc<Recorder>,
    ) -> Result<Option<Conn>, ClientError> {
        if matches!(&self.route, Route::WebSocket { url, .. } if url.uses(Var::Topic)) {
            return Ok(None);
        }
        let values = Values::default();
        self.connect(target, recorder, &values).await.map(Some)
    }

    /// Sends one publish to `topic` through `conn` (opened first when `None`; the caller drops it
    /// after an error). The payload is made once the connection is in hand, right before it is
    /// written. Returns the event's sequence number when the route reports one.
    pub async fn send(
        &self,
        conn: &mut Option<Conn>,
        target: &Target,
        recorder: &Arc<Recorder>,
        topic: &str,
        payload: impl FnOnce() -> Bytes,
    ) -> Result<Option<u64>, ClientError> {
        let values = Values {
            topic,
            ..Values::default()
        };
        if conn.is_none() {
            *conn = Some(self.connect(target, recorder, &values).await?);
        }
        match (&self.route, conn.as_mut()) {
            (
                Route::Http {
                    method,
                    url,
                    body,
                    headers,
                    seq,
                },
                Some(Conn::Http(http)),
            ) => {
                let payload = payload();
                let body = if body.is_only(Var::Payload) {
                    payload
                } else {
                    Bytes::from(body.render_with(&values, &payload, &[]))
                };
                let path = self.path(url, target, &values);
                let answer = http
                    .fetch_with(method.clone(), &path, headers, body)
                    .await?;
                let Some(pointer) = seq else {
                    return Ok(None);
                };
                let json: serde_json::Value = serde_json::from_slice(&answer)
                    .map_err(|e| ClientError::Protocol(format!("publish answer: {e}")))?;
                pointer
                    .get(&json)
                    .and_then(serde_json::Value::as_u64)
                    .map(Some)
                    .ok_or_else(|| {
                        ClientError::Protocol(format!("publish answer has no {pointer}"))
                    })
            }
            (Route::WebSocket { message, .. }, Some(Conn::WebSocket(socket))) => {
                // Whatever the server said meanwhile (acks, echoes) is read and dropped, so the
                // socket never backs up; a close ends this connection.
                ws_conn::drain_ready(socket)?;
                let payload = payload();
                let text = String::from_utf8_lossy(&message.render_with(&values, &payload, &[]))
                    .into_owned();
                ws_conn::send_text(socket, text).await?;
                Ok(None)
            }
            _ => Err(ClientError::Protocol("no publish connection".into())),
        }
    }

    /// Opens a connection for the route: keep-alive HTTP to the target, or the route's WebSocket.
    async fn connect(
        &self,
        target: &Target,
        recorder: &Arc<Recorder>,
        values: &Values<'_>,
    ) -> Result<Conn, ClientError> {
        match &self.route {
            Route::Http { .. } => Ok(Conn::Http(HttpConn::open(target, None, recorder).await?)),
            Route::WebSocket { url, .. } => {
                let path = self.path(url, target, values);
                let socket = ws_conn::open_on(target, None, recorder, &path, None).await?;
                Ok(Conn::WebSocket(Box::new(socket)))
            }
        }
    }

    /// `url` rendered with `values`: under the target URL's path for a profile's route, at the
    /// root for commbench's.
    fn path(&self, url: &Template, target: &Target, values: &Values<'_>) -> String {
        let path = url.render(values);
        if self.under_target_path {
            target.join(&path)
        } else {
            path
        }
    }
}

impl RawPublish {
    pub fn check(self, field: &Field) -> Result<Publish, String> {
        let vars = [Var::Topic, Var::Payload];
        let template =
            |text: &str, key: &str| Template::parse(text, &vars).map_err(|e| field.at(key, e));
        let route = match (self.url, self.ws) {
            (Some(url), None) => {
                if !url.starts_with('/') {
                    return Err(
                        field.at("url", format!("`{url}` must be a path starting with `/`"))
                    );
                }
                Route::Http {
                    method: method(Some(self.method.as_deref().unwrap_or("POST")), field)?,
                    url: template(&url, "url")?,
                    body: template(self.body.as_deref().unwrap_or("{payload}"), "body")?,
                    headers: headers(self.headers, field)?,
                    seq: self
                        .seq
                        .map(|p| Pointer::parse(&p).map_err(|e| field.at("seq", e)))
                        .transpose()?,
                }
            }
            (None, Some(ws)) => {
                if !ws.starts_with('/') {
                    return Err(field.at("ws", format!("`{ws}` must be a path starting with `/`")));
                }
                let Some(message) = self.message else {
                    return Err(field.at("message", "a WebSocket publish needs a message template, e.g. {\"topic\":\"{topic}\",\"payload\":\"{payload}\"}"));
                };
                let message = template(&message, "message")?;
                if !message.uses(Var::Payload) {
                    return Err(field.at("message", "the message must carry `{payload}`"));
                }
                Route::WebSocket {
                    url: template(&ws, "ws")?,
                    message,
                }
            }
            (Some(_), Some(_)) => {
                return Err(field.at(
                    "ws",
                    "give either `url` (HTTP) or `ws` (WebSocket), not both",
                ))
            }
            (None, None) => {
                return Err(field.at(
                    "url",
                    "say where to publish: `url` (an HTTP request) or `ws` (a WebSocket message)",
                ))
            }
        };
        if let Route::Http { body, .. } = &route {
            if !body.uses(Var::Payload) {
                return Err(field.at(
                    "body",
                    "the body must carry `{payload}`: clients find each event by its stamp",
                ));
            }
        }
        let connections = self.connections.unwrap_or(CONNECTIONS as u64);
        if !(1..=1024).contains(&connections) {
            return Err(field.at(
                "connections",
                format!("{connections} is out of range (allowed 1..=1024)"),
            ));
        }
        Ok(Publish {
            route,
            connections: connections as usize,
            under_target_path: true,
        })
    }
}

/// One publisher connection, opened before publishing starts or with its first publish.
pub enum Conn {
    Http(HttpConn),
    WebSocket(Box<Socket>),
}
