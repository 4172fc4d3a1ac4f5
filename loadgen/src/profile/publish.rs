//! How events are published to a target: an HTTP request template or a WebSocket message template,
//! over a number of connections; commbench's own `POST /publish/{topic}` is the built-in route.
//! The publisher (`crate::publisher`) schedules; this module sends one publish.

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
const CONNECTIONS: usize = 16;

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

    /// Sends one publish of `payload` to `topic` through `conn` (opened first when `None`; the
    /// caller drops it after an error). Returns the event's sequence number when the route
    /// reports one.
    pub async fn send(
        &self,
        conn: &mut Option<Conn>,
        target: &Target,
        recorder: &std::sync::Arc<Recorder>,
        topic: &str,
        payload: Bytes,
    ) -> Result<Option<u64>, ClientError> {
        let path = |url: &Template, values: &Values<'_>| {
            let path = url.render(values);
            if self.under_target_path {
                target.join(&path)
            } else {
                path
            }
        };
        send(&self.route, conn, target, recorder, topic, payload, path).await
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

/// One publisher connection, opened on first use.
pub enum Conn {
    Http(HttpConn),
    WebSocket(Box<Socket>),
}

async fn send(
    route: &Route,
    conn: &mut Option<Conn>,
    target: &Target,
    recorder: &std::sync::Arc<Recorder>,
    topic: &str,
    payload: Bytes,
    path: impl Fn(&Template, &Values<'_>) -> String,
) -> Result<Option<u64>, ClientError> {
    let values = Values {
        topic,
        ..Values::default()
    };
    match route {
        Route::Http {
            method,
            url,
            body,
            headers,
            seq,
        } => {
            if conn.is_none() {
                *conn = Some(Conn::Http(HttpConn::open(target, None, recorder).await?));
            }
            let Some(Conn::Http(http)) = conn.as_mut() else {
                return Err(ClientError::Protocol("no publish connection".into()));
            };
            let body = if body.is_only(Var::Payload) {
                payload
            } else {
                Bytes::from(body.render_with(&values, &payload, &[]))
            };
            let path = path(url, &values);
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
                .ok_or_else(|| ClientError::Protocol(format!("publish answer has no {pointer}")))
        }
        Route::WebSocket { url, message } => {
            if conn.is_none() {
                let path = path(url, &values);
                let socket = ws_conn::open_on(target, None, recorder, &path, None).await?;
                *conn = Some(Conn::WebSocket(Box::new(socket)));
            }
            let Some(Conn::WebSocket(socket)) = conn.as_mut() else {
                return Err(ClientError::Protocol("no publish connection".into()));
            };
            // Whatever the server said meanwhile (acks, echoes) is read and dropped, so the socket
            // never backs up; a close ends this connection.
            ws_conn::drain_ready(socket)?;
            let text =
                String::from_utf8_lossy(&message.render_with(&values, &payload, &[])).into_owned();
            ws_conn::send_text(socket, text).await?;
            Ok(None)
        }
    }
}
