//! A minimal GraphQL-over-WebSocket client for the tests: the handshake with a chosen subprotocol,
//! JSON messages, and what the server sent next (a message, a close code, or the end).

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, http::HeaderValue, Message},
    MaybeTlsStream,
};

use super::{within, Ws, STEP};

/// Opens `/graphql/ws` offering `protocol`, and checks the server chose it; optionally with a
/// small socket receive buffer (for a client that will stop reading).
pub async fn connect(addr: SocketAddr, protocol: &'static str, recv_buffer: Option<u32>) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let stream = within("raw connect", STEP, socket.connect(addr))
        .await
        .unwrap();
    let mut request = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
    let (ws, response) = within(
        "the GraphQL WebSocket handshake",
        STEP,
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 101);
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
    ws
}

pub async fn send_json(ws: &mut Ws, value: Value) {
    send_text(ws, value.to_string()).await;
}

pub async fn send_text(ws: &mut Ws, text: String) {
    within("a WebSocket send", STEP, ws.send(Message::text(text)))
        .await
        .unwrap();
}

/// What the server sent next: a JSON protocol message, a close (code and reason), or the end of
/// the socket without a close frame.
#[derive(Debug)]
pub enum In {
    Json(Value),
    Close(u16, String),
    End,
}

pub async fn next_in(ws: &mut Ws, limit: Duration) -> In {
    within("the next GraphQL WebSocket message", limit, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return In::Json(serde_json::from_str(&text).unwrap())
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(frame) => In::Close(u16::from(frame.code), frame.reason.to_string()),
                        None => In::Close(1005, String::new()),
                    }
                }
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
                Some(Err(_)) | None => return In::End,
            }
        }
    })
    .await
}

pub async fn next_json(ws: &mut Ws) -> Value {
    match next_in(ws, STEP).await {
        In::Json(value) => value,
        other => panic!("expected a protocol message, got {other:?}"),
    }
}

/// The close code the server ends with; fails on anything else first.
pub async fn close_code(ws: &mut Ws) -> (u16, String) {
    match next_in(ws, STEP).await {
        In::Close(code, reason) => (code, reason),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// connection_init → connection_ack.
pub async fn init(mut ws: Ws) -> Ws {
    send_json(&mut ws, json!({ "type": "connection_init", "payload": {} })).await;
    let ack = next_json(&mut ws).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws
}
